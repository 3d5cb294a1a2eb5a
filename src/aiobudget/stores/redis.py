"""`RedisStore`: budgets shared by any number of processes and machines through Redis.

The model is `MemoryStore`'s, moved into Redis: every operation is one Lua script
(``lua/*.lua``) that runs the kernel's rules atomically on the server, over the budget
and all its ancestors at once, in one round trip. Counters are decimal strings and the
scripts do exact 64-bit arithmetic, so amounts up to ``2**63 - 1`` behave exactly as in
the kernel (a differential test runs both on the same random operations). Redis >= 7.0.

What this store adds to the kernel, because processes die, networks fail and keys can be
lost:

* **Leases.** A reservation is a lease with an id (chosen by the client) and an expiry
  on the *server's* clock: ``lease_ttl`` seconds, renewed by ``await r.extend()``. A
  holder that dies loses its reservation when the lease expires; expired leases are
  given back by the next script that touches the budget (a bounded number per call) or
  by `RedisStore.sweep`. Settling or releasing an expired or unknown lease raises
  `ReservationClosed` and changes nothing.
* **Outcome unknown.** A settle, release or charge carries an id, and its outcome is
  remembered for 30 s: a retry after a lost reply answers the same and never counts
  twice. A settle or release is retried for up to ``close_timeout`` seconds in all; if
  Redis never confirms it, it raises `BackendError` saying the outcome is unknown, and
  ``await reservation.commit()`` retries the same close. A connection found dead (a
  server restarted since it was pooled) is replaced transparently, once.
* **Damage fails closed.** Every script reads and checks everything it uses, on every
  level, before its first write, so an error leaves nothing half done. A budget whose
  keys disagree (its counters deleted or evicted while leases are live, its leases gone
  while something is reserved, a field edited by hand) raises `BackendError` naming it,
  and changes nothing, until an operator repairs it (`repair`,
  ``Budget.reset(force=True)``, ``aiobudget repair NAME``).
* **Memory pressure.** Settles, releases and charges run even when Redis is at its
  ``maxmemory`` (script flag ``allow-oom``); new reservations are refused there with
  `BackendError`. At its first operation a store warns once (structlog event
  ``budget.redis_at_risk``) when the server may evict keys or keeps nothing on disk.
* **Limits** are stored with the budget. The first call of a `Budget` checks that they
  are the ones it was built with (`LimitsMismatch` otherwise, unless it was built with
  ``update_limits=True``); later calls only check the dimensions, because any process
  may change the limits with ``set_limits``.
* **Waiting, first come first served, as far as Redis allows.** A reservation that must
  wait gets a *ticket*, numbered by Redis in the script that refused its first attempt,
  queued at the level that refused it (the nearest to the leaf) with the dimensions it
  is blocked on there. While it waits, no later request that asks something of those
  dimensions at that level gets in, even if it would fit (it is refused as ``queued`` or
  waits behind); requests that ask nothing of them are not held back. Scripts that free
  budget publish the tickets first in line where they freed it, on the tree's channel;
  only their owners wake. Every waiter also re-checks at least every 0.5-1 s (jittered),
  so a lost notice costs that much. A ticket not renewed for 5 s (its process died)
  holds nobody back.
* **Periods.** A budget with a period rolls over inside the first script at or after a
  boundary of the *server's* clock (TIME), exactly once however many processes race on
  it; ``budget.period_closed`` is logged by the process whose call rolled it. The
  client only computes the boundaries (``lua/_periods.lua``), around its estimate of the
  server's time, which it corrects from the server's replies: its own clock may be off
  by minutes.
* **Unnamed budgets** (private to one `Budget` object) leave no keys behind: they expire
  once the budget is idle for ``lease_ttl`` (past its last lease). Using one after that
  raises `BackendError`: its counters are gone.

All keys of a budget tree share one hash tag (see ``_redis_layout``), so the scripts work
on Redis Cluster. redis-py is asyncio only: this store runs on asyncio and uvloop, not
on trio. A store built from a URL makes one client per event loop, lazily, and closes it
when that loop shuts down (or on `aclose`); a client passed in is the caller's to close.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, final

from .._errors import BackendError, InvalidLimits
from .._period import Period, announce_closed
from ..kernel import Ledger, Limit, check_flag
from ._redis_account import RedisAccount, check_ttl
from ._redis_layout import (
    Level,
    base_of,
    every_budget,
    every_root,
    level_keys,
    maintenance_head,
    named,
    root_base,
    root_name,
    snapshot,
    spec_of,
    stored_limits,
    stored_period,
    trailer,
    tree_keys,
    windows_closed,
)
from ._redis_link import Link, check_url, redact
from ._redis_scripts import backend_errors, require_redis, run, scripts, text

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from types import TracebackType

    from ..kernel import Snapshot
    from ..protocols import Account

__all__ = ["RedisStore", "check_url", "redact"]

_TICKET_TTL: Final = 5.0  # seconds a waiter's ticket lives without being renewed
_REMEMBER: Final = 30.0  # seconds a closed lease's (or a charge's) outcome is remembered
_SWEEP_MAX: Final = 100_000  # the most leases sweep gives back per budget and call


@final
class RedisStore:
    """Budgets kept in Redis, shared by every process that opens them by name.

    ``RedisStore("redis://localhost:6379/0")``, or a `redis.asyncio.Redis` /
    `redis.asyncio.cluster.RedisCluster` client. Keys start with *prefix*; reservations
    are leases that expire *lease_ttl* seconds (server time) after they were taken or
    last extended. Leaving a reservation (its settle or release, with retries) gives up
    after *close_timeout* seconds in all: the outcome is then unknown (`BackendError`),
    ``await reservation.commit()`` may retry it, and otherwise the lease expires. Needs
    the ``redis`` extra (``pip install 'aiobudget[redis]'``) and Redis >= 7.0.
    """

    __slots__ = ("_link",)

    def __init__(
        self,
        client_or_url: Any,
        *,
        prefix: str = "aiobudget",
        lease_ttl: float = 60.0,
        close_timeout: float = 5.0,
    ) -> None:
        redis = require_redis()
        url: str | None = None
        given: Any = None
        if isinstance(client_or_url, str):
            try:  # a malformed URL is refused here, not at the first operation
                check_url(client_or_url)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"not a Redis URL: {client_or_url!r} ({exc})") from None
            url = client_or_url
        elif isinstance(client_or_url, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster):
            given = client_or_url
        else:
            raise TypeError(
                "RedisStore needs a URL or a redis.asyncio.Redis / RedisCluster client, "
                f"not {type(client_or_url).__name__}"
            )
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a str without braces (hash tags): {prefix!r}")
        lease_ttl = check_ttl(lease_ttl, "lease_ttl")
        if isinstance(close_timeout, bool) or not isinstance(close_timeout, int | float):
            raise TypeError(f"close_timeout must be a number of seconds, not {close_timeout!r}")
        if not 0 < close_timeout < math.inf:
            raise ValueError(
                f"close_timeout must be a positive number of seconds, not {close_timeout!r}"
            )
        self._link = Link(
            url,
            given,
            prefix=prefix,
            lease_ttl=lease_ttl,
            close_timeout=float(close_timeout),
            ticket_ttl=_TICKET_TTL,
            remember=_REMEMBER,
        )
        scripts()  # read the Lua files now: a broken install fails here, not mid-request

    def __repr__(self) -> str:
        link = self._link
        return f"<RedisStore {link.where} prefix={link.prefix!r} lease_ttl={link.lease_ttl:g}>"

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._link.prefix

    @property
    def lease_ttl(self) -> float:
        """Seconds a reservation lives (server time) unless extended."""
        return self._link.lease_ttl

    @property
    def close_timeout(self) -> float:
        """Seconds a reservation's settle or release may take in all, retries included."""
        return self._link.close_timeout

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
        link = self._link
        if parent is not None and not (isinstance(parent, RedisAccount) and parent.link is link):
            raise InvalidLimits("a child budget must live in the same store as its parent")
        if period is not None and not isinstance(period, Period):
            raise InvalidLimits(f"period must be a Period or None, not {period!r}")
        given = {dim: Limit.of(limit) for dim, limit in limits.items()}
        Ledger(given, name=name)  # InvalidLimits now, as MemoryStore would
        idle = link.lease_ms
        if parent is None:
            base = root_base(link.prefix, name)
            level = Level(base, name, given, update=update_limits, idle_ms=idle, period=period)
            return RedisAccount(link, (level,), tree_keys(base))
        level = parent.levels[0].child(
            name, given, update=update_limits, idle_ms=idle, period=period
        )
        return RedisAccount(link, (level, *parent.levels), parent.tree)

    @property
    def clock(self) -> Callable[[], float]:
        """This process's estimate of the Redis server's clock (POSIX seconds), corrected
        by the replies of scripts on budgets with a period. The server's clock decides
        when a period rolls over; this one tells people when (``Retry-After``)."""
        return self._link.server_time

    def _client(self) -> Any:
        """The running loop's client (for tests and tools)."""
        return self._link.client()

    # -- maintenance -------------------------------------------------------------------

    async def sweep(self, *, limit: int = 1000) -> int:
        """Give back every expired lease of every budget under this store's prefix (up to
        *limit* per budget), forget dead waiters, and check each budget in full: what it
        holds reserved must be what its leases hold. Returns how many leases were given
        back. Not needed for correctness (scripts reclaim as they go); useful for budgets
        nobody touches, and for tools.

        A damaged budget does not stop the sweep: every other budget is swept, then
        `BackendError` names every damaged one (repair them with `repair`).
        """
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {limit!r}")
        if not 0 < limit <= _SWEEP_MAX:
            raise ValueError(f"limit must be in 1 .. {_SWEEP_MAX}, not {limit!r}")
        client = await self._link.ready()
        pattern = every_budget(self.prefix)
        with backend_errors(f"scanning for budgets under prefix {self.prefix!r}"):
            found = [text(key) async for key in client.scan_iter(match=pattern, count=1000)]
        total = 0
        problems: list[str] = []
        for key in sorted(found):
            base = base_of(key)
            reply = await self._maintain("sweep", base, [str(limit)])
            if text(reply[0]) == "DAMAGED":
                problems.append(f"{named(base, self.prefix)}: {text(reply[2])}")
            else:
                total += int(reply[1])
        if problems:
            raise BackendError(
                f"sweep gave back {total} leases, but {len(problems)} budgets are damaged in "
                f"Redis and were left as they are: {'; '.join(problems)}. Repair them with "
                "RedisStore.repair (or 'aiobudget repair NAME')"
            )
        return total

    async def _maintain(self, name: str, base: str, args: list[str]) -> list[Any]:
        """Run maintenance script *name* on the one budget whose keys start with *base*."""
        client = await self._link.ready()
        head = maintenance_head(base)
        what = named(base, self.prefix)
        return await run(client, scripts()[name], 5, head, args, what=what)

    async def describe(self, name: str) -> dict[str, Limit] | None:
        """The limits stored for the top-level budget *name*, in declaration order, or
        ``None`` when there is no such budget. Reads only; for tools such as the CLI that
        open a budget without knowing its limits. `BackendError` if the budget is damaged
        (its limits unreadable, or its record gone while reservations are held)."""
        state, leases, _, _ = level_keys(root_base(self.prefix, name))
        client = self._link.client()
        with backend_errors(f"reading budget {name!r}"):
            spec = await client.hget(state, "spec")
            held = [] if spec is not None else await client.hvals(leases)
        if spec is not None:
            return stored_limits(text(spec), name)
        if any(not text(value).startswith("=") for value in held):
            raise BackendError(
                f"budget {name!r} is damaged in Redis: its counters vanished while "
                "reservations were held; repair it with its limits "
                "('aiobudget repair NAME --limit DIM=VALUE', RedisStore.repair)"
            )
        return None

    async def describe_period(self, name: str) -> Period | None:
        """The period stored for the top-level budget *name*, or ``None`` (no period, or no
        such budget). Reads only; for tools that open a budget as it is stored.
        `BackendError` if the stored period is unreadable."""
        state = level_keys(root_base(self.prefix, name))[0]
        with backend_errors(f"reading budget {name!r}"):
            spec = await self._link.client().hget(state, "spec")
        return None if spec is None else stored_period(text(spec), name)

    async def names(self) -> AsyncIterator[str]:
        """The names of the top-level budgets under this store's prefix, each once, in no
        particular order. Found with SCAN (incrementally, never KEYS), whose cost grows
        with every key of the database, not only aiobudget's: about one round trip per
        1,000 keys. Unnamed (private) budgets and children are not listed."""
        prefix = self.prefix
        seen: set[str] = set()
        with backend_errors(f"scanning for budgets under prefix {prefix!r}"):
            async for key in self._link.client().scan_iter(match=every_root(prefix), count=1000):
                name = root_name(text(key), prefix)
                if name is not None and name not in seen:
                    seen.add(name)
                    yield name

    async def read(self, name: str) -> Snapshot | None:
        """The snapshot of the top-level budget *name* as stored, or ``None`` when there
        is no such budget. Unlike ``Budget(...).snapshot()`` it needs no limits and never
        creates the budget (for tools and metrics). A budget with a period rolls over if
        a boundary has passed, as at any operation. `BackendError` if it is damaged."""
        base = root_base(self.prefix, name)
        level: Level | None = None  # once the stored limits (and period) are known
        for _ in range(4):
            # The period argument (lua/_periods.lua): none at first; the stored one once
            # the script said which (PERIOD), around the server's time (CLOCK).
            hint = "" if level is None else level.hint(self._link.server_now())
            reply = await self._maintain("snapshot", base, [hint])
            tag = text(reply[0])
            if tag == "NOBUDGET":
                return None
            if tag == "DAMAGED":
                raise BackendError(f"budget {name!r} is damaged in Redis: {text(reply[2])}")
            if tag == "CLOCK":
                self._link.saw_server_time(int(reply[1]))
                continue
            spec = text(reply[2] if tag == "PERIOD" else reply[1])
            limits = stored_limits(spec, name)
            period = stored_period(spec, name)
            level = Level(base, name, limits, update=False, idle_ms=0, period=period)
            if tag == "OK":
                found = trailer(reply)
                if found is not None:  # a budget with a period: it may have rolled over
                    self._link.saw_server_time(int(found[1]))
                    for window in windows_closed((level,), reply):
                        announce_closed(window)
                return snapshot(level, reply)
        raise BackendError(
            f"budget {name!r} keeps changing under this read in Redis (its period changed, "
            "or the server's clock jumped, several times in a row)"
        )

    async def repair(
        self,
        name: str,
        limits: Mapping[str, Limit | int] | None = None,
        *,
        dry_run: bool = False,
    ) -> list[str]:
        """Make the top-level budget *name* usable again after its keys were damaged
        outside aiobudget (deleted, evicted, partly restored, edited), and say what was
        changed, one sentence per change (nothing: it was whole).

        What is readable is kept: the limits, and ``spent``. What is not is rebuilt:
        ``reserved`` is recounted from the leases still held (a lease that lost its expiry
        gets ``lease_ttl`` from now); a lost record is created again with *limits*, which
        are needed only then, and ``spent`` starts from 0 (the spend recorded before the
        loss is gone: charge it again if you know it). Children are repaired from their
        own `Budget` objects with ``await child.reset(force=True)``. With *dry_run*, only
        say what would change. A budget with no key at all is left alone.
        """
        given = ""
        if limits is not None:
            checked = {dim: Limit.of(limit) for dim, limit in limits.items()}
            Ledger(checked, name=name)  # InvalidLimits for bad ones
            given = spec_of(checked)
        base = root_base(self.prefix, name)
        args = [given, "0", str(self._link.lease_ms), "1" if dry_run else "0"]
        reply = await self._maintain("repair", base, args)
        tag = text(reply[0])
        if tag == "NOBUDGET":  # no key at all: nothing to repair, nothing created
            return []
        if tag == "NEEDLIMITS":
            raise InvalidLimits(
                f"budget {name!r} has no readable limits in Redis (its record is gone or "
                "damaged): pass its limits to create it again"
            )
        if tag == "LIMITS":
            raise InvalidLimits(
                f"budget {name!r} has limits {text(reply[2])!r} in Redis: the limits given "
                "must have the same dimensions"
            )
        return [text(change) for change in reply[2:]]

    async def aclose(self) -> None:
        """Stop listening and close the client this store made for the running loop."""
        await self._link.aclose()

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
