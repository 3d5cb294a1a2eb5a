"""The accounting kernel: synchronous, deterministic, standard library only.

Think of a budget as a ledger with one line per *dimension* (tokens, cost, calls, ...).
Each line has a ``limit`` and two counters: ``spent`` (what really happened) and
``reserved`` (what live reservations hold). Work reserves an estimate first, then
*settles*: the reservation is released exactly and the actual usage is added to
``spent``. The ledger always tells the truth, so a settle or a plain charge is never
refused, even past the limit; only new reservations (and strict charges) are.

This module is the single source of truth for those rules. It has no clock, no I/O, no
awaits, no logging, no randomness and no global state: every store runs it (the memory
store directly, the Redis store as a line-for-line Lua port checked against it by a
differential test), and `aiobudget.Budget` never re-implements a rule.

Amounts travel as tuples indexed by a ledger's dimension position, not as dicts, so that
each operation is O(number of dimensions) with no hashing on the hot path. Build them
with `Ledger.vector`.

A `Chain` is a budget and its ancestors (leaf first). Every chain operation is atomic
and all-or-nothing over the levels: a reservation fits only if it fits at every level.
The caller supplies the mutual exclusion (a lock, a Lua script).

Budgets that renew (`aiobudget.Period`) keep a *window* in their ledger: the store reads
its clock and tells the ledger which window is current (`Ledger.roll`); the ledger only
compares windows, closes the old one and starts from ``spent = 0``. Windows are pairs of
integers, by convention microseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from types import MappingProxyType
from typing import Final, NoReturn, final

from ._errors import (
    BudgetExceeded,
    InvalidAmount,
    InvalidLimits,
    ReservationClosed,
    UnknownDimension,
)

__all__ = [
    "MAX_AMOUNT",
    "Chain",
    "Crossing",
    "Denial",
    "Lease",
    "Ledger",
    "Limit",
    "Outcome",
    "Snapshot",
    "Status",
    "Verdict",
    "Window",
    "check_amount",
    "check_dim",
    "check_flag",
    "combine",
    "first_over",
    "from_micros",
    "saturate",
    "snapshot_of",
    "verdict_table",
]

MAX_AMOUNT: Final = 2**63 - 1
"""The largest amount, limit or total: Redis's signed 64-bit integer. Sums saturate here."""

_DIM_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_NEVER: Final = MAX_AMOUNT + 1  # a warn level no total can reach
# The type of a flag, typed loosely so that checking a value the signature says is a bool
# (hot paths test its type inline rather than call `check_flag`) type-checks.
_FLAG: Final[type] = bool
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_micros(us: int) -> datetime:
    """Integer microseconds since the Unix epoch as an aware UTC `datetime`."""
    return _EPOCH + timedelta(microseconds=us)


def check_amount(value: object, dim: str | None = None) -> int:
    """Return *value* if it is an ``int`` in ``0 .. MAX_AMOUNT``, else raise `InvalidAmount`.

    ``bool`` is refused although it is an ``int`` subclass: ``True`` tokens is a bug.
    """
    if type(value) is int and 0 <= value <= MAX_AMOUNT:
        return value
    where = f" for {dim!r}" if dim is not None else ""
    if type(value) is int:
        problem = "is negative" if value < 0 else f"is larger than {MAX_AMOUNT}"
    else:
        problem = f"is a {type(value).__name__}, not an int"
    raise InvalidAmount(
        f"amount{where} {value!r} {problem}; amounts are ints in 0 .. 2**63 - 1 "
        "(use usd() or money() for currency)",
        dim=dim,
        value=value,
    )


def check_dim(name: object) -> str:
    """Return *name* if it is a valid dimension name, else raise `InvalidLimits`."""
    if type(name) is not str or _DIM_RE.fullmatch(name) is None:
        raise InvalidLimits(
            f"dimension name {name!r} is invalid: use a non-empty string of letters, digits, "
            "'_', '-' and '.'"
        )
    return name


def check_flag(value: object, name: str) -> bool:
    """Return *value* if it is a ``bool``, else raise `TypeError`: an option such as
    ``use_headroom="false"`` must not count as true."""
    if value is True or value is False:
        return value
    raise TypeError(f"{name} must be True or False, not {value!r}")


def first_over(amounts: Sequence[int], caps: Sequence[int]) -> int:
    """Index of the first amount above its cap, or -1 when none is."""
    for i, (amount, cap) in enumerate(zip(amounts, caps)):
        if amount > cap:
            return i
    return -1


