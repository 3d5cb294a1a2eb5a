"""`aiobudget.pydantic_ai.BudgetCapability`, driven through pydantic-ai's own runner
(``agent.run``, ``run_stream``, ``iter``) with its ``FunctionModel``."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from aiobudget import (
    CALLS,
    COST,
    TOKENS,
    Budget,
    BudgetExhausted,
    InvalidAmount,
    Pricing,
    Usage,
    usd,
)
from aiobudget.pydantic_ai import BudgetCapability

from ._helpers import state

pytestmark = pytest.mark.anyio

SETTINGS = {"max_tokens": 100}
PRICING = Pricing("1", "2")  # $1 / $2 per million tokens


class Model:
    """A scripted model: answers "done" (10 in, 5 out), notes each call that reached it,
    and can wait at a gate, fail, ask for a tool first, or report a cost."""

    def __init__(
        self,
        *,
        gate: anyio.Event | None = None,
        error: Exception | None = None,
        tool_first: bool = False,
        cost: Decimal | None = None,
    ) -> None:
        self.calls = 0
        self.gate = gate
        self.error = error
        self.tool_first = tool_first
        self.cost = cost
        self.function = FunctionModel(self.respond, stream_function=self.stream)

    async def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        usage = RequestUsage(input_tokens=10, output_tokens=5, cost=self.cost)
        if self.tool_first and len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("add", {"a": 1, "b": 2})], usage=usage)
        return ModelResponse(parts=[TextPart("done")], usage=usage)

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.calls += 1
        for word in ("one ", "two ", "three "):
            yield word
            await anyio.lowlevel.checkpoint()


def agent(model: Model, capability: BudgetCapability, **kw: Any) -> Agent[Any, str]:
    made: Agent[Any, str] = Agent(model.function, capabilities=[capability], **kw)

    @made.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    return made


class TestRun:
    async def test_a_run_that_fits_charges_what_the_model_reported(self) -> None:
        """A run is charged exactly the usage the model reported, plus the call."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = Model()
        result = await agent(model, BudgetCapability(budget)).run("hi", model_settings=SETTINGS)
        assert "done" == result.output
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_the_estimate_is_held_while_the_model_runs(self) -> None:
        """During the call the budget holds the estimate: the prompt plus max_tokens."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        gate = anyio.Event()
        model = Model(gate=gate)
        held: dict[str, int] = {}
        runner = agent(model, BudgetCapability(budget))

        async def run() -> None:
            await runner.run("hi", model_settings=SETTINGS)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            held = (await state(budget))[1]
            gate.set()
        assert 1 == held[CALLS]
        assert held[TOKENS] > 100  # max_tokens and the prompt

    async def test_concurrent_runs_never_pass_the_budget(self) -> None:
        """20 runs at once on a budget of 7 calls: exactly 7 calls reach the model, the
        other 13 runs stop with BudgetExhausted."""
        budget = Budget({CALLS: 7})
        gate = anyio.Event()
        model = Model(gate=gate)
        runner = agent(model, BudgetCapability(budget))
        outcomes: list[str] = []

        async def run() -> None:
            try:
                await runner.run("hi")
                outcomes.append("ok")
            except BudgetExhausted:
                outcomes.append("denied")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            assert 7 == model.calls
            gate.set()
        assert (7, 13) == (outcomes.count("ok"), outcomes.count("denied"))
        assert ({CALLS: 7}, {CALLS: 0}) == await state(budget)

    async def test_a_call_that_does_not_fit_is_never_sent(self) -> None:
        """A run whose second model request does not fit stops before it: the model saw
        one call, the budget the first call's usage."""
        budget = Budget({TOKENS: 10_000, CALLS: 1})
        model = Model(tool_first=True)
        with pytest.raises(BudgetExhausted) as caught:
            await agent(model, BudgetCapability(budget)).run("hi", model_settings=SETTINGS)
        assert CALLS == caught.value.dim
        assert 1 == model.calls
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_model_error_is_refunded(self) -> None:
        """A model that raises leaves the budget as it was."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = Model(error=RuntimeError("provider down"))
        with pytest.raises(RuntimeError, match="provider down"):
            await agent(model, BudgetCapability(budget)).run("hi", model_settings=SETTINGS)
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_model_error_is_charged_with_on_unrecorded_charge(self) -> None:
        """With on_unrecorded="charge" a failed call is charged its whole estimate."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = Model(error=RuntimeError("provider down"))
        capability = BudgetCapability(budget, on_unrecorded="charge")
        with pytest.raises(RuntimeError):
            await agent(model, capability).run("hi", model_settings=SETTINGS)
        spent, reserved = await state(budget)
        assert 1 == spent[CALLS]
        assert spent[TOKENS] > 100
        assert {TOKENS: 0, CALLS: 0} == reserved

    async def test_iter_is_metered(self) -> None:
        """``agent.iter`` goes through the same hook."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        async with agent(Model(), BudgetCapability(budget)).iter(
            "hi", model_settings=SETTINGS
        ) as run:
            async for _ in run:
                pass
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)


class TestStream:
    async def test_a_stream_read_to_the_end_is_charged_its_usage(self) -> None:
        """``run_stream`` read to the end charges what pydantic-ai counted."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        async with agent(Model(), BudgetCapability(budget)).run_stream(
            "hi", model_settings=SETTINGS
        ) as stream:
            assert "one two three " == await stream.get_output()
        usage = stream.usage
        expected = {TOKENS: usage.input_tokens + usage.output_tokens, CALLS: 1}
        assert (expected, {TOKENS: 0, CALLS: 0}) == await state(budget)

    @pytest.mark.parametrize("how", ["break", "raise"])
    async def test_an_abandoned_stream_is_settled_with_its_partial_usage(self, how: str) -> None:
        """A stream left after its first chunk charges what was billed so far, no more."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        runner = agent(Model(), BudgetCapability(budget))
        with pytest.raises(KeyError) if how == "raise" else contextlib.nullcontext():
            async with runner.run_stream("hi", model_settings=SETTINGS) as stream:
                async for _ in stream.stream_text(delta=True, debounce_by=None):
                    if how == "raise":
                        raise KeyError("the consumer failed")
                    break
        usage = stream.usage
        assert 0 < usage.output_tokens < 3  # the stream was cut short
        expected = {TOKENS: usage.input_tokens + usage.output_tokens, CALLS: 1}
        assert (expected, {TOKENS: 0, CALLS: 0}) == await state(budget)


class TestCost:
    async def test_the_cost_pydantic_ai_reports_is_charged_exactly(self) -> None:
        """RequestUsage.cost (here $0.001234) is charged as is, not the Pricing figure."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})
        model = Model(cost=Decimal("0.001234"))
        capability = BudgetCapability(budget, pricing=PRICING)
        await agent(model, capability).run("hi", model_settings=SETTINGS)
        assert ({TOKENS: 15, COST: 1_234}, {TOKENS: 0, COST: 0}) == await state(budget)

    async def test_without_a_reported_cost_the_pricing_prices_the_usage(self) -> None:
        """No cost from pydantic-ai: the usage is priced with the options' Pricing."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})
        await agent(Model(), BudgetCapability(budget, pricing=PRICING)).run(
            "hi", model_settings=SETTINGS
        )
        expected = PRICING.cost(Usage(input_tokens=10, output_tokens=5))
        assert ({TOKENS: 15, COST: expected}, {TOKENS: 0, COST: 0}) == await state(budget)

    @pytest.mark.parametrize(
        ("pricing", "expected"),
        [
            # 40 uncached at $1, 60 cache reads at $0.10, 10 output at $2 per million
            (Pricing("1", "2", cache_read="0.1"), 40 + 6 + 20),
            # no cache price: the cache reads count as input
            (Pricing("1", "2"), 100 + 20),
        ],
    )
    async def test_cache_reads_are_priced_as_reported(
        self, pricing: Pricing, expected: int
    ) -> None:
        """pydantic-ai's cache split reaches the Pricing: cache reads at their price."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            usage = RequestUsage(input_tokens=100, cache_read_tokens=60, output_tokens=10)
            return ModelResponse(parts=[TextPart("done")], usage=usage)

        made: Agent[Any, str] = Agent(
            FunctionModel(respond), capabilities=[BudgetCapability(budget, pricing=pricing)]
        )
        await made.run("hi", model_settings=SETTINGS)
        assert ({TOKENS: 110, COST: expected}, {TOKENS: 0, COST: 0}) == await state(budget)

    async def test_a_usage_the_pricing_cannot_price_still_closes_the_reservation(self) -> None:
        """Cache writes without a cache-write price raise, and nothing stays reserved."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            usage = RequestUsage(input_tokens=100, cache_write_tokens=60, output_tokens=10)
            return ModelResponse(parts=[TextPart("done")], usage=usage)

        made: Agent[Any, str] = Agent(
            FunctionModel(respond), capabilities=[BudgetCapability(budget, pricing=PRICING)]
        )
        with pytest.raises(InvalidAmount, match="cache_write"):
            await made.run("hi", model_settings=SETTINGS)
        assert {TOKENS: 0, COST: 0} == (await state(budget))[1]

    async def test_a_cost_budget_without_a_price_is_refused_before_the_call(self) -> None:
        """A budget counting cost needs a price for the estimate: ValueError, nothing sent."""
        budget = Budget({COST: usd("1")})
        model = Model()
        with pytest.raises(ValueError, match="pricing="):
            await agent(model, BudgetCapability(budget)).run("hi", model_settings=SETTINGS)
        assert 0 == model.calls

    async def test_an_unbounded_output_is_refused_before_the_call(self) -> None:
        """A token budget and no max_tokens anywhere: ValueError, nothing sent."""
        budget = Budget({TOKENS: 10_000})
        model = Model()
        with pytest.raises(ValueError, match="max_tokens"):
            await agent(model, BudgetCapability(budget)).run("hi")
        assert 0 == model.calls


class TestToolsAndBudgets:
    async def test_tool_calls_are_counted_before_the_tool_runs(self) -> None:
        """With tool_calls="tools" each tool call reserves one; one that does not fit
        stops the run before the tool runs."""
        budget = Budget({CALLS: 10, "tools": 1})
        ran: list[int] = []
        model = Model(tool_first=True)
        made: Agent[Any, str] = Agent(
            model.function, capabilities=[BudgetCapability(budget, tool_calls="tools")]
        )

        @made.tool_plain
        def add(a: int, b: int) -> int:
            ran.append(a + b)
            return a + b

        await made.run("hi")
        with pytest.raises(BudgetExhausted):
            await made.run("hi")
        assert [3] == ran
        assert ({CALLS: 3, "tools": 1}, {CALLS: 0, "tools": 0}) == await state(budget)

    async def test_a_callable_budget_is_resolved_per_call_from_the_run_context(self) -> None:
        """The callable receives the RunContext: a per-tenant budget from ``deps``, with a
        run-level child under it."""
        tenants = {"a": Budget({CALLS: 10}), "b": Budget({CALLS: 10})}
        runs = {name: tenant.child({CALLS: 5}) for name, tenant in tenants.items()}

        async def for_tenant(ctx: RunContext[str]) -> Budget:
            return runs[ctx.deps]

        made: Agent[str, str] = Agent(
            Model().function, deps_type=str, capabilities=[BudgetCapability(for_tenant)]
        )
        await made.run("hi", deps="a")
        await made.run("hi", deps="a")
        await made.run("hi", deps="b")
        assert [2, 1] == [(await state(t))[0][CALLS] for t in tenants.values()]
        assert [2, 1] == [(await state(r))[0][CALLS] for r in runs.values()]

    def test_bad_arguments_are_refused_when_built(self) -> None:
        """A non-budget or an unknown option is a TypeError at construction."""
        with pytest.raises(TypeError, match="budget must be"):
            BudgetCapability(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            BudgetCapability(Budget({CALLS: 1}), max_tokenz=5)
