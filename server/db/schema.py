"""The one schema source: SQLAlchemy 2 Core tables for the whole domain.

Alembic migrations are written from this module and a test checks that the
migrated database and this metadata do not differ.

Keys are tenant-first: ``PRIMARY KEY (organization_id, id)`` and composite
foreign keys ``(organization_id, x_id)``, so a row can never point into another
tenant and the schema can later be distributed by organization_id.
Money is integer minor units plus a currency code; instants are timestamptz.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSTZRANGE, UUID, ExcludeConstraint

__all__ = [
    "APPOINTMENT_STATUSES",
    "PAYMENT_METHODS",
    "PAYMENT_STATUSES",
    "ROLLUP_TABLES",
    "appointments",
    "audit_events",
    "clients",
    "date_overrides",
    "metadata",
    "offerings",
    "organizations",
    "payments",
    "providers",
    "refunds",
    "request_results",
    "services",
    "time_off",
    "working_hours",
]

# Constraint names are deterministic so that errors can be mapped by name.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Each table declares, in ``info["constraint_fields"]``, what a violation of
# each of its constraints means to a caller: constraint name -> (ErrorInfo
# reason, request field paths...). server.db.errors collects these; a
# constraint declared with no field names no field (never a guessed one).
# Every constraint but the primary key must be declared (a test checks it).

APPOINTMENT_STATUSES = ("pending", "confirmed", "completed", "cancelled", "no_show")
# Statuses that occupy the provider's time (covered by the exclusion constraint).
BLOCKING_STATUSES = ("pending", "confirmed", "completed")
PAYMENT_STATUSES = ("pending", "completed", "refunded", "failed")
PAYMENT_METHODS = ("card", "cash", "bank_transfer", "other")
# An appointment lasts at most this long (a service's duration is 1-1440 minutes).
MAX_APPOINTMENT_HOURS = 24


# Ranges of the booking policy columns (organizations, services; NULL = inherit).
_POLICY_CHECK = (
    "(min_notice_minutes IS NULL OR min_notice_minutes BETWEEN 0 AND 525600) "
    "AND (booking_horizon_days IS NULL OR booking_horizon_days BETWEEN 1 AND 730)"
)


# A [start_minute, end_minute) range of wall-clock minutes within one day.
_MINUTES_CHECK = "start_minute >= 0 AND start_minute < end_minute AND end_minute <= 1440"


# appointments.occupied is exactly during widened by the buffers.
_OCCUPIED_CHECK = (
    "buffer_before_minutes BETWEEN 0 AND 1440 AND buffer_after_minutes BETWEEN 0 AND 1440 "
    "AND occupied = tstzrange(lower(during) - make_interval(mins => buffer_before_minutes), "
    "upper(during) + make_interval(mins => buffer_after_minutes))"
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# The exclusion constraint's predicate: a query that repeats it word for word
# can use the constraint's GiST index (availability, conflict checks).
BLOCKING_SQL = _in("status", BLOCKING_STATUSES)


def _ts(name: str) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=text("now()"))


def _folded_key(name: str) -> Column[object]:
    """A folded twin of a name (server.text.fold, written by the query layer
    with its source, as clients' keys are), in the "C" collation so that the
    keyset and prefix ranges are exact byte comparisons the btree serves."""
    return Column(name, Text().with_variant(Text(collation="C"), "postgresql"), nullable=False)


def _name_indexes(table: str, key: str) -> tuple[Index, Index, Index]:
    """The indexes of a list ordered by a folded name or by create time, with
    a name search: (tenant, key, id) for the name order and 1-2 character
    prefix searches; (tenant, created_at, id) for the create_time order and
    the created range; a trigram GIN over (tenant, key) for substring searches."""
    return (
        Index(f"ix_{table}_org_{key}_id", "organization_id", key, "id"),
        Index(f"ix_{table}_org_created_at_id", "organization_id", "created_at", "id"),
        Index(
            f"ix_{table}_org_{key}_trgm",
            "organization_id",
            key,
            postgresql_using="gin",
            postgresql_ops={key: "gin_trgm_ops"},
        ),
    )


def _tenant_fk(columns: list[str], table: str, ondelete: str | None = None) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["organization_id", *columns],
        [f"{table}.organization_id", f"{table}.id"],
        ondelete=ondelete,
    )


organizations = Table(
    "organizations",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("slug", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _ts("created_at"),
    _ts("updated_at"),
    # Booking policy (availability.proto): least notice, furthest horizon.
    Column("min_notice_minutes", Integer, nullable=False, server_default=text("0")),
    Column("booking_horizon_days", Integer, nullable=False, server_default=text("365")),
    # ISO weekday (1 = Monday ... 7 = Sunday) the organization's weeks start
    # on: the WEEK buckets of the summaries (migration 0006).
    Column("first_day_of_week", SmallInteger, nullable=False, server_default=text("1")),
    UniqueConstraint("slug"),
    CheckConstraint(_POLICY_CHECK, name="booking_policy_range"),
    CheckConstraint("first_day_of_week BETWEEN 1 AND 7", name="first_day_of_week_range"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
    CheckConstraint(
        "slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) <= 63", name="slug_format"
    ),
    info={
        "constraint_fields": {
            "uq_organizations_slug": ("SLUG_TAKEN", "organization.slug"),
            "ck_organizations_name_length": ("CONSTRAINT_VIOLATED", "organization.name"),
            "ck_organizations_slug_format": ("CONSTRAINT_VIOLATED", "organization.slug"),
            "ck_organizations_booking_policy_range": (
                "CONSTRAINT_VIOLATED",
                "organization.min_notice_minutes",
                "organization.booking_horizon_days",
            ),
            "ck_organizations_first_day_of_week_range": (
                "CONSTRAINT_VIOLATED",
                "organization.first_day_of_week",
            ),
        }
    },
)

providers = Table(
    "providers",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("email", Text),
    Column("time_zone", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _ts("created_at"),
    _ts("updated_at"),
    # ListProviders: order_by display_name and the name search (migration 0004).
    _folded_key("display_key"),
    PrimaryKeyConstraint("organization_id", "id"),
    ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
    CheckConstraint("char_length(display_name) BETWEEN 1 AND 200", name="display_name_length"),
    *_name_indexes("providers", "display_key"),
    info={
        "constraint_fields": {
            "ck_providers_display_name_length": ("CONSTRAINT_VIOLATED", "provider.display_name"),
            "fk_providers_organization_id_organizations": ("ORGANIZATION_NOT_FOUND",),
        }
    },
)

services = Table(
    "services",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("name", Text, nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("buffer_before_minutes", Integer, nullable=False, server_default=text("0")),
    Column("buffer_after_minutes", Integer, nullable=False, server_default=text("0")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _ts("created_at"),
    _ts("updated_at"),
    # Booking policy of this service; NULL = the organization's.
    Column("min_notice_minutes", Integer),
    Column("booking_horizon_days", Integer),
    # ListServices: order_by name and the name search (migration 0004).
    _folded_key("name_key"),
    PrimaryKeyConstraint("organization_id", "id"),
    ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
    CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
    *_name_indexes("services", "name_key"),
    CheckConstraint(_POLICY_CHECK, name="booking_policy_range"),
    CheckConstraint("duration_minutes BETWEEN 1 AND 1440", name="duration_range"),
    CheckConstraint("price_minor >= 0", name="price_non_negative"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_format"),
    CheckConstraint(
        "buffer_before_minutes BETWEEN 0 AND 1440 AND buffer_after_minutes BETWEEN 0 AND 1440",
        name="buffer_range",
    ),
    info={
        "constraint_fields": {
            "ck_services_name_length": ("CONSTRAINT_VIOLATED", "service.name"),
            "ck_services_duration_range": ("CONSTRAINT_VIOLATED", "service.duration_minutes"),
            "ck_services_price_non_negative": ("CONSTRAINT_VIOLATED", "service.price.amount_minor"),
            "ck_services_currency_format": ("CONSTRAINT_VIOLATED", "service.price.currency_code"),
            "ck_services_buffer_range": (
                "CONSTRAINT_VIOLATED",
                "service.buffer_before_minutes",
                "service.buffer_after_minutes",
            ),
            "ck_services_booking_policy_range": (
                "CONSTRAINT_VIOLATED",
                "service.min_notice_minutes",
                "service.booking_horizon_days",
            ),
            "fk_services_organization_id_organizations": ("ORGANIZATION_NOT_FOUND",),
        }
    },
)

# Which provider offers which service (availability and booking only for
# these), with the provider's own duration and price when they differ.
offerings = Table(
    "offerings",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    Column("service_id", UUID(as_uuid=False), nullable=False),
    Column("duration_minutes", Integer),
    Column("price_minor", BigInteger),
    Column("currency", Text),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _ts("created_at"),
    _ts("updated_at"),
    PrimaryKeyConstraint("organization_id", "provider_id", "service_id"),
    _tenant_fk(["provider_id"], "providers", ondelete="CASCADE"),
    _tenant_fk(["service_id"], "services", ondelete="CASCADE"),
    CheckConstraint(
        "duration_minutes IS NULL OR duration_minutes BETWEEN 1 AND 1440", name="duration_range"
    ),
    CheckConstraint(
        "(price_minor IS NULL AND currency IS NULL) OR "
        "(price_minor >= 0 AND currency ~ '^[A-Z]{3}$')",
        name="price_valid",
    ),
    # ListOfferings by service (the primary key serves it by provider).
    Index(
        "ix_offerings_org_service_id_provider_id", "organization_id", "service_id", "provider_id"
    ),
    info={
        "constraint_fields": {
            "ck_offerings_duration_range": ("CONSTRAINT_VIOLATED", "offering.duration_minutes"),
            "ck_offerings_price_valid": ("CONSTRAINT_VIOLATED", "offering.price"),
            "fk_offerings_organization_id_provider_id_providers": (
                "PROVIDER_NOT_FOUND",
                "offering.provider_id",
            ),
            "fk_offerings_organization_id_service_id_services": (
                "SERVICE_NOT_FOUND",
                "offering.service_id",
            ),
        }
    },
)

clients = Table(
    "clients",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("given_name", Text, nullable=False, server_default=text("''")),
    Column("family_name", Text, nullable=False, server_default=text("''")),
    Column("email", Text),
    Column("phone", Text),
    Column("external_id", Text),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _ts("created_at"),
    _ts("updated_at"),
    # Folded twins of the searchable columns (server.text.fold: NFKC + case
    # folding, done in Python, the one rule for stored keys and search terms;
    # PostgreSQL's lower() differs by version and provider). Written in the
    # same statement as the column they fold (server.queries._crud derives
    # them); no default, so a writer that forgets one fails loudly.
    Column("given_key", Text, nullable=False),
    Column("family_key", Text, nullable=False),
    Column("email_key", Text),
    # Sort key of order_by "name": folded family name then given name, in the
    # "C" collation so that keyset comparisons and prefix ranges are exact
    # byte (= code point) comparisons the btree can serve. Concatenation only:
    # the folding happened in Python.
    Column(
        "name_key",
        Text().with_variant(Text(collation="C"), "postgresql"),
        Computed("(family_key || ' ' || given_key)", persisted=True),
        nullable=False,
    ),
    # What free-text search matches (trigram GIN index), folded likewise.
    Column(
        "search_text",
        Text,
        Computed(
            "(given_key || ' ' || family_key || ' ' || coalesce(email_key, '') "
            "|| ' ' || coalesce(phone, ''))",
            persisted=True,
        ),
        nullable=False,
    ),
    PrimaryKeyConstraint("organization_id", "id"),
    ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
    UniqueConstraint("organization_id", "external_id"),
    CheckConstraint(
        "char_length(given_name) <= 200 AND char_length(family_name) <= 200 "
        "AND char_length(given_name) + char_length(family_name) > 0",
        name="name_length",
    ),
    CheckConstraint("phone IS NULL OR phone ~ '^\\+[1-9][0-9]{1,14}$'", name="phone_e164"),
    CheckConstraint("email IS NULL OR email ~ '^[^@\\s]+@[^@\\s]+$'", name="email_format"),
    CheckConstraint(
        "external_id IS NULL OR char_length(external_id) BETWEEN 1 AND 200",
        name="external_id_length",
    ),
    # ListClients order_by "name": keyset (name_key, id) within a tenant.
    Index("ix_clients_org_name_key_id", "organization_id", "name_key", "id"),
    # ListClients order_by "create_time" and the created range filter.
    Index("ix_clients_org_created_at_id", "organization_id", "created_at", "id"),
    # ListClients free-text search: tenant + trigram in one GIN (btree_gin).
    Index(
        "ix_clients_org_search_trgm",
        "organization_id",
        "search_text",
        postgresql_using="gin",
        postgresql_ops={"search_text": "gin_trgm_ops"},
    ),
    info={
        "constraint_fields": {
            "uq_clients_organization_id_external_id": ("EXTERNAL_ID_TAKEN", "client.external_id"),
            "ck_clients_name_length": (
                "CONSTRAINT_VIOLATED",
                "client.given_name",
                "client.family_name",
            ),
            "ck_clients_phone_e164": ("CONSTRAINT_VIOLATED", "client.phone"),
            "ck_clients_email_format": ("CONSTRAINT_VIOLATED", "client.email"),
            "ck_clients_external_id_length": ("CONSTRAINT_VIOLATED", "client.external_id"),
            "fk_clients_organization_id_organizations": ("ORGANIZATION_NOT_FOUND",),
        }
    },
)

working_hours = Table(
    "working_hours",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    # ISO weekday: 1 = Monday ... 7 = Sunday.
    Column("weekday", SmallInteger, nullable=False),
    # Wall-clock minutes of the day in the provider's zone: [start, end),
    # end 1440 = midnight at the end of the day.
    Column("start_minute", SmallInteger, nullable=False),
    Column("end_minute", SmallInteger, nullable=False),
    # Business dates (inclusive); NULL = open.
    Column("valid_from", Date),
    Column("valid_to", Date),
    PrimaryKeyConstraint("organization_id", "id"),
    _tenant_fk(["provider_id"], "providers", ondelete="CASCADE"),
    CheckConstraint("weekday BETWEEN 1 AND 7", name="weekday_range"),
    CheckConstraint(_MINUTES_CHECK, name="time_order"),
    CheckConstraint(
        "valid_to IS NULL OR valid_from IS NULL OR valid_from <= valid_to", name="valid_order"
    ),
    Index("ix_working_hours_org_provider_weekday", "organization_id", "provider_id", "weekday"),
    info={
        "constraint_fields": {
            "ck_working_hours_weekday_range": ("CONSTRAINT_VIOLATED",),
            "ck_working_hours_time_order": ("CONSTRAINT_VIOLATED",),
            "ck_working_hours_valid_order": ("CONSTRAINT_VIOLATED",),
            "fk_working_hours_organization_id_provider_id_providers": ("PROVIDER_NOT_FOUND",),
        }
    },
)

date_overrides = Table(
    "date_overrides",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    Column("on_date", Date, nullable=False),
    # One row per interval of the date, or one closed row (NULL minutes).
    Column("closed", Boolean, nullable=False, server_default=text("false")),
    Column("start_minute", SmallInteger),
    Column("end_minute", SmallInteger),
    PrimaryKeyConstraint("organization_id", "id"),
    _tenant_fk(["provider_id"], "providers", ondelete="CASCADE"),
    CheckConstraint(
        f"(closed AND start_minute IS NULL AND end_minute IS NULL) OR "
        f"(NOT closed AND {_MINUTES_CHECK})",
        name="hours_when_open",
    ),
    Index("ix_date_overrides_org_provider_on_date", "organization_id", "provider_id", "on_date"),
    info={
        "constraint_fields": {
            "ck_date_overrides_hours_when_open": ("CONSTRAINT_VIOLATED",),
            "fk_date_overrides_organization_id_provider_id_providers": ("PROVIDER_NOT_FOUND",),
        }
    },
)

time_off = Table(
    "time_off",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    Column("during", TSTZRANGE, nullable=False),
    Column("reason", Text),
    _ts("created_at"),
    # The bounds of during, for ListTimeOff's order and keyset.
    Column(
        "start_at",
        DateTime(timezone=True),
        Computed("lower(during)", persisted=True),
        nullable=False,
    ),
    Column(
        "end_at", DateTime(timezone=True), Computed("upper(during)", persisted=True), nullable=False
    ),
    PrimaryKeyConstraint("organization_id", "id"),
    _tenant_fk(["provider_id"], "providers", ondelete="CASCADE"),
    CheckConstraint("NOT isempty(during)", name="during_not_empty"),
    CheckConstraint("reason IS NULL OR char_length(reason) <= 500", name="reason_length"),
    # Finite and at most 366 days: ListTimeOff's range bound relies on it.
    CheckConstraint(
        "NOT lower_inf(during) AND NOT upper_inf(during) "
        "AND upper(during) - lower(during) <= interval '366 days'",
        name="during_bounded",
    ),
    Index(
        "ix_time_off_org_provider_start_at_id", "organization_id", "provider_id", "start_at", "id"
    ),
    Index(
        "ix_time_off_org_provider_during",
        "organization_id",
        "provider_id",
        "during",
        postgresql_using="gist",
    ),
    info={
        "constraint_fields": {
            "ck_time_off_during_not_empty": ("CONSTRAINT_VIOLATED",),
            "ck_time_off_reason_length": ("CONSTRAINT_VIOLATED", "time_off.reason"),
            "ck_time_off_during_bounded": ("CONSTRAINT_VIOLATED", "time_off.end_time"),
            "fk_time_off_organization_id_provider_id_providers": ("PROVIDER_NOT_FOUND",),
        }
    },
)

appointments = Table(
    "appointments",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    Column("client_id", UUID(as_uuid=False), nullable=False),
    Column("service_id", UUID(as_uuid=False), nullable=False),
    # Half-open [start, end).
    Column("during", TSTZRANGE, nullable=False),
    Column("status", Text, nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("external_id", Text),
    Column("notes", Text),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _ts("created_at"),
    _ts("updated_at"),
    Column("cancel_reason", Text),
    # The service's buffers when booked, and the provider's time the
    # appointment occupies: [lower(during) - before, upper(during) + after).
    # Written together by server.queries.appointments.
    Column("buffer_before_minutes", Integer, nullable=False, server_default=text("0")),
    Column("buffer_after_minutes", Integer, nullable=False, server_default=text("0")),
    Column("occupied", TSTZRANGE, nullable=False),
    # The bounds of during, for the lists' order, keyset and range filters.
    Column(
        "start_at",
        DateTime(timezone=True),
        Computed("lower(during)", persisted=True),
        nullable=False,
    ),
    Column(
        "end_at", DateTime(timezone=True), Computed("upper(during)", persisted=True), nullable=False
    ),
    PrimaryKeyConstraint("organization_id", "id"),
    _tenant_fk(["provider_id"], "providers"),
    _tenant_fk(["client_id"], "clients"),
    _tenant_fk(["service_id"], "services"),
    UniqueConstraint("organization_id", "external_id"),
    CheckConstraint(_in("status", APPOINTMENT_STATUSES), name="status_values"),
    CheckConstraint("price_minor >= 0", name="price_non_negative"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_format"),
    CheckConstraint(
        "NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during) "
        "AND lower_inc(during) AND NOT upper_inc(during)",
        name="during_half_open",
    ),
    CheckConstraint(_OCCUPIED_CHECK, name="occupied_covers"),
    # At most a day (a service lasts 1-1440 minutes): a range filter on
    # start_at can then bound the overlap search (ListAppointments).
    CheckConstraint(
        f"upper(during) - lower(during) <= interval '{MAX_APPOINTMENT_HOURS} hours'",
        name="during_bounded",
    ),
    CheckConstraint(
        "cancel_reason IS NULL OR char_length(cancel_reason) <= 500", name="cancel_reason_length"
    ),
    # The database itself forbids a double booking: no two blocking
    # appointments of a provider occupy overlapping time (buffers included).
    # Its GiST index also serves the availability and conflict range scans.
    ExcludeConstraint(
        ("organization_id", "="),
        ("provider_id", "="),
        ("occupied", "&&"),
        name="ex_appointments_no_overlap",
        using="gist",
        where=text(BLOCKING_SQL),
    ),
    # The lists' indexes (migration 0004 says which query each serves): by
    # start time within the tenant, a provider, a client, a service.
    Index("ix_appointments_org_start_at_id", "organization_id", "start_at", "id"),
    Index(
        "ix_appointments_org_provider_start_at_id",
        "organization_id",
        "provider_id",
        "start_at",
        "id",
    ),
    Index(
        "ix_appointments_org_client_start_at_id", "organization_id", "client_id", "start_at", "id"
    ),
    Index(
        "ix_appointments_org_service_start_at_id", "organization_id", "service_id", "start_at", "id"
    ),
    info={
        "constraint_fields": {
            "uq_appointments_organization_id_external_id": (
                "EXTERNAL_ID_TAKEN",
                "appointment.external_id",
            ),
            "ex_appointments_no_overlap": ("TIME_SLOT_TAKEN", "appointment.start_time"),
            "ck_appointments_occupied_covers": ("CONSTRAINT_VIOLATED",),
            "ck_appointments_cancel_reason_length": ("CONSTRAINT_VIOLATED",),
            "ck_appointments_during_bounded": ("CONSTRAINT_VIOLATED",),
            "ck_appointments_status_values": ("CONSTRAINT_VIOLATED", "appointment.status"),
            "ck_appointments_price_non_negative": (
                "CONSTRAINT_VIOLATED",
                "appointment.price.amount_minor",
            ),
            "ck_appointments_currency_format": (
                "CONSTRAINT_VIOLATED",
                "appointment.price.currency_code",
            ),
            "ck_appointments_during_half_open": (
                "CONSTRAINT_VIOLATED",
                "appointment.start_time",
                "appointment.end_time",
            ),
            "fk_appointments_organization_id_provider_id_providers": (
                "PROVIDER_NOT_FOUND",
                "appointment.provider_id",
            ),
            "fk_appointments_organization_id_client_id_clients": (
                "CLIENT_NOT_FOUND",
                "appointment.client_id",
            ),
            "fk_appointments_organization_id_service_id_services": (
                "SERVICE_NOT_FOUND",
                "appointment.service_id",
            ),
        }
    },
)

payments = Table(
    "payments",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("client_id", UUID(as_uuid=False), nullable=False),
    Column("appointment_id", UUID(as_uuid=False)),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("external_reference", Text),
    _ts("created_at"),
    _ts("updated_at"),
    # The sum of its refunds (migration 0005), and the etag's version.
    Column("refunded_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    PrimaryKeyConstraint("organization_id", "id"),
    _tenant_fk(["client_id"], "clients"),
    _tenant_fk(["appointment_id"], "appointments"),
    UniqueConstraint("organization_id", "external_reference"),
    CheckConstraint(_in("status", PAYMENT_STATUSES), name="status_values"),
    CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
    CheckConstraint("refunded_minor BETWEEN 0 AND amount_minor", name="refunded_range"),
    CheckConstraint(
        "external_reference IS NULL OR char_length(external_reference) BETWEEN 1 AND 200",
        name="external_reference_length",
    ),
    CheckConstraint(_in("method", PAYMENT_METHODS), name="method_values"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_format"),
    # ListPayments (migration 0004 says which query each serves).
    Index("ix_payments_org_created_at_id", "organization_id", "created_at", "id"),
    Index(
        "ix_payments_org_client_created_at_id", "organization_id", "client_id", "created_at", "id"
    ),
    Index("ix_payments_org_status_created_at_id", "organization_id", "status", "created_at", "id"),
    Index("ix_payments_org_appointment_id", "organization_id", "appointment_id"),
    info={
        "constraint_fields": {
            "uq_payments_organization_id_external_reference": (
                "EXTERNAL_REFERENCE_TAKEN",
                "payment.external_reference",
            ),
            "ck_payments_status_values": ("CONSTRAINT_VIOLATED", "payment.status"),
            "ck_payments_amount_non_negative": (
                "CONSTRAINT_VIOLATED",
                "payment.amount.amount_minor",
            ),
            "ck_payments_refunded_range": ("CONSTRAINT_VIOLATED",),
            "ck_payments_external_reference_length": (
                "CONSTRAINT_VIOLATED",
                "payment.external_reference",
            ),
            "ck_payments_method_values": ("CONSTRAINT_VIOLATED", "payment.method"),
            "ck_payments_currency_format": ("CONSTRAINT_VIOLATED", "payment.amount.currency_code"),
            "fk_payments_organization_id_client_id_clients": (
                "CLIENT_NOT_FOUND",
                "payment.client_id",
            ),
            "fk_payments_organization_id_appointment_id_appointments": (
                "APPOINTMENT_NOT_FOUND",
                "payment.appointment_id",
            ),
        }
    },
)

# Money given back from a payment (RefundPayment). A refund is never more
# than what is left of its payment: the payment's row is locked, checked and
# updated (refunded_minor) in the refund's transaction.
refunds = Table(
    "refunds",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("payment_id", UUID(as_uuid=False), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("reason", Text),
    Column("external_reference", Text),
    _ts("created_at"),
    PrimaryKeyConstraint("organization_id", "id"),
    _tenant_fk(["payment_id"], "payments"),
    UniqueConstraint("organization_id", "external_reference"),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_format"),
    CheckConstraint("reason IS NULL OR char_length(reason) <= 500", name="reason_length"),
    CheckConstraint(
        "external_reference IS NULL OR char_length(external_reference) BETWEEN 1 AND 200",
        name="external_reference_length",
    ),
    # A payment's refunds (and the foreign key's checks).
    Index("ix_refunds_org_payment_id", "organization_id", "payment_id"),
    # A rollups repair's refunds of a month (migration 0006).
    Index("ix_refunds_org_created_at_id", "organization_id", "created_at", "id"),
    info={
        "constraint_fields": {
            "uq_refunds_organization_id_external_reference": (
                "EXTERNAL_REFERENCE_TAKEN",
                "external_reference",
            ),
            "ck_refunds_amount_positive": ("CONSTRAINT_VIOLATED", "amount_minor"),
            "ck_refunds_currency_format": ("CONSTRAINT_VIOLATED",),
            "ck_refunds_reason_length": ("CONSTRAINT_VIOLATED", "reason"),
            "ck_refunds_external_reference_length": ("CONSTRAINT_VIOLATED", "external_reference"),
            "fk_refunds_organization_id_payment_id_payments": (
                "PAYMENT_NOT_FOUND",
                "payment_id",
            ),
        }
    },
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("id", UUID(as_uuid=False), nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("resource_type", Text, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("request_id", Text),
    Column("correlation_id", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("changed_fields", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    PrimaryKeyConstraint("organization_id", "id"),
    ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
    # ListAuditEvents: newest first within a tenant, optionally by resource or actor.
    Index("ix_audit_events_org_occurred_at_id", "organization_id", "occurred_at", "id"),
    Index(
        "ix_audit_events_org_resource",
        "organization_id",
        "resource_type",
        "resource_id",
        "occurred_at",
        "id",
    ),
    Index("ix_audit_events_org_actor", "organization_id", "actor", "occurred_at", "id"),
    info={
        "constraint_fields": {
            "fk_audit_events_organization_id_organizations": ("ORGANIZATION_NOT_FOUND",),
        }
    },
)

# Stored write results (AIP-155): a retried write with the same request_id
# returns the first answer. organization_id is the nil UUID for writes that are
# not scoped by an existing tenant (CreateOrganization), hence no foreign key.
request_results = Table(
    "request_results",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("request_id", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("response", LargeBinary),
    _ts("created_at"),
    PrimaryKeyConstraint("organization_id", "request_id"),
    # For purging old results.
    Index("ix_request_results_created_at", "created_at"),
)


# -- rollups (migration 0006; maintained by server/queries/rollups.py) --------------
#
# Derived tables that the summaries read instead of the raw appointments,
# payments and refunds. Every write that changes a raw row applies its delta to
# them in the same transaction (one statement, server.queries.rollups.apply);
# `booking-data rollups check|repair` recomputes them from the raw rows. Keys
# are tenant-first (a distributed schema keeps them on the tenant's shard);
# they have no foreign keys: they are derived, and a foreign key check would
# take a KEY SHARE lock on the parent row on every write.

# The measures of a (provider | service | organization) x period x currency
# row: appointments by status; booked_minutes, expected_minor for the booked
# ones (pending, confirmed, completed); completed_minor; payments and refunds.
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
# Rows of the organization's tables are spread over this many shards (by the
# provider's id), so that concurrent writes of one tenant and day do not all
# wait for one row; a read sums the shards.
ORGANIZATION_SHARDS = 8


def _measures(names: tuple[str, ...]) -> list[Column[object]]:
    return [Column(n, BigInteger, nullable=False, server_default=text("0")) for n in names]


def _period_totals(
    name: str, key: str | None, period: str, shard: bool = False, indexes: tuple[Index, ...] = ()
) -> Table:
    keys: list[Column[Any]] = [Column("organization_id", UUID(as_uuid=False), nullable=False)]
    if key is not None:
        keys.append(Column(key, UUID(as_uuid=False), nullable=False))
    keys += [Column(period, Date, nullable=False), Column("currency", Text, nullable=False)]
    if shard:
        keys.append(Column("shard", SmallInteger, nullable=False))
    return Table(
        name,
        metadata,
        *keys,
        *_measures(PERIOD_MEASURES),
        PrimaryKeyConstraint(*(c.name for c in keys)),
        *indexes,
        info={"constraint_fields": {}},
    )


# Per provider and business date (the provider's zone), and per month. Each has
# an index of a currency's rows by date (month), tenant first, holding the
# provider and its completed figures: GetDashboard ranks the tenant's providers
# from one index-only range scan of them, not a scan per provider.
_RANKED = ["provider_id", "completed_minor", "completed"]
provider_day_totals = _period_totals(
    "provider_day_totals",
    "provider_id",
    "business_date",
    indexes=(
        Index(
            "ix_provider_day_totals_org_currency_date",
            "organization_id",
            "currency",
            "business_date",
            postgresql_include=_RANKED,
        ),
    ),
)
provider_month_totals = _period_totals(
    "provider_month_totals",
    "provider_id",
    "month",
    indexes=(
        Index(
            "ix_provider_month_totals_org_currency_month",
            "organization_id",
            "currency",
            "month",
            postgresql_include=_RANKED,
        ),
    ),
)
# Per service and business date.
service_day_totals = _period_totals("service_day_totals", "service_id", "business_date")
# Per organization and business date, in ORGANIZATION_SHARDS shards.
organization_day_totals = _period_totals(
    "organization_day_totals", None, "business_date", shard=True
)

# Clients whose first visit with the organization is on that business date
# (sharded by the client's id).
organization_day_new_clients = Table(
    "organization_day_new_clients",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("new_clients", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("organization_id", "business_date", "shard"),
    info={"constraint_fields": {}},
)

# A client's money per currency: charged (completed appointments' price),
# paid, refunded; balance and lifetime value computed from them.
client_totals = Table(
    "client_totals",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("client_id", UUID(as_uuid=False), nullable=False),
    Column("currency", Text, nullable=False),
    *_measures(("charged_minor", "paid_minor", "payments", "refunded_minor", "refunds")),
    Column(
        "balance_minor",
        BigInteger,
        Computed("charged_minor - paid_minor + refunded_minor", persisted=True),
        nullable=False,
    ),
    Column(
        "lifetime_value_minor",
        BigInteger,
        Computed("paid_minor - refunded_minor", persisted=True),
        nullable=False,
    ),
    PrimaryKeyConstraint("organization_id", "client_id", "currency"),
    # ListClientBalances: by balance or lifetime value within a currency.
    Index(
        "ix_client_totals_org_currency_balance",
        "organization_id",
        "currency",
        "balance_minor",
        "client_id",
    ),
    Index(
        "ix_client_totals_org_currency_lifetime_value",
        "organization_id",
        "currency",
        "lifetime_value_minor",
        "client_id",
    ),
    info={"constraint_fields": {}},
)

# A client's visits (completed appointments): how many, the first and last
# start, and the first's business date (in its provider's zone).
# replaced_first_visit_date is bookkeeping of the writes: the first visit date
# an upsert replaced, returned by it so that organization_day_new_clients moves
# exactly under concurrent writes (RETURNING sees only the new row).
client_visits = Table(
    "client_visits",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("client_id", UUID(as_uuid=False), nullable=False),
    Column("visits", BigInteger, nullable=False, server_default=text("0")),
    Column("first_visit_at", DateTime(timezone=True), nullable=False),
    Column("last_visit_at", DateTime(timezone=True), nullable=False),
    Column("first_visit_date", Date, nullable=False),
    Column("replaced_first_visit_date", Date),
    PrimaryKeyConstraint("organization_id", "client_id"),
    info={"constraint_fields": {}},
)

# A client's visits with one provider, and the business date of the first:
# GetProviderMetrics' new clients are those whose first is in the range.
provider_client_visits = Table(
    "provider_client_visits",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    Column("client_id", UUID(as_uuid=False), nullable=False),
    Column("visits", BigInteger, nullable=False, server_default=text("0")),
    Column("first_visit_date", Date, nullable=False),
    PrimaryKeyConstraint("organization_id", "provider_id", "client_id"),
    Index(
        "ix_provider_client_visits_org_provider_first",
        "organization_id",
        "provider_id",
        "first_visit_date",
    ),
    info={"constraint_fields": {}},
)

# Who visited a provider on a business date: GetProviderMetrics' unique
# clients of a range are the distinct client_ids of its rows (an index-only
# range scan of the key).
provider_day_clients = Table(
    "provider_day_clients",
    metadata,
    Column("organization_id", UUID(as_uuid=False), nullable=False),
    Column("provider_id", UUID(as_uuid=False), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("client_id", UUID(as_uuid=False), nullable=False),
    Column("visits", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("organization_id", "provider_id", "business_date", "client_id"),
    info={"constraint_fields": {}},
)

ROLLUP_TABLES = (
    provider_day_totals,
    provider_month_totals,
    service_day_totals,
    organization_day_totals,
    organization_day_new_clients,
    client_totals,
    client_visits,
    provider_client_visits,
    provider_day_clients,
)
