"""`Budget`: the async API. Every rule lives in the kernel; every counter in a store."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Union, final, get_args

from . import _log
from ._errors import (
    BudgetExceeded,
    BudgetExhausted,
    InvalidAmount,
    InvalidLimits,
    RequestLimitExceeded,
)
from ._period import Period
from ._reservation import (
    PATIENT,
    OnUnrecorded,
    Options,
    Reservation,
    enter,
    plain,
    try_enter,
)
from ._seeds import BudgetTokens, BudgetUnits
from ._units import Usage
from .kernel import (
    MAX_AMOUNT,
    Denial,
    Limit,
    Outcome,
    Snapshot,
    Status,
    Verdict,
    check_flag,
    first_over,
)
from .protocols import Account, LocalAccount, Repairable, Store
from .stores.memory import MemoryStore

__all__ = ["Amounts", "Budget", "BudgetCore", "Callback"]

Amounts = Union[Usage, Mapping[str, int]]  # noqa: UP007 - a runtime alias on Python 3.10
"""What an amount argument accepts besides keywords: a `Usage` or ``{dimension: int}``."""

_ON_UNRECORDED: Final = frozenset(get_args(OnUnrecorded))

Callback = Callable[[str | None, Verdict], Union[Awaitable[None], None]]  # noqa: UP007
"""``on_warn`` / ``on_exhausted``: called with the budget's name and the verdict."""


@final
class BudgetCore:
    """What a budget's reservations use of it: its account in the store, amount
    validation, and its policies for denials and crossings (logs and callbacks).

    One per `Budget`, built with it; a `Reservation` holds it, never the `Budget`'s
    private fields. ``vector_of`` validates a mapping of amounts in one call (the
    account's own validation), for the hot paths.
    """

    __slots__ = (
        "account",
        "budget",
        "dims",
        "lineage",
        "local",
        "name",
        "on_exhausted",
        "on_warn",
        "vector_of",
    )

    def __init__(
        self,
        budget: Budget,
        account: Account,
        parent: BudgetCore | None,
        on_warn: Callback | None,
        on_exhausted: Callback | None,
    ) -> None:
        self.budget = budget
        self.name = budget.name
        self.account = account
        self.local = account if isinstance(account, LocalAccount) else None
        self.dims = account.dims
        self.vector_of = account.vector
        self.on_warn = on_warn
        self.on_exhausted = on_exhausted
        # This budget's core and its ancestors', leaf first: a crossing's level indexes it.
        self.lineage: tuple[BudgetCore, ...] = (self, *(parent.lineage if parent else ()))

    def vector(self, amounts: Amounts | None, dims: Mapping[str, object]) -> tuple[int, ...]:
        """*amounts* (a `Usage`, a mapping or None) plus the keyword *dims*, validated."""
        account = self.account
        if amounts is None:
            return account.vector(dims)
        if isinstance(amounts, Usage):
            vector = account.vector(amounts.amounts(self.dims))
        elif isinstance(amounts, Mapping):
            vector = account.vector(amounts)
        else:
            raise InvalidAmount(
                f"amounts must be a Usage or a mapping of dimension to int, not {amounts!r}",
                value=amounts,
            )
        if not dims:
            return vector
        extra = account.vector(dims)
        return tuple(min(a + b, MAX_AMOUNT) for a, b in zip(vector, extra))

    def caps(self, request_limit: Amounts) -> tuple[int, ...]:
        """A request limit as per-dimension caps (``2**63 - 1`` where it names nothing)."""
        if isinstance(request_limit, Usage):
            request_limit = {k: v for k, v in request_limit.amounts(self.dims).items() if v}
        elif not isinstance(request_limit, Mapping):
            raise InvalidAmount(
                f"request_limit must be a Usage or a mapping of dimension to int, "
                f"not {request_limit!r}",
                value=request_limit,
            )
        named = self.account.vector(request_limit)
        return tuple(
            cap if dim in request_limit else MAX_AMOUNT for dim, cap in zip(self.dims, named)
        )

    def log_denial(self, denial: Denial) -> None:
        """Log a reservation the store refused."""
        _log.logger.info(
            _log.DENIED,
            budget=self.name,
            level=denial.budget,
            dim=denial.dim,
            requested=denial.requested,
            remaining=denial.remaining,
            reason="queued" if denial.queued else "impossible" if denial.impossible else "full",
        )

    def denied(self, denial: Denial) -> BudgetExhausted:
        """Log a refused reservation and return the error to raise for it."""
        self.log_denial(denial)
        reason = None
        if denial.queued:
            reason = "earlier waiting reservations come first"
        elif denial.impossible:
            reason = "spent alone rules it out; waiting cannot help"
        return BudgetExhausted(
            dim=denial.dim,
            requested=denial.requested,
            remaining=denial.remaining,
            budget=denial.budget,
            reason=reason,
            resets_at=denial.resets_at,
        )

    async def announce(self, outcome: Outcome) -> None:
        """Log each crossing once and call the owning budget's callback."""
        for crossing in outcome.crossings:
            verdict = crossing.verdict
            owner = self.lineage[crossing.level]
            if verdict.status is Status.EXHAUSTED:
                event, callback = _log.EXHAUSTED, owner.on_exhausted
            else:
                event, callback = _log.WARN, owner.on_warn
            _log.logger.warning(event, budget=crossing.budget, dim=verdict.dim)
            if callback is None:
                continue
            try:
                result = callback(crossing.budget, verdict)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a callback must not break accounting
                _log.logger.error(
                    _log.CALLBACK_FAILED, budget=crossing.budget, crossing=event, error=repr(exc)
                )


