"""The Lua scripts of `RedisStore`, and the one place where Redis failures become errors.

Each operation is one file in ``lua/`` (package data), read once with
`importlib.resources`. Its first line declares the script's flags (Redis >= 7.0): every
script but ``reserve`` may run while Redis is out of memory (``allow-oom``), because it
records usage or gives budget back. The shared parts, ``lua/_common.lua`` and
``lua/_periods.lua``, are inserted after that line, so every operation is still a single
self-contained script and a single round trip. Scripts run with EVALSHA; after ``SCRIPT
FLUSH``, a restart or a failover Redis answers NOSCRIPT, and the script is sent whole and
re-run, transparently.

`run` is the only code that talks to Redis for an operation, and it turns every failure
of the client library (connection refused or lost, timeout, an error raised by a script,
an exception from inside redis-py itself, ...) into `aiobudget.BackendError` with the
cause chained: a failure is never an allow.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .._errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import ModuleType

__all__ = [
    "SCRIPT_NAMES",
    "Script",
    "backend_errors",
    "require_redis",
    "retriable",
    "run",
    "scripts",
    "text",
]

SCRIPT_NAMES: Final = (
    "charge",
    "extend",
    "release",
    "repair",
    "reserve",
    "reset",
    "set_limits",
    "settle",
    "snapshot",
    "sweep",
)


@functools.cache
def require_redis() -> ModuleType:
    """redis-py, imported on first use: ``import aiobudget`` never needs it."""
    # Imported here, not at the top: the redis extra is optional.
    try:
        import redis.asyncio  # noqa: PLC0415
        import redis.asyncio.cluster  # noqa: PLC0415
        import redis.exceptions  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the test environment has redis-py
        raise ImportError(
            "RedisStore needs redis-py: pip install 'aiobudget[redis]'", name="redis"
        ) from exc
    return redis


@functools.cache
def _noscript() -> type[BaseException]:
    error: type[BaseException] = require_redis().exceptions.NoScriptError
    return error


@functools.cache
def _transient() -> tuple[type[BaseException], ...]:
    """Failures that may pass: the connection, not the command, went wrong."""
    exceptions = require_redis().exceptions
    return (
        exceptions.ConnectionError,  # also BusyLoadingError, MaxConnectionsError
        exceptions.TimeoutError,
        exceptions.ReadOnlyError,  # a failover demoted the node we talked to
        exceptions.ClusterDownError,
        exceptions.TryAgainError,
        OSError,
    )


def _retries(exc: BaseException) -> int:
    """How many immediate retries may help after *exc*: one after a connection found dead
    (a server that restarted since it was pooled), two after an exception from inside the
    client library (redis-py's cluster client can lose a connection it is setting up to a
    concurrent topology refresh), none after a timeout (a stalled server stays stalled) or
    an answer of Redis (a script error recurs)."""
    exceptions = require_redis().exceptions
    if isinstance(exc, exceptions.TimeoutError | TimeoutError):
        return 0
    if isinstance(exc, exceptions.ConnectionError | OSError):
        return 1
    return 0 if isinstance(exc, exceptions.RedisError) else 2


def retriable(error: BackendError) -> bool:
    """Whether *error* came from a failure that may pass (a lost connection, a failover,
    a timeout), not from an answer of Redis that would recur."""
    cause = error.__cause__
    exceptions = require_redis().exceptions
    return isinstance(cause, _transient()) or (
        cause is not None and not isinstance(cause, exceptions.RedisError)
    )


def out_of_memory(error: BackendError) -> bool:
    """Whether Redis refused *error*'s command for want of memory (``maxmemory``)."""
    cause = error.__cause__
    return isinstance(cause, require_redis().exceptions.ResponseError) and str(cause).startswith(
        "OOM"
    )


@final
class Script:
    """One operation's source and its SHA1, which EVALSHA names it by."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:10]}>"


@functools.cache
def scripts() -> dict[str, Script]:
    """Every operation's script, read from the package once."""
    folder = resources.files(__package__ or "aiobudget.stores").joinpath("lua")
    common = folder.joinpath("_common.lua").read_text(encoding="utf-8")
    periods = folder.joinpath("_periods.lua").read_text(encoding="utf-8")
    made = {}
    for name in SCRIPT_NAMES:
        flags, _, body = folder.joinpath(f"{name}.lua").read_text("utf-8").partition("\n")
        if not flags.startswith("#!lua"):  # pragma: no cover - a packaging mistake
            raise RuntimeError(f"aiobudget's {name}.lua does not start with its #!lua flags")
        made[name] = Script(name, f"{flags}\n{common}\n{periods}\n{body}")
    return made


@contextlib.contextmanager
def backend_errors(what: str) -> Iterator[None]:
    """Turn any failure of the client library inside the block into `BackendError`, cause
    chained. (Only client calls belong in the block: every exception they raise is a
    failure of Redis or of redis-py, never an aiobudget rule.)"""
    try:
        yield
    except Exception as exc:  # every failure of the client library
        raise _backend_error(what, exc) from exc


def _backend_error(what: str, exc: BaseException) -> BackendError:
    message = f"Redis failed {what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, require_redis().exceptions.OutOfMemoryError):
        message += (
            " (Redis is out of memory, at its maxmemory: new reservations are refused "
            "until memory is freed; settles, releases and charges still run)"
        )
    return BackendError(message)


async def run(
    client: Any,
    script: Script,
    numkeys: int,
    head: Sequence[object],
    args: Sequence[object],
    *,
    what: str,
) -> list[Any]:
    """Run *script* on *client* in one round trip (one more after NOSCRIPT): the first
    *numkeys* of *head* are its KEYS, the rest of *head* and *args* its ARGV.

    After NOSCRIPT (a SCRIPT FLUSH, a restart, a failover, a cluster node that never saw
    it) the script is sent whole with EVAL, which runs it on the very node that lacked it
    and caches it there: no window in which another flush or node could miss it again.
    A script is retried once, at once, when its connection turned out dead (a server
    restarted since the connection was pooled): the retry takes a fresh one; and up to
    twice after an exception from inside the client library. Every script may run twice
    and leave what one run leaves: its writes are keyed by a lease or charge id, only give
    back what expired, or set a value (a reset or new limits run again later are the same
    as run once then, with whatever ran in between ordered before).

    Raises `BackendError` for any failure of Redis, of the client or of the script;
    *what* names the budget in its message.
    """
    attempt = 0
    while True:
        try:
            try:
                reply = await client.evalsha(script.sha, numkeys, *head, *args)
            except _noscript():
                reply = await client.eval(script.source, numkeys, *head, *args)
        except Exception as exc:  # every failure of the client library
            attempt += 1
            if attempt <= _retries(exc):
                if attempt > 1:  # let whatever the client is sorting out settle first
                    await anyio.sleep(random.uniform(0.005, 0.02))
                continue
            what = f"running aiobudget's {script.name!r} script for {what}"
            raise _backend_error(what, exc) from exc
        break
    if not isinstance(reply, list) or not reply:
        raise BackendError(f"aiobudget's {script.name!r} script gave a malformed reply for {what}")
    return reply


def text(value: object) -> str:
    """A reply element as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