@final
@dataclass(frozen=True, slots=True)
class Limit:
    """The cap on one dimension.

    ``limit`` is the hard cap. ``warn`` (at most ``limit``) is the total at which verdicts
    turn to `Status.WARN`. ``headroom`` (at most ``limit``) is kept back from ordinary
    reservations for wrap-up work; a reservation made with ``use_headroom=True`` may use it.
    A plain ``int`` in a limits mapping means ``Limit(int)``.
    """

    limit: int
    warn: int | None = field(default=None, kw_only=True)
    headroom: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        check_amount(self.limit, "limit")
        if self.warn is not None:
            check_amount(self.warn, "warn")
            if self.warn > self.limit:
                raise InvalidLimits(f"warn {self.warn} is above the limit {self.limit}")
        check_amount(self.headroom, "headroom")
        if self.headroom > self.limit:
            raise InvalidLimits(f"headroom {self.headroom} is above the limit {self.limit}")

    @classmethod
    def of(cls, value: Limit | int) -> Limit:
        """*value* as a `Limit`: an ``int`` becomes ``Limit(int)``."""
        return value if isinstance(value, Limit) else cls(value)


class Status(enum.Enum):
    """Where a budget stands after an operation."""

    CONTINUE = "continue"
    """Below every warn level."""
    WARN = "warn"
    """At or above a warn level on some dimension, below every limit."""
    EXHAUSTED = "exhausted"
    """At or above the limit on some dimension: new reservations there will not fit."""


_RANK: Final = {Status.CONTINUE: 0, Status.WARN: 1, Status.EXHAUSTED: 2}


@final
@dataclass(frozen=True, slots=True)
class Verdict:
    """The status of a budget and the dimension that caused it.

    ``dim`` is ``None`` for `Status.CONTINUE`; otherwise it is the first dimension, in
    declaration order, at the worst status.
    """

    status: Status
    dim: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the budget is exhausted."""
        return self.status is not Status.EXHAUSTED


CONTINUE: Final = Verdict(Status.CONTINUE)


def verdict_table(dims: Sequence[str]) -> tuple[Verdict, ...]:
    """Every verdict a budget with *dims* can have, by code: 0 is CONTINUE, ``1 + i``
    WARN on ``dims[i]``, ``1 + len(dims) + i`` EXHAUSTED on ``dims[i]`` (the codes the
    Redis scripts answer with)."""
    return (
        CONTINUE,
        *(Verdict(Status.WARN, dim) for dim in dims),
        *(Verdict(Status.EXHAUSTED, dim) for dim in dims),
    )


@final
@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget whose status rose (to WARN or EXHAUSTED) for the first time since its
    last reset. Reported once per crossing so logs and callbacks are not flooded.

    ``level`` counts from the leaf of the chain the operation ran on (0 is the budget
    itself, 1 its parent, ...): names need not be unique along a chain.
    """

    budget: str | None
    verdict: Verdict
    level: int = 0


@final
@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation did: the verdict over the whole chain (the worst level; the
    nearest one on a tie) and the crossings it caused."""

    verdict: Verdict
    crossings: tuple[Crossing, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class Denial:
    """Why a reservation did not fit: at which level (``budget``, ``level`` counted from
    the leaf) and dimension, what was asked, and what that request could still have had.

    ``impossible`` is true when ``spent`` alone rules the request out, so waiting for live
    reservations to settle cannot help. ``queued`` is true when the request would fit but
    earlier waiting reservations come first (stores set it; the kernel has no queue).
    ``resets_at`` is when that level's current window ends, for a budget with a period.
    """

    budget: str | None
    level: int
    dim: str
    requested: int
    remaining: int
    impossible: bool
    queued: bool = False
    resets_at: datetime | None = None


@final
@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view of one budget: per dimension its `Limit`, ``spent``,
    ``reserved`` and ``remaining`` (``limit - spent - reserved``, floored at 0), the
    budget's own `Verdict`, and how many reservations it holds and has waiting.

    For a budget with a period, ``period_start`` is when its current window began and
    ``resets_at`` when it ends (aware UTC datetimes); both are ``None`` otherwise.
    """

    limits: Mapping[str, Limit]
    spent: Mapping[str, int]
    reserved: Mapping[str, int]
    remaining: Mapping[str, int]
    verdict: Verdict
    held: int = 0
    """Live reservations holding budget here (a child's count at every level they hold)."""
    waiting: int = 0
    """Reservations queued here, held back by this budget (stores set it; the kernel has
    no queue)."""
    period_start: datetime | None = None
    resets_at: datetime | None = None


