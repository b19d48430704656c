"""booking.v1.ScheduleService: weekly working hours, date overrides, time off,
and the day sheet (GetProviderSchedule, in server.handlers.day_sheet).

Writes run in :func:`~server.handlers._writes.writing` and first lock the
provider's row (:func:`server.queries.schedules.lock_provider`), then replace
set-based; each write is ONE audit event ("provider" replace_working_hours /
replace_date_overrides, "time_off" create / delete). Output-only and
deprecated fields of the input messages are cleared before validation, so
they are ignored (also by the request_id's fingerprint); only the NUL check
of every string field (request_violations) sees them first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from itertools import groupby
from typing import Any, TypeVar

import asyncpg
from booking.v1 import resources_pb2
from booking.v1 import schedules_pb2 as pb
from booking.v1 import schedules_pb2_grpc as pb_grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from grpc import aio

from server.db.engine import Conn
from server.handlers import day_sheet
from server.handlers._base import Deps, ignore_output_only, request_violations, timeout_of
from server.handlers._calendar_fields import (
    date_of,
    date_range_of,
    fill_date,
    fill_time,
    interval_of,
)
from server.handlers._encoders import encode_time_off
from server.handlers._encoding import not_after, nullable, to_datetime
from server.handlers._lists import ListSpec
from server.handlers._writes import writing
from server.ids import uuid7
from server.queries import schedules as q
from server.queries._crud import delete_row, insert_audit_event, insert_row
from server.validation import Violations

Context = aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)

MAX_RULES = 200
MAX_RANGE_DAYS = 366
MAX_INTERVALS = 24
MAX_REASON = 500


# -- validation ----------------------------------------------------------------------


def _dates_overlap(a: q.WeeklyRule, b: q.WeeklyRule) -> bool:
    """Whether two rules' validity ranges share a date (None = open)."""
    a_starts_in_time = a.valid_from is None or b.valid_to is None or a.valid_from <= b.valid_to
    b_starts_in_time = b.valid_from is None or a.valid_to is None or b.valid_from <= a.valid_to
    return a_starts_in_time and b_starts_in_time


def _minutes_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _weekly_rules(rules: Sequence[resources_pb2.WorkingHours], v: Violations) -> list[q.WeeklyRule]:
    if len(rules) > MAX_RULES:
        v.add("working_hours", f"must be at most {MAX_RULES} rules", "TOO_MANY")
        return []
    valid: list[tuple[int, q.WeeklyRule]] = []
    for i, rule in enumerate(rules):
        path = f"working_hours[{i}]"
        before = len(v.items)
        if rule.day_of_week == 0:
            v.add(f"{path}.day_of_week", "is required", "REQUIRED")
        elif not 1 <= rule.day_of_week <= 7:
            v.add(f"{path}.day_of_week", "is not a known DayOfWeek", "INVALID_ENUM")
        minutes = interval_of(rule.start_time, rule.end_time, f"{path}.", v)
        valid_from = date_of(rule.valid_from, f"{path}.valid_from", v)
        valid_to = date_of(rule.valid_to, f"{path}.valid_to", v)
        if valid_from is not None and valid_to is not None and valid_to < valid_from:
            v.add(f"{path}.valid_to", "must not be before valid_from", "INVALID_RANGE")
        if len(v.items) == before and minutes is not None:
            parsed = q.WeeklyRule(rule.day_of_week, *minutes, valid_from, valid_to)
            for j, other in valid:
                if (
                    other.weekday == parsed.weekday
                    and _minutes_overlap(
                        (other.start_minute, other.end_minute),
                        (parsed.start_minute, parsed.end_minute),
                    )
                    and _dates_overlap(other, parsed)
                ):
                    v.add(
                        path,
                        f"overlaps working_hours[{j}] (same day, times and dates)",
                        "OVERLAPPING_HOURS",
                    )
                    break
            else:
                valid.append((i, parsed))
    return [rule for _, rule in valid]


