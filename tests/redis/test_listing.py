"""RedisStore for tools and metrics: names() lists budgets with SCAN, read() reads one
without creating it; the statistics of a Redis snapshot (held, waiting)."""

from __future__ import annotations

import asyncio
import math

import pytest
import redis.asyncio

from aiobudget import Budget, Limit, ReservationClosed
from aiobudget.stores.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NAMES = ["plain", "tenant {7}", "a:b/c", "glob*?[x]", "naïve café", ""]


async def listed(store: RedisStore) -> list[str]:
    return [name async for name in store.names()]


class TestNames:
    async def test_top_level_budgets_each_once(self, store: RedisStore) -> None:
        """Every top-level budget under the prefix, its name unescaped, once; children
        and unnamed budgets are not listed."""
        for name in NAMES:
            budget = Budget({"tokens": 10}, name=name, store=store)
            await budget.charge(tokens=1)
            await budget.child({"tokens": 5}, name="kid").charge(tokens=1)
        await Budget({"tokens": 10}, store=store).charge(tokens=1)  # unnamed: private
        found = await listed(store)
        assert sorted(NAMES) == sorted(found)

    async def test_only_this_prefix(self, redis_url: str, redis_prefix: str) -> None:
        """Budgets under another prefix, even one this prefix is the start of, or one a
        glob would match, are not listed."""
        async with (
            RedisStore(redis_url, prefix=f"{redis_prefix}*") as star,
            RedisStore(redis_url, prefix=f"{redis_prefix}x") as longer,
            RedisStore(redis_url, prefix=redis_prefix) as plain,
        ):
            for store, name in ((star, "star"), (longer, "longer"), (plain, "plain")):
                await Budget({"tokens": 10}, name=name, store=store).charge(tokens=1)
            assert (["star"], ["longer"], ["plain"]) == (
                await listed(star),
                await listed(longer),
                await listed(plain),
            )

    async def test_many_budgets_scanned_incrementally(self, store: RedisStore) -> None:
        """More budgets than one SCAN batch returns are all listed."""
        names = [f"key-{i}" for i in range(1_500)]

        async def make(chunk: list[str]) -> None:
            for name in chunk:
                await Budget({"calls": 10}, name=name, store=store).charge(calls=1)

        await asyncio.gather(*(make(names[i::8]) for i in range(8)))
        assert sorted(names) == sorted(await listed(store))


class TestRead:
    async def test_equals_the_budgets_snapshot(self, store: RedisStore) -> None:
        """read(name) is the snapshot Budget.snapshot() gives, limits included."""
        budget = Budget({"tokens": Limit(100, warn=50), "calls": 5}, name="t", store=store)
        await budget.charge(tokens=60)
        held = await budget.try_reserve(tokens=10, calls=1)
        assert held is not None
        assert await budget.snapshot() == await store.read("t")
        await held.release()

    async def test_unknown_budget_is_none_and_not_created(
        self, store: RedisStore, redis_url: str, redis_prefix: str
    ) -> None:
        """read() of a name that has no budget is None, and leaves no key behind."""
        assert await store.read("nobody") is None
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert [] == [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        finally:
            await client.aclose()

    async def test_sees_limits_changed_elsewhere(self, store: RedisStore) -> None:
        """read() needs no limits: it shows the stored ones, whoever set them."""
        budget = Budget({"tokens": 100}, name="t", store=store)
        await budget.set_limits({"tokens": 70})
        snap = await store.read("t")
        assert snap is not None
        assert {"tokens": Limit(70)} == dict(snap.limits)


class TestStatistics:
    async def test_closed_leases_are_not_held(self, store: RedisStore) -> None:
        """A settled or released lease is remembered for retries (a tombstone) but no
        longer counted as held."""
        budget = Budget({"tokens": 100}, name="t", store=store)
        reservations = [await budget.try_reserve(tokens=1) for _ in range(3)]
        assert 3 == (await budget.snapshot()).held
        for reservation in reservations[:2]:
            assert reservation is not None
            await reservation.release()
        assert 1 == (await budget.snapshot()).held
        assert reservations[2] is not None
        await reservations[2].release()

    async def test_expired_leases_are_not_held(self, redis_url: str, redis_prefix: str) -> None:
        """A lease whose holder stopped renewing it stops counting once it expires."""
        async with RedisStore(redis_url, prefix=redis_prefix, lease_ttl=0.3) as short:
            budget = Budget({"tokens": 100}, name="t", store=short)
            reservation = await budget.try_reserve(tokens=1)
            assert reservation is not None
            assert 1 == (await budget.snapshot()).held
            await asyncio.sleep(0.4)
            assert (0, 0) == ((snap := await budget.snapshot()).held, snap.reserved["tokens"])
            with pytest.raises(ReservationClosed):  # reclaimed already
                await reservation.release()

    async def test_a_waiter_is_counted_where_it_waits(self, store: RedisStore) -> None:
        """A waiting reservation counts at the level that holds it back, until granted."""
        parent = Budget({"tokens": 10}, name="p", store=store)
        child = parent.child({"tokens": 10}, name="c")
        holder = await parent.try_reserve(tokens=10)
        assert holder is not None

        async def wait() -> None:
            async with child.reserve(tokens=5, timeout=math.inf):
                pass

        task = asyncio.create_task(wait())
        for _ in range(200):
            if (await parent.snapshot()).waiting == 1:
                break
            await asyncio.sleep(0.01)
        assert (1, 0) == ((await parent.snapshot()).waiting, (await child.snapshot()).waiting)
        await holder.release()
        await asyncio.wait_for(task, 10)
        assert (0, 0) == ((await parent.snapshot()).waiting, (await parent.snapshot()).held)
