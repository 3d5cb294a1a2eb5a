"""`aiobudget.Period`: building and checking periods, and the boundary arithmetic, by
example (DST changes, month ends, leap days) and by hypothesis over many zones."""

from __future__ import annotations

import functools
import math
from datetime import date, datetime, time, timedelta, timezone
from typing import ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aiobudget import InvalidLimits, Period
from aiobudget._period import from_us, rfc3339, to_us

UTC = timezone.utc
ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # DST moves the clock by 30 minutes
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Apia",  # DST until 2021, and a whole day skipped in December 2011
    "UTC",
]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@functools.cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The instants (UTC) at which *zone* changed its offset between 1995 and 2035."""
    tz = ZoneInfo(zone)
    found = []
    t = utc(1995, 1, 1)
    offset = t.astimezone(tz).utcoffset()
    while t < utc(2035, 1, 1):
        step = t + 6 * HOUR
        new = step.astimezone(tz).utcoffset()
        if new != offset:
            low, high = t, step
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high.replace(microsecond=0))
            offset = new
        t = step
    return tuple(found)


# Month ends, leap days and year ends, around which monthly and daily boundaries move.
SPECIAL_DAYS = [
    utc(2000, 2, 29),
    utc(2023, 2, 28),
    utc(2024, 2, 29),
    utc(2024, 3, 1),
    utc(2024, 1, 31),
    utc(2024, 4, 30),
    utc(2024, 12, 31),
    utc(2100, 2, 28),  # not a leap year
    utc(2011, 12, 29),  # Apia skips 2011-12-30
    utc(2011, 12, 31),
]


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    """An instant near one of *zone*'s offset changes, near a month end or leap day, or
    anywhere between 1971 and 2099; at microsecond resolution."""
    kind = draw(st.sampled_from(["transition", "special", "anywhere"]))
    if kind == "anywhere" or (kind == "transition" and not transitions(zone)):
        return draw(
            st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC))
        )
    around = draw(st.sampled_from(transitions(zone) if kind == "transition" else SPECIAL_DAYS))
    shift = draw(st.integers(-3 * 86_400 * 10**6, 3 * 86_400 * 10**6))
    return around + timedelta(microseconds=shift)


TIMES = st.one_of(
    st.sampled_from([time(0), time(2, 30), time(1, 30), time(3), time(23, 59, 59, 999_999)]),
    st.times(),
)


@st.composite
def calendar(draw: st.DrawFn) -> tuple[Period, str, datetime]:
    """A calendar period in one of ZONES and an instant to look around."""
    zone = draw(st.sampled_from(ZONES))
    at = draw(TIMES)
    kind = draw(st.sampled_from(["daily", "weekly", "monthly"]))
    if kind == "daily":
        period = Period.daily(tz=zone, at=at)
    elif kind == "weekly":
        period = Period.weekly(tz=zone, weekday=draw(st.integers(0, 6)), at=at)
    else:
        period = Period.monthly(tz=zone, day=draw(st.integers(1, 31)), at=at)
    return period, zone, draw(instants(zone))


def changes_between(zone: str, first: datetime, last: datetime) -> bool:
    """Whether *zone* changes its offset between the two instants (checked every 15
    minutes: no zone changes twice that fast)."""
    tz = ZoneInfo(zone)
    offset = first.astimezone(tz).utcoffset()
    t = first
    while t < last:
        t = min(last, t + timedelta(minutes=15))
        if t.astimezone(tz).utcoffset() != offset:
            return True
    return False


def regular(period: Period, boundary: datetime) -> bool:
    """Whether *boundary* falls at its own local time (not pushed on by a skipped hour)."""
    local = boundary.astimezone(ZoneInfo(period.tz))
    return local.time().replace(fold=0) == period.at


class TestBuilding:
    """The class methods check their arguments and raise InvalidLimits when building."""

    @pytest.mark.parametrize(
        "tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "Europe/Berlin ", 7, None, "UTC,1"]
    )
    def test_bad_zone(self, tz: object) -> None:
        """A name that is not an IANA zone is refused."""
        with pytest.raises(InvalidLimits, match=r"time zone|tz must be"):
            Period.daily(tz=tz)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "length",
        [
            0,
            -1,
            0.0000001,
            math.nan,
            math.inf,
            True,
            "60",
            timedelta(0),
            timedelta(days=-1),
            timedelta(days=36_526),
            None,
        ],
    )
    def test_bad_length(self, length: object) -> None:
        """A length that is not a positive, finite duration of at most 100 years is refused."""
        with pytest.raises(InvalidLimits, match="length"):
            Period.every(length)  # type: ignore[arg-type]

    @pytest.mark.parametrize("day", [0, 32, -1, True, 1.0, "1"])
    def test_bad_day(self, day: object) -> None:
        """A day of the month outside 1..31 is refused."""
        with pytest.raises(InvalidLimits, match="day must be"):
            Period.monthly(day=day)  # type: ignore[arg-type]

    @pytest.mark.parametrize("weekday", [7, -1, True, "mon"])
    def test_bad_weekday(self, weekday: object) -> None:
        """A weekday outside 0..6 is refused."""
        with pytest.raises(InvalidLimits, match="weekday must be"):
            Period.weekly(weekday=weekday)  # type: ignore[arg-type]

    @pytest.mark.parametrize("at", [time(1, tzinfo=UTC), "00:00", 0, datetime(2024, 1, 1)])
    def test_bad_time_of_day(self, at: object) -> None:
        """The time of day is a naive datetime.time: a local time in the period's zone."""
        with pytest.raises(InvalidLimits, match="at "):
            Period.daily(at=at)  # type: ignore[arg-type]

    @pytest.mark.parametrize("anchor", [datetime(2024, 1, 1), "2024-01-01", 0])
    def test_bad_anchor(self, anchor: object) -> None:
        """The anchor of fixed windows is a timezone-aware datetime."""
        with pytest.raises(InvalidLimits, match="anchor"):
            Period.every(60, anchor=anchor)  # type: ignore[arg-type]

    def test_length_forms(self) -> None:
        """Seconds (int or float) and a timedelta of the same length make equal periods."""
        assert Period.every(90) == Period.every(90.0) == Period.every(timedelta(seconds=90))
        assert timedelta(milliseconds=1500) == Period.every(1.5).length

    def test_zone_instance(self) -> None:
        """A ZoneInfo is accepted for its name."""
        assert Period.daily(tz="Asia/Kolkata") == Period.daily(tz=ZoneInfo("Asia/Kolkata"))  # type: ignore[arg-type]

    def test_fold_is_ignored(self) -> None:
        """The fold of the time of day does not matter: the DST rule decides."""
        assert Period.daily(at=time(2, 30)) == Period.daily(at=time(2, 30, fold=1))