def _override_rows(
    request: pb.ReplaceDateOverridesRequest, v: Violations
) -> tuple[date, date, list[q.OverrideRow]] | None:
    bounds = date_range_of(request.start_date, request.end_date, v, max_days=MAX_RANGE_DAYS)
    overrides = request.date_overrides
    if len(overrides) > MAX_RANGE_DAYS:
        v.add("date_overrides", f"must be at most {MAX_RANGE_DAYS} (one per date)", "TOO_MANY")
        return None
    rows: list[q.OverrideRow] = []
    seen: dict[date, int] = {}
    for i, override in enumerate(overrides):
        path = f"date_overrides[{i}]"
        day = date_of(override.date, f"{path}.date", v, required=True)
        if day is not None:
            if bounds is not None and not bounds[0] <= day <= bounds[1]:
                v.add(f"{path}.date", "must lie between start_date and end_date", "OUT_OF_RANGE")
            elif day in seen:
                v.add(
                    f"{path}.date", f"date_overrides[{seen[day]}] has that date", "DUPLICATE_DATE"
                )
            else:
                seen[day] = i
        if override.closed:
            if override.intervals:
                v.add(f"{path}.intervals", "must be empty when closed", "CONFLICTING_FIELDS")
            elif day is not None:
                rows.append(q.OverrideRow(day))
            continue
        if not override.intervals:
            v.add(f"{path}.intervals", "is required when not closed", "REQUIRED")
            continue
        if len(override.intervals) > MAX_INTERVALS:
            v.add(f"{path}.intervals", f"must be at most {MAX_INTERVALS}", "TOO_MANY")
            continue
        taken: list[tuple[int, tuple[int, int]]] = []
        for j, interval in enumerate(override.intervals):
            item = f"{path}.intervals[{j}]"
            minutes = interval_of(interval.start_time, interval.end_time, f"{item}.", v)
            if minutes is None:
                continue
            clash = next((k for k, other in taken if _minutes_overlap(other, minutes)), None)
            if clash is not None:
                v.add(item, f"overlaps {path}.intervals[{clash}]", "OVERLAPPING_HOURS")
                continue
            taken.append((j, minutes))
            if day is not None:
                rows.append(q.OverrideRow(day, *minutes))
    if bounds is None:
        return None
    return bounds[0], bounds[1], rows


# The instants a time off may start and end at: the years of business dates
# (as WorkingHours' dates), and never datetime.min / datetime.max, which the
# driver writes as -infinity / infinity.
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def _required_time(ts: timestamp_pb2.Timestamp, field: str, v: Violations) -> datetime | None:
    value = to_datetime(ts, field, v)
    if value is None:
        if ts.seconds == 0 and ts.nanos == 0:
            v.add(field, "is required", "REQUIRED")
        return None
    if not MIN_INSTANT <= value <= MAX_INSTANT:
        v.add(
            field, "must be between 1900-01-01T00:00:00Z and 9999-12-31T23:59:59Z", "OUT_OF_RANGE"
        )
        return None
    return value


def _time_off_values(t: resources_pb2.TimeOff, v: Violations) -> dict[str, Any]:
    v.uuid("time_off.provider_id", t.provider_id)
    start = _required_time(t.start_time, "time_off.start_time", v)
    end = _required_time(t.end_time, "time_off.end_time", v)
    if start is not None and end is not None:
        if end <= start:
            v.add("time_off.end_time", "must be after start_time", "INVALID_RANGE")
        elif end - start > q.MAX_TIME_OFF:
            v.add("time_off.end_time", "a time off is at most 366 days long", "RANGE_TOO_LONG")
    v.text("time_off.reason", t.reason, required=False, max_len=MAX_REASON)
    return {
        "provider_id": t.provider_id,
        "during": asyncpg.Range(start, end),
        "reason": nullable(t.reason),
    }


# -- encoding ------------------------------------------------------------------------


