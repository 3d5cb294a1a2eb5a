"""`PrometheusCollector`: gauges read from snapshots at scrape time, counters and the
wait-time histogram from the library's events, unreadable values left out."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timezone

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from prometheus_client import CollectorRegistry

from aiobudget import (
    Budget,
    BudgetExceeded,
    BudgetExhausted,
    Limit,
    MemoryStore,
    RequestLimitExceeded,
)
from aiobudget.metrics import BUCKETS, METRICS, PrometheusCollector

from ._support import (
    FaultyStore,
    counter,
    expected_gauges,
    labels,
    of_budget,
    scrape,
)
from .conftest import Make

pytestmark = pytest.mark.anyio


class TestGauges:
    async def test_values_equal_the_snapshot(self, collector: Make, name: str) -> None:
        """Every gauge of a budget equals its snapshot at the moment of the scrape."""
        budget = Budget({"tokens": Limit(1_000, warn=600), "calls": 10}, name=name)
        await budget.charge(tokens=650, calls=2)
        held = await budget.try_reserve(tokens=100, calls=1)
        assert held is not None
        registry, _ = collector([budget])
        expected = expected_gauges(name, await budget.snapshot())
        assert expected == of_budget(scrape(registry), name)
        assert 1 == expected["aiobudget_status", labels(budget=name, dim="tokens")]
        await held.release()
        assert expected_gauges(name, await budget.snapshot()) == of_budget(scrape(registry), name)

    async def test_warn_only_where_a_dimension_has_one(self, collector: Make, name: str) -> None:
        """aiobudget_warn is reported for dimensions with a warn level, never as 0 or
        infinity for the others."""
        budget = Budget({"tokens": Limit(100, warn=80), "calls": 5}, name=name)
        registry, _ = collector([budget])
        warns = of_budget(scrape(registry), name, ("aiobudget_warn",))
        assert {("aiobudget_warn", labels(budget=name, dim="tokens")): 80} == warns

    @pytest.mark.parametrize(
        ("tokens", "status", "dim"), [(0, 0, ""), (80, 1, "tokens"), (100, 2, "tokens")]
    )
    async def test_status_names_the_dimension(
        self, collector: Make, name: str, tokens: int, status: int, dim: str
    ) -> None:
        """aiobudget_status is 0, 1 or 2 (continue, warn, exhausted), labelled with the
        dimension that caused it."""
        budget = Budget({"calls": 5, "tokens": Limit(100, warn=80)}, name=name)
        await budget.charge(tokens=tokens)
        registry, _ = collector([budget])
        found = of_budget(scrape(registry), name, ("aiobudget_status",))
        assert {("aiobudget_status", labels(budget=name, dim=dim)): status} == found

    async def test_held_and_waiting(self, collector: Make, name: str) -> None:
        """aiobudget_held and aiobudget_waiting count live and queued reservations."""
        budget = Budget({"tokens": 10}, name=name)
        registry, _ = collector([budget])
        holder = await budget.try_reserve(tokens=8)
        assert holder is not None
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                async with budget.reserve(tokens=5, timeout=math.inf):
                    pass

            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            found = of_budget(scrape(registry), name, ("aiobudget_held", "aiobudget_waiting"))
            await holder.release()
        assert {
            ("aiobudget_held", labels(budget=name)): 1,
            ("aiobudget_waiting", labels(budget=name)): 1,
        } == found

    async def test_an_unnamed_budget_is_labelled_empty(self, collector: Make) -> None:
        """A budget without a name reports under budget=""."""
        budget = Budget({"tokens": 10})
        await budget.charge(tokens=3)
        registry, _ = collector([budget])
        assert expected_gauges("", await budget.snapshot()) == of_budget(scrape(registry), "")

    async def test_a_name_given_twice_is_reported_once(self, collector: Make, name: str) -> None:
        """Two budgets with one name (in two stores) give one set of series: the first."""
        first = Budget({"tokens": 10}, name=name)
        second = Budget({"tokens": 99}, name=name, store=MemoryStore())
        registry, _ = collector([first, second])
        assert expected_gauges(name, await first.snapshot()) == of_budget(scrape(registry), name)

    async def test_a_callable_is_asked_at_each_scrape(self, collector: Make, name: str) -> None:
        """Given a callable, the collector reports the budgets it returns at each scrape."""
        budgets: list[Budget] = []
        registry, _ = collector(lambda: budgets)
        assert {} == of_budget(scrape(registry), name)
        budgets.append(Budget({"tokens": 10}, name=name))
        assert expected_gauges(name, await budgets[0].snapshot()) == of_budget(
            scrape(registry), name
        )

    async def test_a_period_gives_its_start_and_reset(self, collector: Make, name: str) -> None:
        """A snapshot with a period gives its start and reset as Unix timestamps; a
        snapshot without one gives neither."""
        store = FaultyStore()
        budget = Budget({"tokens": 10}, name=name, store=store)
        registry, _ = collector([budget])
        names = (
            "aiobudget_period_start_timestamp_seconds",
            "aiobudget_period_reset_timestamp_seconds",
        )
        assert {} == of_budget(scrape(registry), name, names)
        start = datetime(2026, 11, 1, tzinfo=timezone.utc)
        end = datetime(2026, 12, 1, tzinfo=timezone.utc)
        store.faults.mode, store.faults.period = "period", (start, end)
        assert {
            (names[0], labels(budget=name)): start.timestamp(),
            (names[1], labels(budget=name)): end.timestamp(),
        } == of_budget(scrape(registry), name, names)


class TestUnreadable:
    async def test_a_failing_snapshot_is_left_out_and_counted(
        self, collector: Make, name: str
    ) -> None:
        """A budget whose snapshot fails has no gauge in that scrape (not 0), the others
        are reported, and aiobudget_snapshot_errors_total counts each failed scrape."""
        store = FaultyStore()
        down = Budget({"tokens": 10}, name=name, store=store)
        await down.charge(tokens=4)
        up = Budget({"tokens": 10}, name=f"{name}-up")
        registry, _ = collector([down, up])
        before = scrape(registry)
        assert expected_gauges(name, await down.snapshot()) == of_budget(before, name)
        store.faults.mode = "fail"
        during = [scrape(registry), scrape(registry)]
        assert [{}, {}] == [of_budget(each, name) for each in during]
        assert [1, 2] == [
            counter(each, "aiobudget_snapshot_errors_total", budget=name) for each in during
        ]
        assert expected_gauges(f"{name}-up", await up.snapshot()) == of_budget(
            during[0], f"{name}-up"
        )
        store.faults.mode = "ok"
        after = scrape(registry)
        assert expected_gauges(name, await down.snapshot()) == of_budget(after, name)
        assert 2 == counter(after, "aiobudget_snapshot_errors_total", budget=name)

    async def test_a_snapshot_that_never_answers_is_left_out(
        self, collector: Make, name: str
    ) -> None:
        """A snapshot still unanswered after the timeout is left out and counted; the
        scrape still answers."""
        store = FaultyStore()
        budget = Budget({"tokens": 10}, name=name, store=store)
        registry, _ = collector([budget], timeout=0.2)
        store.faults.mode = "hang"
        samples = scrape(registry)
        assert {} == of_budget(samples, name)
        assert 1 == counter(samples, "aiobudget_snapshot_errors_total", budget=name)


class TestCounters:
    async def test_reservations_and_amounts(self, collector: Make, name: str) -> None:
        """Granted, settled and refunded reservations, denials by dimension and reason,
        and the amounts charged and refunded, as the events said."""
        budget = Budget({"tokens": 100, "calls": 10}, name=name)
        registry, _ = collector([budget])
        async with budget.reserve(tokens=30, calls=1) as r:
            r.record(tokens=20, calls=1)  # settled: 20 charged, 10 refunded
        with pytest.raises(LookupError):
            async with budget.reserve(tokens=5):  # refunded whole
                raise LookupError
        async with budget.reserve(tokens=5, on_unrecorded="charge"):  # settled: 5 charged
            pass
        await budget.charge(tokens=7, calls=2)
        with pytest.raises(BudgetExhausted):
            async with budget.reserve(tokens=1_000):
                pass
        with pytest.raises(RequestLimitExceeded):
            budget.reserve(tokens=50, request_limit={"tokens": 10})
        with pytest.raises(BudgetExceeded):
            await budget.charge(calls=50, strict=True)
        samples = scrape(registry)
        assert {
            "granted": 3,
            "settled": 2,
            "refunded": 1,
        } == {
            what: counter(samples, f"aiobudget_reservations_{what}_total", budget=name)
            for what in ("granted", "settled", "refunded")
        }
        assert {
            ("tokens", "impossible"): 1,
            ("tokens", "request_limit"): 1,
            ("calls", "strict_charge"): 1,
        } == {
            (dict(key[1])["dim"], dict(key[1])["reason"]): value
            for key, value in samples.items()
            if key[0] == "aiobudget_denials_total" and dict(key[1])["budget"] == name
        }
        spent = (await budget.snapshot()).spent
        assert {"tokens": 32, "calls": 3} == spent
        assert spent == {
            dim: counter(samples, "aiobudget_charged_total", budget=name, dim=dim)
            for dim in ("tokens", "calls")
        }
        assert 15 == counter(samples, "aiobudget_refunded_total", budget=name, dim="tokens")

    async def test_only_the_budgets_reported(self, collector: Make, name: str) -> None:
        """Counters are reported for the collector's budgets only (label cardinality)."""
        watched = Budget({"tokens": 10}, name=name)
        other = Budget({"tokens": 10}, name=f"{name}-other")
        registry, _ = collector([watched])
        for budget in (watched, other):
            async with budget.reserve(tokens=1):
                pass
        samples = scrape(registry)
        assert 1 == counter(samples, "aiobudget_reservations_granted_total", budget=name)
        assert [] == [key for key in samples if dict(key[1]).get("budget") == f"{name}-other"]

    async def test_a_child_counts_at_the_child(self, collector: Make, name: str) -> None:
        """Counters count the operations made on each budget: a child's reservation is the
        child's (its parent's gauges include it; its counters do not)."""
        parent = Budget({"tokens": 100}, name=name)
        child = parent.child({"tokens": 50}, name=f"{name}-child")
        registry, _ = collector([parent, child])
        async with child.reserve(tokens=5) as r:
            r.record(tokens=5)
        samples = scrape(registry)
        granted = [
            counter(samples, "aiobudget_reservations_granted_total", budget=each)
            for each in (name, f"{name}-child")
        ]
        assert [0, 1] == granted
        assert 5 == samples["aiobudget_spent", labels(budget=name, dim="tokens")]

    async def test_nothing_is_counted_without_an_exporter(self, collector: Make, name: str) -> None:
        """Events before the first exporter opened and after the last one closed are not
        counted (the library does not observe itself without one)."""
        budget = Budget({"tokens": 10}, name=name)
        async with budget.reserve(tokens=1):
            pass
        registry, opened = collector([budget])
        async with budget.reserve(tokens=1):
            pass
        opened.close()
        async with budget.reserve(tokens=1):
            pass
        registry, _ = collector([budget])
        assert 1 == counter(scrape(registry), "aiobudget_reservations_granted_total", budget=name)


