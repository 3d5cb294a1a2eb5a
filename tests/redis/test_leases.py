"""RedisStore leases: expiry on the server's clock, extend, sweep, idempotent closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aiobudget import Budget, BudgetExhausted, ReservationClosed
from aiobudget.stores._redis_account import RedisHeld
from aiobudget.stores.redis import RedisStore

from ._support import redis_account, state_hash

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TTL = 0.3  # seconds: short leases, so that expiry is seen without long sleeps
PAST = 0.4  # a sleep that outlives a lease of TTL


@pytest.fixture
async def short(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A store whose leases live 0.3 s."""
    async with RedisStore(redis_url, prefix=redis_prefix, lease_ttl=TTL) as made:
        yield made


async def counters(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    snapshot = await budget.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)


class TestExpiry:
    async def test_a_dead_holders_reservation_comes_back(self, short: RedisStore) -> None:
        """A reservation nobody settles is given back once its lease expires."""
        budget = Budget({"calls": 5}, name="b", store=short)
        held = await redis_account(budget).reserve((4,), use_headroom=False, timeout=None)
        assert isinstance(held, RedisHeld)
        assert ({"calls": 0}, {"calls": 4}) == await counters(budget)
        await asyncio.sleep(PAST)
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)

    async def test_settling_an_expired_lease_is_refused(self, short: RedisStore) -> None:
        """Settling after expiry raises ReservationClosed and charges nothing."""
        budget = Budget({"calls": 5}, name="b", store=short)

        async def outlive() -> None:
            async with budget.reserve(calls=2) as r:
                r.record(calls=2)
                await asyncio.sleep(PAST)

        with pytest.raises(ReservationClosed, match="expired"):
            await outlive()
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)

    async def test_extend_keeps_a_lease_alive(self, short: RedisStore) -> None:
        """extend() renews the lease, on the server's clock."""
        budget = Budget({"calls": 5}, name="b", store=short)
        async with budget.reserve(calls=2) as r:
            await r.extend(2.0)
            await asyncio.sleep(PAST)
            assert ({"calls": 0}, {"calls": 2}) == await counters(budget)
            await r.extend()  # the store's lease_ttl again
            r.record(calls=1)
        assert ({"calls": 1}, {"calls": 0}) == await counters(budget)

    async def test_extending_an_expired_lease_is_refused(self, short: RedisStore) -> None:
        """A lease that already expired cannot be renewed."""
        budget = Budget({"calls": 5}, name="b", store=short)
        held = await redis_account(budget).reserve((1,), use_headroom=False, timeout=None)
        assert isinstance(held, RedisHeld)
        await asyncio.sleep(PAST)
        with pytest.raises(ReservationClosed):
            await redis_account(budget).extend(held, 1.0)

    async def test_leases_expire_at_every_level(self, short: RedisStore) -> None:
        """A child's expired lease is given back at its parent too."""
        parent = Budget({"calls": 5}, name="p", store=short)
        child = parent.child({"calls": 5}, name="c")
        await redis_account(child).reserve((3,), use_headroom=False, timeout=None)
        await asyncio.sleep(PAST)
        assert ({"calls": 0}, {"calls": 0}) == await counters(parent)
        assert ({"calls": 0}, {"calls": 0}) == await counters(child)

    async def test_sweep_reclaims_untouched_budgets(self, short: RedisStore) -> None:
        """sweep() gives back expired leases of budgets no script has touched since."""
        budget = Budget({"calls": 5}, name="b", store=short)
        await redis_account(budget).reserve((3,), use_headroom=False, timeout=None)
        await asyncio.sleep(PAST)
        assert "3" == (await state_hash(short, budget))["reserved"]
        assert 1 == await short.sweep()
        assert "0" == (await state_hash(short, budget))["reserved"]
        assert 0 == await short.sweep()


