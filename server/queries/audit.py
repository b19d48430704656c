"""Audit events: ListAuditEvents, newest first.

Indexes: ``(organization_id, occurred_at, id)``; ``(organization_id,
resource_type, resource_id, occurred_at, id)``; ``(organization_id, actor,
occurred_at, id)`` - each serves its filter and the order with a backward scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.db.engine import Conn
from server.paging import PageRequest
from server.queries._listing import CountMode, ListQuery, Page, fetch_page

__all__ = ["AuditFilter", "list_audit_events_page"]

COLUMNS = (
    "id",
    "organization_id",
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "request_id",
    "correlation_id",
    "occurred_at",
    "changed_fields",
)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    resource_type: str = ""
    resource_id: str = ""
    actor: str = ""
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None


async def list_audit_events_page(
    conn: Conn,
    org_id: str,
    flt: AuditFilter,
    page: PageRequest,
    count_mode: CountMode,
    count_cap: int,
) -> Page:
    query = ListQuery(
        table="audit_events", columns=COLUMNS, sort=("occurred_at", "id"), descending=True
    )
    query.where(f"organization_id = {query.param(org_id)}")
    if flt.resource_type:
        query.where(f"resource_type = {query.param(flt.resource_type)}")
    if flt.resource_id:
        query.where(f"resource_id = {query.param(flt.resource_id)}")
    if flt.actor:
        query.where(f"actor = {query.param(flt.actor)}")
    if flt.occurred_after is not None:
        query.where(f"occurred_at >= {query.param(flt.occurred_after)}")
    if flt.occurred_before is not None:
        query.where(f"occurred_at < {query.param(flt.occurred_before)}")
    return await fetch_page(conn, query, page, count_mode, count_cap)
