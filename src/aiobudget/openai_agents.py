"""OpenAI Agents SDK runs that draw on a budget: a model provider for ``RunConfig``.

    provider = BudgetedModelProvider(budget, pricing=pricing)
    result = await Runner.run(agent, "...", run_config=RunConfig(model_provider=provider))

Every model the provider hands out reserves each call's estimate before it is sent and
settles the usage of the response (or of the stream's ``response.completed`` event)
after it, for ``Runner.run`` and ``Runner.run_streamed`` alike. A call that does not fit
raises `BudgetExhausted` out of the run and is never sent. The SDK's ``RunHooks`` have
no error hook, so the provider wraps the ``Model`` instead: a failed call is settled
too. Importing this module imports the Agents SDK (the ``aiobudget[openai-agents]``
extra); ``import aiobudget`` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

try:
    from agents import Model, ModelProvider, ModelResponse
    from agents.models.multi_provider import MultiProvider
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "aiobudget.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'aiobudget[openai-agents]'"
    ) from exc

from ._agents import BudgetSource, Estimator, Meter, ModelCall, Options, estimate_call, token_usage
from ._errors import InvalidAmount
from ._units import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from agents import Handoff, ModelSettings, ModelTracing, Tool
    from agents.agent_output import AgentOutputSchemaBase
    from agents.items import TResponseInputItem, TResponseStreamEvent
    from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest

__all__ = [
    "BudgetedModel",
    "BudgetedModelProvider",
    "Estimator",
    "ModelCall",
    "estimate_call",
    "usage_of",
]


def _get(obj: object, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def usage_of(usage: object) -> Usage | None:
    """The Agents SDK's (or the Responses API's) usage as a `Usage` (cached input and reasoning
    tokens included, as `Usage.from_openai` reads them), or ``None`` when it counts nothing."""
    if usage is None or not (_get(usage, "input_tokens") or _get(usage, "output_tokens")):
        return None
    try:
        return Usage.from_openai(usage)
    except InvalidAmount:  # a shape the reader refuses: the totals alone
        return token_usage(_get(usage, "input_tokens"), _get(usage, "output_tokens"))


@final
class BudgetedModelProvider(ModelProvider):
    """A ``ModelProvider`` whose models meter every call against a budget.

    ``BudgetedModelProvider(budget, provider=None, **options)``: *provider* resolves
    model names (the SDK's default ``MultiProvider`` when ``None``) and its models are
    wrapped in a `BudgetedModel`. *budget* is a `Budget`, or a callable of the model name
    returning one (sync or async, called before each call, in the run's task: read a
    context variable there for a per-tenant budget, or build one provider per run). The
    options are those of every adapter; with ``tool_calls="dim"`` the function calls a
    response asks for each reserve one ``dim`` before the SDK runs them.

    Agents whose ``model`` is a ``Model`` instance, not a name, bypass every provider:
    wrap such a model with `wrap`.
    """

    def __init__(
        self, budget: BudgetSource, provider: ModelProvider | None = None, **options: Any
    ) -> None:
        if provider is not None and not isinstance(provider, ModelProvider):
            raise TypeError(f"provider must be a ModelProvider, not {provider!r}")
        self._meter = Meter(budget, Options(**options))
        self._provider = provider if provider is not None else MultiProvider()

    def __repr__(self) -> str:
        return f"BudgetedModelProvider({self._meter!r}, provider={self._provider!r})"

    def get_model(self, model_name: str | None) -> Model:
        """The provider's model for *model_name*, metered."""
        return BudgetedModel(self._provider.get_model(model_name), self._meter, model_name)

    def wrap(self, model: Model, name: str | None = None) -> BudgetedModel:
        """*model* metered like the models this provider hands out."""
        return BudgetedModel(model, self._meter, name)

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self._provider.aclose()


@final
class BudgetedModel(Model):
    """A ``Model`` that reserves before each call and settles after it (see
    `BudgetedModelProvider`)."""

    def __init__(self, model: Model, meter: Meter, name: str | None = None) -> None:
        self.model = model
        self._meter = meter
        self._name = name

    def __repr__(self) -> str:
        return f"BudgetedModel({self.model!r})"

    def _call(
        self,
        *,
        system: str | None,
        input: object,
        settings: ModelSettings,
        tools: object,
        schema: AgentOutputSchemaBase | None,
        handoffs: object,
    ) -> ModelCall:
        return ModelCall(
            messages=[system, input] if system else input,
            max_tokens=settings.max_tokens,
            model=self._name,
            tools=[tools, schema.json_schema() if schema is not None else None, handoffs],
            context=self._name,
        )

    async def _count_tools(self, output: Iterable[object], handoffs: Iterable[object]) -> None:
        """Reserve a tool call for each function call in *output* (handoffs aside)."""
        handoff_names = {getattr(h, "tool_name", None) for h in handoffs}
        for item in output:
            if _get(item, "type") == "function_call" and _get(item, "name") not in handoff_names:
                await self._meter.tool(self._name)

    async def get_response(  # noqa: PLR0917 - the SDK's Model interface
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> ModelResponse:
        """Reserve, call the wrapped model, settle its response's usage."""
        meter = self._meter
        call = self._call(
            system=system_instructions,
            input=input,
            settings=model_settings,
            tools=tools,
            schema=output_schema,
            handoffs=handoffs,
        )
        held = await meter.before(call)
        known = None
        try:
            response = await self.model.get_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                **kwargs,
            )
            usage = usage_of(response.usage)
            known = None if usage is None else meter.actual(usage)
            await self._count_tools(response.output, handoffs)
        except BaseException:
            await meter.after(held, known)
            raise
        await meter.after(held, known)
        return response

    async def stream_response(  # noqa: PLR0917 - the SDK's Model interface
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Reserve, stream the wrapped model's events, settle the ``response.completed``
        usage (an abandoned stream: per ``on_unrecorded``)."""
        meter = self._meter
        call = self._call(
            system=system_instructions,
            input=input,
            settings=model_settings,
            tools=tools,
            schema=output_schema,
            handoffs=handoffs,
        )
        held = await meter.before(call)
        known = None
        try:
            async for event in self.model.stream_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                **kwargs,
            ):
                if event.type == "response.completed":
                    usage = usage_of(event.response.usage)
                    known = None if usage is None else meter.actual(usage)
                    await self._count_tools(event.response.output, handoffs)
                yield event
        except BaseException:
            await meter.after(held, known)
            raise
        await meter.after(held, known)

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        """The wrapped model's advice."""
        return self.model.get_retry_advice(request)

    async def close(self) -> None:
        """Close the wrapped model."""
        await self.model.close()
