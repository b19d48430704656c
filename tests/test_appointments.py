"""AppointmentService: booking, the lifecycle, idempotency, hostile input.

Concurrency (many callers, interleaved transactions) is in
tests/test_booking_concurrency.py; these tests call one RPC at a time through
the real channel and read the rows back from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
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
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import Bookable, Stubs, details, make_bookable, new_org, violated_fields

Status = resources_pb2.AppointmentStatus
PENDING = Status.APPOINTMENT_STATUS_PENDING
CONFIRMED = Status.APPOINTMENT_STATUS_CONFIRMED
COMPLETED = Status.APPOINTMENT_STATUS_COMPLETED
CANCELLED = Status.APPOINTMENT_STATUS_CANCELLED
NO_SHOW = Status.APPOINTMENT_STATUS_NO_SHOW
FAILED = grpc.StatusCode.FAILED_PRECONDITION

# A whole hour a week from now: inside the default 365-day horizon, no notice.
BASE = (datetime.now(UTC) + timedelta(days=7)).replace(minute=0, second=0, microsecond=0)


def at(minutes: int) -> datetime:
    """BASE + minutes."""
    return BASE + timedelta(minutes=minutes)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


# -- helpers shared with test_booking_concurrency ------------------------------------


def booking(
    b: Bookable, start: datetime, *, override: bool = True, **fields: Any
) -> appointments_pb2.CreateAppointmentRequest:
    request_id = fields.pop("request_id", "")
    policy = {
        name: fields.pop(name)
        for name in ("min_notice_minutes", "booking_horizon_days")
        if name in fields
    }
    return appointments_pb2.CreateAppointmentRequest(
        organization_id=b.org,
        appointment=resources_pb2.Appointment(
            provider_id=fields.pop("provider_id", b.provider_id),
            client_id=fields.pop("client_id", b.client_id),
            service_id=fields.pop("service_id", b.service_id),
            start_time=ts(start),
            **fields,
        ),
        request_id=request_id,
        override_rules=override,
        **policy,
    )


async def book(
    stubs: Stubs, b: Bookable, start: datetime, **fields: Any
) -> resources_pb2.Appointment:
    response = await stubs.appointments.CreateAppointment(booking(b, start, **fields))
    return response.appointment


def booking_details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """conftest.details() plus the booking errors' own: the PreconditionFailure
    and the booking.v1.Conflict list ("Conflicts")."""
    out = details(error)
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    out["Conflicts"] = []
    for any_msg in status_pb2.Status.FromString(raw).details:
        if any_msg.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            any_msg.Unpack(failure)
            out["PreconditionFailure"] = failure
        elif any_msg.Is(availability_pb2.Conflict.DESCRIPTOR):
            conflict = availability_pb2.Conflict()
            any_msg.Unpack(conflict)
            out["Conflicts"].append(conflict)
    return out


async def refused(call: Any, code: grpc.StatusCode, reason: str) -> dict[str, Any]:
    """Await ``call``; it must fail with ``code`` and ``reason``: its details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    got = booking_details(caught.value)
    assert got["ErrorInfo"].reason == reason, got
    return got


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def rows_of(db: asyncpg.Connection, org: str) -> list[dict[str, Any]]:
    """Every appointment of the tenant, every column."""
    rows = await db.fetch("SELECT * FROM appointments WHERE organization_id = $1 ORDER BY id", org)
    return [dict(r) for r in rows]


async def audit_of(db: asyncpg.Connection, org: str) -> list[tuple[str, str, list[str]]]:
    """(action, resource_id, changed_fields) of the tenant's appointment events."""
    rows = await db.fetch(
        "SELECT action, resource_id, changed_fields FROM audit_events "
        "WHERE organization_id = $1 AND resource_type = 'appointment' ORDER BY occurred_at, id",
        org,
    )
    return [(r["action"], r["resource_id"], list(r["changed_fields"])) for r in rows]


# -- create and get ---------------------------------------------------------------------


