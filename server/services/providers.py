"""booking.v1.ProviderService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import providers_pb2 as pb
from booking.v1 import providers_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.ids import uuid7
from server.queries import providers as q
from server.services._common import (
    Deps,
    audit_of,
    etag,
    nullable,
    parse_etag,
    require_fields,
    resolve_mask,
    run_write,
    set_time,
    timeout_of,
)
from server.validation import Violations

UPDATABLE = ("display_name", "email", "time_zone", "active")


def encode(
    row: asyncpg.Record, new: Callable[..., resources_pb2.Provider] = resources_pb2.Provider
) -> resources_pb2.Provider:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        display_name=row["display_name"],
        email=row["email"] or "",
        time_zone=row["time_zone"],
        active=row["active"],
        etag=etag(row["version"]),
    )
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


def _values(
    p: resources_pb2.Provider, fields: list[str], v: Violations, creating: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        path = f"provider.{f}"
        if f == "display_name":
            v.text(path, p.display_name, required=True)
            out[f] = p.display_name.strip()
        elif f == "email":
            v.email(path, p.email)
            out[f] = nullable(p.email)
        elif f == "time_zone":
            v.time_zone(path, p.time_zone)
            out[f] = p.time_zone
        elif f == "active":
            out[f] = p.active if p.HasField("active") else creating
    return out


class ProviderService(pb_grpc.ProviderServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateProvider(
        self, request: pb.CreateProviderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateProviderResponse:
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        values = _values(request.provider, list(UPDATABLE), v, creating=True)
        v.raise_if_any()
        org = request.organization_id

        async def body(conn: Any) -> pb.CreateProviderResponse:
            row = await q.create_provider(conn, org, uuid7(), values, audit_of(request.request_id))
            return pb.CreateProviderResponse(provider=encode(row))

        return await run_write(
            self._deps,
            context,
            scope=org,
            request=request,
            request_id=request.request_id,
            response_type=pb.CreateProviderResponse,
            body=body,
        )

    async def GetProvider(
        self, request: pb.GetProviderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetProviderResponse:
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.uuid("provider_id", request.provider_id)
        v.raise_if_any()
        async with self._deps.db.connection(timeout_of(context)) as conn:
            row = await q.get_provider(conn, request.organization_id, request.provider_id)
        return pb.GetProviderResponse(provider=encode(row))

    async def UpdateProvider(
        self, request: pb.UpdateProviderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpdateProviderResponse:
        p = request.provider
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.uuid("provider.id", p.id)
        v.request_id("request_id", request.request_id)
        fields = resolve_mask(
            request.update_mask,
            UPDATABLE,
            lambda f: p.HasField("active") if f == "active" else bool(getattr(p, f)),
        )
        values = _values(p, fields, v, creating=False)
        version = parse_etag(p.etag, "provider.etag")
        v.raise_if_any()
        require_fields(values)
        org = request.organization_id

        async def body(conn: Any) -> pb.UpdateProviderResponse:
            row = await q.update_provider(
                conn, org, p.id, values, fields, version, audit_of(request.request_id)
            )
            return pb.UpdateProviderResponse(provider=encode(row))

        return await run_write(
            self._deps,
            context,
            scope=org,
            request=request,
            request_id=request.request_id,
            response_type=pb.UpdateProviderResponse,
            body=body,
        )
