"""Helpers the web integration tests share."""

from __future__ import annotations

from typing import Final

from aiobudget import Budget

PROBLEM_JSON: Final = "application/problem+json"


async def state(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    """``(spent, reserved)`` of *budget*."""
    snapshot = await budget.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)
