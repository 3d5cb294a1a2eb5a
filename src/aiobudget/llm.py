"""LLM calls that draw on a budget: reserve an estimate, call, record the reported usage.

    chat = BudgetedLLM(client.chat.completions.create, pricing=Pricing("0.15", "0.60"))
    reply = await chat(budget, model="gpt-4o-mini", messages=messages, max_tokens=500)

    stream = await chat(budget, model="gpt-4o-mini", messages=messages, max_tokens=500,
                        stream=True, stream_options={"include_usage": True})
    async with stream:
        async for chunk in stream:
            ...

Before the call, `BudgetedLLM` reserves an estimate of what it can use: by default the
prompt's characters / 4 (plus 4 tokens a message) as input tokens and ``max_tokens`` as
output tokens (`estimate_usage`), one call, and their cost when a `Pricing` is given.
After it, it records the usage the response reports (`openai_usage`, `anthropic_usage`,
or your own extractor) and settles: the unused part of the estimate is refunded. It
wraps any callable returning (an awaitable of) a response or an async iterator of
chunks; no LLM SDK is needed.

A call that raises is charged nothing. A response that reports no usage is charged the
whole estimate: the provider billed a call whose size nobody knows, so it counts as big
as it could have been (and ``budget.unrecorded`` is logged).

**Streams** come back as a `BudgetedStream` that passes every chunk through unchanged
and holds the reservation until the stream ends. Usage reports in a stream are running
totals (OpenAI sends one in the last chunk when asked with ``stream_options=
{"include_usage": True}``; Anthropic sends input tokens in ``message_start`` and the
output count so far in each ``message_delta``), so the stream's usage is the greatest
value reported for each field. Read to the end, it records that usage (or, with no
report, charges the estimate, as above).

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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, final

import anyio

from ._units import COST, Pricing, Usage, field_of

if TYPE_CHECKING:
    from types import TracebackType

    from ._budget import Budget
    from ._reservation import Reservation

__all__ = [
    "BudgetedLLM",
    "BudgetedStream",
    "Estimator",
    "OnAbandon",
    "UsageExtractor",
    "anthropic_usage",
    "estimate_usage",
    "openai_usage",
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
_PROMPT_KEYS: Final = ("messages", "input", "prompt", "system", "instructions")
_MAX_TOKENS_KEYS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")


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


def openai_usage(obj: object) -> Usage | None:
    """The usage of an OpenAI-style response or stream chunk, or ``None``.

    Reads ``usage`` (Chat Completions, and the last chunk of a stream), or
    ``response.usage`` (the Responses API's ``response.completed`` event), by attribute
    or key, with `Usage.from_openai`.
    """
    usage = _usage_in(obj, "response")
    return None if usage is None else Usage.from_openai(usage)


def anthropic_usage(obj: object) -> Usage | None:
    """The usage of an Anthropic-style message or stream event, or ``None``.

    Reads ``usage`` (a message, a ``message_delta`` event) or ``message.usage`` (the
    ``message_start`` event) with `Usage.from_anthropic` (cache tokens count as input).
    """
    usage = _usage_in(obj, "message")
    return None if usage is None else Usage.from_anthropic(usage)


# -- estimating ------------------------------------------------------------------------


def _measure(value: object) -> tuple[int, int]:
    """Characters of text and number of messages in a prompt argument."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, Mapping):
        chars = 0
        for key in ("content", "text"):
            inner, _ = _measure(value.get(key))
            chars += inner
        return chars, 1 if "role" in value else 0
    if isinstance(value, list | tuple):
        chars = messages = 0
        for item in value:
            c, m = _measure(item)
            chars += c
            messages += m
        return chars, messages
    return 0, 0  # images, files, tools...: not text the estimate can count


def estimate_usage(kwargs: Mapping[str, Any]) -> Usage:
    """The default estimate: the prompt as input tokens, ``max_tokens`` as output.

    Input is the text in ``messages``, ``input``, ``prompt``, ``system`` and
    ``instructions`` (strings, message dicts' ``content``, content parts' ``text``) at 4
    characters a token, rounded up, plus 4 tokens a message. Output is ``max_tokens``,
    ``max_completion_tokens`` or ``max_output_tokens``; without one the output has no
    bound, so this raises `ValueError`: pass one, or give `BudgetedLLM` an estimator.
    """
    chars = messages = 0
    for key in _PROMPT_KEYS:
        c, m = _measure(kwargs.get(key))
        chars += c
        messages += m
    output = next((kwargs[k] for k in _MAX_TOKENS_KEYS if kwargs.get(k) is not None), None)
    if output is None:
        raise ValueError(
            "cannot estimate an unbounded output: pass max_tokens (or max_completion_tokens "
            "or max_output_tokens), or give BudgetedLLM an estimate= callable"
        )
    return Usage(
        input_tokens=-(-chars // CHARS_PER_TOKEN) + MESSAGE_TOKENS * messages,
        output_tokens=output,
    )


# -- the wrapper -------------------------------------------------------------------------


def _max_usage(a: Usage | None, b: Usage) -> Usage:
    """Field by field, the greater of two running totals."""
    if a is None:
        return b
    extra = {k: max(a.extra.get(k, 0), b.extra.get(k, 0)) for k in {*a.extra, *b.extra}}
    return Usage(
        input_tokens=max(a.input_tokens, b.input_tokens),
        output_tokens=max(a.output_tokens, b.output_tokens),
        cost_micros=max(a.cost_micros, b.cost_micros),
        calls=max(a.calls, b.calls),
        extra=extra,
    )


@final
class BudgetedLLM:
    """An async LLM call (any callable) that reserves from a budget around each call.

    ``BudgetedLLM(fn, usage=openai_usage, estimate=estimate_usage, pricing=None,
    calls=1, timeout=None, on_abandon="known")``; then ``await llm(budget, *args,
    **kwargs)`` calls ``fn(*args, **kwargs)`` and returns its response, or a
    `BudgetedStream` when it returns an async iterator. *timeout* waits (seconds) for
    budget, as `Budget.reserve` does; *calls* is what each call counts in a ``calls``
    dimension; see the module for *on_abandon*.
    """

    __slots__ = ("_calls", "_estimate", "_fn", "_on_abandon", "_pricing", "_timeout", "_usage")

    def __init__(
        self,
        fn: Callable[..., Any],
        /,
        *,
        usage: UsageExtractor = openai_usage,
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
        """What a reported *usage* charges: priced (with a `Pricing`), plus the call."""
        if self._pricing is not None:
            usage = self._pricing.priced(usage)
        return usage + self._calls

    def estimate(self, kwargs: Mapping[str, Any]) -> Usage:
        """What a call with these keyword arguments reserves."""
        estimate = self._estimate(kwargs)
        if not isinstance(estimate, Usage):
            raise TypeError(f"an estimator must return a Usage, not {estimate!r}")
        return self.actual(estimate)

    async def __call__(self, budget: Budget, /, *args: Any, **kwargs: Any) -> Any:
        estimate = self.estimate(kwargs)
        if COST in budget.dims and estimate.cost_micros == 0 and self._pricing is None:
            raise ValueError(
                f"budget {budget.name!r} counts {COST} but this call has no price: give "
                "BudgetedLLM a pricing= (or an estimator and extractor that set cost_micros)"
            )
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
                return BudgetedStream(result, held, self)
            try:
                usage = self._usage(result)
            except Exception:
                held.record(held.amounts)  # the call was billed: charge the estimate
                raise
            if usage is not None:
                held.record(self.actual(usage))
        return result

    async def _settle_abandoned(self, held: Reservation, known: Usage | None) -> None:
        if not held.held:  # settled by hand through BudgetedStream.reservation
            return
        actual = self.actual(known) if known is not None else self._calls
        if self._on_abandon == "reserved":
            charged = actual.amounts(held.budget.dims)
            held.record({d: max(v, charged.get(d, 0)) for d, v in held.amounts.items()})
        else:
            held.record(actual)
        await held.commit()


@final
class BudgetedStream(Generic[T]):
    """A stream of chunks that holds its call's reservation until it ends.

    An async iterator (chunks pass through unchanged) and an async context manager;
    `aclose` (or leaving the ``async with`` block) ends it early. See `aiobudget.llm`
    for what an ended or abandoned stream charges.
    """

    __slots__ = ("_done", "_held", "_iterator", "_known", "_llm", "_source")

    def __init__(self, source: AsyncIterable[T], held: Reservation, llm: BudgetedLLM) -> None:
        self._source = source
        self._iterator: AsyncIterator[T] = source.__aiter__()
        self._held = held
        self._llm = llm
        self._known: Usage | None = None
        self._done = False

    @property
    def reservation(self) -> Reservation:
        """The reservation this stream holds (closed once the stream ended)."""
        return self._held

    @property
    def usage(self) -> Usage | None:
        """The usage reported so far (before pricing), or ``None``."""
        return self._known

    def __aiter__(self) -> BudgetedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await self._iterator.__anext__()
            usage = self._llm._usage(chunk)
        except StopAsyncIteration:
            self._done = True
            if self._held.held:
                if self._known is not None:
                    self._held.record(self._llm.actual(self._known))
                await self._held.commit()  # nothing reported: the estimate, as for a response
            raise
        except BaseException:
            await self._abandon()
            raise
        if usage is not None:
            self._known = _max_usage(self._known, usage)
        return chunk

    async def aclose(self) -> None:
        """End the stream now: settle as abandoned (unless it had ended) and close it."""
        if not self._done:
            await self._abandon()

    async def __aenter__(self) -> BudgetedStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _abandon(self) -> None:
        self._done = True
        # Shielded: cleanup that a cancellation (often the very reason we are here) must
        # not cut short. The settle does not even suspend with an in-memory store.
        with anyio.CancelScope(shield=True):
            await self._llm._settle_abandoned(self._held, self._known)
            await _close(self._iterator)
            if self._source is not self._iterator:
                await _close(self._source)


async def _close(obj: object) -> None:
    """Close an async iterator or a stream object: ``aclose()`` or an async ``close()``."""
    close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    if close is None:
        return
    result = close()
    if isinstance(result, Awaitable):
        await result
