"""Cancellation at every await point of a reservation's life.

The await points are: waiting in `reserve` (only with ``timeout=``), an async
``on_warn``/``on_exhausted`` callback announced on enter, whatever the block awaits, and
the exit (none with a memory store; a crossing's callback runs shielded). After a
cancellation at any of them, nothing stays reserved and exactly what was recorded is
spent.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import gc
import math
import warnings

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from aiobudget import TOKENS, Budget, Limit, Status, Verdict

from ._support import state

pytestmark = pytest.mark.anyio

# (records made before each of the block's four checkpoints)
RECORDS = (1, 2, 4, 8)


async def body(r: object, cancel_at: int, scope: anyio.CancelScope) -> None:
    """Record RECORDS[i] then checkpoint, four times; cancel just before checkpoint *cancel_at*."""
    for i, amount in enumerate(RECORDS):
        r.record(tokens=amount)  # type: ignore[attr-defined]
        if i == cancel_at:
            scope.cancel()
        await checkpoint()


class TestCancelInTheBlock:
    @pytest.mark.parametrize("cancel_at", range(len(RECORDS)))
    async def test_at_each_checkpoint(self, cancel_at: int) -> None:
        """Cancelled at the block's n-th checkpoint, what was recorded so far is charged."""
        budget = Budget({TOKENS: 100})
        with anyio.CancelScope() as scope:
            async with budget.reserve(tokens=50) as r:
                await body(r, cancel_at, scope)
            pytest.fail("the cancellation must not be lost")
        assert scope.cancelled_caught
        assert ({TOKENS: sum(RECORDS[: cancel_at + 1])}, {TOKENS: 0}) == await state(budget)
        assert r.verdict is not None

    @pytest.mark.parametrize("cancel_at", range(len(RECORDS)))
    async def test_at_each_checkpoint_of_a_waited_reservation(self, cancel_at: int) -> None:
        """The same for a reservation that had to wait for its budget."""
        budget = Budget({TOKENS: 60})
        holder = await budget.try_reserve(tokens=60)
        assert holder is not None
        done = anyio.Event()

        async def worker() -> None:
            with anyio.CancelScope() as scope:
                async with budget.reserve(tokens=50, timeout=math.inf) as r:
                    await body(r, cancel_at, scope)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()
            await holder.release()
            await done.wait()
        assert ({TOKENS: sum(RECORDS[: cancel_at + 1])}, {TOKENS: 0}) == await state(budget)

    @pytest.mark.parametrize("steps", range(12))
    async def test_cancelled_from_another_task(self, steps: int) -> None:
        """Cancelled by another task after *steps* checkpoints: spent is what was recorded."""
        budget = Budget({TOKENS: 1_000})
        recorded = 0
        scope = anyio.CancelScope()

        async def worker() -> None:
            nonlocal recorded
            with scope:
                async with budget.reserve(tokens=100) as r:
                    for _ in range(10):
                        await checkpoint()
                        r.record(tokens=3)
                        recorded += 3

        async def canceller() -> None:
            for _ in range(steps):
                await checkpoint()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            tg.start_soon(canceller)
        assert ({TOKENS: recorded}, {TOKENS: 0}) == await state(budget)


class TestCancelWhileWaiting:
    async def test_cancelled_while_queued(self) -> None:
        """A waiter cancelled in the queue holds nothing and leaves no trace in the queue."""
        budget = Budget({TOKENS: 10})
        holder = await budget.try_reserve(tokens=10)
        assert holder is not None
        entered = []
        with anyio.CancelScope() as scope:

            async def cancel_when_parked() -> None:
                await wait_all_tasks_blocked()
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when_parked)
                async with budget.reserve(tokens=5, timeout=math.inf):
                    entered.append(True)
        assert [] == entered
        assert ({TOKENS: 0}, {TOKENS: 10}) == await state(budget)
        await holder.release()
        r = await budget.try_reserve(tokens=10)  # nobody is queued in front any more
        assert r is not None
        await r.release()

    async def test_already_cancelled_before_waiting(self) -> None:
        """A reservation that must wait, entered in a cancelled scope, is cancelled cleanly."""
        budget = Budget({TOKENS: 10})
        holder = await budget.try_reserve(tokens=10)
        assert holder is not None
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with budget.reserve(tokens=5, timeout=math.inf):
                pytest.fail("the block must not run")
        assert scope.cancelled_caught
        assert ({TOKENS: 0}, {TOKENS: 10}) == await state(budget)
        await holder.release()
        r = await budget.try_reserve(tokens=10)
        assert r is not None
        await r.release()

    async def test_deadline_while_waiting(self) -> None:
        """An outer deadline that passes while waiting cancels cleanly."""
        budget = Budget({TOKENS: 10})
        holder = await budget.try_reserve(tokens=10)
        assert holder is not None
        with anyio.move_on_after(0.01) as scope:
            async with budget.reserve(tokens=5, timeout=math.inf):
                pytest.fail("the block must not run")
        assert scope.cancelled_caught
        await holder.release()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)


