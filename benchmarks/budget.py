"""How fast is `aiobudget.Budget` in memory? ``python benchmarks/run.py budget``.

Measures, on asyncio (and on uvloop when it is installed), each against a baseline
measured in the same repetition (see `benchmarks/_timing.py`):

- the uncontended round trip ``async with budget.reserve(...) as r: r.record(...)`` on
  budgets of 1 and 3 dimensions, in CPU nanoseconds, against ``async with
  asyncio.Semaphore(...)``;
- contended throughput: 1,000 tasks looping reservations (one yield inside each)
  against a budget that admits 10 at a time, in reservations per CPU second, against the
  same loop over ``asyncio.Semaphore(10)``;
- wake-up latency: from a release to the woken waiter running, the median over many
  hand-overs between two tasks, against ``asyncio.Semaphore(1)``;
- memory per waiter: 10,000 tasks waiting for budget, measured with `tracemalloc`, less
  10,000 tasks waiting on an `asyncio.Event` (the cost of a task itself).

structlog is configured first as a production application would (INFO and above, the
logger cached on first use); aiobudget's per-operation events are DEBUG and so skipped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import statistics
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import structlog

from aiobudget import Budget, Limit

try:
    from . import _timing
except ImportError:  # run as a script
    import _timing  # type: ignore[no-redef]

REPEATS = 15
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


def round_trip(budget: Budget, dims: tuple[str, ...]) -> _timing.AsyncBody:
    """``async with reserve`` + ``record`` + exit on *budget*, over *dims*."""
    estimate = dict.fromkeys(dims, 1_000)
    actual = dict.fromkeys(dims, 700)

    async def body(n: int) -> None:  # 10**15 is far more than any run can spend
        reserve = budget.reserve
        for _ in range(n):
            async with reserve(estimate) as r:
                r.record(actual)

    return body


def semaphore_round_trip() -> _timing.AsyncBody:
    semaphore = asyncio.Semaphore(ADMITTED)

    async def body(n: int) -> None:
        for _ in range(n):
            async with semaphore:
                pass

    return body


def wide_budget(dims: int) -> Budget:
    return Budget({dim: Limit(10**15) for dim in DIMENSIONS[:dims]}, name="bench")


async def uncontended(repeats: int) -> dict[str, _timing.Figure]:
    subjects = {
        f"reserve+record+exit, {dims} dim": round_trip(wide_budget(dims), DIMENSIONS[:dims])
        for dims in (1, 3)
    }
    figures = await _timing.acompare(semaphore_round_trip(), subjects, repeats)
    return {"async with asyncio.Semaphore": figures.pop(""), **figures}


# -- contended throughput -------------------------------------------------------------


async def _contended_budget() -> None:
    # headroom=1 admits ADMITTED at a time without ever reaching the limit, so no
    # budget.exhausted line is logged in the middle of the table.
    budget = Budget({"slots": Limit(ADMITTED + 1, headroom=1), "tokens": Limit(10**15)})

    async def contender() -> None:
        for _ in range(ROUNDS):
            async with budget.reserve(slots=1, tokens=100, timeout=math.inf) as r:
                await asyncio.sleep(0)
                r.record(tokens=70)

    await asyncio.gather(*(contender() for _ in range(CONTENDERS)))
    snapshot = await budget.snapshot()
    assert snapshot.spent["tokens"] == 70 * ROUNDS * CONTENDERS
    assert snapshot.reserved["slots"] == 0


async def _contended_semaphore() -> None:
    semaphore = asyncio.Semaphore(ADMITTED)

    async def contender() -> None:
        for _ in range(ROUNDS):
            async with semaphore:
                await asyncio.sleep(0)

    await asyncio.gather(*(contender() for _ in range(CONTENDERS)))


async def _cpu_seconds(run: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    start = _timing.cpu_ns()
    await run()
    return (_timing.cpu_ns() - start) / 1e9


async def contended(repeats: int) -> dict[str, _timing.Figure]:
    """Reservations per CPU second, budget against semaphore, repetition by repetition."""
    done = ROUNDS * CONTENDERS
    semaphore: list[float] = []
    budget: list[float] = []
    for _ in range(repeats):
        semaphore.append(done / await _cpu_seconds(_contended_semaphore))
        budget.append(done / await _cpu_seconds(_contended_budget))
    return {
        "asyncio.Semaphore(10)": _timing.pairs(semaphore, semaphore),
        "Budget admitting 10": _timing.pairs(budget, semaphore),
    }


# -- wake-up latency ---------------------------------------------------------------


async def _handover_budget() -> float:
    budget = Budget({"slots": Limit(2, headroom=1)})  # one at a time, never exhausted
    samples: list[int] = []
    released_at = 0

    async def player() -> None:
        nonlocal released_at
        for _ in range(HANDOVERS // 2):
            async with budget.reserve(slots=1, timeout=math.inf) as r:
                if released_at:
                    samples.append(_timing.now_ns() - released_at)
                r.record(slots=0)
                await asyncio.sleep(0)  # let the other player queue up
                released_at = _timing.now_ns()

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
                    samples.append(_timing.now_ns() - released_at)
                await asyncio.sleep(0)
                released_at = _timing.now_ns()

    await asyncio.gather(player(), player())
    return statistics.median(samples)


async def wake_up(repeats: int) -> dict[str, _timing.Figure]:
    """Median hand-over latency (ns) per repetition, budget against semaphore."""
    semaphore: list[float] = []
    budget: list[float] = []
    gc.disable()
    try:
        for _ in range(repeats):
            semaphore.append(await _handover_semaphore())
            budget.append(await _handover_budget())
    finally:
        gc.enable()
    return {
        "asyncio.Semaphore(1) hand-over": _timing.pairs(semaphore, semaphore),
        "Budget hand-over": _timing.pairs(budget, semaphore),
    }


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
        async with budget.reserve(slots=1, timeout=math.inf) as r:
            r.record(slots=0)

    async def cleanup() -> None:
        await holder.release()

    return wait, cleanup


async def memory() -> dict[str, float]:
    task = await _waiting_memory(_event_waiter)
    waiter = await _waiting_memory(_budget_waiter)
    return {
        "task waiting on asyncio.Event": task,
        "task waiting for budget": waiter,
        "budget waiter, less the task": waiter - task,
    }


# -- the table -----------------------------------------------------------------------


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """Every benchmark on every loop; one row each, baselines first in each group."""
    configure_logging()
    rows: list[dict[str, object]] = []
    few = max(3, repeats // 3)
    for loop_name, factory in loops():
        groups: list[tuple[str, str, dict[str, _timing.Figure]]] = [
            ("round trip", "ns/op", run_on(factory, lambda: uncontended(repeats))),
            ("contended", "reservations/s", run_on(factory, lambda: contended(few))),
            ("wake-up", "ns median", run_on(factory, lambda: wake_up(few))),
        ]
        for group, unit, figures in groups:
            rows += [
                _timing.row("budget", group, name, figure, unit, loop=loop_name)
                for name, figure in figures.items()
            ]
        for name, size in run_on(factory, memory).items():
            rows.append(
                {
                    "suite": "budget",
                    "group": "memory",
                    "benchmark": name,
                    "value": size,
                    "unit": "bytes/waiter",
                    "loop": loop_name,
                }
            )
    return rows


if __name__ == "__main__":
    how = configure_logging()
    print(f"Python {sys.version.split()[0]}; logging: {how}")
    print(f"medians of {REPEATS} repetitions; CPU time; gc off while timing")
    print(_timing.format_table(run()))
