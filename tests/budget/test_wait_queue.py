"""The wait queue's own edges: waking a waiter whose event loop is gone, telling asyncio
from a Trio task running on top of it, and taking out a waiter twice.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator

import pytest
import sniffio
import trio

from aiobudget._waiters import Waiter, WaitQueue, _asyncio_loop
from aiobudget.kernel import Chain, Ledger


def chain() -> Chain:
    return Chain([Ledger({"tokens": 10}, name="q")])


def wake_from_another_thread(waiter: Waiter) -> list[BaseException]:
    """Call ``waiter.wake()`` in a new thread; whatever it raised."""
    raised: list[BaseException] = []

    def wake() -> None:
        try:
            waiter.wake()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            raised.append(exc)

    thread = threading.Thread(target=wake)
    thread.start()
    thread.join()
    return raised


class TestWakeAfterTheLoopEnded:
    def test_asyncio_loop_closed(self) -> None:
        """Waking a waiter of a closed asyncio loop from another thread does nothing."""
        loop = asyncio.new_event_loop()

        async def make() -> Waiter:
            return Waiter(chain(), (1,), False, math.inf)

        waiter = loop.run_until_complete(make())
        loop.close()
        assert [] == wake_from_another_thread(waiter)

    def test_trio_run_finished(self) -> None:
        """Waking a waiter of a Trio run that finished, from another thread, does nothing."""

        async def make() -> Waiter:
            return Waiter(chain(), (1,), False, math.inf)

        waiter = trio.run(make)
        assert [] == wake_from_another_thread(waiter)


@pytest.fixture
def trio_in_this_thread() -> Iterator[None]:
    """sniffio told that Trio runs the current task, as in Trio's guest mode."""
    before = sniffio.thread_local.name
    sniffio.thread_local.name = "trio"
    yield
    sniffio.thread_local.name = before


class TestWhichLoop:
    def test_the_running_asyncio_loop(self) -> None:
        """Inside an asyncio task, the waiter parks on that loop."""

        async def probe() -> object:
            return _asyncio_loop()

        loop = asyncio.new_event_loop()
        try:
            assert loop is loop.run_until_complete(probe())
        finally:
            loop.close()

    @pytest.mark.usefixtures("trio_in_this_thread")
    def test_a_trio_task_on_an_asyncio_loop_is_not_asyncio(self) -> None:
        """A Trio task run on top of an asyncio loop (guest mode) does not get a bare
        asyncio future."""

        async def probe() -> object:
            return _asyncio_loop()

        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(probe()) is None
        finally:
            loop.close()

    def test_no_loop(self) -> None:
        """Outside any loop there is none."""
        assert _asyncio_loop() is None


class TestRemove:
    def test_a_waiter_taken_out_twice_counts_once(self) -> None:
        """Removing a waiter that is no longer queued changes nothing."""

        async def scenario() -> tuple[int, int, int]:
            queue = WaitQueue()
            first = Waiter(chain(), (1,), False, math.inf)
            second = Waiter(chain(), (2,), False, math.inf)
            queue.push(first, 0)
            queue.push(second, None)
            pushed = queue.waiting
            queue.remove(first)
            removed = queue.waiting
            queue.remove(first)
            return pushed, removed, queue.waiting

        assert (2, 1, 1) == trio.run(scenario)
