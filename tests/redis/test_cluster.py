"""RedisStore on a 3-master Redis Cluster: the whole conformance suite, and budgets whose
keys live on different slots (and nodes) used at once.

The cluster is private to this module: three redis-server processes on free loopback
ports (nothing on disk), joined with ``redis-cli --cluster create``, stopped by pid.
Skipped when redis-cli or cluster mode is unavailable (a failure when
AIOBUDGET_REQUIRE_REDIS=1).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio.cluster
import structlog
from redis.crc import key_slot
from structlog.testing import capture_logs

import aiobudget
from aiobudget import Budget, BudgetExhausted
from aiobudget.stores._redis_layout import escape
from aiobudget.stores.redis import RedisStore
from aiobudget.testing import CHECKS, Check, StoreFactory

from ._servers import RedisServer, unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus ports (port + 10000) are free too."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535 or port in found:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        found.append(port)
    return found


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A 3-master cluster on loopback; the port of one of its nodes."""
    cli = shutil.which("redis-cli")
    if cli is None or shutil.which("redis-server") is None:
        unavailable("redis-cli / redis-server are not installed: no Redis Cluster")
    assert cli is not None
    folder = tmp_path_factory.mktemp("cluster")
    ports = _cluster_ports(3)
    nodes = [
        RedisServer(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(Path(folder) / f"nodes-{port}.conf"),
            port=port,
            cwd=folder,
        )
        for port in ports
    ]
    try:
        for node in nodes:
            node.start()
        created = subprocess.run(  # noqa: S603 - redis-cli from PATH, fixed arguments
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            unavailable(f"redis-cli --cluster create failed: {created.stdout[-500:]!r}")
        deadline = time.monotonic() + 30
        for port in ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            try:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        unavailable("the Redis Cluster did not reach cluster_state:ok")
                    time.sleep(0.05)
            finally:
                client.close()
        yield ports[0]
    finally:
        for node in nodes:
            node.kill()


async def _factory(port: int, **options: Any) -> AsyncIterator[StoreFactory]:
    prefix = f"aiobudget-cluster-{uuid.uuid4().hex[:8]}"
    clients: list[redis.asyncio.cluster.RedisCluster] = []

    def make() -> RedisStore:
        client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=port, **options)
        clients.append(client)
        return RedisStore(client, prefix=prefix)

    yield make
    with anyio.move_on_after(5, shield=True):
        for client in clients:
            await client.aclose()


@pytest.fixture
async def make_cluster_store(cluster_port: int) -> AsyncIterator[StoreFactory]:
    """A factory of RedisStores, each on a RedisCluster client of its own (built with
    redis-py's defaults), under one prefix of this test's own; every client is closed
    afterwards. (The keys die with the module's cluster.)"""
    async for factory in _factory(cluster_port):
        yield factory


# Run in a subprocess (see test_concurrent_reservations_on_a_cluster): when it fails it
# leaves redis-py's cluster client in a state that has hung a later test in-process.
_ISOLATED = "concurrent_tasks_never_overspend"
_SRC = str(Path(aiobudget.__file__).resolve().parents[1])  # the aiobudget under test

_CONCURRENT_SCRIPT = """
import sys, uuid, anyio, redis.asyncio.cluster
from aiobudget.stores.redis import RedisStore
from aiobudget.testing import CHECKS

async def main(port):
    clients = []
    def make():
        client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=port)
        clients.append(client)
        return RedisStore(client, prefix="aiobudget-cluster-" + uuid.uuid4().hex[:8])
    try:
        check = next(c for c in CHECKS if c.__name__ == sys.argv[2])
        with anyio.fail_after(30):
            await check(make)
    finally:
        with anyio.move_on_after(5, shield=True):
            for client in clients:
                await client.aclose()

for _ in range(3):  # fresh clients each round: the race is in opening connections
    anyio.run(main, int(sys.argv[1]))
"""


@pytest.mark.parametrize(
    "check", [pytest.param(c, id=c.__name__) for c in CHECKS if c.__name__ != _ISOLATED]
)
async def test_conformance_on_a_cluster(check: Check, make_cluster_store: StoreFactory) -> None:
    """Every conformance check passes with the store on a Redis Cluster client."""
    with anyio.fail_after(30):
        await check(make_cluster_store)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_concurrent_reservations_on_a_cluster(cluster_port: int) -> None:
    """The conformance check of 200 racing tasks passes on a Redis Cluster client (run
    in a subprocess of its own, bounded), three times over. redis-py's cluster client can
    fail a command while 200 tasks open connections at once (a raw AttributeError from
    inside its connection set-up); the store retries it once on a fresh connection, and
    would report it as BackendError, never a raw error."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": _SRC if not path else f"{_SRC}{os.pathsep}{path}"}
    with anyio.fail_after(90):
        result = await anyio.run_process(
            [sys.executable, "-c", _CONCURRENT_SCRIPT, str(cluster_port), _ISOLATED],
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()[-3000:]


async def test_budgets_on_different_slots_used_at_once(make_cluster_store: StoreFactory) -> None:
    """Two budgets whose hash tags hash to different slots, on different nodes, used by
    concurrent tasks: each keeps its own limits and counts exactly."""
    store = make_cluster_store()
    assert isinstance(store, RedisStore)
    # A name hashed into the first third of the slots, one into the last: two masters.
    candidates = [f"budget-{i}" for i in range(100)]
    names = [
        next(n for n in candidates if key_slot(escape(n).encode()) < 5000),
        next(n for n in candidates if key_slot(escape(n).encode()) > 11500),
    ]
    slots = [key_slot(escape(name).encode()) for name in names]
    assert slots[0] != slots[1]
    client = store._client()
    await client.initialize()
    owners = [client.get_node_from_key(f"{store.prefix}:{{{escape(n)}}}:s") for n in names]
    assert owners[0].name != owners[1].name, "the two budgets landed on one node"
    limits = dict(zip(names, (30, 55)))
    budgets = {name: Budget({"calls": limits[name]}, name=name, store=store) for name in names}
    granted = dict.fromkeys(names, 0)

    async def task(name: str) -> None:
        try:
            async with budgets[name].reserve(calls=1) as r:
                await anyio.lowlevel.checkpoint()
                r.record(calls=1)
        except BudgetExhausted:
            return
        granted[name] += 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(80):  # per node: within redis-py's default of 100 connections
                for name in names:
                    tg.start_soon(task, name)
    for name in names:
        snapshot = await budgets[name].snapshot()
        assert granted[name] == limits[name]
        assert {"calls": limits[name]} == dict(snapshot.spent)
        assert {"calls": 0} == dict(snapshot.reserved)


async def test_a_cluster_without_persistence_is_warned_about(
    make_cluster_store: StoreFactory,
) -> None:
    """The look at the server's configuration works on a cluster too (on one node): the
    test cluster keeps nothing on disk, and the store says so, once."""
    store = make_cluster_store()
    try:
        with capture_logs() as logs:
            budget = Budget({"calls": 5}, name="warned", store=store)
            await budget.charge(calls=1)
            await budget.charge(calls=1)
    finally:
        structlog.reset_defaults()
    warned = [log for log in logs if log["event"] == "budget.redis_at_risk"]
    assert 1 == len(warned)
    assert ["persistence is off"] == [risk.split(" (")[0] for risk in warned[0]["risks"]]
