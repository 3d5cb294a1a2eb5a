"""`Reservation`: budget held for one piece of work, settled exactly once."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Final, Literal, final

import anyio

from . import _log
from ._errors import BackendError, ReservationClosed
from .kernel import MAX_AMOUNT, Denial, Outcome, Verdict

if TYPE_CHECKING:
    from types import TracebackType

    from ._budget import Amounts, Budget
    from .protocols import Held

__all__ = ["Reservation"]

_NEW: Final = 0
_HELD: Final = 1
_CLOSED: Final = 2
_UNKNOWN: Final = 3  # its settle or release raised BackendError: applied or not, unknown

OnUnrecorded = Literal["refund", "charge", "release"]
"""What a normal exit with nothing recorded does: ``"refund"`` everything and log
``budget.unrecorded`` (a forgotten ``record()`` shows), ``"charge"`` the whole reservation
and log it, or ``"release"`` everything quietly, for a reservation used as a limiter (a
slot held, nothing to record)."""


@final
class Reservation:
    """Budget held for one piece of work: an async context manager.

    Entering reserves the estimate (or raises `BudgetExhausted`); `record` adds the
    usage that really happened; leaving settles once, atomically: the estimate is
    released and what was recorded is charged. Nothing recorded means nothing charged.
    Whatever way the block ends (normally, by an exception, by cancellation) the
    reservation is closed exactly once; the exit cannot be interrupted by cancellation,
    and with an in-memory store it does not even suspend.

    ============================  ===============================  ======================
    how the block ends            with usage recorded              with nothing recorded
    ============================  ===============================  ======================
    normally                      charge recorded, refund rest     refund all (or charge
                                                                   all, with
                                                                   ``on_unrecorded=
                                                                   "charge"``); logged
    exception or cancellation     charge recorded, refund rest     refund all
    ``await r.commit()`` earlier  as "normally", at that moment    as "normally"
    garbage-collected unexited    refund all, `ResourceWarning`    refund all, warning
    still open past its ``ttl``   refunded by the store; a later   the same
                                  close raises `ReservationClosed`
    ============================  ===============================  ======================

    `Budget.acquire` (and `Budget.try_reserve`) hand out reservations already entered,
    for work whose start and end are separate calls: close them with `commit` or
    `release`.

    If the store fails while closing (`BackendError`, a networked store such as Redis),
    the outcome is unknown: the settle may or may not have been applied. ``await
    r.commit()`` then retries exactly that settle (or release), which the store applies
    at most once.
    """

    __slots__ = (
        "_amounts",
        "_budget",
        "_denial",
        "_held",
        "_on_unrecorded",
        "_pending",
        "_recorded",
        "_request_limit",
        "_state",
        "_timeout",
        "_ttl",
        "_use_headroom",
        "over_request_limit",
        "verdict",
    )

    def __init__(  # noqa: PLR0917 - built only by Budget.reserve, positionally for speed
        self,
        budget: Budget,
        amounts: tuple[int, ...],
        timeout: float | None,
        use_headroom: bool,
        request_limit: tuple[int, ...] | None,
        on_unrecorded: OnUnrecorded,
        ttl: float | None = None,
    ) -> None:
        self._budget = budget
        self._ttl = ttl
        self._amounts = amounts
        self._timeout = timeout
        self._use_headroom = use_headroom
        self._request_limit = request_limit
        self._on_unrecorded = on_unrecorded
        self._held: Held | None = None
        self._denial: Denial | None = None
        self._recorded: list[int] | None = None
        self._pending: tuple[int, ...] | None = None  # what a close of unknown outcome did
        self._state = _NEW
        self.verdict: Verdict | None = None
        """The verdict after the reservation was settled or released; None before."""
        self.over_request_limit = False
        """True when the recorded usage passed ``request_limit`` (it was charged anyway)."""

    def __repr__(self) -> str:
        state = ("new", "held", "closed", "outcome unknown")[self._state]
        return f"<Reservation {self._budget.name!r} {self.amounts} {state}>"

    # -- reading -----------------------------------------------------------------------

    @property
    def budget(self) -> Budget:
        """The budget this reservation draws on."""
        return self._budget

    @property
    def amounts(self) -> dict[str, int]:
        """What is (or was to be) reserved, by dimension."""
        return dict(zip(self._budget.dims, self._amounts))

    @property
    def recorded(self) -> dict[str, int]:
        """The usage recorded so far, by dimension."""
        return dict(zip(self._budget.dims, self._recorded or (0,) * len(self._amounts)))

    @property
    def has_recorded(self) -> bool:
        """True once `record` was called (even with zeros): the exit then settles what was
        recorded rather than applying ``on_unrecorded``."""
        return self._recorded is not None

    @property
    def held(self) -> bool:
        """True while the reservation holds budget."""
        return self._state == _HELD

    # -- the lifecycle ---------------------------------------------------------------

    async def _enter(self) -> bool:
        """Reserve; True on success, False on a denial (already logged)."""
        if self._state != _NEW:
            raise ReservationClosed("a reservation can be entered only once")
        budget = self._budget
        local = budget._local
        if local is not None:
            if self._ttl is None:
                result = local.reserve_nowait(self._amounts, use_headroom=self._use_headroom)
            else:
                result = local.reserve_nowait(
                    self._amounts, use_headroom=self._use_headroom, ttl=self._ttl
                )
            if (
                self._timeout is not None
                and self._timeout > 0
                and isinstance(result, Denial)
                and not result.impossible
            ):
                result = await self._wait(budget)
        elif self._timeout is not None:
            result = await self._wait(budget)
        elif self._ttl is None:
            result = await budget._account.reserve(
                self._amounts, use_headroom=self._use_headroom, timeout=None
            )
        else:
            result = await budget._account.reserve(
                self._amounts, use_headroom=self._use_headroom, timeout=None, ttl=self._ttl
            )
        if isinstance(result, Denial):
            self._accept(result)
            return False
        self._accept(result)
        if result.outcome.crossings:
            await self._announce(result)
        return True

    def _accept(self, result: Held | Denial) -> bool:
        """Take the store's answer: hold it, or note the denial."""
        if isinstance(result, Denial):
            self._state = _CLOSED
            self._denial = result
            return False
        self._held = result
        self._state = _HELD
        if _log.logger.debug_enabled:
            _log.logger.debug(_log.RESERVED, budget=self._budget.name, amounts=self.amounts)
        return True

    async def _announce(self, held: Held) -> None:
        try:
            await self._budget._announce(held.outcome)
        except BaseException:
            # Cancelled in a callback before __aenter__ returned: no __aexit__ will run,
            # so give the budget back now. (Not shielding the callback instead keeps a
            # callback that hangs from making the task uncancellable.)
            with anyio.CancelScope(shield=True):
                await self._close(failed=True, reason="cancelled")
            raise

    async def _wait(self, budget: Budget) -> Held | Denial:
        if not _log.logger.debug_enabled:
            return await self._reserve_waiting(budget)
        _log.logger.debug(
            _log.WAITING, budget=budget.name, amounts=self.amounts, timeout=self._timeout
        )
        start, outcome = anyio.current_time(), "cancelled"
        try:
            result = await self._reserve_waiting(budget)
            outcome = "denied" if isinstance(result, Denial) else "granted"
            return result
        finally:
            seconds = anyio.current_time() - start
            _log.logger.debug(_log.WAITED, budget=budget.name, seconds=seconds, outcome=outcome)

    async def _reserve_waiting(self, budget: Budget) -> Held | Denial:
        if self._ttl is None:
            return await budget._account.reserve(
                self._amounts, use_headroom=self._use_headroom, timeout=self._timeout
            )
        return await budget._account.reserve(
            self._amounts, use_headroom=self._use_headroom, timeout=self._timeout, ttl=self._ttl
        )

    async def __aenter__(self) -> Reservation:
        if self._state == _HELD:  # entered already (try_reserve): the block closes it
            return self
        local = self._budget._local
        if (
            local is not None
            and self._timeout is None
            and self._ttl is None
            and self._state == _NEW
        ):
            # The common case, inlined: an in-memory reservation that does not wait.
            result = local.reserve_nowait(self._amounts, use_headroom=self._use_headroom)
            if isinstance(result, Denial):
                self._accept(result)
                raise self._budget._denied(result)
            self._accept(result)
            if result.outcome.crossings:
                await self._announce(result)
            return self
        if not await self._enter():
            assert self._denial is not None
            raise self._budget._denied(self._denial)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != _HELD:
            return
        recorded = self._recorded
        local = self._budget._local
        if local is not None and recorded is not None and self._request_limit is None:
            # The common case, inlined: settle what was recorded, in memory, no await.
            self._state = _CLOSED
            assert self._held is not None
            outcome = local.settle_nowait(self._held, tuple(recorded))
            self.verdict = outcome.verdict
            if outcome.crossings or _log.logger.debug_enabled:
                self._log_close(tuple(recorded), "failed" if exc_type is not None else "")
                if outcome.crossings:  # settled already: a callback may be cancelled
                    await self._budget._announce(outcome)
            return
        await self._close(failed=exc_type is not None)

    def record(self, amounts: Amounts | None = None, /, **dims: int) -> None:
        """Add usage that really happened; sync, no I/O, may be called many times.

        Takes the same forms as `Budget.reserve`: a `Usage`, a mapping, or keywords.
        Usage above the reservation is allowed and charged: the ledger tells the truth.
        """
        budget = self._budget
        vector = budget._account.vector(dims) if amounts is None else budget._vector(amounts, dims)
        if self._state >= _CLOSED:  # closed, or closing failed: retried as it was
            raise ReservationClosed("cannot record on a reservation that is already closed")
        recorded = self._recorded
        if recorded is None:
            self._recorded = list(vector)
            return
        for i, amount in enumerate(vector):
            if amount:
                total = recorded[i] + amount
                recorded[i] = total if total <= MAX_AMOUNT else MAX_AMOUNT

    async def commit(self) -> Verdict:
        """Settle now, as a normal exit would, and return the verdict.

        After a `BackendError` from closing this reservation (leaving its block, or an
        earlier `commit` or `release`), the outcome of that close is unknown: `commit`
        retries exactly it, and the store applies it at most once.
        """
        if self._state == _UNKNOWN:
            assert self._held is not None
            self._state = _CLOSED
            actual = self._pending
            outcome = await self._remote(self._held, actual)
            await self._closed(outcome, actual, "retried")
        elif self._state != _HELD:
            raise ReservationClosed("this reservation is not holding budget")
        else:
            await self._close(failed=False)
        assert self.verdict is not None
        return self.verdict

    async def release(self) -> Verdict:
        """Give the reservation back now, charging nothing, even what was recorded."""
        if self._state == _UNKNOWN:
            raise ReservationClosed(
                "closing this reservation failed with an unknown outcome: retry that close "
                "with commit()"
            )
        if self._state != _HELD:
            raise ReservationClosed("this reservation is not holding budget")
        self._recorded = None
        await self._close(failed=True, reason="released")
        assert self.verdict is not None
        return self.verdict

    async def extend(self, ttl: float | None = None) -> None:
        """Keep the reservation alive for *ttl* more seconds (by default its own ``ttl``,
        else the store's lease time). Only reservations that expire need it: Redis leases,
        and reservations made with a ``ttl``."""
        if self._state != _HELD or self._held is None:
            raise ReservationClosed("this reservation is not holding budget")
        await self._budget._account.extend(self._held, self._ttl if ttl is None else ttl)

    async def _close(self, *, failed: bool, reason: str | None = None) -> None:
        """Settle or release, exactly once, shielded from cancellation."""
        budget = self._budget
        held = self._held
        assert held is not None
        self._state = _CLOSED  # first: a second close (or a finalizer) finds it closed
        recorded = self._recorded
        actual: tuple[int, ...] | None
        if recorded is not None:
            actual = tuple(recorded)
        elif failed or self._on_unrecorded == "release":
            actual = None
        else:
            charge = self._on_unrecorded == "charge"
            actual = self._amounts if charge else None
            _log.logger.warning(
                _log.UNRECORDED,
                budget=budget.name,
                reserved=self.amounts,
                action="charge" if charge else "refund",
            )
        local = budget._local
        if local is not None:
            outcome = (
                local.release_nowait(held) if actual is None else local.settle_nowait(held, actual)
            )
        else:
            outcome = await self._remote(held, actual)
        await self._closed(outcome, actual, reason or ("failed" if failed else "unrecorded"))

    async def _remote(self, held: Held, actual: tuple[int, ...] | None) -> Outcome:
        """Settle (or release, for None) through the async store, shielded from
        cancellation. A `BackendError` leaves the outcome unknown and the close retryable."""
        account = self._budget._account
        try:
            with anyio.CancelScope(shield=True):
                outcome = await (
                    account.release(held) if actual is None else account.settle(held, actual)
                )
        except BackendError:
            self._state = _UNKNOWN
            self._pending = actual
            raise
        return outcome

    async def _closed(self, outcome: Outcome, actual: tuple[int, ...] | None, reason: str) -> None:
        self.verdict = outcome.verdict
        self._log_close(actual, reason)
        if outcome.crossings:  # settled already: a callback may be cancelled
            await self._budget._announce(outcome)

    def _log_close(self, actual: tuple[int, ...] | None, reason: str) -> None:
        budget = self._budget
        limit = self._request_limit
        if actual is not None and limit is not None:
            for dim, used, cap in zip(budget.dims, actual, limit):
                if used > cap:
                    self.over_request_limit = True
                    _log.logger.warning(
                        _log.OVER_REQUEST_LIMIT, budget=budget.name, dim=dim, actual=used, limit=cap
                    )
        if _log.logger.debug_enabled:
            if actual is None:
                _log.logger.debug(
                    _log.RELEASED, budget=budget.name, reserved=self.amounts, reason=reason
                )
            else:
                assert self.verdict is not None
                _log.logger.debug(
                    _log.SETTLED,
                    budget=budget.name,
                    reserved=self.amounts,
                    actual=dict(zip(budget.dims, actual)),
                    status=self.verdict.status.value,
                )

    def __del__(self) -> None:
        if self._state != _HELD or self._held is None:
            return
        # Never entered an exit: give the budget back first (warnings may be errors).
        self._state = _CLOSED
        self._budget._account.abandon(self._held)
        _log.logger.warning(_log.ABANDONED, budget=self._budget.name, reserved=self.amounts)
        if self._ttl is not None:
            return  # a ttl says it may be left unclosed: refunded and logged, no warning
        warnings.warn(
            f"{self!r} was garbage-collected while holding budget; it was refunded. "
            "Use 'async with budget.reserve(...)' or await commit()/release().",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
