"""RedisStore when Redis fails: a server killed mid-run, restarted without its scripts,
connections dropped under running work, replies lost to timeouts or to a broken network
(a loopback proxy that drops them), SCRIPT FLUSH mid-run, a server paused (CLIENT PAUSE)
or out of memory (maxmemory), and a server configured so that it could lose budgets.

Each test has a redis-server of its own (on a free loopback port, nothing on disk unless
it says so), killed and restarted by pid.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio
import structlog
from structlog.testing import capture_logs

from aiobudget import BackendError, Budget, BudgetExhausted, ReservationClosed, Status
from aiobudget.stores.redis import RedisStore

from ._proxy import ReplyDropper
from ._servers import RedisServer
from ._support import eventually, keys_of

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

BOUND = 10.0  # seconds: any failure must surface well within this, never hang

# Keeps Redis busy (it runs one script at a time) for ARGV[1] microseconds of its clock,
# so that every other command waits: replies are "lost" to client timeouts, on purpose.
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
    t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own; killed by pid afterwards, even on failure."""
    made = RedisServer()
    made.start()
    try:
        yield made
    finally:
        made.kill()


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A separate connection to the private server, to disturb it."""
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


def _prefix() -> str:
    return f"aiobudget-faults-{uuid.uuid4().hex[:8]}"


async def _counters(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    snapshot = await budget.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)


class TestServerDies:
    async def test_every_operation_raises_backend_error_not_a_hang(
        self, server: RedisServer
    ) -> None:
        """Killed mid-run: charge, reserve, snapshot, a waiting reservation and the settle
        of a held one all raise BackendError, in bounded time; nothing is allowed."""
        async with RedisStore(server.url, prefix=_prefix(), lease_ttl=5) as store:
            budget = Budget({"calls": 3}, name="b", store=store)
            await budget.charge(calls=1)
            held = await budget.try_reserve(calls=2)
            assert held is not None
            waiter_error: list[BaseException] = []

            async def waiter() -> None:
                try:
                    async with budget.reserve(calls=2, timeout=60):
                        pytest.fail("granted while Redis was down")
                except BackendError as exc:
                    waiter_error.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                # The waiter is queued (its ticket is in Redis) before the kill.
                client = redis.asyncio.Redis.from_url(server.url)
                try:
                    tickets = f"{store.prefix}:{{b}}:t"
                    await eventually(lambda: _has(client, tickets))
                finally:
                    await client.aclose()
                server.kill()
                with anyio.fail_after(BOUND):
                    with pytest.raises(BackendError):
                        await budget.charge(calls=1)
                    with pytest.raises(BackendError):
                        async with budget.reserve(calls=1):
                            pytest.fail("reserved without Redis")
                    with pytest.raises(BackendError):
                        await budget.snapshot()
                    with pytest.raises(BackendError):
                        async with held:
                            held.record(calls=1)
                    await eventually(lambda: _true(bool(waiter_error)), BOUND)
            assert isinstance(waiter_error[0], BackendError)

    async def test_restarted_without_scripts_operations_work_again(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """Restarted on the same port with nothing (no data, no scripts): operations
        reconnect, load the scripts again and work."""
        async with RedisStore(server.url, prefix=_prefix()) as store:
            budget = Budget({"calls": 5}, name="b", store=store)
            async with budget.reserve(calls=1) as r:
                r.record(calls=1)
            server.kill()
            server.start()
            assert [False] == await admin.script_exists(_sha("charge"))
            with anyio.fail_after(BOUND):
                await budget.charge(calls=2)
                await budget.reset()
                await budget.charge(calls=2)
                async with budget.reserve(calls=1) as r:
                    r.record(calls=1)
                # The data went with the old server (--save ""): the budget starts again.
                assert ({"calls": 3}, {"calls": 0}) == await _counters(budget)
            assert [True] == await admin.script_exists(_sha("charge"))

    async def test_restarted_without_scripts_the_next_operation_reloads_them(
        self, server: RedisServer
    ) -> None:
        """Restarted on the same port: the very next operation, whose pooled connection
        is dead, is retried once on a fresh one and reloads the scripts, transparently."""
        async with RedisStore(server.url, prefix=_prefix()) as store:
            budget = Budget({"calls": 5}, name="b", store=store)
            await budget.charge(calls=1)
            server.kill()
            server.start()
            with anyio.fail_after(BOUND):
                await budget.charge(calls=2)
            assert ({"calls": 2}, {"calls": 0}) == await _counters(budget)


class TestLostConnections:
    async def test_a_settle_whose_reply_is_lost_is_counted_once(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """Redis stalls (a long script): the settle times out on the client, which retries
        it; Redis runs every copy it received, and the lease id makes the later ones
        answer the first one's outcome instead of counting again."""
        url = f"{server.url}?socket_timeout=0.1"
        async with RedisStore(url, prefix=_prefix()) as store:
            budget = Budget({"calls": 10}, name="b", store=store)
            reservation = await budget.try_reserve(calls=4)
            assert reservation is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(admin.eval, BUSY, 0, 450_000)
                await eventually(lambda: _busy(server))
                with anyio.fail_after(BOUND):
                    async with reservation:
                        reservation.record(calls=3)
            assert ({"calls": 3}, {"calls": 0}) == await _counters(budget)

    async def test_dropped_connections_under_load_count_everything_once(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """``CLIENT KILL TYPE normal`` again and again while 20 tasks reserve and settle:
        the store reconnects; every settle that returned is counted exactly once, none
        that failed is counted twice, and no reservation stays live."""
        async with RedisStore(server.url, prefix=_prefix(), lease_ttl=1) as store:
            budget = Budget({"calls": 100_000}, name="b", store=store)
            counted = 0
            uncertain = 0
            failures = 0
            running = True

            async def worker() -> None:
                nonlocal counted, uncertain, failures
                while running:
                    try:
                        reservation = await budget.try_reserve(calls=3)
                    except BackendError:
                        failures += 1
                        continue
                    assert reservation is not None
                    try:
                        async with reservation:
                            reservation.record(calls=2)
                    except BackendError:
                        uncertain += 2  # the settle may or may not have run
                    else:
                        counted += 2

            with anyio.fail_after(BOUND * 2):
                async with anyio.create_task_group() as tg:
                    for _ in range(20):
                        tg.start_soon(worker)
                    for _ in range(10):
                        await _until(lambda: counted >= 40)
                        before = counted
                        await admin.client_kill_filter(_type="normal", skipme=True)
                        await _until(lambda before=before: counted >= before + 40)  # type: ignore[misc]
                    running = False

                async def settled() -> bool:
                    _, reserved = await _counters(budget)
                    return reserved == {"calls": 0}

                await eventually(settled, 5)
            spent, _ = await _counters(budget)
            assert counted <= spent["calls"] <= counted + uncertain
            assert counted > 400

    async def test_script_flush_mid_run(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """SCRIPT FLUSH again and again while 20 tasks work: every operation succeeds
        (the scripts are reloaded as needed) and the totals are exact."""
        async with RedisStore(server.url, prefix=_prefix()) as store:
            budget = Budget({"calls": 1_000_000}, name="b", store=store)
            counted = 0
            running = True

            async def worker() -> None:
                nonlocal counted
                while running:
                    async with budget.reserve(calls=2) as r:
                        r.record(calls=1)
                    await budget.charge(calls=1)
                    counted += 2

            with anyio.fail_after(BOUND * 2):
                async with anyio.create_task_group() as tg:
                    for _ in range(20):
                        tg.start_soon(worker)
                    for _ in range(10):
                        before = counted
                        await admin.script_flush()
                        await _until(lambda before=before: counted >= before + 40)  # type: ignore[misc]
                    running = False
            assert ({"calls": counted}, {"calls": 0}) == await _counters(budget)


class TestOutcomeUnknown:
    async def test_a_settle_whose_replies_are_lost_is_retried_by_commit(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """Redis applies a settle, and every reply to it (and to its retries) is lost on
        the way back: the exit raises BackendError saying the outcome is unknown (it was
        applied); nothing else can be done to the reservation but, once the network is
        back, ``commit()``, which retries the same settle: it answers as the first did and
        counts once."""
        async with (
            ReplyDropper(server.port) as proxy,
            RedisStore(proxy.url, prefix=_prefix(), close_timeout=2) as store,
        ):
            budget = Budget({"calls": 10}, name="b", store=store)
            async with budget.reserve(calls=1) as warm:  # Redis has the settle script now
                warm.record(calls=0)
            reservation = await budget.try_reserve(calls=4)
            assert reservation is not None
            reservation.record(calls=3)
            proxy.dropping = True
            with pytest.raises(BackendError, match="outcome unknown"):
                async with reservation:
                    pass
            assert proxy.dropped > 0
            assert b"3" == await admin.hget(keys_of(store, budget)[0], "spent")  # applied
            with pytest.raises(ReservationClosed):  # what is retried is what failed
                reservation.record(calls=1)
            with pytest.raises(ReservationClosed, match="retry that close with commit"):
                await reservation.release()
            proxy.dropping = False
            assert Status.CONTINUE is (await reservation.commit()).status
            assert ({"calls": 3}, {"calls": 0}) == await _counters(budget)


class TestStalls:
    @pytest.mark.slow
    async def test_a_paused_server_holds_an_exit_for_close_timeout_at_most(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """The server stalls (CLIENT PAUSE for 20 s) while a reservation inside
        ``move_on_after(0.5)`` is left: its shielded exit gives up after the store's
        close_timeout (1 s) with an unknown outcome, not after the socket timeout times
        the retries; the lease is left to expire."""
        async with RedisStore(server.url, prefix=_prefix(), close_timeout=1) as store:
            budget = Budget({"calls": 10}, name="b", store=store)
            reservation = await budget.try_reserve(calls=1)
            assert reservation is not None
            await admin.execute_command("CLIENT", "PAUSE", 20_000, "ALL")
            started = anyio.current_time()

            async def leave_after_half_a_second() -> None:
                with anyio.move_on_after(0.5):
                    async with reservation:
                        reservation.record(calls=1)
                        await anyio.sleep_forever()

            with pytest.raises(BackendError, match="outcome unknown"):
                await leave_after_half_a_second()
            elapsed = anyio.current_time() - started
        # 0.5 s in the block, then at most close_timeout (and a scheduling margin).
        assert elapsed < 0.5 + 1 + 1.5, f"the exit took {elapsed:.1f} s"


class TestOutOfMemory:
    async def test_settles_run_and_new_reservations_are_refused(
        self, server: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """Redis at its maxmemory (noeviction): settles, releases, charges and snapshots
        still run, so recorded usage is never lost; a new reservation is refused with a
        BackendError that says Redis is out of memory."""
        async with RedisStore(server.url, prefix=_prefix()) as store:
            budget = Budget({"calls": 10}, name="b", store=store)
            first = await budget.try_reserve(calls=3)
            second = await budget.try_reserve(calls=2)
            assert first is not None
            assert second is not None
            await admin.config_set("maxmemory", 1)  # far below what the server uses
            try:
                with pytest.raises(redis.exceptions.OutOfMemoryError):
                    await admin.set("probe", "x")  # the server is out of memory indeed
                async with first:
                    first.record(calls=2)
                await second.release()
                await budget.charge(calls=1)
                with pytest.raises(BackendError, match="out of memory"):
                    async with budget.reserve(calls=1):
                        pytest.fail("reserved while out of memory")
                assert ({"calls": 3}, {"calls": 0}) == await _counters(budget)
            finally:
                await admin.config_set("maxmemory", 0)
            async with budget.reserve(calls=1):
                pass


class TestServerWarnings:
    async def test_an_evicting_server_without_persistence_is_warned_about_once(
        self, tmp_path: Path
    ) -> None:
        """A server whose maxmemory-policy may evict budget keys and that keeps nothing on
        disk: the store's first operation logs one ``budget.redis_at_risk`` warning
        naming both risks; later operations log nothing more."""
        made = RedisServer("--maxmemory-policy", "allkeys-lru", cwd=tmp_path)
        made.start()
        try:
            with capture_logs() as logs:
                async with RedisStore(made.url, prefix=_prefix()) as store:
                    budget = Budget({"calls": 10}, name="b", store=store)
                    await budget.charge(calls=1)
                    await budget.snapshot()
        finally:
            made.kill()
            structlog.reset_defaults()
        warned = [log for log in logs if log["event"] == "budget.redis_at_risk"]
        assert 1 == len(warned)
        assert ["maxmemory-policy is allkeys-lru", "persistence is off"] == [
            risk.split(":")[0].split(" (")[0] for risk in warned[0]["risks"]
        ]
        assert "warning" == warned[0]["log_level"]

    async def test_a_safe_server_is_not_warned_about(self, tmp_path: Path) -> None:
        """noeviction and an append-only file: nothing is logged at connect."""
        made = RedisServer("--appendonly", "yes", cwd=tmp_path)
        made.start()
        try:
            with capture_logs() as logs:
                async with RedisStore(made.url, prefix=_prefix()) as store:
                    await Budget({"calls": 10}, name="b", store=store).charge(calls=1)
        finally:
            made.kill()
            structlog.reset_defaults()
        assert [] == [log for log in logs if log["event"] == "budget.redis_at_risk"]


class TestDenialsStayDenials:
    async def test_budget_errors_are_not_backend_errors(self, server: RedisServer) -> None:
        """A refusal while Redis is up is BudgetExhausted; after the kill, BackendError:
        a failure is never reported as an allow, nor as a denial."""
        async with RedisStore(server.url, prefix=_prefix()) as store:
            budget = Budget({"calls": 1}, name="b", store=store)
            await budget.charge(calls=1)
            with pytest.raises(BudgetExhausted):
                async with budget.reserve(calls=1):
                    pass
            server.kill()
            with anyio.fail_after(BOUND), pytest.raises(BackendError):
                async with budget.reserve(calls=1):
                    pass


async def _has(client: redis.asyncio.Redis, key: str) -> bool:
    return bool(await client.exists(key))


async def _true(value: bool) -> bool:
    return value


async def _until(condition: Callable[[], bool], seconds: float = BOUND) -> None:
    """Until *condition()* (a counter of our own tasks) holds, polled (bounded)."""

    async def check() -> bool:
        return condition()

    await eventually(check, seconds)


def _busy(server: RedisServer) -> asyncio.Future[bool]:
    """Whether the server is running the BUSY script (another client's PING times out)."""

    async def check() -> bool:
        client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.02)
        try:
            await client.ping()
        except redis.exceptions.TimeoutError:
            return True
        finally:
            await client.aclose()
        return False

    return asyncio.ensure_future(check())


def _sha(name: str) -> str:
    from aiobudget.stores._redis_scripts import scripts

    return scripts()[name].sha
