"""Hostile callers of the booking RPCs (AppointmentService, AvailabilityService,
ScheduleService, offerings) through a real channel on the real server: the
edges a well-behaved client never reaches. Every refusal is a documented code
with an ErrorInfo; nothing is half-written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from booking.v1 import (
    appointments_pb2,
    availability_pb2,
    catalog_pb2,
    common_pb2,
    resources_pb2,
)
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.conftest import Bookable, Stubs, details, make_bookable, new_org, violated_fields
from tests.test_appointments import (
    CANCELLED,
    CONFIRMED,
    FAILED,
    at,
    audit_of,
    book,
    booking,
    change,
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


# -- request ids, repeated and crossed --------------------------------------------------


async def test_a_request_id_reused_by_another_rpc_is_refused_and_changes_nothing(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0), request_id="rid-1")
    calls: list[Any] = [
        stubs.appointments.CancelAppointment(
            appointments_pb2.CancelAppointmentRequest(
                organization_id=org, appointment_id=a.id, request_id="rid-1"
            )
        ),
        stubs.appointments.ConfirmAppointment(
            appointments_pb2.ConfirmAppointmentRequest(
                organization_id=org, appointment_id=a.id, request_id="rid-1"
            )
        ),
        stubs.appointments.RescheduleAppointment(reschedule(a, at(60), request_id="rid-1")),
    ]
    for call in calls:
        got = await refused(call, INVALID, "REQUEST_ID_REUSED")
        assert {v.field for v in got["BadRequest"].field_violations} == {"request_id"}
    [row] = await rows_of(db, org)
    assert (row["status"], row["version"]) == ("pending", 1)
    assert await audit_of(db, org) == [("create_override", a.id, [])]


async def test_one_request_id_with_different_payloads_at_once_books_one(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """20 callers share a request_id but want 20 different times: one books,
    the others are told the key is taken (INVALID_ARGUMENT) or, if they
    asked for the winner's time, get its answer."""
    b = await make_bookable(stubs, org)
    results = await asyncio.gather(
        *(
            stubs.appointments.CreateAppointment(booking(b, at(60 * n), request_id="shared"))
            for n in range(20)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1, results
    for error in lost:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == INVALID, error
        assert details(error)["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    [row] = await rows_of(db, org)
    assert str(row["id"]) == won[0].appointment.id
    assert len(await audit_of(db, org)) == 1


# -- the lifecycle, pushed ---------------------------------------------------------------


async def test_cancel_twice_confirm_after_cancel_and_reschedule_a_cancelled(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    cancel = appointments_pb2.CancelAppointmentRequest(
        organization_id=org, appointment_id=a.id, reason="first", request_id="c-1"
    )
    first = await stubs.appointments.CancelAppointment(cancel)
    assert await stubs.appointments.CancelAppointment(cancel) == first  # a retry: replayed
    again = [
        stubs.appointments.CancelAppointment(
            appointments_pb2.CancelAppointmentRequest(
                organization_id=org, appointment_id=a.id, reason="second"
            )
        ),
        stubs.appointments.CancelAppointment(
            appointments_pb2.CancelAppointmentRequest(
                organization_id=org, appointment_id=a.id, request_id="c-2"
            )
        ),
        stubs.appointments.ConfirmAppointment(
            appointments_pb2.ConfirmAppointmentRequest(organization_id=org, appointment_id=a.id)
        ),
        stubs.appointments.RescheduleAppointment(reschedule(a, at(60), override_rules=True)),
    ]
    for call in again:
        got = await refused(call, FAILED, "INVALID_TRANSITION")
        assert dict(got["ErrorInfo"].metadata) == {"current_status": "APPOINTMENT_STATUS_CANCELLED"}
    [row] = await rows_of(db, org)
    assert (row["status"], row["version"], row["cancel_reason"]) == ("cancelled", 2, "first")
    assert [action for action, _, _ in await audit_of(db, org)] == ["create_override", "cancel"]


async def test_reschedule_to_its_own_time_is_not_a_conflict_with_itself(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Its own time does not count, rules applied or not. (The write happens:
    a new etag and a "reschedule" audit event with no changed fields.)"""
    b = await make_bookable(stubs, org, duration_minutes=60, buffer_after_minutes=30)
    a = await book(stubs, b, at(0), status=CONFIRMED)
    moved = await stubs.appointments.RescheduleAppointment(reschedule(a, at(0), etag=a.etag))
    assert moved.appointment.start_time == a.start_time
    assert moved.appointment.end_time == a.end_time and moved.appointment.status == CONFIRMED
    # Into its own buffer: only another appointment's time counts.
    moved = await stubs.appointments.RescheduleAppointment(reschedule(a, at(30)))
    assert moved.appointment.start_time == ts(at(30))
    [row] = await rows_of(db, org)
    assert row["occupied"] == asyncpg.Range(at(30), at(120))
    assert await audit_of(db, org) == [
        ("create_override", a.id, []),
        ("reschedule", a.id, []),
        ("reschedule", a.id, ["start_time", "end_time"]),
    ]


async def test_reschedule_to_another_tenants_provider_is_not_found_even_with_override(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    other = await make_bookable(stubs, await new_org(stubs))
    for override in (False, True):
        got = await refused(
            stubs.appointments.RescheduleAppointment(
                reschedule(a, at(60), provider_id=other.provider_id, override_rules=override)
            ),
            grpc.StatusCode.NOT_FOUND,
            "PROVIDER_NOT_FOUND",
        )
        assert got["ResourceInfo"].resource_name == other.provider_id
    [row] = await rows_of(db, org)
    assert (str(row["provider_id"]), row["version"]) == (b.provider_id, 1)
    assert await rows_of(db, other.org) == []


async def test_touching_appointments_and_touching_buffers_are_allowed(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """[start - before, end + after) is half open: end == next start, and a
    buffer ending where the next buffer begins, both book; CheckConflicts
    agrees with the writes on each side of the edge."""
    b = await make_bookable(stubs, org, duration_minutes=30, buffer_before_minutes=15)
    after = await make_bookable(stubs, org, duration_minutes=30, buffer_after_minutes=15)
    a = await book(stubs, after, at(0), provider_id=b.provider_id)  # occupies [0, 45)
    edge = await stubs.availability.CheckConflicts(check(b, at(60)))
    assert edge.bookable and edge.occupied_start_time == ts(at(45))
    inside = await stubs.availability.CheckConflicts(check(b, at(59)))
    assert [(c.reason, c.appointment_id) for c in inside.conflicts] == [
        (R.CONFLICT_REASON_BUFFER, a.id)
    ]
    await book(stubs, b, at(60))  # occupies [45, 90): touches
    await book(stubs, after, at(90), provider_id=b.provider_id)  # [90, 135): touches
    await book(stubs, b, at(-30))  # [-45, 0): its end is the first's start
    assert len(await rows_of(db, org)) == 4


async def test_check_conflicts_exclusions_that_are_not_the_providers_own(
    stubs: Stubs, org: str
) -> None:
    """exclude_appointment_id of a cancelled appointment or of another
    provider's excludes nothing that counts; another tenant's is NOT_FOUND."""
    b = await make_bookable(stubs, org)
    other_provider = await make_bookable(stubs, org)
    holder = await book(stubs, b, at(0))
    elsewhere = await book(stubs, other_provider, at(0))
    cancelled = await book(stubs, b, at(60))
    await change(stubs, "cancel", cancelled)
    for excluded in (elsewhere.id, cancelled.id):
        answer = await stubs.availability.CheckConflicts(
            check(b, at(0), exclude_appointment_id=excluded)
        )
        assert [(c.reason, c.appointment_id) for c in answer.conflicts] == [
            (R.CONFLICT_REASON_OVERLAP, holder.id)
        ]
    foreign = await book(stubs, await make_bookable(stubs, await new_org(stubs)), at(0))
    got = await refused(
        stubs.availability.CheckConflicts(check(b, at(0), exclude_appointment_id=foreign.id)),
        grpc.StatusCode.NOT_FOUND,
        "APPOINTMENT_NOT_FOUND",
    )
    assert got["ResourceInfo"].resource_name == foreign.id


async def test_an_inactive_service_books_with_override_and_a_deleted_offering_reschedules(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, duration_minutes=30)
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org,
            offering=resources_pb2.Offering(
                provider_id=b.provider_id,
                service_id=b.service_id,
                duration_minutes=90,
                price=common_pb2.Money(currency_code="EUR", amount_minor=9900),
            ),
        )
    )
    a = await book(stubs, b, at(0))
    assert a.end_time == ts(at(90)) and a.price.amount_minor == 9900
    await stubs.catalog.UpdateService(
        catalog_pb2.UpdateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(id=b.service_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        )
    )
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(600), override=False)),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert [c.reason for c in got["Conflicts"]] == [R.CONFLICT_REASON_SERVICE_INACTIVE]
    walk_in = await book(stubs, b, at(600))  # the contract's staff override
    assert walk_in.end_time == ts(at(690))
    await stubs.catalog.DeleteOffering(
        catalog_pb2.DeleteOfferingRequest(
            organization_id=org, provider_id=b.provider_id, service_id=b.service_id
        )
    )
    # The booked appointment stays as it was booked ...
    kept = await stubs.appointments.GetAppointment(
        appointments_pb2.GetAppointmentRequest(organization_id=org, appointment_id=a.id)
    )
    assert kept.appointment.end_time == ts(at(90)) and kept.appointment.price.amount_minor == 9900
    # ... and moving it applies the rules again (no offering, inactive service).
    got = await refused(
        stubs.appointments.RescheduleAppointment(reschedule(a, at(120))),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert {c.reason for c in got["Conflicts"]} == {
        R.CONFLICT_REASON_SERVICE_NOT_OFFERED,
        R.CONFLICT_REASON_SERVICE_INACTIVE,
    }
    moved = await stubs.appointments.RescheduleAppointment(
        reschedule(a, at(120), override_rules=True)
    )
    # The service's own duration now (30); the price stays the booked one.
    assert moved.appointment.end_time == ts(at(150))
    assert moved.appointment.price.amount_minor == 9900
    assert CANCELLED not in {r["status"] for r in await rows_of(db, org)}
