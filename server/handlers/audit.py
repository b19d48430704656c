"""booking.v1.AuditService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import audit_pb2 as pb
from booking.v1 import audit_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.handlers._base import Deps
from server.handlers._encoding import set_time, to_datetime
from server.handlers._lists import ListSpec
from server.queries import audit as q
from server.validation import Violations


def encode(
    row: asyncpg.Record, new: Callable[..., resources_pb2.AuditEvent] = resources_pb2.AuditEvent
) -> resources_pb2.AuditEvent:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        actor=row["actor"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        request_id=row["request_id"] or "",
        correlation_id=row["correlation_id"],
        changed_fields=list(row["changed_fields"]),
    )
    set_time(msg.occur_time, row["occurred_at"])
    return msg


def _filters(request: pb.ListAuditEventsRequest, v: Violations) -> q.AuditFilter:
    v.text("resource_type", request.resource_type, required=False, max_len=100)
    v.text("resource_id", request.resource_id, required=False, max_len=100)
    v.text("actor", request.actor, required=False, max_len=200)
    if request.resource_id and not request.resource_type:
        v.add("resource_type", "is required when resource_id is set", "REQUIRED")
    return q.AuditFilter(
        request.resource_type,
        request.resource_id,
        request.actor,
        to_datetime(request.occurred_after, "occurred_after", v),
        to_datetime(request.occurred_before, "occurred_before", v, end=True),
    )


LIST = ListSpec(q.AUDIT_EVENTS, pb.ListAuditEventsResponse, "audit_events", _filters, encode)


class AuditService(pb_grpc.AuditServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListAuditEventsResponse:
        return await LIST.serve(self._deps, request, context)
