"""The ``aiobudget`` command: a live demo, and tools for budgets kept in Redis.

    aiobudget demo                        many simulated agents share one budget, live
    aiobudget demo --redis URL --processes 4
    aiobudget show NAME [--json]          limits, spent, reserved, remaining, verdict
    aiobudget reset NAME [--yes]          a new period: spent goes to 0
    aiobudget set-limit NAME DIM VALUE [--yes]

The demo never calls a model: agents are simulated (random latency with `anyio.sleep`,
random usage), so it runs offline and in seconds. Built on `argparse` alone: a library
must not drag a CLI framework into every service that imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import anyio
import structlog

from ._budget import Budget
from ._errors import BackendError, InvalidAmount
from ._units import COST, usd
from ._version import __version__
from .kernel import Limit, Snapshot, Status, check_amount
from .protocols import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_EXHAUSTED: Final = 3
EXIT_INTERRUPTED: Final = 130

_EPILOG: Final = """\
exit codes:
  0    success
  1    operational failure (Redis unreachable, a worker died, a demo check failed,
       a confirmation declined); one line on stderr
  2    bad usage (unknown option, bad value, a destructive command without --yes
       when stdin is not a terminal)
  3    the budget is exhausted (show)

environment:
  AIOBUDGET_REDIS_URL   default for --redis (redis://127.0.0.1:6379/0)
"""


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


class Failure(Exception):
    """An operational failure: one line on stderr, no traceback."""

    code = EXIT_FAILURE


class BadUsage(Failure):
    """Arguments that make no sense together, found after parsing."""

    code = EXIT_USAGE


# -- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``aiobudget`` command with *argv* (``sys.argv[1:]`` by default) and
    return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        with _logging(args.verbose):
            return int(args.run(args))
    except Failure as exc:
        print(f"aiobudget: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("aiobudget: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _cmd_demo(args: argparse.Namespace) -> int:
    # The demo builds on this module (exit codes, failures, Redis), so it is imported
    # when it runs, not above: no import cycle, and `show` never loads it.
    from ._demo import cmd_demo  # noqa: PLC0415

    return cmd_demo(args)


def _default_url() -> str:
    return os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="aiobudget",
        description="Share finite budgets (tokens, money, calls) between concurrent tasks.",
        epilog=_EPILOG,
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
        default=_default_url(),
        help="the Redis holding the budget (default: $AIOBUDGET_REDIS_URL or %(default)s)",
    )
    redis.add_argument("--prefix", default="aiobudget", help="key prefix (default: %(default)s)")
    redis.add_argument("--json", action="store_true", help="machine-readable output")

    demo = commands.add_parser(
        "demo",
        help="many simulated agents share one budget, with live progress",
        description=_DEMO_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    demo.add_argument(
        "--agents", type=_positive, default=40, metavar="N", help="simulated agents (default: 40)"
    )
    demo.add_argument(
        "--calls", type=_positive, default=8, metavar="N", help="calls per agent (default: 8)"
    )
    demo.add_argument(
        "--seed", type=int, default=None, metavar="N", help="replay a run (default: random)"
    )
    demo.add_argument(
        "--latency",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="mean simulated call latency (default: %(default)s)",
    )
    demo.add_argument(
        "--wait",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long a reservation may wait for budget (default: 2 x --latency)",
    )
    demo.add_argument(
        "--tokens",
        type=_positive,
        default=None,
        metavar="N",
        help="shared token limit (default: 9,000 per agent)",
    )
    demo.add_argument(
        "--usd",
        type=_dollars,
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
        const=_default_url(),
        default=None,
        help="share the budget through Redis (URL default: $AIOBUDGET_REDIS_URL or "
        "redis://127.0.0.1:6379/0)",
    )
    demo.add_argument(
        "--processes",
        type=_positive,
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
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    show.add_argument("name", metavar="NAME")
    show.set_defaults(run=_cmd_show)

    reset = commands.add_parser(
        "reset",
        parents=[redis],
        help="start a new period: spent goes to 0 (asks first)",
        description="Set spent to 0 on every dimension of a budget in Redis; live "
        "reservations stay counted. Asks for confirmation on a terminal unless --yes.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    reset.add_argument("name", metavar="NAME")
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(run=_cmd_reset)

    set_limit = commands.add_parser(
        "set-limit",
        parents=[redis],
        help="change one dimension's limit (asks first)",
        description="Change the limit of dimension DIM of a budget in Redis. VALUE is an "
        "integer (100000, 100_000 or 100,000), or dollars for money ('$5' is 5,000,000 "
        "micro-dollars). Asks for confirmation on a terminal unless --yes.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    set_limit.add_argument("name", metavar="NAME")
    set_limit.add_argument("dim", metavar="DIM")
    set_limit.add_argument("value", metavar="VALUE")
    set_limit.add_argument("--warn", help="new warn level, or 'none' (default: keep)")
    set_limit.add_argument("--headroom", help="new headroom (default: keep)")
    set_limit.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    set_limit.set_defaults(run=_cmd_set_limit)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 3600 seconds")
    return value


def _dollars(text: str) -> int:
    try:
        return usd(text.removeprefix("$"))
    except InvalidAmount as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _amount(text: str, what: str, dim: str) -> int:
    """An amount typed by a person: ``100000``, ``100_000``, ``100,000``; for money
    (``cost_micros``) also dollars: ``$5`` is 5,000,000."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    if cleaned.startswith("$") and dim != COST:
        raise BadUsage(f"{what} {text!r} is money, but {dim!r} is not {COST!r}")
    try:
        if cleaned.startswith("$"):
            return usd(cleaned[1:])
        return check_amount(int(cleaned), what)
    except (ValueError, InvalidAmount):
        raise BadUsage(
            f"{what} {text!r} is not an amount (an integer in 0 .. 2**63 - 1, or '$5')"
        ) from None


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """Route aiobudget's structlog events: to stderr with ``-v``, nowhere otherwise.

    The command is an application, so it may configure logging (the library never does);
    denials are expected in the demo and would drown the display. The previous
    configuration comes back afterwards, for callers of `main` in-process.
    """
    configured = structlog.is_configured()
    previous = structlog.get_config()
    if verbosity:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.DEBUG if verbosity > 1 else logging.INFO
            ),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=False,
        )
    else:
        structlog.configure(
            processors=[],
            wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
            logger_factory=structlog.ReturnLoggerFactory(),
            cache_logger_on_first_use=False,
        )
    try:
        yield
    finally:
        if configured:
            structlog.configure(**previous)
        else:
            structlog.reset_defaults()


