"""Small helpers shared by the Budget tests."""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping

import anyio

from aiobudget import Budget, BudgetExhausted


def drop(refs: list[object]) -> None:
    """Drop the last references (held in *refs*) to objects and collect them, in one
    statement a ``pytest.warns`` block can hold."""
    refs.clear()
    gc.collect()


async def state(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    """``(spent, reserved)`` of *budget*, as plain dicts."""
    snapshot = await budget.snapshot()
    return dict(snapshot.spent), dict(snapshot.reserved)


async def spent(budget: Budget) -> dict[str, int]:
    """What *budget* has spent, per dimension."""
    return dict((await budget.snapshot()).spent)


async def reserved(budget: Budget) -> dict[str, int]:
    """What live reservations hold on *budget*, per dimension."""
    return dict((await budget.snapshot()).reserved)


class Worker:
    """A task that reserves, signals that it holds, waits to be told to leave, records,
    and leaves; it notes how it ended instead of raising.

    ``outcome`` is ``None`` (not finished reserving), ``"held"``, ``"denied"`` (with
    ``error``), ``"cancelled"`` or ``"done"``; ``log`` (shared between workers, if given)
    receives ``name`` when the worker gets its reservation.
    """

    def __init__(
        self,
        budget: Budget,
        name: str,
        amounts: Mapping[str, int],
        *,
        timeout: float | None = math.inf,
        record: Mapping[str, int] | None = None,
        log: list[str] | None = None,
    ) -> None:
        self.budget = budget
        self.name = name
        self.amounts = dict(amounts)
        self.timeout = timeout
        self.record = dict(record) if record else None
        self.log = log if log is not None else []
        self.outcome: str | None = None
        self.error: BudgetExhausted | None = None
        self.scope = anyio.CancelScope()
        self.holding = anyio.Event()
        self.leave = anyio.Event()
        self.finished = anyio.Event()

    async def run(self) -> None:
        try:
            with self.scope:
                try:
                    async with self.budget.reserve(self.amounts, timeout=self.timeout) as r:
                        self.outcome = "held"
                        self.log.append(self.name)
                        self.holding.set()
                        await self.leave.wait()
                        if self.record:
                            r.record(self.record)
                    self.outcome = "done"
                except BudgetExhausted as exc:
                    self.outcome, self.error = "denied", exc
                except anyio.get_cancelled_exc_class():
                    self.outcome = "cancelled"
                    raise
        finally:
            self.finished.set()
