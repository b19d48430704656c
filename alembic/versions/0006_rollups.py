"""rollups: the summaries' tables, kept exact by every write; organizations
get first_day_of_week; refunds get an index by creation; refunded payments
from before refunds were recorded get their refund row.

Rollups are maintained by explicit statements, not triggers: each write
transaction ends with ONE statement (server/queries/rollups.py ``apply``)
that adds the write's delta to every rollup table with data-modifying CTEs.
Why: one round trip and a visible cost per write; set-based for bulk imports
(one statement per batch, where a row trigger would run per row and
transition tables are not supported on distributed tables); and a
Citus-distributed schema routes the statement to the tenant's shard, where
triggers on distributed tables need ``citus.enable_unsafe_triggers``. The
cost, that every write path must call it, is paid by the exactness test
(every write RPC against a plain GROUP BY) and ``booking-data rollups
check``, which reports any drift from the raw rows.

Concurrent writers are safe: each rollup row is changed by INSERT ... ON
CONFLICT DO UPDATE SET x = t.x + excluded.x (adds to the latest committed
value under the row lock: no lost update), rows in key order and tables in a
fixed order, once per transaction at its end (no deadlock between rollups).

Existing rows: the tables are filled from the raw rows of each tenant, one
statement per tenant (the same delta statement over all of its rows; frozen
below as it was at this revision). Refunded payments stored before refunds
were recorded (migration 0005 gave them refunded_minor = amount_minor) get a
refund row dated at their last update, so that refunds are the one source of
refunded amounts. On a big database this reads every appointment, payment
and refund once (minutes per ten million rows): run it by hand
(docs/architecture.md "Upgrading"); summaries are exact when it commits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID(as_uuid=False)

PERIOD_MEASURES = (
    "pending",
    "confirmed",
    "completed",
    "cancelled",
    "no_show",
    "booked_minutes",
    "expected_minor",
    "completed_minor",
    "paid_minor",
    "payments",
    "refunded_minor",
    "refunds",
)


def _measures(*names: str) -> list[sa.Column[int]]:
    return [
        sa.Column(n, sa.BigInteger(), server_default=sa.text("0"), nullable=False) for n in names
    ]


def _period_totals(name: str, key: str | None, period: str, shard: bool = False) -> None:
    keys = [sa.Column("organization_id", UUID, nullable=False)]
    if key is not None:
        keys.append(sa.Column(key, UUID, nullable=False))
    keys += [
        sa.Column(period, sa.Date(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
    ]
    if shard:
        keys.append(sa.Column("shard", sa.SmallInteger(), nullable=False))
    names = [c.name for c in keys]
    op.create_table(
        name,
        *keys,
        *_measures(*PERIOD_MEASURES),
        sa.PrimaryKeyConstraint(*names, name=op.f(f"pk_{name}")),
    )


# The tenant's ($1) rollup rows from all of its raw rows: server/queries/rollups.py
# apply_sql(raw_facts_sql()) as it was at this revision (migrations never import
# code that changes after them).
FILL_SQL = """
WITH facts AS (SELECT 'appointment'::text AS kind, 1 AS sign, a.provider_id, a.service_id,
       a.client_id, NULL::uuid AS appointment_id, a.status, a.price_minor AS amount, a.currency,
       a.start_at, a.end_at, NULL::timestamptz AS at
FROM appointments a WHERE a.organization_id = $1 AND (TRUE)
UNION ALL
SELECT 'payment', 1, NULL, NULL, p.client_id, p.appointment_id, p.status, p.amount_minor,
       p.currency, NULL, NULL, p.created_at
FROM payments p WHERE p.organization_id = $1 AND (TRUE)
UNION ALL
SELECT 'refund', 1, NULL, NULL, p.client_id, p.appointment_id, NULL, r.amount_minor, r.currency,
       NULL, NULL, r.created_at
FROM refunds r JOIN payments p ON p.organization_id = r.organization_id AND p.id = r.payment_id
WHERE r.organization_id = $1 AND (TRUE)),
located AS (
    SELECT f.kind, f.sign, f.status, f.amount, f.currency, f.client_id, f.start_at, f.end_at,
           coalesce(f.provider_id, a.provider_id) AS provider_id,
           coalesce(f.service_id, a.service_id) AS service_id,
           (coalesce(f.start_at, f.at) AT TIME ZONE p.time_zone)::date AS business_date
    FROM facts f
    LEFT JOIN appointments a
      ON f.appointment_id IS NOT NULL AND a.organization_id = $1 AND a.id = f.appointment_id
    LEFT JOIN providers p
      ON p.organization_id = $1 AND p.id = coalesce(f.provider_id, a.provider_id)
), m AS (
    SELECT provider_id, service_id, client_id, business_date, currency, start_at,
        sign * (kind = 'appointment' AND status = 'pending')::int AS pending,
        sign * (kind = 'appointment' AND status = 'confirmed')::int AS confirmed,
        sign * (kind = 'appointment' AND status = 'completed')::int AS completed,
        sign * (kind = 'appointment' AND status = 'cancelled')::int AS cancelled,
        sign * (kind = 'appointment' AND status = 'no_show')::int AS no_show,
        CASE WHEN kind = 'appointment' AND status IN ('pending', 'confirmed', 'completed')
            THEN sign * (extract(epoch FROM end_at - start_at)::bigint / 60) ELSE 0 END
            AS booked_minutes,
        CASE WHEN kind = 'appointment' AND status IN ('pending', 'confirmed', 'completed') THEN sign * amount ELSE 0 END AS expected_minor,
        CASE WHEN kind = 'appointment' AND status = 'completed' THEN sign * amount ELSE 0 END
            AS completed_minor,
        CASE WHEN kind = 'payment' AND status IN ('completed', 'refunded') THEN sign * amount ELSE 0 END AS paid_minor,
        sign * (kind = 'payment' AND status IN ('completed', 'refunded'))::int AS payments,
        CASE WHEN kind = 'refund' THEN sign * amount ELSE 0 END AS refunded_minor,
        sign * (kind = 'refund')::int AS refunds,
        sign * (kind = 'appointment' AND status = 'completed')::int AS visit
    FROM located
),
u0 AS (INSERT INTO provider_day_totals AS t (organization_id, provider_id, business_date, currency, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds) SELECT organization_id, provider_id, business_date, currency, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds FROM (SELECT $1::uuid AS organization_id, provider_id AS provider_id, business_date AS business_date, currency AS currency, sum(pending) AS pending, sum(confirmed) AS confirmed, sum(completed) AS completed, sum(cancelled) AS cancelled, sum(no_show) AS no_show, sum(booked_minutes) AS booked_minutes, sum(expected_minor) AS expected_minor, sum(completed_minor) AS completed_minor, sum(paid_minor) AS paid_minor, sum(payments) AS payments, sum(refunded_minor) AS refunded_minor, sum(refunds) AS refunds FROM m WHERE provider_id IS NOT NULL GROUP BY 2, 3, 4 HAVING sum(pending) <> 0 OR sum(confirmed) <> 0 OR sum(completed) <> 0 OR sum(cancelled) <> 0 OR sum(no_show) <> 0 OR sum(booked_minutes) <> 0 OR sum(expected_minor) <> 0 OR sum(completed_minor) <> 0 OR sum(paid_minor) <> 0 OR sum(payments) <> 0 OR sum(refunded_minor) <> 0 OR sum(refunds) <> 0) AS d ORDER BY organization_id, provider_id, business_date, currency ON CONFLICT (organization_id, provider_id, business_date, currency) DO UPDATE SET pending = t.pending + excluded.pending, confirmed = t.confirmed + excluded.confirmed, completed = t.completed + excluded.completed, cancelled = t.cancelled + excluded.cancelled, no_show = t.no_show + excluded.no_show, booked_minutes = t.booked_minutes + excluded.booked_minutes, expected_minor = t.expected_minor + excluded.expected_minor, completed_minor = t.completed_minor + excluded.completed_minor, paid_minor = t.paid_minor + excluded.paid_minor, payments = t.payments + excluded.payments, refunded_minor = t.refunded_minor + excluded.refunded_minor, refunds = t.refunds + excluded.refunds),
u1 AS (INSERT INTO provider_month_totals AS t (organization_id, provider_id, month, currency, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds) SELECT organization_id, provider_id, month, currency, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds FROM (SELECT $1::uuid AS organization_id, provider_id AS provider_id, date_trunc('month', business_date)::date AS month, currency AS currency, sum(pending) AS pending, sum(confirmed) AS confirmed, sum(completed) AS completed, sum(cancelled) AS cancelled, sum(no_show) AS no_show, sum(booked_minutes) AS booked_minutes, sum(expected_minor) AS expected_minor, sum(completed_minor) AS completed_minor, sum(paid_minor) AS paid_minor, sum(payments) AS payments, sum(refunded_minor) AS refunded_minor, sum(refunds) AS refunds FROM m WHERE provider_id IS NOT NULL GROUP BY 2, 3, 4 HAVING sum(pending) <> 0 OR sum(confirmed) <> 0 OR sum(completed) <> 0 OR sum(cancelled) <> 0 OR sum(no_show) <> 0 OR sum(booked_minutes) <> 0 OR sum(expected_minor) <> 0 OR sum(completed_minor) <> 0 OR sum(paid_minor) <> 0 OR sum(payments) <> 0 OR sum(refunded_minor) <> 0 OR sum(refunds) <> 0) AS d ORDER BY organization_id, provider_id, month, currency ON CONFLICT (organization_id, provider_id, month, currency) DO UPDATE SET pending = t.pending + excluded.pending, confirmed = t.confirmed + excluded.confirmed, completed = t.completed + excluded.completed, cancelled = t.cancelled + excluded.cancelled, no_show = t.no_show + excluded.no_show, booked_minutes = t.booked_minutes + excluded.booked_minutes, expected_minor = t.expected_minor + excluded.expected_minor, completed_minor = t.completed_minor + excluded.completed_minor, paid_minor = t.paid_minor + excluded.paid_minor, payments = t.payments + excluded.payments, refunded_minor = t.refunded_minor + excluded.refunded_minor, refunds = t.refunds + excluded.refunds),
u2 AS (INSERT INTO service_day_totals AS t (organization_id, service_id, business_date, currency, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds) SELECT organization_id, service_id, business_date, currency, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds FROM (SELECT $1::uuid AS organization_id, service_id AS service_id, business_date AS business_date, currency AS currency, sum(pending) AS pending, sum(confirmed) AS confirmed, sum(completed) AS completed, sum(cancelled) AS cancelled, sum(no_show) AS no_show, sum(booked_minutes) AS booked_minutes, sum(expected_minor) AS expected_minor, sum(completed_minor) AS completed_minor, sum(paid_minor) AS paid_minor, sum(payments) AS payments, sum(refunded_minor) AS refunded_minor, sum(refunds) AS refunds FROM m WHERE service_id IS NOT NULL GROUP BY 2, 3, 4 HAVING sum(pending) <> 0 OR sum(confirmed) <> 0 OR sum(completed) <> 0 OR sum(cancelled) <> 0 OR sum(no_show) <> 0 OR sum(booked_minutes) <> 0 OR sum(expected_minor) <> 0 OR sum(completed_minor) <> 0 OR sum(paid_minor) <> 0 OR sum(payments) <> 0 OR sum(refunded_minor) <> 0 OR sum(refunds) <> 0) AS d ORDER BY organization_id, service_id, business_date, currency ON CONFLICT (organization_id, service_id, business_date, currency) DO UPDATE SET pending = t.pending + excluded.pending, confirmed = t.confirmed + excluded.confirmed, completed = t.completed + excluded.completed, cancelled = t.cancelled + excluded.cancelled, no_show = t.no_show + excluded.no_show, booked_minutes = t.booked_minutes + excluded.booked_minutes, expected_minor = t.expected_minor + excluded.expected_minor, completed_minor = t.completed_minor + excluded.completed_minor, paid_minor = t.paid_minor + excluded.paid_minor, payments = t.payments + excluded.payments, refunded_minor = t.refunded_minor + excluded.refunded_minor, refunds = t.refunds + excluded.refunds),
u3 AS (INSERT INTO organization_day_totals AS t (organization_id, business_date, currency, shard, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds) SELECT organization_id, business_date, currency, shard, pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor, completed_minor, paid_minor, payments, refunded_minor, refunds FROM (SELECT $1::uuid AS organization_id, business_date AS business_date, currency AS currency, (get_byte(uuid_send(provider_id), 15) % 8)::smallint AS shard, sum(pending) AS pending, sum(confirmed) AS confirmed, sum(completed) AS completed, sum(cancelled) AS cancelled, sum(no_show) AS no_show, sum(booked_minutes) AS booked_minutes, sum(expected_minor) AS expected_minor, sum(completed_minor) AS completed_minor, sum(paid_minor) AS paid_minor, sum(payments) AS payments, sum(refunded_minor) AS refunded_minor, sum(refunds) AS refunds FROM m WHERE provider_id IS NOT NULL GROUP BY 2, 3, 4 HAVING sum(pending) <> 0 OR sum(confirmed) <> 0 OR sum(completed) <> 0 OR sum(cancelled) <> 0 OR sum(no_show) <> 0 OR sum(booked_minutes) <> 0 OR sum(expected_minor) <> 0 OR sum(completed_minor) <> 0 OR sum(paid_minor) <> 0 OR sum(payments) <> 0 OR sum(refunded_minor) <> 0 OR sum(refunds) <> 0) AS d ORDER BY organization_id, business_date, currency, shard ON CONFLICT (organization_id, business_date, currency, shard) DO UPDATE SET pending = t.pending + excluded.pending, confirmed = t.confirmed + excluded.confirmed, completed = t.completed + excluded.completed, cancelled = t.cancelled + excluded.cancelled, no_show = t.no_show + excluded.no_show, booked_minutes = t.booked_minutes + excluded.booked_minutes, expected_minor = t.expected_minor + excluded.expected_minor, completed_minor = t.completed_minor + excluded.completed_minor, paid_minor = t.paid_minor + excluded.paid_minor, payments = t.payments + excluded.payments, refunded_minor = t.refunded_minor + excluded.refunded_minor, refunds = t.refunds + excluded.refunds),
u4 AS (INSERT INTO client_totals AS t (organization_id, client_id, currency, charged_minor, paid_minor, payments, refunded_minor, refunds) SELECT organization_id, client_id, currency, charged_minor, paid_minor, payments, refunded_minor, refunds FROM (SELECT $1::uuid AS organization_id, client_id AS client_id, currency AS currency, sum(completed_minor) AS charged_minor, sum(paid_minor) AS paid_minor, sum(payments) AS payments, sum(refunded_minor) AS refunded_minor, sum(refunds) AS refunds FROM m WHERE TRUE GROUP BY 2, 3 HAVING sum(completed_minor) <> 0 OR sum(paid_minor) <> 0 OR sum(payments) <> 0 OR sum(refunded_minor) <> 0 OR sum(refunds) <> 0) AS d ORDER BY organization_id, client_id, currency ON CONFLICT (organization_id, client_id, currency) DO UPDATE SET charged_minor = t.charged_minor + excluded.charged_minor, paid_minor = t.paid_minor + excluded.paid_minor, payments = t.payments + excluded.payments, refunded_minor = t.refunded_minor + excluded.refunded_minor, refunds = t.refunds + excluded.refunds),
u5 AS (INSERT INTO provider_client_visits AS t (organization_id, provider_id, client_id, visits, first_visit_date) SELECT organization_id, provider_id, client_id, visits, first_visit_date FROM (SELECT $1::uuid AS organization_id, provider_id AS provider_id, client_id AS client_id, sum(visit) AS visits, min(business_date) AS first_visit_date FROM m WHERE visit <> 0 GROUP BY 2, 3 HAVING sum(visit) <> 0) AS d ORDER BY organization_id, provider_id, client_id ON CONFLICT (organization_id, provider_id, client_id) DO UPDATE SET visits = t.visits + excluded.visits, first_visit_date = least(t.first_visit_date, excluded.first_visit_date)),
u6 AS (INSERT INTO provider_day_clients AS t (organization_id, provider_id, business_date, client_id, visits) SELECT organization_id, provider_id, business_date, client_id, visits FROM (SELECT $1::uuid AS organization_id, provider_id AS provider_id, business_date AS business_date, client_id AS client_id, sum(visit) AS visits FROM m WHERE visit <> 0 GROUP BY 2, 3, 4 HAVING sum(visit) <> 0) AS d ORDER BY organization_id, provider_id, business_date, client_id ON CONFLICT (organization_id, provider_id, business_date, client_id) DO UPDATE SET visits = t.visits + excluded.visits),
cv AS (INSERT INTO client_visits AS t
    (organization_id, client_id, visits, first_visit_at, first_visit_date, last_visit_at)
SELECT organization_id, client_id, visits, first_visit_at, first_visit_date, last_visit_at
FROM (SELECT $1::uuid AS organization_id, client_id AS client_id, sum(visit) AS visits, min(start_at) AS first_visit_at, (array_agg(business_date ORDER BY start_at, business_date))[1] AS first_visit_date, max(start_at) AS last_visit_at FROM m WHERE visit <> 0 GROUP BY 2 HAVING sum(visit) <> 0) AS d ORDER BY organization_id, client_id
ON CONFLICT (organization_id, client_id) DO UPDATE SET
    visits = t.visits + excluded.visits,
    replaced_first_visit_date = t.first_visit_date,
    first_visit_at = least(t.first_visit_at, excluded.first_visit_at),
    first_visit_date = CASE
        WHEN (excluded.first_visit_at, excluded.first_visit_date)
             < (t.first_visit_at, t.first_visit_date)
        THEN excluded.first_visit_date ELSE t.first_visit_date END,
    last_visit_at = greatest(t.last_visit_at, excluded.last_visit_at)
RETURNING client_id, first_visit_date, replaced_first_visit_date),
nc AS (INSERT INTO organization_day_new_clients AS t
    (organization_id, business_date, shard, new_clients)
SELECT $1::uuid, day, shard, sum(n) FROM (
    SELECT first_visit_date AS day, (get_byte(uuid_send(client_id), 15) % 8)::smallint AS shard, 1 AS n FROM cv
    WHERE first_visit_date IS DISTINCT FROM replaced_first_visit_date
    UNION ALL
    SELECT replaced_first_visit_date, (get_byte(uuid_send(client_id), 15) % 8)::smallint, -1 FROM cv
    WHERE replaced_first_visit_date IS NOT NULL
      AND first_visit_date IS DISTINCT FROM replaced_first_visit_date
) AS d
GROUP BY day, shard HAVING sum(n) <> 0 ORDER BY day, shard
ON CONFLICT (organization_id, business_date, shard)
DO UPDATE SET new_clients = t.new_clients + excluded.new_clients)
SELECT 1"""

# Refunded payments without refund rows: one refund of what was refunded.
LEGACY_REFUNDS_SQL = """
INSERT INTO refunds (organization_id, id, payment_id, amount_minor, currency, reason, created_at)
SELECT p.organization_id, gen_random_uuid(), p.id, p.refunded_minor - coalesce(r.sum, 0),
       p.currency, 'recorded before refunds were (migration 0006)', p.updated_at
