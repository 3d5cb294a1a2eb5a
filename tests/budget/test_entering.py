"""A reservation is entered once, and one left held at interpreter exit goes quietly.

Entering a reservation that is already entered (nested ``async with r:`` on the same
object, or a `try_reserve` result entered twice) raises `ReservationClosed`, as entering
a closed one does, and leaves the outer block holding its budget. A reservation still
held when Python exits is refunded with its `ResourceWarning`, never an "Exception
ignored" from its finalizer.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aiobudget
from aiobudget import TOKENS, Budget, ReservationClosed
from aiobudget._reservation import enter

from ._support import state


class TestEnteredOnce:
    pytestmark = pytest.mark.anyio

    async def test_nested_enter_of_the_same_reservation_is_refused(self) -> None:
        """``async with r:`` inside ``async with r:`` raises; the outer block still holds
        the budget and its exit settles it once."""
        budget = Budget({TOKENS: 100})
        r = budget.reserve(tokens=40)
        async with r:
            with pytest.raises(ReservationClosed, match="entered already"):
                async with r:
                    pytest.fail("the inner block must not run")
            assert r.held
            assert ({TOKENS: 0}, {TOKENS: 40}) == await state(budget)
            r.record(tokens=10)
        assert ({TOKENS: 10}, {TOKENS: 0}) == await state(budget)

    async def test_a_try_reserve_result_is_entered_once(self) -> None:
        """A `try_reserve` result may be entered once (its block closes it); entering it
        again inside that block raises and keeps the budget held."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=30)
        assert r is not None
        async with r:
            with pytest.raises(ReservationClosed):
                async with r:
                    pytest.fail("the inner block must not run")
            assert ({TOKENS: 0}, {TOKENS: 30}) == await state(budget)
            r.record(tokens=20)
        assert ({TOKENS: 20}, {TOKENS: 0}) == await state(budget)
        with pytest.raises(ReservationClosed):
            async with r:
                pytest.fail("a closed reservation must not be entered")

    async def test_entering_by_hand_twice_is_refused(self) -> None:
        """Calling ``__aenter__`` twice raises the second time and changes nothing."""
        budget = Budget({TOKENS: 100})
        r = budget.reserve(tokens=25)
        await r.__aenter__()
        with pytest.raises(ReservationClosed):
            await r.__aenter__()
        assert ({TOKENS: 0}, {TOKENS: 25}) == await state(budget)
        await r.__aexit__(None, None, None)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_entering_outside_a_block_twice_is_refused(self) -> None:
        """The seam the web guards use (reserve now, close with a later ``async with``)
        enters a reservation once too."""
        budget = Budget({TOKENS: 100})
        r = budget.reserve(tokens=10)
        assert r is await enter(r)
        with pytest.raises(ReservationClosed):
            await enter(r)
        async with r:
            r.record(tokens=4)
        assert ({TOKENS: 4}, {TOKENS: 0}) == await state(budget)

    async def test_a_budget_taken_by_another_task_is_not_reachable_by_reentering(
        self,
    ) -> None:
        """The refused inner block cannot settle the reservation early: no other request
        can take its budget while the outer block runs."""
        budget = Budget({TOKENS: 10})
        async with budget.reserve(tokens=10) as r:
            with pytest.raises(ReservationClosed):
                async with r:
                    pass
            assert await budget.try_reserve(tokens=1) is None
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)


_LEFT_HELD = """
import asyncio
import aiobudget

budget = aiobudget.Budget({"tokens": 10}, name="left")
{configure}

async def main():
    global held
    held = await budget.try_reserve(tokens=5)

asyncio.run(main())
print("main done", flush=True)
"""


@pytest.mark.slow
class TestInterpreterExit:
    @pytest.mark.parametrize(
        "configure",
        [
            "",  # structlog as the library finds it: unconfigured
            "import structlog; structlog.configure(cache_logger_on_first_use=True)",
        ],
        ids=["unconfigured", "configured"],
    )
    def test_a_reservation_held_at_exit_warns_without_an_ignored_exception(
        self, configure: str, tmp_path: Path
    ) -> None:
        """A reservation still held when Python exits emits its ResourceWarning and no
        "Exception ignored in ... __del__"."""
        script = tmp_path / "left_held.py"
        script.write_text(textwrap.dedent(_LEFT_HELD).replace("{configure}", configure))
        src = str(Path(aiobudget.__file__).resolve().parents[1])
        done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
            [sys.executable, "-W", "always::ResourceWarning", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert 0 == done.returncode, done.stderr
        assert "main done" in done.stdout
        assert "Exception ignored" not in done.stderr
        assert "Traceback" not in done.stderr
        assert "ResourceWarning" in done.stderr
        assert "garbage-collected while holding budget" in done.stderr
