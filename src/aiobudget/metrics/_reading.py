"""Reading the snapshots to report, at collection time, from synchronous exporter code.

Prometheus collectors and OpenTelemetry callbacks are synchronous and may be called from
any thread (an HTTP server's, an export timer's, an event loop's), while snapshots are
read with ``await``. So the reads run in one event loop of their own, in a daemon thread
shared by every exporter of the process, and the collecting thread waits for them, for at
most the exporter's *timeout*. A budget whose snapshot fails or is late is left out of
that collection and counted in ``aiobudget_snapshot_errors_total``: a value that cannot
be read is never reported as 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, Union, final, runtime_checkable

import anyio

from .._budget import Budget
from ._recorder import RECORDER, label

if TYPE_CHECKING:
    from ..kernel import Snapshot

__all__ = ["Budgets", "Directory", "Reading", "Sources", "run"]

T = TypeVar("T")

CONCURRENCY: Final = 16  # snapshots read at once

Read = Callable[[], Coroutine[Any, Any, "Snapshot | None"]]


@runtime_checkable
class Directory(Protocol):
    """A store that can list and read its budgets by name (`RedisStore` is one)."""

    def names(self) -> AsyncIterator[str]:
        """The names of the store's top-level budgets."""
        ...

    async def read(self, name: str) -> Snapshot | None:
        """Budget *name*'s snapshot, or None when there is no such budget."""
        ...


Budgets = Union[Iterable[Budget], Callable[[], Iterable[Budget]]]  # noqa: UP007 - runtime alias
"""The budgets an exporter reports: an iterable, or a callable returning one at each
collection (for a set that changes)."""


@final
class Reading:
    """One collection's read: the snapshots that could be read, by budget label, and
    every label reported (those whose snapshot failed included, for their counters)."""

    __slots__ = ("labels", "snapshots")

    def __init__(self, snapshots: dict[str, Snapshot], labels: set[str]) -> None:
        self.snapshots = snapshots
        self.labels = labels


@final
class Sources:
    """What one exporter reports: given budgets, and the budgets a store lists."""

    __slots__ = ("_budgets", "_known", "_store", "labels", "timeout")

    def __init__(self, budgets: Budgets, store: Directory | None, timeout: float) -> None:
        if isinstance(budgets, Budget):
            raise TypeError("budgets is a list of budgets: pass [budget], not budget")
        if not callable(budgets):
            budgets = list(budgets)
            for budget in budgets:
                if not isinstance(budget, Budget):
                    raise TypeError(f"budgets must be aiobudget.Budget objects, not {budget!r}")
        if store is not None and not isinstance(store, Directory):
            raise TypeError(
                f"store must list and read its budgets (names(), read()), as RedisStore "
                f"does; {store!r} does not"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._budgets = budgets
        self._store = store
        self.timeout = float(timeout)
        self._known: list[str] = []  # the store's names, as last listed
        # The labels reported by the last collection (known at once for a fixed list).
        self.labels: set[str] = set() if callable(budgets) else {label(b.name) for b in budgets}

    def _targets(self) -> list[Budget]:
        budgets = self._budgets() if callable(self._budgets) else self._budgets
        return list(budgets)

    def read(self) -> Reading:
        """Read every snapshot to report now (blocking, at most about *timeout*)."""
        try:
            reading = run(self._read, self.timeout)
        except concurrent.futures.TimeoutError:  # the loop itself is stuck: nothing read
            for name in self.labels:
                RECORDER.snapshot_failed(name)
            return Reading({}, set(self.labels))
        self.labels = reading.labels
        return reading

    async def _read(self) -> Reading:
        snapshots: dict[str, Snapshot] = {}
        labels: dict[str, Read] = {}
        done: set[str] = set()  # read, or found gone (no error)
        for budget in self._targets():
            labels.setdefault(label(budget.name), budget.snapshot)  # the first of a name
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def one(name: str, read: Read) -> None:
            try:
                async with limiter:
                    snapshot = await read()
            except Exception:  # noqa: BLE001 - any failure to read is counted, never raised
                return
            done.add(name)
            if snapshot is not None:  # None: the budget is gone, nothing to report
                snapshots[name] = snapshot

        with anyio.move_on_after(self.timeout):
            store = self._store
            if store is not None:
                try:
                    self._known = [name async for name in store.names()]
                except Exception:  # noqa: BLE001 - counted; the last names known are read
                    RECORDER.discovery_failed()
                for name in self._known:
                    labels.setdefault(name, _reader(store, name))
            async with anyio.create_task_group() as tg:
                for name, read in labels.items():
                    tg.start_soon(one, name, read)
        for name in labels:
            if name not in done:  # failed, or still unread when time was up
                RECORDER.snapshot_failed(name)
        return Reading(dict(snapshots), set(labels))


def _reader(store: Directory, name: str) -> Read:
    async def read() -> Snapshot | None:
        return await store.read(name)

    return read


# -- the loop the reads run in ------------------------------------------------------------


@final
class _Loop:
    """An asyncio event loop in a daemon thread, started on first use, stopped when the
    last exporter closes (which also closes the clients stores made for it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users or self._loop is None:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        assert thread is not None
        if thread is not threading.current_thread():
            thread.join()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=_serve, args=(self._loop,), name="aiobudget-metrics", daemon=True
                )
                self._thread.start()
            # In a fresh context: the caller's (its async library, as sniffio sees it, say
            # trio) must not leak into the asyncio task.
            return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, self._loop)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        # Stores close the clients they made for this loop when its async generators are
        # finalized (see RedisStore).
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


LOOP: Final = _Loop()


def run(read: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
    """Run *read* in the metrics loop and wait for it (a little past *timeout*, which
    *read* is expected to keep)."""
    future = LOOP.submit(read())
    try:
        return future.result(timeout + 1.0)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise
