"""The seed protocols and their implementations: SPEC "Seed protocols and reference
implementations".

`UnitBudget` and `TokenPool` in process; `Budget.as_guard` and
`Budget.as_token_budget` over a Budget; all checked against the runtime-checkable
protocols, against each other, and composed by one coordinator.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from aiobudget import (
    CALLS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    TOKENS,
    Budget,
    BudgetGuard,
    InvalidAmount,
    ReservationClosed,
    TokenBudget,
    TokenPool,
    TokenReservation,
    UnitBudget,
    UnknownDimension,
)
from aiobudget.kernel import MAX_AMOUNT

from ._support import drop, state

pytestmark = pytest.mark.anyio


class TestUnitBudget:
    async def test_capacity_and_available(self) -> None:
        """A new pool has all its capacity available."""
        pool = UnitBudget(10)
        assert (10, 10) == (pool.capacity, pool.available)

    async def test_try_reserve_takes_all_or_nothing(self) -> None:
        """try_reserve takes the units only if they are all there."""
        pool = UnitBudget(10)
        assert await pool.try_reserve(7)
        assert not await pool.try_reserve(4)
        assert 3 == pool.available
        assert await pool.try_reserve(3)
        assert not await pool.try_reserve(1)
        assert await pool.try_reserve(0)
        assert 0 == pool.available

    async def test_release_gives_units_back(self) -> None:
        """release puts units back."""
        pool = UnitBudget(10)
        await pool.try_reserve(7)
        await pool.release(5)
        assert 8 == pool.available

    async def test_release_never_goes_above_capacity(self) -> None:
        """release never raises available above capacity."""
        pool = UnitBudget(10)
        await pool.try_reserve(2)
        await pool.release(5)
        assert 10 == pool.available
        await pool.release(1)
        assert 10 == pool.available

    async def test_utilization(self) -> None:
        """utilization is the share in use, in [0, 1]."""
        pool = UnitBudget(4)
        assert 0.0 == pool.utilization()
        await pool.try_reserve(1)
        assert 0.25 == pool.utilization()
        await pool.try_reserve(3)
        assert 1.0 == pool.utilization()

    async def test_utilization_of_an_empty_pool_is_zero(self) -> None:
        """A pool of capacity 0 has utilization 0, not a division by zero."""
        pool = UnitBudget(0)
        assert 0.0 == pool.utilization()
        assert not await pool.try_reserve(1)
        assert await pool.try_reserve(0)

    async def test_refill(self) -> None:
        """refill (sync) makes the whole capacity available again."""
        pool = UnitBudget(5)
        await pool.try_reserve(5)
        pool.refill()
        assert 5 == pool.available
        assert 0.0 == pool.utilization()

    async def test_is_a_budget_guard(self) -> None:
        """UnitBudget satisfies the runtime-checkable BudgetGuard protocol."""
        assert isinstance(UnitBudget(1), BudgetGuard)
        assert not isinstance(UnitBudget(1), TokenBudget)

    @pytest.mark.parametrize("cost", [-1, 1.5, True, "1", None, 2**63])
    async def test_bad_costs(self, cost: Any) -> None:
        """A bad cost raises InvalidAmount and changes nothing."""
        pool = UnitBudget(10)
        await pool.try_reserve(4)
        with pytest.raises(InvalidAmount):
            await pool.try_reserve(cost)
        with pytest.raises(InvalidAmount):
            await pool.release(cost)
        assert 6 == pool.available

    @pytest.mark.parametrize("capacity", [-1, 1.0, True, "5"])
    def test_bad_capacity(self, capacity: Any) -> None:
        """A bad capacity raises InvalidAmount."""
        with pytest.raises(InvalidAmount):
            UnitBudget(capacity)

    def test_safe_from_threads(self) -> None:
        """Sixteen threads released together on 7 units: exactly 7 get one."""
        pool = UnitBudget(7)
        barrier = threading.Barrier(16)
        got: list[bool] = []

        async def take() -> None:
            barrier.wait()
            got.append(await pool.try_reserve(1))

        threads = [threading.Thread(target=anyio.run, args=(take,)) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (7, 9, 0) == (got.count(True), got.count(False), pool.available)


class TestTokenPool:
    async def test_reserve_an_estimate(self) -> None:
        """try_reserve_tokens holds the estimate and returns a TokenReservation."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert isinstance(r, TokenReservation)
        assert 40 == r.estimate
        assert (100, 60) == (pool.capacity, pool.available)
        await r.cancel()

    async def test_none_when_not_available(self) -> None:
        """An estimate above what is available gets None and changes nothing."""
        pool = TokenPool(100)
        held = await pool.try_reserve_tokens(70)
        assert await pool.try_reserve_tokens(31) is None
        assert 30 == pool.available
        assert held is not None
        await held.cancel()

    async def test_leaving_without_record_refunds_once(self) -> None:
        """Leaving the reservation without record_usage refunds the estimate, once."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        other = await pool.try_reserve_tokens(10)
        assert other is not None
        async with r:
            assert 50 == pool.available
        assert 90 == pool.available
        async with r:  # leaving again refunds nothing more
            pass
        await r.cancel()
        assert 90 == pool.available
        await other.cancel()

    async def test_cancel_refunds_once(self) -> None:
        """cancel refunds the whole estimate, and a second cancel nothing."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        other = await pool.try_reserve_tokens(10)
        await r.cancel()
        await r.cancel()
        assert 90 == pool.available
        assert other is not None
        await other.cancel()

    async def test_leaving_on_an_exception_refunds(self) -> None:
        """An exception in the block refunds the estimate too."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        with pytest.raises(KeyError):
            async with r:
                raise KeyError
        assert 100 == pool.available

    async def test_usage_below_the_estimate_returns_the_difference(self) -> None:
        """Recording less than the estimate gives the difference back."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        await pool.record_usage(r, 10, 5)
        assert 85 == pool.available

    async def test_usage_above_the_estimate_debits_the_overage(self) -> None:
        """Recording more than the estimate takes the overage from what is available."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        await pool.record_usage(r, 50, 10)
        assert 40 == pool.available

    async def test_overage_is_floored_at_zero(self) -> None:
        """An overage larger than what is available leaves 0, never less."""
        pool = TokenPool(100)
        a = await pool.try_reserve_tokens(50)
        b = await pool.try_reserve_tokens(50)
        assert a is not None
        assert b is not None
        await pool.record_usage(a, 100, 50)
        assert 0 == pool.available
        await b.cancel()
        assert 50 == pool.available

    async def test_record_then_leave_does_not_refund(self) -> None:
        """After record_usage, leaving the block refunds nothing."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        async with r:
            await pool.record_usage(r, 30, 0)
        assert 70 == pool.available

    async def test_tokens_consumed(self) -> None:
        """tokens_consumed counts prompt + completion recorded since construction."""
        pool = TokenPool(1_000)
        assert 0 == await pool.tokens_consumed()
        for prompt, completion in [(10, 5), (0, 7), (100, 0)]:
            r = await pool.try_reserve_tokens(50)
            assert r is not None
            await pool.record_usage(r, prompt, completion)
        cancelled = await pool.try_reserve_tokens(50)
        assert cancelled is not None
        await cancelled.cancel()
        assert 122 == await pool.tokens_consumed()

    async def test_double_record_raises(self) -> None:
        """A second record_usage raises ReservationClosed and changes nothing."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        await pool.record_usage(r, 10, 0)
        with pytest.raises(ReservationClosed):
            await pool.record_usage(r, 10, 0)
        assert (90, 10) == (pool.available, await pool.tokens_consumed())

    async def test_record_after_cancel_raises(self) -> None:
        """record_usage after cancel raises ReservationClosed and changes nothing."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        await r.cancel()
        with pytest.raises(ReservationClosed):
            await pool.record_usage(r, 10, 0)
        assert (100, 0) == (pool.available, await pool.tokens_consumed())

    async def test_record_on_another_pools_reservation_raises(self) -> None:
        """A reservation of another pool is refused with ReservationClosed."""
        mine, theirs = TokenPool(100), TokenPool(100)
        r = await theirs.try_reserve_tokens(40)
        assert r is not None
        with pytest.raises(ReservationClosed):
            await mine.record_usage(r, 1, 1)
        assert (100, 60) == (mine.available, theirs.available)
        assert r.open
        await r.cancel()

    @pytest.mark.parametrize(("prompt", "completion"), [(-1, 0), (0, 1.5), (True, 0)])
    async def test_bad_usage_changes_nothing(self, prompt: Any, completion: Any) -> None:
        """Bad token counts raise InvalidAmount; the reservation stays open."""
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(40)
        assert r is not None
        with pytest.raises(InvalidAmount):
            await pool.record_usage(r, prompt, completion)
        assert r.open
        assert 60 == pool.available
        await r.cancel()

    async def test_a_dropped_reservation_is_refunded_once_with_a_warning(self) -> None:
        """A reservation dropped without record_usage or cancel is refunded when it is
        collected, exactly once, with a ResourceWarning."""
        pool = TokenPool(1_000)
        dropped = await pool.try_reserve_tokens(400)
        kept = await pool.try_reserve_tokens(300)
        assert kept is not None
        refs: list[object] = [dropped]
        del dropped
        with pytest.warns(ResourceWarning, match="TokenReservation of 400 tokens"):
            drop(refs)
        drop(refs)
        assert 700 == pool.available
        await kept.cancel()
        assert 1_000 == pool.available

    async def test_a_recorded_reservation_is_dropped_silently(self) -> None:
        """A reservation whose usage was recorded is closed: collecting it changes
        nothing and warns nothing."""
        pool = TokenPool(1_000)
        r = await pool.try_reserve_tokens(400)
        assert r is not None
        await pool.record_usage(r, 100, 0)
        refs: list[object] = [r]
        del r
        drop(refs)
        assert 900 == pool.available

    async def test_tokens_consumed_saturates(self) -> None:
        """Usage past 2**63 - 1 tokens is counted as 2**63 - 1, never more."""
        pool = TokenPool(100)
        first, second = await pool.try_reserve_tokens(10), await pool.try_reserve_tokens(10)
        for r in (first, second):
            assert r is not None
            await pool.record_usage(r, MAX_AMOUNT, 1)
        assert (MAX_AMOUNT, 0) == (await pool.tokens_consumed(), pool.available)

    async def test_is_a_token_budget(self) -> None:
        """TokenPool satisfies the runtime-checkable TokenBudget protocol."""
        assert isinstance(TokenPool(1), TokenBudget)
        assert not isinstance(TokenPool(1), BudgetGuard)


