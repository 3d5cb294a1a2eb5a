"""`instrument`: budgets as OpenTelemetry observable gauges, counters and a histogram."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, final

from .._version import __version__
from ._gauges import GAUGES, gauge_samples
from ._reading import LOOP, Budgets, Directory, Reading, Sources
from ._recorder import BUCKETS, COUNTERS, RECORDER

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType, TracebackType

    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["Instrumentation", "instrument"]

WAIT_HISTOGRAM = "aiobudget_wait_seconds"


@functools.cache
def _api() -> ModuleType:
    try:
        import opentelemetry.metrics  # noqa: PLC0415 - the otel extra is optional
    except ImportError as exc:
        raise ImportError(
            "instrument() needs the OpenTelemetry API: pip install 'aiobudget[otel]'",
            name="opentelemetry",
        ) from exc
    return opentelemetry.metrics


def instrument(
    meter_provider: MeterProvider | None = None,
    budgets: Budgets = (),
    *,
    store: Directory | None = None,
    timeout: float = 5.0,
) -> Instrumentation:
    """Report budgets through OpenTelemetry, on *meter_provider* (the global one by
    default), with the names, labels (attributes) and values `PrometheusCollector` has.

    Observable gauges read the budgets' snapshots when the provider's readers collect
    (once per collection, however many gauges); observable counters report what this
    process counted from aiobudget's events; ``aiobudget_wait_seconds`` is a histogram
    recorded as waits end. *budgets*, *store* and *timeout* are as for
    `PrometheusCollector`. Returns the `Instrumentation`; ``close()`` stops it (OpenTelemetry
    cannot unregister instruments: they then observe nothing).
    """
    api = _api()
    provider = meter_provider if meter_provider is not None else api.get_meter_provider()
    meter = provider.get_meter("aiobudget", __version__)
    return Instrumentation(meter, Sources(budgets, store, timeout))


@final
class Instrumentation:
    """The instruments `instrument` made, and what they report. Close it to stop."""

    __slots__ = (
        "__weakref__",
        "_consumed",
        "_histogram",
        "_lock",
        "_observations",
        "_open",
        "_sources",
    )

    def __init__(self, meter: Any, sources: Sources) -> None:
        self._sources = sources
        self._lock = threading.Lock()
        self._observations: dict[str, list[Observation]] | None = None
        self._consumed: set[str] = set()
        self._open = True
        for name, (doc, _) in GAUGES.items():
            meter.create_observable_gauge(
                name, callbacks=[functools.partial(self._gauge, name)], description=doc
            )
        for name, (doc, _) in COUNTERS.items():
            meter.create_observable_counter(
                name, callbacks=[functools.partial(self._counter, name)], description=doc
            )
        self._histogram = meter.create_histogram(
            WAIT_HISTOGRAM,
            unit="s",
            description="Time reservations spent waiting for budget, by how the wait ended.",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        LOOP.acquire()
        RECORDER.attach(self._record_wait)

    def __repr__(self) -> str:
        return f"<Instrumentation budgets={len(self._sources.labels)} open={self._open}>"

    def _read(self, gauge: str) -> list[Observation]:
        """The observations of *gauge*, from one read per collection: the first gauge
        asked twice starts a new read."""
        with self._lock:
            if self._observations is None or gauge in self._consumed:
                self._observations = _observe(self._sources.read())
                self._consumed = set()
            self._consumed.add(gauge)
            return self._observations.get(gauge, [])

    def _gauge(self, name: str, options: CallbackOptions) -> Iterable[Observation]:
        return self._read(name) if self._open else []

    def _counter(self, name: str, options: CallbackOptions) -> Iterable[Observation]:
        if not self._open:
            return []
        observation = _api().Observation
        names = COUNTERS[name][1]
        return [
            observation(count, dict(zip(names, key)))
            for key, count in RECORDER.counts(name, self._sources.labels)
        ]

    def _record_wait(self, budget: str, outcome: str, seconds: float) -> None:
        if self._open and budget in self._sources.labels:
            self._histogram.record(seconds, {"budget": budget, "outcome": outcome})

    def close(self) -> None:
        """Observe nothing more; let go of the event observer and the reading thread."""
        if self._open:
            self._open = False
            RECORDER.detach(self._record_wait)
            LOOP.release()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _observe(reading: Reading) -> dict[str, list[Observation]]:
    observation = _api().Observation
    out: dict[str, list[Observation]] = {}
    for budget, snap in sorted(reading.snapshots.items()):
        for name, values, value in gauge_samples(budget, snap):
            attributes = dict(zip(GAUGES[name][1], values))
            out.setdefault(name, []).append(observation(value, attributes))
    return out
