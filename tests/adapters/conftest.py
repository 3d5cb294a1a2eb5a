"""Fixtures of the agent-framework adapter tests: the frameworks run on asyncio only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture
def anyio_backend() -> object:
    """The frameworks (pydantic-ai, the Agents SDK, LangChain, LiteLLM) run on asyncio."""
    return ("asyncio", {})


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
