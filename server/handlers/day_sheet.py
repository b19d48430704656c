"""ScheduleService.GetProviderSchedule: the day sheet of one business date for
1-100 providers, each in its own zone.

Two statements whatever the number of providers and appointments, on one
pooled connection (server.queries.day_sheet): the providers (one row per
requested id: unknown ones become that entry's NOT_FOUND) with the date's
working-hours rows, then, for the known ones, their time off and their
appointments with client, service and payments. A provider's day
is [its local midnight, the next one), both read by server.scheduling as
every wall-clock time is (fold=0: the first instant of each date), so a DST
day is 23 or 25 hours; working intervals are that date's stretches
(booking.calendars_from_rows + scheduling), exactly as availability sees them.
"""

from __future__ import annotations

from datetime import date, datetime
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from booking.v1 import common_pb2
from booking.v1 import schedules_pb2 as pb

from server import booking, scheduling
from server.errors import NotFound
from server.handlers._base import Context, Deps, request_violations, timeout_of
from server.handlers._calendar_fields import date_of
from server.handlers._encoders import PAYMENT_STATUSES, encode_appointment, encode_time_off
from server.handlers._encoding import set_time
from server.handlers.availability import check_provider_ids
from server.queries import day_sheet as q
from server.queries._rows import Prefixed

__all__ = ["get_provider_schedule"]

# The last business date whose day a Timestamp can hold in every zone: the
# next one (9999-12-31) ends after 9999-12-31T23:59:59Z west of UTC.
LAST_DATE = date(9999, 12, 30)

# Stored payment status -> PaymentStatus number.
_PAYMENT_STATUS = {stored: number for number, stored in PAYMENT_STATUSES.items()}


def _by_provider(rows: list[asyncpg.Record]) -> dict[str, list[asyncpg.Record]]:
    """Rows ordered by provider, grouped by it (the order within kept)."""
    return {str(pid): list(group) for pid, group in groupby(rows, key=lambda r: r["pid"])}


def _encode_appointment(row: asyncpg.Record, add: Any) -> None:
    add(
        appointment=encode_appointment(Prefixed(row, "a_")),
        client_name=row["client_name"],
        client_phone=row["client_phone"] or "",
        service_name=row["service_name"],
        payment_status=(
            0 if row["payment_status"] is None else _PAYMENT_STATUS[row["payment_status"]]
        ),
        amount_paid=common_pb2.Money(
            currency_code=row["a_currency"], amount_minor=row["amount_paid_minor"]
        ),
    )


async def get_provider_schedule(
    deps: Deps, request: pb.GetProviderScheduleRequest, context: Context
) -> pb.GetProviderScheduleResponse:
    v = request_violations(request)
    v.uuid("organization_id", request.organization_id)
    ids = list(request.provider_ids)
    check_provider_ids(ids, v)
    on = date_of(request.date, "date", v, required=True)
    if on is not None and on > LAST_DATE:
        v.add("date", f"must be at most {LAST_DATE.isoformat()}", "OUT_OF_RANGE")
    v.raise_if_any()
    assert on is not None
    org = request.organization_id
    response = pb.GetProviderScheduleResponse()
    zones: dict[str, ZoneInfo] = {}
    days: list[tuple[str, datetime, datetime]] = []
    async with deps.db.connection(timeout_of(context)) as conn:
        rows = await q.day_header(conn, org, ids, on)
        header = sorted((r for r in rows if r["kind"] == "p"), key=lambda r: r["ord"])
        for pid, row in zip(ids, header, strict=True):
            entry = response.providers.add(provider_id=pid)
            if not row["provider_found"]:
                entry.error.CopyFrom(NotFound.of("provider", pid).to_status())
                continue
            zone = zones[pid] = ZoneInfo(row["time_zone"])
            start = scheduling.wall_instant(zone, on, 0)
            end = scheduling.wall_instant(zone, on, scheduling.MINUTES_PER_DAY)
            days.append((pid, start, end))
            entry.display_name = row["display_name"]
            entry.time_zone = row["time_zone"]
            set_time(entry.day_start_time, start)
            set_time(entry.day_end_time, end)
        if not days:
            return response
        by_provider = _by_provider(await q.day_rows(conn, org, days))
    hours = [r for r in rows if r["kind"] != "p"]
    calendars = booking.calendars_from_rows(hours, zones, (on, on))
    entries = {e.provider_id: e for e in response.providers if not e.HasField("error")}
    for pid in zones:
        entry = entries[pid]
        for start, end in calendars[pid].work():
            interval = entry.working_intervals.add()
            set_time(interval.start_time, start)
            set_time(interval.end_time, end)
        for row in by_provider.get(pid, ()):
            if row["kind"] == "t":
                encode_time_off(Prefixed(row, "t_"), entry.time_off.add)
            else:
                _encode_appointment(row, entry.appointments.add)
    return response
