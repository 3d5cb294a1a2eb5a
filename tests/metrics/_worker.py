"""A worker process of the scrape test: ``python _worker.py MODE URL PREFIX SEED``.

``run``: reservations on the shared budgets, some granted and settled, some denied;
prints one JSON line with its counts. ``hold``: holds two reservations on ``shared``,
fills ``small`` and queues a waiting reservation there; prints ``HELD`` and waits until
it is killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys

import structlog

from aiobudget import Budget, BudgetExhausted
from aiobudget.stores.redis import RedisStore

SHARED = {"tokens": 1_000_000, "calls": 1_000}
SMALL = {"tokens": 50}


async def run(url: str, prefix: str, seed: int) -> None:
    rng = random.Random(seed)
    granted = denied = 0
    async with RedisStore(url, prefix=prefix) as store:
        shared = Budget(SHARED, name="shared", store=store)
        small = Budget(SMALL, name="small", store=store)
        for _ in range(40):
            async with shared.reserve(tokens=rng.randint(10, 500), calls=1) as r:
                r.record(tokens=rng.randint(0, 10), calls=1)
            granted += 1
            try:
                async with small.reserve(tokens=rng.randint(1, 80)) as r:
                    r.record(tokens=0)
                granted += 1
            except BudgetExhausted:
                denied += 1
    print(json.dumps({"granted": granted, "denied": denied}), flush=True)


async def hold(url: str, prefix: str) -> None:
    async with RedisStore(url, prefix=prefix) as store:
        shared = Budget(SHARED, name="shared", store=store)
        small = Budget(SMALL, name="small", store=store)
        held = [await shared.try_reserve(tokens=100, calls=1) for _ in range(2)]
        held.append(await small.try_reserve(tokens=50))
        assert all(r is not None for r in held)
        waiter = asyncio.create_task(_wait(small))
        for _ in range(500):  # until the waiter is queued at small
            if (await small.snapshot()).waiting == 1:
                break
            await asyncio.sleep(0.01)
        print("HELD", flush=True)
        await waiter


async def _wait(budget: Budget) -> None:
    async with budget.reserve(tokens=10, timeout=float("inf")):
        pass


if __name__ == "__main__":
    # stdout is for the parent: aiobudget's events (denials are expected) go nowhere.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    mode, url, prefix = sys.argv[1:4]
    if mode == "run":
        asyncio.run(run(url, prefix, int(sys.argv[4])))
    else:
        asyncio.run(hold(url, prefix))