@final
@dataclass(frozen=True, slots=True)
class Window:
    """A window of a budget's period that closed: ``start`` and ``end`` as the store gave
    them to `Ledger.roll` (microseconds since the Unix epoch), and the ``spent`` it
    ended with, by dimension."""

    budget: str | None
    start: int
    end: int
    spent: Mapping[str, int]


@final
class Ledger:
    """The counters of one budget, and its limits.

    ``Ledger({"tokens": Limit(1000, warn=800), "calls": 10}, name="run-1")``. The set of
    dimensions and their order are fixed at construction; the order decides which
    dimension a verdict names when several qualify.
    """

    __slots__ = (
        "_alert",
        "_calm_hard",
        "_calm_soft",
        "_hard",
        "_index",
        "_leases",
        "_narrow",
        "_outcomes",
        "_peak",
        "_pick",
        "_soft",
        "_spent",
        "_used",
        "_verdicts",
        "_warn",
        "_width",
        "_window",
        "dims",
        "limits",
        "name",
    )

    def __init__(self, limits: Mapping[str, Limit | int], *, name: str | None = None) -> None:
        if not isinstance(limits, Mapping):
            raise InvalidLimits(
                f"limits must be a mapping of dimension to Limit or int, not {limits!r}"
            )
        if not limits:
            raise InvalidLimits("a budget needs at least one dimension")
        self.name = name
        self.dims: tuple[str, ...] = tuple(check_dim(dim) for dim in limits)
        self.limits: tuple[Limit, ...] = tuple(Limit.of(value) for value in limits.values())
        self._index = {dim: i for i, dim in enumerate(self.dims)}
        self._pick = itemgetter(*self.dims)  # one value (not a tuple) when _narrow
        self._width = len(self.dims)
        self._narrow = self._width == 1
        self._spent = [0] * len(self.dims)
        # spent + reserved: what every check and verdict compares, so it is kept rather
        # than ``reserved`` (which is ``used - spent`` whenever it is asked for).
        self._used = [0] * len(self.dims)
        self._set_caps()
        # Verdicts and quiet outcomes are built once, so the hot path allocates neither.
        self._verdicts = verdict_table(self.dims)
        self._outcomes = tuple(Outcome(verdict) for verdict in self._verdicts)
        self._peak = 0
        self._leases = 0  # live leases holding budget here
        self._window: tuple[int, int] | None = None

    def _set_caps(self) -> None:
        self._hard = tuple(limit.limit for limit in self.limits)
        self._soft = tuple(limit.limit - limit.headroom for limit in self.limits)
        self._warn = tuple(_NEVER if limit.warn is None else limit.warn for limit in self.limits)
        # Below every alert level the verdict is CONTINUE, known without a second pass.
        self._alert = tuple(min(hard, warn) for hard, warn in zip(self._hard, self._warn))
        # A reservation whose new total stays at or below "calm" both fits and stays
        # below the alert level: one comparison per dimension in the common case.
        self._calm_soft = tuple(min(cap, alert - 1) for cap, alert in zip(self._soft, self._alert))
        self._calm_hard = tuple(min(cap, alert - 1) for cap, alert in zip(self._hard, self._alert))

    def __repr__(self) -> str:
        lines = ", ".join(
            f"{dim}={spent}+{used - spent}/{limit.limit}"
            for dim, spent, used, limit in zip(self.dims, self._spent, self._used, self.limits)
        )
        return f"<Ledger {self.name!r} {lines}>"

    # -- reading ---------------------------------------------------------------------

    @property
    def spent(self) -> tuple[int, ...]:
        """What was really used, per dimension."""
        return tuple(self._spent)

    @property
    def reserved(self) -> tuple[int, ...]:
        """What live reservations hold, per dimension."""
        return tuple(used - spent for used, spent in zip(self._used, self._spent))

    def vector(self, amounts: Mapping[str, object]) -> tuple[int, ...]:
        """Validate *amounts* (dimension -> int) and return them as a tuple in this ledger's
        order; dimensions not named are 0. Raises `UnknownDimension` or `InvalidAmount`."""
        if type(amounts) is dict and len(amounts) == self._width:
            # The common shape, every dimension named (in any order): picked in C, and
            # only the values are checked here.
            try:
                picked = self._pick(amounts)
            except KeyError:
                pass
            else:
                values: tuple[int, ...] = (picked,) if self._narrow else picked
                for amount in values:
                    if type(amount) is not int or amount < 0 or amount > MAX_AMOUNT:
                        break
                else:
                    return values
        out = [0] * len(self.dims)
        index = self._index
        try:
            for dim, value in amounts.items():
                out[index[dim]] = (
                    value
                    if type(value) is int and 0 <= value <= MAX_AMOUNT
                    else check_amount(value, dim if isinstance(dim, str) else None)
                )
        except KeyError:
            unknown = next(dim for dim in amounts if dim not in index)
            raise UnknownDimension(str(unknown), known=self.dims, budget=self.name) from None
        return tuple(out)

    def mapping(self, vector: Iterable[int]) -> dict[str, int]:
        """*vector* as a dict keyed by dimension."""
        return dict(zip(self.dims, vector))

    def _code(self) -> int:
        warn = 0
        n = len(self._hard)
        for i, (used, hard, level) in enumerate(zip(self._used, self._hard, self._warn)):
            if used >= hard:
                return 1 + n + i
            if not warn and used >= level:
                warn = 1 + i
        return warn

    def _rank(self, code: int) -> int:
        return 0 if code == 0 else 1 if code <= len(self._hard) else 2

    def verdict(self) -> Verdict:
        """This ledger's own verdict."""
        return self._verdicts[self._code()]

    @property
    def window(self) -> tuple[int, int] | None:
        """The current window ``(start, end)`` of a budget with a period, else ``None``."""
        return self._window

    def snapshot(self, *, waiting: int = 0) -> Snapshot:
        """A frozen copy of the counters; *waiting* is the store's count of queued
        reservations held back here."""
        remaining = (max(0, limit - used) for limit, used in zip(self._hard, self._used))
        window = self._window
        return Snapshot(
            limits=MappingProxyType(dict(zip(self.dims, self.limits))),
            spent=MappingProxyType(self.mapping(self._spent)),
            reserved=MappingProxyType(self.mapping(self.reserved)),
            remaining=MappingProxyType(self.mapping(remaining)),
            verdict=self.verdict(),
            held=self._leases,
            waiting=waiting,
            period_start=None if window is None else from_micros(window[0]),
            resets_at=None if window is None else from_micros(window[1]),
        )

    # -- changing ----------------------------------------------------------------------

    def reset(self) -> Outcome:
        """Start a new period: ``spent`` goes to 0; live reservations stay counted."""
        self._used = [used - spent for used, spent in zip(self._used, self._spent)]
        self._spent = [0] * len(self.dims)
        code = self._code()
        self._peak = self._rank(code)
        return self._outcomes[code]

    def roll(self, start: int, end: int) -> Window | None:
        """The store's clock says the current window is ``[start, end)``.

        The first window is adopted as it is. A window that starts at or after the end
        of the current one closes the current one: it is returned with its final
        ``spent``, and ``spent`` goes to 0 as with `reset` (live reservations stay
        counted; crossings are reported again). Any other window changes nothing:
        the same window again, or an earlier one from a clock that stepped back
        (windows never go back, so no window is closed twice).
        """
        _check_window(start, end)
        current = self._window
        if current is None:
            self._window = (start, end)
            return None
        if start < current[1]:
            return None
        closed = Window(
            self.name, current[0], current[1], MappingProxyType(self.mapping(self._spent))
        )
        self.reset()
        self._window = (start, end)
        return closed

    def set_window(self, window: tuple[int, int] | None) -> None:
        """Adopt *window* without closing the current one (the period was changed or
        removed): what was spent carries over."""
        if window is not None:
            _check_window(*window)
        self._window = window

    def set_limits(self, limits: Mapping[str, Limit | int], *, report: bool = True) -> Outcome:
        """Replace the limits of the existing dimensions (same names, same order).

        Counters are kept, so a lower limit can leave the budget over it: the verdict says
        so and new reservations wait or are denied, exactly as after an overspend. With
        ``report=False`` a crossing the new limits cause is left for the next operation
        to report (for callers that cannot announce it now).
        """
        check_flag(report, "report")
        new = tuple(Limit.of(limits[dim]) if dim in limits else None for dim in self.dims)
        if tuple(limits) != self.dims or None in new:
            raise InvalidLimits(
                f"new limits must name the same dimensions in the same order: {self.dims}"
            )
        self.limits = tuple(limit for limit in new if limit is not None)
        self._set_caps()
        code = self._code()
        self._peak = min(self._peak, self._rank(code))
        return self._finish(code) if report else self._outcomes[code]

    def remaining(self, i: int) -> int:
        """``limit - spent - reserved`` of dimension *i*, floored at 0."""
        return max(0, self._hard[i] - self._used[i])

    def rules_out(self, amounts: Sequence[int], *, use_headroom: bool = False) -> bool:
        """True when ``spent`` alone leaves no room for *amounts* (in this ledger's order)."""
        if type(use_headroom) is not _FLAG:  # `check_flag` without a call when it is one
            check_flag(use_headroom, "use_headroom")
        caps = self._hard if use_headroom else self._soft
        spent = self._spent
        if len(amounts) != len(spent):
            _wrong_length(amounts, len(spent))
        i = 0
        for amount in amounts:  # indexes rather than a zip: asked after every settle
            if spent[i] + amount > caps[i]:
                return True
            i += 1
        return False

    def _finish(self, code: int) -> Outcome:
        """The outcome for this ledger's new *code*, noting a first crossing."""
        rank = self._rank(code)
        if rank <= self._peak:
            return self._outcomes[code]
        self._peak = rank
        verdict = self._verdicts[code]
        return Outcome(verdict, (Crossing(self.name, verdict),))


