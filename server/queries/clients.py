"""Clients: the entity and ListClients, the reference paged list.

Indexes made for these queries (see server.db.schema):
- ``(organization_id, name_key, id)``: order_by name, and 1-2 character
  searches as a prefix range on name_key (collation "C", so the range is exact);
- ``(organization_id, created_at, id)``: order_by create_time and the created range;
- GIN ``(organization_id, search_text gin_trgm_ops)``: substring search of 3+
  characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.db import schema
from server.queries._crud import Derived, Entity
from server.queries._listing import (
    TRIGRAM_MIN,
    KeyType,
    Listing,
    ListQuery,
    Order,
    SortKey,
    orders,
    text_search,
)
from server.text import fold

__all__ = ["CLIENT", "CLIENTS", "SEARCH_KEYS", "TRIGRAM_MIN", "ClientFilter"]


def _fold_nullable(value: str | None) -> str | None:
    return None if value is None else fold(value)


# The folded twins of the searchable columns, written with them (server.text).
SEARCH_KEYS = (
    Derived("given_key", "given_name", fold),
    Derived("family_key", "family_name", fold),
    Derived("email_key", "email", _fold_nullable),
)

CLIENT = Entity.of(
    schema.clients,
    "client",
    writable=("given_name", "family_name", "email", "phone", "external_id", "active"),
    hidden=("search_text", "given_key", "family_key", "email_key"),
    derived=SEARCH_KEYS,
)

_ID = SortKey("id", KeyType.UUID)


@dataclass(frozen=True, slots=True)
class ClientFilter:
    active: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Already folded (server.text.fold), as the stored keys are.
    query: str = ""


def build_list_clients_query(org_id: str, flt: ClientFilter, order: Order) -> ListQuery:
    query = ListQuery(source="clients", columns=CLIENT.columns, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    query.equals("active", flt.active)
    query.between("created_at", flt.created_after, flt.created_before)
    text_search(query, flt.query, substring="search_text", prefix="name_key")
    return query


CLIENTS: Listing[ClientFilter] = Listing(
    name="clients",
    orders=orders(
        ("name", (SortKey("name_key", KeyType.TEXT), _ID)),
        ("create_time", (SortKey("created_at", KeyType.TIMESTAMP), _ID)),
    ),
    default_order="name",
    build=build_list_clients_query,
)