@final
class Budget:
    """A finite budget that many concurrent tasks share.

    Think of it as a ledger of *dimensions* (tokens, cost in micro-dollars, calls, any
    unit), each with a limit. Work reserves an estimate before it starts, records what
    it really used, and on leaving settles: the estimate is released and the real usage
    charged, so a cancelled or failed task never leaks budget and no interleaving of
    tasks, threads or event loops can overspend.

    ``Budget({TOKENS: Limit(100_000, warn=80_000), COST: usd("5"), CALLS: 50})``

    It is not a rate limiter: nothing refills by itself, unless the budget has a
    *period* (`Period`): then ``spent`` goes back to 0 at each of its boundaries ("$50 a
    month", "200k tokens a day"). `reset` starts a new period by hand. The counters live
    in the *store* (a private `MemoryStore` by default; a `RedisStore` shares a budget
    between processes).
    """

    __slots__ = ("_account", "_core", "_parent", "_period", "_store", "name")

    def __init__(
        self,
        limits: Mapping[str, Limit | int],
        *,
        name: str | None = None,
        store: Store | None = None,
        on_warn: Callback | None = None,
        on_exhausted: Callback | None = None,
        update_limits: bool = False,
        period: Period | None = None,
        _parent: Budget | None = None,
    ) -> None:
        if not isinstance(limits, Mapping):
            raise InvalidLimits(
                f"limits must be a mapping of dimension to Limit or int, not {limits!r}"
            )
        if name is not None and not isinstance(name, str):
            raise InvalidLimits(f"a budget's name is a str, not {name!r}")
        if period is not None and not isinstance(period, Period):
            raise InvalidLimits(
                f"period must be a Period (Period.daily(), Period.every(3600), ...), not {period!r}"
            )
        check_flag(update_limits, "update_limits")
        self.name = name
        self._store: Store = store if store is not None else MemoryStore()
        self._parent = _parent
        self._period = period
        # A store that knows nothing of periods is still a store: *period* only if given.
        extra = {} if period is None else {"period": period}
        self._account: Account = self._store.open(
            name,
            {dim: Limit.of(limit) for dim, limit in limits.items()},
            parent=_parent._account if _parent is not None else None,
            update_limits=update_limits,
            **extra,
        )
        self._core: BudgetCore = BudgetCore(
            self, self._account, _parent._core if _parent else None, on_warn, on_exhausted
        )

    def __repr__(self) -> str:
        return f"<Budget {self.name!r} dims={self.dims} store={self._store!r}>"

    # -- properties ---------------------------------------------------------------------

    @property
    def dims(self) -> tuple[str, ...]:
        """The dimensions, in declaration order."""
        return self._account.dims

    @property
    def store(self) -> Store:
        """Where the counters live."""
        return self._store

    @property
    def parent(self) -> Budget | None:
        """The parent budget, for a child."""
        return self._parent

    @property
    def period(self) -> Period | None:
        """When ``spent`` goes back to 0 by itself, as this budget was built; or None."""
        return self._period

    # -- reservations -------------------------------------------------------------------

    def reserve(
        self,
        amounts: Amounts | None = None,
        /,
        *,
        timeout: float | None = None,
        use_headroom: bool = False,
        request_limit: Amounts | None = None,
        on_unrecorded: OnUnrecorded = "refund",
        ttl: float | None = None,
        **dims: int,
    ) -> Reservation:
        """A reservation of *amounts*, made when entered: ``async with budget.reserve(...)``.

        Without *timeout* a reservation that does not fit raises `BudgetExhausted` at
        once. With *timeout* (seconds, ``math.inf`` allowed) it waits, first come first
        served, for live reservations to settle, and still fails at once when spent
        alone makes it impossible. Bad amounts raise here, before anything changes.

        *on_unrecorded* is what a normal exit with nothing recorded does: ``"refund"``
        everything (the default) or ``"charge"`` the whole reservation, logging
        ``budget.unrecorded`` either way so that a forgotten ``record()`` shows; or
        ``"release"`` everything quietly, for a budget used as a plain limiter, where a
        reservation is a slot held and there is nothing to record.

        *request_limit* caps this one reservation (see `RequestLimitExceeded`). As a
        mapping it caps the dimensions it names, at 0 too; as a `Usage` it caps the
        dimensions the usage maps onto, except where the usage is 0, since a `Usage`
        cannot tell 0 from a field not given (write ``{COST: 0}`` to forbid a cost).

        With *ttl* (seconds, finite, > 0) the store refunds the reservation by itself if
        it is still open that long after it was granted (``await r.extend()`` renews it);
        closing it later raises `ReservationClosed` and changes nothing. `RedisStore`
        uses it as the lease's time to live; `MemoryStore` refunds it at the next
        operation past the deadline, by the store's clock.
        """
        core = self._core
        if amounts is None:
            vector = core.vector_of(dims)
        elif type(amounts) is dict and not dims:
            vector = core.vector_of(amounts)
        else:
            vector = core.vector(amounts, dims)
        if (
            timeout is None
            and use_headroom is False
            and request_limit is None
            and on_unrecorded == "refund"
            and ttl is None
        ):
            return plain(core, vector)  # the defaults: nothing more to check
        if (
            type(timeout) is float
            and timeout >= 0  # not NaN
            and use_headroom is False
            and request_limit is None
            and on_unrecorded == "refund"
            and ttl is None
        ):
            # A reservation that waits, with the other defaults: nothing more to check.
            if timeout == math.inf:
                return plain(core, vector, PATIENT)
            return plain(core, vector, Options(timeout, False, None, "refund"))
        if (
            timeout is not None
            and not (type(timeout) is float and timeout >= 0)  # the common case, tested first
            and (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not timeout >= 0  # NaN too
            )
        ):
            raise ValueError(f"timeout must be a non-negative number of seconds, not {timeout!r}")
        if on_unrecorded not in _ON_UNRECORDED:
            raise ValueError(
                f"on_unrecorded must be 'refund', 'charge' or 'release', not {on_unrecorded!r}"
            )
        check_flag(use_headroom, "use_headroom")
        if ttl is not None:
            _check_ttl(ttl)
        caps = None
        if request_limit is not None:
            caps = core.caps(request_limit)
            i = first_over(vector, caps)
            if i >= 0:
                _log.logger.info(
                    _log.DENIED,
                    budget=self.name,
                    dim=self.dims[i],
                    requested=vector[i],
                    limit=caps[i],
                    reason="request_limit",
                )
                raise RequestLimitExceeded(
                    dim=self.dims[i], requested=vector[i], limit=caps[i], budget=self.name
                )
        return Reservation(core, vector, Options(timeout, use_headroom, caps, on_unrecorded, ttl))

    async def acquire(
        self,
        amounts: Amounts | None = None,
        /,
        *,
        timeout: float | None = None,
        use_headroom: bool = False,
        request_limit: Amounts | None = None,
        on_unrecorded: OnUnrecorded = "refund",
        ttl: float | None = None,
        **dims: int,
    ) -> Reservation:
        """An entered `Reservation`, for work whose start and end are two separate calls.

        Takes what `reserve` takes and raises as entering ``async with budget.reserve(...)``
        does (`BudgetExhausted` with its details, `RequestLimitExceeded`). Close it with
        ``await r.commit()`` (settles what was recorded, per *on_unrecorded*) or ``await
        r.release()`` (charges nothing). It is the way for integrations whose framework
        calls a "before" and an "after" hook: acquire in the first, record and commit in
        the second. Give a *ttl* when the "after" may never come (a framework that fires
        no callback for an abandoned stream): the store then refunds it by itself.
        """
        reservation = self.reserve(
            amounts,
            timeout=timeout,
            use_headroom=use_headroom,
            request_limit=request_limit,
            on_unrecorded=on_unrecorded,
            ttl=ttl,
            **dims,
        )
        return await enter(reservation)

    async def try_reserve(
        self,
        amounts: Amounts | None = None,
        /,
        *,
        timeout: float | None = None,
        use_headroom: bool = False,
        request_limit: Amounts | None = None,
        on_unrecorded: OnUnrecorded = "refund",
        ttl: float | None = None,
        **dims: int,
    ) -> Reservation | None:
        """An entered `Reservation`, or ``None`` when it does not fit.

        Close it with ``async with reservation:``, ``await reservation.commit()`` or
        ``await reservation.release()``. (`acquire` raises with the denial's details
        instead of returning ``None``.)
        """
        reservation = self.reserve(
            amounts,
            timeout=timeout,
            use_headroom=use_headroom,
            request_limit=request_limit,
            on_unrecorded=on_unrecorded,
            ttl=ttl,
            **dims,
        )
        denial = await try_enter(reservation)
        if denial is None:
            return reservation
        self._core.log_denial(denial)
        return None

    # -- direct operations ----------------------------------------------------------------

    async def charge(
        self, amounts: Amounts | None = None, /, *, strict: bool = False, **dims: int
    ) -> Verdict:
        """Add usage to ``spent`` without a reservation and return the verdict.

        Never refused, unless *strict*: then a charge that would pass a limit raises
        `BudgetExceeded` and changes nothing.
        """
        vector = self._core.vector(amounts, dims)
        check_flag(strict, "strict")
        try:
            outcome = await self._account.charge(vector, strict=strict)
        except BudgetExceeded as exc:
            _log.logger.info(
                _log.DENIED,
                budget=self.name,
                level=exc.budget,
                dim=exc.dim,
                attempted=exc.attempted,
                limit=exc.limit,
                reason="strict_charge",
            )
            raise
        if _log.logger.debug_enabled:
            _log.logger.debug(
                _log.CHARGED,
                budget=self.name,
                amounts=dict(zip(self.dims, vector)),
                status=outcome.verdict.status.value,
            )
        if outcome.crossings:
            await self._core.announce(outcome)
        return outcome.verdict

    async def snapshot(self) -> Snapshot:
        """This budget's limits, spent, reserved, remaining and verdict, consistently."""
        return await self._account.snapshot()

    async def remaining(self) -> dict[str, int]:
        """What is left per dimension: ``limit - spent - reserved``, floored at 0."""
        return dict((await self._account.snapshot()).remaining)

    async def reset(self, *, force: bool = False) -> None:
        """Start a new period: ``spent`` goes to 0; live reservations stay counted.

        A child's reset leaves its parent alone, and a parent's its children.

        With *force*, also make the budget's record whole again in a store that can be
        damaged from outside (Redis keys deleted or evicted, which the store refuses to
        use until repaired): ``reserved`` is recounted from the reservations the store
        still holds, and a lost record is created again with this budget's limits.
        """
        account = self._account
        if force and isinstance(account, Repairable):
            await account.repair()
        else:
            await account.reset()
        _log.logger.info(_log.RESET, budget=self.name)

    async def set_limits(self, limits: Mapping[str, Limit | int]) -> Verdict:
        """Change the limits of this budget's dimensions (same names, same order)."""
        new = {dim: Limit.of(limit) for dim, limit in limits.items()}
        outcome = await self._account.set_limits(new)
        _log.logger.info(
            _log.LIMITS_UPDATED, budget=self.name, limits={d: v.limit for d, v in new.items()}
        )
        if outcome.crossings:
            await self._core.announce(outcome)
        return outcome.verdict

    # -- hierarchy ----------------------------------------------------------------------

    def child(
        self,
        limits: Mapping[str, Limit | int],
        *,
        name: str | None = None,
        on_warn: Callback | None = None,
        on_exhausted: Callback | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> Budget:
        """A budget inside this one: every operation on it applies to this budget (and
        its ancestors) too, atomically. A reservation fits only if it fits at every
        level; dimensions a parent lacks are not charged to it. With a *period* the
        child renews on its own schedule, whatever its parent's.

        The child also has every dimension of this budget it does not name, without a
        limit of its own (``2**63 - 1``), so usage recorded on the child always reaches
        the parent's limits: ``parent.child({TOKENS: 1_000})`` still counts cost and
        calls against the parent.
        """
        if not isinstance(limits, Mapping):
            raise InvalidLimits(
                f"limits must be a mapping of dimension to Limit or int, not {limits!r}"
            )
        inherited = {dim: MAX_AMOUNT for dim in self.dims if dim not in limits}
        return Budget(
            {**limits, **inherited},
            name=name,
            store=self._store,
            on_warn=on_warn,
            on_exhausted=on_exhausted,
            update_limits=update_limits,
            period=period,
            _parent=self,
        )

    # -- adapters -----------------------------------------------------------------------

    def as_guard(self, dim: str) -> BudgetUnits:
        """This budget as a `BudgetGuard` over one dimension."""
        return BudgetUnits(self, dim)

    def as_token_budget(self) -> BudgetTokens:
        """This budget as a `TokenBudget` (over ``tokens``, or input and output tokens)."""
        return BudgetTokens(self)


def _check_ttl(ttl: object) -> None:
    """A reservation's ttl is a finite number of seconds above 0."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds (int or float), not {ttl!r}")
    if not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a finite number of seconds above 0, not {ttl!r}")