class TestValue:
    """A period is a value: compared, hashed, written and read back as text."""

    PERIODS: ClassVar[list[Period]] = [
        Period.every(1),
        Period.every(timedelta(hours=1), anchor=utc(2024, 1, 1, 0, 30)),
        Period.every(0.25),
        Period.daily(),
        Period.daily(tz="Europe/Berlin", at=time(6, 30, 15, 250)),
        Period.weekly(tz="America/New_York", weekday=6, at=time(23)),
        Period.monthly(tz="Australia/Lord_Howe", day=31),
    ]

    @pytest.mark.parametrize("period", PERIODS, ids=str)
    def test_text_round_trip(self, period: Period) -> None:
        """from_text(text) gives the same period back."""
        assert period == Period.from_text(period.text)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "hourly;UTC;00:00:00",
            "every;0;0",
            "every;1000000",
            "daily;Nowhere;00:00:00",
            "daily;UTC;25:00:00",
            "monthly;UTC;32;00:00:00",
            "every;1000000;00",
            "daily;UTC;00:00",
        ],
    )
    def test_bad_text(self, text: str) -> None:
        """Text that is not a period in canonical form is refused."""
        with pytest.raises(InvalidLimits):
            Period.from_text(text)

    def test_equality_and_hash(self) -> None:
        """Equal periods are equal and hash alike; different ones differ."""
        assert Period.monthly(day=1) == Period.monthly()
        assert hash(Period.monthly(day=1)) == hash(Period.monthly())
        assert Period.monthly(day=2) != Period.monthly()
        assert Period.daily(tz="Europe/Paris") != Period.daily(tz="Europe/Berlin")
        assert Period.every(60) != "every;60000000;0"
        assert len(set(self.PERIODS)) == len(self.PERIODS)

    @pytest.mark.parametrize(
        ("period", "expected"),
        [
            (Period.every(1), "Period.every(datetime.timedelta(seconds=1))"),
            (Period.daily(), "Period.daily(tz='UTC')"),
            (
                Period.weekly(weekday=2, at=time(9)),
                "Period.weekly(tz='UTC', weekday=2, at=datetime.time(9, 0))",
            ),
            (
                Period.monthly(tz="Europe/Berlin", day=31),
                "Period.monthly(tz='Europe/Berlin', day=31)",
            ),
        ],
    )
    def test_repr(self, period: Period, expected: str) -> None:
        """repr() reads like the call that builds it."""
        assert expected == repr(period)

    @pytest.mark.parametrize(
        ("period", "expected"),
        [
            (Period.every(1), "every 1 s"),
            (Period.every(90), "every 90 s"),
            (Period.every(3600), "every 1 h"),
            (Period.every(0.25), "every 0.25 s"),
            (
                Period.every(86_400, anchor=utc(2024, 1, 1, 6)),
                "every 1 d from 2024-01-01T06:00:00Z",
            ),
            (Period.daily(), "daily at 00:00 (UTC)"),
            (Period.weekly(weekday=0, at=time(9, 30)), "weekly on Monday at 09:30 (UTC)"),
            (
                Period.monthly(tz="Europe/Berlin", day=15, at=time(8, 0, 5)),
                "monthly on day 15 at 08:00:05 (Europe/Berlin)",
            ),
        ],
    )
    def test_str(self, period: Period, expected: str) -> None:
        """str() says it in words, for the CLI."""
        assert expected == str(period)

    def test_properties(self) -> None:
        """The properties give back what the period was built with."""
        every = Period.every(60, anchor=utc(2024, 1, 1))
        assert ("every", timedelta(seconds=60), utc(2024, 1, 1)) == (
            every.kind,
            every.length,
            every.anchor,
        )
        monthly = Period.monthly(tz="Asia/Kolkata", day=31, at=time(12))
        assert ("monthly", "Asia/Kolkata", 31, time(12)) == (
            monthly.kind,
            monthly.tz,
            monthly.day,
            monthly.at,
        )
        assert (None, None) == (monthly.length, monthly.anchor)
        assert 4 == Period.weekly(weekday=4).weekday

    def test_instants_must_be_aware(self) -> None:
        """window() takes an aware datetime: a naive one is ambiguous."""
        with pytest.raises(ValueError, match="timezone-aware"):
            Period.daily().window(datetime(2024, 1, 1))
        with pytest.raises(TypeError, match="datetime"):
            Period.daily().window(0)  # type: ignore[arg-type]

    def test_rfc3339(self) -> None:
        """Instants are written in UTC with a Z."""
        assert "2024-03-31T01:00:00Z" == rfc3339(
            datetime(2024, 3, 31, 3, tzinfo=ZoneInfo("Europe/Berlin"))
        )


