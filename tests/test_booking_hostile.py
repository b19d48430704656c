"""Hostile callers of the booking RPCs (AppointmentService, AvailabilityService,
ScheduleService, offerings) through a real channel on the real server: the
edges a well-behaved client never reaches. Every refusal is a documented code
with an ErrorInfo; nothing is half-written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from booking.v1 import (
    appointments_pb2,
    availability_pb2,
    resources_pb2,
)
from google.protobuf import timestamp_pb2

from tests.conftest import Bookable, Stubs, make_bookable, violated_fields
from tests.test_appointments import (
    FAILED,
    at,
    book,
    booking,
    refused,
    rows_of,
    ts,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
R = availability_pb2.ConflictReason


def availability(
    b: Bookable, start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, **fields: Any
) -> availability_pb2.GetAvailabilityRequest:
    return availability_pb2.GetAvailabilityRequest(
        organization_id=b.org,
        provider_ids=fields.pop("provider_ids", [b.provider_id]),
        service_id=b.service_id,
        start_time=start,
        end_time=end,
        **fields,
    )


def check(b: Bookable, start: datetime, **fields: Any) -> availability_pb2.CheckConflictsRequest:
    return availability_pb2.CheckConflictsRequest(
        organization_id=b.org,
        provider_id=fields.pop("provider_id", b.provider_id),
        service_id=b.service_id,
        start_time=ts(start),
        **fields,
    )


def reschedule(
    a: resources_pb2.Appointment, start: datetime, **fields: Any
) -> appointments_pb2.RescheduleAppointmentRequest:
    return appointments_pb2.RescheduleAppointmentRequest(
        organization_id=a.organization_id, appointment_id=a.id, start_time=ts(start), **fields
    )


def slot_starts(response: availability_pb2.GetAvailabilityResponse) -> list[datetime]:
    return [s.start_time.ToDatetime(tzinfo=UTC) for p in response.providers for s in p.slots]


# -- ranges and timestamps to the nanosecond ----------------------------------------------


async def test_a_range_of_62_days_and_one_nanosecond_is_out_of_range(
    stubs: Stubs, org: str
) -> None:
    """ "at most 62 days after it": the nanoseconds count. (They were truncated to
    microseconds before the comparison, so 62 days + 1..999 ns passed.)"""
    b = await make_bookable(stubs, org)
    start = ts(at(0))
    end = ts(at(0) + timedelta(days=62))
    got = await stubs.availability.GetAvailability(
        availability(b, start, end, slot_step_minutes=1440)
    )
    assert len(got.providers[0].slots) == 62
    for nanos in (1, 999, 1000):
        end.nanos = nanos
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.availability.GetAvailability(availability(b, start, end))
        assert caught.value.code() == INVALID, nanos
        assert violated_fields(caught.value) == {"end_time"}


async def test_sub_microsecond_range_bounds_are_exact(stubs: Stubs, org: str) -> None:
    """Slots start in [start_time, end_time) to the nanosecond: a slot at T is
    in a range ending at T + 1 ns and not in one starting at T + 1 ns; a range
    of 1 ns is a range (end after start), not an error."""
    b = await make_bookable(stubs, org, duration_minutes=60)
    t = at(0)
    after_t = ts(t)
    after_t.nanos = 1
    got = await stubs.availability.GetAvailability(availability(b, ts(t), after_t))
    assert slot_starts(got) == [t]
    got = await stubs.availability.GetAvailability(
        availability(b, after_t, ts(t + timedelta(hours=2)))
    )
    assert slot_starts(got) == [t + timedelta(hours=1)]


async def test_a_start_with_nanos_books_the_instant_and_its_end(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """A start at .5 s is an instant like any other: it ends .5 s past the
    minute, and the exclusion sees it (a booking at the next whole minute
    overlaps it by half a second)."""
    b = await make_bookable(stubs, org, duration_minutes=30)
    request = booking(b, at(0))
    request.appointment.start_time.nanos = 500_000_000
    a = (await stubs.appointments.CreateAppointment(request)).appointment
    assert (a.start_time.seconds, a.start_time.nanos) == (ts(at(0)).seconds, 500_000_000)
    assert (a.end_time.seconds, a.end_time.nanos) == (ts(at(30)).seconds, 500_000_000)
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(30))), FAILED, "TIME_SLOT_TAKEN"
    )
    assert got["ErrorInfo"].metadata["appointment_id"] == a.id
    assert got["ErrorInfo"].metadata["end_time"] == (
        at(30).replace(microsecond=500_000).isoformat().replace("+00:00", "Z")
    )
    conflicts = await stubs.availability.CheckConflicts(check(b, at(30)))
    assert [c.reason for c in conflicts.conflicts] == [R.CONFLICT_REASON_OVERLAP]
    assert len(await rows_of(db, org)) == 1


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000, 2**31 - 1, -(2**31)])
async def test_invalid_nanos_are_invalid_argument_everywhere(
    stubs: Stubs, org: str, db: asyncpg.Connection, nanos: int
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    bad = ts(at(60))
    bad.nanos = nanos
    create = booking(b, at(60))
    create.appointment.start_time.CopyFrom(bad)
    move = reschedule(a, at(60))
    move.start_time.CopyFrom(bad)
    checking = check(b, at(60))
    checking.start_time.CopyFrom(bad)
    calls: list[tuple[Any, str]] = [
        (stubs.appointments.CreateAppointment(create), "appointment.start_time"),
        (stubs.appointments.RescheduleAppointment(move), "start_time"),
        (stubs.availability.CheckConflicts(checking), "start_time"),
        (stubs.availability.GetAvailability(availability(b, bad, ts(at(600)))), "start_time"),
    ]
    for call, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == INVALID
        assert violated_fields(caught.value) == {field}
    assert len(await rows_of(db, org)) == 1
