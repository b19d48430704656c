"""Appointments: the booking writes' SQL.

The database forbids a double booking: ``ex_appointments_no_overlap`` (GiST,
``organization_id =, provider_id =, occupied &&`` over the blocking statuses).
Every write of an appointment's time goes through :func:`interval_values`, so
``during`` and ``occupied`` (``[start - buffer_before, end + buffer_after)``)
are always written together, in the same statement. A write that loses a race
for the time raises ``asyncpg.ExclusionViolationError``; :func:`occupying`
then names the committed appointments in the way (READ COMMITTED: a fresh
statement sees the winner).

ListAppointments (indexes of migration 0004): by start time within the
tenant ``(organization_id, start_at, id)``, a provider ``(organization_id,
provider_id, start_at, id)``, a client or a service likewise; an instant range
is a start_at range (an appointment lasts at most 24 hours), a business-date
range a coarse start_at range plus the exact bound in the provider's zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import asyncpg

from server.booking import Conflict, Reason
from server.db import schema
from server.db.engine import Conn
from server.queries._crud import Audit, Entity, audit_cte, audit_params
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey, orders

__all__ = [
    "APPOINTMENT",
    "APPOINTMENTS",
    "BLOCKING",
    "OCCUPYING_SQL",
    "AppointmentFilter",
    "Slot",
    "insert_appointment",
    "interval_values",
    "occupying",
]

APPOINTMENT = Entity.of(
    schema.appointments,
    "appointment",
    (
        "provider_id",
        "client_id",
        "service_id",
        "during",
        "occupied",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "status",
        "price_minor",
        "currency",
        "external_id",
        "notes",
        "cancel_reason",
    ),
)

# Statuses that hold the provider's time (the exclusion constraint's predicate).
BLOCKING = schema.BLOCKING_STATUSES


@dataclass(frozen=True, slots=True)
class Slot:
    """The provider's time a write tries to take."""

    provider_id: str
    start: datetime
    end: datetime
    buffer_before_minutes: int
    buffer_after_minutes: int

    @property
    def occupied_start(self) -> datetime:
        return self.start - timedelta(minutes=self.buffer_before_minutes)

    @property
    def occupied_end(self) -> datetime:
        return self.end + timedelta(minutes=self.buffer_after_minutes)


def interval_values(slot: Slot) -> dict[str, Any]:
    """The columns of an appointment's time, always written together."""
    return {
        "provider_id": slot.provider_id,
        "during": asyncpg.Range(slot.start, slot.end),
        "occupied": asyncpg.Range(slot.occupied_start, slot.occupied_end),
        "buffer_before_minutes": slot.buffer_before_minutes,
        "buffer_after_minutes": slot.buffer_after_minutes,
    }


@lru_cache(maxsize=16)
def _insert_sql(columns: tuple[str, ...]) -> str:
    # queries._crud.insert_row's statement with the audit action a parameter
    # ("create" or "create_override").
    all_cols = ("organization_id", "id", *columns)
    n = len(all_cols)
    values = ", ".join(f"${i}" for i in range(1, n + 1))
    return (
        f"WITH row AS (INSERT INTO appointments ({', '.join(all_cols)}) VALUES ({values}) "
        f"RETURNING *), {audit_cte(n + 1)} SELECT {', '.join(APPOINTMENT.columns)} FROM row"
    )


async def insert_appointment(
    conn: Conn,
    *,
    org_id: str,
    row_id: str,
    values: Mapping[str, Any],
    audit: Audit,
    action: str,
) -> asyncpg.Record:
    """Insert an appointment (``values`` include :func:`interval_values`) and
    its audit event ``action`` in one statement. Raises
    ``asyncpg.ExclusionViolationError`` when a committed appointment occupies
    the time (after waiting for an uncommitted one to commit or roll back)."""
    columns, args = APPOINTMENT.with_derived(values)
    params = audit_params(audit, action, APPOINTMENT.resource_type)
    row = await conn.fetchrow(_insert_sql(columns), org_id, row_id, *args, *params)
    assert row is not None
    return row


OCCUPYING_SQL = (
    "SELECT id::text AS id, lower(during) AS start_at, upper(during) AS end_at, "
    "during && tstzrange($5, $6) AS overlap FROM appointments "
    "WHERE organization_id = $1 AND provider_id = $2 AND occupied && tstzrange($3, $4) "
    f"AND {schema.BLOCKING_SQL} "
    "AND ($7::uuid IS NULL OR id <> $7::uuid) "
    "ORDER BY NOT (during && tstzrange($5, $6)), lower(during), id"
)


