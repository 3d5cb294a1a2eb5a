"""`RedisAccount`: one budget (and its ancestors) in a `RedisStore`; `RedisHeld`, a lease."""

from __future__ import annotations

import contextlib
import math
import os
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .. import _log
from .._errors import (
    BackendError,
    BudgetError,
    BudgetExceeded,
    InvalidLimits,
    LimitsMismatch,
    ReservationClosed,
)
from .._period import announce_closed
from ..kernel import Denial, Ledger, Limit, Outcome, Snapshot, Window, from_micros
from ._redis_keys import Level, outcome, parse_spec, period_of, spec_of
from ._redis_scripts import retriable, run, scripts, text
from ._redis_wait import recheck_delay

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..protocols import Held
    from .redis import RedisStore

__all__ = ["RedisAccount", "RedisHeld"]

REMEMBER_MS: Final = 30_000
"""How long a closed lease's outcome is kept for a retried settle or release."""
_CLOSE_DELAYS: Final = (0.1, 0.3, 0.6)  # pauses between the tries of a settle or release
_CLEANUP_TIMEOUT: Final = 2.0  # seconds for the shielded clean-up of a lost reservation
_SETTLE_RETRY: Final = _log.BACKEND_RETRY


@final
class RedisHeld:
    """A lease in Redis: its id (chosen here), and the outcome of taking it."""

    __slots__ = ("account", "closed", "lease", "outcome")

    def __init__(self, account: RedisAccount, lease: str, outcome: Outcome) -> None:
        self.account = account
        self.lease = lease
        self.outcome = outcome
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "held"
        return f"<RedisHeld {self.account.name!r} {self.lease} {state}>"


