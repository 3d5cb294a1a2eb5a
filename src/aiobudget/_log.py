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

# structlog's private configuration record: read (never written) only to notice that the
# application reconfigured logging, so the resolved logger can be cached between calls.
# Resolving through the lazy proxy on every call costs microseconds per reservation.
from structlog import _config as _structlog_config

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
``action`` (``refund`` or ``charge``)."""
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


class _Logger:
    """structlog's ``get_logger("aiobudget")``, resolved once per configuration."""

    __slots__ = (
        "_bound",
        "_configured",
        "_context",
        "_debug",
        "_factory",
        "_processors",
        "_wrapper",
    )

    def __init__(self) -> None:
        self._processors: object = None
        self._wrapper: object = None
        self._factory: object = None
        self._context: object = None
        self._configured: object = None
        self._bound: Any = None
        self._debug = False

    def _current(self) -> Any:
        config = _structlog_config._CONFIG
        if (
            config.default_processors is self._processors
            and config.default_wrapper_class is self._wrapper
            and config.logger_factory is self._factory
            and config.default_context_class is self._context
            and config.is_configured is self._configured
        ):
            return self._bound
        bound = structlog.get_logger("aiobudget").bind()
        enabled = getattr(bound, "is_enabled_for", None)
        self._debug = config.is_configured and (enabled is None or enabled(logging.DEBUG))
        self._bound = bound
        self._processors = config.default_processors
        self._wrapper = config.default_wrapper_class
        self._factory = config.logger_factory
        self._context = config.default_context_class
        self._configured = config.is_configured
        return bound

    @property
    def debug_enabled(self) -> bool:
        """Whether DEBUG events would go anywhere; callers skip building them otherwise."""
        # Only these three settings decide it (processors and context do not), and this
        # is read once per reservation: compare them alone.
        config = _structlog_config._CONFIG
        if (
            config.is_configured is not self._configured
            or config.default_wrapper_class is not self._wrapper
            or config.logger_factory is not self._factory
        ):
            self._current()
        return self._debug

    def debug(self, event: str, **fields: Any) -> None:
        bound = self._current()
        if self._debug:
            bound.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._current().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._current().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._current().error(event, **fields)


logger: Final = _Logger()
