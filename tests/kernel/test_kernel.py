"""Unit tests of `aiobudget.kernel`: every rule of SPEC "Limits and verdicts" and
"Operations", one class per unit, on ledgers small enough to check by hand."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from types import MappingProxyType

import pytest

from aiobudget import (
    BudgetError,
    BudgetExceeded,
    InvalidAmount,
    InvalidLimits,
    ReservationClosed,
    UnknownDimension,
)
from aiobudget.kernel import (
    MAX_AMOUNT,
    Chain,
    Crossing,
    Denial,
    Lease,
    Ledger,
    Limit,
    Outcome,
    Snapshot,
    Status,
    Verdict,
    check_amount,
    check_dim,
    first_over,
)

CONTINUE = Verdict(Status.CONTINUE)


def warn(dim: str) -> Verdict:
    return Verdict(Status.WARN, dim)


def exhausted(dim: str) -> Verdict:
    return Verdict(Status.EXHAUSTED, dim)


def single(limits: dict[str, Limit | int], name: str | None = "b") -> tuple[Ledger, Chain]:
    """A ledger and the one-level chain over it."""
    ledger = Ledger(limits, name=name)
    return ledger, Chain([ledger])


def hold(chain: Chain, amounts: tuple[int, ...], *, use_headroom: bool = False) -> Lease:
    """Reserve *amounts*, which the test expects to fit."""
    lease = chain.reserve(amounts, use_headroom=use_headroom)
    assert isinstance(lease, Lease), lease
    return lease


def deny(chain: Chain, amounts: tuple[int, ...], *, use_headroom: bool = False) -> Denial:
    """Reserve *amounts*, which the test expects to be denied."""
    denial = chain.reserve(amounts, use_headroom=use_headroom)
    assert isinstance(denial, Denial), denial
    return denial


def counters(*ledgers: Ledger) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(spent, reserved)`` of each ledger."""
    return [(ledger.spent, ledger.reserved) for ledger in ledgers]


class TestCheckAmount:
    @pytest.mark.parametrize("value", [0, 1, 12_345, MAX_AMOUNT])
    def test_accepts_ints_in_range(self, value: int) -> None:
        """An int in 0 .. 2**63 - 1 is returned unchanged."""
        assert value == check_amount(value)

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (-1, "is negative"),
            (MAX_AMOUNT + 1, "is larger than"),
            (True, "is a bool"),
            (1.0, "is a float"),
            ("5", "is a str"),
            (None, "is a NoneType"),
        ],
    )
    def test_rejects_with_a_message_that_says_why(self, value: object, problem: str) -> None:
        """Anything else raises InvalidAmount whose message names the problem."""
        with pytest.raises(InvalidAmount, match=problem):
            check_amount(value)

    def test_error_carries_the_dimension_and_value(self) -> None:
        """The error names the dimension (in its fields and message) and keeps the value."""
        with pytest.raises(InvalidAmount, match="for 'tokens'") as info:
            check_amount(-3, "tokens")
        assert ("tokens", -3) == (info.value.dim, info.value.value)

    def test_error_without_a_dimension(self) -> None:
        """Without a dimension the error's ``dim`` is None."""
        with pytest.raises(InvalidAmount) as info:
            check_amount(-3)
        assert info.value.dim is None


class TestCheckDim:
    @pytest.mark.parametrize("name", ["tokens", "cost_micros", "a-b.c_1", "A", "9", "x.y"])
    def test_accepts_letters_digits_underscore_dash_dot(self, name: str) -> None:
        """A non-empty string of letters, digits, '_', '-' and '.' is a dimension name."""
        assert name == check_dim(name)

    @pytest.mark.parametrize("name", ["", "a b", "é", "a/b", "a\n", " a", 5, None, b"a"])
    def test_rejects_anything_else(self, name: object) -> None:
        """Other names raise InvalidLimits, a ValueError."""
        with pytest.raises(InvalidLimits):
            check_dim(name)
        assert issubclass(InvalidLimits, ValueError)


class TestFirstOver:
    def test_none_over(self) -> None:
        """-1 when every amount is at or below its cap."""
        assert -1 == first_over([1, 5, 0], [1, 6, 0])

    def test_first_index_over(self) -> None:
        """The index of the first amount strictly above its cap."""
        assert 1 == first_over([1, 7, 9], [1, 6, 0])

    def test_empty(self) -> None:
        """No amounts: none over."""
        assert -1 == first_over([], [])


