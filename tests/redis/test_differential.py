"""The Redis scripts against the kernel, over random sequences of operations.

A hypothesis state machine builds a chain of one to three budgets (sometimes with a
sibling leaf sharing the ancestors) twice: as kernel `Ledger`s in a `Chain`, and as
`RedisStore` accounts on a real Redis. Every operation (reserve, settle, release,
charge, strict charge, reset, set_limits, new limits on opening with update_limits, a
second close, a retried close, an unknown lease) runs on both, and every verdict,
crossing, denial and refusal must be equal, as must the full state of every budget after
every step. Amounts and limits include values
at and near ``2**63 - 1``, where Lua's doubles would be wrong without exact arithmetic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiobudget import BudgetExceeded, ReservationClosed
from aiobudget.kernel import Chain, Denial, Lease, Ledger, Limit, Outcome
from aiobudget.stores._redis_account import RedisAccount, RedisHeld
from aiobudget.stores.redis import RedisStore

from ..conftest import REDIS_URL, _redis_answers

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not _redis_answers(REDIS_URL), reason=f"no Redis at {REDIS_URL}"),
]

T = TypeVar("T")
MAX = 2**63 - 1
DIMS = ("a", "b", "c", "d")
# Names that need escaping: hash-tag braces, separators, globs, spaces, unicode.
NAMES = ("leaf:{}", "mid/é ü", "root {x}:*", "sib ling?[]")

# Small values make limits, warn levels and headroom interact; values at and around
# 2**53 (where doubles stop being exact), 10**15 (a limb boundary of the Lua numbers) and
# 2**63 - 1 (where sums saturate) are where a naive Lua port would go wrong.
SMALL = st.integers(0, 12)
HUGE = st.integers(MAX - 12, MAX)
EDGES = st.sampled_from(
    [MAX // 2, MAX // 2 + 1, 2**53 - 1, 2**53, 2**53 + 1, 10**15 - 1, 10**15, 10**15 + 1]
)
AMOUNTS = st.one_of(SMALL, SMALL, SMALL, SMALL, SMALL, SMALL, HUGE, EDGES)
LIMITS = st.one_of(st.integers(0, 40), st.integers(0, 40), HUGE, HUGE, EDGES)


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


def amounts_for(dims: tuple[str, ...], *, small: bool = False) -> st.SearchStrategy[dict[str, int]]:
    """Amounts by name on some of *dims* (the others are 0); *small* ones likely fit."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(dims, SMALL if small else AMOUNTS))