def _encode_hours(
    rows: Sequence[asyncpg.Record], org_id: str, provider_id: str, target: Any
) -> None:
    for row in rows:
        msg = target.add(
            id=str(row["id"]),
            organization_id=org_id,
            provider_id=provider_id,
            day_of_week=row["weekday"],
        )
        fill_time(msg.start_time, row["start_minute"])
        fill_time(msg.end_time, row["end_minute"])
        if row["valid_from"] is not None:
            fill_date(msg.valid_from, row["valid_from"])
        if row["valid_to"] is not None:
            fill_date(msg.valid_to, row["valid_to"])


def _encode_overrides(
    rows: Sequence[asyncpg.Record], org_id: str, provider_id: str, target: Any
) -> None:
    """Rows (by date, then start) to one DateOverride per date."""
    for day, group in groupby(rows, key=lambda r: r["on_date"]):
        msg = target.add(organization_id=org_id, provider_id=provider_id)
        fill_date(msg.date, day)
        for row in group:
            if row["closed"]:
                msg.closed = True
                continue
            interval = msg.intervals.add()
            fill_time(interval.start_time, row["start_minute"])
            fill_time(interval.end_time, row["end_minute"])


def _time_off_filters(request: pb.ListTimeOffRequest, v: Violations) -> q.TimeOffFilter:
    v.uuid("provider_id", request.provider_id)
    start = to_datetime(request.start_time, "start_time", v)
    end = to_datetime(request.end_time, "end_time", v, end=True)
    if start is not None and end is not None and not_after(request.end_time, request.start_time):
        v.add("end_time", "must be after start_time", "INVALID_RANGE")
    return q.TimeOffFilter(request.provider_id, start, end)


LIST_TIME_OFF = ListSpec(
    q.TIME_OFF_LIST, pb.ListTimeOffResponse, "time_off", _time_off_filters, encode_time_off
)


def _provider_request(request: Any, v: Violations) -> None:
    v.uuid("organization_id", request.organization_id)
    v.uuid("provider_id", request.provider_id)


# A replace's write under the provider's lock: (conn, org, provider) -> stored rows.
Replace = Callable[[Conn, str, str], Awaitable[list[asyncpg.Record]]]
# Stored rows into the response's repeated field: (rows, org, provider, field).
EncodeRows = Callable[[Sequence[asyncpg.Record], str, str, Any], None]


