"""The seed protocols' reference implementations, and `Budget`'s adapters to them.

`UnitBudget` and `TokenPool` are small in-process pools for code written against
`BudgetGuard` / `TokenBudget`; `BudgetUnits` and `BudgetTokens` (from `Budget.as_guard`
and `Budget.as_token_budget`) put the same protocols over any `Budget`, in any store.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol, final

from ._errors import InvalidAmount, ReservationClosed, UnknownDimension
from ._units import INPUT_TOKENS, OUTPUT_TOKENS, TOKENS
from .kernel import check_amount

if TYPE_CHECKING:
    from types import TracebackType

    from ._budget import Budget
    from ._reservation import Reservation

__all__ = ["BudgetTokens", "BudgetUnits", "TokenPool", "TokenReservation", "UnitBudget"]


@final
class UnitBudget:
    """A pool of ``capacity`` interchangeable units (a `BudgetGuard`), in process.

    Think of a sack of tokens: `try_reserve` takes some if they are all there, `release`
    puts them back (never above ``capacity``), `refill` fills the sack. Safe from any
    task or thread.
    """

    __slots__ = ("_available", "_capacity", "_lock")

    def __init__(self, capacity: int) -> None:
        self._capacity = check_amount(capacity, "capacity")
        self._available = self._capacity
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<UnitBudget {self._available}/{self._capacity}>"

    @property
    def capacity(self) -> int:
        """The size of the pool."""
        return self._capacity

    @property
    def available(self) -> int:
        """Units that can be taken now."""
        return self._available

    def utilization(self) -> float:
        """The share of the pool in use, in [0, 1]; 0 for an empty pool."""
        if self._capacity == 0:
            return 0.0
        return (self._capacity - self._available) / self._capacity

    def refill(self) -> None:
        """Make the whole capacity available again."""
        with self._lock:
            self._available = self._capacity

    async def try_reserve(self, cost: int) -> bool:
        """Take *cost* units if they are all available."""
        check_amount(cost, "cost")
        with self._lock:
            if cost > self._available:
                return False
            self._available -= cost
            return True

    async def release(self, cost: int) -> None:
        """Give *cost* units back; ``available`` never rises above ``capacity``."""
        check_amount(cost, "cost")
        with self._lock:
            self._available = min(self._capacity, self._available + cost)


class _Reconciler(Protocol):
    async def _refund(self, reservation: TokenReservation) -> None: ...


@final
class TokenReservation:
    """Tokens held for one call, from `TokenBudget.try_reserve_tokens`.

    An async context manager: leaving it (or ``await reservation.cancel()``) before
    ``record_usage`` refunds the whole ``estimate``, exactly once.
    """

    __slots__ = ("_lock", "_owner", "_state", "estimate")

    def __init__(self, owner: _Reconciler, estimate: int) -> None:
        self._owner = owner
        self.estimate = estimate
        self._state = "held"  # -> "recorded" or "cancelled"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TokenReservation estimate={self.estimate} {self._state}>"

    @property
    def open(self) -> bool:
        """True until usage is recorded or the reservation is cancelled."""
        return self._state == "held"

    def _close(self, state: str) -> bool:
        with self._lock:
            if self._state != "held":
                return False
            self._state = state
            return True

    async def cancel(self) -> None:
        """Refund the whole estimate, unless usage was recorded already (then nothing)."""
        if self._close("cancelled"):
            await self._owner._refund(self)

    async def __aenter__(self) -> TokenReservation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()


def _usage_counts(prompt_tokens: int, completion_tokens: int) -> int:
    check_amount(prompt_tokens, "prompt_tokens")
    check_amount(completion_tokens, "completion_tokens")
    return prompt_tokens + completion_tokens


@final
class TokenPool:
    """A pool of LLM tokens (a `TokenBudget`), in process.

    Reserve an estimate; `record_usage` reconciles that reservation alone: usage below
    the estimate returns the difference, usage above it takes the overage from what is
    available (floored at 0).
    """

    __slots__ = ("_available", "_capacity", "_consumed", "_lock")

    def __init__(self, capacity: int) -> None:
        self._capacity = check_amount(capacity, "capacity")
        self._available = self._capacity
        self._consumed = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TokenPool {self._available}/{self._capacity}>"

    @property
    def capacity(self) -> int:
        """The size of the pool."""
        return self._capacity

    @property
    def available(self) -> int:
        """Tokens that can be reserved now."""
        return self._available

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None:
        """Reserve *estimate* tokens, or ``None`` when they are not available."""
        check_amount(estimate, "estimate")
        with self._lock:
            if estimate > self._available:
                return None
            self._available -= estimate
        return TokenReservation(self, estimate)

    async def record_usage(
        self, reservation: TokenReservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Reconcile *reservation* with the tokens the call really used."""
        actual = _usage_counts(prompt_tokens, completion_tokens)
        if reservation._owner is not self:
            raise ReservationClosed("this reservation belongs to another token budget")
        if not reservation._close("recorded"):
            raise ReservationClosed("usage was already recorded, or the reservation cancelled")
        with self._lock:
            self._consumed += actual
            self._available = max(0, self._available + reservation.estimate - actual)

    async def tokens_consumed(self) -> int:
        """Prompt plus completion tokens recorded since construction."""
        return self._consumed

    async def _refund(self, reservation: TokenReservation) -> None:
        with self._lock:
            self._available = min(self._capacity, self._available + reservation.estimate)


