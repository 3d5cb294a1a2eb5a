# requires: aiohttp
"""Per-API-key budgets in an aiohttp app: middleware for every route, a decorator for one.

Each API key has its own budget. The middleware finds it from the key on the server and
holds one call per request; the expensive route also reserves a token estimate with
``@budgeted`` and records what it really used through ``reservation(request)``. A
client over budget gets a 429 problem+json answer.

Run: python examples/aiohttp_app.py. It starts the server on a free loopback port,
makes a few requests to itself, prints what happened and exits. No model is called.
"""

from __future__ import annotations

import logging

import aiohttp
import anyio
import structlog
from aiohttp import web

from aiobudget import CALLS, TOKENS, Budget, Usage
from aiobudget.aiohttp import budget_middleware, budgeted, reservation

BUDGETS = {
    "key-alice": Budget({CALLS: 10, TOKENS: 1_500}, name="alice"),
    "key-bob": Budget({CALLS: 10, TOKENS: 50_000}, name="bob"),
}


def budget_for(request: web.Request) -> Budget:
    """The caller's budget, found on the server from its API key."""
    key = request.headers.get("X-API-Key", "")
    if key not in BUDGETS:
        raise web.HTTPUnauthorized(text="unknown API key")
    return BUDGETS[key]


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})  # charged the middleware's call


@budgeted(budget_for, tokens=1_000)  # the estimate: prompt plus max output
async def summarize(request: web.Request) -> web.Response:
    text = await request.text()
    await anyio.sleep(0.01)  # the "LLM call"
    used = Usage(input_tokens=len(text) // 4, output_tokens=120)
    reservation(request).record(used)  # charged instead of the estimate
    return web.json_response({"summary": text[:20] + "...", "tokens": used.tokens})


def make_app() -> web.Application:
    app = web.Application(middlewares=[budget_middleware(budget_for, calls=1)])
    app.router.add_get("/hello", hello)
    app.router.add_post("/summarize", summarize)
    return app


async def main() -> None:
    # handler_cancellation: a client that goes away cancels its handler, and the
    # reservation is refunded (aiohttp lets handlers run on by default).
    runner = web.AppRunner(make_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
            calls = [("key-alice", "/hello")] + [("key-alice", "/summarize")] * 3
            calls += [("key-bob", "/summarize"), ("key-eve", "/hello")]
            for key, path in calls:
                method = session.get if path == "/hello" else session.post
                async with method(path, headers={"X-API-Key": key}, data="A long text. " * 80) as r:
                    body = await r.text()
                    left = {
                        name.removeprefix("X-Budget-Remaining-"): value
                        for name, value in r.headers.items()
                        if name.startswith("X-Budget-Remaining-")
                    }
                    print(f"{key:10} {path:11} {r.status}  {body}  remaining={left}")
    finally:
        await runner.cleanup()

    for key, budget in BUDGETS.items():
        snapshot = await budget.snapshot()
        print(f"{key}: spent {dict(snapshot.spent)}, reserved {dict(snapshot.reserved)}")
        assert all(snapshot.spent[d] <= limit.limit for d, limit in snapshot.limits.items())
        assert not any(snapshot.reserved.values())


if __name__ == "__main__":
    # The application decides what to log (a library never does): warnings and up.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main)