FROM payments p
LEFT JOIN LATERAL (
    SELECT sum(amount_minor) AS sum FROM refunds r
    WHERE r.organization_id = p.organization_id AND r.payment_id = p.id
) AS r ON true
WHERE p.refunded_minor > coalesce(r.sum, 0)
"""


def upgrade() -> None:
    op.add_column(
        "organizations",
        sa.Column(
            "first_day_of_week", sa.SmallInteger(), server_default=sa.text("1"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_organizations_first_day_of_week_range"),
        "organizations",
        "first_day_of_week BETWEEN 1 AND 7",
    )
    op.create_index(
        "ix_refunds_org_created_at_id", "refunds", ["organization_id", "created_at", "id"]
    )
    op.execute(LEGACY_REFUNDS_SQL)

    _period_totals("provider_day_totals", "provider_id", "business_date")
    _period_totals("provider_month_totals", "provider_id", "month")
    _period_totals("service_day_totals", "service_id", "business_date")
    _period_totals("organization_day_totals", None, "business_date", shard=True)
    op.create_table(
        "organization_day_new_clients",
        sa.Column("organization_id", UUID, nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        *_measures("new_clients"),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "business_date",
            "shard",
            name=op.f("pk_organization_day_new_clients"),
        ),
    )
    op.create_table(
        "client_totals",
        sa.Column("organization_id", UUID, nullable=False),
        sa.Column("client_id", UUID, nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        *_measures("charged_minor", "paid_minor", "payments", "refunded_minor", "refunds"),
        sa.Column(
            "balance_minor",
            sa.BigInteger(),
            sa.Computed("charged_minor - paid_minor + refunded_minor", persisted=True),
            nullable=False,
        ),
        sa.Column(
            "lifetime_value_minor",
            sa.BigInteger(),
            sa.Computed("paid_minor - refunded_minor", persisted=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "client_id", "currency", name=op.f("pk_client_totals")
        ),
    )
    op.create_table(
        "client_visits",
        sa.Column("organization_id", UUID, nullable=False),
        sa.Column("client_id", UUID, nullable=False),
        *_measures("visits"),
        sa.Column("first_visit_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_visit_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_visit_date", sa.Date(), nullable=False),
        sa.Column("replaced_first_visit_date", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("organization_id", "client_id", name=op.f("pk_client_visits")),
    )
    op.create_table(
        "provider_client_visits",
        sa.Column("organization_id", UUID, nullable=False),
        sa.Column("provider_id", UUID, nullable=False),
        sa.Column("client_id", UUID, nullable=False),
        *_measures("visits"),
        sa.Column("first_visit_date", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint(
            "organization_id", "provider_id", "client_id", name=op.f("pk_provider_client_visits")
        ),
    )
    op.create_table(
        "provider_day_clients",
        sa.Column("organization_id", UUID, nullable=False),
        sa.Column("provider_id", UUID, nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("client_id", UUID, nullable=False),
        *_measures("visits"),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "provider_id",
            "business_date",
            "client_id",
            name=op.f("pk_provider_day_clients"),
        ),
    )
    # Filled before the secondary indexes: one build each instead of row by row.
    bind = op.get_bind()
    for (org,) in bind.execute(sa.text("SELECT id FROM organizations ORDER BY id")):
        # org is a uuid read from the database: safe to inline.
        bind.exec_driver_sql(FILL_SQL.replace("$1", f"'{uuid.UUID(str(org))}'::uuid"))
    op.create_index(
        "ix_client_totals_org_currency_balance",
        "client_totals",
        ["organization_id", "currency", "balance_minor", "client_id"],
    )
    op.create_index(
        "ix_client_totals_org_currency_lifetime_value",
        "client_totals",
        ["organization_id", "currency", "lifetime_value_minor", "client_id"],
    )
    op.create_index(
        "ix_provider_client_visits_org_provider_first",
        "provider_client_visits",
        ["organization_id", "provider_id", "first_visit_date"],
    )


def downgrade() -> None:
    for table in (
        "provider_day_clients",
        "provider_client_visits",
        "client_visits",
        "client_totals",
        "organization_day_new_clients",
        "organization_day_totals",
        "service_day_totals",
        "provider_month_totals",
        "provider_day_totals",
    ):
        op.drop_table(table)
    op.execute("DELETE FROM refunds WHERE reason = 'recorded before refunds were (migration 0006)'")
    op.drop_index("ix_refunds_org_created_at_id", table_name="refunds")
    op.drop_constraint(
        op.f("ck_organizations_first_day_of_week_range"), "organizations", type_="check"
    )
    op.drop_column("organizations", "first_day_of_week")
