"""`BudgetedLLM` with the real ``openai`` SDK (``AsyncOpenAI``) over a mock HTTP API:
Chat Completions and Responses, plain and streamed, the two stream helpers, error
statuses, errors mid-stream, abandoned and cancelled streams. Spent is checked against
the mocked usage, priced by hand, exactly.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from aiobudget import CALLS, COST, INPUT_TOKENS, OUTPUT_TOKENS, TOKENS, Budget, Pricing
from aiobudget.llm import BudgetedLLM

from ._llm_api import (
    Gate,
    MockAPI,
    chat_chunks,
    chat_completion,
    openai,
    openai_error,
    response_events,
    response_reply,
    sse_reply,
)

pytestmark = [
    pytest.mark.anyio,
    # On trio, the SDK's own stream generators are finalized by the garbage collector
    # (the SDK does not aclose them); that is the SDK's hygiene, not budget accounting.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <async_generator object (SSEDecoder|AsyncStream)"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]

# gpt-4o's published prices (USD per million tokens): input 2.50, cached input 1.25,
# output 10 (https://openai.com/api/pricing/).
GPT_4O = Pricing("2.50", "10", cache_read="1.25")
MESSAGES = [{"role": "user", "content": "x" * 400}]  # 100 tokens of text + 4
CHAT = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 1_000}
RESPONSE = {"model": "gpt-4o", "input": "x" * 400, "max_output_tokens": 1_000}


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


def budget() -> Budget:
    return Budget(
        {TOKENS: 10**6, INPUT_TOKENS: 10**6, OUTPUT_TOKENS: 10**6, COST: 10**9, CALLS: 100},
        name="openai",
    )


def charged(prompt: int, completion: int, cost: int, calls: int = 1) -> dict[str, int]:
    return {
        TOKENS: prompt + completion,
        INPUT_TOKENS: prompt,
        OUTPUT_TOKENS: completion,
        COST: cost,
        CALLS: calls,
    }


NOTHING = charged(0, 0, 0, 0)


async def drain(stream: Any) -> None:
    """Read *stream* to its end inside its ``async with`` block."""
    async with stream:
        async for _ in stream:
            pass


async def state(b: Budget) -> tuple[dict[str, int], dict[str, int]]:
    snapshot = await b.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)


def wrap(api: MockAPI, method: str, **options: Any) -> BudgetedLLM:
    client = api.openai()
    target = {
        "create": client.chat.completions.create,
        "stream": client.chat.completions.stream,
        "responses": client.responses.create,
        "responses_stream": client.responses.stream,
    }[method]
    return BudgetedLLM(target, pricing=GPT_4O, **options)


# 1,000 prompt tokens of which 600 cached, 200 completion tokens:
# 400 x 2.50 + 600 x 1.25 + 200 x 10 = 1000 + 750 + 2000 = 3,750 micro-dollars.
BILLED = charged(1_000, 200, 3_750)


class TestChatCompletions:
    async def test_a_response_charges_its_usage_and_cost(self) -> None:
        """create(): the usage and its cost (cached input at its own price) are charged."""
        api = MockAPI().then(chat_completion(1_000, 200, cached=600))
        b = budget()
        reply = await wrap(api, "create")(b, **CHAT)
        assert "Hello!" == reply.choices[0].message.content
        assert (BILLED, NOTHING) == await state(b)

    async def test_a_stream_charges_its_final_usage(self) -> None:
        """create(stream=True): include_usage is asked for, and the last chunk's usage
        is charged when the stream ends."""
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200, cached=600)))
        b = budget()
        stream = await wrap(api, "create")(b, stream=True, **CHAT)
        assert {"include_usage": True} == api.requests[0]["stream_options"]
        async with stream:
            text = [c.choices[0].delta.content async for c in stream if c.choices]
        assert ["", "Hel", "lo", None] == text
        assert (BILLED, NOTHING) == await state(b)

    async def test_a_stream_forwards_the_sdk_streams_attributes(self) -> None:
        """The wrapped stream is still the SDK's: .response and its headers are there."""
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200, cached=600)))
        b = budget()
        stream = await wrap(api, "create")(b, stream=True, **CHAT)
        async with stream:
            assert "req_s" == stream.response.headers["request-id"]
            async for _ in stream:
                pass
        assert (BILLED, NOTHING) == await state(b)

    async def test_a_stream_told_not_to_report_usage_is_warned_about_first(self) -> None:
        """include_usage=False is respected, warned about before the call, and the
        stream (which reports nothing) is charged its whole estimate."""
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200, usage=False)))
        b = budget()
        llm = wrap(api, "create")
        with capture_logs() as logs:
            stream = await llm(b, stream=True, stream_options={"include_usage": False}, **CHAT)
            assert ["llm.stream_without_usage"] == [
                e["event"] for e in logs if e["event"].startswith("llm.")
            ]
        assert {"include_usage": False} == api.requests[0]["stream_options"]
        async with stream:
            async for _ in stream:
                pass
        estimate = llm.estimate(CHAT)
        assert (estimate.amounts(b.dims), NOTHING) == await state(b)

    @pytest.mark.parametrize("status", [429, 500])
    async def test_an_error_status_charges_nothing(self, status: int) -> None:
        """A 429 or 500 raises the SDK's error and refunds everything."""
        api = MockAPI().then(openai_error(status))
        b = budget()
        with pytest.raises(openai.APIStatusError) as caught:
            await wrap(api, "create")(b, **CHAT)
        assert status == caught.value.status_code
        assert (NOTHING, NOTHING) == await state(b)

    async def test_an_error_mid_stream_charges_the_call(self) -> None:
        """An error event in the stream raises; nothing was reported, so the call is
        charged (on_abandon="known") and the estimate refunded."""
        error = (None, {"error": {"message": "boom", "type": "server_error"}})
        events = [*chat_chunks(1_000, 200)[:2], error]
        api = MockAPI().then(sse_reply(events))
        b = budget()
        stream = await wrap(api, "create")(b, stream=True, **CHAT)
        with pytest.raises(openai.APIError):
            await drain(stream)
        assert (charged(0, 0, 0), NOTHING) == await state(b)

    @pytest.mark.parametrize("on_abandon", ["known", "reserved"])
    async def test_an_abandoned_stream(self, on_abandon: str) -> None:
        """Left after the first chunk: the call alone ("known") or the whole estimate
        ("reserved") is charged."""
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200)))
        b = budget()
        llm = wrap(api, "create", on_abandon=on_abandon)
        stream = await llm(b, stream=True, **CHAT)
        async with stream:
            async for _ in stream:
                break
        expected = charged(0, 0, 0) if on_abandon == "known" else llm.estimate(CHAT).amounts(b.dims)
        assert (expected, NOTHING) == await state(b)

    async def test_a_stream_cancelled_while_waiting_for_a_chunk(self) -> None:
        """Cancelled while the provider is slow: the call is charged, the rest refunded,
        and nothing stays reserved."""
        gate = Gate()
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200), gate=gate, after=2))
        b = budget()
        stream = await wrap(api, "create")(b, stream=True, **CHAT)

        async def read() -> None:
            async with stream:
                async for _ in stream:
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await gate.reached.wait()
            tg.cancel_scope.cancel()
        assert (charged(0, 0, 0), NOTHING) == await state(b)


