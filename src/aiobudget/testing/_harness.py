"""The conformance kit's machinery: a registry of checks, assertions that survive
``python -O``, and helpers that build budgets and drive reservations."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final, Generic, NoReturn, TypeVar, Union

import anyio

from .._budget import Budget
from .._errors import (
    BudgetExhausted,
)
from ..kernel import Limit, Snapshot, Status, Verdict
from ..protocols import Store

if TYPE_CHECKING:
    from types import TracebackType

    from .._reservation import Reservation

StoreFactory = Callable[[], Union[Store, Awaitable[Store]]]  # noqa: UP007 - runtime alias on 3.10
"""A callable returning a fresh store, directly or as an awaitable: ``MemoryStore`` will do."""

Check = Callable[[StoreFactory], Awaitable[None]]
"""One conformance check: ``await check(make_store)`` raises `AssertionError` on a failure
(any unexpected exception is turned into one, chained)."""

TIME_LIMIT: Final = 10.0
"""Seconds a check may take before it fails (a wait that never ends, a hung store)."""

WAIT: Final = 5.0  # how long a waiter that should be granted is given: far more than enough
TIMEOUT: Final = 0.05  # the one real timeout, in `waiting_times_out`

CONTINUE: Final = Verdict(Status.CONTINUE)

E = TypeVar("E", bound=BaseException)


# -- helpers ----------------------------------------------------------------------------
# Failures raise AssertionError explicitly rather than with `assert`, which `python -O`
# strips: a shipped checker must not pass everything when optimized.


def fail(message: str) -> NoReturn:
    raise AssertionError(message)


def equal(what: str, expected: object, actual: object) -> None:
    if expected != actual:
        fail(f"{what}: expected {expected!r}, got {actual!r}")


def warn_at(dim: str) -> Verdict:
    return Verdict(Status.WARN, dim)


def exhausted_at(dim: str) -> Verdict:
    return Verdict(Status.EXHAUSTED, dim)


def unique_name(tag: str) -> str:
    return f"aiobudget-conformance-{tag}-{uuid.uuid4().hex[:12]}"


async def new_store(make_store: StoreFactory) -> Store:
    made = make_store()
    store = await made if isinstance(made, Awaitable) else made
    if not isinstance(store, Store):
        fail(f"make_store() returned {store!r}, which has no open() method: not a Store")
    return store


async def new_budget(
    make_store: StoreFactory, limits: Mapping[str, Limit | int], tag: str
) -> Budget:
    """A budget with a name of its own in a new store."""
    return Budget(limits, name=unique_name(tag), store=await new_store(make_store))


async def expect_counters(
    budget: Budget,
    what: str,
    *,
    spent: Mapping[str, int] | None = None,
    reserved: Mapping[str, int] | None = None,
) -> Snapshot:
    """Check *budget*'s counters (dimensions not named are 0) and that ``remaining`` is
    ``limit - spent - reserved`` floored at 0; return the snapshot."""
    snap = await budget.snapshot()
    want_spent = {dim: (spent or {}).get(dim, 0) for dim in budget.dims}
    want_reserved = {dim: (reserved or {}).get(dim, 0) for dim in budget.dims}
    got_spent, got_reserved = dict(snap.spent), dict(snap.reserved)
    if (want_spent, want_reserved) != (got_spent, got_reserved):
        fail(
            f"{what}: expected spent {want_spent} and reserved {want_reserved}; "
            f"the store has spent {got_spent} and reserved {got_reserved}"
        )
    want_remaining = {
        dim: max(0, snap.limits[dim].limit - got_spent[dim] - got_reserved[dim])
        for dim in budget.dims
    }
    equal(f"{what}: snapshot remaining", want_remaining, dict(snap.remaining))
    return snap


async def held_reservation(budget: Budget, what: str, **dims: int) -> Reservation:
    """``try_reserve(**dims)``, which the check expects to fit."""
    reservation = await budget.try_reserve(dims)
    if reservation is None:
        fail(f"{what}: try_reserve({dims}) was refused, but it fits")
    live = LIVE.get()
    if live is not None:
        live.append(reservation)
    return reservation


async def expect_refused(
    budget: Budget, what: str, *, use_headroom: bool = False, **dims: int
) -> None:
    """``try_reserve(**dims)``, which the check expects to return ``None``."""
    reservation = await budget.try_reserve(dims, use_headroom=use_headroom)
    if reservation is not None:
        await reservation.release()
        fail(f"{what}: try_reserve({dims}) returned a reservation instead of None")


class Raises(Generic[E]):
    """``with Raises(Kind, what) as caught:`` fails unless the block raises *Kind*."""

    def __init__(self, kind: type[E], what: str) -> None:
        self.kind = kind
        self.what = what
        self.value: E | None = None

    def __enter__(self) -> Raises[E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            fail(f"{self.what}: expected {self.kind.__name__}, nothing was raised")
        if isinstance(exc, self.kind):
            self.value = exc
            return True
        if isinstance(exc, Exception) and not isinstance(exc, AssertionError):
            raise AssertionError(
                f"{self.what}: expected {self.kind.__name__}, got {exc!r}"
            ) from exc
        return False

    @property
    def error(self) -> E:
        if self.value is None:  # pragma: no cover - __exit__ fails first
            fail(f"{self.what}: nothing was raised")
        return self.value


GRANTED: Final = "granted"


class Waiter:
    """A task's reservation with a timeout: ``await run()`` in a task group, then read
    ``outcome`` (``None`` while waiting, then "granted" or "refused (...)")."""

    def __init__(
        self,
        budget: Budget,
        amounts: Mapping[str, int],
        *,
        timeout: float,
        record: Mapping[str, int] | None = None,
        hold: bool = False,
    ) -> None:
        self.budget = budget
        self.amounts = amounts
        self.timeout = timeout
        self.record = record
        self.hold = hold
        self.outcome: str | None = None
        self.done = anyio.Event()

    def __str__(self) -> str:
        return self.outcome or "still waiting"

    async def run(self) -> None:
        try:
            async with self.budget.reserve(self.amounts, timeout=self.timeout) as r:
                self.outcome = GRANTED
                if self.record is not None:
                    r.record(self.record)
                if self.hold:
                    await anyio.sleep_forever()
        except BudgetExhausted as exc:
            self.outcome = f"refused ({exc})"
        finally:
            self.done.set()


REGISTERED: list[Check] = []
LIVE: ContextVar[list[Reservation] | None] = ContextVar("LIVE", default=None)


def register(func: Check) -> Check:
    """Register a check, failing it (instead of hanging) after `TIME_LIMIT` seconds."""

    @functools.wraps(func)
    async def check(make_store: StoreFactory) -> None:
        live: list[Reservation] = []
        token = LIVE.set(live)
        try:
            with anyio.fail_after(TIME_LIMIT):
                await func(make_store)
        except AssertionError:
            raise
        except TimeoutError as exc:
            raise AssertionError(
                f"did not finish within {TIME_LIMIT} s: a wait that should end never did"
            ) from exc
        except Exception as exc:  # a store error is a failed check too: say so, chained
            raise AssertionError(f"raised {exc!r}") from exc
        finally:
            LIVE.reset(token)
            # A failed check leaves no reservation open behind it (nor a ResourceWarning).
            with anyio.CancelScope(shield=True):
                for reservation in live:
                    if reservation.held:
                        with contextlib.suppress(Exception):
                            await reservation.release()

    REGISTERED.append(check)
    return check
