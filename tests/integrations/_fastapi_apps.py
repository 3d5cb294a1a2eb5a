"""FastAPI apps, clients and servers for the tests of `aiobudget.fastapi`."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at
# runtime.

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import httpx
import uvicorn
from fastapi import Depends, FastAPI

from aiobudget import Budget, Reservation
from aiobudget.fastapi import PROBLEM_TYPE, BudgetDependency

from ._support import PROBLEM_JSON


def client_for(app: Any) -> httpx.AsyncClient:
    """An httpx client talking to *app* in process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def budget_app(dep: BudgetDependency) -> FastAPI:
    """An app with ``GET /work`` guarded by *dep*; ``?tokens=N`` records N tokens."""
    app = FastAPI()

    @app.get("/work")
    async def work(
        reservation: Annotated[Reservation, Depends(dep)], tokens: int = 0
    ) -> dict[str, Any]:
        if tokens:
            reservation.record(tokens=tokens, calls=1)
        return {"reserved": reservation.amounts}

    return app


class Finished:
    """ASGI middleware that notes when the app has finished each HTTP request, so a
    test can wait for the dependency's exit (the settle) without sleeping."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.event = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.event.set()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Run *app* on uvicorn on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections queue from now on: no need to wait for startup
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


def assert_problem(response: httpx.Response, *, status: int, dim: str, budget: str) -> None:
    """*response* is the documented denial: status, media type, body, headers."""
    assert status == response.status_code
    assert PROBLEM_JSON == response.headers["content-type"]
    body = response.json()
    assert {"type", "title", "status", "detail", "dim", "remaining", "requested", "budget"} <= set(
        body
    )
    assert PROBLEM_TYPE == body["type"]
    assert "Budget exhausted" == body["title"]
    assert status == body["status"]
    assert dim == body["dim"]
    assert budget == body["budget"]
    assert dim in body["detail"]
    assert str(body["remaining"]) == response.headers[f"x-budget-remaining-{dim}"]


def slow_app(
    budget: Budget, *, record: int = 0, **options: Any
) -> tuple[FastAPI, anyio.Event, list[str]]:
    """An app whose ``/slow`` (GET or POST) reserves a call and 100 tokens from *budget*,
    records *record* tokens, sets the returned event, then waits forever; the list
    says "cancelled" once it was."""
    app = FastAPI()
    entered = anyio.Event()
    ends: list[str] = []
    dep = BudgetDependency(lambda r: budget, calls=1, tokens=100, **options)

    async def slow(reservation: Annotated[Reservation, Depends(dep)]) -> None:
        if record:
            reservation.record(calls=1, tokens=record)
        entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            ends.append("cancelled")
            raise

    app.get("/slow")(slow)
    app.post("/slow")(slow)
    return app, entered, ends
