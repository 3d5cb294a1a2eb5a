"""`aiobudget.fastapi` when a client disconnects: the endpoint is cancelled, so its
reservation is refunded (or charged only what it recorded), and nothing else changes.

A hand-made ASGI exchange delivers the disconnect exactly when the test says so.
FastAPI runs on asyncio only, so these tests do too.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.
# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at
# runtime, and those defined inside tests name local dependencies.

import json
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Request

from aiobudget import CALLS, TOKENS, Budget, Reservation
from aiobudget.fastapi import BudgetDependency

from ._fastapi_apps import budget_app, client_for, slow_app
from ._support import state

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """FastAPI and uvicorn run on asyncio only."""
    return "asyncio"


# -- a client that goes away ------------------------------------------------------------


def http_scope(path: str, *, method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    """A minimal ASGI HTTP scope."""
    headers = [(b"host", b"test")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }


class Exchange:
    """One ASGI request whose client disconnects when the test says so."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.body_sent = False
        self.disconnect = anyio.Event()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


class TestClientDisconnect:
    async def test_a_disconnect_cancels_the_endpoint_and_refunds(self) -> None:
        """The client leaves mid-request: the endpoint is cancelled, nothing is spent,
        nothing stays reserved, and the app ends quietly (a 499 nobody reads)."""
        budget = Budget({CALLS: 5, TOKENS: 1_000}, name="t")
        app, entered, ends = slow_app(budget)
        exchange = Exchange()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, http_scope("/slow"), exchange.receive, exchange.send)
                await entered.wait()
                assert ({CALLS: 0, TOKENS: 0}, {CALLS: 1, TOKENS: 100}) == await state(budget)
                exchange.disconnect.set()
        assert ["cancelled"] == ends
        assert ({CALLS: 0, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(budget)
        assert 499 == exchange.status

    async def test_what_was_recorded_before_the_disconnect_is_charged(self) -> None:
        """Usage recorded before the client left happened: it is charged."""
        budget = Budget({CALLS: 5, TOKENS: 1_000}, name="t")
        app, entered, _ = slow_app(budget, record=42)
        exchange = Exchange()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, http_scope("/slow"), exchange.receive, exchange.send)
                await entered.wait()
                exchange.disconnect.set()
        assert ({CALLS: 1, TOKENS: 42}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_a_request_with_a_body_is_watched_too(self) -> None:
        """FastAPI read the JSON body before the dependency; the watch still sees the
        disconnect that follows it."""
        budget = Budget({CALLS: 5, TOKENS: 1_000}, name="t")
        app = FastAPI()
        entered = anyio.Event()
        dep = BudgetDependency(lambda r: budget, calls=1)

        @app.post("/echo")
        async def echo(payload: dict[str, int], held: Annotated[Reservation, Depends(dep)]) -> None:
            assert {"n": 1} == payload
            entered.set()
            await anyio.sleep_forever()

        exchange = Exchange(json.dumps({"n": 1}).encode())
        scope = http_scope("/echo", method="POST", body=exchange.body)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, scope, exchange.receive, exchange.send)
                await entered.wait()
                exchange.disconnect.set()
        assert ({CALLS: 0, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_the_endpoint_can_still_read_the_body_itself(self) -> None:
        """The watch reads the body first; the endpoint's own read gets the same bytes."""
        budget = Budget({CALLS: 5}, name="t")
        app = FastAPI()
        dep = BudgetDependency(lambda r: budget, calls=1)

        @app.post("/raw")
        async def raw(
            request: Request, held: Annotated[Reservation, Depends(dep)]
        ) -> dict[str, Any]:
            return {"body": (await request.body()).decode(), "json": await request.json()}

        async with client_for(app) as client:
            response = await client.post("/raw", content=b'{"a": 1}')
        assert {"body": '{"a": 1}', "json": {"a": 1}} == response.json()

    async def test_cancel_on_disconnect_can_be_turned_off(self) -> None:
        """``cancel_on_disconnect=False``: the endpoint runs on after the client left
        and what it does is charged."""
        budget = Budget({CALLS: 5}, name="t")
        app = FastAPI()
        entered, finish = anyio.Event(), anyio.Event()
        dep = BudgetDependency(lambda r: budget, calls=1, cancel_on_disconnect=False)

        @app.get("/slow")
        async def slow(held: Annotated[Reservation, Depends(dep)]) -> None:
            entered.set()
            await finish.wait()

        exchange = Exchange()
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, http_scope("/slow"), exchange.receive, exchange.send)
            await entered.wait()
            exchange.disconnect.set()
            await anyio.wait_all_tasks_blocked()
            assert ({CALLS: 0}, {CALLS: 1}) == await state(budget)
            finish.set()
        assert 200 == exchange.status
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)

    async def test_the_end_of_the_response_is_not_taken_for_a_disconnect(self) -> None:
        """After the response, ``receive`` answers http.disconnect; the watch has ended
        by then, so background tasks that run after the response are not cancelled."""
        budget = Budget({CALLS: 5}, name="t")
        app = FastAPI()
        ran: list[str] = []
        dep = BudgetDependency(lambda r: budget, calls=1)

        async def after() -> None:
            await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            ran.append("background")

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(dep)], tasks: BackgroundTasks) -> None:
            tasks.add_task(after)

        async with client_for(app) as client:
            assert 200 == (await client.get("/")).status_code
        assert ["background"] == ran
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)

    async def test_a_body_consumed_by_another_dependency_is_no_obstacle(self) -> None:
        """When an earlier dependency streamed the body away, the watch still sees the
        disconnect that follows."""
        budget = Budget({CALLS: 5}, name="t")
        app = FastAPI()
        entered = anyio.Event()
        dep = BudgetDependency(lambda r: budget, calls=1)

        async def drain(request: Request) -> None:
            async for _ in request.stream():
                pass

        @app.post("/", dependencies=[Depends(drain)])
        async def root(held: Annotated[Reservation, Depends(dep)]) -> None:
            entered.set()
            await anyio.sleep_forever()

        exchange = Exchange(b"data")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                scope = http_scope("/", method="POST", body=exchange.body)
                tg.start_soon(app, scope, exchange.receive, exchange.send)
                await entered.wait()
                exchange.disconnect.set()
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)

    async def test_a_client_gone_before_its_body_arrived_is_refunded(self) -> None:
        """The disconnect arrives while the dependency reads the body: 499, refunded."""
        budget = Budget({CALLS: 5}, name="t")
        app = budget_app(BudgetDependency(lambda r: budget, calls=1))
        exchange = Exchange()
        exchange.body_sent = True
        exchange.disconnect.set()
        with anyio.fail_after(10):
            await app(http_scope("/work"), exchange.receive, exchange.send)
        assert 499 == exchange.status
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)

    async def test_a_server_whose_receive_fails_is_not_watched(self) -> None:
        """If ``receive`` raises, the watch gives up and the request runs unwatched."""
        budget = Budget({CALLS: 5}, name="t")
        app = FastAPI()
        entered, finish = anyio.Event(), anyio.Event()
        dep = BudgetDependency(lambda r: budget, calls=1)

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(dep)]) -> None:
            entered.set()
            await finish.wait()

        exchange = Exchange()

        async def receive() -> dict[str, Any]:
            if not exchange.body_sent:
                return await exchange.receive()
            raise OSError("receive is broken")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, http_scope("/"), receive, exchange.send)
                await entered.wait()
                await anyio.wait_all_tasks_blocked()
                finish.set()
        assert 200 == exchange.status
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)

    async def test_a_cancelled_client_in_process_refunds(self) -> None:
        """In process, cancelling the client cancels the app with it: refunded."""
        budget = Budget({CALLS: 5, TOKENS: 1_000}, name="t")
        app, entered, ends = slow_app(budget)
        async with client_for(app) as client, anyio.create_task_group() as tg:
            tg.start_soon(client.get, "/slow")
            await entered.wait()
            tg.cancel_scope.cancel()
        assert ["cancelled"] == ends
        assert ({CALLS: 0, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(budget)
