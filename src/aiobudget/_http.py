"""What the web integrations share, free of any framework: option checks, the RFC 9457
problem a denial answers, its headers, and settling a request that recorded nothing.

`aiobudget.fastapi` and `aiobudget.aiohttp` wrap these in their own request, response
and exception types; this module imports neither framework, so each works without the
other installed.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from ._budget import Budget
from ._period import rfc3339
from .kernel import check_amount, check_dim, check_flag

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ._errors import BudgetExhausted
    from ._reservation import OnUnrecorded, Reservation

PROBLEM_TYPE: Final = "urn:aiobudget:budget-exhausted"
"""The ``type`` of the problem a denial answers (RFC 9457)."""
PROBLEM_JSON: Final = "application/problem+json"
REMAINING_HEADER: Final = "X-Budget-Remaining-"
"""Prefix of the per-dimension remaining-budget headers: ``X-Budget-Remaining-tokens``."""

RequestT = TypeVar("RequestT")


def check_status(status_code: int) -> None:
    """Refuse a *status_code* that is not an HTTP error status."""
    if type(status_code) is not int or not 400 <= status_code <= 599:
        raise ValueError(f"status_code must be an HTTP error status (400-599), not {status_code!r}")


@final
@dataclass(frozen=True, slots=True)
class GuardOptions:
    """What a web guard (FastAPI dependency, aiohttp middleware) was built with, checked."""

    resolve: Any
    status_code: int
    timeout: float | None
    headers: bool
    retry_after: Any
    on_unrecorded: OnUnrecorded
    amounts: dict[str, int]


def check_options(
    resolve: object,
    *,
    status_code: int,
    timeout: float | None,
    headers: bool,
    retry_after: object,
    on_unrecorded: OnUnrecorded,
    amounts: Mapping[str, int],
) -> GuardOptions:
    """A guard's options, refused up front (when the app is built, not at the first
    request) if they are wrong."""
    if not callable(resolve):
        raise TypeError(f"resolve must be a callable of the request, not {resolve!r}")
    check_status(status_code)
    check_flag(headers, "headers")
    if timeout is not None and not (
        isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout >= 0
    ):
        raise ValueError(f"timeout must be a non-negative number of seconds, not {timeout!r}")
    if on_unrecorded not in ("charge", "refund", "release"):
        raise ValueError(
            f"on_unrecorded must be 'charge', 'refund' or 'release', not {on_unrecorded!r}"
        )
    if retry_after is not None and not callable(retry_after):
        retry_seconds(retry_after)
    checked = {check_dim(dim): check_amount(value, dim) for dim, value in amounts.items()}
    return GuardOptions(resolve, status_code, timeout, headers, retry_after, on_unrecorded, checked)


async def resolve_budget(
    resolve: Callable[[RequestT], Budget | Awaitable[Budget]],
    request: RequestT,
    *,
    refuse: str,
) -> Budget:
    """The budget *resolve* finds for *request* (sync or async); *refuse* names the
    framework's exception for refusing a request, in the error for a wrong result."""
    found = resolve(request)
    if inspect.isawaitable(found):
        found = await found
    if not isinstance(found, Budget):
        raise TypeError(
            f"resolve must return the request's Budget, not {found!r}; "
            f"raise {refuse} to refuse a request"
        )
    return found


def retry_seconds(value: object) -> str:
    """*value* seconds as a ``Retry-After`` value: whole seconds, rounded up."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"retry_after must be a non-negative number of seconds, not {value!r}")
    return str(math.ceil(value))


def until_reset(exc: BudgetExhausted, budget: Budget | None = None) -> str | None:
    """The seconds until the level that denied *exc* resets (its period's window ends),
    as a ``Retry-After`` value, by *budget*'s store clock; None without a period."""
    if exc.resets_at is None:
        return None
    clock = getattr(budget.store, "clock", None) if budget is not None else None
    now = clock() if callable(clock) else time.time()
    return retry_seconds(max(0.0, exc.resets_at.timestamp() - now))


async def retry_after_value(
    retry_after: float | Callable[[RequestT], float | Awaitable[float | None] | None] | None,
    request: RequestT,
    exc: BudgetExhausted | None = None,
    budget: Budget | None = None,
) -> str | None:
    """The ``Retry-After`` of the denial *exc* of *request*, or None when it is not known:
    as configured, or else the time until the budget resets, for a budget with a period
    (a configured callable that returns None sends none)."""
    if retry_after is None:
        return None if exc is None else until_reset(exc, budget)
    if not callable(retry_after):
        return retry_seconds(retry_after)
    seconds = retry_after(request)
    if inspect.isawaitable(seconds):
        seconds = await seconds
    return None if seconds is None else retry_seconds(seconds)


def remaining_headers(remaining: Mapping[str, int]) -> dict[str, str]:
    """``X-Budget-Remaining-<dim>`` for each dimension of *remaining*."""
    return {REMAINING_HEADER + dim: str(value) for dim, value in remaining.items()}


def denial(
    exc: BudgetExhausted, *, status_code: int, retry_after: str | None, headers: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """The problem (the JSON body) and the headers that answer the denial *exc*."""
    problem = {
        "type": PROBLEM_TYPE,
        "title": "Budget exhausted",
        "status": status_code,
        "detail": str(exc),
        "dim": exc.dim,
        "requested": exc.requested,
        "remaining": exc.remaining,
        "budget": exc.budget,
    }
    if exc.resets_at is not None:
        problem["resets_at"] = rfc3339(exc.resets_at)
    fields = remaining_headers({exc.dim: exc.remaining}) if headers else {}
    if retry_after is not None:
        fields["Retry-After"] = retry_after
    return problem, fields


async def settle_unrecorded(reservation: Reservation, on_unrecorded: OnUnrecorded) -> None:
    """A normal exit with nothing recorded: charge, or give back (``"refund"`` and
    ``"release"`` alike), as configured.

    Done here rather than by ``on_unrecorded`` of the reservation, which also logs
    ``budget.unrecorded``: here it was configured, not forgotten.
    """
    if not reservation.held or reservation.has_recorded:
        return
    if on_unrecorded == "charge":
        reservation.record(reservation.amounts)
    else:
        await reservation.release()
