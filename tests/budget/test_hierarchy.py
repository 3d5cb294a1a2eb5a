"""Child budgets: SPEC "budget.child(limits, name=...)".

Every operation on a child applies atomically and all-or-nothing to its whole parent
chain; a denial names the level and the dimension; dimensions a parent lacks are not
charged to it; siblings waiting on a shared parent are served as budget comes back.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
import random

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from aiobudget import (
    CALLS,
    COST,
    TOKENS,
    Budget,
    BudgetExceeded,
    BudgetExhausted,
    Limit,
    Status,
    Verdict,
)

from ._support import Worker, state

pytestmark = pytest.mark.anyio


def tree() -> tuple[Budget, Budget, Budget]:
    """org (tokens, cost) > team (tokens; cost inherited, unlimited) > user (tokens,
    calls, cost): calls is the user's alone."""
    org = Budget({TOKENS: 1_000, COST: 100}, name="org")
    team = org.child({TOKENS: 500}, name="team")
    user = team.child({TOKENS: 200, CALLS: 5, COST: 50}, name="user")
    return org, team, user


async def states(*budgets: Budget) -> list[tuple[dict[str, int], dict[str, int]]]:
    return [await state(budget) for budget in budgets]


class TestThreeLevels:
    async def test_a_reservation_holds_at_every_level(self) -> None:
        """A user's reservation is reserved at user, team and org, each on its own dims."""
        org, team, user = tree()
        async with user.reserve(tokens=150, calls=1, cost_micros=10):
            assert [
                ({TOKENS: 0, COST: 0}, {TOKENS: 150, COST: 10}),
                ({TOKENS: 0, COST: 0}, {TOKENS: 150, COST: 10}),
                ({TOKENS: 0, CALLS: 0, COST: 0}, {TOKENS: 150, CALLS: 1, COST: 10}),
            ] == await states(org, team, user)

    async def test_a_settle_applies_at_every_level(self) -> None:
        """The settle releases and charges at every level at once."""
        org, team, user = tree()
        async with user.reserve(tokens=150, calls=1, cost_micros=10) as r:
            r.record(tokens=90, calls=1, cost_micros=4)
        assert [
            ({TOKENS: 90, COST: 4}, {TOKENS: 0, COST: 0}),
            ({TOKENS: 90, COST: 4}, {TOKENS: 0, COST: 0}),
            ({TOKENS: 90, CALLS: 1, COST: 4}, {TOKENS: 0, CALLS: 0, COST: 0}),
        ] == await states(org, team, user)

    async def test_a_refund_applies_at_every_level(self) -> None:
        """An exception refunds at every level."""
        org, team, user = tree()
        with pytest.raises(RuntimeError):
            async with user.reserve(tokens=150, calls=1, cost_micros=10):
                raise RuntimeError
        assert [
            ({TOKENS: 0, COST: 0}, {TOKENS: 0, COST: 0}),
            ({TOKENS: 0, COST: 0}, {TOKENS: 0, COST: 0}),
            ({TOKENS: 0, CALLS: 0, COST: 0}, {TOKENS: 0, CALLS: 0, COST: 0}),
        ] == await states(org, team, user)

    async def test_a_charge_applies_at_every_level(self) -> None:
        """A child's charge is spent at every level."""
        org, team, user = tree()
        await user.charge(tokens=7, cost_micros=3, calls=2)
        assert [
            ({TOKENS: 7, COST: 3}, {TOKENS: 0, COST: 0}),
            ({TOKENS: 7, COST: 3}, {TOKENS: 0, COST: 0}),
            ({TOKENS: 7, CALLS: 2, COST: 3}, {TOKENS: 0, CALLS: 0, COST: 0}),
        ] == await states(org, team, user)

    async def test_parent_operations_leave_children_alone(self) -> None:
        """A parent's own charge and reservations are not seen by its children."""
        org, team, user = tree()
        await org.charge(tokens=100)
        async with org.reserve(tokens=50):
            assert [({TOKENS: 0, COST: 0},) * 2, ({TOKENS: 0, CALLS: 0, COST: 0},) * 2] == [
                await state(team),
                await state(user),
            ]
        assert ({TOKENS: 100, COST: 0}, {TOKENS: 0, COST: 0}) == await state(org)

    async def test_the_parent_use_narrows_the_child(self) -> None:
        """What the parent has used elsewhere is not available to the child."""
        org, _team, user = tree()
        await org.charge(tokens=900)
        assert await user.try_reserve(tokens=101) is None
        r = await user.try_reserve(tokens=100)
        assert r is not None
        await r.release()


