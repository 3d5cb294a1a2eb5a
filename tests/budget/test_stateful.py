"""A Budget with a child, driven by concurrent tasks, against a plain model.

A hypothesis state machine starts tasks that reserve on the parent or the child (some
waiting, some not, some allowed into headroom), records usage (never more than was
reserved), and ends tasks normally, by an exception, by ``commit`` or by cancellation,
waiting or holding; it also makes strict charges and resets. After every step the event
loop runs until every task is blocked, and the library must agree with the model:

- ``reserved`` at each level is exactly what the holding tasks reserved there;
- ``spent`` at each level is exactly what the model charged (no refund lost or
  duplicated), and ``spent + reserved`` never passes a limit;
- a strict charge is refused exactly when the model says it would pass a limit;
- waiting is live and fair: walking the waiters in arrival order, each one that no
  earlier waiter holds back does not fit now (or it would have been granted), and could
  fit once live reservations settle (or it would have been told so); a newcomer that an
  earlier waiter holds back is not granted.

A waiter holds back, at every level of its chain from its own budget up to the first
level that refuses it, the requests that ask something of a dimension it asks there
(and every request allowed into headroom); requests that ask nothing it waits for pass.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aiobudget import CALLS, TOKENS, Budget, BudgetExceeded, BudgetExhausted, Limit, Reservation

DIMS = (TOKENS, CALLS)
LIMITS = {
    "parent": {TOKENS: Limit(100, warn=70, headroom=10), CALLS: Limit(6)},
    "child": {TOKENS: Limit(60, headroom=5), CALLS: Limit(4, warn=2)},
}
CHAINS = {"parent": ("parent",), "child": ("child", "parent")}


class Boom(Exception):
    """Raised inside a reservation block by the ``raise`` ending."""


@dataclass
class Task:
    """One task's reservation, as the machine sees it."""

    number: int
    level: str
    amounts: dict[str, int]
    timeout: float | None
    use_headroom: bool
    state: str = "starting"  # waiting, held, denied, finished, cancelled
    recorded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIMS, 0))
    committed: bool = False
    ending: str | None = None
    reservation: Reservation | None = None
    scope: Any = None
    leave: Any = None

    async def run(self, budget: Budget) -> None:
        self.scope = anyio.CancelScope()
        self.leave = anyio.Event()
        self.state = "waiting"
        with self.scope:
            try:
                async with budget.reserve(
                    self.amounts, timeout=self.timeout, use_headroom=self.use_headroom
                ) as r:
                    self.reservation = r
                    self.state = "held"
                    await self.leave.wait()
                    if self.ending == "raise":
                        raise Boom
            except BudgetExhausted:
                self.state = "denied"
                return
            except Boom:
                pass
        self.state = "cancelled" if self.scope.cancelled_caught else "finished"