# -- Redis ----------------------------------------------------------------------------------


class _Describing(Store, Protocol):
    """What the management commands need from a store besides `Store.open`."""

    async def describe(self, name: str) -> Mapping[str, Limit] | None:
        """The limits stored for budget *name*, in declaration order; None if it is unknown."""
        ...

    async def aclose(self) -> None:
        """Stop what the store runs in the background (a client passed in stays open)."""
        ...


def _redact(url: str) -> str:
    """*url* without its password (in the authority or the query), for messages."""
    parts = urllib.parse.urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    if "password" in query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = urllib.parse.urlencode([(k, "***" if k == "password" else v) for k, v in pairs])
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _one_line(exc: BaseException) -> str:
    """*exc* in one line; a `BackendError` with the Redis error it wraps."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, BackendError) and cause is not None and str(cause) not in text:
        text = f"{text}: {cause}"
    return " ".join(text.split())


@contextlib.asynccontextmanager
async def open_redis(url: str, prefix: str) -> AsyncIterator[_Describing]:
    """A `RedisStore` on a client of our own (connect timeout, closed on exit). Every
    failure of Redis inside the block becomes one line and exit code 1."""
    try:
        # The redis extra is optional: imported only when a command needs it.
        from redis.asyncio import Redis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415
    except ImportError:
        raise Failure(
            "Redis support needs the redis package: pip install 'aiobudget[redis]'"
        ) from None
    try:
        client = Redis.from_url(url, socket_connect_timeout=5)
    except ValueError as exc:
        raise BadUsage(f"invalid Redis URL {_redact(url)!r}: {exc}") from None
    try:
        try:
            await client.ping()  # one clear message for a Redis that is not there
        except (RedisError, OSError) as exc:
            raise Failure(f"cannot reach Redis at {_redact(url)}: {_one_line(exc)}") from None
        try:
            store = importlib.import_module("aiobudget.stores.redis").RedisStore
        except (ImportError, AttributeError) as exc:
            raise Failure(f"this aiobudget has no RedisStore ({exc})") from None
        opened = cast("_Describing", store(client, prefix=prefix))
        try:
            yield opened
        except (BackendError, RedisError, OSError) as exc:
            raise Failure(f"Redis at {_redact(url)}: {_one_line(exc)}") from None
        finally:
            with anyio.CancelScope(shield=True):
                await opened.aclose()
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


async def _existing(store: _Describing, args: argparse.Namespace) -> Budget:
    """The budget *args.name* as it is stored, or a failure naming where we looked."""
    limits = await store.describe(args.name)
    if limits is None:
        raise Failure(
            f"no budget named {args.name!r} in Redis at {_redact(args.redis)} "
            f"(prefix {args.prefix!r})"
        )
    return Budget(limits, name=args.name, store=store)


# -- show, reset, set-limit -----------------------------------------------------------------


def _snapshot_json(name: str, snap: Snapshot) -> dict[str, Any]:
    return {
        "name": name,
        "dims": {
            dim: {
                "limit": limit.limit,
                "warn": limit.warn,
                "headroom": limit.headroom,
                "spent": snap.spent[dim],
                "reserved": snap.reserved[dim],
                "remaining": snap.remaining[dim],
            }
            for dim, limit in snap.limits.items()
        },
        "verdict": {"status": snap.verdict.status.value, "dim": snap.verdict.dim},
    }


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Rows as aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _verdict_text(snap: Snapshot) -> str:
    verdict = snap.verdict
    return verdict.status.value + (f" ({verdict.dim})" if verdict.dim else "")


def _snapshot_text(name: str, snap: Snapshot, where: str) -> str:
    rows = [["dimension", "limit", "warn", "headroom", "spent", "reserved", "remaining"]]
    for dim, limit in snap.limits.items():
        warn = "-" if limit.warn is None else f"{limit.warn:,}"
        rows.append(
            [
                dim,
                f"{limit.limit:,}",
                warn,
                f"{limit.headroom:,}",
                f"{snap.spent[dim]:,}",
                f"{snap.reserved[dim]:,}",
                f"{snap.remaining[dim]:,}",
            ]
        )
    return f"budget {name!r} ({where})\n{table(rows, '  ')}\nverdict: {_verdict_text(snap)}"


def _where(args: argparse.Namespace) -> str:
    return f"{_redact(args.redis)}, prefix {args.prefix!r}"


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _cmd_show(args: argparse.Namespace) -> int:
    snap = anyio.run(_load, args)
    if args.json:
        print_json(_snapshot_json(args.name, snap))
    else:
        print(_snapshot_text(args.name, snap, _where(args)))
    return EXIT_EXHAUSTED if snap.verdict.status is Status.EXHAUSTED else EXIT_OK


async def _load(args: argparse.Namespace) -> Snapshot:
    async with open_redis(args.redis, args.prefix) as store:
        return await (await _existing(store, args)).snapshot()


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Go on if --yes, or if a person at the terminal says yes; else stop."""
    if args.yes:
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise Failure("not confirmed; nothing was changed")


