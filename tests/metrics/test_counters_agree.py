"""The counters against the ledger: for any sequence of reservations and charges, what the
events counted agrees with what the budget holds (hypothesis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiobudget import Budget, BudgetExceeded, BudgetExhausted
from aiobudget.metrics import PrometheusCollector

from ._support import counter, scrape

DIMS = ("tokens", "calls")
LIMITS = {"tokens": 100, "calls": 6}

amounts = st.fixed_dictionaries({"tokens": st.integers(0, 60), "calls": st.integers(0, 3)})
operation = st.one_of(
    st.tuples(
        st.sampled_from(["settle", "fail", "release", "charge_unrecorded"]), amounts, amounts
    ),
    st.tuples(st.sampled_from(["charge", "strict"]), amounts, st.just({})),
)


@pytest.fixture(scope="module")
def watching() -> Iterator[tuple[CollectorRegistry, list[Budget]]]:
    """One collector for the module: each example reports a budget of its own name."""
    budgets: list[Budget] = []
    registry = CollectorRegistry()
    with PrometheusCollector(lambda: budgets) as collector:
        registry.register(collector)
        yield registry, budgets


@pytest.fixture(autouse=True)
def nothing_left_observing() -> None:
    """The module's collector stays open from test to test (see `watching`)."""


class Program:
    """Runs operations on a budget and keeps what the counters should say."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.granted = self.settled = self.refunded = self.denied = 0
        self.given_back = dict.fromkeys(DIMS, 0)

    async def run(self, kind: str, ask: dict[str, int], used: dict[str, int]) -> None:
        budget = self.budget
        try:
            if kind in ("charge", "strict"):
                await budget.charge(ask, strict=kind == "strict")
                return
            on_unrecorded = "charge" if kind == "charge_unrecorded" else "refund"
            async with budget.reserve(ask, on_unrecorded=on_unrecorded) as r:
                self.granted += 1
                if kind == "settle":
                    r.record(used)
                elif kind == "release":
                    await r.release()
                elif kind == "fail":
                    raise LookupError
        except (BudgetExhausted, BudgetExceeded):
            self.denied += 1
            return
        except LookupError:
            pass
        if kind in ("fail", "release"):
            self.refunded += 1
            for dim in DIMS:
                self.given_back[dim] += ask[dim]
        else:
            self.settled += 1
            actual = used if kind == "settle" else ask
            for dim in DIMS:
                self.given_back[dim] += max(0, ask[dim] - actual[dim])


@given(st.lists(operation, max_size=25))
def test_counters_agree_with_the_ledger(
    watching: tuple[CollectorRegistry, list[Budget]],
    operations: list[tuple[str, dict[str, int], dict[str, int]]],
) -> None:
    """Amounts charged equal spent, granted equals settled plus refunded, and denials,
    refunds and amounts given back are what happened."""
    registry, budgets = watching
    name = f"prop-{uuid.uuid4().hex[:12]}"
    budget = Budget(LIMITS, name=name)
    budgets[:] = [budget]
    program = Program(budget)

    async def main() -> None:
        for kind, ask, used in operations:
            await program.run(kind, ask, used)

    anyio.run(main)
    samples = scrape(registry)
    spent = dict(anyio.run(budget.snapshot).spent)
    assert spent == {
        dim: counter(samples, "aiobudget_charged_total", budget=name, dim=dim) for dim in DIMS
    }
    assert program.given_back == {
        dim: counter(samples, "aiobudget_refunded_total", budget=name, dim=dim) for dim in DIMS
    }
    counts = [
        counter(samples, f"aiobudget_reservations_{what}_total", budget=name)
        for what in ("granted", "settled", "refunded")
    ]
    assert [program.granted, program.settled, program.refunded] == counts
    assert program.granted == program.settled + program.refunded
    denials = sum(
        value
        for key, value in samples.items()
        if key[0] == "aiobudget_denials_total" and dict(key[1])["budget"] == name
    )
    assert program.denied == denials
