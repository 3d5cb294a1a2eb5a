"""The protocols of aiobudget, in one module.

- `Store` and `Account`: where counters live. A store opens an account per budget;
  `aiobudget.Budget` talks to nothing else. `MemoryStore` and `RedisStore` implement
  them; a conformance suite (`aiobudget.testing`) checks any implementation.
- `LocalAccount`: an account whose operations need no I/O offers them synchronously, so
  a reservation's exit never suspends (and so cannot be interrupted half-way).
- `Repairable`: an account whose stored record can be damaged from outside (Redis), and
  repaired by ``Budget.reset(force=True)``.
- `BudgetGuard` and `TokenBudget`: the two small seed protocols framework authors code
  against; `UnitBudget`, `TokenPool` and `Budget.as_guard` / `Budget.as_token_budget`
  implement them. `TokenReservation`, what `TokenBudget` hands out, lives here too, with
  `TokenHold`, the seam through which it gives tokens back to the budget that made it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final, Protocol, final, runtime_checkable

from ._errors import ReservationClosed
from .kernel import check_amount

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping
    from types import TracebackType

    from ._period import Period
    from .kernel import Denial, Limit, Outcome, Snapshot

__all__ = [
    "Account",
    "BudgetGuard",
    "Held",
    "LocalAccount",
    "Repairable",
    "Store",
    "Ticket",
    "TokenBudget",
    "TokenHold",
    "TokenReservation",
]


@runtime_checkable
class Held(Protocol):
    """A live reservation as a store hands it out: opaque but for its outcome."""

    @property
    def outcome(self) -> Outcome:
        """The verdict (and crossings) right after the reservation was made."""
        ...


@runtime_checkable
class Account(Protocol):
    """One budget (and its ancestors) inside a store.

    Amounts are tuples in the order of `dims`, built and validated by `vector`. Every
    method is atomic over the whole chain of budgets.
    """

    @property
    def name(self) -> str | None:
        """The budget's name."""
        ...

    @property
    def dims(self) -> tuple[str, ...]:
        """The budget's dimensions, in declaration order."""
        ...

    def vector(self, amounts: Mapping[str, object]) -> tuple[int, ...]:
        """Validate amounts by dimension name and order them like `dims`."""
        ...

    async def reserve(
        self,
        amounts: tuple[int, ...],
        *,
        use_headroom: bool,
        timeout: float | None,
        ttl: float | None = None,
    ) -> Held | Denial:
        """Hold *amounts*, or say why not.

        With a *timeout* (seconds, ``math.inf`` allowed), wait first come first served
        for budget to be freed; return a `Denial` at once when waiting cannot help.
        With a *ttl* (seconds), the store gives the reservation back by itself that long
        after granting it unless it was closed (or extended) before; a later settle or
        release raises `ReservationClosed`. `aiobudget.Budget` passes *ttl* only when the
        caller asked for one, so a store without expiry may leave the keyword out.
        """
        ...

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """Release *held* exactly and add *actual* to ``spent``; never refused.

        Raises `ReservationClosed` for a reservation already settled, released or expired.
        """
        ...

    async def release(self, held: Held) -> Outcome:
        """Give *held* back untouched. `ReservationClosed` as for `settle`."""
        ...

    async def extend(self, held: Held, ttl: float | None) -> None:
        """Keep *held* alive for *ttl* more seconds (stores whose reservations expire)."""
        ...

    def abandon(self, held: Held) -> None:
        """Called without awaiting when *held* is garbage-collected while still open:
        give it back as soon as possible (now, or at the next operation, or by expiry)."""
        ...

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        """Add *amounts* to ``spent``; with *strict*, raise `BudgetExceeded` instead of
        passing a limit."""
        ...

    async def snapshot(self) -> Snapshot:
        """A consistent copy of the budget's own counters."""
        ...

    async def reset(self) -> Outcome:
        """Set ``spent`` to 0; live reservations stay counted."""
        ...

    async def set_limits(self, limits: Mapping[str, Limit]) -> Outcome:
        """Replace the limits of the budget's dimensions (same names, same order)."""
        ...


@runtime_checkable
class Ticket(Protocol):
    """A place in a `LocalAccount`'s wait queue."""

    def wait(self) -> Awaitable[object]:
        """Something to await until the account decides (or the timeout passes)."""
        ...


