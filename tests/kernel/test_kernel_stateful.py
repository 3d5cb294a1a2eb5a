"""The kernel against a deliberately naive model, over random sequences of operations.

The model keeps plain dicts per budget level and applies SPEC's formulas literally, in
the most obvious way (two passes for a verdict, ``min(MAX, x)`` for saturation, a fresh
scan for every check); it shares no code with the kernel beyond its value types. A
hypothesis state machine drives a chain of one to three levels (sometimes with a sibling
leaf sharing the ancestors, as two child budgets do) through every operation, and after
every step the kernel must agree with the model on the whole state, the verdicts, the
denials and the strict-charge refusals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiobudget import BudgetExceeded, ReservationClosed
from aiobudget.kernel import (
    Chain,
    Crossing,
    Denial,
    Lease,
    Ledger,
    Limit,
    Outcome,
    Snapshot,
    Status,
    Verdict,
)

MAX = 2**63 - 1
DIMS = ("a", "b", "c", "d")
RANK = {Status.CONTINUE: 0, Status.WARN: 1, Status.EXHAUSTED: 2}

# Small values make limits, warn levels and headroom interact; values near 2**63 - 1
# make sums saturate.
SMALL = st.integers(0, 12)
HUGE = st.integers(MAX - 12, MAX)
AMOUNTS = st.one_of(SMALL, SMALL, SMALL, HUGE, st.sampled_from([MAX // 2, MAX // 2 + 1]))
LIMITS = st.one_of(st.integers(0, 40), st.integers(0, 40), HUGE)


# -- the model ----------------------------------------------------------------------


@dataclass
class Line:
    """One dimension of one level."""

    limit: int
    warn: int | None
    headroom: int
    spent: int = 0
    reserved: int = 0

    def cap(self, use_headroom: bool) -> int:
        return self.limit if use_headroom else self.limit - self.headroom


@dataclass(eq=False)
class Level:
    """One budget: its lines in declaration order, plus test bookkeeping."""

    name: str
    lines: dict[str, Line]
    peak: int = 0  # the highest status rank already reported since the last reset
    # True while only reservation-guarded operations ran since the last reset, so
    # spent + reserved <= limit must hold on every line.
    guarded: bool = True
    # Leases that were open when a limit of this level was lowered: until they close, a
    # reset cannot make the level guarded again (they may hold more than the new limit).
    tainted: set[int] = field(default_factory=set)
    held: int = 0  # open leases holding budget at this level

    def verdict(self) -> Verdict:
        for dim, line in self.lines.items():
            if line.spent + line.reserved >= line.limit:
                return Verdict(Status.EXHAUSTED, dim)
        for dim, line in self.lines.items():
            if line.warn is not None and line.spent + line.reserved >= line.warn:
                return Verdict(Status.WARN, dim)
        return Verdict(Status.CONTINUE)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            limits={
                dim: Limit(line.limit, warn=line.warn, headroom=line.headroom)
                for dim, line in self.lines.items()
            },
            spent={dim: line.spent for dim, line in self.lines.items()},
            reserved={dim: line.reserved for dim, line in self.lines.items()},
            remaining={
                dim: max(0, line.limit - line.spent - line.reserved)
                for dim, line in self.lines.items()
            },
            verdict=self.verdict(),
            held=self.held,
        )


@dataclass
class ModelLease:
    """What a reservation holds, per level name and dimension."""

    id: int
    levels: list[Level]
    held: dict[str, dict[str, int]]


def worst(verdicts: list[Verdict]) -> Verdict:
    """The worst verdict; the first (nearest) level among equals."""
    top = max(RANK[verdict.status] for verdict in verdicts)
    return next(verdict for verdict in verdicts if RANK[verdict.status] == top)


def after(levels: list[Level]) -> Outcome:
    """The outcome of a change to *levels*: crossings are rises above what was reported."""
    crossings = []
    for number, level in enumerate(levels):
        verdict = level.verdict()
        if RANK[verdict.status] > level.peak:
            level.peak = RANK[verdict.status]
            crossings.append(Crossing(level.name, verdict, number))
    return Outcome(worst([level.verdict() for level in levels]), tuple(crossings))


def denial(levels: list[Level], amounts: dict[str, int], use_headroom: bool) -> Denial | None:
    """Where *amounts* do not fit (SPEC: spent + reserved + amount <= limit - headroom)."""
    for number, level in enumerate(levels):
        for dim, line in level.lines.items():
            amount = amounts.get(dim, 0)
            cap = line.cap(use_headroom)
            if line.spent + line.reserved + amount > cap:
                impossible = any(
                    other.spent + amounts.get(name, 0) > other.cap(use_headroom)
                    for each in levels
                    for name, other in each.lines.items()
                )
                remaining = max(0, cap - line.spent - line.reserved)
                return Denial(level.name, number, dim, amount, remaining, impossible)
    return None


def add_spent(levels: list[Level], amounts: dict[str, int]) -> None:
    for level in levels:
        for dim, line in level.lines.items():
            line.spent = min(MAX, line.spent + amounts.get(dim, 0))


# -- the machine --------------------------------------------------------------------


@st.composite
def level_limits(draw: st.DrawFn, dims: tuple[str, ...] | None = None) -> dict[str, Limit]:
    """Random limits, on *dims* or on a random ordered subset of DIMS."""
    if dims is None:
        dims = tuple(draw(st.permutations(DIMS))[: draw(st.integers(1, len(DIMS)))])
    limits = {}
    for dim in dims:
        limit = draw(LIMITS)
        warn = draw(st.none() | st.integers(0, limit))
        headroom = draw(st.just(0) | st.integers(0, limit))
        limits[dim] = Limit(limit, warn=warn, headroom=headroom)
    return limits


def amounts_for(dims: tuple[str, ...]) -> st.SearchStrategy[dict[str, int]]:
    """Amounts by name on some of *dims* (the others are 0)."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(dims, AMOUNTS))


