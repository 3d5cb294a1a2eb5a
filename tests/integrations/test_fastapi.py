"""`aiobudget.fastapi`: SPEC "Integrations and tools", in process and on a real server.

In-process tests drive the app through httpx's ASGITransport; real-server tests run
uvicorn on a loopback port and talk to it with a real httpx client, with the budgets in
memory and in Redis. What happens when a client disconnects is in
``test_fastapi_disconnect.py``. FastAPI and uvicorn run on asyncio only, so these do too.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.
# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at
# runtime, and those defined inside tests name local dependencies.

import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from structlog.testing import capture_logs

import aiobudget
from aiobudget import (
    CALLS,
    TOKENS,
    Budget,
    BudgetExhausted,
    MemoryStore,
    Period,
    Reservation,
    Store,
)
from aiobudget.fastapi import (
    BudgetDenied,
    BudgetDependency,
    install_handlers,
    reservation,
)
from aiobudget.testing import ManualClock

from ._fastapi_apps import Finished, assert_problem, budget_app, client_for, serving, slow_app
from ._support import state

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """FastAPI and uvicorn run on asyncio only."""
    return "asyncio"


# -- in process -------------------------------------------------------------------------


class TestReservingPerRequest:
    async def test_the_endpoint_gets_the_entered_reservation(self) -> None:
        """The dependency yields a held reservation of its amounts."""
        budget = Budget({CALLS: 5, TOKENS: 100}, name="t")
        seen: list[Reservation] = []
        app = FastAPI()
        dep = BudgetDependency(lambda request: budget, calls=1, tokens=40)

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(dep)]) -> None:
            seen.append(held)
            assert ({CALLS: 0, TOKENS: 0}, {CALLS: 1, TOKENS: 40}) == await state(budget)

        async with client_for(app) as client:
            assert 200 == (await client.get("/")).status_code
        assert seen[0].budget is budget
        assert {CALLS: 1, TOKENS: 40} == seen[0].amounts

    async def test_a_request_that_records_nothing_is_charged_its_reservation(self) -> None:
        """By default a served request costs what it reserved: calls=1 is a quota."""
        budget = Budget({CALLS: 3}, name="t")
        async with client_for(budget_app(BudgetDependency(lambda r: budget, calls=1))) as client:
            codes = [(await client.get("/work")).status_code for _ in range(4)]
        assert [200, 200, 200, 429] == codes
        assert ({CALLS: 3}, {CALLS: 0}) == await state(budget)

    async def test_a_configured_charge_logs_no_unrecorded_warning(self) -> None:
        """Charging an unrecorded request is configured, not forgotten: no warning."""
        budget = Budget({CALLS: 3}, name="t")
        async with client_for(budget_app(BudgetDependency(lambda r: budget, calls=1))) as client:
            with capture_logs() as logs:
                await client.get("/work")
        assert [] == [e for e in logs if e["event"] == "budget.unrecorded"]

    @pytest.mark.parametrize("mode", ["refund", "release"])
    async def test_refund_mode_charges_nothing_unrecorded(
        self, mode: Literal["refund", "release"]
    ) -> None:
        """``on_unrecorded="refund"`` (or ``"release"``): the amounts only cap what is in
        flight."""
        budget = Budget({CALLS: 1}, name="t")
        dep = BudgetDependency(lambda r: budget, on_unrecorded=mode, calls=1)
        async with client_for(budget_app(dep)) as client:
            with capture_logs() as logs:
                codes = [(await client.get("/work")).status_code for _ in range(3)]
        assert [200, 200, 200] == codes
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)
        assert [] == [e for e in logs if e["event"] == "budget.unrecorded"]

    async def test_recorded_usage_is_charged_instead_of_the_reservation(self) -> None:
        """What the endpoint records is charged; the rest of the estimate comes back."""
        budget = Budget({CALLS: 10, TOKENS: 1_000}, name="t")
        dep = BudgetDependency(lambda r: budget, calls=1, tokens=400)
        async with client_for(budget_app(dep)) as client:
            assert 200 == (await client.get("/work", params={"tokens": 123})).status_code
        assert ({CALLS: 1, TOKENS: 123}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_a_failing_endpoint_is_refunded(self) -> None:
        """An endpoint that raises is charged nothing it did not record."""
        budget = Budget({CALLS: 1}, name="t")
        app = FastAPI()
        dep = BudgetDependency(lambda r: budget, calls=1)

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(dep)]) -> None:
            raise HTTPException(404, "nothing here")

        async with client_for(app) as client:
            assert 404 == (await client.get("/")).status_code
        assert ({CALLS: 0}, {CALLS: 0}) == await state(budget)

    async def test_an_async_resolver_is_awaited(self) -> None:
        """``resolve`` may be a coroutine function."""
        budget = Budget({CALLS: 1}, name="t")

        async def resolve(request: Request) -> Budget:
            await anyio.lowlevel.checkpoint()
            return budget

        async with client_for(budget_app(BudgetDependency(resolve, calls=1))) as client:
            assert 200 == (await client.get("/work")).status_code
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)

    async def test_a_resolver_that_returns_no_budget_is_an_error(self) -> None:
        """Anything but a Budget is a TypeError, never a request let through unmetered."""
        app = budget_app(BudgetDependency(lambda r: None, calls=1))  # type: ignore[arg-type,return-value]
        async with client_for(app) as client:
            with pytest.raises(TypeError, match="must return the request's Budget"):
                await client.get("/work")

    async def test_timeout_waits_for_budget_in_flight(self) -> None:
        """With ``timeout`` a request waits for in-flight budget instead of a 429."""
        budget = Budget({CALLS: 1}, name="t")
        dep = BudgetDependency(lambda r: budget, timeout=30, calls=1)
        responses: list[httpx.Response] = []
        async with client_for(budget_app(dep)) as client:
            held = await budget.try_reserve(calls=1)
            assert held is not None
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    responses.append(await client.get("/work"))

                tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                assert [] == responses  # waiting, not denied
                await held.release()
        assert [200] == [r.status_code for r in responses]

    async def test_it_shows_what_it_reserves(self) -> None:
        """``amounts`` and the repr show what each request reserves."""
        dep = BudgetDependency(lambda r: Budget({CALLS: 1}), calls=1, status_code=402)
        assert {CALLS: 1} == dep.amounts
        assert "<BudgetDependency {'calls': 1} status_code=402>" == repr(dep)

    async def test_bad_options_are_refused_at_construction(self) -> None:
        """Amounts, status, timeout and retry_after are checked when the dependency is
        built, not on the first request."""
        budget = Budget({CALLS: 1})
        with pytest.raises(aiobudget.InvalidAmount):
            BudgetDependency(lambda r: budget, calls=-1)
        with pytest.raises(aiobudget.InvalidLimits):
            BudgetDependency(lambda r: budget, **{"bad name": 1})
        with pytest.raises(ValueError, match="status_code"):
            BudgetDependency(lambda r: budget, status_code=200, calls=1)
        with pytest.raises(ValueError, match="timeout"):
            BudgetDependency(lambda r: budget, timeout=-1, calls=1)
        with pytest.raises(ValueError, match="retry_after"):
            BudgetDependency(lambda r: budget, retry_after=float("nan"), calls=1)
        with pytest.raises(ValueError, match="on_unrecorded"):
            BudgetDependency(lambda r: budget, on_unrecorded="maybe", calls=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            BudgetDependency(budget, calls=1)  # type: ignore[arg-type]

    @pytest.mark.parametrize("option", ["headers", "cancel_on_disconnect"])
    @pytest.mark.parametrize("value", ["false", 0, None])
    async def test_boolean_options_take_bools_only(self, option: str, value: object) -> None:
        """A truthy or falsy non-bool (``headers="false"``) is a TypeError, not a guess."""
        budget = Budget({CALLS: 1})
        with pytest.raises(TypeError, match=option):
            BudgetDependency(lambda r: budget, calls=1, **{option: value})  # type: ignore[arg-type]


class TestDenial:
    async def test_a_denial_is_a_problem_json_429(self) -> None:
        """A request that does not fit answers 429 with the problem body and headers."""
        budget = Budget({CALLS: 1}, name="alice")
        async with client_for(budget_app(BudgetDependency(lambda r: budget, calls=1))) as client:
            await client.get("/work")
            response = await client.get("/work")
        assert_problem(response, status=429, dim=CALLS, budget="alice")
        assert {"requested": 1, "remaining": 0} == {
            k: response.json()[k] for k in ("requested", "remaining")
        }
        assert "retry-after" not in response.headers  # nothing refills: no time is known

    async def test_the_status_is_configurable(self) -> None:
        """``status_code=402`` answers a paid quota's denial with 402."""
        budget = Budget({CALLS: 0}, name="alice")
        dep = BudgetDependency(lambda r: budget, status_code=402, calls=1)
        async with client_for(budget_app(dep)) as client:
            response = await client.get("/work")
        assert_problem(response, status=402, dim=CALLS, budget="alice")

    async def test_the_denied_dimension_is_named(self) -> None:
        """``dim`` is the dimension that does not fit, not the first one reserved."""
        budget = Budget({CALLS: 10, TOKENS: 100}, name="alice")
        dep = BudgetDependency(lambda r: budget, calls=1, tokens=500)
        async with client_for(budget_app(dep)) as client:
            response = await client.get("/work")
        assert_problem(response, status=429, dim=TOKENS, budget="alice")
        assert (500, 100) == (response.json()["requested"], response.json()["remaining"])

    async def test_a_child_budget_denial_names_the_level_that_said_no(self) -> None:
        """A denial by a parent names the parent, not the caller's own budget."""
        parent = Budget({CALLS: 1}, name="everyone")
        child = parent.child({CALLS: 5}, name="alice")
        parent_spent = await parent.charge(calls=1)
        assert not parent_spent.ok
        async with client_for(budget_app(BudgetDependency(lambda r: child, calls=1))) as client:
            response = await client.get("/work")
        assert_problem(response, status=429, dim=CALLS, budget="everyone")

    async def test_retry_after_is_sent_when_configured(self) -> None:
        """A configured ``retry_after`` becomes a Retry-After in whole seconds, rounded up."""
        budget = Budget({CALLS: 0}, name="t")
        dep = BudgetDependency(lambda r: budget, retry_after=59.2, calls=1)
        async with client_for(budget_app(dep)) as client:
            response = await client.get("/work")
        assert "60" == response.headers["retry-after"]

    async def test_retry_after_may_be_computed_per_request(self) -> None:
        """A callable (sync or async) computes Retry-After; ``None`` sends none."""
        budget = Budget({CALLS: 0}, name="t")

        async def until_reset(request: Request) -> float | None:
            return 3600 if request.query_params.get("tokens") == "1" else None

        dep = BudgetDependency(lambda r: budget, retry_after=until_reset, calls=1)
        sync_dep = BudgetDependency(lambda r: budget, retry_after=lambda r: 0.2, calls=1)
        async with client_for(budget_app(dep)) as client:
            known = await client.get("/work", params={"tokens": 1})
            unknown = await client.get("/work")
        async with client_for(budget_app(sync_dep)) as client:
            from_sync = await client.get("/work")
        assert "3600" == known.headers["retry-after"]
        assert "retry-after" not in unknown.headers
        assert "1" == from_sync.headers["retry-after"]

    async def test_headers_can_be_turned_off(self) -> None:
        """``headers=False`` sends no X-Budget-Remaining fields, on success or denial."""
        budget = Budget({CALLS: 1}, name="t")
        dep = BudgetDependency(lambda r: budget, headers=False, calls=1)
        async with client_for(budget_app(dep)) as client:
            ok = await client.get("/work")
            denied = await client.get("/work")
        assert (200, 429) == (ok.status_code, denied.status_code)
        assert not any(k.startswith("x-budget-") for k in {*ok.headers, *denied.headers})

    async def test_an_app_handler_for_budget_denied_is_kept(self) -> None:
        """The dependency registers its handler only where the app has none."""
        budget = Budget({CALLS: 0}, name="t")
        app = budget_app(BudgetDependency(lambda r: budget, calls=1))

        async def own(request: Request, exc: Exception) -> JSONResponse:
            assert isinstance(exc, BudgetDenied)
            return JSONResponse({"mine": exc.problem["dim"]}, status_code=exc.status_code)

        app.add_exception_handler(BudgetDenied, own)
        async with client_for(app) as client:
            response = await client.get("/work")
        assert (429, {"mine": CALLS}) == (response.status_code, response.json())

    async def test_install_handlers_answers_an_escaped_budget_exhausted(self) -> None:
        """After ``install_handlers(app)``, a BudgetExhausted from inside an endpoint (an
        inner reservation) is the same problem answer, and the outer one is refunded."""
        outer = Budget({CALLS: 5}, name="requests")
        inner = Budget({TOKENS: 10}, name="tokens")
        app = FastAPI()
        install_handlers(app, status_code=402)
        dep = BudgetDependency(lambda r: outer, calls=1)

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(dep)]) -> None:
            async with inner.reserve(tokens=50):
                pass  # pragma: no cover - the reservation does not fit

        async with client_for(app) as client:
            response = await client.get("/")
        assert_problem(response, status=402, dim=TOKENS, budget="tokens")
        assert ({CALLS: 0}, {CALLS: 0}) == await state(outer)


