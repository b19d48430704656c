"""Guarantees of the booking rules that the mutants of .ci/mutate.py
("booking-*") found untested.

With override_rules, a taken time is refused for the overlap alone: the
rules were skipped, so the refusal names only the appointments in the way
(appointments.proto, CreateAppointmentRequest.override_rules).

The policy bounds are inclusive: a start exactly at now + min notice, or
exactly at now + horizon, is bookable (availability.proto: "at least
min_notice_minutes from now and at most booking_horizon_days days from
now"). Through the channel ``now`` is the server's clock at the call, so the
exact instant cannot be named; the rule function
(server.booking.find_conflicts, shared by CheckConflicts and the writes) is
checked at the boundary itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
from booking.v1 import availability_pb2

from server import booking, scheduling
from tests.conftest import Stubs, make_bookable
from tests.test_appointments import BASE, book, refused
from tests.test_appointments import booking as booking_request


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


async def test_an_override_refused_for_a_taken_time_names_only_the_holder(
    stubs: Stubs, org: str
) -> None:
    ten = BASE.replace(hour=10)
    b = await make_bookable(
        stubs, org, time_zone="UTC", duration_minutes=60, hours=((ten.isoweekday(), 600, 720),)
    )
    holder = await book(stubs, b, ten, override=False)
    # Half an hour earlier: overlaps the holder AND starts outside the hours.
    got = await refused(
        stubs.appointments.CreateAppointment(
            booking_request(b, ten - timedelta(minutes=30), override=True)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TIME_SLOT_TAKEN",
    )
    assert [(v.type, v.subject) for v in got["PreconditionFailure"].violations] == [
        ("CONFLICT_REASON_OVERLAP", f"appointments/{holder.id}")
    ]
    assert [(c.reason, c.appointment_id) for c in got["Conflicts"]] == [
        (availability_pb2.CONFLICT_REASON_OVERLAP, holder.id)
    ]
