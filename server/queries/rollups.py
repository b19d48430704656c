"""The rollups: derived tables the summaries read, kept exact by every write.

Why explicit statements and not triggers (migration 0006 says it too):

- one statement per write transaction, at its end, applies the write's whole
  delta to every rollup table (data-modifying CTEs): one round trip, and the
  cost is visible where the write is;
- set-based: a bulk import applies the delta of a whole batch in the same
  statement (a row trigger would run per row; a statement trigger's
  transition tables are not supported on distributed tables);
- a Citus-distributed schema (every table keyed by organization_id) routes
  the statement to the tenant's shard; triggers on distributed tables need
  ``citus.enable_unsafe_triggers``.

The price is that every write path must call :func:`apply`; the writes do it
through one function each, the exactness test walks every write RPC, and
``booking-data rollups check`` reports any drift from the raw rows.

A write describes what it changed as **facts**: the before image of each
changed raw row with sign -1 and its after image with sign +1 (an appointment,
a payment, a refund). :func:`apply` turns them into signed measures (an
appointment's status count, booked minutes and price; a completed payment's
amount; a refund's amount; a visit) located by provider, service, client,
business date and currency, then upserts the grouped deltas into each table.

Concurrency: every rollup row is changed by ``INSERT ... ON CONFLICT DO
UPDATE SET x = t.x + excluded.x``, which locks the row and adds to its latest
committed value: concurrent writers never lose an update. Each table's rows
are written in key order and the tables in the order PostgreSQL runs the
statement's CTEs (one order for one statement text: every rollup writer uses
this module's statement), and a write transaction applies its facts once, at
its end, after its raw rows: locks are always taken in the same order, so
rollup rows cannot deadlock.
(Deadlocks between raw rows are retried inside the server; see
server.interceptors.)

Non-additive measures: a visit (a COMPLETED appointment) is final, so the
first and last visit only move by ``least``/``greatest``; a before image of a
completed appointment is a programming error (:func:`apply` refuses it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg

from server.db.engine import Conn
from server.db.schema import BLOCKING_STATUSES, ORGANIZATION_SHARDS, PERIOD_MEASURES
from server.errors import OutOfRange

__all__ = [
    "CLIENT_VISITS",
    "FACT_COLUMNS",
    "GROUPS",
    "TABLES",
    "Fact",
    "Rollup",
    "apply",
    "apply_sql",
    "appointment_facts",
    "fact_params",
    "groups_of",
    "measures_sql",
    "moved_payment_facts",
    "payment_facts",
    "raw_facts_sql",
    "refund_fact",
    "shard_sql",
    "total_out_of_range",
]

PAID_STATUSES = ("completed", "refunded")


def total_out_of_range() -> OutOfRange:
    """A running total past int64: the write is refused (nothing written)."""
    return OutOfRange(
        "the write would take a running total (of a client, provider, service or day) past "
        "9223372036854775807 minor units, the most a summary can carry; nothing was written",
        reason="TOTAL_OUT_OF_RANGE",
    )


@dataclass(frozen=True, slots=True)
class Fact:
    """One raw row's image: ``kind`` appointment | payment | refund; ``sign``
    +1 (the row as it is now) or -1 (as it was)."""

    kind: str
    sign: int
    client_id: str
    amount: int
    currency: str
    # appointments
    provider_id: str | None = None
    service_id: str | None = None
    status: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    # payments and refunds: their appointment (for its provider and service,
    # unless given above)
    appointment_id: str | None = None
    at: datetime | None = None


# The columns of a fact source, in order: apply() unnests them from
# parameters; a repair selects them from the raw tables.
FACT_COLUMNS = (
    ("kind", "text"),
    ("sign", "int"),
    ("provider_id", "uuid"),
    ("service_id", "uuid"),
    ("client_id", "uuid"),
    ("appointment_id", "uuid"),
    ("status", "text"),
    ("amount", "bigint"),
    ("currency", "text"),
    ("start_at", "timestamptz"),
    ("end_at", "timestamptz"),
    ("at", "timestamptz"),
)


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def _images(
    before: asyncpg.Record | None, after: asyncpg.Record | None
) -> list[tuple[int, asyncpg.Record]]:
    """(sign, row) of a write's before (-1) and after (+1) images that exist."""
    return [(sign, row) for sign, row in ((-1, before), (1, after)) if row is not None]


