"""RedisStore waiting: pub/sub wake-ups, first come first served across processes,
tickets that expire with their owner, and the fallback re-check."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from aiobudget import Budget, BudgetExhausted
from aiobudget.stores._redis_account import RedisHeld
from aiobudget.stores.redis import RedisStore

from ._support import eventually, redis_account

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
async def other(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A second store on the same prefix: another process, as far as Redis can tell."""
    async with RedisStore(redis_url, prefix=redis_prefix) as made:
        yield made


async def waiting(budget: Budget) -> int:
    """How many tickets wait at *budget* and its ancestors."""
    account = redis_account(budget)
    client = account.link.client()
    return sum([await client.zcard(level.keys[3]) for level in account.levels])


async def queued(budget: Budget, count: int) -> bool:
    """Whether at least *count* tickets wait at *budget* and its ancestors."""
    return await waiting(budget) >= count


class TestWaking:
    async def test_a_settle_wakes_a_waiter_at_once(
        self, store: RedisStore, other: RedisStore
    ) -> None:
        """A waiter in another process is woken by the settle's notice, long before its
        fallback re-check."""
        mine = Budget({"calls": 1}, name="b", store=store)
        theirs = Budget({"calls": 1}, name="b", store=other)
        woke = math.inf
        async with anyio.create_task_group() as group:
            first = await mine.try_reserve(calls=1)
            assert first is not None

            async def wait() -> None:
                nonlocal woke
                async with theirs.reserve(calls=1, timeout=10):
                    woke = time.monotonic()

            group.start_soon(wait)
            await eventually(lambda: queued(mine, 1))
            freed = time.monotonic()
            await first.release()
        assert woke - freed < 0.3  # the fallback re-check waits at least 0.5 s

    async def test_an_expired_lease_frees_a_waiter(self, redis_url: str, redis_prefix: str) -> None:
        """Nobody settles (the holder died) and nobody publishes: the waiter's own
        re-check reclaims the expired lease and gets in."""
        async with RedisStore(redis_url, prefix=redis_prefix, lease_ttl=0.2) as dead:
            holder = Budget({"calls": 1}, name="b", store=dead)
            await redis_account(holder).reserve((1,), use_headroom=False, timeout=None)
            waiter = Budget({"calls": 1}, name="b", store=dead)
            with anyio.fail_after(3):
                async with waiter.reserve(calls=1, timeout=5):
                    pass

    async def test_timeout_and_impossible(self, store: RedisStore) -> None:
        """A wait ends at its timeout, and at once when spent alone rules it out; either
        way its ticket leaves the queue."""
        budget = Budget({"calls": 2}, name="b", store=store)
        await budget.charge(calls=1)
        held = await budget.try_reserve(calls=1)
        started = time.monotonic()
        with pytest.raises(BudgetExhausted):
            async with budget.reserve(calls=1, timeout=0.3):
                pass
        assert 0.3 <= time.monotonic() - started < 2
        with pytest.raises(BudgetExhausted, match="waiting cannot help"):
            async with budget.reserve(calls=2, timeout=10):
                pass
        assert 0 == await waiting(budget)
        assert held is not None
        await held.release()


