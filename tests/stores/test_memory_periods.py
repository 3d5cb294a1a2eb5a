"""MemoryStore with budgets that renew: its clock, the roll inside the first operation at
or after a boundary, and a state machine that jumps the clock against a plain model."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
import structlog
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from aiobudget import (
    Budget,
    BudgetExhausted,
    InvalidLimits,
    Limit,
    LimitsMismatch,
    MemoryStore,
    Period,
    ReservationClosed,
)
from aiobudget.kernel import Denial, Lease
from aiobudget.stores.memory import MemoryAccount
from aiobudget.testing import ManualClock

UTC = timezone.utc


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """structlog unconfigured before and after each test: capture_logs() leaves it marked
    as configured, after which aiobudget would print its DEBUG events in later tests."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


T0 = datetime(2024, 3, 30, 20, 0, tzinfo=UTC)  # the evening before Berlin's 23-hour day


def closed_events(logs: list[Any]) -> list[tuple[str, str, str, dict[str, int]]]:
    return [
        (e["budget"], e["period_start"], e["period_end"], e["spent"])
        for e in logs
        if e["event"] == "budget.period_closed"
    ]


class TestClock:
    """MemoryStore(clock=...): POSIX seconds, time.time by default, read-only."""

    def test_default_is_time_time(self) -> None:
        """Without a clock the store reads time.time."""
        assert time.time is MemoryStore().clock

    def test_given_clock(self) -> None:
        """The clock given is the clock exposed."""
        clock = ManualClock()
        assert clock is MemoryStore(clock=clock).clock

    def test_read_only(self) -> None:
        """The clock cannot be swapped after construction."""
        store = MemoryStore()
        with pytest.raises(AttributeError):
            store.clock = time.monotonic  # type: ignore[misc]

    def test_not_callable(self) -> None:
        """A clock that cannot be called is refused at once."""
        with pytest.raises(TypeError, match="clock"):
            MemoryStore(clock=1.0)  # type: ignore[arg-type]

    def test_not_a_period(self) -> None:
        """A period that is not a Period is refused when the budget is built."""
        with pytest.raises(InvalidLimits, match="period"):
            Budget({"calls": 1}, period="daily")  # type: ignore[arg-type]
        with pytest.raises(InvalidLimits, match="period"):
            MemoryStore().open("x", {"calls": Limit(1)}, period="daily")  # type: ignore[arg-type]


