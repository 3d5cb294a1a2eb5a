"""A mock of the OpenAI and Anthropic HTTP APIs for the real SDK clients.

The SDKs (``openai``, ``anthropic``: test dependencies only) talk to an
``httpx2.MockTransport`` that answers with bodies shaped like the real APIs: Chat
Completions, Responses and Messages, as JSON or as server-sent events, error statuses
and errors in the middle of a stream. Nothing leaves the process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

httpx2 = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

Reply = Callable[[dict[str, Any]], Any]  # the request's JSON -> an httpx2.Response


class MockAPI:
    """Answers each request with the next planned reply, and keeps the requests."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def then(self, reply: Reply) -> MockAPI:
        self.replies.append(reply)
        return self

    async def handler(self, request: Any) -> Any:
        body = json.loads(request.content or b"{}")
        self.requests.append(body)
        self.paths.append(request.url.path)
        return self.replies.pop(0)(body)

    def openai(self) -> Any:
        return openai.AsyncOpenAI(
            api_key="sk-test",
            base_url="http://api.test/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler)),
        )

    def anthropic(self) -> Any:
        return anthropic.AsyncAnthropic(
            api_key="sk-ant-test",
            base_url="http://api.test",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler)),
        )


# -- bodies ----------------------------------------------------------------------------


def json_reply(body: dict[str, Any], status: int = 200) -> Reply:
    return lambda _: httpx2.Response(status, json=body, headers={"request-id": "req_1"})


def openai_error(status: int) -> Reply:
    kind = {429: "rate_limit_exceeded", 500: "server_error"}.get(status, "error")
    return json_reply(
        {"error": {"message": f"mock {status}", "type": kind, "param": None, "code": kind}},
        status,
    )


def anthropic_error(status: int) -> Reply:
    kind = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[status]
    return json_reply(
        {"type": "error", "error": {"type": kind, "message": f"mock {status}"}}, status
    )


class Gate:
    """Holds a streamed body after its first events until opened (a slow provider)."""

    def __init__(self) -> None:
        self.reached = anyio.Event()
        self.open = anyio.Event()


def sse_reply(
    events: list[tuple[str | None, Any]], *, gate: Gate | None = None, after: int = 1
) -> Reply:
    """Server-sent events (``event:`` name or None, data); *gate* blocks after *after*."""

    async def body() -> AsyncIterator[bytes]:
        for i, (name, data) in enumerate(events):
            if gate is not None and i == after:
                gate.reached.set()
                await gate.open.wait()
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {name}\n" if name else ""
            yield f"{head}data: {text}\n\n".encode()

    return lambda _: httpx2.Response(
        200, headers={"content-type": "text/event-stream", "request-id": "req_s"}, content=body()
    )


def chat_usage(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def chat_completion(prompt: int, completion: int, **details: int) -> Reply:
    return json_reply(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": chat_usage(prompt, completion, **details),
            "system_fingerprint": "fp_1",
        }
    )


def chat_chunks(
    prompt: int, completion: int, *, usage: bool = True, **details: int
) -> list[tuple[str | None, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    chunks: list[tuple[str | None, Any]] = [
        (
            None,
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
                "usage": None,
            },
        ),
        (
            None,
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
                "usage": None,
            },
        ),
        (
            None,
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}],
                "usage": None,
            },
        ),
        (
            None,
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": None,
            },
        ),
    ]
    if usage:
        chunks.append(
            (None, {**base, "choices": [], "usage": chat_usage(prompt, completion, **details)})
        )
    chunks.append((None, "[DONE]"))
    return chunks