class TestDenialNamesTheLevel:
    async def test_denied_by_the_middle_level(self) -> None:
        """A reservation that fits the user but not the team names the team."""
        org, team, user = tree()
        await team.charge(tokens=450)
        before = await states(org, team, user)
        with pytest.raises(BudgetExhausted) as info:
            async with user.reserve(tokens=60, calls=1):
                pytest.fail("the block must not run")
        assert ("team", TOKENS, 60, 50) == (
            info.value.budget,
            info.value.dim,
            info.value.requested,
            info.value.remaining,
        )
        assert before == await states(org, team, user)

    async def test_denied_by_the_root(self) -> None:
        """A reservation that fits user and team but not org's cost names org and cost."""
        org, team, user = tree()
        await org.charge(cost_micros=95)
        before = await states(org, team, user)
        with pytest.raises(BudgetExhausted) as info:
            async with user.reserve(tokens=10, cost_micros=6):
                pass
        assert ("org", COST) == (info.value.budget, info.value.dim)
        assert before == await states(org, team, user)

    async def test_denied_by_the_leaf(self) -> None:
        """A reservation above the user's own limit names the user."""
        org, team, user = tree()
        with pytest.raises(BudgetExhausted) as info:
            async with user.reserve(calls=6):
                pass
        assert ("user", CALLS) == (info.value.budget, info.value.dim)
        assert [({TOKENS: 0, COST: 0},) * 2] * 2 == [await state(org), await state(team)]

    async def test_strict_charge_refused_by_a_parent(self) -> None:
        """A strict charge that passes a parent's limit names it and changes no level."""
        org, team, user = tree()
        await team.charge(tokens=490)
        before = await states(org, team, user)
        with pytest.raises(BudgetExceeded) as info:
            await user.charge(tokens=11, strict=True)
        assert ("team", TOKENS, 500, 501) == (
            info.value.budget,
            info.value.dim,
            info.value.limit,
            info.value.attempted,
        )
        assert before == await states(org, team, user)

    async def test_try_reserve_denied_by_a_parent_returns_none(self) -> None:
        """try_reserve denied at a parent returns None and changes nothing."""
        org, team, user = tree()
        await org.charge(tokens=1_000)
        before = await states(org, team, user)
        assert await user.try_reserve(tokens=1) is None
        assert before == await states(org, team, user)


class TestDimensionsAParentLacks:
    async def test_not_charged_to_the_parent(self) -> None:
        """Dimensions the parent lacks are neither reserved nor spent there."""
        parent = Budget({TOKENS: 100}, name="p")
        child = parent.child({TOKENS: 50, CALLS: 3}, name="c")
        async with child.reserve(tokens=10, calls=3) as r:
            assert ({TOKENS: 0}, {TOKENS: 10}) == await state(parent)
            r.record(tokens=4, calls=3)
        assert ({TOKENS: 4}, {TOKENS: 0}) == await state(parent)
        assert ({TOKENS: 4, CALLS: 3}, {TOKENS: 0, CALLS: 0}) == await state(child)

    async def test_child_dims_the_parent_lacks_do_not_fill_it(self) -> None:
        """A child's own dimension never reaches a parent without it, however much."""
        parent = Budget({TOKENS: 1}, name="p")
        child = parent.child({CALLS: 3}, name="c")
        await parent.charge(tokens=1)  # the parent is exhausted on tokens...
        async with child.reserve(calls=3) as r:  # ...which does not concern calls
            r.record(calls=2)
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(parent)
        assert ({CALLS: 2, TOKENS: 0}, {CALLS: 0, TOKENS: 0}) == await state(child)

    async def test_a_child_inherits_the_parents_other_dims_without_a_limit(self) -> None:
        """A child counts the parent's dimensions it does not name, capped only by the
        parent: usage recorded on the child always reaches the parent's limits."""
        parent = Budget({TOKENS: 100, COST: 10}, name="p")
        child = parent.child({TOKENS: 50}, name="c")
        assert (TOKENS, COST) == child.dims
        async with child.reserve(tokens=5, cost_micros=10) as r:
            r.record(tokens=5, cost_micros=10)
        with pytest.raises(BudgetExhausted) as info:
            async with child.reserve(cost_micros=1):
                pass
        assert ("p", COST) == (info.value.budget, info.value.dim)
        assert ({TOKENS: 5, COST: 10}, {TOKENS: 0, COST: 0}) == await state(parent)

    async def test_parent_limits_still_apply_on_shared_dims(self) -> None:
        """A child whose limit is above its parent's is capped by the parent."""
        parent = Budget({TOKENS: 10}, name="p")
        child = parent.child({TOKENS: 1_000, CALLS: 5}, name="c")
        with pytest.raises(BudgetExhausted) as info:
            async with child.reserve(tokens=11):
                pass
        assert "p" == info.value.budget