class TestLimit:
    def test_defaults(self) -> None:
        """warn defaults to None and headroom to 0."""
        assert (10, None, 0) == (Limit(10).limit, Limit(10).warn, Limit(10).headroom)

    def test_warn_and_headroom_may_equal_the_limit(self) -> None:
        """warn == limit and headroom == limit are allowed."""
        limit = Limit(10, warn=10, headroom=10)
        assert (10, 10, 10) == (limit.limit, limit.warn, limit.headroom)

    def test_warn_above_limit(self) -> None:
        """A warn level above the limit is InvalidLimits."""
        with pytest.raises(InvalidLimits, match="warn 11 is above the limit 10"):
            Limit(10, warn=11)

    def test_headroom_above_limit(self) -> None:
        """A headroom above the limit is InvalidLimits."""
        with pytest.raises(InvalidLimits, match="headroom 11 is above the limit 10"):
            Limit(10, headroom=11)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"limit": True},
            {"limit": 1.0},
            {"limit": -1},
            {"limit": MAX_AMOUNT + 1},
            {"limit": "10"},
            {"limit": 10, "warn": False},
            {"limit": 10, "warn": 2.5},
            {"limit": 10, "warn": -1},
            {"limit": 10, "headroom": None},
            {"limit": 10, "headroom": 1.0},
            {"limit": 10, "headroom": -1},
        ],
    )
    def test_bad_types_are_invalid_amounts(self, kwargs: dict[str, object]) -> None:
        """A limit, warn or headroom that is not an int in range is InvalidAmount."""
        with pytest.raises(InvalidAmount):
            Limit(**kwargs)  # type: ignore[arg-type]

    def test_of_int(self) -> None:
        """Limit.of(int) is Limit(int)."""
        assert Limit(7) == Limit.of(7)

    def test_of_limit_is_the_same_object(self) -> None:
        """Limit.of(a Limit) returns it unchanged."""
        limit = Limit(7, warn=3, headroom=1)
        assert limit is Limit.of(limit)

    def test_of_rejects_other_values(self) -> None:
        """Limit.of of a non-int is InvalidAmount."""
        with pytest.raises(InvalidAmount):
            Limit.of("7")  # type: ignore[arg-type]

    def test_is_frozen(self) -> None:
        """A Limit cannot be changed after it is built."""
        limit = Limit(7)
        with pytest.raises(AttributeError):
            limit.limit = 8  # type: ignore[misc]


class TestVerdict:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [(Status.CONTINUE, True), (Status.WARN, True), (Status.EXHAUSTED, False)],
    )
    def test_ok_unless_exhausted(self, status: Status, expected: bool) -> None:
        """Verdict.ok is true unless the status is EXHAUSTED."""
        assert expected == Verdict(status, "x").ok

    def test_dim_defaults_to_none(self) -> None:
        """A verdict built from a status alone names no dimension."""
        assert Verdict(Status.CONTINUE).dim is None

    def test_status_values(self) -> None:
        """Status has exactly CONTINUE, WARN and EXHAUSTED."""
        assert ["CONTINUE", "WARN", "EXHAUSTED"] == [status.name for status in Status]


class TestLedgerConstruction:
    def test_dims_and_limits_keep_declaration_order(self) -> None:
        """Dimensions keep their order; an int limit means Limit(int)."""
        ledger = Ledger({"b": Limit(5, warn=4), "a": 3}, name="run")
        assert ("b", "a") == ledger.dims
        assert (Limit(5, warn=4), Limit(3)) == ledger.limits
        assert "run" == ledger.name

    def test_starts_empty(self) -> None:
        """A new ledger has nothing spent or reserved."""
        ledger = Ledger({"a": 5, "b": 5})
        assert [((0, 0), (0, 0))] == counters(ledger)

    def test_name_defaults_to_none(self) -> None:
        """A ledger has no name unless given one."""
        assert Ledger({"a": 1}).name is None

    def test_empty_mapping(self) -> None:
        """A budget with no dimensions is InvalidLimits."""
        with pytest.raises(InvalidLimits, match="at least one dimension"):
            Ledger({})

    @pytest.mark.parametrize("limits", [[("a", 1)], None, 5, "a"])
    def test_not_a_mapping(self, limits: object) -> None:
        """Limits that are not a mapping are InvalidLimits."""
        with pytest.raises(InvalidLimits, match="must be a mapping"):
            Ledger(limits)  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["", "a b", "é", 5, None])
    def test_invalid_dimension_name(self, name: object) -> None:
        """An invalid dimension name is InvalidLimits."""
        with pytest.raises(InvalidLimits, match="is invalid"):
            Ledger({"ok": 1, name: 1})  # type: ignore[dict-item]

    @pytest.mark.parametrize("value", [True, 1.5, -1, "5", None])
    def test_invalid_limit_value(self, value: object) -> None:
        """A limit value that is neither a Limit nor an int in range is InvalidAmount."""
        with pytest.raises(InvalidAmount):
            Ledger({"a": value})  # type: ignore[dict-item]


