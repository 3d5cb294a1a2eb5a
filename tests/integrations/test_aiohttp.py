"""`aiobudget.aiohttp`: SPEC "Integrations and tools", in process and on a real server.

In-process tests use aiohttp's test client; real-server tests run an `AppRunner` with a
`TCPSite` on a loopback port and talk to it with a real `ClientSession`, with the
budgets in memory and in Redis. aiohttp runs on asyncio only, so this module does too.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, Literal

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

import aiobudget
from aiobudget import CALLS, TOKENS, Budget, MemoryStore, Period, Reservation, Store
from aiobudget.aiohttp import PROBLEM_TYPE, budget_middleware, budgeted, reservation
from aiobudget.testing import ManualClock

from ._support import PROBLEM_JSON, state

pytestmark = pytest.mark.anyio

Handler = Any


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


# -- helpers ----------------------------------------------------------------------------


async def work(request: web.Request) -> web.Response:
    """A handler: ``?tokens=N`` records N tokens and a call; returns the reservation."""
    current = reservation(request)
    tokens = int(request.query.get("tokens", 0))
    if tokens:
        current.record(tokens=tokens, calls=1)
    return web.json_response({"reserved": current.amounts})


def guarded_app(*middlewares: Any) -> web.Application:
    app = web.Application(middlewares=list(middlewares))
    app.router.add_get("/work", work)
    return app


@asynccontextmanager
async def in_process(
    app: web.Application,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app)) as client:
        yield client


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Run *app* on a free loopback port (handlers cancelled on disconnect); yield its URL."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def assert_problem(
    response: aiohttp.ClientResponse, *, status: int, dim: str, budget: str
) -> dict[str, Any]:
    """*response* is the documented denial: status, media type, body, headers."""
    assert status == response.status
    assert PROBLEM_JSON == response.headers["Content-Type"]
    body: dict[str, Any] = await response.json(content_type=PROBLEM_JSON)
    assert {"type", "title", "status", "detail", "dim", "remaining", "requested", "budget"} <= set(
        body
    )
    assert PROBLEM_TYPE == body["type"]
    assert "Budget exhausted" == body["title"]
    assert status == body["status"]
    assert dim == body["dim"]
    assert budget == body["budget"]
    assert dim in body["detail"]
    assert str(body["remaining"]) == response.headers[f"X-Budget-Remaining-{dim}"]
    return body


# -- in process -------------------------------------------------------------------------


class TestMiddleware:
    async def test_the_handler_gets_the_entered_reservation(self) -> None:
        """`reservation(request)` is the held reservation of the middleware's amounts."""
        budget = Budget({CALLS: 5, TOKENS: 100}, name="t")
        seen: list[Reservation] = []

        async def handler(request: web.Request) -> web.Response:
            seen.append(reservation(request))
            assert ({CALLS: 0, TOKENS: 0}, {CALLS: 1, TOKENS: 40}) == await state(budget)
            return web.Response(text="ok")

        app = web.Application(middlewares=[budget_middleware(lambda r: budget, calls=1, tokens=40)])
        app.router.add_get("/", handler)
        async with in_process(app) as client:
            assert 200 == (await client.get("/")).status
        assert seen[0].budget is budget
        assert {CALLS: 1, TOKENS: 40} == seen[0].amounts

    async def test_a_request_that_records_nothing_is_charged_its_reservation(self) -> None:
        """By default a served request costs what it reserved: calls=1 is a quota."""
        budget = Budget({CALLS: 3}, name="t")
        app = guarded_app(budget_middleware(lambda r: budget, calls=1))
        async with in_process(app) as client:
            with capture_logs() as logs:
                codes = [(await client.get("/work")).status for _ in range(4)]
        assert [200, 200, 200, 429] == codes
        assert ({CALLS: 3}, {CALLS: 0}) == await state(budget)
        assert [] == [e for e in logs if e["event"] == "budget.unrecorded"]

    @pytest.mark.parametrize("mode", ["refund", "release"])
    async def test_refund_mode_charges_nothing_unrecorded(
        self, mode: Literal["refund", "release"]
    ) -> None:
        """``on_unrecorded="refund"`` (or ``"release"``): the amounts only cap what is in
        flight."""
        budget = Budget({CALLS: 1}, name="t")
        app = guarded_app(budget_middleware(lambda r: budget, on_unrecorded=mode, calls=1))
        async with in_process(app) as client:
            codes = [(await client.get("/work")).status for _ in range(3)]
        assert [200, 200, 200] == codes
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)

    async def test_recorded_usage_is_charged_instead_of_the_reservation(self) -> None:
        """What the handler records is charged; the rest of the estimate comes back."""
        budget = Budget({CALLS: 10, TOKENS: 1_000}, name="t")
        app = guarded_app(budget_middleware(lambda r: budget, calls=1, tokens=400))
        async with in_process(app) as client:
            assert 200 == (await client.get("/work", params={"tokens": 123})).status
        assert ({CALLS: 1, TOKENS: 123}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_a_raising_handler_is_refunded(self) -> None:
        """A handler that raises (an aiohttp HTTPException too) is charged nothing it did
        not record."""
        budget = Budget({CALLS: 1}, name="t")

        async def missing(request: web.Request) -> web.Response:
            raise web.HTTPNotFound

        app = web.Application(middlewares=[budget_middleware(lambda r: budget, calls=1)])
        app.router.add_get("/", missing)
        async with in_process(app) as client:
            assert 404 == (await client.get("/")).status
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)

    async def test_an_async_resolver_is_awaited(self) -> None:
        """``resolve`` may be a coroutine function, and may refuse a request."""
        budget = Budget({CALLS: 1}, name="t")

        async def resolve(request: web.Request) -> Budget:
            await anyio.lowlevel.checkpoint()
            if request.headers.get("X-API-Key") != "k":
                raise web.HTTPUnauthorized
            return budget

        async with in_process(guarded_app(budget_middleware(resolve, calls=1))) as client:
            assert 401 == (await client.get("/work")).status
            assert 200 == (await client.get("/work", headers={"X-API-Key": "k"})).status
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)

    async def test_a_resolver_that_returns_no_budget_is_an_error(self) -> None:
        """Anything but a Budget fails the request, never lets it through unmetered."""
        seen: list[BaseException] = []

        @web.middleware
        async def spy(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                response: web.StreamResponse = await handler(request)
            except TypeError as exc:
                seen.append(exc)
                return web.Response(status=500)
            return response  # pragma: no cover - the guard fails

        app = guarded_app(spy, budget_middleware(lambda r: None, calls=1))  # type: ignore[arg-type,return-value]
        async with in_process(app) as client:
            assert 500 == (await client.get("/work")).status
        assert "must return the request's Budget" in str(seen[0])

    async def test_timeout_waits_for_budget_in_flight(self) -> None:
        """With ``timeout`` a request waits for in-flight budget instead of a 429."""
        budget = Budget({CALLS: 1}, name="t")
        waiting = anyio.Event()

        async def resolve(request: web.Request) -> Budget:
            waiting.set()
            return budget

        app = guarded_app(budget_middleware(resolve, timeout=30, calls=1))
        statuses: list[int] = []
        async with in_process(app) as client:
            held = await budget.try_reserve(calls=1)
            assert held is not None
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    statuses.append((await client.get("/work")).status)

                tg.start_soon(call)
                await waiting.wait()
                await anyio.wait_all_tasks_blocked()
                assert [] == statuses  # waiting, not denied
                await held.release()
        assert [200] == statuses

    async def test_bad_options_are_refused_at_construction(self) -> None:
        """Amounts, status, timeout and retry_after are checked up front."""
        budget = Budget({CALLS: 1})
        with pytest.raises(aiobudget.InvalidAmount):
            budget_middleware(lambda r: budget, calls=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="status_code"):
            budget_middleware(lambda r: budget, status_code=302, calls=1)
        with pytest.raises(ValueError, match="timeout"):
            budgeted(lambda r: budget, timeout=float("nan"), calls=1)
        with pytest.raises(ValueError, match="retry_after"):
            budgeted(lambda r: budget, retry_after=-5, calls=1)
        with pytest.raises(ValueError, match="on_unrecorded"):
            budgeted(lambda r: budget, on_unrecorded="later", calls=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            budget_middleware(budget, calls=1)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["false", 0, None])
    async def test_headers_takes_bools_only(self, value: object) -> None:
        """A truthy or falsy non-bool (``headers="false"``) is a TypeError, not a guess."""
        budget = Budget({CALLS: 1})
        with pytest.raises(TypeError, match="headers"):
            budget_middleware(lambda r: budget, calls=1, headers=value)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="headers"):
            budgeted(lambda r: budget, calls=1, headers=value)  # type: ignore[arg-type]


