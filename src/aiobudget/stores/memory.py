"""`MemoryStore`: budgets in this process, the kernel behind one lock.

The lock is a `threading.Lock` that guards only synchronous kernel calls and is never
held across an await, so one store is safe from many tasks, many threads and several
event loops at once, and never blocks an event loop for longer than an O(dims) update.

A reservation made with a *ttl* is refunded once the store's clock passes its deadline,
lazily: by the next operation on any budget of the store (a heap of deadlines, so
O(log n) per expired reservation; no background task). Settling or releasing it after
that raises `ReservationClosed` and changes nothing, as with Redis leases.

Budgets with a period roll over inside the first operation (or snapshot) at or after a
boundary of the store's clock: `MemoryAccount._roll`, called under the lock as each
operation enters, before its kernel call.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING, Final, final

from .._errors import InvalidLimits, LimitsMismatch, ReservationClosed
from .._period import Period, announce_closed
from .._waiters import Waiter, WaitQueue
from ..kernel import (
    Chain,
    Denial,
    Lease,
    Ledger,
    Limit,
    Outcome,
    Snapshot,
    check_flag,
    from_micros,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..protocols import Account, Held, Ticket

__all__ = ["MemoryAccount", "MemoryStore"]

_REMEMBER: Final = 1024  # expired reservations remembered, to say "expired" when closed late
_FOREVER: Final = math.inf


@final
class MemoryStore:
    """Budgets held in this process's memory: the default store.

    Budgets opened with the same name (under the same parent) share their counters, as
    they would in Redis; an unnamed budget is private to its `Budget` object.

    *clock* returns the time in POSIX seconds (`time.time` by default): it decides when a
    reservation made with a ``ttl`` expires and when budgets with a period roll over.
    Inject one to test both without sleeping.
    """

    __slots__ = (
        "_clock",
        "_deadlines",
        "_due",
        "_expired",
        "_expiries",
        "_lock",
        "_named",
        "_orphans",
        "_periodic",
        "_sequence",
    )

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning POSIX seconds, not {clock!r}")
        self._clock: Callable[[], float] = time.time if clock is None else clock
        # Reservations with a ttl: their deadline, and a heap of (deadline, n, lease,
        # queue) whose entries go stale when a lease closes or is extended (skipped, and
        # compacted away once they outnumber the live ones).
        self._deadlines: dict[Lease, float] = {}
        self._expiries: list[tuple[float, int, Lease, WaitQueue]] = []
        self._expired: dict[Lease, None] = {}
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._named: dict[tuple[int, str], tuple[Ledger, Chain, WaitQueue, _Schedules]] = {}
        # Reservations garbage-collected while the lock was held, refunded at the next
        # operation: a finalizer must never wait for a lock its own thread may hold.
        self._orphans: list[tuple[Lease, WaitQueue]] = []
        self._periodic = False  # whether any budget here ever had a period
        # True when an operation has housekeeping to do first (see MemoryAccount._tend):
        # one flag, so the common operation pays a single test for all of it.
        self._due = False

    def __repr__(self) -> str:
        return f"<MemoryStore budgets={len(self._named)}>"

    @property
    def clock(self) -> Callable[[], float]:
        """The clock (POSIX seconds) that times reservations' ``ttl``."""
        return self._clock

    # -- reservations with a ttl (all under the lock) ---------------------------------

    def _expire(self) -> None:
        """Refund every reservation whose deadline has passed and hand it to waiters."""
        heap = self._expiries
        if not heap or heap[0][0] > (now := self._clock()):
            return
        deadlines = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, lease, queue = heapq.heappop(heap)
            if deadlines.get(lease) != deadline:
                continue  # closed or extended since: a stale entry
            del deadlines[lease]
            if lease.open:
                lease.release()
                queue.grant()
                self._expired[lease] = None
                if len(self._expired) > _REMEMBER:
                    del self._expired[next(iter(self._expired))]

    def _time_out(self, lease: Lease, ttl: float, queue: WaitQueue) -> None:
        """Give *lease* a deadline *ttl* seconds from now (replacing any earlier one)."""
        deadline = self._clock() + ttl
        self._deadlines[lease] = deadline
        self._due = True  # settles and releases now check deadlines first
        heap = self._expiries
        heapq.heappush(heap, (deadline, next(self._sequence), lease, queue))
        if len(heap) > 2 * len(self._deadlines) + 64:
            deadlines = self._deadlines
            heap[:] = [entry for entry in heap if deadlines.get(entry[2]) == entry[0]]
            heapq.heapify(heap)

    def _closing(self, lease: Lease) -> None:
        """Before *lease* is settled or released: expire what is due, then forget its
        deadline, or refuse it if it expired."""
        self._expire()
        if self._deadlines.pop(lease, None) is None and lease in self._expired:
            raise ReservationClosed(
                "this reservation expired (its ttl passed) and was refunded; nothing was changed"
            )

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> MemoryAccount:
        """The account of budget *name* below *parent* (see `aiobudget.protocols.Store`)."""
        check_flag(update_limits, "update_limits")
        if parent is not None and not (isinstance(parent, MemoryAccount) and parent._store is self):
            raise InvalidLimits("a child budget must live in the same store as its parent")
        if period is not None and not isinstance(period, Period):
            raise InvalidLimits(f"period must be a Period or None, not {period!r}")
        parent_chain = parent._chain if parent is not None else None
        with self._lock:
            key = (id(parent_chain.leaf) if parent_chain else 0, name) if name is not None else None
            found = self._named.get(key) if key is not None else None
            if found is not None:
                ledger, chain, queue, schedules = found
                given = {dim: Limit.of(limit) for dim, limit in limits.items()}
                stored = dict(zip(ledger.dims, ledger.limits))
                # Order matters too: it decides which dimension a verdict names.
                if list(given.items()) != list(stored.items()):
                    if not update_limits:
                        raise LimitsMismatch(budget=str(name), stored=stored, given=given)
                    if tuple(given) != ledger.dims:
                        raise InvalidLimits(
                            f"budget {name!r} has dimensions {ledger.dims}; "
                            "updating limits cannot change them"
                        )
                    # Not announced here (opening is synchronous): the next operation
                    # reports any crossing the new limits cause.
                    ledger.set_limits(given, report=False)
                    _wake(queue)
                own = schedules[0]
                if own.period != period:
                    if not update_limits:
                        raise LimitsMismatch(
                            budget=str(name), stored=own.period, given=period, what="period"
                        )
                    own.change(period)
                    self._periodic = self._periodic or period is not None
                    self._due = self._due or self._periodic
                return MemoryAccount(self, chain, queue, schedules)
            ledger = Ledger(limits, name=name)
            chain = Chain((ledger, *parent_chain.ledgers) if parent_chain else (ledger,))
            queue = parent._queue if parent is not None else WaitQueue()
            schedules = (_Schedule(ledger, period), *(parent._schedules if parent else ()))
            self._periodic = self._periodic or period is not None
            self._due = self._due or self._periodic
            if key is not None:
                self._named[key] = (ledger, chain, queue, schedules)
            return MemoryAccount(self, chain, queue, schedules)


