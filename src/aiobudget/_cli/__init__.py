"""The ``aiobudget`` command: a live demo, and tools for budgets kept in Redis.

    aiobudget demo                        many simulated agents share one budget, live
    aiobudget demo --redis URL --processes 4
    aiobudget show NAME [--json]          limits, spent, reserved, remaining, verdict
    aiobudget reset NAME [--yes]          a new period: spent goes to 0
    aiobudget set-limit NAME DIM VALUE [--yes]
    aiobudget repair NAME [--limit DIM=VALUE ...] [--yes]

The demo never calls a model: agents are simulated (random latency with `anyio.sleep`,
random usage), so it runs offline and in seconds. Built on `argparse` alone: a library
must not drag a CLI framework into every service that imports it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from .._version import __version__
from ._admin import cmd_repair, cmd_reset, cmd_set_limit, cmd_show
from ._common import (
    EPILOG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Failure,
    default_url,
    dollars,
    logging_for,
    positive,
    seconds,
)

__all__ = ["main"]

_DEMO_DESCRIPTION: Final = """\
Concurrent simulated agents share one budget (tokens, cost, calls), each through
a child budget of its own. Each call reserves an estimate (waiting its turn when
the budget is busy), takes a random time, records random usage, and sometimes
fails or is cancelled; settling refunds what was not used. Agents stop when their
work is done or a reservation is denied. No model is called.

The report checks, from the budget itself, that nothing was overspent. A seed
fixes every agent's calls (sizes, latencies, failures); with a tight budget,
which calls get denied still depends on timing.
"""


def main(argv: list[str] | None = None) -> int:
    """Run the ``aiobudget`` command with *argv* (``sys.argv[1:]`` by default) and
    return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        with logging_for(args.verbose):
            return int(args.run(args))
    except Failure as exc:
        print(f"aiobudget: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("aiobudget: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _cmd_demo(args: argparse.Namespace) -> int:
    # Imported when it runs: `show` and the others never load the demo.
    from ._demo import cmd_demo  # noqa: PLC0415

    return cmd_demo(args)


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="aiobudget",
        description="Share finite budgets (tokens, money, calls) between concurrent tasks.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"aiobudget {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print aiobudget's log events on stderr (-v: info, -vv: debug)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    redis = argparse.ArgumentParser(add_help=False)
    redis.add_argument(
        "--redis",
        metavar="URL",
        default=default_url(),
        help="the Redis holding the budget (default: $AIOBUDGET_REDIS_URL or %(default)s)",
    )
    redis.add_argument("--prefix", default="aiobudget", help="key prefix (default: %(default)s)")
    redis.add_argument("--json", action="store_true", help="machine-readable output")

    demo = commands.add_parser(
        "demo",
        help="many simulated agents share one budget, with live progress",
        description=_DEMO_DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    demo.add_argument(
        "--agents", type=positive, default=40, metavar="N", help="simulated agents (default: 40)"
    )
    demo.add_argument(
        "--calls", type=positive, default=8, metavar="N", help="calls per agent (default: 8)"
    )
    demo.add_argument(
        "--seed", type=int, default=None, metavar="N", help="replay a run (default: random)"
    )
    demo.add_argument(
        "--latency",
        type=seconds,
        default=0.5,
        metavar="SECONDS",
        help="mean simulated call latency (default: %(default)s)",
    )
    demo.add_argument(
        "--wait",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="how long a reservation may wait for budget (default: 2 x --latency)",
    )
    demo.add_argument(
        "--tokens",
        type=positive,
        default=None,
        metavar="N",
        help="shared token limit (default: 9,000 per agent)",
    )
    demo.add_argument(
        "--usd",
        type=dollars,
        default=None,
        metavar="DOLLARS",
        help="shared cost limit in dollars (default: 0.04 per agent)",
    )
    demo.add_argument("--json", action="store_true", help="only a JSON report on stdout")
    demo.add_argument("--no-live", action="store_true", help="plain progress lines, no redraw")
    demo.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop (memory only)"
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        nargs="?",
        const=default_url(),
        default=None,
        help="share the budget through Redis (URL default: $AIOBUDGET_REDIS_URL or "
        "redis://127.0.0.1:6379/0)",
    )
    demo.add_argument(
        "--processes",
        type=positive,
        default=None,
        metavar="K",
        help="worker processes with --redis (default: 2)",
    )
    demo.add_argument(
        "--prefix", default="aiobudget", help="Redis key prefix (default: %(default)s)"
    )
    demo.add_argument("--name", default="demo", help="the budget's name (default: %(default)s)")
    # A worker process of a --redis demo; it reads its orders from stdin.
    demo.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(run=_cmd_demo)

    show = commands.add_parser(
        "show",
        parents=[redis],
        help="limits, spent, reserved, remaining and verdict of a budget in Redis",
        description="Show a budget kept in Redis. Exits 3 when it is exhausted.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    show.add_argument("name", metavar="NAME")
    show.set_defaults(run=cmd_show)

    reset = commands.add_parser(
        "reset",
        parents=[redis],
        help="start a new period: spent goes to 0 (asks first)",
        description="Set spent to 0 on every dimension of a budget in Redis; live "
        "reservations stay counted. Asks for confirmation on a terminal unless --yes.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    reset.add_argument("name", metavar="NAME")
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(run=cmd_reset)

    set_limit = commands.add_parser(
        "set-limit",
        parents=[redis],
        help="change one dimension's limit (asks first)",
        description="Change the limit of dimension DIM of a budget in Redis. VALUE is an "
        "integer (100000, 100_000 or 100,000), or dollars for money ('$5' is 5,000,000 "
        "micro-dollars). Asks for confirmation on a terminal unless --yes.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    set_limit.add_argument("name", metavar="NAME")
    set_limit.add_argument("dim", metavar="DIM")
    set_limit.add_argument("value", metavar="VALUE")
    set_limit.add_argument("--warn", help="new warn level, or 'none' (default: keep)")
    set_limit.add_argument("--headroom", help="new headroom (default: keep)")
    set_limit.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    set_limit.set_defaults(run=cmd_set_limit)

    repair = commands.add_parser(
        "repair",
        parents=[redis],
        help="make a damaged budget usable again (asks first)",
        description="A budget whose keys were deleted, evicted or edited outside aiobudget "
        "refuses every operation until repaired. Keeps what is readable (limits, spent), "
        "recounts reserved from the reservations still held, and creates a lost record "
        "again (with spent 0) from --limit. Says what it would change, then asks for "
        "confirmation on a terminal unless --yes.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    repair.add_argument("name", metavar="NAME")
    repair.add_argument(
        "--limit",
        action="append",
        metavar="DIM=VALUE",
        help="the limit of a dimension, needed only when the budget's record is lost "
        "(repeat for each dimension, in order)",
    )
    repair.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    repair.set_defaults(run=cmd_repair)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
