"""Conformance checks: the statistics a snapshot carries, ``held`` and ``waiting``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from .._budget import Budget
from ._harness import (
    GRANTED,
    WAIT,
    StoreFactory,
    Waiter,
    equal,
    expect_refused,
    fail,
    held_reservation,
    new_store,
    register,
    unique_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..kernel import Snapshot

_POLLS = 200  # 10 ms apart: a server-backed store may take a moment to queue a waiter


async def _counts(*budgets: Budget) -> list[tuple[int, int]]:
    return [((snap := await budget.snapshot()).held, snap.waiting) for budget in budgets]


async def _eventually(budget: Budget, what: str, wanted: Callable[[Snapshot], bool]) -> None:
    """Poll *budget*'s snapshot until *wanted* holds (at once for an in-memory store)."""
    for _ in range(_POLLS):
        snap = await budget.snapshot()
        if wanted(snap):
            return
        await anyio.sleep(0.01)
    fail(f"{what}: the snapshot still has held {snap.held} and waiting {snap.waiting}")


@register
async def snapshot_counts_held_reservations(make_store: StoreFactory) -> None:
    """A snapshot's ``held`` counts the live reservations holding budget there (a child's
    at its parent too), and settles, releases, denials and charges keep it exact.
    """
    store = await new_store(make_store)
    root = Budget({"tokens": 100}, name=unique_name("held"), store=store)
    child = root.child({"tokens": 50}, name="child")
    equal(
        "held and waiting of new budgets (root, child)",
        [(0, 0), (0, 0)],
        await _counts(root, child),
    )
    own = await held_reservation(root, "a reservation on the root", tokens=10)
    first = await held_reservation(child, "a reservation on the child", tokens=5)
    second = await held_reservation(child, "another reservation on the child", tokens=5)
    equal("held with 1 root and 2 child reservations", [(3, 0), (2, 0)], await _counts(root, child))
    await expect_refused(child, "a child reservation that does not fit", tokens=60)
    await child.charge(tokens=1)
    equal("held after a denial and a charge", [(3, 0), (2, 0)], await _counts(root, child))
    first.record(tokens=2)
    await first.commit()
    await second.release()
    equal("held after a settle and a release", [(1, 0), (0, 0)], await _counts(root, child))
    await own.release()
    equal("held once everything is closed", [(0, 0), (0, 0)], await _counts(root, child))


@register
async def snapshot_counts_waiting_reservations(make_store: StoreFactory) -> None:
    """A snapshot's ``waiting`` counts the reservations queued at that budget (a child's
    waiter counts where it is held back), and drops as they are granted.
    """
    store = await new_store(make_store)
    root = Budget({"tokens": 10}, name=unique_name("waiting"), store=store)
    child = root.child({"tokens": 10}, name="child")
    holder = await held_reservation(root, "the holder", tokens=10)
    on_root = Waiter(root, {"tokens": 5}, timeout=WAIT, hold=True)
    on_child = Waiter(child, {"tokens": 5}, timeout=WAIT, hold=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(on_root.run)
        await _eventually(root, "a reservation waits on the root", lambda s: s.waiting == 1)
        tg.start_soon(on_child.run)
        # The child has room; its parent, the root, holds the reservation back.
        await _eventually(root, "a child's reservation waits too", lambda s: s.waiting == 2)
        equal("held and waiting of the child", [(0, 0)], await _counts(child))
        await holder.release()
        await _eventually(
            root, "both waiters were granted", lambda s: (s.held, s.waiting) == (2, 0)
        )
        equal("held and waiting of the child, granted", [(1, 0)], await _counts(child))
        tg.cancel_scope.cancel()
    if (on_root.outcome, on_child.outcome) != (GRANTED, GRANTED):
        fail(f"once the budget was free, the waiters were {on_root} and {on_child}")
    equal("held and waiting once the waiters left", [(0, 0), (0, 0)], await _counts(root, child))
