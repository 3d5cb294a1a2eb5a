"""The shared part of the adapters (`aiobudget._agents`): estimates, options, budgets."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math

import pytest

from aiobudget import CALLS, COST, TOKENS, Budget, InvalidAmount, InvalidLimits, Pricing, Usage
from aiobudget._agents import Meter, ModelCall, Options, estimate_call

pytestmark = pytest.mark.anyio


class TestEstimate:
    def test_text_anywhere_in_the_messages_counts(self) -> None:
        """Strings in dicts, lists and objects count at 4 characters a token, rounded
        up, plus 4 tokens a message; max_tokens is the output."""
        messages = [{"role": "user", "content": "x" * 37}, {"role": "assistant", "content": ""}]
        chars = len("role") * 2 + len("content") * 2 + len("user") + len("assistant") + 37
        expected = Usage(input_tokens=math.ceil(chars / 4) + 8, output_tokens=50)
        assert expected == estimate_call(ModelCall(messages=messages, max_tokens=50))

    def test_tools_count_and_bytes_do_not(self) -> None:
        """Tool definitions are text the model reads; bytes (images) are not counted."""
        call = ModelCall(messages=[b"\x00" * 400], tools=[{"name": "x" * 6}])
        assert Usage(input_tokens=math.ceil(10 / 4) + 4) == estimate_call(call)

    def test_cycles_end(self) -> None:
        """A message that refers to itself is counted once."""
        loop: dict[str, object] = {"content": "abcd"}
        loop["self"] = loop
        assert Usage(input_tokens=1 + 3 + 4) == estimate_call(ModelCall(messages=loop))


class TestOptions:
    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"estimate": 3}, TypeError),
            ({"pricing": "1"}, TypeError),
            ({"max_output_tokens": -1}, InvalidAmount),
            ({"calls": True}, InvalidAmount),
            ({"tool_calls": "bad name"}, InvalidLimits),
            ({"timeout": -1}, ValueError),
            ({"ttl": 0}, ValueError),
            ({"ttl": math.inf}, ValueError),
            ({"on_unrecorded": "keep"}, ValueError),
            ({"colour": "red"}, TypeError),
        ],
    )
    def test_bad_options_are_refused(self, options: dict[str, object], error: type) -> None:
        """Each bad option raises a clear typed error when the adapter is built."""
        with pytest.raises(error):
            Options(**options)  # type: ignore[arg-type]

    def test_infinite_timeout_is_allowed(self) -> None:
        """``timeout=math.inf`` waits as long as it takes, as in Budget.reserve."""
        assert math.inf == Options(timeout=math.inf).timeout


class TestMeter:
    async def test_a_callable_budget_may_be_async(self) -> None:
        """An async callable's budget is awaited; anything but a Budget is a TypeError."""
        budget = Budget({CALLS: 1})

        async def pick(context: object) -> Budget:
            return budget

        assert budget is await Meter(pick, Options()).budget(None)
        with pytest.raises(TypeError, match="not a Budget"):
            await Meter(lambda context: 42, Options()).budget(None)

    def test_the_estimate_is_priced_and_counts_the_call(self) -> None:
        """The estimate gets the Pricing's cost and one call."""
        budget = Budget({TOKENS: 10_000, COST: 10_000, CALLS: 5})
        meter = Meter(budget, Options(pricing=Pricing("1", "1"), max_output_tokens=96))
        usage = meter.estimate(budget, ModelCall(messages="abcd"))
        assert Usage(input_tokens=5, output_tokens=96, cost_micros=101, calls=1) == usage

    def test_a_user_estimate_must_return_a_usage(self) -> None:
        """An estimate= that returns something else is a TypeError."""
        budget = Budget({CALLS: 5})
        meter = Meter(budget, Options(estimate=lambda call: 3))  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="Usage"):
            meter.estimate(budget, ModelCall(messages=""))

    def test_a_reported_cost_replaces_the_pricing(self) -> None:
        """The framework's cost (USD, Decimal, float or str) is charged, rounded up."""
        meter = Meter(Budget({CALLS: 5}), Options(pricing=Pricing("1000", "1000")))
        tokens = Usage(input_tokens=10, output_tokens=5)
        assert Usage(10, 5, cost_micros=2, calls=1) == meter.actual(tokens, 0.0000011)
        with pytest.raises(TypeError):
            meter.actual(tokens, object())