class TestResetAndLimits:
    async def test_child_reset_leaves_the_parent_alone(self) -> None:
        """A child's reset zeroes its own spent, not its parent's."""
        parent = Budget({TOKENS: 100}, name="p")
        child = parent.child({TOKENS: 50}, name="c")
        await child.charge(tokens=20)
        await child.reset()
        assert ({TOKENS: 20}, {TOKENS: 0}) == await state(parent)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(child)

    async def test_parent_reset_leaves_children_alone(self) -> None:
        """A parent's reset zeroes its own spent, not its children's."""
        parent = Budget({TOKENS: 100}, name="p")
        child = parent.child({TOKENS: 50}, name="c")
        await child.charge(tokens=20)
        await parent.reset()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(parent)
        assert ({TOKENS: 20}, {TOKENS: 0}) == await state(child)

    async def test_a_forced_reset_in_memory_is_a_reset(self) -> None:
        """Nothing outside can damage a memory store: reset(force=True) is a reset, and
        live reservations stay counted."""
        budget = Budget({TOKENS: 100}, name="b")
        await budget.charge(tokens=30)
        async with budget.reserve(tokens=10) as r:
            await budget.reset(force=True)
            assert ({TOKENS: 0}, {TOKENS: 10}) == await state(budget)
            r.record(tokens=4)
        assert ({TOKENS: 4}, {TOKENS: 0}) == await state(budget)

    async def test_a_reservation_across_a_parent_reset(self) -> None:
        """A child reservation live across a parent reset stays counted and settles."""
        parent = Budget({TOKENS: 100}, name="p")
        child = parent.child({TOKENS: 50}, name="c")
        await parent.charge(tokens=30)
        async with child.reserve(tokens=40) as r:
            await parent.reset()
            assert ({TOKENS: 0}, {TOKENS: 40}) == await state(parent)
            r.record(tokens=5)
        assert ({TOKENS: 5}, {TOKENS: 0}) == await state(parent)
        assert ({TOKENS: 5}, {TOKENS: 0}) == await state(child)

    async def test_parent_set_limits_applies_to_children(self) -> None:
        """A parent's lower limit is felt by its child at once."""
        parent = Budget({TOKENS: 100}, name="p")
        child = parent.child({TOKENS: 100}, name="c")
        await parent.set_limits({TOKENS: 10})
        assert await child.try_reserve(tokens=11) is None
        r = await child.try_reserve(tokens=10)
        assert r is not None
        await r.release()

    async def test_parent_property(self) -> None:
        """A child knows its parent; a root has none."""
        org, team, user = tree()
        assert (None, org, team) == (org.parent, team.parent, user.parent)


