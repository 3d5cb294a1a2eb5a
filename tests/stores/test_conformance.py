"""The store conformance suite (`aiobudget.testing`) against every kind of store, and
against deliberately broken stores, to show it can fail."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone

import anyio
import pytest

from aiobudget import MemoryStore, Period, ReservationClosed
from aiobudget.kernel import Crossing, Denial, Limit, Outcome, Snapshot
from aiobudget.protocols import Account, Held, Store
from aiobudget.testing import CHECKS, TIME_LIMIT, Check, ManualClock, StoreFactory, check_store

from .conftest import AsyncAccount, AsyncOnlyStore

pytestmark = pytest.mark.anyio


def _name(check: Check) -> str:
    return check.__name__


CHECK_PARAMS = [pytest.param(check, id=_name(check)) for check in CHECKS]


class TestConformance:
    """Every check of `aiobudget.testing.CHECKS`, against every kind of store."""

    @pytest.mark.parametrize("check", CHECK_PARAMS)
    async def test_check(self, check: Check, make_store: StoreFactory) -> None:
        """The store passes this conformance check."""
        await check(make_store)


class TestCheckStore:
    """`check_store` runs every check and reports the first failure."""

    async def test_memory_store_passes(self) -> None:
        """MemoryStore on a manual clock passes the whole suite."""
        await check_store(lambda: MemoryStore(clock=ManualClock()))

    @pytest.mark.slow
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_memory_store_on_the_system_clock_passes(self) -> None:
        """MemoryStore, given as a plain class (the system's clock, which the period checks
        wait for), passes the whole suite."""
        await check_store(MemoryStore)

    async def test_async_factory(self) -> None:
        """An async factory of stores is awaited."""
        made = 0

        async def make() -> Store:
            nonlocal made
            await anyio.lowlevel.checkpoint()
            made += 1
            return MemoryStore()

        await CHECKS[0](make)
        assert made >= 1

    async def test_not_a_store(self) -> None:
        """A factory that returns something without open() fails with a clear message."""
        with pytest.raises(AssertionError, match="not a Store"):
            await check_store(object)  # type: ignore[arg-type]

    def test_every_check_is_named_and_documented(self) -> None:
        """Checks have distinct names and a one-sentence docstring each."""
        names = [_name(check) for check in CHECKS]
        assert len(names) == len(set(names))
        for check in CHECKS:
            doc = (check.__doc__ or "").strip()
            assert doc.endswith("."), _name(check)
            assert re.search(r"\.\s+[A-Z]", doc) is None, _name(check)

    def test_time_limit(self) -> None:
        """A check that hangs is failed after a bounded time, not left hanging."""
        assert 0 < TIME_LIMIT <= 60


# -- broken stores: each breaks one rule, and the suite must notice ------------------------


class ForgetfulAccount(AsyncAccount):
    """Settles by releasing: recorded usage is never charged."""

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        return await self.inner.release(held)


class LeakyAccount(AsyncAccount):
    """Never gives a released reservation back."""

    async def release(self, held: Held) -> Outcome:
        return Outcome((await self.inner.snapshot()).verdict)


class LenientAccount(AsyncAccount):
    """Accepts a second settle or release silently instead of raising ReservationClosed."""

    async def settle(self, held: Held, actual: tuple[int, ...]) -> Outcome:
        try:
            return await self.inner.settle(held, actual)
        except ReservationClosed:
            return Outcome((await self.inner.snapshot()).verdict)

    async def release(self, held: Held) -> Outcome:
        try:
            return await self.inner.release(held)
        except ReservationClosed:
            return Outcome((await self.inner.snapshot()).verdict)


class OverbookingAccount(AsyncAccount):
    """Lets every reservation into the headroom."""

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        return await self.inner.reserve(amounts, use_headroom=True, timeout=timeout)


class ImpatientAccount(AsyncAccount):
    """Never waits: a timeout is ignored."""

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        return await self.inner.reserve(amounts, use_headroom=use_headroom, timeout=None)


class QueueJumpingAccount(AsyncAccount):
    """Lets reservations that do not wait overtake the waiting ones."""

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        if timeout is None:
            with self.inner._lock:
                return self.inner._chain.reserve(amounts, use_headroom=use_headroom)
        return await self.inner.reserve(amounts, use_headroom=use_headroom, timeout=timeout)


class FloatAccount(AsyncAccount):
    """Adds charges through floats, as a naive Lua port over doubles would."""

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        return await self.inner.charge(tuple(int(float(a)) for a in amounts), strict=strict)


class QuietAccount(AsyncAccount):
    """Drops the crossings of charges: on_warn / on_exhausted are never called for them."""

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        return Outcome((await self.inner.charge(amounts, strict=strict)).verdict)


class DeafAccount(AsyncAccount):
    """Queues waiters but never wakes them."""

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        result = await self.inner.reserve(amounts, use_headroom=use_headroom, timeout=None)
        if isinstance(result, Denial) and timeout is not None:
            await anyio.sleep(timeout)
        return result


class UncountingAccount(AsyncAccount):
    """Snapshots that never count live reservations."""

    async def snapshot(self) -> Snapshot:
        return dataclasses.replace(await self.inner.snapshot(), held=0)


class QueueBlindAccount(AsyncAccount):
    """Snapshots that never count queued reservations."""

    async def snapshot(self) -> Snapshot:
        return dataclasses.replace(await self.inner.snapshot(), waiting=0)


def broken(account: type[AsyncAccount]) -> type[AsyncOnlyStore]:
    """An `AsyncOnlyStore` whose accounts are *account*."""
    return type(f"{account.__name__}Store", (AsyncOnlyStore,), {"account_class": account})


class UnsharedStore(AsyncOnlyStore):
    """Ignores names: every Budget object gets counters of its own."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
    ) -> AsyncAccount:
        return super().open(None, limits, parent=parent, update_limits=update_limits)