class TestPeriodDenial:
    """A denial on a budget with a period says when it resets (SPEC "Periods")."""

    async def test_resets_at_and_retry_after(self) -> None:
        """The problem carries resets_at (RFC 3339) and Retry-After the seconds until
        then, by the store's clock; after the boundary the request is served."""
        clock = ManualClock(datetime(2024, 6, 1, 23, 58, 59, 500_000, tzinfo=timezone.utc))
        budget = Budget(
            {CALLS: 1}, name="alice", store=MemoryStore(clock=clock), period=Period.daily()
        )
        async with client_for(budget_app(BudgetDependency(lambda r: budget, calls=1))) as client:
            await client.get("/work")
            denied = await client.get("/work")
            clock.advance(61)
            served = await client.get("/work")
        assert_problem(denied, status=429, dim=CALLS, budget="alice")
        assert "2024-06-02T00:00:00Z" == denied.json()["resets_at"]
        assert "61" == denied.headers["retry-after"]  # 60.5 s, rounded up
        assert 200 == served.status_code

    async def test_configured_retry_after_wins(self) -> None:
        """A configured retry_after replaces the computed one; a callable returning None
        sends none; resets_at is in the problem either way."""
        clock = ManualClock(datetime(2024, 6, 1, 12, tzinfo=timezone.utc))
        budget = Budget({CALLS: 0}, store=MemoryStore(clock=clock), period=Period.daily())
        fixed = BudgetDependency(lambda r: budget, retry_after=5, calls=1)
        none = BudgetDependency(lambda r: budget, retry_after=lambda r: None, calls=1)
        async with client_for(budget_app(fixed)) as client:
            five = await client.get("/work")
        async with client_for(budget_app(none)) as client:
            silent = await client.get("/work")
        assert "5" == five.headers["retry-after"]
        assert "retry-after" not in silent.headers
        assert ["2024-06-02T00:00:00Z"] * 2 == [r.json()["resets_at"] for r in (five, silent)]

    async def test_any_store(self, store: Store) -> None:
        """In memory and in Redis, Retry-After is at most the period and resets_at is when
        the window ends."""
        budget = Budget(
            {CALLS: 1}, name="p-" + uuid.uuid4().hex[:6], store=store, period=Period.every(3600)
        )
        await budget.charge(calls=1)
        async with client_for(budget_app(BudgetDependency(lambda r: budget, calls=1))) as client:
            denied = await client.get("/work")
        resets_at = (await budget.snapshot()).resets_at
        assert resets_at is not None
        assert resets_at.isoformat().replace("+00:00", "Z") == denied.json()["resets_at"]
        assert 0 < int(denied.headers["retry-after"]) <= 3600

    async def test_an_escaped_denial_says_when_too(self) -> None:
        """install_handlers answers an escaped BudgetExhausted of a budget with a period
        with resets_at and Retry-After as well."""
        inner = Budget({TOKENS: 10}, name="tokens", period=Period.every(600))
        app = FastAPI()
        install_handlers(app)

        @app.get("/")
        async def root() -> None:
            async with inner.reserve(tokens=50):
                pass  # pragma: no cover - the reservation does not fit

        async with client_for(app) as client:
            response = await client.get("/")
        assert "resets_at" in response.json()
        assert 0 < int(response.headers["retry-after"]) <= 600


