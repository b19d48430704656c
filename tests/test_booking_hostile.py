"""Hostile callers of the booking RPCs (AppointmentService, AvailabilityService,
ScheduleService, offerings) through a real channel on the real server: the
edges a well-behaved client never reaches. Every refusal is a documented code
with an ErrorInfo; nothing is half-written."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from booking.v1 import (
    appointments_pb2,
    availability_pb2,
    catalog_pb2,
    common_pb2,
    providers_pb2,
    resources_pb2,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy.engine import make_url

from server.db.embedded import EmbeddedPostgresError
from server.db.engine import to_asyncpg_dsn
from server.testing import assert_eventually, running_server
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
from tests.test_availability import add_override
from tests.test_faults import TcpProxy, busy_server, own_postgres
from tests.test_faults import _assert_unavailable as assert_unavailable
from tests.test_faults import _crash as crash

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


# -- GetAvailability's lists, zones and numbers ----------------------------------------------


async def test_provider_ids_that_repeat_in_another_letter_case_or_are_empty(
    stubs: Stubs, org: str
) -> None:
    """Ids are UUIDs whatever their letter case: 100 ids of which three are
    another's in upper case are three DUPLICATEs (not three more providers),
    and an empty id is a bad item, not "no provider"."""
    b = await make_bookable(stubs, org)
    ids = [b.provider_id] + [str(uuid.uuid4()) for _ in range(99)]
    ids[10], ids[50], ids[99] = ids[0].upper(), ids[3].upper(), ids[3]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.availability.GetAvailability(
            availability(b, ts(at(0)), ts(at(60)), provider_ids=ids)
        )
    violations = details(caught.value)["BadRequest"].field_violations
    assert {(v.field, v.reason) for v in violations} == {
        ("provider_ids[10]", "DUPLICATE"),
        ("provider_ids[50]", "DUPLICATE"),
        ("provider_ids[99]", "DUPLICATE"),
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.availability.GetAvailability(
            availability(b, ts(at(0)), ts(at(60)), provider_ids=[b.provider_id, ""])
        )
    assert violated_fields(caught.value) == {"provider_ids[1]"}
    # Upper case alone is the provider (answered under its canonical id).
    got = await stubs.availability.GetAvailability(
        availability(b, ts(at(0)), ts(at(60)), provider_ids=[b.provider_id.upper()])
    )
    assert got.providers[0].provider_id == b.provider_id
    assert len(got.providers[0].slots) == 2 and not got.providers[0].HasField("error")


async def test_the_request_zone_at_the_edges(stubs: Stubs, org: str) -> None:
    """ "" = the provider's zone; Etc/GMT-14 (UTC+14, the furthest ahead) moves
    the local date; Etc/GMT+14 does not exist (the range ends at Etc/GMT+12)."""
    b = await make_bookable(stubs, org, time_zone="Pacific/Pago_Pago")  # UTC-11
    start = datetime.combine(at(0).date(), datetime.min.time(), tzinfo=UTC) + timedelta(hours=11)
    window = (ts(start), ts(start + timedelta(minutes=30)))
    answers: dict[str, tuple[str, int, int, int]] = {}
    for zone in ("", "UTC", "Etc/GMT-14"):
        got = await stubs.availability.GetAvailability(availability(b, *window, time_zone=zone))
        entry = got.providers[0]
        [slot] = entry.slots
        local_day, hour = slot.local_date.day, slot.local_time.hours
        answers[zone] = (entry.time_zone, local_day, hour, slot.utc_offset_minutes)
    day = start.day
    next_day = (start + timedelta(days=1)).day
    assert answers == {
        "": ("Pacific/Pago_Pago", day, 0, -660),
        "UTC": ("UTC", day, 11, 0),
        "Etc/GMT-14": ("Etc/GMT-14", next_day, 1, 840),
    }
    for zone in ("Etc/GMT+14", "utc", " UTC", "localtime", "posixrules", "Factory"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.availability.GetAvailability(availability(b, *window, time_zone=zone))
        violations = details(caught.value)["BadRequest"].field_violations
        assert [(v.field, v.reason) for v in violations] == [("time_zone", "UNKNOWN_TIME_ZONE")], (
            zone
        )


@pytest.mark.parametrize("n", [-(2**31), -1, 2**31 - 1])
async def test_int32_extremes_in_every_number_of_the_availability_requests(
    stubs: Stubs, org: str, n: int
) -> None:
    b = await make_bookable(stubs, org)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.availability.GetAvailability(
            availability(
                b,
                ts(at(0)),
                ts(at(60)),
                slot_step_minutes=n,
                first_available_count=n,
                min_notice_minutes=n,
                booking_horizon_days=n,
            )
        )
    assert violated_fields(caught.value) == {
        "slot_step_minutes",
        "first_available_count",
        "min_notice_minutes",
        "booking_horizon_days",
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.availability.CheckConflicts(
            check(b, at(0), min_notice_minutes=n, booking_horizon_days=n)
        )
    assert violated_fields(caught.value) == {"min_notice_minutes", "booking_horizon_days"}
    # The largest allowed values are served.
    got = await stubs.availability.GetAvailability(
        availability(
            b,
            ts(at(0)),
            ts(at(60)),
            slot_step_minutes=1440,
            first_available_count=1000,
            min_notice_minutes=525_600,
            booking_horizon_days=730,
        )
    )
    assert slot_starts(got) == []  # 365 days of notice


# -- wall clocks: DST, a zone that changes, an override on a weekly day -----------------

NEW_YORK = ZoneInfo("America/New_York")


def next_spring_forward() -> date:
    """The next second Sunday of March (US clocks jump 02:00 EST -> 03:00 EDT)
    at least two days away."""
    today = datetime.now(UTC).date()
    for year in (today.year, today.year + 1):
        first = date(year, 3, 1)
        sunday = first + timedelta(days=(6 - first.weekday()) % 7 + 7)
        if sunday > today + timedelta(days=1):
            return sunday
    raise AssertionError("unreachable")


def local(on: date, hour: int, minute: int = 0, zone: ZoneInfo = NEW_YORK) -> datetime:
    return datetime(on.year, on.month, on.day, hour, minute, tzinfo=zone).astimezone(UTC)


async def test_an_override_in_the_spring_forward_gap_replaces_the_weekly_rules(
    stubs: Stubs, org: str
) -> None:
    """On the spring-forward Sunday an override of 02:00-04:00 (02:00 does not
    exist) is read as the contract says: 02:00 with the offset before the gap
    (= 03:00 EDT) to 04:00 EDT, one hour; the Sunday weekly rule (09:00-17:00)
    does not apply that date. GetAvailability, CheckConflicts and
    CreateAppointment agree on every start of the day."""
    b = await make_bookable(
        stubs, org, time_zone="America/New_York", duration_minutes=30, hours=((7, 540, 1020),)
    )
    day = next_spring_forward()
    await add_override(stubs, org, b.provider_id, day, [(120, 240)])
    gap_start = local(day, 3)  # 07:00Z
    assert gap_start == datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
    got = await stubs.availability.GetAvailability(
        availability(
            b,
            ts(local(day, 0)),
            ts(local(day, 23)),
            slot_step_minutes=30,
            booking_horizon_days=730,
        )
    )
    slots = got.providers[0].slots
    assert [s.start_time.ToDatetime(tzinfo=UTC) for s in slots] == [
        gap_start,
        gap_start + timedelta(minutes=30),
    ]
    assert [(s.local_time.hours, s.local_time.minutes, s.utc_offset_minutes) for s in slots] == [
        (3, 0, -240),
        (3, 30, -240),
    ]
    # Every quarter hour of the local day: bookable exactly within the hour.
    start = local(day, 0)
    while start < local(day, 23):
        answer = await stubs.availability.CheckConflicts(check(b, start, booking_horizon_days=730))
        assert answer.bookable == (gap_start <= start <= gap_start + timedelta(minutes=30)), start
        start += timedelta(minutes=15)
    refusal = await refused(
        stubs.appointments.CreateAppointment(booking(b, local(day, 10), override=False)),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert [c.reason for c in refusal["Conflicts"]] == [R.CONFLICT_REASON_OUTSIDE_HOURS]


async def test_a_provider_whose_zone_changes_works_its_hours_in_the_new_zone(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Hours are wall-clock times of the provider's zone: after UpdateProvider
    sets another zone, the same 09:00-10:00 is 09:00-10:00 there. A provider
    with appointments keeps its zone: they are dated in it (TIME_ZONE_IN_USE)."""
    today = datetime.now(UTC).date()
    monday = today + timedelta(days=7 - today.weekday() + 7)  # a Monday 8-14 days away
    berlin, tokyo = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Tokyo")

    def to_tokyo(provider_id: str) -> Any:
        return stubs.providers.UpdateProvider(
            providers_pb2.UpdateProviderRequest(
                organization_id=org,
                provider=resources_pb2.Provider(id=provider_id, time_zone="Asia/Tokyo"),
                update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
            )
        )

    booked = await make_bookable(stubs, org, duration_minutes=60, hours=((1, 540, 600),))
    appointment = await book(stubs, booked, local(monday, 9, zone=berlin), override=False)
    await stubs.appointments.CancelAppointment(
        appointments_pb2.CancelAppointmentRequest(
            organization_id=org, appointment_id=appointment.id
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await to_tokyo(booked.provider_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = details(refused.value)["ErrorInfo"]
    assert (info.reason, dict(info.metadata)) == (
        "TIME_ZONE_IN_USE",
        {"time_zone": "Europe/Berlin"},
    )

    b = await make_bookable(stubs, org, duration_minutes=60, hours=((1, 540, 600),))
    await to_tokyo(b.provider_id)
    window = (ts(local(monday, 0, zone=tokyo)), ts(local(monday, 23, zone=berlin)))
    got = await stubs.availability.GetAvailability(availability(b, *window))
    entry = got.providers[0]
    assert entry.time_zone == "Asia/Tokyo"
    assert slot_starts(got) == [local(monday, 9, zone=tokyo)]
    assert (entry.slots[0].local_time.hours, entry.slots[0].utc_offset_minutes) == (9, 540)
    outside = await stubs.availability.CheckConflicts(check(b, local(monday, 9, zone=berlin)))
    assert [c.reason for c in outside.conflicts] == [R.CONFLICT_REASON_OUTSIDE_HOURS]
    await book(stubs, b, local(monday, 9, zone=tokyo), override=False)
    assert len(await rows_of(db, org)) == 2


# -- the database lost mid-booking -------------------------------------------------------


async def test_a_booking_whose_commit_outcome_is_unknown_is_retried_safely(
    database_url: str,
) -> None:
    """The link to PostgreSQL breaks after a booking's COMMIT was sent: the
    caller hears UNAVAILABLE COMMIT_OUTCOME_UNKNOWN. The retry with the same
    request_id returns the booking (not TIME_SLOT_TAKEN by itself); without it,
    the time is taken by the appointment that did commit. The same for a
    reschedule: once, audited once."""
    url = make_url(database_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with running_server(proxied) as srv:
            async with grpc.aio.insecure_channel(srv.target) as channel:
                stubs = Stubs(channel)
                org = await new_org(stubs)
                b = await make_bookable(stubs, org)
                request = booking(b, at(0), override=False, request_id="book-once")
                proxy.cut_after_commit = True
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stubs.appointments.CreateAppointment(request)
                assert proxy.commits_cut == 1
                assert_unavailable(err.value, "COMMIT_OUTCOME_UNKNOWN")
                first = (await stubs.appointments.CreateAppointment(request)).appointment
                assert first.start_time == ts(at(0))
                got = await refused(
                    stubs.appointments.CreateAppointment(booking(b, at(0), override=False)),
                    FAILED,
                    "TIME_SLOT_TAKEN",
                )
                assert got["ErrorInfo"].metadata["appointment_id"] == first.id

                move = reschedule(first, at(60), etag=first.etag, request_id="move-once")
                proxy.cut_after_commit = True
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stubs.appointments.RescheduleAppointment(move)
                assert proxy.commits_cut == 2
                assert_unavailable(err.value, "COMMIT_OUTCOME_UNKNOWN")
                # The etag moved on, but the retry is answered by the first result.
                moved = (await stubs.appointments.RescheduleAppointment(move)).appointment
                assert moved.start_time == ts(at(60)) and moved.etag == '"v2"'
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        [row] = await rows_of(conn, org)
        assert (str(row["id"]), row["version"]) == (first.id, 2)
        assert [a for a, _, _ in await audit_of(conn, org)] == ["create", "reschedule"]
    finally:
        await conn.close()


async def test_database_killed_under_booking_load(tmp_path: Path) -> None:
    """PostgreSQL dies (SIGKILL) while 20 callers book: every failed call is
    UNAVAILABLE with RetryInfo, never INTERNAL or UNKNOWN (nor a TIME_SLOT_TAKEN
    made up from a broken connection); after crash recovery every appointment
    that exists has its one audit event, and every booking a caller was told
    about exists."""
    async with own_postgres(tmp_path) as (pg, url):
        async with busy_server(url) as stubs:
            org = await new_org(stubs)
            bookables = [await make_bookable(stubs, org, duration_minutes=5) for _ in range(20)]
            booked: list[str] = []
            failures: list[grpc.aio.AioRpcError] = []
            stop = asyncio.Event()

            async def writer(b: Bookable) -> None:
                seen = n = 0
                while seen < 3 and not stop.is_set():
                    n += 1
                    request = booking(b, at(5 * n), override=False, request_id=uuid.uuid4().hex)
                    try:
                        answer = await stubs.appointments.CreateAppointment(request, timeout=10)
                        booked.append(answer.appointment.id)
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc)
                        seen += 1

            writers = [asyncio.ensure_future(writer(b)) for b in bookables]
            try:
                await assert_eventually(lambda: _true(len(booked) >= 200 or bool(failures)))
                assert not failures, failures[0]  # all well before the crash
                crash(pg)
                await asyncio.wait_for(asyncio.gather(*writers), timeout=60)
            finally:
                stop.set()
                await asyncio.gather(*writers, return_exceptions=True)
        assert failures
        for failure in failures:
            assert failure.code() == grpc.StatusCode.UNAVAILABLE, failure
            assert details(failure)["ErrorInfo"].reason in {
                "DATABASE_UNAVAILABLE",
                "COMMIT_OUTCOME_UNKNOWN",
            }
            assert details(failure)["RetryInfo"].retry_delay.ToMilliseconds() > 0
        # Crash recovery, once the orphaned backends have gone (as the server's
        # supervisor does it).
        for _ in range(300):
            try:
                await asyncio.to_thread(pg.start)
                break
            except EmbeddedPostgresError:
                await asyncio.sleep(0.1)
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            rows = {str(r["id"]) for r in await rows_of(conn, org)}
            events = await audit_of(conn, org)
            assert sorted(resource for _, resource, _ in events) == sorted(rows)
            assert set(booked) <= rows
        finally:
            await conn.close()


async def _true(value: bool) -> bool:
    return value


# -- text at the edges, and what the logs may hold ---------------------------------------


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        ("\U0010ffff" * 500, "\U0010ffff" * 500),  # 2,000 bytes: the limit is characters
        ("\u0130" * 500, "\u0130" * 500),  # Turkish İ: lower() would make it 1,000
        ("\u03c3\u03c2" * 250, "\u03c3\u03c2" * 250),  # sigma and final sigma kept as sent
        ("e\u0301" * 250, "e\u0301" * 250),  # combining marks count one each
        ("\ufeffbom", "\ufeffbom"),  # not whitespace: kept
        (" \t\u2028\u3000 ", ""),  # only whitespace: no reason
        ("  " + "x" * 500 + "  ", "x" * 500),  # 504 characters sent: refused, not trimmed
    ],
)
async def test_cancel_reasons_at_the_limit(
    stubs: Stubs, org: str, db: asyncpg.Connection, reason: str, stored: str
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    request = appointments_pb2.CancelAppointmentRequest(
        organization_id=org, appointment_id=a.id, reason=reason
    )
    if len(reason) > 500:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.appointments.CancelAppointment(request)
        assert caught.value.code() == INVALID
        assert violated_fields(caught.value) == {"reason"}
        [row] = await rows_of(db, org)
        assert (row["status"], row["cancel_reason"]) == ("pending", None)
        return
    cancelled = (await stubs.appointments.CancelAppointment(request)).appointment
    assert cancelled.cancel_reason == stored
    [row] = await rows_of(db, org)
    assert row["cancel_reason"] == (stored or None)
    for over in ("\U0010ffff" * 501, "\u03c2" * 501):
        other = await book(stubs, b, at(60))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.appointments.CancelAppointment(
                appointments_pb2.CancelAppointmentRequest(
                    organization_id=org, appointment_id=other.id, reason=over
                )
            )
        assert violated_fields(caught.value) == {"reason"}
        await change(stubs, "cancel", other)


async def test_notes_of_2000_astral_characters_round_trip_and_2001_are_refused(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    notes = "\U0010ffff\U0001f600" * 1000
    a = await book(stubs, b, at(0), notes=notes)
    assert a.notes == notes
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await book(stubs, b, at(60), notes=notes + "x")
    assert violated_fields(caught.value) == {"appointment.notes"}
    [row] = await rows_of(db, org)
    assert row["notes"] == notes


async def test_lost_races_and_refusals_log_no_row_values(
    stubs: Stubs, org: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten callers race for one time (the losers go through the exclusion
    constraint's error, whose message quotes the rows' intervals) and one
    reuses an external id (whose message quotes it): nothing of the rows
    reaches the logs."""
    b = await make_bookable(stubs, org)
    caplog.set_level(logging.DEBUG)
    results = await asyncio.gather(
        *(
            stubs.appointments.CreateAppointment(
                booking(b, at(0), notes=f"secret-note-{n}", external_id=f"secret-ext-{n}")
            )
            for n in range(10)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1
    for error in results:
        if isinstance(error, grpc.aio.AioRpcError):
            assert error.code() == FAILED and details(error)["ErrorInfo"].reason == (
                "TIME_SLOT_TAKEN"
            )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await book(stubs, b, at(60), external_id=won[0].appointment.external_id)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    text = caplog.text
    assert "uq_appointments_organization_id_external_id" in text, text  # logs are seen
    day = at(0).strftime("%Y-%m-%d")
    for value in ("secret-", "Key (", "conflicts with existing", "Failing row", day):
        assert value not in text, (value, text)


# -- bytes no client library would send ----------------------------------------------------


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda good: good.replace(b"AB", b"\xed\xa0"),  # a lone surrogate, UTF-8 encoded
        lambda good: good.replace(b"AB", b"\xff\xfe"),  # not UTF-8 at all
        lambda good: b"\xff\xff\xff",  # not protobuf
    ],
    ids=["surrogate", "not-utf8", "not-protobuf"],
)
async def test_a_request_that_does_not_parse_is_invalid_argument(
    stubs: Stubs, org: str, db: asyncpg.Connection, channel: grpc.aio.Channel, corrupt: Any
) -> None:
    """A lone surrogate cannot be put in a proto3 string by a client library
    (Python's refuses to encode it), but it can be sent as bytes: the answer
    must still be INVALID_ARGUMENT with an ErrorInfo, and nothing written."""
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    with pytest.raises(UnicodeEncodeError):
        appointments_pb2.CancelAppointmentRequest(reason="\ud800").SerializeToString()
    good = appointments_pb2.CancelAppointmentRequest(
        organization_id=org, appointment_id=a.id, reason="AB"
    ).SerializeToString()
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/booking.v1.AppointmentService/CancelAppointment"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(corrupt(good))
    assert caught.value.code() == INVALID, caught.value
    assert details(caught.value)["ErrorInfo"].reason == "MALFORMED_REQUEST"
    [row] = await rows_of(db, org)
    assert row["status"] == "pending"
