"""AvailabilityService through a real channel on a real PostgreSQL:
CheckConflicts (every reason, with ids and intervals; exclude_appointment_id;
NOT_FOUND; validation) and GetAvailability (several providers with their
per-provider errors, first_available, the request's zone, policy overrides,
limits and validation).

Calendars are written through the schedule RPCs (helpers below, shared with
the oracle test); appointments with SQL (any buffers and status, cancelled
ones overlapping others)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from booking.v1 import (
    availability_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
)
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from google.type import date_pb2

from server import booking
from server.db.engine import to_asyncpg_dsn
from server.errors import ServiceError
from server.handlers._conflicts import refusal, taken
from server.ids import uuid7
from server.queries import calendar
from tests.conftest import (
    Stubs,
    details,
    make_bookable,
    new_org,
    time_of_day,
    violated_fields,
    weekly,
)

R = availability_pb2.ConflictReason


# -- calendars written with SQL ----------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    org: str
    provider_id: str
    service_id: str
    client_id: str
    zone: ZoneInfo


async def make_provider(
    stubs: Stubs,
    org: str,
    service_id: str,
    *,
    zone: str,
    offered: bool = True,
    offering_duration: int | None = None,
) -> str:
    provider = await stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name="Pat", time_zone=zone),
        )
    )
    pid = provider.provider.id
    if offered:
        offering = resources_pb2.Offering(provider_id=pid, service_id=service_id)
        if offering_duration is not None:
            offering.duration_minutes = offering_duration
        await stubs.catalog.SetOffering(
            catalog_pb2.SetOfferingRequest(organization_id=org, offering=offering)
        )
    return pid


async def make_setup(
    stubs: Stubs,
    org: str,
    *,
    zone: str = "Europe/Berlin",
    duration: int = 30,
    before: int = 0,
    after: int = 0,
    offered: bool = True,
) -> Setup:
    service = await stubs.catalog.CreateService(
        catalog_pb2.CreateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(
                name="Cut",
                duration_minutes=duration,
                price=common_pb2.Money(currency_code="EUR", amount_minor=2500),
                buffer_before_minutes=before,
                buffer_after_minutes=after,
            ),
        )
    )
    sid = service.service.id
    pid = await make_provider(stubs, org, sid, zone=zone, offered=offered)
    client = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(given_name="Cli", family_name="Ent")
        )
    )
    return Setup(org, pid, sid, client.client.id, ZoneInfo(zone))


def _date(on: date) -> date_pb2.Date:
    return date_pb2.Date(year=on.year, month=on.month, day=on.day)


async def add_hours(
    stubs: Stubs,
    org: str,
    provider_id: str,
    rules: Sequence[tuple[int, int, int] | tuple[int, int, int, date | None, date | None]],
) -> None:
    """The provider's weekly rules (ISO weekday, start minute, end minute[,
    valid_from, valid_to]), through ReplaceWorkingHours."""
    hours = []
    for r in rules:
        rule = weekly(r[0], r[1], r[2])
        if len(r) == 5:
            if r[3] is not None:
                rule.valid_from.CopyFrom(_date(r[3]))
            if r[4] is not None:
                rule.valid_to.CopyFrom(_date(r[4]))
        hours.append(rule)
    await stubs.schedules.ReplaceWorkingHours(
        schedules_pb2.ReplaceWorkingHoursRequest(
            organization_id=org, provider_id=provider_id, working_hours=hours
        )
    )


async def add_override(
    stubs: Stubs, org: str, provider_id: str, on: date, intervals: Sequence[tuple[int, int]]
) -> None:
    """A date's own hours (no intervals = closed), through ReplaceDateOverrides."""
    override = resources_pb2.DateOverride(
        date=_date(on),
        closed=not intervals,
        intervals=[
            resources_pb2.TimeInterval(start_time=time_of_day(a), end_time=time_of_day(b))
            for a, b in intervals
        ],
    )
    await stubs.schedules.ReplaceDateOverrides(
        schedules_pb2.ReplaceDateOverridesRequest(
            organization_id=org,
            provider_id=provider_id,
            start_date=_date(on),
            end_date=_date(on),
            date_overrides=[override],
        )
    )


