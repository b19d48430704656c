"""An oracle of the rollup tables: what every rollup of a tenant must hold,
computed from scratch with plain GROUP BY statements over the raw rows
(appointments, payments, refunds, and the providers for their zones).

Written apart from server/queries/rollups.py on purpose (none of its code or
SQL): a second, plain computation from the definitions in summaries.proto.

- An appointment belongs to its business date: the local date of its start in
  its provider's zone. A payment belongs to the local date of its creation,
  a refund to that of its own creation, both in the zone of the provider of
  the payment's appointment (located through it: provider and service);
  payments without an appointment only count in client_totals.
- Booked = pending, confirmed, completed: expected_minor is their price,
  booked_minutes their length (whole minutes, rounded down).
  completed_minor is the price of the completed ones.
- paid_minor / payments: COMPLETED and REFUNDED payments (a payment refunded
  later still brought its money in); refunded_minor / refunds: the refunds.
- A visit is a COMPLETED appointment; a client's first visit is the one with
  the earliest start (ties: the earlier business date), dated by its business
  date. Organization rows are spread over 8 shards by a byte of the provider's
  (new clients: the client's) id.

:func:`rollup_differences` compares the stored rollups with the oracle,
table by table; an all-zero row of an additive table equals an absent one,
and client_visits.replaced_first_visit_date (write bookkeeping) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

__all__ = [
    "ADDITIVE",
    "IGNORED_COLUMNS",
    "KEYS",
    "TableDiff",
    "describe",
    "expected_rollups",
    "rollup_differences",
    "stored_rollups",
]

# Business dates of every raw row, and the measures each row brings.
_RAW = """
WITH appt AS (
    SELECT a.id, a.provider_id, a.service_id, a.client_id, a.status, a.price_minor,
           a.currency, a.start_at, a.end_at,
           (a.start_at AT TIME ZONE pr.time_zone)::date AS day
    FROM appointments a
    JOIN providers pr ON pr.organization_id = a.organization_id AND pr.id = a.provider_id
    WHERE a.organization_id = $1
), pay AS (
    SELECT p.id, p.client_id, p.amount_minor, p.currency, p.status,
           appt.provider_id, appt.service_id,
           (p.created_at AT TIME ZONE pr.time_zone)::date AS day
    FROM payments p
    LEFT JOIN appt ON appt.id = p.appointment_id
    LEFT JOIN providers pr ON pr.organization_id = p.organization_id
                          AND pr.id = appt.provider_id
    WHERE p.organization_id = $1
), ref AS (
    SELECT r.id, pay.client_id, r.amount_minor, r.currency, pay.provider_id, pay.service_id,
           (r.created_at AT TIME ZONE pr.time_zone)::date AS day
    FROM refunds r
    JOIN pay ON pay.id = r.payment_id
    LEFT JOIN providers pr ON pr.organization_id = r.organization_id
                          AND pr.id = pay.provider_id
    WHERE r.organization_id = $1
), measured AS (
    SELECT provider_id, service_id, client_id, day, currency,
           (status = 'pending')::int AS pending,
           (status = 'confirmed')::int AS confirmed,
           (status = 'completed')::int AS completed,
           (status = 'cancelled')::int AS cancelled,
           (status = 'no_show')::int AS no_show,
           CASE WHEN status IN ('pending', 'confirmed', 'completed')
                THEN floor(extract(epoch FROM end_at - start_at) / 60)::bigint ELSE 0 END
               AS booked_minutes,
           CASE WHEN status IN ('pending', 'confirmed', 'completed')
                THEN price_minor ELSE 0 END AS expected_minor,
           CASE WHEN status = 'completed' THEN price_minor ELSE 0 END AS completed_minor,
           0::bigint AS paid_minor, 0 AS payments, 0::bigint AS refunded_minor, 0 AS refunds
    FROM appt
    UNION ALL
    SELECT provider_id, service_id, client_id, day, currency, 0, 0, 0, 0, 0, 0, 0, 0,
           CASE WHEN status IN ('completed', 'refunded') THEN amount_minor ELSE 0 END,
           (status IN ('completed', 'refunded'))::int, 0, 0
    FROM pay
    UNION ALL
    SELECT provider_id, service_id, client_id, day, currency, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
           amount_minor, 1
    FROM ref
), visit AS (
    SELECT client_id, provider_id, day, start_at FROM appt WHERE status = 'completed'
)
"""

_PERIOD_SUMS = """
    sum(pending) AS pending, sum(confirmed) AS confirmed, sum(completed) AS completed,
    sum(cancelled) AS cancelled, sum(no_show) AS no_show,
    sum(booked_minutes) AS booked_minutes, sum(expected_minor) AS expected_minor,
    sum(completed_minor) AS completed_minor, sum(paid_minor) AS paid_minor,
    sum(payments) AS payments, sum(refunded_minor) AS refunded_minor, sum(refunds) AS refunds