class TestChatStreamHelper:
    async def test_holds_the_reservation_while_entered_and_charges_the_usage(self) -> None:
        """chat.completions.stream: nothing is settled before the request is sent; the
        estimate is held while the manager is entered, and the usage charged at exit."""
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200, cached=600)))
        b = budget()
        llm = wrap(api, "stream")
        manager = await llm(b, **CHAT)
        assert [] == api.requests  # not sent yet
        estimate = llm.estimate(CHAT).amounts(b.dims)
        async with manager as stream:
            assert (NOTHING, estimate) == await state(b)
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
            assert 1_000 == final.usage.prompt_tokens
        assert {"include_usage": True} == api.requests[0]["stream_options"]
        assert (BILLED, NOTHING) == await state(b)

    async def test_get_final_completion_alone_is_enough(self) -> None:
        """Without iterating, get_final_completion() reads the stream and its usage."""
        api = MockAPI().then(sse_reply(chat_chunks(1_000, 200, cached=600)))
        b = budget()
        async with await wrap(api, "stream")(b, **CHAT) as stream:
            await stream.get_final_completion()
        assert (BILLED, NOTHING) == await state(b)

    async def test_an_error_status_on_enter_refunds(self) -> None:
        """A 429 when the helper sends its request refunds everything."""
        api = MockAPI().then(openai_error(429))
        b = budget()
        manager = await wrap(api, "stream")(b, **CHAT)
        with pytest.raises(openai.RateLimitError):
            async with manager:
                pytest.fail("not entered")
        assert (NOTHING, NOTHING) == await state(b)


