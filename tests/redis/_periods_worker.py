"""A worker process of test_periods: ``python _periods_worker.py URL PREFIX NAME TASKS SECONDS
SEED SKEW``.

Runs TASKS tasks for SECONDS against a budget that renews every second, with this
process's clock (``time.time``) off by SKEW seconds, and prints one JSON line: what it
recorded, and the ``budget.period_closed`` events it logged.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import structlog

LIMITS = {"calls": 400, "tokens": 30_000}


async def run(
    url: str, prefix: str, name: str, *, tasks: int, seconds: float, seed: int, skew: float
) -> None:
    from aiobudget import Budget, BudgetExhausted, Period
    from aiobudget.stores.redis import RedisStore

    rng = random.Random(seed)
    totals = {"calls": 0, "tokens": 0}
    granted = denied = 0
    closed: list[dict[str, Any]] = []

    def capture(logger: object, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") == "budget.period_closed":
            closed.append(
                {
                    "start": event["period_start"],
                    "end": event["period_end"],
                    "spent": event["spent"],
                }
            )
        raise structlog.DropEvent

    structlog.configure(processors=[capture])
    async with RedisStore(url, prefix=prefix) as store:
        budget = Budget(LIMITS, name=name, store=store, period=Period.every(1))

        async def task() -> None:
            nonlocal granted, denied
            while asyncio.get_running_loop().time() < deadline:
                estimate = rng.randint(10, 150)
                used = rng.randint(0, estimate)
                timeout = 0.05 if rng.random() < 0.3 else None
                try:
                    async with budget.reserve(calls=1, tokens=estimate, timeout=timeout) as r:
                        # Some reservations span a boundary: settled in the next window.
                        pause = 0.4 if rng.random() < 0.05 else rng.random() * 0.01
                        await asyncio.sleep(pause)
                        r.record(calls=1, tokens=used)
                except BudgetExhausted:
                    denied += 1
                    await asyncio.sleep(rng.random() * 0.02)
                    continue
                granted += 1
                totals["calls"] += 1
                totals["tokens"] += used

        client = store._client()
        await client.incr(f"{prefix}:ready")
        for _ in range(4000):
            if await client.exists(f"{prefix}:go"):
                break
            await asyncio.sleep(0.005)
        else:
            raise SystemExit("no go from the parent within 20 s")
        deadline = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(task() for _ in range(tasks)))
        offset = store.clock() - time.time()
    report = {"totals": totals, "granted": granted, "denied": denied, "closed": closed}
    print(json.dumps({**report, "offset": offset, "skew": skew}), flush=True)


if __name__ == "__main__":
    url, prefix, name, tasks, seconds, seed, skew = sys.argv[1:]
    real = time.time
    time.time = lambda: real() + float(skew)  # this process's clock is off by SKEW seconds
    asyncio.run(
        run(
            url,
            prefix,
            name,
            tasks=int(tasks),
            seconds=float(seconds),
            seed=int(seed),
            skew=float(skew),
        )
    )
