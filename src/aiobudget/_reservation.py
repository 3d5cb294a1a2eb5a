"""`Reservation`: budget held for one piece of work, settled exactly once."""

from __future__ import annotations

import math
import sys
import warnings
from typing import TYPE_CHECKING, Final, Literal, final

import anyio

from . import _log
from ._errors import BackendError, ReservationClosed
from .kernel import MAX_AMOUNT, Denial, Outcome, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._budget import Amounts, Budget, BudgetCore
    from .protocols import Held

__all__ = [
    "PATIENT",
    "PLAIN",
    "OnUnrecorded",
    "Options",
    "Reservation",
    "enter",
    "plain",
    "try_enter",
]

# The life of a reservation. HELD: holding budget outside any ``async with`` (made by
# try_reserve); ENTERED: holding budget inside an ``async with`` block, whose exit
# closes it. Entering is allowed from NEW and HELD only.
_NEW: Final = 0
_HELD: Final = 1
_ENTERED: Final = 2
_CLOSED: Final = 3
_UNKNOWN: Final = 4  # its settle or release raised BackendError: applied or not, unknown

OnUnrecorded = Literal["refund", "charge", "release"]
"""What a normal exit with nothing recorded does: ``"refund"`` everything and log
``budget.unrecorded`` (a forgotten ``record()`` shows), ``"charge"`` the whole reservation
and log it, or ``"release"`` everything quietly, for a reservation used as a limiter (a
slot held, nothing to record)."""


@final
class Options:
    """How a reservation waits and closes. Shared by every reservation made with the
    defaults (`PLAIN`), which the hot paths recognise by identity."""

    __slots__ = ("on_unrecorded", "request_limit", "timeout", "ttl", "use_headroom")

    def __init__(
        self,
        timeout: float | None,
        use_headroom: bool,
        request_limit: tuple[int, ...] | None,
        on_unrecorded: OnUnrecorded,
        ttl: float | None = None,
    ) -> None:
        self.timeout = timeout
        self.use_headroom = use_headroom
        self.request_limit = request_limit  # per-dimension caps on the recorded usage
        self.on_unrecorded = on_unrecorded
        self.ttl = ttl  # seconds after which the store refunds it if still open


PLAIN: Final = Options(None, False, None, "refund")
"""No timeout, no headroom, no request limit, refund when nothing was recorded."""
PATIENT: Final = Options(math.inf, False, None, "refund")
"""`PLAIN`, but waiting as long as it takes (``timeout=math.inf``)."""


