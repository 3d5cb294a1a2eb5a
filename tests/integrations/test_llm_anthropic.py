"""`BudgetedLLM` with the real ``anthropic`` SDK (``AsyncAnthropic``) over a mock HTTP
API: Messages, plain and streamed, the ``messages.stream`` helper, 429/500/529, an
``overloaded_error`` mid-stream, abandoned and cancelled streams, prompt caching
(reads, five-minute and one-hour writes). Spent is checked against the mocked usage,
priced by hand, exactly.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog

from aiobudget import CALLS, COST, INPUT_TOKENS, OUTPUT_TOKENS, TOKENS, Budget, Pricing, Usage
from aiobudget.llm import BudgetedLLM

from ._llm_api import (
    Gate,
    MockAPI,
    anthropic,
    anthropic_error,
    message_events,
    message_reply,
    sse_reply,
)

pytestmark = [
    pytest.mark.anyio,
    # On trio, the SDK's own stream generators are finalized by the garbage collector
    # (the SDK does not aclose them); that is the SDK's hygiene, not budget accounting.
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <async_generator object (SSEDecoder|AsyncStream|"
        r"AsyncMessageStream)"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]

# claude-sonnet-4.5's published prices (USD per million tokens): input 3, output 15,
# cache read 0.30, five-minute cache write 3.75, one-hour cache write 6
# (https://docs.claude.com/en/docs/about-claude/pricing).
SONNET = Pricing("3", "15", cache_read="0.30", cache_write="3.75", cache_write_1h="6")
# A model name the SDK does not flag as deprecated; the prices above are given by hand.
CALL = {
    "model": "claude-test",
    "messages": [{"role": "user", "content": "x" * 400}],
    "max_tokens": 500,
}


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
        name="anthropic",
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
CACHE = {"read": 10_000, "write": 2_000}
# 50 uncached + 10,000 read + 2,000 written (5 min) in, 300 out (the 12,350):
# 50 x 3 + 10000 x 0.30 + 2000 x 3.75 + 300 x 15 = 150 + 3000 + 7500 + 4500 = 15,150.
BILLED = charged(12_050, 300, 15_150)


async def drain(stream: Any) -> None:
    """Read *stream* to its end inside its ``async with`` block."""
    async with stream:
        async for _ in stream:
            pass


async def state(b: Budget) -> tuple[dict[str, int], dict[str, int]]:
    snapshot = await b.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)


def wrap(api: MockAPI, method: str = "create", **options: Any) -> BudgetedLLM:
    client = api.anthropic()
    target = client.messages.create if method == "create" else client.messages.stream
    return BudgetedLLM(target, pricing=SONNET, **options)


class TestMessages:
    async def test_a_message_charges_every_cache_token(self) -> None:
        """create(): input, cache reads and cache writes, each at its price."""
        api = MockAPI().then(message_reply(50, 300, **CACHE))
        b = budget()
        message = await wrap(api)(b, **CALL)
        assert "Hello!" == message.content[0].text
        assert (BILLED, NOTHING) == await state(b)

    async def test_one_hour_cache_writes_cost_more(self) -> None:
        """500 of the 2,000 written tokens with a one-hour lifetime, at $6 a million:
        150 + 3000 + 1500 x 3.75 + 500 x 6 + 4500 = 16,275."""
        api = MockAPI().then(message_reply(50, 300, write_1h=500, **CACHE))
        b = budget()
        await wrap(api)(b, **CALL)
        assert (charged(12_050, 300, 16_275), NOTHING) == await state(b)

    async def test_the_openai_reader_reads_it_whole(self) -> None:
        """Defect: Usage.from_openai took an Anthropic message for 50 input tokens; it
        now recognises the shape and counts the cache tokens too."""
        api = MockAPI().then(message_reply(50, 300, **CACHE))
        message = await api.anthropic().messages.create(**CALL)
        expected = Usage(
            input_tokens=12_050,
            output_tokens=300,
            cache_read_tokens=10_000,
            cache_write_tokens=2_000,
        )
        assert expected == Usage.from_openai(message)
        assert expected == Usage.from_openai(message.usage)
        assert expected == Usage.from_openai(message.model_dump())
        assert expected == Usage.from_anthropic(message)

    @pytest.mark.parametrize("status", [429, 500, 529])
    async def test_an_error_status_charges_nothing(self, status: int) -> None:
        """A 429, 500 or 529 (overloaded) raises the SDK's error and refunds everything."""
        api = MockAPI().then(anthropic_error(status))
        b = budget()
        with pytest.raises(anthropic.APIStatusError) as caught:
            await wrap(api)(b, **CALL)
        assert status == caught.value.status_code
        assert (NOTHING, NOTHING) == await state(b)