class TestLedgerIndexAndVector:
    def test_index(self) -> None:
        """index() gives a dimension's position."""
        assert 1 == Ledger({"a": 1, "b": 1}).index("b")

    def test_index_unknown(self) -> None:
        """index() of an unknown dimension is UnknownDimension, naming what exists."""
        with pytest.raises(UnknownDimension) as info:
            Ledger({"a": 1, "b": 1}, name="run").index("c")
        assert ("c", ("a", "b"), "run") == (info.value.dim, info.value.known, info.value.budget)

    def test_vector_orders_by_declaration(self) -> None:
        """vector() lists amounts in the ledger's order whatever the mapping's order."""
        ledger = Ledger({"a": 10, "b": 10, "c": 10})
        assert (1, 2, 3) == ledger.vector({"c": 3, "a": 1, "b": 2})

    def test_vector_missing_dims_are_zero(self) -> None:
        """Dimensions the mapping does not name are 0."""
        ledger = Ledger({"a": 10, "b": 10, "c": 10})
        assert (0, 5, 0) == ledger.vector({"b": 5})
        assert (0, 0, 0) == ledger.vector({})

    def test_vector_unknown_dimension(self) -> None:
        """An unknown name is UnknownDimension carrying the name, known dims and budget."""
        ledger = Ledger({"a": 10}, name="run")
        with pytest.raises(UnknownDimension, match="budget 'run' has no dimension 'z'") as info:
            ledger.vector({"a": 1, "z": 1})
        assert ("z", ("a",), "run") == (info.value.dim, info.value.known, info.value.budget)

    def test_vector_unknown_non_string_key(self) -> None:
        """A non-string key is reported as UnknownDimension of its str()."""
        with pytest.raises(UnknownDimension) as info:
            Ledger({"a": 10}).vector({5: 1})  # type: ignore[dict-item]
        assert "5" == info.value.dim

    @pytest.mark.parametrize("value", [True, 1.0, -1, MAX_AMOUNT + 1, "1", None])
    def test_vector_invalid_amount(self, value: object) -> None:
        """A bad amount is InvalidAmount naming its dimension."""
        with pytest.raises(InvalidAmount) as info:
            Ledger({"a": 10, "b": 10}).vector({"b": value})
        assert "b" == info.value.dim

    @pytest.mark.parametrize("value", [True, 1.0, -1, MAX_AMOUNT + 1, "1", None])
    def test_vector_naming_every_dimension_checks_each_amount(self, value: object) -> None:
        """A mapping that names every dimension (the common shape) is checked all the
        same: a bad amount is InvalidAmount naming its dimension."""
        with pytest.raises(InvalidAmount) as info:
            Ledger({"a": 10, "b": 10}).vector({"b": value, "a": 1})
        assert "b" == info.value.dim
        with pytest.raises(InvalidAmount):
            Ledger({"a": 10}).vector({"a": value})

    def test_vector_naming_as_many_dimensions_with_an_unknown_one(self) -> None:
        """A mapping of as many names as dimensions, one of them unknown, is
        UnknownDimension (not a missing dimension taken as 0)."""
        with pytest.raises(UnknownDimension) as info:
            Ledger({"a": 10, "b": 10}).vector({"a": 1, "z": 1})
        assert "z" == info.value.dim

    def test_vector_of_a_mapping_that_is_not_a_dict(self) -> None:
        """Any mapping is accepted, a dict subclass included."""

        class Counts(dict[str, int]):
            pass

        assert (1, 2) == Ledger({"a": 10, "b": 10}).vector(Counts(b=2, a=1))
        assert (3,) == Ledger({"a": 10}).vector(MappingProxyType({"a": 3}))

    def test_mapping(self) -> None:
        """mapping() turns a vector back into a dict keyed by dimension."""
        assert {"a": 1, "b": 2} == Ledger({"a": 10, "b": 10}).mapping((1, 2))