def appointment_facts(before: asyncpg.Record | None, after: asyncpg.Record | None) -> list[Fact]:
    """The facts of an appointment write: its row before (None for a booking)
    and after."""
    return [
        Fact(
            kind="appointment",
            sign=sign,
            client_id=str(row["client_id"]),
            amount=row["price_minor"],
            currency=row["currency"],
            provider_id=str(row["provider_id"]),
            service_id=str(row["service_id"]),
            status=row["status"],
            start_at=row["during"].lower,
            end_at=row["during"].upper,
        )
        for sign, row in _images(before, after)
    ]


def payment_facts(before: asyncpg.Record | None, after: asyncpg.Record | None) -> list[Fact]:
    """The facts of a payment write (its refunds are refund_fact's)."""
    return [
        Fact(
            kind="payment",
            sign=sign,
            client_id=str(row["client_id"]),
            amount=row["amount_minor"],
            currency=row["currency"],
            status=row["status"],
            appointment_id=_s(row["appointment_id"]),
            at=row["created_at"],
        )
        for sign, row in _images(before, after)
    ]


def refund_fact(refund: asyncpg.Record, payment: asyncpg.Record) -> Fact:
    """A new refund of ``payment``."""
    return Fact(
        kind="refund",
        sign=1,
        client_id=str(payment["client_id"]),
        amount=refund["amount_minor"],
        currency=refund["currency"],
        appointment_id=_s(payment["appointment_id"]),
        at=refund["created_at"],
    )


# An appointment's payments, locked FOR SHARE: a refund (which locks its
# payment FOR UPDATE) in flight is waited for, one to come waits for the move.
_LOCK_PAID_FOR_SQL = """
SELECT 1 FROM payments WHERE organization_id = $1 AND appointment_id = $2 FOR SHARE
"""
# Its payments and refunds (they count for its provider): read in a statement
# of its own, after the lock wait, so that a refund committed meanwhile is seen.
_PAID_FOR_SQL = """
SELECT 'payment' AS kind, p.client_id, p.amount_minor AS amount, p.currency, p.status,
       p.created_at AS at
FROM payments p WHERE p.organization_id = $1 AND p.appointment_id = $2
UNION ALL
SELECT 'refund', p.client_id, r.amount_minor, r.currency, NULL, r.created_at
FROM payments p
JOIN refunds r ON r.organization_id = p.organization_id AND r.payment_id = p.id
WHERE p.organization_id = $1 AND p.appointment_id = $2
"""


async def moved_payment_facts(
    conn: Conn, org_id: str, before: asyncpg.Record, after: asyncpg.Record
) -> list[Fact]:
    """An appointment rescheduled to another provider takes its payments and
    refunds with it (they count for its provider, dated in its zone): their
    facts under the old provider (-1) and the new one (+1). None when the
    provider stays. A refund racing the move either committed before the
    payments' lock was granted (then it is read and moved) or waits for the
    move and is located through the new provider. A payment recorded meanwhile
    waits at its foreign-key check for the move's FOR UPDATE of the
    appointment (_crud.lock_row), then is located through the new provider."""
    if before["provider_id"] == after["provider_id"]:
        return []
    await conn.execute(_LOCK_PAID_FOR_SQL, org_id, after["id"])
    facts = []
    for row in await conn.fetch(_PAID_FOR_SQL, org_id, after["id"]):
        for sign, provider in ((-1, before["provider_id"]), (1, after["provider_id"])):
            facts.append(
                Fact(
                    kind=row["kind"],
                    sign=sign,
                    client_id=str(row["client_id"]),
                    amount=row["amount"],
                    currency=row["currency"],
                    provider_id=str(provider),
                    service_id=str(after["service_id"]),
                    status=row["status"],
                    at=row["at"],
                )
            )
    return facts