class TestWaitHistogram:
    async def test_waits_by_outcome(self, collector: Make, name: str) -> None:
        """Each finished wait is one observation, by outcome; buckets are cumulative, the
        count is the +Inf bucket, and the bounds are BUCKETS."""
        budget = Budget({"tokens": 10}, name=name)
        registry, _ = collector([budget])
        holder = await budget.try_reserve(tokens=10)
        assert holder is not None
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                async with budget.reserve(tokens=5, timeout=math.inf):
                    pass

            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            await holder.release()
        samples = scrape(registry)
        for outcome, count in (("cancelled", 2), ("granted", 1)):
            series = {
                dict(key[1])["le"]: value
                for key, value in samples.items()
                if key[0] == "aiobudget_wait_seconds_bucket"
                and dict(key[1]) == {**dict(key[1]), "budget": name, "outcome": outcome}
            }
            bounds = [float(le) for le in series if le != "+Inf"]
            assert list(BUCKETS) == sorted(bounds)
            values = [series[le] for le in sorted(series, key=float)]
            assert values == sorted(values)
            assert count == series["+Inf"]
            key = labels(budget=name, outcome=outcome)
            assert count == samples["aiobudget_wait_seconds_count", key]
            assert samples["aiobudget_wait_seconds_sum", key] >= 0


