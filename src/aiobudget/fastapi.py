"""FastAPI: every request reserves from its caller's budget, as a dependency.

    metered = BudgetDependency(budget_for, calls=1, tokens=4_000)
    Metered = Annotated[Reservation, Depends(metered)]

    @app.post("/chat")
    async def chat(prompt: Prompt, reservation: Metered) -> Answer:
        reply = await llm(prompt)
        reservation.record(Usage.from_openai(reply), calls=1)  # every dimension used
        return Answer(...)

A `BudgetDependency` finds the request's `Budget` on the server (``resolve``, a sync or
async callable of the `Request`), reserves its amounts for the request's lifetime,
gives the endpoint the entered `Reservation`, and settles when the endpoint is done.
What the endpoint records is charged (recording replaces the reservation, so record
every dimension used); a request that records nothing is charged its whole
reservation (``on_unrecorded="charge"``) or nothing (``"refund"``, ``"release"``); a
request that fails or is cancelled is charged only what it recorded.

A denial raises `BudgetDenied`, answered by `problem_response` with ``status_code``
(429) and an RFC 9457 ``application/problem+json`` body holding ``type``, ``title``,
``status``, ``detail``, ``dim``, ``requested``, ``remaining`` and ``budget`` (and
``resets_at`` for a budget with a `Period`); the first denial registers that handler
unless the app has one. Responses carry ``X-Budget-Remaining-<dim>`` (unless
``headers=False``; an endpoint that returns a `Response` itself loses them), and denials
``Retry-After``: the seconds until ``resets_at`` for a budget with a period, or what
*retry_after* gives.
A client that disconnects cancels the endpoint (FastAPI >= 0.121; the body is read
first to see it). For a router or app, use ``dependencies=[Depends(metered)]`` and
`reservation` in the endpoints. The FastAPI guide of the documentation explains why.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final, final

import anyio
from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from ._budget import Budget
from ._errors import BudgetExhausted
from ._http import (
    PROBLEM_JSON,
    PROBLEM_TYPE,
    REMAINING_HEADER,
    check_options,
    check_status,
    denial,
    remaining_headers,
    resolve_budget,
    retry_after_value,
    settle_unrecorded,
    until_reset,
)
from ._reservation import OnUnrecorded, Reservation, enter
from .kernel import check_flag

__all__ = [
    "PROBLEM_TYPE",
    "REMAINING_HEADER",
    "BudgetDenied",
    "BudgetDependency",
    "install_handlers",
    "problem_response",
    "reservation",
]

_SCOPE_KEY: Final = "aiobudget.reservation"
_HANDLERS_KEY: Final = "starlette.exception_handlers"
_FUNCTION_STACK_KEY: Final = "fastapi_function_astack"  # FastAPI >= 0.121: exits before sending
_CLIENT_CLOSED: Final = 499  # nginx's "client closed request"; nobody is left to read it

Resolve = Callable[[Request], Budget | Awaitable[Budget]]
"""Finds the budget of a request, on the server side (by API key, tenant, user...)."""
RetryAfter = float | Callable[[Request], float | Awaitable[float | None] | None]
"""Seconds until a denied client may retry, or a callable of the request giving them."""


class BudgetDenied(HTTPException):
    """A request's budget cannot cover it: answered as an RFC 9457 problem.

    ``problem`` is the JSON body; ``headers`` carry ``X-Budget-Remaining-<dim>`` and
    ``Retry-After`` when known. Handled by `problem_response`.
    """

    def __init__(
        self, *, status_code: int, problem: Mapping[str, Any], headers: Mapping[str, str]
    ) -> None:
        super().__init__(status_code=status_code, detail=problem["detail"], headers=dict(headers))
        self.problem = dict(problem)


async def problem_response(request: Request, exc: Exception) -> Response:
    """The ``application/problem+json`` answer to a `BudgetDenied` (an exception handler)."""
    if not isinstance(exc, BudgetDenied):  # pragma: no cover - registered for BudgetDenied only
        raise exc
    return JSONResponse(
        exc.problem, status_code=exc.status_code, headers=exc.headers, media_type=PROBLEM_JSON
    )


def install_handlers(app: Starlette, *, status_code: int = 429) -> None:
    """Register the problem answers on a FastAPI (or Starlette) *app*.

    `BudgetDenied` gets `problem_response` (the dependency also does this by itself on
    its first denial), and a `BudgetExhausted` that escapes an endpoint, e.g. from an
    inner ``budget.reserve(...)``, is answered the same way with *status_code*.
    """
    check_status(status_code)

    async def exhausted(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, BudgetExhausted):  # pragma: no cover - registered for it only
            raise exc
        denied = _denied(exc, status_code=status_code, retry_after=until_reset(exc), headers=True)
        return await problem_response(request, denied)

    app.add_exception_handler(BudgetDenied, problem_response)
    app.add_exception_handler(BudgetExhausted, exhausted)


def reservation(request: Request) -> Reservation:
    """The entered `Reservation` of the innermost `BudgetDependency` of *request*.

    A dependency itself: ``Annotated[Reservation, Depends(reservation)]`` in an endpoint
    of a router or app that has ``dependencies=[Depends(BudgetDependency(...))]``.
    """
    found = request.scope.get(_SCOPE_KEY)
    if not isinstance(found, Reservation):
        raise RuntimeError(
            "no BudgetDependency holds a reservation for this request: add "
            "Depends(BudgetDependency(...)) to the route, its router or the app"
        )
    return found


@final
class BudgetDependency:
    """A FastAPI dependency that reserves from the request's budget: see the module.

    ``Depends(BudgetDependency(resolve, calls=1, tokens=4_000))`` yields the entered
    `Reservation`. *timeout* waits (seconds) for in-flight requests to give budget back
    before denying; *headers* adds ``X-Budget-Remaining-<dim>``; *retry_after* is sent
    with denials; *on_unrecorded* is what a request that records nothing is charged
    (``"charge"``: its reservation, ``"refund"``: nothing); *cancel_on_disconnect*
    cancels the endpoint when the client goes away.
    """

    __slots__ = ("_cancel_on_disconnect", "_options")

    def __init__(
        self,
        resolve: Resolve,
        /,
        *,
        status_code: int = 429,
        timeout: float | None = None,
        headers: bool = True,
        retry_after: RetryAfter | None = None,
        on_unrecorded: OnUnrecorded = "charge",
        cancel_on_disconnect: bool = True,
        **amounts: int,
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
        self._cancel_on_disconnect = check_flag(cancel_on_disconnect, "cancel_on_disconnect")

    def __repr__(self) -> str:
        return f"<BudgetDependency {self._options.amounts} status_code={self._options.status_code}>"

    @property
    def amounts(self) -> dict[str, int]:
        """What each request reserves, by dimension."""
        return dict(self._options.amounts)

    async def __call__(self, request: Request, response: Response) -> AsyncIterator[Reservation]:
        budget = await resolve_budget(self._options.resolve, request, refuse="an HTTPException")
        reservation = budget.reserve(self._options.amounts, timeout=self._options.timeout)
        try:
            await enter(reservation)
        except BudgetExhausted as exc:
            denied = _denied(
                exc,
                status_code=self._options.status_code,
                retry_after=await retry_after_value(
                    self._options.retry_after, request, exc, budget
                ),
                headers=self._options.headers,
            )
            _register_handler(request)
            raise denied from exc
        async with reservation:  # held since enter() above: this only closes it, exactly once
            request.scope[_SCOPE_KEY] = reservation
            if self._options.headers:
                response.headers.update(remaining_headers(await budget.remaining()))
            function_stack = request.scope.get(_FUNCTION_STACK_KEY)
            if self._cancel_on_disconnect and isinstance(function_stack, AsyncExitStack):
                await _read_body(request)
                failure: BaseException | None = None
                watch = _Watch(request.receive)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch.run, tg.cancel_scope)
                    function_stack.callback(watch.stop)  # the endpoint is done: stop watching
                    try:
                        yield reservation
                    except BaseException as exc:  # noqa: BLE001 - raised again below
                        # Not let through the task group, which would wrap it in an
                        # ExceptionGroup that FastAPI's handlers do not recognise.
                        failure = exc
                    watch.stop()
                if failure is not None:
                    if watch.disconnected and isinstance(failure, anyio.get_cancelled_exc_class()):
                        raise HTTPException(_CLIENT_CLOSED, "client closed request") from failure
                    raise failure
            else:
                yield reservation
            await settle_unrecorded(reservation, self._options.on_unrecorded)


class _Watch:
    """Waits for ``http.disconnect`` and cancels the endpoint's scope when it comes."""

    __slots__ = ("_own", "_receive", "_stopped", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._own = anyio.CancelScope()
        self._stopped = False
        self.disconnected = False

    def stop(self) -> None:
        self._stopped = True
        self._own.cancel()

    def stopped(self) -> bool:
        return self._stopped

    async def run(self, work: anyio.CancelScope) -> None:
        with self._own:
            try:
                while not self.stopped():
                    message = await self._receive()
                    # A receive can return without suspending (the response is complete
                    # by the time this task first runs), so the cancelled scope alone
                    # would not stop us: the end of the response is no disconnect.
                    if self.stopped():
                        return
                    if message.get("type") == "http.disconnect":
                        self.disconnected = True
                        work.cancel()
                        return
            except Exception:  # noqa: BLE001 - a server whose receive fails cannot be
                return  # watched; the request then runs as if nobody watched it


async def _read_body(request: Request) -> None:
    """Read (and cache) the body, so that only the disconnect is left to receive."""
    try:
        await request.body()
    except RuntimeError:  # "Stream consumed": a form was parsed; nothing left to read
        pass
    except ClientDisconnect as exc:
        raise HTTPException(_CLIENT_CLOSED, "client closed request") from exc


def _denied(
    exc: BudgetExhausted, *, status_code: int, retry_after: str | None, headers: bool
) -> BudgetDenied:
    problem, fields = denial(exc, status_code=status_code, retry_after=retry_after, headers=headers)
    return BudgetDenied(status_code=status_code, problem=problem, headers=fields)


def _register_handler(request: Request) -> None:
    """Give the app's exception middleware a handler for `BudgetDenied`, once.

    Starlette's ExceptionMiddleware puts its (persistent) handler mapping in the scope;
    the handler is looked up there when the exception arrives. An application's own
    handler for `BudgetDenied` is kept. Without the mapping (another framework version),
    FastAPI's `HTTPException` handler answers with the same status and headers.
    """
    handlers = request.scope.get(_HANDLERS_KEY)
    if isinstance(handlers, tuple) and handlers and isinstance(handlers[0], dict):
        handlers[0].setdefault(BudgetDenied, problem_response)
