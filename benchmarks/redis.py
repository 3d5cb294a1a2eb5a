"""How fast is RedisStore? ``python benchmarks/redis.py`` (needs a Redis server).

Measures reservations per second through the public API, ``async with
budget.reserve(...) as r: r.record(...)`` (one reserve and one settle: two round trips,
two Lua scripts), one task after another and with 64 concurrent tasks, on a budget of
three dimensions, and on a child budget (the script then updates two levels).

Networks and machines differ, so every figure is also a ratio to a baseline measured in
the same run, the same way, through the same client: a trivial ``EVALSHA`` (``return
1``), the least a script-based store can cost per round trip. A reservation makes two
round trips, so two ratios are given: *per round trip* (2 x reservations/s over
EVALSHA/s: the cost of aiobudget's scripts and Python around one call) and *per
reservation* (reservations/s over EVALSHA/s: what a user gets per unit of work).

The last rows are the *server's* time per script call, as Redis counts it (``INFO
commandstats``, ``usec_per_call`` of EVALSHA, after ``CONFIG RESETSTAT``), for the trivial
script and for a reserve+settle loop (one task): the part of a round trip that no
client, network or event loop can change, and that a Redis server spends for all its
clients. Counters are server-wide, so a repeat during which another client ran EVALSHA
too is thrown away (an EVALSHA count other than ours). The server time is also measured
again after that many reservations more (closed leases' tombstones piling up in the
budget's keys, as in a busy process), to show whether it grows with them.

Redis is at ``$AIOBUDGET_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); the keys are
under a fresh prefix, deleted afterwards. Each figure is the best of three repeats of
about half a second (the server times: the least of three runs of SERVER_CALLS).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

# This file is named like redis-py: with benchmarks/ on sys.path (``python
# benchmarks/redis.py``, ``python benchmarks/run.py``), ``import redis`` would find it
# instead. Take that directory off the path before anything imports redis-py.
_here = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
if getattr(sys.modules.get("redis"), "__file__", None) == __file__:  # pragma: no cover
    del sys.modules["redis"]
if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiobudget import Budget, Limit  # noqa: E402 - after the sys.path fixes above

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

URL = os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")
REPEATS = 3
SECONDS = 0.5  # each repeat runs for about this long
TASKS = 64
SERVER_CALLS = 1_000  # reservations per measurement of the server's time
LIMITS = {
    "tokens": Limit(10**15, warn=8 * 10**14),
    "cost_micros": Limit(10**15),
    "calls": Limit(10**15),
}


async def _rate(op: Callable[[], Awaitable[object]], tasks: int, repeats: int) -> float:
    """Best operations per second of *op*, run by *tasks* concurrent tasks."""
    count = 20
    while True:  # calibrate: a batch that takes about SECONDS
        started = time.perf_counter()
        await _batch(op, tasks, count)
        elapsed = time.perf_counter() - started
        if elapsed >= SECONDS / 4:
            count = max(count, int(count * SECONDS / elapsed))
            break
        count *= 4
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        await _batch(op, tasks, count)
        best = max(best, count * tasks / (time.perf_counter() - started))
    return best


async def _batch(op: Callable[[], Awaitable[object]], tasks: int, count: int) -> None:
    async def worker() -> None:
        for _ in range(count):
            await op()

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def _measure(repeats: int) -> list[dict[str, object]]:
    from aiobudget.stores.redis import RedisStore

    prefix = f"aiobudget-bench-{uuid.uuid4().hex[:8]}"
    store = RedisStore(URL, prefix=prefix)
    client: Any = store._client()
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis to measure
        await store.aclose()
        raise RuntimeError(f"no Redis at {URL}: {exc}") from None
    try:
        sha = await client.script_load("return 1")

        async def evalsha() -> None:
            await client.evalsha(sha, 0)

        budget = Budget(LIMITS, name="bench", store=store)
        child = budget.child({"tokens": Limit(10**15)}, name="team")

        def reserve_settle(target: Budget) -> Callable[[], Awaitable[None]]:
            async def op() -> None:
                async with target.reserve(tokens=1_000, cost_micros=20, calls=1) as r:
                    r.record(tokens=700, cost_micros=14, calls=1)

            return op

        rows: list[dict[str, object]] = []
        for tasks in (1, TASKS):
            base = await _rate(evalsha, tasks, repeats)
            rows.append(_row("EVALSHA 'return 1'", tasks, base, base, round_trips=1))
            for name, target in (("reserve+settle", budget), ("  child budget", child)):
                rate = await _rate(reserve_settle(target), tasks, repeats)
                rows.append(_row(name, tasks, rate, base, round_trips=2))
        try:
            base = await _server_us(client, evalsha, 1, repeats)
        except _NoStats as exc:
            print(f"server time per script call not measured: {exc}")
            return rows
        rows.append(_server_row("server: EVALSHA 'return 1'", base, base))
        for name, target in (("server: reserve+settle", budget), ("  child budget", child)):
            us = await _server_us(client, reserve_settle(target), 2, repeats)
            rows.append(_server_row(name, us, base))
        # Tombstones of closed leases pile up for ``remember`` (30 s): ten times as many.
        for _ in range(10):
            await _batch(reserve_settle(budget), TASKS, SERVER_CALLS // TASKS)
        later = await _server_us(client, reserve_settle(budget), 2, repeats)
        rows.append(_server_row("  after 10x more leases", later, base))
        return rows
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await store.aclose()


class _NoStats(RuntimeError):
    """The server's counters cannot be read or reset (a managed Redis may refuse it)."""


async def _server_us(
    client: Any, op: Callable[[], Awaitable[object]], scripts: int, repeats: int
) -> float:
    """The least server time per EVALSHA, in microseconds, over *repeats* runs of
    SERVER_CALLS times *op* (which makes *scripts* EVALSHA calls); runs during which
    another client ran EVALSHA too do not count."""
    found: list[float] = []
    for _ in range(3 * repeats):  # a few tries more, for runs that do not count
        try:
            await client.config_resetstat()
            for _ in range(SERVER_CALLS):
                await op()
            stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
        except Exception as exc:  # noqa: BLE001 - CONFIG or INFO refused
            raise _NoStats(f"{type(exc).__name__}: {exc}") from None
        if int(stats.get("calls", 0)) == SERVER_CALLS * scripts:  # else: not ours only
            found.append(float(stats["usec_per_call"]))
            if len(found) == repeats:
                break
    if not found:
        raise _NoStats("other clients ran EVALSHA during every run")
    return min(found)


def _server_row(name: str, us: float, base: float) -> dict[str, object]:
    return {"benchmark": name, "tasks": 1, "server us/call": us, "x server": us / base}


def _row(name: str, tasks: int, rate: float, base: float, *, round_trips: int) -> dict[str, object]:
    return {
        "benchmark": name,
        "tasks": tasks,
        "ops/s": rate,
        "us/op": 1e6 / rate * tasks,
        "x per round trip": rate * round_trips / base,
        "x per op": rate / base,
    }


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """Measure every benchmark; one row each, each group after its baseline."""
    return asyncio.run(_measure(repeats))


def _format(rows: list[dict[str, object]]) -> str:
    columns = list(dict.fromkeys(column for row in rows for column in row))
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    from aiobudget.stores.redis import redact  # never print a password

    print(f"Python {sys.version.split()[0]}, Redis at {redact(URL)}, best of {REPEATS} repeats")
    print(_format(run()))
