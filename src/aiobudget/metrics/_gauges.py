"""The gauges read from snapshots: names, help, labels, and their samples."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from ..kernel import Status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..kernel import Snapshot

__all__ = ["GAUGES", "STATUS_VALUES", "gauge_samples"]

STATUS_VALUES: Final = {Status.CONTINUE: 0, Status.WARN: 1, Status.EXHAUSTED: 2}

_PER_DIM: Final = ("budget", "dim")

GAUGES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "aiobudget_limit": ("The hard limit.", _PER_DIM),
    "aiobudget_warn": ("The warn level (only dimensions that have one).", _PER_DIM),
    "aiobudget_spent": ("What was really used.", _PER_DIM),
    "aiobudget_reserved": ("What live reservations hold.", _PER_DIM),
    "aiobudget_remaining": ("limit - spent - reserved, floored at 0.", _PER_DIM),
    "aiobudget_status": (
        "The budget's verdict: 0 continue, 1 warn, 2 exhausted; dim names the dimension "
        "that caused it (empty for continue).",
        _PER_DIM,
    ),
    "aiobudget_held": (
        "Live reservations holding budget here (a child's count at its parents too).",
        ("budget",),
    ),
    "aiobudget_waiting": ("Reservations queued, held back by this budget.", ("budget",)),
    "aiobudget_period_start_timestamp_seconds": (
        "When the budget's current period began (budgets with a period only).",
        ("budget",),
    ),
    "aiobudget_period_reset_timestamp_seconds": (
        "When the budget's current period ends and spent goes to 0 (budgets with a period only).",
        ("budget",),
    ),
}
"""Gauge name -> (help, label names)."""


def gauge_samples(budget: str, snap: Snapshot) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """``(gauge name, label values, value)`` for every gauge *snap* has a value for."""
    for dim, limit in snap.limits.items():
        labels = (budget, dim)
        yield "aiobudget_limit", labels, limit.limit
        if limit.warn is not None:
            yield "aiobudget_warn", labels, limit.warn
        yield "aiobudget_spent", labels, snap.spent[dim]
        yield "aiobudget_reserved", labels, snap.reserved[dim]
        yield "aiobudget_remaining", labels, snap.remaining[dim]
    verdict = snap.verdict
    yield "aiobudget_status", (budget, verdict.dim or ""), STATUS_VALUES[verdict.status]
    yield "aiobudget_held", (budget,), snap.held
    yield "aiobudget_waiting", (budget,), snap.waiting
    # Budgets with a period carry these (None without one); older snapshots lack them.
    start = getattr(snap, "period_start", None)
    if isinstance(start, datetime):
        yield "aiobudget_period_start_timestamp_seconds", (budget,), start.timestamp()
    resets = getattr(snap, "resets_at", None)
    if isinstance(resets, datetime):
        yield "aiobudget_period_reset_timestamp_seconds", (budget,), resets.timestamp()
