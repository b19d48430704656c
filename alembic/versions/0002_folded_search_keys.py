"""folded search keys: clients.given_key / family_key / email_key hold
server.text.fold of their column (NFKC + case folding, done in Python, the one
rule shared with the search terms), and name_key / search_text become
concatenations of them instead of PostgreSQL lower() (which differs from
Python's case mapping, and between PostgreSQL versions and providers).

Existing rows are backfilled in Python with the very same fold, in batches.
A generated column's expression cannot be changed before PostgreSQL 17, so
name_key and search_text (and their indexes) are dropped and added again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from server.text import fold

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 10_000


def _drop_search_columns() -> None:
    op.drop_index(
        "ix_clients_org_search_trgm",
        table_name="clients",
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    )
    op.drop_index("ix_clients_org_name_key_id", table_name="clients")
    op.drop_column("clients", "search_text")
    op.drop_column("clients", "name_key")


def _add_search_columns(name_key: str, search_text: str) -> None:
    op.add_column(
        "clients",
        sa.Column(
            "name_key",
            sa.Text(collation="C"),
            sa.Computed(name_key, persisted=True),
            nullable=False,
        ),
    )
    op.add_column(
        "clients",
        sa.Column(
            "search_text", sa.Text(), sa.Computed(search_text, persisted=True), nullable=False
        ),
    )
    op.create_index(
        "ix_clients_org_name_key_id", "clients", ["organization_id", "name_key", "id"], unique=False
    )
    op.create_index(
        "ix_clients_org_search_trgm",
        "clients",
        ["organization_id", "search_text"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    )


def _backfill() -> None:
    """Fold every existing row's names and e-mail, BATCH rows a statement, in
    primary key order (keyset, so each batch is an index range)."""
    conn = op.get_bind()
    after: tuple[str, str] | None = None
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT organization_id::text, id::text, given_name, family_name, email "
                "FROM clients "
                + ("" if after is None else "WHERE (organization_id, id) > (:org, :id) ")
                + "ORDER BY organization_id, id LIMIT :n"
            ),
            {"n": BATCH} if after is None else {"n": BATCH, "org": after[0], "id": after[1]},
        ).all()
        if not rows:
            return
        conn.execute(
            sa.text(
                "UPDATE clients SET given_key = k.g, family_key = k.f, email_key = k.e "
                "FROM unnest(CAST(:orgs AS uuid[]), CAST(:ids AS uuid[]), CAST(:gs AS text[]), "
                "CAST(:fs AS text[]), CAST(:es AS text[])) AS k(org, id, g, f, e) "
                "WHERE clients.organization_id = k.org AND clients.id = k.id"
            ),
            {
                "orgs": [r[0] for r in rows],
                "ids": [r[1] for r in rows],
                "gs": [fold(r[2]) for r in rows],
                "fs": [fold(r[3]) for r in rows],
                "es": [None if r[4] is None else fold(r[4]) for r in rows],
            },
        )
        after = (rows[-1][0], rows[-1][1])


def upgrade() -> None:
    # Dropped first, so that the backfill maintains neither them nor their indexes.
    _drop_search_columns()
    op.add_column("clients", sa.Column("given_key", sa.Text(), nullable=True))
    op.add_column("clients", sa.Column("family_key", sa.Text(), nullable=True))
    op.add_column("clients", sa.Column("email_key", sa.Text(), nullable=True))
    _backfill()
    op.alter_column("clients", "given_key", nullable=False)
    op.alter_column("clients", "family_key", nullable=False)
    _add_search_columns(
        "(family_key || ' ' || given_key)",
        "(given_key || ' ' || family_key || ' ' || coalesce(email_key, '') "
        "|| ' ' || coalesce(phone, ''))",
    )


def downgrade() -> None:
    _drop_search_columns()
    op.drop_column("clients", "email_key")
    op.drop_column("clients", "family_key")
    op.drop_column("clients", "given_key")
    _add_search_columns(
        "lower(family_name || ' ' || given_name)",
        "lower(given_name || ' ' || family_name || ' ' || coalesce(email, '') || ' ' || "
        "coalesce(phone, ''))",
    )
