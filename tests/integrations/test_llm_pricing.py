"""`Pricing` against the bill: each case's cost equals the bill computed from the
providers' published prices, rounded up to a micro-dollar; `Pricing.for_model` (from
the ``genai-prices`` package) agrees; the README's first example charges cost; the
default estimate counts what it used to leave out.

Price sources (USD per million tokens), as published:

- Anthropic, https://docs.claude.com/en/docs/about-claude/pricing, Claude Sonnet 4.5:
  input 3, output 15, cache read 0.30, 5-minute cache write 3.75, 1-hour cache write 6;
  above 200K input tokens (long context) the whole request at input 6, output 22.50,
  cache read 0.60, 5-minute write 7.50, 1-hour write 12.
- OpenAI, https://openai.com/api/pricing/: gpt-4o input 2.50, cached input 1.25, output
  10; o4-mini input 1.10, cached input 0.275, output 4.40 (reasoning tokens are output).
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from aiobudget import COST, InvalidAmount, Pricing, Usage
from aiobudget.llm import estimate_usage

pytest.importorskip("genai_prices")

SONNET_45 = Pricing(
    "3",
    "15",
    cache_read="0.30",
    cache_write="3.75",
    cache_write_1h="6",
    long_context=(
        200_000,
        Pricing("6", "22.50", cache_read="0.60", cache_write="7.50", cache_write_1h="12"),
    ),
)
GPT_4O = Pricing("2.50", "10", cache_read="1.25")
O4_MINI = Pricing("1.10", "4.40", cache_read="0.275")
WHEN = datetime(2026, 1, 15, tzinfo=timezone.utc)  # prices as they stood then

# (case, pricing, usage, the bill in micro-dollars worked out by hand)
CASES: list[tuple[str, Pricing, str, Usage, int]] = [
    # 1000 x 3 + 500 x 15 = 3000 + 7500
    ("plain", SONNET_45, "claude-sonnet-4.5", Usage(input_tokens=1_000, output_tokens=500), 10_500),
    # 50 x 3 + 10000 x 0.30 + 300 x 15 = 150 + 3000 + 4500
    (
        "cache read",
        SONNET_45,
        "claude-sonnet-4.5",
        Usage(input_tokens=10_050, output_tokens=300, cache_read_tokens=10_000),
        7_650,
    ),
    # 50 x 3 + 2000 x 3.75 + 300 x 15 = 150 + 7500 + 4500
    (
        "5-minute cache write",
        SONNET_45,
        "claude-sonnet-4.5",
        Usage(input_tokens=2_050, output_tokens=300, cache_write_tokens=2_000),
        12_150,
    ),
    # 50 x 3 + 2000 x 6 + 300 x 15 = 150 + 12000 + 4500
    (
        "1-hour cache write",
        SONNET_45,
        "claude-sonnet-4.5",
        Usage(
            input_tokens=2_050,
            output_tokens=300,
            cache_write_tokens=2_000,
            cache_write_1h_tokens=2_000,
        ),
        16_650,
    ),
    # exactly 200,000 input is not above the threshold: 200000 x 3 + 1000 x 15
    (
        "at the long-context threshold",
        SONNET_45,
        "claude-sonnet-4.5",
        Usage(input_tokens=200_000, output_tokens=1_000),
        615_000,
    ),
    # 250000 x 6 + 1000 x 22.50 = 1500000 + 22500
    (
        "long context",
        SONNET_45,
        "claude-sonnet-4.5",
        Usage(input_tokens=250_000, output_tokens=1_000),
        1_522_500,
    ),
    # 150000 x 6 + 60000 x 0.60 + 10000 x 7.50 + 5000 x 12 + 2000 x 22.50
    # = 900000 + 36000 + 75000 + 60000 + 45000
    (
        "long context with cache",
        SONNET_45,
        "claude-sonnet-4.5",
        Usage(
            input_tokens=225_000,
            output_tokens=2_000,
            cache_read_tokens=60_000,
            cache_write_tokens=15_000,
            cache_write_1h_tokens=5_000,
        ),
        1_116_000,
    ),
    # 400 x 2.50 + 600 x 1.25 + 200 x 10 = 1000 + 750 + 2000
    (
        "OpenAI cached input",
        GPT_4O,
        "gpt-4o",
        Usage(input_tokens=1_000, output_tokens=200, cache_read_tokens=600),
        3_750,
    ),
    # 2 x 2.50 + 1 x 1.25 + 1 x 10 = 16.25, rounded up
    (
        "rounded up",
        GPT_4O,
        "gpt-4o",
        Usage(input_tokens=3, output_tokens=1, cache_read_tokens=1),
        17,
    ),
    # 1000 x 1.10 + 3000 x 4.40 = 1100 + 13200 (2,500 of the 3,000 are reasoning)
    (
        "reasoning tokens",
        O4_MINI,
        "o4-mini",
        Usage(input_tokens=1_000, output_tokens=3_000, reasoning_tokens=2_500),
        14_300,
    ),
]


class TestPricingTable:
    @pytest.mark.parametrize(
        ("case", "pricing", "model", "usage", "bill"), CASES, ids=[c[0] for c in CASES]
    )
    def test_cost_is_the_bill(
        self, case: str, pricing: Pricing, model: str, usage: Usage, bill: int
    ) -> None:
        """The cost equals the bill from the published prices, rounded up."""
        assert bill == pricing.cost(usage)
        assert Usage(cost_micros=bill) + usage == pricing.priced(usage)

    @pytest.mark.parametrize(
        ("case", "pricing", "model", "usage", "bill"), CASES, ids=[c[0] for c in CASES]
    )
    def test_genai_prices_gives_the_same_bill(
        self, case: str, pricing: Pricing, model: str, usage: Usage, bill: int
    ) -> None:
        """Pricing.for_model (genai-prices' table) prices every case the same."""
        assert bill == Pricing.for_model(model, at=WHEN).cost(usage)

    def test_genai_prices_gives_the_published_prices(self) -> None:
        """The prices read from genai-prices are the published ones, tier included."""
        assert SONNET_45 == Pricing.for_model("claude-sonnet-4.5", provider="anthropic", at=WHEN)
        assert GPT_4O == Pricing.for_model("gpt-4o", provider="openai", at=WHEN)

    def test_an_unknown_model_is_a_lookup_error(self) -> None:
        """A model genai-prices does not know raises LookupError."""
        with pytest.raises(LookupError):
            Pricing.for_model("no-such-model-anywhere")


class TestPricingRules:
    def test_cache_writes_without_their_price_are_refused(self) -> None:
        """Cache writes with no cache_write price raise instead of being priced low."""
        usage = Usage(input_tokens=100, cache_write_tokens=50)
        with pytest.raises(InvalidAmount, match="cache_write"):
            Pricing("3", "15").cost(usage)
        one_hour = Usage(input_tokens=100, cache_write_tokens=50, cache_write_1h_tokens=10)
        with pytest.raises(InvalidAmount, match="cache_write_1h"):
            Pricing("3", "15", cache_write="3.75").cost(one_hour)

    def test_cache_reads_default_to_the_input_price(self) -> None:
        """Without a cache_read price, cache reads cost the input price (never less)."""
        usage = Usage(input_tokens=1_000, cache_read_tokens=1_000)
        assert 3_000 == Pricing("3", "15").cost(usage)

    def test_bad_long_context(self) -> None:
        """A long_context that is not (threshold, Pricing) of the same scale is refused."""
        with pytest.raises(TypeError):
            Pricing("3", "15", long_context=(1, "6"))  # type: ignore[arg-type]
        with pytest.raises(InvalidAmount):
            Pricing("3", "15", long_context=(-1, Pricing("6", "22.5")))
        with pytest.raises(InvalidAmount):
            Pricing("3", "15", long_context=(1, Pricing("6", "22.5", scale=100)))

    def test_parts_cannot_exceed_their_totals(self) -> None:
        """A Usage whose cache or reasoning tokens exceed their totals is refused."""
        for bad in (
            {"input_tokens": 5, "cache_read_tokens": 3, "cache_write_tokens": 3},
            {"input_tokens": 5, "cache_write_tokens": 2, "cache_write_1h_tokens": 3},
            {"output_tokens": 5, "reasoning_tokens": 6},
        ):
            with pytest.raises(InvalidAmount):
                Usage(**bad)

    def test_cache_tokens_are_not_counted_twice(self) -> None:
        """tokens is input + output: cache tokens are inside input_tokens."""
        usage = Usage(input_tokens=12_050, output_tokens=300, cache_read_tokens=10_000)
        assert 12_350 == usage.tokens
        assert 12_350 == (usage + Usage()).tokens


class TestReadmeExample:
    def test_the_first_example_charges_cost(
        self, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
    ) -> None:
        """Defect: the README's first example reserved cost but never charged any. Run
        as written against the mock API (1,200 prompt tokens, 200 cached, 300
        completion), it charges 1000 x 2.50 + 200 x 1.25 + 300 x 10 = 5,750 micros."""
        from tests.integrations._llm_api import AutoAPI, patch_clients
        from tests.test_docs import ROOT, _compile, blocks

        first = next(b for b in blocks(ROOT / "README.md") if b.runnable)
        patch_clients(monkeypatch, AutoAPI())
        namespace: dict[str, Any] = {"__name__": "__main__"}
        structlog.reset_defaults()

        async def run() -> dict[str, int]:
            await eval(_compile(first), namespace)  # noqa: S307 - our own README's code
            return dict((await namespace["budget"].snapshot()).spent)

        spent = anyio.run(run)
        assert {"tokens": 1_500, COST: 5_750, "calls": 1} == spent


class TestEstimate:
    def test_n_choices_multiply_the_output(self) -> None:
        """n choices are billed n times the output."""
        kwargs = {"messages": [{"role": "user", "content": "x" * 4}], "max_tokens": 100, "n": 3}
        assert 300 == estimate_usage(kwargs).output_tokens

    def test_tool_schemas_count_as_input(self) -> None:
        """A 4,000-character tool schema counts about 1,000 input tokens, not 0."""
        tool = {"type": "function", "function": {"name": "f", "description": "d" * 4_000}}
        kwargs = {"messages": [], "tools": [tool], "max_tokens": 1}
        assert 1_000 < estimate_usage(kwargs).input_tokens < 1_100

    def test_previous_response_is_logged_once(self) -> None:
        """previous_response_id brings context the estimate cannot see: logged once."""
        from aiobudget import llm

        llm._told.discard("previous_response_id")
        kwargs = {"input": "hi", "previous_response_id": "resp_1", "max_output_tokens": 5}
        with capture_logs() as logs:
            estimate_usage(kwargs)
            estimate_usage(kwargs)
        events = [e for e in logs if e["event"] == "llm.estimate_incomplete"]
        assert ["previous_response_id"] == [e["reason"] for e in events]
