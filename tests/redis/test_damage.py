"""RedisStore when its keys are damaged outside aiobudget: a field edited by hand, a
state deleted or evicted while leases are live, leases deleted while budget is reserved.

Every script reads and checks everything before its first write, so a damaged budget
refuses every operation with `BackendError` naming it and changes nothing, until an
operator repairs it (`RedisStore.repair`, `Budget.reset(force=True)`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from aiobudget import BackendError, Budget, InvalidLimits, ReservationClosed
from aiobudget.stores._redis_account import RedisHeld
from aiobudget.stores.redis import RedisStore

from ._support import eventually, keys_of, raw_keys, redis_account

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

# Stored values that are not what aiobudget writes, per field of a budget's state hash
# (limits "calls=10//0": one dimension, so one counter per list).
CORRUPT_STATE = {
    "spec": ["garbage", "calls=10/x/0", "calls=010//0", "calls=10//11", "calls=1e3//0", ""],
    "spent": ["garbage", "-1", "1,1", "9223372036854775808", "1.5", ""],
    "reserved": ["garbage", "-2", "2,0", "99999999999999999999", ""],
    "peak": ["3", "x", "-1", ""],
    "held": ["x", "-1", "9", ""],
}
CORRUPT_LEASE = ["garbage", "-2", "2,2", "", "9223372036854775808"]


async def dump(client: Any, keys: list[str]) -> dict[str, object]:
    """Each of *keys* with its type, content and whether it expires."""
    out: dict[str, object] = {}
    for key in keys:
        kind = (await client.type(key)).decode()
        if kind == "hash":
            value: object = await client.hgetall(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = await client.get(key)
        out[key] = (kind, value, await client.ttl(key))
    return out


class Chain:
    """A parent ``p`` {calls: 10} and its child ``c`` {calls: 5}, with one charge and one
    live lease of 2 calls taken on the child."""

    def __init__(self, store: RedisStore) -> None:
        tag = uuid.uuid4().hex[:8]
        self.store = store
        self.parent = Budget({"calls": 10}, name=f"p-{tag}", store=store)
        self.child = self.parent.child({"calls": 5}, name=f"c-{tag}")
        self.held: RedisHeld

    async def build(self) -> Chain:
        await self.child.charge(calls=1)
        held = await redis_account(self.child).reserve((2,), use_headroom=False, timeout=None)
        assert isinstance(held, RedisHeld)
        self.held = held
        return self

    def budget(self, level: str) -> Budget:
        return self.child if level == "child" else self.parent

    def keys(self, level: str) -> tuple[str, ...]:
        return keys_of(self.store, self.budget(level))

    def all_keys(self) -> list[str]:
        """Every key of the tree: both levels, and the tree's waiter tickets."""
        parent = self.keys("parent")
        return [*parent, *self.keys("child"), parent[0].removesuffix(":s") + ":t"]

    def operations(self, level: str) -> dict[str, Callable[[], Awaitable[object]]]:
        """Every operation that reads the damaged *level*."""
        account = redis_account(self.child)
        held = self.held
        damaged = self.budget(level)
        return {
            "reserve": lambda: self.child.try_reserve(calls=1),
            "reserve, waiting": lambda: self.child.try_reserve(calls=1, timeout=0.05),
            "settle": lambda: account.settle(held, (1,)),
            "release": lambda: account.release(held),
            "extend": lambda: account.extend(held, 5.0),
            "charge": lambda: self.child.charge(calls=1),
            "strict charge": lambda: self.child.charge(calls=1, strict=True),
            "snapshot": damaged.snapshot,
            "reset": damaged.reset,
            "set_limits": lambda: damaged.set_limits({"calls": 9}),
        }


async def expect_refused(chain: Chain, level: str, what: str) -> None:
    """Every operation on the chain raises BackendError naming the damaged budget and
    leaves every key exactly as it was."""
    client = chain.store._client()
    name = chain.budget(level).name
    before = await dump(client, chain.all_keys())
    for operation, call in chain.operations(level).items():
        with pytest.raises(BackendError, match=f"budget '{name}'") as info:
            await call()
        assert "damaged" in str(info.value), (what, operation, info.value)
        assert before == await dump(client, chain.all_keys()), (what, operation)