class TestDenial:
    async def test_a_denial_is_a_problem_json_429(self) -> None:
        """A request that does not fit answers 429 with the problem body and headers."""
        budget = Budget({CALLS: 1}, name="alice")
        async with in_process(guarded_app(budget_middleware(lambda r: budget, calls=1))) as client:
            await client.get("/work")
            response = await client.get("/work")
            body = await assert_problem(response, status=429, dim=CALLS, budget="alice")
            assert "Retry-After" not in response.headers
        assert (1, 0) == (body["requested"], body["remaining"])

    async def test_the_status_is_configurable(self) -> None:
        """``status_code=402`` answers a paid quota's denial with 402."""
        budget = Budget({TOKENS: 10}, name="alice")
        app = guarded_app(budget_middleware(lambda r: budget, status_code=402, tokens=11))
        async with in_process(app) as client:
            response = await client.get("/work")
            await assert_problem(response, status=402, dim=TOKENS, budget="alice")

    async def test_retry_after_is_sent_when_configured(self) -> None:
        """A number, a sync or an async callable give Retry-After; ``None`` gives none."""
        budget = Budget({CALLS: 0}, name="t")

        async def later(request: web.Request) -> float | None:
            return 0.5 if "soon" in request.query else None

        apps = [
            guarded_app(budget_middleware(lambda r: budget, retry_after=120, calls=1)),
            guarded_app(budget_middleware(lambda r: budget, retry_after=lambda r: 7.1, calls=1)),
            guarded_app(budget_middleware(lambda r: budget, retry_after=later, calls=1)),
        ]
        seen = []
        for app, query in zip(apps, ["", "", "soon"], strict=True):
            async with in_process(app) as client:
                seen.append(
                    (await client.get("/work", params={query: ""})).headers.get("Retry-After")
                )
        async with in_process(apps[2]) as client:
            seen.append((await client.get("/work")).headers.get("Retry-After"))
        assert ["120", "8", "1", None] == seen

    async def test_headers_can_be_turned_off(self) -> None:
        """``headers=False`` sends no X-Budget-Remaining fields."""
        budget = Budget({CALLS: 1}, name="t")
        app = guarded_app(budget_middleware(lambda r: budget, headers=False, calls=1))
        async with in_process(app) as client:
            ok = await client.get("/work")
            denied = await client.get("/work")
        assert (200, 429) == (ok.status, denied.status)
        assert not any(k.lower().startswith("x-budget-") for k in {*ok.headers, *denied.headers})


