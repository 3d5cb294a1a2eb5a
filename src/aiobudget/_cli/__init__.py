"""The ``aiobudget`` command: a live demo, and tools for budgets kept in Redis.

    aiobudget demo                        many simulated agents share one budget, live
    aiobudget demo --redis URL --processes 4
    aiobudget demo --period 2             ... and the budget renews every 2 seconds
    aiobudget show NAME [--json]          limits, spent, reserved, remaining, verdict
    aiobudget reset NAME [--yes]          a new period: spent goes to 0
    aiobudget set-limit NAME DIM VALUE [--yes]
    aiobudget metrics [--port N]          Prometheus metrics of budgets in Redis
    aiobudget repair NAME [--limit DIM=VALUE ...] [--yes]

The demo never calls a model: agents are simulated (random latency with `anyio.sleep`,
random usage), so it runs offline and in seconds. Built on `argparse` alone: a library
must not drag a CLI framework into every service that imports it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import TYPE_CHECKING, Final

from .._errors import BudgetError
from .._version import __version__
from ._admin import cmd_repair, cmd_reset, cmd_set_limit, cmd_show
from ._common import (
    EPILOG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Failure,
    Interrupted,
    at_most,
    default_url,
    dollars,
    logging_for,
    one_line,
    positive,
    seconds,
)
from ._metrics import add_metrics_command

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["main"]

# Bounds that keep a demo a demo: memory, processes and limits stay reasonable.
_MAX_AGENTS: Final = 10_000
_MAX_CALLS: Final = 10_000
_MAX_PROCESSES: Final = 32

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
    except BaseException as exc:  # noqa: BLE001 - the last word: one line and an exit code
        return _last_word(exc, args.verbose)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """*exc*, or the exceptions an exception group holds, however deeply nested."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(exc, BaseException) and isinstance(inner, tuple) and inner:
        for each in inner:
            yield from _leaves(each)
    else:
        yield exc


def _last_word(exc: BaseException, verbosity: int) -> int:
    """Say what stopped the command in one line on stderr, and return its exit code.

    Ctrl-C (even inside a task group, as on Trio) is "interrupted" and 130; a `Failure`
    carries its own message and code; anything else is reported by type, with the
    traceback only at ``-vv``. `SystemExit` and the like are not ours to swallow.
    """
    leaves = list(_leaves(exc))
    if any(isinstance(e, KeyboardInterrupt | Interrupted) for e in leaves):
        print("aiobudget: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    failure = next((e for e in leaves if isinstance(e, Failure)), None)
    if failure is not None:
        print(f"aiobudget: error: {failure}", file=sys.stderr)
        return failure.code
    first = next((e for e in leaves if isinstance(e, Exception)), None)
    if first is None:
        raise exc
    if isinstance(first, BudgetError):
        print(f"aiobudget: error: {one_line(first)}", file=sys.stderr)
    else:
        hint = "" if verbosity > 1 else " (-vv shows the traceback)"
        print(
            f"aiobudget: error: unexpected {type(first).__name__}: {one_line(first)}{hint}",
            file=sys.stderr,
        )
    if verbosity > 1:
        traceback.print_exception(first)
    return EXIT_FAILURE


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
        "--agents",
        type=at_most(_MAX_AGENTS),
        default=40,
        metavar="N",
        help=f"simulated agents (default: 40, at most {_MAX_AGENTS:,})",
    )
    demo.add_argument(
        "--calls",
        type=at_most(_MAX_CALLS),
        default=8,
        metavar="N",
        help=f"calls per agent (default: 8, at most {_MAX_CALLS:,})",
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
        type=at_most(_MAX_PROCESSES),
        default=None,
        metavar="K",
        help=f"worker processes with --redis (default: 2, at most {_MAX_PROCESSES})",
    )
    demo.add_argument(
        "--prefix", default="aiobudget", help="Redis key prefix (default: %(default)s)"
    )
    demo.add_argument("--name", default="demo", help="the budget's name (default: %(default)s)")
    demo.add_argument(
        "--period",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="the shared budget renews every SECONDS (spent goes back to 0): watch windows "
        "roll over (default: never)",
    )
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
    add_metrics_command(commands)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