def _check_window(start: object, end: object) -> None:
    if type(start) is not int or type(end) is not int or not start < end:
        raise ValueError(f"a window is two ints, start before end, not {(start, end)!r}")


def _wrong_length(amounts: Sequence[int], expected: int) -> NoReturn:
    raise InvalidAmount(
        f"an amount vector of {len(amounts)} values for a ledger of {expected} dimensions; "
        "build it with Ledger.vector()",
        value=amounts,
    )


def saturate(value: int) -> int:
    """*value*, or ``MAX_AMOUNT`` when it is larger: sums saturate rather than overflow."""
    return value if value <= MAX_AMOUNT else MAX_AMOUNT


@final
class Lease:
    """A live reservation: what it holds at each level of its chain.

    Settle or release it exactly once; a second attempt raises `ReservationClosed` and
    changes nothing, so a refund can never be paid twice.
    """

    __slots__ = ("_levels", "amounts", "chain", "outcome")

    def __init__(
        self,
        chain: Chain,
        amounts: tuple[int, ...],
        levels: tuple[tuple[int, ...], ...] | None,
        outcome: Outcome,
    ) -> None:
        self.chain = chain
        self.amounts = amounts
        self.outcome = outcome
        self._levels = levels  # per-level projections; None for a one-level chain

    @property
    def open(self) -> bool:
        """True until the lease is settled or released."""
        return self.chain is not _CLOSED

    def _close(self) -> Chain:
        chain = self.chain
        if chain is _CLOSED:
            raise ReservationClosed("this reservation was already settled or released")
        self.chain = _CLOSED
        return chain

    def settle(self, actual: Sequence[int]) -> Outcome:
        """Release what is held and add *actual* (leaf dimensions) to ``spent``. Never
        refused: spend that happened is recorded, even past the limit."""
        chain = self.chain
        if chain is _CLOSED:
            raise ReservationClosed("this reservation was already settled or released")
        held = self.amounts
        if len(actual) != chain._width:
            _wrong_length(actual, chain._width)
        self.chain = _CLOSED
        if self._levels is None:  # one level: `_settle`, inlined on the hottest path
            ledger = chain.leaf
            ledger._leases -= 1
            spent, used, alert = ledger._spent, ledger._used, ledger._alert
            loud = False
            i = 0
            for hold in held:
                amount = actual[i]
                spent[i] += amount
                total = used[i] = used[i] + amount - hold
                if total >= alert[i]:
                    loud = True
                i += 1
            if loud:
                _clamp_spent(ledger)
                return ledger._finish(ledger._code())
            return ledger._outcomes[0]
        outcomes = []
        loud = False
        for ledger, held, view in zip(chain.ledgers, self._levels, chain._views):
            outcome = _settle(ledger, held, actual if view is None else _project(actual, view))
            if outcome is not ledger._outcomes[0]:
                loud = True
            outcomes.append(outcome)
        return _combine(outcomes) if loud else outcomes[0]

    def release(self) -> Outcome:
        """Give everything back untouched."""
        chain = self._close()
        if self._levels is None:
            return _release(chain.ledgers[0], self.amounts)
        return _combine(
            [_release(ledger, held) for ledger, held in zip(chain.ledgers, self._levels)]
        )