async def add_time_off(
    stubs: Stubs, org: str, provider_id: str, start: datetime, end: datetime
) -> str:
    got = await stubs.schedules.CreateTimeOff(
        schedules_pb2.CreateTimeOffRequest(
            organization_id=org,
            time_off=resources_pb2.TimeOff(
                provider_id=provider_id, start_time=ts(start), end_time=ts(end)
            ),
        )
    )
    return got.time_off.id


async def add_appointment(
    db: asyncpg.Connection,
    s: Setup,
    start: datetime,
    end: datetime,
    *,
    before: int = 0,
    after: int = 0,
    status: str = "confirmed",
    provider_id: str | None = None,
) -> str:
    aid = uuid7()
    await db.execute(
        "INSERT INTO appointments (organization_id, id, provider_id, client_id, service_id,"
        " during, status, price_minor, currency, buffer_before_minutes, buffer_after_minutes,"
        " occupied) VALUES ($1, $2, $3, $4, $5, tstzrange($6, $7), $8, 2500, 'EUR', $9, $10,"
        " tstzrange($6 - make_interval(mins => $9), $7 + make_interval(mins => $10)))",
        s.org,
        aid,
        provider_id or s.provider_id,
        s.client_id,
        s.service_id,
        start,
        end,
        status,
        before,
        after,
    )
    return aid


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def at(zone: ZoneInfo, on: date, minute: int) -> datetime:
    return datetime(on.year, on.month, on.day, minute // 60, minute % 60, tzinfo=zone)


def next_monday(days_ahead: int = 10) -> date:
    d = datetime.now(UTC).date() + timedelta(days=days_ahead)
    return d + timedelta(days=(7 - d.weekday()) % 7)


def check_request(
    s: Setup, start: datetime, **kw: object
) -> availability_pb2.CheckConflictsRequest:
    fields: dict[str, object] = {
        "organization_id": s.org,
        "provider_id": s.provider_id,
        "service_id": s.service_id,
        "start_time": ts(start),
    }
    return availability_pb2.CheckConflictsRequest(**{**fields, **kw})  # type: ignore[arg-type]


def as_dt(t: timestamp_pb2.Timestamp) -> datetime:
    return t.ToDatetime(tzinfo=UTC)


# -- CheckConflicts ---------------------------------------------------------------------------


async def test_check_conflicts_free_time_is_bookable(
    stubs: Stubs, db: asyncpg.Connection, org: str
) -> None:
    s = await make_setup(stubs, org, duration=45, before=10, after=5)
    await add_hours(stubs, org, s.provider_id, [(1, 9 * 60, 17 * 60)])
    monday = next_monday()
    start = at(s.zone, monday, 10 * 60)
    got = await stubs.availability.CheckConflicts(check_request(s, start))
    assert got.bookable and not got.conflicts
    assert as_dt(got.start_time) == start
    assert as_dt(got.end_time) == start + timedelta(minutes=45)
    assert as_dt(got.occupied_start_time) == start - timedelta(minutes=10)
    assert as_dt(got.occupied_end_time) == start + timedelta(minutes=50)


async def test_check_conflicts_reports_every_reason(
    stubs: Stubs, db: asyncpg.Connection, org: str
) -> None:
    s = await make_setup(stubs, org, duration=60, before=15, after=15, offered=False)
    await add_hours(stubs, org, s.provider_id, [(1, 9 * 60, 12 * 60)])
    monday = next_monday()
    z, m = s.zone, monday
    # The appointment [11:30, 12:30) occupies [11:15, 12:45).
    overlap = await add_appointment(db, s, at(z, m, 12 * 60 + 15), at(z, m, 13 * 60))
    buffer = await add_appointment(db, s, at(z, m, 10 * 60 + 45), at(z, m, 11 * 60 + 5), after=15)
    # Neither of these counts: another provider's, a cancelled one.
    other = await make_provider(stubs, org, s.service_id, zone="Europe/Berlin")
    await add_appointment(db, s, at(z, m, 11 * 60), at(z, m, 13 * 60), provider_id=other)
    await add_appointment(db, s, at(z, m, 11 * 60 + 30), at(z, m, 11 * 60 + 45), status="cancelled")
    off = await add_time_off(stubs, org, s.provider_id, at(z, m, 12 * 60 + 40), at(z, m, 14 * 60))
    await add_time_off(
        stubs, org, s.provider_id, at(z, m, 12 * 60 + 45), at(z, m, 15 * 60)
    )  # touches
    await db.execute(
        "UPDATE providers SET active = false WHERE organization_id = $1 AND id = $2",
        org,
        s.provider_id,
    )
    await db.execute(
        "UPDATE services SET active = false WHERE organization_id = $1 AND id = $2",
        org,
        s.service_id,
    )
    start = at(z, m, 11 * 60 + 30)
    got = await stubs.availability.CheckConflicts(check_request(s, start))
    assert not got.bookable
    by = [(c.reason, c.appointment_id, c.time_off_id) for c in got.conflicts]
    assert by == [
        (R.CONFLICT_REASON_OVERLAP, overlap, ""),
        (R.CONFLICT_REASON_BUFFER, buffer, ""),
        (R.CONFLICT_REASON_TIME_OFF, "", off),
        (R.CONFLICT_REASON_OUTSIDE_HOURS, "", ""),
        (R.CONFLICT_REASON_PROVIDER_INACTIVE, "", ""),
        (R.CONFLICT_REASON_SERVICE_NOT_OFFERED, "", ""),
        (R.CONFLICT_REASON_SERVICE_INACTIVE, "", ""),
    ]
    spans = [(as_dt(c.start_time), as_dt(c.end_time)) for c in got.conflicts[:4]]
    assert spans == [
        (at(z, m, 12 * 60 + 15), at(z, m, 13 * 60)),
        (at(z, m, 10 * 60 + 45), at(z, m, 11 * 60 + 5)),  # without its buffer
        (at(z, m, 12 * 60 + 40), at(z, m, 14 * 60)),
        (at(z, m, 12 * 60), at(z, m, 12 * 60 + 30)),  # the part outside the hours
    ]
    for c in got.conflicts[4:]:
        assert not c.HasField("start_time") and not c.HasField("end_time")

    # The appointment being rescheduled does not count against itself.
    got = await stubs.availability.CheckConflicts(
        check_request(s, start, exclude_appointment_id=overlap)
    )
    assert [c.reason for c in got.conflicts][:2] == [
        R.CONFLICT_REASON_BUFFER,
        R.CONFLICT_REASON_TIME_OFF,
    ]


async def test_check_conflicts_policy(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    s = await make_setup(stubs, org)
    await add_hours(stubs, org, s.provider_id, [(d, 0, 1440) for d in range(1, 8)])
    start = at(s.zone, next_monday(), 10 * 60)
    before = datetime.now(UTC)
    got = await stubs.availability.CheckConflicts(
        check_request(s, start, min_notice_minutes=525_600)
    )
    after = datetime.now(UTC)
    assert [c.reason for c in got.conflicts] == [R.CONFLICT_REASON_MIN_NOTICE]
    earliest = as_dt(got.conflicts[0].start_time) - timedelta(minutes=525_600)
    assert before <= earliest <= after
    got = await stubs.availability.CheckConflicts(check_request(s, start, booking_horizon_days=1))
    assert [c.reason for c in got.conflicts] == [R.CONFLICT_REASON_BEYOND_HORIZON]
    assert before <= as_dt(got.conflicts[0].start_time) - timedelta(days=1) <= datetime.now(UTC)
    # The past is never bookable (min notice 0 by default); the horizon is 365 days.
    got = await stubs.availability.CheckConflicts(
        check_request(s, datetime.now(UTC) - timedelta(hours=1))
    )
    assert [c.reason for c in got.conflicts] == [R.CONFLICT_REASON_MIN_NOTICE]
    got = await stubs.availability.CheckConflicts(
        check_request(s, datetime.now(UTC) + timedelta(days=366))
    )
    assert [c.reason for c in got.conflicts] == [R.CONFLICT_REASON_BEYOND_HORIZON]
    # The service's own policy replaces the organization's.
    await db.execute(
        "UPDATE services SET min_notice_minutes = 525600 WHERE organization_id = $1 AND id = $2",
        org,
        s.service_id,
    )
    got = await stubs.availability.CheckConflicts(check_request(s, start))
    assert [c.reason for c in got.conflicts] == [R.CONFLICT_REASON_MIN_NOTICE]
    got = await stubs.availability.CheckConflicts(check_request(s, start, min_notice_minutes=0))
    assert got.bookable


async def test_check_conflicts_not_found(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    s = await make_setup(stubs, org)
    other_org = await new_org(stubs)
    foreign = await make_setup(stubs, other_org)
    start = at(s.zone, next_monday(), 600)
    cases = [
        (check_request(s, start, provider_id=str(uuid.uuid4())), "PROVIDER_NOT_FOUND"),
        (check_request(s, start, provider_id=foreign.provider_id), "PROVIDER_NOT_FOUND"),
        (check_request(s, start, service_id=foreign.service_id), "SERVICE_NOT_FOUND"),
        (
            check_request(s, start, exclude_appointment_id=str(uuid.uuid4())),
            "APPOINTMENT_NOT_FOUND",
        ),
    ]
    for request, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.availability.CheckConflicts(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(err.value)["ErrorInfo"].reason == reason


async def test_check_conflicts_validation(stubs: Stubs, org: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.availability.CheckConflicts(
            availability_pb2.CheckConflictsRequest(
                organization_id="nope",
                provider_id="",
                service_id="x",
                exclude_appointment_id="y",
                min_notice_minutes=-1,
                booking_horizon_days=731,
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {
        "organization_id",
        "provider_id",
        "service_id",
        "exclude_appointment_id",
        "start_time",
        "min_notice_minutes",
        "booking_horizon_days",
    }


def unpack_status(status: status_pb2.Status) -> dict[str, object]:
    out: dict[str, object] = {}
    for any_msg in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                out[cls.__name__] = msg
    return out


# -- the booking writes' refusal errors (server.handlers._conflicts) -------------------------


def _evaluation(*conflicts: booking.Conflict) -> booking.Evaluation:
    start = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    return booking.Evaluation(
        provider_id="p",
        service_id="s",
        start=start,
        end=start + timedelta(minutes=30),
        occupied_start=start,
        occupied_end=start + timedelta(minutes=30),
        duration_minutes=30,
        buffer_before_minutes=0,
        buffer_after_minutes=0,
        price_minor=100,
        currency="EUR",
        conflicts=conflicts,
    )


def _refusal_details(
    error: ServiceError,
) -> tuple[
    error_details_pb2.ErrorInfo,
    error_details_pb2.PreconditionFailure,
    list[availability_pb2.Conflict],
]:
    status = error.to_status()
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    info = error_details_pb2.ErrorInfo()
    failure = error_details_pb2.PreconditionFailure()
    conflicts: list[availability_pb2.Conflict] = []
    assert status.details[0].Unpack(info)
    for any_msg in status.details[1:]:
        if any_msg.Is(failure.DESCRIPTOR):
            any_msg.Unpack(failure)
        else:
            c = availability_pb2.Conflict()
            assert any_msg.Unpack(c)
            conflicts.append(c)
    return info, failure, conflicts


def test_refusal_taken_names_the_first_appointment() -> None:
    t0 = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    t1 = datetime(2026, 3, 8, 7, 15, 30, tzinfo=UTC)
    ev = _evaluation(
        booking.Conflict(booking.Reason.OVERLAP, appointment_id="a1", start=t0, end=t1),
        booking.Conflict(booking.Reason.BUFFER, appointment_id="a2", start=t1, end=t1),
        booking.Conflict(booking.Reason.TIME_OFF, time_off_id="t1", start=t0, end=t1),
        booking.Conflict(booking.Reason.OUTSIDE_HOURS, start=t0, end=t1),
        booking.Conflict(booking.Reason.PROVIDER_INACTIVE),
    )
    info, failure, conflicts = _refusal_details(refusal(ev, field_prefix="appointment."))
    assert info.reason == "TIME_SLOT_TAKEN"
    assert dict(info.metadata) == {
        "appointment_id": "a1",
        "start_time": "2026-03-08T06:30:00Z",
        "end_time": "2026-03-08T07:15:30Z",
    }
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("CONFLICT_REASON_OVERLAP", "appointments/a1"),
        ("CONFLICT_REASON_BUFFER", "appointments/a2"),
        ("CONFLICT_REASON_TIME_OFF", "time_off/t1"),
        ("CONFLICT_REASON_OUTSIDE_HOURS", "appointment.start_time"),
        ("CONFLICT_REASON_PROVIDER_INACTIVE", "appointment.provider_id"),
    ]
    assert [c.reason for c in conflicts] == [
        R.CONFLICT_REASON_OVERLAP,
        R.CONFLICT_REASON_BUFFER,
        R.CONFLICT_REASON_TIME_OFF,
        R.CONFLICT_REASON_OUTSIDE_HOURS,
        R.CONFLICT_REASON_PROVIDER_INACTIVE,
    ]
    assert conflicts[0].appointment_id == "a1" and as_dt(conflicts[0].end_time) == t1
    assert conflicts[2].time_off_id == "t1"

    info, failure, conflicts = _refusal_details(taken(ev.conflicts))
    assert info.reason == "TIME_SLOT_TAKEN"
    assert [v.type for v in failure.violations] == [
        "CONFLICT_REASON_OVERLAP",
        "CONFLICT_REASON_BUFFER",
    ]


def test_refusal_by_the_rules() -> None:
    t0 = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    ev = _evaluation(
        booking.Conflict(booking.Reason.MIN_NOTICE, start=t0),
        booking.Conflict(booking.Reason.SERVICE_NOT_OFFERED),
        booking.Conflict(booking.Reason.SERVICE_INACTIVE),
    )
    info, failure, conflicts = _refusal_details(refusal(ev))
    assert info.reason == "BOOKING_NOT_ALLOWED"
    assert not info.metadata
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("CONFLICT_REASON_MIN_NOTICE", "start_time"),
        ("CONFLICT_REASON_SERVICE_NOT_OFFERED", "service_id"),
        ("CONFLICT_REASON_SERVICE_INACTIVE", "service_id"),
    ]
    assert as_dt(conflicts[0].start_time) == t0 and not conflicts[0].HasField("end_time")


# -- GetAvailability -----------------------------------------------------------------------------


def availability_request(
    s: Setup,
    start: datetime,
    end: datetime,
    provider_ids: Sequence[str] | None = None,
    **kw: object,
) -> availability_pb2.GetAvailabilityRequest:
    return availability_pb2.GetAvailabilityRequest(
        organization_id=s.org,
        provider_ids=list(provider_ids) if provider_ids is not None else [s.provider_id],
        service_id=s.service_id,
        start_time=ts(start),
        end_time=ts(end),
        **kw,  # type: ignore[arg-type]
    )


def starts(entry: availability_pb2.ProviderAvailability) -> list[datetime]:
    return [as_dt(slot.start_time) for slot in entry.slots]


async def test_slots_of_a_day(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    s = await make_setup(stubs, org, duration=30, before=0, after=15)
    # 09:00-12:00 and 12:00-13:00 touch: one stretch; 14:00-14:20 is too short.
    await add_hours(stubs, org, s.provider_id, [(1, 540, 720), (1, 720, 780), (1, 840, 860)])
    z, m = s.zone, next_monday()
    await add_appointment(db, s, at(z, m, 600), at(z, m, 630))  # 10:00-10:30
    got = await stubs.availability.GetAvailability(
        availability_request(s, at(z, m, 0), at(z, m + timedelta(days=1), 0))
    )
    (entry,) = got.providers
    assert entry.provider_id == s.provider_id and entry.time_zone == "Europe/Berlin"
    assert not entry.HasField("error")
    # 09:30 would occupy until 10:15; 10:30 is free again (no buffer before).
    expected = [540, 630, 660, 690, 720, 750]
    assert starts(entry) == [at(z, m, x).astimezone(UTC) for x in expected]
    first = entry.slots[0]
    assert as_dt(first.end_time) == at(z, m, 570)
    assert (first.local_date.year, first.local_date.month, first.local_date.day) == (
        m.year,
        m.month,
        m.day,
    )
    assert (first.local_time.hours, first.local_time.minutes) == (9, 0)
    assert first.utc_offset_minutes == at(z, m, 540).utcoffset().total_seconds() // 60  # type: ignore[union-attr]
    # A step of 20 minutes from the stretch's start (09:00); 09:20-10:20 would
    # occupy 10:00; the range cuts the slots.
    got = await stubs.availability.GetAvailability(
        availability_request(s, at(z, m, 545), at(z, m, 700), slot_step_minutes=20)
    )
    assert starts(got.providers[0]) == [at(z, m, x).astimezone(UTC) for x in (640, 660, 680)]
    # The request's zone for the local fields.
    got = await stubs.availability.GetAvailability(
        availability_request(s, at(z, m, 0), at(z, m, 560), time_zone="America/New_York")
    )
    entry = got.providers[0]
    assert entry.time_zone == "America/New_York"
    ny = at(z, m, 540).astimezone(ZoneInfo("America/New_York"))
    assert (entry.slots[0].local_time.hours, entry.slots[0].local_time.minutes) == (
        ny.hour,
        ny.minute,
    )
    assert entry.slots[0].utc_offset_minutes == -300


async def test_providers_and_their_errors(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    s = await make_setup(stubs, org, duration=30)
    longer = await make_provider(
        stubs, org, s.service_id, zone="America/New_York", offering_duration=60
    )
    inactive = await make_provider(stubs, org, s.service_id, zone="Europe/Berlin")
    not_offered = await make_provider(stubs, org, s.service_id, zone="Europe/Berlin", offered=False)
    foreign = await make_setup(stubs, await new_org(stubs))
    unknown = str(uuid.uuid4())
    for pid in (s.provider_id, longer, inactive, not_offered):
        await add_hours(stubs, org, pid, [(d, 0, 1440) for d in range(1, 8)])
    await db.execute(
        "UPDATE providers SET active = false WHERE organization_id = $1 AND id = $2", org, inactive
    )
    z, m = s.zone, next_monday()
    ids = [s.provider_id, unknown, foreign.provider_id, inactive, not_offered, longer]
    got = await stubs.availability.GetAvailability(
        availability_request(
            s, at(z, m, 600), at(z, m, 720), ids, slot_step_minutes=30, first_available_count=5
        )
    )
    assert [e.provider_id for e in got.providers] == ids
    errors = [
        (e.error.code, unpack_status(e.error)["ErrorInfo"].reason)  # type: ignore[attr-defined]
        for e in got.providers[1:5]
    ]
    assert errors == [
        (grpc.StatusCode.NOT_FOUND.value[0], "PROVIDER_NOT_FOUND"),
        (grpc.StatusCode.NOT_FOUND.value[0], "PROVIDER_NOT_FOUND"),
        (grpc.StatusCode.FAILED_PRECONDITION.value[0], "PROVIDER_INACTIVE"),
        (grpc.StatusCode.FAILED_PRECONDITION.value[0], "SERVICE_NOT_OFFERED"),
    ]
    assert all(not e.slots for e in got.providers[1:5])
    assert not got.providers[0].HasField("error") and not got.providers[5].HasField("error")
    assert got.providers[5].time_zone == "America/New_York"
    expected = [at(z, m, x).astimezone(UTC) for x in range(600, 720, 30)]
    assert starts(got.providers[0]) == expected
    assert starts(got.providers[5]) == expected  # the offering's 60 minutes, step 30
    assert [as_dt(sl.end_time) - as_dt(sl.start_time) for sl in got.providers[5].slots] == [
        timedelta(minutes=60)
    ] * 4
    # Earliest first, ties by provider order in the request.
    assert [(sl.provider_id, as_dt(sl.start_time)) for sl in got.first_available] == [
        (s.provider_id, expected[0]),
        (longer, expected[0]),
        (s.provider_id, expected[1]),
        (longer, expected[1]),
        (s.provider_id, expected[2]),
    ]
    assert (
        got.first_available[1].local_time.hours
        == expected[0].astimezone(ZoneInfo("America/New_York")).hour
    )


async def test_service_errors(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    s = await make_setup(stubs, org)
    z, m = s.zone, next_monday()
    request = availability_request(s, at(z, m, 0), at(z, m, 600))
    request.service_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.availability.GetAvailability(request)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)["ErrorInfo"].reason == "SERVICE_NOT_FOUND"
    await db.execute(
        "UPDATE services SET active = false WHERE organization_id = $1 AND id = $2",
        org,
        s.service_id,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.availability.GetAvailability(
            availability_request(s, at(z, m, 0), at(z, m, 600))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)["ErrorInfo"].reason == "SERVICE_INACTIVE"


async def test_policy_overrides(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    s = await make_setup(stubs, org, duration=60)
    await add_hours(stubs, org, s.provider_id, [(d, 0, 1440) for d in range(1, 8)])
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    end = start + timedelta(days=3)
    got = await stubs.availability.GetAvailability(availability_request(s, start, end))
    slots = starts(got.providers[0])
    assert slots and slots[0] >= now and slots[0] - now <= timedelta(hours=1)  # no past slots
    got = await stubs.availability.GetAvailability(
        availability_request(s, start, end, min_notice_minutes=24 * 60, booking_horizon_days=2)
    )
    slots = starts(got.providers[0])
    assert slots[0] >= now + timedelta(days=1) and slots[0] - now <= timedelta(hours=25)
    assert slots[-1] <= datetime.now(UTC) + timedelta(days=2)
    assert slots[-1] >= now + timedelta(days=2) - timedelta(hours=1)
    # Nothing within the horizon: no slots, no error.
    got = await stubs.availability.GetAvailability(
        availability_request(
            s, now + timedelta(days=5), now + timedelta(days=6), booking_horizon_days=1
        )
    )
    assert not got.providers[0].slots and not got.providers[0].HasField("error")


async def test_get_availability_validation(stubs: Stubs, org: str) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    pid = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(
                organization_id="x",
                provider_ids=[pid, "nope", pid],
                service_id="",
                start_time=ts(start),
                end_time=ts(start + timedelta(days=62, seconds=1)),
                slot_step_minutes=4,
                time_zone="Mars/Olympus",
                min_notice_minutes=525_601,
                booking_horizon_days=0,
                first_available_count=1001,
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {
        "organization_id",
        "provider_ids[1]",
        "provider_ids[2]",
        "service_id",
        "end_time",
        "slot_step_minutes",
        "time_zone",
        "min_notice_minutes",
        "booking_horizon_days",
        "first_available_count",
    }
    bads: list[dict[str, object]] = [
        {"provider_ids": []},
        {"provider_ids": [str(uuid.uuid4()) for _ in range(101)]},
        {"end_time": ts(start)},
        {"slot_step_minutes": 1441},
    ]
    for bad in bads:
        fields: dict[str, object] = {
            "organization_id": org,
            "provider_ids": [pid],
            "service_id": pid,
            "start_time": ts(start),
            "end_time": ts(start + timedelta(days=1)),
            **bad,
        }
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.availability.GetAvailability(
                availability_pb2.GetAvailabilityRequest(**fields)  # type: ignore[arg-type]
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(violated_fields(err.value)) == 1, bad


async def test_limits_are_served(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    """100 providers over 62 days: the largest request is answered."""
    s = await make_setup(stubs, org, duration=60)
    await add_hours(stubs, org, s.provider_id, [(d, 540, 600) for d in range(1, 8)])
    ids = [s.provider_id, *(str(uuid.uuid4()) for _ in range(99))]
    start = datetime.combine(next_monday(), datetime.min.time(), tzinfo=UTC)
    got = await stubs.availability.GetAvailability(
        availability_request(
            s,
            start,
            start + timedelta(days=62),
            ids,
            slot_step_minutes=5,
            first_available_count=1000,
        )
    )
    assert len(got.providers) == 100
    assert len(got.providers[0].slots) == 62
    assert len(got.first_available) == 62


async def test_instants_out_of_range(stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    """The first and last instants a Timestamp holds are refused on the field,
    never computed with (days around them would overflow)."""
    s = await make_setup(stubs, org)
    extremes = [
        timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999),
        timestamp_pb2.Timestamp(seconds=-62_135_596_800),
        timestamp_pb2.Timestamp(seconds=253_370_764_800 + 86_400),  # 9999-01-02
        timestamp_pb2.Timestamp(seconds=-1),  # 1969-12-31T23:59:59Z
        timestamp_pb2.Timestamp(seconds=221_845_392_000),  # 9000-01-01: the first refused
    ]
    for extreme in extremes:
        request = check_request(s, datetime(2026, 1, 1, tzinfo=UTC))
        request.start_time.CopyFrom(extreme)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.availability.CheckConflicts(request)
        assert violated_fields(err.value) == {"start_time"}
        ranged = availability_request(
            s, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
        )
        ranged.end_time.CopyFrom(extreme)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.availability.GetAvailability(ranged)
        assert violated_fields(err.value) == {"end_time"}
    # The last allowed start is answered (beyond the horizon).
    request = check_request(s, datetime(8999, 12, 31, 23, 59, tzinfo=UTC))
    got = await stubs.availability.CheckConflicts(request)
    assert [c.reason for c in got.conflicts][-1] == R.CONFLICT_REASON_BEYOND_HORIZON


async def test_the_booking_lock_holds_the_provider_row(
    stubs: Stubs, db: asyncpg.Connection, database_url: str, org: str
) -> None:
    """A booking's lock takes the provider FOR NO KEY UPDATE: a schedule write's FOR NO
    KEY UPDATE waits for the booking's transaction; the header takes nothing
    (it reads after the lock, in a statement of its own)."""
    s = await make_setup(stubs, org)
    other = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        for sql, args, locks in (
            (calendar.LOCK_PROVIDER_SQL, (org, s.provider_id), True),
            (calendar.BOOKING_HEADER_SQL, (org, s.provider_id, s.service_id, None, None), False),
        ):
            async with db.transaction():
                row = await db.fetchrow(sql, *args)
                assert row is not None
                probe = other.fetchval(
                    "SELECT 1 FROM providers WHERE organization_id = $1 AND id = $2"
                    " FOR NO KEY UPDATE NOWAIT",
                    org,
                    s.provider_id,
                )
                if locks:
                    with pytest.raises(asyncpg.LockNotAvailableError):
                        await probe
                else:
                    assert await probe == 1
    finally:
        await other.close()


async def test_a_large_answer_is_truncated_and_resumable(stubs: Stubs, org: str) -> None:
    """100 providers x 62 days at a 5-minute step would be ~1.8M slots (over
    gRPC's 4 MB default): each provider gets its share of 20,000 slots, the
    earliest, and says where to resume; the rest comes from there."""
    bookable = await make_bookable(stubs, org, duration_minutes=30)
    other = await make_bookable(stubs, org, duration_minutes=30)
    # Share the service: the second provider offers the first's service.
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org,
            offering=resources_pb2.Offering(
                provider_id=other.provider_id, service_id=bookable.service_id
            ),
        )
    )
    begin = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    end = begin + timedelta(days=62)
    request = availability_pb2.GetAvailabilityRequest(
        organization_id=org,
        provider_ids=[bookable.provider_id, other.provider_id],
        service_id=bookable.service_id,
        start_time=ts(begin),
        end_time=ts(end),
        slot_step_minutes=5,
        first_available_count=3,
    )
    got = await stubs.availability.GetAvailability(request)
    every = 62 * 24 * 12  # all day, every 5 minutes
    for entry in got.providers:
        assert len(entry.slots) == 10_000 and entry.truncated
        assert as_dt(entry.next_start_time) == begin + timedelta(minutes=5 * 10_000)
    assert [as_dt(s.start_time) for s in got.first_available] == [
        begin,
        begin,
        begin + timedelta(minutes=5),
    ]
    request.provider_ids[:] = [bookable.provider_id]
    request.start_time.CopyFrom(got.providers[0].next_start_time)
    rest = await stubs.availability.GetAvailability(request)
    (entry,) = rest.providers
    assert not entry.truncated and not entry.HasField("next_start_time")
    assert len(entry.slots) == every - 10_000
    assert as_dt(entry.slots[0].start_time) == as_dt(got.providers[0].next_start_time)
