"""booking.v1.OrganizationService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import organizations_pb2 as pb
from booking.v1 import organizations_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from google.protobuf.message import Message
from google.type import dayofweek_pb2
from grpc import aio

from server.booking import POLICY_RANGES
from server.handlers._base import Deps, request_violations, timeout_of
from server.handlers._encoding import etag, parse_etag, set_time
from server.handlers._masks import has_value, require_fields, resolve_mask
from server.handlers._writes import writing
from server.ids import uuid7
from server.queries import organizations as q
from server.queries.requests import GLOBAL_SCOPE
from server.validation import Violations

# Every column a write may set is a field an update may name.
UPDATABLE = q.ORGANIZATION.writable

# An organization's weeks start on Monday unless it says otherwise (ISO 8601).
DEFAULT_FIRST_DAY_OF_WEEK = dayofweek_pb2.MONDAY

# The booking policy fields (organizations and services): their ranges, and
# an organization's value when unset (on create, or named by an update mask).
POLICY_DEFAULTS = {"min_notice_minutes": 0, "booking_horizon_days": 365}


def policy_value(msg: Message, field: str, path: str, v: Violations) -> int | None:
    """A policy field's value, validated (None when unset)."""
    if not msg.HasField(field):
        return None
    value = int(getattr(msg, field))
    v.int_range(path, value, *POLICY_RANGES[field])
    return value


def encode(
    row: asyncpg.Record, new: Callable[..., resources_pb2.Organization] = resources_pb2.Organization
) -> resources_pb2.Organization:
    msg = new(
        id=str(row["id"]),
        name=row["name"],
        slug=row["slug"],
        time_zone=row["time_zone"],
        etag=etag(row["version"]),
        min_notice_minutes=row["min_notice_minutes"],
        booking_horizon_days=row["booking_horizon_days"],
        first_day_of_week=row["first_day_of_week"],
    )
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


def _values(
    org: resources_pb2.Organization, fields: list[str], v: Violations, creating: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        path = f"organization.{f}"
        if f == "name":
            v.text(path, org.name, required=True)
            out["name"] = org.name.strip()
        elif f == "slug":
            v.slug(path, org.slug)
            out["slug"] = org.slug
        elif f == "time_zone":
            v.time_zone(path, org.time_zone)
            out["time_zone"] = org.time_zone
        elif f in POLICY_RANGES:
            value = policy_value(org, f, path, v)
            if value is not None:
                out[f] = value
            elif not creating:  # named by the mask, unset: back to the default
                out[f] = POLICY_DEFAULTS[f]
        elif f == "first_day_of_week":
            day = int(org.first_day_of_week)
            if not 0 <= day <= 7:
                v.add(path, "is not a known DayOfWeek", "INVALID_ENUM")
            # UNSPECIFIED: Monday on create, and back to Monday when a mask names it.
            out[f] = day or DEFAULT_FIRST_DAY_OF_WEEK
    return out


class OrganizationService(pb_grpc.OrganizationServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def _violations(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Violations:
        zones = await self._deps.zones.ready(timeout_of(context))
        return request_violations(request, zones=zones)

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateOrganizationResponse:
        v = await self._violations(request, context)
        v.request_id("request_id", request.request_id)
        values = _values(request.organization, list(UPDATABLE), v, True)
        v.raise_if_any()
        response = pb.CreateOrganizationResponse
        async with writing(
            self._deps, context, request, response=response, scope=GLOBAL_SCOPE
        ) as w:
            if w.replay is not None:
                return w.replay
            row = await q.create_organization(w.conn, uuid7(), values, w.audit)
            return await w.result(response(organization=encode(row)))

    async def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetOrganizationResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.raise_if_any()
        async with self._deps.db.connection(timeout_of(context)) as conn:
            row = await q.get_organization(conn, request.organization_id)
        return pb.GetOrganizationResponse(organization=encode(row))

    async def UpdateOrganization(
        self, request: pb.UpdateOrganizationRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpdateOrganizationResponse:
        v = await self._violations(request, context)
        org = request.organization
        v.uuid("organization.id", org.id)
        v.request_id("request_id", request.request_id)
        fields = resolve_mask(request.update_mask, UPDATABLE, lambda f: has_value(org, f), v)
        values = _values(org, fields, v, False)
        version = parse_etag(org.etag, "organization.etag", v)
        v.raise_if_any()
        require_fields(values)
        response = pb.UpdateOrganizationResponse
        async with writing(self._deps, context, request, response=response, scope=org.id) as w:
            if w.replay is not None:
                return w.replay
            row = await q.update_organization(w.conn, org.id, values, fields, version, w.audit)
            return await w.result(response(organization=encode(row)))
