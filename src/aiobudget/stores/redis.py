"""`RedisStore`: budgets shared by any number of processes and machines through Redis.

The model is `MemoryStore`'s, moved into Redis: every operation is one Lua script
(``lua/*.lua``) that runs the kernel's rules atomically on the server, over the budget
and all its ancestors at once, in one round trip. Counters are decimal strings and the
scripts do exact 64-bit arithmetic, so amounts up to ``2**63 - 1`` behave exactly as in
the kernel (a differential test runs both on the same random operations).

What this store adds to the kernel, because processes die and networks fail:

* **Leases.** A reservation is a lease with an id (chosen by the client) and an expiry
  on the *server's* clock: ``lease_ttl`` seconds, renewed by ``await r.extend()``. A
  holder that dies loses its reservation when the lease expires; expired leases are
  given back by the next script that touches the budget (a bounded number per call) or
  by `RedisStore.sweep`. Settling or releasing an expired or unknown lease raises
  `ReservationClosed` and changes nothing. A closed lease's outcome is remembered for a
  while (30 s), so a settle retried after a lost reply answers the same and never
  counts twice; the store retries a settle or release that could not reach Redis three
  times over about a second, then leaves the reservation to expire.
* **Limits** are stored with the budget. The first call of a `Budget` checks that they
  are the ones it was built with (`LimitsMismatch` otherwise, unless it was built with
  ``update_limits=True``); later calls only check the dimensions, because any process
  may change the limits with ``set_limits``.
* **Waiting, first come first served, as far as Redis allows.** What is guaranteed:

  - A reservation that must wait gets a *ticket*, numbered by Redis in the same script
    that refused its first attempt: one order for all processes. The ticket waits at
    the budget level that refused it (the nearest to the leaf), and moves if a later
    attempt is refused at another level, keeping its number.
  - At every level, while the oldest live ticket waits there, no request that needs
    that level and came later (a younger ticket, or no ticket) gets in, even if it
    would fit: it is refused as ``queued`` (`BudgetExhausted`) or waits behind. A large
    request is not starved by a stream of small ones. As with `MemoryStore`, requests
    that do not need that level are not held back.
  - Budget is not handed over: the script that frees budget (a settle, a release, a
    reset, new limits, an expired lease reclaimed, a ticket leaving the head of a
    line) publishes the tickets first in line where it freed it, and only their owners
    wake and try again (no thundering herd). Their tickets keep newcomers out meanwhile.
  - Waiting is bounded without notices too: every waiter tries again at least every
    0.5-1 s (jittered), so a lost notice (pub/sub delivers at most once) costs that much.
  - A waiter renews its ticket with every attempt; the ticket of one that stopped (its
    process died) expires 5 s after its last attempt and then holds nobody back. A
    cancelled or timed-out waiter takes its ticket out in the same script as its last
    attempt (or a shielded clean-up).

  Not guaranteed: strict arrival order between waiters held at *different* levels (the
  rule is per level, as in `MemoryStore`); a waiter whose ticket expired while it was
  stalled (5 s without an attempt: a blocked event loop) or was lost with Redis's data
  (a failover without persistence) goes to the back of the line.
* **Periods.** A budget with a period rolls over inside the first script at or after a
  boundary of the *server's* clock (TIME), exactly once however many processes race on
  it; ``budget.period_closed`` is logged by the process whose call rolled it. The
  client only computes the boundaries (``lua/_periods.lua``), around its estimate of the
  server's time, which it corrects from the server's replies: its own clock may be off
  by minutes.
* **Failures** of Redis (unreachable, timeout, script error) raise `BackendError`, never
  an allow. Only Redis errors map there; budget errors (denials, `LimitsMismatch`, ...)
  are the kernel's.

All keys of a budget tree share one hash tag (see ``_redis_keys``), so the scripts work
on Redis Cluster. redis-py is asyncio only: this store runs on asyncio and uvloop, not
on trio. A store built from a URL makes one client per event loop, lazily, and closes it
when that loop shuts down (or on `aclose`); a client passed in is the caller's to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .._errors import BudgetError, InvalidLimits
from .._period import Period
from ..kernel import Ledger, Limit, check_flag
from ._redis_account import RedisAccount, RedisHeld, snapshot_of
from ._redis_keys import Level, escape, parse_spec, period_of
from ._redis_scripts import backend_errors, require_redis, run, scripts, text
from ._redis_wait import Listener

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
    from types import TracebackType

    from ..kernel import Snapshot
    from ..protocols import Account

__all__ = ["RedisStore"]

_TICKET_TTL: Final = 5.0  # seconds a waiter's ticket lives without being renewed
_CONNECT_TIMEOUT: Final = 5.0  # defaults for a client built from a URL (the URL may override)
_HEALTH_CHECK: Final = 1  # seconds
_SOCKET_TIMEOUT: Final = 5.0
_MAX_CONNECTIONS: Final = 64  # per event loop
_POOL_TIMEOUT: Final = 20.0  # seconds an operation waits for a free connection


@final
class RedisStore:
    """Budgets kept in Redis, shared by every process that opens them by name.

    ``RedisStore("redis://localhost:6379/0")``, or a `redis.asyncio.Redis` /
    `redis.asyncio.cluster.RedisCluster` client. Keys start with *prefix*; reservations
    are leases that expire *lease_ttl* seconds (server time) after they were taken or
    last extended. Needs the ``redis`` extra: ``pip install 'aiobudget[redis]'``.
    """

    __slots__ = (
        "_given",
        "_last",
        "_lease_ms",
        "_lease_ttl",
        "_lock",
        "_offset",
        "_orphans",
        "_prefix",
        "_states",
        "_ticket_ms",
        "_url",
    )

    def __init__(
        self, client_or_url: Any, *, prefix: str = "aiobudget", lease_ttl: float = 60.0
    ) -> None:
        redis = require_redis()
        self._url: str | None = None
        self._given: Any = None
        if isinstance(client_or_url, str):
            self._url = client_or_url
        elif isinstance(client_or_url, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster):
            self._given = client_or_url
        else:
            raise TypeError(
                "RedisStore needs a URL or a redis.asyncio.Redis / RedisCluster client, "
                f"not {type(client_or_url).__name__}"
            )
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a str without braces (hash tags): {prefix!r}")
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float):
            raise TypeError(f"lease_ttl must be a number of seconds, not {lease_ttl!r}")
        if not 0 < lease_ttl < math.inf:
            raise ValueError(f"lease_ttl must be a positive number of seconds, not {lease_ttl!r}")
        self._prefix = prefix
        self._lease_ttl = float(lease_ttl)
        self._lease_ms = str(max(1, round(lease_ttl * 1000)))
        self._ticket_ms = str(round(_TICKET_TTL * 1000))
        self._lock = threading.Lock()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._last: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None
        self._orphans: list[RedisHeld] = []
        self._offset = 0.0  # seconds the server's clock is ahead of ours (periods)
        scripts()  # read the Lua files now: a broken install fails here, not mid-request

    def __repr__(self) -> str:
        where = redact(self._url) if self._url is not None else type(self._given).__name__
        return f"<RedisStore {where} prefix={self._prefix!r} lease_ttl={self._lease_ttl:g}>"

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    @property
    def lease_ttl(self) -> float:
        """Seconds a reservation lives (server time) unless extended."""
        return self._lease_ttl

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> RedisAccount:
        """The account of budget *name* below *parent* (see `aiobudget.protocols.Store`).

        No I/O: the budget is created in Redis, or its limits checked, by the first call.
        """
        check_flag(update_limits, "update_limits")
        if parent is not None and not (isinstance(parent, RedisAccount) and parent._store is self):
            raise InvalidLimits("a child budget must live in the same store as its parent")
        if period is not None and not isinstance(period, Period):
            raise InvalidLimits(f"period must be a Period or None, not {period!r}")
        given = {dim: Limit.of(limit) for dim, limit in limits.items()}
        Ledger(given, name=name)  # InvalidLimits now, as MemoryStore would
        escaped = escape(name)
        if parent is None:
            base = f"{self._prefix}:{{{escaped}}}"
            level = Level(base, name, given, update=update_limits, period=period)
            return RedisAccount(self, (level,), (f"{base}:t", f"{base}:wake"))
        parent_levels = parent._levels
        level = Level(
            f"{parent_levels[0].base}/{escaped}", name, given, update=update_limits, period=period
        )
        return RedisAccount(self, (level, *parent_levels), parent._tree)

    @property
    def clock(self) -> Callable[[], float]:
        """This process's estimate of the Redis server's clock (POSIX seconds), corrected
        by the replies of scripts on budgets with a period. The server's clock decides
        when a period rolls over; this one tells people when (``Retry-After``)."""
        return self._server_time

    def _server_time(self) -> float:
        return time.time() + self._offset

    def _server_now(self) -> int:
        """Our estimate of the server's time, in microseconds since the Unix epoch."""
        return round((time.time() + self._offset) * 1_000_000)

    def _saw_server_time(self, server_us: int) -> None:
        """A reply said what time the server had: correct our estimate (to within a round
        trip, which the boundaries sent to scripts leave room for)."""
        self._offset = server_us / 1_000_000 - time.time()

    # -- per event loop --------------------------------------------------------------------

    def _state(self) -> _LoopState:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "RedisStore runs on asyncio (or uvloop) only: redis-py's client is asyncio's"
            ) from None
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                state = self._states[loop] = _LoopState(self, loop)
            self._last = (loop, state)
        return state

    def _client(self) -> Any:
        return self._state().client

    def _listener(self, channel: str) -> Listener:
        state = self._state()
        listener = state.listeners.get(channel)
        if listener is None:
            listener = state.listeners[channel] = Listener(state.client, channel)
        return listener

    def _forget_listener(self, channel: str, listener: Listener) -> None:
        listeners = self._state().listeners
        if listeners.get(channel) is listener:
            del listeners[channel]

    def _forget_state(self, state: _LoopState) -> None:
        with self._lock:
            if self._states.get(state.loop) is state:
                del self._states[state.loop]
            if self._last is not None and self._last[1] is state:
                self._last = None

    async def _drain_orphans(self) -> None:
        """Give back reservations that were garbage-collected while held."""
        orphans = self._orphans
        while orphans:
            held = orphans.pop()  # atomic: finalizers of other threads may append
            # On failure the lease expires by itself instead.
            with contextlib.suppress(BudgetError):
                await held.account._give_back(held)

    # -- maintenance -------------------------------------------------------------------

    async def sweep(self, *, limit: int = 1000) -> int:
        """Give back every expired lease of every budget under this store's prefix (up to
        *limit* per budget) and forget dead waiters; returns how many leases were given
        back. Not needed for correctness (scripts reclaim as they go); useful for budgets
        nobody touches, and for tools."""
        client = self._client()
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self._prefix) + ":{*:e"
        total = 0
        with backend_errors("scanning for budgets"):
            found = [text(key) async for key in client.scan_iter(match=pattern, count=1000)]
        for key in found:
            base, tree = key[:-2], key[: key.index("}") + 1]
            keys = [f"{tree}:t", f"{base}:s", f"{base}:l", f"{base}:e", f"{base}:w"]
            # One level, no limits check ('-'): a budget gone meanwhile is skipped.
            header = ["1", f"{tree}:wake", "-", ""]
            reply = await run(client, scripts()["sweep"], 5, [*keys, *header], [str(limit)])
            total += int(reply[1])
        return total

    async def describe(self, name: str) -> dict[str, Limit] | None:
        """The limits stored for the top-level budget *name*, in declaration order, or
        ``None`` when there is no such budget. Reads only; for tools such as the CLI that
        open a budget without knowing its limits."""
        key = f"{self._prefix}:{{{escape(name)}}}:s"
        with backend_errors(f"reading budget {name!r}"):
            spec = await self._client().hget(key, "spec")
        return None if spec is None else parse_spec(text(spec))

    async def names(self) -> AsyncIterator[str]:
        """The names of the top-level budgets under this store's prefix, each once, in no
        particular order. Found with SCAN (incrementally, never KEYS), whose cost grows
        with every key of the database, not only aiobudget's: about one round trip per
        1,000 keys. Unnamed (private) budgets and children are not listed."""
        pattern = _glob(self._prefix) + ":{*}:s"
        start = len(self._prefix) + 2  # past "<prefix>:{"
        seen: set[str] = set()
        with backend_errors("scanning for budgets"):
            found = self._client().scan_iter(match=pattern, count=1000)
            async for key in found:
                escaped = text(key)[start:-3]  # between the braces of "...:{name}:s"
                if escaped in seen or escaped.startswith("%anon-"):
                    continue
                seen.add(escaped)
                yield "" if escaped == "%" else unquote(escaped)

    async def read(self, name: str) -> Snapshot | None:
        """The snapshot of the top-level budget *name* as stored, or ``None`` when there
        is no such budget. Reads only: unlike ``Budget(...).snapshot()`` it needs no
        limits and never creates the budget (for tools and metrics)."""
        base = f"{self._prefix}:{{{escape(name)}}}"
        keys = [f"{base}:t", f"{base}:s", f"{base}:l", f"{base}:e", f"{base}:w"]
        header = ["1", f"{base}:wake", "-", ""]  # one level, no limits check (as sweep)
        reply = await run(self._client(), scripts()["snapshot"], 5, [*keys, *header], [])
        if text(reply[0]) == "NOBUDGET":
            return None
        level = Level(base, name, parse_spec(text(reply[1])), update=False)
        return snapshot_of(level, reply)

    async def describe_period(self, name: str) -> Period | None:
        """The period stored for the top-level budget *name*, or ``None`` (no period, or no
        such budget). Reads only; for tools that open a budget as it is stored."""
        key = f"{self._prefix}:{{{escape(name)}}}:s"
        with backend_errors(f"reading budget {name!r}"):
            spec = await self._client().hget(key, "spec")
        return None if spec is None else period_of(text(spec))

    async def aclose(self) -> None:
        """Stop listening and close the client this store made for the running loop."""
        state = self._state()
        self._forget_state(state)
        await state.shutdown()

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@final
class _LoopState:
    """What a store keeps per event loop: the client, and the wake-up listeners."""

    __slots__ = ("client", "closer", "listeners", "loop", "owned")

    def __init__(self, store: RedisStore, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.listeners: dict[str, Listener] = {}
        self.owned = store._url is not None
        if store._url is None:
            self.client = store._given
        else:
            # A blocking pool: a burst of concurrent operations waits for a connection
            # instead of failing with "too many connections".
            redis = require_redis().asyncio
            pool = redis.BlockingConnectionPool.from_url(
                store._url,
                max_connections=_MAX_CONNECTIONS,
                timeout=_POOL_TIMEOUT,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_SOCKET_TIMEOUT,
                # A connection idle this long is PINGed (and reconnected) before use, so
                # the first operation after a server restart does not fail on it.
                health_check_interval=_HEALTH_CHECK,
            )
            self.client = redis.Redis.from_pool(pool)
        # A redis-py client belongs to one loop and must be closed in it. asyncio gives a
        # library no "loop is closing" hook but one: asynchronous generators still open
        # when the loop shuts down (asyncio.run, Runner.close) are finalized in it. So a
        # one-step generator, started here in this loop, closes the client (and stops the
        # listeners) from its ``finally``. The loop holds it weakly; this state strongly.
        self.closer: AsyncGenerator[None, None] | None = _close_at_shutdown(store, self)
        with contextlib.suppress(StopIteration):
            self.closer.asend(None).send(None)

    async def shutdown(self) -> None:
        """Close now (`RedisStore.aclose`), finishing the generator so that the loop does
        not finalize it later."""
        closer, self.closer = self.closer, None
        if closer is not None:
            await closer.aclose()
        else:
            await self.close()

    async def close(self) -> None:
        for listener in self.listeners.values():
            listener.stop()
        self.listeners.clear()
        if self.owned:
            self.owned = False
            # Closing is best effort: a connection that already failed has nothing to say.
            with contextlib.suppress(Exception):
                await self.client.aclose()


async def _close_at_shutdown(store: RedisStore, state: _LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        store._forget_state(state)
        await state.close()


def _glob(text: str) -> str:
    """*text* as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redact(url: str) -> str:
    """*url* without its password (in the authority or the query string), for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
    query = parts.query
    if "password" in query:
        query = urlencode(
            [
                (k, "***" if k == "password" else v)
                for k, v in parse_qsl(query, keep_blank_values=True)
            ]
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