async def occupying(
    conn: Conn, org_id: str, slot: Slot, *, exclude_id: str | None = None
) -> list[Conflict]:
    """The committed blocking appointments of the slot's provider whose occupied
    time overlaps the slot's (but ``exclude_id``): OVERLAP when their
    appointments themselves overlap, else BUFFER; by reason, then start. Served
    by the exclusion constraint's GiST index."""
    rows = await conn.fetch(
        OCCUPYING_SQL,
        org_id,
        slot.provider_id,
        slot.occupied_start,
        slot.occupied_end,
        slot.start,
        slot.end,
        exclude_id,
    )
    return [
        Conflict(
            reason=Reason.OVERLAP if r["overlap"] else Reason.BUFFER,
            appointment_id=r["id"],
            start=r["start_at"],
            end=r["end_at"],
        )
        for r in rows
    ]


# -- ListAppointments ----------------------------------------------------------------

# Local midnight of a date is within this much of the same UTC midnight in
# every zone (offsets run from -12:00 to +14:00 today; local mean times
# before 1900 reach +-15:57): the coarse start_at bound a date range puts on
# the index range before the exact bound in the provider's zone filters.
_ZONE_MARGIN = timedelta(hours=16)
# The zone of the row's provider, for a business-date bound (a primary key probe).
_PROVIDER_ZONE = (
    "(SELECT p.time_zone FROM providers p "
    "WHERE p.organization_id = appointments.organization_id AND p.id = appointments.provider_id)"
)
_MAX_DURATION = timedelta(hours=schema.MAX_APPOINTMENT_HOURS)
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC) + _MAX_DURATION + _ZONE_MARGIN
_LATEST_DATE = date(9999, 12, 30)


@dataclass(frozen=True, slots=True)
class AppointmentFilter:
    # Sorted and distinct (the token scope is derived from these fields).
    provider_ids: tuple[str, ...] = ()
    client_id: str = ""
    service_id: str = ""
    statuses: tuple[str, ...] = ()
    # Overlapping [start, end) (either may be None).
    start: datetime | None = None
    end: datetime | None = None
    # Starting on a business date in [start_date, end_date] in the provider's zone.
    start_date: date | None = None
    end_date: date | None = None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def build_list_appointments_query(org_id: str, flt: AppointmentFilter, order: Order) -> ListQuery:
    query = ListQuery(source="appointments", columns=APPOINTMENT.columns, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    if len(flt.provider_ids) > 1:
        # A few providers of many: each one's rows apart, a page at most.
        query.partition_by("provider_id", flt.provider_ids, "uuid")
    else:
        query.one_of("provider_id", flt.provider_ids, "uuid")
    query.equals("client_id", flt.client_id)
    query.equals("service_id", flt.service_id)
    query.one_of("status", flt.statuses)
    if flt.start is not None:
        query.where(f"end_at > {query.param(flt.start)}")
        # The same as a bound of the index's start_at: nothing longer than
        # the longest appointment starts earlier and still overlaps.
        if flt.start > _EARLIEST:
            query.where(f"start_at > {query.param(flt.start - _MAX_DURATION)}")
    if flt.end is not None:
        query.where(f"start_at < {query.param(flt.end)}")
    # Business dates: a coarse start_at range (the index's), then the exact
    # local date of the start in the provider's zone (one primary-key probe
    # of providers per row in the coarse range). An instant's local date is
    # unambiguous, DST days and repeated or missing midnights included.
    local_date = f"(start_at AT TIME ZONE {_PROVIDER_ZONE})::date"
    if flt.start_date is not None:
        query.where(f"start_at >= {query.param(_midnight(flt.start_date) - _ZONE_MARGIN)}")
    if flt.end_date is not None and flt.end_date <= _LATEST_DATE:
        after = flt.end_date + timedelta(days=1)
        query.where(f"start_at < {query.param(_midnight(after) + _ZONE_MARGIN)}")
    if flt.start_date is not None and flt.end_date is not None:
        low, high = query.param(flt.start_date), query.param(flt.end_date)
        query.where(f"{local_date} BETWEEN {low} AND {high}")
    elif flt.start_date is not None:
        query.where(f"{local_date} >= {query.param(flt.start_date)}")
    elif flt.end_date is not None:
        query.where(f"{local_date} <= {query.param(flt.end_date)}")
    return query


APPOINTMENTS: Listing[AppointmentFilter] = Listing(
    name="appointments",
    orders=orders(
        ("start_time", (SortKey("start_at", KeyType.TIMESTAMP), SortKey("id", KeyType.UUID)))
    ),
    default_order="start_time",
    build=build_list_appointments_query,
)
