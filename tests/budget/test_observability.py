"""Logs and callbacks: SPEC "Logging goes through structlog with stable event names".

Each event with its fields; warn and exhausted once per crossing; ``on_warn`` and
``on_exhausted`` (sync or async) once per crossing with the budget's name and the
verdict; a failing callback is logged and never breaks accounting; the library never
configures structlog.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import structlog
from anyio import wait_all_tasks_blocked
from structlog.testing import capture_logs

from aiobudget import CALLS, TOKENS, Budget, BudgetExceeded, BudgetExhausted, Limit, Status, Verdict

from ._support import state

pytestmark = pytest.mark.anyio

WARN = Verdict(Status.WARN, TOKENS)
EXHAUSTED = Verdict(Status.EXHAUSTED, TOKENS)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured events called *name*, without structlog's ``event`` key."""
    return [{k: v for k, v in e.items() if k != "event"} for e in logs if e["event"] == name]


def names(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs]


class TestEvents:
    async def test_reserved_and_settled(self) -> None:
        """A reservation logs budget.reserved on enter and budget.settled on exit."""
        budget = Budget({TOKENS: 100, CALLS: 5}, name="ev")
        with capture_logs() as logs:
            async with budget.reserve(tokens=10, calls=1) as r:
                r.record(tokens=3)
        assert [
            {"budget": "ev", "amounts": {TOKENS: 10, CALLS: 1}, "log_level": "debug"}
        ] == events(logs, "budget.reserved")
        assert [
            {
                "budget": "ev",
                "reserved": {TOKENS: 10, CALLS: 1},
                "actual": {TOKENS: 3, CALLS: 0},
                "status": "continue",
                "log_level": "debug",
            }
        ] == events(logs, "budget.settled")
        assert ["budget.reserved", "budget.settled"] == names(logs)

    @pytest.mark.parametrize(
        ("how", "reason"), [("raise", "failed"), ("release", "released"), ("exit", "unrecorded")]
    )
    async def test_released(self, how: str, reason: str) -> None:
        """A reservation given back untouched logs budget.released with the reason."""
        budget = Budget({TOKENS: 100}, name="ev")
        with capture_logs() as logs:
            try:
                async with budget.reserve(tokens=10) as r:
                    if how == "raise":
                        raise LookupError
                    if how == "release":
                        await r.release()
            except LookupError:
                pass
        assert [
            {"budget": "ev", "reserved": {TOKENS: 10}, "reason": reason, "log_level": "debug"}
        ] == events(logs, "budget.released")
        assert [] == events(logs, "budget.settled")

    async def test_denied(self) -> None:
        """A denial logs budget.denied at INFO with level, dim, requested and remaining."""
        budget = Budget({TOKENS: 100}, name="ev")
        await budget.charge(tokens=95)
        with capture_logs() as logs:
            assert await budget.try_reserve(tokens=10) is None
            with pytest.raises(BudgetExhausted):
                async with budget.reserve(tokens=10):
                    pass
        assert [
            {
                "budget": "ev",
                "level": "ev",
                "dim": TOKENS,
                "requested": 10,
                "remaining": 5,
                "reason": "impossible",
                "log_level": "info",
            }
        ] * 2 == events(logs, "budget.denied")

    async def test_denied_by_a_parent_names_the_level(self) -> None:
        """A child's denial at its parent logs the parent as ``level``."""
        parent = Budget({TOKENS: 10}, name="parent")
        child = parent.child({TOKENS: 100}, name="child")
        with capture_logs() as logs:
            assert await child.try_reserve(tokens=11) is None
        [denied] = events(logs, "budget.denied")
        assert ("child", "parent", TOKENS) == (denied["budget"], denied["level"], denied["dim"])

    async def test_denied_by_a_strict_charge(self) -> None:
        """A refused strict charge logs budget.denied with attempted and limit."""
        budget = Budget({TOKENS: 100}, name="ev")
        with capture_logs() as logs, pytest.raises(BudgetExceeded):
            await budget.charge(tokens=101, strict=True)
        [denied] = events(logs, "budget.denied")
        assert ("ev", TOKENS, 101, 100, "strict_charge") == (
            denied["budget"],
            denied["dim"],
            denied["attempted"],
            denied["limit"],
            denied["reason"],
        )

    async def test_charged(self) -> None:
        """A direct charge logs budget.charged with the amounts and the status."""
        budget = Budget({TOKENS: Limit(100, warn=5), CALLS: 5}, name="ev")
        with capture_logs() as logs:
            await budget.charge(tokens=7)
        assert [
            {
                "budget": "ev",
                "amounts": {TOKENS: 7, CALLS: 0},
                "status": "warn",
                "log_level": "debug",
            }
        ] == events(logs, "budget.charged")

    async def test_reset(self) -> None:
        """A reset logs budget.reset at INFO."""
        budget = Budget({TOKENS: 100}, name="ev")
        with capture_logs() as logs:
            await budget.reset()
        assert [{"budget": "ev", "log_level": "info"}] == events(logs, "budget.reset")

    async def test_warn_and_exhausted(self) -> None:
        """Crossing warn, then the limit, logs budget.warn then budget.exhausted (WARNING)."""
        budget = Budget({TOKENS: Limit(100, warn=50)}, name="ev")
        with capture_logs() as logs:
            await budget.charge(tokens=60)
            await budget.charge(tokens=40)
        assert [{"budget": "ev", "dim": TOKENS, "log_level": "warning"}] == events(
            logs, "budget.warn"
        )
        assert [{"budget": "ev", "dim": TOKENS, "log_level": "warning"}] == events(
            logs, "budget.exhausted"
        )

    async def test_unrecorded(self) -> None:
        """A normal exit with nothing recorded logs budget.unrecorded at WARNING."""
        budget = Budget({TOKENS: 100}, name="ev")
        with capture_logs() as logs:
            async with budget.reserve(tokens=4, on_unrecorded="charge"):
                pass
        assert [
            {"budget": "ev", "reserved": {TOKENS: 4}, "action": "charge", "log_level": "warning"}
        ] == events(logs, "budget.unrecorded")

    @pytest.mark.parametrize("close", ["exit", "commit"])
    async def test_release_is_quiet(self, close: str) -> None:
        """on_unrecorded="release" gives an unrecorded reservation back without
        budget.unrecorded: a limiter's slot has nothing to record."""
        budget = Budget({TOKENS: 100, CALLS: 5}, name="ev")
        with capture_logs() as logs:
            async with budget.reserve(calls=1, on_unrecorded="release") as r:
                if close == "commit":
                    await r.commit()
        assert (
            [],
            [
                {
                    "budget": "ev",
                    "reserved": {TOKENS: 0, CALLS: 1},
                    "reason": "unrecorded",
                    "log_level": "debug",
                }
            ],
        ) == (
            events(logs, "budget.unrecorded"),
            events(logs, "budget.released"),
        )
        assert {TOKENS: 100, CALLS: 5} == await budget.remaining()

    async def test_release_still_charges_what_was_recorded(self) -> None:
        """on_unrecorded="release" changes only the exit with nothing recorded."""
        budget = Budget({TOKENS: 100, CALLS: 5}, name="ev")
        async with budget.reserve(calls=1, tokens=10, on_unrecorded="release") as r:
            r.record(calls=1, tokens=3)
        assert {TOKENS: 97, CALLS: 4} == await budget.remaining()

    async def test_waiting_only_when_queued(self) -> None:
        """budget.waiting is logged only by a reservation that really waits."""
        budget = Budget({TOKENS: 100}, name="ev")
        with capture_logs() as logs:
            async with budget.reserve(tokens=4, timeout=math.inf) as r:
                r.record(tokens=1)
        assert [] == events(logs, "budget.waiting")

    async def test_waiting_when_queued(self) -> None:
        """A reservation that waits logs budget.waiting with its amounts and timeout."""
        budget = Budget({TOKENS: 100}, name="ev")
        holder = await budget.try_reserve(tokens=100)
        assert holder is not None
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    async with budget.reserve(tokens=4, timeout=math.inf) as r:
                        r.record(tokens=1)

                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                await holder.release()
        [waiting] = events(logs, "budget.waiting")
        assert ({TOKENS: 4}, math.inf) == (waiting["amounts"], waiting["timeout"])

    async def test_waited_says_how_the_wait_ended(self) -> None:
        """A reservation that waited logs budget.waited when it stops: after how many
        seconds, and whether it was cancelled, denied or granted."""
        budget = Budget({TOKENS: 100}, name="ev")
        holder = await budget.try_reserve(tokens=100)
        assert holder is not None

        doomed = anyio.CancelScope()

        async def wait_for(tokens: int, scope: anyio.CancelScope | None = None) -> None:
            with scope or anyio.CancelScope():
                try:
                    async with budget.reserve(tokens=tokens, timeout=math.inf):
                        pass
                except BudgetExhausted:
                    pass

        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for, 30, doomed)
                await wait_all_tasks_blocked()
                doomed.cancel()
                await wait_all_tasks_blocked()
                tg.start_soon(wait_for, 60)
                await wait_all_tasks_blocked()
                await budget.charge(tokens=50)  # 50 spent leaves no room for 60: denied
                await wait_all_tasks_blocked()
                tg.start_soon(wait_for, 4)
                await wait_all_tasks_blocked()
                await holder.release()
        waited = events(logs, "budget.waited")
        assert ["cancelled", "denied", "granted"] == [event["outcome"] for event in waited]
        assert all(event["seconds"] >= 0 and event["budget"] == "ev" for event in waited)

    async def test_debug_events_are_skipped_while_unconfigured(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With structlog unconfigured nothing per-operation is printed."""
        budget = Budget({TOKENS: 100}, name="ev")
        async with budget.reserve(tokens=4) as r:
            r.record(tokens=1)
        await budget.charge(tokens=1)
        assert "" == capsys.readouterr().out

    async def test_the_library_never_configures_structlog(self) -> None:
        """Using a budget leaves structlog unconfigured."""
        budget = Budget({TOKENS: Limit(10, warn=1)}, name="ev")
        async with budget.reserve(tokens=4) as r:
            r.record(tokens=11)
        assert not structlog.is_configured()


def _list_logs(level: int, *, cache: bool) -> list[tuple[str, str]]:
    """Configure structlog to keep ``(level, event)`` pairs of *level* and above in the
    returned list; *cache* is the application's ``cache_logger_on_first_use``."""
    seen: list[tuple[str, str]] = []

    def keep(_: Any, method: str, event: dict[str, Any]) -> str:
        seen.append((method, event["event"]))
        return ""

    structlog.configure(
        processors=[keep],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=cache,
    )
    return seen


@pytest.fixture
def fresh_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiobudget's lazy structlog logger as new, put back afterwards: a proxy that cached
    a logger keeps it for good, as structlog's own proxies do."""
    import aiobudget._log

    monkeypatch.setattr(aiobudget._log, "_proxy", structlog.get_logger("aiobudget"))


async def _round_trip() -> None:
    budget = Budget({TOKENS: 100}, name="cfg")
    async with budget.reserve(tokens=4) as r:
        r.record(tokens=1)


class TestLoggerConfiguration:
    @pytest.mark.usefixtures("fresh_proxy")
    @pytest.mark.parametrize("cache", [False, True], ids=["uncached", "cached"])
    @pytest.mark.parametrize(
        ("level", "expected"),
        [
            (logging.INFO, []),
            (logging.DEBUG, [("debug", "budget.reserved"), ("debug", "budget.settled")]),
        ],
        ids=["info", "debug"],
    )
    async def test_debug_events_follow_the_level(
        self, cache: bool, level: int, expected: list[tuple[str, str]]
    ) -> None:
        """DEBUG events are emitted when the configured level lets them through."""
        seen = _list_logs(level, cache=cache)
        await _round_trip()
        assert expected == seen

    async def test_an_uncached_configuration_is_followed(self) -> None:
        """Without ``cache_logger_on_first_use``, a reconfiguration takes effect at the
        next event, as it does for the application's own loggers."""
        first = _list_logs(logging.DEBUG, cache=False)
        await _round_trip()
        second = _list_logs(logging.INFO, cache=False)
        await _round_trip()
        third = _list_logs(logging.DEBUG, cache=False)
        await _round_trip()
        events = [("debug", "budget.reserved"), ("debug", "budget.settled")]
        assert (events, [], events) == (first, second, third)

    @pytest.mark.usefixtures("fresh_proxy")
    async def test_a_cached_logger_stays_as_configured_first(self) -> None:
        """With ``cache_logger_on_first_use``, the logger of the first event is kept
        through later reconfigurations, as structlog keeps the application's own."""
        first = _list_logs(logging.DEBUG, cache=True)
        await _round_trip()
        second = _list_logs(logging.INFO, cache=True)
        await _round_trip()
        events = [("debug", "budget.reserved"), ("debug", "budget.settled")]
        assert (events + events, []) == (first, second)

    async def test_warnings_go_to_the_configured_logger(self) -> None:
        """Events above DEBUG use the same configured logger."""
        seen = _list_logs(logging.WARNING, cache=False)
        budget = Budget({TOKENS: Limit(10, warn=5)}, name="cfg")
        await budget.charge(tokens=6)
        assert [("warning", "budget.warn")] == seen


class TestOncePerCrossing:
    async def test_many_reservations_past_warn_log_one_warn(self) -> None:
        """Ten reservations each past the warn level log budget.warn once."""
        budget = Budget({TOKENS: Limit(1_000, warn=10)}, name="once")
        with capture_logs() as logs:
            for _ in range(10):
                async with budget.reserve(tokens=20) as r:
                    r.record(tokens=20)
        assert 1 == len(events(logs, "budget.warn"))
        assert {TOKENS: 200} == (await budget.snapshot()).spent

    async def test_many_charges_past_the_limit_log_one_exhausted(self) -> None:
        """Charges past the limit log budget.exhausted once."""
        budget = Budget({TOKENS: 10}, name="once")
        with capture_logs() as logs:
            for _ in range(5):
                await budget.charge(tokens=10)
        assert 1 == len(events(logs, "budget.exhausted"))

    async def test_a_reset_and_a_new_crossing_log_again(self) -> None:
        """After a reset, the next crossing is logged again."""
        budget = Budget({TOKENS: Limit(100, warn=50)}, name="once")
        with capture_logs() as logs:
            await budget.charge(tokens=60)
            await budget.charge(tokens=1)
            await budget.reset()
            await budget.charge(tokens=10)
            await budget.charge(tokens=60)
            await budget.charge(tokens=60)
        assert ["budget.warn", "budget.reset", "budget.warn", "budget.exhausted"] == [
            n for n in names(logs) if n in ("budget.warn", "budget.exhausted", "budget.reset")
        ]

    async def test_dropping_below_and_rising_again_is_one_crossing(self) -> None:
        """Within one period, going back under warn and over again does not log again."""
        budget = Budget({TOKENS: Limit(100, warn=50)}, name="once")
        with capture_logs() as logs:
            for _ in range(3):
                r = await budget.try_reserve(tokens=60)  # reserved alone crosses warn
                assert r is not None
                await r.release()  # and goes back under
        assert 1 == len(events(logs, "budget.warn"))

    async def test_a_crossing_on_reserve_is_logged_at_reserve(self) -> None:
        """A reservation that reaches the warn level logs it when it is made."""
        budget = Budget({TOKENS: Limit(100, warn=50)}, name="once")
        with capture_logs() as logs:
            async with budget.reserve(tokens=60) as r:
                assert ["budget.reserved", "budget.warn"] == names(logs)
                r.record(tokens=60)
        assert 1 == len(events(logs, "budget.warn"))

    async def test_concurrent_crossings_log_once(self) -> None:
        """Many tasks crossing warn together log it once."""
        budget = Budget({TOKENS: Limit(1_000, warn=100)}, name="once")
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                for _ in range(50):

                    async def one() -> None:
                        async with budget.reserve(tokens=10, timeout=math.inf) as r:
                            await anyio.lowlevel.checkpoint()
                            r.record(tokens=10)

                    tg.start_soon(one)
        assert 1 == len(events(logs, "budget.warn"))
        assert {TOKENS: 500} == (await budget.snapshot()).spent

    async def test_a_crossing_caused_by_new_limits_is_announced(self) -> None:
        """Lowering a limit below what is used logs the crossing and calls the callback."""
        calls: list[Verdict] = []
        budget = Budget(
            {TOKENS: Limit(100, warn=50)}, name="lim", on_warn=lambda n, v: calls.append(v)
        )
        await budget.charge(tokens=40)
        with capture_logs() as logs:
            assert WARN == await budget.set_limits({TOKENS: Limit(100, warn=30)})
            await budget.charge(tokens=1)
        assert (1, [WARN]) == (len(events(logs, "budget.warn")), calls)


def recorder() -> tuple[list[tuple[str | None, Verdict]], Callable[..., None]]:
    seen: list[tuple[str | None, Verdict]] = []

    def callback(name: str | None, verdict: Verdict) -> None:
        seen.append((name, verdict))

    return seen, callback


class TestCallbacks:
    async def test_sync_callbacks_once_per_crossing(self) -> None:
        """Sync on_warn and on_exhausted get (name, verdict), once per crossing."""
        warned, on_warn = recorder()
        exhausted, on_exhausted = recorder()
        budget = Budget(
            {TOKENS: Limit(100, warn=50)},
            name="cb",
            on_warn=on_warn,
            on_exhausted=on_exhausted,
        )
        for _ in range(3):
            async with budget.reserve(tokens=30) as r:
                r.record(tokens=30)
        assert ([("cb", WARN)], []) == (warned, exhausted)
        await budget.charge(tokens=10)
        await budget.charge(tokens=10)
        assert ([("cb", WARN)], [("cb", EXHAUSTED)]) == (warned, exhausted)
        await budget.reset()
        await budget.charge(tokens=100)
        assert ([("cb", WARN)], [("cb", EXHAUSTED)] * 2) == (warned, exhausted)

    async def test_async_callbacks_once_per_crossing(self) -> None:
        """Async callbacks are awaited, once per crossing."""
        seen: list[tuple[str, str | None, Verdict]] = []

        async def on_warn(name: str | None, verdict: Verdict) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(("warn", name, verdict))

        async def on_exhausted(name: str | None, verdict: Verdict) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(("exhausted", name, verdict))

        budget = Budget(
            {TOKENS: Limit(100, warn=50)}, name="acb", on_warn=on_warn, on_exhausted=on_exhausted
        )
        await budget.charge(tokens=60)
        await budget.charge(tokens=1)
        async with budget.reserve(tokens=39) as r:
            r.record(tokens=39)
        await budget.charge(tokens=1)
        assert [("warn", "acb", WARN), ("exhausted", "acb", EXHAUSTED)] == seen

    async def test_callback_runs_when_the_crossing_happens(self) -> None:
        """The callback has run by the time the crossing operation returns."""
        warned, on_warn = recorder()
        budget = Budget({TOKENS: Limit(100, warn=50)}, name="cb", on_warn=on_warn)
        async with budget.reserve(tokens=50):
            assert [("cb", WARN)] == warned

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_a_raising_callback_is_logged_and_harmless(self, kind: str) -> None:
        """A callback that raises is logged as budget.callback_failed; accounting goes on."""

        def sync_cb(name: str | None, verdict: Verdict) -> None:
            raise ZeroDivisionError("boom")

        async def async_cb(name: str | None, verdict: Verdict) -> None:
            await anyio.lowlevel.checkpoint()
            raise ZeroDivisionError("boom")

        callback = sync_cb if kind == "sync" else async_cb
        budget = Budget(
            {TOKENS: Limit(100, warn=10)}, name="bad", on_warn=callback, on_exhausted=callback
        )
        with capture_logs() as logs:
            async with budget.reserve(tokens=20) as r:  # crosses warn on enter
                r.record(tokens=100)  # crosses the limit on exit
            assert EXHAUSTED == await budget.charge(tokens=5)
        failed = events(logs, "budget.callback_failed")
        assert [("bad", "budget.warn", "error"), ("bad", "budget.exhausted", "error")] == [
            (e["budget"], e["crossing"], e["log_level"]) for e in failed
        ]
        assert all("ZeroDivisionError" in e["error"] for e in failed)
        assert ({TOKENS: 105}, {TOKENS: 0}) == await state(budget)
        assert EXHAUSTED == r.verdict

    async def test_a_callback_can_use_the_budget(self) -> None:
        """A callback may read the budget it is called for (no lock is held)."""
        seen: list[dict[str, int]] = []
        budget: Budget

        async def on_warn(name: str | None, verdict: Verdict) -> None:
            seen.append(dict((await budget.snapshot()).spent))

        budget = Budget({TOKENS: Limit(100, warn=10)}, on_warn=on_warn)
        await budget.charge(tokens=15)
        assert [{TOKENS: 15}] == seen
