"""Clients: create / get / update and ListClients, the reference paged list.

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

from server.db.engine import Conn
from server.paging import PageRequest
from server.queries._crud import Entity
from server.queries._listing import CountMode, ListQuery, Page, fetch_page

__all__ = [
    "CLIENT",
    "ClientFilter",
    "ClientOrder",
    "list_clients_page",
]

CLIENT = Entity(
    table="clients",
    resource_type="client",
    columns=(
        "id",
        "organization_id",
        "given_name",
        "family_name",
        "email",
        "phone",
        "external_id",
        "active",
        "version",
        "created_at",
        "updated_at",
        "name_key",
    ),
    writable=("given_name", "family_name", "email", "phone", "external_id", "active"),
)

# Searches shorter than this match a name prefix; trigrams need 3 characters.
TRIGRAM_MIN = 3


@dataclass(frozen=True, slots=True)
class ClientOrder:
    # "name" -> (name_key, id); "create_time" -> (created_at, id).
    key: str
    descending: bool

    @property
    def sort(self) -> tuple[str, str]:
        return ("name_key", "id") if self.key == "name" else ("created_at", "id")


@dataclass(frozen=True, slots=True)
class ClientFilter:
    active: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Already lower-cased and stripped.
    query: str = ""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def build_list_clients_query(org_id: str, flt: ClientFilter, order: ClientOrder) -> ListQuery:
    query = ListQuery(
        table="clients", columns=CLIENT.columns, sort=order.sort, descending=order.descending
    )
    query.where(f"organization_id = {query.param(org_id)}")
    if flt.active is not None:
        query.where(f"active = {query.param(flt.active)}")
    if flt.created_after is not None:
        query.where(f"created_at >= {query.param(flt.created_after)}")
    if flt.created_before is not None:
        query.where(f"created_at < {query.param(flt.created_before)}")
    if flt.query:
        if len(flt.query) >= TRIGRAM_MIN:
            query.where(f"search_text LIKE {query.param('%' + _escape_like(flt.query) + '%')}")
        else:
            # Prefix range on the "C"-collated key: code point order = byte order.
            upper = flt.query[:-1] + chr(ord(flt.query[-1]) + 1)
            query.where(f"name_key >= {query.param(flt.query)}")
            query.where(f"name_key < {query.param(upper)}")
    return query


async def list_clients_page(
    conn: Conn,
    org_id: str,
    flt: ClientFilter,
    order: ClientOrder,
    page: PageRequest,
    count_mode: CountMode,
    count_cap: int,
) -> Page:
    """One page of clients: one statement, plus one for the count when asked."""
    query = build_list_clients_query(org_id, flt, order)
    return await fetch_page(conn, query, page, count_mode, count_cap)
