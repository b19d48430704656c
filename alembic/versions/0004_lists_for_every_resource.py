"""lists for every resource: folded name keys for providers and services,
start_at / end_at on appointments, a one-day bound on an appointment, and one
index per list query shape.

Each index below is justified by the query it serves (the statements are built
in server/queries/; tests/test_explain_lists.py EXPLAINs each shape at 100k+
rows and fails on a sequential scan):

providers, services (ListProviders, ListServices):
- ``(organization_id, display_key|name_key, id)``: order_by display_name /
  name (keyset), and a 1-2 character search as a prefix range of the key.
- ``(organization_id, created_at, id)``: order_by create_time and the created
  range.
- GIN ``(organization_id, display_key|name_key gin_trgm_ops)``: a search of 3+
  characters (a substring, by trigrams), as clients' search.
- "offered by" filters use the offerings primary key (provider_id,
  service_id) and ix_offerings_org_service_id_provider_id: nothing new.

appointments (ListAppointments, ListClientHistory, GetProviderSchedule):
- ``(organization_id, start_at, id)``: the tenant's appointments by start
  time, with an instant range or a business-date range as a start_at range
  (a local midnight is within 16 hours of the same UTC midnight; the exact
  local date in the provider's zone is then a filter).
- ``(organization_id, provider_id, start_at, id)``: provider_ids filters with
  the same ranges, and each provider's day in GetProviderSchedule. (The
  exclusion constraint's GiST index covers blocking statuses only; lists and
  the day sheet show every status.)
- ``(organization_id, client_id, start_at, id)``: the client_id filter, and
  the appointments half of a client's history (newest first = a backward
  scan). Replaces ``(organization_id, client_id)``, its prefix, which also
  served the foreign key checks of clients: this one serves them too.
- ``(organization_id, service_id, start_at, id)``: the service_id filter.
  Replaces ``(organization_id, service_id)`` likewise.

payments (ListPayments, ListClientHistory, the FULL views):
- ``(organization_id, created_at, id)``: the tenant's payments newest first
  and the created range.
- ``(organization_id, client_id, created_at, id)``: the client_id filter and
  the payments half of a client's history. Replaces ``(organization_id,
  client_id, created_at)``, which lacked the id tie-breaker of the keyset.
- ``(organization_id, status, created_at, id)``: one status with a created
  range ("failed payments this week"): an index range instead of a walk over
  every other status.
- ``(organization_id, appointment_id)`` (kept): the appointment_id filter and
  the payments of a page of appointments (VIEW_FULL, the day sheet).

``appointments.during`` gets a CHECK of at most 24 hours (a service lasts
1-1440 minutes, so no written appointment is longer): an overlap filter
``end_at > t`` is then also the index bound ``start_at > t - 24 hours``.

Existing rows: display_key / name_key are backfilled in Python with
server.text.fold, in batches (bounded memory; the migration is still one
transaction), as 0002 did for clients; start_at / end_at are generated.

Running it on a big database (docs/architecture.md "Upgrading"): appointments
is rewritten once under an exclusive lock (its indexes rebuilt), and the new
indexes are built in the same transaction, so bookings and lists wait for it
(measured: ~73 s for 1M appointments with the two columns added apart; one
rewrite now). Run it by hand in a quiet window with BOOKING_MIGRATE_ON_START
off, and stop instances of the previous version first: they do not write the
new NOT NULL folded keys (a CreateProvider would fail) nor keep them current.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from server.text import fold

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 10_000
# (table, folded key, source column)
KEYS = (("providers", "display_key", "display_name"), ("services", "name_key", "name"))


def _backfill(table: str, key: str, source: str) -> None:
    conn = op.get_bind()
    after: tuple[str, str] | None = None
    while True:
        rows = conn.execute(
            sa.text(
                f"SELECT organization_id::text, id::text, {source} FROM {table} "
                + ("" if after is None else "WHERE (organization_id, id) > (:org, :id) ")
                + "ORDER BY organization_id, id LIMIT :n"
            ),
            {"n": BATCH} if after is None else {"n": BATCH, "org": after[0], "id": after[1]},
        ).all()
        if not rows:
            return
        conn.execute(
            sa.text(
                f"UPDATE {table} SET {key} = k.key "
                "FROM unnest(CAST(:orgs AS uuid[]), CAST(:ids AS uuid[]), CAST(:keys AS text[])) "
                "AS k(org, id, key) "
                f"WHERE {table}.organization_id = k.org AND {table}.id = k.id"
            ),
            {
                "orgs": [r[0] for r in rows],
                "ids": [r[1] for r in rows],
                "keys": [fold(r[2]) for r in rows],
            },
        )
        after = (rows[-1][0], rows[-1][1])


def upgrade() -> None:
    for table, key, source in KEYS:
        op.add_column(table, sa.Column(key, sa.Text(collation="C"), nullable=True))
        _backfill(table, key, source)
        op.alter_column(table, key, nullable=False)
        op.create_index(f"ix_{table}_org_{key}_id", table, ["organization_id", key, "id"])
        op.create_index(
            f"ix_{table}_org_created_at_id", table, ["organization_id", "created_at", "id"]
        )
        op.create_index(
            f"ix_{table}_org_{key}_trgm",
            table,
            ["organization_id", key],
            postgresql_using="gin",
            postgresql_ops={key: "gin_trgm_ops"},
        )

    # One ALTER: the table is rewritten once for both columns and the CHECK is
    # verified in the same pass (separate statements rewrote it twice and
    # scanned it a third time, each under the exclusive lock).
    op.execute(
        "ALTER TABLE appointments "
        "ADD COLUMN start_at timestamptz GENERATED ALWAYS AS (lower(during)) STORED NOT NULL, "
        "ADD COLUMN end_at timestamptz GENERATED ALWAYS AS (upper(during)) STORED NOT NULL, "
        "ADD CONSTRAINT ck_appointments_during_bounded "
        "CHECK (upper(during) - lower(during) <= interval '24 hours')"
    )
    op.drop_index("ix_appointments_org_client_id", table_name="appointments")
    op.drop_index("ix_appointments_org_service_id", table_name="appointments")
    for name, cols in (
        ("ix_appointments_org_start_at_id", ["organization_id", "start_at", "id"]),
        (
            "ix_appointments_org_provider_start_at_id",
            ["organization_id", "provider_id", "start_at", "id"],
        ),
        (
            "ix_appointments_org_client_start_at_id",
            ["organization_id", "client_id", "start_at", "id"],
        ),
        (
            "ix_appointments_org_service_start_at_id",
            ["organization_id", "service_id", "start_at", "id"],
        ),
    ):
        op.create_index(name, "appointments", cols)

    op.drop_index("ix_payments_org_client_id_created_at", table_name="payments")
    for name, cols in (
        ("ix_payments_org_created_at_id", ["organization_id", "created_at", "id"]),
        (
            "ix_payments_org_client_created_at_id",
            ["organization_id", "client_id", "created_at", "id"],
        ),
        (
            "ix_payments_org_status_created_at_id",
            ["organization_id", "status", "created_at", "id"],
        ),
    ):
        op.create_index(name, "payments", cols)


def downgrade() -> None:
    for name in (
        "ix_payments_org_status_created_at_id",
        "ix_payments_org_client_created_at_id",
        "ix_payments_org_created_at_id",
    ):
        op.drop_index(name, table_name="payments")
    op.create_index(
        "ix_payments_org_client_id_created_at",
        "payments",
        ["organization_id", "client_id", "created_at"],
    )
    for name in (
        "ix_appointments_org_service_start_at_id",
        "ix_appointments_org_client_start_at_id",
        "ix_appointments_org_provider_start_at_id",
        "ix_appointments_org_start_at_id",
    ):
        op.drop_index(name, table_name="appointments")
    op.create_index(
        "ix_appointments_org_service_id", "appointments", ["organization_id", "service_id"]
    )
    op.create_index(
        "ix_appointments_org_client_id", "appointments", ["organization_id", "client_id"]
    )
    op.drop_constraint(op.f("ck_appointments_during_bounded"), "appointments", type_="check")
    op.drop_column("appointments", "end_at")
    op.drop_column("appointments", "start_at")
    for table, key, _source in KEYS:
        op.drop_index(f"ix_{table}_org_{key}_trgm", table_name=table)
        op.drop_index(f"ix_{table}_org_created_at_id", table_name=table)
        op.drop_index(f"ix_{table}_org_{key}_id", table_name=table)
        op.drop_column(table, key)