class OrphanStore(AsyncOnlyStore):
    """Ignores parents: a child budget never charges its ancestors."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
    ) -> AsyncAccount:
        return super().open(name, limits, update_limits=update_limits)


class StubbornStore(AsyncOnlyStore):
    """Ignores update_limits: stored limits can never be changed by opening."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
    ) -> AsyncAccount:
        return super().open(name, limits, parent=parent)


# -- broken periods ----------------------------------------------------------------------


class TimelessStore(AsyncOnlyStore):
    """Ignores periods: budgets never renew."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> AsyncAccount:
        return super().open(name, limits, parent=parent, update_limits=update_limits)


class DailyByDefaultStore(AsyncOnlyStore):
    """Gives every budget without a period a daily one."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> AsyncAccount:
        period = period or Period.daily()
        return super().open(name, limits, parent=parent, update_limits=update_limits, period=period)


class DriftingStore(AsyncOnlyStore):
    """Starts a budget's windows when it is opened (the bug of windows that restart at
    the first request), not at the period's boundaries."""

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> AsyncAccount:
        if period is not None:
            now = datetime.fromtimestamp(self.clock(), timezone.utc)
            start, end = period.window(now)
            period = Period.every(end - start, anchor=now)
        return super().open(name, limits, parent=parent, update_limits=update_limits, period=period)


class FirstPeriodWinsStore(AsyncOnlyStore):
    """Keeps the period a budget was first opened with, whatever later openers ask."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[tuple[int, str | None], Period | None] = {}

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> AsyncAccount:
        period = self.first.setdefault((id(parent), name), period)
        return super().open(name, limits, parent=parent, update_limits=update_limits, period=period)


class InheritedPeriodStore(AsyncOnlyStore):
    """Gives a child its parent's period instead of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.periods: dict[int, Period | None] = {}

    def open(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        parent: Account | None = None,
        update_limits: bool = False,
        period: Period | None = None,
    ) -> AsyncAccount:
        if parent is not None:
            period = self.periods.get(id(parent))
        account = super().open(
            name, limits, parent=parent, update_limits=update_limits, period=period
        )
        self.periods[id(account)] = period
        return account


class ArmedOnceAccount(AsyncAccount):
    """Reports each kind of crossing once per budget for ever: never re-armed."""

    seen: set[tuple[str | None, object]]

    async def charge(self, amounts: tuple[int, ...], *, strict: bool) -> Outcome:
        outcome = await self.inner.charge(amounts, strict=strict)
        seen = self.__dict__.setdefault("seen", set())
        fresh: list[Crossing] = []
        for crossing in outcome.crossings:
            key = (crossing.budget, crossing.verdict)
            if key not in seen:
                seen.add(key)
                fresh.append(crossing)
        return Outcome(outcome.verdict, tuple(fresh))