class TestResponses:
    async def test_a_response_charges_its_usage_and_cost(self) -> None:
        """responses.create(): input_tokens_details.cached_tokens priced as cache reads."""
        api = MockAPI().then(response_reply(1_000, 200, cached=600))
        b = budget()
        response = await wrap(api, "responses")(b, **RESPONSE)
        assert "Hello!" == response.output_text
        assert (BILLED, NOTHING) == await state(b)

    async def test_a_stream_charges_the_completed_events_usage(self) -> None:
        """responses.create(stream=True): response.completed carries the usage."""
        api = MockAPI().then(sse_reply(response_events(1_000, 200, cached=600)))
        b = budget()
        stream = await wrap(api, "responses")(b, stream=True, **RESPONSE)
        async with stream:
            kinds = [event.type async for event in stream]
        assert "response.completed" == kinds[-1]
        assert "stream_options" not in api.requests[0]  # a chat-only option
        assert (BILLED, NOTHING) == await state(b)

    async def test_the_stream_helper(self) -> None:
        """responses.stream: held while entered, the final response's usage charged."""
        api = MockAPI().then(sse_reply(response_events(1_000, 200, cached=600)))
        b = budget()
        llm = wrap(api, "responses_stream")
        async with await llm(b, **RESPONSE) as stream:
            assert (NOTHING, llm.estimate(RESPONSE).amounts(b.dims)) == await state(b)
            response = await stream.get_final_response()
            assert "Hello!" == response.output_text
        assert (BILLED, NOTHING) == await state(b)

    async def test_the_stream_helper_iterated(self) -> None:
        """responses.stream, iterating the events: the same charge."""
        api = MockAPI().then(sse_reply(response_events(1_000, 200, cached=600)))
        b = budget()
        async with await wrap(api, "responses_stream")(b, **RESPONSE) as stream:
            async for _ in stream:
                pass
        assert (BILLED, NOTHING) == await state(b)

    async def test_the_stream_helper_abandoned(self) -> None:
        """responses.stream left after one event: the call alone is charged."""
        api = MockAPI().then(sse_reply(response_events(1_000, 200)))
        b = budget()
        async with await wrap(api, "responses_stream")(b, **RESPONSE) as stream:
            async for _ in stream:
                break
        assert (charged(0, 0, 0), NOTHING) == await state(b)

    async def test_reasoning_tokens_are_output(self) -> None:
        """Reasoning tokens are part of output_tokens, billed once at the output price."""
        api = MockAPI().then(response_reply(1_000, 3_000, reasoning=2_500))
        b = budget()
        await wrap(api, "responses")(b, **{**RESPONSE, "max_output_tokens": 4_000})
        # 1000 x 2.50 + 3000 x 10 = 32,500
        assert (charged(1_000, 3_000, 32_500), NOTHING) == await state(b)


class TestNotAResponse:
    async def test_a_sync_stream_raises_type_error_and_charges_the_estimate(self) -> None:
        """A sync iterator (a sync client's stream: its request is out) is no response:
        TypeError, and the estimate is charged rather than nothing."""

        def sync_stream(**_: Any) -> Iterator[int]:
            yield 1

        b = budget()
        llm = BudgetedLLM(sync_stream, pricing=GPT_4O)
        with pytest.raises(TypeError, match="sync"):
            await llm(b, **CHAT)
        assert (llm.estimate(CHAT).amounts(b.dims), NOTHING) == await state(b)

    async def test_a_sync_context_manager_raises_type_error_and_refunds(self) -> None:
        """A sync stream manager (nothing sent until entered) is refused and refunded."""
        client = openai.OpenAI(api_key="sk-test", base_url="http://api.test/v1")
        b = budget()
        with pytest.raises(TypeError, match="sync"):
            await BudgetedLLM(client.chat.completions.stream, pricing=GPT_4O)(b, **CHAT)
        assert (NOTHING, NOTHING) == await state(b)
        client.close()
