"""Providers (the people who are booked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from server.db.engine import Conn
from server.queries._crud import Audit, Entity, get_row, insert_row, update_row

__all__ = ["create_provider", "get_provider", "update_provider"]

PROVIDER = Entity(
    table="providers",
    resource_type="provider",
    columns=(
        "id",
        "organization_id",
        "display_name",
        "email",
        "time_zone",
        "active",
        "version",
        "created_at",
        "updated_at",
    ),
    writable=("display_name", "email", "time_zone", "active"),
)


async def create_provider(
    conn: Conn, org_id: str, row_id: str, values: Mapping[str, Any], audit: Audit
) -> asyncpg.Record:
    return await insert_row(
        conn, PROVIDER, org_id=org_id, row_id=row_id, values=values, audit=audit
    )


async def get_provider(conn: Conn, org_id: str, row_id: str) -> asyncpg.Record:
    return await get_row(conn, PROVIDER, org_id, row_id)


async def update_provider(
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
        PROVIDER,
        org_id=org_id,
        row_id=row_id,
        values=values,
        changed_fields=changed,
        expected_version=expected_version,
        audit=audit,
    )
