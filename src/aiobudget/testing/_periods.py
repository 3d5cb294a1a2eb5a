"""Conformance checks: budgets that renew (`aiobudget.Period`).

A period check must move the store's clock past boundaries. When the store's ``clock``
attribute is a `ManualClock` (``MemoryStore(clock=ManualClock())``), the check moves it
and uses calendar periods across a DST change. Any other clock (``time.time``, Redis's
``TIME``) cannot be moved, so the check uses fixed windows of `REAL_WINDOW` seconds and
waits for them: the only real sleeps of the kit, a few windows per check. Steps that
must fall inside one window start just after a boundary and are retried on a fresh
budget if the machine stalled past the next one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog

from .. import _log
from .._budget import Budget
from .._errors import BudgetExhausted, LimitsMismatch
from .._period import Period
from ..kernel import Limit, Snapshot, Status, Verdict
from ._clock import ManualClock
from ._harness import (
    Raises,
    StoreFactory,
    equal,
    expect_counters,
    fail,
    held_reservation,
    new_store,
    register,
    unique_name,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence

    from ..protocols import Store

__all__ = ["REAL_WINDOW"]

REAL_WINDOW: Final = 0.25
"""Seconds of the fixed windows a check uses on a store whose clock it cannot move."""

UTC: Final = timezone.utc
_POLL: Final = 0.01  # seconds between snapshots while waiting for a real boundary
# Seconds waited past a real boundary before the first snapshot: a snapshot is an
# operation, and one taken a hair before the boundary (a store clock a little behind
# ours) would make a quiet window active.
_MARGIN: Final = 0.02
_ATTEMPTS: Final = 3  # fresh tries of a real-time check whose window was overrun
# Manual clocks: the evening before Europe/Berlin moves to summer time (2024-03-31 has
# 23 hours), and a Monday in the middle of a 31-day month.
_BEFORE_DST: Final = datetime(2024, 3, 30, 20, 0, tzinfo=UTC)
_MID_MONTH: Final = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


class _Overrun(Exception):
    """Steps meant for one window of real time spanned two: try again."""


class _Time:
    """A check's hold on the store's clock: moved if manual, waited for otherwise."""

    def __init__(self, store: Store) -> None:
        clock = getattr(store, "clock", None)
        self.manual = clock if isinstance(clock, ManualClock) else None

    def period(self, calendar: Period, windows: int = 1) -> Period:
        """*calendar* with a manual clock, else fixed windows of *windows* real ones."""
        return calendar if self.manual is not None else Period.every(REAL_WINDOW * windows)

    def start(self, at: datetime) -> None:
        """Set a manual clock to *at* (a real clock is where it is)."""
        if self.manual is not None:
            self.manual.set(at)

    async def reach(self, budget: Budget, instant: datetime) -> Snapshot:
        """Move the clock to *instant* (exactly, if manual) and return *budget*'s snapshot
        taken at or after it: the operation that rolls the window over."""
        if self.manual is not None:
            self.manual.set(instant)
            return await budget.snapshot()
        await anyio.sleep(max(0.0, instant.timestamp() - time.time()) + _MARGIN)
        deadline = time.monotonic() + 2.0
        while True:
            snap = await budget.snapshot()
            if snap.period_start is not None and snap.period_start >= instant:
                return snap
            if time.monotonic() > deadline:
                fail(f"the budget's window did not roll over at {instant} (store clock skewed?)")
            await anyio.sleep(_POLL)

    async def fresh_window(self, budget: Budget) -> Snapshot:
        """With a real clock, wait for the next boundary so that the steps that follow
        have a whole window; with a manual one, the snapshot as it is."""
        snap = await budget.snapshot()
        if self.manual is not None:
            return snap
        if snap.resets_at is None:
            fail("a budget with a period has no resets_at in its snapshot")
        return await self.reach(budget, snap.resets_at)

    async def same_window(self, budget: Budget, snap: Snapshot) -> None:
        """Raise `_Overrun` if *budget* left the window of *snap* (real clocks only)."""
        if self.manual is None and (await budget.snapshot()).period_start != snap.period_start:
            raise _Overrun


async def _retried(make_store: StoreFactory, body: Callable[[Store], Awaitable[None]]) -> None:
    """Run *body* on a new store; with a real clock, again (fresh store and budgets) when
    the machine stalled past a boundary in the middle of steps meant for one window."""
    for attempt in range(_ATTEMPTS):
        try:
            await body(await new_store(make_store))
        except _Overrun:  # noqa: PERF203 - retrying is the point
            if attempt == _ATTEMPTS - 1:
                fail(f"each of {_ATTEMPTS} tries overran a {REAL_WINDOW} s window")
        else:
            return


@contextlib.contextmanager
def _logged() -> Iterator[list[MutableMapping[str, Any]]]:
    """aiobudget's log events (INFO and above) while the block runs; logging as it was
    before afterwards, unconfigured included (structlog's capture_logs would leave it
    marked as configured, and aiobudget would then print its DEBUG events)."""
    configured, previous = structlog.is_configured(), structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        if configured:
            structlog.configure(**previous)
        else:
            structlog.reset_defaults()


def _closed_events(
    logs: Sequence[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == _log.PERIOD_CLOSED and e.get("budget") == name]


def _utc(text: object) -> datetime:
    if not isinstance(text, str):
        fail(f"budget.period_closed gave a time that is not RFC 3339 text: {text!r}")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _expect_window(what: str, period: Period, snap: Snapshot) -> tuple[datetime, datetime]:
    """The snapshot's window is a window of *period*; return it."""
    if snap.period_start is None or snap.resets_at is None:
        fail(f"{what}: a budget with a period has period_start/resets_at None in its snapshot")
    for value in (snap.period_start, snap.resets_at):
        if value.utcoffset() != timedelta(0):
            fail(f"{what}: period_start/resets_at must be aware UTC datetimes, got {value!r}")
    equal(
        f"{what}: the window [period_start, resets_at)",
        period.window(snap.period_start),
        (
            snap.period_start,
            snap.resets_at,
        ),
    )
    return snap.period_start, snap.resets_at


