"""Conformance checks: reserving, settling, charging, limits and verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._budget import Budget
from .._errors import (
    BudgetExceeded,
    BudgetExhausted,
    InvalidAmount,
    InvalidLimits,
    LimitsMismatch,
    ReservationClosed,
    UnknownDimension,
)
from .._units import Usage, usd
from ..kernel import MAX_AMOUNT, Denial, Limit, Verdict
from ..protocols import LocalAccount
from ._harness import (
    CONTINUE,
    Raises,
    StoreFactory,
    equal,
    exhausted_at,
    expect_counters,
    expect_refused,
    fail,
    held_reservation,
    new_budget,
    new_store,
    register,
    unique_name,
    warn_at,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

# -- reserve, record, settle --------------------------------------------------------------


@register
async def reserve_holds_and_settle_charges_what_was_recorded(make_store: StoreFactory) -> None:
    """Entering a reservation holds its amounts; leaving charges what was recorded and
    refunds the rest.
    """
    budget = await new_budget(make_store, {"tokens": 100, "calls": 10}, "settle")
    await expect_counters(budget, "a new budget")
    async with budget.reserve(tokens=40, calls=1) as r:
        await expect_counters(
            budget, "while 40 tokens, 1 call are held", reserved={"tokens": 40, "calls": 1}
        )
        equal("remaining() while held", {"tokens": 60, "calls": 9}, await budget.remaining())
        r.record(tokens=20)
        r.record({"tokens": 5, "calls": 1})
    await expect_counters(
        budget, "after recording 25 tokens, 1 call", spent={"tokens": 25, "calls": 1}
    )
    equal("the reservation's verdict", CONTINUE, r.verdict)
    early = await held_reservation(budget, "an early commit", tokens=10)
    early.record(Usage(input_tokens=6, output_tokens=4))
    equal("commit()'s verdict", CONTINUE, await early.commit())
    await expect_counters(budget, "after commit() of 10 tokens", spent={"tokens": 35, "calls": 1})
    equal("remaining() after settles", {"tokens": 65, "calls": 9}, await budget.remaining())


@register
async def unrecorded_exit_refunds_or_charges_all(make_store: StoreFactory) -> None:
    """A normal exit with nothing recorded refunds everything, or charges the whole
    reservation with on_unrecorded="charge".
    """
    budget = await new_budget(make_store, {"tokens": 100}, "unrecorded")
    async with budget.reserve(tokens=30):
        pass
    await expect_counters(budget, "after an exit with nothing recorded")
    async with budget.reserve(tokens=30, on_unrecorded="charge"):
        pass
    await expect_counters(budget, 'after on_unrecorded="charge"', spent={"tokens": 30})


class _Boom(Exception):
    pass


@register
async def failed_exit_charges_only_what_was_recorded(make_store: StoreFactory) -> None:
    """A block left by an exception refunds its reservation and charges only what was
    recorded before, and release() charges nothing.
    """
    budget = await new_budget(make_store, {"tokens": 100}, "failed")
    try:
        async with budget.reserve(tokens=30) as r:
            r.record(tokens=7)
            raise _Boom
    except _Boom:
        pass
    await expect_counters(budget, "after an exception with 7 recorded", spent={"tokens": 7})
    try:
        async with budget.reserve(tokens=30):
            raise _Boom
    except _Boom:
        pass
    await expect_counters(budget, "after an exception with nothing recorded", spent={"tokens": 7})
    released = await held_reservation(budget, "a reservation to release", tokens=30)
    released.record(tokens=9)
    await released.release()
    await expect_counters(budget, "after release() of a recorded reservation", spent={"tokens": 7})


@register
async def reservations_are_all_or_nothing(make_store: StoreFactory) -> None:
    """A reservation that does not fit changes nothing and is denied naming the first
    dimension, in declaration order, that does not fit.
    """
    # Declaration order is not alphabetical: a store that sorts dimensions names the wrong one.
    budget = await new_budget(make_store, {"zeta": 10, "alpha": 10, "mid": 10}, "all-or-nothing")
    equal("the budget's dimensions", ("zeta", "alpha", "mid"), budget.dims)
    holder = await held_reservation(budget, "the first reservation", zeta=4, alpha=4, mid=4)
    held = {"zeta": 4, "alpha": 4, "mid": 4}
    with Raises(BudgetExhausted, "reserving alpha=7, mid=7 with 6 left") as caught:
        async with budget.reserve(zeta=1, alpha=7, mid=7):
            fail("a reservation that does not fit was entered")
    equal("BudgetExhausted.dim", "alpha", caught.error.dim)
    equal("BudgetExhausted.requested", 7, caught.error.requested)
    equal("BudgetExhausted.remaining", 6, caught.error.remaining)
    await expect_counters(budget, "after a denied reservation", reserved=held)
    await expect_refused(budget, "try_reserve(mid=7) with 6 left", zeta=1, alpha=1, mid=7)
    await expect_counters(budget, "after a refused try_reserve", reserved=held)
    exact = await held_reservation(budget, "a reservation up to the limit", zeta=6, alpha=6, mid=6)
    await expect_counters(budget, "at the limit", reserved={"zeta": 10, "alpha": 10, "mid": 10})
    await exact.release()
    await holder.release()
    await expect_counters(budget, "after both released")


@register
async def amounts_are_validated_before_anything_changes(make_store: StoreFactory) -> None:
    """Unknown dimensions and amounts that are not ints in 0 .. 2**63 - 1 are refused before
    anything changes.
    """
    budget = await new_budget(make_store, {"tokens": 100}, "validation")
    with Raises(UnknownDimension, "reserving an unknown dimension"):
        async with budget.reserve(tokens=1, images=1):
            fail("a reservation naming an unknown dimension was entered")
    for bad in (-1, MAX_AMOUNT + 1, True, 1.0):
        amounts: Mapping[str, Any] = {"tokens": bad}
        with Raises(InvalidAmount, f"charging tokens={bad!r}"):
            await budget.charge(amounts)
    await expect_counters(budget, "after refused amounts")


# -- direct operations ---------------------------------------------------------------------


@register
async def settles_and_charges_are_never_refused(make_store: StoreFactory) -> None:
    """Usage settled above its reservation, and plain charges, are recorded even past the
    limit; remaining floors at 0 and an over-limit dimension admits no new reservation.
    """
    budget = await new_budget(make_store, {"tokens": 100, "calls": 10}, "never-refused")
    async with budget.reserve(tokens=10) as r:
        r.record(tokens=90)
    await expect_counters(budget, "after settling 90 on a reservation of 10", spent={"tokens": 90})
    equal("charge() past the limit", exhausted_at("tokens"), await budget.charge(tokens=30))
    snap = await expect_counters(budget, "after charging past the limit", spent={"tokens": 120})
    equal("the snapshot's verdict", exhausted_at("tokens"), snap.verdict)
    equal("remaining() past the limit", {"tokens": 0, "calls": 10}, await budget.remaining())
    with Raises(BudgetExhausted, "reserving calls while tokens are past their limit") as caught:
        async with budget.reserve(calls=1):
            fail("a reservation was entered while a dimension is past its limit")
    equal("BudgetExhausted.dim", "tokens", caught.error.dim)


@register
async def strict_charge_is_all_or_nothing(make_store: StoreFactory) -> None:
    """A strict charge that would pass a limit raises BudgetExceeded with dim, limit and
    attempted (counting reservations) and changes nothing.
    """
    budget = await new_budget(make_store, {"tokens": 100, "calls": 10}, "strict")
    await budget.charge(tokens=50)
    holder = await held_reservation(budget, "a live reservation", tokens=20)
    with Raises(BudgetExceeded, "a strict charge of 31 with 80 used of 100") as caught:
        await budget.charge(tokens=31, calls=1, strict=True)
    equal("BudgetExceeded.dim", "tokens", caught.error.dim)
    equal("BudgetExceeded.limit", 100, caught.error.limit)
    equal("BudgetExceeded.attempted", 101, caught.error.attempted)
    with Raises(BudgetExceeded, "a strict charge past two limits") as caught:
        await budget.charge(calls=11, tokens=40, strict=True)
    equal("BudgetExceeded.dim (the first declared)", "tokens", caught.error.dim)
    await expect_counters(
        budget, "after refused strict charges", spent={"tokens": 50}, reserved={"tokens": 20}
    )
    verdict = await budget.charge(tokens=30, calls=10, strict=True)
    equal("a strict charge up to the limit", exhausted_at("tokens"), verdict)
    await holder.release()
    await expect_counters(
        budget, "after a strict charge to the limit", spent={"tokens": 80, "calls": 10}
    )


@register
async def reset_zeroes_spent_and_keeps_live_reservations(make_store: StoreFactory) -> None:
    """reset() sets spent to 0 while live reservations stay counted until they settle."""
    budget = await new_budget(make_store, {"tokens": Limit(100, warn=50)}, "reset")
    await budget.charge(tokens=60)
    holder = await held_reservation(budget, "a reservation across the reset", tokens=30)
    await budget.reset()
    snap = await expect_counters(budget, "after reset()", reserved={"tokens": 30})
    equal("the verdict after reset()", CONTINUE, snap.verdict)
    holder.record(tokens=10)
    await holder.commit()
    await expect_counters(budget, "after settling the reservation", spent={"tokens": 10})


@register
async def snapshot_reports_limits_and_counters(make_store: StoreFactory) -> None:
    """snapshot() reports every dimension's Limit, spent, reserved and remaining (headroom
    included) and the verdict; remaining() agrees.
    """
    limits: dict[str, Limit | int] = {
        "tokens": Limit(1000, warn=800, headroom=100),
        "cost_micros": usd("5"),
        "calls": Limit(3),
    }
    budget = await new_budget(make_store, limits, "snapshot")
    equal("the budget's dimensions", ("tokens", "cost_micros", "calls"), budget.dims)
    await budget.charge(tokens=100, cost_micros=usd("0.5"))
    async with budget.reserve(tokens=50, calls=1) as r:
        snap = await expect_counters(
            budget,
            "while holding",
            spent={"tokens": 100, "cost_micros": 500_000},
            reserved={"tokens": 50, "calls": 1},
        )
        want = {"tokens": limits["tokens"], "cost_micros": Limit(5_000_000), "calls": Limit(3)}
        equal("snapshot().limits", want, dict(snap.limits))
        equal("snapshot().verdict", CONTINUE, snap.verdict)
        equal("remaining()", dict(snap.remaining), await budget.remaining())
        r.record(tokens=700)
    snap = await expect_counters(
        budget, "after settling 700", spent={"tokens": 800, "cost_micros": 500_000}
    )
    equal("snapshot().verdict at the warn level", warn_at("tokens"), snap.verdict)


@register
async def set_limits_keeps_the_counters(make_store: StoreFactory) -> None:
    """set_limits() replaces the limits in place: counters stay, a raised limit admits more,
    a lowered one can leave the budget exhausted.
    """
    budget = await new_budget(make_store, {"tokens": 100}, "set-limits")
    await budget.charge(tokens=60)
    holder = await held_reservation(budget, "a live reservation", tokens=30)
    await expect_refused(budget, "try_reserve(20) with 10 left", tokens=20)
    equal("set_limits() raising the limit", CONTINUE, await budget.set_limits({"tokens": 200}))
    snap = await expect_counters(
        budget, "after raising the limit", spent={"tokens": 60}, reserved={"tokens": 30}
    )
    equal("limits after set_limits()", {"tokens": Limit(200)}, dict(snap.limits))
    more = await held_reservation(budget, "a reservation the raised limit admits", tokens=20)
    await more.release()
    lowered = await budget.set_limits({"tokens": Limit(80, warn=10)})
    equal("set_limits() below what is used", exhausted_at("tokens"), lowered)
    snap = await expect_counters(
        budget, "after lowering the limit", spent={"tokens": 60}, reserved={"tokens": 30}
    )
    equal("limits after lowering", {"tokens": Limit(80, warn=10)}, dict(snap.limits))
    with Raises(InvalidLimits, "set_limits() with other dimensions"):
        await budget.set_limits({"calls": 10})
    snap = await expect_counters(
        budget, "after a refused set_limits()", spent={"tokens": 60}, reserved={"tokens": 30}
    )
    equal("limits after a refused set_limits()", {"tokens": Limit(80, warn=10)}, dict(snap.limits))
    await holder.release()


# -- verdicts, headroom, saturation -----------------------------------------------------------


@register
async def verdicts_follow_warn_and_limit(make_store: StoreFactory) -> None:
    """Verdicts turn WARN at the warn level and EXHAUSTED at the limit (both inclusive,
    reservations counted), naming the first dimension in declaration order at the worst
    status.
    """
    limits = {"zeta": Limit(10, warn=5), "alpha": Limit(10, warn=5)}
    budget = await new_budget(make_store, limits, "verdicts")
    equal("below every warn level", CONTINUE, await budget.charge(zeta=4))
    equal("alpha at its warn level", warn_at("alpha"), await budget.charge(alpha=5))
    equal("both at their warn levels", warn_at("zeta"), await budget.charge(zeta=1))
    equal("alpha at its limit, zeta warned", exhausted_at("alpha"), await budget.charge(alpha=5))
    equal("both at their limits", exhausted_at("zeta"), await budget.charge(zeta=5))
    equal("the snapshot's verdict", exhausted_at("zeta"), (await budget.snapshot()).verdict)
    await budget.reset()
    equal("after reset()", CONTINUE, (await budget.snapshot()).verdict)
    async with budget.reserve(alpha=5) as r:
        equal("holding alpha=5", warn_at("alpha"), (await budget.snapshot()).verdict)
    equal("after refunding it", CONTINUE, r.verdict)
    async with budget.reserve(alpha=5) as r:
        r.record(alpha=10)
    equal("after settling alpha=10", exhausted_at("alpha"), r.verdict)


@register
async def headroom_is_kept_for_use_headroom(make_store: StoreFactory) -> None:
    """Ordinary reservations stop at limit - headroom; reservations with use_headroom=True
    may go up to the limit; charges ignore headroom.
    """
    budget = await new_budget(make_store, {"tokens": Limit(100, headroom=20)}, "headroom")
    ordinary = await held_reservation(
        budget, "an ordinary reservation up to the headroom", tokens=80
    )
    await expect_refused(budget, "an ordinary reservation into the headroom", tokens=1)
    with Raises(BudgetExhausted, "an ordinary reservation into the headroom") as caught:
        async with budget.reserve(tokens=1):
            fail("an ordinary reservation entered the headroom")
    equal("BudgetExhausted.dim", "tokens", caught.error.dim)
    wrap_up = await budget.try_reserve(tokens=20, use_headroom=True)
    if wrap_up is None:
        fail("try_reserve(use_headroom=True) was refused the headroom")
    await expect_refused(budget, "use_headroom=True past the limit", use_headroom=True, tokens=1)
    await expect_counters(budget, "with the headroom used", reserved={"tokens": 100})
    await wrap_up.release()
    await ordinary.release()
    equal(
        "a strict charge into the headroom", CONTINUE, await budget.charge(tokens=90, strict=True)
    )
    await expect_counters(budget, "after charging into the headroom", spent={"tokens": 90})


@register
async def totals_are_exact_and_saturate(make_store: StoreFactory) -> None:
    """Totals are exact up to 2**63 - 1 (no float rounding) and saturate there instead of
    overflowing.
    """
    top = MAX_AMOUNT
    budget = await new_budget(make_store, {"tokens": top, "calls": 10}, "saturation")
    await budget.charge(tokens=2**53 + 1)  # the first int a double cannot hold
    await expect_counters(budget, "after charging 2**53 + 1", spent={"tokens": 2**53 + 1})
    await budget.reset()
    await budget.charge(tokens=top - 2)
    holder = await held_reservation(budget, "a reservation of 1 below the maximum", tokens=1)
    await expect_counters(
        budget, "one below the maximum", spent={"tokens": top - 2}, reserved={"tokens": 1}
    )
    holder.record(tokens=top)
    holder.record(tokens=top)
    equal("the verdict of a saturating settle", exhausted_at("tokens"), await holder.commit())
    await expect_counters(budget, "after a settle past 2**63 - 1", spent={"tokens": top})
    equal("charge() at the maximum", exhausted_at("tokens"), await budget.charge(tokens=top))
    await expect_counters(budget, "after a charge past 2**63 - 1", spent={"tokens": top})
    with Raises(BudgetExceeded, "a strict charge past 2**63 - 1") as caught:
        await budget.charge(tokens=top, strict=True)
    equal("BudgetExceeded.attempted, saturated", top, caught.error.attempted)
    equal("remaining() at the maximum", {"tokens": 0, "calls": 10}, await budget.remaining())


# -- exactly once, sharing, limits -----------------------------------------------------------


@register
async def closing_twice_is_refused(make_store: StoreFactory) -> None:
    """A reservation is settled or released at most once: a second attempt raises
    ReservationClosed and changes nothing, in Budget and in the store's Account.
    """
    budget = await new_budget(make_store, {"tokens": 100}, "closed")
    r = await held_reservation(budget, "a reservation", tokens=10)
    await r.extend()
    r.record(tokens=4)
    await r.commit()
    for what, again in (
        ("a second commit()", r.commit),
        ("release() after commit()", r.release),
        ("extend() after commit()", r.extend),
    ):
        with Raises(ReservationClosed, what):
            await again()
    await expect_counters(budget, "after closing twice", spent={"tokens": 4})
    # The store itself must refuse, not only `Reservation`'s bookkeeping.
    store = await new_store(make_store)
    account = store.open(unique_name("closed-account"), {"tokens": Limit(100)})
    ten, three = account.vector({"tokens": 10}), account.vector({"tokens": 3})
    held = await account.reserve(ten, use_headroom=False, timeout=None)
    if isinstance(held, Denial):
        fail(f"Account.reserve() of 10 of 100 was denied: {held}")
    await account.settle(held, three)
    with Raises(ReservationClosed, "Account.settle() of a settled reservation"):
        await account.settle(held, three)
    with Raises(ReservationClosed, "Account.release() of a settled reservation"):
        await account.release(held)
    released = await account.reserve(ten, use_headroom=False, timeout=None)
    if isinstance(released, Denial):
        fail(f"Account.reserve() of 10 of 100 was denied: {released}")
    await account.release(released)
    with Raises(ReservationClosed, "Account.settle() of a released reservation"):
        await account.settle(released, three)
    if isinstance(account, LocalAccount):
        local = account.reserve_nowait(ten, use_headroom=False)
        if isinstance(local, Denial):
            fail(f"reserve_nowait() of 10 of 100 was denied: {local}")
        account.settle_nowait(local, three)
        with Raises(ReservationClosed, "settle_nowait() of a settled reservation"):
            account.settle_nowait(local, three)
        with Raises(ReservationClosed, "release_nowait() of a settled reservation"):
            account.release_nowait(local)
    snap = await account.snapshot()
    spent = 6 if isinstance(account, LocalAccount) else 3
    equal("Account spent after closing twice", {"tokens": spent}, dict(snap.spent))
    equal("Account reserved after closing twice", {"tokens": 0}, dict(snap.reserved))


@register
async def budgets_with_one_name_share_counters(make_store: StoreFactory) -> None:
    """Budget objects opened with one name (and parent) on one store share counters; other
    names, and same-named children of other parents, do not.
    """
    store = await new_store(make_store)
    name = unique_name("shared")
    limits = {"tokens": 100}
    first, second = Budget(limits, name=name, store=store), Budget(limits, name=name, store=store)
    held = await held_reservation(first, "a reservation through the first", tokens=30)
    await expect_counters(
        second, "the second, seeing the first's reservation", reserved={"tokens": 30}
    )
    await second.charge(tokens=50)
    await expect_counters(
        first,
        "the first, seeing the second's charge",
        spent={"tokens": 50},
        reserved={"tokens": 30},
    )
    await expect_refused(second, "the second, reserving what the first holds", tokens=30)
    held.record(tokens=10)
    await held.commit()
    await expect_counters(second, "the second, after the first settled", spent={"tokens": 60})
    await second.reset()
    await expect_counters(first, "the first, after the second's reset()")
    other = Budget(limits, name=name + "-other", store=store)
    await other.charge(tokens=5)
    await expect_counters(first, "the first, after another name was charged")
    left = Budget(limits, name=name + "-left", store=store).child({"tokens": 50}, name="kid")
    right = Budget(limits, name=name + "-right", store=store).child({"tokens": 50}, name="kid")
    await left.charge(tokens=7)
    await expect_counters(right, "a same-named child of another parent")
    again = Budget(limits, name=name + "-left", store=store).child({"tokens": 50}, name="kid")
    await expect_counters(again, "the same child opened again", spent={"tokens": 7})


@register
async def other_limits_need_update_limits(make_store: StoreFactory) -> None:
    """Opening a shared budget with other limits raises LimitsMismatch and changes nothing;
    update_limits=True replaces them and keeps the counters.
    """
    store = await new_store(make_store)
    name = unique_name("limits")
    limits: dict[str, Limit | int] = {"tokens": Limit(100, warn=80), "calls": 10}
    first = Budget(limits, name=name, store=store)
    await first.charge(tokens=30)
    same = Budget({"tokens": Limit(100, warn=80), "calls": Limit(10)}, name=name, store=store)
    await expect_counters(same, "the same limits, written another way", spent={"tokens": 30})
    others: tuple[tuple[str, dict[str, Limit | int]], ...] = (
        ("another warn level", {"tokens": Limit(100, warn=90), "calls": 10}),
        ("another limit", {"tokens": 200, "calls": 10}),
    )
    for what, other in others:
        # A store may check lazily, at the first operation.
        with Raises(LimitsMismatch, f"opening with {what}"):
            await Budget(other, name=name, store=store).snapshot()
    snap = await expect_counters(first, "after refused openings", spent={"tokens": 30})
    equal(
        "limits after refused openings",
        {"tokens": Limit(100, warn=80), "calls": Limit(10)},
        dict(snap.limits),
    )
    new: dict[str, Limit | int] = {"tokens": Limit(200), "calls": 10}
    updated = Budget(new, name=name, store=store, update_limits=True)
    snap = await expect_counters(updated, "opened with update_limits=True", spent={"tokens": 30})
    want = {"tokens": Limit(200), "calls": Limit(10)}
    equal("limits after update_limits=True", want, dict(snap.limits))
    snap = await expect_counters(first, "the first, after the update", spent={"tokens": 30})
    equal("limits seen by the first", want, dict(snap.limits))
    more = await held_reservation(first, "a reservation the new limit admits", tokens=150)
    await more.release()


@register
async def limits_updated_on_opening_are_announced(make_store: StoreFactory) -> None:
    """Limits replaced by opening with update_limits=True are announced like any change:
    the next operation that finds the budget past a new warn level reports it, once.
    """
    seen: list[tuple[str | None, Verdict]] = []

    def on_warn(name: str | None, verdict: Verdict) -> None:
        seen.append((name, verdict))

    store = await new_store(make_store)
    name = unique_name("announced")
    await Budget({"tokens": 100}, name=name, store=store).charge(tokens=50)
    updated = Budget(
        {"tokens": Limit(100, warn=40)},
        name=name,
        store=store,
        update_limits=True,
        on_warn=on_warn,
    )
    equal("the verdict after the update", warn_at("tokens"), await updated.charge(tokens=1))
    equal("crossings reported after update_limits=True", [(name, warn_at("tokens"))], seen)
    await updated.charge(tokens=1)
    equal("crossings reported by a later charge", [(name, warn_at("tokens"))], seen)


# -- hierarchy ------------------------------------------------------------------------------
