"""Bad input at every entry point of `Budget`: SPEC "Bad input: a clear typed error, and
nothing changes".

Amounts, options, request limits, usage records, child limits and constructor limits,
each checked against a snapshot taken before.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import math
from typing import Any

import pytest

from aiobudget import (
    CALLS,
    TOKENS,
    Budget,
    InvalidAmount,
    InvalidLimits,
    Limit,
    MemoryStore,
    Status,
    UnknownDimension,
    Usage,
    Verdict,
)

from ._support import state

pytestmark = pytest.mark.anyio

CONTINUE = Verdict(Status.CONTINUE)

BAD_RESERVE: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception]]] = [
    ((), {TOKENS: -1}, InvalidAmount),
    ((), {TOKENS: True}, InvalidAmount),
    ((), {TOKENS: 1.0}, InvalidAmount),
    ((), {TOKENS: math.nan}, InvalidAmount),
    ((), {TOKENS: math.inf}, InvalidAmount),
    ((), {TOKENS: "1"}, InvalidAmount),
    ((), {TOKENS: 2**63}, InvalidAmount),
    (({TOKENS: -5},), {}, InvalidAmount),
    (([(TOKENS, 1)],), {}, InvalidAmount),
    ((5,), {}, InvalidAmount),
    ((), {"nope": 1}, UnknownDimension),
    (({"nope": 1},), {}, UnknownDimension),
    ((Usage(extra={"nope": 1}),), {}, UnknownDimension),
    ((), {TOKENS: 1, "timeout": -1}, ValueError),
    ((), {TOKENS: 1, "timeout": math.nan}, ValueError),
    ((), {TOKENS: 1, "timeout": "1"}, ValueError),
    ((), {TOKENS: 1, "on_unrecorded": "ignore"}, ValueError),
    ((), {TOKENS: 1, "use_headroom": "false"}, TypeError),
    ((), {TOKENS: 1, "use_headroom": 1}, TypeError),
    ((), {TOKENS: 1, "use_headroom": None}, TypeError),
    ((), {TOKENS: 1, "request_limit": {TOKENS: -1}}, InvalidAmount),
    ((), {TOKENS: 1, "request_limit": {"nope": 1}}, UnknownDimension),
]


class TestBadInputChangesNothing:
    @pytest.mark.parametrize(("args", "kwargs", "error"), BAD_RESERVE)
    async def test_reserve(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        """Bad arguments to reserve raise the typed error at the call, changing nothing."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=1)
        before = await budget.snapshot()
        with pytest.raises(error):
            budget.reserve(*args, **kwargs)
        assert before == await budget.snapshot()

    @pytest.mark.parametrize(("args", "kwargs", "error"), BAD_RESERVE)
    async def test_try_reserve(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        """Bad arguments to try_reserve raise the typed error, changing nothing."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=1)
        before = await budget.snapshot()
        with pytest.raises(error):
            await budget.try_reserve(*args, **kwargs)
        assert before == await budget.snapshot()

    @pytest.mark.parametrize("request_limit", ["tokens", [(TOKENS, 1)], 5])
    async def test_request_limit_of_the_wrong_type(self, request_limit: object) -> None:
        """A request_limit that is neither a Usage nor a mapping is InvalidAmount."""
        budget = Budget({TOKENS: 100})
        with pytest.raises(InvalidAmount):
            budget.reserve(tokens=1, request_limit=request_limit)  # type: ignore[arg-type]
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    @pytest.mark.parametrize("strict", ["no", 0, 1, None])
    async def test_charge_strict_takes_bools_only(self, strict: object) -> None:
        """``strict="no"`` is a TypeError, changing nothing, rather than a strict charge."""
        budget = Budget({TOKENS: 100})
        await budget.charge(tokens=1)
        with pytest.raises(TypeError, match="strict"):
            await budget.charge(tokens=200, strict=strict)  # type: ignore[arg-type]
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(budget)

    @pytest.mark.parametrize("update_limits", ["yes", 1, None])
    async def test_update_limits_takes_bools_only(self, update_limits: object) -> None:
        """``update_limits`` of a budget or a child is True or False, nothing else."""
        store = MemoryStore()
        budget = Budget({TOKENS: 100}, name="flags", store=store)
        with pytest.raises(TypeError, match="update_limits"):
            Budget({TOKENS: 5}, name="flags", store=store, update_limits=update_limits)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="update_limits"):
            budget.child({TOKENS: 5}, update_limits=update_limits)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="update_limits"):
            store.open("flags", {TOKENS: Limit(5)}, update_limits=update_limits)  # type: ignore[arg-type]
        assert {TOKENS: Limit(100)} == dict((await budget.snapshot()).limits)

    @pytest.mark.parametrize(
        ("args", "kwargs", "error"),
        [
            ((), {TOKENS: -1}, InvalidAmount),
            ((), {TOKENS: False}, InvalidAmount),
            ((), {TOKENS: 0.5}, InvalidAmount),
            (({TOKENS: 2**63},), {}, InvalidAmount),
            (("tokens",), {}, InvalidAmount),
            ((), {"nope": 1}, UnknownDimension),
            ((Usage(extra={"nope": 1}),), {}, UnknownDimension),
            (({TOKENS: 1},), {"nope": 1}, UnknownDimension),
        ],
    )
    @pytest.mark.parametrize("strict", [False, True])
    async def test_charge(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: type[Exception],
        strict: bool,
    ) -> None:
        """Bad arguments to charge raise the typed error, changing nothing."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        await budget.charge(tokens=1)
        before = await budget.snapshot()
        with pytest.raises(error):
            await budget.charge(*args, strict=strict, **kwargs)
        assert before == await budget.snapshot()

    @pytest.mark.parametrize(
        ("args", "kwargs", "error"),
        [
            ((), {TOKENS: -1}, InvalidAmount),
            ((), {TOKENS: True}, InvalidAmount),
            ((), {TOKENS: 1.0}, InvalidAmount),
            (({TOKENS: "1"},), {}, InvalidAmount),
            ((7,), {}, InvalidAmount),
            ((), {"nope": 1}, UnknownDimension),
            (({"nope": 1},), {}, UnknownDimension),
        ],
    )
    async def test_record(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        """Bad arguments to record raise the typed error and leave the record as it was."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        async with budget.reserve(tokens=10) as r:
            r.record(tokens=2)
            with pytest.raises(error):
                r.record(*args, **kwargs)
            assert {TOKENS: 2, CALLS: 0} == r.recorded
        assert ({TOKENS: 2, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_record_half_bad_mapping_records_nothing(self) -> None:
        """A mapping with one good and one bad amount records neither."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        async with budget.reserve(tokens=10) as r:
            with pytest.raises(InvalidAmount):
                r.record({TOKENS: 3, CALLS: -1})
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    @pytest.mark.parametrize(
        ("limits", "error"),
        [
            ({"a b": 1}, InvalidLimits),
            ({"": 1}, InvalidLimits),
            ({TOKENS: Limit(10, warn=5), "x": -1}, InvalidAmount),
            ({TOKENS: 1.5}, InvalidAmount),
            ([(TOKENS, 1)], InvalidLimits),
        ],
    )
    async def test_child(self, limits: Any, error: type[Exception]) -> None:
        """A child with bad limits raises, and the parent is unchanged."""
        budget = Budget({TOKENS: 100})
        await budget.charge(tokens=1)
        before = await budget.snapshot()
        with pytest.raises(error):
            budget.child(limits)
        assert before == await budget.snapshot()

    @pytest.mark.parametrize(
        ("limits", "error"),
        [
            ({}, InvalidLimits),
            ({"a/b": 1}, InvalidLimits),
            ({TOKENS: Limit(10, warn=5, headroom=3), "x": True}, InvalidAmount),
            ("tokens", InvalidLimits),
        ],
    )
    def test_constructor(self, limits: Any, error: type[Exception]) -> None:
        """Bad limits at construction raise the typed error (a ValueError)."""
        with pytest.raises(error):
            Budget(limits)
        assert issubclass(error, ValueError)