class _CountingHold:
    """A TokenHold that counts what the reservation asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def refund(self) -> None:
        self.calls.append("refund")

    def abandon(self) -> None:
        self.calls.append("abandon")


class TestTokenReservation:
    async def test_leaving_refunds_through_the_hold_once(self) -> None:
        """Leaving, leaving again and cancelling ask the hold for one refund."""
        hold = _CountingHold()
        r = TokenReservation(self, 10, hold)
        async with r:
            pass
        async with r:
            pass
        await r.cancel()
        assert (["refund"], False) == (hold.calls, r.open)

    async def test_claim_returns_the_hold_once(self) -> None:
        """claim() by the issuer closes the reservation and hands over its hold; a
        second claim, or a cancel afterwards, does nothing more."""
        hold = _CountingHold()
        r = TokenReservation(self, 10, hold)
        assert hold is r.claim(self)
        with pytest.raises(ReservationClosed, match="recorded already"):
            r.claim(self)
        await r.cancel()
        assert ([], False) == (hold.calls, r.open)

    async def test_claim_by_another_issuer_changes_nothing(self) -> None:
        """claim() by anyone but the issuer raises and leaves the reservation open."""
        hold = _CountingHold()
        r = TokenReservation(self, 10, hold)
        with pytest.raises(ReservationClosed, match="another token budget"):
            r.claim(object())
        assert r.open
        await r.cancel()
        with pytest.raises(ReservationClosed, match="cancelled already"):
            r.claim(self)

    def test_dropping_an_open_reservation_abandons_its_hold(self) -> None:
        """Collecting an open reservation calls its hold's abandon(), once."""
        hold = _CountingHold()
        refs: list[object] = [TokenReservation(self, 10, hold)]
        drop(refs)
        assert ["abandon"] == hold.calls

    @pytest.mark.parametrize("estimate", [-1, 1.5, True, MAX_AMOUNT + 1])
    def test_a_bad_estimate_is_refused(self, estimate: Any) -> None:
        """The estimate is an amount like any other."""
        with pytest.raises(InvalidAmount):
            TokenReservation(self, estimate, _CountingHold())