def _require_confirmation(args: argparse.Namespace) -> None:
    """Destructive commands need --yes when no person can be asked."""
    if not args.yes and not (sys.stdin is not None and sys.stdin.isatty()):
        raise BadUsage(
            f"'{args.command}' changes budget {args.name!r}: pass --yes to confirm "
            "(stdin is not a terminal, so it cannot ask)"
        )


def _print_change(
    args: argparse.Namespace, summary: str, before: Snapshot, after: Snapshot, **action: str
) -> None:
    """What a command changed: *action* and both snapshots as JSON with --json, else
    *summary* and the budget as it is now."""
    if args.json:
        before_json, after_json = (
            _snapshot_json(args.name, before),
            _snapshot_json(args.name, after),
        )
        print_json({**action, "before": before_json, "after": after_json})
    else:
        print(f"budget {args.name!r}: {summary}")
        print(_snapshot_text(args.name, after, _where(args)))


def _cmd_reset(args: argparse.Namespace) -> int:
    _require_confirmation(args)
    # Read, ask (with no connection held open while a person thinks), then act.
    before = anyio.run(_load, args)
    spent = ", ".join(f"{dim} {value:,}" for dim, value in before.spent.items())
    _confirm(args, f"reset budget {args.name!r} (spent: {spent}) to 0?")
    after = anyio.run(_reset, args)
    _print_change(args, f"spent reset to 0 (was {spent})", before, after, action="reset")
    return EXIT_OK