def shard_sql(uuid_expr: str) -> str:
    """The organization-table shard of a row (stable: a byte of the id)."""
    return f"(get_byte(uuid_send({uuid_expr}), 15) % {ORGANIZATION_SHARDS})::smallint"


def _in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def measures_sql(facts: str, org: str = "$1", probe: bool = False) -> str:
    """CTEs ``located`` and ``m`` over a fact source ``facts`` (a CTE name):
    each fact located (provider, service: a payment's or refund's through its
    appointment; business date in the provider's zone) and turned into signed
    measures. A repair runs the same over facts selected from the raw rows.

    ``probe``: each fact's appointment and provider is one primary-key probe
    (``LEFT JOIN LATERAL ... LIMIT 1``), for a write's few facts: a generic
    plan of plain joins, not knowing how few there are, hashes the tenant's
    providers (0.4 ms a write with 1,000 providers). A repair's many facts
    join (hash) instead."""
    booked = _in("status", BLOCKING_STATUSES)
    paid = _in("status", PAID_STATUSES)
    appointment = "kind = 'appointment'"
    counts = ",\n        ".join(
        f"sign * ({appointment} AND status = '{s}')::int AS {s}"
        for s in ("pending", "confirmed", "completed", "cancelled", "no_show")
    )
    if probe:
        joins = f"""LEFT JOIN LATERAL (
        SELECT provider_id, service_id FROM appointments
        WHERE organization_id = {org} AND id = f.appointment_id LIMIT 1
    ) a ON true
    LEFT JOIN LATERAL (
        SELECT time_zone FROM providers
        WHERE organization_id = {org} AND id = coalesce(f.provider_id, a.provider_id) LIMIT 1
    ) p ON true"""
    else:
        joins = f"""LEFT JOIN appointments a
      ON f.appointment_id IS NOT NULL AND a.organization_id = {org} AND a.id = f.appointment_id
    LEFT JOIN providers p
      ON p.organization_id = {org} AND p.id = coalesce(f.provider_id, a.provider_id)"""
    return f"""located AS (
    SELECT f.kind, f.sign, f.status, f.amount, f.currency, f.client_id, f.start_at, f.end_at,
           coalesce(f.provider_id, a.provider_id) AS provider_id,
           coalesce(f.service_id, a.service_id) AS service_id,
           (coalesce(f.start_at, f.at) AT TIME ZONE p.time_zone)::date AS business_date
    FROM {facts} f
    {joins}
), m AS (
    SELECT provider_id, service_id, client_id, business_date, currency, start_at,
        {counts},
        CASE WHEN {appointment} AND {booked}
            THEN sign * (extract(epoch FROM end_at - start_at)::bigint / 60) ELSE 0 END
            AS booked_minutes,
        CASE WHEN {appointment} AND {booked} THEN sign * amount ELSE 0 END AS expected_minor,
        CASE WHEN {appointment} AND status = 'completed' THEN sign * amount ELSE 0 END
            AS completed_minor,
        CASE WHEN kind = 'payment' AND {paid} THEN sign * amount ELSE 0 END AS paid_minor,
        sign * (kind = 'payment' AND {paid})::int AS payments,
        CASE WHEN kind = 'refund' THEN sign * amount ELSE 0 END AS refunded_minor,
        sign * (kind = 'refund')::int AS refunds,
        sign * ({appointment} AND status = 'completed')::int AS visit
    FROM located
)"""