class TestExamples:
    """Boundaries worked out by hand: the DST rule, month ends, leap days."""

    def test_berlin_day_of_23_hours(self) -> None:
        """The day Berlin moves to summer time lasts 23 hours, midnight to midnight."""
        start, end = Period.daily(tz="Europe/Berlin").window(utc(2024, 3, 31, 12))
        assert (utc(2024, 3, 30, 23), utc(2024, 3, 31, 22)) == (start, end)

    def test_new_york_day_of_25_hours(self) -> None:
        """The day New York goes back to standard time lasts 25 hours."""
        start, end = Period.daily(tz="America/New_York").window(utc(2024, 11, 3, 12))
        assert (utc(2024, 11, 3, 4), utc(2024, 11, 4, 5)) == (start, end)

    def test_skipped_time_falls_after_the_jump(self) -> None:
        """02:30 does not exist in Berlin on 2024-03-31 (02:00 jumps to 03:00): read with
        the offset from before the jump, the boundary falls at 03:30 summer time."""
        period = Period.daily(tz="Europe/Berlin", at=time(2, 30))
        assert utc(2024, 3, 31, 1, 30) == period.next(utc(2024, 3, 31, 0))
        assert timedelta(hours=24) == period.next(utc(2024, 3, 31, 0)) - period.previous(
            utc(2024, 3, 31, 0)
        )

    def test_repeated_time_falls_at_its_first_occurrence(self) -> None:
        """02:30 happens twice in Berlin on 2024-10-27: the boundary is the first (summer
        time, 00:30 UTC), and the day that follows lasts 25 hours."""
        period = Period.daily(tz="Europe/Berlin", at=time(2, 30))
        start, end = period.window(utc(2024, 10, 27, 1))
        assert (utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)) == (start, end)

    def test_lord_howe_half_hour(self) -> None:
        """Lord Howe moves by 30 minutes: its local day lasts 23.5 or 24.5 hours, and
        02:15, skipped on 2024-10-06 (02:00 jumps to 02:30), falls at 02:45."""
        start, end = Period.daily(tz="Australia/Lord_Howe").window(utc(2024, 10, 6, 3))
        assert timedelta(hours=23, minutes=30) == end - start
        start, end = Period.daily(tz="Australia/Lord_Howe").window(utc(2024, 4, 7, 3))
        assert timedelta(hours=24, minutes=30) == end - start
        skipped = Period.daily(tz="Australia/Lord_Howe", at=time(2, 15))
        boundary = skipped.next(utc(2024, 10, 5, 12))
        assert time(2, 45) == boundary.astimezone(ZoneInfo("Australia/Lord_Howe")).time()

    def test_far_future_dst(self) -> None:
        """Zones' future rules apply: the week of Lord Howe's April 2035 change lasts
        7 days and 30 minutes."""
        start, end = Period.weekly(tz="Australia/Lord_Howe").window(utc(2035, 4, 1))
        assert (utc(2035, 3, 25, 13), utc(2035, 4, 1, 13, 30)) == (start, end)

    def test_apia_skipped_a_day(self) -> None:
        """Apia jumped from 2011-12-29 to 2011-12-31: the boundaries of the 30th and the
        31st are one instant, so no window is empty and every one lasts 24 hours."""
        period = Period.daily(tz="Pacific/Apia")
        first = period.window(utc(2011, 12, 29, 12))
        second = period.window(first[1])
        assert (utc(2011, 12, 29, 10), utc(2011, 12, 30, 10)) == first
        assert (utc(2011, 12, 30, 10), utc(2011, 12, 31, 10)) == second

    def test_kolkata_half_hour_offset(self) -> None:
        """Kolkata's midnight is 18:30 UTC."""
        assert utc(2024, 6, 30, 18, 30) == Period.daily(tz="Asia/Kolkata").next(
            utc(2024, 6, 30, 12)
        )

    @pytest.mark.parametrize(
        ("day", "instant", "expected"),
        [
            (31, utc(2024, 2, 10), (utc(2024, 1, 31), utc(2024, 2, 29))),  # leap year
            (31, utc(2023, 2, 10), (utc(2023, 1, 31), utc(2023, 2, 28))),
            (30, utc(2024, 3, 1), (utc(2024, 2, 29), utc(2024, 3, 30))),
            (29, utc(2100, 3, 1), (utc(2100, 2, 28), utc(2100, 3, 29))),  # 2100: no leap day
            (31, utc(2024, 4, 30, 12), (utc(2024, 4, 30), utc(2024, 5, 31))),
            (1, utc(2024, 12, 31, 23, 59), (utc(2024, 12, 1), utc(2025, 1, 1))),
        ],
    )
    def test_month_ends(
        self, day: int, instant: datetime, expected: tuple[datetime, datetime]
    ) -> None:
        """A day past a month's end means its last day, leap years included."""
        assert expected == Period.monthly(day=day).window(instant)

    def test_monthly_in_a_zone(self) -> None:
        """Calendar months of Berlin start at local midnight: 23:00 or 22:00 UTC."""
        start, end = Period.monthly(tz="Europe/Berlin").window(utc(2024, 3, 15))
        assert (utc(2024, 2, 29, 23), utc(2024, 3, 31, 22)) == (start, end)

    def test_weekly(self) -> None:
        """Weekly windows start on their weekday, at their time."""
        start, end = Period.weekly(weekday=6, at=time(9)).window(utc(2024, 1, 3))
        assert (utc(2023, 12, 31, 9), utc(2024, 1, 7, 9)) == (start, end)

    def test_every_with_anchor(self) -> None:
        """Fixed windows count from the anchor, before and after it."""
        period = Period.every(timedelta(hours=1), anchor=utc(2024, 1, 1, 0, 30))
        assert (utc(2024, 1, 1, 5, 30), utc(2024, 1, 1, 6, 30)) == period.window(utc(2024, 1, 1, 6))
        assert (utc(1999, 12, 31, 23, 30), utc(2000, 1, 1, 0, 30)) == period.window(utc(2000, 1, 1))

    def test_boundary_is_in_the_new_window(self) -> None:
        """An instant exactly at a boundary starts the new window."""
        period = Period.every(10)
        assert (utc(2024, 1, 1, 0, 0, 10), utc(2024, 1, 1, 0, 0, 20)) == period.window(
            utc(2024, 1, 1, 0, 0, 10)
        )

    def test_out_of_range(self) -> None:
        """Instants at the ends of the datetime range are refused, not wrapped."""
        with pytest.raises(ValueError, match="range"):
            Period.monthly().window(datetime(1, 1, 1, tzinfo=UTC))


