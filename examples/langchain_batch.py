"""A LangChain batch of six shares a budget of four calls through
BudgetCallbackHandler; langchain_core's GenericFakeChatModel stands in for a provider."""

# requires: langchain_core

import asyncio

from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate

from aiobudget import CALLS, TOKENS, Budget, BudgetExhausted
from aiobudget.langchain import BudgetCallbackHandler

usage = {"input_tokens": 30, "output_tokens": 5, "total_tokens": 35}
model = GenericFakeChatModel(messages=iter([AIMessage("Paris", usage_metadata=usage)] * 10))
chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | model

budget = Budget({TOKENS: 10_000, CALLS: 4})
handler = BudgetCallbackHandler(budget, max_output_tokens=100)


async def main() -> None:
    replies = await chain.abatch(
        [{"question": f"Capital of France? ({i})"} for i in range(6)],
        config={"callbacks": [handler]},
        return_exceptions=True,
    )
    print([f"stopped on {r.dim}" if isinstance(r, BudgetExhausted) else r.content for r in replies])
    snapshot = await budget.snapshot()
    assert dict(snapshot.spent) == {TOKENS: 4 * 35, CALLS: 4}
    print(dict(snapshot.spent))


if __name__ == "__main__":
    asyncio.run(main())
