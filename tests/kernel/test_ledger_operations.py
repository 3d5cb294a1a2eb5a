"""Unit tests of the kernel's operations on one ledger: reserve, check, settle,
release, charge (plain and strict), reset and new limits (SPEC "Operations"), on
ledgers small enough to check by hand."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import pytest

from aiobudget import (
    BudgetError,
    BudgetExceeded,
    InvalidAmount,
    InvalidLimits,
    ReservationClosed,
)
from aiobudget.kernel import (
    MAX_AMOUNT,
    Chain,
    Crossing,
    Denial,
    Ledger,
    Limit,
    Outcome,
)

from ._support import CONTINUE, counters, deny, exhausted, hold, single, warn


class TestReserve:
    def test_fits_and_moves_to_reserved(self) -> None:
        """A reservation that fits is held in ``reserved``; ``spent`` is untouched."""
        ledger, chain = single({"a": 10, "b": 10})
        lease = hold(chain, (3, 4))
        assert [((0, 0), (3, 4))] == counters(ledger)
        assert (3, 4) == lease.amounts
        assert lease.open

    def test_exact_boundary_fits(self) -> None:
        """spent + reserved + amount == limit - headroom fits."""
        ledger, chain = single({"a": Limit(10, headroom=2)})
        chain.charge((3,))
        hold(chain, (2,))
        hold(chain, (3,))
        assert [((3,), (5,))] == counters(ledger)

    def test_one_past_the_boundary_is_denied_and_changes_nothing(self) -> None:
        """One more than limit - headroom is denied, and nothing changes."""
        ledger, chain = single({"a": Limit(10, headroom=2)})
        chain.charge((3,))
        hold(chain, (2,))
        before = ledger.snapshot()
        denial = deny(chain, (4,))
        assert Denial("b", 0, "a", 4, 3, False) == denial
        assert before == ledger.snapshot()

    def test_headroom_is_kept_back_from_ordinary_reservations(self) -> None:
        """Without use_headroom a reservation may not touch the headroom."""
        ledger, chain = single({"a": Limit(10, headroom=3)})
        denial = deny(chain, (8,))
        assert ("a", 8, 7) == (denial.dim, denial.requested, denial.remaining)
        assert [((0,), (0,))] == counters(ledger)

    def test_use_headroom_may_reach_the_limit(self) -> None:
        """With use_headroom a reservation fits up to the limit itself, not past it."""
        ledger, chain = single({"a": Limit(10, headroom=3)})
        hold(chain, (8,), use_headroom=True)
        hold(chain, (2,), use_headroom=True)
        denial = deny(chain, (1,), use_headroom=True)
        assert [((0,), (10,))] == counters(ledger)
        assert (1, 0) == (denial.requested, denial.remaining)

    def test_all_or_nothing_over_dimensions(self) -> None:
        """When one dimension does not fit, the others are not held either."""
        ledger, chain = single({"a": 10, "b": 10, "c": 10})
        denial = deny(chain, (1, 11, 1))
        assert "b" == denial.dim
        assert [((0, 0, 0), (0, 0, 0))] == counters(ledger)

    def test_denial_names_the_first_dimension_that_does_not_fit(self) -> None:
        """Several dimensions do not fit: the first in declaration order is named."""
        _, chain = single({"a": 10, "b": 5, "c": 5})
        assert "b" == deny(chain, (1, 6, 6)).dim

    def test_zero_fits_a_full_budget(self) -> None:
        """A reservation of nothing fits even when the budget is full."""
        ledger, chain = single({"a": 10})
        chain.charge((10,))
        hold(chain, (0,))
        assert [((10,), (0,))] == counters(ledger)

    def test_zero_amount_on_an_overspent_dimension_does_not_fit(self) -> None:
        """spent + reserved + 0 > limit on a dimension is a denial there (SPEC's formula)."""
        _, chain = single({"a": 10, "b": 10})
        chain.charge((11, 0))
        assert Denial("b", 0, "a", 0, 0, True) == deny(chain, (0, 1))

    def test_remaining_counts_live_reservations(self) -> None:
        """Denial.remaining is what the request could still have had: cap - spent - reserved."""
        _, chain = single({"a": Limit(100, headroom=10)})
        chain.charge((30,))
        hold(chain, (40,))
        assert 20 == deny(chain, (21,)).remaining
        assert 30 == deny(chain, (31,), use_headroom=True).remaining

    def test_not_impossible_when_reservations_block(self) -> None:
        """A request that live reservations block could fit after they settle."""
        _, chain = single({"a": 10})
        hold(chain, (8,))
        assert deny(chain, (5,)).impossible is False

    def test_impossible_when_spent_alone_rules_it_out(self) -> None:
        """A request that spent alone rules out is impossible: waiting cannot help."""
        _, chain = single({"a": 10})
        chain.charge((6,))
        assert deny(chain, (5,)).impossible is True

    def test_impossible_when_larger_than_the_cap(self) -> None:
        """A request larger than the cap itself is impossible on an empty budget."""
        _, chain = single({"a": 10})
        assert Denial("b", 0, "a", 11, 10, True) == deny(chain, (11,))

    def test_impossible_is_judged_against_the_cap_in_use(self) -> None:
        """Spent may rule a request out below the headroom but not with use_headroom."""
        _, chain = single({"a": Limit(10, headroom=4)})
        chain.charge((5,))
        hold(chain, (1,), use_headroom=True)
        assert deny(chain, (2,)).impossible is True
        assert deny(chain, (5,), use_headroom=True).impossible is False

    def test_impossible_looks_at_every_dimension(self) -> None:
        """A blocked dimension is named, but another one that spent rules out makes it
        impossible."""
        _, chain = single({"a": 10, "b": 10})
        hold(chain, (9, 0))
        chain.charge((0, 9))
        denial = deny(chain, (2, 2))
        assert ("a", True) == (denial.dim, denial.impossible)

    def test_queued_is_false_from_the_kernel(self) -> None:
        """The kernel has no queue: its denials are never ``queued``."""
        _, chain = single({"a": 1})
        assert deny(chain, (2,)).queued is False

    def test_quiet_reservation_has_the_shared_continue_outcome(self) -> None:
        """A reservation that stays below every warn level reports CONTINUE, no crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        assert Outcome(CONTINUE) == hold(chain, (4,)).outcome


class TestCheck:
    def test_fits(self) -> None:
        """check() of amounts that fit is None and holds nothing."""
        ledger, chain = single({"a": 10})
        assert chain.check((10,)) is None
        assert [((0,), (0,))] == counters(ledger)

    def test_denial_like_reserve(self) -> None:
        """check() of amounts that do not fit is the Denial reserve() would give."""
        ledger, chain = single({"a": Limit(10, headroom=2)})
        chain.charge((5,))
        assert deny(chain, (4,)) == chain.check((4,))
        assert chain.check((4,), use_headroom=True) is None
        assert [((5,), (0,))] == counters(ledger)

    def test_denial_at_a_parent(self) -> None:
        """check() names the level that says no."""
        leaf = Ledger({"a": 10}, name="leaf")
        root = Ledger({"a": 5}, name="root")
        assert Denial("root", 1, "a", 6, 5, True) == Chain([leaf, root]).check((6,))


class TestSettle:
    def test_releases_exactly_and_adds_actual(self) -> None:
        """Settling removes what was held and adds the actual usage to spent."""
        ledger, chain = single({"a": 100, "b": 100})
        other = hold(chain, (5, 5))
        lease = hold(chain, (30, 10))
        outcome = lease.settle((12, 0))
        assert [((12, 0), (5, 5))] == counters(ledger)
        assert Outcome(CONTINUE) == outcome
        assert not lease.open
        assert other.open

    def test_actual_past_the_reservation_and_the_limit_is_recorded(self) -> None:
        """Settle is never refused: spend past the limit is recorded and EXHAUSTED."""
        ledger, chain = single({"a": 10})
        lease = hold(chain, (2,))
        outcome = lease.settle((25,))
        assert [((25,), (0,))] == counters(ledger)
        assert exhausted("a") == outcome.verdict
        assert {"a": 0} == dict(ledger.snapshot().remaining)

    def test_sum_saturates(self) -> None:
        """spent saturates at MAX_AMOUNT instead of growing past it."""
        ledger, chain = single({"a": MAX_AMOUNT})
        chain.charge((MAX_AMOUNT - 1,))
        hold(chain, (1,)).settle((MAX_AMOUNT,))
        assert [((MAX_AMOUNT,), (0,))] == counters(ledger)
        assert exhausted("a") == ledger.verdict()

    def test_twice_is_reservation_closed_and_changes_nothing(self) -> None:
        """A second settle raises ReservationClosed and never refunds twice."""
        ledger, chain = single({"a": 10})
        lease = hold(chain, (4,))
        hold(chain, (3,))
        lease.settle((1,))
        before = ledger.snapshot()
        with pytest.raises(ReservationClosed, match="already settled or released"):
            lease.settle((1,))
        assert before == ledger.snapshot()
        assert issubclass(ReservationClosed, BudgetError)

    def test_release_after_settle_is_reservation_closed(self) -> None:
        """Releasing a settled lease raises ReservationClosed and changes nothing."""
        ledger, chain = single({"a": 10})
        lease = hold(chain, (4,))
        lease.settle((2,))
        with pytest.raises(ReservationClosed):
            lease.release()
        assert [((2,), (0,))] == counters(ledger)

    def test_actual_of_the_wrong_length_changes_nothing(self) -> None:
        """An actual vector shorter than the ledger's is a ValueError; the lease stays open
        and the ledger is untouched.
        """
        ledger, chain = single({"a": 10, "b": 3})
        lease = hold(chain, (1, 3))
        before = ledger.snapshot()
        with pytest.raises(ValueError):  # noqa: PT011 - any message; the type is the point
            lease.settle((1,))
        assert before == ledger.snapshot()
        assert lease.open
        lease.release()
        hold(chain, (0, 3))

    @pytest.mark.parametrize("operation", ["reserve", "check", "charge", "strict charge"])
    @pytest.mark.parametrize("amounts", [(1,), (1, 1, 1)])
    def test_chain_operations_refuse_vectors_of_the_wrong_length(
        self, operation: str, amounts: tuple[int, ...]
    ) -> None:
        """reserve, check and charge refuse a vector that is not one amount per dimension
        with InvalidAmount, and change nothing."""
        ledger, chain = single({"a": 10, "b": 3})
        before = ledger.snapshot()
        calls = {
            "reserve": lambda: chain.reserve(amounts),
            "check": lambda: chain.check(amounts),
            "charge": lambda: chain.charge(amounts),
            "strict charge": lambda: chain.charge(amounts, strict=True),
        }
        with pytest.raises(InvalidAmount):
            calls[operation]()
        assert before == ledger.snapshot()

    def test_settle_of_a_lease_made_before_a_reset(self) -> None:
        """A reservation that outlives a reset is released exactly and its spend counts
        in the new period."""
        ledger, chain = single({"a": 10})
        lease = hold(chain, (4,))
        chain.charge((5,))
        ledger.reset()
        lease.settle((3,))
        assert [((3,), (0,))] == counters(ledger)


class TestRelease:
    def test_gives_back_untouched(self) -> None:
        """Releasing removes what was held and spends nothing."""
        ledger, chain = single({"a": 10, "b": 10})
        chain.charge((1, 1))
        lease = hold(chain, (4, 5))
        outcome = lease.release()
        assert [((1, 1), (0, 0))] == counters(ledger)
        assert Outcome(CONTINUE) == outcome
        assert not lease.open

    def test_twice_is_reservation_closed_and_changes_nothing(self) -> None:
        """A second release raises ReservationClosed and never refunds twice."""
        ledger, chain = single({"a": 10})
        lease = hold(chain, (4,))
        hold(chain, (2,))
        lease.release()
        with pytest.raises(ReservationClosed):
            lease.release()
        with pytest.raises(ReservationClosed):
            lease.settle((0,))
        assert [((0,), (2,))] == counters(ledger)

    def test_verdict_may_stay_exhausted_but_reports_no_crossing(self) -> None:
        """Release reports the verdict after it, and never a crossing: totals only fall."""
        _, chain = single({"a": Limit(10, warn=5)})
        chain.charge((10,))
        lease = hold(chain, (0,))
        assert Outcome(exhausted("a")) == lease.release()


class TestCharge:
    def test_adds_to_spent(self) -> None:
        """A charge adds to spent and leaves reserved alone."""
        ledger, chain = single({"a": 10, "b": 10})
        hold(chain, (1, 0))
        outcome = chain.charge((3, 0))
        assert [((3, 0), (1, 0))] == counters(ledger)
        assert Outcome(CONTINUE) == outcome

    def test_never_refused(self) -> None:
        """A plain charge past the limit is recorded and the verdict says EXHAUSTED."""
        ledger, chain = single({"a": 10})
        assert exhausted("a") == chain.charge((11,)).verdict
        assert exhausted("a") == chain.charge((7,)).verdict
        assert [((18,), (0,))] == counters(ledger)

    def test_sum_saturates(self) -> None:
        """A charge that would pass 2**63 - 1 saturates there."""
        ledger, chain = single({"a": 5, "b": 5})
        chain.charge((MAX_AMOUNT, 1))
        chain.charge((MAX_AMOUNT, 1))
        assert [((MAX_AMOUNT, 2), (0, 0))] == counters(ledger)


class TestStrictCharge:
    def test_fits_up_to_the_limit_including_headroom(self) -> None:
        """A strict charge may reach the limit exactly (headroom does not apply)."""
        ledger, chain = single({"a": Limit(10, headroom=5)})
        hold(chain, (3,))
        assert exhausted("a") == chain.charge((7,), strict=True).verdict
        assert [((7,), (3,))] == counters(ledger)

    def test_past_the_limit_raises_and_changes_nothing(self) -> None:
        """One past the limit raises BudgetExceeded with dim, limit, attempted and budget."""
        ledger, chain = single({"a": 100, "b": 10}, name="run")
        chain.charge((1, 2))
        hold(chain, (0, 3))
        before = ledger.snapshot()
        with pytest.raises(BudgetExceeded, match="would reach 11 on 'b'") as info:
            chain.charge((5, 6), strict=True)
        error = info.value
        assert ("b", 10, 11, "run") == (error.dim, error.limit, error.attempted, error.budget)
        assert before == ledger.snapshot()
        assert isinstance(error, BudgetError)

    def test_names_the_first_dimension_past_its_limit(self) -> None:
        """Several dimensions would pass: the first in declaration order is named."""
        _, chain = single({"a": 10, "b": 10, "c": 10})
        with pytest.raises(BudgetExceeded) as info:
            chain.charge((1, 11, 11), strict=True)
        assert "b" == info.value.dim

    def test_attempted_saturates(self) -> None:
        """``attempted`` is capped at 2**63 - 1 even when the true sum is larger."""
        _, chain = single({"a": MAX_AMOUNT})
        chain.charge((MAX_AMOUNT - 5,))
        with pytest.raises(BudgetExceeded) as info:
            chain.charge((MAX_AMOUNT,), strict=True)
        assert MAX_AMOUNT == info.value.attempted

    def test_unnamed_budget(self) -> None:
        """An unnamed budget's error has budget None and says 'the budget'."""
        _, chain = single({"a": 1}, name=None)
        with pytest.raises(BudgetExceeded, match="the budget would reach 2") as info:
            chain.charge((2,), strict=True)
        assert info.value.budget is None


class TestReset:
    def test_spent_goes_to_zero_and_reservations_stay(self) -> None:
        """reset() zeroes spent; live reservations stay counted."""
        ledger, chain = single({"a": 10, "b": 10})
        lease = hold(chain, (2, 3))
        chain.charge((5, 5))
        outcome = ledger.reset()
        assert [((0, 0), (2, 3))] == counters(ledger)
        assert Outcome(CONTINUE) == outcome
        assert lease.open

    def test_reservations_still_block_after_reset(self) -> None:
        """What live reservations hold is not available after a reset."""
        _, chain = single({"a": 10})
        hold(chain, (7,))
        chain.charge((3,))
        chain.leaf.reset()
        assert Denial("b", 0, "a", 4, 3, False) == deny(chain, (4,))

    def test_verdict_after_reset_counts_reservations(self) -> None:
        """The verdict after a reset reflects what live reservations hold."""
        ledger, chain = single({"a": Limit(10, warn=5)})
        hold(chain, (6,))
        chain.charge((4,))
        assert Outcome(warn("a")) == ledger.reset()


class TestSetLimits:
    def test_replaces_limits_and_keeps_counters(self) -> None:
        """New limits apply at once; spent and reserved are kept."""
        ledger, chain = single({"a": 10, "b": 10})
        hold(chain, (2, 0))
        chain.charge((3, 4))
        outcome = ledger.set_limits({"a": Limit(20, warn=5), "b": 30})
        assert (Limit(20, warn=5), Limit(30)) == ledger.limits
        assert [((3, 4), (2, 0))] == counters(ledger)
        assert Outcome(warn("a"), (Crossing("b", warn("a")),)) == outcome
        hold(chain, (15, 0))

    def test_lower_limit_leaves_the_budget_over(self) -> None:
        """A limit lowered below spent + reserved is EXHAUSTED and denies new reservations."""
        ledger, chain = single({"a": 10})
        chain.charge((6,))
        outcome = ledger.set_limits({"a": 5})
        assert Outcome(exhausted("a"), (Crossing("b", exhausted("a")),)) == outcome
        assert Denial("b", 0, "a", 0, 0, True) == deny(chain, (0,))

    def test_raising_a_limit_lets_a_crossing_be_reported_again(self) -> None:
        """After a raise brings the status down, the next rise is a new crossing."""
        ledger, chain = single({"a": 10})
        chain.charge((10,))
        assert Outcome(CONTINUE) == ledger.set_limits({"a": 20})
        assert Outcome(CONTINUE) == ledger.set_limits({"a": 20})
        outcome = chain.charge((10,))
        assert (Crossing("b", exhausted("a")),) == outcome.crossings

    def test_no_new_crossing_when_the_status_does_not_rise(self) -> None:
        """Limits that keep an already reported status report no crossing."""
        ledger, chain = single({"a": 10})
        chain.charge((10,))
        assert Outcome(exhausted("a")) == ledger.set_limits({"a": 9})

    @pytest.mark.parametrize(
        "limits",
        [{"a": 1}, {"b": 1, "a": 1}, {"a": 1, "b": 1, "c": 1}, {"a": 1, "c": 1}, {}],
    )
    def test_other_dimensions_are_invalid(self, limits: dict[str, int]) -> None:
        """New limits must name the same dimensions in the same order."""
        ledger = Ledger({"a": 10, "b": 10})
        with pytest.raises(InvalidLimits, match="same dimensions in the same order"):
            ledger.set_limits(limits)
        assert (Limit(10), Limit(10)) == ledger.limits

    def test_invalid_limit_changes_nothing(self) -> None:
        """A bad limit value raises and the old limits stay."""
        ledger = Ledger({"a": 10, "b": 10})
        with pytest.raises(InvalidAmount):
            ledger.set_limits({"a": 5, "b": -1})
        assert (Limit(10), Limit(10)) == ledger.limits