class TestLedgerSnapshot:
    def test_values(self) -> None:
        """A snapshot holds limits, spent, reserved, remaining and the verdict."""
        ledger, chain = single({"a": Limit(10, warn=5), "b": 20})
        hold(chain, (2, 3))
        chain.charge((4, 1))
        expected = Snapshot(
            limits={"a": Limit(10, warn=5), "b": Limit(20)},
            spent={"a": 4, "b": 1},
            reserved={"a": 2, "b": 3},
            remaining={"a": 4, "b": 16},
            verdict=warn("a"),
        )
        assert expected == ledger.snapshot()

    def test_remaining_is_floored_at_zero_after_overspend(self) -> None:
        """remaining never goes negative, even when spent is past the limit."""
        ledger, chain = single({"a": 10, "b": 10})
        chain.charge((25, 10))
        snapshot = ledger.snapshot()
        assert {"a": 0, "b": 0} == dict(snapshot.remaining)
        assert {"a": 25, "b": 10} == dict(snapshot.spent)

    def test_remaining_ignores_headroom(self) -> None:
        """remaining is limit - spent - reserved; the headroom is not subtracted."""
        ledger, _ = single({"a": Limit(10, headroom=4)})
        assert {"a": 10} == dict(ledger.snapshot().remaining)

    def test_is_a_frozen_copy(self) -> None:
        """A snapshot is read-only and does not follow later changes."""
        ledger, chain = single({"a": 10})
        snapshot = ledger.snapshot()
        chain.charge((3,))
        assert {"a": 0} == dict(snapshot.spent)
        assert isinstance(snapshot.spent, MappingProxyType)
        with pytest.raises(TypeError):
            snapshot.spent["a"] = 1  # type: ignore[index]


class TestLedgerRepr:
    def test_repr(self) -> None:
        """repr shows the name and spent+reserved/limit per dimension."""
        ledger, chain = single({"a": 10, "b": 20}, name="run-1")
        hold(chain, (2, 0))
        chain.charge((3, 5))
        assert "<Ledger 'run-1' a=3+2/10, b=5+0/20>" == repr(ledger)

    def test_repr_without_name(self) -> None:
        """An unnamed ledger shows None."""
        assert "<Ledger None a=0+0/1>" == repr(Ledger({"a": 1}))


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

    @pytest.mark.parametrize("operation", ["reserve", "refusing level"])
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
        }
        with pytest.raises(InvalidAmount):
            calls[operation]()
        assert before == counters(leaf, root)

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


class TestVerdictTransitions:
    def test_continue_warn_exhausted_and_back_after_reset(self) -> None:
        """CONTINUE below warn, WARN from warn, EXHAUSTED from the limit, CONTINUE after reset."""
        ledger, chain = single({"a": Limit(10, warn=6)})
        assert Outcome(CONTINUE) == chain.charge((5,))
        assert CONTINUE == ledger.verdict()
        assert warn("a") == chain.charge((1,)).verdict
        assert warn("a") == ledger.verdict()
        assert warn("a") == chain.charge((3,)).verdict
        assert exhausted("a") == chain.charge((1,)).verdict
        assert exhausted("a") == ledger.verdict()
        assert Outcome(CONTINUE) == ledger.reset()
        assert CONTINUE == ledger.verdict()

    def test_reserved_counts_toward_the_verdict(self) -> None:
        """A verdict compares spent + reserved with warn and limit."""
        ledger, chain = single({"a": Limit(10, warn=6)})
        chain.charge((3,))
        assert warn("a") == hold(chain, (3,)).outcome.verdict
        lease = hold(chain, (4,))
        assert exhausted("a") == lease.outcome.verdict
        assert warn("a") == lease.release().verdict
        assert warn("a") == ledger.verdict()

    def test_without_warn_there_is_no_warn(self) -> None:
        """A dimension without a warn level goes straight from CONTINUE to EXHAUSTED."""
        _, chain = single({"a": 10})
        assert CONTINUE == chain.charge((9,)).verdict
        assert exhausted("a") == chain.charge((1,)).verdict

    def test_zero_limit_is_exhausted_from_the_start(self) -> None:
        """spent + reserved >= limit holds at 0 for a limit of 0."""
        ledger, _ = single({"a": 5, "z": 0})
        assert exhausted("z") == ledger.verdict()

    def test_warn_at_zero_warns_from_the_start(self) -> None:
        """spent + reserved >= warn holds at 0 for a warn level of 0."""
        ledger, _ = single({"a": Limit(5, warn=0)})
        assert warn("a") == ledger.verdict()

    def test_first_dimension_in_declaration_order_at_warn(self) -> None:
        """Several dimensions at WARN: the first declared is named."""
        ledger, chain = single({"a": Limit(10, warn=5), "b": Limit(10, warn=5)})
        chain.charge((0, 5))
        assert warn("b") == ledger.verdict()
        assert warn("a") == chain.charge((5, 0)).verdict

    def test_first_dimension_in_declaration_order_when_exhausted(self) -> None:
        """Several dimensions EXHAUSTED: the first declared is named."""
        ledger, chain = single({"a": 10, "b": 10, "c": 10})
        chain.charge((0, 0, 10))
        assert exhausted("c") == ledger.verdict()
        assert exhausted("b") == chain.charge((0, 10, 0)).verdict

    def test_exhausted_beats_an_earlier_warn(self) -> None:
        """A later EXHAUSTED dimension is named over an earlier WARN one."""
        ledger, chain = single({"a": Limit(10, warn=1), "b": Limit(10, warn=1)})
        chain.charge((5, 10))
        assert exhausted("b") == ledger.verdict()
        assert exhausted("b") == chain.verdict()

    def test_settle_below_every_alert_level_is_continue(self) -> None:
        """A settle that leaves every dimension below its warn and limit is CONTINUE."""
        _, chain = single({"a": Limit(10, warn=8), "b": 10})
        lease = hold(chain, (9, 9))
        assert Outcome(CONTINUE) == lease.settle((2, 2))


