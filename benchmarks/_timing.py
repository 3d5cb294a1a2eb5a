"""How every benchmark here measures, on machines that are shared and noisy.

- Work is timed with the thread's CPU clock (`time.thread_time_ns`): time the process
  spends waiting for a core while others run does not count. (Latencies of single
  events, which that clock is too slow to time, use `time.perf_counter_ns`.)
- Every figure is a ratio to a baseline measured in the same repetition, right before
  or after it (the order alternates), so drifts of the machine's speed cancel out.
- Each benchmark is repeated; the tables give the median and the interquartile range
  of the ratios, so the noise is in plain sight.
- The garbage collector is off while a batch is timed, as `timeit` does.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

cpu_ns = time.thread_time_ns

Body = Callable[[int], None]  # runs its operation n times
AsyncBody = Callable[[int], Awaitable[None]]

TARGET_NS = 30_000_000  # each timed batch runs for about this long


@dataclass(frozen=True)
class Figure:
    """One measured figure: the medians over repetitions and the ratios' spread."""

    value: float  # median of the figure itself (ns per operation, operations/s, ...)
    ratio: float  # median of value / baseline, each pair from one repetition
    low: float  # first quartile of the ratios
    high: float  # third quartile of the ratios

    @staticmethod
    def of(values: Sequence[float], ratios: Sequence[float]) -> Figure:
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        return Figure(statistics.median(values), statistics.median(ratios), low, high)


def _quiet(run: Callable[[], int]) -> int:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return run()
    finally:
        if enabled:
            gc.enable()


def batch(body: Body, n: int) -> float:
    """CPU nanoseconds per operation of ``body(n)``."""

    def run() -> int:
        start = cpu_ns()
        body(n)
        return cpu_ns() - start

    return _quiet(run) / n


async def abatch(body: AsyncBody, n: int) -> float:
    """CPU nanoseconds per operation of ``await body(n)``."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = cpu_ns()
        await body(n)
        return (cpu_ns() - start) / n
    finally:
        if enabled:
            gc.enable()


def calibrate(body: Body) -> int:
    """A number of operations that takes about TARGET_NS."""
    n = 100
    while True:
        ns = batch(body, n) * n
        if ns >= TARGET_NS / 4:
            return max(n, int(n * TARGET_NS / max(ns, 1)))
        n *= 4


async def acalibrate(body: AsyncBody) -> int:
    """`calibrate` for an async body."""
    n = 100
    while True:
        ns = await abatch(body, n) * n
        if ns >= TARGET_NS / 4:
            return max(n, int(n * TARGET_NS / max(ns, 1)))
        n *= 4


def compare(baseline: Body, subjects: dict[str, Body], repeats: int) -> dict[str, Figure]:
    """ns per operation of *baseline* and of each subject, with ratios to the baseline
    measured in the same repetition; the baseline itself is the first entry."""
    sizes = {name: calibrate(body) for name, body in {"": baseline, **subjects}.items()}
    values: dict[str, list[float]] = {name: [] for name in sizes}
    ratios: dict[str, list[float]] = {name: [] for name in sizes}
    for repeat in range(repeats):
        base = batch(baseline, sizes[""])
        values[""].append(base)
        ratios[""].append(1.0)
        order = list(subjects.items())
        for name, body in order if repeat % 2 == 0 else reversed(order):
            ns = batch(body, sizes[name])
            values[name].append(ns)
            ratios[name].append(ns / base)
    return {name: Figure.of(values[name], ratios[name]) for name in sizes}


async def acompare(
    baseline: AsyncBody, subjects: dict[str, AsyncBody], repeats: int
) -> dict[str, Figure]:
    """`compare` for async bodies."""
    sizes = {name: await acalibrate(body) for name, body in {"": baseline, **subjects}.items()}
    values: dict[str, list[float]] = {name: [] for name in sizes}
    ratios: dict[str, list[float]] = {name: [] for name in sizes}
    for repeat in range(repeats):
        base = await abatch(baseline, sizes[""])
        values[""].append(base)
        ratios[""].append(1.0)
        order = list(subjects.items())
        for name, body in order if repeat % 2 == 0 else reversed(order):
            ns = await abatch(body, sizes[name])
            values[name].append(ns)
            ratios[name].append(ns / base)
    return {name: Figure.of(values[name], ratios[name]) for name in sizes}


def format_table(rows: list[dict[str, object]]) -> str:
    """Rows (dicts with the same keys, mostly) as an aligned plain-text table."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def row(
    suite: str, group: str, name: str, figure: Figure, unit: str, **extra: object
) -> dict[str, object]:
    """A table row for *figure*."""
    return {
        "suite": suite,
        "group": group,
        "benchmark": name,
        "value": figure.value,
        "unit": unit,
        "x baseline": figure.ratio,
        "ratio IQR": f"{figure.low:.2f}-{figure.high:.2f}",
        **extra,
    }


def pairs(values: Sequence[float], bases: Sequence[float]) -> Figure:
    """A figure from per-repetition *values* and the *bases* measured with them."""
    return Figure.of(values, [v / b for v, b in zip(values, bases)])


def now_ns() -> int:
    """Wall-clock nanoseconds, for latencies of single events."""
    return time.perf_counter_ns()
