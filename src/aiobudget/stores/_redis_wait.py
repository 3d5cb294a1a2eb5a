"""Wake-up notices for reservations waiting on a Redis budget, one listener per tree.

Scripts that free budget (settle, release, reset, set_limits, an expired lease reclaimed,
a waiter leaving the head of a queue) PUBLISH, on the tree's channel, the tickets of the
waiters that are first in line where budget was freed. In each process and event loop,
one `Listener` per tree holds one subscription and sets the event of each named ticket
it knows; nobody else wakes (no thundering herd). A notice can be lost (the subscription
drops, Redis fails over), so every waiter also re-checks after a bounded, jittered
interval (`recheck_delay`): nothing can hang, and nothing busy-polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, Final, final

import anyio

from ._redis_scripts import text

__all__ = ["RECHECK", "Listener", "recheck_delay"]

RECHECK: Final = (0.5, 1.0)
"""Bounds of the fallback re-check interval, seconds."""
_RETRY: Final = 0.5  # seconds between attempts to resubscribe after the connection failed


def recheck_delay() -> float:
    """Seconds until a waiter re-checks without a notice. Jittered, so waiters of many
    processes do not all re-check in the same instant."""
    return random.uniform(*RECHECK)


@final
class Listener:
    """The subscription to one tree's wake-up channel, for one event loop.

    It runs (as a task) only while some local reservation waits on the tree, and stops
    when the last one stops waiting.
    """

    __slots__ = ("_channel", "_client", "_events", "_ready", "_task")

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._events: dict[str, asyncio.Event] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._events)

    def watch(self, ticket: str) -> asyncio.Event:
        """The event set when a notice names *ticket*; starts listening if needed."""
        event = self._events[ticket] = asyncio.Event()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return event

    def unwatch(self, ticket: str) -> None:
        """*ticket* stopped waiting; the last one out stops the listener."""
        self._events.pop(ticket, None)
        if not self._events and self._task is not None:
            self._task.cancel()
            self._task = None
            self._ready = asyncio.Event()

    async def ready(self, timeout: float) -> None:
        """Until the subscription is confirmed, or *timeout* seconds (then waiters rely on
        re-checking: a slow subscription must not delay a reservation)."""
        with anyio.move_on_after(timeout):
            await self._ready.wait()

    def stop(self) -> None:
        """Stop listening (the store is closing)."""
        self._events.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        ready = self._ready
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = text(message.get("type"))
                    if kind == "subscribe":
                        ready.set()
                    elif kind == "message":
                        for ticket in text(message.get("data")).split():
                            event = self._events.get(ticket)
                            if event is not None:
                                event.set()
            except Exception:  # noqa: BLE001 - any failure of the client library
                # Lost the subscription: waiters keep re-checking on their own meanwhile.
                await asyncio.sleep(_RETRY)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
