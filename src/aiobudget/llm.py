"""LLM calls that draw on a budget: reserve an estimate, call, record the reported usage.

    chat = BudgetedLLM(client.chat.completions.create, pricing=Pricing.for_model("gpt-4o"))
    reply = await chat(budget, model="gpt-4o", messages=messages, max_tokens=500)

    stream = await chat(budget, model="gpt-4o", messages=messages, max_tokens=500,
                        stream=True)
    async with stream:
        async for chunk in stream:
            ...

    helper = BudgetedLLM(client.messages.stream, pricing=Pricing.for_model("claude-sonnet-4-5"))
    async with await helper(budget, model="claude-sonnet-4-5", messages=messages,
                            max_tokens=500) as stream:
        async for text in stream.text_stream:
            ...

Before the call, `BudgetedLLM` reserves an estimate of what it can use (`estimate_usage`
by default, or your ``estimate=``), one call, and their cost when a `Pricing` is given.
After it, it records the usage the response reports (`read_usage` by default: OpenAI
Chat Completions and Responses, Anthropic Messages, their stream events, cache and
reasoning tokens included) priced by the `Pricing`, and settles: the unused part of the
estimate is refunded. A cost the provider already reports (``usage.cost``) is charged
as reported instead of being priced again. It wraps any callable returning (an
awaitable of) a response, an async iterator of chunks, or an SDK stream helper's async
context manager; no LLM SDK is needed.

A call that raises is charged nothing (a 429, 500 or 529 is not billed). A response that
reports no usage is charged the whole estimate: the provider billed a call whose size
nobody knows, so it counts as big as it could have been (and ``budget.unrecorded`` is
logged). A result that is no response at all (a sync stream, a sync context manager)
raises `TypeError` rather than settle blind.

**Streams** come back as a `BudgetedStream` that passes every chunk through unchanged,
forwards every other attribute to the SDK's stream (``.response``, ``.close()``...) and
holds the reservation until the stream ends. Usage reports in a stream are running
totals (OpenAI sends one in the last chunk when asked with ``stream_options=
{"include_usage": True}``, which `BudgetedLLM` adds to an OpenAI SDK chat call that does
not set it; Anthropic sends input tokens in ``message_start`` and totals in each
``message_delta``), so the stream's usage is the greatest value reported for each field.

**Stream helpers** (``client.messages.stream``, ``client.chat.completions.stream``,
``client.responses.stream``) return an async context manager: the call returns a
`BudgetedStreamManager` that sends the request when entered, yields the SDK's stream
(wrapped, with every attribute and method of it) and settles when left. It reads the
usage from the events you iterate, from ``get_final_*()`` results, and from the SDK's
running snapshot (so ``text_stream`` works too).

A stream *abandoned* before its end (closed early, left by ``break`` in an ``async with``
block, cancelled while waiting for a chunk, or broken by an error) charges what is known:
the usage reported so far and the call itself, never more; the rest is refunded. That is
the rule of every aiobudget reservation (what was recorded happened; the rest is given
back), and it is exact for Anthropic streams, which report input tokens first. An OpenAI
stream reports nothing before its last chunk, so abandoning it early charges only the
call although the provider bills the prompt and the tokens sent: where the budget must
bound the provider's bill, pass ``on_abandon="reserved"`` to charge the whole estimate
(or what is known, if more) instead. Close streams with ``async with``: a stream
garbage-collected while open is refunded with a ResourceWarning.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, final

from . import _log
from ._llm_streams import BudgetedStream, BudgetedStreamManager, HelperStream
from ._pricing import Pricing
from ._units import COST, Usage, field_of

if TYPE_CHECKING:
    from ._budget import Budget
    from ._reservation import Reservation

__all__ = [
    "BudgetedLLM",
    "BudgetedStream",
    "BudgetedStreamManager",
    "Estimator",
    "HelperStream",
    "OnAbandon",
    "UsageExtractor",
    "anthropic_usage",
    "estimate_usage",
    "openai_usage",
    "read_usage",
]

T = TypeVar("T")

Estimator = Callable[[Mapping[str, Any]], Usage]
"""Estimates a call's usage from its keyword arguments (before pricing)."""
UsageExtractor = Callable[[object], Usage | None]
"""Reads the usage a response (or a stream chunk) reports; ``None`` when it reports none."""
OnAbandon = Literal["known", "reserved"]
"""What an abandoned stream charges: what is known, or (at least) its reservation."""

CHARS_PER_TOKEN: Final = 4
MESSAGE_TOKENS: Final = 4
"""Tokens a chat format adds per message (role, separators): a rough, common figure."""
IMAGE_TOKENS: Final = 1_600
"""Input tokens allowed per image: Anthropic's largest image is about 1,600 tokens, and
OpenAI's high-detail tiling stays below it for the usual sizes."""
_PROMPT_KEYS: Final = ("messages", "input", "prompt", "system", "instructions")
_SCHEMA_KEYS: Final = ("tools", "functions", "tool_choice", "response_format", "text")
_MAX_TOKENS_KEYS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_IMAGE_TYPES: Final = frozenset({"image", "image_url", "input_image"})
_UNCOUNTED_TYPES: Final = frozenset({"document", "file", "input_file", "input_audio", "audio"})
_CONTEXT_KEYS: Final = ("previous_response_id", "conversation", "container")


# -- reading usage -------------------------------------------------------------------


def _usage_in(obj: object, *wrappers: str) -> object:
    """The ``usage`` of *obj*, or of one of its *wrappers* (stream events nest it)."""
    usage = field_of(obj, "usage")
    if usage is not None:
        return usage
    for wrapper in wrappers:
        inner = field_of(obj, wrapper)
        if inner is not None:
            usage = field_of(inner, "usage")
            if usage is not None:
                return usage
    return None


def read_usage(obj: object) -> Usage | None:
    """The usage of any OpenAI or Anthropic response or stream event, or ``None``.

    Reads ``usage`` (a response, a chunk, a ``message_delta``), ``response.usage``
    (Responses API events), ``message.usage`` (``message_start``) or ``chunk.usage``
    (the chat stream helper's events), and tells the two shapes apart (see
    `Usage.from_openai`), so cache and reasoning tokens are never lost.
    """
    usage = _usage_in(obj, "response", "message", "chunk")
    return None if usage is None else Usage.from_openai(usage)


def openai_usage(obj: object) -> Usage | None:
    """The usage of an OpenAI-style response or stream chunk, or ``None``.

    Reads ``usage`` (Chat Completions, and the last chunk of a stream), ``response.usage``
    (the Responses API's ``response.completed`` event) or ``chunk.usage`` (the chat
    stream helper), by attribute or key, with `Usage.from_openai`.
    """
    usage = _usage_in(obj, "response", "chunk")
    return None if usage is None else Usage.from_openai(usage)


def anthropic_usage(obj: object) -> Usage | None:
    """The usage of an Anthropic-style message or stream event, or ``None``.

    Reads ``usage`` (a message, a ``message_delta`` event) or ``message.usage`` (the
    ``message_start`` event) with `Usage.from_anthropic` (cache tokens count as input).
    """
    usage = _usage_in(obj, "message")
    return None if usage is None else Usage.from_anthropic(usage)


# -- estimating ------------------------------------------------------------------------

_told: set[str] = set()  # what estimate_usage already logged it leaves out (once each)


def _tell_once(reason: str, hint: str) -> None:
    if reason not in _told:
        _told.add(reason)
        _log.logger.warning(_log.LLM_ESTIMATE_INCOMPLETE, reason=reason, hint=hint)


def _measure(value: object) -> tuple[int, int, int]:
    """Characters of text, messages and images in a prompt argument."""
    if isinstance(value, str):
        return len(value), 0, 0
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind in _IMAGE_TYPES:
            return 0, 0, 1
        if kind in _UNCOUNTED_TYPES:
            _tell_once(
                f"{kind} content",
                "files, documents and audio are not counted: pass estimate= to reserve them",
            )
            return 0, 0, 0
        chars = messages = images = 0
        for key in ("content", "text", "output", "arguments"):
            c, m, i = _measure(value.get(key))
            chars, messages, images = chars + c, messages + m, images + i
        return chars, messages + (1 if "role" in value else 0), images
    if isinstance(value, list | tuple):
        chars = messages = images = 0
        for item in value:
            c, m, i = _measure(item)
            chars, messages, images = chars + c, messages + m, images + i
        return chars, messages, images
    return 0, 0, 0


def _schema_chars(value: object) -> int:
    """Characters of a tool list or schema, as the JSON the provider receives."""
    if value is None:
        return 0
    return len(json.dumps(value, default=str, separators=(",", ":")))


