"""``metrics``: serve the Prometheus text of every budget under a Redis prefix over HTTP."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio

from ..stores.redis import redact
from ._common import EPILOG, Failure, default_url, open_redis, seconds

if TYPE_CHECKING:
    from types import FrameType

DEFAULT_PORT = 9147

DESCRIPTION = """\
Serve, on a local HTTP port, the Prometheus metrics of every top-level budget kept
in Redis under a prefix: a sidecar or a standalone exporter, no cron needed. Each
scrape of /metrics lists the budgets with SCAN (never KEYS; its cost grows with
every key of the database) and reads each budget's snapshot: limit, warn, spent,
reserved, remaining, status, held, waiting. A budget that cannot be read within
--timeout is left out of that scrape and counted in aiobudget_snapshot_errors_total.
Counters of reservations come from the processes that make them (see
aiobudget.metrics), not from this one. Runs until interrupted (Ctrl-C, SIGTERM).
"""


def add_metrics_command(commands: Any) -> None:
    """The ``metrics`` sub-command, on the ``aiobudget`` parser's *commands*."""
    metrics = commands.add_parser(
        "metrics",
        help="serve the Prometheus metrics of every budget under a Redis prefix",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    metrics.add_argument(
        "--redis",
        metavar="URL",
        default=default_url(),
        help="the Redis holding the budgets (default: $AIOBUDGET_REDIS_URL or %(default)s)",
    )
    metrics.add_argument("--prefix", default="aiobudget", help="key prefix (default: %(default)s)")
    metrics.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="N",
        help="HTTP port (default: %(default)s; 0 picks a free one)",
    )
    metrics.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    metrics.add_argument(
        "--timeout",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="longest a scrape waits for Redis (default: %(default)s)",
    )
    metrics.set_defaults(run=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    try:
        # The prometheus extra is optional: imported only when this command runs.
        from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

        from ..metrics import PrometheusCollector  # noqa: PLC0415
        from ..stores.redis import RedisStore  # noqa: PLC0415
    except ImportError as exc:
        raise Failure(
            f"serving metrics needs prometheus_client and redis ({exc}): "
            "pip install 'aiobudget[prometheus,redis]'"
        ) from None
    anyio.run(_reachable, args)  # a clear message now rather than errors at each scrape
    registry = CollectorRegistry()
    collector = PrometheusCollector(
        store=RedisStore(args.redis, prefix=args.prefix), timeout=args.timeout
    )
    registry.register(collector)
    try:
        try:
            server, _ = start_http_server(args.port, addr=args.host, registry=registry)
        except OSError as exc:
            raise Failure(f"cannot listen on {args.host} port {args.port}: {exc}") from None
        try:
            _serve(args, server.server_port)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        collector.close()
    return 0


async def _reachable(args: argparse.Namespace) -> None:
    async with open_redis(args.redis, args.prefix):
        pass


def _serve(args: argparse.Namespace, port: int) -> None:
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"aiobudget: serving http://{host}:{port}/metrics\n"
        f"  the budgets under prefix {args.prefix!r} of {redact(args.redis)}",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: Any = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # a clean exit (0) on SIGTERM, as a service manager asks
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
