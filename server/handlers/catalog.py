"""booking.v1.CatalogService (the catalogue of bookable services)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import catalog_pb2 as pb
from booking.v1 import catalog_pb2_grpc as pb_grpc
from booking.v1 import common_pb2, resources_pb2
from grpc import aio

from server.booking import POLICY_RANGES
from server.errors import Aborted, FieldViolation, InvalidArgument
from server.handlers._base import Deps, ignore_output_only, request_violations
from server.handlers._encoding import etag, parse_etag, set_time, to_datetime
from server.handlers._lists import ListSpec, search_term
from server.handlers._resource import TenantResource
from server.handlers._writes import writing
from server.handlers.organizations import policy_value
from server.queries import catalog as q
from server.queries.schedules import lock_provider
from server.validation import Violations

UPDATABLE = (
    "name",
    "duration_minutes",
    "price",
    "buffer_before_minutes",
    "buffer_after_minutes",
    "active",
    "min_notice_minutes",
    "booking_horizon_days",
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
    if row["min_notice_minutes"] is not None:
        msg.min_notice_minutes = row["min_notice_minutes"]
    if row["booking_horizon_days"] is not None:
        msg.booking_horizon_days = row["booking_horizon_days"]
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
        elif f in POLICY_RANGES:  # unset = NULL, the organization's
            out[f] = policy_value(s, f, path, v)
    return out


RESOURCE = TenantResource("service", q.SERVICE, UPDATABLE, _values, encode)


# -- offerings -----------------------------------------------------------------------


def encode_offering(
    row: asyncpg.Record, new: Callable[..., resources_pb2.Offering] = resources_pb2.Offering
) -> resources_pb2.Offering:
    msg = new(
        organization_id=str(row["organization_id"]),
        provider_id=str(row["provider_id"]),
        service_id=str(row["service_id"]),
        etag=etag(row["version"]),
    )
    if row["duration_minutes"] is not None:
        msg.duration_minutes = row["duration_minutes"]
    if row["price_minor"] is not None:
        msg.price.currency_code = row["currency"]
        msg.price.amount_minor = row["price_minor"]
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


def _offering_values(o: resources_pb2.Offering, v: Violations) -> dict[str, Any]:
    """The offering's overrides (None = the service's)."""
    v.uuid("offering.provider_id", o.provider_id)
    v.uuid("offering.service_id", o.service_id)
    out: dict[str, Any] = {"duration_minutes": None, "price_minor": None, "currency": None}
    if o.HasField("duration_minutes"):
        v.int_range("offering.duration_minutes", o.duration_minutes, 1, 1440)
        out["duration_minutes"] = o.duration_minutes
    if o.HasField("price"):
        v.currency("offering.price.currency_code", o.price.currency_code)
        v.int_range("offering.price.amount_minor", o.price.amount_minor, 0, MAX_PRICE_MINOR)
        out["price_minor"] = o.price.amount_minor
        out["currency"] = o.price.currency_code
    return out


def _check_offering(
    target: q.OfferingTarget, values: dict[str, Any], version: int | None, name: str
) -> None:
    """The offering's price is in the service's currency; its etag is current."""
    if values["currency"] is not None and values["currency"] != target.currency:
        raise InvalidArgument(
            "the offering's price must be in the service's currency",
            field_violations=[
                FieldViolation(
                    "offering.price.currency_code",
                    f"must be the service's currency, {target.currency}",
                    "CURRENCY_MISMATCH",
                )
            ],
        )
    if version is not None and target.version != version:
        raise Aborted(
            f"offering {name!r} was changed by someone else: the etag is stale; "
            "get it again and retry",
            reason="ETAG_MISMATCH",
            metadata={"resource_id": name},
        )


def _service_filters(request: pb.ListServicesRequest, v: Violations) -> q.ServiceFilter:
    v.uuid("provider_id", request.provider_id, required=False)
    return q.ServiceFilter(
        active=request.active if request.HasField("active") else None,
        created_after=to_datetime(request.created_after, "created_after", v),
        created_before=to_datetime(request.created_before, "created_before", v, end=True),
        query=search_term(request.query, v),
        provider_id=request.provider_id,
    )


LIST_SERVICES = ListSpec(q.SERVICES, pb.ListServicesResponse, "services", _service_filters, encode)


def _offering_filters(request: pb.ListOfferingsRequest, v: Violations) -> q.OfferingFilter:
    v.uuid("provider_id", request.provider_id, required=False)
    v.uuid("service_id", request.service_id, required=False)
    return q.OfferingFilter(request.provider_id, request.service_id)


LIST_OFFERINGS = ListSpec(
    q.OFFERINGS, pb.ListOfferingsResponse, "offerings", _offering_filters, encode_offering
)


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

    async def SetOffering(
        self, request: pb.SetOfferingRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SetOfferingResponse:
        v = request_violations(request)
        ignore_output_only([request.offering], "organization_id", "create_time", "update_time")
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        o = request.offering
        values = _offering_values(o, v)
        version = parse_etag(o.etag, "offering.etag", v)
        v.raise_if_any()
        org, provider, service = request.organization_id, o.provider_id, o.service_id
        response = pb.SetOfferingResponse
        async with writing(self._deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            await lock_provider(w.conn, org, provider)
            target = await q.offering_target(w.conn, org, provider, service)
            _check_offering(target, values, version, f"{provider}/{service}")
            row = await q.set_offering(
                w.conn,
                org,
                provider,
                service,
                values,
                creating=target.version is None,
                audit=w.audit,
            )
            return await w.result(response(offering=encode_offering(row)))

    async def DeleteOffering(
        self, request: pb.DeleteOfferingRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DeleteOfferingResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid("provider_id", request.provider_id)
        v.uuid("service_id", request.service_id)
        v.request_id("request_id", request.request_id)
        v.raise_if_any()
        org, provider, service = request.organization_id, request.provider_id, request.service_id
        response = pb.DeleteOfferingResponse
        async with writing(self._deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            await lock_provider(w.conn, org, provider)
            await q.delete_offering(w.conn, org, provider, service, w.audit)
            return await w.result(response())

    async def ListOfferings(
        self, request: pb.ListOfferingsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListOfferingsResponse:
        return await LIST_OFFERINGS.serve(self._deps, request, context)

    async def ListServices(
        self, request: pb.ListServicesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListServicesResponse:
        return await LIST_SERVICES.serve(self._deps, request, context)
