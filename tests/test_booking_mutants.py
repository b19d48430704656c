"""Guarantees of the booking rules that the mutants of .ci/mutate.py
("booking-*") found untested.

The policy bounds are inclusive: a start exactly at now + min notice, or
exactly at now + horizon, is bookable (availability.proto: starts in
[now + notice, now + horizon]). Through the channel ``now`` is the server's
clock at the call, so the exact instant cannot be named; the rule function
(server.booking.find_conflicts, shared by CheckConflicts and the writes) is
checked at the boundary itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from server import booking, scheduling


def _always_open(on: date) -> booking.ProviderCalendar:
    weekly = [scheduling.WeeklyRule(d, 0, 1440) for d in range(1, 8)]
    cal = scheduling.Calendar(ZoneInfo("UTC"), weekly, {})
    return booking.ProviderCalendar(cal, on - timedelta(days=2), on + timedelta(days=2))


def test_a_start_exactly_at_the_policy_bounds_is_bookable() -> None:
    start = datetime(2030, 6, 5, 10, 0, 0, 123456, tzinfo=UTC)
    end = start + timedelta(minutes=30)
    cal = _always_open(start.date())

    def reasons(earliest: datetime, latest: datetime) -> list[booking.Reason]:
        found = booking.find_conflicts(
            cal, start=start, end=end, occupied=(start, end), earliest=earliest, latest=latest
        )
        return [c.reason for c in found]

    one_us = timedelta(microseconds=1)
    assert reasons(start, start) == []
    assert reasons(start + one_us, start) == [booking.Reason.MIN_NOTICE]
    assert reasons(start, start - one_us) == [booking.Reason.BEYOND_HORIZON]
