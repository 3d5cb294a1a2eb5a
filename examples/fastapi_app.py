# requires: fastapi, httpx, uvicorn
"""Per-API-key budgets in a FastAPI app: served by uvicorn, called with httpx.

Each API key has its own budget of requests and tokens. The server finds the budget
from the key (a client can only name its key, never a budget); every request reserves a
call for its lifetime, and the "LLM call" inside reserves its own token estimate from
the same budget. A client over budget gets a 429 problem+json answer.

Run: python examples/fastapi_app.py. It starts the server on a free loopback port,
makes a few requests to itself, prints what happened and exits. No model is called.
The budgets live in memory; with AIOBUDGET_REDIS_URL=redis://... set they live in Redis
(where every server process would share them; AIOBUDGET_REDIS_PREFIX picks the key
prefix), reset at start.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Annotated

import anyio
import httpx
import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from aiobudget import CALLS, TOKENS, Budget, Reservation, Store
from aiobudget.fastapi import BudgetDependency
from aiobudget.llm import BudgetedLLM

LIMITS = {"key-alice": {CALLS: 3, TOKENS: 2_000}, "key-bob": {CALLS: 10, TOKENS: 20_000}}


def open_store() -> Store | None:
    url = os.environ.get("AIOBUDGET_REDIS_URL")
    if not url:
        return None  # each Budget gets its own MemoryStore
    from aiobudget import RedisStore  # noqa: PLC0415 - Redis mode only (the redis extra)

    store: Store = RedisStore(url, prefix=os.environ.get("AIOBUDGET_REDIS_PREFIX", "aiobudget"))
    return store


STORE = open_store()
BUDGETS = {
    key: Budget(limits, name=key.removeprefix("key-"), store=STORE)
    for key, limits in LIMITS.items()
}


def budget_for(request: Request) -> Budget:
    """The caller's budget, found on the server from its API key."""
    key = request.headers.get("x-api-key", "")
    if key not in BUDGETS:
        raise HTTPException(401, "unknown API key")
    return BUDGETS[key]


# Every request holds one call for its lifetime; a served request is charged it.
Metered = Annotated[Reservation, Depends(BudgetDependency(budget_for, calls=1))]


async def fake_llm(*, messages: list[dict[str, str]], max_tokens: int) -> dict[str, object]:
    """Stands in for client.chat.completions.create: answers with an OpenAI-shaped dict."""
    await anyio.sleep(0.01)
    prompt = sum(len(m["content"]) for m in messages) // 4
    return {
        "choices": [{"message": {"content": "Hello!"}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": max_tokens // 3},
    }


# The request already counts the call, so the LLM call counts only tokens.
chat_llm = BudgetedLLM(fake_llm, calls=0)


class Prompt(BaseModel):
    text: str


app = FastAPI()


@app.post("/chat")
async def chat(prompt: Prompt, reservation: Metered) -> dict[str, object]:
    reply = await chat_llm(
        reservation.budget, messages=[{"role": "user", "content": prompt.text}], max_tokens=600
    )
    return {"answer": reply["choices"][0]["message"]["content"], "usage": reply["usage"]}


async def main() -> None:
    for budget in BUDGETS.values():
        await budget.reset()  # a new period (in Redis, also a clean demo on every run)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for key in ("key-alice",) * 4 + ("key-bob", "key-mallory"):
                response = await client.post(
                    "/chat", json={"text": "Say hello. " * 20}, headers={"x-api-key": key}
                )
                left = {
                    name.removeprefix("x-budget-remaining-"): value
                    for name, value in response.headers.items()
                    if name.startswith("x-budget-remaining-")
                }
                print(f"{key:12} {response.status_code}  {response.json()}  remaining={left}")
        server.should_exit = True
    sock.close()

    for key, budget in BUDGETS.items():
        snapshot = await budget.snapshot()
        print(f"{key}: spent {dict(snapshot.spent)}, reserved {dict(snapshot.reserved)}")
        assert all(snapshot.spent[d] <= limit.limit for d, limit in snapshot.limits.items())
        assert not any(snapshot.reserved.values())


if __name__ == "__main__":
    # The application decides what to log (a library never does): warnings and up.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main)