@dataclass(frozen=True, slots=True)
class Rollup:
    """A rollup table as a GROUP BY over ``m``: its key columns (name, SQL
    expression over m), its measures (name, aggregate over m, how a delta
    combines with the stored value: "sum", "min", "max" or "pair", a pair
    kept with its instant), and which rows of m it takes."""

    table: str
    keys: tuple[tuple[str, str], ...]
    measures: tuple[tuple[str, str, str], ...]
    where: str

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def grouped_sql(self, org: str = "$1", where: str = "TRUE") -> str:
        """The rollup's rows (or deltas) over ``m`` (those matching ``where``
        too): one per key, all-zero sums left out."""
        keys = ", ".join(f"{expr} AS {name}" for name, expr in self.keys)
        measures = ", ".join(f"{agg} AS {name}" for name, agg, _ in self.measures)
        having = " OR ".join(f"{agg} <> 0" for name, agg, how in self.measures if how == "sum")
        group = ", ".join(str(i + 2) for i in range(len(self.keys)))
        return (
            f"SELECT {org}::uuid AS organization_id, {keys}, {measures} FROM m "
            f"WHERE {self.where} AND ({where}) GROUP BY {group} HAVING {having}"
        )

    def combine_sql(self, stored: str = "t", delta: str = "excluded") -> str:
        sets = []
        for name, _, how in self.measures:
            if how == "sum":
                sets.append(f"{name} = {stored}.{name} + {delta}.{name}")
            elif how == "min":
                sets.append(f"{name} = least({stored}.{name}, {delta}.{name})")
            elif how == "max":
                sets.append(f"{name} = greatest({stored}.{name}, {delta}.{name})")
        return ", ".join(sets)

    def upsert_sql(self, source: str, returning: str = "") -> str:
        columns = ("organization_id", *self.key_names, *(n for n, _, _ in self.measures))
        key = ", ".join(("organization_id", *self.key_names))
        return (
            f"INSERT INTO {self.table} AS t ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM ({source}) AS d ORDER BY {key} "
            f"ON CONFLICT ({key}) DO UPDATE SET {self.combine_sql()}{returning}"
        )


def _sums(
    names: Iterable[str], source: dict[str, str] | None = None
) -> tuple[tuple[str, str, str], ...]:
    source = source or {}
    return tuple((n, f"sum({source.get(n, n)})", "sum") for n in names)


_PERIOD = _sums(PERIOD_MEASURES)
_MONTH = "date_trunc('month', business_date)::date"
_DAY = ("business_date", "business_date")

# The tables apply() writes, one CTE each. PostgreSQL runs the statement's
# data-modifying CTEs in an order of its own (unreferenced ones last to first),
# the same for every execution of the same statement text: every rollup writer
# goes through apply_sql() or rollup_check.batch_sql(), never a statement of
# its own, so that all of them lock rollup rows in one order.
TABLES = (
    Rollup(
        "provider_day_totals",
        (("provider_id", "provider_id"), _DAY, ("currency", "currency")),
        _PERIOD,
        "provider_id IS NOT NULL",
    ),
    Rollup(
        "provider_month_totals",
        (("provider_id", "provider_id"), ("month", _MONTH), ("currency", "currency")),
        _PERIOD,
        "provider_id IS NOT NULL",
    ),
    Rollup(
        "service_day_totals",
        (("service_id", "service_id"), _DAY, ("currency", "currency")),
        _PERIOD,
        "service_id IS NOT NULL",
    ),
    Rollup(
        "organization_day_totals",
        (
            ("business_date", "business_date"),
            ("currency", "currency"),
            ("shard", shard_sql("provider_id")),
        ),
        _PERIOD,
        "provider_id IS NOT NULL",
    ),
    Rollup(
        "client_totals",
        (("client_id", "client_id"), ("currency", "currency")),
        _sums(
            ("charged_minor", "paid_minor", "payments", "refunded_minor", "refunds"),
            {"charged_minor": "completed_minor"},
        ),
        "TRUE",
    ),
    Rollup(
        "provider_client_visits",
        (("provider_id", "provider_id"), ("client_id", "client_id")),
        (("visits", "sum(visit)", "sum"), ("first_visit_date", "min(business_date)", "min")),
        "visit <> 0",
    ),
    Rollup(
        "provider_day_clients",
        (("provider_id", "provider_id"), _DAY, ("client_id", "client_id")),
        (("visits", "sum(visit)", "sum"),),
        "visit <> 0",
    ),
)

