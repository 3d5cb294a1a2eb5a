"""`aiobudget.openai_agents.BudgetedModelProvider`, driven through the Agents SDK's own
runner (``Runner.run``, ``Runner.run_streamed``) with its ``ScriptedModel``."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

pytest.importorskip("agents")

from agents import Agent, Model, ModelProvider, RunConfig, Runner, function_tool
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage as AgentsUsage

from aiobudget import CALLS, COST, TOKENS, Budget, BudgetExhausted, Pricing, Usage, usd
from aiobudget.openai_agents import BudgetedModel, BudgetedModelProvider

from ._helpers import state

pytestmark = pytest.mark.anyio

USAGE = AgentsUsage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)
PRICING = Pricing("1", "2")


class Provider(ModelProvider):
    """Hands out one scripted model whatever the name."""

    def __init__(self, model: ScriptedModel) -> None:
        self.model = model

    def get_model(self, model_name: str | None) -> Model:
        return self.model


def answer(text: str = "done") -> ModelStep:
    return ModelStep(output=[assistant_message(text)], usage=USAGE)


def calls_tool(call_id: str = "c1") -> ModelStep:
    return ModelStep(output=[function_call("add", {"a": 1, "b": 2}, call_id=call_id)], usage=USAGE)


ran: list[int] = []


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    ran.append(a + b)
    return a + b


AGENT = Agent(name="assistant", instructions="Answer briefly.", tools=[add])


def config(budget: Budget, model: ScriptedModel, **options: Any) -> RunConfig:
    options.setdefault("max_output_tokens", 100)
    provider = BudgetedModelProvider(budget, Provider(model), **options)
    return RunConfig(model_provider=provider, tracing_disabled=True)


class TestRun:
    async def test_a_run_that_fits_charges_what_the_model_reported(self) -> None:
        """A run is charged exactly the usage each response reported, plus the calls."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = ScriptedModel([calls_tool(), answer("3")])
        result = await Runner.run(AGENT, "1+2?", run_config=config(budget, model))
        assert "3" == result.final_output
        assert ({TOKENS: 30, CALLS: 2}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_concurrent_runs_never_pass_the_budget(self) -> None:
        """20 runs at once on a budget of 7 calls: exactly 7 calls reach the model."""
        budget = Budget({CALLS: 7})
        gate = anyio.Event()

        async def respond(call: ModelCall) -> ModelStep:
            await gate.wait()
            return answer()

        model = ScriptedModel([ModelStep.respond(respond) for _ in range(20)])
        run_config = config(budget, model)
        outcomes: list[str] = []

        async def run() -> None:
            try:
                await Runner.run(AGENT, "hi", run_config=run_config)
                outcomes.append("ok")
            except BudgetExhausted:
                outcomes.append("denied")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(run)
            await anyio.wait_all_tasks_blocked()
            assert 7 == len(model.calls)
            gate.set()
        assert (7, 13) == (outcomes.count("ok"), outcomes.count("denied"))
        assert ({CALLS: 7}, {CALLS: 0}) == await state(budget)

    async def test_a_call_that_does_not_fit_is_never_sent(self) -> None:
        """The second call of a run does not fit: the run stops, the model saw one call."""
        budget = Budget({TOKENS: 10_000, CALLS: 1})
        model = ScriptedModel([calls_tool(), answer("3")])
        with pytest.raises(BudgetExhausted) as caught:
            await Runner.run(AGENT, "1+2?", run_config=config(budget, model))
        assert CALLS == caught.value.dim
        assert 1 == len(model.calls)
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_model_error_is_refunded(self) -> None:
        """A model that raises leaves the budget as it was."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = ScriptedModel([ModelStep.raise_error(RuntimeError("provider down"))])
        with pytest.raises(RuntimeError, match="provider down"):
            await Runner.run(AGENT, "hi", run_config=config(budget, model))
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_the_pricing_prices_the_reported_usage(self) -> None:
        """The SDK reports no cost: the usage is priced with the options' Pricing."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})
        model = ScriptedModel([answer()])
        await Runner.run(AGENT, "hi", run_config=config(budget, model, pricing=PRICING))
        expected = PRICING.cost(Usage(input_tokens=10, output_tokens=5))
        assert ({TOKENS: 15, COST: expected}, {TOKENS: 0, COST: 0}) == await state(budget)

    async def test_tool_calls_are_counted_before_the_tools_run(self) -> None:
        """With tool_calls="tools", a function call that does not fit stops the run
        before the SDK runs the tool."""
        ran.clear()
        budget = Budget({CALLS: 10, "tools": 1})
        model = ScriptedModel([calls_tool("c1"), answer("3"), calls_tool("c2")])
        run_config = config(budget, model, tool_calls="tools")
        await Runner.run(AGENT, "1+2?", run_config=run_config)
        with pytest.raises(BudgetExhausted):
            await Runner.run(AGENT, "1+2?", run_config=run_config)
        assert [3] == ran
        assert ({CALLS: 3, "tools": 1}, {CALLS: 0, "tools": 0}) == await state(budget)

    async def test_a_callable_budget_receives_the_model_name(self) -> None:
        """The budget callable is called before each call with the model's name."""
        budget = Budget({CALLS: 10})
        names: list[str | None] = []

        def pick(name: str | None) -> Budget:
            names.append(name)
            return budget

        agent = Agent(name="a", model="scripted-1")
        provider = BudgetedModelProvider(pick, Provider(ScriptedModel([answer()])))
        await Runner.run(
            agent, "hi", run_config=RunConfig(model_provider=provider, tracing_disabled=True)
        )
        assert ["scripted-1"] == names

    async def test_a_model_instance_is_metered_through_wrap(self) -> None:
        """An agent whose model is an instance bypasses providers; `wrap` meters it."""
        budget = Budget({CALLS: 10})
        provider = BudgetedModelProvider(budget)
        wrapped = provider.wrap(ScriptedModel([answer()]))
        assert isinstance(wrapped, BudgetedModel)
        agent = Agent(name="a", model=wrapped)
        await Runner.run(agent, "hi", run_config=RunConfig(tracing_disabled=True))
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)


