"""booking.v1.AuditService."""

from __future__ import annotations

from typing import Any

import asyncpg
from booking.v1 import audit_pb2 as pb
from booking.v1 import audit_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.errors import FieldViolation, InvalidArgument
from server.paging import check_paging, request_scope, resolve_page
from server.queries import audit as q
from server.services._common import (
    Deps,
    count_mode_of,
    epoch_micros,
    from_epoch_micros,
    page_info,
    timeout_of,
    timestamp,
    to_datetime,
)
from server.validation import Violations


def encode(row: asyncpg.Record) -> resources_pb2.AuditEvent:
    return resources_pb2.AuditEvent(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        actor=row["actor"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        request_id=row["request_id"] or "",
        correlation_id=row["correlation_id"],
        occur_time=timestamp(row["occurred_at"]),
        changed_fields=list(row["changed_fields"]),
    )


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
        page = resolve_page(
            page_size=request.page_size,
            page_token=request.page_token,
            page=request.page,
            scope=scope,
            codec=self._deps.tokens,
            default_size=settings.default_page_size,
            max_size=settings.max_page_size,
            max_offset=settings.max_offset,
        )
        if page.after is not None:
            try:
                keyset = (from_epoch_micros(int(page.after[0])), str(page.after[1]))
            except (ValueError, TypeError, IndexError, OverflowError):
                raise InvalidArgument(
                    "page_token is not a token this service issued",
                    reason="INVALID_PAGE_TOKEN",
                    field_violations=[FieldViolation("page_token", "is malformed")],
                ) from None
            page = type(page)(page.size, page.number, keyset, 0)
        async with self._deps.db.connection(timeout_of(context)) as conn:
            result = await q.list_audit_events_page(
                conn, request.organization_id, flt, page, count_mode, settings.exact_count_cap
            )
        next_token = ""
        if result.has_next and result.rows:
            last = result.rows[-1]
            next_token = self._deps.tokens.encode(
                scope, page.number + 1, (epoch_micros(last["occurred_at"]), str(last["id"]))
            )
        return pb.ListAuditEventsResponse(
            audit_events=[encode(r) for r in result.rows],
            next_page_token=next_token,
            page_info=page_info(result, page.number, page.size),
        )
