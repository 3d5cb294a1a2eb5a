"""A real scrape: budgets in a real Redis (a server of the test's own), used by several
processes, exported in process and by ``aiobudget metrics`` in a subprocess, fetched over
HTTP and parsed with prometheus_client's parser; then the server is stopped."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from aiobudget import Budget, BudgetExhausted, Snapshot
from aiobudget.metrics import PrometheusCollector
from aiobudget.stores.redis import RedisStore

from ..redis._servers import RedisServer
from ._support import Samples, counter, expected_gauges, fetch, of_budget
from ._worker import SHARED, SMALL

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORKER = Path(__file__).with_name("_worker.py")
PREFIX = "scrape"
NAMES = ("shared", "small")
PORT = ("--port", "0", "--timeout", "2")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free loopback port."""
    made = RedisServer()
    made.start()
    try:
        yield made
    finally:
        made.stop()


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - this interpreter, a file of the test suite
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True
    )


def sidecar(url: str) -> tuple[subprocess.Popen[str], str]:
    """``aiobudget metrics`` on a free loopback port, and the URL it serves."""
    process = subprocess.Popen(  # noqa: S603 - this interpreter, our own command
        [sys.executable, "-m", "aiobudget", "metrics", "--redis", url, "--prefix", PREFIX, *PORT],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/metrics", line)
    assert found is not None, line
    return process, found.group(0)


async def snapshots(store: RedisStore) -> dict[str, Snapshot]:
    found = {name: await store.read(name) for name in NAMES}
    return {name: snap for name, snap in found.items() if snap is not None}


async def local_work(shared: Budget, small: Budget) -> None:
    """Five grants (settled) on shared, and two denials on small (full, queued at)."""
    for _ in range(5):
        async with shared.reserve(tokens=10, calls=1) as r:
            r.record(tokens=3, calls=1)
    for _ in range(2):
        with pytest.raises(BudgetExhausted):
            async with small.reserve(tokens=1):
                pass


def only_errors(samples: Samples, budget: str) -> set[str]:
    return {key[0] for key in samples if dict(key[1]).get("budget") == budget}


class TestRealScrape:
    def test_values_equal_snapshots_then_vanish_with_redis(self, server: RedisServer) -> None:
        """Both exporters report exactly what Redis holds after several processes made
        reservations, grants and denials, and the counters of this process; once the
        server is stopped the budgets' gauges are absent and the error counters rise."""
        url = server.url
        runs = [worker("run", url, PREFIX, str(seed)) for seed in range(3)]
        results = [json.loads(run.communicate(timeout=60)[0]) for run in runs]
        assert all(run.returncode == 0 for run in runs)
        assert 3 * 40 < sum(r["granted"] for r in results)
        assert 0 < sum(r["denied"] for r in results)
        holder = worker("hold", url, PREFIX)
        store = RedisStore(url, prefix=PREFIX)
        shared = Budget(SHARED, name="shared", store=store)
        small = Budget(SMALL, name="small", store=store)
        collector = PrometheusCollector([shared, small], store=store, timeout=2)
        registry = CollectorRegistry()
        registry.register(collector)
        httpd, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        in_process = f"http://127.0.0.1:{httpd.server_port}/metrics"
        side, side_url = sidecar(url)
        try:
            assert holder.stdout is not None
            assert "HELD" == holder.stdout.readline().strip()
            asyncio.run(local_work(shared, small))

            snaps = asyncio.run(snapshots(store))
            mine, theirs = fetch(in_process), fetch(side_url)
            for name in NAMES:
                expected = expected_gauges(name, snaps[name])
                assert expected == of_budget(mine, name)
                assert expected == of_budget(theirs, name)
            # Counted in Redis across processes: three workers' 40 calls each, ours 5.
            assert 125 == snaps["shared"].spent["calls"]
            assert [(2, 0), (1, 1)] == [(snaps[n].held, snaps[n].waiting) for n in NAMES]
            # Counted from this process's events only.
            assert [5, 5] == [
                counter(mine, f"aiobudget_reservations_{what}_total", budget="shared")
                for what in ("granted", "settled")
            ]
            assert 15 == counter(mine, "aiobudget_charged_total", budget="shared", dim="tokens")
            assert 2 == sum(
                value
                for key, value in mine.items()
                if key[0] == "aiobudget_denials_total" and dict(key[1])["budget"] == "small"
            )

            holder.kill()
            server.stop()
            mine, theirs = fetch(in_process), fetch(side_url)
            for name in NAMES:
                assert {} == of_budget(mine, name)
                assert {} == of_budget(theirs, name)
                assert 1 == counter(mine, "aiobudget_snapshot_errors_total", budget=name)
                assert 1 == counter(theirs, "aiobudget_snapshot_errors_total", budget=name)
                assert {"aiobudget_snapshot_errors_total"} == only_errors(theirs, name)
            assert 1 == counter(theirs, "aiobudget_discovery_errors_total")
            # What this process counted itself is still true.
            assert 5 == counter(mine, "aiobudget_reservations_granted_total", budget="shared")
        finally:
            holder.kill()
            holder.communicate(timeout=10)
            side.send_signal(signal.SIGTERM)
            side.communicate(timeout=30)
            httpd.shutdown()
            httpd.server_close()
            collector.close()
        assert 0 == side.returncode