@final
class RedisAccount:
    """One budget of a `RedisStore`: implements `aiobudget.protocols.Account`."""

    __slots__ = ("_head", "_indexes", "_ledger", "_levels", "_store", "_tree")

    def __init__(self, store: RedisStore, levels: tuple[Level, ...], tree: tuple[str, str]) -> None:
        self._store = store
        self._levels = levels
        self._tree = tree  # the tree's tickets key and wake-up channel
        leaf = levels[0]
        self._ledger = Ledger(leaf.limits, name=leaf.name)  # validation and vectors
        where = {dim: i for i, dim in enumerate(leaf.dims)}
        self._indexes = tuple(tuple(where.get(dim, -1) for dim in lv.dims) for lv in levels[1:])
        # KEYS and the ARGV header, encoded once every level is bound (checks only dims).
        self._head: tuple[bytes, ...] | None = None

    def __repr__(self) -> str:
        return f"<RedisAccount {self.name!r} levels={len(self._levels)}>"

    @property
    def name(self) -> str | None:
        """The budget's name."""
        return self._levels[0].name

    @property
    def dims(self) -> tuple[str, ...]:
        """The budget's dimensions."""
        return self._levels[0].dims

    def vector(self, amounts: Mapping[str, object]) -> tuple[int, ...]:
        """Amounts by name, validated, as a tuple in `dims` order."""
        return self._ledger.vector(amounts)

    # -- calling the scripts ---------------------------------------------------------------

    def _per_level(self, vector: tuple[int, ...]) -> list[str]:
        """*vector* (leaf dims) as each level's amounts: parents lacking a dim skip it."""
        out = [",".join(map(str, vector))]
        out.extend(
            ",".join("0" if j < 0 else str(vector[j]) for j in index) for index in self._indexes
        )
        return out

    async def _call(self, name: str, args: list[str], *, leaf_only: bool = False) -> list[Any]:
        """Run script *name* over the chain (or the leaf alone); the reply's tag is OK,
        DENIED, CLOSED or EXCEEDED. Refusals of the limits check raise here."""
        levels = self._levels[:1] if leaf_only else self._levels
        store = self._store
        if store._orphans:
            await store._drain_orphans()
        client = store._client()
        script = scripts()[name]
        for _ in range(4):
            head = None if leaf_only else self._head
            if head is None:
                head = _head(self._tree, levels)
            now = store._server_now()
            periods = [level.hint(now) for level in levels]  # see lua/_periods.lua
            reply = await run(client, script, 1 + 4 * len(levels), head, [*args, *periods])
            tag = text(reply[0])
            if tag == "NOBUDGET":  # deleted behind our back: create it again
                levels[int(reply[1]) - 1].unbind()
                self._head = None
                continue
            if tag == "LIMITS":
                raise self._mismatch(levels[int(reply[1]) - 1], text(reply[2]))
            if tag == "PERIOD":  # another process changed the period: follow it
                levels[int(reply[1]) - 1].adopt_period(period_of(text(reply[2])))
                continue
            if tag == "CLOCK":  # our estimate of the server's time was off by a window
                store._saw_server_time(int(reply[1]))
                continue
            if self._head is None:
                for level in levels:
                    level.bind()
                if all(level.check == "d" for level in self._levels):
                    self._head = _head(self._tree, self._levels)
            trailer = _trailer(reply)
            if trailer is not None:
                store._saw_server_time(int(trailer[1]))
                for closed in trailer[2 + len(levels) :]:
                    announce_closed(_window(levels, text(closed)))
            return reply
        raise BackendError(
            f"budget {self.name!r} keeps changing under this call in Redis (it vanished, or "
            "its period changed, or the server's clock jumped, several times in a row)"
        )

    def _mismatch(self, level: Level, stored_spec: str) -> BudgetError:
        stored = parse_spec(stored_spec)
        if level.check == "u":
            return InvalidLimits(
                f"budget {level.name!r} has dimensions {tuple(stored)}; "
                "updating limits cannot change them"
            )
        if list(stored.items()) == list(level.limits.items()):
            return LimitsMismatch(
                budget=str(level.name),
                stored=period_of(stored_spec),
                given=level.period,
                what="period",
            )
        return LimitsMismatch(budget=str(level.name), stored=stored, given=dict(level.limits))

    async def _closing(self, name: str, args: list[str]) -> list[Any]:
        """`_call` for settle and release: retried a few times (about 1 s) when Redis is
        unreachable; the lease id makes retries idempotent. Past that, the lease expires."""
        for delay in (*_CLOSE_DELAYS, None):
            try:
                return await self._call(name, args)
            except BackendError as exc:  # noqa: PERF203 - retrying is the point
                if delay is None or not retriable(exc):
                    raise
                _log.logger.warning(_SETTLE_RETRY, budget=self.name, op=name, error=repr(exc))
                await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _held(self, held: Held) -> RedisHeld:
        if not isinstance(held, RedisHeld) or held.account._store is not self._store:
            raise TypeError(f"not a reservation of this RedisStore: {held!r}")
        if held.closed:
            raise ReservationClosed("this reservation was already settled or released")
        return held

    # -- reservations ------------------------------------------------------------------

    async def reserve(
        self,
        amounts: tuple[int, ...],
        *,
        use_headroom: bool,
        timeout: float | None,
        ttl: float | None = None,
    ) -> RedisHeld | Denial:
        """Reserve, waiting up to *timeout* seconds (first come, first served). The lease
        lives *ttl* seconds (the store's ``lease_ttl`` by default) unless extended."""
        lease_ms = self._store._lease_ms if ttl is None else str(max(1, round(ttl * 1000)))
        lease = os.urandom(16).hex()
        per_level = self._per_level(amounts)
        waits = timeout is not None and timeout > 0
        ticket = os.urandom(16).hex() if waits else ""
        try:
            result = await self._attempt(
                lease, per_level, use_headroom, ticket, keep=waits, lease_ms=lease_ms
            )
            if waits and isinstance(result, Denial) and not result.impossible:
                assert timeout is not None
                result = await self._wait(
                    lease, per_level, use_headroom, ticket, timeout, lease_ms=lease_ms
                )
        except BaseException:
            # The reply may have been lost after Redis granted (or queued) it: undo by id.
            await self._cleanup(lease, ticket)
            raise
        return result

    async def _attempt(
        self,
        lease: str,
        per_level: list[str],
        use_headroom: bool,
        ticket: str,
        *,
        keep: bool,
        lease_ms: str | None = None,
    ) -> RedisHeld | Denial:
        store = self._store
        reply = await self._call(
            "reserve",
            [
                lease,
                store._lease_ms if lease_ms is None else lease_ms,
                "1" if use_headroom else "0",
                ticket,
                "k" if keep else "x",
                store._ticket_ms,
                *per_level,
            ],
        )
        if text(reply[0]) == "OK":
            return RedisHeld(self, lease, outcome(self._levels, reply))
        level = int(reply[1]) - 1
        dim = int(reply[2]) - 1
        ledger = self._levels[level]
        requested = int(per_level[level].split(",")[dim])
        window = _window_of(reply, level)
        return Denial(
            ledger.name,
            level,
            ledger.dims[dim],
            requested,
            int(reply[3]),
            impossible=bool(int(reply[4])),
            queued=bool(int(reply[5])),
            resets_at=None if window is None else from_micros(window[1]),
        )

    async def _wait(
        self,
        lease: str,
        per_level: list[str],
        use_headroom: bool,
        ticket: str,
        timeout: float,
        *,
        lease_ms: str,
    ) -> RedisHeld | Denial:
        """Wait in line (the ticket is queued already) until granted, hopeless or late."""
        deadline = anyio.current_time() + timeout if math.isfinite(timeout) else math.inf
        listener = self._store._listener(self._tree[1])
        event = listener.watch(ticket)
        try:
            await listener.ready(min(1.0, timeout))
            # Freed before the subscription was live? Look once more, now that we listen.
            result = await self._attempt(
                lease, per_level, use_headroom, ticket, keep=True, lease_ms=lease_ms
            )
            while isinstance(result, Denial) and not result.impossible:
                left = deadline - anyio.current_time()
                if left > 0:
                    with anyio.move_on_after(min(left, recheck_delay())):
                        await event.wait()
                    event.clear()
                    left = deadline - anyio.current_time()
                # The last attempt (time is up) takes the ticket out of the queue.
                keep = left > 0
                result = await self._attempt(
                    lease, per_level, use_headroom, ticket, keep=keep, lease_ms=lease_ms
                )
                if not keep:
                    break
            return result
        finally:
            listener.unwatch(ticket)
            if not len(listener):
                self._store._forget_listener(self._tree[1], listener)

    async def _cleanup(self, lease: str, ticket: str) -> None:
        """Release *lease* if Redis holds it and drop *ticket*, shielded; on failure, the
        lease and the ticket expire by themselves."""
        with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
            with contextlib.suppress(BudgetError):
                await self._call("release", [lease, str(REMEMBER_MS), "1", ticket])

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """Release *held* and add *actual* to ``spent``, at every level."""
        lease = self._held(held)
        lease.closed = True
        account = lease.account  # the chain it was taken on
        reply = await account._closing(
            "settle", [lease.lease, str(REMEMBER_MS), *account._per_level(actual)]
        )
        return account._closed(reply)

    async def release(self, held: Held) -> Outcome:
        """Give *held* back untouched."""
        lease = self._held(held)
        lease.closed = True
        account = lease.account
        reply = await account._closing("release", [lease.lease, str(REMEMBER_MS), "0", ""])
        return account._closed(reply)

    def _closed(self, reply: list[Any]) -> Outcome:
        if text(reply[0]) == "CLOSED":
            raise ReservationClosed(
                f"this reservation's lease is {text(reply[1])} (leases live their ttl, "
                f"{self._store._lease_ttl:g} s by default, unless extended); nothing was changed"
            )
        return outcome(self._levels, reply)

    async def extend(self, held: Held, ttl: float | None) -> None:
        """Keep *held* alive for *ttl* seconds from now (the store's lease time by default)."""
        lease = self._held(held)
        seconds = self._store._lease_ttl if ttl is None else ttl
        if not (isinstance(seconds, int | float) and 0 < seconds < math.inf):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        ms = str(max(1, round(seconds * 1000)))
        reply = await lease.account._call("extend", [lease.lease, ms])
        if text(reply[0]) == "CLOSED":
            lease.closed = True
            raise ReservationClosed(f"this reservation's lease is {text(reply[1])}")

    def abandon(self, held: Held) -> None:
        """A reservation was garbage-collected while held: give it back at the store's next
        operation (no I/O here); if there is none, its lease expires."""
        if isinstance(held, RedisHeld) and not held.closed:
            held.closed = True
            self._store._orphans.append(held)

    async def _give_back(self, held: RedisHeld) -> None:
        await self._call("release", [held.lease, str(REMEMBER_MS), "1", ""])

    # -- direct operations -------------------------------------------------------------

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        """Add *amounts* to ``spent`` at every level (see `aiobudget.kernel.Chain.charge`)."""
        reply = await self._call("charge", ["1" if strict else "0", *self._per_level(amounts)])
        if text(reply[0]) == "EXCEEDED":
            level = self._levels[int(reply[1]) - 1]
            raise BudgetExceeded(
                dim=level.dims[int(reply[2]) - 1],
                limit=int(reply[3]),
                attempted=int(reply[4]),
                budget=level.name,
            )
        return outcome(self._levels, reply)

    async def snapshot(self) -> Snapshot:
        """The budget's own limits and counters, as stored in Redis."""
        reply = await self._call("snapshot", [], leaf_only=True)
        return snapshot_of(self._levels[0], reply)

    async def reset(self) -> Outcome:
        """A new period: ``spent`` goes to 0 (this budget only)."""
        reply = await self._call("reset", [], leaf_only=True)
        return outcome(self._levels[:1], reply)

    async def set_limits(self, limits: Mapping[str, Limit]) -> Outcome:
        """New limits for the same dimensions, stored for every process."""
        new = {dim: Limit.of(limits[dim]) for dim in limits}
        if tuple(new) != self.dims:
            raise InvalidLimits(
                f"new limits must name the same dimensions in the same order: {self.dims}"
            )
        reply = await self._call("set_limits", [spec_of(new)], leaf_only=True)
        self._levels[0].set_limits(new)
        return outcome(self._levels[:1], reply)