class ScheduleService(pb_grpc.ScheduleServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def _replace(
        self,
        context: Context,
        request: Any,
        response: type[R],
        action: str,
        replace: Replace,
        encode: EncodeRows,
        items_field: str,
    ) -> R:
        """A replace RPC's write: lock the provider, replace, audit once, answer."""
        org, provider = request.organization_id, request.provider_id
        async with writing(self._deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            await q.lock_provider(w.conn, org, provider)
            rows = await replace(w.conn, org, provider)
            await insert_audit_event(
                w.conn, org, w.audit, action=action, resource_type="provider", resource_id=provider
            )
            out = response()
            encode(rows, org, provider, getattr(out, items_field))
            return await w.result(out)

    async def ReplaceWorkingHours(
        self, request: pb.ReplaceWorkingHoursRequest, context: Context
    ) -> pb.ReplaceWorkingHoursResponse:
        v = request_violations(request)
        ignore_output_only(request.working_hours, "id", "organization_id", "provider_id")
        _provider_request(request, v)
        v.request_id("request_id", request.request_id)
        rules = _weekly_rules(request.working_hours, v)
        v.raise_if_any()

        async def replace(conn: Conn, org: str, provider: str) -> list[asyncpg.Record]:
            return await q.replace_working_hours(conn, org, provider, rules)

        return await self._replace(
            context,
            request,
            pb.ReplaceWorkingHoursResponse,
            "replace_working_hours",
            replace,
            _encode_hours,
            "working_hours",
        )

    async def GetWorkingHours(
        self, request: pb.GetWorkingHoursRequest, context: Context
    ) -> pb.GetWorkingHoursResponse:
        v = request_violations(request)
        _provider_request(request, v)
        v.raise_if_any()
        org, provider = request.organization_id, request.provider_id
        async with self._deps.db.connection(timeout_of(context)) as conn:
            zone, rows = await q.get_working_hours(conn, org, provider)
        out = pb.GetWorkingHoursResponse(time_zone=zone)
        _encode_hours(rows, org, provider, out.working_hours)
        return out

    async def ReplaceDateOverrides(
        self, request: pb.ReplaceDateOverridesRequest, context: Context
    ) -> pb.ReplaceDateOverridesResponse:
        v = request_violations(request)
        ignore_output_only(
            request.date_overrides, "id", "organization_id", "provider_id", "start_time", "end_time"
        )
        _provider_request(request, v)
        v.request_id("request_id", request.request_id)
        replaced = _override_rows(request, v)
        v.raise_if_any()
        assert replaced is not None
        first, last, rows = replaced

        async def replace(conn: Conn, org: str, provider: str) -> list[asyncpg.Record]:
            return await q.replace_date_overrides(conn, org, provider, first, last, rows)

        return await self._replace(
            context,
            request,
            pb.ReplaceDateOverridesResponse,
            "replace_date_overrides",
            replace,
            _encode_overrides,
            "date_overrides",
        )

    async def GetDateOverrides(
        self, request: pb.GetDateOverridesRequest, context: Context
    ) -> pb.GetDateOverridesResponse:
        v = request_violations(request)
        _provider_request(request, v)
        bounds = date_range_of(request.start_date, request.end_date, v, max_days=MAX_RANGE_DAYS)
        v.raise_if_any()
        assert bounds is not None
        org, provider = request.organization_id, request.provider_id
        async with self._deps.db.connection(timeout_of(context)) as conn:
            zone, rows = await q.get_date_overrides(conn, org, provider, *bounds)
        out = pb.GetDateOverridesResponse(time_zone=zone)
        _encode_overrides(rows, org, provider, out.date_overrides)
        return out

    async def CreateTimeOff(
        self, request: pb.CreateTimeOffRequest, context: Context
    ) -> pb.CreateTimeOffResponse:
        v = request_violations(request)
        ignore_output_only([request.time_off], "id", "organization_id", "create_time")
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        values = _time_off_values(request.time_off, v)
        v.raise_if_any()
        org, provider = request.organization_id, request.time_off.provider_id
        response = pb.CreateTimeOffResponse
        async with writing(self._deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            await q.lock_provider(w.conn, org, provider)
            row = await insert_row(
                w.conn, q.TIME_OFF, org_id=org, row_id=uuid7(), values=values, audit=w.audit
            )
            return await w.result(response(time_off=encode_time_off(row)))

    async def DeleteTimeOff(
        self, request: pb.DeleteTimeOffRequest, context: Context
    ) -> pb.DeleteTimeOffResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid("time_off_id", request.time_off_id)
        v.request_id("request_id", request.request_id)
        v.raise_if_any()
        org, time_off_id = request.organization_id, request.time_off_id
        response = pb.DeleteTimeOffResponse
        async with writing(self._deps, context, request, response=response) as w:
            if w.replay is not None:
                return w.replay
            await q.lock_provider_of_time_off(w.conn, org, time_off_id)
            await delete_row(w.conn, q.TIME_OFF, org_id=org, row_id=time_off_id, audit=w.audit)
            return await w.result(response())

    async def ListTimeOff(
        self, request: pb.ListTimeOffRequest, context: Context
    ) -> pb.ListTimeOffResponse:
        return await LIST_TIME_OFF.serve(self._deps, request, context)

    async def GetProviderSchedule(
        self, request: pb.GetProviderScheduleRequest, context: Context
    ) -> pb.GetProviderScheduleResponse:
        return await day_sheet.get_provider_schedule(self._deps, request, context)