class TestBoundaryProperties:
    """Hypothesis over the zones the contract names, instants near their offset changes,
    month ends and leap days, and times of day in the hours clocks skip or repeat."""

    @given(calendar())
    @example((Period.daily(tz="Pacific/Apia"), "Pacific/Apia", utc(2011, 12, 30, 9, 59)))
    @example(
        (Period.daily(tz="Europe/Berlin", at=time(2, 30)), "Europe/Berlin", utc(2024, 3, 31, 1))
    )
    def test_windows_tile_time(self, case: tuple[Period, str, datetime]) -> None:
        """The previous boundary is at or before the instant, the next one after it, and
        the windows before and after are the neighbours: no gap, no overlap."""
        period, _, instant = case
        start, end = period.window(instant)
        assert start <= instant < end
        assert (start, end) == (period.previous(instant), period.next(instant))
        assert (start, end) == period.window(start)
        assert end == period.window(end - timedelta(microseconds=1))[1]
        before, after = period.window(start - timedelta(microseconds=1)), period.window(end)
        assert (before[1], after[0]) == (start, end)
        assert before[0] < start
        assert end < after[1]

    @given(calendar())
    def test_boundaries_fall_at_local_times(self, case: tuple[Period, str, datetime]) -> None:
        """A boundary falls at its local time of day, on the right day; a time the clocks
        skip falls as much after the jump as it was meant after the time before it."""
        period, zone, instant = case
        tz = ZoneInfo(zone)
        start, _ = period.window(instant)
        local = start.astimezone(tz)
        candidates = [local.date() - DAY, local.date()]
        # Compared through to_us: aware datetimes in a fold or gap never compare equal
        # across zones (PEP 495).
        meant = [
            d
            for d in candidates
            if to_us(datetime.combine(d, period.at, tzinfo=tz)) == to_us(start)
        ]
        assert meant, f"{start} is not {period.at} of {candidates} in {zone}"
        day = meant[-1]
        if period.kind == "weekly":
            assert period.weekday == day.weekday()
        elif period.kind == "monthly":
            last = (date(day.year + day.month // 12, day.month % 12 + 1, 1) - DAY).day
            assert min(period.day, last) == day.day
        if regular(period, start):
            assert period.at == local.time().replace(fold=0)

    @given(st.sampled_from(ZONES), TIMES, st.data())
    def test_daily_lengths(self, zone: str, at: time, data: st.DataObject) -> None:
        """A day lasts 24 hours unless the zone changes its offset: then 24 hours minus
        the change (23 or 25 hours, 23.5 or 24.5 on Lord Howe). Only a boundary pushed on
        by a skipped hour moves that to the window after the change."""
        period = Period.daily(tz=zone, at=at)
        instant = data.draw(instants(zone))
        tz = ZoneInfo(zone)
        start, end = period.window(instant)
        length = end - start
        change = end.astimezone(tz).utcoffset() - start.astimezone(tz).utcoffset()  # type: ignore[operator]
        assert timedelta(hours=23) <= length <= timedelta(hours=25)
        apia_2011 = zone == "Pacific/Apia" and date(2011, 12, 29) <= start.date() <= date(
            2011, 12, 31
        )
        if regular(period, start) and regular(period, end) and not apia_2011:
            assert DAY - change == length
        if not changes_between(zone, start - DAY, end):
            assert DAY == length

    @given(st.sampled_from(ZONES), st.integers(0, 6), TIMES, st.data())
    def test_weekly_lengths(self, zone: str, weekday: int, at: time, data: st.DataObject) -> None:
        """A week lasts seven days, give or take the offset changes inside it."""
        period = Period.weekly(tz=zone, weekday=weekday, at=at)
        start, end = period.window(data.draw(instants(zone)))
        if not changes_between(zone, start - DAY, end):
            assert 7 * DAY == end - start
        assert abs(end - start - 7 * DAY) <= (2 * HOUR if zone != "Pacific/Apia" else DAY)

    @given(
        st.integers(1, 10**12),
        st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC)),
        st.datetimes(datetime(1971, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC)),
    )
    def test_fixed_windows(self, length_us: int, anchor: datetime, instant: datetime) -> None:
        """Fixed windows are anchor + k * length, whichever side of the anchor."""
        period = Period.every(timedelta(microseconds=length_us), anchor=anchor)
        start, end = period.window(instant)
        assert start <= instant < end
        assert timedelta(microseconds=length_us) == end - start
        assert 0 == (to_us(start) - to_us(anchor)) % length_us

    @given(st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999))
    def test_microseconds_round_trip(self, us: int) -> None:
        """Instants travel as integer microseconds without loss."""
        assert us == to_us(from_us(us))
