"""`Budget.acquire` (an entered reservation, for "before"/"after" hook pairs) and
reservations with a ``ttl`` in `MemoryStore` (refunded by the store's clock, lazily).

Time is an injected clock: no test sleeps to see a reservation expire.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
import time

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from aiobudget import (
    CALLS,
    TOKENS,
    Budget,
    BudgetExhausted,
    MemoryStore,
    RequestLimitExceeded,
    Reservation,
    ReservationClosed,
    Usage,
)

from ._support import state

pytestmark = pytest.mark.anyio


class Clock:
    """A clock that stands still until told to move (POSIX seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def clocked(limits: dict[str, int], **options: object) -> tuple[Budget, Clock]:
    """A budget on a `MemoryStore` driven by a fresh `Clock`."""
    clock = Clock()
    return Budget(limits, store=MemoryStore(clock=clock), **options), clock  # type: ignore[arg-type]


class TestAcquire:
    async def test_returns_an_entered_reservation(self) -> None:
        """The reservation is held as soon as acquire() returns."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        r = await budget.acquire(tokens=40, calls=1)
        assert isinstance(r, Reservation)
        assert r.held
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 40, CALLS: 1}) == await state(budget)
        await r.release()

    async def test_commit_settles_what_was_recorded(self) -> None:
        """record() then commit(): the recorded usage is charged, the rest refunded."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        r = await budget.acquire(Usage(input_tokens=30, output_tokens=10, calls=1))
        r.record(Usage(input_tokens=12, output_tokens=3, calls=1))
        verdict = await r.commit()
        assert verdict == r.verdict
        assert not r.held
        assert ({TOKENS: 15, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_release_charges_nothing(self) -> None:
        """release() gives everything back, even what was recorded."""
        budget = Budget({TOKENS: 100})
        r = await budget.acquire(tokens=40)
        r.record(tokens=7)
        await r.release()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_commit_with_nothing_recorded_follows_on_unrecorded(self) -> None:
        """Nothing recorded: "refund" (the default) gives back, "charge" charges all."""
        budget = Budget({TOKENS: 100})
        refunded = await budget.acquire(tokens=40)
        charged = await budget.acquire(tokens=25, on_unrecorded="charge")
        with capture_logs() as logs:
            await refunded.commit()
            await charged.commit()
        assert ({TOKENS: 25}, {TOKENS: 0}) == await state(budget)
        assert ["refund", "charge"] == [
            e["action"] for e in logs if e["event"] == "budget.unrecorded"
        ]

    async def test_a_denial_raises_budget_exhausted_with_its_details(self) -> None:
        """A reservation that does not fit raises as entering reserve() would, with the
        dimension, what was asked and what is left; nothing changes."""
        budget = Budget({TOKENS: 100, CALLS: 5}, name="run")
        holder = await budget.acquire(tokens=70)
        with pytest.raises(BudgetExhausted) as caught:
            await budget.acquire(tokens=40, calls=1)
        assert (TOKENS, 40, 30, "run") == (
            caught.value.dim,
            caught.value.requested,
            caught.value.remaining,
            caught.value.budget,
        )
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 70, CALLS: 0}) == await state(budget)
        await holder.release()

    async def test_a_denial_at_a_parent_names_the_parent(self) -> None:
        """acquire() on a child is all-or-nothing over the chain, like reserve()."""
        parent = Budget({TOKENS: 50}, name="parent")
        child = parent.child({TOKENS: 100}, name="child")
        with pytest.raises(BudgetExhausted) as caught:
            await child.acquire(tokens=60)
        assert "parent" == caught.value.budget
        r = await child.acquire(tokens=20)
        assert ({TOKENS: 0}, {TOKENS: 20}) == await state(parent)
        await r.commit()

    async def test_request_limit_is_enforced(self) -> None:
        """A request above its request_limit raises RequestLimitExceeded."""
        budget = Budget({TOKENS: 100})
        with pytest.raises(RequestLimitExceeded):
            await budget.acquire(tokens=60, request_limit={TOKENS: 50})
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_waits_with_a_timeout(self) -> None:
        """With a timeout, acquire() waits for a settle, first come first served."""
        budget = Budget({TOKENS: 10})
        holder = await budget.acquire(tokens=8)
        got: list[Reservation] = []

        async def later() -> None:
            got.append(await budget.acquire(tokens=5, timeout=math.inf))

        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            await wait_all_tasks_blocked()
            assert [] == got
            holder.record(tokens=3)
            await holder.commit()
        assert ({TOKENS: 3}, {TOKENS: 5}) == await state(budget)
        await got[0].commit()

    async def test_cancelled_while_waiting_holds_nothing(self) -> None:
        """An acquire() cancelled in the queue leaves the budget as it was."""
        budget = Budget({TOKENS: 10})
        holder = await budget.acquire(tokens=8)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: budget.acquire(tokens=5, timeout=math.inf))
            await wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        await holder.release()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_closing_twice_is_refused(self) -> None:
        """An acquired reservation is closed once: a second commit or release raises."""
        budget = Budget({TOKENS: 10})
        r = await budget.acquire(tokens=4)
        r.record(tokens=2)
        await r.commit()
        with pytest.raises(ReservationClosed):
            await r.commit()
        with pytest.raises(ReservationClosed):
            await r.release()
        assert ({TOKENS: 2}, {TOKENS: 0}) == await state(budget)

    async def test_hook_pair(self) -> None:
        """The pattern it serves: a "before" hook acquires, an "after" hook records and
        commits, with nothing but the reservation passed between them."""
        budget = Budget({TOKENS: 1_000, CALLS: 10})
        pending: dict[str, Reservation] = {}

        async def before(call_id: str) -> None:
            pending[call_id] = await budget.acquire(tokens=500, calls=1)

        async def after(call_id: str, used: int) -> None:
            r = pending.pop(call_id)
            r.record(tokens=used, calls=1)
            await r.commit()

        await before("a")
        await before("b")
        with pytest.raises(BudgetExhausted):
            await before("c")
        await after("b", 120)
        await after("a", 80)
        assert ({TOKENS: 200, CALLS: 2}, {TOKENS: 0, CALLS: 0}) == await state(budget)


