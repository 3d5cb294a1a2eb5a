"""The Lua scripts of `RedisStore`, and the one place where Redis failures become errors.

Each operation is one file in ``lua/`` (package data), read once with
`importlib.resources`; the shared parts, ``lua/_common.lua`` and ``lua/_periods.lua``, are
prepended to each, so every operation is still a single self-contained script and a
single round trip. Scripts run
with EVALSHA; after ``SCRIPT FLUSH``, a restart or a failover Redis answers NOSCRIPT, and
the script is loaded again and re-run, transparently.

`run` is the only code that talks to Redis for an operation, and it turns every failure
of redis-py (connection refused or lost, timeout, an error raised by a script, ...) into
`aiobudget.BackendError` with the cause chained: a failure is never an allow.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, final

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
def _errors() -> tuple[tuple[type[BaseException], ...], type[BaseException]]:
    """Every exception redis-py raises, and its NOSCRIPT error."""
    exceptions = require_redis().exceptions
    failures = (exceptions.RedisError, exceptions.RedisClusterException, OSError)
    return failures, exceptions.NoScriptError


@functools.cache
def _transient() -> tuple[type[BaseException], ...]:
    exceptions = require_redis().exceptions
    return (
        exceptions.ConnectionError,  # also BusyLoadingError, MaxConnectionsError
        exceptions.TimeoutError,
        exceptions.ReadOnlyError,  # a failover demoted the node we talked to
        exceptions.ClusterDownError,
        exceptions.TryAgainError,
        OSError,
    )


def retriable(error: BackendError) -> bool:
    """Whether *error* came from a failure that may pass (a lost connection, a failover),
    not from a script error that would recur."""
    return isinstance(error.__cause__, _transient())


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
    return {
        name: Script(
            name, f"{common}\n{periods}\n{folder.joinpath(f'{name}.lua').read_text('utf-8')}"
        )
        for name in SCRIPT_NAMES
    }


@contextlib.contextmanager
def backend_errors(what: str) -> Iterator[None]:
    """Turn any failure of redis-py inside the block into `BackendError`, cause chained."""
    try:
        yield
    except _errors()[0] as exc:
        raise _backend_error(what, exc) from exc


def _backend_error(what: str, exc: BaseException) -> BackendError:
    return BackendError(f"Redis failed {what}: {type(exc).__name__}: {exc}")


async def run(
    client: Any, script: Script, numkeys: int, head: Sequence[object], args: Sequence[object]
) -> list[Any]:
    """Run *script* on *client* in one round trip (one more after NOSCRIPT): the first
    *numkeys* of *head* are its KEYS, the rest of *head* and *args* its ARGV.

    After NOSCRIPT (a SCRIPT FLUSH, a restart, a failover, a cluster node that never saw
    it) the script is sent whole with EVAL, which runs it on the very node that lacked it
    and caches it there: no window in which another flush or node could miss it again.

    Raises `BackendError` for any failure of Redis or of the script.
    """
    # (An except clause's classes are looked up only when something was raised.)
    try:
        try:
            reply = await client.evalsha(script.sha, numkeys, *head, *args)
        except _errors()[1]:
            reply = await client.eval(script.source, numkeys, *head, *args)
    except _errors()[0] as exc:
        raise _backend_error(f"running aiobudget's {script.name!r} script", exc) from exc
    if not isinstance(reply, list) or not reply:
        raise BackendError(f"aiobudget's {script.name!r} script gave a malformed reply")
    return reply


def text(value: object) -> str:
    """A reply element as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