class TestRemainingHeaders:
    async def test_every_dimension_reports_what_is_left(self) -> None:
        """A success carries X-Budget-Remaining-<dim>, this request's reservation held."""
        budget = Budget({CALLS: 10, TOKENS: 1_000}, name="t")
        dep = BudgetDependency(lambda r: budget, calls=1, tokens=300)
        async with client_for(budget_app(dep)) as client:
            first = await client.get("/work", params={"tokens": 100})
            second = await client.get("/work")
        assert ("9", "700") == (
            first.headers["x-budget-remaining-calls"],
            first.headers["x-budget-remaining-tokens"],
        )
        assert ("8", "600") == (
            second.headers["x-budget-remaining-calls"],
            second.headers["x-budget-remaining-tokens"],
        )


class TestRouterAndAppLevel:
    async def test_router_dependencies_reserve_for_every_route(self) -> None:
        """``APIRouter(dependencies=[Depends(dep)])`` guards each route; the endpoint
        reads the reservation through the `reservation` dependency."""
        budget = Budget({CALLS: 2, TOKENS: 100}, name="t")
        dep = BudgetDependency(lambda r: budget, calls=1)
        router = APIRouter(dependencies=[Depends(dep)])

        @router.get("/a")
        async def a(held: Annotated[Reservation, Depends(reservation)]) -> dict[str, int]:
            held.record(calls=1, tokens=7)
            return held.amounts

        @router.get("/b")
        async def b() -> None:
            pass

        app = FastAPI()
        app.include_router(router)
        async with client_for(app) as client:
            codes = [(await client.get(path)).status_code for path in ("/a", "/b", "/a")]
        assert [200, 200, 429] == codes
        assert ({CALLS: 2, TOKENS: 7}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_app_dependencies_reserve_for_every_route(self) -> None:
        """``FastAPI(dependencies=[Depends(dep)])`` guards the whole app."""
        budget = Budget({CALLS: 1}, name="t")
        app = FastAPI(dependencies=[Depends(BudgetDependency(lambda r: budget, calls=1))])

        @app.get("/")
        async def root() -> None:
            pass

        async with client_for(app) as client:
            codes = [(await client.get("/")).status_code for _ in range(2)]
        assert [200, 429] == codes

    async def test_naming_the_dependency_again_gives_the_same_reservation(self) -> None:
        """A router-level dependency named again in the endpoint runs once per request:
        one reservation, not two."""
        budget = Budget({CALLS: 2}, name="t")
        dep = BudgetDependency(lambda r: budget, calls=1)
        Metered = Annotated[Reservation, Depends(dep)]  # noqa: N806 - the reusable alias
        router = APIRouter(dependencies=[Depends(dep)])
        seen: list[Reservation] = []

        @router.get("/")
        async def root(held: Metered, again: Annotated[Reservation, Depends(reservation)]) -> None:
            seen.extend((held, again))
            assert ({CALLS: 0}, {CALLS: 1}) == await state(budget)

        app = FastAPI()
        app.include_router(router)
        async with client_for(app) as client:
            assert 200 == (await client.get("/")).status_code
        assert seen[0] is seen[1]
        assert ({CALLS: 1}, {CALLS: 0}) == await state(budget)

    async def test_two_guards_nest_and_reservation_gives_the_innermost(self) -> None:
        """An app-level budget and a route-level one both reserve; `reservation` gives
        the route's, and a denial by either answers the problem."""
        everyone = Budget({CALLS: 100}, name="everyone")
        tokens = Budget({TOKENS: 100}, name="tokens")
        app = FastAPI(dependencies=[Depends(BudgetDependency(lambda r: everyone, calls=1))])
        inner = BudgetDependency(lambda r: tokens, tokens=60)

        @app.get("/", dependencies=[Depends(inner)])
        async def root(held: Annotated[Reservation, Depends(reservation)]) -> None:
            assert held.budget is tokens

        async with client_for(app) as client:
            ok = await client.get("/")
            denied_while_held = None
            assert 200 == ok.status_code
            await tokens.charge(tokens=50)
            denied_while_held = await client.get("/")
        assert_problem(denied_while_held, status=429, dim=TOKENS, budget="tokens")
        # The outer reservation of the denied request was refunded: one call spent.
        assert ({CALLS: 1}, {CALLS: 0}) == await state(everyone)

    async def test_reservation_without_a_guard_is_an_error(self) -> None:
        """`reservation` on a route with no BudgetDependency says what is missing."""
        app = FastAPI()

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(reservation)]) -> None:
            pass  # pragma: no cover - the dependency fails

        async with client_for(app) as client:
            with pytest.raises(RuntimeError, match="no BudgetDependency"):
                await client.get("/")


