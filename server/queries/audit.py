"""Audit events: ListAuditEvents, newest first.

Indexes: ``(organization_id, occurred_at, id)``; ``(organization_id,
resource_type, resource_id, occurred_at, id)``; ``(organization_id, actor,
occurred_at, id)`` - each serves its filter and the order with a backward scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.db import schema
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey

__all__ = ["AUDIT_EVENTS", "AuditFilter"]

COLUMNS = tuple(c.name for c in schema.audit_events.columns)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    resource_type: str = ""
    resource_id: str = ""
    actor: str = ""
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None


def build_list_audit_events_query(org_id: str, flt: AuditFilter, order: Order) -> ListQuery:
    query = ListQuery(source="audit_events", columns=COLUMNS, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    if flt.resource_type:
        query.where(f"resource_type = {query.param(flt.resource_type)}")
    if flt.resource_id:
        query.where(f"resource_id = {query.param(flt.resource_id)}")
    if flt.actor:
        query.where(f"actor = {query.param(flt.actor)}")
    query.between("occurred_at", flt.occurred_after, flt.occurred_before)
    return query


_NEWEST_FIRST = Order(
    "occur_time desc",
    (SortKey("occurred_at", KeyType.TIMESTAMP), SortKey("id", KeyType.UUID)),
    descending=True,
)

AUDIT_EVENTS: Listing[AuditFilter] = Listing(
    name="audit_events",
    orders={"occur_time desc": _NEWEST_FIRST},
    default_order="occur_time desc",
    build=build_list_audit_events_query,
)
