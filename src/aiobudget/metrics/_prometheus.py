"""`PrometheusCollector`: budgets as a `prometheus_client` custom collector."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, final

from ._gauges import GAUGES, gauge_samples
from ._reading import LOOP, Budgets, Directory, Sources
from ._recorder import BUCKETS, COUNTERS, RECORDER

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType, TracebackType

    from prometheus_client.metrics_core import Metric

__all__ = ["PrometheusCollector"]

_WAIT: tuple[str, str, tuple[str, ...]] = (
    "aiobudget_wait_seconds",
    "Time reservations spent waiting for budget, by how the wait ended: granted, denied "
    "(timed out, or ruled out by spend) or cancelled.",
    ("budget", "outcome"),
)


@functools.cache
def _core() -> ModuleType:
    try:
        import prometheus_client.core  # noqa: PLC0415 - the prometheus extra is optional
        import prometheus_client.utils  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            "PrometheusCollector needs prometheus_client: pip install 'aiobudget[prometheus]'",
            name="prometheus_client",
        ) from exc
    return prometheus_client


@final
class PrometheusCollector:
    """The budgets you name, as Prometheus metrics, read when Prometheus scrapes.

    ``PrometheusCollector([budget, other], registry=REGISTRY)`` (or
    ``REGISTRY.register(PrometheusCollector([budget, other]))``), or every top-level
    budget kept in a `RedisStore`: ``PrometheusCollector(store=RedisStore(url,
    prefix="tenants"))``. At each scrape it reads a snapshot of each budget (gauges:
    limit, warn, spent, reserved, remaining, status, held, waiting, period start and
    reset), and reports the counters and the wait-time histogram this process kept from
    aiobudget's own events (reservations granted, settled, refunded, denials, amounts
    charged and refunded). Labels are ``budget`` and ``dim``.

    A snapshot that cannot be read within *timeout* seconds (Redis down) leaves that
    budget's gauges out of the scrape, never 0, and counts one
    ``aiobudget_snapshot_errors_total``. It is not a second registry: register one
    collector per registry, with every budget it should report. Every budget reported is
    a set of series (about five per dimension, more with counters and waits), so report
    the budgets you watch, not one per API key you serve, unless you mean to pay for
    that many series.

    Snapshots are read in a thread (and event loop) of the collector's own: a
    `RedisStore` must be built from a URL to be read there, not around a client object.

    `close` (or leaving ``with``) stops it; the counters stop counting once no
    collector or `instrument` is left open.
    """

    __slots__ = ("_open", "_sources")

    def __init__(
        self,
        budgets: Budgets = (),
        *,
        store: Directory | None = None,
        timeout: float = 5.0,
        registry: Any = None,
    ) -> None:
        _core()
        self._sources = Sources(budgets, store, timeout)
        self._open = True
        LOOP.acquire()
        RECORDER.attach()
        if registry is not None:  # else the caller registers it: registry.register(...)
            registry.register(self)

    def __repr__(self) -> str:
        return f"<PrometheusCollector budgets={len(self._sources.labels)} open={self._open}>"

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples: registering reads nothing."""
        gauges, counters, wait = _families()
        return iter([*gauges.values(), *counters.values(), wait])

    def collect(self) -> Iterator[Metric]:
        """Read the budgets now and yield every metric family with its samples."""
        gauges, counters, wait = _families()
        if self._open:
            reading = self._sources.read()
            for budget, snap in sorted(reading.snapshots.items()):
                for name, labels, value in gauge_samples(budget, snap):
                    gauges[name].add_metric(labels, value)
            budgets = reading.labels
            for name, counter in counters.items():
                for key, count in sorted(RECORDER.counts(name, budgets)):
                    counter.add_metric(key, count)
            bounds = [*map(_core().utils.floatToGoString, BUCKETS), "+Inf"]
            for key, cumulative, total, _count in sorted(RECORDER.waits(budgets)):
                wait.add_metric(key, list(zip(bounds, cumulative)), total)
        yield from gauges.values()
        yield from counters.values()
        yield wait

    def close(self) -> None:
        """Report nothing more; let go of the event observer and the reading thread."""
        if self._open:
            self._open = False
            RECORDER.detach()
            LOOP.release()

    def __enter__(self) -> PrometheusCollector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _families() -> tuple[dict[str, Any], dict[str, Any], Any]:
    core = _core().core
    gauges = {
        name: core.GaugeMetricFamily(name, doc, labels=labels)
        for name, (doc, labels) in GAUGES.items()
    }
    counters = {
        name: core.CounterMetricFamily(name, doc, labels=labels)
        for name, (doc, labels) in COUNTERS.items()
    }
    name, doc, labels = _WAIT
    wait = core.HistogramMetricFamily(name, doc, labels=labels)
    return gauges, counters, wait
