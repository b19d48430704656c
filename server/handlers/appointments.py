"""booking.v1.AppointmentService: the booking writes.

The double-booking guarantee is the database's (``ex_appointments_no_overlap``);
the booking rules (:func:`server.booking.evaluate_booking`) are checked first,
in the write's transaction. Between that check and the INSERT (or a
reschedule's UPDATE) a concurrent booking may take the time: the constraint
then refuses the write, the transaction rolls back, and
:func:`_taking_time` names the winner (TIME_SLOT_TAKEN with its id and
interval), never a generic error.

Status changes (cancel, confirm, complete, no-show) are one load-check-write
function driven by the :class:`Transition` table.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import asyncpg
from booking.v1 import appointments_pb2 as pb
from booking.v1 import appointments_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from google.protobuf.message import Message
from grpc import aio

from server.booking import Evaluation, evaluate_booking
from server.errors import Aborted, FailedPrecondition
from server.handlers import catalog, clients, providers
from server.handlers._base import (
    Context,
    Deps,
    ignore_output_only,
    request_violations,
    timeout_of,
)
from server.handlers._calendar_fields import date_of
from server.handlers._conflicts import booking_instant, refusal, request_policy, taken
from server.handlers._encoders import (
    APPOINTMENT_STATUSES,
    encode_appointment,
    encode_payment,
    status_name,
)
from server.handlers._encoding import (
    check_version,
    not_after,
    nullable,
    parse_etag,
    to_datetime,
)
from server.handlers._lists import ListSpec, Related, enum_values
from server.handlers._resource import TenantResource
from server.handlers._writes import Write, writing
from server.ids import uuid7
from server.queries import appointments as q
from server.queries import rollups
from server.queries._crud import lock_row, update_row
from server.queries.catalog import SERVICE
from server.queries.clients import CLIENT
from server.queries.payments import PAYMENT
from server.queries.providers import PROVIDER
from server.validation import Violations

__all__ = ["TRANSITIONS", "AppointmentService", "Transition", "encode", "status_name"]

# The appointment message of a row (server.handlers._encoders).
encode = encode_appointment

R = TypeVar("R", bound=Message)

MAX_NOTES = 2000
MAX_EXTERNAL_ID = 200
MAX_CANCEL_REASON = 500
# Attempts of a write whose lost race found the time free again (the winner
# was cancelled before we looked): each attempt is a whole new transaction.
RACE_ATTEMPTS = 3

Status = resources_pb2.AppointmentStatus
_CREATABLE = {
    Status.APPOINTMENT_STATUS_UNSPECIFIED: "pending",
    Status.APPOINTMENT_STATUS_PENDING: "pending",
    Status.APPOINTMENT_STATUS_CONFIRMED: "confirmed",
}
_MOVABLE = frozenset({"pending", "confirmed"})
# Appointment fields a create ignores (the server sets them).
_OUTPUT_ONLY = (
    "id",
    "organization_id",
    "end_time",
    "price",
    "create_time",
    "update_time",
    "etag",
    "cancel_reason",
    "buffer_before_minutes",
    "buffer_after_minutes",
)


# -- checks -------------------------------------------------------------------------


def _refuse(evaluation: Evaluation, override_rules: bool, field_prefix: str) -> None:
    """Without override: any conflict refuses (TIME_SLOT_TAKEN when another
    appointment holds the time, else BOOKING_NOT_ALLOWED), every conflict in
    the details. With override: only the appointments in the way refuse
    (TIME_SLOT_TAKEN, only they in the details)."""
    conflicts = evaluation.conflicts
    if not conflicts:
        return
    if not override_rules:
        raise refusal(evaluation, field_prefix=field_prefix)
    if any(c.reason.taken for c in conflicts):
        raise taken(conflicts, field_prefix=field_prefix)


def _invalid_transition(row: asyncpg.Record, change: str) -> FailedPrecondition:
    current = status_name(row["status"])
    return FailedPrecondition(
        f"a {current} appointment cannot be {change}",
        reason="INVALID_TRANSITION",
        metadata={"current_status": current},
    )


# -- the time a write takes, and the race for it ------------------------------------


@dataclass(slots=True)
class _Taking:
    """What a write is about to take, set by it just before its INSERT/UPDATE."""

    slot: q.Slot | None = None
    exclude_id: str | None = None


class _TakesTime(Protocol[R]):
    def __call__(self, w: Write[R], taking: _Taking) -> Awaitable[R]: ...


async def _taking_time(
    deps: Deps,
    context: Context,
    request: Any,
    response: type[R],
    write: _TakesTime[R],
    field_prefix: str,
) -> R:
    """Run ``write`` in :func:`writing`; when the exclusion constraint refuses
    its INSERT/UPDATE (a concurrent booking committed in between), the
    transaction is rolled back and a fresh statement names the committed
    appointments in the way: TIME_SLOT_TAKEN. Nothing was written."""
    org = request.organization_id
    for _ in range(RACE_ATTEMPTS):
        taking = _Taking()
        try:
            async with writing(deps, context, request, response=response) as w:
                if w.replay is not None:
                    return w.replay
                return await write(w, taking)
        except (asyncpg.ExclusionViolationError, asyncpg.DeadlockDetectedError):
            # Two writes whose times overlap each wait for the other's
            # uncommitted row; PostgreSQL breaks the cycle by failing one.
            if taking.slot is None:
                raise
        async with deps.db.connection(timeout_of(context)) as conn:
            winners = await q.occupying(conn, org, taking.slot, exclude_id=taking.exclude_id)
        if winners:
            raise taken(winners, field_prefix=field_prefix)
        # The winner left the time again before we looked: a new attempt.
    raise Aborted(
        "the time was taken and freed by concurrent writes; retry",
        reason="CONCURRENT_CONFLICT",
        retry_after_s=0.05,
    )


def _slot(evaluation: Evaluation) -> q.Slot:
    return q.Slot(
        provider_id=evaluation.provider_id,
        start=evaluation.start,
        end=evaluation.end,
        buffer_before_minutes=evaluation.buffer_before_minutes,
        buffer_after_minutes=evaluation.buffer_after_minutes,
    )


def _moved_fields(row: asyncpg.Record, slot: q.Slot) -> list[str]:
    """The Appointment fields a reschedule changes (its audit's changed_fields)."""
    before = {
        "provider_id": str(row["provider_id"]),
        "start_time": row["during"].lower,
        "end_time": row["during"].upper,
        "buffer_before_minutes": row["buffer_before_minutes"],
        "buffer_after_minutes": row["buffer_after_minutes"],
    }
    after = {
        "provider_id": slot.provider_id,
        "start_time": slot.start,
        "end_time": slot.end,
        "buffer_before_minutes": slot.buffer_before_minutes,
        "buffer_after_minutes": slot.buffer_after_minutes,
    }
    return [name for name, value in before.items() if after[name] != value]


# -- status changes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """A status change: its target, the statuses it may start from, and its
    audit action."""

    action: str
    to: str
    allowed_from: frozenset[str]
    # For the error message: "cannot be <done>".
    done: str


TRANSITIONS = {
    "cancel": Transition("cancel", "cancelled", _MOVABLE, "cancelled"),
    "confirm": Transition("confirm", "confirmed", frozenset({"pending"}), "confirmed"),
    "complete": Transition("complete", "completed", frozenset({"confirmed"}), "completed"),
    "no_show": Transition("no_show", "no_show", frozenset({"confirmed"}), "marked a no-show"),
}


async def _transition(
    deps: Deps,
    context: Context,
    request: Any,  # Cancel/Confirm/Complete/MarkNoShow request: same field names
    v: Violations,
    transition: Transition,
    response: type[R],
    extra: dict[str, Any] | None = None,
) -> R:
    """Load under FOR UPDATE, check the status and etag, write the new status
    (and ``extra`` columns), audited as the transition."""
    v.uuid("organization_id", request.organization_id)
    v.uuid("appointment_id", request.appointment_id)
    v.request_id("request_id", request.request_id)
    version = parse_etag(request.etag, "etag", v)
    v.raise_if_any()
    org, appointment_id = request.organization_id, request.appointment_id
    values = {"status": transition.to, **(extra or {})}
    async with writing(deps, context, request, response=response) as w:
        if w.replay is not None:
            return w.replay
        row = await lock_row(w.conn, q.APPOINTMENT, org, appointment_id)
        if row["status"] not in transition.allowed_from:
            raise _invalid_transition(row, transition.done)
        check_version(row, version, "appointment")
        after = await update_row(
            w.conn,
            q.APPOINTMENT,
            org_id=org,
            row_id=appointment_id,
            values=values,
            changed_fields=["status", *(k for k, val in (extra or {}).items() if val is not None)],
            expected_version=None,
            audit=w.audit,
            action=transition.action,
        )
        await rollups.apply(w.conn, org, rollups.appointment_facts(row, after))
        return await w.result(response(appointment=encode(after)))


def _no_writes(*_: Any) -> dict[str, Any]:
    raise TypeError("appointments are written by the booking writes, not TenantResource")


# Get only: the writes are the booking writes below.
RESOURCE = TenantResource("appointment", q.APPOINTMENT, (), _no_writes, encode)


# -- ListAppointments ----------------------------------------------------------------

MAX_LIST_PROVIDERS = 100


def _list_filters(request: pb.ListAppointmentsRequest, v: Violations) -> q.AppointmentFilter:
    providers = request.provider_ids
    if len(providers) > MAX_LIST_PROVIDERS:
        v.add("provider_ids", f"must hold at most {MAX_LIST_PROVIDERS} ids", "TOO_MANY")
    else:
        for i, provider_id in enumerate(providers):
            v.uuid(f"provider_ids[{i}]", provider_id)
    v.uuid("client_id", request.client_id, required=False)
    v.uuid("service_id", request.service_id, required=False)
    start = to_datetime(request.start_time, "start_time", v)
    end = to_datetime(request.end_time, "end_time", v, end=True)
    if start is not None and end is not None and not_after(request.end_time, request.start_time):
        v.add("end_time", "must be after start_time", "INVALID_RANGE")
    first = date_of(request.start_date, "start_date", v)
    last = date_of(request.end_date, "end_date", v)
    if first is not None and last is not None and last < first:
        v.add("end_date", "must not be before start_date", "INVALID_RANGE")
    return q.AppointmentFilter(
        provider_ids=tuple(sorted(set(providers))),
        client_id=request.client_id,
        service_id=request.service_id,
        statuses=enum_values(request.statuses, APPOINTMENT_STATUSES, "statuses", v),
        start=start,
        end=end,
        start_date=first,
        end_date=last,
    )


LIST = ListSpec(
    q.APPOINTMENTS,
    pb.ListAppointmentsResponse,
    "appointments",
    _list_filters,
    encode,
    related=(
        Related("clients", "client_id", CLIENT.by_ids_sql(), clients.encode),
        Related("services", "service_id", SERVICE.by_ids_sql(), catalog.encode),
        Related("providers", "provider_id", PROVIDER.by_ids_sql(), providers.encode),
        # In the order of the page's appointments ($2 is their ids, in order).
        Related(
            "payments",
            "id",
            PAYMENT.by_ids_sql(
                "appointment_id", "array_position($2::uuid[], appointment_id), created_at, id"
            ),
            encode_payment,
            repeated=True,
        ),
    ),
)


class AppointmentService(pb_grpc.AppointmentServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateAppointment(
        self, request: pb.CreateAppointmentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateAppointmentResponse:
        v = request_violations(request)
        a = request.appointment
        ignore_output_only([a], *_OUTPUT_ONLY)
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        for name in ("provider_id", "client_id", "service_id"):
            v.uuid(f"appointment.{name}", getattr(a, name))
        start = booking_instant(a.start_time, "appointment.start_time", v)
        status = _CREATABLE.get(a.status)
        if status is None:
            v.add("appointment.status", "must be PENDING or CONFIRMED (or unset)", "INVALID_VALUE")
        if len(a.notes) > MAX_NOTES:
            v.add("appointment.notes", f"must be at most {MAX_NOTES} characters", "TOO_LONG")
        v.text("appointment.external_id", a.external_id, required=False, max_len=MAX_EXTERNAL_ID)
        policy = request_policy(request, v)
        v.raise_if_any()
        assert start is not None and status is not None
        org, override = request.organization_id, request.override_rules

        async def create(
            w: Write[pb.CreateAppointmentResponse], taking: _Taking
        ) -> pb.CreateAppointmentResponse:
            evaluation = await evaluate_booking(
                w.conn,
                org_id=org,
                provider_id=a.provider_id,
                service_id=a.service_id,
                start=start,
                now=datetime.now(UTC),
                policy=policy,
                lock_provider=True,
                client_id=a.client_id,
            )
            _refuse(evaluation, override, "appointment.")
            taking.slot = _slot(evaluation)
            row = await q.insert_appointment(
                w.conn,
                org_id=org,
                row_id=uuid7(),
                values={
                    **q.interval_values(taking.slot),
                    "client_id": a.client_id,
                    "service_id": a.service_id,
                    "status": status,
                    "price_minor": evaluation.price_minor,
                    "currency": evaluation.currency,
                    "external_id": nullable(a.external_id),
                    "notes": nullable(a.notes),
                },
                audit=w.audit,
                action="create_override" if override else "create",
            )
            await rollups.apply(w.conn, org, rollups.appointment_facts(None, row))
            return await w.result(pb.CreateAppointmentResponse(appointment=encode(row)))

        return await _taking_time(
            self._deps, context, request, pb.CreateAppointmentResponse, create, "appointment."
        )

    async def GetAppointment(
        self, request: pb.GetAppointmentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetAppointmentResponse:
        return await RESOURCE.get(self._deps, request, context, pb.GetAppointmentResponse)

    async def RescheduleAppointment(
        self, request: pb.RescheduleAppointmentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RescheduleAppointmentResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid("appointment_id", request.appointment_id)
        v.uuid("provider_id", request.provider_id, required=False)
        v.request_id("request_id", request.request_id)
        start = booking_instant(request.start_time, "start_time", v)
        version = parse_etag(request.etag, "etag", v)
        policy = request_policy(request, v)
        v.raise_if_any()
        assert start is not None
        org, appointment_id = request.organization_id, request.appointment_id
        override = request.override_rules

        async def reschedule(
            w: Write[pb.RescheduleAppointmentResponse], taking: _Taking
        ) -> pb.RescheduleAppointmentResponse:
            row = await lock_row(w.conn, q.APPOINTMENT, org, appointment_id)
            if row["status"] not in _MOVABLE:
                raise _invalid_transition(row, "rescheduled")
            check_version(row, version, "appointment")
            evaluation = await evaluate_booking(
                w.conn,
                org_id=org,
                provider_id=request.provider_id or str(row["provider_id"]),
                service_id=str(row["service_id"]),
                start=start,
                now=datetime.now(UTC),
                policy=policy,
                exclude_appointment_id=appointment_id,
                lock_provider=True,
            )
            _refuse(evaluation, override, "")
            taking.slot, taking.exclude_id = _slot(evaluation), appointment_id
            after = await update_row(
                w.conn,
                q.APPOINTMENT,
                org_id=org,
                row_id=appointment_id,
                values=q.interval_values(taking.slot),
                changed_fields=_moved_fields(row, taking.slot),
                expected_version=None,
                audit=w.audit,
                action="reschedule_override" if override else "reschedule",
            )
            facts = rollups.appointment_facts(row, after)
            facts += await rollups.moved_payment_facts(w.conn, org, row, after)
            await rollups.apply(w.conn, org, facts)
            return await w.result(pb.RescheduleAppointmentResponse(appointment=encode(after)))

        return await _taking_time(
            self._deps, context, request, pb.RescheduleAppointmentResponse, reschedule, ""
        )

    async def CancelAppointment(
        self, request: pb.CancelAppointmentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CancelAppointmentResponse:
        v = request_violations(request)
        if len(request.reason) > MAX_CANCEL_REASON:
            v.add("reason", f"must be at most {MAX_CANCEL_REASON} characters", "TOO_LONG")
        reason = nullable(request.reason.strip())
        return await _transition(
            self._deps,
            context,
            request,
            v,
            TRANSITIONS["cancel"],
            pb.CancelAppointmentResponse,
            {"cancel_reason": reason},
        )

    async def ConfirmAppointment(
        self, request: pb.ConfirmAppointmentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ConfirmAppointmentResponse:
        return await _transition(
            self._deps,
            context,
            request,
            request_violations(request),
            TRANSITIONS["confirm"],
            pb.ConfirmAppointmentResponse,
        )

    async def CompleteAppointment(
        self, request: pb.CompleteAppointmentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CompleteAppointmentResponse:
        return await _transition(
            self._deps,
            context,
            request,
            request_violations(request),
            TRANSITIONS["complete"],
            pb.CompleteAppointmentResponse,
        )

    async def MarkAppointmentNoShow(
        self, request: pb.MarkAppointmentNoShowRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MarkAppointmentNoShowResponse:
        return await _transition(
            self._deps,
            context,
            request,
            request_violations(request),
            TRANSITIONS["no_show"],
            pb.MarkAppointmentNoShowResponse,
        )

    async def ListAppointments(
        self, request: pb.ListAppointmentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListAppointmentsResponse:
        return await LIST.serve(self._deps, request, context)