async def test_create_and_get_round_trip(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    b = await make_bookable(
        stubs, org, duration_minutes=45, buffer_before_minutes=10, buffer_after_minutes=5
    )
    created = await book(
        stubs, b, at(0), notes="first visit", external_id="crm-7", status=CONFIRMED
    )
    assert created.id and created.organization_id == org
    assert (created.provider_id, created.client_id, created.service_id) == (
        b.provider_id,
        b.client_id,
        b.service_id,
    )
    assert created.start_time == ts(at(0)) and created.end_time == ts(at(45))
    assert created.status == CONFIRMED and created.etag == '"v1"'
    assert created.price == common_pb2.Money(currency_code="EUR", amount_minor=2500)
    assert (created.buffer_before_minutes, created.buffer_after_minutes) == (10, 5)
    assert created.notes == "first visit" and created.external_id == "crm-7"
    assert created.cancel_reason == "" and created.create_time.seconds > 0
    got = await stubs.appointments.GetAppointment(
        appointments_pb2.GetAppointmentRequest(organization_id=org, appointment_id=created.id)
    )
    assert got.appointment == created
    [row] = await rows_of(db, org)
    assert row["during"] == asyncpg.Range(at(0), at(45))
    assert row["occupied"] == asyncpg.Range(at(-10), at(50))
    assert await audit_of(db, org) == [("create_override", created.id, [])]


async def test_status_defaults_to_pending(stubs: Stubs, org: str) -> None:
    b = await make_bookable(stubs, org)
    assert (await book(stubs, b, at(0))).status == PENDING


async def test_get_unknown_is_not_found_with_resource_info(stubs: Stubs, org: str) -> None:
    missing = "01890000-0000-7000-8000-000000000000"
    got = await refused(
        stubs.appointments.GetAppointment(
            appointments_pb2.GetAppointmentRequest(organization_id=org, appointment_id=missing)
        ),
        grpc.StatusCode.NOT_FOUND,
        "APPOINTMENT_NOT_FOUND",
    )
    assert got["ResourceInfo"].resource_name == missing
    assert got["ResourceInfo"].resource_type == "booking.v1.Appointment"


async def test_rules_refuse_without_override_and_nothing_is_written(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, hours=())  # no working hours
    await stubs.catalog.DeleteOffering(
        catalog_pb2.DeleteOfferingRequest(
            organization_id=org, provider_id=b.provider_id, service_id=b.service_id
        )
    )
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(0), override=False)),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    types = {v.type for v in got["PreconditionFailure"].violations}
    assert types == {"CONFLICT_REASON_OUTSIDE_HOURS", "CONFLICT_REASON_SERVICE_NOT_OFFERED"}
    assert len(got["Conflicts"]) == len(got["PreconditionFailure"].violations)
    assert await rows_of(db, org) == [] and await audit_of(db, org) == []


async def test_a_taken_time_is_refused_with_the_holder(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, duration_minutes=60)
    first = await book(stubs, b, at(0))
    for start in (at(0), at(30), at(-30)):
        got = await refused(
            stubs.appointments.CreateAppointment(booking(b, start)), FAILED, "TIME_SLOT_TAKEN"
        )
        assert dict(got["ErrorInfo"].metadata) == {
            "appointment_id": first.id,
            "start_time": rfc3339(at(0)),
            "end_time": rfc3339(at(60)),
        }
    # Touching is not overlapping: [start, end) is half open.
    await book(stubs, b, at(60))
    await book(stubs, b, at(-60))
    assert len(await rows_of(db, org)) == 3


async def test_buffers_take_time_too(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    b = await make_bookable(stubs, org, duration_minutes=30, buffer_after_minutes=15)
    first = await book(stubs, b, at(0))  # occupies [0, 45)
    # The appointment at 30 does not overlap [0, 30), only the first's buffer.
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(30))), FAILED, "TIME_SLOT_TAKEN"
    )
    assert [c.reason for c in got["Conflicts"]] == [availability_pb2.CONFLICT_REASON_BUFFER]
    assert got["Conflicts"][0].appointment_id == first.id
    assert got["PreconditionFailure"].violations[0].subject == f"appointments/{first.id}"
    # This one's own buffer before (15 min) reaches back into [0, 30) too.
    other = await make_bookable(stubs, org, buffer_before_minutes=15)
    got = await refused(
        stubs.appointments.CreateAppointment(booking(other, at(45), provider_id=b.provider_id)),
        FAILED,
        "TIME_SLOT_TAKEN",
    )
    assert got["ErrorInfo"].metadata["appointment_id"] == first.id
    await book(stubs, b, at(45))
    assert len(await rows_of(db, org)) == 2


