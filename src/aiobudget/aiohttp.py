"""aiohttp: every request reserves from its caller's budget, as middleware or per handler.

    app = web.Application(middlewares=[budget_middleware(budget_for, calls=1)])

    async def chat(request: web.Request) -> web.Response:
        reply = await llm(...)
        reservation(request).record(Usage.from_openai(reply), calls=1)
        return web.json_response(...)

`budget_middleware` finds the request's `Budget` on the server (``resolve``, a sync or
async callable of the request), reserves its amounts while the handler runs, and
settles when it returns; `reservation` gives the handler the entered `Reservation`.
`budgeted` guards one handler the same way, alone or inside the middleware
(`reservation` then gives the innermost). What is charged, the problem a denial answers
(a `BudgetDenied` with ``status_code``, 429 by default) and the headers are as in
`aiobudget.fastapi` (with ``resets_at`` for a budget with a period). A client that
disconnects refunds the reservation only when aiohttp cancels the handler, which it does
with ``handler_cancellation=True`` (``web.run_app`` or ``web.AppRunner``); otherwise the
handler runs to the end and what it used is charged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

from aiohttp import web

from ._budget import Budget
from ._errors import BudgetExhausted
from ._http import (
    PROBLEM_JSON,
    PROBLEM_TYPE,
    REMAINING_HEADER,
    check_options,
    denial,
    remaining_headers,
    resolve_budget,
    retry_after_value,
    settle_unrecorded,
)
from ._reservation import OnUnrecorded, Reservation, enter

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "PROBLEM_TYPE",
    "REMAINING_HEADER",
    "BudgetDenied",
    "budget_middleware",
    "budgeted",
    "reservation",
]

# aiohttp >= 3.14 wants typed request keys (a plain str key warns); older ones lack them.
_RequestKey: Any = getattr(web, "RequestKey", None)
_KEY: Final[Any] = (
    _RequestKey("aiobudget.reservation", Reservation)
    if _RequestKey is not None
    else "aiobudget.reservation"
)

Resolve = Callable[[web.Request], Budget | Awaitable[Budget]]
"""Finds the budget of a request, on the server side (by API key, tenant, user...)."""
RetryAfter = float | Callable[[web.Request], float | Awaitable[float | None] | None]
"""Seconds until a denied client may retry, or a callable of the request giving them."""


class BudgetDenied(web.HTTPError):
    """A request's budget cannot cover it: an aiohttp HTTP exception whose response is
    the RFC 9457 problem (``problem``, the body) with its headers.

    Raised rather than returned, so that an outer guard (the middleware around a
    ``@budgeted`` handler) sees a failed request and refunds its own reservation.
    """

    def __init__(
        self, *, status_code: int, problem: Mapping[str, Any], headers: Mapping[str, str]
    ) -> None:
        self.status_code = status_code  # read by HTTPException.__init__ as the status
        self.problem = dict(problem)
        super().__init__(
            headers=dict(headers), text=json.dumps(self.problem), content_type=PROBLEM_JSON
        )
        self.charset = None  # JSON is UTF-8 by definition; problem+json has no charset


def reservation(request: web.Request) -> Reservation:
    """The entered `Reservation` that the innermost budget guard holds for *request*."""
    found = request.get(_KEY)
    if not isinstance(found, Reservation):
        raise RuntimeError(
            "no budget guard holds a reservation for this request: add "
            "budget_middleware(...) to the app or decorate the handler with @budgeted(...)"
        )
    return found


def budget_middleware(
    resolve: Resolve,
    /,
    *,
    status_code: int = 429,
    timeout: float | None = None,
    headers: bool = True,
    retry_after: RetryAfter | None = None,
    on_unrecorded: OnUnrecorded = "charge",
    **amounts: int,
) -> Middleware:
    """Middleware that reserves *amounts* from each request's budget: see the module.

    *timeout* waits (seconds) for in-flight requests to give budget back before
    denying; *headers* adds ``X-Budget-Remaining-<dim>``; *retry_after* is sent with
    denials; *on_unrecorded* is what a request that records nothing is charged.
    """
    guard = _Guard(
        resolve,
        status_code=status_code,
        timeout=timeout,
        headers=headers,
        retry_after=retry_after,
        on_unrecorded=on_unrecorded,
        amounts=amounts,
    )

    @web.middleware
    async def aiobudget_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await guard(request, handler)

    return aiobudget_middleware


def budgeted(
    resolve: Resolve,
    /,
    *,
    status_code: int = 429,
    timeout: float | None = None,
    headers: bool = True,
    retry_after: RetryAfter | None = None,
    on_unrecorded: OnUnrecorded = "charge",
    **amounts: int,
) -> Callable[[Handler], Handler]:
    """Decorate one handler (``async def handler(request)``) as `budget_middleware`
    would guard it."""
    guard = _Guard(
        resolve,
        status_code=status_code,
        timeout=timeout,
        headers=headers,
        retry_after=retry_after,
        on_unrecorded=on_unrecorded,
        amounts=amounts,
    )

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            return await guard(request, handler)

        return guarded

    return decorate


@final
class _Guard:
    """The behaviour shared by the middleware and the decorator."""

    __slots__ = ("_options",)

    def __init__(
        self,
        resolve: Resolve,
        *,
        status_code: int,
        timeout: float | None,
        headers: bool,
        retry_after: RetryAfter | None,
        on_unrecorded: OnUnrecorded,
        amounts: Mapping[str, int],
    ) -> None:
        self._options = check_options(
            resolve,
            status_code=status_code,
            timeout=timeout,
            headers=headers,
            retry_after=retry_after,
            on_unrecorded=on_unrecorded,
            amounts=amounts,
        )

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        budget = await resolve_budget(self._options.resolve, request, refuse="a web.HTTPException")
        reservation = budget.reserve(self._options.amounts, timeout=self._options.timeout)
        try:
            await enter(reservation)
        except BudgetExhausted as exc:
            raise await self._denied(request, exc, budget) from exc
        async with reservation:  # held since enter() above: this only closes it, exactly once
            remaining = await budget.remaining() if self._options.headers else {}
            outer = request.get(_KEY)
            request[_KEY] = reservation
            try:
                response = await handler(request)
            finally:
                if outer is None:
                    del request[_KEY]
                else:
                    request[_KEY] = outer
            if not response.prepared:  # a streamed response has sent its headers already
                for name, value in remaining_headers(remaining).items():
                    # An inner guard (a @budgeted handler) has the later, truer view.
                    response.headers.setdefault(name, value)
            await settle_unrecorded(reservation, self._options.on_unrecorded)
        return response

    async def _denied(
        self, request: web.Request, exc: BudgetExhausted, budget: Budget
    ) -> BudgetDenied:
        problem, fields = denial(
            exc,
            status_code=self._options.status_code,
            retry_after=await retry_after_value(self._options.retry_after, request, exc, budget),
            headers=self._options.headers,
        )
        return BudgetDenied(status_code=self._options.status_code, problem=problem, headers=fields)
