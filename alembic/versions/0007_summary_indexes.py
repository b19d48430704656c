"""summary indexes: provider_day_totals and provider_month_totals get an index
of a currency's rows by date (month), tenant first, that holds the provider
and its completed figures (INCLUDE provider_id, completed_minor, completed).

They serve GetDashboard's top providers (server/queries/summaries.py
DASHBOARD_SQL): the period's figures of every provider of the tenant in the
ranking currency are one index-only range scan (the month's rows, less or
plus the days of the month after or up to the date; a week's or a day's
rows), aggregated per provider, ranked, and only the top N providers' names
are read. Before, the statement ran three primary key range scans per
provider of the tenant (1,000 providers: 20-30 ms; after: see the commit).

Cost. The build reads each table once and sorts it (seconds per million
rows; the indexes take about as much space as the tables' primary keys).
CREATE INDEX inside the migration's transaction holds a SHARE lock on each
table until it commits: rollup writes (every appointment and payment write,
server.queries.rollups.apply) wait for it. On a big database run it by hand
in a quiet window (docs/architecture.md "Upgrading"). Afterwards an upsert
that changes completed_minor or completed (a completion, or a repair of
them) can no longer be a HOT update: it adds an entry to the primary key and
to the new index; upserts of the other measures only (bookings,
cancellations, payments, refunds) stay HOT where the page has room.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RANKED = ["provider_id", "completed_minor", "completed"]
INDEXES = (
    ("ix_provider_day_totals_org_currency_date", "provider_day_totals", "business_date"),
    ("ix_provider_month_totals_org_currency_month", "provider_month_totals", "month"),
)


def upgrade() -> None:
    for name, table, period in INDEXES:
        op.create_index(
            name, table, ["organization_id", "currency", period], postgresql_include=RANKED
        )


def downgrade() -> None:
    for name, table, _period in INDEXES:
        op.drop_index(name, table_name=table)
