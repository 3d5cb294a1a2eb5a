"""What the metrics tests share: parsing a scrape, the gauges a snapshot should give, and
a store whose snapshots can be made to fail or hang."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiobudget import BackendError, Limit, MemoryStore, Snapshot, Verdict
from aiobudget.protocols import Account

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

STATUS = {"continue": 0, "warn": 1, "exhausted": 2}
GAUGE_NAMES = (
    "aiobudget_limit",
    "aiobudget_warn",
    "aiobudget_spent",
    "aiobudget_reserved",
    "aiobudget_remaining",
    "aiobudget_status",
    "aiobudget_held",
    "aiobudget_waiting",
    "aiobudget_period_start_timestamp_seconds",
    "aiobudget_period_reset_timestamp_seconds",
)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def scrape(registry: CollectorRegistry) -> Samples:
    """Collect *registry* as Prometheus would (the text exposition), parsed."""
    return parse(generate_latest(registry).decode())


def fetch(url: str) -> Samples:
    """GET a /metrics page over HTTP, parsed."""
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback http
        assert response.status == 200
        return parse(response.read().decode())


def of_budget(samples: Samples, budget: str, names: tuple[str, ...] = GAUGE_NAMES) -> Samples:
    """The samples of *names* labelled with *budget*."""
    return {
        key: value
        for key, value in samples.items()
        if key[0] in names and dict(key[1]).get("budget") == budget
    }


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


def expected_gauges(budget: str, snap: Snapshot) -> Samples:
    """The gauges a budget's snapshot should give, built from the snapshot alone."""
    out: Samples = {}
    for dim, limit in snap.limits.items():
        per_dim = labels(budget=budget, dim=dim)
        out["aiobudget_limit", per_dim] = limit.limit
        if limit.warn is not None:
            out["aiobudget_warn", per_dim] = limit.warn
        out["aiobudget_spent", per_dim] = snap.spent[dim]
        out["aiobudget_reserved", per_dim] = snap.reserved[dim]
        out["aiobudget_remaining", per_dim] = snap.remaining[dim]
    status = labels(budget=budget, dim=snap.verdict.dim or "")
    out["aiobudget_status", status] = STATUS[snap.verdict.status.value]
    out["aiobudget_held", labels(budget=budget)] = snap.held
    out["aiobudget_waiting", labels(budget=budget)] = snap.waiting
    return out


def counter(samples: Samples, name: str, **values: str) -> float:
    """A counter's value, 0 when the series is absent (never incremented)."""
    return samples.get((name, labels(**values)), 0.0)


@dataclass(frozen=True)
class PeriodSnapshot:
    """A snapshot of a budget with a period, as the periods work adds to `Snapshot`."""

    limits: Mapping[str, Limit]
    spent: Mapping[str, int]
    reserved: Mapping[str, int]
    remaining: Mapping[str, int]
    verdict: Verdict
    held: int = 0
    waiting: int = 0
    period_start: datetime | None = None
    resets_at: datetime | None = None


@dataclass
class Faulty:
    """How `FaultyStore` snapshots behave: ``ok``, ``fail`` (BackendError), ``hang``, or
    ``period`` (with period fields); ``reads`` counts snapshot calls."""

    mode: str = "ok"
    reads: int = 0
    period: tuple[datetime, datetime] | None = None
    budgets: list[Any] = field(default_factory=list)


class FaultyStore:
    """A `MemoryStore` whose snapshots can be made to fail or never answer, as a store
    whose server went away would."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.faults = Faulty()

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
    ) -> FaultyAccount:
        inner_parent = parent.inner if isinstance(parent, FaultyAccount) else parent
        inner = self.inner.open(name, limits, parent=inner_parent, update_limits=update_limits)
        return FaultyAccount(self.faults, inner)


class FaultyAccount:
    """Delegates to a `MemoryAccount` but for `snapshot`."""

    def __init__(self, faults: Faulty, inner: Any) -> None:
        self.faults = faults
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def snapshot(self) -> Any:
        faults = self.faults
        faults.reads += 1
        if faults.mode == "fail":
            raise BackendError("Redis failed reading: ConnectionError: refused (a test)")
        if faults.mode == "hang":
            await anyio.sleep_forever()
        snap = await self.inner.snapshot()
        if faults.mode == "period":
            assert faults.period is not None
            start, end = faults.period
            return PeriodSnapshot(
                snap.limits,
                snap.spent,
                snap.reserved,
                snap.remaining,
                snap.verdict,
                snap.held,
                snap.waiting,
                start,
                end,
            )
        return snap
