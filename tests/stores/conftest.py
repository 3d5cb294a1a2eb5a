"""The store matrix: every test that takes ``make_store`` runs once per kind of store.

``make_store`` is a factory of fresh stores (`aiobudget.testing.StoreFactory`), so a test
can open as many stores as it likes. The kinds:

- ``memory``: `MemoryStore`, the default store, on a `ManualClock` (period checks move it).
- ``memory-async``: a `MemoryStore` seen only through the async `Account` protocol, so
  `Budget` takes the awaiting path a networked store (Redis) takes: shielded exits,
  awaited settles. It checks that path without a server.
- ``memory-slow``: the same, with a millisecond of "network" before and after every
  operation, so the checks are shown not to depend on a store answering at once (the
  timing a Redis store has), before a Redis store exists.
- ``redis``: added by the RedisStore work (see the marked place below).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
import pytest

from aiobudget import MemoryStore, Period
from aiobudget.kernel import Denial, Limit, Outcome, Snapshot
from aiobudget.protocols import Account, Held
from aiobudget.stores.memory import MemoryAccount
from aiobudget.testing import ManualClock, StoreFactory


class AsyncAccount:
    """A `MemoryAccount` behind the async `Account` protocol only (no ``*_nowait``).

    Tests subclass it to break one rule on purpose and show the conformance checks catch
    it.
    """

    def __init__(self, inner: MemoryAccount) -> None:
        self.inner = inner

    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def dims(self) -> tuple[str, ...]:
        return self.inner.dims

    def vector(self, amounts: Mapping[str, object]) -> tuple[int, ...]:
        return self.inner.vector(amounts)

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        return await self.inner.reserve(amounts, use_headroom=use_headroom, timeout=timeout)

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        return await self.inner.settle(held, actual)

    async def release(self, held: Held) -> Outcome:
        return await self.inner.release(held)

    async def extend(self, held: Held, ttl: float | None) -> None:
        await self.inner.extend(held, ttl)

    def abandon(self, held: Held) -> None:
        self.inner.abandon(held)

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        return await self.inner.charge(amounts, strict=strict)

    async def snapshot(self) -> Snapshot:
        return await self.inner.snapshot()

    async def reset(self) -> Outcome:
        return await self.inner.reset()

    async def set_limits(self, limits: Mapping[str, Limit]) -> Outcome:
        return await self.inner.set_limits(limits)


LAG = 0.001  # seconds of simulated network, each way


class SlowAccount(AsyncAccount):
    """An `AsyncAccount` that answers after a round trip of simulated network.

    Like a correct networked store, it never loses a reservation the server granted to a
    cancellation that arrives while the answer travels back: that half is shielded.
    """

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        await anyio.sleep(LAG)
        result = await super().reserve(amounts, use_headroom=use_headroom, timeout=timeout)
        with anyio.CancelScope(shield=True):
            await anyio.sleep(LAG)
        return result

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        await anyio.sleep(LAG)
        outcome = await super().settle(held, actual)
        await anyio.sleep(LAG)
        return outcome

    async def release(self, held: Held) -> Outcome:
        await anyio.sleep(LAG)
        outcome = await super().release(held)
        await anyio.sleep(LAG)
        return outcome

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        await anyio.sleep(LAG)
        outcome = await super().charge(amounts, strict=strict)
        await anyio.sleep(LAG)
        return outcome

    async def snapshot(self) -> Snapshot:
        await anyio.sleep(LAG)
        snapshot = await super().snapshot()
        await anyio.sleep(LAG)
        return snapshot

    async def reset(self) -> Outcome:
        await anyio.sleep(LAG)
        outcome = await super().reset()
        await anyio.sleep(LAG)
        return outcome


class AsyncOnlyStore:
    """A `MemoryStore` whose accounts are `AsyncAccount` (or ``account_class``)."""

    account_class: type[AsyncAccount] = AsyncAccount

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.inner = MemoryStore(clock=self.clock)

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> AsyncAccount:
        inner_parent = parent.inner if isinstance(parent, AsyncAccount) else parent
        inner = self.inner.open(
            name, limits, parent=inner_parent, update_limits=update_limits, period=period
        )
        return self.account_class(inner)


class SlowStore(AsyncOnlyStore):
    """A `MemoryStore` behind simulated network (`SlowAccount`)."""

    account_class = SlowAccount


STORE_KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("memory-async", id="memory-async"),
    pytest.param("memory-slow", id="memory-slow"),
    # ---- RedisStore goes here ---------------------------------------------------------
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    # -------------------------------------------------------------------------------------
]


@pytest.fixture(params=STORE_KINDS)
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """A factory of fresh stores of one kind; every store test runs once per kind."""
    kind = request.param
    if kind == "memory":
        yield lambda: MemoryStore(clock=ManualClock())
    elif kind == "memory-async":
        yield AsyncOnlyStore
    elif kind == "memory-slow":
        yield SlowStore
    # ---- RedisStore goes here -----------------------------------------------------------
    elif kind == "redis":
        # redis-py runs on asyncio only (see RedisStore's docstring).
        if request.getfixturevalue("anyio_backend")[0] == "trio":
            pytest.skip("RedisStore runs on asyncio and uvloop, not trio")
        # Asked for here, not in the signature, so memory runs need no Redis server.
        redis_url = request.getfixturevalue("redis_url")
        redis_prefix = request.getfixturevalue("redis_prefix")  # its keys deleted after
        from aiobudget.stores.redis import RedisStore

        stores: list[RedisStore] = []

        def make() -> RedisStore:
            store = RedisStore(redis_url, prefix=redis_prefix)
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.aclose()
    # -------------------------------------------------------------------------------------
    else:  # pragma: no cover - a kind listed above without a branch here
        raise AssertionError(f"no factory for store kind {kind!r}")
