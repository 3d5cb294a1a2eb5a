"""`Period`: when a budget's ``spent`` goes back to 0 by itself.

A period cuts time into *windows* that tile it, with no gap and no overlap. Boundaries
come from the calendar (or from fixed arithmetic), never from the last request, so a
quiet budget does not drift and every process computes the same boundaries without
talking to the others.

Calendar boundaries are local wall-clock times in an IANA time zone, read with
`zoneinfo` (the ``tzdata`` package supplies the zone database where the system has
none). A local day lasts 23 or 25 hours when the zone changes its offset. A boundary
whose local time does not exist or exists twice is resolved the way RFC 5545
(iCalendar), Java's ``ZonedDateTime`` and `zoneinfo` with ``fold=0`` resolve it: a
**skipped** time (the clocks jump over it) is read with the offset from before the
jump, so it falls that much later (a daily boundary at 02:30 on the night Berlin jumps
from 02:00 to 03:00 falls at 03:30 summer time); a **repeated** time (the clocks go back
over it) falls at its first occurrence.

Instants travel inside aiobudget as integer microseconds since the Unix epoch (UTC);
the methods users call take and return timezone-aware `datetime` values.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Final, final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import _log
from ._errors import InvalidLimits
from .kernel import Window
from .kernel import from_micros as from_us

__all__ = ["Period", "announce_closed", "from_us", "rfc3339", "to_us"]

UTC: Final = timezone.utc
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_LENGTH: Final = 36_525 * 86_400 * 1_000_000  # a hundred years, in microseconds
_ZONE_NAME: Final = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def to_us(instant: datetime) -> int:
    """*instant* (timezone-aware) as integer microseconds since the Unix epoch."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def rfc3339(instant: datetime) -> str:
    """*instant* as RFC 3339 text in UTC: ``2025-03-01T00:00:00Z``."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def announce_closed(window: Window) -> None:
    """Log ``budget.period_closed`` for *window*: the store that closed it calls this,
    once (across processes: the one whose operation rolled the budget over)."""
    _log.logger.info(
        _log.PERIOD_CLOSED,
        budget=window.budget,
        period_start=rfc3339(from_us(window.start)),
        period_end=rfc3339(from_us(window.end)),
        spent=dict(window.spent),
    )


def _instant(value: object, what: str) -> int:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a timezone-aware datetime, not {value!r}")
    if value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, not the naive {value!r}")
    return to_us(value)


@final
class Period:
    """A schedule of windows; at each boundary a budget's ``spent`` goes back to 0.

    Build one with a class method; the constructor is not for direct use:

    - ``Period.every(3600)``: fixed windows of a length (seconds or a `timedelta`),
      whose boundaries are ``anchor + k * length`` (the anchor defaults to the Unix
      epoch, so every process agrees without talking to the others);
    - ``Period.daily(tz="Europe/Berlin", at=time(6))``, ``Period.weekly(weekday=0)``
      (Monday), ``Period.monthly(day=1)``: calendar windows whose boundaries are local
      times in an IANA zone. ``day=31`` means the last day of shorter months.

    A period is a value: equal periods compare equal, whatever process built them. It
    answers where the window around an instant starts and ends (`window`, `previous`,
    `next`); the store's clock decides what "now" is.
    """

    __slots__ = ("_anchor", "_at", "_day", "_kind", "_length", "_text", "_tz", "_weekday", "_zone")

    def __init__(
        self,
        kind: str,
        *,
        length: int = 0,
        anchor: int = 0,
        zone: ZoneInfo | None = None,
        weekday: int = 0,
        day: int = 1,
        at: time = time(0),
    ) -> None:
        self._kind = kind
        self._length = length  # microseconds (every)
        self._anchor = anchor  # microseconds since the epoch (every)
        self._zone = zone
        self._tz = zone.key if zone is not None else "UTC"
        self._weekday = weekday
        self._day = day
        self._at = at
        if kind == "every":
            self._text = f"every;{length};{anchor}"
        elif kind == "daily":
            self._text = f"daily;{self._tz};{at.isoformat()}"
        elif kind == "weekly":
            self._text = f"weekly;{self._tz};{weekday};{at.isoformat()}"
        else:
            self._text = f"monthly;{self._tz};{day};{at.isoformat()}"

    # -- building ----------------------------------------------------------------------

    @classmethod
    def every(cls, length: float | timedelta, *, anchor: datetime | None = None) -> Period:
        """Fixed windows of *length* (seconds, or a `timedelta`; whole microseconds),
        with boundaries at ``anchor + k * length`` for every integer ``k``. *anchor* is a
        timezone-aware `datetime`; the default is the Unix epoch."""
        if isinstance(length, timedelta):
            us = length // timedelta(microseconds=1)
        elif isinstance(length, int | float) and not isinstance(length, bool):
            if not math.isfinite(length):
                raise InvalidLimits(f"a period's length must be finite, not {length!r}")
            us = round(length * 1_000_000)
        else:
            raise InvalidLimits(
                f"a period's length is a number of seconds or a timedelta, not {length!r}"
            )
        if not 0 < us <= _MAX_LENGTH:
            raise InvalidLimits(
                f"a period's length must be at least a microsecond and at most 100 years, "
                f"not {length!r}"
            )
        origin = 0
        if anchor is not None:
            try:
                origin = _instant(anchor, "a period's anchor")
            except (TypeError, ValueError) as exc:
                raise InvalidLimits(str(exc)) from None
        return cls("every", length=us, anchor=origin)

    @classmethod
    def daily(cls, *, tz: str = "UTC", at: time = time(0)) -> Period:
        """Windows from one local *at* (a naive `datetime.time`) in zone *tz* to the next
        day's. A local day lasts 23 or 25 hours across a DST change."""
        return cls("daily", zone=_zone(tz), at=_time(at))

    @classmethod
    def weekly(cls, *, tz: str = "UTC", weekday: int = 0, at: time = time(0)) -> Period:
        """Windows from *weekday* (0 is Monday, 6 Sunday) at local *at* in zone *tz* to
        the same time a week later."""
        if type(weekday) is not int or not 0 <= weekday <= 6:
            raise InvalidLimits(f"weekday must be an int from 0 (Monday) to 6, not {weekday!r}")
        return cls("weekly", zone=_zone(tz), weekday=weekday, at=_time(at))

    @classmethod
    def monthly(cls, *, tz: str = "UTC", day: int = 1, at: time = time(0)) -> Period:
        """Windows from *day* of each month at local *at* in zone *tz* to the same day of
        the next month. A day past a month's end means its last day (``day=31`` is the
        last day of every month)."""
        if type(day) is not int or not 1 <= day <= 31:
            raise InvalidLimits(f"day must be an int from 1 to 31, not {day!r}")
        return cls("monthly", zone=_zone(tz), day=day, at=_time(at))

    # -- reading -----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"every"``, ``"daily"``, ``"weekly"`` or ``"monthly"``."""
        return self._kind

    @property
    def tz(self) -> str:
        """The IANA zone of a calendar period (``"UTC"`` for fixed windows)."""
        return self._tz

    @property
    def length(self) -> timedelta | None:
        """The length of fixed windows, or ``None`` for a calendar period."""
        return timedelta(microseconds=self._length) if self._kind == "every" else None

    @property
    def anchor(self) -> datetime | None:
        """The instant fixed windows are counted from, or ``None`` for a calendar period."""
        return from_us(self._anchor) if self._kind == "every" else None

    @property
    def at(self) -> time:
        """The local time of day of a calendar period's boundaries."""
        return self._at

    @property
    def weekday(self) -> int:
        """The weekday of a weekly period's boundaries (0 is Monday)."""
        return self._weekday

    @property
    def day(self) -> int:
        """The day of the month of a monthly period's boundaries."""
        return self._day

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Period):
            return NotImplemented
        return self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __repr__(self) -> str:
        if self._kind == "every":
            anchor = "" if self._anchor == 0 else f", anchor={from_us(self._anchor)!r}"
            return f"Period.every({self.length!r}{anchor})"
        options = [f"tz={self._tz!r}"]
        if self._kind == "weekly":
            options.append(f"weekday={self._weekday}")
        elif self._kind == "monthly":
            options.append(f"day={self._day}")
        if self._at != time(0):
            options.append(f"at={self._at!r}")
        return f"Period.{self._kind}({', '.join(options)})"

    def __str__(self) -> str:
        """The period in words: ``monthly on day 1 at 00:00 (Europe/Berlin)``."""
        if self._kind == "every":
            anchor = "" if self._anchor == 0 else f" from {rfc3339(from_us(self._anchor))}"
            return f"every {_duration(self._length)}{anchor}"
        plain = self._at.second == 0 and self._at.microsecond == 0
        at = self._at.strftime("%H:%M") if plain else self._at.isoformat()
        when = {
            "daily": "daily",
            "weekly": f"weekly on {_WEEKDAYS[self._weekday]}",
            "monthly": f"monthly on day {self._day}",
        }[self._kind]
        return f"{when} at {at} ({self._tz})"

    # -- boundaries --------------------------------------------------------------------

    def window(self, at: datetime) -> tuple[datetime, datetime]:
        """The window around the instant *at*: ``(start, end)`` with
        ``start <= at < end``, as aware UTC datetimes."""
        start, end = self.window_us(_instant(at, "at"))
        return from_us(start), from_us(end)

    def previous(self, at: datetime) -> datetime:
        """The last boundary at or before the instant *at* (aware UTC)."""
        return self.window(at)[0]

    def next(self, at: datetime) -> datetime:
        """The first boundary after the instant *at* (aware UTC)."""
        return self.window(at)[1]

    def window_us(self, at: int) -> tuple[int, int]:
        """`window` in integer microseconds since the Unix epoch."""
        if self._kind == "every":
            start = self._anchor + (at - self._anchor) // self._length * self._length
            return start, start + self._length
        zone = self._zone
        assert zone is not None
        try:
            local = from_us(at).astimezone(zone).date()
        except OverflowError:
            raise ValueError(f"{at} µs is outside the range of dates") from None
        k = self._index(local)
        for spread in (2, 8, 64):  # 2 is always enough in practice; be safe anyway
            try:
                bounds = [self._boundary(j) for j in range(k - spread, k + spread + 1)]
            except (OverflowError, ValueError):
                raise ValueError(f"{at} µs is too close to the range of dates") from None
            before = [b for b in bounds if b <= at]
            after = [b for b in bounds if b > at]
            if before and after:
                return max(before), min(after)
        raise ValueError(f"no boundary of {self!r} found around {at} µs")  # pragma: no cover

    # Calendar boundaries are numbered: boundary k falls on date _date(k) at _at, and
    # _index(d) is the number of the last boundary date on or before d.

    def _date(self, k: int) -> date:
        if self._kind == "daily":
            return date.fromordinal(k)
        if self._kind == "weekly":
            return date.fromordinal(1 + self._weekday + 7 * k)  # date(1, 1, 1) is a Monday
        year, month = divmod(k, 12)
        return date(year, month + 1, min(self._day, calendar.monthrange(year, month + 1)[1]))

    def _index(self, day: date) -> int:
        if self._kind == "daily":
            return day.toordinal()
        if self._kind == "weekly":
            return (day.toordinal() - 1 - self._weekday) // 7
        k = day.year * 12 + day.month - 1
        return k if self._date(k) <= day else k - 1

    def _boundary(self, k: int) -> int:
        """Boundary *k* in microseconds: its local date and time read with ``fold=0``,
        which is the first occurrence of a repeated time and, for a skipped one, the
        offset from before the jump (so it falls as much after the jump as it was meant
        to fall after the last time before it)."""
        wall = datetime.combine(self._date(k), self._at, tzinfo=self._zone)
        return to_us(wall)

    # -- storage -----------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The canonical text a store keeps with the limits: equal periods, equal text."""
        return self._text

    @classmethod
    def from_text(cls, text: str) -> Period:
        """The period whose `text` is *text*; `InvalidLimits` if it is not one."""
        parts = text.split(";")
        try:
            kind = parts[0]
            if kind == "every" and len(parts) == 3:
                length, anchor = int(parts[1]), from_us(int(parts[2]))
                period = cls.every(timedelta(microseconds=length), anchor=anchor)
            elif kind == "daily" and len(parts) == 3:
                period = cls.daily(tz=parts[1], at=time.fromisoformat(parts[2]))
            elif kind == "weekly" and len(parts) == 4:
                period = cls.weekly(
                    tz=parts[1], weekday=int(parts[2]), at=time.fromisoformat(parts[3])
                )
            elif kind == "monthly" and len(parts) == 4:
                period = cls.monthly(
                    tz=parts[1], day=int(parts[2]), at=time.fromisoformat(parts[3])
                )
            else:
                raise ValueError(text)
        except (ValueError, OverflowError):
            raise InvalidLimits(f"not a period: {text!r}") from None
        if period._text != text:
            raise InvalidLimits(f"not a period in canonical form: {text!r}")
        return period


def _zone(tz: object) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        tz = tz.key
    if not isinstance(tz, str) or _ZONE_NAME.fullmatch(tz) is None:
        raise InvalidLimits(f"tz must be the name of an IANA time zone, not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidLimits(
            f"unknown time zone {tz!r} (an IANA name such as 'Europe/Berlin'; where the "
            "system has no zone database, install the tzdata package)"
        ) from None


def _time(at: object) -> time:
    if not isinstance(at, time):
        raise InvalidLimits(f"at must be a datetime.time, not {at!r}")
    if at.tzinfo is not None:
        raise InvalidLimits(f"at is a local time in the period's tz: give it no tzinfo, not {at!r}")
    return at.replace(fold=0)


def _duration(us: int) -> str:
    seconds, micros = divmod(us, 1_000_000)
    if micros:
        return f"{us / 1_000_000:g} s"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
