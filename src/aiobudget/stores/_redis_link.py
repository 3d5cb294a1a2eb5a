"""`Link`: what the accounts of one `RedisStore` share, and all they need of it.

Its settings (lease, ticket and close times), the running event loop's client (a store
built from a URL makes one per loop, lazily, and closes it when that loop shuts down),
the wake-up listeners, the reservations to give back, the one-off look at the server's
configuration that warns when Redis could lose budgets, and the estimate of the
server's clock that periods need.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import anyio

from .. import _log
from .._errors import BudgetError
from ._redis_scripts import require_redis, text
from ._redis_wait import Listener

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from ._redis_account import RedisHeld

__all__ = ["Link", "check_url", "redact", "server_risks"]

_CONNECT_TIMEOUT: Final = 5.0  # defaults for a client built from a URL (the URL may override)
_HEALTH_CHECK: Final = 1  # seconds
_SOCKET_TIMEOUT: Final = 5.0
_MAX_CONNECTIONS: Final = 64  # per event loop
_POOL_TIMEOUT: Final = 20.0  # seconds an operation waits for a free connection
_INSPECT_TIMEOUT: Final = 2.0  # seconds the look at the server's configuration may take


@final
class Link:
    """The shared part of a `RedisStore`: settings, clients per loop, listeners, orphans,
    the server's clock."""

    __slots__ = (
        "_given",
        "_inspected",
        "_last",
        "_lock",
        "_offset",
        "_states",
        "_url",
        "close_timeout",
        "lease_ms",
        "lease_ttl",
        "orphans",
        "prefix",
        "remember_ms",
        "ticket_ms",
    )

    def __init__(
        self,
        url: str | None,
        given: Any,
        *,
        prefix: str,
        lease_ttl: float,
        close_timeout: float,
        ticket_ttl: float,
        remember: float,
    ) -> None:
        self._url = url
        self._given = given
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.lease_ms = max(1, round(lease_ttl * 1000))
        self.ticket_ms = str(round(ticket_ttl * 1000))
        self.remember_ms = round(remember * 1000)
        self.close_timeout = close_timeout
        self.orphans: list[RedisHeld] = []  # reservations garbage-collected while held
        self._lock = threading.Lock()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._last: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None
        self._inspected = False
        self._offset = 0.0  # seconds the server's clock is ahead of ours (periods)

    @property
    def where(self) -> str:
        """The server, for messages (no password)."""
        return type(self._given).__name__ if self._url is None else redact(self._url)

    # -- the server's clock (periods) ------------------------------------------------------

    def server_time(self) -> float:
        """Our estimate of the server's clock, in POSIX seconds."""
        return time.time() + self._offset

    def server_now(self) -> int:
        """Our estimate of the server's time, in microseconds since the Unix epoch."""
        return round((time.time() + self._offset) * 1_000_000)

    def saw_server_time(self, server_us: int) -> None:
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

    def client(self) -> Any:
        """The running loop's client."""
        return self._state().client

    async def ready(self) -> Any:
        """The running loop's client, after the server was looked at once (the first call
        of the store; a failure to look is no error: the operation will say)."""
        client = self._state().client
        if not self._inspected:
            self._inspected = True
            with anyio.move_on_after(_INSPECT_TIMEOUT):
                risks = await server_risks(client)
                if risks:
                    _log.logger.warning(
                        _log.REDIS_AT_RISK, server=self.where, prefix=self.prefix, risks=risks
                    )
        return client

    def listener(self, channel: str) -> Listener:
        """The running loop's listener on *channel*, started if needed."""
        state = self._state()
        listener = state.listeners.get(channel)
        if listener is None:
            listener = state.listeners[channel] = Listener(state.client, channel)
        return listener

    def forget_listener(self, channel: str, listener: Listener) -> None:
        """*listener* has nobody left waiting."""
        listeners = self._state().listeners
        if listeners.get(channel) is listener:
            del listeners[channel]

    def _forget_state(self, state: _LoopState) -> None:
        with self._lock:
            if self._states.get(state.loop) is state:
                del self._states[state.loop]
            if self._last is not None and self._last[1] is state:
                self._last = None

    @property
    def loops(self) -> int:
        """How many event loops have a client of this store open."""
        return len(self._states)

    async def drain_orphans(self) -> None:
        """Give back reservations that were garbage-collected while held."""
        orphans = self.orphans
        while orphans:
            held = orphans.pop()  # atomic: finalizers of other threads may append
            # On failure the lease expires by itself instead.
            with contextlib.suppress(BudgetError):
                await held.account.give_back(held)

    async def aclose(self) -> None:
        """Stop listening and close the client made for the running loop."""
        state = self._state()
        self._forget_state(state)
        await state.shutdown()


