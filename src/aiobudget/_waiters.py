"""A first-come-first-served wait queue with hand-over, for reservations that wait.

Whoever frees budget (a settle, a release, a reset, a waiter giving up) calls
`WaitQueue.grant` under the store's lock. It walks the queue from the head and
*reserves on behalf of* each waiter that now fits before waking it, so the woken task
owns its reservation the moment it is signalled: nothing can slip in between the wake-up
and the woken task resuming (anyio #1170), and a waiter cancelled in the tick it was
granted finds its reservation and gives it back, passing it on (anyio #947).

A waiter that does not fit *holds back* the requests that compete with it: those that
ask something (> 0) of a dimension it asks, at a level of its chain from its own budget
up to the level that refused it (a reservation allowed into headroom is held back there
whatever it asks, since it can fill a dimension past what the waiter may use). Neither
later waiters nor reservations that do not wait overtake it there, so a large request is
not starved by a stream of small ones, while requests that ask nothing of what it waits
for, and waiters on other branches of a budget tree, still proceed. Only waiters that now
fit are woken, and nothing polls.

A waiter that spend has made impossible (only a reset or new limits could let it in) is
failed at once, wherever it stands. An upper bound of what the waiters ask per level
keeps that check O(levels) until the bound says someone may be ruled out.

Every operation is O(levels x dimensions) but `grant`, which walks the queue until no
waiter behind can be granted: when the head is refused at the root on a dimension every
waiter asks, that is the head alone, however long the queue.

A waiter on an asyncio loop parks on a bare future of that loop; under any other
library (Trio) on an anyio event. Both wake from any thread.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections import OrderedDict
from itertools import compress, count
from typing import TYPE_CHECKING, Final, final

import anyio
from anyio.lowlevel import current_token

from .kernel import Chain, Lease, Ledger

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from anyio.lowlevel import EventLoopToken

    from .kernel import Denial

__all__ = ["WaitQueue", "Waiter"]

_get_running_loop: Final = asyncio.get_running_loop
_modules: Final = sys.modules
_get_ident: Final = threading.get_ident
_FOREVER: Final = math.inf


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None when no loop runs in this thread."""
    try:
        return _get_running_loop()
    except RuntimeError:
        return None


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running the current task, or None under another library."""
    try:
        loop = _get_running_loop()
    except RuntimeError:
        return None
    sniffio = _modules.get("sniffio")
    if (
        sniffio is not None
        and (sniffio.thread_local.name or sniffio.current_async_library_cvar.get() or "asyncio")
        != "asyncio"
    ):
        return None  # e.g. a Trio task running in guest mode on top of this loop
    return loop


# What a waiter asks (> 0) at each level, by what it asks there: waiters of one workload
# ask the same few amounts, and building it costs more than looking it up.
_ASKED: Final[dict[object, tuple[tuple[int, ...], ...]]] = {}
_ASKED_MAX: Final = 512


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@final
class Waiter:
    """One waiting reservation: what it asks, where it holds others back, how to wake it.

    ``prefix`` is how many levels of its chain, from its own budget up, it holds back
    (0 while it is itself held back by an earlier waiter).
    """

    __slots__ = (
        "_event",
        "_future",
        "_thread",
        "_timer",
        "_token",
        "amounts",
        "asked",
        "at",
        "chain",
        "denial",
        "lease",
        "levels",
        "prefix",
        "timeout",
        "ttl",
        "use_headroom",
    )

    # Set under other libraries than asyncio only (an asyncio waiter has a future).
    _event: anyio.Event
    _token: EventLoopToken

    def __init__(
        self,
        chain: Chain,
        amounts: tuple[int, ...],
        use_headroom: bool,
        timeout: float,
        levels: tuple[tuple[int, ...], ...] | None = None,
    ) -> None:
        self.chain = chain
        self.amounts = amounts
        self.use_headroom = use_headroom
        self.timeout = timeout  # seconds (math.inf: no deadline)
        if levels is None:
            levels = chain.project(amounts)
        self.levels = levels  # what it asks at each level (``chain.project(amounts)``)
        # Positions of what it asks (> 0) at each level: what it competes for there.
        key: object = levels[0] if len(levels) == 1 else levels  # one level: a flat key
        asked = _ASKED.get(key)
        if asked is None:
            asked = tuple(tuple(compress(count(), held)) for held in levels)
            if len(_ASKED) >= _ASKED_MAX:
                _ASKED.clear()  # a workload of ever new amounts: keep it small
            _ASKED[key] = asked
        self.asked = asked
        self.prefix = 0
        self.at: Ledger | None = None  # the level it waits at, for statistics
        self.ttl: float | None = None  # the store's: a deadline for the granted lease
        self.lease: Lease | None = None  # set when granted
        self.denial: Denial | None = None  # set when waiting became useless
        self._timer: asyncio.TimerHandle | None = None
        # `_asyncio_loop`, inlined: a waiter is made per reservation that waits.
        try:
            loop: asyncio.AbstractEventLoop | None = _get_running_loop()
        except RuntimeError:
            loop = None
        sniffio = _modules.get("sniffio")
        if (
            loop is not None
            and sniffio is not None
            and (sniffio.thread_local.name or sniffio.current_async_library_cvar.get() or "asyncio")
            != "asyncio"
        ):
            loop = None  # e.g. a Trio task running in guest mode on top of this loop
        # The thread whose event loop runs the waiting task: woken from it, the waiter is
        # woken directly (see `wake`).
        self._thread = _get_ident()
        if loop is not None:
            self._future: asyncio.Future[None] | None = loop.create_future()
        else:
            self._future = None
            self._event = anyio.Event()
            self._token = current_token()

    def wait(self) -> Awaitable[object]:
        """Something to await until `wake` is called or the timeout passes. Call `stop`
        once it is over, however it ended."""
        future = self._future
        if future is None:
            return self._wait_event(self.timeout)
        if self.timeout != _FOREVER:
            self._timer = future.get_loop().call_later(self.timeout, _resolve, future)
        return future

    async def _wait_event(self, timeout: float) -> None:
        assert self._event is not None
        with anyio.move_on_after(timeout):
            await self._event.wait()

    def stop(self) -> None:
        """Cancel the timer of a finished wait (in the waiter's own thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wake(self) -> None:
        """Wake the waiting task, from any thread. A loop that finished has no task left
        to wake, so that failure is ignored."""
        future = self._future
        try:
            if _get_ident() == self._thread:
                # The thread the task waits in, where its loop runs (a thread runs one loop
                # at a time): no need to ask for the running loop, a system call per ask.
                if future is None:
                    self._event.set()
                elif not future.done():
                    future.set_result(None)
            elif future is not None:
                future.get_loop().call_soon_threadsafe(_resolve, future)
            else:
                token = self._token
                token.backend_class.run_sync_soon(self._event.set, (), token.native_token)
        except (RuntimeError, anyio.RunFinishedError):  # the loop is closed
            pass


@final
class WaitQueue:
    """The waiters of one budget tree, in arrival order. Use under the store's lock.

    ``waiting`` is the number of queued waiters (read it, never write it).
    """

    __slots__ = (
        "_asks",
        "_at",
        "_bounded",
        "_fine",
        "_held",
        "_largest",
        "_largest_headroom",
        "_queue",
        "_recorded",
        "waiting",
    )

    def __init__(self) -> None:
        self._queue: OrderedDict[Waiter, None] = OrderedDict()  # O(1) removal anywhere
        self.waiting = 0
        # The record of who holds what back: per level, per dimension, how many of the
        # waiters holding that level back ask it, then (last) how many hold it back.
        self._held: dict[Ledger, list[int]] = {}
        self._recorded = 0  # waiters holding something back
        self._at: dict[Ledger, int] = {}  # level -> queued waiters waiting at it
        self._asks: list[int] = []  # per dimension of the root: queued waiters asking it
        # level -> per-dimension upper bound of what waiters ask there (without, with
        # headroom), so that finding waiters spend has ruled out rarely scans the queue
        self._largest: dict[Ledger, list[int]] = {}
        self._largest_headroom: dict[Ledger, list[int]] = {}
        # The chain and levels last merged into ``_largest``: waiters of one workload ask
        # the same, and comparing two tuples is cheaper than merging them again.
        self._bounded: tuple[Chain, tuple[tuple[int, ...], ...]] | None = None
        # True when spend, as it is now, rules out nothing up to ``_largest`` as it is now
        # (see `surely_possible`): set by `fail_impossible`, which every operation that
        # grows spend or lowers limits runs while anyone waits; cleared when the bounds
        # may grow, or when the queue fills again after spend may have grown unwatched.
        self._fine = False

    # -- who is held back -----------------------------------------------------------------

    def waiting_at(self, ledger: Ledger) -> int:
        """How many queued waiters wait at *ledger* (refused there, or held back there by
        an earlier waiter): O(1), for statistics."""
        return self._at.get(ledger, 0)

    def _place(self, waiter: Waiter, ledger: Ledger | None) -> None:
        """Count *waiter* as waiting at *ledger* (None: nowhere, it left)."""
        old = waiter.at
        if old is ledger:
            return
        at = self._at
        if old is not None:
            at[old] -= 1
        if ledger is not None:
            at[ledger] = at.get(ledger, 0) + 1
        waiter.at = ledger

    def holds_back(
        self, chain: Chain, asks: tuple[tuple[int, ...], ...], use_headroom: bool
    ) -> tuple[int, int] | None:
        """Where a newcomer asking *asks* (``chain.project(amounts)``) must queue behind a
        waiter: the first level of *chain* (counted from the leaf) at which a waiter
        holds it back, and the position there of the dimension it competes for. ``None``
        when no waiter competes with it."""
        if not self._recorded:
            return None
        for level, (ledger, amounts) in enumerate(zip(chain.ledgers, asks)):
            counts = self._held.get(ledger)
            if counts is not None and counts[-1]:  # kept, at zero, once nobody holds back
                if use_headroom:
                    return level, max(range(len(amounts)), key=amounts.__getitem__)
                for i, amount in enumerate(amounts):
                    if amount and counts[i]:
                        return level, i
        return None

    def _record(self, waiter: Waiter, prefix: int) -> None:
        """Make *waiter* hold back the first *prefix* levels of its chain (0: nothing)."""
        old = waiter.prefix
        if old == prefix:
            return
        held = self._held
        ledgers, asked = waiter.chain.ledgers, waiter.asked
        # Taken off the levels it held back, then added to those it holds back now (the
        # last count of a level is of the waiters holding it back).
        if old:
            for ledger, dims in zip(ledgers[:old], asked):
                counts = held[ledger]
                counts[-1] -= 1
                for i in dims:
                    counts[i] -= 1
        if prefix:
            for ledger, dims in zip(ledgers[:prefix], asked):
                found = held.get(ledger)
                if found is None:
                    found = held[ledger] = [0] * (len(ledger.dims) + 1)
                found[-1] += 1
                for i in dims:
                    found[i] += 1
        self._recorded += (prefix > 0) - (old > 0)
        waiter.prefix = prefix

    def surely_possible(self, chain: Chain, levels: tuple[tuple[int, ...], ...]) -> bool:
        """True when a newcomer asking *levels* (``chain.project(amounts)``) is known not to
        be ruled out by spend: it asks what the last waiter merged into the bounds asked,
        and spend rules out nothing within them. False says nothing: ask the chain."""
        return self._fine and (chain, levels) == self._bounded

    # -- joining and leaving ----------------------------------------------------------------

    def push(self, waiter: Waiter, refused_at: int | None, behind: int | None = -1) -> None:
        """Queue *waiter*: refused at level *refused_at* of its chain, or held back by an
        earlier waiter (``None``). *behind* is, for the latter, the level at which it is
        held back when the caller knows it already (`holds_back`), None for nowhere."""
        ledgers = waiter.chain.ledgers
        if refused_at is None:
            if behind == -1:
                found = self.holds_back(waiter.chain, waiter.levels, waiter.use_headroom)
                behind = None if found is None else found[0]
            at = None if behind is None else ledgers[behind]
        else:
            at = ledgers[refused_at]
        if at is not None:  # `_place`, inlined: a new waiter is counted nowhere yet
            self._at[at] = self._at.get(at, 0) + 1
            waiter.at = at
        if not self._queue:
            self._fine = False  # spend may have grown while nobody waited
        self._queue[waiter] = None
        self.waiting += 1
        if refused_at is not None:
            self._record(waiter, refused_at + 1)
        asks = self._asks
        if not asks:
            asks.extend([0] * len(waiter.levels[-1]))
        for i in waiter.asked[-1]:
            asks[i] += 1
        if waiter.use_headroom:
            bounds = self._largest_headroom
        else:
            merged = (waiter.chain, waiter.levels)
            if merged == self._bounded:
                return  # within the bounds already
            self._bounded = merged
            self._fine = False
            bounds = self._largest
        for ledger, amounts in zip(ledgers, waiter.levels):
            largest = bounds.get(ledger)
            if largest is None:
                bounds[ledger] = list(amounts)
            else:
                largest[:] = map(max, largest, amounts)

    def remove(self, waiter: Waiter) -> None:
        """Take a waiter out (granted, failed, or it gave up); after one gave up the caller
        calls `grant`, since those it held back may now be free."""
        if self._queue.pop(waiter, waiter) is waiter:  # not queued (any more)
            return
        self._forget(waiter)

    def _forget(self, waiter: Waiter) -> None:
        """The counts of a waiter just taken out of the queue."""
        self.waiting -= 1
        at = waiter.at
        if at is not None:  # `_place(waiter, None)`, inlined
            self._at[at] -= 1
            waiter.at = None
        if waiter.prefix:
            self._record(waiter, 0)
        asks = self._asks
        for i in waiter.asked[-1]:
            asks[i] -= 1

    # -- handing over ---------------------------------------------------------------------

    def fail_impossible(self) -> None:
        """Fail the waiters that spend has ruled out, after spend grew or limits fell.
        The caller then calls `grant`: those they held back may now be free."""
        if not self._queue:
            return
        # Judged first by the bound of what the waiters ask: the queue is scanned only
        # when spend may rule out one of them.
        for ledger, bound in self._largest.items():
            if ledger.rules_out(bound, use_headroom=False):
                break
        else:
            self._fine = True
            for ledger, bound in self._largest_headroom.items():
                if ledger.rules_out(bound, use_headroom=True):
                    break
            else:
                return
        failed = [
            waiter
            for waiter in self._queue
            if waiter.chain.impossible(waiter.amounts, use_headroom=waiter.use_headroom)
        ]
        for waiter in failed:
            waiter.denial = waiter.chain.check(waiter.amounts, use_headroom=waiter.use_headroom)
            self.remove(waiter)
            waiter.wake()
        # Recompute the bounds exactly from who is left.
        self._largest.clear()
        self._largest_headroom.clear()
        self._bounded = None
        self._fine = False
        for waiter in self._queue:
            bounds = self._largest_headroom if waiter.use_headroom else self._largest
            for ledger, amounts in zip(waiter.chain.ledgers, waiter.levels):
                largest = bounds.get(ledger)
                if largest is None:
                    bounds[ledger] = list(amounts)
                else:
                    largest[:] = map(max, largest, amounts)

    def grant(self, *, spent: bool = False) -> None:
        """Hand freed budget to the waiters that now fit, in order, and wake them.

        Walks from the head, noting what each waiter that does not fit holds back, and
        stops once nobody behind can be let in. With *spent* (spend grew or limits fell
        since the last grant), first fail the waiters that spend has ruled out
        (`fail_impossible`).
        """
        queue = self._queue
        if not queue:
            return
        if spent:
            self.fail_impossible()
            if not queue:
                return
        everyone = len(queue)
        unwalked = self._recorded  # records of waiters not walked yet
        held: dict[Ledger, set[int]] = {}  # what the waiters walked so far hold back
        finished: list[Waiter] = []
        asks = self._asks
        for waiter in queue:
            if waiter.prefix:
                unwalked -= 1
            if held and _competes(waiter, held):
                if waiter.prefix:
                    self._record(waiter, 0)
                continue
            chain = waiter.chain
            taken = chain.take(waiter.amounts, waiter.use_headroom)
            if type(taken) is Lease:
                waiter.lease = taken
                finished.append(waiter)
                continue
            level = taken
            if (
                finished
                and (last := finished[-1]).prefix == level + 1
                and last.chain is chain
                and last.asked is waiter.asked
                and not waiter.prefix
            ):
                # The waiter granted just before held back what this one now holds
                # back (the common hand-over: the new head asks what the old one did):
                # its record is handed on, the counts stay as they are.
                last.prefix = 0
                waiter.prefix = level + 1
            else:
                self._record(waiter, level + 1)
            ledgers = chain.ledgers
            if waiter.at is not ledgers[level]:
                self._place(waiter, ledgers[level])
            # Refused at the root on a dimension every waiter asks: all behind are held
            # back, and (no record left behind) none of them holds anything back.
            if level == len(ledgers) - 1 and not unwalked:
                stop = False
                for i in waiter.asked[level]:
                    if asks[i] == everyone:
                        stop = True
                        break
                if stop:
                    break
            for ledger, asked in zip(ledgers[: level + 1], waiter.asked):
                dims = held.get(ledger)
                if dims is None:
                    held[ledger] = set(asked)
                else:
                    dims.update(asked)
        if finished:
            self._wake(finished)

    def _wake(self, finished: list[Waiter]) -> None:
        """Take the waiters just granted out of the queue (`remove`, inlined) and wake
        them."""
        queue = self._queue
        asks = self._asks
        self.waiting -= len(finished)
        at = self._at
        for waiter in finished:
            del queue[waiter]
            place = waiter.at
            if place is not None:
                at[place] -= 1
                waiter.at = None
            if waiter.prefix:
                self._record(waiter, 0)
            for i in waiter.asked[-1]:
                asks[i] -= 1
            waiter.wake()


def _competes(waiter: Waiter, held: dict[Ledger, set[int]]) -> bool:
    """Whether an earlier waiter of this walk holds *waiter* back (see `WaitQueue`)."""
    for ledger, asked in zip(waiter.chain.ledgers, waiter.asked):
        dims = held.get(ledger)
        if dims is not None and (waiter.use_headroom or not dims.isdisjoint(asked)):
            return True
    return False
