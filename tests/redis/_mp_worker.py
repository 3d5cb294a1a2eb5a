"""A worker process of test_multiprocess: ``python _mp_worker.py MODE URL PREFIX NAME ...``.

``run``: 300 tasks against the shared budget; prints one JSON line with what it recorded.
``hold``: takes a reservation, prints ``HELD``, then hangs until it is killed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import structlog

from aiobudget import Budget, BudgetExhausted
from aiobudget.stores.redis import RedisStore

LIMITS = {"calls": 900, "tokens": 60_000}


async def run(url: str, prefix: str, name: str, tasks: int, seed: int) -> None:
    rng = random.Random(seed)
    totals = {"calls": 0, "tokens": 0}
    granted = denied = 0
    async with RedisStore(url, prefix=prefix) as store:
        budget = Budget(LIMITS, name=name, store=store)

        async def task() -> None:
            nonlocal granted, denied
            estimate = rng.randint(10, 120)
            used = rng.randint(0, estimate)
            timeout = 0.05 if rng.random() < 0.3 else None
            try:
                async with budget.reserve(calls=1, tokens=estimate, timeout=timeout) as r:
                    await asyncio.sleep(rng.random() * 0.01)
                    r.record(calls=1, tokens=used)
            except BudgetExhausted:
                denied += 1
                return
            granted += 1
            totals["calls"] += 1
            totals["tokens"] += used

        # Start together: report ready, then wait (bounded) for the parent's go.
        client = store._client()
        await client.incr(f"{prefix}:ready")
        for _ in range(2000):
            if await client.exists(f"{prefix}:go"):
                break
            await asyncio.sleep(0.005)
        else:
            raise SystemExit("no go from the parent within 10 s")
        await asyncio.gather(*(task() for _ in range(tasks)))
    print(json.dumps({"totals": totals, "granted": granted, "denied": denied}), flush=True)


async def hold(url: str, prefix: str, name: str, lease_ttl: float) -> None:
    store = RedisStore(url, prefix=prefix, lease_ttl=lease_ttl)
    budget = Budget(LIMITS, name=name, store=store)
    reservation = await budget.try_reserve(calls=3, tokens=100)
    assert reservation is not None
    print("HELD", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    # aiobudget's log events (structlog prints them on stdout unless configured) go to
    # stderr: stdout is this worker's report.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    mode, url, prefix, name, *rest = sys.argv[1:]
    if mode == "run":
        asyncio.run(run(url, prefix, name, int(rest[0]), int(rest[1])))
    else:
        asyncio.run(hold(url, prefix, name, float(rest[0])))
