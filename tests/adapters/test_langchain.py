"""`aiobudget.langchain.BudgetCallbackHandler`, driven through LangChain's own runnables
(``ainvoke``, ``astream``, ``abatch``, nested chains) with fake chat models."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from aiobudget import CALLS, COST, TOKENS, Budget, BudgetExhausted, Pricing, Usage, usd
from aiobudget.langchain import BudgetCallbackHandler

from ._helpers import state

pytestmark = pytest.mark.anyio

PROMPT = ChatPromptTemplate.from_messages([("user", "{question}")])
PRICING = Pricing("1", "2")


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


class Scripted(BaseChatModel):
    """A chat model that answers "one two three" (10 in, 3 out), counting the calls that
    reach it; it can wait at a gate or fail. Streams report input tokens first and one
    output token a chunk, as real providers do."""

    calls: int = 0
    gate: Any = None
    error: Any = None
    max_tokens: int | None = 100

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        message = AIMessage("one two three", usage_metadata=usage(10, 3))  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.calls += 1
        first = AIMessageChunk(content="", usage_metadata=usage(10, 0))  # type: ignore[arg-type]
        yield ChatGenerationChunk(message=first)
        for word in ("one ", "two ", "three"):
            chunk = AIMessageChunk(content=word, usage_metadata=usage(0, 1))  # type: ignore[arg-type]
            yield ChatGenerationChunk(message=chunk)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: Any = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_max_tokens"] = self.max_tokens
        return params


def with_handler(handler: BudgetCallbackHandler) -> RunnableConfig:
    return {"callbacks": [handler]}


class TestInvoke:
    async def test_a_chain_that_fits_charges_what_the_model_reported(self) -> None:
        """``ainvoke`` of prompt | model is charged the message's usage_metadata."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        chain = PROMPT | Scripted()
        reply = await chain.ainvoke({"question": "hi"}, with_handler(BudgetCallbackHandler(budget)))
        assert "one two three" == reply.content
        assert ({TOKENS: 13, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_the_generic_fake_chat_model_is_metered(self) -> None:
        """langchain_core's own GenericFakeChatModel, with max_output_tokens given."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        model = GenericFakeChatModel(
            messages=iter([AIMessage("hello", usage_metadata=usage(7, 1))])  # type: ignore[arg-type]
        )
        handler = BudgetCallbackHandler(budget, max_output_tokens=50)
        await (PROMPT | model).ainvoke({"question": "hi"}, with_handler(handler))
        assert ({TOKENS: 8, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_abatch_never_passes_the_budget(self) -> None:
        """``abatch`` of 20 inputs at once on a budget of 7 calls: exactly 7 calls reach
        the model, 13 inputs fail with BudgetExhausted."""
        budget = Budget({CALLS: 7})
        gate = anyio.Event()
        model = Scripted(gate=gate)
        chain = PROMPT | model
        handler = BudgetCallbackHandler(budget)
        results: list[Any] = []

        async def batch() -> None:
            results.extend(
                await chain.abatch(
                    [{"question": str(i)} for i in range(20)],
                    with_handler(handler),
                    return_exceptions=True,
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            await anyio.wait_all_tasks_blocked()
            assert 7 == model.calls
            gate.set()
        denied = [r for r in results if isinstance(r, BudgetExhausted)]
        assert (7, 13) == (len(results) - len(denied), len(denied))
        assert ({CALLS: 7}, {CALLS: 0}) == await state(budget)

    async def test_a_nested_call_that_does_not_fit_is_never_sent(self) -> None:
        """A chain calling the model twice (the second inside a nested runnable) stops
        before the second call: the model saw one."""
        budget = Budget({TOKENS: 10_000, CALLS: 1})
        model = Scripted()
        follow_up = RunnableLambda(lambda text: {"question": f"and then? {text}"}) | PROMPT | model
        chain = PROMPT | model | StrOutputParser() | follow_up
        with pytest.raises(BudgetExhausted) as caught:
            await chain.ainvoke({"question": "hi"}, with_handler(BudgetCallbackHandler(budget)))
        assert CALLS == caught.value.dim
        assert 1 == model.calls
        assert ({TOKENS: 13, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_model_error_is_refunded(self) -> None:
        """A model that raises leaves the budget as it was."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        chain = PROMPT | Scripted(error=RuntimeError("provider down"))
        with pytest.raises(RuntimeError, match="provider down"):
            await chain.ainvoke({"question": "hi"}, with_handler(BudgetCallbackHandler(budget)))
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_the_pricing_prices_the_reported_usage(self) -> None:
        """LangChain reports no cost: the usage is priced with the options' Pricing."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})
        handler = BudgetCallbackHandler(budget, pricing=PRICING)
        await (PROMPT | Scripted()).ainvoke({"question": "hi"}, with_handler(handler))
        expected = PRICING.cost(Usage(input_tokens=10, output_tokens=3))
        assert ({TOKENS: 13, COST: expected}, {TOKENS: 0, COST: 0}) == await state(budget)

    async def test_a_callable_budget_receives_the_run_metadata(self) -> None:
        """The callable gets the run's metadata: a per-tenant budget from the config."""
        tenants = {"a": Budget({CALLS: 10}), "b": Budget({CALLS: 10})}
        handler = BudgetCallbackHandler(lambda metadata: tenants[metadata["tenant"]])
        chain = PROMPT | Scripted()
        for tenant in ("a", "a", "b"):
            config: RunnableConfig = {"callbacks": [handler], "metadata": {"tenant": tenant}}
            await chain.ainvoke({"question": "hi"}, config)
        assert [2, 1] == [(await state(t))[0][CALLS] for t in tenants.values()]


class TestStream:
    async def test_a_stream_read_to_the_end_is_charged_its_usage(self) -> None:
        """``astream`` read to the end charges the usage its chunks added up to."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        handler = BudgetCallbackHandler(budget)
        words = [
            chunk.content
            async for chunk in (PROMPT | Scripted()).astream(
                {"question": "hi"}, with_handler(handler)
            )
        ]
        assert "one two three" == "".join(str(w) for w in words)
        assert ({TOKENS: 13, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_an_abandoned_stream_is_charged_what_it_reported(self) -> None:
        """An ``astream`` closed after its first word charges the input and that word
        (LangChain reports it with GeneratorExit), and holds nothing."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        handler = BudgetCallbackHandler(budget)
        stream = (PROMPT | Scripted()).astream({"question": "hi"}, with_handler(handler))
        async with aclosing(stream):
            async for chunk in stream:
                if chunk.content:
                    break
        await anyio.wait_all_tasks_blocked()  # LangChain closes the model's stream in a task
        assert ({TOKENS: 11, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)


class TestTools:
    async def test_tool_runs_are_counted_before_the_tool_runs(self) -> None:
        """With tool_calls="tools" a tool run that does not fit never runs. (An async
        tool: LangChain runs a sync tool's callbacks on a private loop and drops their
        errors, so there no handler can stop anything.)"""
        budget = Budget({"tools": 1})
        ran: list[int] = []

        @tool
        async def add(a: int, b: int) -> int:
            """Add two numbers."""
            ran.append(a + b)
            return a + b

        handler = BudgetCallbackHandler(budget, tool_calls="tools")
        assert 3 == await add.ainvoke({"a": 1, "b": 2}, with_handler(handler))
        with pytest.raises(BudgetExhausted):
            await add.ainvoke({"a": 2, "b": 2}, with_handler(handler))
        assert [3] == ran
        assert ({"tools": 1}, {"tools": 0}) == await state(budget)

    def test_the_handler_raises_through_langchain(self) -> None:
        """raise_error is set: without it LangChain would log the denial and call the model."""
        assert BudgetCallbackHandler(Budget({CALLS: 1})).raise_error
