"""Every kind of bad value at every entry point that takes an amount.

SPEC: amounts, limits and thresholds are ints in 0 .. 2**63 - 1; bool, floats, NaN,
infinities, negatives, strings, larger ints (and anything else) raise `InvalidAmount`, a
`ValueError`, "and nothing changes". Money (`usd`, `money`, `Pricing`) also takes
Decimal, str and finite non-negative float, and rejects the rest. Each test runs the bad
value through the way a user would feed it to a live budget and checks that the
budget's snapshot is the same before and after.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from types import SimpleNamespace

import pytest

from aiobudget import (
    CALLS,
    COST,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    TOKENS,
    BudgetError,
    InvalidAmount,
    InvalidLimits,
    Limit,
    Pricing,
    UnknownDimension,
    Usage,
    money,
    usd,
)
from aiobudget.kernel import MAX_AMOUNT, Chain, Ledger

BAD = [
    True,
    False,
    1.0,
    math.nan,
    math.inf,
    -1,
    2**63,
    "5",
    None,
    Decimal("1"),
    [1],
]
"""Values that are never an amount (an int in 0 .. 2**63 - 1)."""

# Where None means "not given" (warn=None, a missing usage field), it is not bad.
BAD_NOT_NONE = [value for value in BAD if value is not None]

BAD_MONEY = [
    True,
    False,
    math.nan,
    math.inf,
    -math.inf,
    -1,
    -0.5,
    -(10**-9),
    Decimal("-1"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    "NaN",
    "inf",
    "-Infinity",
    "-0.01",
    "abc",
    "",
    "1,5",
    None,
    [1],
    (1,),
    {"usd": 1},
    b"1",
    complex(1, 0),
]
"""Values that are never money, whatever their size."""

TOO_MUCH_MONEY = [
    2**63,
    MAX_AMOUNT,
    "9223372036854.775808",
    "9223372036854.7758071",
    Decimal("1e13"),
    1e13,
    "9" * 30,
]
"""Money values whose micro-units pass 2**63 - 1."""

EXTRA = "gpu_seconds"


@pytest.fixture
def chain() -> Chain:
    """A one-level budget with every standard dimension and a custom one, in use."""
    ledger = Ledger(
        {
            TOKENS: Limit(10_000, warn=8_000),
            INPUT_TOKENS: 10_000,
            OUTPUT_TOKENS: 10_000,
            COST: Limit(usd("5"), headroom=usd("1")),
            CALLS: 10,
            EXTRA: 100,
        },
        name="run",
    )
    chain = Chain([ledger])
    chain.charge(ledger.vector({TOKENS: 10, CALLS: 1, COST: usd("0.01")}))
    chain.reserve(ledger.vector({TOKENS: 20, CALLS: 1}))
    return chain


@pytest.fixture
def unchanged(chain: Chain) -> Iterator[Chain]:
    """The budget, checked after the test to be exactly as before it."""
    before = chain.leaf.snapshot()
    yield chain
    assert before == chain.leaf.snapshot()


def charge(chain: Chain, amounts: Callable[[], Mapping[str, object]]) -> None:
    """What a user does: build the amounts, then charge them."""
    chain.charge(chain.leaf.vector(amounts()))


def charge_usage(chain: Chain, usage: Callable[[], Usage]) -> None:
    """What a user does with a Usage: map it onto the budget, then charge it."""
    charge(chain, lambda: usage().amounts(chain.leaf.dims))


def bad_ids(values: list[object]) -> list[str]:
    return [repr(value) for value in values]


class TestErrorTypes:
    def test_invalid_amount_is_a_value_error(self) -> None:
        """InvalidAmount is a BudgetError and a ValueError."""
        assert issubclass(InvalidAmount, BudgetError)
        assert issubclass(InvalidAmount, ValueError)

    def test_unknown_dimension_is_a_key_error(self) -> None:
        """UnknownDimension is a BudgetError and a KeyError."""
        assert issubclass(UnknownDimension, BudgetError)
        assert issubclass(UnknownDimension, KeyError)


class TestLimit:
    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    def test_limit(self, value: object, unchanged: Chain) -> None:
        """A bad limit is InvalidAmount, when built and when set on a live budget."""
        with pytest.raises(InvalidAmount):
            Limit(value)  # type: ignore[arg-type]
        with pytest.raises(InvalidAmount):
            Ledger({TOKENS: value})  # type: ignore[dict-item]
        limits = dict(unchanged.leaf.snapshot().limits)
        with pytest.raises(InvalidAmount):
            unchanged.leaf.set_limits({**limits, CALLS: value})  # type: ignore[dict-item]

    @pytest.mark.parametrize("value", BAD_NOT_NONE, ids=bad_ids(BAD_NOT_NONE))
    def test_warn(self, value: object, unchanged: Chain) -> None:
        """A bad warn level is InvalidAmount, when built and when set on a live budget."""
        with pytest.raises(InvalidAmount):
            Limit(10, warn=value)  # type: ignore[arg-type]
        limits = dict(unchanged.leaf.snapshot().limits)
        with pytest.raises(InvalidAmount):
            unchanged.leaf.set_limits({**limits, CALLS: Limit(10, warn=value)})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    def test_headroom(self, value: object, unchanged: Chain) -> None:
        """A bad headroom is InvalidAmount, when built and when set on a live budget."""
        with pytest.raises(InvalidAmount):
            Limit(10, headroom=value)  # type: ignore[arg-type]
        limits = dict(unchanged.leaf.snapshot().limits)
        with pytest.raises(InvalidAmount):
            unchanged.leaf.set_limits({**limits, CALLS: Limit(10, headroom=value)})  # type: ignore[arg-type]

    def test_none_warn_means_no_warn_level(self) -> None:
        """warn=None is not bad: it means the dimension never warns."""
        assert Limit(10) == Limit(10, warn=None)


class TestLedgerVector:
    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    def test_charge(self, value: object, unchanged: Chain) -> None:
        """A bad amount in a charge is InvalidAmount naming its dimension."""
        with pytest.raises(InvalidAmount) as info:
            charge(unchanged, lambda: {TOKENS: 1, CALLS: value})
        assert CALLS == info.value.dim

    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    def test_reserve(self, value: object, unchanged: Chain) -> None:
        """A bad amount in a reservation is InvalidAmount."""
        with pytest.raises(InvalidAmount):
            unchanged.reserve(unchanged.leaf.vector({EXTRA: value}))

    @pytest.mark.parametrize("name", ["nope", "", "a b", 5, None])
    def test_unknown_dimension(self, name: object, unchanged: Chain) -> None:
        """A name the budget does not have is UnknownDimension."""
        with pytest.raises(UnknownDimension):
            charge(unchanged, lambda: {TOKENS: 1, name: 1})

    def test_unknown_name_and_bad_amount_together(self, unchanged: Chain) -> None:
        """An unknown name and a bad amount in one mapping: an error, nothing charged."""
        with pytest.raises(BudgetError):
            charge(unchanged, lambda: {"nope": -1, TOKENS: -1})


class TestUsage:
    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    @pytest.mark.parametrize("name", [INPUT_TOKENS, OUTPUT_TOKENS, COST, CALLS])
    def test_fields(self, name: str, value: object, unchanged: Chain) -> None:
        """A bad value in any Usage field is InvalidAmount naming the field."""
        with pytest.raises(InvalidAmount) as info:
            charge_usage(unchanged, lambda: Usage(**{name: value}))  # type: ignore[arg-type]
        assert name == info.value.dim

    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    def test_extra_values(self, value: object, unchanged: Chain) -> None:
        """A bad value in ``extra`` is InvalidAmount naming the extra dimension."""
        with pytest.raises(InvalidAmount) as info:
            charge_usage(unchanged, lambda: Usage(calls=1, extra={EXTRA: value}))  # type: ignore[dict-item]
        assert EXTRA == info.value.dim

    @pytest.mark.parametrize("extra", [[(EXTRA, 1)], 5, "x"])
    def test_extra_not_a_mapping(self, extra: object, unchanged: Chain) -> None:
        """An ``extra`` that is not a mapping is InvalidAmount."""
        with pytest.raises(InvalidAmount):
            charge_usage(unchanged, lambda: Usage(extra=extra))  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["", "a b", "é", 5])
    def test_extra_invalid_name(self, name: object, unchanged: Chain) -> None:
        """An ``extra`` name that cannot be a dimension is a ValueError from aiobudget."""
        with pytest.raises(ValueError, match="is invalid") as info:
            charge_usage(unchanged, lambda: Usage(extra={name: 1}))  # type: ignore[dict-item]
        assert isinstance(info.value, BudgetError)

    @pytest.mark.parametrize("name", [TOKENS, INPUT_TOKENS, OUTPUT_TOKENS, COST, CALLS])
    def test_extra_standard_name(self, name: str, unchanged: Chain) -> None:
        """``extra`` is for custom dimensions: a standard name there would be charged
        twice, or apart from ``Usage.tokens``; it is InvalidAmount naming it."""
        with pytest.raises(InvalidAmount, match="standard") as info:
            charge_usage(unchanged, lambda: Usage(input_tokens=1, extra={name: 5}))
        assert name == info.value.dim

    def test_extra_unknown_dimension(self, unchanged: Chain) -> None:
        """An ``extra`` name the budget lacks is UnknownDimension when charged."""
        with pytest.raises(UnknownDimension) as info:
            charge_usage(unchanged, lambda: Usage(input_tokens=5, extra={"nope": 1}))
        assert "nope" == info.value.dim

    @pytest.mark.parametrize("value", BAD_NOT_NONE, ids=bad_ids(BAD_NOT_NONE))
    @pytest.mark.parametrize("name", ["prompt_tokens", "completion_tokens"])
    def test_from_openai_chat_fields(self, name: str, value: object, unchanged: Chain) -> None:
        """A bad Chat Completions count is InvalidAmount, as a dict or as an object."""
        usage = {"prompt_tokens": 1, "completion_tokens": 1, name: value}
        with pytest.raises(InvalidAmount):
            charge_usage(unchanged, lambda: Usage.from_openai({"usage": usage}))
        with pytest.raises(InvalidAmount):
            charge_usage(unchanged, lambda: Usage.from_openai(SimpleNamespace(**usage)))

    @pytest.mark.parametrize("value", BAD_NOT_NONE, ids=bad_ids(BAD_NOT_NONE))
    @pytest.mark.parametrize("name", ["input_tokens", "output_tokens"])
    def test_from_openai_responses_fields(self, name: str, value: object, unchanged: Chain) -> None:
        """A bad Responses API count is InvalidAmount."""
        usage = {"input_tokens": 1, "output_tokens": 1, name: value}
        with pytest.raises(InvalidAmount):
            charge_usage(unchanged, lambda: Usage.from_openai(SimpleNamespace(usage=usage)))

    @pytest.mark.parametrize("value", BAD_NOT_NONE, ids=bad_ids(BAD_NOT_NONE))
    @pytest.mark.parametrize(
        "name",
        [
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ],
    )
    def test_from_anthropic_fields(self, name: str, value: object, unchanged: Chain) -> None:
        """A bad Anthropic count (cache counts included) is InvalidAmount."""
        usage = {"input_tokens": 1, "output_tokens": 1, name: value}
        with pytest.raises(InvalidAmount):
            charge_usage(unchanged, lambda: Usage.from_anthropic({"usage": usage}))
        with pytest.raises(InvalidAmount):
            charge_usage(unchanged, lambda: Usage.from_anthropic(SimpleNamespace(**usage)))

    @pytest.mark.parametrize("read", [Usage.from_openai, Usage.from_anthropic])
    def test_no_usage_at_all(self, read: Callable[[object], Usage], unchanged: Chain) -> None:
        """A response that is None is InvalidAmount, not a silent zero."""
        with pytest.raises(InvalidAmount, match="no usage"):
            charge_usage(unchanged, lambda: read(None))


class TestMoney:
    @pytest.mark.parametrize("value", BAD_MONEY, ids=bad_ids(BAD_MONEY))
    def test_usd(self, value: object, unchanged: Chain) -> None:
        """usd() of a value that is not money is InvalidAmount."""
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: usd(value)})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", BAD_MONEY, ids=bad_ids(BAD_MONEY))
    def test_money(self, value: object, unchanged: Chain) -> None:
        """money() of a value that is not money is InvalidAmount, whatever the scale."""
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: money(value, scale=100)})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", TOO_MUCH_MONEY, ids=bad_ids(TOO_MUCH_MONEY))
    def test_total_above_max(self, value: object, unchanged: Chain) -> None:
        """Money whose micro-units pass 2**63 - 1 is InvalidAmount."""
        with pytest.raises(InvalidAmount, match="more than 2"):
            charge(unchanged, lambda: {COST: usd(value)})  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["1e999999999", Decimal("1e999999999")], ids=repr)
    def test_huge_exponent_is_invalid_amount(self, value: object, unchanged: Chain) -> None:
        """Money far beyond 2**63 - 1 micro-units is InvalidAmount too, not OverflowError."""
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: usd(value)})  # type: ignore[arg-type]

    def test_largest_value_is_accepted(self) -> None:
        """Exactly 2**63 - 1 micro-units is still money."""
        assert MAX_AMOUNT == usd("9223372036854.775807")
        assert MAX_AMOUNT == money(MAX_AMOUNT, scale=1)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1.0, 1_000_000),
            ("5", 5_000_000),
            (" 2.5 ", 2_500_000),
            (Decimal("1"), 1_000_000),
            (3, 3_000_000),
            (0, 0),
            (-0.0, 0),
            (Decimal("-0"), 0),
        ],
    )
    def test_accepted_kinds(self, value: object, expected: int) -> None:
        """int, Decimal, str and finite non-negative float (and negative zero) are money."""
        assert expected == usd(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("scale", [0, -1, True, 1.5, "100", None, Decimal(100)])
    def test_bad_scale(self, scale: object, unchanged: Chain) -> None:
        """A scale that is not a positive int is InvalidAmount."""
        with pytest.raises(InvalidAmount, match="scale"):
            charge(unchanged, lambda: {COST: money(1, scale=scale)})  # type: ignore[arg-type]


class TestPricing:
    @pytest.mark.parametrize("value", BAD_MONEY, ids=bad_ids(BAD_MONEY))
    @pytest.mark.parametrize("side", ["input", "output"])
    def test_prices(self, side: str, value: object, unchanged: Chain) -> None:
        """A price that is not money is InvalidAmount."""
        prices: dict[str, object] = {"input": "1", "output": "1", side: value}
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: Pricing(**prices).cost(input_tokens=1)})  # type: ignore[arg-type]

    @pytest.mark.parametrize("scale", [0, -1, True, 1.5, "100", None])
    def test_bad_scale(self, scale: object) -> None:
        """A pricing scale that is not a positive int is InvalidAmount."""
        with pytest.raises(InvalidAmount, match="scale"):
            Pricing("1", "1", scale=scale)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", BAD, ids=bad_ids(BAD))
    @pytest.mark.parametrize("name", ["input_tokens", "output_tokens"])
    def test_token_counts(self, name: str, value: object, unchanged: Chain) -> None:
        """A bad token count given to cost() is InvalidAmount."""
        pricing = Pricing("2.50", "10")
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: pricing.cost(**{name: value})})  # type: ignore[arg-type]

    def test_cost_above_max(self, unchanged: Chain) -> None:
        """A cost beyond 2**63 - 1 micro-units is InvalidAmount."""
        pricing = Pricing("1000000", "0")
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: pricing.cost(input_tokens=MAX_AMOUNT)})

    def test_cost_with_a_huge_price_exponent(self, unchanged: Chain) -> None:
        """A price too large to cost anything in range is refused when the Pricing is built."""
        with pytest.raises(InvalidAmount):
            charge(unchanged, lambda: {COST: Pricing("1e999999", "0").cost(input_tokens=1)})


class TestFlags:
    """Options that are flags take ``True`` or ``False`` only: ``"false"`` is truthy."""

    @pytest.mark.parametrize("value", ["false", 0, 1, None])
    def test_reserve_use_headroom(self, value: object, unchanged: Chain) -> None:
        """Chain.reserve, take, check and refusing_level and Ledger.rules_out refuse a
        non-bool use_headroom."""
        amounts = unchanged.leaf.vector({COST: usd("4.5")})  # only fits inside the headroom
        for call in (
            unchanged.reserve,
            unchanged.take,
            unchanged.check,
            unchanged.refusing_level,
            unchanged.leaf.rules_out,
        ):
            with pytest.raises(TypeError, match="use_headroom"):
                call(amounts, use_headroom=value)  # type: ignore[operator]

    @pytest.mark.parametrize("value", ["no", 0, 1, None])
    def test_charge_strict(self, value: object, unchanged: Chain) -> None:
        """Chain.charge refuses a non-bool strict."""
        with pytest.raises(TypeError, match="strict"):
            unchanged.charge(unchanged.leaf.vector({CALLS: 100}), strict=value)  # type: ignore[arg-type]

    def test_set_limits_report(self, unchanged: Chain) -> None:
        """Ledger.set_limits refuses a non-bool report."""
        ledger = unchanged.leaf
        with pytest.raises(TypeError, match="report"):
            ledger.set_limits(dict(zip(ledger.dims, ledger.limits)), report="no")  # type: ignore[arg-type]


class TestLimitsNames:
    @pytest.mark.parametrize("name", ["", "a b", "é", 5, None])
    def test_invalid_name_is_invalid_limits(self, name: object) -> None:
        """A budget with an invalid dimension name is InvalidLimits, a ValueError."""
        with pytest.raises(InvalidLimits):
            Ledger({TOKENS: 1, name: 1})  # type: ignore[dict-item]
        assert issubclass(InvalidLimits, ValueError)

    def test_set_limits_with_unknown_dimension(self, unchanged: Chain) -> None:
        """New limits naming another dimension are InvalidLimits; nothing changes."""
        limits = dict(unchanged.leaf.snapshot().limits)
        with pytest.raises(InvalidLimits):
            unchanged.leaf.set_limits({**limits, "nope": 1})
