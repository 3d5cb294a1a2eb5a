"""Check that a `Store` keeps aiobudget's contract: the store conformance suite, shipped.

A store is where budgets' counters live; `Budget` trusts it with every rule the kernel
states (all-or-nothing reservations, exact settles, refunds paid once, saturation, the
wait queue, shared names, ...). Think of this module as the inspection a new store
passes before it is let near real money: the very checks aiobudget runs, unchanged,
against `MemoryStore` and `RedisStore`, for anyone who writes another one.

Each check is an async function ``check(make_store) -> None`` where *make_store* is a
callable (sync or async) returning a fresh store. It builds budgets with
``Budget(limits, name=<a name of its own>, store=<a new store>)``, drives them through
the public `Budget` API (and, for double settles, the store's `Account` directly), and
raises `AssertionError` with a message naming what the store got wrong. Run them all
with `check_store`, or one by one through `CHECKS`::

    import anyio
    from aiobudget.testing import check_store

    anyio.run(check_store, MyStore)          # raises AssertionError on the first failure

    # or, in pytest with anyio's plugin, one test per check:
    @pytest.mark.anyio
    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    async def test_my_store(check):
        await check(MyStore)

What it is not: a differential test of every operation sequence against the kernel (run
one; aiobudget's own Redis tests do), a load test, or a test of threads and several event
loops (a store bound to one event loop, as a Redis client is, need not support those).

Practicalities: every budget gets a unique name (``aiobudget-conformance-...``), so a
persistent store can be reused between checks; deleting what they leave behind is the
caller's business. Checks run under any anyio backend and never sleep for real, but for
one 50 ms timeout (and 10 ms pauses while a server-backed store may still be registering
a waiter). Each finishes in well under a second in memory and in at most a few hundred
round trips to a server, and is failed after `TIME_LIMIT` seconds rather than left
hanging. They assume reservations do not expire within a check. Nothing here imports
pytest or redis.

Budgets that renew (`aiobudget.Period`) need a clock that passes boundaries. Give a
store a `ManualClock` (``lambda: MemoryStore(clock=ManualClock())``) and the period
checks move it, over calendar periods and a DST change; with any other clock (the
system's, Redis's ``TIME``) they use fixed windows of a quarter of a second and wait for
them: those checks take a second or two each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

# The checks register themselves, in this order, when their modules are imported.
from . import _accounting, _periods, _sharing, _statistics  # noqa: F401
from ._clock import ManualClock
from ._harness import REGISTERED, TIME_LIMIT, Check, StoreFactory

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CHECKS", "TIME_LIMIT", "Check", "ManualClock", "StoreFactory", "check_store"]

CHECKS: Final[Sequence[Check]] = tuple(REGISTERED)
"""Every conformance check, in the order `check_store` runs them; each has a name
(``check.__name__``) and a one-sentence docstring saying what it checks."""


async def check_store(make_store: StoreFactory) -> None:
    """Run every check in `CHECKS` against the stores *make_store* returns.

    *make_store* is a callable, sync or async, returning a fresh `Store` (``MemoryStore``
    itself will do). Raises `AssertionError` naming the check and what went wrong at the
    first failure (an unexpected exception, a `BackendError` say, is reported the same
    way, chained).
    """
    for check in CHECKS:
        await _run(check, make_store)


async def _run(check: Check, make_store: StoreFactory) -> None:
    try:
        await check(make_store)
    except AssertionError as exc:
        name = getattr(check, "__name__", repr(check))
        raise AssertionError(f"store conformance check {name!r} failed: {exc}") from exc
