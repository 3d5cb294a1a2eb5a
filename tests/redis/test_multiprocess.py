"""One Redis budget shared by several processes: no overspend while they run, exact totals
at the end, and the reservation of a process killed while holding it comes back after
its lease expires.

The workers are ``python tests/redis/_mp_worker.py ...`` subprocesses; the budget's name
and this test's key prefix are passed in, and they report what they recorded as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import pytest

import aiobudget
from aiobudget import Budget
from aiobudget.stores.redis import RedisStore

from ._mp_worker import LIMITS

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.redis,
    # Processes, not event loops, are under test: asyncio alone in the parent is enough.
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]

WORKER = Path(__file__).with_name("_mp_worker.py")
PROCESSES = 4
TASKS = 300
LEASE_TTL = 1.0


def _env() -> dict[str, str]:
    """The parent's environment, with the aiobudget under test importable."""
    src = str(Path(aiobudget.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": src if not path else f"{src}{os.pathsep}{path}"}


def _command(*args: object) -> list[str]:
    return [sys.executable, str(WORKER), *map(str, args)]


async def test_processes_share_one_budget_without_overspending(
    redis_url: str, redis_prefix: str
) -> None:
    """4 processes x 300 tasks: at no sampled moment is spent + reserved above a limit; at
    the end spent is within the limits and equals what the workers recorded, nothing is
    reserved, and no lease is left."""
    name = f"shared-{uuid.uuid4().hex[:6]}"
    reports: list[dict[str, object]] = []
    samples = 0
    done = anyio.Event()

    async with RedisStore(redis_url, prefix=redis_prefix) as store:
        budget = Budget(LIMITS, name=name, store=store)

        async def worker(seed: int) -> None:
            result = await anyio.run_process(
                _command("run", redis_url, redis_prefix, name, TASKS, seed),
                env=_env(),
                check=False,
            )
            assert result.returncode == 0, result.stderr.decode()
            reports.append(json.loads(result.stdout.decode().strip().splitlines()[-1]))

        async def sample() -> None:
            nonlocal samples
            while not done.is_set():
                snapshot = await budget.snapshot()
                for dim, limit in snapshot.limits.items():
                    used = snapshot.spent[dim] + snapshot.reserved[dim]
                    assert used <= limit.limit, (dim, dict(snapshot.spent), snapshot.reserved)
                samples += 1
                await anyio.sleep(0.005)

        with anyio.fail_after(45):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample)
                async with anyio.create_task_group() as workers:
                    for seed in range(PROCESSES):
                        workers.start_soon(worker, seed)
                    # Every worker connected and waiting: let them go at once.
                    client = store._client()
                    for _ in range(4000):  # 20 s at most: importing takes a while
                        if int(await client.get(f"{redis_prefix}:ready") or 0) == PROCESSES:
                            break
                        await anyio.sleep(0.005)
                    else:
                        pytest.fail("the workers did not all get ready")
                    await client.set(f"{redis_prefix}:go", 1)
                done.set()

        snapshot = await budget.snapshot()
        assert len(reports) == PROCESSES
        totals = {
            dim: sum(int(report["totals"][dim]) for report in reports)  # type: ignore[index]
            for dim in LIMITS
        }
        granted = sum(int(report["granted"]) for report in reports)  # type: ignore[call-overload]
        denied = sum(int(report["denied"]) for report in reports)  # type: ignore[call-overload]
        assert granted + denied == PROCESSES * TASKS
        assert denied > 0, "the budget was never exhausted: the test proves little"
        assert samples > 5
        assert totals == dict(snapshot.spent)
        assert totals["calls"] == granted
        assert all(snapshot.spent[dim] <= LIMITS[dim] for dim in LIMITS)
        assert dict.fromkeys(LIMITS, 0) == dict(snapshot.reserved)
        leases = f"{redis_prefix}:{{{name}}}:l"
        values = await store._client().hvals(leases)
        live = [value for value in values if not value.startswith(b"=")]  # "=": tombstone
        assert [] == live


async def test_a_killed_holders_reservation_comes_back_after_its_lease(
    redis_url: str, redis_prefix: str
) -> None:
    """A process SIGKILLed while holding a reservation loses it once its lease expires
    (``lease_ttl`` = 1 s), and not before."""
    name = f"killed-{uuid.uuid4().hex[:6]}"
    process = await anyio.open_process(
        _command("hold", redis_url, redis_prefix, name, LEASE_TTL),
        env=_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(20):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive()
        held_at = time.monotonic()  # the lease was granted before this
        assert line.strip() == b"HELD"
        process.send_signal(signal.SIGKILL)
        with anyio.fail_after(10):
            await process.wait()

        async with RedisStore(redis_url, prefix=redis_prefix) as store:
            budget = Budget(LIMITS, name=name, store=store)
            first = await budget.snapshot()
            assert {"calls": 3, "tokens": 100} == dict(first.reserved)
            with anyio.fail_after(LEASE_TTL + 5):
                while True:
                    snapshot = await budget.snapshot()  # touches the budget: reclaims
                    elapsed = time.monotonic() - held_at
                    if snapshot.reserved["calls"] == 0:
                        break
                    await anyio.sleep(0.02)
            assert elapsed >= LEASE_TTL * 0.8, f"given back after {elapsed:.2f} s"
            assert {"calls": 0, "tokens": 0} == dict(snapshot.reserved)
            assert {"calls": 0, "tokens": 0} == dict(snapshot.spent)
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.aclose()
