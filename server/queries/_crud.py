"""Insert / get / update of one resource row, each write with its audit event
in the same statement (a data-modifying CTE), so an audit row exists if and
only if the write committed, at no extra round trip."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg
from sqlalchemy import Table

from server.db.engine import Conn
from server.errors import Aborted, NotFound
from server.ids import uuid7

__all__ = [
    "Audit",
    "Derived",
    "Entity",
    "audit_cte",
    "audit_params",
    "delete_row",
    "get_row",
    "insert_audit_event",
    "insert_row",
    "lock_row",
    "update_row",
]


@dataclass(frozen=True, slots=True)
class Derived:
    """A column computed in Python from another column's value and written in
    the same statement whenever that column is written (e.g. a folded search
    key: the rule lives in Python because the database's own differs)."""

    column: str
    source: str
    compute: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Entity:
    table: str
    resource_type: str
    # Columns returned to callers, in order.
    columns: tuple[str, ...]
    # Columns a create or update may set.
    writable: tuple[str, ...]
    # False for organizations, whose id is the tenant.
    tenant_scoped: bool = True
    # Columns written alongside their source column (never by callers).
    derived: tuple[Derived, ...] = ()

    def with_derived(self, values: Mapping[str, Any]) -> tuple[tuple[str, ...], list[Any]]:
        """The columns a write sets and their values: the writable ones present
        in ``values``, then each derived column whose source is among them."""
        columns = tuple(c for c in self.writable if c in values)
        args = [values[c] for c in columns]
        extra = tuple(d.column for d in self.derived if d.source in values)
        args += [d.compute(values[d.source]) for d in self.derived if d.source in values]
        return columns + extra, args

    def by_ids_sql(self, column: str = "id", order_by: str = "") -> str:
        """This entity's rows of tenant $1 whose ``column`` is in $2 (a uuid[]):
        the related rows of a page, read in one statement (VIEW_FULL)."""
        sql = (
            f"SELECT {', '.join(self.columns)} FROM {self.table} "
            f"WHERE organization_id = $1 AND {column} = ANY($2::uuid[])"
        )
        return f"{sql} ORDER BY {order_by}" if order_by else sql

    @classmethod
    def of(
        cls,
        table: Table,
        resource_type: str,
        writable: tuple[str, ...],
        *,
        hidden: tuple[str, ...] = (),
        tenant_scoped: bool = True,
        derived: tuple[Derived, ...] = (),
    ) -> Entity:
        """An entity over a schema table: it returns every column but ``hidden``
        (the schema is the one source of column names)."""
        names = tuple(c.name for c in table.columns)
        targets = tuple(d.column for d in derived)
        sources = tuple(d.source for d in derived)
        unknown = set(writable + hidden + targets + sources) - set(names)
        if unknown:
            raise ValueError(f"{table.name} has no columns {sorted(unknown)}")
        return cls(
            table=table.name,
            resource_type=resource_type,
            columns=tuple(n for n in names if n not in hidden),
            writable=writable,
            tenant_scoped=tenant_scoped,
            derived=derived,
        )


@dataclass(frozen=True, slots=True)
class Audit:
    actor: str
    correlation_id: str
    request_id: str | None


_AUDIT_INSERT = (
    "audit AS (INSERT INTO audit_events (organization_id, id, actor, action, resource_type, "
    "resource_id, request_id, correlation_id, changed_fields) "
    "SELECT {org}, ${p0}, ${p1}, '{action}', '{rtype}', id::text, ${p2}, ${p3}, ${p4}::text[] "
    "FROM row)"
)


def _audit_args(audit: Audit, changed: Sequence[str]) -> list[Any]:
    return [uuid7(), audit.actor, audit.request_id, audit.correlation_id, list(changed)]


@lru_cache(maxsize=64)
def _insert_sql(entity: Entity, columns: tuple[str, ...]) -> str:
    key = ("organization_id", "id") if entity.tenant_scoped else ("id",)
    all_cols = (*key, *columns)
    values = ", ".join(f"${i}" for i in range(1, len(all_cols) + 1))
    n = len(all_cols)
    audit = _AUDIT_INSERT.format(
        org="organization_id" if entity.tenant_scoped else "id",
        action="create",
        rtype=entity.resource_type,
        p0=n + 1,
        p1=n + 2,
        p2=n + 3,
        p3=n + 4,
        p4=n + 5,
    )
    return (
        f"WITH row AS (INSERT INTO {entity.table} ({', '.join(all_cols)}) VALUES ({values}) "
        f"RETURNING *), {audit} SELECT {', '.join(entity.columns)} FROM row"
    )


_ACTION = re.compile(r"^[a-z][a-z_]{0,39}$")


@lru_cache(maxsize=256)
def _update_sql(
    entity: Entity, columns: tuple[str, ...], check_version: bool, action: str = "update"
) -> str:
    if not _ACTION.fullmatch(action):  # from code, never from a request; checked anyway
        raise ValueError(f"audit action {action!r} is not a lower_snake name")
    if entity.tenant_scoped:
        where, n = "organization_id = $1 AND id = $2", 2
    else:
        where, n = "id = $1", 1
    sets = []
    for column in columns:
        n += 1
        sets.append(f"{column} = ${n}")
    sets += ["version = version + 1", "updated_at = now()"]
    if check_version:
        n += 1
        where += f" AND version = ${n}"
    audit = _AUDIT_INSERT.format(
        org="organization_id" if entity.tenant_scoped else "id",
        action=action,
        rtype=entity.resource_type,
        p0=n + 1,
        p1=n + 2,
        p2=n + 3,
        p3=n + 4,
        p4=n + 5,
    )
    return (
        f"WITH row AS (UPDATE {entity.table} SET {', '.join(sets)} WHERE {where} RETURNING *), "
        f"{audit} SELECT {', '.join(entity.columns)} FROM row"
    )


@lru_cache(maxsize=64)
def _get_sql(entity: Entity, lock: bool = False) -> str:
    where = "organization_id = $1 AND id = $2" if entity.tenant_scoped else "id = $1"
    sql = f"SELECT {', '.join(entity.columns)} FROM {entity.table} WHERE {where}"
    return sql + " FOR UPDATE" if lock else sql


def _key(entity: Entity, org_id: str, row_id: str) -> list[Any]:
    return [org_id, row_id] if entity.tenant_scoped else [row_id]


async def insert_row(
    conn: Conn,
    entity: Entity,
    *,
    org_id: str,
    row_id: str,
    values: Mapping[str, Any],
    audit: Audit,
) -> asyncpg.Record:
    columns, column_args = entity.with_derived(values)
    sql = _insert_sql(entity, columns)
    args = [*_key(entity, org_id, row_id), *column_args, *_audit_args(audit, ())]
    row = await conn.fetchrow(sql, *args)
    assert row is not None
    return row


async def get_row(conn: Conn, entity: Entity, org_id: str, row_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(_get_sql(entity), *_key(entity, org_id, row_id))
    if row is None:
        raise NotFound.of(entity.resource_type, row_id)
    return row


async def lock_row(conn: Conn, entity: Entity, org_id: str, row_id: str) -> asyncpg.Record:
    """The row, locked until the transaction ends (``SELECT ... FOR UPDATE``): the
    load of a load-check-transition write. Concurrent transitions of the same row
    wait here, then see the row as the first one left it. NotFound when absent.

    FOR UPDATE, not FOR NO KEY UPDATE, on purpose: it also holds off the
    foreign-key checks (KEY SHARE) of rows that refer to this one, e.g. a
    payment recorded for an appointment that is being moved to another provider
    waits for the move and is then dated under the new one (the rollups;
    tests/test_rollups_concurrency.py)."""
    row = await conn.fetchrow(_get_sql(entity, lock=True), *_key(entity, org_id, row_id))
    if row is None:
        raise NotFound.of(entity.resource_type, row_id)
    return row


async def update_row(
    conn: Conn,
    entity: Entity,
    *,
    org_id: str,
    row_id: str,
    values: Mapping[str, Any],
    changed_fields: Sequence[str],
    expected_version: int | None,
    audit: Audit,
    action: str = "update",
) -> asyncpg.Record:
    """Update ``values``, audited as ``action`` (e.g. "update", "cancel");
    NotFound when absent, Aborted when the version moved on."""
    columns, column_args = entity.with_derived(values)
    sql = _update_sql(entity, columns, expected_version is not None, action)
    args: list[Any] = [*_key(entity, org_id, row_id), *column_args]
    if expected_version is not None:
        args.append(expected_version)
    args += _audit_args(audit, changed_fields)
    row = await conn.fetchrow(sql, *args)
    if row is not None:
        return row
    # Zero rows: tell a missing row from a stale etag (failure path only).
    where = "organization_id = $1 AND id = $2" if entity.tenant_scoped else "id = $1"
    exists = await conn.fetchval(
        f"SELECT version FROM {entity.table} WHERE {where}", *_key(entity, org_id, row_id)
    )
    if exists is None:
        raise NotFound.of(entity.resource_type, row_id)
    raise Aborted(
        f"{entity.resource_type} {row_id!r} was changed by someone else: the etag is stale; "
        "get it again and retry",
        reason="ETAG_MISMATCH",
        metadata={"resource_id": row_id},
    )


@lru_cache(maxsize=64)
def _delete_sql(entity: Entity) -> str:
    where, n = ("organization_id = $1 AND id = $2", 2) if entity.tenant_scoped else ("id = $1", 1)
    audit = audit_cte(n + 1, organization="organization_id" if entity.tenant_scoped else "id")
    return (
        f"WITH row AS (DELETE FROM {entity.table} WHERE {where} RETURNING *), "
        f"{audit} SELECT {', '.join(entity.columns)} FROM row"
    )


async def delete_row(
    conn: Conn, entity: Entity, *, org_id: str, row_id: str, audit: Audit, action: str = "delete"
) -> asyncpg.Record:
    """Delete one row, audited as ``action`` in the same statement; the row as
    it was. NotFound when absent."""
    params = audit_params(audit, action, entity.resource_type)
    row = await conn.fetchrow(_delete_sql(entity), *_key(entity, org_id, row_id), *params)
    if row is None:
        raise NotFound.of(entity.resource_type, row_id)
    return row


def audit_cte(
    first: int,
    *,
    resource_id: str = "id::text",
    organization: str = "organization_id",
    source: str = "row",
) -> str:
    """A CTE ``audit AS (...)`` writing one audit event per row of the CTE
    ``source``, for writes whose SQL is their own: its parameters are
    ``$first`` onwards, in the order of :func:`audit_params` (action and
    resource type are parameters). ``resource_id`` and ``organization`` are SQL
    expressions over the source's columns (from code, never from a request)."""
    p = [f"${first + i}" for i in range(7)]
    return (
        "audit AS (INSERT INTO audit_events (organization_id, id, actor, action, resource_type, "
        "resource_id, request_id, correlation_id, changed_fields) "
        f"SELECT {organization}, {p[0]}, {p[1]}, {p[2]}, {p[3]}, {resource_id}, {p[4]}, "
        f"{p[5]}, {p[6]}::text[] FROM {source})"
    )


def audit_params(
    audit: Audit, action: str, resource_type: str, changed_fields: Sequence[str] = ()
) -> list[Any]:
    """The parameters of :func:`audit_cte` and :func:`insert_audit_event`."""
    if not _ACTION.fullmatch(action) or not _ACTION.fullmatch(resource_type):
        raise ValueError(f"audit {action!r} on {resource_type!r}: not lower_snake names")
    return [
        uuid7(),
        audit.actor,
        action,
        resource_type,
        audit.request_id,
        audit.correlation_id,
        list(changed_fields),
    ]


_AUDIT_EVENT_SQL = (
    "INSERT INTO audit_events (organization_id, id, actor, action, resource_type, "
    "resource_id, request_id, correlation_id, changed_fields) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text[])"
)


async def insert_audit_event(
    conn: Conn,
    org_id: str,
    audit: Audit,
    *,
    action: str,
    resource_type: str,
    resource_id: str,
    changed_fields: Sequence[str] = (),
) -> None:
    """One audit event on its own, for a write that is not one row's (a
    set-based replace): call it inside the write's transaction, once per write."""
    event_id, actor, action, rtype, request_id, correlation_id, changed = audit_params(
        audit, action, resource_type, changed_fields
    )
    await conn.execute(
        _AUDIT_EVENT_SQL,
        org_id,
        event_id,
        actor,
        action,
        rtype,
        resource_id,
        request_id,
        correlation_id,
        changed,
    )
