"""LangChain chat models that draw on a budget: an async callback handler.

    handler = BudgetCallbackHandler(budget, pricing=pricing)
    reply = await chain.ainvoke(inputs, config={"callbacks": [handler]})

Every chat model (or LLM) run reserves its estimate in ``on_chat_model_start`` (or
``on_llm_start``), before the model is called, and settles the usage of the message it
produced in ``on_llm_end``; ``on_llm_error`` settles a failure and an ``astream``
abandoned early (LangChain reports it as ``GeneratorExit``). The handler sets
``raise_error = True``: without it LangChain logs a callback's exception and calls the
model anyway, so a budget would never stop anything. A call that does not fit raises
`BudgetExhausted` out of ``ainvoke``/``astream``/``abatch`` and is never sent. Importing
this module imports ``langchain_core`` (the ``aiobudget[langchain]`` extra); ``import
aiobudget`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

try:
    from langchain_core.callbacks import AsyncCallbackHandler
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aiobudget.langchain needs langchain-core: pip install 'aiobudget[langchain]'"
    ) from exc

from ._agents import BudgetSource, Estimator, Meter, ModelCall, Options, estimate_call, token_usage
from ._units import Usage

if TYPE_CHECKING:
    from uuid import UUID

    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from ._reservation import Reservation

__all__ = ["BudgetCallbackHandler", "Estimator", "ModelCall", "estimate_call", "usage_of"]


def _get(obj: object, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def usage_of(result: LLMResult | None) -> Usage | None:
    """The usage of a model run's result, or ``None`` when it reports none.

    Reads the first generation's ``message.usage_metadata`` (input tokens include cache
    reads and writes), else the ``token_usage`` of ``llm_output`` (OpenAI style).
    """
    if result is None:
        return None
    for generations in result.generations:
        for generation in generations[:1]:
            metadata = _get(getattr(generation, "message", None), "usage_metadata")
            if metadata:
                details_in = _get(metadata, "input_token_details") or {}
                details_out = _get(metadata, "output_token_details") or {}
                return token_usage(
                    _get(metadata, "input_tokens"),
                    _get(metadata, "output_tokens"),
                    cache_read=_get(details_in, "cache_read"),
                    cache_write=_get(details_in, "cache_creation"),
                    reasoning=_get(details_out, "reasoning"),
                )
    tokens = _get(result.llm_output or {}, "token_usage")
    if tokens:
        return Usage(
            input_tokens=_get(tokens, "prompt_tokens") or _get(tokens, "input_tokens") or 0,
            output_tokens=_get(tokens, "completion_tokens") or _get(tokens, "output_tokens") or 0,
        )
    return None


@final
class BudgetCallbackHandler(AsyncCallbackHandler):
    """A LangChain callback handler that meters every model run against a budget.

    ``BudgetCallbackHandler(budget, **options)``: *budget* is a `Budget`, or a callable
    of the run's ``metadata`` (the config's ``metadata`` merged with LangChain's ``ls_*``
    keys; sync or async) returning one. The options are those of every adapter; with
    ``tool_calls="dim"`` each tool run reserves one ``dim`` in ``on_tool_start``.

    The estimate reads the messages, the tools bound to the model and
    ``metadata["ls_max_tokens"]`` (the model's ``max_tokens``). Pass the handler in the
    config of the outermost call (``ainvoke``, ``astream``, ``abatch``): LangChain hands
    it to every nested chain and model. One handler may serve many concurrent runs.
    """

    raise_error = True  # without it LangChain swallows BudgetExhausted and calls the model

    def __init__(self, budget: BudgetSource, /, **options: Any) -> None:
        super().__init__()
        self._meter = Meter(budget, Options(**options))
        self._held: dict[UUID, Reservation] = {}

    def __repr__(self) -> str:
        return f"BudgetCallbackHandler({self._meter!r})"

    async def _start(
        self, run_id: UUID, messages: object, metadata: dict[str, Any] | None, kwargs: Any
    ) -> None:
        metadata = metadata or {}
        params = kwargs.get("invocation_params") or {}
        call = ModelCall(
            messages=messages,
            max_tokens=metadata.get("ls_max_tokens") or params.get("max_tokens"),
            model=metadata.get("ls_model_name") or params.get("model"),
            tools=params.get("tools"),
            context=metadata,
        )
        self._held[run_id] = await self._meter.before(call)

    def _actual(self, result: LLMResult | None) -> Usage | None:
        usage = usage_of(result)
        return None if usage is None else self._meter.actual(usage)

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Reserve the chat model run's estimate (or raise `BudgetExhausted`)."""
        await self._start(run_id, messages, metadata, kwargs)

    async def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Reserve the (completion) LLM run's estimate (or raise `BudgetExhausted`)."""
        await self._start(run_id, prompts, metadata, kwargs)

    async def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Settle the run with the usage its message reports."""
        held = self._held.pop(run_id, None)
        if held is not None:
            await self._meter.after(held, lambda: self._actual(response))

    async def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Settle a failed or abandoned run: the usage known so far, else per
        ``on_unrecorded``."""
        held = self._held.pop(run_id, None)
        if held is not None:
            await self._meter.after(held, lambda: self._actual(kwargs.get("response")))

    async def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Count the tool run (with ``tool_calls=``) before the tool runs."""
        await self._meter.tool(metadata or {})
