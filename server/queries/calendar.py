"""What the booking rules read: the service, the policy and the providers
(one header statement), and the providers' calendars (one statement: weekly
rules, date overrides, time off and blocking appointments, UNION ALL with a
``kind`` column). No protobuf; the rules themselves are server.booking and
server.scheduling.

Range conditions are written so that the indexes made for them serve them:
``occupied && $range`` with the exclusion constraint's own status predicate
(the GiST ``ex_appointments_no_overlap``), ``during && $range`` on the time
off GiST, (organization_id, provider_id, ...) btrees for hours and overrides.
"""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from server.db.engine import Conn
from server.db.schema import BLOCKING_SQL

__all__ = [
    "BOOKING_HEADER_SQL",
    "CALENDAR_SQL",
    "HOURS_SQL",
    "LOCK_PROVIDER_SQL",
    "PROVIDERS_HEADER_SQL",
    "booking_header",
    "calendar_rows",
    "lock_provider",
    "providers_header",
]


# A booking write takes its provider's row FOR NO KEY UPDATE in a statement of
# its own, BEFORE it reads anything. Bookings of one provider take turns (two
# concurrent inserts of overlapping times would otherwise wait for each other
# on the exclusion constraint until PostgreSQL's deadlock detector, a second
# later, failed one), and a schedule or offering write (same lock) is seen
# whole. Bookings of other providers never wait. A statement of its own: a
# statement that waits for a row lock keeps the snapshot it started with
# (READ COMMITTED), so a header that locked and read in one statement would
# read the offering, service and schedule as they were before the write it
# waited for.
LOCK_PROVIDER_SQL = (
    "SELECT 1 FROM providers WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE"
)

# The service with its policy, one provider with its offering, whether an
# excluded appointment ($4) and a client ($5) exist. Always one row (an
# unknown organization reads as unknown provider and service).
BOOKING_HEADER_SQL = """
WITH p AS (
    SELECT id, active, time_zone FROM providers
    WHERE organization_id = $1 AND id = $2
)
SELECT
    p.id IS NOT NULL AS provider_found,
    p.active AS provider_active,
    p.time_zone,
    s.id IS NOT NULL AS service_found,
    s.active AS service_active,
    COALESCE(f.duration_minutes, s.duration_minutes) AS duration_minutes,
    s.buffer_before_minutes,
    s.buffer_after_minutes,
    COALESCE(f.price_minor, s.price_minor) AS price_minor,
    COALESCE(f.currency, s.currency) AS currency,
    COALESCE(s.min_notice_minutes, o.min_notice_minutes) AS min_notice_minutes,
    COALESCE(s.booking_horizon_days, o.booking_horizon_days) AS booking_horizon_days,
    f.provider_id IS NOT NULL AS offered,
    ($4::uuid IS NULL OR EXISTS (
        SELECT 1 FROM appointments x WHERE x.organization_id = $1 AND x.id = $4
    )) AS excluded_found,
    ($5::uuid IS NULL OR EXISTS (
        SELECT 1 FROM clients c WHERE c.organization_id = $1 AND c.id = $5
    )) AS client_found
FROM (SELECT 1) AS one
LEFT JOIN organizations o ON o.id = $1
LEFT JOIN services s ON s.organization_id = o.id AND s.id = $3
LEFT JOIN p ON true
LEFT JOIN offerings f
    ON f.organization_id = o.id AND f.provider_id = p.id AND f.service_id = s.id
"""

# The service with its policy (one row, or none for an unknown service).
# Then one row per requested provider, in request order.
# (LATERAL ... LIMIT 1, a subquery the planner keeps: one primary-key probe
# per requested id, also in the generic plan a prepared statement may switch
# to, which cannot know how many ids $3 holds and would otherwise hash the
# tenant's providers and offerings whole.)
PROVIDERS_HEADER_SQL = """
SELECT
    0 AS ord,
    NULL::uuid AS provider_id,
    s.active AS service_active,
    s.duration_minutes,
    s.buffer_before_minutes,
    s.buffer_after_minutes,
    COALESCE(s.min_notice_minutes, o.min_notice_minutes) AS min_notice_minutes,
    COALESCE(s.booking_horizon_days, o.booking_horizon_days) AS booking_horizon_days,
    NULL::boolean AS provider_found,
    NULL::boolean AS provider_active,
    NULL::text AS time_zone,
    NULL::boolean AS offered,
    NULL::integer AS offering_duration_minutes
FROM organizations o
JOIN services s ON s.organization_id = o.id AND s.id = $2
WHERE o.id = $1
UNION ALL
SELECT
    r.ord,
    r.id,
    NULL, NULL, NULL, NULL, NULL, NULL,
    p.id IS NOT NULL,
    p.active,
    p.time_zone,
    f.provider_id IS NOT NULL,
    f.duration_minutes
FROM unnest($3::uuid[]) WITH ORDINALITY AS r(id, ord)
LEFT JOIN LATERAL (
    SELECT id, active, time_zone FROM providers WHERE organization_id = $1 AND id = r.id
    LIMIT 1
) p ON true
LEFT JOIN LATERAL (
    SELECT provider_id, duration_minutes FROM offerings
    WHERE organization_id = $1 AND provider_id = p.id AND service_id = $2
    LIMIT 1
) f ON true
ORDER BY ord
"""

