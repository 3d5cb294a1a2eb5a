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
import dataclasses
import importlib
import json
import logging
import os
import random
import shutil
import sys
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, cast

import anyio
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from ._budget import Budget
from ._errors import BackendError, BudgetExhausted, InvalidAmount
from ._units import CALLS, COST, TOKENS, Pricing, Usage, usd
from ._version import __version__
from .kernel import Limit, Snapshot, Status, check_amount
from .protocols import Store

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterator,
        Awaitable,
        Callable,
        Iterable,
        Iterator,
        Mapping,
        Sequence,
    )

    from anyio.abc import Process, TaskGroup

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


class _Failure(Exception):
    """An operational failure: one line on stderr, no traceback."""

    code = EXIT_FAILURE


class _BadUsage(_Failure):
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
    except _Failure as exc:
        print(f"aiobudget: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("aiobudget: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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
        raise _BadUsage(f"{what} {text!r} is money, but {dim!r} is not {COST!r}")
    try:
        if cleaned.startswith("$"):
            return usd(cleaned[1:])
        return check_amount(int(cleaned), what)
    except (ValueError, InvalidAmount):
        raise _BadUsage(
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
async def _redis(url: str, prefix: str) -> AsyncIterator[_Describing]:
    """A `RedisStore` on a client of our own (connect timeout, closed on exit). Every
    failure of Redis inside the block becomes one line and exit code 1."""
    try:
        # The redis extra is optional: imported only when a command needs it.
        from redis.asyncio import Redis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415
    except ImportError:
        raise _Failure(
            "Redis support needs the redis package: pip install 'aiobudget[redis]'"
        ) from None
    try:
        client = Redis.from_url(url, socket_connect_timeout=5)
    except ValueError as exc:
        raise _BadUsage(f"invalid Redis URL {_redact(url)!r}: {exc}") from None
    try:
        try:
            await client.ping()  # one clear message for a Redis that is not there
        except (RedisError, OSError) as exc:
            raise _Failure(f"cannot reach Redis at {_redact(url)}: {_one_line(exc)}") from None
        try:
            store = importlib.import_module("aiobudget.stores.redis").RedisStore
        except (ImportError, AttributeError) as exc:
            raise _Failure(f"this aiobudget has no RedisStore ({exc})") from None
        opened = cast("_Describing", store(client, prefix=prefix))
        try:
            yield opened
        except (BackendError, RedisError, OSError) as exc:
            raise _Failure(f"Redis at {_redact(url)}: {_one_line(exc)}") from None
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
        raise _Failure(
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


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
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
    return f"budget {name!r} ({where})\n{_table(rows, '  ')}\nverdict: {_verdict_text(snap)}"


def _where(args: argparse.Namespace) -> str:
    return f"{_redact(args.redis)}, prefix {args.prefix!r}"


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _cmd_show(args: argparse.Namespace) -> int:
    snap = anyio.run(_load, args)
    if args.json:
        _print_json(_snapshot_json(args.name, snap))
    else:
        print(_snapshot_text(args.name, snap, _where(args)))
    return EXIT_EXHAUSTED if snap.verdict.status is Status.EXHAUSTED else EXIT_OK


async def _load(args: argparse.Namespace) -> Snapshot:
    async with _redis(args.redis, args.prefix) as store:
        return await (await _existing(store, args)).snapshot()


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Go on if --yes, or if a person at the terminal says yes; else stop."""
    if args.yes:
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise _Failure("not confirmed; nothing was changed")


def _require_confirmation(args: argparse.Namespace) -> None:
    """Destructive commands need --yes when no person can be asked."""
    if not args.yes and not (sys.stdin is not None and sys.stdin.isatty()):
        raise _BadUsage(
            f"'{args.command}' changes budget {args.name!r}: pass --yes to confirm "
            "(stdin is not a terminal, so it cannot ask)"
        )


def _cmd_reset(args: argparse.Namespace) -> int:
    _require_confirmation(args)
    # Read, ask (with no connection held open while a person thinks), then act.
    before = anyio.run(_load, args)
    spent = ", ".join(f"{dim} {value:,}" for dim, value in before.spent.items())
    _confirm(args, f"reset budget {args.name!r} (spent: {spent}) to 0?")
    after = anyio.run(_reset, args)
    if args.json:
        before_json, after_json = (
            _snapshot_json(args.name, before),
            _snapshot_json(args.name, after),
        )
        _print_json({"action": "reset", "before": before_json, "after": after_json})
    else:
        print(f"budget {args.name!r}: spent reset to 0 (was {spent})")
        print(_snapshot_text(args.name, after, _where(args)))
    return EXIT_OK


async def _reset(args: argparse.Namespace) -> Snapshot:
    async with _redis(args.redis, args.prefix) as store:
        budget = await _existing(store, args)
        await budget.reset()
        return await budget.snapshot()


def _new_limits(args: argparse.Namespace, limits: Mapping[str, Limit]) -> dict[str, Limit]:
    """*limits* with DIM's limit (and --warn / --headroom) replaced."""
    dim = args.dim
    if dim not in limits:
        raise _BadUsage(
            f"budget {args.name!r} has no dimension {dim!r}; it has {', '.join(limits)}"
        )
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
            raise _BadUsage(f"{option[2:]} {level:,}{kept} is above the new limit {value:,}{hint}")
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
    if args.json:
        before_json, after_json = (
            _snapshot_json(args.name, before),
            _snapshot_json(args.name, after),
        )
        _print_json(
            {"action": "set-limit", "dim": args.dim, "before": before_json, "after": after_json}
        )
    else:
        print(f"budget {args.name!r}: {args.dim} limit {old.limit:,} -> {new.limit:,}")
        print(_snapshot_text(args.name, after, _where(args)))
    return EXIT_OK


async def _set_limit(args: argparse.Namespace) -> Snapshot:
    async with _redis(args.redis, args.prefix) as store:
        budget = await _existing(store, args)
        # Re-read: only DIM changes, whatever happened to the others since we asked.
        current = (await budget.snapshot()).limits
        await budget.set_limits(_new_limits(args, current))
        return await budget.snapshot()


# -- demo: the simulation -------------------------------------------------------------------

_PRICING: Final = Pricing(input="2.50", output="10")  # USD per million tokens
_MAX_OUTPUT: Final = 800  # max_tokens of every simulated call: the output estimate
_FAIL_RATE: Final = 0.05  # the provider fails after billing the prompt
_HANG_RATE: Final = 0.04  # the call hangs past its deadline and is cancelled


class _SimulatedFailure(Exception):
    """A simulated provider error."""


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What to simulate; sent as JSON to the worker processes of a Redis demo."""

    agents: int
    calls: int
    seed: int
    latency: float
    wait: float
    tokens: int
    cost: int
    call_limit: int
    agent_tokens: int

    def limits(self) -> dict[str, Limit]:
        """The shared budget: warn at 80%."""
        return {
            dim: Limit(value, warn=value * 4 // 5)
            for dim, value in ((TOKENS, self.tokens), (COST, self.cost), (CALLS, self.call_limit))
        }

    def agent_limits(self) -> dict[str, Limit | int]:
        """Each agent's own budget: a token cap; money and calls only through the parent."""
        return {TOKENS: self.agent_tokens, COST: self.cost, CALLS: self.calls}


@dataclasses.dataclass(frozen=True)
class _Call:
    """One simulated LLM call, drawn in advance so a seed fixes every agent's story."""

    estimate: Usage
    usage: Usage
    latency: float
    fails: bool


def _draw(rng: random.Random, plan: _Plan) -> _Call:
    prompt = rng.randint(300, 2_000)
    output = rng.randint(50, _MAX_OUTPUT)
    latency = plan.latency * rng.uniform(0.25, 1.75)
    fate = rng.random()
    estimate = _PRICING.priced(Usage(input_tokens=prompt, output_tokens=_MAX_OUTPUT, calls=1))
    if fate < _FAIL_RATE:  # billed for the prompt, then an error
        return _Call(estimate, _PRICING.priced(Usage(input_tokens=prompt, calls=1)), latency, True)
    if fate < _FAIL_RATE + _HANG_RATE:
        latency = _deadline(plan) + plan.latency
    usage = _PRICING.priced(Usage(input_tokens=prompt, output_tokens=output, calls=1))
    return _Call(estimate, usage, latency, False)


def _deadline(plan: _Plan) -> float:
    """How long an agent gives one call, waiting included; past it the call is cancelled."""
    return plan.wait + 2.5 * plan.latency


@dataclasses.dataclass
class _Stats:
    """Counters of one process's agents; summed over the processes of a Redis demo."""

    active: int = 0  # holding a reservation, in a call
    waiting: int = 0  # waiting for a reservation
    done: int = 0  # agents that finished their work
    denied: int = 0  # agents stopped by a denial
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    granted: int = 0
    reserved_total: Counter[str] = dataclasses.field(default_factory=Counter)
    charged_total: Counter[str] = dataclasses.field(default_factory=Counter)
    peak: Counter[str] = dataclasses.field(default_factory=Counter)  # max spent + reserved
    denials: Counter[str] = dataclasses.field(default_factory=Counter)  # "shared tokens": n

    def observe(self, snap: Snapshot) -> None:
        """Note the shared budget's ``spent + reserved``."""
        for dim in snap.limits:
            self.peak[dim] = max(self.peak[dim], snap.spent[dim] + snap.reserved[dim])

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs.
        return {
            field.name: dict(value) if isinstance(value, Counter) else value
            for field in dataclasses.fields(self)
            for value in (getattr(self, field.name),)
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Stats:
        counters = {"reserved_total", "charged_total", "peak", "denials"}
        fields: dict[str, Any] = {k: Counter(v) if k in counters else v for k, v in data.items()}
        return cls(**fields)

    @classmethod
    def total(cls, parts: Iterable[_Stats]) -> _Stats:
        out = cls()
        for part in parts:
            for field in dataclasses.fields(cls):
                mine, theirs = getattr(out, field.name), getattr(part, field.name)
                if field.name == "peak":
                    out.peak = mine | theirs  # max per dimension
                else:
                    setattr(out, field.name, mine + theirs)
        return out


class _Simulation:
    """Agents in one task group sharing *budget*, each through a child budget."""

    def __init__(self, budget: Budget, plan: _Plan, stats: _Stats) -> None:
        self.budget = budget
        self.plan = plan
        self.stats = stats
        self.error: BaseException | None = None
        self._agents: list[tuple[Budget, list[_Call], float]] = []

    async def prepare(self, indexes: Iterable[int], *, reset: bool) -> None:
        """Build the agents; with *reset*, give their budgets this run's limits and zero
        them (they may be left over in Redis from an earlier run)."""
        plan = self.plan
        for index in indexes:
            # A string seed is hashed with SHA-512: the same in every process and run.
            rng = random.Random(f"{plan.seed}:{index}")
            start = rng.uniform(0, plan.latency)
            calls = [_draw(rng, plan) for _ in range(plan.calls)]
            child = self.budget.child(
                plan.agent_limits(), name=f"agent-{index:03d}", update_limits=reset
            )
            if reset:
                await child.reset()
            self._agents.append((child, calls, start))

    async def run(self) -> None:
        """Run every agent; the first unexpected error stops them all and is raised."""
        async with anyio.create_task_group() as tg:
            for child, calls, start in self._agents:
                tg.start_soon(self._guarded, tg, child, calls, start)
        if self.error is not None:
            raise self.error

    async def _guarded(
        self, tg: TaskGroup, child: Budget, calls: list[_Call], start: float
    ) -> None:
        # Errors are kept, not raised, so callers never see an exception group.
        try:
            await self._agent(child, calls, start)
        except Exception as exc:  # noqa: BLE001 - reported by run()
            if self.error is None:
                self.error = exc
            tg.cancel_scope.cancel()

    async def _agent(self, child: Budget, calls: list[_Call], start: float) -> None:
        stats = self.stats
        await anyio.sleep(start)
        for call in calls:
            try:
                outcome = await self._call(child, call)
            except BudgetExhausted as exc:
                stats.denied += 1
                level = "shared" if exc.budget == self.budget.name else "agent"
                stats.denials[f"{level} {exc.dim}"] += 1
                return
            if outcome == "ok":
                stats.ok += 1
            elif outcome == "failed":
                stats.failed += 1
            else:
                stats.cancelled += 1
        stats.done += 1

    async def _call(self, child: Budget, call: _Call) -> str:
        """One call: reserve the estimate (waiting fairly), 'call', record, settle."""
        stats = self.stats
        stats.waiting += 1
        waiting = True
        try:
            with anyio.move_on_after(_deadline(self.plan)) as deadline:
                async with child.reserve(call.estimate, timeout=self.plan.wait) as reservation:
                    stats.waiting -= 1
                    waiting = False
                    stats.active += 1
                    stats.granted += 1
                    stats.reserved_total.update(reservation.amounts)
                    try:
                        stats.observe(await self.budget.snapshot())
                        await anyio.sleep(call.latency)
                        reservation.record(call.usage)
                        if call.fails:
                            raise _SimulatedFailure
                    finally:
                        stats.active -= 1
                        # What is recorded is what the exit charges, whatever the path.
                        stats.charged_total.update(reservation.recorded)
        except _SimulatedFailure:
            return "failed"
        finally:
            if waiting:
                stats.waiting -= 1
        return "cancelled" if deadline.cancelled_caught else "ok"


# -- demo: display --------------------------------------------------------------------------

_RESET: Final = "\x1b[0m"
_GREEN: Final = "\x1b[32m"
_YELLOW: Final = "\x1b[33m"
_RED: Final = "\x1b[31m"
_DIM: Final = "\x1b[2m"
_BOLD: Final = "\x1b[1m"


def _money(micros: int, places: int = 6) -> str:
    """Micro-dollars as exact dollars, truncated to *places* decimals."""
    whole, frac = divmod(micros, 1_000_000)
    return f"${whole:,}.{frac:06d}"[: len(f"${whole:,}.") + places]


def _value(dim: str, value: int, places: int = 6) -> str:
    return _money(value, places) if dim == COST else f"{value:,}"


class _Display:
    """Progress on stdout: a block redrawn in place on a terminal (``live``), one plain
    line a second otherwise, or nothing (``--json``)."""

    def __init__(self, out: TextIO, mode: str, title: str) -> None:
        self.out = out
        self.mode = mode
        self.title = title
        self.interval = 0.1 if mode == "live" else 1.0
        self._drawn = 0  # lines of the live block on screen
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self._glyphs = "█▒░" if encoding == "utf8" else "#=."
        self._color = mode == "live" and "NO_COLOR" not in os.environ

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self._color and text else text

    def update(self, snap: Snapshot, stats: _Stats, elapsed: float) -> None:
        if self.mode == "live":
            self._redraw(self._block(snap, stats, elapsed))
        elif self.mode == "lines":
            self.out.write(self._line(snap, stats, elapsed) + "\n")
            self.out.flush()

    def start(self) -> None:
        if self.mode == "live":
            self.out.write("\x1b[?25l")  # hide the cursor while redrawing

    def close(self) -> None:
        if self.mode == "live":
            self.out.write("\x1b[?25h")
            self.out.flush()

    def _redraw(self, lines: list[str]) -> None:
        # Up to the block's first line, then rewrite each line whole (erase, then text).
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)

    def _block(self, snap: Snapshot, stats: _Stats, elapsed: float) -> list[str]:
        columns = shutil.get_terminal_size((100, 24)).columns
        width = max(10, min(40, columns - 60))
        lines = [f"{self._paint(_BOLD, self.title)}  {elapsed:5.1f}s"]
        name_width = max(len(dim) for dim in snap.limits)
        for dim, limit in snap.limits.items():
            spent, reserved = snap.spent[dim], snap.reserved[dim]
            used = spent + reserved
            if used >= limit.limit:
                color = _RED
            elif limit.warn is not None and used >= limit.warn:
                color = _YELLOW
            else:
                color = _GREEN
            full = limit.limit or 1
            a = min(width, spent * width // full)
            b = min(width, used * width // full) - a
            bar = (
                self._paint(color, self._glyphs[0] * a)
                + self._paint(color, self._glyphs[1] * b)
                + self._paint(_DIM, self._glyphs[2] * (width - a - b))
            )
            numbers = f"{_value(dim, spent, 4)} / {_value(dim, limit.limit, 4)}"
            held = f"  +{_value(dim, reserved, 4)} reserved" if reserved else ""
            lines.append(f"  {dim:<{name_width}}  {bar}  {numbers}{self._paint(_DIM, held)}")
        lines.append(
            f"  agents  active {stats.active:3}   waiting {stats.waiting:3}   "
            f"completed {stats.done:3}   denied {stats.denied:3}"
        )
        lines.append(
            f"  results ok {stats.ok:5}   failed {stats.failed:3}   cancelled {stats.cancelled:3}"
        )
        return lines

    def _line(self, snap: Snapshot, stats: _Stats, elapsed: float) -> str:
        dims = "  ".join(
            f"{dim} {snap.spent[dim]:,}/{limit.limit:,}" for dim, limit in snap.limits.items()
        )
        return (
            f"[{elapsed:5.1f}s] {dims}  | active {stats.active} waiting {stats.waiting} "
            f"completed {stats.done} denied {stats.denied}"
        )


# -- demo: running ------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.worker:
        # The orders come on stdin, not argv: a password in the URL stays out of `ps`.
        return anyio.run(_worker, json.loads(sys.stdin.readline()))
    if args.processes is not None and args.redis is None:
        raise _BadUsage("--processes needs --redis: processes share a budget through Redis")
    if args.redis is not None and args.backend != "asyncio":
        raise _BadUsage("the Redis demo runs on asyncio (redis-py's asyncio client)")
    agents = args.agents
    latency = args.latency
    plan = _Plan(
        agents=agents,
        calls=args.calls,
        seed=random.randrange(100_000) if args.seed is None else args.seed,
        latency=latency,
        wait=2 * latency if args.wait is None else args.wait,
        tokens=9_000 * agents if args.tokens is None else args.tokens,
        cost=usd("0.04") * agents if args.usd is None else args.usd,
        call_limit=7 * agents,
        agent_tokens=14_000,
    )
    out = sys.stdout
    mode = "none" if args.json else "live" if out.isatty() and not args.no_live else "lines"
    if mode == "live" and os.environ.get("TERM") == "dumb":
        mode = "lines"
    where = "in memory" if args.redis is None else f"{args.processes or 2} processes, Redis"
    display = _Display(out, mode, f"aiobudget demo: {agents} agents, {where}, seed {plan.seed}")
    display.start()
    try:
        if args.redis is None:
            report = anyio.run(_demo_memory, plan, args.name, display, backend=args.backend)
        else:
            report = anyio.run(_demo_redis, args, plan, display)
    finally:
        display.close()
    if args.json:
        _print_json(report)
    else:
        print(_report_text(report, display))
    return EXIT_OK if report["ok"] else EXIT_FAILURE


async def _alongside(
    work: Callable[[], Awaitable[None]], *side: Callable[[], Awaitable[None]]
) -> None:
    """Await *work* while the *side* tasks run; they are cancelled when it ends. The first
    error comes out as itself, never wrapped in an exception group."""
    errors: list[Exception] = []

    async def guarded(function: Callable[[], Awaitable[None]]) -> None:
        try:
            await function()
        except Exception as exc:  # noqa: BLE001 - raised below, unwrapped
            errors.append(exc)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for function in side:
            tg.start_soon(guarded, function)
        await guarded(work)
        tg.cancel_scope.cancel()
    if errors:
        raise errors[0]


async def _refresh(
    display: _Display, budget: Budget, current: Callable[[], _Stats], observer: _Stats, t0: float
) -> None:
    """Redraw until cancelled, noting the shared budget's peak in *observer*."""
    while True:
        snap = await budget.snapshot()
        observer.observe(snap)
        display.update(snap, current(), anyio.current_time() - t0)
        await anyio.sleep(display.interval)


async def _demo_memory(plan: _Plan, name: str, display: _Display) -> dict[str, Any]:
    budget = Budget(plan.limits(), name=name)
    stats = _Stats()
    simulation = _Simulation(budget, plan, stats)
    await simulation.prepare(range(plan.agents), reset=False)
    t0 = anyio.current_time()

    async def refresh() -> None:
        if display.mode != "none":
            await _refresh(display, budget, lambda: stats, stats, t0)

    await _alongside(simulation.run, refresh)
    elapsed = anyio.current_time() - t0
    snap = await budget.snapshot()
    stats.observe(snap)
    display.update(snap, stats, elapsed)
    return _report(
        plan, name=name, store="memory", processes=1, snap=snap, stats=stats, elapsed=elapsed
    )


def _report(
    plan: _Plan,
    *,
    name: str,
    store: str,
    processes: int,
    snap: Snapshot,
    stats: _Stats,
    elapsed: float,
) -> dict[str, Any]:
    dims = {}
    for dim, limit in snap.limits.items():
        dims[dim] = {
            "limit": limit.limit,
            "spent": snap.spent[dim],
            "reserved": snap.reserved[dim],
            "remaining": snap.remaining[dim],
            "peak": stats.peak[dim],
            "reserved_total": stats.reserved_total[dim],
            "charged_total": stats.charged_total[dim],
            "refunded": stats.reserved_total[dim] - stats.charged_total[dim],
        }
    checks = {
        "not_overspent": all(d["spent"] <= d["limit"] for d in dims.values()),
        "peak_within_limit": all(d["peak"] <= d["limit"] for d in dims.values()),
        "nothing_reserved": all(d["reserved"] == 0 for d in dims.values()),
        "ledger_matches": all(d["spent"] == d["charged_total"] for d in dims.values()),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "budget": name,
        "store": store,
        "processes": processes,
        "agents": plan.agents,
        "calls_per_agent": plan.calls,
        "seed": plan.seed,
        "elapsed_s": round(elapsed, 3),
        "dims": dims,
        "verdict": {"status": snap.verdict.status.value, "dim": snap.verdict.dim},
        "reservations": stats.granted,
        "calls": {"ok": stats.ok, "failed": stats.failed, "cancelled": stats.cancelled},
        "agents_completed": stats.done,
        "agents_denied": stats.denied,
        "denials": dict(sorted(stats.denials.items())),
    }


_CHECKS: Final = {
    "not_overspent": "nothing was overspent: spent <= limit on every dimension "
    "(from budget.snapshot())",
    "peak_within_limit": "spent + reserved never passed a limit (sampled at every reservation)",
    "nothing_reserved": "every reservation was settled or refunded: reserved is 0",
    "ledger_matches": "spent equals the usage the agents recorded, on every dimension",
}


def _report_text(report: Mapping[str, Any], display: _Display) -> str:
    rows = [["dimension", "limit", "spent", "reserved", "peak spent+reserved", "refunded"]]
    for dim, d in report["dims"].items():
        rows.append(
            [dim, *(_value(dim, d[k]) for k in ("limit", "spent", "reserved", "peak", "refunded"))]
        )
    calls = report["calls"]
    by_level: dict[str, list[str]] = {}
    for key, count in report["denials"].items():
        level, dim = key.split(" ", 1)
        by_level.setdefault(level, []).append(f"{dim} {count}")
    denials = "; ".join(
        f"{level} budget{'' if level == 'shared' else 's'}: {', '.join(parts)}"
        for level, parts in sorted(by_level.items(), reverse=True)
    )
    verdict = report["verdict"]
    store = (
        "in memory" if report["store"] == "memory" else f"Redis, {report['processes']} processes"
    )
    lines = [
        "",
        f"Report: budget {report['budget']!r}, {report['agents']} agents, {store}, "
        f"seed {report['seed']}, {report['elapsed_s']:.1f}s",
        _table(rows, "  "),
        "",
        f"  calls     {calls['ok']} ok, {calls['failed']} failed, {calls['cancelled']} cancelled "
        f"({report['reservations']} reservations)",
        f"  agents    {report['agents_completed']} completed their work, "
        f"{report['agents_denied']} stopped by a denial",
        f"  denials   {denials or 'none'}",
        f"  verdict   {verdict['status']}" + (f" ({verdict['dim']})" if verdict["dim"] else ""),
        "",
    ]
    for key, text in _CHECKS.items():
        good = report["checks"][key]
        mark = display._paint(_GREEN, "ok  ") if good else display._paint(_RED, "FAIL")
        lines.append(f"  {mark} {text}")
    return "\n".join(lines)


# -- demo across processes (Redis) ------------------------------------------------------------


def _emit(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _worker(orders: Mapping[str, Any]) -> int:
    """A process of a Redis demo: its share of the agents, counters as JSON lines."""
    plan = _Plan(**orders["plan"])
    async with _redis(orders["url"], orders["prefix"]) as store:
        budget = Budget(plan.limits(), name=orders["name"], store=store)
        stats = _Stats()
        simulation = _Simulation(budget, plan, stats)
        await simulation.prepare(range(orders["index"], plan.agents, orders["of"]), reset=True)
        _emit({"event": "ready"})
        if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            return EXIT_FAILURE

        async def report() -> None:
            while True:
                _emit({"event": "stats", "stats": stats.to_json()})
                await anyio.sleep(0.2)

        await _alongside(simulation.run, report)
    _emit({"event": "done", "stats": stats.to_json()})
    return EXIT_OK


class _Child:
    """One worker process of a Redis demo, seen from the parent."""

    def __init__(self, index: int, process: Process) -> None:
        self.index = index
        self.process = process
        self.stats = _Stats()
        self.ready = anyio.Event()
        self.finished = anyio.Event()
        self.drained = anyio.Event()
        self.done = False
        self.stderr = bytearray()

    async def read(self) -> None:
        assert self.process.stdout is not None
        lines = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                message = json.loads(await lines.receive_until(b"\n", 1 << 20))
                if "stats" in message:
                    self.stats = _Stats.from_json(message["stats"])
                if message["event"] == "ready":
                    self.ready.set()
                elif message["event"] == "done":
                    self.done = True
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            pass
        finally:
            self.ready.set()  # a worker that died is not waited for
            self.finished.set()

    async def drain(self) -> None:
        assert self.process.stderr is not None
        try:
            async for chunk in self.process.stderr:
                self.stderr += chunk
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            self.drained.set()

    def failure(self) -> str:
        lines = self.stderr.decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit code {self.process.returncode}"
        return f"worker process {self.index} failed: {last}"


def _worker_env() -> dict[str, str]:
    """This environment, with this aiobudget importable first (it may not be installed)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


async def _spawn(args: argparse.Namespace, plan: _Plan, index: int, count: int) -> _Child:
    """Start worker process *index* of *count*: ``python -m aiobudget demo --worker``,
    its orders on the first line of its stdin."""
    orders = {
        "plan": dataclasses.asdict(plan),
        "url": args.redis,
        "prefix": args.prefix,
        "name": args.name,
        "index": index,
        "of": count,
    }
    command = [sys.executable, "-m", "aiobudget", *["-v"] * args.verbose]
    command += ["demo", "--worker"]
    child = _Child(index, await anyio.open_process(command, env=_worker_env()))
    assert child.process.stdin is not None
    await child.process.stdin.send(json.dumps(orders).encode() + b"\n")
    return child


async def _demo_redis(args: argparse.Namespace, plan: _Plan, display: _Display) -> dict[str, Any]:
    count = args.processes or 2
    async with _redis(args.redis, args.prefix) as store:
        budget = Budget(plan.limits(), name=args.name, store=store, update_limits=True)
        await budget.reset()  # a new period for this run
        children: list[_Child] = []
        try:
            for index in range(count):
                # One at a time: a process is in the list (for cleanup) as soon as it runs.
                children.append(await _spawn(args, plan, index, count))  # noqa: PERF401
            own = _Stats()  # the parent's own observations of the shared budget
            started = anyio.Event()
            t0 = 0.0

            def current() -> _Stats:
                return _Stats.total([own, *(child.stats for child in children)])

            async def supervise() -> None:
                nonlocal t0
                try:
                    with anyio.fail_after(60):
                        for child in children:
                            await child.ready.wait()
                except TimeoutError:
                    raise _Failure("the worker processes did not start within 60 s") from None
                for child in children:
                    if child.finished.is_set():
                        await child.drained.wait()
                        raise _Failure(child.failure())
                t0 = anyio.current_time()
                for child in children:
                    assert child.process.stdin is not None
                    await child.process.stdin.send(b"go\n")
                started.set()
                for child in children:
                    await child.finished.wait()
                    await child.drained.wait()

            async def refresh() -> None:
                await started.wait()
                if display.mode != "none":
                    await _refresh(display, budget, current, own, t0)

            side = [refresh, *(c.read for c in children), *(c.drain for c in children)]
            await _alongside(supervise, *side)
            elapsed = anyio.current_time() - t0
            for child in children:
                await child.process.wait()
                if not child.done or child.process.returncode:
                    raise _Failure(child.failure())
        finally:
            with anyio.CancelScope(shield=True):
                for child in children:
                    if child.process.returncode is None:
                        child.process.kill()
                    await child.process.aclose()
        stats = current()
        snap = await budget.snapshot()
        stats.observe(snap)
        display.update(snap, stats, elapsed)
        return _report(
            plan,
            name=args.name,
            store="redis",
            processes=count,
            snap=snap,
            stats=stats,
            elapsed=elapsed,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