class TestCrossings:
    def test_each_rise_is_reported_once(self) -> None:
        """CONTINUE -> WARN and WARN -> EXHAUSTED are each reported once."""
        _, chain = single({"a": Limit(10, warn=5)}, name="run")
        assert () == chain.charge((4,)).crossings
        assert (Crossing("run", warn("a")),) == chain.charge((1,)).crossings
        assert () == chain.charge((1,)).crossings
        assert (Crossing("run", exhausted("a")),) == chain.charge((4,)).crossings
        assert () == chain.charge((1,)).crossings

    def test_straight_to_exhausted_is_one_crossing(self) -> None:
        """Jumping past warn to the limit is a single EXHAUSTED crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        assert (Crossing("b", exhausted("a")),) == chain.charge((10,)).crossings

    def test_fall_and_rise_again_is_not_reported_before_a_reset(self) -> None:
        """Falling back below warn and rising again is not a new crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        lease = hold(chain, (6,))
        assert (Crossing("b", warn("a")),) == lease.outcome.crossings
        lease.release()
        assert Outcome(warn("a")) == hold(chain, (6,)).outcome

    def test_reported_again_after_a_reset(self) -> None:
        """After a reset, rising again is reported again."""
        ledger, chain = single({"a": Limit(10, warn=5)})
        chain.charge((10,))
        ledger.reset()
        assert (Crossing("b", warn("a")),) == chain.charge((5,)).crossings
        assert (Crossing("b", exhausted("a")),) == chain.charge((5,)).crossings

    def test_reset_at_warn_does_not_report_warn_again(self) -> None:
        """A reset that leaves live reservations at WARN takes WARN as already reported."""
        ledger, chain = single({"a": Limit(10, warn=5)})
        hold(chain, (6,))
        assert Outcome(warn("a")) == ledger.reset()
        assert Outcome(warn("a")) == chain.charge((1,))
        assert (Crossing("b", exhausted("a")),) == chain.charge((3,)).crossings

    def test_settle_reports_a_crossing(self) -> None:
        """A settle whose actual usage crosses a level reports it."""
        _, chain = single({"a": Limit(10, warn=5)})
        lease = hold(chain, (1,))
        assert Outcome(exhausted("a"), (Crossing("b", exhausted("a")),)) == lease.settle((10,))

    def test_loud_settle_without_rise_reports_nothing(self) -> None:
        """A settle that stays at an already reported status reports no crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        chain.charge((6,))
        assert Outcome(warn("a")) == hold(chain, (1,)).settle((1,))


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

    def test_refusing_level_of_one_level(self) -> None:
        """On a one-level chain: 0 when it does not fit, None when it does."""
        _, chain = single({"a": 10})
        assert (None, 0) == (chain.refusing_level((10,)), chain.refusing_level((11,)))

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
