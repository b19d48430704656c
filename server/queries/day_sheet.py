"""What the day sheet (ScheduleService.GetProviderSchedule) reads beyond the
calendar module's header and hours (server.queries.calendar): the time off
and the appointments of several providers, each over its own day.

A day is given per provider as the instants [day_start, day_end) of its
business date in its own zone (computed by server.scheduling, the same DST
policy as availability): three parallel arrays ($2 provider ids, $3 starts,
$4 ends) unnested into one row per provider, so a statement reads every
provider's day whatever their number. No protobuf.

- Time off overlapping a day, through the time off GiST
  (``ix_time_off_org_provider_during``), by provider, start, id.
- Appointments starting in a day (every status), through
  ``ix_appointments_org_provider_start_at_id`` (one range per provider), with
  their client, service and payments joined in the same statement: the
  payments of one appointment through ``ix_payments_org_appointment_id`` in
  one lateral aggregate (the latest one's status, the sum of the completed
  ones in the appointment's currency). By provider, start, id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from server.db.engine import Conn
from server.queries.appointments import APPOINTMENT
from server.queries.schedules import TIME_OFF

__all__ = ["DAY_APPOINTMENTS_SQL", "DAY_TIME_OFF_SQL", "day_appointments", "day_time_off"]

_DAYS = (
    "unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) AS d(provider_id, day_start, day_end)"
)

DAY_TIME_OFF_SQL = f"""
SELECT {", ".join(f"t.{c}" for c in TIME_OFF.columns)}
FROM {_DAYS}
JOIN time_off t
    ON t.organization_id = $1 AND t.provider_id = d.provider_id
    AND t.during && tstzrange(d.day_start, d.day_end)
ORDER BY t.provider_id, t.start_at, t.id
"""

# The appointment's columns (as every appointment read), then the client's
# name ("given family", trimmed) and phone, the service's name, the status of
# the latest payment (by created_at, then id; NULL when none) and the sum of
# the completed payments in the appointment's currency (0 when none).
DAY_APPOINTMENTS_SQL = f"""
SELECT {", ".join(f"a.{c}" for c in APPOINTMENT.columns)},
    btrim(c.given_name || ' ' || c.family_name) AS client_name,
    c.phone AS client_phone,
    s.name AS service_name,
    pay.latest_status AS payment_status,
    pay.paid_minor AS amount_paid_minor
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
            sum(p.amount_minor) FILTER (WHERE p.status = 'completed' AND p.currency = a.currency),
            0
        )::bigint AS paid_minor
    FROM payments p
    WHERE p.organization_id = $1 AND p.appointment_id = a.id
) pay
ORDER BY a.provider_id, a.start_at, a.id
"""


def _days(
    days: Sequence[tuple[str, datetime, datetime]],
) -> tuple[list[str], list[datetime], list[datetime]]:
    return [d[0] for d in days], [d[1] for d in days], [d[2] for d in days]


async def day_time_off(
    conn: Conn, org_id: str, days: Sequence[tuple[str, datetime, datetime]]
) -> list[asyncpg.Record]:
    """Time off of each (provider, day start, day end) overlapping its day."""
    return await conn.fetch(DAY_TIME_OFF_SQL, org_id, *_days(days))


async def day_appointments(
    conn: Conn, org_id: str, days: Sequence[tuple[str, datetime, datetime]]
) -> list[asyncpg.Record]:
    """Appointments of each (provider, day start, day end) starting in its day."""
    return await conn.fetch(DAY_APPOINTMENTS_SQL, org_id, *_days(days))