class TestCollector:
    async def test_registering_reads_nothing(self, collector: Make) -> None:
        """describe() gives the families without reading any snapshot."""
        store = FaultyStore()
        budget = Budget({"tokens": 10}, name="x", store=store)
        collector([budget])
        assert 0 == store.faults.reads

    async def test_every_family_is_described(self, collector: Make) -> None:
        """Every name of METRICS is a family the collector describes and collects."""
        _, made = collector()
        assert list(METRICS) == [family.name for family in made.describe()]
        assert list(METRICS) == [family.name for family in made.collect()]

    async def test_a_closed_collector_reports_no_samples(self, collector: Make) -> None:
        """After close() the families are empty."""
        budget = Budget({"tokens": 10}, name="x")
        registry, made = collector([budget])
        made.close()
        made.close()  # twice is harmless
        assert {} == scrape(registry)

    async def test_registers_itself_when_given_a_registry(self) -> None:
        """registry= registers the collector there at once."""
        budget = Budget({"tokens": 10}, name="self-registered")
        registry = CollectorRegistry()
        with PrometheusCollector([budget], registry=registry):
            found = of_budget(scrape(registry), "self-registered")
        assert expected_gauges("self-registered", await budget.snapshot()) == found

    async def test_as_a_context_manager(self) -> None:
        """Leaving ``with`` closes the collector."""
        with PrometheusCollector() as made:
            pass
        assert "open=False" in repr(made)

    @pytest.mark.parametrize(
        ("args", "options", "error"),
        [
            (([object()],), {}, TypeError),
            ((), {"store": object()}, TypeError),
            ((), {"timeout": 0}, ValueError),
            ((), {"timeout": True}, ValueError),
        ],
    )
    def test_bad_arguments(
        self, args: tuple[object, ...], options: dict[str, object], error: type[Exception]
    ) -> None:
        """Budgets that are not Budgets, a store that cannot list its budgets, or a
        timeout that is not a positive number are refused at once."""
        with pytest.raises(error):
            PrometheusCollector(*args, **options)  # type: ignore[arg-type]

    def test_a_single_budget_must_be_in_a_list(self) -> None:
        """A lone Budget is refused with a hint to pass a list."""
        with pytest.raises(TypeError, match="list"):
            PrometheusCollector(Budget({"tokens": 1}))  # type: ignore[arg-type]


class TestOptional:
    def test_import_aiobudget_imports_no_client_library(self) -> None:
        """Neither ``import aiobudget`` nor ``import aiobudget.metrics`` imports
        prometheus_client or OpenTelemetry."""
        code = (
            "import sys, aiobudget, aiobudget.metrics\n"
            "loaded = [m for m in sys.modules if m.startswith(('prometheus', 'opentelemetry'))]\n"
            "assert not loaded, loaded\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603 - fixed code

    def test_a_missing_client_says_which_extra(self) -> None:
        """Without prometheus_client the collector names the extra to install."""
        code = (
            "import sys\n"
            "sys.modules['prometheus_client'] = None\n"
            "from aiobudget.metrics import PrometheusCollector\n"
            "try:\n"
            "    PrometheusCollector()\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        out = subprocess.run(  # noqa: S603 - fixed code
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
        assert "pip install 'aiobudget[prometheus]'" in out
