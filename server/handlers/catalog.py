"""booking.v1.CatalogService (the catalogue of bookable services)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import catalog_pb2 as pb
from booking.v1 import catalog_pb2_grpc as pb_grpc
from booking.v1 import common_pb2, resources_pb2
from grpc import aio

from server.handlers._base import Deps
from server.handlers._encoding import etag, set_time
from server.handlers._resource import TenantResource
from server.queries import catalog as q
from server.validation import Violations

UPDATABLE = (
    "name",
    "duration_minutes",
    "price",
    "buffer_before_minutes",
    "buffer_after_minutes",
    "active",
)
MAX_PRICE_MINOR = 10**15


def encode(
    row: asyncpg.Record, new: Callable[..., resources_pb2.Service] = resources_pb2.Service
) -> resources_pb2.Service:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        name=row["name"],
        duration_minutes=row["duration_minutes"],
        price=common_pb2.Money(currency_code=row["currency"], amount_minor=row["price_minor"]),
        buffer_before_minutes=row["buffer_before_minutes"],
        buffer_after_minutes=row["buffer_after_minutes"],
        active=row["active"],
        etag=etag(row["version"]),
    )
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


def _values(
    s: resources_pb2.Service, fields: list[str], v: Violations, creating: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        path = f"service.{f}"
        if f == "name":
            v.text(path, s.name, required=True)
            out[f] = s.name.strip()
        elif f == "duration_minutes":
            v.int_range(path, s.duration_minutes, 1, 1440)
            out[f] = s.duration_minutes
        elif f in ("buffer_before_minutes", "buffer_after_minutes"):
            value = getattr(s, f)
            v.int_range(path, value, 0, 1440)
            out[f] = value
        elif f == "price":
            v.currency("service.price.currency_code", s.price.currency_code)
            v.int_range("service.price.amount_minor", s.price.amount_minor, 0, MAX_PRICE_MINOR)
            out["price_minor"] = s.price.amount_minor
            out["currency"] = s.price.currency_code
        elif f == "active":
            out[f] = s.active if s.HasField("active") else creating
    return out


RESOURCE = TenantResource("service", q.SERVICE, UPDATABLE, _values, encode)


class CatalogService(pb_grpc.CatalogServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateService(
        self, request: pb.CreateServiceRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateServiceResponse:
        return await RESOURCE.create(self._deps, request, context, pb.CreateServiceResponse)

    async def GetService(
        self, request: pb.GetServiceRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetServiceResponse:
        return await RESOURCE.get(self._deps, request, context, pb.GetServiceResponse)

    async def UpdateService(
        self, request: pb.UpdateServiceRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpdateServiceResponse:
        return await RESOURCE.update(self._deps, request, context, pb.UpdateServiceResponse)