# The matrix runs on asyncio alone: it is about Redis, not about the event loop.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
class TestHalfAppliedScripts:
    @pytest.mark.parametrize("level", ["child", "parent"])
    @pytest.mark.parametrize("field", sorted(CORRUPT_STATE))
    async def test_a_corrupt_state_field_refuses_everything_and_changes_nothing(
        self, store: RedisStore, level: str, field: str
    ) -> None:
        """Each stored field of each level, corrupted in turn: every operation raises
        BackendError naming that budget and writes nothing (no lease, no counter)."""
        for value in CORRUPT_STATE[field]:
            chain = await Chain(store).build()
            await store._client().hset(chain.keys(level)[0], field, value)
            await expect_refused(chain, level, f"{field}={value!r}")

    @pytest.mark.parametrize("level", ["child", "parent"])
    async def test_a_corrupt_lease_refuses_its_closing_and_changes_nothing(
        self, store: RedisStore, level: str
    ) -> None:
        """A live lease's stored amounts, corrupted at one level: settling, releasing or
        extending it raises BackendError naming that budget and changes nothing."""
        for value in CORRUPT_LEASE:
            chain = await Chain(store).build()
            await store._client().hset(chain.keys(level)[1], chain.held.lease, value)
            client = store._client()
            before = await dump(client, chain.all_keys())
            account = redis_account(chain.child)
            held = chain.held
            for call in (
                lambda: account.settle(held, (1,)),  # noqa: B023 - called in this iteration
                lambda: account.release(held),  # noqa: B023
                lambda: account.extend(held, 5.0),  # noqa: B023
            ):
                with pytest.raises(BackendError, match=f"budget '{chain.budget(level).name}'"):
                    await call()
                assert before == await dump(client, chain.all_keys()), value

    @pytest.mark.parametrize("level", ["child", "parent"])
    async def test_a_corrupt_expired_lease_refuses_everything(
        self, store: RedisStore, level: str
    ) -> None:
        """An expired lease whose stored amounts are corrupt is met by the first script
        that gives expired leases back: every operation refuses, nothing changes."""
        chain = await Chain(store).build()
        lease_key, expiry_key = chain.keys(level)[1:3]
        await store._client().hset(lease_key, chain.held.lease, "garbage")
        await store._client().zadd(expiry_key, {chain.held.lease: 1})  # expired long ago
        await expect_refused(chain, level, "an expired corrupt lease")

    async def test_a_counter_below_what_its_leases_hold_is_refused(self, store: RedisStore) -> None:
        """A reserved counter lowered by hand below the lease it holds: giving the lease
        back would make it negative, so the settle refuses and changes nothing."""
        chain = await Chain(store).build()
        await store._client().hset(chain.keys("parent")[0], "reserved", "1")
        before = await dump(store._client(), chain.all_keys())
        with pytest.raises(BackendError, match="holds more calls than is reserved"):
            await redis_account(chain.child).settle(chain.held, (1,))
        assert before == await dump(store._client(), chain.all_keys())

    async def test_a_negative_counter_is_not_extra_budget(self, store: RedisStore) -> None:
        """A stored spent of -5 on a limit of 10 does not let 12 in: it is refused as
        damage, not read as 5 calls of extra budget."""
        budget = Budget({"calls": 10}, name="b", store=store)
        await budget.charge(calls=0)
        await store._client().hset(keys_of(store, budget)[0], "spent", "-5")
        with pytest.raises(BackendError, match="spent counters are unreadable"):
            await budget.try_reserve(calls=12)


