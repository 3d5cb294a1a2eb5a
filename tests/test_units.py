"""Money and usage: `usd`, `money`, `Usage` and `Pricing` (SPEC "Dimensions and amounts").

Money is exact: integers of micro-units, floats converted once through their shortest
repr, and any fraction of a unit rounded up so spend is never undercounted. Expected
values below are worked out by hand (or with Decimal, written out in the test).
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import dataclasses
import math
from decimal import ROUND_FLOOR, Decimal, Inexact, localcontext
from types import MappingProxyType, SimpleNamespace

import pytest

from aiobudget import (
    CALLS,
    COST,
    INPUT_TOKENS,
    MILLIS,
    OUTPUT_TOKENS,
    TOKENS,
    Limit,
    Pricing,
    UnknownDimension,
    Usage,
    money,
    usd,
)
from aiobudget.kernel import MAX_AMOUNT, Ledger

ALL_DIMS = (TOKENS, INPUT_TOKENS, OUTPUT_TOKENS, COST, CALLS, "gpu")


class TestUsd:
    def test_ten_dimes_are_one_dollar(self) -> None:
        """Floats are converted once and never accumulated: ten times 0.1 is exactly 1."""
        assert usd(1) == sum(usd(0.1) for _ in range(10))

    def test_float_through_its_shortest_repr(self) -> None:
        """usd(0.1) is 100_000 micro-dollars, not 100_000.0000000000055..."""
        assert 100_000 == usd(0.1)
        assert int is type(usd(0.1))

    def test_float_sum_keeps_its_repr(self) -> None:
        """0.1 + 0.2 is the float 0.30000000000000004, which rounds up to 300_001."""
        assert 300_001 == usd(0.1 + 0.2)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0.02", 20_000),
            ("5", 5_000_000),
            (5, 5_000_000),
            (Decimal("12.345678"), 12_345_678),
            ("0.000001", 1),
            (0, 0),
        ],
    )
    def test_exact_values(self, value: object, expected: int) -> None:
        """Values with at most six decimals convert exactly."""
        assert expected == usd(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0.0000001", 1),
            (Decimal("1.0000001"), 1_000_001),
            (1e-7, 1),
            ("0.0000010001", 2),
            (1 / 3, 333_334),
            (Decimal("2.9999999999"), 3_000_000),
        ],
    )
    def test_fractions_of_a_micro_round_up(self, value: object, expected: int) -> None:
        """A fraction below one micro-dollar rounds up: spend is never undercounted."""
        assert expected == usd(value)  # type: ignore[arg-type]

    def test_rounds_up_however_many_digits(self) -> None:
        """A tiny excess far down a long Decimal still rounds up."""
        value = Decimal("0.1" + "0" * 150 + "1")
        assert 100_001 == usd(value)

    def test_rounds_up_however_small(self) -> None:
        """A positive amount with a very negative exponent is at least one micro-unit."""
        assert 1 == usd("1e-999999999")


class TestMoney:
    def test_cents(self) -> None:
        """money("12.5", scale=100) is 1250 cents."""
        assert 1250 == money("12.5", scale=100)

    @pytest.mark.parametrize(
        ("value", "scale", "expected"),
        [
            (Decimal("0.001"), 100, 1),
            ("0.015", 100, 2),
            (0.1, 1000, 100),
            (3, 1, 3),
            ("2.5", 1, 3),
            (Decimal("7"), 10**9, 7 * 10**9),
        ],
    )
    def test_scales(self, value: object, scale: int, expected: int) -> None:
        """Units of 1/scale, rounded up."""
        assert expected == money(value, scale=scale)  # type: ignore[arg-type]

    def test_default_scale_is_micros(self) -> None:
        """Without a scale, money() counts micro-units, like usd()."""
        assert (1_000_000, 1_000_000) == (money("1"), usd("1"))


class TestDecimalContext:
    def test_low_precision_context_changes_nothing(self) -> None:
        """A caller's decimal context (prec=3, rounding down) does not round money."""
        with localcontext() as context:  # keywords to localcontext() need Python 3.11
            context.prec = 3
            context.rounding = ROUND_FLOOR
            results = (
                usd("1234.5678"),
                usd(Decimal("1.0000001")),
                money("12.345", scale=100),
                Pricing("2.50", "10").cost(input_tokens=1234, output_tokens=567),
                Pricing("3.333333", "0").cost(input_tokens=7),
            )
        assert (1_234_567_800, 1_000_001, 1235, 8755, 24) == results

    def test_trapping_context_changes_nothing(self) -> None:
        """A caller's context that traps Inexact does not make money raise."""
        with localcontext() as context:
            context.traps[Inexact] = True
            assert 333_334 == usd(1 / 3)
            assert 1 == Pricing("0.15", "0.6").cost(input_tokens=1)