async def _reset(args: argparse.Namespace) -> Snapshot:
    async with open_redis(args.redis, args.prefix) as store:
        budget = await _existing(store, args)
        await budget.reset()
        return await budget.snapshot()


def _new_limits(args: argparse.Namespace, limits: Mapping[str, Limit]) -> dict[str, Limit]:
    """*limits* with DIM's limit (and --warn / --headroom) replaced."""
    dim = args.dim
    if dim not in limits:
        raise BadUsage(f"budget {args.name!r} has no dimension {dim!r}; it has {', '.join(limits)}")
    old = limits[dim]
    value = _amount(args.value, "VALUE", dim)
    if args.warn is None:
        warn = old.warn
    elif args.warn.strip().lower() == "none":
        warn = None
    else:
        warn = _amount(args.warn, "--warn", dim)
    headroom = old.headroom if args.headroom is None else _amount(args.headroom, "--headroom", dim)
    # The old warn level and headroom are kept, unless the new limit is below them.
    for option, level, given in (
        ("--warn", warn, args.warn),
        ("--headroom", headroom, args.headroom),
    ):
        if level is not None and level > value:
            hint = f": pass {option}" + (" (or --warn none)" if option == "--warn" else "")
            kept = " (kept from the old limit)" if given is None else ""
            raise BadUsage(f"{option[2:]} {level:,}{kept} is above the new limit {value:,}{hint}")
    return {**limits, dim: Limit(value, warn=warn, headroom=headroom)}


def _cmd_set_limit(args: argparse.Namespace) -> int:
    _amount(args.value, "VALUE", args.dim)  # a bad value is a usage error, found before I/O
    _require_confirmation(args)
    before = anyio.run(_load, args)
    new = _new_limits(args, before.limits)[args.dim]
    old = before.limits[args.dim]
    _confirm(
        args,
        f"set the {args.dim} limit of budget {args.name!r} from {old.limit:,} to {new.limit:,}?",
    )
    after = anyio.run(_set_limit, args)
    summary = f"{args.dim} limit {old.limit:,} -> {new.limit:,}"
    _print_change(args, summary, before, after, action="set-limit", dim=args.dim)
    return EXIT_OK


async def _set_limit(args: argparse.Namespace) -> Snapshot:
    async with open_redis(args.redis, args.prefix) as store:
        budget = await _existing(store, args)
        # Re-read: only DIM changes, whatever happened to the others since we asked.
        current = (await budget.snapshot()).limits
        await budget.set_limits(_new_limits(args, current))
        return await budget.snapshot()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
