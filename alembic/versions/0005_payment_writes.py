"""payment writes: payments get refunded_minor (the sum of their refunds) and
a version (their etag), CHECKs on amounts and references, and a refunds table.

RefundPayment locks the payment's row (FOR UPDATE), checks what is left of it
and writes the refund and the payment's new refunded_minor in one transaction:
``ck_payments_refunded_range`` (0 <= refunded_minor <= amount_minor) is the
database's guarantee that refunds never exceed the payment, whatever a writer
does.

Existing rows: version 1; refunded_minor 0, or the whole amount for a payment
already REFUNDED (RefundPayment keeps the two in step from now on); the CHECKs
hold for every row any writer of this service made (amounts
are never negative, references are at most 200 characters). Adding the
columns with constant defaults rewrites nothing (PostgreSQL 11+); the UPDATE
touches the refunded payments, and the three CHECKs, added in one ALTER, scan
payments once under its exclusive lock (seconds per million payments: run it
by hand on a big database, docs/architecture.md "Upgrading").

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFERENCE = "external_reference IS NULL OR char_length(external_reference) BETWEEN 1 AND 200"


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("refunded_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "payments", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    # A payment stored as REFUNDED before refunds were recorded was refunded in full.
    op.execute("UPDATE payments SET refunded_minor = amount_minor WHERE status = 'refunded'")
    # One ALTER: the table is scanned once for the three CHECKs.
    op.execute(
        "ALTER TABLE payments "
        "ADD CONSTRAINT ck_payments_amount_non_negative CHECK (amount_minor >= 0), "
        "ADD CONSTRAINT ck_payments_refunded_range "
        "CHECK (refunded_minor BETWEEN 0 AND amount_minor), "
        f"ADD CONSTRAINT ck_payments_external_reference_length CHECK ({REFERENCE})"
    )
    op.create_table(
        "refunds",
        sa.Column("organization_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("payment_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("external_reference", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_refunds_currency_format")),
        sa.CheckConstraint(
            "reason IS NULL OR char_length(reason) <= 500", name=op.f("ck_refunds_reason_length")
        ),
        sa.CheckConstraint(REFERENCE, name=op.f("ck_refunds_external_reference_length")),
        sa.ForeignKeyConstraint(
            ["organization_id", "payment_id"],
            ["payments.organization_id", "payments.id"],
            name=op.f("fk_refunds_organization_id_payment_id_payments"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_refunds")),
        sa.UniqueConstraint(
            "organization_id",
            "external_reference",
            name=op.f("uq_refunds_organization_id_external_reference"),
        ),
    )
    # A payment's refunds, and the foreign key's checks.
    op.create_index("ix_refunds_org_payment_id", "refunds", ["organization_id", "payment_id"])


def downgrade() -> None:
    op.drop_index("ix_refunds_org_payment_id", table_name="refunds")
    op.drop_table("refunds")
    for name in (
        "external_reference_length",
        "refunded_range",
        "amount_non_negative",
    ):
        op.drop_constraint(op.f(f"ck_payments_{name}"), "payments", type_="check")
    op.drop_column("payments", "version")
    op.drop_column("payments", "refunded_minor")