class KernelMachine(RuleBasedStateMachine):
    """Drives kernel chains and the model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.ledgers: list[Ledger] = []
        self.levels: list[Level] = []
        self.chains: list[tuple[Chain, list[Level]]] = []
        self.open: list[tuple[Lease, ModelLease, Ledger]] = []
        self.closed: list[Lease] = []
        self.next_id = 0

    def add_ledger(self, name: str, limits: dict[str, Limit], plain: bool) -> None:
        given: dict[str, Limit | int] = {
            dim: limit.limit if plain and limit == Limit(limit.limit) else limit
            for dim, limit in limits.items()
        }
        self.ledgers.append(Ledger(given, name=name))
        lines = {dim: Line(each.limit, each.warn, each.headroom) for dim, each in limits.items()}
        self.levels.append(Level(name, lines))

    @initialize(data=st.data(), depth=st.integers(1, 3), plain=st.booleans())
    def build(self, data: st.DataObject, depth: int, plain: bool) -> None:
        """A chain leaf -> parent -> grandparent, and maybe a sibling leaf."""
        for number in range(depth):
            self.add_ledger(f"L{number}", data.draw(level_limits()), plain)
        self.chains.append((Chain(self.ledgers), list(self.levels)))
        if depth > 1 and data.draw(st.booleans()):
            self.add_ledger("S", data.draw(level_limits()), plain)
            ledgers = [self.ledgers[-1], *self.ledgers[1:-1]]
            self.chains.append((Chain(ledgers), [self.levels[-1], *self.levels[1:-1]]))

    def pick_chain(self, data: st.DataObject) -> tuple[Chain, list[Level]]:
        return self.chains[data.draw(st.integers(0, len(self.chains) - 1))]

    # -- reservations -------------------------------------------------------------

    @rule(data=st.data(), use_headroom=st.booleans())
    def reserve(self, data: st.DataObject, use_headroom: bool) -> None:
        chain, levels = self.pick_chain(data)
        amounts = data.draw(amounts_for(chain.leaf.dims))
        result = chain.reserve(chain.leaf.vector(amounts), use_headroom=use_headroom)
        expected = denial(levels, amounts, use_headroom)
        if expected is not None:
            assert expected == result
            return
        held = {level.name: {dim: amounts.get(dim, 0) for dim in level.lines} for level in levels}
        for level in levels:
            level.held += 1
            for dim, line in level.lines.items():
                line.reserved += held[level.name][dim]
        assert isinstance(result, Lease)
        assert after(levels) == result.outcome
        self.open.append((result, ModelLease(self.next_id, levels, held), chain.leaf))
        self.next_id += 1

    @rule(data=st.data(), use_headroom=st.booleans())
    def check(self, data: st.DataObject, use_headroom: bool) -> None:
        chain, levels = self.pick_chain(data)
        amounts = data.draw(amounts_for(chain.leaf.dims))
        expected = denial(levels, amounts, use_headroom)
        assert expected == chain.check(chain.leaf.vector(amounts), use_headroom=use_headroom)

    def close(self, index: int) -> tuple[Lease, ModelLease, Ledger]:
        lease, model, leaf = self.open.pop(index)
        self.closed.append(lease)
        for level in self.levels:
            level.tainted.discard(model.id)
        for level in model.levels:
            level.held -= 1
        return lease, model, leaf

    @precondition(lambda self: self.open)
    @rule(data=st.data(), within=st.booleans())
    def settle(self, data: st.DataObject, within: bool) -> None:
        lease, model, leaf = self.close(data.draw(st.integers(0, len(self.open) - 1)))
        actual = data.draw(amounts_for(leaf.dims))
        if within:  # actual <= reserved: the reservation guards the budget
            held = model.held[leaf.name]
            actual = {dim: min(amount, held[dim]) for dim, amount in actual.items()}
        outcome = lease.settle(leaf.vector(actual))
        for level in model.levels:
            held = model.held[level.name]
            if any(actual.get(dim, 0) > held[dim] for dim in level.lines):
                level.guarded = False
            for dim, line in level.lines.items():
                line.reserved -= held[dim]
        add_spent(model.levels, actual)
        assert after(model.levels) == outcome

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        lease, model, _ = self.close(data.draw(st.integers(0, len(self.open) - 1)))
        outcome = lease.release()
        for level in model.levels:
            for dim, line in level.lines.items():
                line.reserved -= model.held[level.name][dim]
        assert after(model.levels) == outcome

    @precondition(lambda self: self.closed)
    @rule(data=st.data(), settle=st.booleans())
    def close_again(self, data: st.DataObject, settle: bool) -> None:
        lease = data.draw(st.sampled_from(self.closed))
        before = [ledger.snapshot() for ledger in self.ledgers]
        again = partial(lease.settle, (1,) * len(DIMS)) if settle else lease.release
        with pytest.raises(ReservationClosed):
            again()
        assert before == [ledger.snapshot() for ledger in self.ledgers]
        assert not lease.open

    # -- charges --------------------------------------------------------------------

    @rule(data=st.data())
    def charge(self, data: st.DataObject) -> None:
        chain, levels = self.pick_chain(data)
        amounts = data.draw(amounts_for(chain.leaf.dims))
        outcome = chain.charge(chain.leaf.vector(amounts))
        for level in levels:
            if any(amounts.get(dim, 0) for dim in level.lines):
                level.guarded = False
        add_spent(levels, amounts)
        assert after(levels) == outcome

    @rule(data=st.data())
    def strict_charge(self, data: st.DataObject) -> None:
        chain, levels = self.pick_chain(data)
        amounts = data.draw(amounts_for(chain.leaf.dims))
        refusal = next(
            (
                (level.name, dim, line.limit, min(MAX, line.spent + line.reserved + amount))
                for level in levels
                for dim, line in level.lines.items()
                for amount in [amounts.get(dim, 0)]
                if line.spent + line.reserved + amount > line.limit
            ),
            None,
        )
        vector = chain.leaf.vector(amounts)
        if refusal is not None:
            with pytest.raises(BudgetExceeded) as info:
                chain.charge(vector, strict=True)
            error = info.value
            assert refusal == (error.budget, error.dim, error.limit, error.attempted)
            return
        outcome = chain.charge(vector, strict=True)
        add_spent(levels, amounts)
        assert after(levels) == outcome

    # -- periods and limits ---------------------------------------------------------

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        number = data.draw(st.integers(0, len(self.ledgers) - 1))
        level = self.levels[number]
        outcome = self.ledgers[number].reset()
        for line in level.lines.values():
            line.spent = 0
        level.peak = RANK[level.verdict().status]
        level.guarded = not level.tainted
        assert Outcome(level.verdict()) == outcome

    @rule(data=st.data())
    def set_limits(self, data: st.DataObject) -> None:
        number = data.draw(st.integers(0, len(self.ledgers) - 1))
        level = self.levels[number]
        limits = data.draw(level_limits(tuple(level.lines)))
        outcome = self.ledgers[number].set_limits(limits)
        lowered = False
        for dim, limit in limits.items():
            line = level.lines[dim]
            lowered = lowered or limit.limit < line.limit
            line.limit, line.warn, line.headroom = limit.limit, limit.warn, limit.headroom
        if lowered:
            level.guarded = False
            level.tainted |= {model.id for _, model, _ in self.open if level in model.levels}
        verdict = level.verdict()
        crossings = (Crossing(level.name, verdict, 0),) if RANK[verdict.status] > level.peak else ()
        level.peak = RANK[verdict.status]
        assert Outcome(verdict, crossings) == outcome

    # -- after every step -----------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        for ledger, level in zip(self.ledgers, self.levels):
            assert level.snapshot() == ledger.snapshot()

    @invariant()
    def same_chain_verdicts(self) -> None:
        for chain, levels in self.chains:
            assert worst([level.verdict() for level in levels]) == chain.verdict()

    @invariant()
    def guarded_budgets_never_overspend(self) -> None:
        for ledger, level in zip(self.ledgers, self.levels):
            if level.guarded:
                for spent, reserved, limit in zip(ledger.spent, ledger.reserved, ledger.limits):
                    assert spent + reserved <= limit.limit

    @invariant()
    def leases_open_exactly_until_closed(self) -> None:
        assert all(lease.open for lease, _, _ in self.open)
        assert not any(lease.open for lease in self.closed)


TestKernelMachine = KernelMachine.TestCase
# Every disagreement is one bug (the kernel differs from the model): shrink the first one
# found instead of shrinking one example per failing assertion line.
TestKernelMachine.settings = settings(report_multiple_bugs=False)