class TestClosing:
    async def test_a_retried_settle_answers_the_same(self, store: RedisStore) -> None:
        """The same lease id settled again (its reply was lost) gets the first outcome and
        changes nothing."""
        budget = Budget({"calls": 5}, name="b", store=store)
        account = redis_account(budget)
        held = await account.reserve((3,), use_headroom=False, timeout=None)
        assert isinstance(held, RedisHeld)
        first = await account.settle(held, (5,))
        again = RedisHeld(account, held.lease, held.outcome)
        assert first == await account.settle(again, (5,))
        assert ({"calls": 5}, {"calls": 0}) == await counters(budget)

    async def test_a_second_settle_is_refused(self, store: RedisStore) -> None:
        """Settling the same reservation twice raises ReservationClosed."""
        budget = Budget({"calls": 5}, name="b", store=store)
        account = redis_account(budget)
        held = await account.reserve((3,), use_headroom=False, timeout=None)
        assert isinstance(held, RedisHeld)
        await account.release(held)
        with pytest.raises(ReservationClosed):
            await account.settle(held, (1,))
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)

    async def test_an_unknown_lease_is_refused(self, store: RedisStore) -> None:
        """A lease id Redis never granted cannot be settled or released."""
        budget = Budget({"calls": 5}, name="b", store=store)
        account = redis_account(budget)
        held = await account.reserve((1,), use_headroom=False, timeout=None)
        assert isinstance(held, RedisHeld)
        ghost = RedisHeld(account, "0" * 32, held.outcome)
        with pytest.raises(ReservationClosed, match="unknown"):
            await account.settle(ghost, (1,))
        with pytest.raises(ReservationClosed):
            await account.release(RedisHeld(account, "1" * 32, held.outcome))
        assert ({"calls": 0}, {"calls": 1}) == await counters(budget)

    async def test_abandoned_reservation_comes_back_at_the_next_call(
        self, store: RedisStore
    ) -> None:
        """A reservation garbage-collected while held is given back by the store's next
        operation (no I/O in the finalizer)."""
        budget = Budget({"calls": 5}, name="b", store=store)
        reservation = await budget.try_reserve(calls=4)
        assert reservation is not None
        with pytest.warns(ResourceWarning):
            del reservation  # the last reference: collected at once
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)


class TestReservationTtl:
    async def test_a_ttl_shorter_than_lease_ttl_expires_first(self, store: RedisStore) -> None:
        """``ttl=`` is the lease's time to live: an unclosed reservation comes back after
        it, although the store's leases live 60 s; a late commit is refused."""
        budget = Budget({"calls": 5}, name="b", store=store)
        r = await budget.acquire(calls=4, ttl=TTL)
        r.record(calls=4)
        assert ({"calls": 0}, {"calls": 4}) == await counters(budget)
        await asyncio.sleep(PAST)
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)
        with pytest.raises(ReservationClosed):  # "unknown": reclaimed by the snapshot
            await r.commit()
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)

    async def test_extend_renews_by_the_reservations_own_ttl(self, store: RedisStore) -> None:
        """extend() without seconds renews by the reservation's ttl, not lease_ttl."""
        budget = Budget({"calls": 5}, name="b", store=store)
        r = await budget.acquire(calls=2, ttl=TTL)
        await r.extend()
        await asyncio.sleep(PAST)
        with pytest.raises(ReservationClosed):
            await r.release()
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)

    async def test_a_waiting_reservation_takes_its_ttl(self, store: RedisStore) -> None:
        """A reservation granted after waiting gets the ttl asked for too."""
        budget = Budget({"calls": 5}, name="b", store=store)
        holder = await budget.acquire(calls=5)
        waiting = asyncio.ensure_future(budget.acquire(calls=3, timeout=5, ttl=TTL))
        await asyncio.sleep(0.05)
        await holder.release()
        r = await waiting
        assert ({"calls": 0}, {"calls": 3}) == await counters(budget)
        await asyncio.sleep(PAST)
        assert ({"calls": 0}, {"calls": 0}) == await counters(budget)
        with pytest.raises(ReservationClosed):
            await r.commit()


class TestAcquire:
    async def test_acquire_commit_and_denial(self, store: RedisStore) -> None:
        """acquire() returns a held lease, commit() settles it, and a denial raises
        BudgetExhausted with its details, as in memory."""
        budget = Budget({"calls": 5}, name="b", store=store)
        r = await budget.acquire(calls=4)
        assert ({"calls": 0}, {"calls": 4}) == await counters(budget)
        with pytest.raises(BudgetExhausted) as caught:
            await budget.acquire(calls=2)
        assert ("calls", 2, 1) == (
            caught.value.dim,
            caught.value.requested,
            caught.value.remaining,
        )
        r.record(calls=3)
        await r.commit()
        assert ({"calls": 3}, {"calls": 0}) == await counters(budget)
