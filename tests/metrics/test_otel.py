"""`instrument`: the same metrics through OpenTelemetry, read with the SDK's
InMemoryMetricReader."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aiobudget import Budget, BudgetExhausted, Limit
from aiobudget.metrics import BUCKETS, METRICS, Instrumentation, instrument

from ._support import FaultyStore, Samples, expected_gauges, labels, of_budget, scrape
from .conftest import Make

pytestmark = pytest.mark.anyio


class Otel:
    """A meter provider with an in-memory reader, and what `instrument` made on it."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.made: list[Instrumentation] = []

    def instrument(self, budgets: Any = (), **options: Any) -> Instrumentation:
        self.made.append(instrument(self.provider, budgets=budgets, **options))
        return self.made[-1]

    def collect(self) -> tuple[Samples, dict[tuple[str, Any], Any]]:
        """One collection: gauge and counter values keyed like a scrape's samples
        (counters with ``_total``), and the histogram data points by attributes."""
        values: Samples = {}
        histograms: dict[tuple[str, Any], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                assert "aiobudget" == scope.scope.name
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = tuple(sorted(point.attributes.items()))
                        if metric.name == "aiobudget_wait_seconds":
                            histograms[metric.name, key] = point
                            continue
                        kind = type(metric.data).__name__
                        name = metric.name + ("_total" if kind == "Sum" else "")
                        values[name, key] = point.value
        return values, histograms


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = Otel()
    yield made
    for each in made.made:
        each.close()
    made.provider.shutdown()


class TestInstrument:
    async def test_gauges_equal_the_snapshot(self, otel: Otel, name: str) -> None:
        """Each observable gauge equals the budget's snapshot, with the Prometheus names
        and labels as attributes."""
        budget = Budget({"tokens": Limit(1_000, warn=600), "calls": 10}, name=name)
        await budget.charge(tokens=650, calls=2)
        held = await budget.try_reserve(tokens=100, calls=1)
        assert held is not None
        otel.instrument([budget])
        values, _ = otel.collect()
        assert expected_gauges(name, await budget.snapshot()) == of_budget(values, name)
        await held.release()
        values, _ = otel.collect()
        assert expected_gauges(name, await budget.snapshot()) == of_budget(values, name)

    async def test_the_same_values_as_prometheus(
        self, otel: Otel, collector: Make, name: str
    ) -> None:
        """Gauges, counters and the wait histogram agree with `PrometheusCollector`."""
        budget = Budget({"tokens": 10, "calls": 5}, name=name)
        otel.instrument([budget])
        registry, _ = collector([budget])
        async with budget.reserve(tokens=4, calls=1) as r:
            r.record(tokens=3, calls=1)
        with pytest.raises(BudgetExhausted):
            async with budget.reserve(tokens=100):
                pass
        holder = await budget.try_reserve(tokens=7)
        assert holder is not None
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                async with budget.reserve(tokens=5, timeout=math.inf):
                    pass

            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        await holder.release()
        values, histograms = otel.collect()
        scraped = scrape(registry)
        wanted = {
            key: value
            for key, value in scraped.items()
            if not key[0].startswith("aiobudget_wait_seconds")
        }
        assert of_budget(wanted, name, tuple({key[0] for key in wanted})) == of_budget(
            values, name, tuple({key[0] for key in values})
        )
        point = histograms["aiobudget_wait_seconds", labels(budget=name, outcome="cancelled")]
        key = labels(budget=name, outcome="cancelled")
        assert (1, 1) == (point.count, scraped["aiobudget_wait_seconds_count", key])
        assert pytest.approx(scraped["aiobudget_wait_seconds_sum", key]) == point.sum
        assert list(BUCKETS) == list(point.explicit_bounds)

    async def test_budgets_may_come_second_positionally(self, otel: Otel, name: str) -> None:
        """instrument(provider, [budget]) is instrument(provider, budgets=[budget])."""
        budget = Budget({"tokens": 10}, name=name)
        otel.made.append(instrument(otel.provider, [budget]))
        values, _ = otel.collect()
        assert expected_gauges(name, await budget.snapshot()) == of_budget(values, name)

    async def test_one_read_per_collection(self, otel: Otel, name: str) -> None:
        """However many gauges there are, a collection reads each snapshot once."""
        store = FaultyStore()
        budget = Budget({"tokens": 10}, name=name, store=store)
        otel.instrument([budget])
        otel.collect()
        otel.collect()
        assert 2 == store.faults.reads

    async def test_unreadable_values_are_left_out(self, otel: Otel, name: str) -> None:
        """A budget whose snapshot fails has no gauge in that collection (not 0), and the
        error counter counts it."""
        store = FaultyStore()
        budget = Budget({"tokens": 10}, name=name, store=store)
        otel.instrument([budget])
        store.faults.mode = "fail"
        values, _ = otel.collect()
        assert {} == of_budget(values, name)
        assert 1 == values["aiobudget_snapshot_errors_total", labels(budget=name)]

    async def test_names_and_close(self, otel: Otel, name: str) -> None:
        """Every instrument has a name of METRICS; after close() nothing is observed."""
        budget = Budget({"tokens": Limit(10, warn=5)}, name=name)
        made = otel.instrument([budget])
        async with budget.reserve(tokens=2) as r:
            r.record(tokens=1)
        data = otel.reader.get_metrics_data()
        assert data is not None
        seen = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
        assert {"aiobudget_limit", "aiobudget_warn", "aiobudget_charged"} <= seen <= set(METRICS)
        made.close()
        assert ({}, {}) == otel.collect()

    def test_the_global_meter_provider_by_default(self) -> None:
        """Without a provider, the global one is used."""
        from opentelemetry import metrics

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(provider)
        try:
            with instrument(budgets=[Budget({"tokens": 3}, name="global")]):
                data = reader.get_metrics_data()
        finally:
            provider.shutdown()
        assert data is not None
        names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
        assert "aiobudget_limit" in names
