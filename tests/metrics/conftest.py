"""Fixtures of the metrics tests: collectors in registries of their own, closed after."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aiobudget import _log
from aiobudget.metrics import PrometheusCollector

Make = Callable[..., tuple[CollectorRegistry, PrometheusCollector]]


@pytest.fixture
def collector() -> Iterator[Make]:
    """``collector(budgets, **options)``: a `PrometheusCollector` registered in a registry
    of its own; every one made is closed after the test."""
    made: list[PrometheusCollector] = []

    def make(budgets: Any = (), **options: Any) -> tuple[CollectorRegistry, PrometheusCollector]:
        registry = CollectorRegistry()
        made.append(PrometheusCollector(budgets, **options))
        registry.register(made[-1])
        return registry, made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture(autouse=True)
def nothing_left_observing() -> Iterator[None]:
    """After each test (and its exporters closed) the logger is the unobserved one."""
    yield
    assert type(_log.logger) is _log._Logger


@pytest.fixture
def name() -> str:
    """A budget name of this test's own: counters are kept per process, by name."""
    return f"b-{uuid.uuid4().hex[:8]}"
