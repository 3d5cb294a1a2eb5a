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
"""

from __future__ import annotations

import contextlib
import functools
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Generic, NoReturn, TypeVar, Union

import anyio

from ._budget import Budget
from ._errors import (
    BudgetExceeded,
    BudgetExhausted,
    InvalidAmount,
    InvalidLimits,
    LimitsMismatch,
    ReservationClosed,
    UnknownDimension,
)
from ._units import Usage, usd
from .kernel import MAX_AMOUNT, Denial, Limit, Snapshot, Status, Verdict
from .protocols import BudgetGuard, LocalAccount, Store, TokenBudget

if TYPE_CHECKING:
    from types import TracebackType

    from ._reservation import Reservation

__all__ = ["CHECKS", "TIME_LIMIT", "Check", "StoreFactory", "check_store"]

StoreFactory = Callable[[], Union[Store, Awaitable[Store]]]  # noqa: UP007 - runtime alias on 3.10
"""A callable returning a fresh store, directly or as an awaitable: ``MemoryStore`` will do."""

Check = Callable[[StoreFactory], Awaitable[None]]
"""One conformance check: ``await check(make_store)`` raises `AssertionError` on a failure
(any unexpected exception is turned into one, chained)."""

TIME_LIMIT: Final = 10.0
"""Seconds a check may take before it fails (a wait that never ends, a hung store)."""

_WAIT: Final = 5.0  # how long a waiter that should be granted is given: far more than enough
_TIMEOUT: Final = 0.05  # the one real timeout, in `waiting_times_out`

_CONTINUE: Final = Verdict(Status.CONTINUE)

_E = TypeVar("_E", bound=BaseException)


# -- helpers ----------------------------------------------------------------------------
# Failures raise AssertionError explicitly rather than with `assert`, which `python -O`
# strips: a shipped checker must not pass everything when optimized.


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def _equal(what: str, expected: object, actual: object) -> None:
    if expected != actual:
        _fail(f"{what}: expected {expected!r}, got {actual!r}")


def _warn(dim: str) -> Verdict:
    return Verdict(Status.WARN, dim)


def _exhausted(dim: str) -> Verdict:
    return Verdict(Status.EXHAUSTED, dim)


def _name(tag: str) -> str:
    return f"aiobudget-conformance-{tag}-{uuid.uuid4().hex[:12]}"


async def _store(make_store: StoreFactory) -> Store:
    made = make_store()
    store = await made if isinstance(made, Awaitable) else made
    if not isinstance(store, Store):
        _fail(f"make_store() returned {store!r}, which has no open() method: not a Store")
    return store


async def _budget(make_store: StoreFactory, limits: Mapping[str, Limit | int], tag: str) -> Budget:
    """A budget with a name of its own in a new store."""
    return Budget(limits, name=_name(tag), store=await _store(make_store))


async def _counters(
    budget: Budget,
    what: str,
    *,
    spent: Mapping[str, int] | None = None,
    reserved: Mapping[str, int] | None = None,
) -> Snapshot:
    """Check *budget*'s counters (dimensions not named are 0) and that ``remaining`` is
    ``limit - spent - reserved`` floored at 0; return the snapshot."""
    snap = await budget.snapshot()
    want_spent = {dim: (spent or {}).get(dim, 0) for dim in budget.dims}
    want_reserved = {dim: (reserved or {}).get(dim, 0) for dim in budget.dims}
    got_spent, got_reserved = dict(snap.spent), dict(snap.reserved)
    if (want_spent, want_reserved) != (got_spent, got_reserved):
        _fail(
            f"{what}: expected spent {want_spent} and reserved {want_reserved}; "
            f"the store has spent {got_spent} and reserved {got_reserved}"
        )
    want_remaining = {
        dim: max(0, snap.limits[dim].limit - got_spent[dim] - got_reserved[dim])
        for dim in budget.dims
    }
    _equal(f"{what}: snapshot remaining", want_remaining, dict(snap.remaining))
    return snap


async def _held(budget: Budget, what: str, **dims: int) -> Reservation:
    """``try_reserve(**dims)``, which the check expects to fit."""
    reservation = await budget.try_reserve(dims)
    if reservation is None:
        _fail(f"{what}: try_reserve({dims}) was refused, but it fits")
    live = _LIVE.get()
    if live is not None:
        live.append(reservation)
    return reservation


async def _refused(budget: Budget, what: str, *, use_headroom: bool = False, **dims: int) -> None:
    """``try_reserve(**dims)``, which the check expects to return ``None``."""
    reservation = await budget.try_reserve(dims, use_headroom=use_headroom)
    if reservation is not None:
        await reservation.release()
        _fail(f"{what}: try_reserve({dims}) returned a reservation instead of None")


class _Raises(Generic[_E]):
    """``with _Raises(Kind, what) as caught:`` fails unless the block raises *Kind*."""

    def __init__(self, kind: type[_E], what: str) -> None:
        self.kind = kind
        self.what = what
        self.value: _E | None = None

    def __enter__(self) -> _Raises[_E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            _fail(f"{self.what}: expected {self.kind.__name__}, nothing was raised")
        if isinstance(exc, self.kind):
            self.value = exc
            return True
        if isinstance(exc, Exception) and not isinstance(exc, AssertionError):
            raise AssertionError(
                f"{self.what}: expected {self.kind.__name__}, got {exc!r}"
            ) from exc
        return False

    @property
    def error(self) -> _E:
        if self.value is None:  # pragma: no cover - __exit__ fails first
            _fail(f"{self.what}: nothing was raised")
        return self.value


_GRANTED: Final = "granted"


class _Waiter:
    """A task's reservation with a timeout: ``await run()`` in a task group, then read
    ``outcome`` (``None`` while waiting, then "granted" or "refused (...)")."""

    def __init__(
        self,
        budget: Budget,
        amounts: Mapping[str, int],
        *,
        timeout: float,
        record: Mapping[str, int] | None = None,
        hold: bool = False,
    ) -> None:
        self.budget = budget
        self.amounts = amounts
        self.timeout = timeout
        self.record = record
        self.hold = hold
        self.outcome: str | None = None
        self.done = anyio.Event()

    def __str__(self) -> str:
        return self.outcome or "still waiting"

    async def run(self) -> None:
        try:
            async with self.budget.reserve(self.amounts, timeout=self.timeout) as r:
                self.outcome = _GRANTED
                if self.record is not None:
                    r.record(self.record)
                if self.hold:
                    await anyio.sleep_forever()
        except BudgetExhausted as exc:
            self.outcome = f"refused ({exc})"
        finally:
            self.done.set()


_CHECKS: list[Check] = []
_LIVE: ContextVar[list[Reservation] | None] = ContextVar("_LIVE", default=None)


def _check(func: Check) -> Check:
    """Register a check, failing it (instead of hanging) after `TIME_LIMIT` seconds."""

    @functools.wraps(func)
    async def check(make_store: StoreFactory) -> None:
        live: list[Reservation] = []
        token = _LIVE.set(live)
        try:
            with anyio.fail_after(TIME_LIMIT):
                await func(make_store)
        except AssertionError:
            raise
        except TimeoutError as exc:
            raise AssertionError(
                f"did not finish within {TIME_LIMIT} s: a wait that should end never did"
            ) from exc
        except Exception as exc:  # a store error is a failed check too: say so, chained
            raise AssertionError(f"raised {exc!r}") from exc
        finally:
            _LIVE.reset(token)
            # A failed check leaves no reservation open behind it (nor a ResourceWarning).
            with anyio.CancelScope(shield=True):
                for reservation in live:
                    if reservation.held:
                        with contextlib.suppress(Exception):
                            await reservation.release()

    _CHECKS.append(check)
    return check


# -- reserve, record, settle --------------------------------------------------------------


@_check
async def reserve_holds_and_settle_charges_what_was_recorded(make_store: StoreFactory) -> None:
    """Entering a reservation holds its amounts; leaving charges what was recorded and
    refunds the rest.
    """
    budget = await _budget(make_store, {"tokens": 100, "calls": 10}, "settle")
    await _counters(budget, "a new budget")
    async with budget.reserve(tokens=40, calls=1) as r:
        await _counters(
            budget, "while 40 tokens, 1 call are held", reserved={"tokens": 40, "calls": 1}
        )
        _equal("remaining() while held", {"tokens": 60, "calls": 9}, await budget.remaining())
        r.record(tokens=20)
        r.record({"tokens": 5, "calls": 1})
    await _counters(budget, "after recording 25 tokens, 1 call", spent={"tokens": 25, "calls": 1})
    _equal("the reservation's verdict", _CONTINUE, r.verdict)
    early = await _held(budget, "an early commit", tokens=10)
    early.record(Usage(input_tokens=6, output_tokens=4))
    _equal("commit()'s verdict", _CONTINUE, await early.commit())
    await _counters(budget, "after commit() of 10 tokens", spent={"tokens": 35, "calls": 1})
    _equal("remaining() after settles", {"tokens": 65, "calls": 9}, await budget.remaining())


@_check
async def unrecorded_exit_refunds_or_charges_all(make_store: StoreFactory) -> None:
    """A normal exit with nothing recorded refunds everything, or charges the whole
    reservation with on_unrecorded="charge".
    """
    budget = await _budget(make_store, {"tokens": 100}, "unrecorded")
    async with budget.reserve(tokens=30):
        pass
    await _counters(budget, "after an exit with nothing recorded")
    async with budget.reserve(tokens=30, on_unrecorded="charge"):
        pass
    await _counters(budget, 'after on_unrecorded="charge"', spent={"tokens": 30})


class _Boom(Exception):
    pass


@_check
async def failed_exit_charges_only_what_was_recorded(make_store: StoreFactory) -> None:
    """A block left by an exception refunds its reservation and charges only what was
    recorded before, and release() charges nothing.
    """
    budget = await _budget(make_store, {"tokens": 100}, "failed")
    try:
        async with budget.reserve(tokens=30) as r:
            r.record(tokens=7)
            raise _Boom
    except _Boom:
        pass
    await _counters(budget, "after an exception with 7 recorded", spent={"tokens": 7})
    try:
        async with budget.reserve(tokens=30):
            raise _Boom
    except _Boom:
        pass
    await _counters(budget, "after an exception with nothing recorded", spent={"tokens": 7})
    released = await _held(budget, "a reservation to release", tokens=30)
    released.record(tokens=9)
    await released.release()
    await _counters(budget, "after release() of a recorded reservation", spent={"tokens": 7})


@_check
async def reservations_are_all_or_nothing(make_store: StoreFactory) -> None:
    """A reservation that does not fit changes nothing and is denied naming the first
    dimension, in declaration order, that does not fit.
    """
    # Declaration order is not alphabetical: a store that sorts dimensions names the wrong one.
    budget = await _budget(make_store, {"zeta": 10, "alpha": 10, "mid": 10}, "all-or-nothing")
    _equal("the budget's dimensions", ("zeta", "alpha", "mid"), budget.dims)
    holder = await _held(budget, "the first reservation", zeta=4, alpha=4, mid=4)
    held = {"zeta": 4, "alpha": 4, "mid": 4}
    with _Raises(BudgetExhausted, "reserving alpha=7, mid=7 with 6 left") as caught:
        async with budget.reserve(zeta=1, alpha=7, mid=7):
            _fail("a reservation that does not fit was entered")
    _equal("BudgetExhausted.dim", "alpha", caught.error.dim)
    _equal("BudgetExhausted.requested", 7, caught.error.requested)
    _equal("BudgetExhausted.remaining", 6, caught.error.remaining)
    await _counters(budget, "after a denied reservation", reserved=held)
    await _refused(budget, "try_reserve(mid=7) with 6 left", zeta=1, alpha=1, mid=7)
    await _counters(budget, "after a refused try_reserve", reserved=held)
    exact = await _held(budget, "a reservation up to the limit", zeta=6, alpha=6, mid=6)
    await _counters(budget, "at the limit", reserved={"zeta": 10, "alpha": 10, "mid": 10})
    await exact.release()
    await holder.release()
    await _counters(budget, "after both released")


@_check
async def amounts_are_validated_before_anything_changes(make_store: StoreFactory) -> None:
    """Unknown dimensions and amounts that are not ints in 0 .. 2**63 - 1 are refused before
    anything changes.
    """
    budget = await _budget(make_store, {"tokens": 100}, "validation")
    with _Raises(UnknownDimension, "reserving an unknown dimension"):
        async with budget.reserve(tokens=1, images=1):
            _fail("a reservation naming an unknown dimension was entered")
    for bad in (-1, MAX_AMOUNT + 1, True, 1.0):
        amounts: Mapping[str, Any] = {"tokens": bad}
        with _Raises(InvalidAmount, f"charging tokens={bad!r}"):
            await budget.charge(amounts)
    await _counters(budget, "after refused amounts")


# -- direct operations ---------------------------------------------------------------------


@_check
async def settles_and_charges_are_never_refused(make_store: StoreFactory) -> None:
    """Usage settled above its reservation, and plain charges, are recorded even past the
    limit; remaining floors at 0 and an over-limit dimension admits no new reservation.
    """
    budget = await _budget(make_store, {"tokens": 100, "calls": 10}, "never-refused")
    async with budget.reserve(tokens=10) as r:
        r.record(tokens=90)
    await _counters(budget, "after settling 90 on a reservation of 10", spent={"tokens": 90})
    _equal("charge() past the limit", _exhausted("tokens"), await budget.charge(tokens=30))
    snap = await _counters(budget, "after charging past the limit", spent={"tokens": 120})
    _equal("the snapshot's verdict", _exhausted("tokens"), snap.verdict)
    _equal("remaining() past the limit", {"tokens": 0, "calls": 10}, await budget.remaining())
    with _Raises(BudgetExhausted, "reserving calls while tokens are past their limit") as caught:
        async with budget.reserve(calls=1):
            _fail("a reservation was entered while a dimension is past its limit")
    _equal("BudgetExhausted.dim", "tokens", caught.error.dim)


@_check
async def strict_charge_is_all_or_nothing(make_store: StoreFactory) -> None:
    """A strict charge that would pass a limit raises BudgetExceeded with dim, limit and
    attempted (counting reservations) and changes nothing.
    """
    budget = await _budget(make_store, {"tokens": 100, "calls": 10}, "strict")
    await budget.charge(tokens=50)
    holder = await _held(budget, "a live reservation", tokens=20)
    with _Raises(BudgetExceeded, "a strict charge of 31 with 80 used of 100") as caught:
        await budget.charge(tokens=31, calls=1, strict=True)
    _equal("BudgetExceeded.dim", "tokens", caught.error.dim)
    _equal("BudgetExceeded.limit", 100, caught.error.limit)
    _equal("BudgetExceeded.attempted", 101, caught.error.attempted)
    with _Raises(BudgetExceeded, "a strict charge past two limits") as caught:
        await budget.charge(calls=11, tokens=40, strict=True)
    _equal("BudgetExceeded.dim (the first declared)", "tokens", caught.error.dim)
    await _counters(
        budget, "after refused strict charges", spent={"tokens": 50}, reserved={"tokens": 20}
    )
    verdict = await budget.charge(tokens=30, calls=10, strict=True)
    _equal("a strict charge up to the limit", _exhausted("tokens"), verdict)
    await holder.release()
    await _counters(budget, "after a strict charge to the limit", spent={"tokens": 80, "calls": 10})


@_check
async def reset_zeroes_spent_and_keeps_live_reservations(make_store: StoreFactory) -> None:
    """reset() sets spent to 0 while live reservations stay counted until they settle."""
    budget = await _budget(make_store, {"tokens": Limit(100, warn=50)}, "reset")
    await budget.charge(tokens=60)
    holder = await _held(budget, "a reservation across the reset", tokens=30)
    await budget.reset()
    snap = await _counters(budget, "after reset()", reserved={"tokens": 30})
    _equal("the verdict after reset()", _CONTINUE, snap.verdict)
    holder.record(tokens=10)
    await holder.commit()
    await _counters(budget, "after settling the reservation", spent={"tokens": 10})


@_check
async def snapshot_reports_limits_and_counters(make_store: StoreFactory) -> None:
    """snapshot() reports every dimension's Limit, spent, reserved and remaining (headroom
    included) and the verdict; remaining() agrees.
    """
    limits: dict[str, Limit | int] = {
        "tokens": Limit(1000, warn=800, headroom=100),
        "cost_micros": usd("5"),
        "calls": Limit(3),
    }
    budget = await _budget(make_store, limits, "snapshot")
    _equal("the budget's dimensions", ("tokens", "cost_micros", "calls"), budget.dims)
    await budget.charge(tokens=100, cost_micros=usd("0.5"))
    async with budget.reserve(tokens=50, calls=1) as r:
        snap = await _counters(
            budget,
            "while holding",
            spent={"tokens": 100, "cost_micros": 500_000},
            reserved={"tokens": 50, "calls": 1},
        )
        want = {"tokens": limits["tokens"], "cost_micros": Limit(5_000_000), "calls": Limit(3)}
        _equal("snapshot().limits", want, dict(snap.limits))
        _equal("snapshot().verdict", _CONTINUE, snap.verdict)
        _equal("remaining()", dict(snap.remaining), await budget.remaining())
        r.record(tokens=700)
    snap = await _counters(
        budget, "after settling 700", spent={"tokens": 800, "cost_micros": 500_000}
    )
    _equal("snapshot().verdict at the warn level", _warn("tokens"), snap.verdict)


@_check
async def set_limits_keeps_the_counters(make_store: StoreFactory) -> None:
    """set_limits() replaces the limits in place: counters stay, a raised limit admits more,
    a lowered one can leave the budget exhausted.
    """
    budget = await _budget(make_store, {"tokens": 100}, "set-limits")
    await budget.charge(tokens=60)
    holder = await _held(budget, "a live reservation", tokens=30)
    await _refused(budget, "try_reserve(20) with 10 left", tokens=20)
    _equal("set_limits() raising the limit", _CONTINUE, await budget.set_limits({"tokens": 200}))
    snap = await _counters(
        budget, "after raising the limit", spent={"tokens": 60}, reserved={"tokens": 30}
    )
    _equal("limits after set_limits()", {"tokens": Limit(200)}, dict(snap.limits))
    more = await _held(budget, "a reservation the raised limit admits", tokens=20)
    await more.release()
    lowered = await budget.set_limits({"tokens": Limit(80, warn=10)})
    _equal("set_limits() below what is used", _exhausted("tokens"), lowered)
    snap = await _counters(
        budget, "after lowering the limit", spent={"tokens": 60}, reserved={"tokens": 30}
    )
    _equal("limits after lowering", {"tokens": Limit(80, warn=10)}, dict(snap.limits))
    with _Raises(InvalidLimits, "set_limits() with other dimensions"):
        await budget.set_limits({"calls": 10})
    snap = await _counters(
        budget, "after a refused set_limits()", spent={"tokens": 60}, reserved={"tokens": 30}
    )
    _equal("limits after a refused set_limits()", {"tokens": Limit(80, warn=10)}, dict(snap.limits))
    await holder.release()


# -- verdicts, headroom, saturation -----------------------------------------------------------


@_check
async def verdicts_follow_warn_and_limit(make_store: StoreFactory) -> None:
    """Verdicts turn WARN at the warn level and EXHAUSTED at the limit (both inclusive,
    reservations counted), naming the first dimension in declaration order at the worst
    status.
    """
    limits = {"zeta": Limit(10, warn=5), "alpha": Limit(10, warn=5)}
    budget = await _budget(make_store, limits, "verdicts")
    _equal("below every warn level", _CONTINUE, await budget.charge(zeta=4))
    _equal("alpha at its warn level", _warn("alpha"), await budget.charge(alpha=5))
    _equal("both at their warn levels", _warn("zeta"), await budget.charge(zeta=1))
    _equal("alpha at its limit, zeta warned", _exhausted("alpha"), await budget.charge(alpha=5))
    _equal("both at their limits", _exhausted("zeta"), await budget.charge(zeta=5))
    _equal("the snapshot's verdict", _exhausted("zeta"), (await budget.snapshot()).verdict)
    await budget.reset()
    _equal("after reset()", _CONTINUE, (await budget.snapshot()).verdict)
    async with budget.reserve(alpha=5) as r:
        _equal("holding alpha=5", _warn("alpha"), (await budget.snapshot()).verdict)
    _equal("after refunding it", _CONTINUE, r.verdict)
    async with budget.reserve(alpha=5) as r:
        r.record(alpha=10)
    _equal("after settling alpha=10", _exhausted("alpha"), r.verdict)


@_check
async def headroom_is_kept_for_use_headroom(make_store: StoreFactory) -> None:
    """Ordinary reservations stop at limit - headroom; reservations with use_headroom=True
    may go up to the limit; charges ignore headroom.
    """
    budget = await _budget(make_store, {"tokens": Limit(100, headroom=20)}, "headroom")
    ordinary = await _held(budget, "an ordinary reservation up to the headroom", tokens=80)
    await _refused(budget, "an ordinary reservation into the headroom", tokens=1)
    with _Raises(BudgetExhausted, "an ordinary reservation into the headroom") as caught:
        async with budget.reserve(tokens=1):
            _fail("an ordinary reservation entered the headroom")
    _equal("BudgetExhausted.dim", "tokens", caught.error.dim)
    wrap_up = await budget.try_reserve(tokens=20, use_headroom=True)
    if wrap_up is None:
        _fail("try_reserve(use_headroom=True) was refused the headroom")
    await _refused(budget, "use_headroom=True past the limit", use_headroom=True, tokens=1)
    await _counters(budget, "with the headroom used", reserved={"tokens": 100})
    await wrap_up.release()
    await ordinary.release()
    _equal(
        "a strict charge into the headroom", _CONTINUE, await budget.charge(tokens=90, strict=True)
    )
    await _counters(budget, "after charging into the headroom", spent={"tokens": 90})


@_check
async def totals_are_exact_and_saturate(make_store: StoreFactory) -> None:
    """Totals are exact up to 2**63 - 1 (no float rounding) and saturate there instead of
    overflowing.
    """
    top = MAX_AMOUNT
    budget = await _budget(make_store, {"tokens": top, "calls": 10}, "saturation")
    await budget.charge(tokens=2**53 + 1)  # the first int a double cannot hold
    await _counters(budget, "after charging 2**53 + 1", spent={"tokens": 2**53 + 1})
    await budget.reset()
    await budget.charge(tokens=top - 2)
    holder = await _held(budget, "a reservation of 1 below the maximum", tokens=1)
    await _counters(
        budget, "one below the maximum", spent={"tokens": top - 2}, reserved={"tokens": 1}
    )
    holder.record(tokens=top)
    holder.record(tokens=top)
    _equal("the verdict of a saturating settle", _exhausted("tokens"), await holder.commit())
    await _counters(budget, "after a settle past 2**63 - 1", spent={"tokens": top})
    _equal("charge() at the maximum", _exhausted("tokens"), await budget.charge(tokens=top))
    await _counters(budget, "after a charge past 2**63 - 1", spent={"tokens": top})
    with _Raises(BudgetExceeded, "a strict charge past 2**63 - 1") as caught:
        await budget.charge(tokens=top, strict=True)
    _equal("BudgetExceeded.attempted, saturated", top, caught.error.attempted)
    _equal("remaining() at the maximum", {"tokens": 0, "calls": 10}, await budget.remaining())


# -- exactly once, sharing, limits -----------------------------------------------------------


@_check
async def closing_twice_is_refused(make_store: StoreFactory) -> None:
    """A reservation is settled or released at most once: a second attempt raises
    ReservationClosed and changes nothing, in Budget and in the store's Account.
    """
    budget = await _budget(make_store, {"tokens": 100}, "closed")
    r = await _held(budget, "a reservation", tokens=10)
    await r.extend()
    r.record(tokens=4)
    await r.commit()
    for what, again in (
        ("a second commit()", r.commit),
        ("release() after commit()", r.release),
        ("extend() after commit()", r.extend),
    ):
        with _Raises(ReservationClosed, what):
            await again()
    await _counters(budget, "after closing twice", spent={"tokens": 4})
    # The store itself must refuse, not only `Reservation`'s bookkeeping.
    store = await _store(make_store)
    account = store.open(_name("closed-account"), {"tokens": Limit(100)})
    ten, three = account.vector({"tokens": 10}), account.vector({"tokens": 3})
    held = await account.reserve(ten, use_headroom=False, timeout=None)
    if isinstance(held, Denial):
        _fail(f"Account.reserve() of 10 of 100 was denied: {held}")
    await account.settle(held, three)
    with _Raises(ReservationClosed, "Account.settle() of a settled reservation"):
        await account.settle(held, three)
    with _Raises(ReservationClosed, "Account.release() of a settled reservation"):
        await account.release(held)
    released = await account.reserve(ten, use_headroom=False, timeout=None)
    if isinstance(released, Denial):
        _fail(f"Account.reserve() of 10 of 100 was denied: {released}")
    await account.release(released)
    with _Raises(ReservationClosed, "Account.settle() of a released reservation"):
        await account.settle(released, three)
    if isinstance(account, LocalAccount):
        local = account.reserve_nowait(ten, use_headroom=False)
        if isinstance(local, Denial):
            _fail(f"reserve_nowait() of 10 of 100 was denied: {local}")
        account.settle_nowait(local, three)
        with _Raises(ReservationClosed, "settle_nowait() of a settled reservation"):
            account.settle_nowait(local, three)
        with _Raises(ReservationClosed, "release_nowait() of a settled reservation"):
            account.release_nowait(local)
    snap = await account.snapshot()
    spent = 6 if isinstance(account, LocalAccount) else 3
    _equal("Account spent after closing twice", {"tokens": spent}, dict(snap.spent))
    _equal("Account reserved after closing twice", {"tokens": 0}, dict(snap.reserved))


@_check
async def budgets_with_one_name_share_counters(make_store: StoreFactory) -> None:
    """Budget objects opened with one name (and parent) on one store share counters; other
    names, and same-named children of other parents, do not.
    """
    store = await _store(make_store)
    name = _name("shared")
    limits = {"tokens": 100}
    first, second = Budget(limits, name=name, store=store), Budget(limits, name=name, store=store)
    held = await _held(first, "a reservation through the first", tokens=30)
    await _counters(second, "the second, seeing the first's reservation", reserved={"tokens": 30})
    await second.charge(tokens=50)
    await _counters(
        first,
        "the first, seeing the second's charge",
        spent={"tokens": 50},
        reserved={"tokens": 30},
    )
    await _refused(second, "the second, reserving what the first holds", tokens=30)
    held.record(tokens=10)
    await held.commit()
    await _counters(second, "the second, after the first settled", spent={"tokens": 60})
    await second.reset()
    await _counters(first, "the first, after the second's reset()")
    other = Budget(limits, name=name + "-other", store=store)
    await other.charge(tokens=5)
    await _counters(first, "the first, after another name was charged")
    left = Budget(limits, name=name + "-left", store=store).child({"tokens": 50}, name="kid")
    right = Budget(limits, name=name + "-right", store=store).child({"tokens": 50}, name="kid")
    await left.charge(tokens=7)
    await _counters(right, "a same-named child of another parent")
    again = Budget(limits, name=name + "-left", store=store).child({"tokens": 50}, name="kid")
    await _counters(again, "the same child opened again", spent={"tokens": 7})


@_check
async def other_limits_need_update_limits(make_store: StoreFactory) -> None:
    """Opening a shared budget with other limits raises LimitsMismatch and changes nothing;
    update_limits=True replaces them and keeps the counters.
    """
    store = await _store(make_store)
    name = _name("limits")
    limits: dict[str, Limit | int] = {"tokens": Limit(100, warn=80), "calls": 10}
    first = Budget(limits, name=name, store=store)
    await first.charge(tokens=30)
    same = Budget({"tokens": Limit(100, warn=80), "calls": Limit(10)}, name=name, store=store)
    await _counters(same, "the same limits, written another way", spent={"tokens": 30})
    others: tuple[tuple[str, dict[str, Limit | int]], ...] = (
        ("another warn level", {"tokens": Limit(100, warn=90), "calls": 10}),
        ("another limit", {"tokens": 200, "calls": 10}),
    )
    for what, other in others:
        # A store may check lazily, at the first operation.
        with _Raises(LimitsMismatch, f"opening with {what}"):
            await Budget(other, name=name, store=store).snapshot()
    snap = await _counters(first, "after refused openings", spent={"tokens": 30})
    _equal(
        "limits after refused openings",
        {"tokens": Limit(100, warn=80), "calls": Limit(10)},
        dict(snap.limits),
    )
    new: dict[str, Limit | int] = {"tokens": Limit(200), "calls": 10}
    updated = Budget(new, name=name, store=store, update_limits=True)
    snap = await _counters(updated, "opened with update_limits=True", spent={"tokens": 30})
    want = {"tokens": Limit(200), "calls": Limit(10)}
    _equal("limits after update_limits=True", want, dict(snap.limits))
    snap = await _counters(first, "the first, after the update", spent={"tokens": 30})
    _equal("limits seen by the first", want, dict(snap.limits))
    more = await _held(first, "a reservation the new limit admits", tokens=150)
    await more.release()


# -- hierarchy ------------------------------------------------------------------------------


@_check
async def children_apply_to_every_level(make_store: StoreFactory) -> None:
    """A child's operations apply atomically to its whole chain (2 and 3 levels), a denial
    names the level and dimension, and dimensions a parent lacks are not charged to it.
    """
    store = await _store(make_store)
    root_name = _name("root")
    root = Budget({"tokens": 1000, "calls": 100}, name=root_name, store=store)
    mid = root.child({"tokens": 100, "calls": 10}, name="mid")
    leaf = mid.child({"tokens": 50, "images": 5}, name="leaf")  # parents lack images
    levels = (("leaf", leaf), ("mid", mid), ("root", root))

    async def expect(what: str, spent: Mapping[str, int], reserved: Mapping[str, int]) -> None:
        for level, budget in levels:
            own_spent = {dim: spent.get(dim, 0) for dim in budget.dims}
            own_reserved = {dim: reserved.get(dim, 0) for dim in budget.dims}
            await _counters(budget, f"{what}, at {level}", spent=own_spent, reserved=own_reserved)

    async with mid.reserve(tokens=5, calls=1) as two_levels:
        await _counters(root, "a 2-level reservation, at root", reserved={"tokens": 5, "calls": 1})
        two_levels.record(calls=1)
    await _counters(root, "after a 2-level settle", spent={"calls": 1})
    await _counters(mid, "after a 2-level settle", spent={"calls": 1})
    await root.reset()
    await mid.reset()
    async with leaf.reserve(tokens=20, images=2) as r:
        await expect("a 3-level reservation", {}, {"tokens": 20, "images": 2})
        r.record(tokens=15, images=1)
    await expect("after a 3-level settle", {"tokens": 15, "images": 1}, {})
    await leaf.charge(tokens=5, images=1)
    await expect("after a 3-level charge", {"tokens": 20, "images": 2}, {})
    spent = {"leaf": 20, "mid": 20, "root": 20}

    async def denied(tokens: int, level: str, budget_name: str) -> None:
        with _Raises(BudgetExhausted, f"a leaf reservation that {level} cannot hold") as caught:
            async with leaf.reserve(tokens=tokens):
                _fail(f"a reservation that does not fit at {level} was entered")
        _equal(f"the level named by a denial at {level}", budget_name, caught.error.budget)
        _equal(f"the dimension named by a denial at {level}", "tokens", caught.error.dim)
        for name, budget in levels:
            await _counters(
                budget,
                f"after a denial at {level}, at {name}",
                spent={"tokens": spent[name], "images": 2},
            )

    await denied(31, "leaf", "leaf")  # leaf: 20 + 31 > 50
    await mid.charge(tokens=70)
    spent["mid"] = spent["root"] = 90
    await denied(11, "mid", "mid")  # leaf: 31 <= 50; mid: 90 + 11 > 100
    await root.charge(tokens=905)
    spent["root"] = 995
    await denied(8, "root", root_name)  # leaf: 28, mid: 98; root: 995 + 8 > 1000
    with _Raises(BudgetExceeded, "a strict leaf charge the root cannot hold") as exceeded:
        await leaf.charge(tokens=8, strict=True)
    _equal("BudgetExceeded.budget", root_name, exceeded.error.budget)
    _equal("BudgetExceeded.attempted", 1003, exceeded.error.attempted)
    await leaf.reset()
    await _counters(leaf, "the leaf after its reset()")
    await _counters(mid, "mid after the leaf's reset()", spent={"tokens": spent["mid"]})


# -- waiting ------------------------------------------------------------------------------


@_check
async def waiting_reservation_is_granted_when_budget_is_freed(make_store: StoreFactory) -> None:
    """A reservation with a timeout waits while live reservations hold the budget and is
    granted once one settles.
    """
    budget = await _budget(make_store, {"tokens": 10}, "granted")
    holder = await _held(budget, "the holder", tokens=8)
    waiter = _Waiter(budget, {"tokens": 5}, timeout=_WAIT, record={"tokens": 5})
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        early = waiter.outcome
        holder.record(tokens=3)
        await holder.commit()  # 3 spent + 5 asked fit in 10
        with anyio.move_on_after(_WAIT):
            await waiter.done.wait()
        tg.cancel_scope.cancel()
    if early is not None:
        _fail(f"a reservation that did not fit yet was {early} instead of waiting")
    if waiter.outcome != _GRANTED:
        _fail(f"{_WAIT} s after budget was freed, a waiting reservation was {waiter}")
    await _counters(budget, "after the waiter settled", spent={"tokens": 8})


@_check
async def waiting_fails_at_once_when_spent_rules_it_out(make_store: StoreFactory) -> None:
    """A waiting reservation that spent alone rules out, at any level, fails at once with
    BudgetExhausted.
    """
    budget = await _budget(make_store, {"tokens": 10}, "impossible")
    await budget.charge(tokens=8)
    child = budget.child({"tokens": 10}, name="child")
    for what, target in (("the budget", budget), ("a child of it", child)):
        with anyio.move_on_after(_WAIT) as guard:
            with _Raises(BudgetExhausted, f"waiting on {what} for what spent rules out"):
                async with target.reserve(tokens=5, timeout=math.inf):
                    _fail(f"a reservation on {what} that cannot fit was entered")
        if guard.cancelled_caught:
            _fail(f"a reservation on {what} that spent rules out waited instead of failing")
    await _counters(budget, "after the refusals", spent={"tokens": 8})
    await _counters(child, "the child after the refusals")


@_check
async def waiting_times_out(make_store: StoreFactory) -> None:
    """A waiting reservation that does not fit before its timeout raises BudgetExhausted,
    leaves nothing held, and blocks nobody after.
    """
    budget = await _budget(make_store, {"tokens": 10}, "timeout")
    holder = await _held(budget, "the holder", tokens=8)
    start = anyio.current_time()
    with _Raises(BudgetExhausted, f"waiting {_TIMEOUT} s for budget nobody frees"):
        async with budget.reserve(tokens=5, timeout=_TIMEOUT):
            _fail("a reservation that does not fit was entered")
    elapsed = anyio.current_time() - start
    if elapsed < _TIMEOUT * 0.8:
        _fail(f"a reservation with timeout={_TIMEOUT} gave up after {elapsed:.3f} s")
    await _counters(budget, "after the timeout", reserved={"tokens": 8})
    small = await _held(budget, "a reservation after a waiter timed out", tokens=2)
    await small.release()
    await holder.release()
    await _counters(budget, "after every release")


@_check
async def waiters_are_served_first_come_first_served(make_store: StoreFactory) -> None:
    """While a large reservation waits, smaller ones that would fit do not overtake it, and
    it is granted once enough is freed.
    """
    budget = await _budget(make_store, {"tokens": 10}, "fifo")
    holder = await _held(budget, "the holder", tokens=6)
    large = _Waiter(budget, {"tokens": 10}, timeout=_WAIT)
    overtook = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(large.run)
        await anyio.wait_all_tasks_blocked()
        # A store that queues through a server may need a moment to register the waiter:
        # small requests may pass until then, but must be refused once it is queued.
        for _ in range(20):
            small = await budget.try_reserve(tokens=1)
            if small is None:
                break
            overtook += 1
            await small.release()
            await anyio.sleep(0.01)
        refused = small is None
        await holder.release()
        with anyio.move_on_after(_WAIT):
            await large.done.wait()
        tg.cancel_scope.cancel()
    if not refused:
        _fail(f"{overtook} small reservations overtook a waiting large one")
    if large.outcome != _GRANTED:
        _fail(f"once the budget was free, a waiting large reservation was {large}")
    await _counters(budget, "after the large reservation was refunded")


@_check
async def concurrent_tasks_never_overspend(make_store: StoreFactory) -> None:
    """Hundreds of tasks racing for a budget never hold more than its limit, and every
    refund is paid exactly once.
    """
    budget = await _budget(make_store, {"calls": 50, "tokens": 1000}, "race")
    racers = 200
    tried = 0
    winners: list[int] = []
    everyone_tried = anyio.Event()

    async def racer(i: int) -> None:
        nonlocal tried
        r = await budget.try_reserve(calls=1, tokens=5)
        tried += 1
        if tried == racers:
            everyone_tried.set()
        if r is None:
            return
        winners.append(i)
        async with r:
            await everyone_tried.wait()  # hold until every racer has tried
            r.record(calls=1, tokens=i % 3)

    async with anyio.create_task_group() as tg:
        for i in range(racers):
            tg.start_soon(racer, i)
    _equal(f"reservations granted to {racers} racers for 50 calls", 50, len(winners))
    spent = {"calls": 50, "tokens": sum(i % 3 for i in winners)}
    await _counters(budget, "after the race", spent=spent)

    # Waiters through the queue: never more inside than the limit, everyone served.
    queue = await _budget(make_store, {"slots": 5, "work": 1000}, "queue")
    inside = peak = served = 0

    async def worker() -> None:
        nonlocal inside, peak, served
        async with queue.reserve(slots=1, work=10, timeout=_WAIT) as r:
            inside += 1
            peak = max(peak, inside)
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            inside -= 1
            served += 1
            r.record(work=3)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    _equal("workers served", 20, served)
    if peak > 5:
        _fail(f"{peak} reservations of 1 slot were held at once in a budget of 5 slots")
    await _counters(queue, "after every worker", spent={"work": 60})


# -- cancellation ---------------------------------------------------------------------------


@_check
async def cancelled_reservations_settle_exactly_once(make_store: StoreFactory) -> None:
    """A reservation whose block is cancelled still settles (what was recorded charged, the
    rest refunded), and a cancelled waiter, even one granted in the same tick, leaves
    nothing held.
    """
    budget = await _budget(make_store, {"tokens": 100}, "cancel")
    entered = anyio.Event()

    async def work(record: int) -> None:
        async with budget.reserve(tokens=30) as r:
            if record:
                r.record(tokens=record)
            entered.set()
            await anyio.sleep_forever()

    for record, spent in ((7, 7), (0, 7)):
        entered = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(work, record)
            await entered.wait()
            tg.cancel_scope.cancel()
        await _counters(
            budget, f"after cancelling a block that recorded {record}", spent={"tokens": spent}
        )

    with anyio.CancelScope() as scope:  # the exit itself runs in a cancelled scope
        async with budget.reserve(tokens=30) as r:
            r.record(tokens=5)
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    await _counters(budget, "after an exit inside a cancelled scope", spent={"tokens": 12})

    for same_tick in (False, True):
        holder = await _held(budget, "the holder", tokens=88)  # 12 + 88: full
        waiter = _Waiter(budget, {"tokens": 30}, timeout=math.inf, hold=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            if same_tick:
                await holder.release()  # may grant the waiter, which is cancelled at once
                tg.cancel_scope.cancel()
            else:
                tg.cancel_scope.cancel()
                await holder.release()
        when = "in the tick it was granted" if same_tick else "while waiting"
        if waiter.outcome not in (None, _GRANTED):
            _fail(f"a reservation with timeout=math.inf was {waiter.outcome}")
        await _counters(budget, f"after cancelling a waiter {when}", spent={"tokens": 12})
        everything = await _held(
            budget, f"all that is left after a waiter cancelled {when}", tokens=88
        )
        await everything.release()


@_check
async def crossings_are_announced_once(make_store: StoreFactory) -> None:
    """on_warn and on_exhausted are called once per crossing, with the name of the budget
    crossed and its verdict, and again only after a reset.
    """
    seen: list[tuple[str, str | None, Verdict]] = []

    def on_warn(name: str | None, verdict: Verdict) -> None:
        seen.append(("warn", name, verdict))

    async def on_exhausted(name: str | None, verdict: Verdict) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("exhausted", name, verdict))

    store = await _store(make_store)
    name = _name("crossings")
    limits = {"tokens": Limit(100, warn=50)}
    budget = Budget(limits, name=name, store=store, on_warn=on_warn, on_exhausted=on_exhausted)
    await budget.charge(tokens=30)
    async with budget.reserve(tokens=30) as r:  # 60 held and spent: the warn crossing
        r.record(tokens=30)
    await budget.charge(tokens=10)
    await budget.charge(tokens=30)  # 100: the exhausted crossing
    await budget.charge(tokens=5)
    await budget.reset()
    await budget.charge(tokens=60)  # a new period, a new warn crossing
    want = [
        ("warn", name, _warn("tokens")),
        ("exhausted", name, _exhausted("tokens")),
        ("warn", name, _warn("tokens")),
    ]
    _equal("callbacks called", want, seen)
    seen.clear()
    child = budget.child({"tokens": 1000}, name="child")
    await child.charge(tokens=40)  # the parent reaches its limit, the child does not warn
    _equal(
        "callbacks for a crossing at the parent", [("exhausted", name, _exhausted("tokens"))], seen
    )


@_check
async def crossings_reach_the_budget_that_crossed(make_store: StoreFactory) -> None:
    """A crossing at a parent calls the parent's callback, not its child's, even when the
    child bears the parent's name.
    """
    seen: list[tuple[str, str | None, Verdict]] = []
    store = await _store(make_store)
    name = _name("owner")
    parent = Budget(
        {"tokens": Limit(100, warn=50)},
        name=name,
        store=store,
        on_warn=lambda budget, verdict: seen.append(("parent", budget, verdict)),
    )
    child = parent.child(
        {"tokens": Limit(1000, warn=500)},
        name=name,  # names are unique among siblings only
        on_warn=lambda budget, verdict: seen.append(("child", budget, verdict)),
    )
    await child.charge(tokens=60)
    _equal(
        "callbacks for a crossing at the parent alone", [("parent", name, _warn("tokens"))], seen
    )


@_check
async def seed_adapters_work_over_the_store(make_store: StoreFactory) -> None:
    """as_guard() and as_token_budget() give the BudgetGuard and TokenBudget protocols over
    a budget in the store.
    """
    budget = await _budget(make_store, {"tokens": 100, "calls": 2}, "seeds")
    guard = budget.as_guard("calls")
    if not isinstance(guard, BudgetGuard):
        _fail("as_guard() is not a BudgetGuard")
    _equal(
        "guard.try_reserve(1) of 2",
        [True, True, False],
        [await guard.try_reserve(1) for _ in range(3)],
    )
    await guard.release(1)
    await _counters(budget, "after a guard released 1 of 2", reserved={"calls": 1})
    await guard.release(1)
    tokens = budget.as_token_budget()
    if not isinstance(tokens, TokenBudget):
        _fail("as_token_budget() is not a TokenBudget")
    held = await tokens.try_reserve_tokens(60)
    if held is None:
        _fail("try_reserve_tokens(60) of 100 was refused")
    if await tokens.try_reserve_tokens(50) is not None:
        _fail("try_reserve_tokens(50) with 40 left was granted")
    await tokens.record_usage(held, 30, 10)
    unused = await tokens.try_reserve_tokens(50)
    if unused is None:
        _fail("try_reserve_tokens(50) with 60 left was refused")
    async with unused:
        pass  # leaving without usage refunds the estimate
    _equal("tokens_consumed()", 40, await tokens.tokens_consumed())
    await _counters(budget, "after the token budget's calls", spent={"tokens": 40})


CHECKS: Final[Sequence[Check]] = tuple(_CHECKS)
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
