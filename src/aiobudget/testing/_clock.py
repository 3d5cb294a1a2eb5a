"""`ManualClock`: a store clock that moves only when a test moves it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import final

__all__ = ["ManualClock"]


@final
class ManualClock:
    """A clock for ``MemoryStore(clock=...)`` that stands still until told to move.

    Calling it returns the time as POSIX seconds, like `time.time`. Move it with
    `advance` (forward) or `set` (anywhere, backwards included: a clock that steps back
    is a case worth testing). The period checks of `aiobudget.testing` recognize a store
    whose ``clock`` is a `ManualClock` and move it instead of waiting for real time.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float | datetime = 1_700_000_000.0) -> None:
        self._now = _seconds(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"<ManualClock {self._now!r}>"

    def advance(self, seconds: float) -> None:
        """Move forward by *seconds* (a finite number, at least 0)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, not {seconds!r}")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a clock advances by a finite number >= 0 of seconds, not {seconds}")
        self._now += seconds

    def set(self, when: float | datetime) -> None:
        """Jump to *when*: POSIX seconds or a timezone-aware `datetime`."""
        self._now = _seconds(when)


def _seconds(when: object) -> float:
    if isinstance(when, datetime):
        if when.utcoffset() is None:
            raise ValueError(f"a clock is set to an aware datetime, not the naive {when!r}")
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise TypeError(f"a clock reads POSIX seconds or an aware datetime, not {when!r}")
    return float(when)
