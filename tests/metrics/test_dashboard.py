"""The Grafana dashboard in examples/ queries only metrics the exporter emits."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from aiobudget import Budget, BudgetExhausted, Limit, Snapshot

from ._support import FaultyStore, Samples, scrape
from .conftest import Make

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"

# What a PromQL expression may name besides metrics: functions, keywords, Grafana's
# variables (after $) are removed before.
PROMQL = {
    "sum", "rate", "increase", "histogram_quantile", "by", "without", "time",
    "label_values", "max", "min", "avg", "and", "or", "unless",
}  # fmt: skip


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def names_in(expr: str) -> set[str]:
    """The metric names *expr* uses; fails on any other bare identifier."""
    bare = re.sub(r'"[^"]*"', "", expr)  # strings (label values, regexes)
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r"\$\w+", "", bare)  # Grafana variables
    bare = re.sub(r",\s*\w+\s*\)$", ")", bare)  # label_values(metric, label)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    unknown = {word for word in words - PROMQL if not word.startswith("aiobudget_")}
    assert not unknown, f"{expr!r} names {unknown}"
    return words - PROMQL


class Failing:
    """A store that cannot list its budgets (a Redis gone away)."""

    async def names(self) -> AsyncIterator[str]:
        raise OSError("gone (a test)")
        yield ""  # pragma: no cover - an async generator

    async def read(self, name: str) -> Snapshot | None:
        raise OSError("gone (a test)")  # pragma: no cover - never listed


async def full_scrape(collector: Make) -> Samples:
    """A scrape with a sample of every metric: a budget with a period and a warn level,
    grants, settles, refunds, denials, waits, and unreadable budgets."""
    store = FaultyStore()
    budget = Budget({"tokens": Limit(10, warn=5)}, name="full", store=store)
    down = Budget({"tokens": 10}, name="down", store=FaultyStore())
    registry, _ = collector([budget, down], store=Failing())
    async with budget.reserve(tokens=3) as r:
        r.record(tokens=2)
    with pytest.raises(BudgetExhausted):
        async with budget.reserve(tokens=50):
            pass
    holder = await budget.try_reserve(tokens=8)
    assert holder is not None
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            async with budget.reserve(tokens=5, timeout=math.inf):
                pass

        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        await holder.release()
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    store.faults.mode, store.faults.period = "period", (start, start.replace(month=12))
    down.store.faults.mode = "fail"  # type: ignore[attr-defined]
    return scrape(registry)


class TestDashboard:
    def test_it_is_a_dashboard(self) -> None:
        """The file is a Grafana dashboard with panels and a budget variable."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        assert dashboard["panels"]
        assert "budget" in {variable["name"] for variable in dashboard["templating"]["list"]}

    async def test_every_metric_it_queries_is_emitted(self, collector: Make) -> None:
        """Each query names at least one metric, and every metric named is in a real
        scrape (as a sample name: counters with _total, histograms with _bucket)."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        emitted = {key[0] for key in await full_scrape(collector)}
        used: set[str] = set()
        for expr in queries(dashboard):
            names = names_in(expr)
            assert names, f"{expr!r} queries no metric"
            used |= names
        assert set() == used - emitted
        # The dashboard shows what the issue asks: spent vs limit, held and waiting,
        # denials, wait-time quantiles.
        for wanted in (
            "aiobudget_spent",
            "aiobudget_limit",
            "aiobudget_held",
            "aiobudget_waiting",
            "aiobudget_denials_total",
            "aiobudget_wait_seconds_bucket",
        ):
            assert wanted in used

    def test_the_checker_catches_a_wrong_name(self) -> None:
        """A query naming a metric the exporter does not emit, or a bare word that is
        no metric, is caught."""
        assert {"aiobudget_spent_total"} == names_in('rate(aiobudget_spent_total{budget="x"}[5m])')
        with pytest.raises(AssertionError, match="budget_spent"):
            names_in("budget_spent")
