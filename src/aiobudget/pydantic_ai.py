"""pydantic-ai agents that draw on a budget: a capability for ``Agent(capabilities=[...])``.

    agent = Agent(model, capabilities=[BudgetCapability(budget, pricing=pricing)])
    result = await agent.run("...", model_settings={"max_tokens": 500})

Every model request of the agent's runs (``run``, ``run_stream``, ``iter``) reserves its
estimate before it is sent and settles the usage the model reported (its cost too, when
pydantic-ai priced it) after it. A request that does not fit raises `BudgetExhausted`
out of the run, and is never sent. Importing this module imports pydantic-ai (the
``aiobudget[pydantic-ai]`` extra); ``import aiobudget`` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

try:
    from pydantic_ai.capabilities import AbstractCapability
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aiobudget.pydantic_ai needs pydantic-ai: pip install 'aiobudget[pydantic-ai]'"
    ) from exc

from ._agents import BudgetSource, Estimator, Meter, ModelCall, Options, estimate_call, token_usage
from ._units import Usage

if TYPE_CHECKING:
    from pydantic_ai import RunContext
    from pydantic_ai.capabilities import (
        ValidatedToolArgs,
        WrapModelRequestHandler,
        WrapToolExecuteHandler,
    )
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models import ModelRequestContext
    from pydantic_ai.tools import ToolDefinition
    from pydantic_ai.usage import RequestUsage

__all__ = ["BudgetCapability", "Estimator", "ModelCall", "estimate_call", "usage_of"]


def usage_of(usage: RequestUsage) -> tuple[Usage, object]:
    """A pydantic-ai ``RequestUsage`` as a `Usage` and the cost pydantic-ai gave it
    (US dollars, or ``None``). Input tokens include cache reads and writes."""
    tokens = token_usage(
        usage.input_tokens,
        usage.output_tokens,
        cache_read=usage.cache_read_tokens,
        cache_write=usage.cache_write_tokens,
        cache_write_1h=getattr(usage, "cache_write_1h_tokens", 0),
        reasoning=usage.output_reasoning_tokens,
    )
    return tokens, usage.cost


@final
class BudgetCapability(AbstractCapability[Any]):
    """A pydantic-ai capability that meters every model request against a budget.

    ``BudgetCapability(budget, **options)``: *budget* is a `Budget`, or a callable of
    the request's ``RunContext`` returning one (sync or async: per tenant from
    ``ctx.deps``, per run); the options are those of every adapter (``pricing``,
    ``estimate``, ``max_output_tokens``, ``calls``, ``tool_calls``, ``timeout``,
    ``on_unrecorded``). With ``tool_calls="dim"`` each tool call reserves one ``dim``
    before the tool runs.

    The estimate reads the request's messages, tool definitions and
    ``model_settings["max_tokens"]``. The settle charges what pydantic-ai counted for
    the request: every response it billed (a rejected attempt, the partial response of
    a stream stopped early) with ``RequestUsage.cost`` when it has one (cache-aware,
    from genai-prices), else the options' ``pricing``.
    """

    def __init__(self, budget: BudgetSource, /, **options: Any) -> None:
        super().__init__()
        self._meter = Meter(budget, Options(**options))

    def __repr__(self) -> str:
        return f"BudgetCapability({self._meter!r})"

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: WrapModelRequestHandler,
    ) -> ModelResponse:
        """Reserve before the request, settle what it billed after it."""
        meter = self._meter
        settings = request_context.model_settings or {}
        parameters = request_context.model_request_parameters
        call = ModelCall(
            messages=request_context.messages,
            max_tokens=settings.get("max_tokens"),
            model=request_context.model.model_name,
            tools=[*parameters.function_tools, *parameters.output_tools],
            context=ctx,
        )
        held = await meter.before(call)
        try:
            response = await handler(request_context)
        except BaseException:
            await meter.after(held, lambda: self._billed(request_context, None))
            raise
        await meter.after(held, lambda: self._billed(request_context, response))
        return response

    def _billed(self, request_context: ModelRequestContext, response: Any) -> Usage | None:
        """What pydantic-ai counted for this request, or ``None`` when nothing is known.

        pydantic-ai keeps the responses it billed for a request on its context (read by
        its own instrumentation); without that record, the returned response's usage.
        """
        responses = getattr(request_context, "_usage_responses", None)
        attempts = getattr(request_context, "_usage_attempts", ())
        if responses is None:
            responses = () if response is None else (response,)
        usages = [r.usage for r in responses]
        usages += [a.usage for a in attempts if getattr(a, "usage", None) is not None]
        if not usages:
            return None
        total = Usage()
        for usage in usages:
            tokens, cost = usage_of(usage)
            total += self._meter.actual(tokens, cost)
        return total

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        """Count the tool call (with ``tool_calls=``) before the tool runs."""
        await self._meter.tool(ctx)
        return await handler(args)
