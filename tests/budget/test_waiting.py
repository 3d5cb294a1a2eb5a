"""Reservations that wait (``timeout=``): SPEC "Budget (async)" and STYLE practice 4.

First come first served; an impossible request fails at once; only waiters that now
fit are woken; a large request is not starved; a cancelled waiter passes its turn on;
wake-ups cross threads and event loops; and the two hand-over races anyio's
CapacityLimiter once had (#947, #1170) cannot happen here.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
import threading
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from aiobudget import TOKENS, Budget, BudgetExhausted, Limit
from aiobudget._waiters import Waiter

from ._support import Worker, drop, reserved, state

pytestmark = pytest.mark.anyio


async def hold(budget: Budget, **amounts: int) -> Any:
    """An entered reservation of *amounts*, which the test expects to fit."""
    r = await budget.try_reserve(amounts)
    assert r is not None
    return r


class TestWaitForSettles:
    async def test_waits_until_a_settle_makes_room(self) -> None:
        """A waiter that does not fit waits, and gets the budget once a settle frees it."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=8)
        worker = Worker(budget, "w", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert worker.outcome is None
            holder.record(tokens=4)
            await holder.commit()
            await worker.holding.wait()
            assert ({TOKENS: 4}, {TOKENS: 5}) == await state(budget)
            worker.leave.set()
        assert "done" == worker.outcome
        assert ({TOKENS: 4}, {TOKENS: 0}) == await state(budget)

    async def test_first_come_first_served(self) -> None:
        """Waiters get the budget in the order they arrived."""
        budget = Budget({TOKENS: 3})
        holder = await hold(budget, tokens=3)
        log: list[str] = []
        workers = [Worker(budget, f"w{i}", {TOKENS: 3}, log=log) for i in range(5)]
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(worker.run)
                await wait_all_tasks_blocked()  # arrival order is start order
            await holder.release()
            for worker in workers:
                await worker.holding.wait()
                await wait_all_tasks_blocked()
                assert 1 == sum(w.outcome == "held" for w in workers)
                worker.leave.set()
        assert ["w0", "w1", "w2", "w3", "w4"] == log
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_a_reset_lets_a_waiter_in(self) -> None:
        """A reset that makes room (spent back to 0) grants a waiter at once."""
        budget = Budget({TOKENS: 10})
        await budget.charge(tokens=5)
        holder = await hold(budget, tokens=3)
        worker = Worker(budget, "w", {TOKENS: 5})  # 5 + 3 + 5 > 10, but possible
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert worker.outcome is None
            await budget.reset()
            await wait_all_tasks_blocked()
            assert "held" == worker.outcome
            worker.leave.set()
        await holder.release()

    async def test_higher_limits_let_a_waiter_in(self) -> None:
        """Raising a limit grants a waiter that now fits, at once."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=8)
        worker = Worker(budget, "w", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert worker.outcome is None
            await budget.set_limits({TOKENS: 13})
            await wait_all_tasks_blocked()
            assert "held" == worker.outcome
            worker.leave.set()
        await holder.release()

    async def test_lower_limits_fail_a_waiter_that_can_never_fit(self) -> None:
        """Lowering a limit below what spent leaves fails a waiter at once."""
        budget = Budget({TOKENS: 10})
        await budget.charge(tokens=4)
        holder = await hold(budget, tokens=6)
        worker = Worker(budget, "w", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert worker.outcome is None
            await budget.set_limits({TOKENS: 8})  # 4 spent + 5 > 8
            await wait_all_tasks_blocked()
            assert "denied" == worker.outcome
        await holder.release()

    async def test_try_reserve_with_timeout_waits(self) -> None:
        """try_reserve with a timeout waits too, and returns the entered reservation."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        got: list[Any] = []

        async def waiter() -> None:
            got.append(await budget.try_reserve(tokens=4, timeout=math.inf))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert [] == got
            await holder.release()
        assert got[0] is not None
        assert got[0].held
        assert {TOKENS: 4} == await reserved(budget)
        await got[0].release()

    async def test_infinite_timeout_waits_until_granted(self) -> None:
        """``timeout=math.inf`` keeps waiting across unrelated activity until granted."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        worker = Worker(budget, "w", {TOKENS: 10}, timeout=math.inf)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
                await budget.charge()  # activity that frees nothing
                await wait_all_tasks_blocked()
            assert worker.outcome is None
            await holder.release()
            await worker.holding.wait()
            worker.leave.set()
        assert "done" == worker.outcome

    async def test_fits_at_once_without_waiting(self) -> None:
        """A waiting reservation that fits now is granted without suspending."""
        budget = Budget({TOKENS: 10})
        r = budget.reserve(tokens=10, timeout=math.inf)
        with anyio.CancelScope() as scope:
            scope.cancel()  # any checkpoint would raise
            await r.__aenter__()
        assert r.held
        await r.release()


class TestImpossible:
    async def test_fails_at_once_when_spent_alone_rules_it_out(self) -> None:
        """When spent alone leaves too little, a waiting reservation fails without waiting."""
        budget = Budget({TOKENS: 10}, name="b")
        await budget.charge(tokens=7)
        holder = await hold(budget, tokens=3)
        worker = Worker(budget, "w", {TOKENS: 4}, timeout=math.inf)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert "denied" == worker.outcome
        assert worker.error is not None
        assert (TOKENS, 4, 0, "b") == (
            worker.error.dim,
            worker.error.requested,
            worker.error.remaining,
            worker.error.budget,
        )
        assert "waiting cannot help" in str(worker.error)
        await holder.release()

    async def test_fails_when_a_settle_makes_it_impossible(self) -> None:
        """A waiting head fails as soon as a settle's spend rules it out."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=8)
        worker = Worker(budget, "w", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert worker.outcome is None
            holder.record(tokens=6)  # 6 spent + 5 asked > 10
            await holder.commit()
            await wait_all_tasks_blocked()
            assert "denied" == worker.outcome
        assert ({TOKENS: 6}, {TOKENS: 0}) == await state(budget)

    async def test_fails_when_a_charge_makes_it_impossible(self) -> None:
        """A waiting head fails as soon as a direct charge rules it out."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=8)
        worker = Worker(budget, "w", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            await budget.charge(tokens=6)
            await wait_all_tasks_blocked()
            assert "denied" == worker.outcome
        await holder.release()
        assert ({TOKENS: 6}, {TOKENS: 0}) == await state(budget)

    async def test_a_waiter_behind_the_head_fails_when_it_becomes_impossible(self) -> None:
        """A waiter behind a still-possible head fails as soon as spend rules it out."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=8)
        head = Worker(budget, "head", {TOKENS: 4})
        second = Worker(budget, "second", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(head.run)
            await wait_all_tasks_blocked()
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            await budget.charge(tokens=6)  # head: 6 + 4 <= 10 possible; second: 6 + 5 > 10
            await wait_all_tasks_blocked()
            outcomes = (head.outcome, second.outcome)
            tg.cancel_scope.cancel()
        await holder.release()
        assert (None, "denied") == outcomes

    async def test_waiting_cannot_bypass_headroom(self) -> None:
        """Budget kept as headroom counts as spent-alone for a waiter without use_headroom."""
        budget = Budget({TOKENS: Limit(10, headroom=4)})
        await budget.charge(tokens=3)
        worker = Worker(budget, "w", {TOKENS: 4})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert "denied" == worker.outcome


class TestTimeout:
    async def test_times_out_with_budget_exhausted(self) -> None:
        """A waiter whose timeout passes raises BudgetExhausted and holds nothing."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        with pytest.raises(BudgetExhausted):
            async with budget.reserve(tokens=1, timeout=0.01):
                pytest.fail("the block must not run")
        assert ({TOKENS: 0}, {TOKENS: 10}) == await state(budget)
        await holder.release()

    async def test_zero_timeout_is_a_plain_try(self) -> None:
        """``timeout=0`` fails at once when the reservation does not fit."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        assert await budget.try_reserve(tokens=1, timeout=0) is None
        await holder.release()
        r = await budget.try_reserve(tokens=1, timeout=0)
        assert r is not None
        await r.release()

    async def test_a_timed_out_head_lets_the_next_waiter_in(self) -> None:
        """When a blocking head times out, a waiter behind it that fits is granted."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=6)
        head = Worker(budget, "head", {TOKENS: 8}, timeout=0.01)
        second = Worker(budget, "second", {TOKENS: 4})
        async with anyio.create_task_group() as tg:
            tg.start_soon(head.run)
            await wait_all_tasks_blocked()
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            assert (None, None) == (head.outcome, second.outcome)
            await head.finished.wait()
            await second.holding.wait()
            assert ("denied", "held") == (head.outcome, second.outcome)
            second.leave.set()
        await holder.release()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)


class TestOnlyFittingWaitersWake:
    async def test_counts_wake_ups(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A release wakes exactly the waiters it lets in, never the others."""
        wakes: list[Waiter] = []
        original = Waiter.wake

        def counting_wake(self: Waiter) -> None:
            wakes.append(self)
            original(self)

        monkeypatch.setattr(Waiter, "wake", counting_wake)
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        workers = [Worker(budget, f"w{i}", {TOKENS: 4}) for i in range(5)]
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(worker.run)
                await wait_all_tasks_blocked()
            await budget.charge()  # frees nothing: wakes nobody
            await wait_all_tasks_blocked()
            assert 0 == len(wakes)
            await holder.release()  # room for two of 4
            await wait_all_tasks_blocked()
            assert 2 == len(wakes)
            assert ["held", "held", None, None, None] == [w.outcome for w in workers]
            workers[0].leave.set()  # room for one more
            await wait_all_tasks_blocked()
            assert 3 == len(wakes)
            assert ["done", "held", "held", None, None] == [w.outcome for w in workers]
            for worker in workers:
                worker.leave.set()
        assert 5 == len(wakes)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)


class TestNoStarvation:
    async def test_small_waiters_do_not_overtake_a_big_head(self) -> None:
        """Small waiters that would fit queue behind a big waiter that does not."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=6)
        big = Worker(budget, "big", {TOKENS: 8})
        smalls = [Worker(budget, f"s{i}", {TOKENS: 2}) for i in range(3)]
        workers = [big, *smalls]
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(worker.run)
                await wait_all_tasks_blocked()
            # 4 tokens are free, yet nobody overtook the big one
            assert [None, None, None, None] == [w.outcome for w in workers]
            await holder.release()
            await wait_all_tasks_blocked()
            assert ["held", "held", None, None] == [w.outcome for w in workers]  # 8 + 2
            big.leave.set()
            await wait_all_tasks_blocked()
            assert ["done", "held", "held", "held"] == [w.outcome for w in workers]
            for small in smalls:
                small.leave.set()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_try_reserve_does_not_jump_the_queue(self) -> None:
        """While a big request waits, try_reserve of what is free returns None."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=6)
        big = Worker(budget, "big", {TOKENS: 8})
        async with anyio.create_task_group() as tg:
            tg.start_soon(big.run)
            await wait_all_tasks_blocked()
            before = await budget.snapshot()
            for _ in range(10):
                assert await budget.try_reserve(tokens=1) is None
            assert before == await budget.snapshot()
            await holder.release()
            await big.holding.wait()
            big.leave.set()
        r = await budget.try_reserve(tokens=1)
        assert r is not None
        await r.release()

    async def test_plain_reserve_does_not_jump_the_queue(self) -> None:
        """While a big request waits, a plain reserve of what is free is refused."""
        budget = Budget({TOKENS: 10}, name="q")
        holder = await hold(budget, tokens=6)
        big = Worker(budget, "big", {TOKENS: 8})
        async with anyio.create_task_group() as tg:
            tg.start_soon(big.run)
            await wait_all_tasks_blocked()
            with pytest.raises(BudgetExhausted, match="earlier waiting reservations come first"):
                async with budget.reserve(tokens=1):
                    pytest.fail("the block must not run")
            await holder.release()
            await big.holding.wait()
            assert {TOKENS: 8} == await reserved(budget)
            big.leave.set()

    async def test_a_stream_of_small_requests_cannot_starve_a_big_one(self) -> None:
        """Small requests arriving all the time still let a big waiter in."""
        budget = Budget({TOKENS: 10})
        big = Worker(budget, "big", {TOKENS: 10})
        stop = anyio.Event()
        served = 0

        async def small_stream() -> None:
            nonlocal served
            while not stop.is_set():
                async with budget.reserve(tokens=3, timeout=math.inf) as r:
                    await anyio.lowlevel.checkpoint()
                    r.record(tokens=0)
                    served += 1

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(small_stream)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            tg.start_soon(big.run)
            await big.holding.wait()
            assert {TOKENS: 10} == await reserved(budget)
            stop.set()
            big.leave.set()
        assert served > 0


class TestCancelledWaiter:
    async def test_cancelled_head_lets_the_next_in(self) -> None:
        """Cancelling a blocking head removes it, and a waiter behind that fits proceeds."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=5)
        head = Worker(budget, "head", {TOKENS: 8})
        second = Worker(budget, "second", {TOKENS: 3})
        async with anyio.create_task_group() as tg:
            tg.start_soon(head.run)
            await wait_all_tasks_blocked()
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            assert (None, None) == (head.outcome, second.outcome)
            head.scope.cancel()
            await second.holding.wait()
            assert ("cancelled", "held") == (head.outcome, second.outcome)
            assert {TOKENS: 8} == await reserved(budget)
            second.leave.set()
        await holder.release()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_cancelled_middle_waiter_keeps_the_order(self) -> None:
        """Cancelling a waiter in the middle leaves the others in order, none lost."""
        budget = Budget({TOKENS: 1})
        holder = await hold(budget, tokens=1)
        log: list[str] = []
        workers = [Worker(budget, f"w{i}", {TOKENS: 1}, log=log) for i in range(4)]
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(worker.run)
                await wait_all_tasks_blocked()
            workers[1].scope.cancel()
            await wait_all_tasks_blocked()
            await holder.release()
            for worker in (workers[0], workers[2], workers[3]):
                await worker.holding.wait()
                worker.leave.set()
        assert ["w0", "w2", "w3"] == log
        assert "cancelled" == workers[1].outcome
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_waiter_cancelled_by_its_timeout_and_an_outer_scope(self) -> None:
        """A waiter whose outer scope has a deadline is cancelled cleanly."""
        budget = Budget({TOKENS: 1})
        holder = await hold(budget, tokens=1)
        with anyio.move_on_after(0.01) as scope:
            async with budget.reserve(tokens=1, timeout=math.inf):
                pytest.fail("the block must not run")
        assert scope.cancelled_caught
        await holder.release()
        r = await budget.try_reserve(tokens=1)
        assert r is not None
        await r.release()


class TestAcrossThreads:
    async def test_release_in_another_thread_wakes_the_waiter(
        self, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """A settle in another thread's event loop wakes a waiter in this one."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        worker = Worker(budget, "w", {TOKENS: 10})

        async def settle_there() -> None:
            holder.record(tokens=0)
            await holder.commit()

        other = "trio" if anyio_backend[0] == "asyncio" else "asyncio"
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(lambda: anyio.run(settle_there, backend=other))
            await worker.holding.wait()
            worker.leave.set()
        assert "done" == worker.outcome

    @pytest.mark.parametrize("thread_backend", ["asyncio", "trio"])
    async def test_waiter_in_another_thread_is_woken(self, thread_backend: str) -> None:
        """A settle here wakes a waiter parked in another thread's event loop."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        queued = threading.Event()
        outcome: list[str] = []

        async def wait_there() -> None:
            async def waiter() -> None:
                async with budget.reserve(tokens=7, timeout=math.inf) as r:
                    r.record(tokens=7)
                    outcome.append("held")

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                queued.set()

        thread = threading.Thread(
            target=anyio.run, args=(wait_there,), kwargs={"backend": thread_backend}
        )
        thread.start()
        try:
            await anyio.to_thread.run_sync(queued.wait)
            assert [] == outcome
            await holder.release()
        finally:
            await anyio.to_thread.run_sync(thread.join)
        assert ["held"] == outcome
        assert ({TOKENS: 7}, {TOKENS: 0}) == await state(budget)


class TestHandOverRaces:
    """anyio's CapacityLimiter had these two bugs; the grant-on-behalf hand-over must not."""

    async def test_947_waiter_cancelled_in_the_tick_it_is_granted(
        self, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """A waiter cancelled after being granted, before it resumes, passes the budget on.

        On asyncio a native ``Task.cancel()`` right after the grant throws into the woken
        waiter (anyio's scopes wait for the wake-up instead), which is the exact race of
        anyio #947: the grant made on the waiter's behalf must be handed to the next one.
        Trio delivers cancellation only at the next checkpoint, so there the waiter
        enters and is cancelled in its block: the budget must come back all the same.
        """
        budget = Budget({TOKENS: 1})
        holder = await hold(budget, tokens=1)
        log: list[str] = []
        first = Worker(budget, "first", {TOKENS: 1}, record={TOKENS: 1}, log=log)
        second = Worker(budget, "second", {TOKENS: 1}, record={TOKENS: 1}, log=log)
        native = anyio_backend[0] == "asyncio"
        async with anyio.create_task_group() as tg:
            if native:
                import asyncio

                task = asyncio.ensure_future(first.run())
            else:
                tg.start_soon(first.run)
            await wait_all_tasks_blocked()
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            await holder.release()  # grants to first and wakes it...
            if native:
                task.cancel()  # ...which is cancelled before it runs again
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert "first" not in log  # it never held: the grant was handed on
            else:
                first.scope.cancel()
            await wait_all_tasks_blocked()
            assert "held" == second.outcome
            second.leave.set()
        assert "cancelled" == first.outcome
        assert "done" == second.outcome
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(budget)

    async def test_947_every_waiter_cancelled_in_its_grant_tick(self) -> None:
        """Cancelling each waiter in the tick it is granted loses nothing, down the queue."""
        budget = Budget({TOKENS: 1})
        holder = await hold(budget, tokens=1)
        workers = [Worker(budget, f"w{i}", {TOKENS: 1}) for i in range(6)]
        last = Worker(budget, "last", {TOKENS: 1}, record={TOKENS: 1})
        async with anyio.create_task_group() as tg:
            for worker in [*workers, last]:
                tg.start_soon(worker.run)
                await wait_all_tasks_blocked()
            await holder.release()
            for worker in workers:
                worker.scope.cancel()
                await worker.finished.wait()
            await last.holding.wait()
            last.leave.set()
        assert all(w.outcome in ("cancelled", "done") for w in workers)
        assert "done" == last.outcome
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(budget)

    async def test_1170_nowait_reserve_between_wake_and_resume(self) -> None:
        """A try_reserve or plain reserve between a wake-up and the woken task resuming
        gets nothing: the budget was already handed to the waiter (no over-grant)."""
        budget = Budget({TOKENS: 1})
        holder = await hold(budget, tokens=1)
        worker = Worker(budget, "w", {TOKENS: 1}, record={TOKENS: 1})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            await holder.release()  # wakes the worker; it has not run yet
            assert worker.outcome is None
            assert await budget.try_reserve(tokens=1) is None
            with pytest.raises(BudgetExhausted):
                async with budget.reserve(tokens=1):
                    pytest.fail("the block must not run")
            assert ({TOKENS: 0}, {TOKENS: 1}) == await state(budget)
            await worker.holding.wait()
            assert {TOKENS: 1} == await reserved(budget)
            worker.leave.set()
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(budget)

    async def test_1170_waiting_reserve_between_wake_and_resume(self) -> None:
        """A new waiting reservation arriving between wake and resume queues behind."""
        budget = Budget({TOKENS: 1})
        holder = await hold(budget, tokens=1)
        log: list[str] = []
        first = Worker(budget, "first", {TOKENS: 1}, log=log)
        late = Worker(budget, "late", {TOKENS: 1}, log=log)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await wait_all_tasks_blocked()
            await holder.release()
            tg.start_soon(late.run)
            await wait_all_tasks_blocked()
            assert ["first"] == log
            assert {TOKENS: 1} == await reserved(budget)
            first.leave.set()
            await late.holding.wait()
            late.leave.set()
        assert ["first", "late"] == log


class TestAbandonedReservations:
    async def test_a_collected_reservation_wakes_waiters(self) -> None:
        """A reservation garbage-collected while held hands its budget to a waiter."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        worker = Worker(budget, "w", {TOKENS: 10})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            refs = [holder]
            del holder
            with pytest.warns(ResourceWarning):
                drop(refs)
            await worker.holding.wait()
            worker.leave.set()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_a_reservation_collected_inside_the_stores_lock_wakes_waiters(self) -> None:
        """A reservation collected while the store's lock is held (the collector can run
        inside any critical section) still hands its budget to a waiter."""
        budget = Budget({TOKENS: 10})
        holder = await hold(budget, tokens=10)
        worker = Worker(budget, "w", {TOKENS: 10})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            lock = budget.store._lock  # type: ignore[attr-defined]
            refs = [holder]
            del holder
            with pytest.warns(ResourceWarning), lock:
                drop(refs)
            newcomer = await budget.try_reserve(tokens=1)  # the next operation refunds it
            await wait_all_tasks_blocked()
            outcome = worker.outcome
            tg.cancel_scope.cancel()
        assert newcomer is None  # queued behind the waiter, as it should be
        assert "held" == outcome