class TestCancelDuringEnterCallback:
    async def test_cancelled_in_an_async_on_warn_at_enter(self) -> None:
        """Cancelled while an async on_warn runs on enter, the reservation is given back.

        The callback is not shielded (one that hangs must not make the task
        uncancellable), so the cancellation interrupts it; since no ``__aexit__`` will
        run, entering refunds the reservation itself before re-raising.
        """
        gate = anyio.Event()
        started: list[Verdict] = []
        finished: list[Verdict] = []

        async def on_warn(name: str | None, verdict: Verdict) -> None:
            started.append(verdict)
            await gate.wait()
            finished.append(verdict)

        budget = Budget({TOKENS: Limit(10, warn=5)}, on_warn=on_warn)
        entered: list[bool] = []

        async def worker() -> None:
            async with budget.reserve(tokens=6) as r:
                entered.append(True)
                r.record(tokens=6)

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_all_tasks_blocked()  # parked in on_warn, on enter
            tg.cancel_scope.cancel()
        leaked = await state(budget)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()  # a leak would be refunded here, not in some later test
        assert ({TOKENS: 0}, {TOKENS: 0}) == leaked
        assert ([Verdict(Status.WARN, TOKENS)], [], []) == (started, finished, entered)

    async def test_a_hanging_callback_at_enter_does_not_block_cancellation(self) -> None:
        """An on_warn that never returns is interrupted by cancellation, nothing leaks."""

        async def on_warn(name: str | None, verdict: Verdict) -> None:
            await anyio.sleep_forever()

        budget = Budget({TOKENS: Limit(10, warn=5)}, on_warn=on_warn)
        with anyio.move_on_after(0.05) as scope:
            async with budget.reserve(tokens=6):
                pytest.fail("the block must not run")
        assert scope.cancelled_caught
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_callback_at_enter_that_completes(self) -> None:
        """An async on_warn that completes on enter leaves the reservation working."""
        calls: list[Verdict] = []

        async def on_warn(name: str | None, verdict: Verdict) -> None:
            await checkpoint()
            calls.append(verdict)

        budget = Budget({TOKENS: Limit(10, warn=5)}, on_warn=on_warn)
        async with budget.reserve(tokens=6) as r:
            r.record(tokens=2)
        assert [Verdict(Status.WARN, TOKENS)] == calls
        assert ({TOKENS: 2}, {TOKENS: 0}) == await state(budget)


class TestExitIsShielded:
    async def test_exit_in_an_already_cancelled_scope_settles(self) -> None:
        """The exit completes and settles inside a scope that is already cancelled."""
        budget = Budget({TOKENS: 100})
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with budget.reserve(tokens=50) as r:
                r.record(tokens=7)
        assert not scope.cancelled_caught  # nothing awaited a checkpoint: nothing raised
        assert ({TOKENS: 7}, {TOKENS: 0}) == await state(budget)

    async def test_exit_after_the_block_was_cancelled(self) -> None:
        """The exit after a cancelled checkpoint settles, with the scope still cancelled."""
        budget = Budget({TOKENS: 100})
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with budget.reserve(tokens=50) as r:
                r.record(tokens=7)
                await checkpoint()
        assert scope.cancelled_caught
        assert ({TOKENS: 7}, {TOKENS: 0}) == await state(budget)

    async def test_exit_does_not_suspend_with_a_memory_store(self) -> None:
        """Exit without a crossing never yields to the event loop."""
        budget = Budget({TOKENS: 100})
        other_ran = []

        async def other() -> None:
            other_ran.append(True)

        async with anyio.create_task_group() as tg:
            async with budget.reserve(tokens=5) as r:
                r.record(tokens=1)
                tg.start_soon(other)
            assert [] == other_ran  # the exit did not let the new task run
        assert [True] == other_ran

    async def test_async_callback_on_exit_is_cancellable_after_the_settle(self) -> None:
        """In a cancelled scope the exit settles first; the crossing's async callback then
        starts and may be interrupted (a hanging callback must not pin the task)."""
        started: list[Verdict] = []
        finished: list[Verdict] = []

        async def on_exhausted(name: str | None, verdict: Verdict) -> None:
            started.append(verdict)
            await anyio.sleep_forever()
            finished.append(verdict)

        budget = Budget({TOKENS: 10}, on_exhausted=on_exhausted)
        with anyio.CancelScope() as scope:
            async with budget.reserve(tokens=5) as r:
                r.record(tokens=10)
                scope.cancel()
                await checkpoint()
        assert scope.cancelled_caught
        assert ([Verdict(Status.EXHAUSTED, TOKENS)], []) == (started, finished)
        assert ({TOKENS: 10}, {TOKENS: 0}) == await state(budget)

    async def test_commit_and_release_in_a_cancelled_scope(self) -> None:
        """commit and release settle even inside a cancelled scope."""
        budget = Budget({TOKENS: 100})
        a = await budget.try_reserve(tokens=10)
        b = await budget.try_reserve(tokens=10)
        assert a is not None
        assert b is not None
        with anyio.CancelScope() as scope:
            scope.cancel()
            a.record(tokens=3)
            await a.commit()
            await b.release()
        assert ({TOKENS: 3}, {TOKENS: 0}) == await state(budget)