class TestManualClock:
    """aiobudget.testing.ManualClock moves only when told."""

    def test_moves(self) -> None:
        """advance() goes forward, set() anywhere, from seconds or an aware datetime."""
        clock = ManualClock(T0)
        assert T0.timestamp() == clock()
        clock.advance(1.5)
        assert T0.timestamp() + 1.5 == clock()
        clock.set(100)
        assert 100.0 == clock()
        assert "<ManualClock 100.0>" == repr(clock)

    @pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf")])
    def test_no_going_back_by_advance(self, seconds: float) -> None:
        """advance() takes a finite number of seconds, at least 0."""
        with pytest.raises(ValueError, match="advances"):
            ManualClock().advance(seconds)

    @pytest.mark.parametrize("bad", [True, "1", None])
    def test_bad_values(self, bad: object) -> None:
        """Numbers only (and aware datetimes for set)."""
        with pytest.raises(TypeError):
            ManualClock().advance(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ManualClock().set(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="naive"):
            ManualClock().set(datetime(2024, 1, 1))


class TestRoll:
    """The roll happens inside the first operation at or after a boundary."""

    pytestmark = pytest.mark.anyio

    async def test_at_the_boundary_not_before(self) -> None:
        """One microsecond before a boundary nothing rolls; at it, spent goes to 0."""
        clock = ManualClock(T0)
        budget = Budget({"calls": 10}, store=MemoryStore(clock=clock), period=Period.every(60))
        await budget.charge(calls=3)
        end = (await budget.snapshot()).resets_at
        assert end is not None
        clock.set(end.timestamp() - 0.000001)
        assert {"calls": 3} == dict((await budget.snapshot()).spent)
        clock.set(end)
        snap = await budget.snapshot()
        assert ({"calls": 0}, end) == (dict(snap.spent), snap.period_start)

    async def test_a_new_budget_keeps_what_it_spends(self) -> None:
        """Creating a budget starts no new window: spend right after creation stays until
        the calendar's next boundary (a reset job once zeroed spend minutes after
        creation)."""
        clock = ManualClock(datetime(2024, 5, 20, 23, 50, tzinfo=UTC))
        budget = Budget(
            {"calls": 10}, store=MemoryStore(clock=clock), period=Period.monthly(day=21)
        )
        await budget.charge(calls=4)
        clock.advance(600)  # 2024-05-21 00:00: the boundary
        assert {"calls": 0} == dict((await budget.snapshot()).spent)
        await budget.charge(calls=2)
        clock.advance(300)
        assert {"calls": 2} == dict((await budget.snapshot()).spent)

    async def test_calendar_months_roll_once_each(self) -> None:
        """Monthly means calendar months, not 30 days, and each rolls exactly once, 31-day
        months included; a day past a month's end is its last day."""
        clock = ManualClock(datetime(2024, 1, 10, tzinfo=UTC))
        budget = Budget(
            {"calls": 100},
            name="m",
            store=MemoryStore(clock=clock),
            period=Period.monthly(tz="America/New_York", day=31),
        )
        starts = []
        with structlog.testing.capture_logs() as logs:
            for _ in range(24 * 200):  # every 3 hours for 600 days
                await budget.charge(calls=1)
                snap = await budget.snapshot()
                if not starts or starts[-1] != snap.period_start:
                    starts.append(snap.period_start)
                clock.advance(3 * 3600)
        ny = [s.astimezone(ZoneInfo("America/New_York")) for s in starts if s is not None]
        days = [(d.year, d.month, d.day, d.hour) for d in ny]
        assert (2024, 1, 31, 0) == days[1]
        assert (2024, 2, 29, 0) == days[2]  # leap year: the last day of February
        assert (2024, 3, 31, 0) == days[3]
        assert (2024, 4, 30, 0) == days[4]
        assert len(days) == len(set(days))
        assert len(starts) - 1 == len(closed_events(logs))  # one event per boundary

    async def test_quiet_budget_does_not_drift(self) -> None:
        """A budget left alone for days rolls to the calendar's window, not to one that
        starts at the late request (windows that restarted at the first request drifted)."""
        clock = ManualClock(datetime(2024, 6, 1, 8, tzinfo=UTC))
        budget = Budget(
            {"calls": 10},
            store=MemoryStore(clock=clock),
            period=Period.daily(tz="Asia/Kolkata", at=clock_time(9)),
        )
        await budget.charge(calls=1)
        clock.set(datetime(2024, 6, 5, 17, 42, 13, tzinfo=UTC))
        snap = await budget.snapshot()
        start = datetime(2024, 6, 5, 3, 30, tzinfo=UTC)  # 09:00 in Kolkata
        assert (start, start + timedelta(days=1)) == (snap.period_start, snap.resets_at)

    async def test_the_zone_decides(self) -> None:
        """The same daily period in two zones rolls at different instants."""
        clock = ManualClock(datetime(2024, 6, 1, 12, tzinfo=UTC))
        store = MemoryStore(clock=clock)
        tokyo = Budget({"calls": 9}, store=store, period=Period.daily(tz="Asia/Tokyo"))
        lima = Budget({"calls": 9}, store=store, period=Period.daily(tz="America/Lima"))
        for budget in (tokyo, lima):
            await budget.charge(calls=1)
        clock.set(datetime(2024, 6, 1, 15, 0, 1, tzinfo=UTC))  # midnight in Tokyo
        assert ({"calls": 0}, {"calls": 1}) == (
            dict((await tokyo.snapshot()).spent),
            dict((await lima.snapshot()).spent),
        )

    async def test_event_once_with_the_final_spent(self) -> None:
        """budget.period_closed is logged once per boundary with the closed window's
        final spent, even when many operations arrive at once."""
        clock = ManualClock(T0)
        budget = Budget(
            {"calls": 100}, name="e", store=MemoryStore(clock=clock), period=Period.every(10)
        )
        await budget.charge(calls=7)
        clock.advance(10)
        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(budget.charge, {"calls": 1})
        start = datetime.fromtimestamp(T0.timestamp() // 10 * 10, UTC)
        assert [("e", _z(start), _z(start + timedelta(seconds=10)), {"calls": 7})] == closed_events(
            logs
        )
        assert {"calls": 50} == dict((await budget.snapshot()).spent)

    async def test_a_waiter_is_granted_when_the_window_rolls(self) -> None:
        """A reservation waiting for live ones fits once spent goes back to 0: the first
        operation after the boundary grants it."""
        clock = ManualClock(T0)
        budget = Budget({"calls": 10}, store=MemoryStore(clock=clock), period=Period.every(60))
        await budget.charge(calls=4)
        holder = await budget.try_reserve(calls=4)
        assert holder is not None
        granted = anyio.Event()

        async def waiter() -> None:
            async with budget.reserve(calls=5, timeout=float("inf")):
                granted.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not granted.is_set()
            clock.advance(60)
            await budget.snapshot()
            await anyio.wait_all_tasks_blocked()
            assert granted.is_set()
        await holder.release()

    async def test_reservation_spanning_a_boundary(self) -> None:
        """A reservation made before a boundary stays counted across it and, settled
        after, charges the new window."""
        clock = ManualClock(T0)
        budget = Budget({"calls": 10}, store=MemoryStore(clock=clock), period=Period.every(60))
        await budget.charge(calls=6)
        async with budget.reserve(calls=4) as r:
            clock.advance(120)
            snap = await budget.snapshot()
            assert ({"calls": 0}, {"calls": 4}) == (dict(snap.spent), dict(snap.reserved))
            r.record(calls=3)
        assert {"calls": 3} == dict((await budget.snapshot()).spent)

    async def test_denial_says_when(self) -> None:
        """A denial carries when the budget resets."""
        clock = ManualClock(T0)
        budget = Budget({"calls": 1}, store=MemoryStore(clock=clock), period=Period.daily())
        await budget.charge(calls=1)
        with pytest.raises(BudgetExhausted) as caught:
            async with budget.reserve(calls=1):
                pass
        assert datetime(2024, 3, 31, tzinfo=UTC) == caught.value.resets_at
        assert "resets at 2024-03-31T00:00:00+00:00" in str(caught.value)


class TestThreads:
    """The roll is exactly once when threads race on a boundary."""

    def test_threads_race_at_a_boundary(self) -> None:
        """Eight threads, each with an event loop of its own, hit a boundary at once: one
        roll, one event, and every charge counted in the new window."""
        clock = ManualClock(T0)
        store = MemoryStore(clock=clock)
        budget = Budget({"calls": 10_000}, name="t", store=store, period=Period.every(1))
        anyio.run(budget.charge, {"calls": 5})
        clock.advance(1)
        barrier = threading.Barrier(8)

        def hammer() -> None:
            async def work() -> None:
                barrier.wait()
                for _ in range(100):
                    await budget.charge(calls=1)

            anyio.run(work)

        with structlog.testing.capture_logs() as logs:
            threads = [threading.Thread(target=hammer) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert 1 == len(closed_events(logs))
        assert {"calls": 5} == closed_events(logs)[0][3]
        assert {"calls": 800} == dict(anyio.run(budget.snapshot).spent)


class TestStoredWithTheLimits:
    """The period is kept with the limits of a named budget."""

    pytestmark = pytest.mark.anyio

    async def test_mismatch_and_update(self) -> None:
        """Another period is LimitsMismatch; update_limits adopts it and keeps spent."""
        clock = ManualClock(T0)
        store = MemoryStore(clock=clock)
        first = Budget({"calls": 10}, name="k", store=store, period=Period.daily())
        await first.charge(calls=3)
        with pytest.raises(LimitsMismatch, match="period") as caught:
            Budget({"calls": 10}, name="k", store=store, period=Period.weekly())
        assert ("period", Period.daily(), Period.weekly()) == (
            caught.value.what,
            caught.value.stored,
            caught.value.given,
        )
        with pytest.raises(LimitsMismatch):
            Budget({"calls": 10}, name="k", store=store)
        weekly = Budget(
            {"calls": 10}, name="k", store=store, period=Period.weekly(), update_limits=True
        )
        snap = await first.snapshot()
        assert {"calls": 3} == dict(snap.spent)
        assert Period.weekly().window(T0) == (snap.period_start, snap.resets_at)
        assert Period.weekly() == weekly.period
        none = Budget({"calls": 10}, name="k", store=store, period=None, update_limits=True)
        assert (None, {"calls": 3}) == (
            (await none.snapshot()).resets_at,
            dict((await none.snapshot()).spent),
        )
        assert none.period is None


class TestChildren:
    """Each level of a chain rolls on its own period."""

    pytestmark = pytest.mark.anyio

    async def test_own_periods(self) -> None:
        """A daily child under a monthly parent: the child's boundary leaves the parent's
        spent; a child without a period never rolls."""
        clock = ManualClock(datetime(2024, 1, 10, 12, tzinfo=UTC))
        store = MemoryStore(clock=clock)
        parent = Budget({"calls": 100}, name="p", store=store, period=Period.monthly())
        daily = parent.child({"calls": 10}, name="d", period=Period.daily())
        plain = parent.child({"calls": 10}, name="plain")
        await daily.charge(calls=3)
        await plain.charge(calls=2)
        clock.set(datetime(2024, 1, 11, tzinfo=UTC))
        assert [0, 5, 2] == [(await b.snapshot()).spent["calls"] for b in (daily, parent, plain)]
        assert (await plain.snapshot()).resets_at is None
        clock.set(datetime(2024, 2, 1, tzinfo=UTC))
        await plain.charge(calls=1)  # a child's operation rolls its ancestors
        assert [0, 1, 3] == [(await b.snapshot()).spent["calls"] for b in (daily, parent, plain)]


def _z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


# -- a state machine against a model ---------------------------------------------------

PARENT = Period.daily(tz="Europe/Berlin")
CHILD = Period.every(timedelta(hours=5))
LIMITS = {"parent": 100, "child": 60}
LEVELS = {"parent": ("parent",), "child": ("child", "parent")}


@dataclass
class Level:
    """The model of one budget: its window, its spent and reserved, what it closed."""

    period: Period
    window: tuple[datetime, datetime] | None = None
    spent: int = 0
    reserved: int = 0
    charged: int = 0  # everything ever charged here
    closed: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)

    def roll(self, now: datetime) -> None:
        start, end = self.period.window(now)
        if self.window is None:
            self.window = (start, end)
        elif start >= self.window[1]:
            self.closed.append((_z(self.window[0]), _z(self.window[1]), {"tokens": self.spent}))
            self.spent = 0
            self.window = (start, end)


@dataclass
class Held:
    level: str
    amount: int
    lease: Lease


class PeriodMachine(RuleBasedStateMachine):
    """Reservations, settles, releases and charges on a parent (daily, Berlin) and a
    child (every 5 hours), between clock jumps of less than a window, exactly to a
    boundary, over many windows, and back."""

    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(T0)
        self.store = MemoryStore(clock=self.clock)
        self.stack = ExitStack()
        self.portal: BlockingPortal = self.stack.enter_context(start_blocking_portal())
        self.logs = self.stack.enter_context(structlog.testing.capture_logs())
        parent = self.store.open("parent", {"tokens": Limit(100)}, period=PARENT)
        child = self.store.open("child", {"tokens": Limit(60)}, parent=parent, period=CHILD)
        self.accounts: dict[str, MemoryAccount] = {"parent": parent, "child": child}
        self.model = {"parent": Level(PARENT), "child": Level(CHILD)}

    def teardown(self) -> None:
        self.stack.close()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def enter(self, level: str) -> None:
        """The model of an operation entering the store on *level*'s chain."""
        for name in LEVELS[level]:
            self.model[name].roll(self.now())

    # -- the clock ---------------------------------------------------------------------

    @rule(which=st.sampled_from(["parent", "child"]), fraction=st.floats(0.01, 0.99))
    def jump_less_than_a_window(self, which: str, fraction: float) -> None:
        """Forward, but not as far as *which*'s next boundary."""
        period = self.model[which].period
        now = self.now()
        self.clock.set(now + (period.next(now) - now) * fraction)

    @rule(which=st.sampled_from(["parent", "child"]))
    def jump_to_a_boundary(self, which: str) -> None:
        """Forward exactly to *which*'s next boundary."""
        self.clock.set(self.model[which].period.next(self.now()))

    @rule(which=st.sampled_from(["parent", "child"]), windows=st.integers(2, 40))
    def jump_many_windows(self, which: str, windows: int) -> None:
        """Forward over several of *which*'s boundaries, into the middle of a window."""
        period = self.model[which].period
        at = self.now()
        for _ in range(windows):
            at = period.next(at)
        end = period.next(at)
        self.clock.set(at + (end - at) / 3)

    @rule(hours=st.integers(1, 30))
    def step_back(self, hours: int) -> None:
        """Backward: windows never go back, so the store stays in its windows."""
        self.clock.set(self.now() - timedelta(hours=hours))

    # -- operations ----------------------------------------------------------------------

    @rule(target=held, level=st.sampled_from(["parent", "child"]), amount=st.integers(0, 70))
    def reserve(self, level: str, amount: int) -> Any:
        self.enter(level)
        result = self.accounts[level].reserve_nowait((amount,), use_headroom=False)
        fits = all(
            self.model[n].spent + self.model[n].reserved + amount <= LIMITS[n]
            for n in LEVELS[level]
        )
        assert fits == isinstance(result, Lease), (fits, result)
        if not isinstance(result, Lease):
            assert isinstance(result, Denial)
            return None
        for n in LEVELS[level]:
            self.model[n].reserved += amount
        return Held(level, amount, result)

    @rule(item=consumes(held), actual=st.integers(0, 90))
    def settle(self, item: Held | None, actual: int) -> None:
        if item is None:
            return
        self.enter(item.level)
        self.accounts[item.level].settle_nowait(item.lease, (actual,))
        for n in LEVELS[item.level]:
            model = self.model[n]
            model.reserved -= item.amount
            model.spent += actual
            model.charged += actual

    @rule(item=consumes(held))
    def release(self, item: Held | None) -> None:
        if item is None:
            return
        self.enter(item.level)
        self.accounts[item.level].release_nowait(item.lease)
        for n in LEVELS[item.level]:
            self.model[n].reserved -= item.amount
        try:
            self.accounts[item.level].release_nowait(item.lease)
        except ReservationClosed:
            pass
        else:
            raise AssertionError("a second release was accepted")

    @rule(level=st.sampled_from(["parent", "child"]), amount=st.integers(0, 30))
    def charge(self, level: str, amount: int) -> None:
        self.enter(level)
        self.portal.call(lambda: self.accounts[level].charge((amount,), strict=False))
        for n in LEVELS[level]:
            self.model[n].spent += amount
            self.model[n].charged += amount

    @rule(level=st.sampled_from(["parent", "child"]))
    def snapshot(self, level: str) -> None:
        self.enter(level)
        snap = self.portal.call(self.accounts[level].snapshot)
        model = self.model[level]
        assert (model.spent, model.reserved) == (snap.spent["tokens"], snap.reserved["tokens"])
        assert model.window == (snap.period_start, snap.resets_at)

    # -- what must always hold -----------------------------------------------------------

    @invariant()
    def windows_closed_once_each(self) -> None:
        """Every closed window was logged once, with its final spent, as the model says."""
        events = closed_events(self.logs)
        for name, model in self.model.items():
            assert model.closed == [e[1:] for e in events if e[0] == name]

    @invariant()
    def nothing_lost_or_double_counted(self) -> None:
        """The closed windows' spent plus the open window's is everything charged."""
        for name, account in self.accounts.items():
            model = self.model[name]
            spent = account._chain.leaf.spent[0]  # read without an operation (no roll)
            closed = sum(e[3]["tokens"] for e in closed_events(self.logs) if e[0] == name)
            assert model.charged == closed + spent
            assert model.spent == spent


def test_period_machine() -> None:
    """The state machine of MemoryStore with periods agrees with its model."""
    run_state_machine_as_test(
        PeriodMachine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None)
    )
