"""Every error aiobudget raises, in one import-free module.

The tree::

    BudgetError                      catch this to catch everything aiobudget raises
    ├── InvalidAmount(ValueError)    an amount is not an int in 0 .. 2**63 - 1
    ├── InvalidLimits(ValueError)    a budget's limits or names cannot be built
    ├── UnknownDimension(KeyError)   an amount names a dimension the budget lacks
    ├── BudgetExhausted              a reservation does not fit (and waiting cannot help,
    │   │                            or was not asked for, or timed out)
    │   └── RequestLimitExceeded     a reservation is above its own per-request cap
    ├── BudgetExceeded               a strict charge would pass a limit
    ├── ReservationClosed            a reservation was settled or released already,
    │                                or its lease expired
    ├── LimitsMismatch               a shared budget already exists with other limits
    └── BackendError                 the store failed (Redis unreachable, script error);
                                     never a silent allow

Nothing here imports anything (but `typing`, for annotations), so every layer (the
kernel included) can raise these.
Context travels keyword-only and is kept on the instance, and each ``__init__`` builds
a message a person can act on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "BackendError",
    "BudgetError",
    "BudgetExceeded",
    "BudgetExhausted",
    "InvalidAmount",
    "InvalidLimits",
    "LimitsMismatch",
    "RequestLimitExceeded",
    "ReservationClosed",
    "UnknownDimension",
]


class BudgetError(Exception):
    """The root of every error aiobudget raises."""


class InvalidAmount(BudgetError, ValueError):
    """An amount is not an ``int`` in ``0 .. 2**63 - 1`` (or not a valid money value)."""

    def __init__(self, message: str, *, dim: str | None = None, value: object = None) -> None:
        self.dim = dim
        self.value = value
        super().__init__(message)


class InvalidLimits(BudgetError, ValueError):
    """A budget's limits cannot be built: no dimensions, a bad name, warn or headroom
    above the limit."""


class UnknownDimension(BudgetError, KeyError):
    """An amount names a dimension the budget does not have."""

    def __init__(self, dim: str, *, known: tuple[str, ...] = (), budget: str | None = None) -> None:
        self.dim = dim
        self.known = known
        self.budget = budget
        where = f"budget {budget!r}" if budget is not None else "this budget"
        super().__init__(f"{where} has no dimension {dim!r}; it has {', '.join(known) or 'none'}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BudgetExhausted(BudgetError):
    """A reservation does not fit in the budget.

    ``dim`` is the dimension that does not fit, ``requested`` the amount asked for,
    ``remaining`` what that request could still have had there, and ``budget`` the name
    of the level (a parent, for a child budget) that said no. ``resets_at`` is when that
    level's current window ends (an aware UTC datetime) if it has a period, else None.
    """

    def __init__(
        self,
        *,
        dim: str,
        requested: int,
        remaining: int,
        budget: str | None = None,
        reason: str | None = None,
        resets_at: datetime | None = None,
    ) -> None:
        self.dim = dim
        self.requested = requested
        self.remaining = remaining
        self.budget = budget
        self.reason = reason
        self.resets_at = resets_at
        where = f"budget {budget!r}" if budget is not None else "the budget"
        message = f"{where} is exhausted on {dim!r}: requested {requested}, remaining {remaining}"
        if reason:
            message = f"{message} ({reason})"
        if resets_at is not None:
            message = f"{message}; it resets at {resets_at.isoformat()}"
        super().__init__(message)


class RequestLimitExceeded(BudgetExhausted):
    """A reservation asks for more than its own ``request_limit`` allows."""

    def __init__(self, *, dim: str, requested: int, limit: int, budget: str | None = None) -> None:
        self.limit = limit
        super().__init__(
            dim=dim,
            requested=requested,
            remaining=limit,
            budget=budget,
            reason=f"the per-request limit on {dim!r} is {limit}",
        )


class BudgetExceeded(BudgetError):
    """A strict charge would push ``spent + reserved`` of ``dim`` past its ``limit``.

    ``attempted`` is the total it would have reached. Nothing was charged.
    """

    def __init__(self, *, dim: str, limit: int, attempted: int, budget: str | None = None) -> None:
        self.dim = dim
        self.limit = limit
        self.attempted = attempted
        self.budget = budget
        where = f"budget {budget!r}" if budget is not None else "the budget"
        super().__init__(
            f"strict charge refused: {where} would reach {attempted} on {dim!r}, "
            f"past its limit of {limit}; nothing was charged"
        )


class ReservationClosed(BudgetError):
    """A reservation was settled or released already, or its lease expired.

    Settling twice never refunds twice: the second attempt raises this and changes
    nothing.
    """


class LimitsMismatch(BudgetError):
    """A shared budget already exists in the store with other limits (or another period:
    ``what`` is then ``"period"``).

    Open it with the same limits, or ask to update them.
    """

    def __init__(self, *, budget: str, stored: object, given: object, what: str = "limits") -> None:
        self.budget = budget
        self.stored = stored
        self.given = given
        self.what = what
        super().__init__(
            f"budget {budget!r} already exists with {what} {stored}, not {given}; "
            f"open it with the same {what} or pass update_limits=True"
        )


class BackendError(BudgetError):
    """The store failed: Redis unreachable, timed out, or a script error.

    The cause is chained (``raise BackendError(...) from exc``). aiobudget never turns a
    failure into a silent allow.
    """
