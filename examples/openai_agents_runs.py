"""Ten OpenAI Agents SDK runs share one budget through BudgetedModelProvider; the
SDK's ScriptedModel stands in for OpenAI, so nothing leaves the machine."""

# requires: agents

import asyncio

from agents import Agent, ModelProvider, RunConfig, Runner
from agents.testing import ModelStep, ScriptedModel, assistant_message
from agents.usage import Usage as AgentsUsage

from aiobudget import CALLS, TOKENS, Budget, BudgetExhausted
from aiobudget.openai_agents import BudgetedModelProvider

REPLY = ModelStep(
    output=[assistant_message("Paris")],
    usage=AgentsUsage(input_tokens=40, output_tokens=2, total_tokens=42),
)


class Scripted(ModelProvider):
    """Stands in for OpenAI: one scripted model whatever the name."""

    def __init__(self) -> None:
        self.model = ScriptedModel([REPLY] * 10)

    def get_model(self, model_name: str | None) -> ScriptedModel:
        return self.model


budget = Budget({TOKENS: 10_000, CALLS: 6})
provider = BudgetedModelProvider(budget, Scripted(), max_output_tokens=200)
config = RunConfig(model_provider=provider, tracing_disabled=True)
agent = Agent(name="geo", instructions="Answer in one word.")


async def one(i: int) -> str:
    try:
        result = await Runner.run(agent, "Capital of France?", run_config=config)
    except BudgetExhausted as exc:
        return f"stopped on {exc.dim}"
    return str(result.final_output)


async def main() -> None:
    print(await asyncio.gather(*(one(i) for i in range(10))))
    snapshot = await budget.snapshot()
    assert dict(snapshot.spent) == {TOKENS: 6 * 42, CALLS: 6}
    print(dict(snapshot.spent))


if __name__ == "__main__":
    asyncio.run(main())
