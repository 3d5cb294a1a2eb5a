"""What do metrics cost? ``python benchmarks/metrics.py``.

- The uncontended round trip ``async with budget.reserve(...) as r: r.record(...)`` (1 and
  3 dimensions) with no exporter, with a `PrometheusCollector` open (the library's events
  then feed its counters), and again after it was closed: the ratio to the first is what
  an attached exporter costs per reservation, and the last shows that closing it gives
  the cost back. Each figure is the best of interleaved repeats, in CPU time of this
  process, on asyncio and uvloop.
- The same round trip on a `RedisStore` (reserve and settle: two scripts), without and
  with a collector open, when a Redis answers at ``$AIOBUDGET_REDIS_URL``.
- A scrape (``generate_latest``) of 100 in-memory budgets, and, when a Redis answers at
  ``$AIOBUDGET_REDIS_URL``, of 100 Redis budgets listed from the store (SCAN + one script
  per budget), in milliseconds per scrape.

structlog is configured as a production application would (INFO, cached): aiobudget's
per-operation events are DEBUG, so without an exporter they are not even built.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import uuid
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from prometheus_client import CollectorRegistry, generate_latest

from aiobudget import Budget, Limit
from aiobudget.metrics import PrometheusCollector

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

from .budget import DIMENSIONS, configure_logging, loops, round_trip, run_on, wide_budget

REPEATS = 7
ITERATIONS = 20_000
BUDGETS = 100
SCRAPES = 20


async def _cpu_ns(body: Callable[[int], Awaitable[None]], iterations: int) -> float:
    """CPU nanoseconds of this process per iteration: on a shared, loaded machine the
    time other processes take is not counted, as wall-clock time would."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.process_time_ns()
        await body(iterations)
        return (time.process_time_ns() - start) / iterations
    finally:
        if enabled:
            gc.enable()


async def round_trips(repeats: int) -> list[tuple[str, int, float]]:
    """(state, dims, best ns/op), interleaving the states so noise hits them alike."""
    best: dict[tuple[str, int], float] = {}
    states = ("no exporter", "PrometheusCollector open", "after close()")
    for dims in (1, 3):
        body = round_trip(wide_budget(dims), DIMENSIONS[:dims])
        await body(ITERATIONS)  # warm up
        for _ in range(repeats):
            for state in states:
                collector = PrometheusCollector() if state == states[1] else None
                try:
                    ns = await _cpu_ns(body, ITERATIONS)
                finally:
                    if collector is not None:
                        collector.close()
                best[state, dims] = min(ns, best.get((state, dims), ns))
    return [(state, dims, best[state, dims]) for dims in (1, 3) for state in states]


def _scrape_ms(registry: CollectorRegistry) -> float:
    generate_latest(registry)  # warm: the reading thread, a client per loop
    start = time.perf_counter()
    for _ in range(SCRAPES):
        generate_latest(registry)
    return (time.perf_counter() - start) * 1000 / SCRAPES


async def _memory_budgets() -> list[Budget]:
    budgets = [
        Budget({dim: Limit(10**12) for dim in DIMENSIONS}, name=f"b{i}") for i in range(BUDGETS)
    ]
    for budget in budgets:
        await budget.charge(tokens=5)
    return budgets


def scrape_memory() -> float:
    budgets = asyncio.run(_memory_budgets())
    registry = CollectorRegistry()
    with PrometheusCollector(budgets) as collector:
        registry.register(collector)
        return _scrape_ms(registry)


def scrape_redis() -> float | None:
    try:
        import redis as redis_py

        from aiobudget.stores.redis import RedisStore
    except ImportError:
        return None
    url = os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis_py.Redis.from_url(url, socket_connect_timeout=1).ping()
    except (redis_py.RedisError, OSError):
        return None
    prefix = f"aiobudget-bench-{uuid.uuid4().hex[:8]}"
    store = RedisStore(url, prefix=prefix)

    async def fill() -> None:
        for i in range(BUDGETS):
            await Budget(dict.fromkeys(DIMENSIONS, 10**12), name=f"b{i}", store=store).charge(
                tokens=5
            )
        await store.aclose()

    asyncio.run(fill())
    try:
        registry = CollectorRegistry()
        with PrometheusCollector(store=store) as collector:
            registry.register(collector)
            return _scrape_ms(registry)
    finally:
        client = redis_py.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def redis_round_trips() -> list[tuple[str, float]] | None:
    """ns per Redis reservation (reserve + settle), without and with an exporter open."""
    try:
        import redis as redis_py

        from aiobudget.stores.redis import RedisStore
    except ImportError:
        return None
    url = os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis_py.Redis.from_url(url, socket_connect_timeout=1).ping()
    except (redis_py.RedisError, OSError):
        return None
    prefix = f"aiobudget-bench-{uuid.uuid4().hex[:8]}"

    async def main() -> list[tuple[str, float]]:
        best: dict[str, float] = {}
        async with RedisStore(url, prefix=prefix) as store:
            budget = Budget(dict.fromkeys(DIMENSIONS, 10**15), name="rt", store=store)
            estimate = dict.fromkeys(DIMENSIONS, 1_000)
            for _ in range(3):
                for state in ("no exporter", "PrometheusCollector open"):
                    collector = PrometheusCollector() if state != "no exporter" else None
                    start = time.perf_counter_ns()
                    for _ in range(300):
                        async with budget.reserve(estimate) as r:
                            r.record(estimate)
                    ns = (time.perf_counter_ns() - start) / 300
                    if collector is not None:
                        collector.close()
                    best[state] = min(ns, best.get(state, ns))
        return list(best.items())

    try:
        return asyncio.run(main())
    finally:
        client = redis_py.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    configure_logging()
    rows: list[dict[str, object]] = []
    for loop_name, factory in loops():
        measured = run_on(factory, lambda: round_trips(repeats))
        for state, dims, ns in measured:
            base = next(v for s, d, v in measured if d == dims)
            rows.append(
                {
                    "loop": loop_name,
                    "benchmark": f"round trip, {dims} dim: {state}",
                    "value": ns,
                    "unit": "ns/op",
                    "x no exporter": ns / base,
                }
            )
    redis_rows = redis_round_trips() or []
    for state, ns in redis_rows:
        rows.append(
            {
                "loop": "asyncio",
                "benchmark": f"Redis round trip, 3 dim: {state}",
                "value": ns,
                "unit": "ns/op",
                "x no exporter": ns / redis_rows[0][1],
            }
        )
    rows.append(
        {
            "benchmark": f"scrape of {BUDGETS} in-memory budgets",
            "value": scrape_memory(),
            "unit": "ms",
        }
    )
    redis_ms = scrape_redis()
    if redis_ms is not None:
        rows.append(
            {
                "benchmark": f"scrape of {BUDGETS} Redis budgets (SCAN)",
                "value": redis_ms,
                "unit": "ms",
            }
        )
    return rows


if __name__ == "__main__":
    from benchmarks.run import _table

    print(_table(run()))
