"""Services (the catalogue of bookable services) and offerings (which provider
offers which service, with the provider's own duration and price).

Offering writes first lock the provider's row like schedule writes do
(:func:`server.queries.schedules.lock_provider`: what a provider offers is
part of what a booking evaluates, and bookings share that lock), so two
writes of one provider's offerings take turns and a version read under the
lock stays current until the write. The audit event is written in the same
statement as the row (resource_id ``<provider_id>/<service_id>``).

Indexes: the primary key ``(organization_id, provider_id, service_id)`` serves
ListOfferings and its provider filter; ``(organization_id, service_id,
provider_id)`` its service filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from server.db import schema
from server.db.engine import Conn
from server.errors import NotFound
from server.queries._crud import Audit, Derived, Entity, audit_cte, audit_params
from server.queries._listing import (
    KeyType,
    Listing,
    ListQuery,
    Order,
    SortKey,
    orders,
    text_search,
)
from server.text import fold

__all__ = [
    "OFFERINGS",
    "OFFERING_COLUMNS",
    "SERVICE",
    "OfferingFilter",
    "OfferingTarget",
    "delete_offering",
    "offered",
    "offering_target",
    "set_offering",
]

SERVICE = Entity.of(
    schema.services,
    "service",
    writable=(
        "name",
        "duration_minutes",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "active",
        "min_notice_minutes",
        "booking_horizon_days",
    ),
    hidden=("name_key",),
    derived=(Derived("name_key", "name", fold),),
)

OFFERING_COLUMNS = tuple(c.name for c in schema.offerings.columns)
_COLUMNS = ", ".join(OFFERING_COLUMNS)
_KEY = "organization_id = $1 AND provider_id = $2 AND service_id = $3"
# One audit event per row of the CTE ``row``; parameters $4..$10.
_AUDIT = audit_cte(4, resource_id="provider_id::text || '/' || service_id::text")


@dataclass(frozen=True, slots=True)
class OfferingTarget:
    """What a SetOffering finds under the provider's lock."""

    # The service's currency (an offering's price must be in it).
    currency: str
    # The offering's current version; None when the provider does not offer it.
    version: int | None


async def offering_target(
    conn: Conn, org_id: str, provider_id: str, service_id: str
) -> OfferingTarget:
    """The service's currency and the offering's version (the provider's row
    must be locked). NotFound (SERVICE_NOT_FOUND) for an unknown service."""
    row = await conn.fetchrow(
        "SELECT s.currency, (SELECT o.version FROM offerings o WHERE o.organization_id = $1 "
        "AND o.provider_id = $2 AND o.service_id = $3) AS version "
        "FROM services s WHERE s.organization_id = $1 AND s.id = $3",
        org_id,
        provider_id,
        service_id,
    )
    if row is None:
        raise NotFound.of("service", service_id)
    return OfferingTarget(row["currency"], row["version"])


_SET = (
    "WITH row AS (INSERT INTO offerings (organization_id, provider_id, service_id, "
    "duration_minutes, price_minor, currency) VALUES ($1, $2, $3, $11, $12, $13) "
    "ON CONFLICT (organization_id, provider_id, service_id) DO UPDATE SET "
    "duration_minutes = EXCLUDED.duration_minutes, price_minor = EXCLUDED.price_minor, "
    "currency = EXCLUDED.currency, version = offerings.version + 1, updated_at = now() "
    f"RETURNING *), {_AUDIT} SELECT {_COLUMNS} FROM row"
)


async def set_offering(
    conn: Conn,
    org_id: str,
    provider_id: str,
    service_id: str,
    values: dict[str, Any],
    *,
    creating: bool,
    audit: Audit,
) -> asyncpg.Record:
    """Insert or replace the offering (``values``: duration_minutes, price_minor,
    currency, None = the service's), audited as "create" or "update"."""
    row = await conn.fetchrow(
        _SET,
        org_id,
        provider_id,
        service_id,
        *audit_params(audit, "create" if creating else "update", "offering"),
        values["duration_minutes"],
        values["price_minor"],
        values["currency"],
    )
    assert row is not None
    return row


_DELETE = (
    f"WITH row AS (DELETE FROM offerings WHERE {_KEY} RETURNING *), "
    f"{_AUDIT} SELECT {_COLUMNS} FROM row"
)


async def delete_offering(
    conn: Conn, org_id: str, provider_id: str, service_id: str, audit: Audit
) -> None:
    """Delete the offering, audited as "delete"; NotFound (OFFERING_NOT_FOUND) when absent."""
    row = await conn.fetchrow(
        _DELETE, org_id, provider_id, service_id, *audit_params(audit, "delete", "offering")
    )
    if row is None:
        raise NotFound.of("offering", f"{provider_id}/{service_id}")


def offered(query: ListQuery, table: str, column: str, other: str, other_id: str) -> None:
    """Only the rows of ``table`` (providers or services) linked by an offering
    to ``other_id`` (a service or a provider): ``column`` is the offerings
    column naming this table's rows, ``other`` the one naming ``other_id``."""
    query.where(
        f"EXISTS (SELECT 1 FROM offerings o WHERE o.organization_id = {table}.organization_id "
        f"AND o.{other} = {query.param(other_id)} AND o.{column} = {table}.id)"
    )


@dataclass(frozen=True, slots=True)
class ServiceFilter:
    active: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Already folded (server.text.fold), as name_key is.
    query: str = ""
    # Only services this provider offers.
    provider_id: str = ""


def build_list_services_query(org_id: str, flt: ServiceFilter, order: Order) -> ListQuery:
    query = ListQuery(source="services", columns=SERVICE.columns, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    query.equals("active", flt.active)
    query.between("created_at", flt.created_after, flt.created_before)
    if flt.provider_id:
        # The offerings primary key (organization_id, provider_id, service_id).
        offered(query, "services", "service_id", "provider_id", flt.provider_id)
    text_search(query, flt.query, substring="name_key", prefix="name_key")
    return query


_ID = SortKey("id", KeyType.UUID)

SERVICES: Listing[ServiceFilter] = Listing(
    name="services",
    orders=orders(
        ("name", (SortKey("name_key", KeyType.TEXT), _ID)),
        ("create_time", (SortKey("created_at", KeyType.TIMESTAMP), _ID)),
    ),
    default_order="name",
    build=build_list_services_query,
)


@dataclass(frozen=True, slots=True)
class OfferingFilter:
    provider_id: str = ""
    service_id: str = ""


def build_list_offerings_query(org_id: str, flt: OfferingFilter, order: Order) -> ListQuery:
    query = ListQuery(source="offerings", columns=OFFERING_COLUMNS, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    if flt.provider_id:
        query.where(f"provider_id = {query.param(flt.provider_id)}")
    if flt.service_id:
        query.where(f"service_id = {query.param(flt.service_id)}")
    return query


_BY_PROVIDER = Order(
    "provider_id", (SortKey("provider_id", KeyType.UUID), SortKey("service_id", KeyType.UUID))
)

OFFERINGS: Listing[OfferingFilter] = Listing(
    name="offerings",
    orders={"provider_id": _BY_PROVIDER},
    default_order="provider_id",
    build=build_list_offerings_query,
)
