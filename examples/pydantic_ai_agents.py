"""Ten pydantic-ai agent runs share one budget through BudgetCapability; pydantic-ai's
TestModel stands in for a provider, so nothing leaves the machine."""

# requires: pydantic_ai

import asyncio

from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from aiobudget import CALLS, COST, TOKENS, Budget, BudgetExhausted, Pricing, usd
from aiobudget.pydantic_ai import BudgetCapability

budget = Budget({TOKENS: 50_000, COST: usd("0.05"), CALLS: 30})
capability = BudgetCapability(
    budget,
    pricing=Pricing(input="0.15", output="0.60"),  # $ per million tokens
    tool_calls=CALLS,  # a tool call counts as a call too
)
agent = Agent(TestModel(), capabilities=[capability])


@agent.tool_plain
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def one(i: int) -> str:
    try:
        result = await agent.run(f"weather {i}?", model_settings={"max_tokens": 200})
    except BudgetExhausted as exc:
        return f"stopped on {exc.dim}"
    return result.output


async def main() -> None:
    outcomes = await asyncio.gather(*(one(i) for i in range(12)))
    print(outcomes)
    snapshot = await budget.snapshot()
    assert snapshot.spent[CALLS] <= 30
    assert snapshot.reserved[CALLS] == 0
    print(dict(snapshot.spent))


if __name__ == "__main__":
    asyncio.run(main())
