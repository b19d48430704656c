"""A provider's schedule: weekly working hours, date overrides and time off.

Every schedule write first takes the provider's row with ``FOR NO KEY
UPDATE`` (:func:`lock_provider`), as bookings do (server.booking), so a
booking sees a schedule change whole or not at all, and two writes of one
provider take turns. Replaces are set-based: one
DELETE and one INSERT over ``unnest`` of column arrays, whatever the number of
rows. Reads of a schedule are one statement that also answers whether the
provider exists (and gives its zone).

Indexes: working_hours ``(organization_id, provider_id, weekday)``;
date_overrides ``(organization_id, provider_id, on_date)``; time_off
``(organization_id, provider_id, start_at, id)`` for ListTimeOff's order and
keyset (a range filter is bounded below through start_at: a time off is at
most :data:`MAX_TIME_OFF` long).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from server.db import schema
from server.db.engine import Conn
from server.errors import NotFound
from server.ids import uuid7
from server.queries._crud import Entity
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey, orders

__all__ = [
    "MAX_TIME_OFF",
    "TIME_OFF",
    "TIME_OFF_LIST",
    "OverrideRow",
    "TimeOffFilter",
    "WeeklyRule",
    "get_date_overrides",
    "get_working_hours",
    "lock_provider",
    "lock_provider_of_time_off",
    "replace_date_overrides",
    "replace_working_hours",
]

# The longest time off (CreateTimeOff refuses longer ones).
MAX_TIME_OFF = timedelta(days=366)

TIME_OFF = Entity.of(
    schema.time_off, "time_off", writable=("provider_id", "during", "reason"), hidden=("during",)
)


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    weekday: int  # ISO: 1 = Monday ... 7 = Sunday
    start_minute: int
    end_minute: int
    valid_from: date | None
    valid_to: date | None


@dataclass(frozen=True, slots=True)
class OverrideRow:
    """One row of a date's override: an interval, or the date closed (no minutes)."""

    on_date: date
    start_minute: int | None = None
    end_minute: int | None = None

    @property
    def closed(self) -> bool:
        return self.start_minute is None


# -- the provider ------------------------------------------------------------------

_LOCK_PROVIDER = (
    "SELECT time_zone FROM providers WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE"
)


async def lock_provider(conn: Conn, org_id: str, provider_id: str) -> str:
    """Lock the provider's row for a schedule write (bookings share it); its
    time zone. NotFound (PROVIDER_NOT_FOUND) when the tenant has no such provider."""
    zone = await conn.fetchval(_LOCK_PROVIDER, org_id, provider_id)
    if zone is None:
        raise NotFound.of("provider", provider_id)
    return str(zone)


def _provider_missing(rows: Sequence[asyncpg.Record], provider_id: str) -> None:
    if not rows:
        raise NotFound.of("provider", provider_id)


# -- weekly working hours ----------------------------------------------------------

_HOURS_COLUMNS = "id, weekday, start_minute, end_minute, valid_from, valid_to"
_HOURS_ORDER = "weekday, start_minute, valid_from NULLS FIRST, id"

_DELETE_HOURS = "DELETE FROM working_hours WHERE organization_id = $1 AND provider_id = $2"
_INSERT_HOURS = (
    "WITH ins AS (INSERT INTO working_hours (organization_id, id, provider_id, weekday, "
    "start_minute, end_minute, valid_from, valid_to) "
    "SELECT $1, u.id, $2, u.weekday, u.start_minute, u.end_minute, u.valid_from, u.valid_to "
    "FROM unnest($3::uuid[], $4::int2[], $5::int2[], $6::int2[], $7::date[], $8::date[]) "
    "AS u(id, weekday, start_minute, end_minute, valid_from, valid_to) "
    f"RETURNING {_HOURS_COLUMNS}) SELECT {_HOURS_COLUMNS} FROM ins ORDER BY {_HOURS_ORDER}"
)
_GET_HOURS = (
    "SELECT p.time_zone, w.id, w.weekday, w.start_minute, w.end_minute, w.valid_from, "
    "w.valid_to FROM providers p LEFT JOIN working_hours w "
    "ON w.organization_id = p.organization_id AND w.provider_id = p.id "
    "WHERE p.organization_id = $1 AND p.id = $2 "
    "ORDER BY w.weekday, w.start_minute, w.valid_from NULLS FIRST, w.id"
)


async def replace_working_hours(
    conn: Conn, org_id: str, provider_id: str, rules: Sequence[WeeklyRule]
) -> list[asyncpg.Record]:
    """Replace the provider's weekly rules (its row must be locked); the new
    rules as stored, in their order. Two statements whatever the number."""
    await conn.execute(_DELETE_HOURS, org_id, provider_id)
    if not rules:
        return []
    return await conn.fetch(
        _INSERT_HOURS,
        org_id,
        provider_id,
        [uuid7() for _ in rules],
        [r.weekday for r in rules],
        [r.start_minute for r in rules],
        [r.end_minute for r in rules],
        [r.valid_from for r in rules],
        [r.valid_to for r in rules],
    )


