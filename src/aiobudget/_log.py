"""The logger and the event names aiobudget emits.

aiobudget logs through structlog and never configures it: the application does. Event
names are stable (they are part of the contract); every event carries ``budget`` (the
budget's name) and the amounts involved as ``{dimension: int}`` mappings.

Per-operation events (reserved, settled, released, charged) are DEBUG. They are skipped
while structlog is unconfigured, because structlog's default prints every level to
stdout and a library must not flood an application that never asked for logs; the
events that matter without asking (denied, warn, exhausted, unrecorded, over request
limit) are always emitted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

import structlog
from structlog import get_config, is_configured

__all__ = [
    "ABANDONED",
    "BACKEND_RETRY",
    "CALLBACK_FAILED",
    "CHARGED",
    "DENIED",
    "EXHAUSTED",
    "LIMITS_UPDATED",
    "LLM_ESTIMATE_INCOMPLETE",
    "LLM_STREAM_WITHOUT_USAGE",
    "OVER_REQUEST_LIMIT",
    "PERIOD_CLOSED",
    "REDIS_AT_RISK",
    "RELEASED",
    "RESERVED",
    "RESET",
    "SETTLED",
    "UNRECORDED",
    "WAITED",
    "WAITING",
    "WARN",
    "Observer",
    "add_observer",
    "logger",
    "remove_observer",
]

RESERVED: Final = "budget.reserved"
"""A reservation was made (DEBUG): ``amounts``."""
WAITING: Final = "budget.waiting"
"""A reservation joined the wait queue (DEBUG): ``amounts``, ``timeout``."""
WAITED: Final = "budget.waited"
"""A reservation stopped waiting (DEBUG): ``seconds`` since it began, ``outcome``
(``granted``, ``denied`` or ``cancelled``)."""
DENIED: Final = "budget.denied"
"""A reservation or strict charge was refused (INFO): ``dim``, ``requested``, ``remaining``,
``level`` (the budget that said no)."""
SETTLED: Final = "budget.settled"
"""A reservation was settled (DEBUG): ``reserved``, ``actual``, ``status``."""
RELEASED: Final = "budget.released"
"""A reservation was given back untouched (DEBUG): ``reserved``, ``reason``."""
CHARGED: Final = "budget.charged"
"""Usage was charged without a reservation (DEBUG): ``amounts``, ``status``."""
WARN: Final = "budget.warn"
"""The budget reached a warn level (WARNING), once per crossing: ``dim``."""
EXHAUSTED: Final = "budget.exhausted"
"""The budget reached a limit (WARNING), once per crossing: ``dim``."""
UNRECORDED: Final = "budget.unrecorded"
"""A reservation exited normally without recording usage (WARNING): ``reserved``,
``action`` (``refund`` or ``charge``). Not logged with ``on_unrecorded="release"``."""
OVER_REQUEST_LIMIT: Final = "budget.over_request_limit"
"""Actual usage passed the reservation's ``request_limit`` (WARNING): ``dim``, ``actual``,
``limit``. It was charged all the same: the ledger tells the truth."""
ABANDONED: Final = "budget.abandoned"
"""A reservation was garbage-collected while still holding budget (WARNING)."""
RESET: Final = "budget.reset"
"""``spent`` was set to 0 for a new period (INFO)."""
PERIOD_CLOSED: Final = "budget.period_closed"
"""A window of a budget's period closed (INFO), logged once across every process sharing
the budget: ``period_start``, ``period_end`` (RFC 3339, UTC) and the final ``spent``."""
LIMITS_UPDATED: Final = "budget.limits_updated"
"""The limits of a budget were changed (INFO): ``limits``."""
BACKEND_RETRY: Final = "budget.backend_retry"
"""A settle or release could not reach the store and is being retried (WARNING)."""
REDIS_AT_RISK: Final = "budget.redis_at_risk"
"""A `RedisStore`'s server could lose budgets (WARNING), once per store, at its first
operation: ``server``, ``prefix``, ``risks`` (an eviction policy that can evict budget
keys, no persistence)."""
CALLBACK_FAILED: Final = "budget.callback_failed"
"""An ``on_warn`` or ``on_exhausted`` callback raised (ERROR); accounting was unaffected."""
LLM_ESTIMATE_INCOMPLETE: Final = "llm.estimate_incomplete"
"""The default LLM estimate cannot count part of a call's input (WARNING, once per
``reason``): ``reason``, ``hint``."""
LLM_STREAM_WITHOUT_USAGE: Final = "llm.stream_without_usage"
"""An OpenAI chat stream will not report usage, so it can only be charged blind
(WARNING, before the call)."""


# structlog's lazy proxy. Its ``bind()`` assembles a logger from the configuration of the
# moment or, once the application configured ``cache_logger_on_first_use=True``, returns
# the logger it assembled first: structlog's own choice between following
# reconfiguration and speed, left to the application as for its own loggers.
_proxy: Final[Any] = structlog.get_logger("aiobudget")


class _Logger:
    """structlog's ``get_logger("aiobudget")``, with DEBUG events skipped while structlog
    is unconfigured (its default prints every level) or filters them out.

    Whether DEBUG is on is asked on every reservation, so the answer is kept with the
    logger it was asked of, through structlog's public API only. When the proxy caches,
    ``bind()`` returns the same logger and one identity check suffices. Otherwise it would
    assemble a new logger per call (microseconds), so the logger is kept until
    `structlog.get_config` shows another configuration.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # (the configuration seen, or None while the proxy caches; the bound logger; DEBUG
        # on?; the proxy it came from), replaced whole so that no thread sees one logger
        # with another's answer.
        self._state: tuple[tuple[object, ...] | None, Any, bool, Any] = ((), None, False, None)

    def _resolve(self) -> tuple[Any, bool]:
        """The bound logger, and whether it lets DEBUG events through."""
        seen, bound, debug, _ = self._state
        if seen is None:
            current = _proxy.bind()
            if current is bound:
                return bound, debug
        else:
            if _configuration() == seen:  # the same objects: compared by identity, fast
                return bound, debug
            current = _proxy.bind()
        enabled = getattr(current, "is_enabled_for", None)
        debug = is_configured() and (enabled is None or bool(enabled(logging.DEBUG)))
        caches = _proxy.bind() is current
        self._state = (None if caches else _configuration(), current, debug, _proxy)
        return current, debug

    @property
    def debug_enabled(self) -> bool:
        """Whether DEBUG events would go anywhere; callers skip building them otherwise."""
        if not is_configured():
            return False
        state = self._state
        # _resolve's fast path, inlined. A proxy that cached a logger returns it for good,
        # so the same proxy is the same logger, without asking it.
        if state[0] is None and state[3] is _proxy:
            return state[2]
        return self._resolve()[1]

    def debug(self, event: str, **fields: Any) -> None:
        if is_configured():
            bound, debug = self._resolve()
            if debug:
                bound.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._resolve()[0].info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._resolve()[0].warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._resolve()[0].error(event, **fields)