@final
class _Schedule:
    """The period of one budget of a store, and when its current window ends."""

    __slots__ = ("due", "end", "ledger", "period")

    def __init__(self, ledger: Ledger, period: Period | None) -> None:
        self.ledger = ledger
        self.period = period
        self.forget()

    def forget(self) -> None:
        """The window is to be looked up at the next operation."""
        self.end = -1  # microseconds since the epoch, as the kernel's window
        # A clock reading (seconds) below which no roll is due: a float compare on the
        # hot path, a microsecond early so that rounding can never make it late.
        self.due = -math.inf

    def change(self, period: Period | None) -> None:
        """Another period (update_limits): what was spent carries into its window."""
        self.period = period
        self.ledger.set_window(None)
        self.forget()


_Schedules = tuple[_Schedule, ...]


@final
class MemoryAccount:
    """One budget in a `MemoryStore`. Implements `aiobudget.protocols.LocalAccount`.

    Every operation enters the store the same way: take the lock, then `_tend` when
    the store has housekeeping due, then one kernel call and the wait queue.
    """

    __slots__ = ("_chain", "_clock", "_lock", "_queue", "_schedules", "_store", "vector")

    def __init__(
        self, store: MemoryStore, chain: Chain, queue: WaitQueue, schedules: _Schedules
    ) -> None:
        self._store = store
        self._lock = store._lock
        self._chain = chain
        self._queue = queue
        self._schedules = schedules  # one per level of the chain, leaf first
        self._clock = store._clock
        # Validation is the kernel's, and needs no lock: hand it out without a detour.
        self.vector = chain.leaf.vector
        """Amounts by name, validated, as a tuple in `dims` order."""

    def __repr__(self) -> str:
        return f"<MemoryAccount {self._chain.leaf!r}>"

    @property
    def name(self) -> str | None:
        """The budget's name."""
        return self._chain.leaf.name

    @property
    def dims(self) -> tuple[str, ...]:
        """The budget's dimensions."""
        return self._chain.leaf.dims

    def _tend(self, closing: Lease | None = None) -> None:
        """Housekeeping due before an operation, under the lock: refund the reservations
        whose ttl passed (refusing *closing*, about to be settled or released, if it is
        one of them), roll the windows of budgets with a period, and refund the
        reservations the garbage collector found while the lock was held."""
        store = self._store
        if store._deadlines or store._expired:
            if closing is None:
                store._expire()
            else:
                store._closing(closing)
        if store._periodic:
            self._roll()
        orphans = store._orphans
        while orphans:
            lease, queue = orphans.pop()
            if lease.open:
                lease.release()
                queue.grant()
        store._due = store._periodic or bool(store._deadlines) or bool(store._expired)

    def _roll(self) -> None:
        """Close every window of the chain that the store's clock has left. Called under
        the lock as an operation enters the store, before its kernel call, so the roll is
        atomic with the operation and happens exactly once per boundary."""
        now = None
        for schedule in self._schedules:
            period = schedule.period
            if period is None:
                continue
            if now is None:
                now = self._clock()
            if now < schedule.due:
                continue
            at = round(now * 1_000_000)
            if at < schedule.end:
                continue
            ledger = schedule.ledger
            closed = ledger.roll(*period.window_us(at))
            window = ledger.window
            assert window is not None
            schedule.end = window[1]
            schedule.due = (window[1] - 1) / 1_000_000
            if closed is not None:
                # Logged under the lock, so it precedes every event of the new window.
                announce_closed(closed)
                if self._queue:
                    self._queue.grant()  # spent fell: waiters may fit now

    # -- synchronous core --------------------------------------------------------------

    def _try(self, amounts: tuple[int, ...], use_headroom: bool) -> Lease | Denial:
        """Reserve unless a queued waiter holds this request back. Under the lock."""
        chain = self._chain
        if self._queue.waiting:
            held = self._queue.holds_back(chain, chain.project(amounts), use_headroom)
            if held is not None:
                denial = chain.check(amounts, use_headroom=use_headroom)
                # It may fit, but an earlier waiter it competes with comes first.
                return denial if denial is not None else _queued(chain, *held, amounts)
        return chain.reserve(amounts, use_headroom=use_headroom)

    # The three operations of a round trip take the lock with acquire/release: half
    # the cost of a ``with`` block on CPython, and these run once per reservation.

    def reserve_nowait(
        self, amounts: tuple[int, ...], use_headroom: bool = False, *, ttl: float | None = None
    ) -> Lease | Denial:
        """Reserve without waiting; with *ttl*, refunded *ttl* seconds from now unless
        closed before."""
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend()
            if self._queue.waiting:
                result = self._try(amounts, use_headroom)
            else:
                result = self._chain.reserve(amounts, use_headroom)  # nobody queued
            if ttl is not None and type(result) is Lease:
                self._store._time_out(result, ttl, self._queue)
            return result
        finally:
            lock.release()

    def settle_nowait(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """Settle *held* with *actual*, and hand what it freed to waiters."""
        lease = held if type(held) is Lease else _lease(held)
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend(lease)
            outcome = lease.settle(actual)
            if self._queue.waiting:
                # Nothing spent (a slot held, nothing recorded): nobody can be ruled out.
                self._queue.grant(spent=any(actual))
            return outcome
        finally:
            lock.release()

    def release_nowait(self, held: Held) -> Outcome:
        """Give *held* back, and hand it to waiters."""
        lease = held if type(held) is Lease else _lease(held)
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend(lease)
            outcome = lease.release()
            if self._queue.waiting:
                self._queue.grant()  # a refund rules nobody out: no impossibility scan
            return outcome
        finally:
            lock.release()

    def abandon(self, held: Held) -> None:
        """Give back a reservation found by the garbage collector."""
        lease = _lease(held)
        # The collector may run inside this very thread's critical section: never wait.
        if self._lock.acquire(blocking=False):
            try:
                if lease.open:
                    lease.release()
                self._queue.grant()
            finally:
                self._lock.release()
        else:
            self._store._orphans.append((lease, self._queue))
            self._store._due = True

    # -- Account -----------------------------------------------------------------------

    def reserve_or_queue(
        self,
        amounts: tuple[int, ...],
        use_headroom: bool,
        timeout: float | None,
        ttl: float | None = None,
    ) -> tuple[Lease | Denial, None] | tuple[None, Waiter]:
        """`reserve` up to the wait: ``(answer, None)``, or ``(None, ticket)`` when the
        reservation must wait (see `aiobudget.protocols.LocalAccount`); with *ttl*, the
        reservation is refunded *ttl* seconds after it was granted unless closed before."""
        chain = self._chain
        queue = self._queue
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend()
            if timeout is None or timeout <= 0:
                return self._timed(self._try(amounts, use_headroom), ttl), None
            refused_at = None
            levels = chain.project(amounts)
            behind = queue.holds_back(chain, levels, use_headroom) if queue.waiting else None
            if behind is not None:
                if not queue.surely_possible(chain, levels) and chain.impossible(
                    amounts, use_headroom=use_headroom
                ):
                    return chain.reserve(amounts, use_headroom), None  # a Denial
            else:
                taken = chain.take(amounts, use_headroom)
                if type(taken) is Lease:
                    return self._timed(taken, ttl), None
                refused_at = taken
                if chain.impossible(amounts, use_headroom=use_headroom):
                    return chain.reserve(amounts, use_headroom), None  # a Denial
            waiter = Waiter(chain, amounts, use_headroom, timeout, levels)
            waiter.ttl = ttl
            queue.push(waiter, refused_at, None if behind is None else behind[0])
            return None, waiter
        finally:
            lock.release()

    def _timed(self, result: Lease | Denial, ttl: float | None) -> Lease | Denial:
        """*result*, given a deadline *ttl* seconds from now if it is a lease. Under the
        lock."""
        if ttl is not None and type(result) is Lease:
            self._store._time_out(result, ttl, self._queue)
        return result

    def collect(self, ticket: Ticket) -> Lease | Denial:
        """The answer for a ticket whose wait is over."""
        waiter = ticket if type(ticket) is Waiter else _waiter(ticket)
        if waiter.timeout != _FOREVER:
            waiter.stop()  # only a finite wait has a timer to cancel
        lease = waiter.lease
        if lease is not None and waiter.ttl is None:  # set under the lock before waking us
            return lease
        with self._lock:
            if self._store._due:
                self._tend()  # timed out: an expired reservation may free budget
            if waiter.lease is not None:  # granted by another thread just now
                if waiter.ttl is not None:
                    self._store._time_out(waiter.lease, waiter.ttl, self._queue)
                return waiter.lease
            if waiter.denial is not None:
                return waiter.denial
            # Timed out. Budget freed in this very tick is still ours to take: we were
            # ahead of everyone behind us, so trying once more keeps the order.
            self._queue.remove(waiter)
            result = self._try(waiter.amounts, waiter.use_headroom)
            self._queue.grant()
            return self._timed(result, waiter.ttl)

    def give_up(self, ticket: Ticket) -> None:
        """Leave the queue (the wait was cancelled), passing on anything granted."""
        waiter = _waiter(ticket)
        waiter.stop()
        with self._lock:
            if waiter.lease is not None and waiter.lease.open:
                waiter.lease.release()  # granted in the same tick it was cancelled
            else:
                self._queue.remove(waiter)
            self._queue.grant()  # pass it on

    async def reserve(
        self,
        amounts: tuple[int, ...],
        *,
        use_headroom: bool,
        timeout: float | None,
        ttl: float | None = None,
    ) -> Lease | Denial:
        """Reserve, waiting up to *timeout* seconds (first come, first served); with
        *ttl*, refunded *ttl* seconds after it was granted unless closed before."""
        result, waiter = self.reserve_or_queue(amounts, use_headroom, timeout, ttl)
        if waiter is None:
            assert result is not None
            return result
        try:
            await waiter.wait()
        except BaseException:
            self.give_up(waiter)
            raise
        return self.collect(waiter)

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """`settle_nowait`, as the async `Account` method."""
        return self.settle_nowait(held, actual)

    async def release(self, held: Held) -> Outcome:
        """`release_nowait`, as the async `Account` method."""
        return self.release_nowait(held)

    async def extend(self, held: Held, ttl: float | None) -> None:
        """Move the deadline of a reservation made with a ttl to *ttl* seconds from now.

        A reservation made without a ttl never expires: this only checks it is still
        open. ``ttl=None`` keeps an expiring reservation's deadline where it is.
        """
        lease = _lease(held)
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf
        ):
            raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
        store = self._store
        with self._lock:
            if store._due:
                self._tend()
            if not lease.open:
                if lease in store._expired:
                    raise ReservationClosed("this reservation expired (its ttl passed)")
                raise ReservationClosed("this reservation was already settled or released")
            if ttl is not None and lease in store._deadlines:
                store._time_out(lease, ttl, self._queue)

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        """Add *amounts* to ``spent`` (see `aiobudget.kernel.Chain.charge`)."""
        with self._lock:
            if self._store._due:
                self._tend()
            outcome = self._chain.charge(amounts, strict=strict)
            _wake(self._queue)  # waiting may have become useless
            return outcome

    async def snapshot(self) -> Snapshot:
        """The budget's own counters, and its live and queued reservations."""
        with self._lock:
            if self._store._due:
                self._tend()
            leaf = self._chain.leaf
            return leaf.snapshot(waiting=self._queue.waiting_at(leaf))

    async def reset(self) -> Outcome:
        """A new period: ``spent`` goes to 0."""
        with self._lock:
            if self._store._due:
                self._tend()
            outcome = self._chain.leaf.reset()
            self._queue.grant()
            return outcome

    async def set_limits(self, limits: Mapping[str, Limit]) -> Outcome:
        """New limits for the same dimensions."""
        with self._lock:
            if self._store._due:
                self._tend()
            outcome = self._chain.leaf.set_limits(limits)
            _wake(self._queue)
            return outcome


def _wake(queue: WaitQueue) -> None:
    """After spend grew or limits changed: fail who never can fit, grant who fits now."""
    if queue.waiting:
        queue.grant(spent=True)


def _waiter(ticket: Ticket) -> Waiter:
    if type(ticket) is not Waiter:
        raise TypeError(f"not a ticket of a MemoryStore: {ticket!r}")
    return ticket


def _lease(held: Held) -> Lease:
    if not isinstance(held, Lease):
        raise TypeError(f"not a reservation of a MemoryStore: {held!r}")
    return held


def _queued(chain: Chain, level: int, i: int, amounts: tuple[int, ...]) -> Denial:
    """A denial for a request that fits but must queue behind an earlier waiter that
    competes with it for dimension *i* of *level*."""
    ledger = chain.ledgers[level]
    held = chain.project(amounts)[level]
    window = ledger.window
    resets_at = None if window is None else from_micros(window[1])
    return Denial(
        ledger.name,
        level,
        ledger.dims[i],
        held[i],
        ledger.remaining(i),
        False,
        queued=True,
        resets_at=resets_at,
    )
