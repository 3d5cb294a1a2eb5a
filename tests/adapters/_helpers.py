"""What the adapter tests share."""

from __future__ import annotations

from aiobudget import Budget


async def state(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    """``(spent, reserved)`` of *budget*."""
    snapshot = await budget.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)
