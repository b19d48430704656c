"""Create / Get / Update of a tenant-owned resource, the same for every one.

A :class:`TenantResource` names the resource's field in the request and
response messages (``client``), its table (an :class:`~server.queries._crud.Entity`),
its updatable fields, how a message's fields become column values (with their
validation) and how a row becomes a message. The three RPCs then follow one
shape: validate everything and report all violations at once; write in one
transaction with the audit event and the AIP-155 request id
(:func:`~server.handlers._writes.writing`); updates take a field mask
(AIP-134) and an etag (stale = ABORTED, nothing written).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from server.db.engine import Conn
from server.handlers._base import Context, Deps, request_violations, timeout_of
from server.handlers._encoding import parse_etag
from server.handlers._masks import has_value, require_fields, resolve_mask
from server.handlers._writes import writing
from server.ids import uuid7
from server.queries._crud import Entity, get_row, insert_row, update_row
from server.validation import Violations

__all__ = ["TenantResource"]

R = TypeVar("R", bound=Message)
# (message, fields to take, violations, creating) -> column values
ValuesOf = Callable[[Any, list[str], Violations, bool], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TenantResource:
    field: str
    entity: Entity
    updatable: tuple[str, ...]
    values: ValuesOf
    encode: Callable[..., Any]
    # Whether values() validates time zones (they are read from the database once).
    has_time_zone: bool = False
    # Checked in the update's transaction before the row is written: (conn,
    # tenant, id, values); raises to refuse the update.
    before_update: Callable[[Conn, str, str, dict[str, Any]], Awaitable[None]] | None = None

    async def _violations(self, deps: Deps, request: Any, context: Context) -> Violations:
        zones = await deps.zones.ready(timeout_of(context)) if self.has_time_zone else None
        return request_violations(request, zones=zones)

    async def create(self, deps: Deps, request: Any, context: Context, response: type[R]) -> R:
        v = await self._violations(deps, request, context)
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        values = self.values(getattr(request, self.field), list(self.updatable), v, True)
        v.raise_if_any()
        org = request.organization_id
        async with writing(deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            row = await insert_row(
                w.conn, self.entity, org_id=org, row_id=uuid7(), values=values, audit=w.audit
            )
            return await w.result(response(**{self.field: self.encode(row)}))

    async def get(self, deps: Deps, request: Any, context: Context, response: type[R]) -> R:
        id_field = f"{self.field}_id"
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid(id_field, getattr(request, id_field))
        v.raise_if_any()
        async with deps.db.connection(timeout_of(context)) as conn:
            row = await get_row(
                conn, self.entity, request.organization_id, getattr(request, id_field)
            )
        return response(**{self.field: self.encode(row)})

    async def update(self, deps: Deps, request: Any, context: Context, response: type[R]) -> R:
        v = await self._violations(deps, request, context)
        msg = getattr(request, self.field)
        v.uuid("organization_id", request.organization_id)
        v.uuid(f"{self.field}.id", msg.id)
        v.request_id("request_id", request.request_id)
        fields = resolve_mask(request.update_mask, self.updatable, lambda f: has_value(msg, f), v)
        values = self.values(msg, fields, v, False)
        version = parse_etag(msg.etag, f"{self.field}.etag", v)
        v.raise_if_any()
        require_fields(values)
        org = request.organization_id
        async with writing(deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            if self.before_update is not None:
                await self.before_update(w.conn, org, msg.id, values)
            row = await update_row(
                w.conn,
                self.entity,
                org_id=org,
                row_id=msg.id,
                values=values,
                changed_fields=fields,
                expected_version=version,
                audit=w.audit,
            )
            return await w.result(response(**{self.field: self.encode(row)}))
