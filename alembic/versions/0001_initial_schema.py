"""initial schema: the whole domain, tenant-first keys, the no-double-booking
exclusion constraint and the indexes of ListClients and ListAuditEvents.

Written from server/db/schema.py (autogenerate, then reviewed); the test suite
checks that the migrated database and the metadata do not differ.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # btree_gist: the exclusion constraint mixes = on uuid with && on ranges.
    # btree_gin + pg_trgm: one GIN index over (organization_id, search_text).
    # Extensions are left in place on downgrade: they may serve other schemas.
    for extension in ("btree_gist", "btree_gin", "pg_trgm"):
        op.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
    op.create_table(
        "organizations",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("time_zone", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) <= 63",
            name=op.f("ck_organizations_slug_format"),
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 200", name=op.f("ck_organizations_name_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
    )
    op.create_table(
        "request_results",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("organization_id", "request_id", name=op.f("pk_request_results")),
    )
    op.create_index(
        "ix_request_results_created_at", "request_results", ["created_at"], unique=False
    )
    op.create_table(
        "audit_events",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.Text(), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "changed_fields",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_audit_events_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_audit_events")),
    )
    op.create_index(
        "ix_audit_events_org_actor",
        "audit_events",
        ["organization_id", "actor", "occurred_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_org_occurred_at_id",
        "audit_events",
        ["organization_id", "occurred_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_org_resource",
        "audit_events",
        ["organization_id", "resource_type", "resource_id", "occurred_at", "id"],
        unique=False,
    )
    op.create_table(
        "clients",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("given_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("family_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "name_key",
            sa.Text(collation="C"),
            sa.Computed("lower(family_name || ' ' || given_name)", persisted=True),
            nullable=False,
        ),
        sa.Column(
            "search_text",
            sa.Text(),
            sa.Computed(
                "lower(given_name || ' ' || family_name || ' ' || coalesce(email, '') || ' ' || coalesce(phone, ''))",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "email IS NULL OR email ~ '^[^@\\s]+@[^@\\s]+$'", name=op.f("ck_clients_email_format")
        ),
        sa.CheckConstraint(
            "phone IS NULL OR phone ~ '^\\+[1-9][0-9]{1,14}$'", name=op.f("ck_clients_phone_e164")
        ),
        sa.CheckConstraint(
            "char_length(given_name) <= 200 AND char_length(family_name) <= 200 AND char_length(given_name) + char_length(family_name) > 0",
            name=op.f("ck_clients_name_length"),
        ),
        sa.CheckConstraint(
            "external_id IS NULL OR char_length(external_id) BETWEEN 1 AND 200",
            name=op.f("ck_clients_external_id_length"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_clients_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_clients")),
        sa.UniqueConstraint(
            "organization_id", "external_id", name=op.f("uq_clients_organization_id_external_id")
        ),
    )
    op.create_index(
        "ix_clients_org_created_at_id",
        "clients",
        ["organization_id", "created_at", "id"],
        unique=False,
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
    op.create_table(
        "providers",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("time_zone", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(display_name) BETWEEN 1 AND 200",
            name=op.f("ck_providers_display_name_length"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_providers_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_providers")),
    )
    op.create_table(
        "services",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column(
            "buffer_before_minutes", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "buffer_after_minutes", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_services_currency_format")),
        sa.CheckConstraint(
            "buffer_before_minutes BETWEEN 0 AND 1440 AND buffer_after_minutes BETWEEN 0 AND 1440",
            name=op.f("ck_services_buffer_range"),
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 200", name=op.f("ck_services_name_length")
        ),
        sa.CheckConstraint(
            "duration_minutes BETWEEN 1 AND 1440", name=op.f("ck_services_duration_range")
        ),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_services_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_services_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_services")),
    )
    op.create_table(
        "appointments",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("provider_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("client_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("service_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("during", postgresql.TSTZRANGE(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        postgresql.ExcludeConstraint(
            (sa.column("organization_id"), "="),
            (sa.column("provider_id"), "="),
            (sa.column("during"), "&&"),
            where=sa.text("status IN ('pending', 'confirmed', 'completed')"),
            using="gist",
            name="ex_appointments_no_overlap",
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_appointments_currency_format")),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'completed', 'cancelled', 'no_show')",
            name=op.f("ck_appointments_status_values"),
        ),
        sa.CheckConstraint(
            "NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during) AND lower_inc(during) AND NOT upper_inc(during)",
            name=op.f("ck_appointments_during_half_open"),
        ),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_appointments_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["organization_id", "client_id"],
            ["clients.organization_id", "clients.id"],
            name=op.f("fk_appointments_organization_id_client_id_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "provider_id"],
            ["providers.organization_id", "providers.id"],
            name=op.f("fk_appointments_organization_id_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "service_id"],
            ["services.organization_id", "services.id"],
            name=op.f("fk_appointments_organization_id_service_id_services"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_appointments")),
        sa.UniqueConstraint(
            "organization_id",
            "external_id",
            name=op.f("uq_appointments_organization_id_external_id"),
        ),
    )
    op.create_index(
        "ix_appointments_org_client_id",
        "appointments",
        ["organization_id", "client_id"],
        unique=False,
    )
    op.create_index(
        "ix_appointments_org_service_id",
        "appointments",
        ["organization_id", "service_id"],
        unique=False,
    )
    op.create_table(
        "date_overrides",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("provider_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("on_date", sa.Date(), nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=True),
        sa.Column("end_time", sa.Time(), nullable=True),
        sa.CheckConstraint(
            "closed OR (start_time IS NOT NULL AND end_time IS NOT NULL AND start_time < end_time)",
            name=op.f("ck_date_overrides_hours_when_open"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "provider_id"],
            ["providers.organization_id", "providers.id"],
            name=op.f("fk_date_overrides_organization_id_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_date_overrides")),
    )
    op.create_index(
        "ix_date_overrides_org_provider_on_date",
        "date_overrides",
        ["organization_id", "provider_id", "on_date"],
        unique=False,
    )
    op.create_table(
        "time_off",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("provider_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("during", postgresql.TSTZRANGE(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint("NOT isempty(during)", name=op.f("ck_time_off_during_not_empty")),
        sa.ForeignKeyConstraint(
            ["organization_id", "provider_id"],
            ["providers.organization_id", "providers.id"],
            name=op.f("fk_time_off_organization_id_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_time_off")),
    )
    op.create_index(
        "ix_time_off_org_provider_during",
        "time_off",
        ["organization_id", "provider_id", "during"],
        unique=False,
        postgresql_using="gist",
    )
    op.create_table(
        "working_hours",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("provider_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.CheckConstraint("start_time < end_time", name=op.f("ck_working_hours_time_order")),
        sa.CheckConstraint(
            "valid_to IS NULL OR valid_from <= valid_to", name=op.f("ck_working_hours_valid_order")
        ),
        sa.CheckConstraint("weekday BETWEEN 1 AND 7", name=op.f("ck_working_hours_weekday_range")),
        sa.ForeignKeyConstraint(
            ["organization_id", "provider_id"],
            ["providers.organization_id", "providers.id"],
            name=op.f("fk_working_hours_organization_id_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_working_hours")),
    )
    op.create_index(
        "ix_working_hours_org_provider_weekday",
        "working_hours",
        ["organization_id", "provider_id", "weekday"],
        unique=False,
    )
    op.create_table(
        "payments",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("client_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("appointment_id", sa.UUID(as_uuid=False), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("external_reference", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_payments_currency_format")),
        sa.CheckConstraint(
            "method IN ('card', 'cash', 'bank_transfer', 'other')",
            name=op.f("ck_payments_method_values"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'refunded', 'failed')",
            name=op.f("ck_payments_status_values"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "appointment_id"],
            ["appointments.organization_id", "appointments.id"],
            name=op.f("fk_payments_organization_id_appointment_id_appointments"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "client_id"],
            ["clients.organization_id", "clients.id"],
            name=op.f("fk_payments_organization_id_client_id_clients"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_payments")),
        sa.UniqueConstraint(
            "organization_id",
            "external_reference",
            name=op.f("uq_payments_organization_id_external_reference"),
        ),
    )
    op.create_index(
        "ix_payments_org_appointment_id",
        "payments",
        ["organization_id", "appointment_id"],
        unique=False,
    )
    op.create_index(
        "ix_payments_org_client_id_created_at",
        "payments",
        ["organization_id", "client_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_payments_org_client_id_created_at", table_name="payments")
    op.drop_index("ix_payments_org_appointment_id", table_name="payments")
    op.drop_table("payments")
    op.drop_index("ix_working_hours_org_provider_weekday", table_name="working_hours")
    op.drop_table("working_hours")
    op.drop_index("ix_time_off_org_provider_during", table_name="time_off", postgresql_using="gist")
    op.drop_table("time_off")
    op.drop_index("ix_date_overrides_org_provider_on_date", table_name="date_overrides")
    op.drop_table("date_overrides")
    op.drop_index("ix_appointments_org_service_id", table_name="appointments")
    op.drop_index("ix_appointments_org_client_id", table_name="appointments")
    op.drop_table("appointments")
    op.drop_table("services")
    op.drop_table("providers")
    op.drop_index(
        "ix_clients_org_search_trgm",
        table_name="clients",
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    )
    op.drop_index("ix_clients_org_name_key_id", table_name="clients")
    op.drop_index("ix_clients_org_created_at_id", table_name="clients")
    op.drop_table("clients")
    op.drop_index("ix_audit_events_org_resource", table_name="audit_events")
    op.drop_index("ix_audit_events_org_occurred_at_id", table_name="audit_events")
    op.drop_index("ix_audit_events_org_actor", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_request_results_created_at", table_name="request_results")
    op.drop_table("request_results")
    op.drop_table("organizations")