@register
async def budgets_without_a_period_have_no_window(make_store: StoreFactory) -> None:
    """A budget without a period has no window: period_start and resets_at are None, in
    snapshots and in denials.
    """
    budget = Budget({"calls": 1}, name=unique_name("no-period"), store=await new_store(make_store))
    await budget.charge(calls=1)
    snap = await budget.snapshot()
    equal("period_start without a period", None, snap.period_start)
    equal("resets_at without a period", None, snap.resets_at)
    with Raises(BudgetExhausted, "reserving from a spent budget") as caught:
        async with budget.reserve(calls=1):
            fail("a reservation that does not fit was entered")
    equal("BudgetExhausted.resets_at without a period", None, caught.error.resets_at)


@register
async def period_rolls_spent_to_zero_at_each_boundary(make_store: StoreFactory) -> None:
    """At a boundary spent goes to 0 exactly once (live reservations stay counted; one
    made before settles into the new window), the snapshot shows the new window, and
    budget.period_closed is logged once with the closed window's final spent.
    """

    async def body(store: Store) -> None:
        clock = _Time(store)
        clock.start(_BEFORE_DST)
        period = clock.period(Period.daily(tz="Europe/Berlin"))
        name = unique_name("roll")
        budget = Budget({"tokens": 100, "calls": 10}, name=name, store=store, period=period)
        first = await clock.fresh_window(budget)
        with _logged() as logs:
            start, end = _expect_window("a new budget", period, first)
            if clock.manual is not None:
                equal("the window around the clock", period.window(_BEFORE_DST), (start, end))
            await budget.charge(tokens=30, calls=1)
            held = await held_reservation(budget, "a reservation across the boundary", tokens=20)
            await expect_counters(
                budget,
                "before the boundary",
                spent={"tokens": 30, "calls": 1},
                reserved={"tokens": 20},
            )
            await clock.same_window(budget, first)
            after = await clock.reach(budget, end)
            new_start, new_end = _expect_window("after the boundary", period, after)
            equal("the new window's start (the old one's end)", end, new_start)
            if clock.manual is not None:
                # Europe/Berlin's 2024-03-31 lasts 23 hours.
                equal(
                    "the length of the day clocks spring forward",
                    timedelta(hours=23),
                    new_end - new_start,
                )
            await expect_counters(budget, "after the boundary", reserved={"tokens": 20})
            held.record(tokens=15)
            await held.commit()
            await expect_counters(budget, "after settling the reservation", spent={"tokens": 15})
            await budget.charge(calls=1)
            await expect_counters(budget, "after a charge", spent={"tokens": 15, "calls": 1})
            await clock.same_window(budget, after)
        closed = _closed_events(logs, name)
        equal("budget.period_closed events for one boundary", 1, len(closed))
        event = closed[0]
        equal("period_closed period_start", start, _utc(event.get("period_start")))
        equal("period_closed period_end", end, _utc(event.get("period_end")))
        equal("period_closed spent", {"tokens": 30, "calls": 1}, dict(event.get("spent", {})))

    await _retried(make_store, body)