class TestOrder:
    async def test_newcomers_do_not_jump_the_queue(
        self, store: RedisStore, other: RedisStore
    ) -> None:
        """While a large request waits, a small one that would fit is told to queue, in
        any process; when budget is freed the large one goes first."""
        mine = Budget({"calls": 10}, name="b", store=store)
        theirs = Budget({"calls": 10}, name="b", store=other)
        order: list[str] = []
        held = await mine.try_reserve(calls=8)
        assert held is not None

        async def big() -> None:
            async with theirs.reserve(calls=5, timeout=10) as r:
                order.append("big")
                r.record(calls=5)

        async with anyio.create_task_group() as group:
            group.start_soon(big)
            await eventually(lambda: queued(mine, 1))
            with pytest.raises(BudgetExhausted, match="earlier waiting"):
                async with mine.reserve(calls=1):
                    pass

            async def small() -> None:
                async with mine.reserve(calls=1, timeout=10):
                    order.append("small")

            group.start_soon(small)
            await eventually(lambda: queued(mine, 2))
            await held.release()
        assert ["big", "small"] == order

    async def test_cancelled_waiter_leaves_the_queue(self, store: RedisStore) -> None:
        """A waiter cancelled while waiting takes its ticket with it."""
        budget = Budget({"calls": 1}, name="b", store=store)
        held = await budget.try_reserve(calls=1)
        with anyio.move_on_after(0.2):
            async with budget.reserve(calls=1, timeout=10):
                pytest.fail("granted")
        assert 0 == await waiting(budget)
        assert held is not None
        await held.release()
        async with budget.reserve(calls=1):
            pass

    async def test_a_dead_waiters_ticket_expires(self, store: RedisStore) -> None:
        """A waiter whose process died stops renewing its ticket; after the ticket's time
        to live it holds nobody back."""
        budget = Budget({"calls": 2}, name="b", store=store)
        held = await budget.try_reserve(calls=2)
        store._link.ticket_ms = "200"
        account = redis_account(budget)
        # A waiter's first attempt, then nothing: its process "died".
        denial = await account._attempt("d" * 32, ["2"], False, "e" * 32, keep=True)
        assert not isinstance(denial, RedisHeld)
        assert held is not None
        await held.release()
        with pytest.raises(BudgetExhausted, match="earlier waiting"):
            async with budget.reserve(calls=1):
                pass
        await anyio.sleep(0.25)
        async with budget.reserve(calls=1):
            pass
        assert 0 == await waiting(budget)

    async def test_a_waiter_blocked_at_the_parent_holds_back_siblings(
        self, store: RedisStore
    ) -> None:
        """The queue is per level: a waiter held back at the parent holds back a sibling
        child's newcomers, not those of unrelated budgets."""
        parent = Budget({"calls": 4}, name="p", store=store)
        one = parent.child({"calls": 10}, name="one")
        two = parent.child({"calls": 10}, name="two")
        elsewhere = Budget({"calls": 4}, name="elsewhere", store=store)
        held = await one.try_reserve(calls=3)
        assert held is not None
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                async with one.reserve(calls=2, timeout=10):
                    pass

            group.start_soon(wait)
            await eventually(lambda: queued(parent, 1))
            with pytest.raises(BudgetExhausted, match="earlier waiting"):
                async with two.reserve(calls=1):
                    pass
            async with elsewhere.reserve(calls=1):
                pass
            await held.release()


class TestUnrelatedTenants:
    async def test_a_waiter_holds_back_only_what_asks_for_its_dimensions(
        self, store: RedisStore, other: RedisStore
    ) -> None:
        """Org {calls: 10} with children A, B, C: A holds 8 calls, B waits for 5. C's
        reservation of 5 tokens asks nothing of the org's calls, so B does not hold it
        back; D's reservation of 1 call would fit but waits its turn behind B."""
        org = Budget({"calls": 10}, name="org", store=store)
        a = org.child({"calls": 10}, name="a")
        b = Budget({"calls": 10}, name="org", store=other).child({"calls": 10}, name="b")
        c = org.child({"tokens": 100}, name="c")
        d = org.child({"calls": 10}, name="d")
        held = await a.try_reserve(calls=8)
        assert held is not None
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                async with b.reserve(calls=5, timeout=math.inf) as r:
                    r.record(calls=5)

            group.start_soon(wait)
            await eventually(lambda: queued(org, 1))
            async with c.reserve(tokens=5) as r:
                r.record(tokens=5)
            with pytest.raises(BudgetExhausted, match="earlier waiting"):
                async with d.reserve(calls=1):
                    pass
            await held.release()
        assert {"calls": 5} == dict((await org.snapshot()).spent)
        assert {"tokens": 5, "calls": 0} == dict((await c.snapshot()).spent)