class TestBudgetAsGuard:
    async def test_is_a_budget_guard(self) -> None:
        """budget.as_guard(dim) satisfies BudgetGuard."""
        assert isinstance(Budget({CALLS: 3}).as_guard(CALLS), BudgetGuard)

    async def test_reserves_and_releases_on_the_dimension(self) -> None:
        """try_reserve holds units of the dimension; release gives them back."""
        budget = Budget({CALLS: 10, TOKENS: 100})
        guard = budget.as_guard(CALLS)
        assert await guard.try_reserve(4)
        assert ({CALLS: 0, TOKENS: 0}, {CALLS: 4, TOKENS: 0}) == await state(budget)
        assert not await guard.try_reserve(7)
        await guard.release(4)
        assert ({CALLS: 0, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_behaves_like_a_unit_budget(self) -> None:
        """The same sequence of calls gives the same answers as a UnitBudget."""
        ops = [("take", 4), ("take", 7), ("take", 6), ("take", 1), ("give", 4), ("take", 4)]
        ops += [("give", 6), ("take", 5), ("take", 2), ("give", 4), ("give", 5), ("take", 10)]
        budget = Budget({CALLS: 10})
        guards: dict[str, BudgetGuard] = {"unit": UnitBudget(10), "budget": budget.as_guard(CALLS)}
        results: dict[str, list[object]] = {}
        for name, guard in guards.items():
            answers: list[object] = []
            for op, cost in ops:
                if op == "take":
                    answers.append(await guard.try_reserve(cost))
                else:
                    answers.append(await guard.release(cost))
            results[name] = answers
        assert results["unit"] == results["budget"]
        assert {CALLS: 10} == (await budget.snapshot()).reserved
        await guards["budget"].release(10)
        assert {CALLS: 0} == (await budget.snapshot()).reserved

    async def test_unknown_dimension(self) -> None:
        """A guard over a dimension the budget lacks is UnknownDimension."""
        with pytest.raises(UnknownDimension):
            Budget({CALLS: 3}).as_guard(TOKENS)

    @pytest.mark.parametrize("cost", [-1, 1.5, True])
    async def test_bad_costs(self, cost: Any) -> None:
        """A bad cost raises InvalidAmount and changes nothing."""
        budget = Budget({CALLS: 10})
        guard = budget.as_guard(CALLS)
        with pytest.raises(InvalidAmount):
            await guard.try_reserve(cost)
        with pytest.raises(InvalidAmount):
            await guard.release(cost)
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)

    async def test_respects_the_parent_chain(self) -> None:
        """A guard over a child budget is limited by the parent too."""
        parent = Budget({CALLS: 3}, name="p")
        child = parent.child({CALLS: 10}, name="c")
        guard = child.as_guard(CALLS)
        assert await guard.try_reserve(3)
        assert not await guard.try_reserve(1)
        await guard.release(3)
        assert ({CALLS: 0}, {CALLS: 0}) == await state(parent)


class TestBudgetAsTokenBudget:
    async def test_is_a_token_budget(self) -> None:
        """budget.as_token_budget() satisfies TokenBudget."""
        assert isinstance(Budget({TOKENS: 3}).as_token_budget(), TokenBudget)

    async def test_needs_a_tokens_dimension(self) -> None:
        """A budget without ``tokens`` cannot be a TokenBudget."""
        with pytest.raises(UnknownDimension):
            Budget({CALLS: 3}).as_token_budget()

    async def test_reserve_and_none(self) -> None:
        """try_reserve_tokens holds the estimate, or returns None when it does not fit."""
        budget = Budget({TOKENS: 100})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(70)
        assert r is not None
        assert 70 == r.estimate
        assert await tokens.try_reserve_tokens(31) is None
        assert ({TOKENS: 0}, {TOKENS: 70}) == await state(budget)
        await r.cancel()

    async def test_leaving_without_record_refunds_once(self) -> None:
        """Leaving without record_usage refunds the estimate, exactly once."""
        budget = Budget({TOKENS: 100})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(40)
        assert r is not None
        other = await tokens.try_reserve_tokens(10)
        assert other is not None
        async with r:
            pass
        async with r:
            pass
        await r.cancel()
        assert ({TOKENS: 0}, {TOKENS: 10}) == await state(budget)
        await other.cancel()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_usage_below_the_estimate(self) -> None:
        """Recording less than the estimate spends the actual and frees the rest."""
        budget = Budget({TOKENS: 100})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(40)
        assert r is not None
        await tokens.record_usage(r, 10, 5)
        assert ({TOKENS: 15}, {TOKENS: 0}) == await state(budget)
        assert {TOKENS: 85} == await budget.remaining()

    async def test_usage_above_the_estimate(self) -> None:
        """Recording more than the estimate spends it all; remaining is floored at 0."""
        budget = Budget({TOKENS: 100})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(40)
        assert r is not None
        await tokens.record_usage(r, 100, 20)
        assert ({TOKENS: 120}, {TOKENS: 0}) == await state(budget)
        assert {TOKENS: 0} == await budget.remaining()

    async def test_input_and_output_dimensions_are_filled(self) -> None:
        """A budget that also counts input and output tokens gets them from record_usage."""
        budget = Budget({TOKENS: 100, INPUT_TOKENS: 100, OUTPUT_TOKENS: 100})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(40)
        assert r is not None
        await tokens.record_usage(r, 12, 3)
        assert {TOKENS: 15, INPUT_TOKENS: 12, OUTPUT_TOKENS: 3} == (
            dict((await budget.snapshot()).spent)
        )

    async def test_tokens_consumed_and_double_record(self) -> None:
        """tokens_consumed sums what was recorded; a second record raises and adds nothing."""
        budget = Budget({TOKENS: 1_000})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(40)
        assert r is not None
        await tokens.record_usage(r, 10, 5)
        with pytest.raises(ReservationClosed):
            await tokens.record_usage(r, 10, 5)
        cancelled = await tokens.try_reserve_tokens(40)
        assert cancelled is not None
        await cancelled.cancel()
        with pytest.raises(ReservationClosed):
            await tokens.record_usage(cancelled, 1, 1)
        assert 15 == await tokens.tokens_consumed()
        assert ({TOKENS: 15}, {TOKENS: 0}) == await state(budget)

    async def test_a_token_pool_reservation_is_refused(self) -> None:
        """A reservation from another TokenBudget is refused with ReservationClosed."""
        budget = Budget({TOKENS: 100})
        pool = TokenPool(100)
        r = await pool.try_reserve_tokens(10)
        assert r is not None
        with pytest.raises(ReservationClosed):
            await budget.as_token_budget().record_usage(r, 1, 1)
        assert r.open
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        await r.cancel()

    async def test_a_dropped_reservation_is_refunded_once_with_a_warning(self) -> None:
        """A reservation dropped without record_usage or cancel is refunded when it is
        collected, exactly once, with a ResourceWarning, while the adapter lives on."""
        budget = Budget({TOKENS: 1_000})
        tokens = budget.as_token_budget()
        dropped = await tokens.try_reserve_tokens(400)
        kept = await tokens.try_reserve_tokens(300)
        assert kept is not None
        refs: list[object] = [dropped]
        del dropped
        with pytest.warns(ResourceWarning, match="garbage-collected"):
            drop(refs)
        drop(refs)
        assert ({TOKENS: 0}, {TOKENS: 300}) == await state(budget)
        await kept.cancel()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_usage_past_the_largest_amount_saturates(self) -> None:
        """Prompt plus completion past 2**63 - 1 is charged and counted as 2**63 - 1."""
        budget = Budget({TOKENS: 100, INPUT_TOKENS: 100, OUTPUT_TOKENS: 100})
        tokens = budget.as_token_budget()
        first, second = await tokens.try_reserve_tokens(10), await tokens.try_reserve_tokens(10)
        for r in (first, second):
            assert r is not None
            await tokens.record_usage(r, MAX_AMOUNT, 1)
            assert not r.open
        spent = {TOKENS: MAX_AMOUNT, INPUT_TOKENS: MAX_AMOUNT, OUTPUT_TOKENS: 2}
        assert (spent, {TOKENS: 0, INPUT_TOKENS: 0, OUTPUT_TOKENS: 0}) == await state(budget)
        assert MAX_AMOUNT == await tokens.tokens_consumed()

    @pytest.mark.parametrize(("prompt", "completion"), [(-1, 0), (0, 1.5), (MAX_AMOUNT + 1, 0)])
    async def test_bad_usage_changes_nothing(self, prompt: Any, completion: Any) -> None:
        """Bad token counts raise InvalidAmount; the reservation stays open and can still
        be recorded."""
        budget = Budget({TOKENS: 100})
        tokens = budget.as_token_budget()
        r = await tokens.try_reserve_tokens(40)
        assert r is not None
        with pytest.raises(InvalidAmount):
            await tokens.record_usage(r, prompt, completion)
        assert r.open
        assert ({TOKENS: 0}, {TOKENS: 40}, 0) == (
            *await state(budget),
            await tokens.tokens_consumed(),
        )
        await tokens.record_usage(r, 5, 5)
        assert ({TOKENS: 10}, {TOKENS: 0}) == await state(budget)

    async def test_another_adapters_reservation_is_named_as_such(self) -> None:
        """Recording on another adapter than the one that reserved says so, and leaves
        the reservation open for its own adapter."""
        budget = Budget({TOKENS: 100})
        mine, other = budget.as_token_budget(), budget.as_token_budget()
        r = await mine.try_reserve_tokens(40)
        assert r is not None
        with pytest.raises(ReservationClosed, match="belongs to another token budget"):
            await other.record_usage(r, 1, 1)
        assert r.open
        await mine.record_usage(r, 1, 1)
        assert ({TOKENS: 2}, {TOKENS: 0}) == await state(budget)

    async def test_behaves_like_a_token_pool(self) -> None:
        """The same calls give the same answers and the same room as a TokenPool."""
        pool = TokenPool(100)
        budget = Budget({TOKENS: 100})

        async def pool_room() -> int:
            return pool.available

        async def budget_room() -> int:
            return (await budget.remaining())[TOKENS]

        expected = await token_scenario(pool, pool_room)
        assert expected == await token_scenario(budget.as_token_budget(), budget_room)
        assert ([True, 20, 30, 20, 0, 20], 80) == expected


async def token_scenario(
    tokens: TokenBudget, room: Callable[[], Awaitable[int]]
) -> tuple[list[object], int]:
    """Reserve, refuse, record below and above the estimate, leave unrecorded; what
    was answered and what room was left after each step, and the tokens consumed."""
    seen: list[object] = []
    a = await tokens.try_reserve_tokens(30)
    b = await tokens.try_reserve_tokens(50)
    assert a is not None
    assert b is not None
    seen.append(await tokens.try_reserve_tokens(21) is None)
    seen.append(await room())
    await tokens.record_usage(a, 10, 10)  # below the estimate: 10 back
    seen.append(await room())
    await tokens.record_usage(b, 40, 20)  # above it: 10 more
    seen.append(await room())
    c = await tokens.try_reserve_tokens(20)
    assert c is not None
    async with c:
        seen.append(await room())
    seen.append(await room())
    return seen, await tokens.tokens_consumed()


async def coordinated_call(
    guard: BudgetGuard, tokens: TokenBudget, estimate: int, used: tuple[int, int]
) -> bool:
    """A framework's call: one unit from the guard and an estimate of tokens, then the
    real usage; everything given back whatever happens."""
    if not await guard.try_reserve(1):
        return False
    try:
        reservation = await tokens.try_reserve_tokens(estimate)
        if reservation is None:
            return False
        async with reservation:
            await tokens.record_usage(reservation, *used)
        return True
    finally:
        await guard.release(1)


class TestCoordinator:
    async def test_unit_guard_and_token_pool(self) -> None:
        """A coordinator composes a UnitBudget and a TokenPool."""
        guard, pool = UnitBudget(2), TokenPool(100)
        assert await coordinated_call(guard, pool, 40, (20, 10))
        assert not await coordinated_call(guard, pool, 71, (1, 1))
        assert (2, 70, 30) == (guard.available, pool.available, await pool.tokens_consumed())

    async def test_over_one_budget(self) -> None:
        """The same coordinator runs over one Budget's guard and token adapters."""
        budget = Budget({CALLS: 2, TOKENS: 100})
        guard, tokens = budget.as_guard(CALLS), budget.as_token_budget()
        assert await coordinated_call(guard, tokens, 40, (20, 10))
        assert not await coordinated_call(guard, tokens, 71, (1, 1))
        assert ({CALLS: 0, TOKENS: 30}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_concurrent_calls_hold_the_guard(self) -> None:
        """Concurrent coordinated calls never hold more units than the guard allows."""
        budget = Budget({CALLS: 3, TOKENS: 10_000})
        guard, tokens = budget.as_guard(CALLS), budget.as_token_budget()
        peak = 0
        outcomes: list[bool] = []

        class Watching:
            async def try_reserve(self, cost: int) -> bool:
                nonlocal peak
                ok = await guard.try_reserve(cost)
                peak = max(peak, (await budget.snapshot()).reserved[CALLS])
                await anyio.lowlevel.checkpoint()
                return ok

            async def release(self, cost: int) -> None:
                await guard.release(cost)

        async with anyio.create_task_group() as tg:
            for i in range(30):

                async def one(i: int = i) -> None:
                    outcomes.append(await coordinated_call(Watching(), tokens, 50, (i, 1)))

                tg.start_soon(one)
        assert 3 == peak
        assert 0 < outcomes.count(True) < 30
        assert {CALLS: 0, TOKENS: 0} == dict((await budget.snapshot()).reserved)