class MuteDenialAccount(AsyncAccount):
    """Leaves resets_at out of its denials."""

    async def reserve(
        self, amounts: tuple[int, ...], *, use_headroom: bool, timeout: float | None
    ) -> Held | Denial:
        result = await super().reserve(amounts, use_headroom=use_headroom, timeout=timeout)
        return dataclasses.replace(result, resets_at=None) if isinstance(result, Denial) else result


BROKEN = [
    pytest.param(
        broken(ForgetfulAccount),
        "reserve_holds_and_settle_charges_what_was_recorded",
        id="forgetful",
    ),
    pytest.param(broken(LeakyAccount), "unrecorded_exit_refunds_or_charges_all", id="leaky"),
    pytest.param(broken(LenientAccount), "closing_twice_is_refused", id="lenient"),
    pytest.param(broken(OverbookingAccount), "headroom_is_kept_for_use_headroom", id="overbooking"),
    pytest.param(
        broken(ImpatientAccount),
        "waiting_reservation_is_granted_when_budget_is_freed",
        id="impatient",
    ),
    pytest.param(
        broken(QueueJumpingAccount),
        "waiters_are_served_first_come_first_served",
        id="queue-jumping",
    ),
    pytest.param(broken(FloatAccount), "totals_are_exact_and_saturate", id="float"),
    pytest.param(broken(QuietAccount), "crossings_are_announced_once", id="quiet"),
    pytest.param(broken(UncountingAccount), "snapshot_counts_held_reservations", id="uncounting"),
    pytest.param(
        broken(QueueBlindAccount), "snapshot_counts_waiting_reservations", id="queue-blind"
    ),
    pytest.param(UnsharedStore, "budgets_with_one_name_share_counters", id="unshared"),
    pytest.param(OrphanStore, "children_apply_to_every_level", id="orphan"),
    pytest.param(StubbornStore, "other_limits_need_update_limits", id="stubborn"),
    pytest.param(TimelessStore, "period_rolls_spent_to_zero_at_each_boundary", id="timeless"),
    pytest.param(
        DailyByDefaultStore, "budgets_without_a_period_have_no_window", id="daily-by-default"
    ),
    pytest.param(
        DriftingStore,
        "quiet_windows_are_skipped_and_the_last_active_one_reported",
        id="drifting",
    ),
    pytest.param(FirstPeriodWinsStore, "period_is_stored_with_the_limits", id="first-period"),
    pytest.param(InheritedPeriodStore, "children_roll_on_their_own_periods", id="inherited"),
    pytest.param(broken(ArmedOnceAccount), "crossings_re_arm_at_each_boundary", id="armed-once"),
    pytest.param(broken(MuteDenialAccount), "denials_say_when_the_budget_resets", id="mute"),
]


class TestBrokenStores:
    """The suite fails stores that break the contract: it is able to fail."""

    @pytest.mark.parametrize(("store", "catcher"), BROKEN)
    async def test_the_named_check_fails(self, store: StoreFactory, catcher: str) -> None:
        """The check aimed at the broken rule raises AssertionError."""
        (check,) = [check for check in CHECKS if _name(check) == catcher]
        with pytest.raises(AssertionError):
            await check(store)

    @pytest.mark.parametrize(("store", "catcher"), BROKEN)
    async def test_check_store_fails(self, store: StoreFactory, catcher: str) -> None:
        """check_store raises AssertionError naming a failed check."""
        with pytest.raises(AssertionError, match=r"store conformance check '[a-z_]+' failed"):
            await check_store(store)

    async def test_a_hanging_store_fails_in_bounded_time(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A store whose waiters are never woken fails the check instead of hanging it."""
        from aiobudget.testing import _harness, _sharing

        monkeypatch.setattr(_sharing, "WAIT", math.inf)  # the check's own patience
        monkeypatch.setattr(_harness, "TIME_LIMIT", 0.2)
        check = next(
            c for c in CHECKS if _name(c) == "waiting_reservation_is_granted_when_budget_is_freed"
        )
        with pytest.raises(AssertionError, match="did not finish within"):
            await check(broken(DeafAccount))
