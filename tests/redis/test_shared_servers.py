"""Two server processes (aiohttp, or FastAPI on uvicorn) share one Redis-backed budget: of
200 concurrent requests spread over both, exactly as many as the budget allows are served,
and the others get the RFC 9457 problem."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.abc import Process

import aiobudget
from aiobudget import Budget
from aiobudget.stores.redis import RedisStore

from ._support import eventually

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.redis,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),  # aiohttp, uvicorn: asyncio only
]

WORKER = str(Path(__file__).with_name("_server_worker.py"))
_SRC = str(Path(aiobudget.__file__).resolve().parents[1])  # the aiobudget under test
REQUESTS = 200
LIMIT = 50  # the workers' budget: {"calls": 50}
PROBLEM_JSON = "application/problem+json"


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": _SRC if not path else f"{_SRC}{os.pathsep}{path}"}


async def _port(process: Process) -> int:
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        line += await process.stdout.receive()
    return int(line)


@pytest.mark.parametrize("framework", ["aiohttp", "fastapi"])
async def test_two_servers_serve_exactly_the_budget(
    framework: str, redis_url: str, redis_prefix: str
) -> None:
    """200 concurrent requests over two server processes, 50 calls: 50 served, 150 get
    a 429 problem on 'calls', and the budget ends with 50 spent and nothing reserved."""
    pytest.importorskip(framework)
    if framework == "fastapi":
        pytest.importorskip("uvicorn")
    name = f"served-{uuid.uuid4().hex[:6]}"
    processes: list[Process] = []
    try:
        for _ in range(2):
            command = [sys.executable, WORKER, framework, redis_url, redis_prefix, name]
            process = await anyio.open_process(command, env=_env())
            processes.append(process)  # one by one: each is stopped even if the next fails
        with anyio.fail_after(20):
            ports = [await _port(process) for process in processes]
        statuses: list[int] = []
        denials: list[tuple[str, dict[str, object]]] = []  # (content type, body) of each 429
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def call(i: int) -> None:
                url = f"http://127.0.0.1:{ports[i % 2]}/work"
                async with session.get(url) as response:
                    body = await response.read()
                    statuses.append(response.status)
                    if 429 == response.status:
                        denials.append((response.headers["Content-Type"], json.loads(body)))

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i in range(REQUESTS):
                        tg.start_soon(call, i)
        assert LIMIT == statuses.count(200)
        assert REQUESTS - LIMIT == statuses.count(429)
        assert {PROBLEM_JSON} == {content_type for content_type, _ in denials}
        assert all(
            ("calls", 429, name) == (body["dim"], body["status"], body["budget"])
            for _, body in denials
        )
        async with RedisStore(redis_url, prefix=redis_prefix) as store:
            budget = Budget({"calls": LIMIT}, name=name, store=store)

            # A FastAPI dependency's exit (the settle) runs after its response was sent.
            async def settled() -> bool:
                return (await budget.snapshot()).reserved["calls"] == 0

            await eventually(settled)
            snapshot = await budget.snapshot()
        assert ({"calls": LIMIT}, {"calls": 0}) == (dict(snapshot.spent), dict(snapshot.reserved))
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                await process.aclose()
