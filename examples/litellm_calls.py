"""LiteLLM calls share a budget through BudgetLogger; LiteLLM's mock_response stands in
for the provider, so nothing leaves the machine."""

# requires: litellm

import asyncio
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline prices
import litellm

from aiobudget import CALLS, COST, Budget, BudgetExhausted, Pricing, usd
from aiobudget.litellm import BudgetLogger

budget = Budget({COST: usd("0.01"), CALLS: 3})
litellm.callbacks = [BudgetLogger(budget, pricing=Pricing("0.15", "0.60"))]


async def ask(i: int) -> str:
    try:
        reply = await litellm.acompletion(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Say hi ({i})"}],
            max_tokens=50,
            mock_response="hi",  # no network: LiteLLM's own mock
        )
    except BudgetExhausted as exc:
        return f"stopped on {exc.dim}"
    return str(reply.choices[0].message.content)


async def main() -> None:
    print([await ask(i) for i in range(5)])
    while any((await budget.snapshot()).reserved.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # LiteLLM reports in the background
    print(dict((await budget.snapshot()).spent))


if __name__ == "__main__":
    asyncio.run(main())