async def test_external_id_taken_and_unknown_client(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    await book(stubs, b, at(0), external_id="crm-1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await book(stubs, b, at(60), external_id="crm-1")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(caught.value)["ErrorInfo"].reason == "EXTERNAL_ID_TAKEN"
    assert violated_fields(caught.value) == {"appointment.external_id"}
    missing = "01890000-0000-7000-8000-00000000c11e"
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(120), client_id=missing)),
        grpc.StatusCode.NOT_FOUND,
        "CLIENT_NOT_FOUND",
    )
    assert got["ResourceInfo"].resource_name == missing
    assert len(await rows_of(db, org)) == 1


# -- idempotency ----------------------------------------------------------------------


async def test_request_id_books_once(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    b = await make_bookable(stubs, org)
    request = booking(b, at(0), request_id="book-1")
    concurrent = await asyncio.gather(
        *(stubs.appointments.CreateAppointment(request) for _ in range(20))
    )
    sequential = [await stubs.appointments.CreateAppointment(request) for _ in range(20)]
    assert all(r == concurrent[0] for r in concurrent + sequential)
    [row] = await rows_of(db, org)
    assert str(row["id"]) == concurrent[0].appointment.id
    assert await audit_of(db, org) == [("create_override", str(row["id"]), [])]
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(60), request_id="book-1")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )
    assert {v.field for v in got["BadRequest"].field_violations} == {"request_id"}
    assert len(await rows_of(db, org)) == 1


# -- the lifecycle ----------------------------------------------------------------------

Appointment = resources_pb2.Appointment


async def change(stubs: Stubs, op: str, a: Appointment, **fields: Any) -> resources_pb2.Appointment:
    """Cancel / confirm / complete / no_show ``a``."""
    calls: dict[str, tuple[Any, Any]] = {
        "cancel": (stubs.appointments.CancelAppointment, appointments_pb2.CancelAppointmentRequest),
        "confirm": (
            stubs.appointments.ConfirmAppointment,
            appointments_pb2.ConfirmAppointmentRequest,
        ),
        "complete": (
            stubs.appointments.CompleteAppointment,
            appointments_pb2.CompleteAppointmentRequest,
        ),
        "no_show": (
            stubs.appointments.MarkAppointmentNoShow,
            appointments_pb2.MarkAppointmentNoShowRequest,
        ),
    }
    rpc, request_type = calls[op]
    request = request_type(organization_id=a.organization_id, appointment_id=a.id, **fields)
    response = await rpc(request)
    return response.appointment