async def server_risks(client: Any) -> list[str]:
    """What in the server's configuration could lose budgets: an eviction policy that can
    evict them, or no persistence at all. Empty when nothing, or when it cannot be read
    (a managed Redis may refuse CONFIG; INFO is read on any node of a cluster)."""
    redis = require_redis()
    options: dict[str, Any] = {}
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        options["target_nodes"] = redis.asyncio.cluster.RedisCluster.RANDOM
    risks: list[str] = []
    with contextlib.suppress(Exception):
        info = {
            **await client.info("memory", **options),
            **await client.info("persistence", **options),
        }
        policy = text(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            risks.append(
                f"maxmemory-policy is {policy}: under memory pressure Redis may evict "
                "budget keys, and a budget that lost its keys fails closed until repaired "
                "(use noeviction)"
            )
        if not int(info.get("aof_enabled", 0)):
            save = await client.config_get("save", **options)
            if not text(save.get("save", "") or save.get(b"save", b"")).strip():
                risks.append(
                    "persistence is off (no RDB snapshots, no AOF): a restart forgets "
                    "every budget's spend (use appendonly yes)"
                )
    return risks


@final
class _LoopState:
    """What a store keeps per event loop: the client, and the wake-up listeners."""

    __slots__ = ("client", "closer", "listeners", "loop", "owned")

    def __init__(self, link: Link, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.listeners: dict[str, Listener] = {}
        self.owned = link._url is not None
        if link._url is None:
            self.client = link._given
        else:
            # A blocking pool: a burst of concurrent operations waits for a connection
            # instead of failing with "too many connections". No retries inside redis-py:
            # aiobudget retries what is safe to retry, within its own deadlines.
            redis = require_redis().asyncio
            pool = redis.BlockingConnectionPool.from_url(
                link._url,
                max_connections=_MAX_CONNECTIONS,
                timeout=_POOL_TIMEOUT,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_SOCKET_TIMEOUT,
                # A connection idle this long is PINGed (and reconnected) before use.
                health_check_interval=_HEALTH_CHECK,
            )
            self.client = redis.Redis.from_pool(pool)
        # A redis-py client belongs to one loop and must be closed in it. asyncio gives a
        # library no "loop is closing" hook but one: asynchronous generators still open
        # when the loop shuts down (asyncio.run, Runner.close) are finalized in it. So a
        # one-step generator, started here in this loop, closes the client (and stops the
        # listeners) from its ``finally``. The loop holds it weakly; this state strongly.
        self.closer: AsyncGenerator[None, None] | None = _close_at_shutdown(link, self)
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


async def _close_at_shutdown(link: Link, state: _LoopState) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        link._forget_state(state)
        await state.close()


def check_url(url: str) -> None:
    """Refuse (ValueError) a URL that redis-py rejects, or that it would misread: it takes
    a database it cannot read as a number (``redis://host:6379/abc``) for database 0."""
    require_redis().asyncio.connection.parse_url(url)
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        path = unquote(parts.path)
        if not _DATABASE.fullmatch(path):
            raise ValueError(f"the path must be a database number, like /0, not {path!r}")


_DATABASE: Final = re.compile(r"/?[0-9]*")


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
