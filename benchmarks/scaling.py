"""How the in-memory cost grows: ``python benchmarks/run.py scaling`` (``--plot`` to draw).

- The round trip (``async with reserve`` + ``record`` + exit) against the number of
  dimensions (1, 3, 6, 12) and against the depth of the budget tree (1, 2, 4, 8 levels,
  reserving on the deepest), each as a ratio to ``async with asyncio.Semaphore``
  measured in the same repetition.
- What freeing budget costs while 10, 1,000 or 10,000 waiters queue behind a head that
  still does not fit: a release (which walks the queue to hand the budget on) and a
  waiter in the middle of the queue giving up (cancelled). Both must stay flat: neither
  may walk the queue.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiobudget import Budget, Limit, Reservation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

try:
    from . import _timing, budget
except ImportError:  # run as a script
    import _timing  # type: ignore[no-redef]

    import budget  # type: ignore[no-redef]

REPEATS = 9
DIMS = (1, 3, 6, 12)
DEPTHS = (1, 2, 4, 8)
QUEUES = (10, 1_000, 10_000)
RELEASES = 2_000  # releases timed per queue length
GIVE_UPS = 300  # waiters cancelled per queue length


def _deep(depth: int) -> Budget:
    """The leaf of a chain of *depth* budgets, each a child of the one before."""
    node = Budget({"tokens": Limit(10**15)}, name="level-0")
    for level in range(1, depth):
        node = node.child({"tokens": Limit(10**15)}, name=f"level-{level}")
    return node


async def _round_trips(repeats: int) -> dict[str, _timing.Figure]:
    names = tuple(f"d{i}" for i in range(max(DIMS)))
    subjects: dict[str, _timing.AsyncBody] = {}
    for dims in DIMS:
        wide = Budget({name: Limit(10**15) for name in names[:dims]}, name="wide")
        subjects[f"dims={dims}"] = budget.round_trip(wide, names[:dims])
    for depth in DEPTHS:
        subjects[f"depth={depth}"] = budget.round_trip(_deep(depth), ("tokens",))
    return await _timing.acompare(budget.semaphore_round_trip(), subjects, repeats)


async def _queued(
    n: int,
) -> tuple[Callable[[], Awaitable[None]], list[Reservation], list[asyncio.Task[None]]]:
    """A budget with RELEASES one-slot reservations held and *n* waiters for all of it
    queued behind them (the head cannot fit until every slot is free), and how to queue
    one more."""
    slots = RELEASES + 1
    target = Budget({"slots": Limit(slots)}, name="queue")
    held = [await target.try_reserve(slots=1) for _ in range(RELEASES)]

    async def wait() -> None:
        async with target.reserve(slots=slots, timeout=math.inf) as r:
            r.record(slots=0)

    tasks = [asyncio.ensure_future(wait()) for _ in range(n)]
    await _settle_down()
    return wait, [r for r in held if r is not None], tasks


async def _settle_down() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _drain(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _release_cost(n: int) -> float:
    """CPU ns per release while *n* waiters queue behind a blocked head."""
    _, held, tasks = await _queued(n)
    gc.collect()
    gc.disable()
    try:
        start = _timing.cpu_ns()
        for reservation in held[:-1]:  # the last one would let the head in
            await reservation.release()
        ns = (_timing.cpu_ns() - start) / (len(held) - 1)
    finally:
        gc.enable()
    await held[-1].release()
    await _drain(tasks)
    return ns


async def _give_up_cost(n: int) -> float:
    """CPU ns per waiter that gives up from the middle of a queue of *n* (cancelled and
    awaited to its end); a new waiter joins at the tail after each, untimed, so the
    queue keeps its length."""
    wait, held, tasks = await _queued(n)
    spent = 0
    gc.collect()
    gc.disable()
    try:
        for _ in range(GIVE_UPS):
            victim = tasks.pop(len(tasks) // 2)
            start = _timing.cpu_ns()
            await _drain([victim])
            spent += _timing.cpu_ns() - start
            tasks.append(asyncio.ensure_future(wait()))
            await _settle_down()
    finally:
        gc.enable()
    await _drain(tasks)
    for reservation in held:
        await reservation.release()
    return spent / GIVE_UPS


async def _queue_costs(repeats: int) -> dict[str, dict[int, float]]:
    costs: dict[str, dict[int, list[float]]] = {
        "release": {n: [] for n in QUEUES},
        "give up": {n: [] for n in QUEUES},
    }
    for _ in range(repeats):
        for n in QUEUES:
            costs["release"][n].append(await _release_cost(n))
            costs["give up"][n].append(await _give_up_cost(n))
    return {
        what: {n: statistics.median(values) for n, values in by_n.items()}
        for what, by_n in costs.items()
    }


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """The scaling curves on asyncio; one row per point."""
    budget.configure_logging()
    rows: list[dict[str, object]] = []
    figures = budget.run_on(asyncio.new_event_loop, lambda: _round_trips(repeats))
    rows.append(_timing.row("scaling", "round trip", "asyncio.Semaphore", figures[""], "ns/op"))
    for name, figure in figures.items():
        if name:
            axis, _, x = name.partition("=")
            group = "round trip vs dimensions" if axis == "dims" else "round trip vs depth"
            rows.append(_timing.row("scaling", group, name, figure, "ns/op", x=int(x)))
    costs = budget.run_on(asyncio.new_event_loop, lambda: _queue_costs(max(3, repeats // 3)))
    for what, by_n in costs.items():
        first = by_n[QUEUES[0]]
        for n, ns in by_n.items():
            rows.append(
                {
                    "suite": "scaling",
                    "group": f"{what} vs queue length",
                    "benchmark": f"{what}, {n:,} waiting",
                    "value": ns,
                    "unit": "ns/op",
                    f"x {QUEUES[0]} waiting": ns / first,
                    "x": n,
                }
            )
    return rows


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}, medians of {REPEATS} repetitions, CPU time")
    print(_timing.format_table(run()))
