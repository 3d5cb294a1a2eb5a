"""The seed protocols' reference implementations, and `Budget`'s adapters to them.

`UnitBudget` and `TokenPool` are small in-process pools for code written against
`BudgetGuard` / `TokenBudget`; `BudgetUnits` and `BudgetTokens` (from `Budget.as_guard`
and `Budget.as_token_budget`) put the same protocols over any `Budget`, in any store.
"""

from __future__ import annotations

import threading
import warnings
from collections import defaultdict
from typing import TYPE_CHECKING, final

from ._errors import InvalidAmount, UnknownDimension
from ._units import INPUT_TOKENS, OUTPUT_TOKENS, TOKENS
from .kernel import MAX_AMOUNT, check_amount
from .protocols import TokenReservation

if TYPE_CHECKING:
    from ._budget import Budget
    from ._reservation import Reservation

__all__ = ["BudgetTokens", "BudgetUnits", "TokenPool", "UnitBudget"]


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


def _usage_counts(prompt_tokens: int, completion_tokens: int) -> int:
    """Prompt plus completion tokens, validated; the sum saturates at ``2**63 - 1``."""
    check_amount(prompt_tokens, "prompt_tokens")
    check_amount(completion_tokens, "completion_tokens")
    return min(prompt_tokens + completion_tokens, MAX_AMOUNT)


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
        return TokenReservation(self, estimate, _PoolHold(self, estimate))

    async def record_usage(
        self, reservation: TokenReservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Reconcile *reservation* with the tokens the call really used."""
        actual = _usage_counts(prompt_tokens, completion_tokens)
        reservation.claim(self)
        with self._lock:
            self._consumed = min(self._consumed + actual, MAX_AMOUNT)
            self._available = max(0, self._available + reservation.estimate - actual)

    async def tokens_consumed(self) -> int:
        """Prompt plus completion tokens recorded since construction (at most
        ``2**63 - 1``)."""
        return self._consumed

    def _give_back(self, estimate: int) -> None:
        with self._lock:
            self._available = min(self._capacity, self._available + estimate)


@final
class _PoolHold:
    """The tokens of one `TokenPool` reservation."""

    __slots__ = ("_estimate", "_pool")

    def __init__(self, pool: TokenPool, estimate: int) -> None:
        self._pool = pool
        self._estimate = estimate

    async def refund(self) -> None:
        self._pool._give_back(self._estimate)

    def abandon(self) -> None:
        # Give back first: the warning may be an error (-W error).
        self._pool._give_back(self._estimate)
        warnings.warn(
            f"a TokenReservation of {self._estimate} tokens from {self._pool!r} was "
            "garbage-collected before record_usage() or cancel(); it was refunded. "
            "Use 'async with reservation:' or await reservation.cancel().",
            ResourceWarning,
            stacklevel=1,
        )


@final
class BudgetUnits:
    """A `Budget` dimension as a `BudgetGuard` (from ``budget.as_guard(dim)``).

    ``try_reserve(cost)`` holds a reservation of *cost* on the dimension;
    ``release(cost)`` gives back one held reservation of that cost.
    """

    __slots__ = ("_budget", "_dim", "_lock", "_reservations")

    def __init__(self, budget: Budget, dim: str) -> None:
        if dim not in budget.dims:
            raise UnknownDimension(dim, known=budget.dims, budget=budget.name)
        self._budget = budget
        self._dim = dim
        self._reservations: defaultdict[int, list[Reservation]] = defaultdict(list)
        self._lock = threading.Lock()

    async def try_reserve(self, cost: int) -> bool:
        """Hold *cost* units of the dimension, if they fit."""
        reservation = await self._budget.try_reserve({self._dim: cost})
        if reservation is None:
            return False
        with self._lock:
            self._reservations[cost].append(reservation)
        return True

    async def release(self, cost: int) -> None:
        """Give back a reservation of *cost* made by `try_reserve`."""
        check_amount(cost, "cost")
        with self._lock:
            reservations = self._reservations.get(cost)
            if not reservations:
                raise InvalidAmount(
                    f"no reservation of {cost} {self._dim} is held by this guard", value=cost
                )
            reservation = reservations.pop()
        await reservation.release()


@final
class BudgetTokens:
    """A `Budget` as a `TokenBudget` (from ``budget.as_token_budget()``).

    Estimates are reserved on ``tokens``; recorded usage is settled as a `Usage`, so a
    budget that also counts ``input_tokens``/``output_tokens`` gets those too. Each
    `TokenReservation` holds its `Reservation` itself: one dropped unused is refunded by
    that reservation's finalizer, with a `ResourceWarning`.
    """

    __slots__ = ("_budget", "_consumed", "_lock")

    def __init__(self, budget: Budget) -> None:
        if TOKENS not in budget.dims:
            raise UnknownDimension(TOKENS, known=budget.dims, budget=budget.name)
        self._budget = budget
        self._consumed = 0
        self._lock = threading.Lock()

    async def try_reserve_tokens(self, estimate: int) -> TokenReservation | None:
        """Reserve *estimate* tokens, or ``None`` when they do not fit."""
        reservation = await self._budget.try_reserve({TOKENS: estimate})
        if reservation is None:
            return None
        return TokenReservation(self, estimate, _BudgetHold(reservation))

    async def record_usage(
        self, reservation: TokenReservation, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Settle *reservation* with the tokens the call really used."""
        actual = _usage_counts(prompt_tokens, completion_tokens)
        hold = reservation.claim(self)
        assert isinstance(hold, _BudgetHold)  # made by this adapter: claim checked it
        dims = self._budget.dims
        usage = {TOKENS: actual}
        if INPUT_TOKENS in dims:
            usage[INPUT_TOKENS] = prompt_tokens
        if OUTPUT_TOKENS in dims:
            usage[OUTPUT_TOKENS] = completion_tokens
        hold.reservation.record(usage)
        await hold.reservation.commit()
        with self._lock:
            self._consumed = min(self._consumed + actual, MAX_AMOUNT)

    async def tokens_consumed(self) -> int:
        """Prompt plus completion tokens recorded through this adapter (at most
        ``2**63 - 1``)."""
        return self._consumed


@final
class _BudgetHold:
    """The `Reservation` behind one `BudgetTokens` reservation."""

    __slots__ = ("reservation",)

    def __init__(self, reservation: Reservation) -> None:
        self.reservation = reservation

    async def refund(self) -> None:
        await self.reservation.release()

    def abandon(self) -> None:
        # The Reservation is collected with this hold, and its finalizer refunds it and
        # warns: one ResourceWarning for one dropped handle.
        pass
