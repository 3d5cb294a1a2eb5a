"""`aiobudget.llm`: reserve an estimate, call any async callable, record reported usage.

The responses are duck-typed fakes (dicts and plain objects shaped like OpenAI's and
Anthropic's); no SDK is installed or needed. Runs on every backend of the matrix.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog
from structlog.testing import capture_logs

from aiobudget import (
    CALLS,
    COST,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    TOKENS,
    Budget,
    BudgetExhausted,
    Pricing,
    Usage,
)
from aiobudget.llm import (
    IMAGE_TOKENS,
    BudgetedLLM,
    BudgetedStream,
    anthropic_usage,
    estimate_usage,
    openai_usage,
)

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "x" * 40}]  # 10 tokens of text + 4 per message


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """structlog configured to drop everything, then reset."""
    structlog.configure(
        processors=[],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


async def state(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    """``(spent, reserved)`` of *budget*."""
    snapshot = await budget.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)


def openai_reply(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


class FakeClient:
    """An async ``create`` that returns a queued reply and notes what it was called with
    and what the budget held meanwhile."""

    def __init__(self, reply: object, budget: Budget | None = None) -> None:
        self.reply = reply
        self.budget = budget
        self.calls: list[dict[str, Any]] = []
        self.reserved_during: dict[str, int] | None = None

    async def create(self, **kwargs: Any) -> object:
        self.calls.append(kwargs)
        if self.budget is not None:
            self.reserved_during = (await state(self.budget))[1]
        await anyio.lowlevel.checkpoint()
        return self.reply


class FakeStream:
    """An SDK-like stream: async-iterable, with an async ``close``."""

    def __init__(self, chunks: list[object], *, fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.sent = 0
        self.closed = False
        self.blocked = anyio.Event()

    def __aiter__(self) -> AsyncIterator[object]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[object]:
        for chunk in self.chunks:
            if self.fail_after is not None and self.sent == self.fail_after:
                raise ConnectionError("stream broke")
            await anyio.lowlevel.checkpoint()
            self.sent += 1
            yield chunk
        if self.fail_after == -1:  # hang after the last chunk, as a slow provider does
            self.blocked.set()
            await anyio.sleep_forever()

    async def close(self) -> None:
        self.closed = True


def openai_chunks(prompt: int, completion: int) -> list[object]:
    """Chat Completions stream chunks with ``include_usage``: usage in the last one."""
    deltas: list[object] = [
        {"choices": [{"delta": {"content": word}}], "usage": None} for word in ("a", "b", "c")
    ]
    return [
        *deltas,
        {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}},
    ]


def anthropic_events(input_tokens: int, output_tokens: int) -> list[object]:
    """Messages API stream events: input in message_start, output totals in deltas."""
    return [
        SimpleNamespace(
            type="message_start",
            message=SimpleNamespace(
                usage=SimpleNamespace(input_tokens=input_tokens, output_tokens=1)
            ),
        ),
        SimpleNamespace(type="content_block_delta", delta=SimpleNamespace(text="hello")),
        SimpleNamespace(
            type="message_delta", usage=SimpleNamespace(output_tokens=output_tokens // 2)
        ),
        SimpleNamespace(type="message_delta", usage=SimpleNamespace(output_tokens=output_tokens)),
        SimpleNamespace(type="message_stop"),
    ]


def llm_budget() -> Budget:
    return Budget({TOKENS: 10_000, CALLS: 10}, name="llm")


# -- reading usage -------------------------------------------------------------------------


class TestExtractors:
    def test_openai_usage_reads_responses_and_chunks(self) -> None:
        """Chat Completions (dict or object), a Responses API completed event, and None
        for a chunk without usage."""
        assert Usage(input_tokens=3, output_tokens=4) == openai_usage(openai_reply(3, 4))
        reply = SimpleNamespace(usage=SimpleNamespace(input_tokens=5, output_tokens=6))
        assert Usage(input_tokens=5, output_tokens=6) == openai_usage(reply)
        event = {"type": "response.completed", "response": {"usage": reply.usage}}
        assert Usage(input_tokens=5, output_tokens=6) == openai_usage(event)
        assert openai_usage({"choices": [], "usage": None}) is None
        assert openai_usage({"type": "response.created", "response": {"usage": None}}) is None
        assert openai_usage(SimpleNamespace(choices=[])) is None

    def test_anthropic_usage_reads_messages_and_events(self) -> None:
        """A message (cache tokens count as input), message_start and message_delta."""
        message = {"usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90}}
        assert Usage(input_tokens=100, output_tokens=5, cache_read_tokens=90) == anthropic_usage(
            message
        )
        start, _, delta, _, stop = anthropic_events(20, 8)
        assert Usage(input_tokens=20, output_tokens=1) == anthropic_usage(start)
        assert Usage(output_tokens=4) == anthropic_usage(delta)
        assert anthropic_usage(stop) is None


class TestEstimate:
    def test_text_is_four_characters_a_token_plus_four_a_message(self) -> None:
        """Prompt characters / 4, rounded up, plus 4 tokens per message; output is
        max_tokens."""
        kwargs = {"messages": [{"role": "user", "content": "x" * 41}], "max_tokens": 100}
        assert Usage(input_tokens=11 + 4, output_tokens=100) == estimate_usage(kwargs)

    def test_content_parts_system_and_other_shapes_count(self) -> None:
        """Text parts count, an image counts IMAGE_TOKENS; system, prompt, input and
        instructions too."""
        kwargs: Mapping[str, Any] = {
            "system": [{"type": "text", "text": "s" * 8}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "t" * 8},
                        {"type": "image_url", "image_url": {"url": "data:" + "A" * 10_000}},
                    ],
                },
                {"role": "assistant", "content": "a" * 4},
            ],
            "instructions": "i" * 4,
            "max_output_tokens": 7,
        }
        assert Usage(
            input_tokens=2 + 2 + 1 + 1 + 2 * 4 + IMAGE_TOKENS, output_tokens=7
        ) == estimate_usage(kwargs)
        assert Usage(input_tokens=3, output_tokens=1) == estimate_usage(
            {"prompt": "p" * 9, "max_completion_tokens": 1}
        )
        assert Usage(input_tokens=1, output_tokens=2) == estimate_usage(
            {"input": "q", "max_output_tokens": 2}
        )

    def test_an_unbounded_output_is_refused(self) -> None:
        """Without a max tokens argument the estimate cannot bound the output."""
        with pytest.raises(ValueError, match="max_tokens"):
            estimate_usage({"messages": MESSAGES})


# -- calls ----------------------------------------------------------------------------


class TestCall:
    async def test_reserves_the_estimate_and_settles_the_reported_usage(self) -> None:
        """The estimate is held during the call; the reported usage (and the call) is
        charged after it, the rest refunded; the response comes back unchanged."""
        budget = llm_budget()
        reply = openai_reply(12, 30)
        client = FakeClient(reply, budget)
        chat = BudgetedLLM(client.create)
        result = await chat(budget, model="m", messages=MESSAGES, max_tokens=100)
        assert result is reply
        assert [{"model": "m", "messages": MESSAGES, "max_tokens": 100}] == client.calls
        assert {TOKENS: 14 + 100, CALLS: 1} == client.reserved_during
        assert ({TOKENS: 42, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_input_output_and_cost_dimensions_are_filled(self) -> None:
        """With a Pricing, the estimate and the actual usage carry their cost."""
        budget = Budget(
            {INPUT_TOKENS: 1_000, OUTPUT_TOKENS: 1_000, COST: 1_000_000, CALLS: 5}, name="b"
        )
        pricing = Pricing(input="1", output="2")  # $ per million tokens
        client = FakeClient(openai_reply(100, 200), budget)
        chat = BudgetedLLM(client.create, pricing=pricing)
        await chat(budget, messages=MESSAGES, max_tokens=300)
        assert {
            INPUT_TOKENS: 14,
            OUTPUT_TOKENS: 300,
            COST: pricing.cost(input_tokens=14, output_tokens=300),
            CALLS: 1,
        } == client.reserved_during
        assert {INPUT_TOKENS: 100, OUTPUT_TOKENS: 200, COST: 500, CALLS: 1} == (
            await state(budget)
        )[0]

    async def test_anthropic_responses_with_a_custom_estimator(self) -> None:
        """The extractor and the estimator are the caller's to choose."""
        budget = Budget({TOKENS: 10_000}, name="b")
        message = {"usage": {"input_tokens": 50, "output_tokens": 7}}
        client = FakeClient(message, budget)
        chat = BudgetedLLM(
            client.create,
            usage=anthropic_usage,
            estimate=lambda kwargs: Usage(input_tokens=kwargs["budget_hint"]),
        )
        await chat(budget, budget_hint=900)
        assert {TOKENS: 900} == client.reserved_during
        assert ({TOKENS: 57}, {TOKENS: 0}) == await state(budget)

    async def test_a_plain_function_and_positional_arguments_work(self) -> None:
        """A callable returning the response itself (not an awaitable) works too."""
        budget = llm_budget()

        def complete(prompt: str, *, max_tokens: int) -> dict[str, Any]:
            return openai_reply(len(prompt), max_tokens // 2)

        chat = BudgetedLLM(complete, estimate=lambda kw: Usage(output_tokens=kw["max_tokens"]))
        await chat(budget, "abc", max_tokens=10)
        assert ({TOKENS: 8, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_call_that_does_not_fit_is_never_made(self) -> None:
        """A denied estimate raises BudgetExhausted before the callable runs."""
        budget = Budget({TOKENS: 50}, name="small")
        client = FakeClient(openai_reply(1, 1))
        with pytest.raises(BudgetExhausted) as caught:
            await BudgetedLLM(client.create)(budget, messages=MESSAGES, max_tokens=100)
        assert (TOKENS, 114) == (caught.value.dim, caught.value.requested)
        assert [] == client.calls

    async def test_a_failing_call_is_refunded(self) -> None:
        """A call that raises is charged nothing."""
        budget = llm_budget()

        async def failing(**kwargs: Any) -> object:
            raise ConnectionError("provider down")

        with pytest.raises(ConnectionError):
            await BudgetedLLM(failing)(budget, messages=MESSAGES, max_tokens=10)
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_cancelled_call_is_refunded(self) -> None:
        """Cancelling the caller while the call runs refunds the estimate."""
        budget = llm_budget()
        started = anyio.Event()

        async def hanging(**kwargs: Any) -> object:
            started.set()
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: BudgetedLLM(hanging)(budget, messages=MESSAGES, max_tokens=10))
            await started.wait()
            assert {TOKENS: 24, CALLS: 1} == (await state(budget))[1]
            tg.cancel_scope.cancel()
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_response_without_usage_is_charged_the_estimate(self) -> None:
        """The provider billed a call of unknown size: it counts as big as it could have
        been, and ``budget.unrecorded`` says so."""
        budget = llm_budget()
        client = FakeClient({"choices": []})
        with capture_logs() as logs:
            await BudgetedLLM(client.create)(budget, messages=MESSAGES, max_tokens=100)
        assert ({TOKENS: 114, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        assert ["charge"] == [e["action"] for e in logs if e["event"] == "budget.unrecorded"]

    async def test_an_extractor_that_fails_charges_the_estimate(self) -> None:
        """The call happened; a broken extractor raises, and the estimate is charged."""
        budget = llm_budget()

        def broken(response: object) -> Usage | None:
            raise KeyError("usage")

        chat = BudgetedLLM(FakeClient(openai_reply(1, 1)).create, usage=broken)
        with pytest.raises(KeyError):
            await chat(budget, messages=MESSAGES, max_tokens=100)
        assert ({TOKENS: 114, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_cost_budget_without_a_price_is_refused(self) -> None:
        """Money would go uncounted: the call is refused before anything is reserved."""
        budget = Budget({TOKENS: 1_000, COST: 1_000}, name="money")
        client = FakeClient(openai_reply(1, 1))
        with pytest.raises(ValueError, match="pricing"):
            await BudgetedLLM(client.create)(budget, messages=MESSAGES, max_tokens=10)
        assert [] == client.calls
        assert ({TOKENS: 0, COST: 0}, {TOKENS: 0, COST: 0}) == await state(budget)

    async def test_calls_counts_what_each_call_is_worth(self) -> None:
        """``calls=`` sets what a call counts in a ``calls`` dimension (0: nothing)."""
        budget = llm_budget()
        chat = BudgetedLLM(FakeClient(openai_reply(1, 1)).create, calls=0)
        await chat(budget, messages=MESSAGES, max_tokens=10)
        assert ({TOKENS: 2, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_its_repr_names_the_callable(self) -> None:
        """The repr names the wrapped callable."""
        assert "<BudgetedLLM 'FakeClient.create'>" == repr(BudgetedLLM(FakeClient(None).create))

    async def test_bad_options_are_refused(self) -> None:
        """The wrapper checks its options when it is built."""
        with pytest.raises(TypeError):
            BudgetedLLM("not callable")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="on_abandon"):
            BudgetedLLM(print, on_abandon="never")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Pricing"):
            BudgetedLLM(print, pricing=0.5)  # type: ignore[arg-type]
        chat = BudgetedLLM(print, estimate=lambda kw: {"tokens": 1})  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="Usage"):
            await chat(llm_budget())


# -- streams ----------------------------------------------------------------------------


class TestStream:
    async def test_chunks_pass_through_and_the_final_usage_is_recorded(self) -> None:
        """An OpenAI stream is passed through unchanged; the usage of its last chunk is
        charged once it ends, and the reservation is held until then."""
        budget = llm_budget()
        chunks = openai_chunks(12, 3)
        stream = FakeStream(chunks)
        chat = BudgetedLLM(FakeClient(stream).create)
        result = await chat(budget, messages=MESSAGES, max_tokens=100, stream=True)
        assert isinstance(result, BudgetedStream)
        received = []
        async with result:
            async for chunk in result:
                received.append(chunk)
                if len(received) == 1:
                    assert {TOKENS: 114, CALLS: 1} == (await state(budget))[1]
        assert chunks == received
        assert Usage(input_tokens=12, output_tokens=3) == result.usage
        assert not result.reservation.held
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_anthropic_running_totals_are_merged(self) -> None:
        """Input from message_start and the greatest output total are charged."""
        budget = llm_budget()
        chat = BudgetedLLM(
            FakeClient(FakeStream(anthropic_events(20, 8))).create, usage=anthropic_usage
        )
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)
        async with stream:
            assert 5 == len([chunk async for chunk in stream])
        assert ({TOKENS: 28, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_an_async_generator_function_works(self) -> None:
        """The callable may be an async generator function: it returns the stream."""
        budget = llm_budget()

        async def generate(**kwargs: Any) -> AsyncIterator[object]:
            for chunk in openai_chunks(2, 2):
                yield chunk

        stream = await BudgetedLLM(generate)(budget, messages=MESSAGES, max_tokens=10)
        async with stream:
            async for _ in stream:
                pass
        assert ({TOKENS: 4, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_stream_without_usage_is_charged_the_estimate(self) -> None:
        """Read to the end with no usage report (OpenAI without include_usage): the
        estimate is charged, as for a response without usage."""
        budget = llm_budget()
        chat = BudgetedLLM(FakeClient(FakeStream(openai_chunks(1, 1)[:-1])).create)
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)
        async with stream:
            async for _ in stream:
                pass
        assert ({TOKENS: 114, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_stream_left_early_charges_only_the_call(self) -> None:
        """Leaving an OpenAI stream before its last chunk: nothing was reported, so only
        the call is charged and the tokens are refunded; the stream is closed."""
        budget = llm_budget()
        source = FakeStream(openai_chunks(12, 3))
        stream = await BudgetedLLM(FakeClient(source).create)(
            budget, messages=MESSAGES, max_tokens=100
        )
        async with stream:
            async for _ in stream:
                break
        assert source.closed
        assert ({TOKENS: 0, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()  # an ended stream stays ended
        await stream.aclose()  # and closing again does nothing

    async def test_a_stream_left_early_charges_what_was_reported(self) -> None:
        """Leaving an Anthropic stream after message_start charges its input tokens."""
        budget = llm_budget()
        chat = BudgetedLLM(
            FakeClient(FakeStream(anthropic_events(20, 8))).create, usage=anthropic_usage
        )
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)
        async with stream:
            await stream.__anext__()
        assert ({TOKENS: 21, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_on_abandon_reserved_charges_the_estimate(self) -> None:
        """``on_abandon="reserved"``: an abandoned stream charges its whole estimate."""
        budget = llm_budget()
        chat = BudgetedLLM(
            FakeClient(FakeStream(openai_chunks(12, 3))).create, on_abandon="reserved"
        )
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)
        await stream.__anext__()
        await stream.aclose()
        assert ({TOKENS: 114, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_on_abandon_reserved_charges_more_when_more_is_known(self) -> None:
        """What was reported counts when it passes the estimate."""
        budget = llm_budget()
        chat = BudgetedLLM(
            FakeClient(FakeStream(anthropic_events(500, 8))).create,
            usage=anthropic_usage,
            on_abandon="reserved",
        )
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)
        async with stream:
            await stream.__anext__()
        assert ({TOKENS: 501, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_consumer_cancelled_mid_stream_settles_and_closes(self) -> None:
        """Cancelled while waiting for a chunk: settled as abandoned, stream closed."""
        budget = llm_budget()
        source = FakeStream(anthropic_events(20, 8), fail_after=-1)
        chat = BudgetedLLM(FakeClient(source).create, usage=anthropic_usage)
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)

        async def consume() -> None:
            async for _ in stream:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await source.blocked.wait()
            tg.cancel_scope.cancel()
        assert source.closed
        assert not stream.reservation.held
        assert ({TOKENS: 28, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_broken_stream_settles_and_raises(self) -> None:
        """A stream that fails mid-way charges what was known and re-raises."""
        budget = llm_budget()
        source = FakeStream(anthropic_events(20, 8), fail_after=2)
        chat = BudgetedLLM(FakeClient(source).create, usage=anthropic_usage)
        stream = await chat(budget, messages=MESSAGES, max_tokens=100)

        async def drain() -> None:
            async with stream:
                async for _ in stream:
                    pass

        with pytest.raises(ConnectionError):
            await drain()
        assert source.closed
        assert ({TOKENS: 21, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_a_reservation_settled_by_hand_is_left_alone(self) -> None:
        """Closing a stream whose reservation the caller already settled changes nothing."""
        budget = llm_budget()
        stream = await BudgetedLLM(FakeClient(FakeStream(openai_chunks(1, 1))).create)(
            budget, messages=MESSAGES, max_tokens=10
        )
        stream.reservation.record(tokens=5, calls=1)
        await stream.reservation.commit()
        async with stream:
            await stream.__anext__()  # then abandoned
        assert ({TOKENS: 5, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        finished = await BudgetedLLM(FakeClient(FakeStream(openai_chunks(1, 1))).create)(
            budget, messages=MESSAGES, max_tokens=10
        )
        await finished.reservation.release()
        async with finished:
            async for _ in finished:  # read to the end
                pass
        assert ({TOKENS: 5, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_sources_without_an_async_close_are_fine(self) -> None:
        """A bare async iterator (no close) and one with a sync ``close`` both end well."""
        budget = llm_budget()
        closed: list[str] = []

        class Bare:
            def __init__(self) -> None:
                self.chunks = iter(openai_chunks(1, 1))

            def __aiter__(self) -> Bare:
                return self

            async def __anext__(self) -> object:
                await anyio.lowlevel.checkpoint()
                try:
                    return next(self.chunks)
                except StopIteration:
                    raise StopAsyncIteration from None

        class SyncClose(Bare):
            def close(self) -> None:
                closed.append("sync")

        for source in (Bare(), SyncClose()):
            stream = await BudgetedLLM(FakeClient(source).create)(
                budget, messages=MESSAGES, max_tokens=10
            )
            async with stream:
                await stream.__anext__()
        assert ["sync"] == closed
        assert ({TOKENS: 0, CALLS: 2}, {TOKENS: 0, CALLS: 0}) == await state(budget)
