"""Shared fixtures: the async backend matrix and the real Redis."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

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
