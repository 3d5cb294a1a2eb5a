"""RedisStore with budgets that renew: the roll inside the scripts by the server's clock,
exactly once across processes, whatever the clients' clocks say."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import itertools
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from aiobudget import (
    BackendError,
    Budget,
    BudgetExhausted,
    InvalidLimits,
    Limit,
    LimitsMismatch,
    Period,
    ReservationClosed,
)
from aiobudget.kernel import from_micros
from aiobudget.stores._redis_account import RedisAccount
from aiobudget.stores._redis_layout import head as script_head
from aiobudget.stores._redis_scripts import run, scripts
from aiobudget.stores.redis import RedisStore

from ._periods_worker import LIMITS
from .test_multiprocess import _env

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

UTC = timezone.utc


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """structlog unconfigured before and after each test: capture_logs() leaves it marked
    as configured, after which aiobudget would print its DEBUG events in later tests."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


WORKER = Path(__file__).with_name("_periods_worker.py")


def closed_events(logs: list[Any], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "budget.period_closed" and e["budget"] == name]


async def server_time(store: RedisStore) -> datetime:
    seconds, micros = await store._client().time()
    return from_micros(int(seconds) * 1_000_000 + int(micros))


async def wait_for_window(budget: Budget) -> None:
    """Until just after the budget's next boundary (by the server's clock), rolled."""
    snap = await budget.snapshot()
    assert snap.resets_at is not None
    store = budget.store
    assert isinstance(store, RedisStore)
    await anyio.sleep(max(0.0, (snap.resets_at - await server_time(store)).total_seconds()) + 0.02)
    await budget.snapshot()  # the operation that rolls it over


class TestRoll:
    """The scripts roll a budget over by the server's clock."""

    async def test_spent_goes_to_zero_once(self, store: RedisStore) -> None:
        """At a boundary spent goes to 0, live reservations stay and settle into the new
        window, and budget.period_closed is logged once with the final spent."""
        name = f"roll-{uuid.uuid4().hex[:6]}"
        budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(0.5))
        await wait_for_window(budget)
        with structlog.testing.capture_logs() as logs:
            await budget.charge(calls=3)
            held = await budget.try_reserve(calls=2)
            assert held is not None
            first = await budget.snapshot()
            await wait_for_window(budget)
            held.record(calls=1)
            await held.commit()
            after = await budget.snapshot()
        assert first.resets_at == after.period_start
        assert ({"calls": 1}, {"calls": 0}) == (dict(after.spent), dict(after.reserved))
        [event] = closed_events(logs, name)
        assert {"calls": 3} == event["spent"]
        assert first.period_start == datetime.fromisoformat(
            event["period_start"].replace("Z", "+00:00")
        )

    async def test_window_is_the_servers(self, store: RedisStore) -> None:
        """The snapshot's window contains the server's time, for a calendar period too."""
        budget = Budget(
            {"calls": 10},
            name=f"cal-{uuid.uuid4().hex[:6]}",
            store=store,
            period=Period.daily(tz="Pacific/Apia"),
        )
        snap = await budget.snapshot()
        now = await server_time(store)
        assert Period.daily(tz="Pacific/Apia").window(now) == (snap.period_start, snap.resets_at)

    async def test_denial_says_when(self, store: RedisStore) -> None:
        """A denial carries when the level that said no resets."""
        parent = Budget(
            {"calls": 1}, name=f"deny-{uuid.uuid4().hex[:6]}", store=store, period=Period.weekly()
        )
        child = parent.child({"calls": 5}, name="c", period=Period.daily())
        await child.charge(calls=1)
        with pytest.raises(BudgetExhausted) as caught:
            async with child.reserve(calls=1):
                pass
        assert (await parent.snapshot()).resets_at == caught.value.resets_at

    async def test_children_roll_on_their_own_periods(self, store: RedisStore) -> None:
        """A child on short windows under a parent on a weekly period: the child rolls, the
        parent keeps what the child spent."""
        parent = Budget(
            {"calls": 100}, name=f"tree-{uuid.uuid4().hex[:6]}", store=store, period=Period.weekly()
        )
        child = parent.child({"calls": 10}, name="c", period=Period.every(0.3))
        await child.charge(calls=4)
        await wait_for_window(child)
        await child.charge(calls=1)
        assert (1, 5) == (
            (await child.snapshot()).spent["calls"],
            (await parent.snapshot()).spent["calls"],
        )