_FIRST_VISIT_DATE = "(array_agg(business_date ORDER BY start_at, business_date))[1]"

# client_visits' first visit is a pair (instant, its business date) compared
# as one; its upsert returns the first visit date it replaced, from which
# organization_day_new_clients moves (-1 on the old date, +1 on the new).
CLIENT_VISITS = Rollup(
    "client_visits",
    (("client_id", "client_id"),),
    (
        ("visits", "sum(visit)", "sum"),
        ("first_visit_at", "min(start_at)", "pair"),
        ("first_visit_date", _FIRST_VISIT_DATE, "pair"),
        ("last_visit_at", "max(start_at)", "max"),
    ),
    "visit <> 0",
)

_CLIENT_VISITS_UPSERT = f"""INSERT INTO client_visits AS t
    (organization_id, client_id, visits, first_visit_at, first_visit_date, last_visit_at)
SELECT organization_id, client_id, visits, first_visit_at, first_visit_date, last_visit_at
FROM ({CLIENT_VISITS.grouped_sql()}) AS d ORDER BY organization_id, client_id
ON CONFLICT (organization_id, client_id) DO UPDATE SET
    visits = t.visits + excluded.visits,
    replaced_first_visit_date = t.first_visit_date,
    first_visit_at = least(t.first_visit_at, excluded.first_visit_at),
    first_visit_date = CASE
        WHEN (excluded.first_visit_at, excluded.first_visit_date)
             < (t.first_visit_at, t.first_visit_date)
        THEN excluded.first_visit_date ELSE t.first_visit_date END,
    last_visit_at = greatest(t.last_visit_at, excluded.last_visit_at)
RETURNING client_id, first_visit_date, replaced_first_visit_date"""

_NEW_CLIENTS_UPSERT = f"""INSERT INTO organization_day_new_clients AS t
    (organization_id, business_date, shard, new_clients)
SELECT $1::uuid, day, shard, sum(n) FROM (
    SELECT first_visit_date AS day, {shard_sql("client_id")} AS shard, 1 AS n FROM cv
    WHERE first_visit_date IS DISTINCT FROM replaced_first_visit_date
    UNION ALL
    SELECT replaced_first_visit_date, {shard_sql("client_id")}, -1 FROM cv
    WHERE replaced_first_visit_date IS NOT NULL
      AND first_visit_date IS DISTINCT FROM replaced_first_visit_date
) AS d
GROUP BY day, shard HAVING sum(n) <> 0 ORDER BY day, shard
ON CONFLICT (organization_id, business_date, shard)
DO UPDATE SET new_clients = t.new_clients + excluded.new_clients"""


# Which rollups a kind of fact can change: "period" the four per-date tables,
# "money" client_totals, "visits" the visit tables (and new clients).
GROUPS = frozenset({"period", "money", "visits"})
_GROUP_OF = {
    "provider_day_totals": "period",
    "provider_month_totals": "period",
    "service_day_totals": "period",
    "organization_day_totals": "period",
    "client_totals": "money",
    "provider_client_visits": "visits",
    "provider_day_clients": "visits",
}


def groups_of(facts: Sequence[Fact]) -> frozenset[str]:
    """The rollups ``facts`` can change (others would get all-zero deltas: a
    booking changes no client's money, a pending payment nothing at all)."""
    out: set[str] = set()
    for f in facts:
        located = f.provider_id is not None or f.appointment_id is not None
        if f.kind == "appointment":
            out.add("period")
            if f.status == "completed":
                out |= {"money", "visits"}
        elif f.kind == "refund" or f.status in PAID_STATUSES:
            out.add("money")
            if located:
                out.add("period")
    return frozenset(out)


