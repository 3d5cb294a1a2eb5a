"""`MemoryStore` specifics: every operation enters the store the same way, so work left
for "the next operation" (a reservation the garbage collector found while the store's
lock was held) is done by whichever operation comes next.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from aiobudget import TOKENS, Budget, Limit, MemoryStore, Reservation
from aiobudget.kernel import Denial
from aiobudget.stores.memory import MemoryAccount

from ..budget._support import drop

pytestmark = pytest.mark.anyio

Operation = Callable[[Budget, Reservation], Awaitable[object]]


async def _reserve_nowait(budget: Budget, _: Reservation) -> object:
    r = await budget.try_reserve(tokens=1)
    assert r is not None
    return await r.release()


async def _reserve_waiting(budget: Budget, _: Reservation) -> object:
    async with budget.reserve(tokens=1, timeout=math.inf) as r:
        r.record(tokens=0)
    return None


async def _commit(_: Budget, other: Reservation) -> object:
    other.record(tokens=1)  # a settle, not a refund
    return await other.commit()


async def _release(_: Budget, other: Reservation) -> object:
    return await other.release()


async def _extend(_: Budget, other: Reservation) -> object:
    await other.extend()
    return await other.release()


async def _charge(budget: Budget, _: Reservation) -> object:
    return await budget.charge(tokens=0)


async def _snapshot(budget: Budget, _: Reservation) -> object:
    return await budget.snapshot()


async def _reset(budget: Budget, _: Reservation) -> object:
    await budget.reset()
    return None


async def _set_limits(budget: Budget, _: Reservation) -> object:
    return await budget.set_limits({TOKENS: Limit(100)})


OPERATIONS: dict[str, Operation] = {
    "reserve": _reserve_nowait,
    "reserve with a timeout": _reserve_waiting,
    "commit": _commit,
    "release": _release,
    "extend": _extend,
    "charge": _charge,
    "snapshot": _snapshot,
    "reset": _reset,
    "set_limits": _set_limits,
}


def held_now(budget: Budget) -> int:
    """What the budget's ledger holds right now, read without an operation."""
    account = budget._account
    assert isinstance(account, MemoryAccount)
    return account._chain.leaf.reserved[0]


class TestEveryOperationTendsTheStoreFirst:
    @pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
    async def test_a_reservation_collected_under_the_lock_is_refunded_by_the_next(
        self, operation: Operation
    ) -> None:
        """A held reservation collected while the store's lock was held is refunded by the
        next operation, whatever it is."""
        store = MemoryStore()
        budget = Budget({TOKENS: 100}, store=store)
        other = await budget.try_reserve(tokens=5)
        assert other is not None
        refs: list[object] = [await budget.try_reserve(tokens=40)]
        with pytest.warns(ResourceWarning), store._lock:
            drop(refs)
        assert 45 == held_now(budget)  # nothing could be refunded under the lock
        await operation(budget, other)
        assert held_now(budget) in (0, 5)  # the orphan is gone; `other` may still hold
        if other.held:
            await other.release()
        assert 0 == held_now(budget)


class TestTickets:
    async def test_a_ticket_of_another_kind_is_refused(self) -> None:
        """collect and give_up take only tickets a MemoryStore handed out."""
        account = Budget({TOKENS: 10})._account
        assert isinstance(account, MemoryAccount)
        with pytest.raises(TypeError, match="not a ticket of a MemoryStore"):
            account.collect(object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not a ticket of a MemoryStore"):
            account.give_up(object())  # type: ignore[arg-type]

    async def test_no_ticket_when_the_answer_is_known(self) -> None:
        """reserve_or_queue answers at once when the reservation fits, is impossible, or
        may not wait; it hands out a ticket only when the reservation must wait."""
        budget = Budget({TOKENS: 10})
        account = budget._account
        assert isinstance(account, MemoryAccount)
        held, ticket = account.reserve_or_queue((6,), False, math.inf)
        assert ticket is None
        assert held is not None
        denied, ticket = account.reserve_or_queue((5,), False, None)  # may not wait
        assert (Denial, None) == (type(denied), ticket)
        denied, ticket = account.reserve_or_queue((11,), False, math.inf)  # impossible
        assert (Denial, None) == (type(denied), ticket)
        _, ticket = account.reserve_or_queue((5,), False, math.inf)
        assert ticket is not None
        account.give_up(ticket)
        account.release_nowait(held)
        assert 0 == held_now(budget)
