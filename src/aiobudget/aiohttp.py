"""aiohttp: every request reserves from its caller's budget, as middleware or per handler.

    budgets = {"key-alice": Budget({CALLS: 1_000, TOKENS: 2_000_000}, name="alice")}

    def budget_for(request: web.Request) -> Budget:  # server side: the client names a key,
        key = request.headers.get("X-API-Key", "")   # never a budget
        if key not in budgets:
            raise web.HTTPUnauthorized(text="unknown API key")
        return budgets[key]

    app = web.Application(middlewares=[budget_middleware(budget_for, calls=1)])

    async def chat(request: web.Request) -> web.Response:
        reply = await llm(...)
        reservation(request).record(Usage.from_openai(reply), calls=1)
        return web.json_response(...)

`budget_middleware` resolves the request's `Budget` on the server (``resolve`` is a sync
or async callable of the request), reserves its amounts while the handler runs, and
settles when the handler returns; `reservation` gives a handler the entered
`Reservation`. `budgeted` does the same for one handler (``@budgeted(budget_for,
tokens=4_000)``), alone or inside the middleware (`reservation` then gives the innermost).

What the handler records is charged. A handler that returns without recording is charged
its whole reservation (``on_unrecorded="charge"``, so ``calls=1`` is a quota of served
requests) or nothing (``"refund"``); recording replaces the reservation, so record every
dimension used. A handler that raises (aiohttp's ``web.HTTPException`` responses
included) is charged only what it recorded.

A denial raises `BudgetDenied`, an aiohttp HTTP exception that answers ``status_code``
(429 by default) with the RFC 9457 problem described in `aiobudget.fastapi`
(``application/problem+json``; ``type``, ``title``, ``status``, ``detail``, ``dim``,
``requested``, ``remaining``, ``budget``); responses carry ``X-Budget-Remaining-<dim>``
and, when *retry_after* is given, ``Retry-After``, for the reasons given there.

A client that disconnects refunds the reservation when aiohttp cancels the handler,
which it does only when asked: ``web.run_app(app, handler_cancellation=True)`` or
``web.AppRunner(app, handler_cancellation=True)``. Without it the handler runs to the
end, and what it used is charged, because the work happened.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

from aiohttp import web

from ._budget import Budget
from ._errors import BudgetExhausted
from ._reservation import OnUnrecorded, Reservation
from .kernel import check_amount, check_dim

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

PROBLEM_TYPE: Final = "urn:aiobudget:budget-exhausted"
"""The ``type`` of the problem a denial answers (RFC 9457)."""
PROBLEM_JSON: Final = "application/problem+json"
REMAINING_HEADER: Final = "X-Budget-Remaining-"
"""Prefix of the per-dimension remaining-budget headers: ``X-Budget-Remaining-tokens``."""

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

    __slots__ = (
        "_amounts",
        "_headers",
        "_on_unrecorded",
        "_resolve",
        "_retry_after",
        "_status_code",
        "_timeout",
    )

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
        if not callable(resolve):
            raise TypeError(f"resolve must be a callable of the request, not {resolve!r}")
        if type(status_code) is not int or not 400 <= status_code <= 599:
            raise ValueError(
                f"status_code must be an HTTP error status (400-599), not {status_code!r}"
            )
        if timeout is not None and not (
            isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout >= 0
        ):
            raise ValueError(f"timeout must be a non-negative number of seconds, not {timeout!r}")
        if on_unrecorded not in ("charge", "refund"):
            raise ValueError(f"on_unrecorded must be 'charge' or 'refund', not {on_unrecorded!r}")
        if retry_after is not None and not callable(retry_after):
            _retry_seconds(retry_after)
        self._resolve = resolve
        self._amounts = {check_dim(dim): check_amount(value, dim) for dim, value in amounts.items()}
        self._status_code = status_code
        self._timeout = timeout
        self._headers = headers
        self._retry_after = retry_after
        self._on_unrecorded = on_unrecorded

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        budget = await self._budget(request)
        held = budget.reserve(self._amounts, timeout=self._timeout)
        try:
            await held.__aenter__()
        except BudgetExhausted as exc:
            raise await self._denied(request, exc) from exc
        async with held:  # entered above: this only closes it, exactly once
            remaining = await budget.remaining() if self._headers else {}
            outer = request.get(_KEY)
            request[_KEY] = held
            try:
                response = await handler(request)
            finally:
                if outer is None:
                    del request[_KEY]
                else:
                    request[_KEY] = outer
            if not response.prepared:  # a streamed response has sent its headers already
                for dim, value in remaining.items():
                    # An inner guard (a @budgeted handler) has the later, truer view.
                    response.headers.setdefault(REMAINING_HEADER + dim, str(value))
            if held.held and not held.has_recorded:
                # Configured, not forgotten: settled here rather than by the reservation's
                # own on_unrecorded, which would log budget.unrecorded for every request.
                if self._on_unrecorded == "charge":
                    held.record(held.amounts)
                else:
                    await held.release()
        return response

    async def _budget(self, request: web.Request) -> Budget:
        found = self._resolve(request)
        if inspect.isawaitable(found):
            found = await found
        if not isinstance(found, Budget):
            raise TypeError(
                f"resolve must return the request's Budget, not {found!r}; "
                "raise a web.HTTPException to refuse a request"
            )
        return found

    async def _denied(self, request: web.Request, exc: BudgetExhausted) -> BudgetDenied:
        status = self._status_code
        problem = {
            "type": PROBLEM_TYPE,
            "title": "Budget exhausted",
            "status": status,
            "detail": str(exc),
            "dim": exc.dim,
            "requested": exc.requested,
            "remaining": exc.remaining,
            "budget": exc.budget,
        }
        fields: dict[str, str] = {}
        if self._headers:
            fields[REMAINING_HEADER + exc.dim] = str(exc.remaining)
        retry_after = self._retry_after
        if callable(retry_after):
            seconds = retry_after(request)
            if inspect.isawaitable(seconds):
                seconds = await seconds
            if seconds is not None:
                fields["Retry-After"] = _retry_seconds(seconds)
        elif retry_after is not None:
            fields["Retry-After"] = _retry_seconds(retry_after)
        return BudgetDenied(status_code=status, problem=problem, headers=fields)


def _retry_seconds(value: object) -> str:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"retry_after must be a non-negative number of seconds, not {value!r}")
    return str(math.ceil(value))