@register
async def quiet_windows_are_skipped_and_the_last_active_one_reported(
    make_store: StoreFactory,
) -> None:
    """After several windows without an operation, the next one rolls once: only the last
    active window is reported closed, and windows never go back (a manual clock that
    steps back leaves the budget in its window).
    """

    async def body(store: Store) -> None:
        clock = _Time(store)
        clock.start(_MID_MONTH)
        period = clock.period(Period.weekly(tz="America/New_York", weekday=0))
        name = unique_name("quiet")
        budget = Budget({"calls": 10}, name=name, store=store, period=period)
        first = await clock.fresh_window(budget)
        with _logged() as logs:
            start, end = _expect_window("a new budget", period, first)
            await budget.charge(calls=4)
            await clock.same_window(budget, first)
            later = period.next(period.next(end))  # two quiet windows, then a third
            snap = await clock.reach(budget, later)
            new_start, _ = _expect_window("three windows later", period, snap)
            equal("the window three boundaries on", later, new_start)
            await expect_counters(budget, "three windows later")
            await budget.charge(calls=2)
            if clock.manual is not None:
                clock.manual.set(start)  # a clock that steps back
                await expect_counters(budget, "after the clock stepped back", spent={"calls": 2})
                equal(
                    "the window after the clock stepped back",
                    new_start,
                    (await budget.snapshot()).period_start,
                )
        closed = _closed_events(logs, name)
        equal("budget.period_closed events after quiet windows", 1, len(closed))
        equal(
            "the window reported closed",
            (start, end),
            (_utc(closed[0].get("period_start")), _utc(closed[0].get("period_end"))),
        )
        equal("its spent", {"calls": 4}, dict(closed[0].get("spent", {})))

    await _retried(make_store, body)


@register
async def crossings_re_arm_at_each_boundary(make_store: StoreFactory) -> None:
    """A warn crossing is reported once per window: again after a boundary, never twice in
    one window.
    """

    async def body(store: Store) -> None:
        clock = _Time(store)
        clock.start(_MID_MONTH)
        period = clock.period(Period.monthly(tz="Asia/Kolkata", day=31))
        warned: list[Verdict] = []

        def on_warn(name: str | None, verdict: Verdict) -> None:
            warned.append(verdict)

        budget = Budget(
            {"tokens": Limit(100, warn=50)},
            name=unique_name("re-arm"),
            store=store,
            period=period,
            on_warn=on_warn,
        )
        first = await clock.fresh_window(budget)
        _, end = _expect_window("a new budget", period, first)
        await budget.charge(tokens=60)
        await budget.charge(tokens=5)
        equal("warn crossings in the first window", 1, len(warned))
        await clock.same_window(budget, first)
        after = await clock.reach(budget, end)
        await budget.charge(tokens=10)
        equal("warn crossings after a charge below warn", 1, len(warned))
        verdict = await budget.charge(tokens=45)
        equal("the verdict at 55 of 100 (warn 50)", Status.WARN, verdict.status)
        equal("warn crossings after the boundary", 2, len(warned))
        await clock.same_window(budget, after)

    await _retried(make_store, body)


