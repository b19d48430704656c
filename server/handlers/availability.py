"""booking.v1.AvailabilityService: GetAvailability and CheckConflicts.

The rules are server.booking (one start) and server.scheduling (slots); this
module validates, reads with one pooled connection and encodes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from booking.v1 import availability_pb2 as pb
from booking.v1 import availability_pb2_grpc as pb_grpc
from google.protobuf import timestamp_pb2

from server import booking
from server.handlers._base import Context, Deps, request_violations, timeout_of
from server.handlers._conflicts import encode_conflict
from server.handlers._encoding import set_time, to_datetime
from server.validation import Violations

MAX_PROVIDERS = 100
MAX_RANGE = timedelta(days=62)
MAX_FIRST_AVAILABLE = 1000
NOTICE_RANGE = (0, 525_600)
HORIZON_RANGE = (1, 730)
STEP_RANGE = (5, 1440)


def _policy(
    request: pb.GetAvailabilityRequest | pb.CheckConflictsRequest, v: Violations
) -> booking.Policy:
    notice = horizon = None
    if request.HasField("min_notice_minutes"):
        notice = request.min_notice_minutes
        v.int_range("min_notice_minutes", notice, *NOTICE_RANGE)
    if request.HasField("booking_horizon_days"):
        horizon = request.booking_horizon_days
        v.int_range("booking_horizon_days", horizon, *HORIZON_RANGE)
    return booking.Policy(notice, horizon)


def _required_time(ts: timestamp_pb2.Timestamp, field: str, v: Violations) -> datetime | None:
    value = to_datetime(ts, field, v)
    if value is None and not any(x.field == field for x in v.items):
        v.add(field, "is required", "REQUIRED")
    return value


@dataclass(frozen=True, slots=True)
class _Provider:
    """A requested provider whose slots can be given."""

    index: int
    id: str
    zone: ZoneInfo
    duration_minutes: int


class AvailabilityService(pb_grpc.AvailabilityServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CheckConflicts(
        self, request: pb.CheckConflictsRequest, context: Context
    ) -> pb.CheckConflictsResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid("provider_id", request.provider_id)
        v.uuid("service_id", request.service_id)
        v.uuid("exclude_appointment_id", request.exclude_appointment_id, required=False)
        start = _required_time(request.start_time, "start_time", v)
        policy = _policy(request, v)
        v.raise_if_any()
        assert start is not None
        async with self._deps.db.connection(timeout_of(context)) as conn:
            evaluation = await booking.evaluate_booking(
                conn,
                org_id=request.organization_id,
                provider_id=request.provider_id,
                service_id=request.service_id,
                start=start,
                now=datetime.now(UTC),
                policy=policy,
                exclude_appointment_id=request.exclude_appointment_id or None,
            )
        response = pb.CheckConflictsResponse(bookable=evaluation.bookable)
        for c in evaluation.conflicts:
            encode_conflict(c, response.conflicts.add)
        set_time(response.start_time, evaluation.start)
        set_time(response.end_time, evaluation.end)
        set_time(response.occupied_start_time, evaluation.occupied_start)
        set_time(response.occupied_end_time, evaluation.occupied_end)
        return response