@lru_cache(maxsize=16)
def apply_sql(facts_source: str | None = None, groups: frozenset[str] = GROUPS) -> str:
    """The statement applying the deltas of ``facts_source`` (a SELECT of
    FACT_COLUMNS; default: unnested from parameters $2...) to the rollups of
    ``groups`` (the CTEs of the others left out: subsets of one list, in one
    order, so that every variant locks rollup rows in the same order)."""
    probe = facts_source is None  # a write's few facts, from parameters
    if facts_source is None:
        params = ", ".join(f"${i + 2}::{t}[]" for i, (_, t) in enumerate(FACT_COLUMNS))
        names = ", ".join(n for n, _ in FACT_COLUMNS)
        facts_source = f"SELECT * FROM unnest({params}) AS f({names})"
    ctes = [f"facts AS ({facts_source})", measures_sql("facts", probe=probe)]
    ctes += [
        f"u{i} AS ({table.upsert_sql(table.grouped_sql())})"
        for i, table in enumerate(TABLES)
        if _GROUP_OF[table.table] in groups
    ]
    if "visits" in groups:
        ctes.append(f"cv AS ({_CLIENT_VISITS_UPSERT})")
        ctes.append(f"nc AS ({_NEW_CLIENTS_UPSERT})")
    return "WITH " + ",\n".join(ctes) + "\nSELECT 1"


def fact_params(facts: Sequence[Fact]) -> list[list[Any]]:
    """The facts as apply_sql()'s parameters $2... (one array per FACT_COLUMNS)."""
    return [[getattr(f, name) for f in facts] for name, _ in FACT_COLUMNS]


async def apply(conn: Conn, org_id: str, facts: Sequence[Fact]) -> None:
    """Apply the write's facts to every rollup, in the write's transaction.
    Call once per transaction, after its raw rows are written."""
    if not facts:
        return
    for f in facts:
        if f.sign < 0 and f.kind == "appointment" and f.status == "completed":
            raise AssertionError("a completed appointment is final: its visit cannot be undone")
    groups = groups_of(facts)
    if not groups:
        return
    try:
        await conn.execute(apply_sql(groups=groups), org_id, *fact_params(facts))
    except asyncpg.NumericValueOutOfRangeError:
        # A bigint rollup column would pass 2^63-1: thousands of payments of
        # the largest amount (10^15) to one client, provider or day.
        raise total_out_of_range() from None


def raw_facts_sql(appointments: str = "TRUE", payments: str = "TRUE", refunds: str = "TRUE") -> str:
    """The facts of the tenant's ($1) raw rows as they are, each filtered by
    its own condition (over ``a``, ``p``, ``r``): a repair's recomputation."""
    return f"""SELECT 'appointment'::text AS kind, 1 AS sign, a.provider_id, a.service_id,
       a.client_id, NULL::uuid AS appointment_id, a.status, a.price_minor AS amount, a.currency,
       a.start_at, a.end_at, NULL::timestamptz AS at
FROM appointments a WHERE a.organization_id = $1 AND ({appointments})
UNION ALL
SELECT 'payment', 1, NULL, NULL, p.client_id, p.appointment_id, p.status, p.amount_minor,
       p.currency, NULL, NULL, p.created_at
FROM payments p WHERE p.organization_id = $1 AND ({payments})
UNION ALL
SELECT 'refund', 1, NULL, NULL, p.client_id, p.appointment_id, NULL, r.amount_minor, r.currency,
       NULL, NULL, r.created_at
FROM refunds r JOIN payments p ON p.organization_id = r.organization_id AND p.id = r.payment_id
WHERE r.organization_id = $1 AND ({refunds})"""
