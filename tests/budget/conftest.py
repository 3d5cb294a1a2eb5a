"""Fixtures of the Budget tests: structlog left as each test found it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Every test starts and ends with structlog unconfigured.

    ``capture_logs()`` leaves structlog marked as configured, after which aiobudget emits
    its DEBUG events; without this, a load test running after a logging test would print
    hundreds of thousands of lines.
    """
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def quiet_logs() -> None:
    """structlog configured as a production application would: WARNING and above only,
    and nothing printed (load tests make many denials and warnings)."""
    structlog.configure(
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