@final
class BudgetUnits:
    """A `Budget` dimension as a `BudgetGuard` (from ``budget.as_guard(dim)``).

    ``try_reserve(cost)`` holds a reservation of *cost* on the dimension;
    ``release(cost)`` gives back one held reservation of that cost.
    """

    __slots__ = ("_budget", "_dim", "_held", "_lock")

    def __init__(self, budget: Budget, dim: str) -> None:
        if dim not in budget.dims:
            raise UnknownDimension(dim, known=budget.dims, budget=budget.name)
        self._budget = budget
        self._dim = dim
        self._held: defaultdict[int, list[Reservation]] = defaultdict(list)
        self._lock = threading.Lock()

    async def try_reserve(self, cost: int) -> bool:
        """Hold *cost* units of the dimension, if they fit."""
        reservation = await self._budget.try_reserve({self._dim: cost})
        if reservation is None:
            return False
        with self._lock:
            self._held[cost].append(reservation)
        return True

    async def release(self, cost: int) -> None:
        """Give back a reservation of *cost* made by `try_reserve`."""
        check_amount(cost, "cost")
        with self._lock:
            held = self._held.get(cost)
            if not held:
                raise InvalidAmount(
                    f"no reservation of {cost} {self._dim} is held by this guard", value=cost
                )
            reservation = held.pop()
        await reservation.release()


@final
class BudgetTokens:
    """A `Budget` as a `TokenBudget` (from ``budget.as_token_budget()``).

    Estimates are reserved on ``tokens``; recorded usage is settled as a `Usage`, so a
    budget that also counts ``input_tokens``/``output_tokens`` gets those too.
    """

    __slots__ = ("_budget", "_consumed", "_held", "_lock")

    def __init__(self, budget: Budget) -> None:
        if TOKENS not in budget.dims:
            raise UnknownDimension(TOKENS, known=budget.dims, budget=budget.name)
        self._budget = budget
        self._consumed = 0
        self._held: dict[TokenReservation, Reservation] = {}
        self._lock = threading.Lock()

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None:
        """Reserve *estimate* tokens, or ``None`` when they do not fit."""
        reservation = await self._budget.try_reserve({TOKENS: estimate})
        if reservation is None:
            return None
        token = TokenReservation(self, estimate)
        with self._lock:
            self._held[token] = reservation
        return token

    async def record_usage(
        self, reservation: TokenReservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Settle *reservation* with the tokens the call really used."""
        actual = _usage_counts(prompt_tokens, completion_tokens)
        if reservation._owner is not self or not reservation._close("recorded"):
            raise ReservationClosed("usage was already recorded, or the reservation cancelled")
        with self._lock:
            held = self._held.pop(reservation)
            self._consumed += actual
        dims = self._budget.dims
        usage = {TOKENS: actual}
        if INPUT_TOKENS in dims:
            usage[INPUT_TOKENS] = prompt_tokens
        if OUTPUT_TOKENS in dims:
            usage[OUTPUT_TOKENS] = completion_tokens
        held.record(usage)
        await held.commit()

    async def tokens_consumed(self) -> int:
        """Prompt plus completion tokens recorded through this adapter."""
        return self._consumed

    async def _refund(self, reservation: TokenReservation) -> None:
        with self._lock:
            held = self._held.pop(reservation, None)
        if held is not None:
            await held.release()
