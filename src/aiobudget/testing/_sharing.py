"""Conformance checks: budgets shared by name, children, waiting, concurrency, crossings
and the seed adapters."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio

from .._budget import Budget
from .._errors import (
    BudgetExceeded,
    BudgetExhausted,
)
from ..kernel import Limit, Verdict
from ..protocols import BudgetGuard, TokenBudget
from ._harness import (
    GRANTED,
    TIMEOUT,
    WAIT,
    Raises,
    StoreFactory,
    Waiter,
    equal,
    exhausted_at,
    expect_counters,
    fail,
    held_reservation,
    new_budget,
    new_store,
    register,
    unique_name,
    warn_at,
)

if TYPE_CHECKING:
    from collections.abc import Mapping


@register
async def children_apply_to_every_level(make_store: StoreFactory) -> None:
    """A child's operations apply atomically to its whole chain (2 and 3 levels), a denial
    names the level and dimension, and dimensions a parent lacks are not charged to it.
    """
    store = await new_store(make_store)
    root_name = unique_name("root")
    root = Budget({"tokens": 1000, "calls": 100}, name=root_name, store=store)
    mid = root.child({"tokens": 100, "calls": 10}, name="mid")
    leaf = mid.child({"tokens": 50, "images": 5}, name="leaf")  # parents lack images
    levels = (("leaf", leaf), ("mid", mid), ("root", root))

    async def expect(what: str, spent: Mapping[str, int], reserved: Mapping[str, int]) -> None:
        for level, budget in levels:
            own_spent = {dim: spent.get(dim, 0) for dim in budget.dims}
            own_reserved = {dim: reserved.get(dim, 0) for dim in budget.dims}
            await expect_counters(
                budget, f"{what}, at {level}", spent=own_spent, reserved=own_reserved
            )

    async with mid.reserve(tokens=5, calls=1) as two_levels:
        await expect_counters(
            root, "a 2-level reservation, at root", reserved={"tokens": 5, "calls": 1}
        )
        two_levels.record(calls=1)
    await expect_counters(root, "after a 2-level settle", spent={"calls": 1})
    await expect_counters(mid, "after a 2-level settle", spent={"calls": 1})
    await root.reset()
    await mid.reset()
    async with leaf.reserve(tokens=20, images=2) as r:
        await expect("a 3-level reservation", {}, {"tokens": 20, "images": 2})
        r.record(tokens=15, images=1)
    await expect("after a 3-level settle", {"tokens": 15, "images": 1}, {})
    await leaf.charge(tokens=5, images=1)
    await expect("after a 3-level charge", {"tokens": 20, "images": 2}, {})
    spent = {"leaf": 20, "mid": 20, "root": 20}

    async def denied(tokens: int, level: str, budget_name: str) -> None:
        with Raises(BudgetExhausted, f"a leaf reservation that {level} cannot hold") as caught:
            async with leaf.reserve(tokens=tokens):
                fail(f"a reservation that does not fit at {level} was entered")
        equal(f"the level named by a denial at {level}", budget_name, caught.error.budget)
        equal(f"the dimension named by a denial at {level}", "tokens", caught.error.dim)
        for name, budget in levels:
            await expect_counters(
                budget,
                f"after a denial at {level}, at {name}",
                spent={"tokens": spent[name], "images": 2},
            )

    await denied(31, "leaf", "leaf")  # leaf: 20 + 31 > 50
    await mid.charge(tokens=70)
    spent["mid"] = spent["root"] = 90
    await denied(11, "mid", "mid")  # leaf: 31 <= 50; mid: 90 + 11 > 100
    await root.charge(tokens=905)
    spent["root"] = 995
    await denied(8, "root", root_name)  # leaf: 28, mid: 98; root: 995 + 8 > 1000
    with Raises(BudgetExceeded, "a strict leaf charge the root cannot hold") as exceeded:
        await leaf.charge(tokens=8, strict=True)
    equal("BudgetExceeded.budget", root_name, exceeded.error.budget)
    equal("BudgetExceeded.attempted", 1003, exceeded.error.attempted)
    await leaf.reset()
    await expect_counters(leaf, "the leaf after its reset()")
    await expect_counters(mid, "mid after the leaf's reset()", spent={"tokens": spent["mid"]})


# -- waiting ------------------------------------------------------------------------------


@register
async def waiting_reservation_is_granted_when_budget_is_freed(make_store: StoreFactory) -> None:
    """A reservation with a timeout waits while live reservations hold the budget and is
    granted once one settles.
    """
    budget = await new_budget(make_store, {"tokens": 10}, "granted")
    holder = await held_reservation(budget, "the holder", tokens=8)
    waiter = Waiter(budget, {"tokens": 5}, timeout=WAIT, record={"tokens": 5})
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        early = waiter.outcome
        holder.record(tokens=3)
        await holder.commit()  # 3 spent + 5 asked fit in 10
        with anyio.move_on_after(WAIT):
            await waiter.done.wait()
        tg.cancel_scope.cancel()
    if early is not None:
        fail(f"a reservation that did not fit yet was {early} instead of waiting")
    if waiter.outcome != GRANTED:
        fail(f"{WAIT} s after budget was freed, a waiting reservation was {waiter}")
    await expect_counters(budget, "after the waiter settled", spent={"tokens": 8})


@register
async def waiting_fails_at_once_when_spent_rules_it_out(make_store: StoreFactory) -> None:
    """A waiting reservation that spent alone rules out, at any level, fails at once with
    BudgetExhausted.
    """
    budget = await new_budget(make_store, {"tokens": 10}, "impossible")
    await budget.charge(tokens=8)
    child = budget.child({"tokens": 10}, name="child")
    for what, target in (("the budget", budget), ("a child of it", child)):
        with anyio.move_on_after(WAIT) as guard:
            with Raises(BudgetExhausted, f"waiting on {what} for what spent rules out"):
                async with target.reserve(tokens=5, timeout=math.inf):
                    fail(f"a reservation on {what} that cannot fit was entered")
        if guard.cancelled_caught:
            fail(f"a reservation on {what} that spent rules out waited instead of failing")
    await expect_counters(budget, "after the refusals", spent={"tokens": 8})
    await expect_counters(child, "the child after the refusals")


@register
async def waiting_times_out(make_store: StoreFactory) -> None:
    """A waiting reservation that does not fit before its timeout raises BudgetExhausted,
    leaves nothing held, and blocks nobody after.
    """
    budget = await new_budget(make_store, {"tokens": 10}, "timeout")
    holder = await held_reservation(budget, "the holder", tokens=8)
    start = anyio.current_time()
    with Raises(BudgetExhausted, f"waiting {TIMEOUT} s for budget nobody frees"):
        async with budget.reserve(tokens=5, timeout=TIMEOUT):
            fail("a reservation that does not fit was entered")
    elapsed = anyio.current_time() - start
    if elapsed < TIMEOUT * 0.8:
        fail(f"a reservation with timeout={TIMEOUT} gave up after {elapsed:.3f} s")
    await expect_counters(budget, "after the timeout", reserved={"tokens": 8})
    small = await held_reservation(budget, "a reservation after a waiter timed out", tokens=2)
    await small.release()
    await holder.release()
    await expect_counters(budget, "after every release")


@register
async def waiters_are_served_first_come_first_served(make_store: StoreFactory) -> None:
    """While a large reservation waits, smaller ones that would fit do not overtake it, and
    it is granted once enough is freed.
    """
    budget = await new_budget(make_store, {"tokens": 10}, "fifo")
    holder = await held_reservation(budget, "the holder", tokens=6)
    large = Waiter(budget, {"tokens": 10}, timeout=WAIT)
    overtook = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(large.run)
        await anyio.wait_all_tasks_blocked()
        # A store that queues through a server may need a moment to register the waiter:
        # small requests may pass until then, but must be refused once it is queued.
        for _ in range(20):
            small = await budget.try_reserve(tokens=1)
            if small is None:
                break
            overtook += 1
            await small.release()
            await anyio.sleep(0.01)
        refused = small is None
        await holder.release()
        with anyio.move_on_after(WAIT):
            await large.done.wait()
        tg.cancel_scope.cancel()
    if not refused:
        fail(f"{overtook} small reservations overtook a waiting large one")
    if large.outcome != GRANTED:
        fail(f"once the budget was free, a waiting large reservation was {large}")
    await expect_counters(budget, "after the large reservation was refunded")


@register
async def a_waiter_holds_back_only_requests_that_compete_with_it(
    make_store: StoreFactory,
) -> None:
    """A waiting reservation holds back later requests that ask something of a dimension
    it asks, and no others: one tenant waiting for calls does not stall another tenant
    of the same organisation asking only for tokens.
    """
    org = await new_budget(make_store, {"calls": 10, "tokens": 100}, "competing")
    a, b, c = (org.child({"calls": 10, "tokens": 100}, name=name) for name in "abc")
    holder = await held_reservation(a, "tenant a's reservation", calls=8)
    waiter = Waiter(b, {"calls": 5}, timeout=math.inf)
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter.run)
        await anyio.wait_all_tasks_blocked()
        # A store that queues through a server may need a moment to register the waiter:
        # a competing request may pass until then, but must be held back once it is.
        held_back = False
        for _ in range(int(WAIT / 0.01)):
            competing = await c.try_reserve(calls=1)
            if competing is None:
                held_back = True
                break
            await competing.release()
            await anyio.sleep(0.01)
        other = await c.try_reserve(tokens=5)
        granted = other is not None
        if other is not None:
            await other.release()
        tg.cancel_scope.cancel()
    await holder.release()
    if not held_back:
        fail("a request for calls passed a reservation waiting for calls ahead of it")
    if not granted:
        fail("a request asking no calls was held back by a reservation waiting for calls")
    await expect_counters(org, "after everything was released")


@register
async def concurrent_tasks_never_overspend(make_store: StoreFactory) -> None:
    """Hundreds of tasks racing for a budget never hold more than its limit, and every
    refund is paid exactly once.
    """
    budget = await new_budget(make_store, {"calls": 50, "tokens": 1000}, "race")
    racers = 200
    tried = 0
    winners: list[int] = []
    everyone_tried = anyio.Event()

    async def racer(i: int) -> None:
        nonlocal tried
        r = await budget.try_reserve(calls=1, tokens=5)
        tried += 1
        if tried == racers:
            everyone_tried.set()
        if r is None:
            return
        winners.append(i)
        async with r:
            await everyone_tried.wait()  # hold until every racer has tried
            r.record(calls=1, tokens=i % 3)

    async with anyio.create_task_group() as tg:
        for i in range(racers):
            tg.start_soon(racer, i)
    equal(f"reservations granted to {racers} racers for 50 calls", 50, len(winners))
    spent = {"calls": 50, "tokens": sum(i % 3 for i in winners)}
    await expect_counters(budget, "after the race", spent=spent)

    # Waiters through the queue: never more inside than the limit, everyone served.
    queue = await new_budget(make_store, {"slots": 5, "work": 1000}, "queue")
    inside = peak = served = 0

    async def worker() -> None:
        nonlocal inside, peak, served
        async with queue.reserve(slots=1, work=10, timeout=WAIT) as r:
            inside += 1
            peak = max(peak, inside)
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            inside -= 1
            served += 1
            r.record(work=3)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(worker)
    equal("workers served", 20, served)
    if peak > 5:
        fail(f"{peak} reservations of 1 slot were held at once in a budget of 5 slots")
    await expect_counters(queue, "after every worker", spent={"work": 60})


# -- cancellation ---------------------------------------------------------------------------


@register
async def cancelled_reservations_settle_exactly_once(make_store: StoreFactory) -> None:
    """A reservation whose block is cancelled still settles (what was recorded charged, the
    rest refunded), and a cancelled waiter, even one granted in the same tick, leaves
    nothing held.
    """
    budget = await new_budget(make_store, {"tokens": 100}, "cancel")
    entered = anyio.Event()

    async def work(record: int) -> None:
        async with budget.reserve(tokens=30) as r:
            if record:
                r.record(tokens=record)
            entered.set()
            await anyio.sleep_forever()

    for record, spent in ((7, 7), (0, 7)):
        entered = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(work, record)
            await entered.wait()
            tg.cancel_scope.cancel()
        await expect_counters(
            budget, f"after cancelling a block that recorded {record}", spent={"tokens": spent}
        )

    with anyio.CancelScope() as scope:  # the exit itself runs in a cancelled scope
        async with budget.reserve(tokens=30) as r:
            r.record(tokens=5)
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    await expect_counters(budget, "after an exit inside a cancelled scope", spent={"tokens": 12})

    for same_tick in (False, True):
        holder = await held_reservation(budget, "the holder", tokens=88)  # 12 + 88: full
        waiter = Waiter(budget, {"tokens": 30}, timeout=math.inf, hold=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.run)
            await anyio.wait_all_tasks_blocked()
            if same_tick:
                await holder.release()  # may grant the waiter, which is cancelled at once
                tg.cancel_scope.cancel()
            else:
                tg.cancel_scope.cancel()
                await holder.release()
        when = "in the tick it was granted" if same_tick else "while waiting"
        if waiter.outcome not in (None, GRANTED):
            fail(f"a reservation with timeout=math.inf was {waiter.outcome}")
        await expect_counters(budget, f"after cancelling a waiter {when}", spent={"tokens": 12})
        everything = await held_reservation(
            budget, f"all that is left after a waiter cancelled {when}", tokens=88
        )
        await everything.release()


@register
async def crossings_are_announced_once(make_store: StoreFactory) -> None:
    """on_warn and on_exhausted are called once per crossing, with the name of the budget
    crossed and its verdict, and again only after a reset.
    """
    seen: list[tuple[str, str | None, Verdict]] = []

    def on_warn(name: str | None, verdict: Verdict) -> None:
        seen.append(("warn", name, verdict))

    async def on_exhausted(name: str | None, verdict: Verdict) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("exhausted", name, verdict))

    store = await new_store(make_store)
    name = unique_name("crossings")
    limits = {"tokens": Limit(100, warn=50)}
    budget = Budget(limits, name=name, store=store, on_warn=on_warn, on_exhausted=on_exhausted)
    await budget.charge(tokens=30)
    async with budget.reserve(tokens=30) as r:  # 60 held and spent: the warn crossing
        r.record(tokens=30)
    await budget.charge(tokens=10)
    await budget.charge(tokens=30)  # 100: the exhausted crossing
    await budget.charge(tokens=5)
    await budget.reset()
    await budget.charge(tokens=60)  # a new period, a new warn crossing
    want = [
        ("warn", name, warn_at("tokens")),
        ("exhausted", name, exhausted_at("tokens")),
        ("warn", name, warn_at("tokens")),
    ]
    equal("callbacks called", want, seen)
    seen.clear()
    child = budget.child({"tokens": 1000}, name="child")
    await child.charge(tokens=40)  # the parent reaches its limit, the child does not warn
    equal(
        "callbacks for a crossing at the parent",
        [("exhausted", name, exhausted_at("tokens"))],
        seen,
    )


@register
async def crossings_reach_the_budget_that_crossed(make_store: StoreFactory) -> None:
    """A crossing at a parent calls the parent's callback, not its child's, even when the
    child bears the parent's name.
    """
    seen: list[tuple[str, str | None, Verdict]] = []
    store = await new_store(make_store)
    name = unique_name("owner")
    parent = Budget(
        {"tokens": Limit(100, warn=50)},
        name=name,
        store=store,
        on_warn=lambda budget, verdict: seen.append(("parent", budget, verdict)),
    )
    child = parent.child(
        {"tokens": Limit(1000, warn=500)},
        name=name,  # names are unique among siblings only
        on_warn=lambda budget, verdict: seen.append(("child", budget, verdict)),
    )
    await child.charge(tokens=60)
    equal(
        "callbacks for a crossing at the parent alone", [("parent", name, warn_at("tokens"))], seen
    )


@register
async def seed_adapters_work_over_the_store(make_store: StoreFactory) -> None:
    """as_guard() and as_token_budget() give the BudgetGuard and TokenBudget protocols over
    a budget in the store.
    """
    budget = await new_budget(make_store, {"tokens": 100, "calls": 2}, "seeds")
    guard = budget.as_guard("calls")
    if not isinstance(guard, BudgetGuard):
        fail("as_guard() is not a BudgetGuard")
    equal(
        "guard.try_reserve(1) of 2",
        [True, True, False],
        [await guard.try_reserve(1) for _ in range(3)],
    )
    await guard.release(1)
    await expect_counters(budget, "after a guard released 1 of 2", reserved={"calls": 1})
    await guard.release(1)
    tokens = budget.as_token_budget()
    if not isinstance(tokens, TokenBudget):
        fail("as_token_budget() is not a TokenBudget")
    held = await tokens.try_reserve_tokens(60)
    if held is None:
        fail("try_reserve_tokens(60) of 100 was refused")
    if await tokens.try_reserve_tokens(50) is not None:
        fail("try_reserve_tokens(50) with 40 left was granted")
    await tokens.record_usage(held, 30, 10)
    unused = await tokens.try_reserve_tokens(50)
    if unused is None:
        fail("try_reserve_tokens(50) with 60 left was refused")
    async with unused:
        pass  # leaving without usage refunds the estimate
    equal("tokens_consumed()", 40, await tokens.tokens_consumed())
    await expect_counters(budget, "after the token budget's calls", spent={"tokens": 40})
