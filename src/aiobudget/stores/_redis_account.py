"""`RedisAccount`: one budget (and its ancestors) in a `RedisStore`; `RedisHeld`, a lease."""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .. import _log
from .._errors import (
    BackendError,
    BudgetError,
    InvalidLimits,
    LimitsMismatch,
    ReservationClosed,
)
from .._period import announce_closed
from ..kernel import Denial, Ledger, Limit, Outcome, Snapshot
from ._redis_layout import (
    Level,
    closed,
    damaged,
    denial,
    exceeded,
    head,
    maintenance_head,
    outcome,
    snapshot,
    spec_of,
    stored_limits,
    stored_period,
    trailer,
    windows_closed,
)
from ._redis_scripts import retriable, run, scripts, text
from ._redis_wait import recheck_delay

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..protocols import Held
    from ._redis_link import Link

__all__ = ["MAX_TTL", "RedisAccount", "RedisHeld", "check_ttl"]

MAX_TTL: Final = 365 * 86400.0
"""The longest lease (or lease extension) in seconds: a year."""
_CLOSE_DELAYS: Final = (0.1, 0.3, 0.6)  # pauses between the tries of a settle or release


def check_ttl(seconds: object, what: str) -> float:
    """*seconds* if it is a number of seconds in ``(0, MAX_TTL]``; TypeError or ValueError
    otherwise, before anything is sent to Redis."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {seconds!r}")
    if not 0 < seconds <= MAX_TTL:
        raise ValueError(
            f"{what} must be a positive number of seconds, at most {MAX_TTL:g} (a year), "
            f"not {seconds!r}"
        )
    return float(seconds)


@final
class RedisHeld:
    """A lease in Redis: its id (chosen here), and the outcome of taking it.

    ``closed`` once a settle or release of it was answered; ``closing`` while one is on
    its way. A close that failed with `BackendError` leaves it neither, so that the same
    close can be retried (it is idempotent: the lease id makes it count once).
    """

    __slots__ = ("account", "closed", "closing", "lease", "outcome")

    def __init__(self, account: RedisAccount, lease: str, outcome: Outcome) -> None:
        self.account = account
        self.lease = lease
        self.outcome = outcome
        self.closed = False
        self.closing = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "held"
        return f"<RedisHeld {self.account.name!r} {self.lease} {state}>"


@final
class RedisAccount:
    """One budget of a `RedisStore`: implements `aiobudget.protocols.Account`.

    *link* is what it needs of its store; *levels* its chain, leaf first; *tree* its
    tree's tickets key and wake-up channel.
    """

    __slots__ = ("_head", "_indexes", "_ledger", "_remember", "levels", "link", "tree")

    def __init__(self, link: Link, levels: tuple[Level, ...], tree: tuple[str, str]) -> None:
        self.link = link
        self.levels = levels
        self.tree = tree
        leaf = levels[0]
        self._ledger = Ledger(leaf.limits, name=leaf.name)  # validation and vectors
        where = {dim: i for i, dim in enumerate(leaf.dims)}
        self._indexes = tuple(tuple(where.get(dim, -1) for dim in lv.dims) for lv in levels[1:])
        # How long a closed lease's outcome is kept for a retry: 30 s, but no longer than
        # an unnamed budget's keys are kept when idle.
        remember = link.remember_ms
        self._remember = str(min(remember, link.lease_ms) if leaf.private else remember)
        # KEYS and the ARGV header, encoded once every level is bound (checks only dims).
        self._head: tuple[bytes, ...] | None = None

    def __repr__(self) -> str:
        return f"<RedisAccount {self.name!r} levels={len(self.levels)}>"

    @property
    def name(self) -> str | None:
        """The budget's name."""
        return self.levels[0].name

    @property
    def dims(self) -> tuple[str, ...]:
        """The budget's dimensions."""
        return self.levels[0].dims

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
        DENIED, CLOSED or EXCEEDED. Refusals of the limits check, damaged keys and
        vanished budgets raise here; a changed period or a server clock we misjudged is
        followed (see ``lua/_periods.lua``), and the windows the call closed are logged."""
        levels = self.levels[:1] if leaf_only else self.levels
        link = self.link
        if link.orphans:
            await link.drain_orphans()
        client = await link.ready()
        script = scripts()[name]
        what = levels[0].describe()
        for _ in range(4):
            head_ = None if leaf_only else self._head
            if head_ is None:
                head_ = head(self.tree, levels)
            now = link.server_now()
            periods = [level.hint(now) for level in levels]  # see lua/_periods.lua
            keys = 1 + 4 * len(levels)
            reply = await run(client, script, keys, head_, [*args, *periods], what=what)
            tag = text(reply[0])
            if tag == "NOBUDGET":  # its keys vanished behind our back, holding no lease
                level = levels[int(reply[1]) - 1]
                if level.private:
                    raise BackendError(
                        f"{level.describe()} is gone from Redis: an unnamed budget's keys "
                        f"expire once it is idle for {link.lease_ttl:g} s (lease_ttl), and "
                        "its counters went with them. Give it a name to keep it longer"
                    )
                level.unbind()  # a named budget is created again, from zero
                self._head = None
                continue
            if tag == "LIMITS":
                raise self._mismatch(levels[int(reply[1]) - 1], text(reply[2]))
            if tag == "DAMAGED":
                raise damaged(levels, reply)
            if tag == "PERIOD":  # another process changed the period: follow it
                level = levels[int(reply[1]) - 1]
                level.adopt_period(stored_period(text(reply[2]), level.name))
                continue
            if tag == "CLOCK":  # our estimate of the server's time was off by a window
                link.saw_server_time(int(reply[1]))
                continue
            if self._head is None:
                for level in levels:
                    level.bind()
                if all(level.check == "d" for level in self.levels):
                    self._head = head(self.tree, self.levels)
            found = trailer(reply)
            if found is not None:
                link.saw_server_time(int(found[1]))
                for window in windows_closed(levels, reply):
                    announce_closed(window)
            return reply
        raise BackendError(
            f"{what} keeps changing under this call in Redis (it vanished, or its period "
            "changed, or the server's clock jumped, several times in a row)"
        )

    def _mismatch(self, level: Level, stored_spec: str) -> BudgetError:
        stored = stored_limits(stored_spec, level.name)
        if level.check == "u":
            return InvalidLimits(
                f"budget {level.name!r} has dimensions {tuple(stored)}; "
                "updating limits cannot change them"
            )
        if list(stored.items()) == list(level.limits.items()):
            return LimitsMismatch(
                budget=str(level.name),
                stored=stored_period(stored_spec, level.name),
                given=level.period,
                what="period",
            )
        return LimitsMismatch(budget=str(level.name), stored=stored, given=dict(level.limits))

    async def _closing(self, held: RedisHeld, name: str, args: list[str]) -> Outcome:
        """Settle or release *held*: retried a few times when Redis is unreachable (the
        lease id makes retries idempotent), within the store's ``close_timeout`` in all.
        Past that, the outcome is unknown: `BackendError`, and the same close may be
        retried later."""
        if held.closing:
            raise ReservationClosed("this reservation is being settled or released already")
        held.closing = True
        error: BackendError | None = None
        try:
            with anyio.move_on_after(self.link.close_timeout):
                for delay in (*_CLOSE_DELAYS, None):
                    try:
                        reply = await self._call(name, args)
                    except BackendError as exc:  # noqa: PERF203 - retrying is the point
                        if not retriable(exc):
                            raise
                        error = exc
                        if delay is None:
                            break
                        _log.logger.warning(
                            _log.BACKEND_RETRY, budget=self.name, op=name, error=repr(exc)
                        )
                        await anyio.sleep(delay)
                    else:
                        if text(reply[0]) == "CLOSED":
                            held.closed = True
                            raise closed(reply, self.link.lease_ttl)
                        held.closed = True
                        return outcome(self.levels, reply)
        finally:
            held.closing = False
        cause = "" if error is None else f" ({error})"
        raise BackendError(
            f"outcome unknown: Redis did not confirm the {name} of a reservation of "
            f"{self.levels[0].describe()} within {self.link.close_timeout:g} s "
            f"(close_timeout){cause}. It may or may not have been applied. It is "
            "idempotent: 'await reservation.commit()' retries it and applies it at most "
            "once; if it never is, the reservation comes back when its lease expires and "
            "the usage recorded on it is not charged"
        ) from error

    def _held(self, held: Held) -> RedisHeld:
        if not isinstance(held, RedisHeld) or held.account.link is not self.link:
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
        ms = self.link.lease_ms if ttl is None else round(check_ttl(ttl, "ttl") * 1000)
        lease_ms = str(max(1, ms))
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
        link = self.link
        reply = await self._call(
            "reserve",
            [
                lease,
                str(link.lease_ms) if lease_ms is None else lease_ms,
                "1" if use_headroom else "0",
                ticket,
                "k" if keep else "x",
                link.ticket_ms,
                *per_level,
            ],
        )
        if text(reply[0]) == "OK":
            return RedisHeld(self, lease, outcome(self.levels, reply))
        return denial(self.levels, per_level, reply)

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
        listener = self.link.listener(self.tree[1])
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
                self.link.forget_listener(self.tree[1], listener)

    async def _cleanup(self, lease: str, ticket: str) -> None:
        """Release *lease* if Redis holds it and drop *ticket*, shielded and bounded; on
        failure, the lease and the ticket expire by themselves."""
        with anyio.move_on_after(self.link.close_timeout, shield=True):
            with contextlib.suppress(BudgetError):
                await self._call("release", [lease, self._remember, "1", ticket])

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """Release *held* and add *actual* to ``spent``, at every level."""
        lease = self._held(held)
        account = lease.account  # the chain it was taken on
        args = [lease.lease, account._remember, *account._per_level(actual)]
        return await account._closing(lease, "settle", args)

    async def release(self, held: Held) -> Outcome:
        """Give *held* back untouched."""
        lease = self._held(held)
        account = lease.account
        return await account._closing(lease, "release", [lease.lease, account._remember, "0", ""])

    async def extend(self, held: Held, ttl: float | None) -> None:
        """Keep *held* alive for *ttl* seconds from now (the store's lease time by default)."""
        seconds = self.link.lease_ttl if ttl is None else check_ttl(ttl, "ttl")
        lease = self._held(held)
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
            self.link.orphans.append(held)

    async def give_back(self, held: RedisHeld) -> None:
        """Release an abandoned lease, quietly (it may have expired already)."""
        await self._call("release", [held.lease, self._remember, "1", ""])

    # -- direct operations -------------------------------------------------------------

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        """Add *amounts* to ``spent`` at every level (see `aiobudget.kernel.Chain.charge`).
        The charge carries an id, so a retry after a lost reply never charges twice."""
        args = [os.urandom(16).hex(), self._remember, "1" if strict else "0"]
        reply = await self._call("charge", [*args, *self._per_level(amounts)])
        if text(reply[0]) == "EXCEEDED":
            raise exceeded(self.levels, reply)
        return outcome(self.levels, reply)

    async def snapshot(self) -> Snapshot:
        """The budget's own limits and counters, as stored in Redis."""
        reply = await self._call("snapshot", [], leaf_only=True)
        return snapshot(self.levels[0], reply)

    async def reset(self) -> Outcome:
        """A new period: ``spent`` goes to 0 (this budget only)."""
        reply = await self._call("reset", [], leaf_only=True)
        return outcome(self.levels[:1], reply)

    async def repair(self) -> Outcome:
        """A forced reset: ``spent`` goes to 0 and this budget's record in Redis is made
        whole again (reserved recounted from the leases held; a lost record created again
        with this budget's limits). See `RedisStore.repair`."""
        leaf = self.levels[0]
        args = [leaf.spec, "1", str(self.link.lease_ms), "0"]
        client = await self.link.ready()
        head_ = maintenance_head(leaf.base)
        reply = await run(client, scripts()["repair"], 5, head_, args, what=leaf.describe())
        tag = text(reply[0])
        if tag == "NOBUDGET":  # nothing stored yet: a plain reset creates it
            return await self.reset()
        if tag == "LIMITS":
            raise self._mismatch(leaf, text(reply[2]))
        return outcome(self.levels[:1], [reply[0], reply[1], 0])

    async def set_limits(self, limits: Mapping[str, Limit]) -> Outcome:
        """New limits for the same dimensions, stored for every process."""
        new = {dim: Limit.of(limits[dim]) for dim in limits}
        if tuple(new) != self.dims:
            raise InvalidLimits(
                f"new limits must name the same dimensions in the same order: {self.dims}"
            )
        reply = await self._call("set_limits", [spec_of(new)], leaf_only=True)
        self.levels[0].set_limits(new)
        return outcome(self.levels[:1], reply)
