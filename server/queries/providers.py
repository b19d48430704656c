"""Providers (the people who are booked), and ListProviders.

Indexes (migration 0004): ``(organization_id, display_key, id)`` for the name
order and 1-2 character searches, ``(organization_id, created_at, id)`` for
create_time, a trigram GIN on ``(organization_id, display_key)`` for 3+
character searches; the service filter probes the offerings' service index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from server.db import schema
from server.db.engine import Conn
from server.queries._crud import Derived, Entity
from server.queries._listing import (
    KeyType,
    Listing,
    ListQuery,
    Order,
    SortKey,
    orders,
    text_search,
)
from server.queries.calendar import LOCK_PROVIDER_SQL
from server.queries.catalog import offered
from server.text import fold

__all__ = ["PROVIDER", "PROVIDERS", "ProviderFilter", "zone_in_use"]

PROVIDER = Entity.of(
    schema.providers,
    "provider",
    writable=("display_name", "email", "time_zone", "active"),
    hidden=("display_key",),
    derived=(Derived("display_key", "display_name", fold),),
)


@dataclass(frozen=True, slots=True)
class ProviderFilter:
    active: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Already folded (server.text.fold), as display_key is.
    query: str = ""
    # Only providers offering this service.
    service_id: str = ""


def build_list_providers_query(org_id: str, flt: ProviderFilter, order: Order) -> ListQuery:
    query = ListQuery(source="providers", columns=PROVIDER.columns, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    query.equals("active", flt.active)
    query.between("created_at", flt.created_after, flt.created_before)
    if flt.service_id:
        # ix_offerings_org_service_id_provider_id, one probe per provider row.
        offered(query, "providers", "provider_id", "service_id", flt.service_id)
    text_search(query, flt.query, substring="display_key", prefix="display_key")
    return query


_ID = SortKey("id", KeyType.UUID)

PROVIDERS: Listing[ProviderFilter] = Listing(
    name="providers",
    orders=orders(
        ("display_name", (SortKey("display_key", KeyType.TEXT), _ID)),
        ("create_time", (SortKey("created_at", KeyType.TIMESTAMP), _ID)),
    ),
    default_order="display_name",
    build=build_list_providers_query,
)


# The provider's zone and whether it has appointments. Read in a statement of
# its own AFTER calendar.LOCK_PROVIDER_SQL (as bookings lock it): a statement
# that waits for a row lock keeps the snapshot it started with, so a booking
# that committed during the wait would not be seen by a locking read of it.
ZONE_IN_USE_SQL = """
SELECT p.time_zone,
       EXISTS (SELECT 1 FROM appointments a
               WHERE a.organization_id = $1 AND a.provider_id = $2) AS booked
FROM providers p WHERE p.organization_id = $1 AND p.id = $2
"""


async def zone_in_use(conn: Conn, org_id: str, provider_id: str) -> asyncpg.Record | None:
    """The provider's time zone and whether any appointment is booked with it
    (None when there is no such provider), its row locked first: a booking in
    flight is waited for, and then seen."""
    await conn.execute(LOCK_PROVIDER_SQL, org_id, provider_id)
    return await conn.fetchrow(ZONE_IN_USE_SQL, org_id, provider_id)
