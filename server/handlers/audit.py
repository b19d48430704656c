"""booking.v1.AuditService."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import audit_pb2 as pb
from booking.v1 import audit_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.handlers._common import (
    Deps,
    count_mode_of,
    epoch_micros,
    from_epoch_micros,
    list_response,
    resolve_list_page,
    set_time,
    timeout_of,
    to_datetime,
)
from server.paging import check_paging, request_scope
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


def _keyset_in(after: tuple[Any, ...]) -> tuple[Any, ...]:
    return (from_epoch_micros(int(after[0])), str(after[1]))


def _keyset_out(row: asyncpg.Record) -> tuple[Any, ...]:
    return (epoch_micros(row["occurred_at"]), str(row["id"]))


class AuditService(pb_grpc.AuditServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListAuditEventsResponse:
        settings = self._deps.settings
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        v.text("resource_type", request.resource_type, required=False, max_len=100)
        v.text("resource_id", request.resource_id, required=False, max_len=100)
        v.text("actor", request.actor, required=False, max_len=200)
        if request.resource_id and not request.resource_type:
            v.add("resource_type", "is required when resource_id is set", "REQUIRED")
        after = to_datetime(request.occurred_after, "occurred_after", v)
        before = to_datetime(request.occurred_before, "occurred_before", v)
        count_mode = count_mode_of(request.count_mode, v)
        check_paging(request.page_size, request.page, request.page_token, v)
        v.raise_if_any()
        flt = q.AuditFilter(
            request.resource_type, request.resource_id, request.actor, after, before
        )
        scope = request_scope(
            "ListAuditEvents",
            request.organization_id,
            flt.resource_type,
            flt.resource_id,
            flt.actor,
            after.isoformat() if after else None,
            before.isoformat() if before else None,
        )
        page = resolve_list_page(self._deps, request, scope, _keyset_in)
        async with self._deps.db.connection(timeout_of(context)) as conn:
            result = await q.list_audit_events_page(
                conn, request.organization_id, flt, page, count_mode, settings.exact_count_cap
            )
        return list_response(
            self._deps,
            pb.ListAuditEventsResponse,
            "audit_events",
            encode,
            result,
            page,
            scope,
            _keyset_out,
        )