"""


def _shard(column: str) -> str:
    return f"get_byte(uuid_send({column}), 15) % 8"


_ORACLE: dict[str, str] = {
    "provider_day_totals": f"""
        SELECT provider_id, day AS business_date, currency, {_PERIOD_SUMS}
        FROM measured WHERE provider_id IS NOT NULL GROUP BY provider_id, day, currency""",
    "provider_month_totals": f"""
        SELECT provider_id, date_trunc('month', day)::date AS month, currency, {_PERIOD_SUMS}
        FROM measured WHERE provider_id IS NOT NULL
        GROUP BY provider_id, date_trunc('month', day)::date, currency""",
    "service_day_totals": f"""
        SELECT service_id, day AS business_date, currency, {_PERIOD_SUMS}
        FROM measured WHERE service_id IS NOT NULL GROUP BY service_id, day, currency""",
    "organization_day_totals": f"""
        SELECT day AS business_date, currency, {_shard("provider_id")} AS shard, {_PERIOD_SUMS}
        FROM measured WHERE provider_id IS NOT NULL
        GROUP BY day, currency, {_shard("provider_id")}""",
    "client_totals": """
        SELECT client_id, currency,
               sum(completed_minor) AS charged_minor, sum(paid_minor) AS paid_minor,
               sum(payments) AS payments, sum(refunded_minor) AS refunded_minor,
               sum(refunds) AS refunds,
               sum(completed_minor) - sum(paid_minor) + sum(refunded_minor) AS balance_minor,
               sum(paid_minor) - sum(refunded_minor) AS lifetime_value_minor
        FROM measured GROUP BY client_id, currency""",
    "client_visits": """
        SELECT DISTINCT ON (client_id) client_id,
               count(*) OVER w AS visits,
               min(start_at) OVER w AS first_visit_at,
               max(start_at) OVER w AS last_visit_at,
               day AS first_visit_date
        FROM visit
        WINDOW w AS (PARTITION BY client_id)
        ORDER BY client_id, start_at, day""",
    "organization_day_new_clients": f"""
        SELECT first.day AS business_date, {_shard("first.client_id")} AS shard,
               count(*) AS new_clients
        FROM (SELECT DISTINCT ON (client_id) client_id, day FROM visit
              ORDER BY client_id, start_at, day) AS first
        GROUP BY first.day, {_shard("first.client_id")}""",
    "provider_client_visits": """
        SELECT provider_id, client_id, count(*) AS visits, min(day) AS first_visit_date
        FROM visit GROUP BY provider_id, client_id""",
    "provider_day_clients": """
        SELECT provider_id, day AS business_date, client_id, count(*) AS visits
        FROM visit GROUP BY provider_id, day, client_id""",
}

# The key of each table (after organization_id).
KEYS: dict[str, tuple[str, ...]] = {
    "provider_day_totals": ("provider_id", "business_date", "currency"),
    "provider_month_totals": ("provider_id", "month", "currency"),
    "service_day_totals": ("service_id", "business_date", "currency"),
    "organization_day_totals": ("business_date", "currency", "shard"),
    "organization_day_new_clients": ("business_date", "shard"),
    "client_totals": ("client_id", "currency"),
    "client_visits": ("client_id",),
    "provider_client_visits": ("provider_id", "client_id"),
    "provider_day_clients": ("provider_id", "business_date", "client_id"),
}
# Tables whose measures are all sums: a row of zeros equals no row.
ADDITIVE = frozenset(
    {
        "provider_day_totals",
        "provider_month_totals",
        "service_day_totals",
        "organization_day_totals",
        "organization_day_new_clients",
        "client_totals",
        "provider_day_clients",
    }
)
# Write bookkeeping, not a figure.
IGNORED_COLUMNS = {"client_visits": frozenset({"replaced_first_visit_date"})}

Row = dict[str, Any]
Rows = dict[tuple[Any, ...], Row]


def _plain(value: Any) -> Any:
    # uuid.UUID -> str (readable diffs), smallint/int/Decimal sums -> int.
    if value is None or isinstance(value, (int, str)):
        return value
    if type(value).__name__ == "UUID":
        return str(value)
    if type(value).__name__ == "Decimal":
        return int(value)
    return value


def _keyed(table: str, records: list[asyncpg.Record]) -> Rows:
    keys = KEYS[table]
    ignored = IGNORED_COLUMNS.get(table, frozenset()) | {"organization_id"}
    out: Rows = {}
    for record in records:
        row = {k: _plain(v) for k, v in record.items() if k not in ignored}
        key = tuple(row.pop(k) for k in keys)
        assert key not in out, (table, key)
        out[key] = row
    return out


async def expected_rollups(conn: asyncpg.Connection, org: str) -> dict[str, Rows]:
    """Every rollup table's rows of ``org`` as the raw rows say (call it in a
    REPEATABLE READ transaction for one snapshot)."""
    return {
        table: _keyed(table, await conn.fetch(_RAW + sql, org)) for table, sql in _ORACLE.items()
    }


async def stored_rollups(conn: asyncpg.Connection, org: str) -> dict[str, Rows]:
    """Every rollup table's rows of ``org`` as stored."""
    return {
        table: _keyed(
            table, await conn.fetch(f"SELECT * FROM {table} WHERE organization_id = $1", org)
        )
        for table in KEYS
    }