class BudgetMachine(RuleBasedStateMachine):
    def __init__(self, backend: tuple[str, dict[str, Any]]) -> None:
        super().__init__()
        self.stack = ExitStack()
        self.portal: BlockingPortal = self.stack.enter_context(
            start_blocking_portal(backend[0], backend[1])
        )
        parent = Budget(LIMITS["parent"], name="parent")
        child = parent.child(LIMITS["child"], name="child")
        self.budgets = {"parent": parent, "child": child}
        self.spent = {level: dict.fromkeys(DIMS, 0) for level in LIMITS}
        self.tasks: list[Task] = []

    # -- the model ------------------------------------------------------------------

    def live(self, *states: str) -> list[Task]:
        return [t for t in self.tasks if t.state in states]

    def held_by(self, level: str) -> dict[str, int]:
        """What the model says is reserved at *level*: the holding tasks' amounts."""
        out = dict.fromkeys(DIMS, 0)
        for task in self.live("held"):
            if level in CHAINS[task.level] and not task.committed:
                for dim in DIMS:
                    out[dim] += task.amounts[dim]
        return out

    def cap(self, level: str, dim: str, use_headroom: bool) -> int:
        limit = LIMITS[level][dim]
        return limit.limit if use_headroom else limit.limit - limit.headroom

    def charge_model(self, level: str, amounts: dict[str, int]) -> None:
        for each in CHAINS[level]:
            for dim in DIMS:
                self.spent[each][dim] += amounts[dim]

    def settle_model(self, task: Task) -> None:
        """What the task's exit charges: what it recorded (nothing: a full refund)."""
        if not task.committed:
            self.charge_model(task.level, task.recorded)

    def quiesce(self) -> None:
        self.portal.call(anyio.wait_all_tasks_blocked)

    # -- rules -----------------------------------------------------------------------

    @precondition(lambda self: len(self.live("waiting", "held")) < 8)
    @rule(
        level=st.sampled_from(["parent", "child"]),
        tokens=st.integers(0, 60),
        calls=st.integers(0, 3),
        timeout=st.sampled_from([None, 0, math.inf, math.inf, math.inf, 30.0]),
        use_headroom=st.booleans(),
    )
    def start(
        self, level: str, tokens: int, calls: int, timeout: float | None, use_headroom: bool
    ) -> None:
        task = Task(len(self.tasks), level, {TOKENS: tokens, CALLS: calls}, timeout, use_headroom)
        jumps_the_queue = self.is_held_back(task, *self.held_back())
        self.tasks.append(task)
        self.portal.start_task_soon(task.run, self.budgets[level])
        self.quiesce()
        if jumps_the_queue:
            assert "held" != task.state, "a newcomer overtook a waiter that holds its level"

    @precondition(lambda self: self.live("held"))
    @rule(data=st.data(), share=st.floats(0, 1))
    def record(self, data: st.DataObject, share: float) -> None:
        task = data.draw(st.sampled_from(self.live("held")))
        if task.committed:
            return
        # Never more than reserved, so the limits must hold whatever the interleaving.
        use = {dim: int((task.amounts[dim] - task.recorded[dim]) * share) for dim in DIMS}
        assert task.reservation is not None
        self.portal.call(partial(task.reservation.record, use))
        for dim in DIMS:
            task.recorded[dim] += use[dim]

    @precondition(lambda self: self.live("held"))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.live("held")))
        if task.committed:
            return
        assert task.reservation is not None
        self.portal.call(task.reservation.commit)
        self.charge_model(task.level, task.recorded)
        task.committed = True
        self.quiesce()

    @precondition(lambda self: self.live("held"))
    @rule(data=st.data(), ending=st.sampled_from(["exit", "raise"]))
    def end(self, data: st.DataObject, ending: str) -> None:
        task = data.draw(st.sampled_from(self.live("held")))
        task.ending = ending
        self.portal.call(task.leave.set)
        self.quiesce()
        assert "finished" == task.state
        self.settle_model(task)

    @precondition(lambda self: self.live("waiting", "held"))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.live("waiting", "held")))
        was = task.state
        self.portal.call(task.scope.cancel)
        self.quiesce()
        assert "cancelled" == task.state
        if was == "held":
            self.settle_model(task)

    @rule(
        level=st.sampled_from(["parent", "child"]),
        tokens=st.integers(0, 30),
        calls=st.integers(0, 2),
    )
    def strict_charge(self, level: str, tokens: int, calls: int) -> None:
        amounts = {TOKENS: tokens, CALLS: calls}
        fits = all(
            self.spent[each][dim] + self.held_by(each)[dim] + amounts[dim]
            <= LIMITS[each][dim].limit
            for each in CHAINS[level]
            for dim in DIMS
        )
        try:
            self.portal.call(partial(self.budgets[level].charge, amounts, strict=True))
        except BudgetExceeded:
            assert not fits
        else:
            assert fits
            self.charge_model(level, amounts)
        self.quiesce()

    @rule(level=st.sampled_from(["parent", "child"]))
    def reset(self, level: str) -> None:
        self.portal.call(self.budgets[level].reset)
        self.spent[level] = dict.fromkeys(DIMS, 0)
        self.quiesce()

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def ledgers_match_the_model(self) -> None:
        for level, budget in self.budgets.items():
            snapshot = self.portal.call(budget.snapshot)
            assert self.held_by(level) == dict(snapshot.reserved), level
            assert self.spent[level] == dict(snapshot.spent), level
            for dim in DIMS:
                assert snapshot.spent[dim] + snapshot.reserved[dim] <= LIMITS[level][dim].limit

    @invariant()
    def nothing_reserved_when_no_task_holds(self) -> None:
        if not self.live("held", "waiting"):
            for budget in self.budgets.values():
                assert dict.fromkeys(DIMS, 0) == dict(self.portal.call(budget.snapshot).reserved)

    @precondition(lambda self: self.live("waiting", "held"))
    @rule()
    def cancel_everything(self) -> None:
        """Cancel every task, waiting or holding, one by one (then nothing is reserved)."""
        while live := self.live("waiting", "held"):
            task = live[0]  # an earlier cancellation may have ended a waiter (denied)
            was = task.state
            self.portal.call(task.scope.cancel)
            self.quiesce()
            assert "cancelled" == task.state
            if was == "held":
                self.settle_model(task)

    @staticmethod
    def is_held_back(task: Task, dims: set[tuple[str, str]], levels: set[str]) -> bool:
        """Whether earlier waiters holding back *dims* ((level, dimension) pairs) and
        *levels* hold *task* back."""
        chain = CHAINS[task.level]
        if task.use_headroom:
            return bool(levels.intersection(chain))
        return any((level, dim) in dims for level in chain for dim in DIMS if task.amounts[dim])

    def held_back(self) -> tuple[set[tuple[str, str]], set[str]]:
        """What waiting tasks hold back, walking them in arrival order: the (level,
        dimension) pairs and the levels. Checks on the way that each waiter not held back
        by an earlier one does not fit now (or it would have been granted) and could fit
        once live reservations settle (or it would have been told it cannot)."""
        dims: set[tuple[str, str]] = set()
        levels: set[str] = set()
        for task in self.live("waiting"):
            chain = CHAINS[task.level]
            if self.is_held_back(task, dims, levels):
                continue
            blocked = next(
                (
                    level
                    for level in chain
                    for dim in DIMS
                    if self.spent[level][dim] + self.held_by(level)[dim] + task.amounts[dim]
                    > self.cap(level, dim, task.use_headroom)
                ),
                None,
            )
            assert blocked is not None, f"task {task.number} fits but was not granted"
            possible = all(
                self.spent[level][dim] + task.amounts[dim]
                <= self.cap(level, dim, task.use_headroom)
                for level in chain
                for dim in DIMS
            )
            assert possible, f"task {task.number} can never fit but still waits"
            for level in chain[: chain.index(blocked) + 1]:
                levels.add(level)
                dims.update((level, dim) for dim in DIMS if task.amounts[dim])
        return dims, levels

    @invariant()
    def waiting_is_live_and_fair(self) -> None:
        self.held_back()

    def teardown(self) -> None:
        # Only clean up: a failure here would hide the one hypothesis is reporting.
        try:
            for task in self.live("waiting", "held"):
                self.portal.call(task.scope.cancel)
        finally:
            self.stack.close()


def test_budget_against_the_model(anyio_backend: tuple[str, dict[str, Any]]) -> None:
    """Random concurrent reservations, endings, charges and resets keep the ledgers of a
    budget and its child equal to the model, within the limits, and the waiters live.

    Sync on purpose: each machine runs its own event loop (of the backend under test)
    in a portal thread, so hypothesis can drive it step by step.
    """
    run_state_machine_as_test(
        partial(BudgetMachine, anyio_backend),
        settings=settings(max_examples=40, stateful_step_count=20, deadline=None),
    )