def _head(tree: tuple[str, str], levels: tuple[Level, ...]) -> tuple[bytes, ...]:
    """KEYS (the tree's tickets, then four per level) and the ARGV header (see
    ``lua/_common.lua``), encoded."""
    keys = [tree[0], *(key for level in levels for key in level.keys)]
    header = [str(len(levels)), tree[1], *(part for level in levels for part in level.header())]
    return tuple(part.encode() for part in (*keys, *header))


def snapshot_of(level: Level, reply: list[Any]) -> Snapshot:
    """A `Snapshot` from the snapshot script's reply ``[OK, spec, spent, reserved, code,
    held, waiting]`` (and the periods' trailer, for a budget with a period)."""
    limits = parse_spec(text(reply[1]))
    dims = level.dims
    spent = tuple(map(int, text(reply[2]).split(",")))
    reserved = tuple(map(int, text(reply[3]).split(",")))
    remaining = (max(0, limits[d].limit - s - r) for d, s, r in zip(dims, spent, reserved))
    window = _window_of(reply, 0)
    return Snapshot(
        limits=MappingProxyType(limits),
        spent=MappingProxyType(dict(zip(dims, spent))),
        reserved=MappingProxyType(dict(zip(dims, reserved))),
        remaining=MappingProxyType(dict(zip(dims, remaining))),
        verdict=level.verdicts[int(reply[4])],
        held=int(reply[5]),
        waiting=int(reply[6]),
        period_start=None if window is None else from_micros(window[0]),
        resets_at=None if window is None else from_micros(window[1]),
    )


# -- periods (lua/_periods.lua) -----------------------------------------------------------


def _trailer(reply: list[Any]) -> list[Any] | None:
    """The periods' trailer ``['W', server time, window per level..., closed...]`` that
    ends the reply of a call on a chain with a period, or None."""
    last = reply[-1]
    return last if isinstance(last, list) and last and text(last[0]) == "W" else None


def _window_of(reply: list[Any], level: int) -> tuple[int, int] | None:
    """Level *level*'s current window ``(start, end)`` by the reply's trailer, or None."""
    trailer = _trailer(reply)
    if trailer is None:
        return None
    window = text(trailer[2 + level])
    if not window:
        return None
    start, end = window.split(",")
    return int(start), int(end)


def _window(levels: tuple[Level, ...], closed: str) -> Window:
    """A closed window from the trailer's ``level,start,end,spent...``."""
    level, start, end, *spent = closed.split(",")
    owner = levels[int(level) - 1]
    return Window(
        owner.name, int(start), int(end), MappingProxyType(dict(zip(owner.dims, map(int, spent))))
    )