# -- a real server ------------------------------------------------------------------------


class TestRealServer:
    async def test_200_concurrent_requests_against_50_calls(self, store: Store) -> None:
        """200 requests at once against 50 calls: exactly 50 are served, 150 get the
        documented 429 problem, and the ledger ends at 50 spent, 0 reserved."""
        budget = Budget({CALLS: 50}, name="tenant", store=store)
        release, all_denied = anyio.Event(), anyio.Event()
        app = FastAPI()
        dep = BudgetDependency(lambda r: budget, calls=1)

        @app.get("/work")
        async def work(held: Annotated[Reservation, Depends(dep)]) -> dict[str, bool]:
            await release.wait()
            return {"ok": True}

        responses: list[httpx.Response] = []
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        with anyio.fail_after(30):
            async with (
                serving(app) as url,
                httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client,
            ):

                async def one() -> None:
                    response = await client.get("/work")
                    responses.append(response)
                    if sum(r.status_code == 429 for r in responses) == 150:
                        all_denied.set()

                async with anyio.create_task_group() as tg:
                    for _ in range(200):
                        tg.start_soon(one)
                    await all_denied.wait()  # 50 are held in the endpoint meanwhile
                    assert ({CALLS: 0}, {CALLS: 50}) == await state(budget)
                    release.set()
        codes = [r.status_code for r in responses]
        assert (50, 150) == (codes.count(200), codes.count(429))
        for response in responses:
            if response.status_code == 429:
                assert_problem(response, status=429, dim=CALLS, budget="tenant")
                assert (1, 0) == (response.json()["requested"], response.json()["remaining"])
        assert ({CALLS: 50}, {CALLS: 0}) == await state(budget)

    async def test_a_client_that_disconnects_is_refunded(self, store: Store) -> None:
        """A real client gives up mid-request: the endpoint is cancelled and the budget
        shows nothing reserved and nothing spent."""
        budget = Budget({CALLS: 5, TOKENS: 1_000}, name="tenant", store=store)
        app, entered, ends = slow_app(budget)
        finished = Finished(app)
        with anyio.fail_after(30):
            async with serving(finished) as url:
                async with (
                    httpx.AsyncClient(base_url=url) as client,
                    anyio.create_task_group() as tg,
                ):
                    tg.start_soon(client.get, "/slow")
                    await entered.wait()
                    assert ({CALLS: 0, TOKENS: 0}, {CALLS: 1, TOKENS: 100}) == await state(budget)
                    tg.cancel_scope.cancel()  # the client gives up and closes its connection
                await finished.event.wait()
                assert ["cancelled"] == ends
                assert ({CALLS: 0, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(budget)

    async def test_two_api_keys_never_see_each_others_budget(self, store: Store) -> None:
        """The budget comes from the API key on the server: one key's exhaustion, headers
        and problem bodies never involve the other's, and no client input can pick a
        budget."""
        budgets = {
            "key-a": Budget({CALLS: 2}, name="tenant-a", store=store),
            "key-b": Budget({CALLS: 3}, name="tenant-b", store=store),
        }

        def budget_for(request: Request) -> Budget:
            key = request.headers.get("x-api-key", "")
            if key not in budgets:
                raise HTTPException(401, "unknown API key")
            return budgets[key]

        app = budget_app(BudgetDependency(budget_for, calls=1))
        with anyio.fail_after(30):
            async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:

                async def get(key: str) -> httpx.Response:
                    # A client naming the other tenant's budget changes nothing.
                    headers = {"x-api-key": key, "x-budget": "tenant-b"}
                    return await client.get("/work", headers=headers, params={"budget": "b"})

                a = [await get("key-a") for _ in range(3)]
                b = [await get("key-b") for _ in range(3)]
                unknown = await get("key-c")
        assert [200, 200, 429] == [r.status_code for r in a]
        assert ["1", "0"] == [r.headers["x-budget-remaining-calls"] for r in a[:2]]
        assert_problem(a[2], status=429, dim=CALLS, budget="tenant-a")
        assert [200, 200, 200] == [r.status_code for r in b]
        assert ["2", "1", "0"] == [r.headers["x-budget-remaining-calls"] for r in b]
        assert 401 == unknown.status_code
        assert ({CALLS: 2}, {CALLS: 0}) == await state(budgets["key-a"])
        assert ({CALLS: 3}, {CALLS: 0}) == await state(budgets["key-b"])


class TestBudgetExhaustedIsNotCaughtByTheDependency:
    async def test_an_inner_denial_without_handlers_is_the_apps_error(self) -> None:
        """Without `install_handlers`, a BudgetExhausted from the endpoint is not turned
        into a 429 behind the app's back; the request's reservation is still refunded."""
        outer = Budget({CALLS: 5}, name="requests")
        app = FastAPI()
        dep = BudgetDependency(lambda r: outer, calls=1)

        @app.get("/")
        async def root(held: Annotated[Reservation, Depends(dep)]) -> None:
            raise BudgetExhausted(dim=TOKENS, requested=5, remaining=0, budget="x")

        async with client_for(app) as client:
            with pytest.raises(BudgetExhausted):
                await client.get("/")
        assert ({CALLS: 0}, {CALLS: 0}) == await state(outer)
