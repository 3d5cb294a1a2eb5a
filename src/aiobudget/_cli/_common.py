"""What the ``aiobudget`` commands share: exit codes, failures, argument types, logging and
the Redis connection."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Final

import anyio
import structlog

from .._budget import Budget
from .._errors import BackendError, InvalidAmount
from .._units import COST, usd
from ..kernel import MAX_AMOUNT, check_amount
from ..stores.redis import RedisStore, check_url, redact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence


EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_EXHAUSTED: Final = 3
EXIT_INTERRUPTED: Final = 130

EPILOG: Final = """\
exit codes:
  0    success
  1    operational failure (Redis unreachable, a worker died, a demo check failed,
       a confirmation declined); one line on stderr
  2    bad usage (unknown option, bad value, a destructive command without --yes
       when stdin is not a terminal)
  3    the budget is exhausted (show)
  130  interrupted (Ctrl-C or SIGTERM); reservations were given back first

environment:
  AIOBUDGET_REDIS_URL   default for --redis (redis://127.0.0.1:6379/0)
"""


class Failure(Exception):
    """An operational failure: one line on stderr, no traceback."""

    code = EXIT_FAILURE


class BadUsage(Failure):
    """Arguments that make no sense together, found after parsing."""

    code = EXIT_USAGE


class Interrupted(Failure):
    """Ctrl-C (SIGINT) or SIGTERM: the work was stopped in order."""

    code = EXIT_INTERRUPTED

    def __init__(self) -> None:
        super().__init__("interrupted")


def default_url() -> str:
    return os.environ.get("AIOBUDGET_REDIS_URL", "redis://127.0.0.1:6379/0")


def positive(text: str, maximum: int = MAX_AMOUNT) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    if value > maximum:
        raise argparse.ArgumentTypeError(f"{value} is more than {maximum:,}")
    return value


def at_most(maximum: int) -> Callable[[str], int]:
    """An argument type: a positive integer up to *maximum*."""

    def parse(text: str) -> int:
        return positive(text, maximum)

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 3600 seconds")
    return value


def dollars(text: str) -> int:
    try:
        return usd(text.removeprefix("$"))
    except InvalidAmount as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def amount(text: str, what: str, dim: str) -> int:
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
def logging_for(verbosity: int) -> Iterator[None]:
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


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], Awaitable[None]]]:
    """SIGINT and SIGTERM, caught while the block runs (call it inside the event loop).

    Yields a function that waits for the first of them and raises `Interrupted`: run it
    beside the work, so that a signal cancels the work in order (reservations settle on
    the way out) instead of raising `KeyboardInterrupt` wherever the code happens to be.
    Later signals are ignored until the block ends, so they cannot break that clean-up.
    Where signals cannot be caught (not the main thread; Windows) the function waits
    forever, and Ctrl-C raises `KeyboardInterrupt` as usual.
    """
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        signals = receiver.__enter__()
    except (NotImplementedError, RuntimeError, ValueError):
        yield anyio.sleep_forever
        return

    async def first() -> None:
        async for _ in signals:
            raise Interrupted

    try:
        yield first
    finally:
        receiver.__exit__(None, None, None)


# -- Redis ----------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """*exc* in one line; a `BackendError` with the Redis error it wraps."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, BackendError) and cause is not None and str(cause) not in text:
        text = f"{text}: {cause}"
    return " ".join(text.split())


@contextlib.asynccontextmanager
async def open_redis(url: str, prefix: str) -> AsyncIterator[RedisStore]:
    """A `RedisStore` on a client of our own (connect timeout, closed on exit). A bad URL
    or prefix is a usage error (2); every failure of Redis inside the block becomes one
    line and exit code 1."""
    try:
        # The redis extra is optional: imported only when a command needs it.
        from redis.asyncio import Redis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415
    except ImportError:
        raise Failure(
            "Redis support needs the redis package: pip install 'aiobudget[redis]'"
        ) from None
    try:
        check_url(url)
        client = Redis.from_url(url, socket_connect_timeout=5)
    except (ValueError, TypeError) as exc:
        raise BadUsage(f"invalid Redis URL {redact(url)!r}: {exc}") from None
    try:
        try:
            opened = RedisStore(client, prefix=prefix)  # no I/O: checks the prefix
        except ValueError as exc:
            raise BadUsage(f"invalid --prefix: {exc}") from None
        try:
            await client.ping()  # one clear message for a Redis that is not there
        except (RedisError, OSError) as exc:
            raise Failure(f"cannot reach Redis at {redact(url)}: {one_line(exc)}") from None
        try:
            yield opened
        except (BackendError, RedisError, OSError) as exc:
            raise Failure(f"Redis at {redact(url)}: {one_line(exc)}") from None
        finally:
            with anyio.CancelScope(shield=True):
                await opened.aclose()
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


async def existing(store: RedisStore, args: argparse.Namespace) -> Budget:
    """The budget *args.name* as it is stored, or a failure naming where we looked."""
    limits = await store.describe(args.name)
    if limits is None:
        raise Failure(
            f"no budget named {args.name!r} in Redis at {redact(args.redis)} "
            f"(prefix {args.prefix!r})"
        )
    # Opened as it is stored, period included, so that no check can refuse it.
    period = await store.describe_period(args.name)
    return Budget(limits, name=args.name, store=store, period=period)


def table(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Rows as aligned columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def where(args: argparse.Namespace) -> str:
    return f"{redact(args.redis)}, prefix {args.prefix!r}"


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2))
