"""WorkingHours' DST policy end to end, through the channel, for every start
(and end) of the next DST change days.

For America/New_York, Europe/London (every hour) and Australia/Lord_Howe
(30-minute changes: every half hour), on the next spring-forward and the
next fall-back day (found by reading the zone's offsets from today on, so
they are always in the future), the provider's weekly hours of that weekday
are set to start at h (h to 24:00), then to end at h (00:00 to h).
GetAvailability over the day must offer its first slot at the documented
instant of h (start side) and its last slot ending at it (end side), and
CheckConflicts must agree at that instant and one minute past it.

The documented instant is computed here by brute force over UTC minutes,
never with zoneinfo's fold arithmetic: the earliest UTC minute whose local
reading on that date is h (an ambiguous h: its first occurrence); when no
minute reads h (a spring-forward gap), the last minute before the readings
pass h plus what is left of h, i.e. h moved later by the gap's length.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from booking.v1 import availability_pb2, schedules_pb2

from tests.conftest import Stubs, make_bookable, weekly
from tests.test_availability_oracle import HORIZON_DAYS, as_dt, check_conflicts, reading, ts

MINUTE = timedelta(minutes=1)
DURATION = 30  # every stretch below lasts a multiple of 30 minutes
OUTSIDE = availability_pb2.ConflictReason.CONFLICT_REASON_OUTSIDE_HOURS
ZONES = {"America/New_York": 60, "Europe/London": 60, "Australia/Lord_Howe": 30}


def offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return reading(zone, instant) - instant.replace(tzinfo=None)


def next_change_days(zone: ZoneInfo, today: date) -> tuple[date, date]:
    """(next spring-forward, next fall-back) local dates after today: the local
    date of the first UTC minute with a new offset, found by stepping noon to
    noon, then minute by minute through the day the offset changed."""
    found: dict[bool, date] = {}
    day = datetime(today.year, today.month, today.day, 12, tzinfo=UTC) + timedelta(days=1)
    while len(found) < 2:
        assert day < datetime(today.year + 2, 1, 1, tzinfo=UTC), "no DST changes"
        before, after = offset(zone, day), offset(zone, day + timedelta(days=1))
        if before != after:
            t = day
            while offset(zone, t) == before:
                t += MINUTE
            found.setdefault(after > before, reading(zone, t).date())
        day += timedelta(days=1)
    return found[True], found[False]


class Clock:
    """Readings of every UTC minute around a local date."""

    def __init__(self, zone: ZoneInfo, on: date) -> None:
        self.t0 = datetime(on.year, on.month, on.day, tzinfo=UTC) - timedelta(days=1)
        self.readings = [reading(zone, self.t0 + i * MINUTE) for i in range(4 * 1440)]

    def instant(self, on: date, minute: int) -> datetime:
        """The documented instant of wall minute ``minute`` (0-1440) of ``on``."""
        wall = datetime(on.year, on.month, on.day) + minute * MINUTE
        for i, r in enumerate(self.readings):
            if r == wall:  # the earliest minute reading it: its first occurrence
                return self.t0 + i * MINUTE
            if r > wall:  # never read: the gap; before the jump + what is left
                assert i > 0
                return self.t0 + (i - 1) * MINUTE + (wall - self.readings[i - 1])
        raise AssertionError(f"{wall} is not around {on}")

    def kind(self, on: date, minute: int) -> str:
        wall = datetime(on.year, on.month, on.day) + minute * MINUTE
        seen = self.readings.count(wall)
        return {0: "nonexistent", 1: "plain"}.get(seen, "ambiguous")


@pytest.mark.parametrize("zone_name", list(ZONES))
async def test_every_start_and_end_of_the_next_change_days(
    stubs: Stubs, org: str, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    b = await make_bookable(stubs, org, time_zone=zone_name, duration_minutes=DURATION, hours=())
    spring, fall = next_change_days(zone, datetime.now(UTC).date())
    clocks = {d: Clock(zone, d) for d in (spring, fall)}
    step = ZONES[zone_name]
    seen: set[tuple[str, str]] = set()

    async def hours(start: int, end: int) -> None:
        await stubs.schedules.ReplaceWorkingHours(
            schedules_pb2.ReplaceWorkingHoursRequest(
                organization_id=org,
                provider_id=b.provider_id,
                working_hours=[
                    weekly(day, start, end) for day in sorted({d.isoweekday() for d in clocks})
                ],
            )
        )

    async def slots(on: date) -> list[tuple[datetime, datetime]]:
        clock = clocks[on]
        got = await stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(
                organization_id=org,
                provider_ids=[b.provider_id],
                service_id=b.service_id,
                # The day itself: slots of neighbouring days never count.
                start_time=ts(clock.instant(on, 0)),
                end_time=ts(clock.instant(on, 1440)),
                booking_horizon_days=HORIZON_DAYS,
            )
        )
        entry = got.providers[0]
        assert not entry.HasField("error"), entry
        return [(as_dt(s.start_time), as_dt(s.end_time)) for s in entry.slots]

    async def conflicts(start: datetime) -> set[int]:
        got = await check_conflicts(stubs, org, b.provider_id, b.service_id, start)
        assert got.bookable == (not got.conflicts)
        return {c.reason for c in got.conflicts}

    for h in range(0, 1440, step):
        # Start side: h to 24:00.
        await hours(h, 1440)
        for on, clock in clocks.items():
            first = clock.instant(on, h)
            end = clock.instant(on, 1440)
            context = (zone_name, on, h, clock.kind(on, h), first)
            seen.add((on.isoformat(), clock.kind(on, h)))
            got = await slots(on)
            assert got, context
            assert got[0][0] == first, (context, got[0])
            # One stretch: back to back up to midnight, nothing else that day.
            assert got == [
                (first + k * DURATION * MINUTE, first + (k + 1) * DURATION * MINUTE)
                for k in range(int((end - first) / MINUTE) // DURATION)
            ], context
            assert await conflicts(first) == set(), context
            assert OUTSIDE in await conflicts(first - MINUTE), context
        # End side: 00:00 to h (h = 00:00 would be empty: 24:00 instead).
        stop = h or 1440
        await hours(0, stop)
        for on, clock in clocks.items():
            last_end = clock.instant(on, stop)
            context = (zone_name, on, stop, clock.kind(on, stop), last_end)
            got = await slots(on)
            assert got and got[0][0] == clock.instant(on, 0), context
            assert got[-1][1] == last_end, (context, got[-1])
            assert await conflicts(last_end - DURATION * MINUTE) == set(), context
            assert OUTSIDE in await conflicts(last_end - DURATION * MINUTE + MINUTE), context
    # The days held what they were chosen for.
    assert (spring.isoformat(), "nonexistent") in seen
    assert (fall.isoformat(), "ambiguous") in seen
