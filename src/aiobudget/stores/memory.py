"""`MemoryStore`: budgets in this process, the kernel behind one lock.

The lock is a `threading.Lock` that guards only synchronous kernel calls and is never
held across an await, so one store is safe from many tasks, many threads and several
event loops at once, and never blocks an event loop for longer than an O(dims) update.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, final

from .._errors import InvalidLimits, LimitsMismatch, ReservationClosed
from .._waiters import Waiter, WaitQueue
from ..kernel import Chain, Denial, Lease, Ledger, Limit, Outcome, Snapshot

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..protocols import Account, Held, Ticket

__all__ = ["MemoryAccount", "MemoryStore"]


@final
class MemoryStore:
    """Budgets held in this process's memory: the default store.

    Budgets opened with the same name (under the same parent) share their counters, as
    they would in Redis; an unnamed budget is private to its `Budget` object.
    """

    __slots__ = ("_due", "_lock", "_named", "_orphans")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._named: dict[tuple[int, str], tuple[Ledger, Chain, WaitQueue]] = {}
        # Reservations garbage-collected while the lock was held, refunded at the next
        # operation: a finalizer must never wait for a lock its own thread may hold.
        self._orphans: list[tuple[Lease, WaitQueue]] = []
        # True when an operation has housekeeping to do first (see MemoryAccount._tend):
        # one flag, so the common operation pays a single test for all of it.
        self._due = False

    def __repr__(self) -> str:
        return f"<MemoryStore budgets={len(self._named)}>"

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
    ) -> MemoryAccount:
        """The account of budget *name* below *parent* (see `aiobudget.protocols.Store`)."""
        if parent is not None and not (isinstance(parent, MemoryAccount) and parent._store is self):
            raise InvalidLimits("a child budget must live in the same store as its parent")
        parent_chain = parent._chain if parent is not None else None
        with self._lock:
            key = (id(parent_chain.leaf) if parent_chain else 0, name) if name is not None else None
            found = self._named.get(key) if key is not None else None
            if found is not None:
                ledger, chain, queue = found
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
                return MemoryAccount(self, chain, queue)
            ledger = Ledger(limits, name=name)
            chain = Chain((ledger, *parent_chain.ledgers) if parent_chain else (ledger,))
            queue = parent._queue if parent is not None else WaitQueue()
            if key is not None:
                self._named[key] = (ledger, chain, queue)
            return MemoryAccount(self, chain, queue)


@final
class MemoryAccount:
    """One budget in a `MemoryStore`. Implements `aiobudget.protocols.LocalAccount`.

    Every operation enters the store the same way: take the lock, then `_tend` when
    the store has housekeeping due, then one kernel call and the wait queue.
    """

    __slots__ = ("_chain", "_lock", "_queue", "_store", "vector")

    def __init__(self, store: MemoryStore, chain: Chain, queue: WaitQueue) -> None:
        self._store = store
        self._lock = store._lock
        self._chain = chain
        self._queue = queue
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

    def _tend(self) -> None:
        """Housekeeping due before an operation, under the lock: refund the reservations
        the garbage collector found while the lock was held."""
        store = self._store
        orphans = store._orphans
        while orphans:
            lease, queue = orphans.pop()
            if lease.open:
                lease.release()
                queue.grant()
        store._due = False

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
        self, amounts: tuple[int, ...], use_headroom: bool = False
    ) -> Lease | Denial:
        """Reserve without waiting."""
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend()
            if self._queue.waiting:
                return self._try(amounts, use_headroom)
            return self._chain.reserve(amounts, use_headroom)  # nobody queued
        finally:
            lock.release()

    def settle_nowait(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """Settle *held* with *actual*, and hand what it freed to waiters."""
        lease = held if type(held) is Lease else _lease(held)
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend()
            outcome = lease.settle(actual)
            if self._queue.waiting:
                _wake(self._queue)
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
                self._tend()
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
        self, amounts: tuple[int, ...], use_headroom: bool, timeout: float | None
    ) -> tuple[Lease | Denial, None] | tuple[None, Waiter]:
        """`reserve` up to the wait: ``(answer, None)``, or ``(None, ticket)`` when the
        reservation must wait (see `aiobudget.protocols.LocalAccount`)."""
        chain = self._chain
        queue = self._queue
        lock = self._lock
        lock.acquire()
        try:
            if self._store._due:
                self._tend()
            if timeout is None or timeout <= 0:
                return self._try(amounts, use_headroom), None
            refused_at = None
            levels = chain.project(amounts)
            if queue.waiting and queue.holds_back(chain, levels, use_headroom) is not None:
                if chain.impossible(amounts, use_headroom=use_headroom):
                    return chain.reserve(amounts, use_headroom), None  # a Denial
            else:
                refused_at = chain.refusing_level(amounts, use_headroom=use_headroom)
                if refused_at is None or chain.impossible(amounts, use_headroom=use_headroom):
                    return chain.reserve(amounts, use_headroom), None
            waiter = Waiter(chain, amounts, use_headroom, timeout, levels)
            queue.push(waiter, refused_at)
            return None, waiter
        finally:
            lock.release()

    def collect(self, ticket: Ticket) -> Lease | Denial:
        """The answer for a ticket whose wait is over."""
        waiter = _waiter(ticket)
        waiter.stop()
        lease = waiter.lease
        if lease is not None:  # the granter set it, under the lock, before waking us
            return lease
        with self._lock:
            if waiter.lease is not None:  # granted by another thread just now
                return waiter.lease
            if waiter.denial is not None:
                return waiter.denial
            # Timed out. Budget freed in this very tick is still ours to take: we were
            # ahead of everyone behind us, so trying once more keeps the order.
            self._queue.remove(waiter)
            result = self._try(waiter.amounts, waiter.use_headroom)
            self._queue.grant()
            return result

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
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Lease | Denial:
        """Reserve, waiting up to *timeout* seconds (first come, first served)."""
        result, waiter = self.reserve_or_queue(amounts, use_headroom, timeout)
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
        """Memory reservations never expire; only checks that *held* is still open."""
        lease = _lease(held)
        with self._lock:
            if self._store._due:
                self._tend()
            if not lease.open:
                raise ReservationClosed("this reservation was already settled or released")

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        """Add *amounts* to ``spent`` (see `aiobudget.kernel.Chain.charge`)."""
        with self._lock:
            if self._store._due:
                self._tend()
            outcome = self._chain.charge(amounts, strict=strict)
            _wake(self._queue)  # waiting may have become useless
            return outcome

    async def snapshot(self) -> Snapshot:
        """The budget's own counters."""
        with self._lock:
            if self._store._due:
                self._tend()
            return self._chain.leaf.snapshot()

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
        queue.fail_impossible()
        queue.grant()


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
    return Denial(
        ledger.name, level, ledger.dims[i], held[i], ledger.remaining(i), False, queued=True
    )
