"""`Snapshot.held` and `Snapshot.waiting` in `MemoryStore` beyond the conformance checks:
reservations that expire or are garbage-collected, and many threads at once."""

from __future__ import annotations

import gc
import math
import threading

import anyio
import pytest

from aiobudget import Budget, MemoryStore, ReservationClosed

pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test moves by hand (POSIX seconds)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def counts(budget: Budget) -> tuple[int, int]:
    snapshot = await budget.snapshot()
    return snapshot.held, snapshot.waiting


class TestMemoryStatistics:
    async def test_an_expired_reservation_is_no_longer_held(self) -> None:
        """A reservation whose ttl passed is refunded and leaves held at once."""
        clock = Clock()
        budget = Budget({"tokens": 10}, name="b", store=MemoryStore(clock=clock))
        expiring = await budget.acquire(tokens=4, ttl=5)
        kept = await budget.acquire(tokens=4)
        assert (2, 0) == await counts(budget)
        clock.now += 6
        assert (1, 0) == await counts(budget)
        await kept.release()
        assert (0, 0) == await counts(budget)
        with pytest.raises(ReservationClosed):  # refunded by the store's clock already
            await expiring.release()

    async def test_a_garbage_collected_reservation_is_no_longer_held(self) -> None:
        """A reservation dropped without closing is refunded and leaves held."""
        budget = Budget({"tokens": 10}, name="b")
        reservation = await budget.acquire(tokens=4)
        assert (1, 0) == await counts(budget)
        with pytest.warns(ResourceWarning):
            del reservation
        gc.collect()
        assert (0, 0) == await counts(budget)

    async def test_a_waiter_that_gives_up_is_no_longer_waiting(self) -> None:
        """A waiter cancelled or timed out leaves the count; one granted becomes held."""
        budget = Budget({"tokens": 10}, name="b")
        holder = await budget.acquire(tokens=10)
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def wait(cancel: anyio.CancelScope | None = None) -> None:
                with cancel or anyio.CancelScope():
                    async with budget.reserve(tokens=5, timeout=math.inf):
                        await anyio.sleep_forever()

            tg.start_soon(wait, scope)
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert (1, 2) == await counts(budget)
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert (1, 1) == await counts(budget)
            await holder.release()
            await anyio.wait_all_tasks_blocked()
            assert (1, 0) == await counts(budget)
            tg.cancel_scope.cancel()
        assert (0, 0) == await counts(budget)

    def test_threads_reserving_at_once(self) -> None:
        """Four threads, each with its own event loop, reserving on one store: held is
        exact while they hold, and back to 0 after."""
        store = MemoryStore()
        threads, each = 4, 50
        barrier = threading.Barrier(threads + 1)
        done = threading.Event()

        async def hold() -> None:
            budget = Budget({"tokens": 10_000}, name="shared", store=store)
            held = [await budget.acquire(tokens=1) for _ in range(each)]
            barrier.wait()  # all held: the main thread counts
            done.wait()
            for reservation in held:
                await reservation.release()

        workers = [threading.Thread(target=anyio.run, args=(hold,)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        budget = Budget({"tokens": 10_000}, name="shared", store=store)
        during = anyio.run(counts, budget)
        done.set()
        for worker in workers:
            worker.join()
        assert (threads * each, 0) == during
        assert (0, 0) == anyio.run(counts, budget)
