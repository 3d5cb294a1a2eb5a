"""Simulated agents in an anyio task group share one budget, each through its own child.

No model is called: latency and usage are random. Run: python examples/agents_task_group.py
"""

from __future__ import annotations

import logging
import random
from collections import Counter

import anyio
import structlog

from aiobudget import CALLS, COST, TOKENS, Budget, BudgetExhausted, Limit, Pricing, Usage, usd

PRICING = Pricing(input="2.50", output="10")  # USD per million tokens
MAX_OUTPUT = 500  # the max_tokens we ask for: the output part of each estimate


async def agent(index: int, team: Budget, outcomes: Counter[str]) -> None:
    rng = random.Random(index)  # one generator per agent: the same story on every run
    # Each agent's own caps; every reservation must fit both its own and the team's.
    own = team.child({TOKENS: 8_000, COST: usd("0.05"), CALLS: 20}, name=f"agent-{index}")
    for _ in range(8):
        prompt = rng.randint(200, 1_500)
        estimate = PRICING.priced(Usage(input_tokens=prompt, output_tokens=MAX_OUTPUT, calls=1))
        try:
            # Wait up to 0.5 s, first come first served, for budget that calls give back.
            async with own.reserve(estimate, timeout=0.5) as reservation:
                await anyio.sleep(rng.uniform(0.01, 0.1))  # the "LLM call"
                output = rng.randint(20, MAX_OUTPUT)
                used = Usage(input_tokens=prompt, output_tokens=output, calls=1)
                reservation.record(PRICING.priced(used))
            # Leaving the block charged what was recorded and refunded the rest.
        except BudgetExhausted as exc:  # exc.budget names the level that said no
            level = "the team" if exc.budget == team.name else "its own budget"
            outcomes[f"agents stopped: {level} out of {exc.dim}"] += 1
            return
        outcomes["calls made"] += 1
    outcomes["agents that made all 8 calls"] += 1


async def main() -> None:
    team = Budget({TOKENS: Limit(130_000, warn=100_000), COST: usd("1"), CALLS: 150}, name="team")
    outcomes: Counter[str] = Counter()
    async with anyio.create_task_group() as tg:
        for index in range(20):
            tg.start_soon(agent, index, team, outcomes)

    snapshot = await team.snapshot()
    for dim, limit in snapshot.limits.items():
        spent, reserved = snapshot.spent[dim], snapshot.reserved[dim]
        print(f"{dim:12} spent {spent:>9,} of {limit.limit:>9,}  (reserved {reserved})")
        assert spent <= limit.limit  # never overspent
        assert reserved == 0  # every reservation settled or refunded
    for outcome, count in sorted(outcomes.items()):
        print(f"{outcome}: {count}")
    print(f"verdict: {snapshot.verdict.status.value} ({snapshot.verdict.dim})")


if __name__ == "__main__":
    # The application decides what to log (a library never does): warnings and up.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main)
