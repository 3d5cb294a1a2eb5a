"""Unit tests of `aiobudget.kernel`'s values and ledgers: amounts, names, limits,
verdicts, and a ledger's construction, vectors and snapshots (SPEC "Dimensions and
amounts", "Limits and verdicts"). The operations are in ``test_ledger_operations.py``,
crossings in ``test_crossings.py``, leases and chains in ``test_chain.py``."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from types import MappingProxyType

import pytest

from aiobudget import (
    InvalidAmount,
    InvalidLimits,
    UnknownDimension,
)
from aiobudget.kernel import (
    CONTINUE,
    MAX_AMOUNT,
    Chain,
    Crossing,
    Ledger,
    Limit,
    Outcome,
    Snapshot,
    Status,
    Verdict,
    check_amount,
    check_dim,
    combine,
    first_over,
    snapshot_of,
    verdict_table,
)

from ._support import counters, deny, exhausted, hold, single, warn


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


class TestVerdictTable:
    def test_codes_are_continue_then_warn_then_exhausted_per_dim(self) -> None:
        """Code 0 is CONTINUE, 1 + i WARN on dim i, 1 + n + i EXHAUSTED on dim i."""
        expected = (CONTINUE, warn("a"), warn("b"), exhausted("a"), exhausted("b"))
        assert expected == verdict_table(("a", "b"))

    def test_a_ledger_answers_from_the_same_table(self) -> None:
        """A ledger's verdict is the table's entry for its state."""
        ledger, chain = single({"a": Limit(10, warn=5), "b": 10})
        hold(chain, (0, 10))
        assert verdict_table(ledger.dims)[4] == ledger.verdict()


class TestCombine:
    def test_the_worst_verdict_wins_and_the_nearest_on_a_tie(self) -> None:
        """The chain's verdict is the worst level's, the nearest level's on a tie."""
        leaf = Outcome(warn("a"))
        parent = Outcome(exhausted("b"))
        grandparent = Outcome(exhausted("c"))
        assert exhausted("b") == combine([leaf, parent, grandparent]).verdict

    def test_crossings_carry_their_level(self) -> None:
        """Every level's crossings are kept, renumbered by level from the leaf."""
        crossed = Outcome(warn("a"), (Crossing("p", warn("a")),))
        result = combine([Outcome(CONTINUE), crossed])
        assert (Crossing("p", warn("a"), 1),) == result.crossings
        assert warn("a") == result.verdict

    def test_a_quiet_chain_is_the_leafs_outcome(self) -> None:
        """Without crossings or a worse level, the leaf's outcome is the chain's."""
        leaf = Outcome(warn("a"))
        assert leaf is combine([leaf, Outcome(CONTINUE)])


class TestSnapshotOf:
    def test_remaining_is_floored_at_zero(self) -> None:
        """remaining is limit - spent - reserved, floored at 0, per dimension."""
        limits = {"a": Limit(10), "b": Limit(5)}
        snapshot = snapshot_of(limits, (3, 6), (2, 0), exhausted("b"))
        assert {"a": 5, "b": 0} == dict(snapshot.remaining)
        assert ({"a": 3, "b": 6}, {"a": 2, "b": 0}) == (
            dict(snapshot.spent),
            dict(snapshot.reserved),
        )
        assert (limits, exhausted("b")) == (dict(snapshot.limits), snapshot.verdict)

    def test_a_ledger_snapshot_is_the_same(self) -> None:
        """Ledger.snapshot builds what snapshot_of builds from its counters."""
        ledger, chain = single({"a": 10})
        chain.charge((4,))
        expected = snapshot_of({"a": Limit(10)}, (4,), (0,), CONTINUE)
        assert expected == ledger.snapshot()


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


class TestLedgerVector:
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
            held=1,
        )
        assert expected == ledger.snapshot()

    def test_held_counts_open_leases_at_every_level(self) -> None:
        """held counts the open leases holding budget at a ledger, a child's at its parent
        too; settles and releases take them off, denials and charges add none."""
        parent = Ledger({"a": 10}, name="p")
        child = Ledger({"a": 10}, name="c")
        chain, parent_chain = Chain((child, parent)), Chain((parent,))
        leases = [hold(chain, (1,)), hold(chain, (1,)), hold(parent_chain, (1,))]
        deny(chain, (20,))
        chain.charge((1,))
        assert (2, 3) == (child.snapshot().held, parent.snapshot().held)
        leases[0].settle((1,))
        leases[2].release()
        assert (1, 1) == (child.snapshot().held, parent.snapshot().held)
        leases[1].release()
        assert (0, 0) == (child.snapshot().held, parent.snapshot().held)

    def test_waiting_is_given_by_the_store(self) -> None:
        """The kernel has no queue: waiting is what the store passes, 0 by default."""
        ledger, _ = single({"a": 10})
        assert (0, 3) == (ledger.snapshot().waiting, ledger.snapshot(waiting=3).waiting)

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
