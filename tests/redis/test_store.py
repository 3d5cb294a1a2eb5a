"""RedisStore: construction, sharing, hierarchy, limits, names, failures and loops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import uuid

import anyio
import pytest
import redis.asyncio
from redis.crc import key_slot

from aiobudget import (
    BackendError,
    Budget,
    BudgetExhausted,
    InvalidLimits,
    Limit,
    LimitsMismatch,
    Status,
)
from aiobudget.stores.redis import RedisStore

from ._support import flaky, keys_of, raw_keys, redis_account, state_hash

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


class TestConstruction:
    def test_repr_masks_passwords(self) -> None:
        """A password in the URL (authority or query) never shows in repr."""
        store = RedisStore("redis://alice:s3cret@127.0.0.1:6379/0?password=hush&db=0")
        text = repr(store)
        assert "s3cret" not in text
        assert "hush" not in text
        assert "alice:***@127.0.0.1:6379" in text

    def test_rejects_what_it_cannot_use(self) -> None:
        """A sync client, a prefix with braces, a bad lease time: refused at once."""
        import redis as sync_redis

        with pytest.raises(TypeError, match=r"redis\.asyncio"):
            RedisStore(sync_redis.Redis())
        with pytest.raises(ValueError, match="braces"):
            RedisStore("redis://127.0.0.1", prefix="a{b}")
        with pytest.raises(ValueError, match="positive"):
            RedisStore("redis://127.0.0.1", lease_ttl=0)
        with pytest.raises(TypeError, match="seconds"):
            RedisStore("redis://127.0.0.1", lease_ttl=True)

    def test_import_needs_no_redis(self) -> None:
        """Importing the module needs no redis-py; using the store says how to get it."""
        code = textwrap.dedent(
            """
            import sys
            sys.modules["redis"] = None  # as if not installed
            import aiobudget.stores.redis as module
            try:
                module.RedisStore("redis://127.0.0.1")
            except ImportError as exc:
                print(exc)
            """
        )
        done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "pip install 'aiobudget[redis]'" in done.stdout

    async def test_a_client_passed_in_stays_open(self, redis_url: str, redis_prefix: str) -> None:
        """A store built on the caller's client uses it and leaves it open."""
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            async with RedisStore(client, prefix=redis_prefix) as store:
                budget = Budget({"calls": 2}, name="b", store=store)
                assert Status.CONTINUE is (await budget.charge(calls=1)).status
            assert await client.ping()
        finally:
            await client.aclose()