class Differential(RuleBasedStateMachine):
    """Drives kernel chains and Redis accounts side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"aiobudget-test-diff-{uuid.uuid4().hex[:12]}"
        self.store = RedisStore(REDIS_URL, prefix=self.prefix)
        self.ledgers: list[Ledger] = []
        self.accounts: list[RedisAccount] = []  # accounts[i] has ledgers[i] as its leaf
        self.parents: list[RedisAccount | None] = []  # the parent account of accounts[i]
        self.chains: list[tuple[Chain, RedisAccount]] = []
        self.open: list[tuple[Lease, RedisHeld]] = []
        self.closed: list[tuple[Lease, RedisHeld, Any]] = []  # with the outcome it closed with

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def clean() -> None:
            client = self.store._client()
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}*")]
            if keys:
                await client.delete(*keys)
            await self.store.aclose()

        try:
            self.run(clean())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def add_level(self, name: str, limits: dict[str, Limit], parent: RedisAccount | None) -> None:
        self.ledgers.append(Ledger(limits, name=name))
        self.accounts.append(self.store.open(name, limits, parent=parent))
        self.parents.append(parent)

    @initialize(data=st.data(), depth=st.integers(1, 3))
    def build(self, data: st.DataObject, depth: int) -> None:
        """A chain leaf -> parent -> grandparent, and maybe a sibling leaf."""
        drawn = [data.draw(level_limits()) for _ in range(depth)]
        # Redis accounts are opened root first; kept leaf first, as the kernel's chain.
        accounts: list[RedisAccount] = []
        parent = None
        for number in reversed(range(depth)):
            parent = self.store.open(NAMES[number], drawn[number], parent=parent)
            accounts.insert(0, parent)
        self.ledgers = [Ledger(limits, name=NAMES[n]) for n, limits in enumerate(drawn)]
        self.accounts = accounts
        self.parents = [*accounts[1:], None]
        self.chains.append((Chain(self.ledgers), accounts[0]))
        if depth > 1 and data.draw(st.booleans()):
            limits = data.draw(level_limits())
            self.add_level(NAMES[3], limits, accounts[1])
            chain = Chain([self.ledgers[-1], *self.ledgers[1:depth]])
            self.chains.append((chain, self.accounts[-1]))

    def pick_chain(self, data: st.DataObject) -> tuple[Chain, RedisAccount]:
        return self.chains[data.draw(st.integers(0, len(self.chains) - 1))]

    # -- reservations ---------------------------------------------------------------------

    @rule(data=st.data(), use_headroom=st.booleans(), small=st.booleans())
    def reserve(self, data: st.DataObject, use_headroom: bool, small: bool) -> None:
        chain, account = self.pick_chain(data)
        vector = chain.leaf.vector(data.draw(amounts_for(chain.leaf.dims, small=small)))
        expected = chain.reserve(vector, use_headroom=use_headroom)
        actual = self.run(account.reserve(vector, use_headroom=use_headroom, timeout=None))
        if isinstance(expected, Denial):
            event("reserve: impossible" if expected.impossible else "reserve: denied")
            assert expected == actual
            return
        event(f"reserve: granted on {len(chain.ledgers)} levels")
        assert isinstance(actual, RedisHeld)
        assert expected.outcome == actual.outcome
        self.open.append((expected, actual))

    @precondition(lambda self: self.open)
    @rule(data=st.data(), within=st.booleans())
    def settle(self, data: st.DataObject, within: bool) -> None:
        lease, held = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        leaf = lease.chain.leaf
        actual = data.draw(amounts_for(leaf.dims))
        if within:  # actual <= reserved: the common case
            actual = {
                dim: min(amount, lease.amounts[leaf.dims.index(dim)])
                for dim, amount in actual.items()
            }
        vector = leaf.vector(actual)
        expected = lease.settle(vector)
        assert expected == self.run(held.account.settle(held, vector))
        if expected.crossings:
            event("settle: crossing")
        self.closed.append((lease, held, expected))

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        lease, held = self.open.pop(data.draw(st.integers(0, len(self.open) - 1)))
        expected = lease.release()
        assert expected == self.run(held.account.release(held))
        self.closed.append((lease, held, expected))

    @precondition(lambda self: self.closed)
    @rule(data=st.data(), settle=st.booleans())
    def close_again(self, data: st.DataObject, settle: bool) -> None:
        """A second settle or release of the same reservation is refused."""
        lease, held, _ = data.draw(st.sampled_from(self.closed))
        with pytest.raises(ReservationClosed):
            lease.settle((1,) * len(lease.chain.leaf.dims)) if settle else lease.release()
        with pytest.raises(ReservationClosed):
            self.run(self.close(held, settle))

    def close(self, held: RedisHeld, settle: bool) -> Coroutine[Any, Any, Outcome]:
        """Settle (with 1 of each dimension) or release *held*."""
        account = held.account
        if settle:
            return account.settle(held, (1,) * len(account.dims))
        return account.release(held)

    @precondition(lambda self: self.closed)
    @rule(data=st.data(), settle=st.booleans())
    def retry_close(self, data: st.DataObject, settle: bool) -> None:
        """A close retried with the same lease id (its first reply lost) answers as the
        first did and changes nothing."""
        _, held, first = data.draw(st.sampled_from(self.closed))
        again = RedisHeld(held.account, held.lease, held.outcome)
        assert first == self.run(self.close(again, settle))

    @rule(data=st.data(), settle=st.booleans())
    def unknown_lease(self, data: st.DataObject, settle: bool) -> None:
        """A lease Redis never granted cannot be settled or released."""
        _, account = self.pick_chain(data)
        ghost = RedisHeld(account, uuid.uuid4().hex, self.chains[0][1].levels[0].outcomes[0])
        with pytest.raises(ReservationClosed):
            self.run(self.close(ghost, settle))

    # -- charges ------------------------------------------------------------------------

    @rule(data=st.data())
    def charge(self, data: st.DataObject) -> None:
        chain, account = self.pick_chain(data)
        vector = chain.leaf.vector(data.draw(amounts_for(chain.leaf.dims)))
        assert chain.charge(vector) == self.run(account.charge(vector, strict=False))

    @rule(data=st.data())
    def strict_charge(self, data: st.DataObject) -> None:
        chain, account = self.pick_chain(data)
        vector = chain.leaf.vector(data.draw(amounts_for(chain.leaf.dims)))
        try:
            expected = chain.charge(vector, strict=True)
        except BudgetExceeded as exc:
            refusal = exc
        else:
            assert expected == self.run(account.charge(vector, strict=True))
            return
        event("strict charge: refused")
        with pytest.raises(BudgetExceeded) as info:
            self.run(account.charge(vector, strict=True))
        error = info.value
        assert (refusal.budget, refusal.dim, refusal.limit, refusal.attempted) == (
            error.budget,
            error.dim,
            error.limit,
            error.attempted,
        )

    # -- periods and limits -----------------------------------------------------------

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        number = data.draw(st.integers(0, len(self.ledgers) - 1))
        assert self.ledgers[number].reset() == self.run(self.accounts[number].reset())

    @rule(data=st.data())
    def set_limits(self, data: st.DataObject) -> None:
        number = data.draw(st.integers(0, len(self.ledgers) - 1))
        ledger = self.ledgers[number]
        limits = data.draw(level_limits(ledger.dims))
        assert ledger.set_limits(limits) == self.run(self.accounts[number].set_limits(limits))

    @rule(data=st.data())
    def update_limits_on_opening(self, data: st.DataObject) -> None:
        """The budget opened again with new limits and update_limits=True: the store
        applies them at the new account's first call; as with the kernel's
        ``set_limits(report=False)``, a crossing they cause is reported by the next
        operation (compared by the rules that follow)."""
        number = data.draw(st.integers(0, len(self.ledgers) - 1))
        ledger = self.ledgers[number]
        limits = data.draw(level_limits(ledger.dims))
        ledger.set_limits(limits, report=False)
        name = ledger.name
        assert name is not None
        account = self.store.open(name, limits, parent=self.parents[number], update_limits=True)
        assert ledger.snapshot() == self.run(account.snapshot())

    # -- after every step ---------------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        for ledger, account in zip(self.ledgers, self.accounts):
            assert ledger.snapshot() == self.run(account.snapshot())
            if any(
                spent + reserved > 2**53 for spent, reserved in zip(ledger.spent, ledger.reserved)
            ):
                event("state: a total above 2**53")


Differential.TestCase.settings = settings(max_examples=120, stateful_step_count=30)
TestDifferential = Differential.TestCase
