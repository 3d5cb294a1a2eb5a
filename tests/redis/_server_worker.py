"""An aiohttp server of test_shared_servers: ``python _server_worker.py URL PREFIX NAME``.

Serves ``GET /work`` with `budget_middleware` (one call per served request) on a budget in
Redis; listens on a free loopback port, prints it, and serves until terminated.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from aiobudget import Budget
from aiobudget.aiohttp import budget_middleware
from aiobudget.stores.redis import RedisStore


async def main(url: str, prefix: str, name: str) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        budget = Budget({"calls": 50}, name=name, store=store)

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


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