def estimate_usage(kwargs: Mapping[str, Any]) -> Usage:
    """The default estimate: the prompt as input tokens, ``max_tokens`` (times ``n``) as
    output.

    Input counts the text in ``messages``, ``input``, ``prompt``, ``system`` and
    ``instructions`` (strings, message ``content``, content parts' ``text``), and the
    JSON of ``tools``, ``functions``, ``tool_choice``, ``response_format`` and ``text``,
    at 4 characters a token rounded up, plus 4 tokens a message and `IMAGE_TOKENS` an
    image. Output is ``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``,
    times ``n`` (choices are billed each). Without one the output has no bound, so this
    raises `ValueError`: pass one, or give `BudgetedLLM` an ``estimate=``.

    What it cannot see is logged once (``llm.estimate_incomplete``): the earlier context
    a ``previous_response_id`` or ``conversation`` brings (billed again as input),
    files, documents and audio. Four characters a token is typical for English, not a
    bound (code and other languages use more tokens): where the reservation must bound
    the bill, pass an estimator built on the model's tokenizer.
    """
    chars = messages = images = 0
    for key in _PROMPT_KEYS:
        c, m, i = _measure(kwargs.get(key))
        chars, messages, images = chars + c, messages + m, images + i
    for key in _SCHEMA_KEYS:
        chars += _schema_chars(kwargs.get(key))
    for key in _CONTEXT_KEYS:
        if kwargs.get(key) is not None:
            _tell_once(
                key,
                "the earlier context it brings is billed as input but unknown here: "
                "pass estimate= (e.g. the previous response's usage plus this prompt)",
            )
    output = next((kwargs[k] for k in _MAX_TOKENS_KEYS if kwargs.get(k) is not None), None)
    if output is None:
        raise ValueError(
            "cannot estimate an unbounded output: pass max_tokens (or max_completion_tokens "
            "or max_output_tokens), or give BudgetedLLM an estimate= callable"
        )
    n = kwargs.get("n")
    choices = n if type(n) is int and n > 1 else 1
    return Usage(
        input_tokens=-(-chars // CHARS_PER_TOKEN)
        + MESSAGE_TOKENS * messages
        + IMAGE_TOKENS * images,
        output_tokens=output * choices,
    )


# -- the wrapper -------------------------------------------------------------------------


def _is_openai_chat(fn: Callable[..., Any]) -> bool:
    """True for the OpenAI SDK's ``chat.completions.create`` / ``.stream``."""
    module = getattr(fn, "__module__", "") or ""
    return module.startswith("openai.resources.chat.completions")


@final
class BudgetedLLM:
    """An async LLM call (any callable) that reserves from a budget around each call.

    ``BudgetedLLM(fn, usage=read_usage, estimate=estimate_usage, pricing=None,
    calls=1, timeout=None, on_abandon="known")``; then ``await llm(budget, *args,
    **kwargs)`` calls ``fn(*args, **kwargs)`` and returns its response, a
    `BudgetedStream` when it returns an async iterator, or a `BudgetedStreamManager`
    when it returns a stream helper's async context manager. *timeout* waits (seconds)
    for budget, as `Budget.reserve` does; *calls* is what each call counts in a
    ``calls`` dimension; see the module for *on_abandon*.
    """

    __slots__ = ("_calls", "_estimate", "_fn", "_on_abandon", "_pricing", "_timeout", "_usage")

    def __init__(
        self,
        fn: Callable[..., Any],
        /,
        *,
        usage: UsageExtractor = read_usage,
        estimate: Estimator = estimate_usage,
        pricing: Pricing | None = None,
        calls: int = 1,
        timeout: float | None = None,
        on_abandon: OnAbandon = "known",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be a callable, not {fn!r}")
        if pricing is not None and not isinstance(pricing, Pricing):
            raise TypeError(f"pricing must be a Pricing, not {pricing!r}")
        if on_abandon not in ("known", "reserved"):
            raise ValueError(f"on_abandon must be 'known' or 'reserved', not {on_abandon!r}")
        self._fn = fn
        self._usage = usage
        self._estimate = estimate
        self._pricing = pricing
        self._calls = Usage(calls=calls)  # validates calls
        self._timeout = timeout
        self._on_abandon: OnAbandon = on_abandon

    def __repr__(self) -> str:
        return f"<BudgetedLLM {getattr(self._fn, '__qualname__', self._fn)!r}>"

    def actual(self, usage: Usage) -> Usage:
        """What a reported *usage* charges: priced (with a `Pricing`, unless the provider
        reported a cost already), plus the call."""
        if self._pricing is not None and not usage.cost_micros:
            usage = self._pricing.priced(usage)
        return usage + self._calls

    def estimate(self, kwargs: Mapping[str, Any]) -> Usage:
        """What a call with these keyword arguments reserves."""
        estimate = self._estimate(kwargs)
        if not isinstance(estimate, Usage):
            raise TypeError(f"an estimator must return a Usage, not {estimate!r}")
        return self.actual(estimate)

    def _with_stream_usage(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Ask an OpenAI chat stream to report usage, unless the caller decided."""
        fn = self._fn
        helper = getattr(fn, "__name__", "") == "stream"
        if not (helper or kwargs.get("stream") is True) or "messages" not in kwargs:
            return kwargs
        options = kwargs.get("stream_options")
        if isinstance(options, Mapping) and "include_usage" in options:
            if not options["include_usage"] and self._usage in (read_usage, openai_usage):
                _log.logger.warning(_log.LLM_STREAM_WITHOUT_USAGE, fn=repr(self))
            return kwargs
        if _is_openai_chat(fn):
            return {**kwargs, "stream_options": {**(options or {}), "include_usage": True}}
        return kwargs

    async def __call__(self, budget: Budget, /, *args: Any, **kwargs: Any) -> Any:
        estimate = self.estimate(kwargs)
        if COST in budget.dims and estimate.cost_micros == 0 and self._pricing is None:
            raise ValueError(
                f"budget {budget.name!r} counts {COST} but this call has no price: give "
                "BudgetedLLM a pricing= (or an estimator and extractor that set cost_micros)"
            )
        kwargs = self._with_stream_usage(kwargs)
        # "charge": a response that reports no usage was still billed; count it as big as
        # it could have been. (Failures exit with an exception and are refunded.)
        held = budget.reserve(estimate, timeout=self._timeout, on_unrecorded="charge")
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(held)
            result = self._fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, AsyncIterable):
                stack.pop_all()  # the stream owns the reservation now
                return BudgetedStream(result, held, _StreamOwner(self))
            if hasattr(result, "__aenter__") and hasattr(result, "__aexit__"):
                stack.pop_all()  # a stream helper: the request is sent when entered
                return BudgetedStreamManager(result, held, _StreamOwner(self))
            if hasattr(result, "__next__") or hasattr(result, "__enter__"):
                # A sync stream (its request is out: charge the estimate) or a sync
                # stream manager (nothing sent: refund). Never settle a stream blind.
                if hasattr(result, "__next__"):
                    held.record(held.amounts)
                raise TypeError(
                    f"{self!r} returned {type(result).__name__}, a sync stream or context "
                    "manager: wrap the async client's method (AsyncOpenAI, AsyncAnthropic)"
                )
            try:
                usage = self._usage(result)
                actual = None if usage is None else self.actual(usage)
            except Exception:
                held.record(held.amounts)  # the call was billed: charge the estimate
                raise
            if actual is not None:
                held.record(actual)
        return result

    def _finish(self, held: Reservation, known: Usage | None, *, ended: bool) -> None:
        """Record what a stream charges: its usage when it ended, else per on_abandon.

        Nothing recorded on an ended stream leaves the estimate to ``on_unrecorded``.
        """
        if not held.held:  # settled by hand through .reservation
            return
        try:
            actual = None if known is None else self.actual(known)
        except Exception:
            held.record(held.amounts)  # a usage that cannot be priced: the estimate
            raise
        if ended:
            if actual is not None:
                held.record(actual)
            return
        if actual is None:
            actual = self._calls
        if self._on_abandon == "reserved":
            charged = actual.amounts(held.budget.dims)
            held.record({d: max(v, charged.get(d, 0)) for d, v in held.amounts.items()})
        else:
            held.record(actual)


for _shown_here in (BudgetedStream, BudgetedStreamManager, HelperStream):
    _shown_here.__module__ = __name__  # documented (and shown in tracebacks) as aiobudget.llm


@final
class _StreamOwner:
    """A `BudgetedLLM` as its streams see it (`aiobudget._llm_streams.StreamOwner`)."""

    __slots__ = ("_llm",)

    def __init__(self, llm: BudgetedLLM) -> None:
        self._llm = llm

    def usage_of(self, obj: object) -> Usage | None:
        return self._llm._usage(obj)

    def finish(self, held: Reservation, known: Usage | None, *, ended: bool) -> None:
        self._llm._finish(held, known, ended=ended)
