"""How fast is the kernel? ``python benchmarks/kernel.py`` (or ``nox -s bench``).

Measures, in nanoseconds per operation, a reservation that is settled
(`Chain.reserve` then `Lease.settle`) and a plain `Chain.charge`, on budgets of 1, 3 and
6 dimensions. Machines differ and are noisy, so each figure is also given as a ratio to
a baseline measured in the same run, the same way: ``with lock: counter += n`` on a
plain int guarded by a `threading.Lock`, the least a thread-safe counter can cost.

Every operation is one Python function call in a loop; each figure is the best of
five repeats, with the garbage collector off while timing (as `timeit` does), over as
many iterations as fill about a tenth of a second.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiobudget.kernel import Chain, Lease, Ledger, Limit

if TYPE_CHECKING:
    from collections.abc import Callable

DIMENSIONS = ("tokens", "input_tokens", "output_tokens", "cost_micros", "calls", "millis")
REPEATS = 5
TARGET_NS = 100_000_000  # each repeat runs for about this long


def _time(op: Callable[[], object], iterations: int) -> int:
    """Nanoseconds for *iterations* calls of *op*."""
    loop = range(iterations)
    start = time.perf_counter_ns()
    for _ in loop:
        op()
    return time.perf_counter_ns() - start


def _calibrate(op: Callable[[], object]) -> int:
    """A number of iterations that takes about TARGET_NS."""
    iterations = 1_000
    while True:
        elapsed = _time(op, iterations)
        if elapsed >= TARGET_NS // 4:
            return max(iterations, iterations * TARGET_NS // max(elapsed, 1))
        iterations *= 4


def measure(op: Callable[[], object], repeats: int = REPEATS) -> tuple[float, int]:
    """Best nanoseconds per call of *op* over *repeats*, and the iterations per repeat."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        iterations = _calibrate(op)
        best = min(_time(op, iterations) for _ in range(repeats))
    finally:
        if enabled:
            gc.enable()
    return best / iterations, iterations


def _baseline() -> Callable[[], None]:
    lock = threading.Lock()
    counter = 0
    n = 3

    def add() -> None:
        nonlocal counter
        with lock:
            counter += n

    return add


def _chain(dims: int) -> tuple[Chain, tuple[int, ...], tuple[int, ...]]:
    """A one-level budget of *dims* dimensions that no benchmark can exhaust, with
    warn levels set (so verdicts are checked as in real use), an estimate and an
    actual usage below it."""
    ledger = Ledger(
        {dim: Limit(10**15, warn=8 * 10**14) for dim in DIMENSIONS[:dims]}, name="bench"
    )
    return Chain([ledger]), (1_000,) * dims, (700,) * dims


def _reserve_settle(dims: int) -> Callable[[], None]:
    chain, estimate, actual = _chain(dims)
    reserve = chain.reserve

    def op() -> None:
        reserve(estimate).settle(actual)  # type: ignore[union-attr]

    assert isinstance(chain.reserve(estimate), Lease)  # it fits: we time the happy path
    return op


def _charge(dims: int) -> Callable[[], None]:
    chain, _, actual = _chain(dims)
    charge = chain.charge

    def op() -> None:
        charge(actual)

    return op


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """Measure every benchmark; one row each, the baseline first."""
    baseline, iterations = measure(_baseline(), repeats)
    rows: list[dict[str, object]] = [
        {
            "benchmark": "lock; counter += n",
            "dims": 0,
            "iterations": iterations,
            "ns/op": baseline,
            "x baseline": 1.0,
        }
    ]
    for name, make in (("reserve+settle", _reserve_settle), ("charge", _charge)):
        for dims in (1, 3, 6):
            ns, iterations = measure(make(dims), repeats)
            rows.append(
                {
                    "benchmark": name,
                    "dims": dims,
                    "iterations": iterations,
                    "ns/op": ns,
                    "x baseline": ns / baseline,
                }
            )
    return rows


def _format(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}, best of {REPEATS} repeats")
    print(_format(run()))
