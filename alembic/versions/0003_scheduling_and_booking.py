"""scheduling and booking: working hours and date overrides in wall-clock
minutes, offerings (provider-service links), booking policy columns, and
appointments that occupy their buffers: the no-double-booking exclusion
constraint moves from ``during`` to ``occupied`` (= during plus the service's
buffers when booked).

Existing rows: hours are converted to minutes; an appointment's occupied
interval is its ``during`` (no buffers were recorded before); time off with an
open bound is closed 366 days from its other bound, and time off longer than
366 days is split into 366-day pieces. No offerings are created: after the
upgrade no provider offers any service until SetOffering says so
(availability and booking need an offering).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POLICY = (
    "(min_notice_minutes IS NULL OR min_notice_minutes BETWEEN 0 AND 525600) "
    "AND (booking_horizon_days IS NULL OR booking_horizon_days BETWEEN 1 AND 730)"
)
MINUTES = "start_minute >= 0 AND start_minute < end_minute AND end_minute <= 1440"
BLOCKING = "status IN ('pending', 'confirmed', 'completed')"


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _minutes(table: str, nullable: bool) -> None:
    for col in ("start_minute", "end_minute"):
        op.add_column(table, sa.Column(col, sa.SmallInteger(), nullable=True))
    op.execute(
        f"UPDATE {table} SET "
        "start_minute = (extract(epoch FROM start_time) / 60)::int, "
        "end_minute = CASE WHEN end_time = '00:00' THEN 1440 "
        "ELSE (extract(epoch FROM end_time) / 60)::int END "
        "WHERE start_time IS NOT NULL"
    )
    if not nullable:
        for col in ("start_minute", "end_minute"):
            op.alter_column(table, col, nullable=False)


def upgrade() -> None:
    # Booking policy.
    op.add_column(
        "organizations",
        sa.Column("min_notice_minutes", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "organizations",
        sa.Column(
            "booking_horizon_days", sa.Integer(), server_default=sa.text("365"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_organizations_booking_policy_range"), "organizations", POLICY
    )
    op.add_column("services", sa.Column("min_notice_minutes", sa.Integer(), nullable=True))
    op.add_column("services", sa.Column("booking_horizon_days", sa.Integer(), nullable=True))
    op.create_check_constraint(op.f("ck_services_booking_policy_range"), "services", POLICY)

    # Offerings.
    op.create_table(
        "offerings",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("provider_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("service_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("price_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint(
            "duration_minutes IS NULL OR duration_minutes BETWEEN 1 AND 1440",
            name=op.f("ck_offerings_duration_range"),
        ),
        sa.CheckConstraint(
            "(price_minor IS NULL AND currency IS NULL) OR "
            "(price_minor >= 0 AND currency ~ '^[A-Z]{3}$')",
            name=op.f("ck_offerings_price_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "provider_id"],
            ["providers.organization_id", "providers.id"],
            name=op.f("fk_offerings_organization_id_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "service_id"],
            ["services.organization_id", "services.id"],
            name=op.f("fk_offerings_organization_id_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "provider_id", "service_id", name=op.f("pk_offerings")
        ),
    )
    op.create_index(
        "ix_offerings_org_service_id_provider_id",
        "offerings",
        ["organization_id", "service_id", "provider_id"],
    )

    # Working hours and date overrides: wall-clock minutes.
    _minutes("working_hours", nullable=False)
    op.drop_constraint("ck_working_hours_time_order", "working_hours")
    op.drop_constraint("ck_working_hours_valid_order", "working_hours")
    op.drop_column("working_hours", "start_time")
    op.drop_column("working_hours", "end_time")
    op.alter_column("working_hours", "valid_from", nullable=True)
    op.create_check_constraint(op.f("ck_working_hours_time_order"), "working_hours", MINUTES)
    op.create_check_constraint(
        op.f("ck_working_hours_valid_order"),
        "working_hours",
        "valid_to IS NULL OR valid_from IS NULL OR valid_from <= valid_to",
    )
    _minutes("date_overrides", nullable=True)
    op.drop_constraint("ck_date_overrides_hours_when_open", "date_overrides")
    op.execute("UPDATE date_overrides SET start_minute = NULL, end_minute = NULL WHERE closed")
    op.drop_column("date_overrides", "start_time")
    op.drop_column("date_overrides", "end_time")
    op.create_check_constraint(
        op.f("ck_date_overrides_hours_when_open"),
        "date_overrides",
        f"(closed AND start_minute IS NULL AND end_minute IS NULL) OR (NOT closed AND {MINUTES})",
    )

    # Time off: finite and at most 366 days from now on (ListTimeOff's range
    # bound relies on it). No RPC wrote time off before; rows loaded directly
    # are made to fit: an open bound is closed 366 days from the other one
    # (from now when both are open), a longer one is split into 366-day pieces.
    op.execute(
        "UPDATE time_off SET during = tstzrange("
        "coalesce(upper(during), now()) - interval '366 days', upper(during)) "
        "WHERE lower_inf(during)"
    )
    op.execute(
        "UPDATE time_off SET during = tstzrange("
        "lower(during), lower(during) + interval '366 days') WHERE upper_inf(during)"
    )
    op.execute(
        "INSERT INTO time_off (organization_id, id, provider_id, during, reason) "
        "SELECT organization_id, gen_random_uuid(), provider_id, tstzrange("
        "lower(during) + k * interval '366 days', "
        "least(upper(during), lower(during) + (k + 1) * interval '366 days')), reason "
        "FROM time_off CROSS JOIN LATERAL generate_series(1, "
        "ceil(extract(epoch FROM upper(during) - lower(during)) / 31622400.0)::int - 1) AS k "
        "WHERE upper(during) - lower(during) > interval '366 days'"
    )
    op.execute(
        "UPDATE time_off SET during = tstzrange(lower(during), lower(during) + interval '366 days') "
        "WHERE upper(during) - lower(during) > interval '366 days'"
    )
    op.add_column("time_off", _ts("created_at"))
    for col, bound in (("start_at", "lower"), ("end_at", "upper")):
        op.add_column(
            "time_off",
            sa.Column(
                col,
                sa.DateTime(timezone=True),
                sa.Computed(f"{bound}(during)", persisted=True),
                nullable=False,
            ),
        )
    op.create_index(
        "ix_time_off_org_provider_start_at_id",
        "time_off",
        ["organization_id", "provider_id", "start_at", "id"],
    )
    op.create_check_constraint(
        op.f("ck_time_off_reason_length"),
        "time_off",
        "reason IS NULL OR char_length(reason) <= 500",
    )
    op.create_check_constraint(
        op.f("ck_time_off_during_bounded"),
        "time_off",
        "NOT lower_inf(during) AND NOT upper_inf(during) "
        "AND upper(during) - lower(during) <= interval '366 days'",
    )

    # Appointments occupy their buffers.
    op.add_column("appointments", sa.Column("cancel_reason", sa.Text(), nullable=True))
    for col in ("buffer_before_minutes", "buffer_after_minutes"):
        op.add_column(
            "appointments",
            sa.Column(col, sa.Integer(), server_default=sa.text("0"), nullable=False),
        )
    op.add_column("appointments", sa.Column("occupied", postgresql.TSTZRANGE(), nullable=True))
    op.execute("UPDATE appointments SET occupied = during")
    op.alter_column("appointments", "occupied", nullable=False)
    op.create_check_constraint(
        op.f("ck_appointments_occupied_covers"),
        "appointments",
        "buffer_before_minutes BETWEEN 0 AND 1440 AND buffer_after_minutes BETWEEN 0 AND 1440 "
        "AND occupied = tstzrange(lower(during) - make_interval(mins => buffer_before_minutes), "
        "upper(during) + make_interval(mins => buffer_after_minutes))",
    )
    op.create_check_constraint(
        op.f("ck_appointments_cancel_reason_length"),
        "appointments",
        "cancel_reason IS NULL OR char_length(cancel_reason) <= 500",
    )
    op.drop_constraint("ex_appointments_no_overlap", "appointments")
    op.execute(
        "ALTER TABLE appointments ADD CONSTRAINT ex_appointments_no_overlap "
        "EXCLUDE USING gist (organization_id WITH =, provider_id WITH =, occupied WITH &&) "
        f"WHERE ({BLOCKING})"
    )


def downgrade() -> None:
    op.drop_constraint("ex_appointments_no_overlap", "appointments")
    op.execute(
        "ALTER TABLE appointments ADD CONSTRAINT ex_appointments_no_overlap "
        "EXCLUDE USING gist (organization_id WITH =, provider_id WITH =, during WITH &&) "
        f"WHERE ({BLOCKING})"
    )
    op.drop_constraint("ck_appointments_cancel_reason_length", "appointments")
    op.drop_constraint("ck_appointments_occupied_covers", "appointments")
    for col in ("occupied", "buffer_after_minutes", "buffer_before_minutes", "cancel_reason"):
        op.drop_column("appointments", col)

    op.drop_index("ix_time_off_org_provider_start_at_id", table_name="time_off")
    op.drop_column("time_off", "end_at")
    op.drop_column("time_off", "start_at")
    op.drop_constraint("ck_time_off_during_bounded", "time_off")
    op.drop_constraint("ck_time_off_reason_length", "time_off")
    op.drop_column("time_off", "created_at")

    for table in ("date_overrides", "working_hours"):
        op.add_column(table, sa.Column("start_time", sa.Time(), nullable=True))
        op.add_column(table, sa.Column("end_time", sa.Time(), nullable=True))
        op.execute(
            f"UPDATE {table} SET start_time = make_interval(mins => start_minute)::time, "
            "end_time = CASE WHEN end_minute = 1440 THEN '23:59:59.999999'::time "
            "ELSE make_interval(mins => end_minute)::time END WHERE start_minute IS NOT NULL"
        )
    op.drop_constraint("ck_date_overrides_hours_when_open", "date_overrides")
    op.drop_column("date_overrides", "start_minute")
    op.drop_column("date_overrides", "end_minute")
    op.create_check_constraint(
        op.f("ck_date_overrides_hours_when_open"),
        "date_overrides",
        "closed OR (start_time IS NOT NULL AND end_time IS NOT NULL AND start_time < end_time)",
    )
    op.drop_constraint("ck_working_hours_time_order", "working_hours")
    op.drop_constraint("ck_working_hours_valid_order", "working_hours")
    op.drop_column("working_hours", "start_minute")
    op.drop_column("working_hours", "end_minute")
    op.execute("UPDATE working_hours SET valid_from = '-infinity' WHERE valid_from IS NULL")
    op.alter_column("working_hours", "valid_from", nullable=False)
    op.alter_column("working_hours", "start_time", nullable=False)
    op.alter_column("working_hours", "end_time", nullable=False)
    op.create_check_constraint(
        op.f("ck_working_hours_time_order"), "working_hours", "start_time < end_time"
    )
    op.create_check_constraint(
        op.f("ck_working_hours_valid_order"),
        "working_hours",
        "valid_to IS NULL OR valid_from <= valid_to",
    )

    op.drop_table("offerings")
    op.drop_constraint("ck_services_booking_policy_range", "services")
    op.drop_column("services", "booking_horizon_days")
    op.drop_column("services", "min_notice_minutes")
    op.drop_constraint("ck_organizations_booking_policy_range", "organizations")
    op.drop_column("organizations", "booking_horizon_days")
    op.drop_column("organizations", "min_notice_minutes")
