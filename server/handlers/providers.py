"""booking.v1.ProviderService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import providers_pb2 as pb
from booking.v1 import providers_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.db.engine import Conn
from server.errors import FailedPrecondition
from server.handlers._base import Deps
from server.handlers._encoding import etag, nullable, set_time, to_datetime
from server.handlers._lists import ListSpec, search_term
from server.handlers._resource import TenantResource
from server.queries import providers as q
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


async def _keep_booked_zone(conn: Conn, org: str, provider_id: str, values: dict[str, Any]) -> None:
    """A provider's time zone dates its appointments (their business dates,
    the rollups the summaries read, the day sheet): it cannot change once
    appointments are booked with it."""
    if "time_zone" not in values:
        return
    row = await q.zone_in_use(conn, org, provider_id)
    if row is not None and row["booked"] and row["time_zone"] != values["time_zone"]:
        raise FailedPrecondition(
            "the provider has appointments, dated in its time zone: the zone cannot change",
            reason="TIME_ZONE_IN_USE",
            metadata={"time_zone": row["time_zone"]},
        )


RESOURCE = TenantResource(
    "provider",
    q.PROVIDER,
    UPDATABLE,
    _values,
    encode,
    has_time_zone=True,
    before_update=_keep_booked_zone,
)


def _filters(request: pb.ListProvidersRequest, v: Violations) -> q.ProviderFilter:
    v.uuid("service_id", request.service_id, required=False)
    return q.ProviderFilter(
        active=request.active if request.HasField("active") else None,
        created_after=to_datetime(request.created_after, "created_after", v),
        created_before=to_datetime(request.created_before, "created_before", v, end=True),
        query=search_term(request.query, v),
        service_id=request.service_id,
    )


LIST = ListSpec(q.PROVIDERS, pb.ListProvidersResponse, "providers", _filters, encode)


class ProviderService(pb_grpc.ProviderServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateProvider(
        self, request: pb.CreateProviderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateProviderResponse:
        return await RESOURCE.create(self._deps, request, context, pb.CreateProviderResponse)

    async def GetProvider(
        self, request: pb.GetProviderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetProviderResponse:
        return await RESOURCE.get(self._deps, request, context, pb.GetProviderResponse)

    async def UpdateProvider(
        self, request: pb.UpdateProviderRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpdateProviderResponse:
        return await RESOURCE.update(self._deps, request, context, pb.UpdateProviderResponse)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListProvidersResponse:
        return await LIST.serve(self._deps, request, context)