class TestVanishedKeys:
    async def test_counters_deleted_while_leases_are_live_fail_closed(
        self, store: RedisStore
    ) -> None:
        """The state hash deleted while a lease is live: nothing starts from zero, every
        operation raises BackendError naming the budget, and the state is not created
        again, until repaired; then the lease settles against the rebuilt counters."""
        budget = Budget({"calls": 10}, name="b", store=store)
        held = await budget.try_reserve(calls=4)
        assert held is not None
        await budget.charge(calls=5)
        held.record(calls=3)
        state = keys_of(store, budget)[0]
        await store._client().delete(state)
        for call in (
            lambda: budget.try_reserve(calls=1),
            lambda: budget.charge(calls=1),
            budget.snapshot,
            held.commit,
        ):
            with pytest.raises(BackendError, match="counters vanished while reservations"):
                await call()
        assert 0 == await store._client().exists(state)
        with pytest.raises(BackendError, match="budget 'b'"):
            await store.sweep()
        with pytest.raises(InvalidLimits, match="pass its limits"):
            await store.repair("b")
        changes = await store.repair("b", {"calls": 10})
        assert any("created again" in change for change in changes)
        assert any("reserved was recounted from the 1 leases held" in c for c in changes)
        await held.commit()  # retries the settle that failed: it was never applied
        snapshot = await budget.snapshot()
        assert ({"calls": 3}, {"calls": 0}) == (dict(snapshot.spent), dict(snapshot.reserved))

    async def test_leases_deleted_while_reserved_fail_closed(self, store: RedisStore) -> None:
        """The leases deleted while 4 calls are reserved: every operation raises
        BackendError instead of keeping them reserved for ever; repair recounts reserved
        (0: no lease is left) and keeps spent."""
        budget = Budget({"calls": 10}, name="b", store=store)
        await budget.charge(calls=2)
        held = await budget.try_reserve(calls=4)
        assert held is not None
        keys = keys_of(store, budget)
        await store._client().delete(keys[1], keys[2])
        with pytest.raises(BackendError, match=r"its leases vanished \(1 held, 0 found\)"):
            await budget.try_reserve(calls=1)
        recount = ["reserved was recounted from the 0 leases held: 4 -> 0"]
        assert recount == await store.repair("b", dry_run=True)
        with pytest.raises(BackendError, match="budget 'b'"):  # a dry run changes nothing
            await budget.snapshot()
        assert recount == await store.repair("b")
        assert [] == await store.repair("b")  # whole again
        snapshot = await budget.snapshot()
        assert ({"calls": 2}, {"calls": 0}) == (dict(snapshot.spent), dict(snapshot.reserved))
        with pytest.raises(ReservationClosed, match="unknown"):
            await held.commit()

    async def test_expiries_deleted_fail_closed_and_repair_keeps_the_leases(
        self, store: RedisStore
    ) -> None:
        """Only the expiries deleted: leases and expiries disagree, which is refused;
        repair gives the live lease a new expiry, and it settles normally."""
        budget = Budget({"calls": 10}, name="b", store=store)
        held = await budget.try_reserve(calls=4)
        assert held is not None
        await store._client().delete(keys_of(store, budget)[2])
        with pytest.raises(BackendError, match="leases and their expiries disagree"):
            await budget.charge(calls=1)
        changes = await store.repair("b")
        assert 1 == len(changes)
        assert "had lost its expiry" in changes[0]
        held.record(calls=3)
        await held.commit()
        snapshot = await budget.snapshot()
        assert ({"calls": 3}, {"calls": 0}) == (dict(snapshot.spent), dict(snapshot.reserved))

    async def test_a_child_is_repaired_by_a_forced_reset(self, store: RedisStore) -> None:
        """A child's counters deleted while its lease is live: the child refuses, the
        parent is untouched; ``child.reset(force=True)`` rebuilds it with the child's
        limits and the lease settles at both levels."""
        parent = Budget({"calls": 10}, name="p", store=store)
        child = parent.child({"calls": 5}, name="c")
        held = await child.try_reserve(calls=2)
        assert held is not None
        await child.charge(calls=1)
        await store._client().delete(keys_of(store, child)[0])
        with pytest.raises(BackendError, match="budget 'c'"):
            await child.charge(calls=1)
        assert {"calls": 1} == dict((await parent.snapshot()).spent)
        with pytest.raises(BackendError, match="budget 'c'"):
            await child.reset()  # a plain reset refuses too
        await child.reset(force=True)
        snapshot = await child.snapshot()
        assert ({"calls": 0}, {"calls": 2}) == (dict(snapshot.spent), dict(snapshot.reserved))
        held.record(calls=2)
        await held.commit()
        assert {"calls": 3} == dict((await parent.snapshot()).spent)
        assert ({"calls": 2}, {"calls": 0}) == (
            dict((await child.snapshot()).spent),
            dict((await child.snapshot()).reserved),
        )

    async def test_repair_leaves_a_whole_budget_alone(self, store: RedisStore) -> None:
        """Repairing a budget whose keys agree changes nothing and says so."""
        budget = Budget({"calls": 10}, name="b", store=store)
        held = await budget.try_reserve(calls=4)
        assert held is not None
        await budget.charge(calls=3)
        keys = list(keys_of(store, budget))
        before = await dump(store._client(), keys)
        assert [] == await store.repair("b")
        assert before == await dump(store._client(), keys)
        await held.release()


