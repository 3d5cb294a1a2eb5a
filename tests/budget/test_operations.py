"""`Budget`'s direct operations: SPEC "Budget (async)" and "Operations".

``charge`` (plain and strict), ``snapshot`` and ``remaining``, ``reset`` and
``set_limits``, one rule per test.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from typing import Any

import pytest

from aiobudget import (
    CALLS,
    TOKENS,
    Budget,
    BudgetExceeded,
    InvalidAmount,
    InvalidLimits,
    Limit,
    Snapshot,
    Status,
    Usage,
    Verdict,
)

from ._support import spent, state

pytestmark = pytest.mark.anyio

CONTINUE = Verdict(Status.CONTINUE)


class TestCharge:
    async def test_charge_adds_to_spent_and_returns_the_verdict(self) -> None:
        """A plain charge adds to spent and returns the verdict."""
        budget = Budget({TOKENS: Limit(100, warn=50), CALLS: 10})
        assert CONTINUE == await budget.charge(tokens=10)
        assert Verdict(Status.WARN, TOKENS) == await budget.charge({TOKENS: 40}, calls=1)
        assert Verdict(Status.EXHAUSTED, CALLS) == await budget.charge(Usage(calls=9))
        assert {TOKENS: 50, CALLS: 10} == await spent(budget)

    async def test_plain_charge_is_never_refused(self) -> None:
        """A plain charge past the limit is recorded and the verdict says EXHAUSTED."""
        budget = Budget({TOKENS: 100})
        assert Verdict(Status.EXHAUSTED, TOKENS) == await budget.charge(tokens=250)
        assert {TOKENS: 250} == await spent(budget)
        assert {TOKENS: 0} == await budget.remaining()

    async def test_strict_charge_within_the_limit(self) -> None:
        """A strict charge that fits is charged."""
        budget = Budget({TOKENS: 100})
        assert Verdict(Status.EXHAUSTED, TOKENS) == await budget.charge(tokens=100, strict=True)
        assert {TOKENS: 100} == await spent(budget)

    async def test_strict_charge_past_the_limit_raises_and_changes_nothing(self) -> None:
        """A strict charge past the limit raises BudgetExceeded and charges nothing."""
        budget = Budget({TOKENS: 100, CALLS: 10}, name="s")
        await budget.charge(tokens=50)
        r = await budget.try_reserve(tokens=30)
        assert r is not None
        before = await budget.snapshot()
        with pytest.raises(BudgetExceeded) as info:
            await budget.charge(tokens=21, calls=1, strict=True)
        assert (TOKENS, 100, 101, "s") == (
            info.value.dim,
            info.value.limit,
            info.value.attempted,
            info.value.budget,
        )
        assert before == await budget.snapshot()
        await r.release()

    async def test_strict_charge_counts_against_the_hard_limit(self) -> None:
        """A strict charge may use headroom: only the hard limit refuses it."""
        budget = Budget({TOKENS: Limit(100, headroom=50)})
        await budget.charge(tokens=80, strict=True)
        assert {TOKENS: 80} == await spent(budget)


class TestSnapshotAndRemaining:
    async def test_snapshot_fields(self) -> None:
        """A snapshot holds limits, spent, reserved, remaining and the verdict."""
        budget = Budget({TOKENS: Limit(100, warn=60, headroom=5), CALLS: 3})
        await budget.charge(tokens=20)
        async with budget.reserve(tokens=45, calls=1):
            snapshot = await budget.snapshot()
        assert isinstance(snapshot, Snapshot)
        assert {TOKENS: Limit(100, warn=60, headroom=5), CALLS: Limit(3)} == dict(snapshot.limits)
        assert {TOKENS: 20, CALLS: 0} == dict(snapshot.spent)
        assert {TOKENS: 45, CALLS: 1} == dict(snapshot.reserved)
        assert {TOKENS: 35, CALLS: 2} == dict(snapshot.remaining)
        assert Verdict(Status.WARN, TOKENS) == snapshot.verdict

    async def test_snapshot_is_frozen(self) -> None:
        """A snapshot does not change when the budget does."""
        budget = Budget({TOKENS: 100})
        snapshot = await budget.snapshot()
        await budget.charge(tokens=5)
        assert {TOKENS: 0} == dict(snapshot.spent)
        with pytest.raises(TypeError):
            snapshot.spent[TOKENS] = 5  # type: ignore[index]

    async def test_remaining_is_floored_at_zero(self) -> None:
        """remaining is ``limit - spent - reserved``, never negative."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=130, calls=1)
        assert {TOKENS: 0, CALLS: 4} == await budget.remaining()

    async def test_remaining_is_a_plain_dict(self) -> None:
        """remaining returns a new dict each time: changing it changes nothing."""
        budget = Budget({TOKENS: 100})
        remaining = await budget.remaining()
        remaining[TOKENS] = 0
        assert {TOKENS: 100} == await budget.remaining()


class TestReset:
    async def test_reset_zeroes_spent(self) -> None:
        """reset sets spent to 0 on every dimension."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=99, calls=5)
        await budget.reset()
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        assert CONTINUE == (await budget.snapshot()).verdict

    async def test_live_reservations_stay_counted(self) -> None:
        """A reservation live across a reset stays reserved and settles normally after."""
        budget = Budget({TOKENS: 100})
        await budget.charge(tokens=50)
        async with budget.reserve(tokens=40) as r:
            await budget.reset()
            assert ({TOKENS: 0}, {TOKENS: 40}) == await state(budget)
            assert {TOKENS: 60} == await budget.remaining()
            r.record(tokens=10)
        assert ({TOKENS: 10}, {TOKENS: 0}) == await state(budget)


class TestSetLimits:
    async def test_raising_a_limit_lets_more_in(self) -> None:
        """After a higher limit, a reservation that did not fit does."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=90)
        assert await budget.try_reserve(tokens=50) is None
        assert CONTINUE == await budget.set_limits({TOKENS: 200, CALLS: 5})
        r = await budget.try_reserve(tokens=50)
        assert r is not None
        await r.release()
        assert {TOKENS: Limit(200), CALLS: Limit(5)} == dict((await budget.snapshot()).limits)

    async def test_lowering_below_use_keeps_counters(self) -> None:
        """A lower limit keeps the counters; the verdict says EXHAUSTED."""
        budget = Budget({TOKENS: 100})
        await budget.charge(tokens=60)
        assert Verdict(Status.EXHAUSTED, TOKENS) == await budget.set_limits({TOKENS: 50})
        assert ({TOKENS: 60}, {TOKENS: 0}) == await state(budget)
        assert {TOKENS: 0} == await budget.remaining()

    @pytest.mark.parametrize(
        ("limits", "error"),
        [
            ({TOKENS: 100}, InvalidLimits),  # a dimension missing
            ({CALLS: 5, TOKENS: 100}, InvalidLimits),  # another order
            ({TOKENS: 100, CALLS: 5, "x": 1}, InvalidLimits),  # one more
            ({TOKENS: -1, CALLS: 5}, InvalidAmount),
            ({TOKENS: 1.5, CALLS: 5}, InvalidAmount),
            ({TOKENS: Limit(10), CALLS: True}, InvalidAmount),
        ],
    )
    async def test_bad_limits_change_nothing(
        self, limits: dict[str, Any], error: type[Exception]
    ) -> None:
        """Limits for other dimensions, or bad values, raise and change nothing."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=3)
        before = await budget.snapshot()
        with pytest.raises(error):
            await budget.set_limits(limits)
        assert before == await budget.snapshot()
