"""Helpers shared by the RedisStore tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import anyio
import redis.asyncio

from aiobudget import Budget
from aiobudget.stores._redis_account import RedisAccount
from aiobudget.stores.redis import RedisStore


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Until *check* is true (state in Redis, which no task of ours can signal)."""
    for _ in range(int(seconds / 0.01)):
        if await check():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"not true within {seconds} s: {check}")


def redis_account(budget: Budget) -> RedisAccount:
    """*budget*'s account, which these tests reach into."""
    found = budget._account
    assert isinstance(found, RedisAccount)
    return found


def flaky(url: str) -> FlakyRedis:
    """A `FlakyRedis` client of *url*."""
    client = FlakyRedis.from_url(url)
    assert isinstance(client, FlakyRedis)
    return client


async def raw_keys(store: RedisStore) -> list[str]:
    """Every key under *store*'s prefix, decoded and sorted."""
    client = store._client()
    keys = [key async for key in client.scan_iter(match=f"{store.prefix}*")]
    return sorted(key.decode() for key in keys)


def keys_of(store: RedisStore, budget: Budget) -> tuple[str, str, str, str]:
    """The keys of named *budget* (state, leases, expiries, waiters), as the Redis guide
    lays them out."""
    names: list[str] = []
    level: Budget | None = budget
    while level is not None:
        assert level.name is not None
        names.insert(0, quote(level.name, safe="") or "%")
        level = level.parent
    base = f"{store.prefix}:{{{names[0]}}}" + "".join(f"/{name}" for name in names[1:])
    return (f"{base}:s", f"{base}:l", f"{base}:e", f"{base}:w")


async def state_hash(store: RedisStore, budget: Budget) -> dict[str, str]:
    """The raw state hash of *budget* (no script runs, so nothing is reclaimed)."""
    raw: dict[bytes, bytes] = await store._client().hgetall(keys_of(store, budget)[0])
    return {k.decode(): v.decode() for k, v in raw.items()}


class FlakyRedis(redis.asyncio.Redis):
    """A client that fails (or loses the reply of) chosen script calls.

    ``fail[name] = n`` makes the next *n* calls of that script raise ConnectionError
    before reaching Redis; ``lose`` names a script whose reply is "lost": it runs on the
    server, then the call hangs until cancelled.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail: dict[str, int] = {}
        self.lose: str | None = None
        self.calls: list[str] = []

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        from aiobudget.stores._redis_scripts import scripts

        name = next((s.name for s in scripts().values() if s.sha == sha), "?")
        self.calls.append(name)
        if self.fail.get(name):
            self.fail[name] -= 1
            raise redis.exceptions.ConnectionError(f"injected failure of {name}")
        reply = await super().evalsha(sha, numkeys, *keys_and_args)
        if name == self.lose:
            self.lose = None
            await anyio.sleep_forever()
        return reply