class TestStoredWithTheLimits:
    """The period is part of what is stored with the limits."""

    async def test_mismatch(self, store: RedisStore) -> None:
        """Another period, or none, is LimitsMismatch (what="period")."""
        name = f"mm-{uuid.uuid4().hex[:6]}"
        await Budget({"calls": 10}, name=name, store=store, period=Period.daily()).charge(calls=1)
        with pytest.raises(LimitsMismatch) as caught:
            await Budget({"calls": 10}, name=name, store=store, period=Period.weekly()).snapshot()
        assert ("period", Period.daily(), Period.weekly()) == (
            caught.value.what,
            caught.value.stored,
            caught.value.given,
        )
        with pytest.raises(LimitsMismatch):
            await Budget({"calls": 10}, name=name, store=store).snapshot()
        with pytest.raises(LimitsMismatch) as limits:
            await Budget({"calls": 11}, name=name, store=store, period=Period.daily()).snapshot()
        assert "limits" == limits.value.what

    async def test_another_process_changes_the_period(
        self, redis_url: str, redis_prefix: str
    ) -> None:
        """update_limits in one process; the other follows the stored period at its next
        call, and what was spent carries over."""
        name = f"follow-{uuid.uuid4().hex[:6]}"
        async with (
            RedisStore(redis_url, prefix=redis_prefix) as one,
            RedisStore(redis_url, prefix=redis_prefix) as two,
        ):
            first = Budget({"calls": 10}, name=name, store=one, period=Period.daily())
            await first.charge(calls=2)
            await Budget(
                {"calls": 10}, name=name, store=two, period=Period.monthly(), update_limits=True
            ).charge(calls=1)
            snap = await first.snapshot()
            now = await server_time(one)
            assert Period.monthly().window(now) == (snap.period_start, snap.resets_at)
            assert {"calls": 3} == dict(snap.spent)
            assert Period.monthly() == await one.describe_period(name)

    async def test_set_limits_keeps_the_period(self, store: RedisStore) -> None:
        """New limits keep the stored period."""
        name = f"keep-{uuid.uuid4().hex[:6]}"
        budget = Budget(
            {"calls": 10}, name=name, store=store, period=Period.daily(tz="Asia/Kolkata")
        )
        await budget.set_limits({"calls": 20})
        assert Period.daily(tz="Asia/Kolkata") == await store.describe_period(name)
        assert (await budget.snapshot()).resets_at is not None
        assert {"calls": Limit(20)} == await store.describe(name)

    async def test_describe_period(self, store: RedisStore) -> None:
        """describe_period is None without a period or without a budget."""
        name = f"plain-{uuid.uuid4().hex[:6]}"
        await Budget({"calls": 10}, name=name, store=store).charge(calls=1)
        assert await store.describe_period(name) is None
        assert await store.describe_period("no-such-budget") is None

    async def test_not_a_period(self, store: RedisStore) -> None:
        """A period that is not a Period is refused when the budget is built."""
        with pytest.raises(InvalidLimits, match="period"):
            store.open("x", {"calls": Limit(1)}, period="daily")  # type: ignore[arg-type]


async def until_boundary(budget: Budget, *, after: float = 0.0) -> None:
    """Sleep, touching nothing, until just past the budget's next boundary (by the
    server's clock) and at least *after* seconds."""
    snap = await budget.snapshot()
    assert snap.resets_at is not None
    store = budget.store
    assert isinstance(store, RedisStore)
    left = (snap.resets_at - await server_time(store)).total_seconds()
    await anyio.sleep(max(0.0, left, after) + 0.02)


def state_keys(store: RedisStore, name: str) -> list[str]:
    base = f"{store.prefix}:{{{name}}}"
    return [f"{base}:{suffix}" for suffix in ("s", "l", "e", "w", "t")]


async def dump(store: RedisStore, name: str) -> dict[str, object]:
    """The budget's keys, whole."""
    client = store._client()
    state, leases, expiries, waiters, tickets = state_keys(store, name)
    return {
        "state": await client.hgetall(state),
        "leases": await client.hgetall(leases),
        "expiries": await client.zrange(expiries, 0, -1, withscores=True),
        "waiters": await client.zrange(waiters, 0, -1, withscores=True),
        "tickets": await client.hgetall(tickets),
    }