class TestSharing:
    async def test_budgets_with_one_name_share_counters(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """Two stores (as two processes would) see one budget by name."""
        async with (
            RedisStore(redis_url, prefix=redis_prefix) as one,
            RedisStore(redis_url, prefix=redis_prefix) as two,
        ):
            first = Budget({"tokens": 100}, name="shared", store=one)
            second = Budget({"tokens": 100}, name="shared", store=two)
            async with first.reserve(tokens=60) as r:
                r.record(tokens=40)
            with pytest.raises(BudgetExhausted):
                async with second.reserve(tokens=61):
                    pass
            assert {"tokens": 40} == dict((await second.snapshot()).spent)

    async def test_children_apply_to_every_level(self, store: RedisStore) -> None:
        """A child's reservation counts at its parent; a denial names the level."""
        parent = Budget({"tokens": 100, "calls": 5}, name="org", store=store)
        child = parent.child({"tokens": 80}, name="team")
        other = parent.child({"tokens": 80}, name="other")
        async with child.reserve(tokens=70) as r:
            r.record(tokens=70)
        with pytest.raises(BudgetExhausted) as info:
            async with other.reserve(tokens=31):
                pass
        assert ("org", "tokens") == (info.value.budget, info.value.dim)
        assert {"tokens": 70, "calls": 0} == dict((await parent.snapshot()).spent)
        assert {"tokens": 0, "calls": 0} == dict((await other.snapshot()).spent)


class TestLimits:
    async def test_other_limits_are_a_mismatch(self, store: RedisStore) -> None:
        """A budget opened with other limits fails at its first call, changing nothing."""
        await Budget({"tokens": 100}, name="b", store=store).charge(tokens=1)
        other = Budget({"tokens": 200}, name="b", store=store)
        with pytest.raises(LimitsMismatch) as info:
            await other.charge(tokens=1)
        assert {"tokens": Limit(100)} == info.value.stored
        reordered = Budget({"calls": 1, "tokens": 100}, name="c", store=store)
        await reordered.charge(tokens=1)
        with pytest.raises(LimitsMismatch):
            await Budget({"tokens": 100, "calls": 1}, name="c", store=store).snapshot()

    async def test_update_limits_replaces_them(self, store: RedisStore) -> None:
        """update_limits=True makes the stored limits the new ones, for everyone."""
        old = Budget({"tokens": 100}, name="b", store=store)
        await old.charge(tokens=90)
        new = Budget({"tokens": 200}, name="b", store=store, update_limits=True)
        async with new.reserve(tokens=100):
            pass
        assert {"tokens": Limit(200)} == dict((await old.snapshot()).limits)
        with pytest.raises(InvalidLimits):
            await Budget({"calls": 1}, name="b", store=store, update_limits=True).snapshot()

    async def test_set_limits_elsewhere_is_no_mismatch(self, store: RedisStore) -> None:
        """Once a budget has checked its limits, another's set_limits does not break it."""
        one = Budget({"tokens": 100}, name="b", store=store)
        two = Budget({"tokens": 100}, name="b", store=store)
        await one.charge(tokens=1)
        await two.set_limits({"tokens": 10})
        assert Status.EXHAUSTED is (await one.charge(tokens=9)).status

    async def test_deleted_budget_is_created_again(self, store: RedisStore) -> None:
        """Keys deleted behind a budget's back (a flush, a tool) come back fresh."""
        budget = Budget({"tokens": 100}, name="b", store=store)
        await budget.charge(tokens=5)
        await store._client().delete(*await raw_keys(store))
        await budget.charge(tokens=7)
        assert {"tokens": 7} == dict((await budget.snapshot()).spent)


class TestNames:
    NAMES = ("a:b", "a%3Ab", "a/b", "{a}", "", "a b*?[x]", "日本語 ✓", "%", "%anon")

    async def test_names_never_collide(self, store: RedisStore) -> None:
        """Names with separators, braces, globs, spaces or unicode are distinct budgets."""
        for number, name in enumerate(self.NAMES):
            await Budget({"calls": 100}, name=name, store=store).charge(calls=number + 1)
        for number, name in enumerate(self.NAMES):
            snapshot = await Budget({"calls": 100}, name=name, store=store).snapshot()
            assert {"calls": number + 1} == dict(snapshot.spent)

    async def test_a_tree_lives_in_one_slot(self, store: RedisStore) -> None:
        """Every key of a tree has the escaped root name as hash tag: one cluster slot."""
        root = Budget({"calls": 10}, name="r{o}o:t", store=store)
        child = root.child({"calls": 5}, name="c}h{ild")
        async with child.reserve(calls=1, timeout=0.1):
            pass
        keys = await raw_keys(store)
        assert all(key.startswith(f"{store.prefix}:{{r%7Bo%7Do%3At}}") for key in keys)
        assert 1 == len({key_slot(key.encode()) for key in keys})
        assert len(keys) >= 4  # two states, and the child's lease tombstone

    async def test_unnamed_budgets_are_private(self, store: RedisStore) -> None:
        """Two unnamed budgets never share counters."""
        one = Budget({"calls": 1}, store=store)
        two = Budget({"calls": 1}, store=store)
        await one.charge(calls=1)
        assert {"calls": 0} == dict((await two.snapshot()).spent)


class TestTools:
    async def test_names_lists_top_level_budgets_once(self, store: RedisStore) -> None:
        """names() lists each top-level budget once, unescaped; children and unnamed
        budgets are not listed."""
        for name in ("a:b", "{x}", ""):
            budget = Budget({"calls": 5}, name=name, store=store)
            await budget.child({"calls": 2}, name="kid").charge(calls=1)
        await Budget({"calls": 5}, store=store).charge(calls=1)
        assert ["", "a:b", "{x}"] == sorted([name async for name in store.names()])

    async def test_read_needs_no_limits_and_creates_nothing(self, store: RedisStore) -> None:
        """read(name) is the budget's snapshot; an unknown name is None and leaves no key;
        a damaged budget is a BackendError naming it."""
        budget = Budget({"calls": Limit(5, warn=2)}, name="b", store=store)
        await budget.charge(calls=3)
        assert await budget.snapshot() == await store.read("b")
        assert await store.read("nobody") is None
        assert all("nobody" not in key for key in await raw_keys(store))
        await store._client().hset(keys_of(store, budget)[0], "spent", "x")
        with pytest.raises(BackendError, match="budget 'b' is damaged"):
            await store.read("b")

    async def test_a_reservations_own_ttl(self, store: RedisStore) -> None:
        """A lease taken with ttl= expires after it, whatever lease_ttl is; a ttl that is
        not a number of seconds up to a year is refused before anything is sent."""
        budget = Budget({"calls": 5}, name="b", store=store)
        account = redis_account(budget)
        await account.reserve((2,), use_headroom=False, timeout=None, ttl=0.2)
        assert {"calls": 2} == dict((await budget.snapshot()).reserved)
        await anyio.sleep(0.3)
        assert {"calls": 0} == dict((await budget.snapshot()).reserved)
        with pytest.raises(TypeError):
            await account.reserve((1,), use_headroom=False, timeout=None, ttl=True)
        with pytest.raises(ValueError, match="at most"):
            await account.reserve((1,), use_headroom=False, timeout=None, ttl=1e9)
        assert {"calls": 0} == dict((await budget.snapshot()).reserved)


class TestFailures:
    async def test_unreachable_redis_is_a_backend_error(self) -> None:
        """Nothing listening: BackendError with the redis-py error chained, no allow."""
        async with RedisStore("redis://127.0.0.1:1/0") as store:
            budget = Budget({"calls": 1}, name="b", store=store)
            with pytest.raises(BackendError) as info:
                async with budget.reserve(calls=1):
                    pytest.fail("reserved without Redis")
            assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)

    async def test_an_exception_from_inside_the_client_is_a_backend_error(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """A failure inside redis-py that is no RedisError (here: a client built with an
        encoding Python does not know raises LookupError packing a command) becomes
        BackendError naming the budget, cause chained, never a raw exception."""
        client = redis.asyncio.Redis.from_url(redis_url, encoding="no-such-codec")
        try:
            async with RedisStore(client, prefix=redis_prefix) as store:
                budget = Budget({"calls": 1}, name="b", store=store)
                with pytest.raises(BackendError, match="budget 'b'") as info:
                    await budget.charge(calls=1)
                assert isinstance(info.value.__cause__, LookupError)
                with pytest.raises(BackendError):
                    async with budget.reserve(calls=1):
                        pytest.fail("reserved without Redis")
        finally:
            await client.aclose()

    async def test_errors_never_show_the_password(self) -> None:
        """A BackendError from a store built on a URL with a password does not repeat it."""
        async with RedisStore("redis://alice:s3cret@127.0.0.1:1/0") as store:
            with pytest.raises(BackendError) as info:
                await Budget({"calls": 1}, name="b", store=store).charge(calls=1)
        assert "s3cret" not in str(info.value)
        assert "s3cret" not in repr(info.value)

    async def test_script_error_is_a_backend_error(self, store: RedisStore) -> None:
        """A script that fails (here on a key of the wrong type) raises BackendError
        naming the budget, with Redis's error chained, and changes nothing."""
        budget = Budget({"calls": 5}, name="b", store=store)
        await budget.charge(calls=1)
        key = keys_of(store, budget)[1]  # the leases hash
        await store._client().set(key, "not a hash")
        before = await state_hash(store, budget)
        with pytest.raises(BackendError, match="budget 'b'") as info:
            await budget.charge(calls=1)
        assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
        assert before == await state_hash(store, budget)

    async def test_scripts_reload_after_script_flush(self, private_redis_url: str) -> None:
        """After SCRIPT FLUSH (a restart, a failover) scripts are loaded again, unseen."""
        async with RedisStore(private_redis_url, prefix=uuid.uuid4().hex) as store:
            budget = Budget({"calls": 5}, name="b", store=store)
            await budget.charge(calls=1)
            await store._client().script_flush()
            async with budget.reserve(calls=1) as r:
                r.record(calls=1)
            assert {"calls": 2} == dict((await budget.snapshot()).spent)

    async def test_settle_is_retried_when_redis_blips(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """A settle that cannot reach Redis is retried, and counted exactly once."""
        client = flaky(redis_url)
        try:
            async with RedisStore(client, prefix=redis_prefix) as store:
                budget = Budget({"calls": 5}, name="b", store=store)
                client.fail["settle"] = 2
                async with budget.reserve(calls=2) as r:
                    r.record(calls=1)
                assert 3 == client.calls.count("settle")
                assert {"calls": 1} == dict((await budget.snapshot()).spent)
                assert {"calls": 0} == dict((await budget.snapshot()).reserved)
        finally:
            await client.aclose()

    async def test_settle_gives_up_then_the_lease_expires(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """When Redis stays away, the settle fails with BackendError after its tries; the
        reservation then comes back by expiry, never twice."""
        client = flaky(redis_url)
        try:
            async with RedisStore(client, prefix=redis_prefix, lease_ttl=0.3) as store:
                budget = Budget({"calls": 5}, name="b", store=store)
                client.fail["settle"] = 10
                with pytest.raises(BackendError):
                    async with budget.reserve(calls=2) as r:
                        r.record(calls=1)
                # Four tries, each retried once at once (a fresh connection may help).
                assert 8 == client.calls.count("settle")
                await asyncio.sleep(0.35)
                snapshot = await budget.snapshot()
                assert ({"calls": 0}, {"calls": 0}) == (
                    dict(snapshot.spent),
                    dict(snapshot.reserved),
                )
        finally:
            await client.aclose()

    async def test_lost_reserve_reply_is_released(self, redis_url: str, redis_prefix: str) -> None:
        """A reservation granted by Redis whose reply is lost to a cancellation is given
        back by id, at once."""
        client = flaky(redis_url)
        try:
            async with RedisStore(client, prefix=redis_prefix) as store:
                budget = Budget({"calls": 5}, name="b", store=store)
                client.lose = "reserve"
                with pytest.raises(TimeoutError), anyio.fail_after(0.2):
                    async with budget.reserve(calls=3):
                        pytest.fail("entered")
                assert {"calls": 0} == dict((await budget.snapshot()).reserved)
                assert "0" == (await state_hash(store, budget))["reserved"]
        finally:
            await client.aclose()


class TestLoops:
    def test_one_store_many_event_loops(self, redis_url: str, redis_prefix: str) -> None:
        """A store built from a URL works from several loops, in turn and at once, and
        closes each loop's client when that loop ends (no ResourceWarning)."""
        store = RedisStore(redis_url, prefix=redis_prefix)

        async def work() -> None:
            budget = Budget({"calls": 1000}, name="b", store=store)
            for _ in range(5):
                async with budget.reserve(calls=1) as r:
                    r.record(calls=1)

        asyncio.run(work())
        asyncio.run(work())
        threads = [threading.Thread(target=asyncio.run, args=(work(),)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        async def spent() -> int:
            return (await Budget({"calls": 1000}, name="b", store=store).snapshot()).spent["calls"]

        assert 25 == asyncio.run(spent())
        assert 0 == store._link.loops

    def test_trio_is_refused_clearly(self, redis_url: str) -> None:
        """redis-py is asyncio only: under trio the store says so."""
        import trio

        store = RedisStore(redis_url, prefix="never-used")

        async def main() -> None:
            await Budget({"calls": 1}, name="b", store=store).charge(calls=1)

        with pytest.raises(RuntimeError, match="asyncio"):
            trio.run(main)