class TestBadTtl:
    @pytest.mark.parametrize("ttl", ["5", True, b"1", [1]])
    async def test_a_ttl_that_is_not_a_number_is_a_type_error(self, ttl: object) -> None:
        """A ttl must be an int or a float (not a bool); nothing is reserved."""
        budget = Budget({TOKENS: 10})
        with pytest.raises(TypeError, match="ttl"):
            budget.reserve(tokens=1, ttl=ttl)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="ttl"):
            await budget.acquire(tokens=1, ttl=ttl)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="ttl"):
            await budget.try_reserve(tokens=1, ttl=ttl)  # type: ignore[arg-type]
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    @pytest.mark.parametrize("ttl", [0, 0.0, -1, -0.5, math.inf, -math.inf, math.nan])
    async def test_a_ttl_that_is_not_positive_and_finite_is_a_value_error(self, ttl: float) -> None:
        """A ttl must be finite and above 0; nothing is reserved."""
        budget = Budget({TOKENS: 10})
        with pytest.raises(ValueError, match="ttl"):
            await budget.acquire(tokens=1, ttl=ttl)
        with pytest.raises(ValueError, match="ttl"):
            budget.reserve(tokens=1, ttl=ttl)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_a_bad_extend_is_a_value_error(self) -> None:
        """extend() with a ttl that is not a positive finite number raises."""
        budget, _ = clocked({TOKENS: 10})
        r = await budget.acquire(tokens=1, ttl=5)
        for bad in (0, -1, math.inf, math.nan, True):
            with pytest.raises(ValueError, match="ttl"):
                await r.extend(bad)
        await r.release()


class TestMemoryStoreClock:
    def test_the_default_clock_is_posix_time(self) -> None:
        """Without a clock the store uses time.time."""
        assert time.time is MemoryStore().clock

    def test_the_clock_is_read_only(self) -> None:
        """The clock is given at construction and cannot be replaced."""
        clock = Clock()
        store = MemoryStore(clock=clock)
        assert clock is store.clock
        with pytest.raises(AttributeError):
            store.clock = time.time  # type: ignore[misc]

    def test_a_clock_that_is_not_callable_is_a_type_error(self) -> None:
        """MemoryStore(clock=...) checks it can call the clock."""
        with pytest.raises(TypeError, match="clock"):
            MemoryStore(clock=12.0)  # type: ignore[arg-type]


