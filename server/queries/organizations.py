"""Organizations (tenants)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from server.db import schema
from server.db.engine import Conn
from server.queries._crud import Audit, Entity, get_row, insert_row, update_row

__all__ = ["create_organization", "get_organization", "update_organization"]

ORGANIZATION = Entity.of(
    schema.organizations,
    "organization",
    writable=(
        "name",
        "slug",
        "time_zone",
        "min_notice_minutes",
        "booking_horizon_days",
        "first_day_of_week",
    ),
    tenant_scoped=False,
)


async def create_organization(
    conn: Conn, org_id: str, values: Mapping[str, Any], audit: Audit
) -> asyncpg.Record:
    return await insert_row(
        conn, ORGANIZATION, org_id=org_id, row_id=org_id, values=values, audit=audit
    )


async def get_organization(conn: Conn, org_id: str) -> asyncpg.Record:
    return await get_row(conn, ORGANIZATION, org_id, org_id)


async def update_organization(
    conn: Conn,
    org_id: str,
    values: Mapping[str, Any],
    changed: Sequence[str],
    expected_version: int | None,
    audit: Audit,
) -> asyncpg.Record:
    return await update_row(
        conn,
        ORGANIZATION,
        org_id=org_id,
        row_id=org_id,
        values=values,
        changed_fields=changed,
        expected_version=expected_version,
        audit=audit,
    )