class TestSiblings:
    async def test_a_sibling_waiting_on_the_parent_gets_it_when_another_settles(self) -> None:
        """A child waiting for its parent's budget gets it when a sibling settles."""
        parent = Budget({TOKENS: 100}, name="p")
        a = parent.child({TOKENS: 100}, name="a")
        b = parent.child({TOKENS: 100}, name="b")
        holder = await a.try_reserve(tokens=100)
        assert holder is not None
        worker = Worker(b, "b", {TOKENS: 50}, record={TOKENS: 20})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert worker.outcome is None
            holder.record(tokens=30)
            await holder.commit()
            await worker.holding.wait()
            assert ({TOKENS: 30}, {TOKENS: 50}) == await state(parent)
            worker.leave.set()
        assert ({TOKENS: 50}, {TOKENS: 0}) == await state(parent)
        assert ({TOKENS: 20}, {TOKENS: 0}) == await state(b)

    async def test_a_sibling_cannot_jump_a_waiter_on_the_parent(self) -> None:
        """While a child waits at the parent, a sibling cannot take the parent's room."""
        parent = Budget({TOKENS: 100}, name="p")
        a = parent.child({TOKENS: 100}, name="a")
        b = parent.child({TOKENS: 100}, name="b")
        c = parent.child({TOKENS: 100}, name="c")
        holder = await a.try_reserve(tokens=60)
        assert holder is not None
        worker = Worker(b, "b", {TOKENS: 70})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            assert await c.try_reserve(tokens=10) is None  # 40 free, but b waits first
            assert await parent.try_reserve(tokens=10) is None
            await holder.release()
            await worker.holding.wait()
            worker.leave.set()
        assert "done" == worker.outcome

    async def test_a_waiter_blocked_at_its_own_level_does_not_block_siblings(self) -> None:
        """A child waiting on its own limit does not hold its siblings back."""
        parent = Budget({TOKENS: 100}, name="p")
        a = parent.child({TOKENS: 10}, name="a")
        b = parent.child({TOKENS: 100}, name="b")
        holder = await a.try_reserve(tokens=10)
        assert holder is not None
        worker = Worker(a, "a2", {TOKENS: 5})
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await wait_all_tasks_blocked()
            r = await b.try_reserve(tokens=50)
            assert r is not None
            await r.release()
            await holder.release()
            await worker.holding.wait()
            worker.leave.set()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(parent)

    async def test_siblings_under_load(self) -> None:
        """Many tasks on three siblings: the parent is never overrun and ends consistent."""
        parent = Budget({TOKENS: 200}, name="p")
        children = [parent.child({TOKENS: 120}, name=f"c{i}") for i in range(3)]
        rng = random.Random(1170)
        recorded = [0, 0, 0]
        peak = 0

        async def work(i: int, seed: int) -> None:
            nonlocal peak
            local = random.Random(seed)
            for _ in range(20):
                amount = local.randrange(1, 60)
                try:
                    async with children[i].reserve(tokens=amount, timeout=math.inf) as r:
                        snapshot = await parent.snapshot()
                        peak = max(peak, snapshot.spent[TOKENS] + snapshot.reserved[TOKENS])
                        await checkpoint()
                        use = local.randrange(0, amount + 1)
                        r.record(tokens=use)
                        recorded[i] += use
                except BudgetExhausted:
                    await checkpoint()
                if local.random() < 0.02:
                    await parent.reset()

        async with anyio.create_task_group() as tg:
            for n in range(60):
                tg.start_soon(work, n % 3, rng.random())
        assert peak <= 200
        assert {TOKENS: 0} == dict((await parent.snapshot()).reserved)
        for child, total in zip(children, recorded):
            assert ({TOKENS: total}, {TOKENS: 0}) == await state(child)


class TestCallbacksOfTheRightLevel:
    async def test_each_level_gets_its_own_crossings(self) -> None:
        """A child's operation that crosses at the parent calls the parent's callback."""
        seen: list[tuple[str, str | None, Verdict]] = []
        parent = Budget(
            {TOKENS: Limit(100, warn=50)},
            name="p",
            on_warn=lambda n, v: seen.append(("p.warn", n, v)),
            on_exhausted=lambda n, v: seen.append(("p.exhausted", n, v)),
        )
        child = parent.child(
            {TOKENS: Limit(1_000, warn=60)},
            name="c",
            on_warn=lambda n, v: seen.append(("c.warn", n, v)),
        )
        await child.charge(tokens=55)
        await child.charge(tokens=10)
        await child.charge(tokens=35)
        assert [
            ("p.warn", "p", Verdict(Status.WARN, TOKENS)),
            ("c.warn", "c", Verdict(Status.WARN, TOKENS)),
            ("p.exhausted", "p", Verdict(Status.EXHAUSTED, TOKENS)),
        ] == seen

    @pytest.mark.parametrize("names", [(None, None), ("same", "same")])
    async def test_parent_callback_when_names_collide(
        self, names: tuple[str | None, str | None]
    ) -> None:
        """The parent's on_exhausted is called for the parent's crossing, whatever the names."""
        seen: list[str] = []
        parent = Budget({TOKENS: 10}, name=names[0], on_exhausted=lambda n, v: seen.append("p"))
        child = parent.child({TOKENS: 100}, name=names[1])
        await child.charge(tokens=10)
        assert ["p"] == seen