class TestPeriodDenial:
    """A denial on a budget with a period says when it resets (SPEC "Periods")."""

    async def test_resets_at_and_retry_after(self) -> None:
        """The problem carries resets_at and Retry-After (by the store's clock), unless
        retry_after is configured; after the boundary the request is served."""
        clock = ManualClock(datetime(2024, 6, 1, 23, 59, tzinfo=timezone.utc))
        budget = Budget(
            {CALLS: 1}, name="alice", store=MemoryStore(clock=clock), period=Period.daily()
        )
        computed = guarded_app(budget_middleware(lambda r: budget, calls=1))
        fixed = guarded_app(budget_middleware(lambda r: budget, retry_after=3, calls=1))
        async with in_process(computed) as client:
            await client.get("/work")
            denied = await client.get("/work")
            body = await assert_problem(denied, status=429, dim=CALLS, budget="alice")
            assert ("2024-06-02T00:00:00Z", "60") == (
                body["resets_at"],
                denied.headers["Retry-After"],
            )
        async with in_process(fixed) as client:
            assert "3" == (await client.get("/work")).headers["Retry-After"]
            clock.advance(60)
            assert 200 == (await client.get("/work")).status

    async def test_any_store(self, store: Store) -> None:
        """In memory and in Redis, Retry-After is at most the period."""
        name = "p-" + uuid.uuid4().hex[:6]
        budget = Budget({CALLS: 1}, name=name, store=store, period=Period.every(3600))
        await budget.charge(calls=1)
        async with in_process(guarded_app(budget_middleware(lambda r: budget, calls=1))) as client:
            denied = await client.get("/work")
            body = await assert_problem(denied, status=429, dim=CALLS, budget=name)
            assert 0 < int(denied.headers["Retry-After"]) <= 3600
        assert body["resets_at"].endswith("Z")


class TestRemainingHeaders:
    async def test_every_dimension_reports_what_is_left(self) -> None:
        """A success carries X-Budget-Remaining-<dim>, this request's reservation held."""
        budget = Budget({CALLS: 10, TOKENS: 1_000}, name="t")
        app = guarded_app(budget_middleware(lambda r: budget, calls=1, tokens=300))
        async with in_process(app) as client:
            first = await client.get("/work", params={"tokens": 100})
            second = await client.get("/work")
        assert ("9", "700") == (
            first.headers["X-Budget-Remaining-calls"],
            first.headers["X-Budget-Remaining-tokens"],
        )
        assert ("8", "600") == (
            second.headers["X-Budget-Remaining-calls"],
            second.headers["X-Budget-Remaining-tokens"],
        )

    async def test_a_streamed_response_is_left_alone(self) -> None:
        """A response the handler streamed has sent its headers; it is served as is."""
        budget = Budget({CALLS: 10}, name="t")

        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"chunk")
            await response.write_eof()
            return response

        app = web.Application(middlewares=[budget_middleware(lambda r: budget, calls=1)])
        app.router.add_get("/", stream)
        async with in_process(app) as client:
            response = await client.get("/")
            assert (200, b"chunk") == (response.status, await response.read())
        assert "X-Budget-Remaining-calls" not in response.headers
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)


