"""ScheduleService.GetProviderSchedule (the day sheet) through a real channel
on a real PostgreSQL.

Providers, services, offerings, hours, overrides, time off and appointments
are made through the RPCs (appointments with override_rules, so that any
date may be booked); payments, which have no write RPC yet, with SQL. The
expected instants of the DST days are written out by hand (UTC), never
computed with the server's own arithmetic. Then the statement count (fixed
whatever the number of providers and appointments) and the plans of the
appointments and time off reads on a table of 120,000 appointments.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    appointments_pb2,
    clients_pb2,
    resources_pb2,
    schedules_pb2,
)
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, error_details_pb2
from google.type import date_pb2

from server.ids import uuid7
from server.queries import day_sheet as q
from tests import test_explain_booking as explain
from tests.conftest import Bookable, Stubs, make_bookable, new_org, violated_fields
from tests.test_appointments import book, change
from tests.test_availability import add_hours, add_override, add_time_off
from tests.test_explain_booking import big  # noqa: F401  (a fixture)
from tests.test_list_clients import counted  # noqa: F401  (a fixture)

Request = schedules_pb2.GetProviderScheduleRequest
PaymentStatus = resources_pb2.PaymentStatus
Status = resources_pb2.AppointmentStatus
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def as_dt(t: timestamp_pb2.Timestamp) -> datetime:
    return t.ToDatetime(tzinfo=UTC)


def pb_date(on: date) -> date_pb2.Date:
    return date_pb2.Date(year=on.year, month=on.month, day=on.day)


async def sheet(
    stubs: Stubs, org: str, provider_ids: Sequence[str], on: date
) -> list[schedules_pb2.ProviderSchedule]:
    response = await stubs.schedules.GetProviderSchedule(
        Request(organization_id=org, provider_ids=list(provider_ids), date=pb_date(on))
    )
    assert [e.provider_id for e in response.providers] == list(provider_ids)
    return list(response.providers)


def intervals(entry: schedules_pb2.ProviderSchedule) -> list[tuple[datetime, datetime]]:
    return [(as_dt(i.start_time), as_dt(i.end_time)) for i in entry.working_intervals]


def starts(entry: schedules_pb2.ProviderSchedule) -> list[datetime]:
    return [as_dt(a.appointment.start_time) for a in entry.appointments]


def bounds(entry: schedules_pb2.ProviderSchedule) -> tuple[datetime, datetime]:
    return as_dt(entry.day_start_time), as_dt(entry.day_end_time)


async def new_client(stubs: Stubs, org: str, given: str, family: str, phone: str = "") -> str:
    response = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org,
            client=resources_pb2.Client(given_name=given, family_name=family, phone=phone),
        )
    )
    return response.client.id


async def add_payment(
    db: asyncpg.Connection,
    a: resources_pb2.Appointment,
    status: str,
    amount: int,
    created_at: datetime,
    *,
    currency: str = "EUR",
    payment_id: str | None = None,
) -> str:
    pid = payment_id or uuid7()
    await db.execute(
        "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor,"
        " currency, status, method, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'card', $8)",
        a.organization_id,
        pid,
        a.client_id,
        a.id,
        amount,
        currency,
        status,
        created_at,
    )
    return pid


# -- contents and order -----------------------------------------------------------------


async def test_every_field_of_an_entry_in_order(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Berlin, Monday 2026-11-16 (UTC+1): the day is [Sun 23:00Z, Mon 23:00Z).
    Appointments are booked out of order; a cancelled and a live one share a
    start (then by id); neighbours of both midnights stay out."""
    b = await make_bookable(stubs, org, duration_minutes=30, hours=((1, 540, 720), (1, 780, 1020)))
    on = date(2026, 11, 16)
    ada = await new_client(stubs, org, "Ada", "Lovelace", "+4915112345678")
    solo = await new_client(stubs, org, "", "Solo")
    late = await book(stubs, b, utc(2026, 11, 16, 22, 30), client_id=solo, notes="last")
    early = await book(stubs, b, utc(2026, 11, 15, 23, 0), client_id=ada)
    first_at_ten = await book(stubs, b, utc(2026, 11, 16, 9, 0))
    await change(stubs, "cancel", first_at_ten, reason="moved")
    second_at_ten = await book(stubs, b, utc(2026, 11, 16, 9, 0), client_id=ada)
    await change(stubs, "confirm", second_at_ten)
    await book(stubs, b, utc(2026, 11, 15, 22, 30))  # 23:30 on Sunday
    await book(stubs, b, utc(2026, 11, 16, 23, 0))  # 00:00 on Tuesday

    (entry,) = await sheet(stubs, org, [b.provider_id], on)
    assert not entry.HasField("error")
    assert (entry.display_name, entry.time_zone) == ("Pat", "Europe/Berlin")
    assert bounds(entry) == (utc(2026, 11, 15, 23), utc(2026, 11, 16, 23))
    assert intervals(entry) == [
        (utc(2026, 11, 16, 8), utc(2026, 11, 16, 11)),
        (utc(2026, 11, 16, 12), utc(2026, 11, 16, 16)),
    ]
    assert list(entry.time_off) == []
    ids = [a.appointment.id for a in entry.appointments]
    assert ids == [early.id, first_at_ten.id, second_at_ten.id, late.id]
    assert first_at_ten.id < second_at_ten.id
    for item in entry.appointments:  # the appointment exactly as GetAppointment gives it
        got = await stubs.appointments.GetAppointment(
            appointments_pb2.GetAppointmentRequest(
                organization_id=org, appointment_id=item.appointment.id
            )
        )
        assert item.appointment == got.appointment
    statuses = [a.appointment.status for a in entry.appointments]
    assert statuses == [
        Status.APPOINTMENT_STATUS_PENDING,
        Status.APPOINTMENT_STATUS_CANCELLED,
        Status.APPOINTMENT_STATUS_CONFIRMED,
        Status.APPOINTMENT_STATUS_PENDING,
    ]
    names = [(a.client_name, a.client_phone, a.service_name) for a in entry.appointments]
    assert names == [
        ("Ada Lovelace", "+4915112345678", "Cut"),
        ("Cli Ent", "", "Cut"),
        ("Ada Lovelace", "+4915112345678", "Cut"),
        ("Solo", "", "Cut"),
    ]
    assert entry.appointments[3].appointment.notes == "last"
    for item in entry.appointments:
        assert item.payment_status == PaymentStatus.PAYMENT_STATUS_UNSPECIFIED
        assert (item.amount_paid.currency_code, item.amount_paid.amount_minor) == ("EUR", 0)