@dataclass
class TableDiff:
    """A table's rows the oracle has and the table lacks (missing), the other
    way round (extra), and rows of one key that differ (expected, stored)."""

    missing: Rows = field(default_factory=dict)
    extra: Rows = field(default_factory=dict)
    different: dict[tuple[Any, ...], tuple[Row, Row]] = field(default_factory=dict)


def _zero(row: Row) -> bool:
    return all(value == 0 for value in row.values())


def compare(table: str, expected: Rows, stored: Rows) -> TableDiff:
    diff = TableDiff()
    for key in expected.keys() | stored.keys():
        want, have = expected.get(key), stored.get(key)
        if want is not None and have is not None:
            if want != have:
                diff.different[key] = (want, have)
        elif want is not None:
            if not (table in ADDITIVE and _zero(want)):
                diff.missing[key] = want
        elif have is not None and not (table in ADDITIVE and _zero(have)):
            diff.extra[key] = have
    return diff


async def rollup_differences(conn: asyncpg.Connection, org: str) -> dict[str, TableDiff]:
    """The tables whose rows of ``org`` differ from the oracle, and how
    (empty: every rollup is exact). Raw rows and rollups are read in one
    snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        expected = await expected_rollups(conn, org)
        stored = await stored_rollups(conn, org)
    out = {}
    for table in KEYS:
        diff = compare(table, expected[table], stored[table])
        if diff.missing or diff.extra or diff.different:
            out[table] = diff
    return out


def describe(differences: dict[str, TableDiff], limit: int = 6) -> str:
    """A readable account of the differences (a few rows per table)."""
    lines = []
    for table, diff in differences.items():
        lines.append(
            f"{table}: {len(diff.missing)} missing, {len(diff.extra)} extra, "
            f"{len(diff.different)} different"
        )
        for key, row in list(diff.missing.items())[:limit]:
            lines.append(f"  missing {key}: {row}")
        for key, row in list(diff.extra.items())[:limit]:
            lines.append(f"  extra   {key}: {row}")
        for key, (want, have) in list(diff.different.items())[:limit]:
            changed = {
                c: (want.get(c), have.get(c))
                for c in want.keys() | have.keys()
                if want.get(c) != have.get(c)
            }
            lines.append(f"  differs {key}: (expected, stored) {changed}")
    return "\n".join(lines)