def responses_usage(
    input_tokens: int, output_tokens: int, *, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def _response(status: str, usage: dict[str, Any] | None, text: str = "") -> dict[str, Any]:
    output = []
    if status == "completed":
        output = [
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        ]
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": "gpt-5-mini",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def response_reply(input_tokens: int, output_tokens: int, **details: int) -> Reply:
    return json_reply(
        _response("completed", responses_usage(input_tokens, output_tokens, **details), "Hello!")
    )


def response_events(
    input_tokens: int, output_tokens: int, **details: int
) -> list[tuple[str | None, Any]]:
    item = {
        "id": "msg_1",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response("in_progress", None)},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": part,
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hello",
            "logprobs": [],
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "!",
            "logprobs": [],
        },
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "text": "Hello!",
            "logprobs": [],
        },
        {
            "type": "response.content_part.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": "Hello!"},
        },
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**item, "status": "completed", "content": [{**part, "text": "Hello!"}]},
        },
        {
            "type": "response.completed",
            "response": _response(
                "completed", responses_usage(input_tokens, output_tokens, **details), "Hello!"
            ),
        },
    ]
    return [(event["type"], {**event, "sequence_number": i}) for i, event in enumerate(events)]


def anthropic_usage_body(
    input_tokens: int, output_tokens: int, *, read: int = 0, write: int = 0, write_1h: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write - write_1h,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(usage: dict[str, Any], content: list[Any], stop: str | None) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def message_reply(input_tokens: int, output_tokens: int, **cache: int) -> Reply:
    usage = anthropic_usage_body(input_tokens, output_tokens, **cache)
    return json_reply(_message(usage, [{"type": "text", "text": "Hello!"}], "end_turn"))


def message_events(
    input_tokens: int, output_tokens: int, *, error: bool = False, **cache: int
) -> list[tuple[str | None, Any]]:
    """message_start (input and cache), text deltas, message_delta (cumulative totals);
    with *error*, an ``overloaded_error`` event after the first delta instead."""
    start = anthropic_usage_body(input_tokens, 1, **cache)
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": _message(start, [], None)}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"},
            },
        ),
    ]
    if error:
        events.append(
            (
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
        )
        return events
    final = {
        k: v
        for k, v in anthropic_usage_body(input_tokens, output_tokens, **cache).items()
        if k != "cache_creation"
    }
    events += [
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "!"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": final,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


class AutoAPI(MockAPI):
    """Answers every request by its path and ``stream`` flag with fixed usage: Chat
    Completions 1,200 + 300 tokens (200 cached), Responses the same, Messages 1,000 +
    300 tokens plus 200 read from the cache. For documentation examples."""

    async def handler(self, request: Any) -> Any:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        stream = bool(body.get("stream"))
        if path.endswith("/chat/completions"):
            self.then(
                sse_reply(chat_chunks(1_200, 300, cached=200))
                if stream
                else chat_completion(1_200, 300, cached=200)
            )
        elif path.endswith("/responses"):
            self.then(
                sse_reply(response_events(1_200, 300, cached=200))
                if stream
                else response_reply(1_200, 300, cached=200)
            )
        else:
            self.then(
                sse_reply(message_events(1_000, 300, read=200))
                if stream
                else message_reply(1_000, 300, read=200)
            )
        return await super().handler(request)


def patch_clients(monkeypatch: pytest.MonkeyPatch, api: MockAPI) -> None:
    """Make ``AsyncOpenAI()`` and ``AsyncAnthropic()`` built anywhere talk to *api*."""
    for module, cls, base in (
        (openai, "AsyncOpenAI", "http://api.test/v1"),
        (anthropic, "AsyncAnthropic", "http://api.test"),
    ):
        client_class = getattr(module, cls)
        original = client_class.__init__

        def init(
            self: Any, *args: Any, _original: Any = original, _base: str = base, **kwargs: Any
        ) -> None:
            kwargs.setdefault("api_key", "sk-test")
            kwargs["base_url"] = _base
            kwargs["max_retries"] = 0
            kwargs["http_client"] = httpx2.AsyncClient(transport=httpx2.MockTransport(api.handler))
            _original(self, *args, **kwargs)

        monkeypatch.setattr(client_class, "__init__", init)