async def get_working_hours(
    conn: Conn, org_id: str, provider_id: str
) -> tuple[str, list[asyncpg.Record]]:
    """(the provider's time zone, its weekly rules in order); NotFound when absent."""
    rows = await conn.fetch(_GET_HOURS, org_id, provider_id)
    _provider_missing(rows, provider_id)
    return str(rows[0]["time_zone"]), [r for r in rows if r["id"] is not None]


# -- date overrides ----------------------------------------------------------------

_OVERRIDE_COLUMNS = "on_date, closed, start_minute, end_minute"
_OVERRIDE_ORDER = "on_date, start_minute NULLS FIRST, id"

_DELETE_OVERRIDES = (
    "DELETE FROM date_overrides WHERE organization_id = $1 AND provider_id = $2 "
    "AND on_date BETWEEN $3 AND $4"
)
_INSERT_OVERRIDES = (
    "WITH ins AS (INSERT INTO date_overrides (organization_id, id, provider_id, on_date, "
    "closed, start_minute, end_minute) "
    "SELECT $1, u.id, $2, u.on_date, u.closed, u.start_minute, u.end_minute "
    "FROM unnest($3::uuid[], $4::date[], $5::bool[], $6::int2[], $7::int2[]) "
    "AS u(id, on_date, closed, start_minute, end_minute) "
    f"RETURNING id, {_OVERRIDE_COLUMNS}) "
    f"SELECT {_OVERRIDE_COLUMNS} FROM ins ORDER BY {_OVERRIDE_ORDER}"
)
_GET_OVERRIDES = (
    "SELECT p.time_zone, d.on_date, d.closed, d.start_minute, d.end_minute "
    "FROM providers p LEFT JOIN date_overrides d "
    "ON d.organization_id = p.organization_id AND d.provider_id = p.id "
    "AND d.on_date BETWEEN $3 AND $4 "
    "WHERE p.organization_id = $1 AND p.id = $2 "
    "ORDER BY d.on_date, d.start_minute NULLS FIRST, d.id"
)


async def replace_date_overrides(
    conn: Conn,
    org_id: str,
    provider_id: str,
    first: date,
    last: date,
    rows: Sequence[OverrideRow],
) -> list[asyncpg.Record]:
    """Replace every override row dated first..last (inclusive; the provider's
    row must be locked); the new rows by date and start."""
    await conn.execute(_DELETE_OVERRIDES, org_id, provider_id, first, last)
    if not rows:
        return []
    return await conn.fetch(
        _INSERT_OVERRIDES,
        org_id,
        provider_id,
        [uuid7() for _ in rows],
        [r.on_date for r in rows],
        [r.closed for r in rows],
        [r.start_minute for r in rows],
        [r.end_minute for r in rows],
    )


async def get_date_overrides(
    conn: Conn, org_id: str, provider_id: str, first: date, last: date
) -> tuple[str, list[asyncpg.Record]]:
    """(the provider's time zone, its override rows dated first..last by date
    and start); NotFound when the provider is absent."""
    rows = await conn.fetch(_GET_OVERRIDES, org_id, provider_id, first, last)
    _provider_missing(rows, provider_id)
    return str(rows[0]["time_zone"]), [r for r in rows if r["on_date"] is not None]


# -- time off ----------------------------------------------------------------------


_LOCK_PROVIDER_OF_TIME_OFF = (
    "SELECT p.id FROM time_off t JOIN providers p "
    "ON p.organization_id = t.organization_id AND p.id = t.provider_id "
    "WHERE t.organization_id = $1 AND t.id = $2 FOR NO KEY UPDATE OF p"
)


async def lock_provider_of_time_off(conn: Conn, org_id: str, time_off_id: str) -> None:
    """Lock the provider of a time off for a schedule write (as
    :func:`lock_provider`); NotFound (TIME_OFF_NOT_FOUND) when there is no
    such time off."""
    if await conn.fetchval(_LOCK_PROVIDER_OF_TIME_OFF, org_id, time_off_id) is None:
        raise NotFound.of("time_off", time_off_id)


_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimeOffFilter:
    provider_id: str
    # Only time off overlapping [start, end); None = unbounded.
    start: datetime | None = None
    end: datetime | None = None


def build_list_time_off_query(org_id: str, flt: TimeOffFilter, order: Order) -> ListQuery:
    query = ListQuery(source="time_off", columns=TIME_OFF.columns, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    query.where(f"provider_id = {query.param(flt.provider_id)}")
    if flt.start is not None:
        query.where(f"end_at > {query.param(flt.start)}")
        # The same, as a bound of the index's start_at: nothing longer than
        # MAX_TIME_OFF starts earlier and still overlaps.
        if flt.start - _EARLIEST > MAX_TIME_OFF:
            query.where(f"start_at > {query.param(flt.start - MAX_TIME_OFF)}")
    if flt.end is not None:
        query.where(f"start_at < {query.param(flt.end)}")
    return query


TIME_OFF_LIST: Listing[TimeOffFilter] = Listing(
    name="time_off",
    orders=orders(
        ("start_time", (SortKey("start_at", KeyType.TIMESTAMP), SortKey("id", KeyType.UUID)))
    ),
    default_order="start_time",
    build=build_list_time_off_query,
)