# Working-hours rows of the providers $2 of organization $1: kind 'w' weekly
# rules valid somewhere in dates [$3, $4]; 'o' overrides on those dates (the
# first part of CALENDAR_SQL; the day sheet reads them with its providers).
HOURS_SQL = """
SELECT 'w' AS kind, provider_id, NULL::uuid AS id, weekday, start_minute, end_minute,
       valid_from AS d1, valid_to AS d2, NULL::boolean AS closed,
       NULL::timestamptz AS t1, NULL::timestamptz AS t2,
       NULL::timestamptz AS t3, NULL::timestamptz AS t4
FROM working_hours
WHERE organization_id = $1 AND provider_id = ANY($2::uuid[])
  AND (valid_from IS NULL OR valid_from <= $4::date)
  AND (valid_to IS NULL OR valid_to >= $3::date)
UNION ALL
SELECT 'o', provider_id, NULL, NULL, start_minute, end_minute, on_date, NULL, closed,
       NULL, NULL, NULL, NULL
FROM date_overrides
WHERE organization_id = $1 AND provider_id = ANY($2::uuid[])
  AND on_date BETWEEN $3::date AND $4::date
"""

# Calendar rows of the providers $2 of organization $1: HOURS_SQL's, then 't'
# time off and 'a' blocking appointments (other than $6) overlapping $5.
CALENDAR_SQL = f"""{HOURS_SQL}UNION ALL
SELECT 't', provider_id, id, NULL, NULL, NULL, NULL, NULL, NULL,
       lower(during), upper(during), NULL, NULL
FROM time_off
WHERE organization_id = $1 AND provider_id = ANY($2::uuid[]) AND during && $5::tstzrange
UNION ALL
SELECT 'a', provider_id, id, NULL, NULL, NULL, NULL, NULL, NULL,
       lower(during), upper(during), lower(occupied), upper(occupied)
FROM appointments
WHERE organization_id = $1 AND provider_id = ANY($2::uuid[])
  AND {BLOCKING_SQL} AND occupied && $5::tstzrange
  AND ($6::uuid IS NULL OR id <> $6::uuid)
"""


async def lock_provider(conn: Conn, org_id: str, provider_id: str) -> bool:
    """Take the provider's row FOR NO KEY UPDATE (see LOCK_PROVIDER_SQL); False when
    the tenant has no such provider."""
    return await conn.fetchval(LOCK_PROVIDER_SQL, org_id, provider_id) is not None


async def booking_header(
    conn: Conn,
    org_id: str,
    provider_id: str,
    service_id: str,
    exclude_appointment_id: str | None,
    client_id: str | None = None,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        BOOKING_HEADER_SQL, org_id, provider_id, service_id, exclude_appointment_id, client_id
    )
    assert row is not None  # the statement always returns its one row
    return row


async def providers_header(
    conn: Conn, org_id: str, service_id: str, provider_ids: list[str]
) -> list[asyncpg.Record]:
    """The service's row (none when unknown), then one row per requested provider."""
    return await conn.fetch(PROVIDERS_HEADER_SQL, org_id, service_id, provider_ids)


async def calendar_rows(
    conn: Conn,
    org_id: str,
    provider_ids: list[str],
    first_date: date,
    last_date: date,
    busy_from: datetime,
    busy_to: datetime,
    exclude_appointment_id: str | None = None,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        CALENDAR_SQL,
        org_id,
        provider_ids,
        first_date,
        last_date,
        asyncpg.Range(busy_from, busy_to),
        exclude_appointment_id,
    )
