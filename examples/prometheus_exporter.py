"""Budgets as Prometheus metrics: a collector, a few simulated calls, one scrape.

A service registers a `PrometheusCollector` with the budgets it wants to watch, next to
its other metrics; Prometheus scrapes ``/metrics`` (here we print what it would read).
Run: ``python examples/prometheus_exporter.py``.
"""
# requires: prometheus_client

from __future__ import annotations

import contextlib
import logging
import random

import anyio
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from aiobudget import CALLS, COST, TOKENS, Budget, BudgetExhausted, Limit, usd
from aiobudget.metrics import PrometheusCollector


async def main() -> None:
    # The application's logging: warnings and up (the denials below are expected).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    budget = Budget(
        {TOKENS: Limit(20_000, warn=16_000), COST: usd("0.50"), CALLS: 40}, name="team-search"
    )
    registry = CollectorRegistry()  # or prometheus_client.REGISTRY, served by your app
    with PrometheusCollector([budget]) as collector:
        registry.register(collector)

        async def agent(seed: int) -> None:
            rng = random.Random(seed)
            with contextlib.suppress(BudgetExhausted):  # a denial ends the agent's work
                for _ in range(4):
                    async with budget.reserve(
                        tokens=2_000, cost_micros=usd("0.02"), calls=1, timeout=0.5
                    ) as r:
                        await anyio.sleep(rng.uniform(0.001, 0.01))  # the model call
                        r.record(tokens=rng.randint(500, 1_900), cost_micros=usd("0.01"), calls=1)

        async with anyio.create_task_group() as tg:
            for seed in range(8):
                tg.start_soon(agent, seed)

        text = generate_latest(registry).decode()
    # What Prometheus reads, without the HELP and TYPE lines:
    print("\n".join(line for line in text.splitlines() if not line.startswith("#")))


if __name__ == "__main__":
    anyio.run(main)