@register
async def period_is_stored_with_the_limits(make_store: StoreFactory) -> None:
    """Opening a shared budget with another period (or none) raises LimitsMismatch;
    update_limits=True replaces it, keeps what was spent, and every opener follows it.
    """
    store = await new_store(make_store)
    clock = _Time(store)
    clock.start(_MID_MONTH)
    period = clock.period(Period.daily(tz="Australia/Lord_Howe"))
    other = clock.period(Period.weekly(tz="Australia/Lord_Howe", weekday=3), windows=4)
    name = unique_name("stored")
    limits = {"calls": 10}
    first = Budget(limits, name=name, store=store, period=period)
    await first.charge(calls=3)
    for what, given in (("another period", other), ("no period", None)):
        with Raises(LimitsMismatch, f"opening with {what}"):
            await Budget(limits, name=name, store=store, period=given).snapshot()
    await Budget(limits, name=name, store=store, period=period).snapshot()
    updated = Budget(limits, name=name, store=store, period=other, update_limits=True)
    snap = await updated.snapshot()
    if snap.resets_at is None or snap.period_start is None:
        fail("after update_limits with a period, the snapshot has no window")
    equal("spent after changing the period", {"calls": 3}, dict(snap.spent))
    window = other.window(snap.period_start)
    equal("the window after changing the period", window, (snap.period_start, snap.resets_at))
    seen = await first.snapshot()
    equal("the window the first opener sees", window, (seen.period_start, seen.resets_at))


@register
async def children_roll_on_their_own_periods(make_store: StoreFactory) -> None:
    """A child and its parent each roll on their own period: the child's boundary leaves
    the parent's spent alone, the parent's boundary the child's.
    """

    async def body(store: Store) -> None:
        clock = _Time(store)
        clock.start(_MID_MONTH)
        parent_period = clock.period(Period.monthly(tz="Pacific/Apia"), windows=2)
        child_period = clock.period(Period.daily(tz="UTC"))
        parent = Budget(
            {"tokens": 1000}, name=unique_name("parent"), store=store, period=parent_period
        )
        child = parent.child({"tokens": 100}, name="child", period=child_period)
        # Real time: fixed windows of 2 and 1 units from the epoch, so the parent's fresh
        # window starts at a boundary of the child's too.
        top = await clock.fresh_window(parent)
        bottom = await child.snapshot()
        _expect_window("the parent", parent_period, top)
        _, child_end = _expect_window("the child", child_period, bottom)
        await child.charge(tokens=7)
        await clock.same_window(parent, top)
        await clock.same_window(child, bottom)
        await clock.reach(child, child_end)
        await expect_counters(child, "the child after its boundary")
        await expect_counters(parent, "the parent after the child's boundary", spent={"tokens": 7})
        await child.charge(tokens=2)
        assert top.resets_at is not None
        await clock.reach(parent, top.resets_at)
        await expect_counters(parent, "the parent after its boundary")
        # The child's window ended too (a day before the month's end; with fixed windows,
        # at the same instant).
        await expect_counters(child, "the child after its second boundary")
        await clock.same_window(parent, await parent.snapshot())

    await _retried(make_store, body)


@register
async def denials_say_when_the_budget_resets(make_store: StoreFactory) -> None:
    """A denial by a budget with a period carries resets_at: the end of the window of the
    level that said no.
    """

    async def body(store: Store) -> None:
        clock = _Time(store)
        clock.start(_MID_MONTH)
        period = clock.period(Period.monthly(tz="Europe/Berlin"))
        budget = Budget({"calls": 2}, name=unique_name("resets-at"), store=store, period=period)
        snap = await clock.fresh_window(budget)
        await budget.charge(calls=2)
        with Raises(BudgetExhausted, "reserving from a budget spent for this window") as caught:
            async with budget.reserve(calls=1):
                fail("a reservation that does not fit was entered")
        equal("BudgetExhausted.resets_at", snap.resets_at, caught.error.resets_at)
        child = budget.child({"calls": 5}, name="child")
        with Raises(BudgetExhausted, "reserving through a child the parent denies") as caught:
            async with child.reserve(calls=1):
                fail("a reservation that does not fit was entered")
        equal(
            "BudgetExhausted.resets_at of the parent's denial",
            snap.resets_at,
            caught.error.resets_at,
        )
        await clock.same_window(budget, snap)

    await _retried(make_store, body)