class TestCleanUpAndValidation:
    async def test_sweep_sweeps_the_rest_and_names_the_damaged(self, short: RedisStore) -> None:
        """One damaged budget among healthy ones: sweep still gives back every healthy
        budget's expired leases, then raises BackendError naming the damaged one."""
        healthy = [Budget({"calls": 5}, name=f"ok-{i}", store=short) for i in range(4)]
        for budget in healthy:
            await redis_account(budget).reserve((3,), use_headroom=False, timeout=None)
        broken = Budget({"calls": 5}, name="broken", store=short)
        await broken.charge(calls=1)
        await short._client().hset(keys_of(short, broken)[0], "spent", "x")
        await anyio.sleep(0.35)  # the leases expire (server time)
        with pytest.raises(BackendError, match=r"gave back 4 leases.*broken"):
            await short.sweep()
        for budget in healthy:
            state = await short._client().hget(keys_of(short, budget)[0], "reserved")
            assert b"0" == state

    async def test_unnamed_budgets_leave_nothing_once_idle(self, short: RedisStore) -> None:
        """Unnamed budgets (a root, and a child of a named one) used, then idle for
        lease_ttl: their keys are gone, the named parent's stay; using one after that is a
        BackendError, never a fresh start from zero."""
        private = Budget({"calls": 5}, store=short)
        named = Budget({"calls": 50}, name="named", store=short)
        per_request = named.child({"calls": 5})
        for budget in (private, per_request):
            async with budget.reserve(calls=2) as r:
                r.record(calls=1)
            await budget.charge(calls=1)
            held = await budget.try_reserve(calls=1)
            assert held is not None
            await held.release()

        async def only_the_named_are_left() -> bool:
            return all("%anon" not in key for key in await raw_keys(short))

        await eventually(only_the_named_are_left, 5)
        assert 2 == (await named.snapshot()).spent["calls"]
        with pytest.raises(BackendError, match="idle"):
            await private.charge(calls=1)

    def test_bad_values_are_refused_where_they_are_given(self) -> None:
        """A lease time beyond a year, a bad close_timeout or a malformed URL: refused
        when the store is built, not at its first operation."""
        with pytest.raises(ValueError, match="at most"):
            RedisStore("redis://127.0.0.1", lease_ttl=1e9)
        with pytest.raises(ValueError, match="positive"):
            RedisStore("redis://127.0.0.1", close_timeout=0)
        with pytest.raises(TypeError, match="seconds"):
            RedisStore("redis://127.0.0.1", close_timeout=True)
        with pytest.raises(ValueError, match="not a Redis URL"):
            RedisStore("htp://127.0.0.1:6379")
        with pytest.raises(ValueError, match="not a Redis URL"):
            RedisStore("redis://127.0.0.1:port/0")
        for path in ("/abc", "/0/1", "/-1"):  # redis-py would take the first two for /0
            with pytest.raises(ValueError, match="database number"):
                RedisStore(f"redis://127.0.0.1:6379{path}")
        for url in ("redis://127.0.0.1", "redis://127.0.0.1/", "rediss://h:1/15", "unix:///r.sock"):
            RedisStore(url)  # no I/O: accepted

    async def test_bad_extensions_and_sweep_limits_are_refused_before_any_io(
        self, store: RedisStore
    ) -> None:
        """``extend(1e10)``, ``extend(True)`` and ``sweep(limit=10**13)`` raise a typed
        error before anything is sent; the lease is still live."""
        budget = Budget({"calls": 5}, name="b", store=store)
        async with budget.reserve(calls=1) as r:
            with pytest.raises(ValueError, match="at most"):
                await r.extend(1e10)
            with pytest.raises(TypeError, match="seconds"):
                await r.extend(True)
            with pytest.raises(TypeError, match="seconds"):
                await r.extend("5")  # type: ignore[arg-type]
            await r.extend(1.5)
            r.record(calls=1)
        with pytest.raises(ValueError, match="limit"):
            await store.sweep(limit=10**13)
        assert {"calls": 1} == dict((await budget.snapshot()).spent)

    async def test_corrupt_stored_limits_are_a_backend_error_naming_the_budget(
        self, store: RedisStore
    ) -> None:
        """Limits edited into something unreadable: describe() and every operation raise
        BackendError naming the budget, not a bare ValueError."""
        budget = Budget({"calls": 5}, name="b", store=store)
        await budget.charge(calls=1)
        await store._client().hset(keys_of(store, budget)[0], "spec", "calls=5")
        with pytest.raises(BackendError, match="budget 'b'"):
            await store.describe("b")
        with pytest.raises(BackendError, match="stored limits are unreadable"):
            await Budget({"calls": 5}, name="b", store=store).snapshot()


@pytest.fixture
async def short(redis_url: str, redis_prefix: str) -> Any:
    """A store whose leases live 0.3 s."""
    async with RedisStore(redis_url, prefix=redis_prefix, lease_ttl=0.3) as made:
        yield made
