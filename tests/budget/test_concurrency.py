"""Many tasks, threads and event loops on one Budget: SPEC "Safe from many tasks, many
threads and several event loops at once".

No interleaving may make ``spent + reserved`` pass a limit, or lose or duplicate a
refund. Load tests run seeded random work with random cancellation while a poller
watches the counters; barrier tests release many contenders at one instant.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from aiobudget import TOKENS, Budget, BudgetExhausted

from ._support import state

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("quiet_logs")]

SLOTS = "slots"
LIMITS = {TOKENS: 900_000, SLOTS: 64}


@dataclass
class Tally:
    """What the workers did, counted by the test itself (never read from the library)."""

    recorded: int = 0
    held: int = 0
    denied: int = 0
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass
class Peak:
    """The largest ``spent + reserved`` a poller saw, per dimension."""

    used: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMITS, 0))
    polls: int = 0

    async def watch(self, budget: Budget, stop: threading.Event | anyio.Event) -> None:
        while not stop.is_set():
            snapshot = await budget.snapshot()
            for dim in LIMITS:
                used = snapshot.spent[dim] + snapshot.reserved[dim]
                self.used[dim] = max(self.used[dim], used)
            self.polls += 1
            await checkpoint()


async def worker(
    budget: Budget,
    rng: random.Random,
    tally: Tally,
    scopes: list[anyio.CancelScope],
    rounds: int,
) -> None:
    """*rounds* reservations of random size, each waiting or not, recording at most what
    it reserved (so the ledger must stay within the limits), some cancelling themselves
    and some cancelled by the chaos task through *scopes*."""
    for _ in range(rounds):
        tokens = rng.randrange(1, 40)
        slots = rng.randrange(1, 5)
        timeout = rng.choice((None, math.inf, math.inf, math.inf))
        self_cancel = rng.randrange(6) if rng.random() < 0.1 else -1
        uses = [rng.randrange(0, tokens // 2 + 1) for _ in range(2)]  # sum <= tokens
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            try:
                async with budget.reserve(tokens=tokens, slots=slots, timeout=timeout) as r:
                    tally.add(held=1)
                    for step, use in enumerate(uses):
                        if step == self_cancel:
                            scope.cancel()
                        await checkpoint()
                        r.record(tokens=use)
                        tally.add(recorded=use)
            except BudgetExhausted:
                tally.add(denied=1)
                await checkpoint()
        if scope.cancelled_caught:
            tally.add(cancelled=1)


async def chaos(rng: random.Random, scopes: list[anyio.CancelScope], stop: Any) -> None:
    """Cancel a random live scope every few checkpoints."""
    while not stop.is_set():
        for _ in range(rng.randrange(1, 4)):
            await checkpoint()
        if scopes:
            scopes[rng.randrange(len(scopes))].cancel()
            if len(scopes) > 256:
                del scopes[:128]


async def load(budget: Budget, seed: int, tasks: int, rounds: int, tally: Tally) -> None:
    """Run *tasks* workers of *rounds* reservations each, with chaos, to the end."""
    rng = random.Random(seed)
    scopes: list[anyio.CancelScope] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as outer:
        outer.start_soon(chaos, random.Random(seed + 1), scopes, stop)
        async with anyio.create_task_group() as tg:
            for i in range(tasks):
                tg.start_soon(
                    worker, budget, random.Random(rng.random() + i), tally, scopes, rounds
                )
        stop.set()


async def run_load(tasks: int) -> tuple[Budget, Tally, Peak]:
    """*tasks* workers x 10 reservations, with chaos, while a poller watches."""
    budget = Budget(LIMITS, name="load")
    tally = Tally()
    peak = Peak()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(peak.watch, budget, stop)
        await load(budget, seed=947, tasks=tasks, rounds=10, tally=tally)
        stop.set()
    return budget, tally, peak


async def check_load(budget: Budget, tally: Tally, peak: Peak) -> None:
    """No limit was ever passed, nothing stays reserved, spent is what was recorded, and
    the run was a real contest (grants, denials, cancellations and polls all happened)."""
    spent, reserved = await state(budget)
    assert {TOKENS: 0, SLOTS: 0} == reserved
    assert {TOKENS: tally.recorded, SLOTS: 0} == spent
    assert all(peak.used[dim] <= limit for dim, limit in LIMITS.items()), peak.used
    assert tally.held > 0
    assert tally.denied > 0
    assert tally.cancelled > 0
    assert peak.polls > 10


class TestManyTasks:
    async def test_two_thousand_tasks_with_random_cancellation(self) -> None:
        """2,000 tasks x 10 reservations with random cancellation never pass a limit,
        end with nothing reserved, and spend exactly what they recorded."""
        await check_load(*await run_load(2_000))

    @pytest.mark.slow
    @pytest.mark.timeout(300)  # seconds on a quiet machine; a loaded CI core is slower
    def test_ten_thousand_tasks_with_random_cancellation(self) -> None:
        """The same with 10,000 tasks x 10 reservations, on asyncio only (about 7 s; the
        2,000-task test above covers the same paths on every backend)."""

        async def main() -> None:
            await check_load(*await run_load(10_000))

        anyio.run(main, backend="asyncio")


class TestManyThreads:
    async def test_four_threads_with_their_own_event_loops(
        self, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """Four threads, each running its own event loop (mixed backends) against one
        Budget, never pass a limit and lose or duplicate no refund."""
        budget = Budget(LIMITS, name="threads")
        tally = Tally()
        peak = Peak()
        stop = threading.Event()
        backends = [("asyncio", {}), ("trio", {}), anyio_backend, ("asyncio", {})]
        errors: list[BaseException] = []

        def run_load(seed: int, backend: tuple[str, dict[str, Any]]) -> None:
            try:
                anyio.run(
                    load,
                    budget,
                    seed,
                    300,
                    10,
                    tally,
                    backend=backend[0],
                    backend_options=backend[1],
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        def run_poller() -> None:
            anyio.run(peak.watch, budget, stop)

        poller = threading.Thread(target=run_poller)
        threads = [
            threading.Thread(target=run_load, args=(seed, backend))
            for seed, backend in enumerate(backends)
        ]
        poller.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
        stop.set()
        await anyio.to_thread.run_sync(poller.join)
        assert [] == errors
        spent, reserved = await state(budget)
        assert {TOKENS: 0, SLOTS: 0} == reserved
        assert {TOKENS: tally.recorded, SLOTS: 0} == spent
        assert all(peak.used[dim] <= limit for dim, limit in LIMITS.items()), peak.used
        assert tally.held > 0
        assert peak.polls > 10


class TestBarrier:
    @pytest.mark.parametrize("method", ["try_reserve", "reserve", "reserve_waiting"])
    async def test_tasks_released_together(self, method: str) -> None:
        """200 tasks released at once on a budget for 37: exactly 37 get in."""
        budget = Budget({TOKENS: 37 * 3, SLOTS: 1_000})
        go = anyio.Event()
        finish = anyio.Event()
        got: list[bool] = []

        async def contender() -> None:
            await go.wait()
            if method == "try_reserve":
                r = await budget.try_reserve(tokens=3, slots=1)
                got.append(r is not None)
                if r is not None:
                    await finish.wait()
                    await r.release()
                return
            try:
                timeout = 0 if method == "reserve" else math.inf
                async with budget.reserve(tokens=3, slots=1, timeout=timeout):
                    got.append(True)
                    await finish.wait()
            except BudgetExhausted:
                got.append(False)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(contender)
            await anyio.wait_all_tasks_blocked()
            go.set()
            await anyio.wait_all_tasks_blocked()
            assert {TOKENS: 111, SLOTS: 37} == (await budget.snapshot()).reserved
            assert 37 == got.count(True)
            if method == "reserve_waiting":
                assert 37 == len(got)  # the others are still waiting
                finish.set()
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
            else:
                assert 200 - 37 == got.count(False)
                finish.set()
        assert ({TOKENS: 0, SLOTS: 0}, {TOKENS: 0, SLOTS: 0}) == await state(budget)

    async def test_threads_released_together(self) -> None:
        """24 threads, each with its own event loop, released at once on a budget for 7:
        exactly 7 get in."""
        budget = Budget({TOKENS: 7 * 5, SLOTS: 100})
        n = 24
        start = threading.Barrier(n)
        tried = threading.Barrier(n)
        got: list[bool] = []
        errors: list[BaseException] = []

        async def contend() -> None:
            start.wait()  # every loop blocks here on purpose
            r = await budget.try_reserve(tokens=5, slots=2)
            got.append(r is not None)
            tried.wait()  # hold until every thread has tried
            if r is not None:
                await r.release()

        def run() -> None:
            try:
                anyio.run(contend)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
        assert [] == errors
        assert 7 == got.count(True)
        assert n - 7 == got.count(False)
        assert ({TOKENS: 0, SLOTS: 0}, {TOKENS: 0, SLOTS: 0}) == await state(budget)

    async def test_threads_waiting_together(self) -> None:
        """Threads that wait for budget held by other threads all get it, one at a time,
        and the limit is never passed."""
        budget = Budget({TOKENS: 10})
        n = 8
        inside = 0
        most = 0
        lock = threading.Lock()
        errors: list[BaseException] = []

        async def contend() -> None:
            nonlocal inside, most
            for _ in range(50):
                async with budget.reserve(tokens=10, timeout=math.inf) as r:
                    with lock:
                        inside += 1
                        most = max(most, inside)
                    await checkpoint()
                    with lock:
                        inside -= 1
                    r.record(tokens=0)

        def run(backend: str) -> None:
            try:
                anyio.run(contend, backend=backend)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=("trio" if i % 2 else "asyncio",)) for i in range(n)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
        assert [] == errors
        assert 1 == most
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
