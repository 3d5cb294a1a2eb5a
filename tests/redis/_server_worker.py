"""A server of test_shared_servers: ``python _server_worker.py FRAMEWORK URL PREFIX NAME``.

Serves ``GET /work`` on a budget of 50 calls in Redis, one call per served request:
with `budget_middleware` on aiohttp (FRAMEWORK ``aiohttp``), or with a `BudgetDependency`
on FastAPI served by uvicorn (``fastapi``). Listens on a free loopback port, prints it,
and serves until terminated.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

from aiobudget import Budget, RedisStore

LIMIT = {"calls": 50}


async def serve_aiohttp(budget: Budget) -> None:
    from aiohttp import web

    from aiobudget.aiohttp import budget_middleware

    async def work(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)  # requests overlap: reservations are held meanwhile
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[budget_middleware(lambda _: budget, calls=1)])
    app.router.add_get("/work", work)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_fastapi(budget: Budget) -> None:
    import uvicorn
    from fastapi import Depends, FastAPI

    from aiobudget.fastapi import BudgetDependency

    app = FastAPI()
    metered = BudgetDependency(lambda _: budget, calls=1)

    # No annotated parameters: this module's annotations are strings FastAPI cannot
    # resolve for locals, so the dependency is attached to the route instead.
    @app.get("/work", dependencies=[Depends(metered)])
    async def work() -> dict[str, bool]:
        await asyncio.sleep(0.02)  # requests overlap: reservations are held meanwhile
        return {"ok": True}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections queue from now on: no need to wait for startup
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        backlog=1024,
    )
    server = uvicorn.Server(config)  # stops gracefully on SIGTERM by itself
    print(sock.getsockname()[1], flush=True)
    try:
        await server.serve([sock])
    finally:
        sock.close()


SERVERS = {"aiohttp": serve_aiohttp, "fastapi": serve_fastapi}


async def main(framework: str, url: str, prefix: str, name: str) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        await SERVERS[framework](Budget(LIMIT, name=name, store=store))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
