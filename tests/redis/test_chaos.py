"""Chaos: four processes of fifty tasks share one Redis budget while the harness breaks
Redis under them, at random: kill -9 and restart (the data survives in an append-only
file, fsynced at every write), CLIENT PAUSE, SCRIPT FLUSH, replies dropped by a loopback
proxy the workers talk through, and out of memory (maxmemory).

What must hold, whatever happened:

- at every sampled moment, ``spent + reserved`` stays within each limit (so ``spent``
  does), and ``reserved`` is never negative (a damaged counter would refuse the sample);
- every settle that returned is counted exactly once, and every settle whose outcome
  stayed unknown at most once: confirmed <= spent <= confirmed + unknown, per dimension;
- once the faults stop and ``lease_ttl`` has passed, nothing is reserved.

The counts of operations, faults and outcomes are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from collections import Counter
from pathlib import Path

import anyio
import pytest
import redis.asyncio
import structlog

import aiobudget
from aiobudget import BackendError, Budget
from aiobudget.stores.redis import RedisStore

from ._chaos_worker import LIMITS
from ._proxy import ReplyDropper
from ._servers import RedisServer

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),  # processes are under test
]

WORKER = Path(__file__).with_name("_chaos_worker.py")
PROCESSES = 4
TASKS = 50
SECONDS = 12.0  # of load, with faults all along
LEASE_TTL = 2.0
FAULTS = ("kill", "pause", "flush", "drop", "oom")


def _env() -> dict[str, str]:
    src = str(Path(aiobudget.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": src if not path else f"{src}{os.pathsep}{path}"}


async def test_faults_never_overspend_and_never_lose_usage(tmp_path: Path) -> None:
    """4 processes x 50 tasks under random kill -9 and restart (AOF), CLIENT PAUSE,
    SCRIPT FLUSH, dropped replies and OOM: no sample over a limit, every confirmed settle
    counted once and no unknown one twice, nothing reserved after lease_ttl."""
    rng = random.Random()
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always", cwd=tmp_path)
    server.start()
    prefix = f"aiobudget-chaos-{uuid.uuid4().hex[:8]}"
    name = "shared"
    injected: Counter[str] = Counter()
    samples = Counter[str]()
    reports: list[dict[str, dict[str, int]]] = []
    structlog.configure(  # the harness's own store logs nothing
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(50),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    try:
        async with (
            ReplyDropper(server.port) as proxy,
            RedisStore(server.url, prefix=prefix, lease_ttl=LEASE_TTL) as store,
        ):
            budget = Budget(LIMITS, name=name, store=store)
            await budget.snapshot()  # created with its limits before the workers start
            done = anyio.Event()

            async def worker(seed: int) -> None:
                command = [
                    sys.executable,
                    str(WORKER),
                    proxy.url,
                    prefix,
                    name,
                    str(TASKS),
                    str(SECONDS),
                    str(seed),
                    str(LEASE_TTL),
                ]
                result = await anyio.run_process(command, env=_env(), check=False)
                assert result.returncode == 0, result.stderr.decode()[-3000:]
                reports.append(json.loads(result.stdout.decode().strip().splitlines()[-1]))

            async def sample() -> None:
                while not done.is_set():
                    try:
                        with anyio.fail_after(5):
                            snapshot = await budget.snapshot()
                    except (BackendError, TimeoutError) as exc:
                        # The server is down, paused or restarting: no sample. A damaged
                        # budget is no such thing: it fails the test.
                        if "damaged" in str(exc):
                            pytest.fail(f"the budget was damaged: {exc}")
                        samples["skipped"] += 1
                    else:
                        for dim, limit in snapshot.limits.items():
                            spent, reserved = snapshot.spent[dim], snapshot.reserved[dim]
                            assert 0 <= reserved, (dim, reserved)
                            assert spent + reserved <= limit.limit, (dim, spent, reserved)
                        samples["taken"] += 1
                    await anyio.sleep(0.02)

            async def inject() -> None:
                kinds = [*FAULTS, *FAULTS]  # each at least twice, in a random order
                rng.shuffle(kinds)
                await anyio.sleep(1.5)  # the workers are up and busy
                while not done.is_set():
                    kind = kinds.pop() if kinds else rng.choice(FAULTS)
                    await _fault(kind, server, proxy, rng)
                    injected[kind] += 1
                    await anyio.sleep(rng.uniform(0.3, 0.8))

            with anyio.fail_after(SECONDS + 40):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sample)
                    tg.start_soon(inject)
                    async with anyio.create_task_group() as workers:
                        for seed in range(PROCESSES):
                            workers.start_soon(worker, seed)
                    done.set()

            # The faults have stopped (and each was undone). Past lease_ttl, every lease
            # left behind by a lost reply has expired and is given back.
            await anyio.sleep(LEASE_TTL + 0.5)
            await store.sweep()
            final = await budget.snapshot()
    finally:
        server.kill()
        structlog.reset_defaults()

    seen = sum((Counter(report["seen"]) for report in reports), Counter[str]())
    confirmed = {dim: sum(r["confirmed"][dim] for r in reports) for dim in LIMITS}
    unknown = {dim: sum(r["unknown"][dim] for r in reports) for dim in LIMITS}
    print(
        f"\nchaos: {PROCESSES} processes x {TASKS} tasks, {SECONDS:g} s"
        f"\n  operations: {dict(sorted(seen.items()))}"
        f"\n  faults injected: {dict(sorted(injected.items()))}, "
        f"replies dropped {proxy.dropped}"
        f"\n  samples: {dict(samples)}"
        f"\n  spent {dict(final.spent)}, confirmed {confirmed}, unknown {unknown}"
    )
    assert PROCESSES == len(reports)
    assert set(FAULTS) <= set(injected)
    assert proxy.dropped > 0
    assert samples["taken"] > 50
    assert seen["settled"] > 50, "the load was too light to prove much"
    for dim in LIMITS:
        assert confirmed[dim] <= final.spent[dim] <= confirmed[dim] + unknown[dim], dim
    assert dict.fromkeys(LIMITS, 0) == dict(final.reserved)


async def _fault(kind: str, server: RedisServer, proxy: ReplyDropper, rng: random.Random) -> None:
    """Inject one fault of *kind*, and undo it."""
    if kind == "kill":
        server.kill()  # SIGKILL: nothing flushed but what the AOF already has
        await anyio.sleep(rng.uniform(0.05, 0.3))
        await anyio.to_thread.run_sync(server.start)  # replays the append-only file
        return
    if kind == "drop":
        proxy.lost.clear()
        proxy.dropping = True
        await anyio.sleep(rng.uniform(0.1, 0.3))
        with anyio.move_on_after(2):  # until a reply was lost indeed (bounded)
            await proxy.lost.wait()
        proxy.dropping = False
        return
    admin = redis.asyncio.Redis.from_url(server.url, socket_timeout=5)
    try:
        if kind == "pause":
            await admin.execute_command("CLIENT", "PAUSE", rng.randint(300, 1000), "ALL")
        elif kind == "flush":
            await admin.script_flush()
        else:  # out of memory: far below what the server uses, with noeviction
            await admin.config_set("maxmemory", 1)
            await anyio.sleep(rng.uniform(0.3, 0.6))
            await admin.config_set("maxmemory", 0)
    finally:
        await admin.aclose()
