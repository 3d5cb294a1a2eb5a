"""A first-come-first-served wait queue with hand-over, for reservations that wait.

The rule: whoever frees budget (a settle, a release, a reset, a waiter giving up) runs
`WaitQueue.grant` under the store's lock. It walks the queue from the head and
*reserves on behalf of* each waiter that now fits before waking it, so the woken task
owns its reservation the moment it is signalled. Nothing can slip in between the
wake-up and the woken task resuming (anyio #1170), and a waiter cancelled in the same
tick it was granted finds its reservation and gives it back, passing it on (anyio #947).

A waiter that spend has made impossible (only a reset or new limits could let it in)
is failed at once, wherever it stands in the queue. To keep that cheap, the queue keeps
an upper bound of what its waiters ask per level and scans only when spend could rule
the largest ask out.

Fairness: a waiter that does not fit *blocks* the budget level that said no, so later
waiters (and non-waiting reservations) touching that level cannot overtake it: a large
request is not starved by a stream of small ones. Waiters behind it on unrelated
branches of a budget tree still proceed. Only waiters that can now fit are woken (no
thundering herd), and nothing polls.

Wake-ups cross threads and event loops: a waiter remembers its loop's token, and a
releaser in another thread schedules the wake-up there.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import final

import anyio
from anyio.lowlevel import EventLoopToken, current_token

from .kernel import Chain, Denial, Lease, Ledger

__all__ = ["WaitQueue", "Waiter"]


@final
class Waiter:
    """One waiting reservation: what it asks, and how to wake its task."""

    __slots__ = (
        "_event",
        "_thread",
        "_token",
        "amounts",
        "blocked",
        "chain",
        "denial",
        "lease",
        "use_headroom",
    )

    def __init__(self, chain: Chain, amounts: tuple[int, ...], use_headroom: bool) -> None:
        self.chain = chain
        self.amounts = amounts
        self.use_headroom = use_headroom
        self.lease: Lease | None = None  # set when granted
        self.denial: Denial | None = None  # set when waiting became useless
        self.blocked: Ledger | None = None  # the level that last said no
        self._event = anyio.Event()
        self._token: EventLoopToken = current_token()
        self._thread = threading.get_ident()

    @property
    def done(self) -> bool:
        """Granted, or told that waiting cannot help."""
        return self.lease is not None or self.denial is not None

    async def wait(self) -> None:
        """Until `wake` is called."""
        await self._event.wait()

    def wake(self) -> None:
        """Wake the waiting task, from any thread."""
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        token = self._token
        # A loop that finished has no task left to wake.
        with contextlib.suppress(anyio.RunFinishedError):
            token.backend_class.run_sync_soon(self._event.set, (), token.native_token)


@final
class WaitQueue:
    """The waiters of one budget tree, in arrival order. Use under the store's lock."""

    __slots__ = ("_blocked", "_largest", "_queue")

    def __init__(self) -> None:
        self._queue: deque[Waiter] = deque()
        self._blocked: dict[Ledger, int] = {}  # level -> waiters it holds back
        # level -> per-dimension upper bound of what queued waiters ask there
        self._largest: dict[Ledger, list[int]] = {}

    def __len__(self) -> int:
        return len(self._queue)

    def waiting_at(self, ledger: Ledger) -> int:
        """How many queued waiters *ledger* holds back (O(1), for statistics)."""
        return self._blocked.get(ledger, 0)

    def blocker(self, chain: Chain) -> Ledger | None:
        """The first level of *chain* a queued waiter is blocked at, if any: a newcomer
        must not jump the queue there."""
        if self._blocked:
            for ledger in chain.ledgers:
                if ledger in self._blocked:
                    return ledger
        return None

    def push(self, waiter: Waiter, blocked: Ledger) -> None:
        """Queue *waiter*, held back at level *blocked*."""
        self._queue.append(waiter)
        self._block(waiter, blocked)
        self._bound(waiter)

    def _bound(self, waiter: Waiter) -> None:
        for ledger, held in zip(waiter.chain.ledgers, waiter.chain.project(waiter.amounts)):
            largest = self._largest.get(ledger)
            if largest is None:
                self._largest[ledger] = list(held)
            else:
                largest[:] = map(max, largest, held)

    def fail_impossible(self) -> None:
        """Fail the waiters that spend has ruled out, after spend grew or limits fell."""
        if not self._queue or not any(
            ledger.rules_out(largest) for ledger, largest in self._largest.items()
        ):
            return
        failed = []
        for waiter in self._queue:
            if waiter.chain.impossible(waiter.amounts, use_headroom=waiter.use_headroom):
                waiter.denial = waiter.chain.check(waiter.amounts, use_headroom=waiter.use_headroom)
                failed.append(waiter)
        for waiter in failed:
            self.remove(waiter)
            waiter.wake()
        self._largest.clear()  # recompute the bound exactly from who is left
        for waiter in self._queue:
            self._bound(waiter)

    def remove(self, waiter: Waiter) -> None:
        """Take a waiter out (it gave up); the caller then calls `grant`."""
        try:
            self._queue.remove(waiter)
        except ValueError:
            return
        self._block(waiter, None)

    def _block(self, waiter: Waiter, ledger: Ledger | None) -> None:
        old = waiter.blocked
        if old is ledger:
            return
        if old is not None:
            count = self._blocked[old] - 1
            if count:
                self._blocked[old] = count
            else:
                del self._blocked[old]
        if ledger is not None:
            self._blocked[ledger] = self._blocked.get(ledger, 0) + 1
        waiter.blocked = ledger

    def grant(self) -> None:
        """Hand freed budget to the waiters that now fit, in order, and wake them.

        Stops as soon as the tree's root is held back: every waiter behind would need it.
        """
        queue = self._queue
        if not queue:
            return
        held_back: set[Ledger] = set()
        root = queue[0].chain.ledgers[-1]
        finished: list[Waiter] = []
        for waiter in queue:
            chain = waiter.chain
            blocked = next((ledger for ledger in chain.ledgers if ledger in held_back), None)
            if blocked is None:
                result = chain.reserve(waiter.amounts, use_headroom=waiter.use_headroom)
                if isinstance(result, Lease):
                    waiter.lease = result
                    finished.append(waiter)
                    continue
                if result.impossible:
                    waiter.denial = result
                    finished.append(waiter)
                    continue
                blocked = chain.ledgers[result.level]
                self._block(waiter, blocked)
            held_back.add(blocked)
            if root in held_back:
                break
        for waiter in finished:
            self.remove(waiter)
            waiter.wake()
