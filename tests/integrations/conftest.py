"""Fixtures the web integration tests share: quiet logs, and the stores to serve from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from aiobudget import MemoryStore, RedisStore, Store


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """structlog configured to drop everything (denials log at INFO), then reset."""
    structlog.configure(
        processors=[],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    """Where the served budgets live: in memory, and in a real Redis."""
    if request.param == "memory":
        return MemoryStore()
    pytest.importorskip("redis")
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return RedisStore(url, prefix=prefix)
