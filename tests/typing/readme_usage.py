"""README-style usage of aiobudget, checked by ``mypy --strict`` (``nox -s typecheck``).

Not a test that runs: it is what a user writes, type-checked so that a change to the
public signatures that would break user code (or make it untypeable) fails CI. Annotated
assignments (``verdict: Verdict = ...``) pin what each call returns. The lines marked
``# type: ignore[...]`` are misuses the types must reject: mypy's ``warn_unused_ignores``
(part of ``--strict``) fails if one of them ever type-checks. It runs too
(``python tests/typing/readme_usage.py``), against a stand-in for an LLM client.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import anyio

from aiobudget import (
    CALLS,
    COST,
    INPUT_TOKENS,
    MILLIS,
    OUTPUT_TOKENS,
    TOKENS,
    BackendError,
    Budget,
    BudgetError,
    BudgetExceeded,
    BudgetExhausted,
    BudgetGuard,
    InvalidAmount,
    Limit,
    LimitsMismatch,
    MemoryStore,
    Period,
    Pricing,
    RequestLimitExceeded,
    Reservation,
    ReservationClosed,
    Snapshot,
    Status,
    Store,
    TokenBudget,
    TokenPool,
    TokenReservation,
    UnitBudget,
    Usage,
    Verdict,
    money,
    usd,
)

# -- a stand-in for an LLM client --------------------------------------------------------


@dataclass
class Reply:
    text: str
    usage: dict[str, int] = field(default_factory=dict)


async def llm(prompt: str) -> Reply:
    await anyio.lowlevel.checkpoint()
    return Reply(prompt.upper(), {"prompt_tokens": len(prompt), "completion_tokens": 3})


# -- building budgets -------------------------------------------------------------------------

budget = Budget({TOKENS: Limit(100_000, warn=80_000), COST: usd("5"), CALLS: 50}, name="run-42")
io_budget = Budget(
    {
        INPUT_TOKENS: Limit(50_000, headroom=5_000),
        OUTPUT_TOKENS: 20_000,
        MILLIS: 60_000,
        "images": 10,  # a custom dimension
    }
)
shared_store: Store = MemoryStore()
tenant = Budget({TOKENS: 1_000_000}, name="tenant-7", store=shared_store)
same_tenant = Budget({TOKENS: 1_000_000}, name="tenant-7", store=shared_store)
updated = Budget({TOKENS: 2_000_000}, name="tenant-7", store=shared_store, update_limits=True)
dims: tuple[str, ...] = budget.dims
micros: int = usd(0.1) + usd("0.02") + money("12.5", scale=100)


def on_warn(name: str | None, verdict: Verdict) -> None:
    print(f"budget {name} is at its warn level on {verdict.dim}")


async def on_exhausted(name: str | None, verdict: Verdict) -> None:
    await anyio.lowlevel.checkpoint()
    print(f"budget {name} is exhausted on {verdict.dim}")


watched = Budget({TOKENS: Limit(1_000, warn=800)}, on_warn=on_warn, on_exhausted=on_exhausted)


# -- reservations ---------------------------------------------------------------------------


async def one_call(prompt: str) -> str:
    async with budget.reserve(tokens=4_000, cost_micros=usd("0.02"), calls=1) as r:
        reply = await llm(prompt)
        r.record(Usage.from_openai(reply.usage), calls=1)
    verdict: Verdict | None = r.verdict
    if verdict is not None and verdict.status is Status.WARN:
        print("slow down")
    return reply.text


async def reservation_forms() -> None:
    # A Usage, a mapping (for names that collide with the options), or keywords.
    async with budget.reserve(Usage(input_tokens=1_000, output_tokens=500, calls=1)) as r:
        r.record({TOKENS: 1_200, CALLS: 1})
        r.record(Usage(input_tokens=10, extra={}))
    async with io_budget.reserve({"images": 2, MILLIS: 500}, timeout=30) as r:
        r.record(images=1, millis=420)
        recorded: dict[str, int] = r.recorded
        amounts: dict[str, int] = r.amounts
        held: bool = r.held
        print(recorded, amounts, held)
    async with io_budget.reserve(input_tokens=4_000, use_headroom=True, timeout=math.inf):
        pass
    capped = budget.reserve(
        tokens=2_000, request_limit=Usage(input_tokens=1_500, output_tokens=1_000)
    )
    async with capped as r:
        r.record(tokens=2_600)
    over: bool = r.over_request_limit
    async with budget.reserve(calls=1, on_unrecorded="charge"):
        pass  # billed even though no usage came back
    print(over)


async def try_commit_release() -> None:
    r: Reservation | None = await budget.try_reserve(tokens=1_000)
    if r is None:
        return
    r.record(tokens=800)
    verdict: Verdict = await r.commit()
    print(verdict.ok)
    other = await budget.try_reserve({TOKENS: 10}, timeout=1.5)
    if other is not None:
        await other.extend(30.0)
        await other.release()
    third = await budget.try_reserve(tokens=10)
    if third is not None:
        async with third:  # an entered reservation closes like any other
            third.record(tokens=5)
    acquired: Reservation = await budget.acquire(tokens=10, calls=1, ttl=60.0)
    acquired.record(Usage(input_tokens=3, output_tokens=4, calls=1))
    await acquired.commit()
    async with budget.reserve(tokens=10, ttl=30):
        pass


# -- direct operations, snapshots, hierarchy ---------------------------------------------


async def operations() -> None:
    verdict: Verdict = await budget.charge(tokens=500, calls=1)
    verdict = await budget.charge(Usage(output_tokens=20), strict=True)
    verdict = await budget.charge({COST: usd("0.001")})
    status: Status = verdict.status
    dim: str | None = verdict.dim
    snap: Snapshot = await budget.snapshot()
    limit: Limit = snap.limits[TOKENS]
    spent: int = snap.spent[TOKENS]
    reserved: int = snap.reserved[TOKENS]
    left: int = snap.remaining[TOKENS]
    warn_at: int | None = limit.warn
    remaining: dict[str, int] = await budget.remaining()
    await budget.reset()
    verdict = await budget.set_limits({TOKENS: 200_000, COST: usd(10), CALLS: 100})
    print(status, dim, spent, reserved, left, warn_at, remaining)


async def hierarchy() -> None:
    team = budget.child({TOKENS: 10_000, CALLS: 5}, name="team-a")
    agent = team.child({TOKENS: 2_000, "steps": 20}, name="agent-1", on_warn=on_warn)
    parent: Budget | None = agent.parent
    async with agent.reserve(tokens=500, steps=1) as r:
        r.record(tokens=450, steps=1)
    print(parent)


async def periods() -> None:
    monthly = Budget(
        {COST: usd("50")},
        name="key-7",
        store=MemoryStore(clock=lambda: 1_700_000_000.0),
        period=Period.monthly(tz="Europe/Berlin", day=31, at=time(6)),
    )
    hourly = monthly.child({CALLS: 100}, name="hourly", period=Period.every(timedelta(hours=1)))
    for period in (Period.every(60), Period.daily(tz="Asia/Kolkata"), Period.weekly(weekday=6)):
        start, end = period.window(datetime.now().astimezone())
        first: datetime = period.previous(start)
        print(end, first, str(period))
    snap: Snapshot = await hourly.snapshot()
    starts: datetime | None = snap.period_start
    resets: datetime | None = snap.resets_at
    chosen: Period | None = monthly.period
    try:
        async with monthly.reserve(cost_micros=usd("60")):
            pass
    except BudgetExhausted as exc:
        when: datetime | None = exc.resets_at
        print(when)
    print(starts, resets, chosen)


# -- errors ------------------------------------------------------------------------------------


async def errors() -> None:
    try:
        async with budget.reserve(tokens=10_000, request_limit={TOKENS: 5_000}):
            pass
    except RequestLimitExceeded as exc:
        cap: int = exc.limit
        print(cap)
    except BudgetExhausted as exc:
        dim: str = exc.dim
        requested: int = exc.requested
        remaining: int = exc.remaining
        level: str | None = exc.budget
        print(dim, requested, remaining, level)
    try:
        await budget.charge(tokens=1_000_000, strict=True)
    except BudgetExceeded as exc:
        print(exc.dim, exc.limit + exc.attempted)
    try:
        Budget({TOKENS: 10}, name="tenant-7", store=shared_store)
    except LimitsMismatch as exc:
        print(exc.budget)
    try:
        usd("-1")
    except InvalidAmount as exc:
        wrong: ValueError = exc  # a ValueError too
        print(wrong)
    r = await budget.try_reserve(tokens=1)
    if r is not None:
        await r.release()
        with contextlib.suppress(ReservationClosed):
            await r.release()  # a second close is refused, never a double refund
    try:
        await tenant.charge(tokens=1)
    except BackendError:
        raise
    except BudgetError:
        pass


# -- the seed protocols ---------------------------------------------------------------


async def seeds() -> None:
    units = UnitBudget(10)
    guard: BudgetGuard = units
    if await guard.try_reserve(3):
        await guard.release(3)
    share: float = units.utilization()
    units.refill()
    print(units.capacity, units.available, share)

    pool = TokenPool(100_000)
    tokens: TokenBudget = pool
    reservation: TokenReservation | None = await tokens.try_reserve_tokens(500)
    if reservation is not None:
        async with reservation:
            await tokens.record_usage(reservation, 120, 80)
        print(reservation.estimate)
    consumed: int = await tokens.tokens_consumed()
    print(consumed, pool.capacity, pool.available)

    calls_guard: BudgetGuard = budget.as_guard(CALLS)
    token_budget: TokenBudget = budget.as_token_budget()
    held = await token_budget.try_reserve_tokens(1_000)
    if held is not None:
        await held.cancel()
    print(await calls_guard.try_reserve(1))


# -- usage and money -----------------------------------------------------------------------------


def usage_and_money() -> Usage:
    usage = Usage.from_openai({"usage": {"prompt_tokens": 10, "completion_tokens": 5}})
    usage = usage + Usage.from_anthropic({"input_tokens": 3, "output_tokens": 4})
    usage += Usage(calls=1, extra={"images": 2})
    total: int = usage.tokens
    pricing = Pricing(input="2.50", output="10")
    cost: int = pricing.cost(usage) + pricing.cost(input_tokens=1_000, output_tokens=10)
    print(total, cost)
    return pricing.priced(usage)


# -- misuses the types reject ------------------------------------------------------------------


def misuses(r: Reservation) -> None:  # never called: mypy must flag every line
    budget.reserve(tokens=1.5)  # type: ignore[arg-type]
    r.record("tokens")  # type: ignore[arg-type]
    Limit(100.0)  # type: ignore[arg-type]
    Verdict(Status.CONTINUE).status = Status.WARN  # type: ignore[misc]
    Budget({CALLS: 1}, period="monthly")  # type: ignore[arg-type]
    MemoryStore(clock=1.0)  # type: ignore[arg-type]


async def main() -> None:
    await one_call("hello")
    await reservation_forms()
    await try_commit_release()
    await operations()
    await hierarchy()
    await periods()
    await errors()
    await seeds()
    usage_and_money()


if __name__ == "__main__":
    anyio.run(main)
