"""Unit tests of the kernel's leases and chains: a reservation settled or released at
most once, and a budget with its ancestors, all-or-nothing at every level (SPEC
"Operations", "budget.child")."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import pytest

from aiobudget import (
    BudgetExceeded,
    InvalidAmount,
    ReservationClosed,
)
from aiobudget.kernel import (
    Chain,
    Crossing,
    Denial,
    Lease,
    Ledger,
    Limit,
    Outcome,
)

from ._support import CONTINUE, counters, deny, exhausted, hold, single, warn


class TestLease:
    def test_open_until_closed(self) -> None:
        """Lease.open is true until settle or release."""
        _, chain = single({"a": 10})
        first, second = hold(chain, (1,)), hold(chain, (1,))
        assert (True, True) == (first.open, second.open)
        first.settle((1,))
        second.release()
        assert (False, False) == (first.open, second.open)

    def test_keeps_its_chain_and_outcome(self) -> None:
        """A lease knows its chain, what it asked for and the outcome of its reservation."""
        _, chain = single({"a": Limit(10, warn=1)})
        lease = hold(chain, (3,))
        assert (chain, (3,)) == (lease.chain, lease.amounts)
        assert Outcome(warn("a"), (Crossing("b", warn("a")),)) == lease.outcome


def two_levels() -> tuple[Ledger, Ledger, Chain]:
    """A leaf over {a, b, c} under a root over {b, a, r}: shared a and b in another
    order, c only at the leaf, r only at the root."""
    leaf = Ledger({"a": 100, "b": Limit(100, warn=50), "c": 100}, name="leaf")
    root = Ledger({"b": Limit(30, warn=20), "a": Limit(40, headroom=5), "r": 10}, name="root")
    return leaf, root, Chain([leaf, root])


class TestChain:
    def test_needs_a_ledger(self) -> None:
        """A chain of no ledgers is a ValueError."""
        with pytest.raises(ValueError, match="at least one ledger"):
            Chain([])

    def test_leaf_and_ledgers(self) -> None:
        """The leaf is the first ledger; the ledgers are kept in order."""
        leaf, root, chain = two_levels()
        assert (leaf, (leaf, root)) == (chain.leaf, chain.ledgers)

    def test_reserve_holds_at_every_level_by_name(self) -> None:
        """A reservation is held at each level on the dimensions of the same name."""
        leaf, root, chain = two_levels()
        hold(chain, (1, 2, 3))
        assert [((0, 0, 0), (1, 2, 3)), ((0, 0, 0), (2, 1, 0))] == counters(leaf, root)

    def test_dims_the_parent_lacks_are_not_charged_to_it(self) -> None:
        """The leaf's dimension c is not charged to the root, which lacks it."""
        leaf, root, chain = two_levels()
        chain.charge((0, 0, 90))
        hold(chain, (0, 0, 10)).settle((0, 0, 10))
        assert [((0, 0, 100), (0, 0, 0)), ((0, 0, 0), (0, 0, 0))] == counters(leaf, root)

    def test_parent_only_dimension_is_charged_zero_but_still_judged(self) -> None:
        """The root's own dimension r gets 0 from the leaf; when over, it still denies."""
        leaf, root, chain = two_levels()
        root_chain = Chain([root])
        root_chain.charge((0, 0, 11))
        before = counters(leaf, root)
        assert Denial("root", 1, "r", 0, 0, True) == deny(chain, (1, 0, 0))
        assert before == counters(leaf, root)

    def test_denial_at_the_parent_changes_nothing_at_the_child(self) -> None:
        """All-or-nothing over levels: a parent's no leaves the child untouched."""
        leaf, root, chain = two_levels()
        hold(chain, (1, 1, 1))
        before = counters(leaf, root)
        denial = deny(chain, (5, 30, 5))
        assert Denial("root", 1, "b", 30, 29, False) == denial
        assert before == counters(leaf, root)

    def test_denial_at_the_leaf_is_level_zero(self) -> None:
        """A dimension that does not fit at the leaf is denied there, before the parent."""
        _, _, chain = two_levels()
        assert Denial("leaf", 0, "c", 101, 100, True) == deny(chain, (0, 99, 101))

    def test_parent_headroom_applies_unless_use_headroom(self) -> None:
        """The parent's headroom is kept back too, and use_headroom opens it."""
        leaf, root, chain = two_levels()
        assert Denial("root", 1, "a", 36, 35, True) == deny(chain, (36, 0, 0))
        hold(chain, (36, 0, 0), use_headroom=True)
        assert [((0, 0, 0), (36, 0, 0)), ((0, 0, 0), (0, 36, 0))] == counters(leaf, root)

    def test_impossible_when_the_parent_spent_rules_it_out(self) -> None:
        """Spent at any level can make a request impossible, even if named elsewhere."""
        _, root, chain = two_levels()
        Chain([root]).charge((0, 30, 0))
        hold(chain, (0, 0, 100))
        denial = deny(chain, (6, 0, 1))
        assert ("leaf", 0, "c", True) == (
            denial.budget,
            denial.level,
            denial.dim,
            denial.impossible,
        )

    def test_settle_projects_actual_onto_each_level(self) -> None:
        """Settle releases each level's hold and adds the actual usage by name."""
        leaf, root, chain = two_levels()
        lease = hold(chain, (10, 5, 7))
        lease.settle((4, 50, 9))
        assert [((4, 50, 9), (0, 0, 0)), ((50, 4, 0), (0, 0, 0))] == counters(leaf, root)
        with pytest.raises(ReservationClosed):
            lease.settle((4, 50, 9))
        assert [((4, 50, 9), (0, 0, 0)), ((50, 4, 0), (0, 0, 0))] == counters(leaf, root)

    def test_release_gives_back_at_every_level(self) -> None:
        """Release returns each level's hold."""
        leaf, root, chain = two_levels()
        keep = hold(chain, (1, 1, 1))
        hold(chain, (10, 5, 7)).release()
        assert [((0, 0, 0), (1, 1, 1)), ((0, 0, 0), (1, 1, 0))] == counters(leaf, root)
        assert keep.open

    def test_charge_at_every_level(self) -> None:
        """A charge adds to every level by name, never refused."""
        leaf, root, chain = two_levels()
        outcome = chain.charge((50, 5, 1))
        assert [((50, 5, 1), (0, 0, 0)), ((5, 50, 0), (0, 0, 0))] == counters(leaf, root)
        assert exhausted("a") == outcome.verdict
        assert (Crossing("root", exhausted("a"), 1),) == outcome.crossings

    def test_strict_charge_refused_at_the_parent_changes_nothing(self) -> None:
        """A strict charge over the parent's limit raises naming the parent; no level changes."""
        leaf, root, chain = two_levels()
        chain.charge((1, 1, 1))
        before = counters(leaf, root)
        with pytest.raises(BudgetExceeded) as info:
            chain.charge((0, 30, 0), strict=True)
        error = info.value
        assert ("b", 30, 31, "root") == (error.dim, error.limit, error.attempted, error.budget)
        assert before == counters(leaf, root)

    def test_strict_charge_that_fits_goes_to_every_level(self) -> None:
        """A strict charge within every level's limit is added at every level."""
        leaf, root, chain = two_levels()
        assert warn("b") == chain.charge((35, 20, 0), strict=True).verdict
        assert [((35, 20, 0), (0, 0, 0)), ((20, 35, 0), (0, 0, 0))] == counters(leaf, root)

    def test_verdict_is_the_worst_level(self) -> None:
        """The chain's verdict is the worst over its levels."""
        leaf, root, chain = two_levels()
        chain.charge((0, 20, 0))
        assert (CONTINUE, warn("b"), warn("b")) == (
            leaf.verdict(),
            root.verdict(),
            chain.verdict(),
        )

    def test_verdict_on_a_tie_is_the_nearest_level(self) -> None:
        """Two levels at the same status on different dimensions: the leaf's is named."""
        leaf = Ledger({"x": Limit(10, warn=1), "y": 10}, name="leaf")
        root = Ledger({"y": Limit(10, warn=1), "x": 10}, name="root")
        chain = Chain([leaf, root])
        outcome = chain.charge((1, 1))
        assert (
            Outcome(warn("x"), (Crossing("leaf", warn("x")), Crossing("root", warn("y"), 1)))
            == outcome
        )
        assert warn("x") == chain.verdict()
        outcome = chain.charge((9, 9))
        assert (exhausted("x"), exhausted("y")) == (leaf.verdict(), root.verdict())
        assert exhausted("x") == outcome.verdict
        assert exhausted("x") == chain.verdict()

    def test_crossings_of_several_levels_in_level_order(self) -> None:
        """One operation crossing at two levels reports both, leaf first."""
        _, _, chain = two_levels()
        outcome = chain.charge((0, 50, 0))
        assert (
            Outcome(
                exhausted("b"),
                (Crossing("leaf", warn("b")), Crossing("root", exhausted("b"), 1)),
            )
            == outcome
        )

    def test_refusing_level_is_where_check_denies(self) -> None:
        """refusing_level() names the level check() would deny at (leaf first), None
        when the amounts fit everywhere, and changes nothing."""
        leaf, root, chain = two_levels()
        hold(chain, (0, 25, 0))
        before = counters(leaf, root)
        assert chain.refusing_level((1, 1, 1)) is None
        assert 1 == chain.refusing_level((0, 6, 0))  # the root's b: 25 + 6 > 30
        assert 0 == chain.refusing_level((0, 6, 101))  # the leaf's c first
        assert 1 == chain.refusing_level((36, 0, 0))  # the root's headroom on a
        assert chain.refusing_level((36, 0, 0), use_headroom=True) is None
        for amounts in [(0, 6, 0), (0, 6, 101), (36, 0, 0)]:
            denial = chain.check(amounts)
            assert denial is not None
            assert denial.level == chain.refusing_level(amounts)
        assert before == counters(leaf, root)

    @pytest.mark.parametrize("amounts", [(1, 1), ()])
    def test_take_of_one_level_refuses_vectors_of_the_wrong_length(
        self, amounts: tuple[int, ...]
    ) -> None:
        """take() on a one-level chain refuses a vector of the wrong length, holding
        nothing."""
        leaf, chain = single({"a": 10})
        with pytest.raises(InvalidAmount):
            chain.take(amounts)
        assert [((0,), (0,))] == counters(leaf)

    @pytest.mark.parametrize("amounts", [(1,), (1, 1, 1, 1)])
    def test_rules_out_refuses_vectors_of_the_wrong_length(self, amounts: tuple[int, ...]) -> None:
        """Ledger.rules_out takes a vector in the ledger's own order and length only."""
        leaf, _, _ = two_levels()
        with pytest.raises(InvalidAmount):
            leaf.rules_out(amounts)

    def test_refusing_level_of_one_level(self) -> None:
        """On a one-level chain: 0 when it does not fit, None when it does."""
        _, chain = single({"a": 10})
        assert (None, 0) == (chain.refusing_level((10,)), chain.refusing_level((11,)))

    def test_take_is_reserve_without_a_denial(self) -> None:
        """take() holds what fits as reserve() would (the same counters and outcome),
        and for what does not fit returns the level check() denies at, changing nothing."""
        leaf, root, chain = two_levels()
        hold(chain, (0, 25, 0))
        for amounts in [(0, 6, 0), (0, 6, 101), (36, 0, 0)]:
            before = counters(leaf, root)
            denial = chain.check(amounts)
            assert denial is not None
            assert denial.level == chain.take(amounts)
            assert before == counters(leaf, root)
        taken = chain.take((36, 0, 0), use_headroom=True)
        assert isinstance(taken, Lease)
        twin_leaf, twin_root, twin = two_levels()
        hold(twin, (0, 25, 0))
        reserved = twin.reserve((36, 0, 0), use_headroom=True)
        assert isinstance(reserved, Lease)
        assert reserved.outcome == taken.outcome
        assert counters(twin_leaf, twin_root) == counters(leaf, root)
        assert taken.settle((1, 0, 0)) == reserved.settle((1, 0, 0))
        assert counters(twin_leaf, twin_root) == counters(leaf, root)
        assert ((1, 0, 0), (0, 25, 0)) == counters(leaf)[0]

    @pytest.mark.parametrize("limit", [10, Limit(10, warn=5)])
    def test_take_on_one_level(self, limit: Limit | int) -> None:
        """On a one-level chain: 0 when it does not fit, nothing held; a lease when it
        does, with the outcome reserve() would give (a warning crossed, or none)."""
        leaf, chain = single({"a": limit, "b": 10})
        assert 0 == chain.take((3, 11))
        assert [((0, 0), (0, 0))] == counters(leaf)
        lease = chain.take((6, 1))
        assert isinstance(lease, Lease)
        expected = single({"a": limit, "b": 10})[1].reserve((6, 1))
        assert isinstance(expected, Lease)
        assert expected.outcome == lease.outcome
        assert [((0, 0), (6, 1))] == counters(leaf)
        lease.release()
        assert [((0, 0), (0, 0))] == counters(leaf)

    def test_a_child_with_its_parents_dimensions_in_order(self) -> None:
        """A parent whose dimensions are the child's, in the same order, sees the
        child's vector as it is: held, settled and released exactly."""
        root = Ledger({"a": 10, "b": Limit(10, warn=5)}, name="root")
        leaf = Ledger({"a": 100, "b": 100}, name="leaf")
        chain = Chain([leaf, root])
        lease = hold(chain, (2, 5))
        assert Outcome(warn("b"), (Crossing("root", warn("b"), 1),)) == lease.outcome
        assert [((0, 0), (2, 5)), ((0, 0), (2, 5))] == counters(leaf, root)
        lease.settle((1, 1))
        hold(chain, (3, 3)).release()
        assert [((1, 1), (0, 0)), ((1, 1), (0, 0))] == counters(leaf, root)

    @pytest.mark.parametrize("operation", ["reserve", "refusing level", "take"])
    @pytest.mark.parametrize("amounts", [(1,), (1, 1, 1, 1)])
    def test_chain_of_levels_refuses_vectors_of_the_wrong_length(
        self, operation: str, amounts: tuple[int, ...]
    ) -> None:
        """A chain of several levels refuses a vector of the wrong length too."""
        leaf, root, chain = two_levels()
        before = counters(leaf, root)
        calls = {
            "reserve": lambda: chain.reserve(amounts),
            "refusing level": lambda: chain.refusing_level(amounts),
            "take": lambda: chain.take(amounts),
        }
        with pytest.raises(InvalidAmount):
            calls[operation]()
        assert before == counters(leaf, root)

    def test_reserve_reports_a_parent_crossing(self) -> None:
        """A reservation that brings only the parent to its limit reports the parent's."""
        _, _, chain = two_levels()
        lease = hold(chain, (0, 30, 0))
        assert Outcome(exhausted("b"), (Crossing("root", exhausted("b"), 1),)) == lease.outcome

    def test_quiet_multi_level_operation(self) -> None:
        """An operation that changes no status reports CONTINUE and no crossing."""
        _, _, chain = two_levels()
        lease = hold(chain, (1, 1, 1))
        assert Outcome(CONTINUE) == lease.outcome
        assert Outcome(CONTINUE) == lease.settle((1, 1, 1))

    def test_crossing_level_counts_from_the_leaf_of_the_chain(self) -> None:
        """Crossing.level tells levels apart even when their names repeat, counted from
        the leaf of the chain the operation ran on."""
        leaf = Ledger({"a": 10}, name="same")
        root = Ledger({"a": 20}, name="same")
        outcome = Chain([leaf, root]).charge((10,))
        assert (Crossing("same", exhausted("a"), 0),) == outcome.crossings
        outcome = Chain([root]).charge((10,))
        assert (Crossing("same", exhausted("a"), 0),) == outcome.crossings
        top = Ledger({"a": 10}, name="same")
        outcome = Chain([Ledger({"a": 10}, name="same"), top]).charge((10,))
        assert (
            Crossing("same", exhausted("a"), 0),
            Crossing("same", exhausted("a"), 1),
        ) == outcome.crossings

    def test_three_levels(self) -> None:
        """A denial at the third level names it; nothing changes at any level."""
        leaf = Ledger({"a": 100}, name="task")
        mid = Ledger({"a": 50}, name="team")
        top = Ledger({"a": 20, "b": 5}, name="org")
        chain = Chain([leaf, mid, top])
        lease = hold(chain, (15,))
        before = counters(leaf, mid, top)
        assert Denial("org", 2, "a", 6, 5, False) == deny(chain, (6,))
        assert before == counters(leaf, mid, top)
        lease.settle((30,))
        assert [((30,), (0,)), ((30,), (0,)), ((30, 0), (0, 0))] == counters(leaf, mid, top)
        assert exhausted("a") == chain.verdict()
        assert Denial("org", 2, "a", 1, 0, True) == deny(chain, (1,))

    def test_three_level_verdict_nearest_worst(self) -> None:
        """The worst status wins wherever it is; the nearest level names it on a tie."""
        leaf = Ledger({"a": Limit(100, warn=10)}, name="task")
        mid = Ledger({"a": Limit(50, warn=10)}, name="team")
        top = Ledger({"a": 20}, name="org")
        chain = Chain([leaf, mid, top])
        outcome = chain.charge((10,))
        assert warn("a") == outcome.verdict
        assert (Crossing("task", warn("a")), Crossing("team", warn("a"), 1)) == outcome.crossings
        outcome = chain.charge((10,))
        assert Outcome(exhausted("a"), (Crossing("org", exhausted("a"), 2),)) == outcome
