"""Which requests a waiting reservation holds back: only those that compete with it.

A waiter that does not fit holds back, at every level from its own budget up to the one
that refused it, the requests that compete with it: those that ask something of a
dimension it asks there (and any request allowed into headroom, which can fill a
dimension past what the waiter may use). Requests that ask nothing of what it waits for
pass at once; those that compete keep their turn behind it, first come first served.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from aiobudget import CALLS, TOKENS, Budget, BudgetExhausted, Limit, Reservation

from ._support import Worker, state

pytestmark = pytest.mark.anyio


async def hold(budget: Budget, **amounts: int) -> Reservation:
    """A reservation of *amounts* held outside any block, which the test expects to fit."""
    r = await budget.try_reserve(amounts)
    assert r is not None
    return r


def org_with_tenants() -> tuple[Budget, Budget, Budget, Budget]:
    """An org of 10 calls and three tenants with their own tokens."""
    org = Budget({CALLS: 10}, name="org")
    a, b, c = (org.child({TOKENS: 100}, name=name) for name in "abc")
    return org, a, b, c


class TestUnrelatedRequestsPass:
    async def test_a_tenant_asking_nothing_of_the_blocked_dimension_is_granted(self) -> None:
        """With a holding 8 of the org's 10 calls and b waiting for 5, c's reservation
        of tokens alone (0 calls) is granted at once, waiting or not."""
        org, a, b, c = org_with_tenants()
        holder = await hold(a, calls=8)
        waiter = Worker(b, "b", {CALLS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            assert waiter.outcome is None
            r = await c.try_reserve(tokens=5)
            assert r is not None
            await r.release()
            async with c.reserve(tokens=5) as r:
                r.record(tokens=3)
            async with c.reserve(tokens=5, timeout=math.inf) as r:
                r.record(tokens=2)
            assert waiter.outcome is None  # still b's turn at the org's calls
            await holder.release()
            await waiter.holding.wait()
            waiter.leave.set()
        assert "done" == waiter.outcome
        assert ({TOKENS: 5, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(c)
        assert ({CALLS: 0}, {CALLS: 0}) == await state(org)

    async def test_one_budget_a_request_for_another_dimension_passes(self) -> None:
        """In one budget, a waiter blocked on calls does not hold back a request for
        tokens alone."""
        budget = Budget({CALLS: 2, TOKENS: 100})
        holder = await hold(budget, calls=2)
        waiter = Worker(budget, "w", {CALLS: 1})
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            r = await budget.try_reserve(tokens=50)
            assert r is not None
            await r.release()
            await holder.release()
            await waiter.holding.wait()
            waiter.leave.set()
        assert "done" == waiter.outcome


class TestCompetitorsKeepTheirTurn:
    async def test_a_tenant_asking_the_blocked_dimension_queues(self) -> None:
        """c's request for 1 call would fit (8 + 1 <= 10) but b asked first: it is
        refused without waiting; a waiting request of c is served after b's."""
        _, a, b, c = org_with_tenants()
        holder = await hold(a, calls=8)
        first = Worker(b, "b", {CALLS: 5})
        second = Worker(c, "c", {CALLS: 6})
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await wait_all_tasks_blocked()
            with pytest.raises(BudgetExhausted, match="earlier waiting"):
                async with c.reserve(calls=1):
                    pytest.fail("the block must not run")
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            assert (None, None) == (first.outcome, second.outcome)
            await holder.release()
            await first.holding.wait()
            await wait_all_tasks_blocked()
            assert ("held", None) == (first.outcome, second.outcome)
            first.leave.set()
            await second.holding.wait()
            second.leave.set()
        assert ("done", "done") == (first.outcome, second.outcome)

    async def test_a_request_for_a_dimension_the_waiter_also_asks_queues(self) -> None:
        """A waiter blocked on calls that also asks tokens holds back requests for tokens:
        they compete with it for what it needs once calls are free."""
        budget = Budget({CALLS: 2, TOKENS: 100})
        holder = await hold(budget, calls=2)
        waiter = Worker(budget, "w", {CALLS: 1, TOKENS: 10})
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            assert await budget.try_reserve(tokens=50) is None
            await holder.release()
            await waiter.holding.wait()
            waiter.leave.set()
        assert "done" == waiter.outcome

    async def test_a_request_into_headroom_queues_whatever_it_asks(self) -> None:
        """A request allowed into headroom waits behind a waiter even for a dimension the
        waiter does not ask: it could leave that dimension past the waiter's cap."""
        budget = Budget({CALLS: 2, TOKENS: Limit(100, headroom=20)})
        holder = await hold(budget, calls=2)
        waiter = Worker(budget, "w", {CALLS: 1})
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            assert await budget.try_reserve(tokens=90, use_headroom=True) is None
            ordinary = await budget.try_reserve(tokens=50)
            assert ordinary is not None
            await ordinary.release()
            await holder.release()
            await waiter.holding.wait()
            waiter.leave.set()
        assert "done" == waiter.outcome

    async def test_a_waiter_holds_back_its_own_budget_below_the_refusing_level(self) -> None:
        """b's waiter, refused by the org, also keeps its place in b itself: a request of
        b's own dimension that would leave it no room waits behind it."""
        org = Budget({CALLS: 10}, name="org")
        b = org.child({"seats": 3}, name="b")
        holder = await hold(org, calls=8)
        waiter = Worker(b, "w", {CALLS: 5, "seats": 2})
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            assert await b.try_reserve(seats=2) is None  # would fit b, but w asked first
            other = org.child({"seats": 3}, name="other")
            r = await other.try_reserve(seats=3)  # another tenant's seats: no competition
            assert r is not None
            await r.release()
            await holder.release()
            await waiter.holding.wait()
            waiter.leave.set()
        assert "done" == waiter.outcome

    async def test_waiters_blocked_on_different_dimensions_do_not_wait_for_each_other(
        self,
    ) -> None:
        """One waiter blocked on calls and a later one blocked on tokens: each is granted
        as soon as its own dimension frees, whatever the other one's."""
        budget = Budget({CALLS: 2, TOKENS: 100})
        calls = await hold(budget, calls=2)
        tokens = await hold(budget, tokens=100)
        first = Worker(budget, "calls", {CALLS: 1})
        second = Worker(budget, "tokens", {TOKENS: 10})
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await wait_all_tasks_blocked()
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            assert (None, None) == (first.outcome, second.outcome)
            await tokens.release()  # the later waiter's dimension frees first
            await second.holding.wait()
            await wait_all_tasks_blocked()
            assert (None, "held") == (first.outcome, second.outcome)
            await calls.release()
            await first.holding.wait()
            first.leave.set()
            second.leave.set()
        assert ("done", "done") == (first.outcome, second.outcome)