class TestRollWritesWithTheOperation:
    """The roll changes the budget in memory, like the rest of a script, and done()
    writes it: a script refused after the roll leaves nothing half done."""

    async def test_a_refusal_after_the_roll_writes_nothing(self, store: RedisStore) -> None:
        """A settle past a boundary that finds its lease damaged raises BackendError and
        leaves every key as it was: the window is not closed, spent is not reset."""
        name = f"half-{uuid.uuid4().hex[:6]}"
        budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(0.5))
        await wait_for_window(budget)
        await budget.charge(calls=3)
        reservation = await budget.acquire(calls=2)
        await until_boundary(budget)
        leases = state_keys(store, name)[1]
        held = await store._client().hgetall(leases)  # the charge's record and the lease
        [lease] = [key for key, value in held.items() if not value.startswith(b"=")]
        await store._client().hset(leases, lease, "9")  # more than is reserved
        before = await dump(store, name)
        with structlog.testing.capture_logs() as logs, pytest.raises(BackendError) as caught:
            await reservation.commit()
        assert "is damaged in Redis" in str(caught.value)
        assert before == await dump(store, name)
        assert [] == closed_events(logs, name)
        await store._client().hset(leases, lease, held[lease])
        await reservation.commit()  # the same settle, tried again: now it goes through
        assert {"calls": 0} == dict((await budget.snapshot()).spent)

    async def test_a_lost_lease_reply_carries_the_trailer(self, store: RedisStore) -> None:
        """A settle of a lease that expired, past a boundary, is refused as closed; the
        window it rolled is logged by that call all the same."""
        name = f"lost-{uuid.uuid4().hex[:6]}"
        budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(0.5))
        await wait_for_window(budget)
        await budget.charge(calls=3)
        reservation = await budget.acquire(calls=2, ttl=0.2)
        await until_boundary(budget, after=0.25)
        with structlog.testing.capture_logs() as logs, pytest.raises(ReservationClosed):
            await reservation.commit()
        assert [{"calls": 3}] == [e["spent"] for e in closed_events(logs, name)]
        assert {"calls": 0} == dict((await budget.snapshot()).spent)

    async def test_an_unreadable_window_fails_closed_until_repaired(
        self, store: RedisStore
    ) -> None:
        """A window edited into garbage: operations raise BackendError naming the budget
        and change nothing; repair drops the window, and the next operation starts the
        current one with what was spent carried over."""
        name = f"win-{uuid.uuid4().hex[:6]}"
        budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(60))
        await budget.charge(calls=3)
        await store._client().hset(state_keys(store, name)[0], "window", "garbage")
        before = await dump(store, name)
        with pytest.raises(BackendError, match="its period window is unreadable"):
            await budget.charge(calls=1)
        assert before == await dump(store, name)
        assert ["its unreadable period window (garbage) was dropped"] == await store.repair(name)
        await budget.charge(calls=1)
        after = await budget.snapshot()
        assert {"calls": 4} == dict(after.spent)
        assert after.period_start is not None

    async def test_read_follows_the_stored_period(self, store: RedisStore) -> None:
        """RedisStore.read, which knows no period beforehand, reports the window, held
        and waiting of a budget with a period, as its snapshot does."""
        name = f"read-{uuid.uuid4().hex[:6]}"
        budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(60))
        await budget.charge(calls=3)
        reservation = await budget.acquire(calls=2)
        read = await store.read(name)
        assert read is not None
        assert await budget.snapshot() == read
        assert (1, read.resets_at) == (read.held, read.period_start + timedelta(seconds=60))
        await reservation.release()


