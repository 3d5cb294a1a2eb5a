"""A worker process of test_chaos: ``python _chaos_worker.py URL PREFIX NAME TASKS SECONDS
SEED LEASE_TTL``.

TASKS tasks reserve, record and settle against one budget for SECONDS while the test
breaks Redis under them. A settle that raises BackendError (outcome unknown) is retried
with ``commit()`` a few times. Prints one JSON line: what happened, and the usage of the
settles Redis confirmed and of those whose outcome stayed unknown.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter

import structlog

from aiobudget import BackendError, Budget, Reservation, ReservationClosed
from aiobudget.stores.redis import RedisStore

LIMITS = {"calls": 1_000_000, "tokens": 10_000}
RETRIES = 6  # commit() after an unknown outcome, 0.3 s apart


async def run(
    url: str, prefix: str, name: str, *, tasks: int, seconds: float, seed: int, lease_ttl: float
) -> None:
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    confirmed = {"calls": 0, "tokens": 0}
    unknown = {"calls": 0, "tokens": 0}
    loop = asyncio.get_running_loop()
    async with RedisStore(url, prefix=prefix, lease_ttl=lease_ttl, close_timeout=2) as store:
        budget = Budget(LIMITS, name=name, store=store)
        deadline = loop.time() + seconds

        async def settle(reservation: Reservation) -> str:
            try:
                await reservation.commit()
            except ReservationClosed:
                return "closed"  # the lease expired first: nothing was charged
            except BackendError:
                for _ in range(RETRIES):
                    await asyncio.sleep(0.3)
                    try:
                        await reservation.commit()
                    except BackendError:
                        continue
                    except ReservationClosed:
                        return "closed"
                    return "settled on retry"
                return "unknown"
            return "settled"

        async def task() -> None:
            while loop.time() < deadline:
                estimate = rng.randint(40, 120)  # ~125 fit at once: tasks contend
                used = {"calls": 1, "tokens": rng.randint(0, 3)}
                timeout = 0.2 if rng.random() < 0.1 else None
                try:
                    reservation = await budget.try_reserve(
                        calls=1, tokens=estimate, timeout=timeout
                    )
                except BackendError:
                    seen["reserve failed"] += 1
                    await asyncio.sleep(0.05)
                    continue
                if reservation is None:
                    seen["reserve denied"] += 1
                    await asyncio.sleep(rng.uniform(0.02, 0.05))
                    continue
                seen["reserve granted"] += 1
                await asyncio.sleep(rng.random() * 0.01)
                reservation.record(used)
                outcome = await settle(reservation)
                seen[outcome] += 1
                if outcome.startswith("settled"):
                    for dim, amount in used.items():
                        confirmed[dim] += amount
                elif outcome == "unknown":
                    for dim, amount in used.items():
                        unknown[dim] += amount

        await asyncio.gather(*(task() for _ in range(tasks)))
    print(json.dumps({"seen": seen, "confirmed": confirmed, "unknown": unknown}), flush=True)


if __name__ == "__main__":
    # Retries and denials are expected by the hundred: log nothing (stdout is the report).
    structlog.configure(
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(50),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    url, prefix, name, tasks, seconds, seed, lease_ttl = sys.argv[1:]
    asyncio.run(
        run(
            url,
            prefix,
            name,
            tasks=int(tasks),
            seconds=float(seconds),
            seed=int(seed),
            lease_ttl=float(lease_ttl),
        )
    )