async def test_several_zones_on_one_date(stubs: Stubs, org: str) -> None:
    """One date, three zones: each provider's day runs in its own zone, so the
    same two instants fall on 2026-12-07 for some and not for others."""
    zones = ("Pacific/Kiritimati", "America/New_York", "Asia/Kolkata")
    made = [await make_bookable(stubs, org, time_zone=z) for z in zones]
    for b in made:
        await book(stubs, b, utc(2026, 12, 7, 2, 0))
        await book(stubs, b, utc(2026, 12, 7, 23, 0))
    on = date(2026, 12, 7)
    entries = await sheet(stubs, org, [b.provider_id for b in reversed(made)], on)
    got = {e.time_zone: e for e in entries}
    expected = {
        # (day start, day end, appointment starts on the date)
        "Pacific/Kiritimati": (utc(2026, 12, 6, 10), utc(2026, 12, 7, 10), [utc(2026, 12, 7, 2)]),
        "America/New_York": (utc(2026, 12, 7, 5), utc(2026, 12, 8, 5), [utc(2026, 12, 7, 23)]),
        "Asia/Kolkata": (utc(2026, 12, 6, 18, 30), utc(2026, 12, 7, 18, 30), [utc(2026, 12, 7, 2)]),
    }
    for zone, (start, end, booked) in expected.items():
        entry = got[zone]
        assert bounds(entry) == (start, end), zone
        assert intervals(entry) == [(start, end)], zone  # all day, every day
        assert starts(entry) == booked, zone


# -- DST days: America/New_York, 2026-03-08 (23 hours) and 2026-11-01 (25 hours) ----------