class TestUsage:
    def test_defaults(self) -> None:
        """Every field defaults to 0 and extra to an empty mapping."""
        usage = Usage()
        assert (0, 0, 0, 0, {}) == (
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_micros,
            usage.calls,
            dict(usage.extra),
        )

    def test_tokens(self) -> None:
        """tokens is input + output."""
        assert 12 == Usage(input_tokens=5, output_tokens=7).tokens

    def test_tokens_saturate(self) -> None:
        """tokens saturates at 2**63 - 1."""
        assert MAX_AMOUNT == Usage(input_tokens=MAX_AMOUNT, output_tokens=1).tokens

    def test_add(self) -> None:
        """+ adds every field and merges extra by name."""
        left = Usage(input_tokens=1, output_tokens=2, cost_micros=3, calls=4, extra={"x": 1})
        right = Usage(
            input_tokens=10, output_tokens=20, cost_micros=30, calls=40, extra={"x": 2, "y": 5}
        )
        expected = Usage(
            input_tokens=11, output_tokens=22, cost_micros=33, calls=44, extra={"x": 3, "y": 5}
        )
        assert expected == left + right
        assert Usage(input_tokens=1, output_tokens=2, cost_micros=3, calls=4, extra={"x": 1}) == (
            left
        )

    def test_add_saturates(self) -> None:
        """Sums beyond 2**63 - 1 saturate, in the fields and in extra."""
        big = Usage(
            input_tokens=MAX_AMOUNT,
            output_tokens=MAX_AMOUNT,
            cost_micros=MAX_AMOUNT,
            calls=MAX_AMOUNT,
            extra={"x": MAX_AMOUNT},
        )
        one = Usage(input_tokens=1, output_tokens=1, cost_micros=1, calls=1, extra={"x": 1})
        assert big == big + one

    def test_sum(self) -> None:
        """Usages add up with sum() from an empty Usage."""
        assert Usage(calls=3, extra={"x": 3}) == sum([Usage(calls=1, extra={"x": 1})] * 3, Usage())

    def test_add_other_types(self) -> None:
        """Adding something that is not a Usage is a TypeError."""
        with pytest.raises(TypeError):
            Usage() + 1  # type: ignore[operator]

    def test_is_frozen(self) -> None:
        """A Usage cannot be changed."""
        usage = Usage(calls=1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            usage.calls = 2  # type: ignore[misc]

    def test_extra_is_a_read_only_copy(self) -> None:
        """extra is copied on construction and cannot be changed through the Usage."""
        given = {"x": 1}
        usage = Usage(extra=given)
        given["x"] = 2
        assert {"x": 1} == dict(usage.extra)
        assert isinstance(usage.extra, MappingProxyType)
        with pytest.raises(TypeError):
            usage.extra["x"] = 3  # type: ignore[index]


class TestUsageAmounts:
    usage = Usage(input_tokens=3, output_tokens=4, cost_micros=5, calls=6, extra={"gpu": 7})

    def test_every_dimension(self) -> None:
        """tokens <- input + output; the standard fields and extra by name."""
        expected = {
            TOKENS: 7,
            INPUT_TOKENS: 3,
            OUTPUT_TOKENS: 4,
            COST: 5,
            CALLS: 6,
            "gpu": 7,
        }
        assert expected == self.usage.amounts(ALL_DIMS)

    def test_standard_fields_only_where_the_budget_has_them(self) -> None:
        """A tokens-and-calls budget gets tokens and calls (and extra), nothing else."""
        assert {TOKENS: 7, CALLS: 6, "gpu": 7} == self.usage.amounts((TOKENS, CALLS))

    def test_extra_always(self) -> None:
        """extra names are always passed on, so a budget that lacks one can say so."""
        usage = Usage(calls=1, extra={"gpu": 2})
        assert {CALLS: 1, "gpu": 2} == usage.amounts((CALLS,))
        ledger = Ledger({CALLS: 10})
        with pytest.raises(UnknownDimension):
            ledger.vector(usage.amounts(ledger.dims))

    def test_limits_mapping(self) -> None:
        """amounts() takes a limits mapping as well as a tuple of names."""
        assert {TOKENS: 7, CALLS: 6, "gpu": 7} == self.usage.amounts(
            {TOKENS: Limit(10), CALLS: 5, "gpu": 9}
        )

    def test_zero_fields_are_listed(self) -> None:
        """The budget's standard dimensions are listed even when the usage is 0 there."""
        assert {TOKENS: 0, CALLS: 0} == Usage().amounts((TOKENS, CALLS))

    def test_unmentioned_budget_dimension_is_charged_zero(self) -> None:
        """A budget dimension the usage does not mention is 0 in the ledger's vector."""
        ledger = Ledger({TOKENS: 100, MILLIS: 100, "gpu": 100})
        assert (2, 0, 0) == ledger.vector(Usage(input_tokens=2).amounts(ledger.dims))


class TestFromOpenAI:
    def test_response_object_with_usage(self) -> None:
        """A Chat Completions response object: its .usage is read."""
        usage = SimpleNamespace(prompt_tokens=10, completion_tokens=5, total_tokens=15)
        response = SimpleNamespace(id="x", usage=usage)
        assert Usage(input_tokens=10, output_tokens=5) == Usage.from_openai(response)

    def test_usage_object(self) -> None:
        """The usage object itself."""
        usage = SimpleNamespace(prompt_tokens=10, completion_tokens=5, total_tokens=15)
        assert Usage(input_tokens=10, output_tokens=5) == Usage.from_openai(usage)

    def test_response_dict(self) -> None:
        """A response as a dict, with a usage dict."""
        response = {"id": "x", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        assert Usage(input_tokens=10, output_tokens=5) == Usage.from_openai(response)

    def test_usage_dict(self) -> None:
        """A usage dict."""
        assert Usage(input_tokens=10, output_tokens=5) == Usage.from_openai(
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        )

    def test_responses_api_names(self) -> None:
        """The Responses API's input_tokens / output_tokens, as an object and as a dict."""
        usage = {"input_tokens": 8, "output_tokens": 3, "total_tokens": 11}
        expected = Usage(input_tokens=8, output_tokens=3)
        assert expected == Usage.from_openai(SimpleNamespace(usage=SimpleNamespace(**usage)))
        assert expected == Usage.from_openai({"usage": usage})

    def test_missing_count_is_zero(self) -> None:
        """A count the usage does not report is 0."""
        assert Usage(output_tokens=4) == Usage.from_openai({"completion_tokens": 4})


class TestFromAnthropic:
    def test_cache_tokens_count_as_input(self) -> None:
        """Cache reads and cache writes are input the model processed."""
        usage = {
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
        }
        expected = Usage(
            input_tokens=1300, output_tokens=50, cache_read_tokens=1000, cache_write_tokens=200
        )
        assert expected == Usage.from_anthropic({"usage": usage})
        assert expected == Usage.from_anthropic(SimpleNamespace(usage=SimpleNamespace(**usage)))
        assert expected == Usage.from_anthropic(usage)

    def test_absent_cache_counts(self) -> None:
        """Cache counts that are None (as the SDK reports them) or missing count 0."""
        message = SimpleNamespace(
            usage=SimpleNamespace(
                input_tokens=7,
                output_tokens=3,
                cache_read_input_tokens=None,
                cache_creation_input_tokens=None,
            )
        )
        assert Usage(input_tokens=7, output_tokens=3) == Usage.from_anthropic(message)
        assert Usage(input_tokens=7) == Usage.from_anthropic({"input_tokens": 7})

    def test_input_total_saturates(self) -> None:
        """The input total saturates at 2**63 - 1."""
        usage = {"input_tokens": MAX_AMOUNT, "cache_read_input_tokens": 1}
        assert Usage(input_tokens=MAX_AMOUNT, cache_read_tokens=1) == Usage.from_anthropic(usage)


class TestPricing:
    def test_cost_against_hand_computed_decimal(self) -> None:
        """1234 input at $2.50/M and 567 output at $10/M: ceil(3085 + 5670) micros."""
        expected = math.ceil(Decimal(1234) * Decimal("2.50") + Decimal(567) * Decimal(10))
        assert 8755 == expected
        pricing = Pricing("2.50", "10")
        assert expected == pricing.cost(input_tokens=1234, output_tokens=567)
        assert expected == pricing.cost(Usage(input_tokens=1234, output_tokens=567))

    def test_many_decimals_round_up_once(self) -> None:
        """Prices with many decimals are exact; only the total is rounded up."""
        # 7 * 3.333333 + 3 * 0.0000017 = 23.333331 + 0.0000051 = 23.3333361 micros
        assert 24 == Pricing("3.333333", "0.0000017").cost(input_tokens=7, output_tokens=3)

    def test_below_one_micro_is_one(self) -> None:
        """One token at $0.15/M is 0.15 micro-dollars, charged as 1."""
        assert 1 == Pricing("0.15", "0.60").cost(input_tokens=1)

    def test_exact_cost_is_not_rounded(self) -> None:
        """A cost that is a whole number of micros stays exact."""
        assert 6_000_000 == Pricing("2", "8").cost(input_tokens=1_000_000, output_tokens=500_000)

    def test_no_tokens_no_cost(self) -> None:
        """No tokens cost nothing."""
        assert 0 == Pricing("2.50", "10").cost()

    def test_cents(self) -> None:
        """With scale=100 the cost is in cents, rounded up."""
        cents = Pricing("2.50", "10", scale=100)
        assert 1250 == cents.cost(input_tokens=1_000_000, output_tokens=1_000_000)
        # 8755 micro-dollars are 0.8755 cents
        assert 1 == cents.cost(input_tokens=1234, output_tokens=567)

    def test_prices_are_exact_decimals(self) -> None:
        """Prices are kept as exact Decimals; floats through their shortest repr."""
        pricing = Pricing(0.1, "0.20")
        assert (Decimal("0.1"), Decimal("0.20"), 1_000_000) == (
            pricing.input,
            pricing.output,
            pricing.scale,
        )

    def test_priced(self) -> None:
        """priced() adds the cost to cost_micros and keeps everything else."""
        usage = Usage(input_tokens=1234, output_tokens=567, calls=1, extra={"gpu": 2})
        expected = Usage(
            input_tokens=1234, output_tokens=567, cost_micros=8755, calls=1, extra={"gpu": 2}
        )
        assert expected == Pricing("2.50", "10").priced(usage)

    def test_priced_adds_to_an_existing_cost(self) -> None:
        """priced() adds to a cost already on the usage."""
        usage = Usage(input_tokens=1_000_000, cost_micros=5)
        assert Usage(input_tokens=1_000_000, cost_micros=2_500_005) == Pricing("2.50", "10").priced(
            usage
        )

    def test_rounds_up_however_many_digits(self) -> None:
        """A price a hair above $1/M makes one token cost 2 micros, not 1."""
        assert 2 == Pricing("1." + "0" * 120 + "1", "0").cost(input_tokens=1)
