"""How fast is the kernel? ``python benchmarks/run.py kernel`` (or ``nox -s bench``).

Measures, in CPU nanoseconds per operation, a reservation that is settled
(`Chain.reserve` then `Lease.settle`) and a plain `Chain.charge`, on budgets of 1, 3 and
6 dimensions, each as a ratio to a baseline measured in the same repetition: ``with
lock: counter += n`` on a plain int guarded by a `threading.Lock`, the least a
thread-safe counter can cost. See `benchmarks/_timing.py` for how.
"""

from __future__ import annotations

import sys
import threading
from importlib.util import find_spec
from pathlib import Path

if find_spec("aiobudget") is None:  # a checkout without an install: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from aiobudget.kernel import Chain, Lease, Ledger, Limit

try:
    from . import _timing
except ImportError:  # run as a script
    import _timing  # type: ignore[no-redef]

DIMENSIONS = ("tokens", "input_tokens", "output_tokens", "cost_micros", "calls", "millis")
REPEATS = 15


def _baseline() -> _timing.Body:
    lock = threading.Lock()
    counter = 0
    n = 3

    def body(iterations: int) -> None:
        nonlocal counter
        for _ in range(iterations):
            with lock:
                counter += n

    return body


def _chain(dims: int) -> tuple[Chain, tuple[int, ...], tuple[int, ...]]:
    """A one-level budget of *dims* dimensions that no benchmark can exhaust, with
    warn levels set (so verdicts are checked as in real use), an estimate and an
    actual usage below it."""
    ledger = Ledger(
        {dim: Limit(10**15, warn=8 * 10**14) for dim in DIMENSIONS[:dims]}, name="bench"
    )
    return Chain([ledger]), (1_000,) * dims, (700,) * dims


def _reserve_settle(dims: int) -> _timing.Body:
    chain, estimate, actual = _chain(dims)
    reserve = chain.reserve
    assert isinstance(chain.reserve(estimate), Lease)  # it fits: we time the happy path

    def body(iterations: int) -> None:
        for _ in range(iterations):
            reserve(estimate).settle(actual)  # type: ignore[union-attr]

    return body


def _charge(dims: int) -> _timing.Body:
    chain, _, actual = _chain(dims)
    charge = chain.charge

    def body(iterations: int) -> None:
        for _ in range(iterations):
            charge(actual)

    return body


def run(repeats: int = REPEATS) -> list[dict[str, object]]:
    """Measure every benchmark; one row each, the baseline first."""
    subjects = {
        f"{name}, {dims} dim": make(dims)
        for name, make in (("reserve+settle", _reserve_settle), ("charge", _charge))
        for dims in (1, 3, 6)
    }
    figures = _timing.compare(_baseline(), subjects, repeats)
    return [
        _timing.row(
            "kernel",
            "kernel",
            name or "with lock: counter += n",
            figure,
            "ns/op",
        )
        for name, figure in figures.items()
    ]


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}, medians of {REPEATS} repetitions")
    print(_timing.format_table(run()))
