"""Budgets you can watch: Prometheus and OpenTelemetry metrics.

- `PrometheusCollector` (extra ``aiobudget[prometheus]``): a ``prometheus_client``
  collector that reads the budgets' snapshots when Prometheus scrapes.
- `instrument` (extra ``aiobudget[otel]``): the same as OpenTelemetry observable gauges,
  observable counters and a histogram.
- ``aiobudget metrics --redis URL`` serves every budget under a Redis prefix over HTTP.

Gauges come from snapshots: ``aiobudget_limit``, ``_warn``, ``_spent``, ``_reserved``,
``_remaining``, ``_status`` (labels ``budget``, ``dim``), ``_held``, ``_waiting``,
``_period_start_timestamp_seconds``, ``_period_reset_timestamp_seconds`` (``budget``).
Counters and the histogram come from aiobudget's own events in this process:
``aiobudget_reservations_granted_total``, ``_settled_total``, ``_refunded_total``,
``aiobudget_denials_total`` (``dim``, ``reason``), ``aiobudget_charged_total`` and
``aiobudget_refunded_total`` (amounts, by ``dim``), ``aiobudget_wait_seconds``
(``outcome``), and the exporter's own ``aiobudget_snapshot_errors_total`` and
``aiobudget_discovery_errors_total``. A value that cannot be read is left out, never
reported as 0 or infinity. Importing this module imports neither client library.
"""

from __future__ import annotations

from ._gauges import GAUGES
from ._otel import Instrumentation as Instrumentation
from ._otel import instrument as instrument
from ._prometheus import PrometheusCollector as PrometheusCollector
from ._reading import Budgets as Budgets
from ._reading import Directory as Directory
from ._recorder import BUCKETS as BUCKETS
from ._recorder import COUNTERS

__all__ = [
    "BUCKETS",
    "Budgets",
    "Directory",
    "Instrumentation",
    "METRICS",
    "PrometheusCollector",
    "instrument",
]

METRICS: tuple[str, ...] = (*GAUGES, *COUNTERS, "aiobudget_wait_seconds")
"""Every metric family the exporters report (counters without their ``_total``)."""

for _name in ("Directory", "Instrumentation", "PrometheusCollector", "instrument"):
    globals()[_name].__module__ = __name__  # tracebacks and docs say aiobudget.metrics.X
del _name
