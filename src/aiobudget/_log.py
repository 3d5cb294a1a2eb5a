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
from typing import Any, Final

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
    "OVER_REQUEST_LIMIT",
    "RELEASED",
    "RESERVED",
    "RESET",
    "SETTLED",
    "UNRECORDED",
    "WAITING",
    "WARN",
    "logger",
]

RESERVED: Final = "budget.reserved"
"""A reservation was made (DEBUG): ``amounts``."""
WAITING: Final = "budget.waiting"
"""A reservation joined the wait queue (DEBUG): ``amounts``, ``timeout``."""
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
LIMITS_UPDATED: Final = "budget.limits_updated"
"""The limits of a budget were changed (INFO): ``limits``."""
BACKEND_RETRY: Final = "budget.backend_retry"
"""A settle or release could not reach the store and is being retried (WARNING)."""
CALLBACK_FAILED: Final = "budget.callback_failed"
"""An ``on_warn`` or ``on_exhausted`` callback raised (ERROR); accounting was unaffected."""


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
        # on?), replaced whole so that no thread sees one logger with another's answer.
        self._state: tuple[tuple[object, ...] | None, Any, bool] = ((), None, False)

    def _resolve(self) -> tuple[Any, bool]:
        """The bound logger, and whether it lets DEBUG events through."""
        seen, bound, debug = self._state
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
        self._state = (None if caches else _configuration(), current, debug)
        return current, debug

    @property
    def debug_enabled(self) -> bool:
        """Whether DEBUG events would go anywhere; callers skip building them otherwise."""
        if not is_configured():
            return False
        state = self._state
        if state[0] is None and _proxy.bind() is state[1]:  # _resolve's fast path, inlined
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