class TestPerHandler:
    async def test_budgeted_guards_one_handler(self) -> None:
        """``@budgeted(...)`` reserves for its handler only; other routes are free."""
        budget = Budget({TOKENS: 100}, name="t")

        @budgeted(lambda r: budget, tokens=60)
        async def expensive(request: web.Request) -> web.Response:
            return web.json_response(reservation(request).amounts)

        async def free(request: web.Request) -> web.Response:
            return web.Response(text="free")

        app = web.Application()
        app.router.add_get("/expensive", expensive)
        app.router.add_get("/free", free)
        async with in_process(app) as client:
            first = await client.get("/expensive")
            assert {TOKENS: 60} == await first.json()
            second = await client.get("/expensive")
            await assert_problem(second, status=429, dim=TOKENS, budget="t")
            assert 200 == (await client.get("/free")).status
        assert ({TOKENS: 60}, {TOKENS: 0}) == await state(budget)

    async def test_a_handler_inside_the_middleware_gets_the_innermost(self) -> None:
        """Middleware and decorator both reserve; `reservation` gives the decorator's in
        the handler and the middleware's again once the handler returned."""
        everyone = Budget({CALLS: 100}, name="everyone")
        tokens = Budget({TOKENS: 100}, name="tokens")
        after: list[Reservation] = []

        @budgeted(lambda r: tokens, tokens=60)
        async def handler(request: web.Request) -> web.Response:
            assert reservation(request).budget is tokens
            return web.Response()

        @web.middleware
        async def spy(request: web.Request, handler: Handler) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            after.append(reservation(request))
            return response

        app = web.Application(middlewares=[budget_middleware(lambda r: everyone, calls=1), spy])
        app.router.add_get("/", handler)
        async with in_process(app) as client:
            assert 200 == (await client.get("/")).status
            await tokens.charge(tokens=50)
            await assert_problem(await client.get("/"), status=429, dim=TOKENS, budget="tokens")
        assert after[0].budget is everyone
        # The denial is raised through the middleware, which refunds its own reservation.
        assert ({CALLS: 1}, {CALLS: 0}) == await state(everyone)

    async def test_the_innermost_guard_reports_what_is_left(self) -> None:
        """Middleware and decorator on one budget: the headers are the decorator's later
        view, with both reservations held."""
        budget = Budget({CALLS: 10, TOKENS: 1_000}, name="t")

        @budgeted(lambda r: budget, tokens=300)
        async def handler(request: web.Request) -> web.Response:
            return web.Response()

        app = web.Application(middlewares=[budget_middleware(lambda r: budget, calls=1)])
        app.router.add_get("/", handler)
        async with in_process(app) as client:
            response = await client.get("/")
        assert ("9", "700") == (
            response.headers["X-Budget-Remaining-calls"],
            response.headers["X-Budget-Remaining-tokens"],
        )

    async def test_reservation_without_a_guard_is_an_error(self) -> None:
        """`reservation` on an unguarded request says what is missing."""
        errors: list[str] = []

        async def handler(request: web.Request) -> web.Response:
            try:
                reservation(request)
            except RuntimeError as exc:
                errors.append(str(exc))
            return web.Response()

        app = web.Application()
        app.router.add_get("/", handler)
        async with in_process(app) as client:
            await client.get("/")
        assert "no budget guard" in errors[0]


# -- a real server ------------------------------------------------------------------------


