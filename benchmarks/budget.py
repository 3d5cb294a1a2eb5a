"""How fast is `aiobudget.Budget`? ``python benchmarks/budget.py``.

Measures, in one run, on asyncio (and on uvloop when it is installed):

- the uncontended round trip ``async with budget.reserve(...) as r: r.record(...)``
  on budgets of 1 and 3 dimensions, in nanoseconds, and as a ratio to ``async with
  asyncio.Semaphore(...)`` measured the same way in the same run;
- contended throughput: 1,000 tasks looping reservations (one yield inside each)
  against a budget that admits 10 at a time, in reservations per second, and as a
  ratio to the same loop over ``asyncio.Semaphore(10)``;
- wake-up latency: from a release to the woken waiter running, the median over many
  hand-overs between two tasks (and the same for ``asyncio.Semaphore(1)``);
- memory per waiter: 10,000 tasks waiting for budget, measured with `tracemalloc`,
  less 10,000 tasks waiting on an `asyncio.Event` (the cost of a task itself).

structlog is configured first as a production application would (INFO and above, the
logger cached on first use); aiobudget's per-operation events are DEBUG and so skipped.
Figures are best of a few repeats, with the garbage collector off while timing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import structlog

from aiobudget import Budget, Limit

REPEATS = 5
TARGET_NS = 100_000_000  # each timed repeat runs for about this long
DIMENSIONS = ("tokens", "input_tokens", "cost_micros")
CONTENDERS = 1_000
ADMITTED = 10
ROUNDS = 30  # reservations per contender in the contended benchmark
HANDOVERS = 5_000
WAITERS = 10_000

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def configure_logging() -> str:
    """Configure structlog the way a production application would; say how."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    return (
        "structlog.configure(wrapper_class=make_filtering_bound_logger(logging.INFO), "
        "cache_logger_on_first_use=True)"
    )


def loops() -> list[tuple[str, LoopFactory]]:
    """The event loops to measure: asyncio, and uvloop when it can be imported."""
    found: list[tuple[str, LoopFactory]] = [("asyncio", asyncio.new_event_loop)]
    try:
        import uvloop
    except ImportError:
        return found
    found.append(("uvloop", uvloop.new_event_loop))
    return found


def run_on(factory: LoopFactory, main: Callable[[], Awaitable[Any]]) -> Any:
    loop = factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# -- uncontended round trip -----------------------------------------------------------