class TestStreams:
    async def test_a_stream_charges_its_totals(self) -> None:
        """create(stream=True): message_start's input and cache, message_delta's totals."""
        api = MockAPI().then(sse_reply(message_events(50, 300, **CACHE)))
        b = budget()
        stream = await wrap(api)(b, stream=True, **CALL)
        async with stream:
            kinds = [event.type async for event in stream]
        assert "message_stop" == kinds[-1]
        assert (BILLED, NOTHING) == await state(b)

    async def test_an_overloaded_error_mid_stream_charges_what_was_sent(self) -> None:
        """An overloaded_error event after message_start: the input and cache (reported
        first) and the one output token so far are charged; the rest is refunded.
        150 + 3000 + 7500 + 1 x 15 = 10,665."""
        api = MockAPI().then(sse_reply(message_events(50, 300, error=True, **CACHE)))
        b = budget()
        stream = await wrap(api)(b, stream=True, **CALL)
        with pytest.raises(anthropic.APIStatusError):
            await drain(stream)
        assert (charged(12_050, 1, 10_665), NOTHING) == await state(b)

    async def test_an_abandoned_stream_charges_what_is_known(self) -> None:
        """Left after message_start: its input and cache are charged, and the call."""
        api = MockAPI().then(sse_reply(message_events(50, 300, **CACHE)))
        b = budget()
        stream = await wrap(api)(b, stream=True, **CALL)
        async with stream:
            async for _ in stream:
                break
        assert (charged(12_050, 1, 10_665), NOTHING) == await state(b)

    async def test_a_stream_cancelled_while_waiting(self) -> None:
        """Cancelled while the provider is slow: what was reported is charged."""
        gate = Gate()
        api = MockAPI().then(sse_reply(message_events(50, 300, **CACHE), gate=gate, after=2))
        b = budget()
        stream = await wrap(api)(b, stream=True, **CALL)

        async def read() -> None:
            async with stream:
                async for _ in stream:
                    pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await gate.reached.wait()
            tg.cancel_scope.cancel()
        assert (charged(12_050, 1, 10_665), NOTHING) == await state(b)


class TestStreamHelper:
    async def test_held_while_entered_then_charged(self) -> None:
        """Defect: messages.stream was settled before any request, charging the whole
        estimate while the real call ran outside the budget. Now the estimate is held
        while the manager is entered and the usage charged when it is left."""
        api = MockAPI().then(sse_reply(message_events(50, 300, **CACHE)))
        b = budget()
        llm = wrap(api, "stream")
        manager = await llm(b, **CALL)
        assert (NOTHING, llm.estimate(CALL).amounts(b.dims)) == await state(b)
        async with manager as stream:
            assert (NOTHING, llm.estimate(CALL).amounts(b.dims)) == await state(b)
            text = [t async for t in stream.text_stream]
        assert ["Hello", "!"] == text
        assert "req_s" == stream.response.headers["request-id"]
        assert (BILLED, NOTHING) == await state(b)

    async def test_get_final_message(self) -> None:
        """get_final_message() alone reads the stream; its usage is charged."""
        api = MockAPI().then(sse_reply(message_events(50, 300, write_1h=500, **CACHE)))
        b = budget()
        async with await wrap(api, "stream")(b, **CALL) as stream:
            message = await stream.get_final_message()
        assert 300 == message.usage.output_tokens
        assert (charged(12_050, 300, 16_275), NOTHING) == await state(b)

    async def test_iterating_events(self) -> None:
        """Iterating the helper's events charges the same."""
        api = MockAPI().then(sse_reply(message_events(50, 300, **CACHE)))
        b = budget()
        async with await wrap(api, "stream")(b, **CALL) as stream:
            async for _ in stream:
                pass
        assert (BILLED, NOTHING) == await state(b)

    async def test_abandoned(self) -> None:
        """Left after the first event: what message_start reported is charged."""
        api = MockAPI().then(sse_reply(message_events(50, 300, **CACHE)))
        b = budget()
        async with await wrap(api, "stream")(b, **CALL) as stream:
            async for _ in stream:
                break
        assert (charged(12_050, 1, 10_665), NOTHING) == await state(b)

    async def test_overloaded_mid_stream(self) -> None:
        """An overloaded_error event mid-stream raises through the block; what was
        reported is charged."""
        api = MockAPI().then(sse_reply(message_events(50, 300, error=True, **CACHE)))
        b = budget()
        manager = await wrap(api, "stream")(b, **CALL)
        with pytest.raises(anthropic.APIStatusError):
            async with manager as stream:
                await stream.get_final_message()
        assert (charged(12_050, 1, 10_665), NOTHING) == await state(b)

    @pytest.mark.parametrize("status", [429, 500, 529])
    async def test_an_error_status_on_enter_refunds(self, status: int) -> None:
        """An error status when the helper sends its request refunds everything."""
        api = MockAPI().then(anthropic_error(status))
        b = budget()
        manager = await wrap(api, "stream")(b, **CALL)
        with pytest.raises(anthropic.APIStatusError):
            async with manager:
                pytest.fail("not entered")
        assert (NOTHING, NOTHING) == await state(b)

    async def test_a_cache_write_without_its_price_charges_the_estimate(self) -> None:
        """A Pricing without cache-write prices cannot price the usage: the call raises
        InvalidAmount and the estimate is charged, never less."""
        api = MockAPI().then(message_reply(50, 300, **CACHE))
        b = budget()
        llm = BudgetedLLM(api.anthropic().messages.create, pricing=Pricing("3", "15"))
        with pytest.raises(ValueError, match="cache_write"):
            await llm(b, **CALL)
        assert (llm.estimate(CALL).amounts(b.dims), NOTHING) == await state(b)