_new_lease: Final = object.__new__


def _settle(ledger: Ledger, held: Sequence[int], actual: Sequence[int]) -> Outcome:
    spent, used, alert = ledger._spent, ledger._used, ledger._alert
    ledger._leases -= 1
    loud = False
    i = 0
    for hold in held:
        amount = actual[i]
        spent[i] += amount
        total = used[i] = used[i] + amount - hold
        if total >= alert[i]:
            loud = True
        i += 1
    if loud:
        _clamp_spent(ledger)
        return ledger._finish(ledger._code())
    return ledger._outcomes[0]


def _add(ledger: Ledger, actual: Sequence[int]) -> Outcome:
    spent, used, alert = ledger._spent, ledger._used, ledger._alert
    loud = False
    i = 0
    for amount in actual:
        spent[i] += amount
        total = used[i] = used[i] + amount
        if total >= alert[i]:
            loud = True
        i += 1
    if loud:
        _clamp_spent(ledger)
        return ledger._finish(ledger._code())
    return ledger._outcomes[0]


def _clamp_spent(ledger: Ledger) -> None:
    """Bring a ``spent`` that additions took past `MAX_AMOUNT` back to it (``used``
    with it). Sums are added unclamped on the hot paths and clamped here, only after an
    operation that reached an alert level: spent > MAX_AMOUNT means used >= spent is past
    every alert level, which are at most MAX_AMOUNT."""
    spent, used = ledger._spent, ledger._used
    i = 0
    for total in spent:
        if total > MAX_AMOUNT:
            used[i] -= total - MAX_AMOUNT
            spent[i] = MAX_AMOUNT
        i += 1