class Finished:
    """Outermost middleware noting when each request has left the app."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self.event.set()


class TestRealServer:
    async def test_200_concurrent_requests_against_50_calls(self, store: Store) -> None:
        """200 requests at once against 50 calls: exactly 50 are served, 150 get the
        documented 429 problem, and the ledger ends at 50 spent, 0 reserved."""
        budget = Budget({CALLS: 50}, name="tenant", store=store)
        release, all_denied = anyio.Event(), anyio.Event()

        async def slow(request: web.Request) -> web.Response:
            await release.wait()
            return web.json_response({"ok": True})

        app = web.Application(middlewares=[budget_middleware(lambda r: budget, calls=1)])
        app.router.add_get("/work", slow)
        results: list[tuple[int, str, dict[str, Any], str | None]] = []
        with anyio.fail_after(30):
            async with (
                serving(app) as url,
                aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=0)) as session,
            ):

                async def one() -> None:
                    async with session.get("/work") as response:
                        body = await response.json(content_type=None)
                        results.append(
                            (
                                response.status,
                                response.content_type,
                                body,
                                response.headers.get("X-Budget-Remaining-calls"),
                            )
                        )
                    if sum(r[0] == 429 for r in results) == 150:
                        all_denied.set()

                async with anyio.create_task_group() as tg:
                    for _ in range(200):
                        tg.start_soon(one)
                    await all_denied.wait()  # 50 are held in the handler meanwhile
                    assert ({CALLS: 0}, {CALLS: 50}) == await state(budget)
                    release.set()
        statuses = [r[0] for r in results]
        assert (50, 150) == (statuses.count(200), statuses.count(429))
        for status, content_type, body, remaining in results:
            if status == 429:
                assert PROBLEM_JSON == content_type
                assert (CALLS, "tenant", 429, 1, 0) == (
                    body["dim"],
                    body["budget"],
                    body["status"],
                    body["requested"],
                    body["remaining"],
                )
                assert {"type", "title", "detail"} <= set(body)
                assert "0" == remaining
        assert ({CALLS: 50}, {CALLS: 0}) == await state(budget)

    async def test_a_client_that_disconnects_is_refunded(self, store: Store) -> None:
        """A real client gives up mid-request: aiohttp cancels the handler and the budget
        shows nothing reserved and nothing spent."""
        budget = Budget({CALLS: 5, TOKENS: 1_000}, name="tenant", store=store)
        entered = anyio.Event()
        ends: list[str] = []

        async def slow(request: web.Request) -> web.Response:
            entered.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                ends.append("cancelled")
                raise
            return web.Response()  # pragma: no cover - never reached

        finished = Finished()
        app = web.Application(
            middlewares=[
                finished.middleware,
                budget_middleware(lambda r: budget, calls=1, tokens=100),
            ]
        )
        app.router.add_get("/slow", slow)
        with anyio.fail_after(30):
            async with serving(app) as url:
                async with aiohttp.ClientSession(url) as session, anyio.create_task_group() as tg:
                    tg.start_soon(session.get, "/slow")
                    await entered.wait()
                    assert ({CALLS: 0, TOKENS: 0}, {CALLS: 1, TOKENS: 100}) == await state(budget)
                    tg.cancel_scope.cancel()  # the client gives up and drops the connection
                await finished.event.wait()
                assert ["cancelled"] == ends
                assert ({CALLS: 0, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_two_api_keys_never_see_each_others_budget(self, store: Store) -> None:
        """The budget comes from the API key on the server: one key's exhaustion, headers
        and problem bodies never involve the other's, and no client input picks a budget."""
        budgets = {
            "key-a": Budget({CALLS: 2}, name="tenant-a", store=store),
            "key-b": Budget({CALLS: 3}, name="tenant-b", store=store),
        }

        def budget_for(request: web.Request) -> Budget:
            key = request.headers.get("X-API-Key", "")
            if key not in budgets:
                raise web.HTTPUnauthorized(text="unknown API key")
            return budgets[key]

        app = guarded_app(budget_middleware(budget_for, calls=1))
        with anyio.fail_after(30):
            async with serving(app) as url, aiohttp.ClientSession(url) as session:

                async def get(key: str) -> tuple[int, str | None, dict[str, Any] | None]:
                    headers = {"X-API-Key": key, "X-Budget": "tenant-b"}  # ignored
                    async with session.get("/work", headers=headers, params={"budget": "b"}) as r:
                        body = await r.json(content_type=None) if r.status != 401 else None
                        return r.status, r.headers.get("X-Budget-Remaining-calls"), body

                a = [await get("key-a") for _ in range(3)]
                b = [await get("key-b") for _ in range(3)]
                unknown = await get("key-c")
        assert [(200, "1"), (200, "0"), (429, "0")] == [(s, h) for s, h, _ in a]
        denied = a[2][2]
        assert denied is not None
        assert ("tenant-a", CALLS) == (denied["budget"], denied["dim"])
        assert [(200, "2"), (200, "1"), (200, "0")] == [(s, h) for s, h, _ in b]
        assert 401 == unknown[0]
        assert ({CALLS: 2}, {CALLS: 0}) == await state(budgets["key-a"])
        assert ({CALLS: 3}, {CALLS: 0}) == await state(budgets["key-b"])