@final
class Reservation:
    """Budget held for one piece of work: an async context manager.

    Entering reserves the estimate (or raises `BudgetExhausted`); `record` adds the
    usage that really happened; leaving settles once, atomically: the estimate is
    released and what was recorded is charged. Nothing recorded means nothing charged.
    Whatever way the block ends (normally, by an exception, by cancellation) the
    reservation is closed exactly once; the exit cannot be interrupted by cancellation,
    and with an in-memory store it does not even suspend. A reservation is entered at
    most once: entering it again, even nested inside its own block, raises
    `ReservationClosed`.

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
        "_core",
        "_debug",
        "_held",
        "_options",
        "_pending",
        "_recorded",
        "_state",
        "over_request_limit",
        "verdict",
    )

    def __init__(
        self, core: BudgetCore, amounts: tuple[int, ...], options: Options = PLAIN
    ) -> None:
        self._core = core
        self._amounts = amounts
        self._options = options
        self._state = _NEW
        self._held: Held | None = None
        self._recorded: tuple[int, ...] | list[int] | None = None
        self._pending: tuple[int, ...] | None = None  # what a close of unknown outcome did
        self.verdict: Verdict | None = None
        """The verdict after the reservation was settled or released; None before."""
        self.over_request_limit = False
        """True when the recorded usage passed ``request_limit`` (it was charged anyway)."""
        # Whether this reservation logs its DEBUG events (reserved, waiting, settled,
        # released): decided once, when it is entered, since reading structlog's
        # configuration costs more than the rest of an in-memory round trip.
        self._debug: bool

    def __repr__(self) -> str:
        state = ("new", "held", "held", "closed", "outcome unknown")[self._state]
        return f"<Reservation {self._core.name!r} {self.amounts} {state}>"

    # -- reading -----------------------------------------------------------------------

    @property
    def budget(self) -> Budget:
        """The budget this reservation draws on."""
        return self._core.budget

    @property
    def amounts(self) -> dict[str, int]:
        """What is (or was to be) reserved, by dimension."""
        return dict(zip(self._core.dims, self._amounts))

    @property
    def recorded(self) -> dict[str, int]:
        """The usage recorded so far, by dimension."""
        return dict(zip(self._core.dims, self._recorded or (0,) * len(self._amounts)))

    @property
    def has_recorded(self) -> bool:
        """True once `record` was called (even with zeros): the exit then settles what was
        recorded rather than applying ``on_unrecorded``."""
        return self._recorded is not None

    @property
    def held(self) -> bool:
        """True while the reservation holds budget."""
        return _HELD <= self._state <= _ENTERED

    # -- the lifecycle ---------------------------------------------------------------

    async def _open(self, state: int) -> Denial | None:
        """Reserve, waiting if there is a timeout; on success hold the reservation in
        *state* and return None, else return the denial (the reservation is closed)."""
        if self._state != _NEW:
            raise ReservationClosed("a reservation can be entered only once")
        core = self._core
        options = self._options
        local = core.local
        amounts, use_headroom, timeout = self._amounts, options.use_headroom, options.timeout
        ttl = options.ttl
        debug = self._debug = _log.logger.debug_enabled
        result: Held | Denial
        if timeout is None and local is not None:
            result = (
                local.reserve_nowait(amounts, use_headroom)
                if ttl is None
                else local.reserve_nowait(amounts, use_headroom, ttl=ttl)
            )
        elif timeout is not None and debug:
            # Only for the WAITING and WAITED events, logged when the reservation waits.
            if local is None:  # a remote store is asked once, with the timeout
                result = await self._wait(amounts, use_headroom, timeout)
            else:
                result = (
                    local.reserve_nowait(amounts, use_headroom)
                    if ttl is None
                    else local.reserve_nowait(amounts, use_headroom, ttl=ttl)
                )
                if timeout > 0 and type(result) is Denial and not result.impossible:
                    result = await self._wait(amounts, use_headroom, timeout)
        elif ttl is None:
            result = await core.account.reserve(amounts, use_headroom=use_headroom, timeout=timeout)
        else:
            result = await core.account.reserve(
                amounts, use_headroom=use_headroom, timeout=timeout, ttl=ttl
            )
        if type(result) is Denial:
            self._state = _CLOSED
            return result
        self._held = result
        self._state = state
        if debug:
            _log.logger.debug(_log.RESERVED, budget=core.name, amounts=self.amounts)
        if result.outcome.crossings:
            await self._announce(result)
        return None

    async def _wait(
        self, amounts: tuple[int, ...], use_headroom: bool, timeout: float
    ) -> Held | Denial:
        core = self._core
        ttl = self._options.ttl
        _log.logger.debug(_log.WAITING, budget=core.name, amounts=self.amounts, timeout=timeout)
        start, outcome = anyio.current_time(), "cancelled"
        try:
            if ttl is None:
                result = await core.account.reserve(
                    amounts, use_headroom=use_headroom, timeout=timeout
                )
            else:
                result = await core.account.reserve(
                    amounts, use_headroom=use_headroom, timeout=timeout, ttl=ttl
                )
            outcome = "denied" if type(result) is Denial else "granted"
            return result
        finally:
            seconds = anyio.current_time() - start
            _log.logger.debug(_log.WAITED, budget=core.name, seconds=seconds, outcome=outcome)

    async def _announce(self, held: Held) -> None:
        try:
            await self._core.announce(held.outcome)
        except BaseException:
            # Cancelled in a callback before __aenter__ returned: no __aexit__ will run,
            # so give the budget back now. (Not shielding the callback instead keeps a
            # callback that hangs from making the task uncancellable.)
            with anyio.CancelScope(shield=True):
                await self._close(failed=True, reason="cancelled")
            raise

    async def __aenter__(self) -> Reservation:
        state = self._state
        if state == _NEW:
            core = self._core
            local = core.local
            options = self._options
            # The common cases, inlined: an in-memory reservation, waiting or not.
            if local is not None and options is PLAIN:
                result = local.reserve_nowait(self._amounts)
                debug = _log.logger.debug_enabled
            elif local is not None and not (debug := _log.logger.debug_enabled):
                # May wait: then one await on the store's ticket, in this very frame.
                answer, ticket = local.reserve_or_queue(
                    self._amounts, options.use_headroom, options.timeout, options.ttl
                )
                if ticket is None:
                    assert answer is not None
                    result = answer
                else:
                    try:
                        await ticket.wait()
                    except BaseException:
                        local.give_up(ticket)
                        raise
                    result = local.collect(ticket)
            else:  # a remote store, or DEBUG events to log on the way
                denial = await self._open(_ENTERED)
                if denial is not None:
                    raise core.denied(denial)
                return self
            if type(result) is Denial:
                self._state = _CLOSED
                raise core.denied(result)
            self._held = result
            self._state = _ENTERED
            self._debug = debug
            if debug:
                _log.logger.debug(_log.RESERVED, budget=core.name, amounts=self.amounts)
            if result.outcome.crossings:
                await self._announce(result)
            return self
        if state == _HELD:  # made by try_reserve: this block closes it
            self._state = _ENTERED
            return self
        if state == _ENTERED:
            raise ReservationClosed(
                "this reservation was entered already; its block closes it, so it cannot "
                "be entered again (nested or twice)"
            )
        raise ReservationClosed("a reservation can be entered only once")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != _ENTERED:
            return  # closed inside the block (commit or release)
        recorded = self._recorded
        local = self._core.local
        if local is not None and recorded is not None and self._options.request_limit is None:
            # The common case, inlined: settle what was recorded, in memory, no await.
            self._state = _CLOSED
            actual = tuple(recorded)
            assert self._held is not None
            outcome = local.settle_nowait(self._held, actual)
            self.verdict = outcome.verdict
            if outcome.crossings or self._debug:
                self._log_close(actual, "failed" if exc_type is not None else "")
                if outcome.crossings:  # settled already: a callback may be cancelled
                    await self._core.announce(outcome)
            return
        await self._close(failed=exc_type is not None)

    def record(self, amounts: Amounts | None = None, /, **dims: int) -> None:
        """Add usage that really happened; sync, no I/O, may be called many times.

        Takes the same forms as `Budget.reserve`: a `Usage`, a mapping, or keywords.
        Usage above the reservation is allowed and charged: the ledger tells the truth.
        """
        core = self._core
        if amounts is None:
            vector = core.vector_of(dims)
        elif type(amounts) is dict and not dims:
            vector = core.vector_of(amounts)
        else:
            vector = core.vector(amounts, dims)
        if self._state >= _CLOSED:  # closed, or closing failed: retried as it was
            raise ReservationClosed("cannot record on a reservation that is already closed")
        recorded = self._recorded
        if recorded is None:
            self._recorded = vector  # a tuple, until a second record adds to it
            return
        if isinstance(recorded, tuple):
            recorded = self._recorded = list(recorded)
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
        elif not self.held:
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
        if not self.held:
            raise ReservationClosed("this reservation is not holding budget")
        self._recorded = None
        await self._close(failed=True, reason="released")
        assert self.verdict is not None
        return self.verdict

    async def extend(self, ttl: float | None = None) -> None:
        """Keep the reservation alive for *ttl* more seconds (by default its own ``ttl``,
        else the store's lease time). Only reservations that expire need it: Redis leases,
        and reservations made with a ``ttl``."""
        if not self.held or self._held is None:
            raise ReservationClosed("this reservation is not holding budget")
        await self._core.account.extend(self._held, self._options.ttl if ttl is None else ttl)

    async def _close(self, *, failed: bool, reason: str | None = None) -> None:
        """Settle or release, exactly once, shielded from cancellation."""
        core = self._core
        held = self._held
        assert held is not None
        self._state = _CLOSED  # first: a second close (or a finalizer) finds it closed
        recorded = self._recorded
        actual: tuple[int, ...] | None
        if recorded is not None:
            actual = tuple(recorded)
        elif failed or self._options.on_unrecorded == "release":
            actual = None
        else:
            charge = self._options.on_unrecorded == "charge"
            actual = self._amounts if charge else None
            _log.logger.warning(
                _log.UNRECORDED,
                budget=core.name,
                reserved=self.amounts,
                action="charge" if charge else "refund",
            )
        local = core.local
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
        account = self._core.account
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
            await self._core.announce(outcome)

    def _log_close(self, actual: tuple[int, ...] | None, reason: str) -> None:
        core = self._core
        limit = self._options.request_limit
        if actual is not None and limit is not None:
            for dim, used, cap in zip(core.dims, actual, limit):
                if used > cap:
                    self.over_request_limit = True
                    _log.logger.warning(
                        _log.OVER_REQUEST_LIMIT, budget=core.name, dim=dim, actual=used, limit=cap
                    )
        if self._debug:
            if actual is None:
                _log.logger.debug(
                    _log.RELEASED, budget=core.name, reserved=self.amounts, reason=reason
                )
            else:
                assert self.verdict is not None
                _log.logger.debug(
                    _log.SETTLED,
                    budget=core.name,
                    reserved=self.amounts,
                    actual=dict(zip(core.dims, actual)),
                    status=self.verdict.status.value,
                )

    # The finalizer keeps what it needs in default arguments: at interpreter exit this
    # module's globals may already be gone when the last reservations are collected.
    def __del__(
        self,
        _finalizing: Callable[[], bool] = sys.is_finalizing,
        _warn: Callable[..., object] = warnings.warn,
        _live: tuple[int, int] = (_HELD, _ENTERED),
        _closed: int = _CLOSED,
    ) -> None:
        held = self._held
        if self._state not in _live or held is None:
            return
        message = (
            f"{self!r} was garbage-collected while holding budget; it was refunded. "
            "Use 'async with budget.reserve(...)' or await commit()/release()."
        )
        self._state = _closed
        if _finalizing():
            # Python is exiting: its imports and logging may be half torn down, and so may
            # the store (a memory store ends with the process; a Redis lease expires).
            # Refund as far as that goes and warn, but raise nothing.
            # (No contextlib.suppress: that module may be gone too.)
            try:  # noqa: SIM105
                self._core.account.abandon(held)
            except Exception:  # noqa: BLE001, S110 - best effort while the interpreter exits
                pass
            try:  # noqa: SIM105
                _warn(message, ResourceWarning, source=self, stacklevel=1)
            except Exception:  # noqa: BLE001, S110 - nowhere left to report it
                pass
            return
        # Never entered an exit: give the budget back first (warnings may be errors).
        self._core.account.abandon(held)
        _log.logger.warning(_log.ABANDONED, budget=self._core.name, reserved=self.amounts)
        if self._options.ttl is not None:
            return  # a ttl says it may be left unclosed: refunded and logged, no warning
        _warn(message, ResourceWarning, source=self, stacklevel=1)


_new: Final = object.__new__


def plain(core: BudgetCore, amounts: tuple[int, ...], options: Options = PLAIN) -> Reservation:
    """``Reservation(core, amounts, options)``, built field by field: cheaper than the
    call on the hottest paths (`Budget.reserve` with the default options, or only a
    timeout)."""
    reservation: Reservation = _new(Reservation)
    reservation._core = core
    reservation._amounts = amounts
    reservation._options = options
    reservation._state = _NEW
    reservation._held = None
    reservation._recorded = None
    reservation._pending = None
    reservation.verdict = None
    reservation.over_request_limit = False
    return reservation


async def try_enter(reservation: Reservation) -> Denial | None:
    """Reserve for *reservation* outside an ``async with`` block (waiting if it has a
    timeout): None when it now holds budget (closed by ``async with``, `commit` or
    `release`), else the denial."""
    return await reservation._open(_HELD)


async def enter(reservation: Reservation) -> Reservation:
    """Reserve as ``async with reservation:`` would (raising `BudgetExhausted` on a
    denial), but hold it outside any block: a later ``async with reservation:``, `commit`
    or `release` closes it. For frameworks that reserve in one place and close in another.
    """
    denial = await reservation._open(_HELD)
    if denial is not None:
        raise reservation._core.denied(denial)
    return reservation
