"""The observer seam in ``aiobudget._log``: the one place counters are fed from, at no
cost while nothing observes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from aiobudget import Budget, MemoryStore, _log

pytestmark = pytest.mark.anyio

Seen = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def seen() -> Iterator[Seen]:
    """The events an observer registered for the test saw."""
    events: Seen = []

    def observer(event: str, fields: Mapping[str, Any]) -> None:
        events.append((event, dict(fields)))

    _log.add_observer(observer)
    yield events
    _log.remove_observer(observer)


@pytest.fixture
def unconfigured() -> Iterator[None]:
    """structlog as an application that never configured it has it, then as it was."""
    saved = structlog.get_config() if structlog.is_configured() else None
    structlog.reset_defaults()
    yield
    if saved is not None:
        structlog.configure(**saved)


class TestObserver:
    def test_unobserved_logger_runs_the_plain_code(self) -> None:
        """With no observer the logger is the plain one: the hot path runs no extra
        instruction."""
        assert type(_log.logger) is _log._Logger

    async def test_every_event_with_its_fields(self, seen: Seen) -> None:
        """An observer gets every event, the DEBUG ones included although structlog is
        unconfigured (which would print them), with the fields structlog gets."""
        budget = Budget({"tokens": 10}, name="obs")
        async with budget.reserve(tokens=4) as r:
            r.record(tokens=3)
        await budget.charge(tokens=1)
        assert [
            ("budget.reserved", {"budget": "obs", "amounts": {"tokens": 4}}),
            (
                "budget.settled",
                {
                    "budget": "obs",
                    "reserved": {"tokens": 4},
                    "actual": {"tokens": 3},
                    "status": "continue",
                },
            ),
            ("budget.charged", {"budget": "obs", "amounts": {"tokens": 1}, "status": "continue"}),
        ] == seen

    async def test_nothing_printed_for_debug_events(
        self, seen: Seen, capsys: pytest.CaptureFixture[str], unconfigured: None
    ) -> None:
        """Observing builds the DEBUG events for the observer only: an application that
        did not configure structlog still sees none of them."""
        budget = Budget({"tokens": 10}, name="obs")
        async with budget.reserve(tokens=4) as r:
            r.record(tokens=3)
        assert ["budget.reserved", "budget.settled"] == [event for event, _ in seen]
        assert "" == capsys.readouterr().out

    async def test_structlog_still_gets_them(self, seen: Seen) -> None:
        """structlog gets the same events as before, observed or not."""
        budget = Budget({"tokens": 10}, name="obs")
        with capture_logs() as logs:
            async with budget.reserve(tokens=4) as r:
                r.record(tokens=3)
        assert [event for event, _ in seen] == [log["event"] for log in logs]

    def test_the_last_removal_restores_the_plain_logger(self) -> None:
        """Adding observers switches the logger; removing the last one switches it back."""

        def one(event: str, fields: Mapping[str, Any]) -> None:
            pass

        def two(event: str, fields: Mapping[str, Any]) -> None:
            pass

        _log.add_observer(one)
        _log.add_observer(two)
        _log.remove_observer(one)
        assert type(_log.logger) is not _log._Logger
        _log.remove_observer(two)
        assert type(_log.logger) is _log._Logger
        _log.remove_observer(two)  # unknown: nothing happens
        assert type(_log.logger) is _log._Logger

    async def test_a_raising_observer_is_logged_and_harmless(self, seen: Seen) -> None:
        """An observer that raises never breaks accounting: the error is logged, the
        other observers still see the event."""

        def broken(event: str, fields: Mapping[str, Any]) -> None:
            raise RuntimeError("observer bug")

        _log.add_observer(broken)
        try:
            budget = Budget({"tokens": 10}, name="obs")
            with capture_logs() as logs:
                async with budget.reserve(tokens=4) as r:
                    r.record(tokens=3)
        finally:
            _log.remove_observer(broken)
        assert {"tokens": 3} == dict((await budget.snapshot()).spent)
        assert ["budget.reserved", "budget.settled"] == [event for event, _ in seen]
        failures = [log for log in logs if log["event"] == _log.CALLBACK_FAILED]
        assert ["budget.reserved", "budget.settled"] == [log["crossing"] for log in failures]
        assert all("observer bug" in log["error"] for log in failures)


class TestConcurrency:
    def test_observers_come_and_go_while_threads_reserve(self) -> None:
        """Observers added and removed while four threads (each with its own event loop)
        reserve on one store lose nothing for an observer registered throughout."""
        store = MemoryStore()
        counted = 0
        lock = threading.Lock()

        def steady(event: str, fields: Mapping[str, Any]) -> None:
            nonlocal counted
            if event == _log.RESERVED and fields["budget"] == "shared":
                with lock:
                    counted += 1

        def passing(event: str, fields: Mapping[str, Any]) -> None:
            pass

        rounds, threads = 500, 4
        done = threading.Event()

        async def work() -> None:
            budget = Budget({"tokens": 1_000_000}, name="shared", store=store)
            for _ in range(rounds):
                async with budget.reserve(tokens=1) as r:
                    r.record(tokens=1)

        _log.add_observer(steady)
        try:
            workers = [threading.Thread(target=anyio.run, args=(work,)) for _ in range(threads)]
            for worker in workers:
                worker.start()

            def toggle() -> None:
                while not done.is_set():
                    _log.add_observer(passing)
                    _log.remove_observer(passing)

            toggler = threading.Thread(target=toggle)
            toggler.start()
            for worker in workers:
                worker.join()
            done.set()
            toggler.join()
        finally:
            _log.remove_observer(steady)
        assert rounds * threads == counted
        assert type(_log.logger) is _log._Logger