class TestStream:
    async def test_a_streamed_run_is_charged_its_completed_usage(self) -> None:
        """``run_streamed`` read to the end charges the ``response.completed`` usage."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = ScriptedModel([answer("hello there")])
        result = Runner.run_streamed(AGENT, "hi", run_config=config(budget, model))
        async for _ in result.stream_events():
            pass
        assert "hello there" == result.final_output
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    @pytest.mark.parametrize(("on_unrecorded", "charged"), [("refund", False), ("charge", True)])
    async def test_an_abandoned_stream_is_settled(self, on_unrecorded: str, charged: bool) -> None:
        """A stream cancelled before ``response.completed`` (which alone carries usage)
        releases its reservation, or charges it with on_unrecorded="charge"."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        forever = anyio.Event()

        async def events(call: ModelCall) -> AsyncIterator[Any]:
            async for event in ScriptedModel([answer("never finished")]).stream_response(
                None,
                "hi",
                call.model_settings,
                [],
                None,
                [],
                call.tracing,
                previous_response_id=None,
                conversation_id=None,
                prompt=None,
            ):
                if event.type == "response.completed":
                    await forever.wait()  # the stream stalls before its usage
                yield event

        model = ScriptedModel([ModelStep.stream(events)])
        run_config = config(budget, model, on_unrecorded=on_unrecorded)
        result = Runner.run_streamed(AGENT, "hi", run_config=run_config)
        async for event in result.stream_events():
            if getattr(event, "type", None) == "raw_response_event":
                result.cancel()
                break
        await anyio.wait_all_tasks_blocked()
        spent, reserved = await state(budget)
        assert {TOKENS: 0, CALLS: 0} == reserved
        assert charged == (spent[CALLS] == 1)
        assert 1 == len(model.calls)