def _configuration() -> tuple[object, ...]:
    return (is_configured(), *get_config().values())


logger: Final = _Logger()


# -- observers: the metrics seam ------------------------------------------------------------

Observer = Callable[[str, Mapping[str, Any]], None]
"""Called with each event's name and fields, in the thread that emits it, whatever
structlog's configuration lets through. It must be quick and must not raise."""

_observers_lock = threading.Lock()


class _Observed(_Logger):
    """The logger while observers are registered: every event also goes to them, and the
    DEBUG events are built even when structlog would drop them.

    `add_observer` switches the logger's class to this one, and `remove_observer` back,
    so that with no observer the hot path runs exactly the code it runs without metrics.
    """

    __slots__ = ()
    observers: ClassVar[tuple[Observer, ...]] = ()

    @property
    def debug_enabled(self) -> bool:
        return True

    def _notify(self, event: str, fields: Mapping[str, Any]) -> None:
        for observer in self.observers:
            try:
                observer(event, fields)
            except Exception as exc:  # noqa: BLE001, PERF203 - an observer must not break accounting
                structlog.get_logger("aiobudget").error(
                    CALLBACK_FAILED, observer=repr(observer), crossing=event, error=repr(exc)
                )

    def debug(self, event: str, **fields: Any) -> None:
        self._notify(event, fields)
        super().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._notify(event, fields)
        super().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._notify(event, fields)
        super().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._notify(event, fields)
        super().error(event, **fields)


def add_observer(observer: Observer) -> None:
    """Call *observer* with every event aiobudget emits from now on (metrics use it)."""
    with _observers_lock:
        _Observed.observers = (*_Observed.observers, observer)
        logger.__class__ = _Observed


def remove_observer(observer: Observer) -> None:
    """Stop calling *observer*; once none is left, events cost what they cost before."""
    with _observers_lock:
        left = tuple(each for each in _Observed.observers if each != observer)
        _Observed.observers = left
        if not left:
            logger.__class__ = _Logger
