"""Shared fixtures: the async backend matrix and the real Redis."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# LiteLLM fetches its price map from the network when imported, unless told to use the
# copy it ships; tests (and the examples and docs they run) stay offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

settings.register_profile(
    "default",
    deadline=None,  # a loaded 2-core CI box has long GC pauses; speed is benchmarked, not timed
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=150)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_BACKENDS = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.implementation.name == "cpython" and sys.platform != "win32":
    import uvloop

    _BACKENDS.append(
        pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop")
    )
_BACKENDS.append(pytest.param(("trio", {}), id="trio"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Every async test runs on asyncio, asyncio with uvloop, and trio."""
    return request.param


REDIS_URL = os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("AIOBUDGET_REQUIRE_REDIS") == "1"


def _redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis the tests use; skipped without one, a failure in CI."""
    if not _redis_answers(REDIS_URL):
        message = (
            f"no Redis answers at {REDIS_URL} (start redis-server, or set AIOBUDGET_REDIS_URL)"
        )
        if REQUIRE_REDIS:
            pytest.fail(f"AIOBUDGET_REQUIRE_REDIS=1 but {message}")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys (and only they) are deleted afterwards."""
    import redis

    prefix = f"aiobudget-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
