"""`aiobudget.litellm.BudgetLogger`, driven through ``litellm.acompletion`` itself: with
its ``mock_response``, and with a custom provider that counts the calls reaching it.

LiteLLM reports a call's end in the background, shortly after ``acompletion`` returns:
`settled` waits (bounded) for that report, the one wait these tests cannot avoid.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.
# E402: LiteLLM must be told not to fetch its price map before it is imported.
# ruff: noqa: E402

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import pytest

# Never fetch LiteLLM's price map from the network: use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

from litellm import CustomLLM
from litellm.integrations.custom_logger import CustomLogger

import aiobudget.litellm
from aiobudget import CALLS, COST, TOKENS, Budget, BudgetExhausted, MemoryStore, Pricing, usd
from aiobudget.litellm import BudgetLogger

from ._helpers import state

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "hi"}]
PRICING = Pricing("1", "2")


class Witness(CustomLogger):
    """Notes what LiteLLM reported for each call: its usage and its cost."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[int, float | None]] = []
        self.instance_id = id(self)  # LiteLLM keeps one logger per class and public scalars

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.reports.append((response_obj.usage.total_tokens, kwargs.get("response_cost")))


class Counting(CustomLLM):
    """A provider (``counting/...``) that counts the calls reaching it and can wait at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.gate: anyio.Event | None = None

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="hi")


@pytest.fixture
def witness(monkeypatch: pytest.MonkeyPatch) -> Witness:
    """LiteLLM's callbacks, restored afterwards; a witness among them."""
    seen = Witness()
    monkeypatch.setattr(litellm, "callbacks", [seen])
    return seen


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Counting:
    """The counting provider, registered for the test."""
    counting = Counting()
    monkeypatch.setattr(
        litellm, "custom_provider_map", [{"provider": "counting", "custom_handler": counting}]
    )
    return counting


def use(logger: BudgetLogger) -> None:
    litellm.callbacks.insert(0, logger)


async def settled(budget: Budget) -> tuple[dict[str, int], dict[str, int]]:
    """``(spent, reserved)`` once nothing is reserved (LiteLLM's report came), within 5 s."""
    with anyio.fail_after(5):
        # LiteLLM reports from its own workers: there is no event to wait on.
        while any((await budget.snapshot()).reserved.values()):  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return await state(budget)


class TestCompletion:
    async def test_a_call_that_fits_charges_the_usage_and_litellms_cost(
        self, witness: Witness
    ) -> None:
        """A mocked call is charged its usage, and LiteLLM's response_cost exactly (not
        the Pricing figure)."""
        budget = Budget({TOKENS: 10_000, COST: usd("1"), CALLS: 10})
        use(BudgetLogger(budget, pricing=PRICING))
        await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="hello", max_tokens=50
        )
        spent, _ = await settled(budget)
        [(tokens, cost)] = witness.reports
        assert cost is not None
        assert {TOKENS: tokens, COST: usd(cost), CALLS: 1} == spent
        assert spent[COST] != PRICING.cost(input_tokens=10, output_tokens=20)

    async def test_concurrent_calls_never_pass_the_budget(
        self, witness: Witness, provider: Counting
    ) -> None:
        """20 calls at once on a budget of 7 calls: exactly 7 reach the provider."""
        budget = Budget({CALLS: 7})
        use(BudgetLogger(budget))
        provider.gate = anyio.Event()
        outcomes: list[str] = []

        async def call() -> None:
            try:
                await litellm.acompletion(model="counting/x", messages=MESSAGES)
                outcomes.append("ok")
            except BudgetExhausted:
                outcomes.append("denied")

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)
            with anyio.fail_after(5):  # LiteLLM reaches the provider through threads too
                while provider.calls < 7 or len(outcomes) < 13:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            provider.gate.set()
        assert (7, 13) == (outcomes.count("ok"), outcomes.count("denied"))
        assert 7 == provider.calls
        assert ({CALLS: 7}, {CALLS: 0}) == await settled(budget)

    async def test_a_call_that_does_not_fit_is_never_sent(
        self, witness: Witness, provider: Counting
    ) -> None:
        """With one call left and used, the next call raises before the provider."""
        budget = Budget({CALLS: 1})
        use(BudgetLogger(budget))
        await litellm.acompletion(model="counting/x", messages=MESSAGES)
        with pytest.raises(BudgetExhausted):
            await litellm.acompletion(model="counting/x", messages=MESSAGES)
        assert 1 == provider.calls
        assert ({CALLS: 1}, {CALLS: 0}) == await settled(budget)

    async def test_a_failed_call_is_refunded(self, witness: Witness) -> None:
        """A call that fails is refunded when LiteLLM reports the failure."""
        budget = Budget({TOKENS: 10_000, CALLS: 10})
        use(BudgetLogger(budget))
        with pytest.raises(litellm.exceptions.InternalServerError):
            await litellm.acompletion(
                model="gpt-4o-mini",
                messages=MESSAGES,
                mock_response=Exception("provider down"),
                max_tokens=50,
            )
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await settled(budget)


class TestStream:
    async def test_a_stream_read_to_the_end_is_charged_its_usage(self, witness: Witness) -> None:
        """A stream read to its end is charged what LiteLLM reported for it."""
        budget = Budget({TOKENS: 10_000, COST: usd("1")})
        use(BudgetLogger(budget, pricing=PRICING))
        stream = await litellm.acompletion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="hello there friend",
            max_tokens=50,
            stream=True,
        )
        async for _ in stream:
            pass
        spent, _ = await settled(budget)
        [(tokens, cost)] = witness.reports
        assert cost is not None
        assert {TOKENS: tokens, COST: usd(cost)} == spent

    async def test_an_abandoned_stream_is_refunded_after_its_time_to_live(
        self, witness: Witness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """LiteLLM reports nothing for a stream left unread: the reservation stays held
        until its ttl, then the store refunds it (by the store's clock), and the logger
        forgets it at its next call."""
        now = [1_000_000.0]
        budget = Budget({TOKENS: 10_000, CALLS: 10}, store=MemoryStore(clock=lambda: now[0]))
        logger = BudgetLogger(budget, ttl=30)
        use(logger)
        stream = await litellm.acompletion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="hello there friend",
            max_tokens=50,
            stream=True,
        )
        async for _ in stream:
            break
        await anyio.wait_all_tasks_blocked()
        held = (await state(budget))[1]
        now[0] += 31
        assert 1 == held[CALLS]
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        later = time.monotonic() + 31
        monkeypatch.setattr(aiobudget.litellm, "_now", lambda: later)
        await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="hi", max_tokens=5
        )
        assert ({TOKENS: 30, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await settled(budget)
        assert [] == [r for r in logger._held.values() if r[0].held]