class TestClientClocks:
    """Client clocks may be wrong by minutes: the server's clock decides."""

    @pytest.mark.parametrize("skew", [-300.0, 240.0])
    async def test_a_skewed_client_changes_nothing(
        self, redis_url: str, redis_prefix: str, skew: float, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With this process's clock off by minutes, windows are the server's, a boundary
        rolls once, and the store's estimate of the server's time is corrected."""
        name = f"skew-{uuid.uuid4().hex[:6]}"
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + skew)
        async with RedisStore(redis_url, prefix=redis_prefix) as store:
            budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(0.5))
            snap = await budget.snapshot()
            now = await server_time(store)
            assert snap.period_start is not None
            assert snap.resets_at is not None
            assert snap.period_start <= now < snap.resets_at + timedelta(seconds=0.5)
            assert abs(store.clock() - real()) < 0.5
            with structlog.testing.capture_logs() as logs:
                await budget.charge(calls=4)
                await anyio.sleep(max(0.0, snap.resets_at.timestamp() - real()) + 0.6)
                after = await budget.snapshot()
            assert {"calls": 0} == dict(after.spent)
            # The window of the 4 calls closed once (the charge itself may have closed
            # the snapshot's window, with nothing spent, if a boundary fell in between).
            spent = [e["spent"] for e in closed_events(logs, name)]
            assert [{"calls": 4}] == [s for s in spent if s["calls"]]
            assert len(spent) <= 2

    async def test_boundaries_that_miss_the_server_are_refused(self, store: RedisStore) -> None:
        """A call whose boundaries do not cover the server's time changes nothing and is
        answered with the server's time (the store then retries with its corrected
        estimate)."""
        name = f"miss-{uuid.uuid4().hex[:6]}"
        budget = Budget({"calls": 10}, name=name, store=store, period=Period.every(1))
        await budget.charge(calls=1)
        account = budget._account
        assert isinstance(account, RedisAccount)
        head = script_head(account.tree, account.levels)  # KEYS and the header, as a call has
        stale = account.levels[0].hint(round((time.time() - 3600) * 1_000_000))
        charge = [uuid.uuid4().hex, "30000", "0", "5"]  # id, remembered ms, strict, calls
        reply = await run(
            store._client(), scripts()["charge"], 5, head, [*charge, stale], what=name
        )
        assert b"CLOCK" == reply[0]
        assert abs(int(reply[1]) / 1e6 - time.time()) < 5
        assert {"calls": 1} == dict((await budget.snapshot()).spent)
        bad = "every;1000000;0|5,4"  # boundaries out of order
        with pytest.raises(BackendError):
            await run(store._client(), scripts()["charge"], 5, head, [*charge, bad], what=name)
        assert {"calls": 1} == dict((await budget.snapshot()).spent)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_processes_roll_each_boundary_once(redis_url: str, redis_prefix: str) -> None:
    """4 processes x 50 tasks on Period.every(1) for 4 seconds, two of them with clocks
    minutes off: every boundary is rolled by exactly one process (budget.period_closed
    counted across processes), no window's spend passes its limit, and the closed windows
    plus the open one add up to everything recorded."""
    name = f"mp-{uuid.uuid4().hex[:6]}"
    skews = [0.0, 180.0, -240.0, 0.5]
    reports: list[dict[str, Any]] = []
    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        budget = Budget(LIMITS, name=name, store=store, period=Period.every(1))

        async def worker(seed: int) -> None:
            command = [sys.executable, str(WORKER), redis_url, redis_prefix, name, "50", "4"]
            command += [str(seed), str(skews[seed])]
            result = await anyio.run_process(command, env=_env(), check=False)
            assert 0 == result.returncode, result.stderr.decode()[-2000:]
            reports.append(json.loads(result.stdout.decode().strip().splitlines()[-1]))

        with structlog.testing.capture_logs() as logs, anyio.fail_after(60):
            async with anyio.create_task_group() as workers:
                for seed in range(len(skews)):
                    workers.start_soon(worker, seed)
                client = store._client()
                for _ in range(4000):
                    if int(await client.get(f"{redis_prefix}:ready") or 0) == len(skews):
                        break
                    await anyio.sleep(0.005)
                else:
                    pytest.fail("the workers did not all get ready")
                await client.set(f"{redis_prefix}:go", 1)
                await budget.snapshot()  # the parent samples too (and may roll a window)
            final = await budget.snapshot()
    windows = [*(w for report in reports for w in report["closed"])]
    windows += [
        {"start": e["period_start"], "end": e["period_end"], "spent": e["spent"]}
        for e in closed_events(logs, name)
    ]
    windows.sort(key=lambda w: datetime.fromisoformat(w["start"].replace("Z", "+00:00")))
    starts = [w["start"] for w in windows]
    assert len(starts) == len(set(starts)), "a window was closed twice"
    for before, after in itertools.pairwise(windows):
        assert before["end"] == after["start"], "a boundary was not rolled (or rolled late)"
    assert len(windows) >= 4, "the run spanned too few boundaries to prove much"
    assert final.period_start is not None
    assert windows[-1]["end"] == final.period_start.isoformat().replace("+00:00", "Z")
    for window in windows:
        for dim, limit in LIMITS.items():
            assert window["spent"][dim] <= limit, window
    recorded = {dim: sum(r["totals"][dim] for r in reports) for dim in LIMITS}
    spent = {dim: sum(w["spent"][dim] for w in windows) + final.spent[dim] for dim in LIMITS}
    assert recorded == spent
    assert sum(r["denied"] for r in reports) > 0, "no window was ever exhausted"
    for report in reports:  # each process learned the server's time, its own clock aside
        assert abs(report["offset"] + report["skew"]) < 1.0