DST_DAYS = {
    "spring forward": (
        date(2026, 3, 8),
        (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        # Sunday hours 00:00-01:00, 02:30-04:00 (02:30 is in the gap: 03:30 EDT)
        # and 23:00-24:00.
        [(7, 0, 60), (7, 150, 240), (7, 1380, 1440)],
        [
            (utc(2026, 3, 8, 5), utc(2026, 3, 8, 6)),
            (utc(2026, 3, 8, 7, 30), utc(2026, 3, 8, 8)),
            (utc(2026, 3, 9, 3), utc(2026, 3, 9, 4)),
        ],
        # Appointment starts: (instant, on the date?)
        [
            (utc(2026, 3, 8, 4, 59), False),  # 23:59 EST on the 7th
            (utc(2026, 3, 8, 5, 0), True),  # 00:00 EST
            (utc(2026, 3, 8, 6, 59), True),  # 01:59 EST, just before the jump
            (utc(2026, 3, 8, 7, 0), True),  # 03:00 EDT, just after it
            (utc(2026, 3, 9, 3, 59), True),  # 23:59 EDT (already the 9th in UTC)
            (utc(2026, 3, 9, 4, 0), False),  # 00:00 EDT on the 9th
        ],
    ),
    "fall back": (
        date(2026, 11, 1),
        (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
        # Sunday hours 01:00-02:00 (01:00 EDT, the first one, to 02:00 EST) and
        # 23:00-24:00.
        [(7, 60, 120), (7, 1380, 1440)],
        [
            (utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)),
            (utc(2026, 11, 2, 4), utc(2026, 11, 2, 5)),
        ],
        [
            (utc(2026, 11, 1, 3, 59), False),  # 23:59 EDT on Oct 31
            (utc(2026, 11, 1, 4, 0), True),  # 00:00 EDT
            (utc(2026, 11, 1, 5, 30), True),  # 01:30 EDT, the first one
            (utc(2026, 11, 1, 6, 30), True),  # 01:30 EST, the second one
            (utc(2026, 11, 2, 4, 59), True),  # 23:59 EST (the 2nd in UTC)
            (utc(2026, 11, 2, 5, 0), False),  # 00:00 EST on the 2nd
        ],
    ),
}


@pytest.mark.parametrize("case", list(DST_DAYS))
async def test_a_dst_day_runs_from_local_midnight_to_local_midnight(
    stubs: Stubs, org: str, case: str
) -> None:
    on, day, rules, work, booked = DST_DAYS[case]
    b = await make_bookable(stubs, org, time_zone="America/New_York", duration_minutes=1)
    await add_hours(stubs, org, b.provider_id, rules)
    for instant, _ in booked:
        await book(stubs, b, instant)
    (entry,) = await sheet(stubs, org, [b.provider_id], on)
    assert bounds(entry) == day
    assert day[1] - day[0] == timedelta(hours={"spring forward": 23, "fall back": 25}[case])
    assert intervals(entry) == work
    assert starts(entry) == [instant for instant, inside in booked if inside]
    # The neighbours' days take the rest, and nothing is in two days.
    before = (await sheet(stubs, org, [b.provider_id], on - timedelta(days=1)))[0]
    after = (await sheet(stubs, org, [b.provider_id], on + timedelta(days=1)))[0]
    assert as_dt(before.day_end_time) == day[0] and as_dt(after.day_start_time) == day[1]
    assert starts(before) + starts(entry) + starts(after) == [i for i, _ in booked]


# -- overrides, closed days, time off ----------------------------------------------------


async def test_override_day_and_closed_day(stubs: Stubs, org: str) -> None:
    """Berlin, weekly Monday 09:00-17:00. Monday 2026-12-14 is overridden with
    08:00-10:00, 10:00-12:00 (touching: one interval) and 14:00-24:00 (to the
    day's end); Monday 2026-12-21 is closed (its appointment is still listed);
    Tuesday 2026-12-15 has no hours at all."""
    b = await make_bookable(stubs, org, hours=((1, 540, 1020),))
    await add_override(stubs, org, b.provider_id, date(2026, 12, 14), [(480, 600), (600, 720)])
    await add_override(stubs, org, b.provider_id, date(2026, 12, 14), [(480, 720), (840, 1440)])
    await add_override(stubs, org, b.provider_id, date(2026, 12, 21), [])
    closed_day = await book(stubs, b, utc(2026, 12, 21, 9))
    ids = [b.provider_id]
    (overridden,) = await sheet(stubs, org, ids, date(2026, 12, 14))
    assert intervals(overridden) == [
        (utc(2026, 12, 14, 7), utc(2026, 12, 14, 11)),
        (utc(2026, 12, 14, 13), utc(2026, 12, 14, 23)),
    ]
    assert as_dt(overridden.day_end_time) == utc(2026, 12, 14, 23)
    (weekly_day,) = await sheet(stubs, org, ids, date(2026, 12, 7))
    assert intervals(weekly_day) == [(utc(2026, 12, 7, 8), utc(2026, 12, 7, 16))]
    (closed,) = await sheet(stubs, org, ids, date(2026, 12, 21))
    assert intervals(closed) == []
    assert [a.appointment.id for a in closed.appointments] == [closed_day.id]
    (no_hours,) = await sheet(stubs, org, ids, date(2026, 12, 15))
    assert intervals(no_hours) == [] and not no_hours.HasField("error")


async def test_time_off_overlapping_the_day_unclipped_by_start(stubs: Stubs, org: str) -> None:
    """Berlin, 2026-12-08 = [12-07 23:00Z, 12-08 23:00Z)."""
    b = await make_bookable(stubs, org)
    spans = {
        "across the first midnight": (utc(2026, 12, 7, 21), utc(2026, 12, 8, 1)),
        "across the next midnight": (utc(2026, 12, 8, 22), utc(2026, 12, 9, 2)),
        "inside": (utc(2026, 12, 8, 10), utc(2026, 12, 8, 11)),
        "the whole week": (utc(2026, 12, 5), utc(2026, 12, 12)),
        "ends at the day's start": (utc(2026, 12, 7, 20), utc(2026, 12, 7, 23)),
        "starts at the day's end": (utc(2026, 12, 8, 23), utc(2026, 12, 9, 3)),
        "the day before": (utc(2026, 12, 7, 8), utc(2026, 12, 7, 9)),
    }
    made = {
        name: await add_time_off(stubs, org, b.provider_id, *span) for name, span in spans.items()
    }
    (entry,) = await sheet(stubs, org, [b.provider_id], date(2026, 12, 8))
    got = [(t.id, as_dt(t.start_time), as_dt(t.end_time)) for t in entry.time_off]
    expected = ["the whole week", "across the first midnight", "inside", "across the next midnight"]
    assert got == [(made[name], *spans[name]) for name in expected]
    for t in entry.time_off:
        assert (t.organization_id, t.provider_id) == (org, b.provider_id)
        assert t.create_time.seconds > 0


# -- payments -----------------------------------------------------------------------------


async def test_payment_status_and_amount_paid(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, duration_minutes=60)
    on = date(2026, 12, 9)
    made = [await book(stubs, b, utc(2026, 12, 9, 8 + i)) for i in range(6)]
    none, mixed, refunded, tie, pending, elsewhere = made
    t = utc(2026, 12, 1, 12)

    def at(minutes: int) -> datetime:
        return t + timedelta(minutes=minutes)

    # Latest: failed; paid: the completed EUR ones (not USD, not pending / failed).
    await add_payment(db, mixed, "pending", 900, at(0))
    await add_payment(db, mixed, "completed", 1000, at(1))
    await add_payment(db, mixed, "completed", 500, at(2), currency="USD")
    await add_payment(db, mixed, "completed", 700, at(3))
    await add_payment(db, mixed, "failed", 300, at(4))
    # Paid, then refunded: the refund is the latest; the completed one still counts.
    await add_payment(db, refunded, "refunded", 2500, at(9))
    await add_payment(db, refunded, "completed", 2500, at(5))
    # Same create time: the greater id is the latest.
    await add_payment(db, tie, "pending", 100, at(6), payment_id=f"{uuid7()[:-1]}f")
    low = str(uuid.UUID(int=0))
    await add_payment(db, tie, "completed", 400, at(6), payment_id=low)
    await add_payment(db, pending, "pending", 2500, at(7))
    # Payments of another appointment (other days) and of none change nothing.
    other = await book(stubs, b, utc(2026, 12, 10, 8))
    await add_payment(db, other, "completed", 9999, at(8))
    await db.execute(
        "INSERT INTO payments (organization_id, id, client_id, amount_minor, currency, status,"
        " method) VALUES ($1, $2, $3, 5, 'EUR', 'completed', 'cash')",
        org,
        uuid7(),
        b.client_id,
    )
    (entry,) = await sheet(stubs, org, [b.provider_id], on)
    got = {
        a.appointment.id: (
            a.payment_status,
            a.amount_paid.currency_code,
            a.amount_paid.amount_minor,
        )
        for a in entry.appointments
    }
    assert got == {
        none.id: (PaymentStatus.PAYMENT_STATUS_UNSPECIFIED, "EUR", 0),
        mixed.id: (PaymentStatus.PAYMENT_STATUS_FAILED, "EUR", 1700),
        refunded.id: (PaymentStatus.PAYMENT_STATUS_REFUNDED, "EUR", 2500),
        tie.id: (PaymentStatus.PAYMENT_STATUS_PENDING, "EUR", 400),
        pending.id: (PaymentStatus.PAYMENT_STATUS_PENDING, "EUR", 0),
        elsewhere.id: (PaymentStatus.PAYMENT_STATUS_UNSPECIFIED, "EUR", 0),
    }


# -- errors ---------------------------------------------------------------------------------


async def test_unknown_and_other_tenants_providers_are_per_entry_not_found(
    stubs: Stubs, org: str
) -> None:
    mine = await make_bookable(stubs, org)
    also_mine = await make_bookable(stubs, org, time_zone="Asia/Tokyo")
    other_org = await new_org(stubs)
    theirs = await make_bookable(stubs, other_org)
    await book(stubs, theirs, utc(2026, 12, 9, 10))
    await book(stubs, mine, utc(2026, 12, 9, 10))
    unknown = str(uuid.uuid4())
    ids = [mine.provider_id, unknown, theirs.provider_id, also_mine.provider_id]
    entries = await sheet(stubs, org, ids, date(2026, 12, 9))
    for entry, pid in zip(entries[1:3], ids[1:3], strict=True):
        assert entry.error.code == code_pb2.NOT_FOUND
        info = error_details_pb2.ErrorInfo()
        assert entry.error.details[0].Unpack(info)
        assert (info.reason, info.domain) == ("PROVIDER_NOT_FOUND", "booking.v1")
        assert pid in entry.error.message
        assert entry.display_name == "" and not entry.appointments and not entry.working_intervals
        assert not entry.HasField("day_start_time")
    assert not entries[0].HasField("error") and not entries[3].HasField("error")
    assert len(entries[0].appointments) == 1 and entries[3].time_zone == "Asia/Tokyo"
    # An organization that does not exist: every entry is NOT_FOUND, not the call.
    (lost,) = await sheet(stubs, str(uuid.uuid4()), [mine.provider_id], date(2026, 12, 9))
    assert lost.error.code == code_pb2.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "violated"),
    [
        ({"organization_id": ""}, {"organization_id"}),
        ({"organization_id": "nope"}, {"organization_id"}),
        ({"provider_ids": []}, {"provider_ids"}),
        ({"provider_ids": [str(uuid.uuid4()) for _ in range(101)]}, {"provider_ids"}),
        ({"provider_ids": ["x", str(uuid.uuid4())]}, {"provider_ids[0]"}),
        ({"provider_ids": ["A" * 8 + "-0000-4000-8000-" + "0" * 12] * 2}, {"provider_ids[1]"}),
        ({"date": None}, {"date"}),
        ({"date": date_pb2.Date(year=2026, month=2, day=30)}, {"date"}),
        ({"date": date_pb2.Date(year=2026, month=0, day=1)}, {"date"}),
        ({"date": date_pb2.Date(year=10000, month=1, day=1)}, {"date"}),
        ({"date": date_pb2.Date(year=9999, month=12, day=31)}, {"date"}),
        (
            {"organization_id": "", "provider_ids": [], "date": None},
            {"organization_id", "provider_ids", "date"},
        ),
    ],
)
async def test_invalid_requests_name_every_bad_field(
    stubs: Stubs, fields: dict[str, Any], violated: set[str]
) -> None:
    pid = str(uuid.uuid4())
    values: dict[str, Any] = {
        "organization_id": str(uuid.uuid4()),
        "provider_ids": [pid],
        "date": pb_date(date(2026, 12, 9)),
        **fields,
    }
    if values["date"] is None:
        del values["date"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.schedules.GetProviderSchedule(Request(**values))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == violated


async def test_duplicates_in_another_letter_case_are_invalid(stubs: Stubs) -> None:
    pid = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.schedules.GetProviderSchedule(
            Request(
                organization_id=str(uuid.uuid4()),
                provider_ids=[pid, pid.upper()],
                date=pb_date(date(2026, 12, 9)),
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"provider_ids[1]"}


async def test_the_first_and_last_dates_of_the_range(stubs: Stubs, org: str) -> None:
    """1900-01-01 and 9999-12-30 (west of UTC, its day ends on 9999-12-31):
    their days are given, never an INTERNAL error."""
    b = await make_bookable(stubs, org, time_zone="America/New_York")
    (first,) = await sheet(stubs, org, [b.provider_id], date(1900, 1, 1))
    assert bounds(first) == (utc(1900, 1, 1, 5), utc(1900, 1, 2, 5))
    (last,) = await sheet(stubs, org, [b.provider_id], date(9999, 12, 30))
    assert bounds(last) == (utc(9999, 12, 30, 5), utc(9999, 12, 31, 5))


# -- statements --------------------------------------------------------------------------


async def _booked_providers(stubs: Stubs, org: str, count: int, each: int) -> list[Bookable]:
    """``count`` providers (three zones in turn), each with a time off and
    ``each`` appointments on 2026-12-09 in its zone (booked ten at a time)."""
    zones = ("Europe/Berlin", "America/New_York", "Asia/Tokyo")
    made = []
    for i in range(count):
        b = await make_bookable(stubs, org, time_zone=zones[i % 3], duration_minutes=30)
        zone = ZoneInfo(b.time_zone)
        on = datetime(2026, 12, 9, 1, tzinfo=zone)
        await add_time_off(stubs, org, b.provider_id, on, on + timedelta(minutes=30))
        calls = [book(stubs, b, on + timedelta(hours=1, minutes=30 * k)) for k in range(each)]
        for batch in range(0, len(calls), 10):
            await asyncio.gather(*calls[batch : batch + 10])
        made.append(b)
    return made


# asyncpg's look-up of a type's codec (uuid[], timestamptz[], tstzrange), once
# per pooled connection and type: the driver's, not the handler's statements.
_DRIVER_LOOKUPS = ("typeinfo_tree", "current_setting('jit')", "set_config('jit'")


def own_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if not any(d in s for d in _DRIVER_LOOKUPS)]


async def test_the_statement_count_is_fixed(
    counted: tuple[Stubs, list[str]],  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    """2 statements (providers with the date's hours; time off and
    appointments with their clients, services and payments) for 1 provider
    with 1 appointment as for 20 providers with 200 appointments, each with a
    payment; 1 when no provider is known."""
    stubs, statements = counted
    org = await new_org(stubs)
    small = await _booked_providers(stubs, org, 1, 1)
    many = await _booked_providers(stubs, org, 20, 10)
    await db.execute(
        "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor,"
        " currency, status, method) SELECT organization_id, gen_random_uuid(), client_id, id,"
        " 100, 'EUR', 'completed', 'card' FROM appointments WHERE organization_id = $1",
        org,
    )
    on = date(2026, 12, 9)
    counts = {}
    for made, each in ((small, 1), (many, 10)):
        statements.clear()
        entries = await sheet(stubs, org, [b.provider_id for b in made], on)
        counts[len(made)] = own_statements(statements)
        assert [len(e.appointments) for e in entries] == [each] * len(made)
        assert {a.amount_paid.amount_minor for e in entries for a in e.appointments} == {100}
        assert [len(e.time_off) for e in entries] == [1] * len(made)
    assert len(counts[1]) == len(counts[20]) == 2, counts
    statements.clear()
    await sheet(stubs, org, [str(uuid.uuid4())], on)
    assert len(own_statements(statements)) == 1, statements


# -- plans on 120,000 appointments ---------------------------------------------------------

EXPLAIN_APPOINTMENTS = 120_000


@pytest.fixture(scope="module")
def fewer_appointments() -> Iterator[None]:
    """tests/test_explain_booking.py's data set (its ``big``: 1,000 Berlin
    providers with hours, overrides and time off, appointments back to back
    around now, in a database of its own) at 120,000 appointments, not a
    million. Requested before ``big``, so that its load sees it."""
    with mock.patch.object(explain, "N", EXPLAIN_APPOINTMENTS):
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def paid(fewer_appointments: None, big: explain.Big) -> explain.Big:  # noqa: F811
    """That data set with two payments (completed, then pending) for about
    every third appointment."""
    await big.conn.execute(
        "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor,"
        " currency, status, method, created_at)"
        " SELECT a.organization_id, gen_random_uuid(), a.client_id, a.id, 1250, 'EUR',"
        " CASE k WHEN 1 THEN 'completed' ELSE 'pending' END, 'card',"
        " a.created_at + k * interval '1 minute'"
        " FROM appointments a, generate_series(1, 2) k"
        " WHERE a.organization_id = $1 AND get_byte(uuid_send(a.id), 15) % 3 = 0",
        big.org,
    )
    await big.conn.execute("ANALYZE payments")
    return big


async def test_day_sheet_statement_plans(paid: explain.Big) -> None:
    """For 1 and 100 of the 1,000 providers: appointments through
    ix_appointments_org_provider_start_at_id (never a sequential scan, rows
    read about the day's own: 48 a provider), payments through
    ix_payments_org_appointment_id, time off through its GiST; custom and
    generic plans."""
    count = await paid.conn.fetchval(
        "SELECT count(*) FROM appointments WHERE organization_id = $1", paid.org
    )
    assert EXPLAIN_APPOINTMENTS - explain.PROVIDERS <= count <= EXPLAIN_APPOINTMENTS
    zone = ZoneInfo("Europe/Berlin")
    on = paid.now.astimezone(zone).date()
    start = datetime(on.year, on.month, on.day, tzinfo=zone).astimezone(UTC)
    end = start + timedelta(days=1)
    for providers in (1, 100):
        ids = paid.providers[300 : 300 + providers]
        args = [paid.org, ids, [start] * providers, [end] * providers]
        for nodes in await explain._plans(paid.conn, q.DAY_SQL, args):
            scans = explain._scans(nodes, "appointments")
            assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
            assert any(
                n.get("Index Name") == "ix_appointments_org_provider_start_at_id" for n in scans
            ), scans
            assert explain._read(scans) <= providers * 52, scans
            payments = explain._scans(nodes, "payments")
            assert payments and all(n["Node Type"] != "Seq Scan" for n in payments), payments
            assert all(
                n.get("Index Name") == "ix_payments_org_appointment_id"
                for n in payments
                if n["Node Type"] != "Bitmap Heap Scan"
            ), payments
            # The day's appointments' payments: 2 for every third.
            assert explain._read(payments) <= providers * 52, payments
            time_off = explain._scans(nodes, "time_off")
            assert time_off and all(n["Node Type"] != "Seq Scan" for n in time_off), time_off
        header = [paid.org, ids, on, on]
        for nodes in await explain._plans(paid.conn, q.DAY_HEADER_SQL, header):
            assert not explain._scans(nodes, "appointments"), nodes
            # One key probe a requested provider, also in the generic plan.
            scans = explain._scans(nodes, "providers")
            assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
            assert explain._read(scans) <= providers, scans
