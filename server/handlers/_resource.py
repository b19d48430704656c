"""Create / Get / Update of a tenant-owned resource, the same for every one.

A :class:`TenantResource` names the resource's field in the request and
response messages (``client``), its table (an :class:`~server.queries._crud.Entity`),
its updatable fields, how a message's fields become column values (with their
validation) and how a row becomes a message. The three RPCs then follow one
shape: validate everything and report all violations at once; write in one
transaction with the audit event and the AIP-155 request id (``run_write``);
updates take a field mask (AIP-134) and an etag (stale = ABORTED, nothing
written).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message
from grpc import aio

from server.db.engine import Conn
from server.handlers._common import (
    Deps,
    audit_of,
    parse_etag,
    require_fields,
    resolve_mask,
    run_write,
    timeout_of,
)
from server.ids import uuid7
from server.queries._crud import Audit, Entity, get_row, insert_row, update_row
from server.validation import Violations

__all__ = ["TenantResource", "has_value"]

R = TypeVar("R", bound=Message)
Context = aio.ServicerContext[Any, Any]
# (message, fields to take, violations, creating) -> column values
ValuesOf = Callable[[Any, list[str], Violations, bool], dict[str, Any]]


def has_value(msg: Message, field: str) -> bool:
    """Whether an update without a mask sets ``field``: presence where the field
    tracks it (``optional`` scalars, messages), else a non-default value."""
    descriptor = msg.DESCRIPTOR.fields_by_name[field]
    if descriptor.has_presence:
        return msg.HasField(field)
    return bool(getattr(msg, field))


@dataclass(frozen=True, slots=True)
class TenantResource:
    field: str
    entity: Entity
    updatable: tuple[str, ...]
    values: ValuesOf
    encode: Callable[..., Any]

    async def create(self, deps: Deps, request: Any, context: Context, response: type[R]) -> R:
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        values = self.values(getattr(request, self.field), list(self.updatable), v, True)
        v.raise_if_any()
        org, row_id = request.organization_id, uuid7()

        def write(conn: Conn, audit: Audit) -> Awaitable[asyncpg.Record]:
            return insert_row(
                conn, self.entity, org_id=org, row_id=row_id, values=values, audit=audit
            )

        return await self._write(deps, request, context, response, write)

    async def get(self, deps: Deps, request: Any, context: Context, response: type[R]) -> R:
        id_field = f"{self.field}_id"
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.uuid(id_field, getattr(request, id_field))
        v.raise_if_any()
        async with deps.db.connection(timeout_of(context)) as conn:
            row = await get_row(
                conn, self.entity, request.organization_id, getattr(request, id_field)
            )
        return response(**{self.field: self.encode(row)})

    async def update(self, deps: Deps, request: Any, context: Context, response: type[R]) -> R:
        msg = getattr(request, self.field)
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.uuid(f"{self.field}.id", msg.id)
        v.request_id("request_id", request.request_id)
        fields = resolve_mask(request.update_mask, self.updatable, lambda f: has_value(msg, f))
        values = self.values(msg, fields, v, False)
        version = parse_etag(msg.etag, f"{self.field}.etag")
        v.raise_if_any()
        require_fields(values)
        org = request.organization_id

        def write(conn: Conn, audit: Audit) -> Awaitable[asyncpg.Record]:
            return update_row(
                conn,
                self.entity,
                org_id=org,
                row_id=msg.id,
                values=values,
                changed_fields=fields,
                expected_version=version,
                audit=audit,
            )

        return await self._write(deps, request, context, response, write)

    async def _write(
        self,
        deps: Deps,
        request: Any,
        context: Context,
        response: type[R],
        write: Callable[[Conn, Audit], Awaitable[asyncpg.Record]],
    ) -> R:
        """One transaction: the row, its audit event, and the request id's result."""

        async def body(conn: Conn) -> R:
            row = await write(conn, audit_of(request.request_id))
            return response(**{self.field: self.encode(row)})

        return await run_write(
            deps,
            context,
            scope=request.organization_id,
            request=request,
            request_id=request.request_id,
            response_type=response,
            body=body,
        )
