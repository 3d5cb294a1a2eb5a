"""Ledger.roll and windows: the kernel learns a new window of a budget's period as an
operation, without a clock of its own."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aiobudget.kernel import Chain, Crossing, Denial, Ledger, Limit, Window, from_micros

from ._support import counters, deny, hold, single, warn


class TestRoll:
    """Ledger.roll: the store says which window is current; the kernel compares, closes
    and resets. Windows are ints (microseconds since the epoch by the stores' convention)."""

    def test_first_window_is_adopted(self) -> None:
        """The first window is adopted as it is: nothing closes, spent stays."""
        ledger, chain = single({"a": 10})
        chain.charge((4,))
        assert ledger.roll(100, 200) is None
        assert (100, 200) == ledger.window
        assert [((4,), (0,))] == counters(ledger)

    def test_same_window_changes_nothing(self) -> None:
        """The current window again changes nothing."""
        ledger, chain = single({"a": 10})
        ledger.roll(100, 200)
        chain.charge((4,))
        assert ledger.roll(100, 200) is None
        assert [((4,), (0,))] == counters(ledger)

    def test_a_later_window_closes_the_current_one(self) -> None:
        """A window starting at or after the current end closes it, with its final spent,
        and spent goes to 0 while live reservations stay counted."""
        ledger, chain = single({"a": 10, "b": 10}, name="n")
        ledger.roll(100, 200)
        lease = hold(chain, (1, 2))
        chain.charge((4, 5))
        closed = ledger.roll(200, 300)
        assert Window("n", 100, 200, {"a": 4, "b": 5}) == closed
        assert [((0, 0), (1, 2))] == counters(ledger)
        assert (200, 300) == ledger.window
        lease.settle((3, 3))  # made before the boundary, charged to the new window
        assert [((3, 3), (0, 0))] == counters(ledger)

    def test_skipped_windows_close_only_the_last_active_one(self) -> None:
        """Jumping many windows closes the current one once, ending where it ended."""
        ledger, chain = single({"a": 10})
        ledger.roll(100, 200)
        chain.charge((4,))
        assert Window("b", 100, 200, {"a": 4}) == ledger.roll(900, 1000)
        assert ledger.roll(900, 1000) is None

    def test_earlier_window_is_ignored(self) -> None:
        """A clock that stepped back never reopens a window: nothing changes."""
        ledger, chain = single({"a": 10})
        ledger.roll(200, 300)
        chain.charge((4,))
        assert ledger.roll(100, 200) is None
        assert ledger.roll(150, 250) is None  # overlapping: not a later window either
        assert (200, 300) == ledger.window
        assert [((4,), (0,))] == counters(ledger)

    def test_crossings_re_arm(self) -> None:
        """After a roll a crossing is reported again, as after reset()."""
        ledger, chain = single({"a": Limit(10, warn=5)})
        ledger.roll(0, 10)
        assert (Crossing("b", warn("a")),) == chain.charge((6,)).crossings
        assert () == chain.charge((1,)).crossings
        ledger.roll(10, 20)
        assert (Crossing("b", warn("a")),) == chain.charge((6,)).crossings

    @pytest.mark.parametrize("window", [(200, 100), (100, 100), (1.0, 2), (1, True), ("1", 2)])
    def test_bad_window(self, window: tuple[object, object]) -> None:
        """A window is two ints, start before end; anything else changes nothing."""
        ledger, _ = single({"a": 10})
        with pytest.raises(ValueError, match="window"):
            ledger.roll(*window)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="window"):
            ledger.set_window(window)  # type: ignore[arg-type]
        assert ledger.window is None

    def test_set_window_adopts_without_closing(self) -> None:
        """set_window (a changed period) adopts a window and keeps spent; None removes it."""
        ledger, chain = single({"a": 10})
        ledger.roll(100, 200)
        chain.charge((4,))
        ledger.set_window((150, 400))
        assert (150, 400) == ledger.window
        assert [((4,), (0,))] == counters(ledger)
        ledger.set_window(None)
        assert ledger.window is None
        assert ledger.roll(400, 500) is None  # adopted as a first window

    def test_snapshot_and_denial_say_when(self) -> None:
        """Snapshots carry the window as aware UTC datetimes, denials when it resets; both
        are None without a window."""
        ledger, chain = single({"a": 10})
        assert (None, None) == (ledger.snapshot().period_start, ledger.snapshot().resets_at)
        assert deny(chain, (11,)).resets_at is None
        ledger.roll(1_700_000_000_000_000, 1_700_000_060_000_000)
        snap = ledger.snapshot()
        assert datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc) == snap.period_start
        assert datetime(2023, 11, 14, 22, 14, 20, tzinfo=timezone.utc) == snap.resets_at
        assert snap.resets_at == deny(chain, (11,)).resets_at

    def test_parent_denial_says_when_the_parent_resets(self) -> None:
        """A denial at a parent carries the parent's window end."""
        parent = Ledger({"a": 5}, name="p")
        leaf = Ledger({"a": 100}, name="c")
        chain = Chain([leaf, parent])
        parent.roll(0, 10)
        leaf.roll(0, 20)
        denial = chain.reserve((6,))
        assert isinstance(denial, Denial)
        assert (1, from_micros(10)) == (denial.level, denial.resets_at)

    def test_from_micros(self) -> None:
        """Microseconds since the epoch become aware UTC datetimes."""
        assert datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc) == from_micros(1)
