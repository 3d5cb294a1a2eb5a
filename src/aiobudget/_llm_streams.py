"""The stream side of `aiobudget.llm`: streams and stream helpers that hold a call's
reservation until they end (see `aiobudget.llm` for what they charge)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar, final

import anyio

from ._units import Usage

if TYPE_CHECKING:
    from types import TracebackType

    from ._reservation import Reservation

__all__ = ["BudgetedStream", "BudgetedStreamManager", "HelperStream", "StreamOwner", "max_usage"]

T = TypeVar("T")


class StreamOwner(Protocol):
    """What a stream needs from the `aiobudget.llm.BudgetedLLM` call that made it."""

    def usage_of(self, obj: object) -> Usage | None:
        """The usage *obj* (an event, chunk or final message) reports, if any."""
        ...

    def finish(self, held: Reservation, known: Usage | None, *, ended: bool) -> None:
        """Record what the stream charges: *known* usage when it *ended*, else per the
        call's ``on_abandon``."""
        ...


_FINAL_METHODS: Final = ("get_final_message", "get_final_completion", "get_final_response")


def max_usage(a: Usage | None, b: Usage | None) -> Usage | None:
    """Field by field, the greater of two running totals."""
    if a is None:
        return b
    if b is None:
        return a
    extra = {k: max(a.extra.get(k, 0), b.extra.get(k, 0)) for k in {*a.extra, *b.extra}}
    return Usage(
        input_tokens=max(a.input_tokens, b.input_tokens),
        output_tokens=max(a.output_tokens, b.output_tokens),
        cost_micros=max(a.cost_micros, b.cost_micros),
        calls=max(a.calls, b.calls),
        extra=extra,
        cache_read_tokens=max(a.cache_read_tokens, b.cache_read_tokens),
        cache_write_tokens=max(a.cache_write_tokens, b.cache_write_tokens),
        cache_write_1h_tokens=max(a.cache_write_1h_tokens, b.cache_write_1h_tokens),
        reasoning_tokens=max(a.reasoning_tokens, b.reasoning_tokens),
    )


@final
class BudgetedStream(Generic[T]):
    """A stream of chunks that holds its call's reservation until it ends.

    An async iterator (chunks pass through unchanged) and an async context manager;
    `aclose` (or leaving the ``async with`` block) ends it early. Any other attribute is
    the SDK stream's (``.response``, ``.get_final_message()``...). See `aiobudget.llm`
    for what an ended or abandoned stream charges.
    """

    __slots__ = ("_done", "_held", "_iterator", "_known", "_llm", "_source")

    def __init__(self, source: AsyncIterable[T], held: Reservation, llm: StreamOwner) -> None:
        self._source = source
        self._iterator: AsyncIterator[T] = source.__aiter__()
        self._held = held
        self._llm = llm
        self._known: Usage | None = None
        self._done = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._source, name)

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
            usage = self._llm.usage_of(chunk)
        except StopAsyncIteration:
            self._done = True
            if self._held.held:
                self._llm.finish(self._held, self._known, ended=True)
                await self._held.commit()  # nothing reported: the estimate, as for a response
            raise
        except BaseException:
            await self._abandon()
            raise
        if usage is not None:
            self._known = max_usage(self._known, usage)
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
            try:
                if self._held.held:
                    self._llm.finish(self._held, self._known, ended=False)
                    await self._held.commit()
            finally:
                await _close(self._iterator)
                if self._source is not self._iterator:
                    await _close(self._source)


@final
class BudgetedStreamManager:
    """An SDK stream helper's async context manager, holding its call's reservation.

    ``async with manager as stream:`` sends the request (a failure there, such as a 429,
    refunds everything) and yields a `HelperStream` over the SDK's stream; leaving the
    block settles: the stream's usage if it ended, else as an abandoned stream (see
    `aiobudget.llm`).
    """

    __slots__ = ("_held", "_llm", "_manager", "_stream")

    def __init__(self, manager: Any, held: Reservation, llm: StreamOwner) -> None:
        self._manager = manager
        self._held = held
        self._llm = llm
        self._stream: HelperStream | None = None

    @property
    def reservation(self) -> Reservation:
        """The reservation this call holds."""
        return self._held

    async def __aenter__(self) -> HelperStream:
        if self._stream is not None:
            raise RuntimeError("a stream helper can be entered only once")
        try:
            stream = await self._manager.__aenter__()
        except BaseException:
            # The request failed (an error status, a network failure, a cancellation):
            # nothing was billed.
            with anyio.CancelScope(shield=True):
                if self._held.held:
                    await self._held.release()
            raise
        self._stream = HelperStream(stream, self._llm)
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stream = self._stream
        assert stream is not None
        suppress: bool | None = None
        with anyio.CancelScope(shield=True):
            try:
                if exc_type is None and stream._ended:
                    await stream._final()
                suppress = await self._manager.__aexit__(exc_type, exc, tb)
            finally:
                if self._held.held:
                    ended = exc_type is None and stream._ended
                    try:
                        self._llm.finish(self._held, stream._usage(), ended=ended)
                    finally:
                        await self._held.commit()
        return suppress


@final
class HelperStream:
    """The SDK stream a helper yields, watched for usage: every attribute and method is
    the SDK's. Iterating it passes events through unchanged; ``get_final_*()`` results
    count too."""

    __slots__ = ("_ended", "_known", "_llm", "_stream")

    def __init__(self, stream: Any, llm: StreamOwner) -> None:
        self._stream = stream
        self._llm = llm
        self._known: Usage | None = None
        self._ended = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._stream, name)
        if name in _FINAL_METHODS or name == "until_done":
            return self._watched(value)
        return value

    def _watched(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            self._ended = True
            if result is not self._stream:
                self._note(result)
            return result

        return call

    def _note(self, obj: object) -> None:
        usage = self._llm.usage_of(obj)
        if usage is not None:
            self._known = max_usage(self._known, usage)

    def __aiter__(self) -> HelperStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._stream.__anext__()
        except StopAsyncIteration:
            self._ended = True
            raise
        self._note(event)
        return event

    async def _final(self) -> None:
        """After a complete read: the final object's usage (cheap: the stream is done)."""
        for name in _FINAL_METHODS:
            method = getattr(self._stream, name, None)
            if method is not None:
                with contextlib.suppress(Exception):  # no final object: keep what is known
                    self._note(await method())
                return

    def _usage(self) -> Usage | None:
        """What is known: events and final objects seen, and the SDK's running snapshot."""
        known = self._known
        for name in ("current_message_snapshot", "current_completion_snapshot"):
            try:
                snapshot = getattr(self._stream, name, None)
            except Exception:  # noqa: BLE001, S112 - no snapshot yet (nothing arrived)
                continue
            if snapshot is not None:
                known = max_usage(known, self._llm.usage_of(snapshot))
        return known


async def _close(obj: object) -> None:
    """Close an async iterator or a stream object: ``aclose()`` or an async ``close()``."""
    close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    if close is None:
        return
    result = close()
    if isinstance(result, Awaitable):
        await result
