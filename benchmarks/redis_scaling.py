"""How a RedisStore scales: ``python benchmarks/run.py redis_scaling`` (needs a Redis).

- Against the number of processes (1, 2, 4) sharing one budget: each process runs
  TASKS tasks looping ``async with budget.reserve(...) as r: r.record(...)`` for a fixed
  time; the figure is the reservations per second of all processes together, as a
  ratio to the same processes each looping a trivial ``EVALSHA`` (``return 1``) in the
  same repetition. A reservation is two round trips (reserve, settle), so the ratio per
  round trip is twice the ratio per reservation.
- Against the number of budgets in the store (1, 10, 100, 1,000): one process, TASKS
  tasks, each reservation on the next budget in turn; same baseline.

Redis is at ``$AIOBUDGET_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); keys live
under a fresh prefix and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from importlib.util import find_spec
from multiprocessing import get_context
from pathlib import Path
from typing import Any

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiobudget import Budget, Limit

try:
    from . import _timing
except ImportError:  # run as a script
    import _timing  # type: ignore[no-redef]

URL = os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")
REPEATS = 3
SECONDS = 1.0  # each process loops for this long per point
TASKS = 16
PROCESSES = (1, 2, 4)
BUDGETS = (1, 10, 100, 1_000)
LIMITS = {"tokens": Limit(10**15, warn=8 * 10**14), "calls": Limit(10**15)}


async def _loop(prefix: str, kind: str, budgets: int, start_at: float) -> int:
    """Operations done by TASKS tasks in SECONDS from the wall-clock time *start_at*."""
    from aiobudget.stores.redis import RedisStore

    store = RedisStore(URL, prefix=prefix)
    try:
        targets = [Budget(LIMITS, name=f"b{i}", store=store) for i in range(budgets)]
        client: Any = store._client()
        sha = await client.script_load("return 1")
        for target in targets:  # open every budget before the clock starts
            await target.snapshot()
        done = 0
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop = time.monotonic() + SECONDS

        async def worker(offset: int) -> None:
            nonlocal done
            turn = offset
            while time.monotonic() < stop:
                if kind == "evalsha":
                    await client.evalsha(sha, 0)
                else:
                    target = targets[turn % budgets]
                    turn += 1
                    async with target.reserve(tokens=1_000, calls=1) as r:
                        r.record(tokens=700, calls=1)
                done += 1

        await asyncio.gather(*(worker(i) for i in range(TASKS)))
        return done
    finally:
        await store.aclose()


def _process(prefix: str, kind: str, budgets: int, start_at: float) -> int:
    return asyncio.run(_loop(prefix, kind, budgets, start_at))


def _rate(pool: ProcessPoolExecutor, processes: int, prefix: str, kind: str, budgets: int) -> float:
    start_at = time.time() + 1.0  # every process connected and ready by then
    jobs = [pool.submit(_process, prefix, kind, budgets, start_at) for _ in range(processes)]
    return sum(job.result() for job in jobs) / SECONDS


def _check_redis() -> None:
    import redis

    try:
        client = redis.Redis.from_url(URL, socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis to measure
        raise RuntimeError(f"no Redis at {URL}: {exc}") from None


def _cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """Reservations per second against processes and budgets; one row per point."""
    _check_redis()
    prefix = f"aiobudget-bench-{uuid.uuid4().hex[:8]}"
    points = [("processes", p, p, 1) for p in PROCESSES]
    points += [("budgets", b, 1, b) for b in BUDGETS]
    rates: dict[tuple[str, int], tuple[list[float], list[float]]] = {
        (axis, x): ([], []) for axis, x, _, _ in points
    }
    context = get_context("spawn")  # a clean interpreter per process, on every platform
    try:
        with ProcessPoolExecutor(max(PROCESSES), mp_context=context) as pool:
            for _ in range(repeats):
                for axis, x, processes, budgets in points:
                    base, budget = rates[(axis, x)]
                    base.append(_rate(pool, processes, prefix, "evalsha", budgets))
                    budget.append(_rate(pool, processes, prefix, "reserve", budgets))
    finally:
        _cleanup(prefix)
    rows: list[dict[str, object]] = []
    for (axis, x), (base, budget) in rates.items():
        figure = _timing.pairs(budget, base)
        rows.append(
            _timing.row(
                "redis",
                f"redis vs {axis}",
                f"reserve+settle, {x:,} {axis}",
                figure,
                "reservations/s",
                x=x,
                **{"EVALSHA/s": statistics.median(base)},
            )
        )
    return rows


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}, Redis at {URL}, medians of {REPEATS} repetitions")
    print(_timing.format_table(run()))
