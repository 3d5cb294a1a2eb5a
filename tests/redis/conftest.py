"""Fixtures of the RedisStore tests: asyncio backends only, stores with private prefixes,
and a private redis-server for the tests that must flush scripts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from aiobudget.stores.redis import RedisStore

_BACKENDS = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.implementation.name == "cpython" and sys.platform != "win32":
    import uvloop

    _BACKENDS.append(
        pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop")
    )


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """redis-py is asyncio only: the Redis tests run on asyncio and uvloop, not trio."""
    return request.param


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A store on the shared Redis, under this test's own prefix."""
    async with RedisStore(redis_url, prefix=redis_prefix) as made:
        yield made


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def private_redis_url() -> Iterator[str]:
    """A redis-server of our own on a free loopback port, for tests that flush scripts
    or otherwise disturb the server; stopped by pid afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - redis-server from PATH, fixed arguments
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the private redis-server did not start")
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