@runtime_checkable
class LocalAccount(Account, Protocol):
    """An `Account` that needs no I/O and so also works without awaiting."""

    def reserve_nowait(
        self, amounts: tuple[int, ...], use_headroom: bool = False, *, ttl: float | None = None
    ) -> Held | Denial:
        """`Account.reserve` without waiting."""
        ...

    def reserve_or_queue(
        self,
        amounts: tuple[int, ...],
        use_headroom: bool,
        timeout: float | None,
        ttl: float | None = None,
    ) -> tuple[Held | Denial, None] | tuple[None, Ticket]:
        """`Account.reserve` up to the wait, synchronously: ``(answer, None)``, or
        ``(None, ticket)`` when it must wait. Then ``await ticket.wait()`` and ask
        `collect` for the answer; if that await raises (cancellation), call `give_up`
        instead. (The whole wait is one await in the caller's own frame.)"""
        ...

    def collect(self, ticket: Ticket) -> Held | Denial:
        """The answer for *ticket* once its wait is over."""
        ...

    def give_up(self, ticket: Ticket) -> None:
        """Leave the queue after a wait that raised, passing on anything granted."""
        ...

    def settle_nowait(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        """`Account.settle`, synchronously."""
        ...

    def release_nowait(self, held: Held) -> Outcome:
        """`Account.release`, synchronously."""
        ...


@runtime_checkable
class Repairable(Account, Protocol):
    """An `Account` whose stored record can be damaged from outside (keys of a Redis
    budget deleted or evicted), and so can be made whole again."""

    async def repair(self) -> Outcome:
        """A forced `reset`: ``spent`` goes to 0 and the budget's record is rebuilt from
        what the store still holds (reserved recounted from the live reservations; a lost
        record created again with the budget's limits)."""
        ...


@runtime_checkable
class Store(Protocol):
    """Where budgets' counters live. Injected into `aiobudget.Budget` (``store=``)."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> Account:
        """The account of budget *name* (below *parent*), created with *limits* if new.

        Budgets with the same name (and parent) in one store share their counters. A
        store may check the limits lazily, at the first operation, and raises
        `LimitsMismatch` when they differ from the stored ones unless *update_limits*.
        *period* is kept with the limits and checked the same way: at each of its
        boundaries (by the store's clock) ``spent`` goes to 0, inside the first
        operation at or after it. `aiobudget.Budget` passes *period* only when it has
        one, so a store without periods need not take the argument.
        """
        ...


@runtime_checkable
class BudgetGuard(Protocol):
    """A pool of interchangeable units: take some if they are there, give them back."""

    async def try_reserve(self, cost: int) -> bool:
        """Take *cost* units if available; ``False`` (and nothing taken) otherwise."""
        ...

    async def release(self, cost: int) -> None:
        """Give *cost* units back."""
        ...


@runtime_checkable
class TokenBudget(Protocol):
    """LLM tokens: reserve an estimate, then reconcile it with the reported usage."""

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None:
        """Reserve *estimate* tokens, or ``None`` when they are not available."""
        ...

    async def record_usage(
        self, reservation: TokenReservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Reconcile *reservation* with what the call really used."""
        ...

    async def tokens_consumed(self) -> int:
        """Prompt plus completion tokens recorded since construction."""
        ...


class TokenHold(Protocol):
    """The tokens of one `TokenReservation`, as the `TokenBudget` that made it holds them.

    A `TokenBudget` implementation wraps one in each `TokenReservation` it returns; the
    reservation calls one of these methods at most once, and neither after
    `TokenReservation.claim`.
    """

    async def refund(self) -> None:
        """Give the whole estimate back: the reservation was left or cancelled unused."""
        ...

    def abandon(self) -> None:
        """Give the whole estimate back without awaiting, and warn with a
        `ResourceWarning`: the reservation was garbage-collected while open."""
        ...


_OPEN: Final = "open"


@final
class TokenReservation:
    """Tokens held for one call, from `TokenBudget.try_reserve_tokens`.

    An async context manager: leaving it (or ``await reservation.cancel()``) before
    ``record_usage`` refunds the whole ``estimate``, exactly once. A reservation dropped
    without either is refunded when it is garbage-collected, with a `ResourceWarning`.

    `TokenBudget` implementations build it as ``TokenReservation(self, estimate, hold)``
    around a `TokenHold`, and take the hold back in ``record_usage`` with `claim`.
    """

    __slots__ = ("_hold", "_issuer", "_lock", "_state", "estimate")

    def __init__(self, issuer: object, estimate: int, hold: TokenHold) -> None:
        self.estimate = check_amount(estimate, "estimate")
        self._issuer = issuer
        self._hold = hold
        self._state = _OPEN  # -> "recorded", "cancelled" or "abandoned"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TokenReservation estimate={self.estimate} {self._state}>"

    @property
    def open(self) -> bool:
        """True until usage is recorded or the reservation is cancelled."""
        return self._state == _OPEN

    def _close(self, state: str) -> bool:
        with self._lock:
            if self._state != _OPEN:
                return False
            self._state = state
            return True

    def claim(self, issuer: object) -> TokenHold:
        """Close the reservation for *issuer*'s ``record_usage`` and return its hold.

        Raises `ReservationClosed`, changing nothing, when *issuer* did not make it, or
        when usage was recorded already or the reservation cancelled.
        """
        if issuer is not self._issuer:
            raise ReservationClosed(
                "this reservation belongs to another token budget: record its usage there"
            )
        if not self._close("recorded"):
            why = "its usage was recorded" if self._state == "recorded" else "it was cancelled"
            raise ReservationClosed(f"this reservation is closed: {why} already")
        return self._hold

    async def cancel(self) -> None:
        """Refund the whole estimate, unless usage was recorded already (then nothing)."""
        if self._close("cancelled"):
            await self._hold.refund()

    async def __aenter__(self) -> TokenReservation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()

    def __del__(self) -> None:
        # Nobody else can reach this object any more, so no lock is needed (or taken:
        # a finalizer may run in the middle of any code of this thread).
        if getattr(self, "_state", None) == _OPEN:  # absent if __init__ raised
            self._state = "abandoned"
            self._hold.abandon()
