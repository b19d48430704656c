"""Services (the catalogue of bookable services)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from server.db.engine import Conn
from server.queries._crud import Audit, Entity, get_row, insert_row, update_row

__all__ = ["create_service", "get_service", "update_service"]

SERVICE = Entity(
    table="services",
    resource_type="service",
    columns=(
        "id",
        "organization_id",
        "name",
        "duration_minutes",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "active",
        "version",
        "created_at",
        "updated_at",
    ),
    writable=(
        "name",
        "duration_minutes",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "active",
    ),
)


async def create_service(
    conn: Conn, org_id: str, row_id: str, values: Mapping[str, Any], audit: Audit
) -> asyncpg.Record:
    return await insert_row(conn, SERVICE, org_id=org_id, row_id=row_id, values=values, audit=audit)


async def get_service(conn: Conn, org_id: str, row_id: str) -> asyncpg.Record:
    return await get_row(conn, SERVICE, org_id, row_id)


async def update_service(
    conn: Conn,
    org_id: str,
    row_id: str,
    values: Mapping[str, Any],
    changed: Sequence[str],
    expected_version: int | None,
    audit: Audit,
) -> asyncpg.Record:
    return await update_row(
        conn,
        SERVICE,
        org_id=org_id,
        row_id=row_id,
        values=values,
        changed_fields=changed,
        expected_version=expected_version,
        audit=audit,
    )
