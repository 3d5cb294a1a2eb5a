"""The protocols of aiobudget, in one module.

- `Store` and `Account`: where counters live. A store opens an account per budget;
  `aiobudget.Budget` talks to nothing else. `MemoryStore` and `RedisStore` implement
  them; a conformance suite (`aiobudget.testing`) checks any implementation.
- `LocalAccount`: an account whose operations need no I/O offers them synchronously, so
  a reservation's exit never suspends (and so cannot be interrupted half-way).
- `BudgetGuard` and `TokenBudget`: the two small seed protocols framework authors code
  against; `UnitBudget`, `TokenPool` and `Budget.as_guard` / `Budget.as_token_budget`
  implement them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from ._seeds import TokenReservation
    from .kernel import Denial, Limit, Outcome, Snapshot

__all__ = [
    "Account",
    "BudgetGuard",
    "Held",
    "LocalAccount",
    "Store",
    "Ticket",
    "TokenBudget",
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
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        """Hold *amounts*, or say why not.

        With a *timeout* (seconds, ``math.inf`` allowed), wait first come first served
        for budget to be freed; return a `Denial` at once when waiting cannot help.
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

    def reserve_nowait(self, amounts: tuple[int, ...], use_headroom: bool = False) -> Held | Denial:
        """`Account.reserve` without waiting."""
        ...

    def reserve_or_queue(
        self, amounts: tuple[int, ...], use_headroom: bool, timeout: float | None
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
class Store(Protocol):
    """Where budgets' counters live. Injected into `aiobudget.Budget` (``store=``)."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
    ) -> Account:
        """The account of budget *name* (below *parent*), created with *limits* if new.

        Budgets with the same name (and parent) in one store share their counters. A
        store may check the limits lazily, at the first operation, and raises
        `LimitsMismatch` when they differ from the stored ones unless *update_limits*.
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