class TestTtlInMemory:
    async def test_an_unclosed_reservation_is_refunded_after_its_ttl(self) -> None:
        """Held until the deadline; at it, the next operation refunds it."""
        budget, clock = clocked({TOKENS: 100})
        r = await budget.acquire(tokens=40, ttl=30)
        clock.advance(29.999)
        assert ({TOKENS: 0}, {TOKENS: 40}) == await state(budget)
        clock.advance(0.001)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        assert r.held  # the object does not know yet; closing it tells

    async def test_a_late_commit_is_refused_and_changes_nothing(self) -> None:
        """Committing an expired reservation raises ReservationClosed; what it recorded is
        not charged (the store already refunded it), as with a Redis lease."""
        budget, clock = clocked({TOKENS: 100})
        r = await budget.acquire(tokens=40, ttl=10)
        r.record(tokens=25)
        clock.advance(11)
        with pytest.raises(ReservationClosed, match="expired"):
            await r.commit()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        assert not r.held

    async def test_a_late_release_is_refused(self) -> None:
        """Releasing an expired reservation raises ReservationClosed too."""
        budget, clock = clocked({TOKENS: 100})
        r = await budget.acquire(tokens=40, ttl=10)
        clock.advance(10)
        with pytest.raises(ReservationClosed, match="expired"):
            await r.release()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_a_block_that_outlives_its_ttl_raises_on_exit(self) -> None:
        """``async with reserve(ttl=...)`` left after the deadline raises on exit."""
        budget, clock = clocked({TOKENS: 100})

        async def outlive() -> None:
            async with budget.reserve(tokens=10, ttl=1) as r:
                r.record(tokens=4)
                clock.advance(2)

        with pytest.raises(ReservationClosed, match="expired"):
            await outlive()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_closing_before_the_deadline_is_normal(self) -> None:
        """A reservation closed in time settles as usual, and its deadline later refunds
        nothing (the budget's other reservations are untouched)."""
        budget, clock = clocked({TOKENS: 100})
        early = await budget.acquire(tokens=40, ttl=10)
        other = await budget.acquire(tokens=30)
        early.record(tokens=15)
        await early.commit()
        clock.advance(100)
        assert ({TOKENS: 15}, {TOKENS: 30}) == await state(budget)
        await other.commit()

    async def test_extend_moves_the_deadline(self) -> None:
        """extend() renews by the reservation's own ttl, or by the seconds given."""
        budget, clock = clocked({TOKENS: 100})
        r = await budget.acquire(tokens=40, ttl=10)
        clock.advance(8)
        await r.extend()  # 10 s from now
        clock.advance(8)
        assert ({TOKENS: 0}, {TOKENS: 40}) == await state(budget)
        await r.extend(100)
        clock.advance(99)
        assert ({TOKENS: 0}, {TOKENS: 40}) == await state(budget)
        r.record(tokens=1)
        await r.commit()
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(budget)

    async def test_extending_an_expired_reservation_is_refused(self) -> None:
        """extend() after the deadline raises ReservationClosed."""
        budget, clock = clocked({TOKENS: 100})
        r = await budget.acquire(tokens=40, ttl=10)
        clock.advance(10)
        with pytest.raises(ReservationClosed, match="expired"):
            await r.extend()

    async def test_a_reservation_without_ttl_never_expires(self) -> None:
        """Only reservations given a ttl expire; extend() on others only checks them."""
        budget, clock = clocked({TOKENS: 100})
        r = await budget.acquire(tokens=40)
        await r.extend(1)
        clock.advance(10**9)
        assert ({TOKENS: 0}, {TOKENS: 40}) == await state(budget)
        await r.release()

    async def test_any_operation_of_the_store_refunds_it(self) -> None:
        """The refund happens at the next operation on any budget of the store: here a
        reservation on the parent refunds the child's expired one at both levels."""
        clock = Clock()
        parent = Budget({TOKENS: 100}, name="p", store=MemoryStore(clock=clock))
        child = parent.child({TOKENS: 100}, name="c")
        forgotten = await child.acquire(tokens=60, ttl=5)
        clock.advance(5)
        r = await parent.acquire(tokens=100)  # fits only once the child's is refunded
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(child)
        assert ({TOKENS: 0}, {TOKENS: 100}) == await state(parent)
        await r.release()
        with pytest.raises(ReservationClosed):
            await forgotten.release()

    @pytest.mark.parametrize(
        "operation", ["charge", "reset", "set_limits", "try_reserve", "commit", "release"]
    )
    async def test_every_operation_refunds_first(self, operation: str) -> None:
        """charge, reset, set_limits, reserve, settle and release each refund expired
        reservations before they act, so none of them sees a stale reservation."""
        budget, clock = clocked({TOKENS: 100})
        forgotten = await budget.acquire(tokens=50, ttl=1)
        other = await budget.acquire(tokens=10)
        clock.advance(1)
        if operation == "charge":
            await budget.charge(tokens=0)
        elif operation == "reset":
            await budget.reset()
        elif operation == "set_limits":
            await budget.set_limits({TOKENS: 100})
        elif operation == "try_reserve":
            taken = await budget.try_reserve(tokens=90)  # fits only without the expired
            assert taken is not None
            await taken.release()
        elif operation == "commit":
            await other.commit()
        else:
            await other.release()
        # Read the kernel's ledger directly: a snapshot would refund expired ones itself.
        ledger = budget._account._chain.leaf  # type: ignore[attr-defined]
        expected = 0 if operation in ("commit", "release") else 10
        assert (expected,) == ledger.reserved
        if other.held:
            await other.release()
        with pytest.raises(ReservationClosed):
            await forgotten.commit()

    async def test_a_waiter_gets_expired_budget(self) -> None:
        """Budget refunded by expiry goes to the first waiter, at the next operation."""
        budget, clock = clocked({TOKENS: 10})
        forgotten = await budget.acquire(tokens=8, ttl=5)  # the "after" hook never comes
        got: list[Reservation] = []

        async def waiter() -> None:
            got.append(await budget.acquire(tokens=6, timeout=math.inf))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            clock.advance(5)
            await budget.snapshot()  # any operation
        assert ({TOKENS: 0}, {TOKENS: 6}) == await state(budget)
        await got[0].commit()
        with pytest.raises(ReservationClosed):
            await forgotten.commit()

    async def test_a_waiter_whose_timeout_passes_takes_expired_budget(self) -> None:
        """A waiter whose timeout passes looks once more, after expired reservations
        were given back: with no other operation meanwhile, it still gets the budget."""
        budget, clock = clocked({TOKENS: 10})
        forgotten = await budget.acquire(tokens=8, ttl=5)
        got: list[Reservation] = []

        async def waiter() -> None:
            got.append(await budget.acquire(tokens=6, timeout=0.05))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            clock.advance(5)  # nothing runs until the waiter's timeout
        assert ({TOKENS: 0}, {TOKENS: 6}) == await state(budget)
        await got[0].release()
        with pytest.raises(ReservationClosed):
            await forgotten.commit()

    async def test_a_waiter_granted_later_gets_its_own_ttl(self) -> None:
        """A waiting reservation's ttl runs from when it is granted."""
        budget, clock = clocked({TOKENS: 10})
        holder = await budget.acquire(tokens=8)
        got: list[Reservation] = []

        async def waiter() -> None:
            got.append(await budget.acquire(tokens=6, timeout=math.inf, ttl=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            clock.advance(100)
            await holder.release()
        clock.advance(9)
        assert ({TOKENS: 0}, {TOKENS: 6}) == await state(budget)
        clock.advance(1)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        with pytest.raises(ReservationClosed):
            await got[0].commit()

    async def test_stale_deadlines_do_not_pile_up(self) -> None:
        """Reservations closed before their deadline leave a bounded number of entries
        in the store's heap, however many there were."""
        store = MemoryStore(clock=Clock())
        budget = Budget({TOKENS: 10}, store=store)
        for _ in range(1_000):
            r = await budget.acquire(tokens=1, ttl=3600)
            await r.commit()
        assert len(store._expiries) <= 100

    async def test_the_clock_is_the_stores(self) -> None:
        """Two stores with their own clocks expire independently."""
        clock_a, clock_b = Clock(), Clock()
        a = Budget({TOKENS: 10}, store=MemoryStore(clock=clock_a))
        b = Budget({TOKENS: 10}, store=MemoryStore(clock=clock_b))
        in_a = await a.acquire(tokens=5, ttl=1)
        in_b = await b.acquire(tokens=5, ttl=1)
        clock_a.advance(2)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(a)
        assert ({TOKENS: 0}, {TOKENS: 5}) == await state(b)
        with pytest.raises(ReservationClosed):
            await in_a.release()
        await in_b.release()


class TestTtlInvariant:
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["reserve", "commit", "release", "advance"]),
                st.integers(min_value=1, max_value=5),
                st.one_of(st.none(), st.integers(min_value=1, max_value=20)),
            ),
            max_size=40,
        )
    )
    def test_reserved_is_what_is_open_and_unexpired(
        self, steps: list[tuple[str, int, int | None]]
    ) -> None:
        """Whatever the order of reservations (with and without ttl), closes and clock
        moves, the budget holds exactly the open, unexpired reservations; a close after
        expiry is refused and charges nothing; spent is what closed in time recorded."""

        async def run() -> None:
            clock = Clock()
            budget = Budget({TOKENS: 10**6}, store=MemoryStore(clock=clock))
            live: list[tuple[Reservation, int, float | None]] = []
            spent = 0
            for op, amount, ttl in steps:
                await checkpoint()
                if op == "reserve":
                    r = await budget.acquire(tokens=amount, ttl=ttl)
                    live.append((r, amount, None if ttl is None else clock.now + ttl))
                elif op == "advance":
                    clock.advance(amount)
                elif live:
                    r, _, deadline = live.pop(amount % len(live))
                    expired = deadline is not None and deadline <= clock.now
                    r.record(tokens=1)
                    if expired:
                        with pytest.raises(ReservationClosed):
                            await (r.commit() if op == "commit" else r.release())
                    elif op == "commit":
                        await r.commit()
                        spent += 1
                    else:
                        await r.release()
                expected = sum(
                    held for _, held, deadline in live if deadline is None or deadline > clock.now
                )
                assert ({TOKENS: spent}, {TOKENS: expected}) == await state(budget)
            for r, _, deadline in live:
                if deadline is None or deadline > clock.now:
                    await r.release()

        anyio.run(run)
