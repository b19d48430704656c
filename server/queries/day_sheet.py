"""What the day sheet (ScheduleService.GetProviderSchedule) reads, in two
statements whatever the number of providers and appointments. No protobuf.

1. :data:`DAY_HEADER_SQL`: one ``'p'`` row per requested provider (``ord`` =
   its place in the request; found or not, its zone and name), and the working-hours rows of
   the date (``calendar.HOURS_SQL``'s ``'w'`` / ``'o'`` rows, for
   booking.calendars_from_rows). The hours need no zone, so they come with
   the header instead of after it.
2. :data:`DAY_SQL`: for each (provider, day start, day end) - three parallel
   arrays ($2 provider ids, $3 starts, $4 ends, computed by server.scheduling
   from the header's zones, the same DST policy as availability) - the time
   off overlapping its day (``'t'`` rows, ``t_`` columns, through the time
   off GiST ``ix_time_off_org_provider_during``) and the appointments starting
   in it (``'a'`` rows, ``a_`` columns, every status, through
   ``ix_appointments_org_provider_start_at_id``) with their client, service
   and payments joined in the same statement: one lateral aggregate per
   appointment through ``ix_payments_org_appointment_id`` (the latest
   payment's status, the sum of the completed ones in the appointment's
   currency). Rows by provider, kind, start, id; each side read back by its
   table's column names through ``history.Prefixed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import asyncpg

from server.db.engine import Conn
from server.queries.appointments import APPOINTMENT
from server.queries.calendar import HOURS_SQL
from server.queries.schedules import TIME_OFF

__all__ = ["DAY_HEADER_SQL", "DAY_SQL", "day_header", "day_rows"]

DAY_HEADER_SQL = f"""
SELECT 'p' AS kind, r.id AS provider_id, NULL::smallint AS weekday,
       NULL::smallint AS start_minute, NULL::smallint AS end_minute, NULL::date AS d1,
       NULL::date AS d2, NULL::boolean AS closed, r.ord, p.id IS NOT NULL AS provider_found,
       p.time_zone, p.display_name
FROM unnest($2::uuid[]) WITH ORDINALITY AS r(id, ord)
LEFT JOIN LATERAL (
    SELECT id, time_zone, display_name FROM providers WHERE organization_id = $1 AND id = r.id
    LIMIT 1
) p ON true
UNION ALL
SELECT h.kind, h.provider_id, h.weekday, h.start_minute, h.end_minute, h.d1, h.d2, h.closed,
       NULL, NULL, NULL, NULL
FROM ({HOURS_SQL}) AS h
"""

_DAYS = (
    "unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) AS d(provider_id, day_start, day_end)"
)
_T = tuple(f"t_{c}" for c in TIME_OFF.columns)
_A = tuple(f"a_{c}" for c in APPOINTMENT.columns)
# The appointment's extras: the client's name ("given family", trimmed) and
# phone, the service's name, the latest payment's status (by created_at, then
# id; NULL when none), the completed payments' sum less their refunds, in its
# currency (0 when none).
_EXTRAS = ("client_name", "client_phone", "service_name", "payment_status", "amount_paid_minor")

DAY_SQL = f"""
SELECT 't' AS kind, t.provider_id AS pid, t.start_at AS at, t.id AS rid,
    {", ".join(f"t.{c} AS t_{c}" for c in TIME_OFF.columns)},
    {", ".join(f"NULL AS {c}" for c in (*_A, *_EXTRAS))}
FROM {_DAYS}
JOIN time_off t
    ON t.organization_id = $1 AND t.provider_id = d.provider_id
    AND t.during && tstzrange(d.day_start, d.day_end)
UNION ALL
SELECT 'a', a.provider_id, a.start_at, a.id,
    {", ".join(f"NULL AS {c}" for c in _T)},
    {", ".join(f"a.{c} AS a_{c}" for c in APPOINTMENT.columns)},
    btrim(c.given_name || ' ' || c.family_name),
    c.phone,
    s.name,
    pay.latest_status,
    pay.paid_minor
FROM {_DAYS}
JOIN appointments a
    ON a.organization_id = $1 AND a.provider_id = d.provider_id
    AND a.start_at >= d.day_start AND a.start_at < d.day_end
JOIN clients c ON c.organization_id = $1 AND c.id = a.client_id
JOIN services s ON s.organization_id = $1 AND s.id = a.service_id
CROSS JOIN LATERAL (
    SELECT
        (array_agg(p.status ORDER BY p.created_at DESC, p.id DESC))[1] AS latest_status,
        coalesce(
            sum(p.amount_minor - p.refunded_minor)
                FILTER (WHERE p.status = 'completed' AND p.currency = a.currency),
            0
        )::bigint AS paid_minor
    FROM payments p
    WHERE p.organization_id = $1 AND p.appointment_id = a.id
) pay
ORDER BY pid, kind DESC, at, rid
"""


async def day_header(
    conn: Conn, org_id: str, provider_ids: list[str], on: date
) -> list[asyncpg.Record]:
    """The 'p' rows (one per requested id, ``ord`` its place) and the date's
    hours rows, in no particular order."""
    return await conn.fetch(DAY_HEADER_SQL, org_id, provider_ids, on, on)


async def day_rows(
    conn: Conn, org_id: str, days: Sequence[tuple[str, datetime, datetime]]
) -> list[asyncpg.Record]:
    """Time off ('t') then appointments ('a') of each (provider, day start,
    day end), by provider."""
    return await conn.fetch(
        DAY_SQL, org_id, [d[0] for d in days], [d[1] for d in days], [d[2] for d in days]
    )