def _release(ledger: Ledger, held: Sequence[int]) -> Outcome:
    used = ledger._used
    ledger._leases -= 1
    i = 0
    for hold in held:
        used[i] -= hold
        i += 1
    return ledger._outcomes[ledger._code()]  # totals only fell: nothing can cross


def _project(vector: Sequence[int], view: tuple[int, ...] | None) -> tuple[int, ...]:
    """*vector* (leaf order) as a level with *view* sees it (see `Chain`)."""
    if view is None:
        return tuple(vector)  # a tuple is returned as is, without a copy
    return tuple(0 if j < 0 else vector[j] for j in view)


def combine(outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome of one operation over a chain from each level's (leaf first): the
    worst verdict (the nearest level on a tie), and every crossing, with its level."""
    return _combine(outcomes)


def snapshot_of(
    limits: Mapping[str, Limit],
    spent: Sequence[int],
    reserved: Sequence[int],
    verdict: Verdict,
    *,
    held: int = 0,
    waiting: int = 0,
    period_start: datetime | None = None,
    resets_at: datetime | None = None,
) -> Snapshot:
    """A `Snapshot` of counters given in the order of *limits*, as `Ledger.snapshot`
    gives one: ``remaining`` is ``limit - spent - reserved``, floored at 0."""
    dims = tuple(limits)
    remaining = (
        max(0, limit.limit - s - r) for limit, s, r in zip(limits.values(), spent, reserved)
    )
    return Snapshot(
        limits=MappingProxyType(dict(limits)),
        spent=MappingProxyType(dict(zip(dims, spent))),
        reserved=MappingProxyType(dict(zip(dims, reserved))),
        remaining=MappingProxyType(dict(zip(dims, remaining))),
        verdict=verdict,
        held=held,
        waiting=waiting,
        period_start=period_start,
        resets_at=resets_at,
    )


def _combine(outcomes: Sequence[Outcome]) -> Outcome:
    """The worst verdict over levels (the nearest on a tie), with every crossing."""
    worst = outcomes[0].verdict
    crossings: tuple[Crossing, ...] = ()
    for level, outcome in enumerate(outcomes):
        if _RANK[outcome.verdict.status] > _RANK[worst.status]:
            worst = outcome.verdict
        if outcome.crossings:
            crossings += tuple(
                Crossing(crossing.budget, crossing.verdict, level) for crossing in outcome.crossings
            )
    if not crossings and worst is outcomes[0].verdict:
        return outcomes[0]
    return Outcome(worst, crossings)


@final
class Chain:
    """A budget and its ancestors, leaf first: the unit every operation applies to.

    Dimensions match by name. A parent that lacks one of the leaf's dimensions is not
    charged for it; a parent's dimension the leaf lacks is charged 0.
    """

    __slots__ = ("_single", "_views", "_width", "indexes", "leaf", "ledgers")

    def __init__(self, ledgers: Sequence[Ledger]) -> None:
        if not ledgers:
            raise ValueError("a chain needs at least one ledger")
        self.ledgers = tuple(ledgers)
        self.leaf = self.ledgers[0]
        leaf_index = self.leaf._index
        # For each level, the leaf position of each of its dimensions (-1: not in the leaf).
        self.indexes: tuple[tuple[int, ...] | None, ...] = (
            None,
            *(tuple(leaf_index.get(dim, -1) for dim in ledger.dims) for ledger in self.ledgers[1:]),
        )
        # The same, with None for every level whose dimensions are the leaf's in the same
        # order (a child that names none of its own): those levels reuse the leaf vector.
        identity = tuple(range(len(self.leaf.dims)))
        self._views = tuple(None if index == identity else index for index in self.indexes)
        self._single = self.leaf if len(self.ledgers) == 1 else None
        self._width = self.leaf._width

    def reserve(self, amounts: tuple[int, ...], use_headroom: bool = False) -> Lease | Denial:
        """Hold *amounts* at every level, or change nothing and say where it does not fit.

        Fits when ``spent + reserved + amount <= limit - headroom`` on every dimension of
        every level (``<= limit`` with *use_headroom*).
        """
        if type(use_headroom) is not _FLAG:
            check_flag(use_headroom, "use_headroom")
        ledger = self._single
        if ledger is None:
            return self._reserve_levels(amounts, use_headroom)
        used = ledger._used
        if len(amounts) != ledger._width:
            _wrong_length(amounts, ledger._width)
        calm = ledger._calm_hard if use_headroom else ledger._calm_soft
        loud = False
        i = 0
        for amount in amounts:  # held as checked; given back if a later one does not fit
            total = used[i] + amount
            if total > calm[i]:  # rare: past the alert level, or not fitting at all
                if total > (ledger._hard if use_headroom else ledger._soft)[i]:
                    for j in range(i):
                        used[j] -= amounts[j]
                    return self._deny(0, i, amounts, use_headroom)
                loud = True
            used[i] = total
            i += 1
        # Built field by field: cheaper than a call to Lease(...) on the hottest path.
        lease = _new_lease(Lease)
        lease.chain = self
        lease.amounts = amounts
        lease.outcome = ledger._finish(ledger._code()) if loud else ledger._outcomes[0]
        lease._levels = None
        ledger._leases += 1
        return lease

    def _reserve_levels(self, amounts: tuple[int, ...], use_headroom: bool) -> Lease | Denial:
        taken = self._take_levels(amounts, use_headroom)
        if type(taken) is Lease:
            return taken
        level, i = taken
        return self._deny(level, i, amounts, use_headroom)

    def take(self, amounts: tuple[int, ...], use_headroom: bool = False) -> Lease | int:
        """`reserve` for a caller that needs no `Denial`: the lease, or the first level
        (counted from the leaf) at which *amounts* do not fit now, nothing changed.

        A wait queue handing budget over asks this of each waiter it walks, and needs
        only the level of those that do not fit, so none is built for them.
        """
        if type(use_headroom) is not _FLAG:
            check_flag(use_headroom, "use_headroom")
        ledger = self._single
        if ledger is None:
            taken = self._take_levels(amounts, use_headroom)
            return taken if type(taken) is Lease else taken[0]
        # `reserve`'s one-level path, repeated rather than shared: on the hand-over path a
        # call costs more than these lines, and the kernel tests hold the two to each other.
        used = ledger._used
        if len(amounts) != ledger._width:
            _wrong_length(amounts, ledger._width)
        calm = ledger._calm_hard if use_headroom else ledger._calm_soft
        loud = False
        i = 0
        for amount in amounts:  # held as checked; given back if a later one does not fit
            total = used[i] + amount
            if total > calm[i]:
                if total > (ledger._hard if use_headroom else ledger._soft)[i]:
                    for j in range(i):
                        used[j] -= amounts[j]
                    return 0
                loud = True
            used[i] = total
            i += 1
        lease = _new_lease(Lease)
        lease.chain = self
        lease.amounts = amounts
        lease.outcome = ledger._finish(ledger._code()) if loud else ledger._outcomes[0]
        lease._levels = None
        ledger._leases += 1
        return lease

    def _take_levels(self, amounts: tuple[int, ...], use_headroom: bool) -> Lease | tuple[int, int]:
        """Hold *amounts* at every level of a chain of several, or change nothing and
        return the first level and dimension where they do not fit."""
        if len(amounts) != self._width:
            _wrong_length(amounts, self._width)
        levels = tuple(
            [amounts if view is None else _project(amounts, view) for view in self._views]
        )
        for level, (ledger, held) in enumerate(zip(self.ledgers, levels)):
            i = _first_unfit(ledger, held, ledger._hard if use_headroom else ledger._soft)
            if i >= 0:
                return level, i
        loud = False
        for ledger, held in zip(self.ledgers, levels):
            if _hold(ledger, held):
                loud = True
        if not loud:
            return Lease(self, amounts, levels, self.leaf._outcomes[0])
        outcomes = [ledger._finish(ledger._code()) for ledger in self.ledgers]
        return Lease(self, amounts, levels, _combine(outcomes))

    def refusing_level(self, amounts: tuple[int, ...], *, use_headroom: bool = False) -> int | None:
        """The first level (counted from the leaf) at which *amounts* would not fit now, or
        ``None`` when they fit everywhere: `check` without building a `Denial`."""
        if type(use_headroom) is not _FLAG:
            check_flag(use_headroom, "use_headroom")
        if len(amounts) != self._width:
            _wrong_length(amounts, self._width)
        ledger = self._single
        if ledger is not None:
            caps = ledger._hard if use_headroom else ledger._soft
            return 0 if _first_unfit(ledger, amounts, caps) >= 0 else None
        for level, (ledger, view) in enumerate(zip(self.ledgers, self._views)):
            caps = ledger._hard if use_headroom else ledger._soft
            if _first_unfit(ledger, _project(amounts, view), caps) >= 0:
                return level
        return None

    def check(self, amounts: tuple[int, ...], *, use_headroom: bool = False) -> Denial | None:
        """Where *amounts* would not fit now, or ``None`` if they would; changes nothing."""
        if type(use_headroom) is not _FLAG:
            check_flag(use_headroom, "use_headroom")
        if len(amounts) != self._width:
            _wrong_length(amounts, self._width)
        for level, (ledger, view) in enumerate(zip(self.ledgers, self._views)):
            caps = ledger._hard if use_headroom else ledger._soft
            i = _first_unfit(ledger, _project(amounts, view), caps)
            if i >= 0:
                return self._deny(level, i, amounts, use_headroom)
        return None

    def project(self, amounts: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        """*amounts* (leaf order) as seen by each level, leaf first."""
        if self._single is not None:
            return (amounts,)
        return tuple(_project(amounts, view) for view in self._views)

    def impossible(self, amounts: tuple[int, ...], *, use_headroom: bool = False) -> bool:
        """True when ``spent`` alone rules *amounts* out at some level: no settle of live
        reservations can make them fit (only a reset or new limits can)."""
        if self._single is not None:
            return self._single.rules_out(amounts, use_headroom=use_headroom)
        for ledger, view in zip(self.ledgers, self._views):
            if ledger.rules_out(_project(amounts, view), use_headroom=use_headroom):
                return True
        return False

    def _deny(self, level: int, i: int, amounts: tuple[int, ...], use_headroom: bool) -> Denial:
        ledger = self.ledgers[level]
        held = _project(amounts, self._views[level])
        caps = ledger._hard if use_headroom else ledger._soft
        remaining = max(0, caps[i] - ledger._used[i])
        impossible = self.impossible(amounts, use_headroom=use_headroom)
        window = ledger._window
        resets_at = None if window is None else from_micros(window[1])
        return Denial(
            ledger.name, level, ledger.dims[i], held[i], remaining, impossible, resets_at=resets_at
        )

    def charge(self, amounts: tuple[int, ...], *, strict: bool = False) -> Outcome:
        """Add *amounts* to ``spent`` at every level.

        Never refused, unless *strict*: then, if any level would pass a limit
        (``spent + reserved + amount > limit``), raise `BudgetExceeded` and change nothing.
        """
        check_flag(strict, "strict")
        if len(amounts) != self._width:
            _wrong_length(amounts, self._width)
        if not strict and self._single is not None:
            return _add(self.leaf, amounts)
        levels = [_project(amounts, view) for view in self._views]
        if strict:
            for ledger, held in zip(self.ledgers, levels):
                i = _first_unfit(ledger, held, ledger._hard)
                if i >= 0:
                    attempted = ledger._used[i] + held[i]
                    raise BudgetExceeded(
                        dim=ledger.dims[i],
                        limit=ledger._hard[i],
                        attempted=saturate(attempted),
                        budget=ledger.name,
                    )
        outcomes = [_add(ledger, held) for ledger, held in zip(self.ledgers, levels)]
        return outcomes[0] if len(outcomes) == 1 else _combine(outcomes)

    def verdict(self) -> Verdict:
        """The worst verdict over the chain, the nearest level on a tie."""
        return _combine([ledger._outcomes[ledger._code()] for ledger in self.ledgers]).verdict


def _first_unfit(ledger: Ledger, amounts: Sequence[int], caps: Sequence[int]) -> int:
    used = ledger._used
    i = 0
    for amount in amounts:
        if used[i] + amount > caps[i]:
            return i
        i += 1
    return -1


def _hold(ledger: Ledger, amounts: Sequence[int]) -> bool:
    """Add *amounts* to ``used`` and count the lease; True when a total reached the alert
    level."""
    used, alert = ledger._used, ledger._alert
    ledger._leases += 1
    loud = False
    i = 0
    for amount in amounts:
        total = used[i] = used[i] + amount
        if total >= alert[i]:
            loud = True
        i += 1
    return loud


_CLOSED: Final = Chain([Ledger({"closed": 0}, name="<closed>")])