async def test_cancel_frees_the_time_and_keeps_the_reason(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    first = await book(stubs, b, at(0))
    cancelled = await change(stubs, "cancel", first, reason=" client ill ", etag=first.etag)
    assert cancelled.status == CANCELLED and cancelled.cancel_reason == "client ill"
    assert cancelled.etag == '"v2"' and cancelled.start_time == first.start_time
    second = await book(stubs, b, at(0))
    assert second.id != first.id
    assert [a for a, _, _ in await audit_of(db, org)] == [
        "create_override",
        "cancel",
        "create_override",
    ]
    assert (await audit_of(db, org))[1] == ("cancel", first.id, ["status", "cancel_reason"])
    got = await refused(
        stubs.appointments.CancelAppointment(
            appointments_pb2.CancelAppointmentRequest(
                organization_id=org, appointment_id=second.id, reason="x" * 501
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert {v.field for v in got["BadRequest"].field_violations} == {"reason"}


async def test_completed_keeps_the_time_and_no_show_frees_it(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    kept = await book(stubs, b, at(0), status=CONFIRMED)
    assert (await change(stubs, "complete", kept)).status == COMPLETED
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, at(0))), FAILED, "TIME_SLOT_TAKEN"
    )
    assert got["ErrorInfo"].metadata["appointment_id"] == kept.id
    freed = await book(stubs, b, at(60))
    assert (await change(stubs, "confirm", freed)).status == CONFIRMED
    assert (await change(stubs, "no_show", freed)).status == NO_SHOW
    again = await book(stubs, b, at(60))
    statuses = {str(r["id"]): r["status"] for r in await rows_of(db, org)}
    assert statuses == {kept.id: "completed", freed.id: "no_show", again.id: "pending"}


# Which operations each status allows (the contract's state machine).
ALLOWED = {
    PENDING: {"cancel", "confirm", "reschedule"},
    CONFIRMED: {"cancel", "complete", "no_show", "reschedule"},
    COMPLETED: set(),
    CANCELLED: set(),
    NO_SHOW: set(),
}
# How to bring a new PENDING appointment into each status.
PATHS = {
    PENDING: [],
    CONFIRMED: ["confirm"],
    COMPLETED: ["confirm", "complete"],
    CANCELLED: ["cancel"],
    NO_SHOW: ["confirm", "no_show"],
}


async def test_every_illegal_transition_is_invalid_transition(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    for i, (status, path) in enumerate(PATHS.items()):
        a = await book(stubs, b, at(120 * i))
        for op in path:
            a = await change(stubs, op, a)
        assert a.status == status
        before = await rows_of(db, org), await audit_of(db, org)
        for op in {"cancel", "confirm", "complete", "no_show", "reschedule"} - ALLOWED[status]:
            call: Any
            if op == "reschedule":
                call = stubs.appointments.RescheduleAppointment(
                    appointments_pb2.RescheduleAppointmentRequest(
                        organization_id=org, appointment_id=a.id, start_time=ts(at(-600))
                    )
                )
            else:
                call = change(stubs, op, a)
            got = await refused(call, FAILED, "INVALID_TRANSITION")
            assert dict(got["ErrorInfo"].metadata) == {"current_status": Status.Name(status)}, op
        assert (await rows_of(db, org), await audit_of(db, org)) == before


async def test_a_retried_transition_returns_its_first_answer(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    first = await change(stubs, "confirm", a, request_id="confirm-1")
    assert first.status == CONFIRMED
    assert (await change(stubs, "cancel", a, request_id="cancel-1")).status == CANCELLED
    # The status moved on; the retry still gets the first answer, nothing written.
    assert await change(stubs, "confirm", a, request_id="confirm-1") == first
    assert [x for x, _, _ in await audit_of(db, org)] == ["create_override", "confirm", "cancel"]


async def test_stale_etag_is_aborted_and_writes_nothing(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    await change(stubs, "confirm", a, etag=a.etag)  # v1 -> v2
    before = await rows_of(db, org), await audit_of(db, org)
    for op in ("cancel", "complete", "no_show"):
        await refused(change(stubs, op, a, etag=a.etag), grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    await refused(
        stubs.appointments.RescheduleAppointment(
            appointments_pb2.RescheduleAppointmentRequest(
                organization_id=org, appointment_id=a.id, start_time=ts(at(60)), etag=a.etag
            )
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    assert (await rows_of(db, org), await audit_of(db, org)) == before


# -- reschedule -------------------------------------------------------------------------


def move(
    a: Appointment, start: datetime, **fields: Any
) -> appointments_pb2.RescheduleAppointmentRequest:
    fields.setdefault("override_rules", True)
    return appointments_pb2.RescheduleAppointmentRequest(
        organization_id=a.organization_id, appointment_id=a.id, start_time=ts(start), **fields
    )


async def test_reschedule_moves_the_time_and_frees_the_old(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, duration_minutes=60, buffer_after_minutes=10)
    a = await book(stubs, b, at(0), status=CONFIRMED)
    moved = (
        await stubs.appointments.RescheduleAppointment(move(a, at(30), etag=a.etag))
    ).appointment
    # Overlapping its own old time is fine: it is excluded from its own check.
    assert (moved.start_time, moved.end_time) == (ts(at(30)), ts(at(90)))
    assert moved.status == CONFIRMED and moved.etag == '"v2"' and moved.price == a.price
    other = await book(stubs, b, at(-60))  # [-60, 0) + 10 buffer: free again
    [row] = [r for r in await rows_of(db, org) if str(r["id"]) == a.id]
    assert row["occupied"] == asyncpg.Range(at(30), at(100))
    # Another provider, whose service has other buffers: the new ones are taken.
    p2 = await make_bookable(stubs, org)
    moved2 = (
        await stubs.appointments.RescheduleAppointment(
            move(moved, at(30), provider_id=p2.provider_id)
        )
    ).appointment
    assert moved2.provider_id == p2.provider_id and moved2.buffer_after_minutes == 10
    assert await audit_of(db, org) == [
        ("create_override", a.id, []),
        ("reschedule_override", a.id, ["start_time", "end_time"]),
        ("create_override", other.id, []),
        ("reschedule_override", a.id, ["provider_id"]),
    ]


async def test_reschedule_into_a_taken_time_changes_nothing(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, duration_minutes=60)
    a = await book(stubs, b, at(0))
    holder = await book(stubs, b, at(120))
    before = await rows_of(db, org), await audit_of(db, org)
    for start in (at(90), at(120), at(150)):
        got = await refused(
            stubs.appointments.RescheduleAppointment(move(a, start)), FAILED, "TIME_SLOT_TAKEN"
        )
        assert got["ErrorInfo"].metadata["appointment_id"] == holder.id
    assert (await rows_of(db, org), await audit_of(db, org)) == before


async def test_reschedule_respects_the_rules_unless_overridden(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, hours=())  # no working hours
    a = await book(stubs, b, at(0))
    before = await rows_of(db, org)
    got = await refused(
        stubs.appointments.RescheduleAppointment(move(a, at(60), override_rules=False)),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert [v.type for v in got["PreconditionFailure"].violations] == [
        "CONFLICT_REASON_OUTSIDE_HOURS"
    ]
    assert await rows_of(db, org) == before


# -- hostile input ----------------------------------------------------------------------


async def test_invalid_requests_name_every_bad_field(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    request = booking(
        b,
        at(0),
        provider_id="not-a-uuid",
        client_id="",
        status=COMPLETED,
        notes="x" * 2001,
        external_id="e" * 201,
        request_id="bad id!",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.appointments.CreateAppointment(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {
        "appointment.provider_id",
        "appointment.client_id",
        "appointment.status",
        "appointment.notes",
        "appointment.external_id",
        "request_id",
    }
    nul = booking(b, at(0), notes="a\x00b")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.appointments.CreateAppointment(nul)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"appointment.notes"}
    assert await rows_of(db, org) == []


@pytest.mark.parametrize(
    "start",
    [
        timestamp_pb2.Timestamp(),  # unset
        timestamp_pb2.Timestamp(seconds=253402300799),  # 9999-12-31T23:59:59Z
        timestamp_pb2.Timestamp(seconds=253402300800),  # beyond what Timestamp allows
        timestamp_pb2.Timestamp(seconds=-1),
        timestamp_pb2.Timestamp(seconds=-62135596800),  # 0001-01-01
        timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=-1),
    ],
)
async def test_start_times_out_of_range_are_invalid_argument(
    stubs: Stubs, org: str, db: asyncpg.Connection, start: timestamp_pb2.Timestamp
) -> None:
    b = await make_bookable(stubs, org)
    a = await book(stubs, b, at(0))
    for override in (True, False):
        request = booking(b, at(0), override=override)
        request.appointment.start_time.CopyFrom(start)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.appointments.CreateAppointment(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(caught.value) == {"appointment.start_time"}
        moving = move(a, at(0), override_rules=override)
        moving.start_time.CopyFrom(start)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.appointments.RescheduleAppointment(moving)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(caught.value) == {"start_time"}
    assert len(await rows_of(db, org)) == 1


async def test_far_but_valid_starts_are_refused_by_the_rules(stubs: Stubs, org: str) -> None:
    b = await make_bookable(stubs, org)
    for start in (datetime(8999, 12, 31, tzinfo=UTC), datetime(1970, 1, 2, tzinfo=UTC)):
        got = await refused(
            stubs.appointments.CreateAppointment(booking(b, start, override=False)),
            FAILED,
            "BOOKING_NOT_ALLOWED",
        )
        types = {v.type for v in got["PreconditionFailure"].violations}
        assert types & {"CONFLICT_REASON_BEYOND_HORIZON", "CONFLICT_REASON_MIN_NOTICE"}


async def test_another_tenants_ids_are_not_found_and_nothing_is_written(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    mine = await make_bookable(stubs, org)
    theirs = await make_bookable(stubs, await new_org(stubs))
    their_appointment = await book(stubs, theirs, at(0))
    their_rows = await rows_of(db, theirs.org), await audit_of(db, theirs.org)
    for name, reason in (
        ("provider_id", "PROVIDER_NOT_FOUND"),
        ("client_id", "CLIENT_NOT_FOUND"),
        ("service_id", "SERVICE_NOT_FOUND"),
    ):
        foreign = getattr(theirs, name)
        for override in (True, False):
            got = await refused(
                stubs.appointments.CreateAppointment(
                    booking(mine, at(0), override=override, **{name: foreign.upper()})
                ),
                grpc.StatusCode.NOT_FOUND,
                reason,
            )
            assert got["ResourceInfo"].resource_name == foreign
    mine_appointment = await book(stubs, mine, at(0))
    await refused(
        stubs.appointments.RescheduleAppointment(
            move(mine_appointment, at(60), provider_id=theirs.provider_id)
        ),
        grpc.StatusCode.NOT_FOUND,
        "PROVIDER_NOT_FOUND",
    )
    # Their appointment, named in my tenant.
    await refused(
        stubs.appointments.GetAppointment(
            appointments_pb2.GetAppointmentRequest(
                organization_id=org, appointment_id=their_appointment.id
            )
        ),
        grpc.StatusCode.NOT_FOUND,
        "APPOINTMENT_NOT_FOUND",
    )
    foreign_view = Appointment(id=their_appointment.id, organization_id=org)
    for op in ("cancel", "confirm", "complete", "no_show"):
        await refused(
            change(stubs, op, foreign_view), grpc.StatusCode.NOT_FOUND, "APPOINTMENT_NOT_FOUND"
        )
    await refused(
        stubs.appointments.RescheduleAppointment(move(foreign_view, at(60))),
        grpc.StatusCode.NOT_FOUND,
        "APPOINTMENT_NOT_FOUND",
    )
    assert (await rows_of(db, theirs.org), await audit_of(db, theirs.org)) == their_rows
    assert [str(r["id"]) for r in await rows_of(db, org)] == [mine_appointment.id]


async def test_tiny_deadlines_leave_no_half_written_booking(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)
    codes = set()
    for i in range(20):
        try:
            await stubs.appointments.CreateAppointment(booking(b, at(60 * i)), timeout=0.001)
            codes.add(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.add(exc.code())
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    # Whatever was committed was committed whole: each row with its audit event.
    rows = {str(r["id"]) for r in await rows_of(db, org)}
    assert rows == {rid for _, rid, _ in await audit_of(db, org)}
    await book(stubs, b, at(60 * 30))  # the server is fine


# -- with the booking rules (a provider with an offering and working hours) -----------


async def test_the_rules_decide_without_override(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    # Working hours 10:00-12:00 (UTC) on one day; a 60-minute service.
    ten = BASE.replace(hour=10)

    def t(minutes: int) -> datetime:
        return ten + timedelta(minutes=minutes)

    b = await make_bookable(
        stubs, org, time_zone="UTC", duration_minutes=60, hours=((ten.isoweekday(), 600, 720),)
    )
    inside = await book(stubs, b, t(0), override=False)
    assert inside.status == PENDING
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, t(-30), override=False)),
        FAILED,
        "TIME_SLOT_TAKEN",  # taken AND outside the hours: taken wins, both reported
    )
    assert [v.type for v in got["PreconditionFailure"].violations] == [
        "CONFLICT_REASON_OVERLAP",
        "CONFLICT_REASON_OUTSIDE_HOURS",
    ]
    got = await refused(
        stubs.appointments.CreateAppointment(booking(b, t(120), override=False)),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert [(v.type, v.subject) for v in got["PreconditionFailure"].violations] == [
        ("CONFLICT_REASON_OUTSIDE_HOURS", "appointment.start_time")
    ]
    assert [c.reason for c in got["Conflicts"]] == [availability_pb2.CONFLICT_REASON_OUTSIDE_HOURS]
    # A walk-in after hours: the rules are overridden, the overlap never is.
    walk_in = await book(stubs, b, t(120), override=True)
    await refused(
        stubs.appointments.CreateAppointment(booking(b, t(150), override=True)),
        FAILED,
        "TIME_SLOT_TAKEN",
    )
    # Rescheduling follows the same rules.
    await refused(
        stubs.appointments.RescheduleAppointment(move(inside, t(240), override_rules=False)),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    await stubs.appointments.CancelAppointment(
        appointments_pb2.CancelAppointmentRequest(organization_id=org, appointment_id=walk_in.id)
    )
    moved = await stubs.appointments.RescheduleAppointment(
        move(inside, t(60), override_rules=False)
    )
    assert moved.appointment.start_time == ts(t(60))
    assert [(a, r) for a, r, _ in await audit_of(db, org)] == [
        ("create", inside.id),
        ("create_override", walk_in.id),
        ("cancel", walk_in.id),
        ("reschedule", inside.id),
    ]


async def test_price_and_duration_come_from_the_offering(stubs: Stubs, org: str) -> None:
    b = await make_bookable(stubs, org, duration_minutes=30, buffer_after_minutes=5)
    plain = await book(stubs, b, at(0), override=False)
    assert plain.price == common_pb2.Money(currency_code="EUR", amount_minor=2500)
    assert plain.end_time == ts(at(30)) and plain.buffer_after_minutes == 5
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org,
            offering=resources_pb2.Offering(
                provider_id=b.provider_id,
                service_id=b.service_id,
                duration_minutes=50,
                price=common_pb2.Money(currency_code="EUR", amount_minor=4000),
            ),
        )
    )
    special = await book(stubs, b, at(60), override=False)
    assert special.price == common_pb2.Money(currency_code="EUR", amount_minor=4000)
    assert special.end_time == ts(at(110))
    # A reschedule takes the duration again, and keeps the price it was booked at.
    moved = (
        await stubs.appointments.RescheduleAppointment(move(plain, at(180), override_rules=False))
    ).appointment
    assert moved.end_time == ts(at(230)) and moved.price == plain.price


async def test_a_request_may_set_its_own_policy(stubs: Stubs, org: str) -> None:
    """The booking writes take the request's policy as the reads do: a slot
    GetAvailability offered with a policy books with the same one."""
    b = await make_bookable(stubs, org)
    soon = (datetime.now(UTC) + timedelta(minutes=90)).replace(second=0, microsecond=0)
    # The organization asks no notice: 90 minutes ahead books ...
    got = await refused(
        stubs.appointments.CreateAppointment(
            booking(b, soon, override=False, min_notice_minutes=120)
        ),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert [c.reason for c in got["Conflicts"]] == [availability_pb2.CONFLICT_REASON_MIN_NOTICE]
    later = soon + timedelta(days=3)
    got = await refused(
        stubs.appointments.CreateAppointment(
            booking(b, later, override=False, booking_horizon_days=1)
        ),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    assert [c.reason for c in got["Conflicts"]] == [availability_pb2.CONFLICT_REASON_BEYOND_HORIZON]
    a = await book(stubs, b, soon, override=False, min_notice_minutes=60)
    # Reschedule takes it too.
    await refused(
        stubs.appointments.RescheduleAppointment(
            appointments_pb2.RescheduleAppointmentRequest(
                organization_id=org,
                appointment_id=a.id,
                start_time=ts(later),
                booking_horizon_days=1,
            )
        ),
        FAILED,
        "BOOKING_NOT_ALLOWED",
    )
    # Out of range: the field is named.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.appointments.CreateAppointment(
            booking(b, later, min_notice_minutes=525_601, booking_horizon_days=0)
        )
    assert violated_fields(caught.value) == {"min_notice_minutes", "booking_horizon_days"}


async def test_output_only_fields_are_ignored_and_not_part_of_the_request(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """id, price, buffers, times... sent in a create are ignored: the booking
    is what the offering says, and a retry that differs only in them is the
    same request (not REQUEST_ID_REUSED)."""
    b = await make_bookable(stubs, org, buffer_after_minutes=10)
    first = await stubs.appointments.CreateAppointment(booking(b, at(60), request_id="output-only"))
    again = booking(
        b,
        at(60),
        request_id="output-only",
        id=str(uuid.uuid4()),
        price=common_pb2.Money(currency_code="USD", amount_minor=1),
        buffer_after_minutes=600,
        etag="v9",
        cancel_reason="no",
        end_time=ts(at(600)),
    )
    assert await stubs.appointments.CreateAppointment(again) == first
    assert first.appointment.price.amount_minor == 2500
    assert first.appointment.buffer_after_minutes == 10
    assert len(await rows_of(db, org)) == 1
