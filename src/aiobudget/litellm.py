"""LiteLLM calls that draw on a budget: a ``CustomLogger``.

    litellm.callbacks = [BudgetLogger(budget, pricing=pricing)]
    reply = await litellm.acompletion(model=..., messages=..., max_tokens=500)

Each call reserves its estimate in ``async_pre_call_deployment_hook`` (the SDK's last
hook before the provider request, whose exceptions propagate) or, on the proxy, in
``async_pre_call_hook``; a call that does not fit raises `BudgetExhausted` and is never
sent. It settles in ``async_log_success_event`` with the usage of the response and
LiteLLM's own ``response_cost`` (cache-aware), or in ``async_log_failure_event``.

LiteLLM runs those two callbacks in the background, shortly after the call returns,
and fires neither for a stream abandoned before its end. So the reservation stays held
until the callback comes, and a reservation whose callback never comes is refunded
after ``ttl`` seconds (600 by default). Meanwhile the budget counts it as reserved: a
tight budget refuses (or, with ``timeout=``, makes wait) calls that would fit once the
callback arrived. Importing this module imports LiteLLM (the ``aiobudget[litellm]``
extra); ``import aiobudget`` does not.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("aiobudget.litellm needs LiteLLM: pip install 'aiobudget[litellm]'") from exc

import anyio

from ._agents import BudgetSource, Estimator, Meter, ModelCall, Options, estimate_call, token_usage
from ._errors import InvalidAmount, ReservationClosed
from ._units import Usage

if TYPE_CHECKING:
    from ._reservation import Reservation

__all__ = ["DEFAULT_TTL", "BudgetLogger", "Estimator", "ModelCall", "estimate_call", "usage_of"]

DEFAULT_TTL: Final = 600.0
"""Seconds after which a call whose end LiteLLM never reported is refunded."""

_CALL_ID: Final = "litellm_call_id"
_now = time.monotonic  # when a call started, to forget those never reported


def _get(obj: object, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def usage_of(response: object) -> Usage | None:
    """The usage of a LiteLLM response (OpenAI style) as a `Usage` (cached input and reasoning
    tokens included, as `Usage.from_openai` reads them), or ``None`` when it counts nothing."""
    usage = _get(response, "usage")
    if usage is None or not (_get(usage, "prompt_tokens") or _get(usage, "completion_tokens")):
        return None
    try:
        return Usage.from_openai(usage)
    except InvalidAmount:  # a shape the reader refuses: the totals alone
        return token_usage(_get(usage, "prompt_tokens"), _get(usage, "completion_tokens"))


@final
class BudgetLogger(CustomLogger):
    """A LiteLLM ``CustomLogger`` that meters every call against a budget.

    ``BudgetLogger(budget, **options)``: *budget* is a `Budget`, or a callable of the
    call's keyword arguments (``model``, ``messages``, ``metadata``, ``user``...; sync
    or async) returning one. The options are those of every adapter (``tool_calls`` has
    nothing to count here: LiteLLM does not run tools), ``ttl`` defaulting to
    `DEFAULT_TTL`. Register it in ``litellm.callbacks`` (not ``success_callback``): only
    there does LiteLLM call its pre-call hook.
    """

    def __init__(self, budget: BudgetSource, /, **options: Any) -> None:
        options.setdefault("ttl", DEFAULT_TTL)
        super().__init__()
        self._meter = Meter(budget, Options(**options))
        self._held: dict[str, tuple[Reservation, float]] = {}
        # LiteLLM keeps one logger per class and public scalar attributes, and drops the
        # others silently: this id keeps a second BudgetLogger from being dropped.
        self.instance_id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"BudgetLogger({self._meter!r})"

    async def _reserve(self, kwargs: dict[str, Any]) -> None:
        call_id = kwargs.get(_CALL_ID)
        if call_id is None:  # LiteLLM keeps an id it is given
            call_id = kwargs[_CALL_ID] = str(uuid.uuid4())
        if call_id in self._held:  # the proxy's hook reserved it already
            return
        await self._expire()
        call = ModelCall(
            messages=kwargs.get("messages") or kwargs.get("input") or kwargs.get("prompt"),
            max_tokens=kwargs.get("max_tokens") or kwargs.get("max_completion_tokens"),
            model=kwargs.get("model"),
            tools=kwargs.get("tools"),
            context=kwargs,
        )
        held = await self._meter.before(call)
        self._held[str(call_id)] = (held, _now())

    async def _expire(self) -> None:
        """Forget the calls whose end never came within the time to live (the store
        refunded them, or does so now)."""
        ttl = self._meter.options.ttl
        if ttl is None:
            return
        now = _now()
        for call_id, (held, started) in list(self._held.items()):
            if now - started >= ttl:
                del self._held[call_id]
                # ReservationClosed: the store refunded it already.
                with anyio.CancelScope(shield=True), contextlib.suppress(ReservationClosed):
                    await held.release()

    async def _settle(self, kwargs: dict[str, Any], response: object) -> None:
        entry = self._held.pop(str(kwargs.get(_CALL_ID)), None)
        if entry is None:
            return
        meter = self._meter

        def actual() -> Usage | None:
            usage = usage_of(response)
            return None if usage is None else meter.actual(usage, kwargs.get("response_cost"))

        await meter.after(entry[0], actual)

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """Reserve the call's estimate (or raise `BudgetExhausted`) before it is sent."""
        await self._reserve(kwargs)
        return None

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """The proxy's hook: reserve as the SDK's does."""
        await self._reserve(data)
        return data

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Settle with the response's usage and LiteLLM's ``response_cost``."""
        await self._settle(kwargs, response_obj)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Settle a failed call: per ``on_unrecorded`` (usually nothing was billed)."""
        await self._settle(kwargs, None)
