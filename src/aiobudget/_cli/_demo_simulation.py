"""The demo's simulation: agents that share one budget, each through a child budget.

Every agent's calls (sizes, latencies, failures) are drawn in advance from a seed, so
a run can be replayed; no model is called. `Stats` counts what the agents did, and is
summed over the worker processes of a Redis demo.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._errors import BudgetExhausted
from .._period import Period
from .._pricing import Pricing
from .._units import CALLS, COST, TOKENS, Usage
from ..kernel import Limit, Snapshot

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from anyio.abc import TaskGroup

    from .._budget import Budget

_PRICING: Final = Pricing(input="2.50", output="10")  # USD per million tokens
_MAX_OUTPUT: Final = 800  # max_tokens of every simulated call: the output estimate
_FAIL_RATE: Final = 0.05  # the provider fails after billing the prompt
_HANG_RATE: Final = 0.04  # the call hangs past its deadline and is cancelled


class _SimulatedFailure(Exception):
    """A simulated provider error."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to simulate; sent as JSON to the worker processes of a Redis demo."""

    agents: int
    calls: int
    seed: int
    latency: float
    wait: float
    tokens: int
    cost: int
    call_limit: int
    agent_tokens: int
    period: float | None = None  # seconds: the shared budget renews (--period)

    def shared_period(self) -> Period | None:
        """The shared budget's period: fixed windows of ``--period`` seconds, or None."""
        return None if self.period is None else Period.every(self.period)

    def limits(self) -> dict[str, Limit]:
        """The shared budget: warn at 80%."""
        return {
            dim: Limit(value, warn=value * 4 // 5)
            for dim, value in ((TOKENS, self.tokens), (COST, self.cost), (CALLS, self.call_limit))
        }

    def agent_limits(self) -> dict[str, Limit | int]:
        """Each agent's own budget: a token cap; money and calls only through the parent."""
        return {TOKENS: self.agent_tokens, COST: self.cost, CALLS: self.calls}


@dataclasses.dataclass(frozen=True)
class _Call:
    """One simulated LLM call, drawn in advance so a seed fixes every agent's story."""

    estimate: Usage
    usage: Usage
    latency: float
    fails: bool


def _draw(rng: random.Random, plan: Plan) -> _Call:
    prompt = rng.randint(300, 2_000)
    output = rng.randint(50, _MAX_OUTPUT)
    latency = plan.latency * rng.uniform(0.25, 1.75)
    fate = rng.random()
    estimate = _PRICING.priced(Usage(input_tokens=prompt, output_tokens=_MAX_OUTPUT, calls=1))
    if fate < _FAIL_RATE:  # billed for the prompt, then an error
        return _Call(estimate, _PRICING.priced(Usage(input_tokens=prompt, calls=1)), latency, True)
    if fate < _FAIL_RATE + _HANG_RATE:
        latency = _deadline(plan) + plan.latency
    usage = _PRICING.priced(Usage(input_tokens=prompt, output_tokens=output, calls=1))
    return _Call(estimate, usage, latency, False)


def _deadline(plan: Plan) -> float:
    """How long an agent gives one call, waiting included; past it the call is cancelled."""
    return plan.wait + 2.5 * plan.latency


@dataclasses.dataclass
class Stats:
    """Counters of one process's agents; summed over the processes of a Redis demo."""

    active: int = 0  # holding a reservation, in a call
    waiting: int = 0  # waiting for a reservation
    done: int = 0  # agents that finished their work
    denied: int = 0  # agents stopped by a denial
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    granted: int = 0
    reserved_total: Counter[str] = dataclasses.field(default_factory=Counter)
    charged_total: Counter[str] = dataclasses.field(default_factory=Counter)
    peak: Counter[str] = dataclasses.field(default_factory=Counter)  # max spent + reserved
    denials: Counter[str] = dataclasses.field(default_factory=Counter)  # "shared tokens": n
    # Windows of the shared budget's period closed by this process's calls (with --period):
    # {"start": ..., "end": ..., "spent": {dim: int}}; each is closed by one process only.
    windows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def observe(self, snap: Snapshot) -> None:
        """Note the shared budget's ``spent + reserved`` (peak per window, with a period)."""
        for dim in snap.limits:
            self.peak[dim] = max(self.peak[dim], snap.spent[dim] + snap.reserved[dim])

    def window_closed(self, event: Mapping[str, Any]) -> None:
        """Note a ``budget.period_closed`` event of the shared budget."""
        self.windows.append(
            {"start": event["period_start"], "end": event["period_end"], "spent": event["spent"]}
        )

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs.
        return {
            field.name: dict(value) if isinstance(value, Counter) else value
            for field in dataclasses.fields(self)
            for value in (getattr(self, field.name),)
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stats:
        counters = {"reserved_total", "charged_total", "peak", "denials"}
        fields: dict[str, Any] = {k: Counter(v) if k in counters else v for k, v in data.items()}
        return cls(**fields)

    @classmethod
    def total(cls, parts: Iterable[Stats]) -> Stats:
        out = cls()
        for part in parts:
            for field in dataclasses.fields(cls):
                mine, theirs = getattr(out, field.name), getattr(part, field.name)
                if field.name == "peak":
                    out.peak = mine | theirs  # max per dimension
                else:
                    setattr(out, field.name, mine + theirs)
        return out


class Simulation:
    """Agents in one task group sharing *budget*, each through a child budget."""

    def __init__(self, budget: Budget, plan: Plan, stats: Stats) -> None:
        self.budget = budget
        self.plan = plan
        self.stats = stats
        self.error: BaseException | None = None
        self._agents: list[tuple[Budget, list[_Call], float]] = []

    async def prepare(self, indexes: Iterable[int], *, reset: bool) -> None:
        """Build the agents; with *reset*, give their budgets this run's limits and zero
        them (they may be left over in Redis from an earlier run)."""
        plan = self.plan
        for index in indexes:
            # A string seed is hashed with SHA-512: the same in every process and run.
            rng = random.Random(f"{plan.seed}:{index}")
            start = rng.uniform(0, plan.latency)
            calls = [_draw(rng, plan) for _ in range(plan.calls)]
            child = self.budget.child(
                plan.agent_limits(), name=f"agent-{index:03d}", update_limits=reset
            )
            if reset:
                await child.reset()
            self._agents.append((child, calls, start))

    async def run(self) -> None:
        """Run every agent; the first unexpected error stops them all and is raised."""
        async with anyio.create_task_group() as tg:
            for child, calls, start in self._agents:
                tg.start_soon(self._guarded, tg, child, calls, start)
        if self.error is not None:
            raise self.error

    async def _guarded(
        self, tg: TaskGroup, child: Budget, calls: list[_Call], start: float
    ) -> None:
        # Errors are kept, not raised, so callers never see an exception group.
        try:
            await self._agent(child, calls, start)
        except Exception as exc:  # noqa: BLE001 - reported by run()
            if self.error is None:
                self.error = exc
            tg.cancel_scope.cancel()

    async def _agent(self, child: Budget, calls: list[_Call], start: float) -> None:
        stats = self.stats
        await anyio.sleep(start)
        for call in calls:
            try:
                outcome = await self._call(child, call)
            except BudgetExhausted as exc:
                stats.denied += 1
                level = "shared" if exc.budget == self.budget.name else "agent"
                stats.denials[f"{level} {exc.dim}"] += 1
                return
            if outcome == "ok":
                stats.ok += 1
            elif outcome == "failed":
                stats.failed += 1
            else:
                stats.cancelled += 1
        stats.done += 1

    async def _call(self, child: Budget, call: _Call) -> str:
        """One call: reserve the estimate (waiting fairly), 'call', record, settle."""
        stats = self.stats
        stats.waiting += 1
        waiting = True
        try:
            with anyio.move_on_after(_deadline(self.plan)) as deadline:
                async with child.reserve(call.estimate, timeout=self.plan.wait) as reservation:
                    stats.waiting -= 1
                    waiting = False
                    stats.active += 1
                    stats.granted += 1
                    stats.reserved_total.update(reservation.amounts)
                    try:
                        stats.observe(await self.budget.snapshot())
                        await anyio.sleep(call.latency)
                        reservation.record(call.usage)
                        if call.fails:
                            raise _SimulatedFailure
                    finally:
                        stats.active -= 1
                        # What is recorded is what the exit charges, whatever the path.
                        stats.charged_total.update(reservation.recorded)
        except _SimulatedFailure:
            return "failed"
        finally:
            if waiting:
                stats.waiting -= 1
        return "cancelled" if deadline.cancelled_caught else "ok"
