"""server.scheduling: the wall-clock rule (resources.proto WorkingHours: RFC
5545 / java.time) on every DST change day of 2026 of New York, London and Lord
Howe Island (30-minute shift), for every hour (every half hour on Lord Howe),
checked against the documented meaning found by brute force over UTC minutes
(the reading of each minute, never zoneinfo's fold arithmetic); then
stretches, the first part outside the hours and the slot grid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from server import scheduling
from server.scheduling import Calendar, SlotRules, WeeklyRule, wall_instant

MINUTE = timedelta(minutes=1)
ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe")


def reading(zone: ZoneInfo, instant: datetime) -> datetime:
    """The local wall clock (naive) at an instant: UTC plus the zone's offset then."""
    return instant.astimezone(zone).replace(tzinfo=None)


def brute_wall_instant(zone: ZoneInfo, on: date, minute: int) -> datetime:
    """The documented meaning, by scanning UTC minutes: the earliest instant
    whose reading is the wall time; when none (a gap), the offset before the
    gap: the last instant before the readings pass it, plus what is left."""
    wall = datetime(on.year, on.month, on.day) + timedelta(minutes=minute)
    u = datetime(on.year, on.month, on.day, tzinfo=UTC) - timedelta(hours=16)
    end = u + timedelta(hours=72)
    previous: datetime | None = None
    while u < end:
        r = reading(zone, u)
        if r == wall:
            return u
        if r > wall:
            assert previous is not None
            before = u - MINUTE
            return before + (wall - previous)
        previous = r
        u += MINUTE
    raise AssertionError("not found")


def change_days(zone: ZoneInfo, year: int) -> list[date]:
    """The dates around each change of offset in a year (the change day and
    its neighbours: checking more days costs little)."""
    out: set[date] = set()
    d = date(year, 1, 1)
    while d.year == year:
        a = datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
        b = a + timedelta(days=1)
        if reading(zone, a) - a.replace(tzinfo=None) != reading(zone, b) - b.replace(tzinfo=None):
            out.update(d + timedelta(days=k) for k in (0, 1, 2))
        d += timedelta(days=1)
    return sorted(out)


@pytest.mark.parametrize("zone_name", ZONES)
def test_wall_clock_rule_on_every_change_day(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    days = change_days(zone, 2026)
    assert len(days) == 6  # two changes, each with its neighbours
    step = 30 if zone_name == "Australia/Lord_Howe" else 60
    checked = 0
    for on in days:
        for minute in range(0, 1441, step):
            assert wall_instant(zone, on, minute) == brute_wall_instant(zone, on, minute), (
                zone_name,
                on,
                minute,
            )
            checked += 1
    assert checked >= len(days) * 25


def test_documented_examples() -> None:
    ny = ZoneInfo("America/New_York")
    # 02:30 on the spring-forward day is 03:30 EDT.
    assert wall_instant(ny, date(2026, 3, 8), 150) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    # 01:30 on the fall-back day is its first occurrence, 01:30 EDT.
    assert wall_instant(ny, date(2026, 11, 1), 90) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    # Lord Howe: 02:15 on 2026-10-04 becomes 02:45.
    lh = ZoneInfo("Australia/Lord_Howe")
    got = wall_instant(lh, date(2026, 10, 4), 135).astimezone(lh)
    assert (got.hour, got.minute) == (2, 45)
    # 24:00 is 00:00 of the next date.
    assert wall_instant(ny, date(2026, 3, 7), 1440) == wall_instant(ny, date(2026, 3, 8), 0)


def test_interval_lengths_on_change_days() -> None:
    ny = ZoneInfo("America/New_York")

    def hours(on: date, a: int, b: int) -> float:
        cal = Calendar(ny, [WeeklyRule(on.isoweekday(), a, b)])
        (stretch,) = scheduling.stretches(cal, on, on)
        return (stretch[1] - stretch[0]).total_seconds() / 3600

    assert hours(date(2026, 11, 1), 0, 180) == 4
    assert hours(date(2026, 3, 8), 0, 180) == 2
    assert hours(date(2026, 3, 9), 0, 180) == 3
    # An interval inside the gap that ends at the gap's end is empty.
    cal = Calendar(ny, [WeeklyRule(7, 150, 180)])
    assert scheduling.stretches(cal, date(2026, 3, 8), date(2026, 3, 8)) == []


def test_stretches_join_across_midnight_and_overrides_replace_rules() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    monday = date(2026, 6, 1)
    cal = Calendar(
        berlin,
        [
            WeeklyRule(1, 22 * 60, 1440),
            WeeklyRule(2, 0, 120),
            WeeklyRule(2, 120, 180),
            WeeklyRule(3, 600, 660, valid_from=date(2026, 6, 10)),
        ],
        {date(2026, 6, 4): [], date(2026, 6, 5): [(60, 90), (30, 60)]},
    )
    got = scheduling.stretches(cal, monday, monday + timedelta(days=4))
    assert got == [
        (wall_instant(berlin, monday, 1320), wall_instant(berlin, monday + timedelta(days=1), 180)),
        (
            wall_instant(berlin, date(2026, 6, 5), 30),
            wall_instant(berlin, date(2026, 6, 5), 90),
        ),
    ]


def test_first_outside() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def m(x: int) -> datetime:
        return t + timedelta(minutes=x)

    work = [(m(0), m(60)), (m(90), m(120))]
    assert scheduling.first_outside(work, m(0), m(60)) is None
    assert scheduling.first_outside(work, m(30), m(100)) == (m(60), m(90))
    assert scheduling.first_outside(work, m(70), m(100)) == (m(70), m(90))
    assert scheduling.first_outside(work, m(100), m(130)) == (m(120), m(130))
    assert scheduling.first_outside(work, m(-10), m(10)) == (m(-10), m(0))
    assert scheduling.first_outside([], m(0), m(1)) == (m(0), m(1))


def test_slot_grid_against_brute_force() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def m(x: int) -> datetime:
        return t + timedelta(minutes=x)

    work = [(m(0), m(300)), (m(310), m(600)), (m(605), m(640))]
    busy = scheduling.merge(
        [(m(100), m(130)), (m(120), m(140)), (m(400), m(401)), (m(700), m(800))]
    )
    for dur, before, after, step, lo, hi, latest in [
        (30, 0, 0, 30, -100, 1000, 1000),
        (30, 10, 5, 15, 20, 1000, 500),
        (45, 0, 20, 7, 0, 610, 1000),
        (35, 5, 0, 35, 311, 1000, 1000),
    ]:
        rules = SlotRules(
            timedelta(minutes=dur),
            timedelta(minutes=before),
            timedelta(minutes=after),
            timedelta(minutes=step),
            m(lo),
            m(hi),
            m(latest),
        )
        got = scheduling.slot_starts(work, busy, rules)
        expected = []
        for a, b in work:
            s = a
            while s < b:
                occ = (s - rules.before, s + rules.duration + rules.after)
                if (
                    s + rules.duration <= b
                    and m(lo) <= s < m(hi)
                    and s <= m(latest)
                    and not any(x < occ[1] and occ[0] < y for x, y in busy)
                ):
                    expected.append(s)
                s += rules.step
        assert got == expected, (dur, before, after, step)