async def _timed(body: Callable[[int], Awaitable[None]], repeats: int) -> float:
    """Best nanoseconds per iteration of *body(n)* (which loops n times)."""
    iterations = 1_000
    while True:
        start = time.perf_counter_ns()
        await body(iterations)
        elapsed = time.perf_counter_ns() - start
        if elapsed >= TARGET_NS // 4:
            iterations = max(iterations, iterations * TARGET_NS // max(elapsed, 1))
            break
        iterations *= 4
    best = None
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            await body(iterations)
            elapsed = time.perf_counter_ns() - start
            best = elapsed if best is None else min(best, elapsed)
    finally:
        if enabled:
            gc.enable()
    assert best is not None
    return best / iterations


def _round_trip(dims: int) -> Callable[[int], Awaitable[None]]:
    budget = Budget({dim: Limit(10**15) for dim in DIMENSIONS[:dims]}, name="bench")
    estimate = dict.fromkeys(DIMENSIONS[:dims], 1_000)
    actual = dict.fromkeys(DIMENSIONS[:dims], 700)

    async def body(n: int) -> None:  # 10**15 is far more than any run can spend
        reserve = budget.reserve
        for _ in range(n):
            async with reserve(estimate) as r:
                r.record(actual)

    return body


def _semaphore_round_trip() -> Callable[[int], Awaitable[None]]:
    semaphore = asyncio.Semaphore(ADMITTED)

    async def body(n: int) -> None:
        for _ in range(n):
            async with semaphore:
                pass

    return body


async def uncontended(repeats: int) -> list[tuple[str, float]]:
    baseline = await _timed(_semaphore_round_trip(), repeats)
    rows = [("async with asyncio.Semaphore", baseline)]
    rows += [
        (f"reserve+record+exit, {dims} dim", await _timed(_round_trip(dims), repeats))
        for dims in (1, 3)
    ]
    return rows


# -- contended throughput -------------------------------------------------------------


async def _contended_budget() -> float:
    # headroom=1 admits ADMITTED at a time without ever reaching the limit, so no
    # budget.exhausted line is logged in the middle of the table.
    budget = Budget({"slots": Limit(ADMITTED + 1, headroom=1), "tokens": Limit(10**15)})

    async def contender() -> None:
        for _ in range(ROUNDS):
            async with budget.reserve(slots=1, tokens=100, timeout=float("inf")) as r:
                await asyncio.sleep(0)
                r.record(tokens=70)

    start = time.perf_counter()
    await asyncio.gather(*(contender() for _ in range(CONTENDERS)))
    elapsed = time.perf_counter() - start
    snapshot = await budget.snapshot()
    assert snapshot.spent["tokens"] == 70 * ROUNDS * CONTENDERS
    assert snapshot.reserved["slots"] == 0
    return ROUNDS * CONTENDERS / elapsed


async def _contended_semaphore() -> float:
    semaphore = asyncio.Semaphore(ADMITTED)

    async def contender() -> None:
        for _ in range(ROUNDS):
            async with semaphore:
                await asyncio.sleep(0)

    start = time.perf_counter()
    await asyncio.gather(*(contender() for _ in range(CONTENDERS)))
    return ROUNDS * CONTENDERS / (time.perf_counter() - start)


async def contended(repeats: int) -> list[tuple[str, float]]:
    semaphore = max([await _contended_semaphore() for _ in range(repeats)])
    budget = max([await _contended_budget() for _ in range(repeats)])
    return [("asyncio.Semaphore(10)", semaphore), ("Budget admitting 10", budget)]


# -- wake-up latency ---------------------------------------------------------------


async def _handover_budget() -> float:
    budget = Budget({"slots": Limit(2, headroom=1)})  # one at a time, never exhausted
    samples: list[int] = []
    released_at = 0

    async def player() -> None:
        nonlocal released_at
        for _ in range(HANDOVERS // 2):
            async with budget.reserve(slots=1, timeout=float("inf")) as r:
                if released_at:
                    samples.append(time.perf_counter_ns() - released_at)
                r.record(slots=0)
                await asyncio.sleep(0)  # let the other player queue up
                released_at = time.perf_counter_ns()

    await asyncio.gather(player(), player())
    return statistics.median(samples)


async def _handover_semaphore() -> float:
    semaphore = asyncio.Semaphore(1)
    samples: list[int] = []
    released_at = 0

    async def player() -> None:
        nonlocal released_at
        for _ in range(HANDOVERS // 2):
            async with semaphore:
                if released_at:
                    samples.append(time.perf_counter_ns() - released_at)
                await asyncio.sleep(0)
                released_at = time.perf_counter_ns()

    await asyncio.gather(player(), player())
    return statistics.median(samples)


async def wake_up(repeats: int) -> list[tuple[str, float]]:
    semaphore = min([await _handover_semaphore() for _ in range(repeats)])
    budget = min([await _handover_budget() for _ in range(repeats)])
    return [("asyncio.Semaphore(1) hand-over", semaphore), ("Budget hand-over", budget)]


# -- memory per waiter ---------------------------------------------------------------


async def _settle_down() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


Wait = Callable[[], Awaitable[None]]


async def _waiting_memory(make_wait: Callable[[], Awaitable[tuple[Wait, Wait]]]) -> float:
    """Bytes per task of WAITERS tasks parked in the ``wait`` of ``make_wait()``."""
    wait, cleanup = await make_wait()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.ensure_future(wait()) for _ in range(WAITERS)]
        await _settle_down()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await cleanup()
    return (after - before) / WAITERS


async def _event_waiter() -> tuple[Wait, Wait]:
    event = asyncio.Event()

    async def wait() -> None:
        await event.wait()

    async def cleanup() -> None:
        pass

    return wait, cleanup


async def _budget_waiter() -> tuple[Wait, Wait]:
    budget = Budget({"slots": Limit(2, headroom=1)})  # one at a time, never exhausted
    holder = await budget.try_reserve(slots=1)
    assert holder is not None

    async def wait() -> None:
        async with budget.reserve(slots=1, timeout=float("inf")) as r:
            r.record(slots=0)

    async def cleanup() -> None:
        await holder.release()

    return wait, cleanup


async def memory() -> list[tuple[str, float]]:
    task = await _waiting_memory(_event_waiter)
    waiter = await _waiting_memory(_budget_waiter)
    return [
        ("task waiting on asyncio.Event", task),
        ("task waiting for budget", waiter),
        ("budget waiter, less the task", waiter - task),
    ]


# -- the table -----------------------------------------------------------------------


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """Every benchmark on every loop; one row each, baselines first in each group."""
    configure_logging()
    rows: list[dict[str, object]] = []
    for loop_name, factory in loops():
        for name, ns in run_on(factory, lambda: uncontended(repeats)):
            rows.append(
                _row(rows, loop=loop_name, group="round trip", name=name, value=ns, unit="ns/op")
            )
        for name, rate in run_on(factory, lambda: contended(max(1, repeats // 2))):
            rows.append(
                _row(
                    rows,
                    loop=loop_name,
                    group="contended",
                    name=name,
                    value=rate,
                    unit="reservations/s",
                )
            )
        for name, ns in run_on(factory, lambda: wake_up(max(1, repeats // 2))):
            rows.append(
                _row(
                    rows,
                    loop=loop_name,
                    group="wake-up",
                    name=name,
                    value=ns / 1_000,
                    unit="us median",
                )
            )
        for name, size in run_on(factory, memory):
            rows.append(
                _row(
                    rows, loop=loop_name, group="memory", name=name, value=size, unit="bytes/waiter"
                )
            )
    return rows


def _row(
    rows: list[dict[str, object]], *, loop: str, group: str, name: str, value: float, unit: str
) -> dict[str, object]:
    """A table row; ``x baseline`` compares with the group's first row on this loop."""
    first = next((r for r in rows if r["loop"] == loop and r["group"] == group), None)
    ratio: object = ""
    if group != "memory":
        base = value if first is None else float(first["value"])  # type: ignore[arg-type]
        ratio = value / base if base else ""
    return {
        "loop": loop,
        "group": group,
        "benchmark": name,
        "value": value,
        "unit": unit,
        "x baseline": ratio,
    }


def _format(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    left = {"loop", "group", "benchmark", "unit"}
    align = [str.ljust if column in left else str.rjust for column in columns]
    lines = ["  ".join(a(c, w) for a, c, w in zip(align, columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(a(c, w) for a, c, w in zip(align, line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    how = configure_logging()
    print(f"Python {sys.version.split()[0]}; logging: {how}")
    print(f"best of {REPEATS} repeats; gc off while timing round trips")
    print(_format(run()))
