"""Conflicts as the contract shows them: booking.v1.Conflict messages
(CheckConflicts) and the FAILED_PRECONDITION errors of booking writes
(appointments.proto: TIME_SLOT_TAKEN / BOOKING_NOT_ALLOWED with an ErrorInfo,
a google.rpc.PreconditionFailure with one violation per conflict and one
booking.v1.Conflict detail per conflict)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from booking.v1 import availability_pb2 as pb
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from server import booking
from server.errors import FailedPrecondition
from server.handlers._encoding import set_time, to_datetime
from server.validation import Violations

__all__ = ["booking_instant", "encode_conflict", "refusal", "request_policy", "rfc3339", "taken"]


def rfc3339(value: datetime) -> str:
    """``2026-03-08T07:00:00Z`` (fractions only when there are any)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_EARLIEST = rfc3339(booking.EARLIEST_INSTANT)
_LATEST = rfc3339(booking.LATEST_INSTANT)


def booking_instant(ts: timestamp_pb2.Timestamp, field: str, v: Violations) -> datetime | None:
    """A required instant of a booking request (a start, a range bound), in
    [booking.EARLIEST_INSTANT, booking.LATEST_INSTANT): else a violation."""
    value = to_datetime(ts, field, v)
    if value is None:
        if ts.seconds == 0 and ts.nanos == 0:
            v.add(field, "is required", "REQUIRED")
        return None
    if not booking.EARLIEST_INSTANT <= value < booking.LATEST_INSTANT:
        v.add(field, f"must be from {_EARLIEST} and before {_LATEST}", "OUT_OF_RANGE")
        return None
    return value


def request_policy(request: Any, v: Violations) -> booking.Policy:
    """The booking policy a request sets for itself (GetAvailability,
    CheckConflicts and the booking writes alike), validated."""
    values: dict[str, int | None] = {}
    for name, (low, high) in booking.POLICY_RANGES.items():
        values[name] = None
        if request.HasField(name):
            values[name] = getattr(request, name)
            v.int_range(name, getattr(request, name), low, high)
    return booking.Policy(**values)


_DESCRIPTIONS = {
    booking.Reason.OVERLAP: "another appointment overlaps the appointment",
    booking.Reason.BUFFER: "the buffers overlap another appointment",
    booking.Reason.TIME_OFF: "the time overlaps the provider's time off",
    booking.Reason.OUTSIDE_HOURS: "the appointment is not wholly within working hours",
    booking.Reason.MIN_NOTICE: "the start is sooner than the minimum notice allows",
    booking.Reason.BEYOND_HORIZON: "the start is after the booking horizon",
    booking.Reason.PROVIDER_INACTIVE: "the provider is inactive",
    booking.Reason.SERVICE_NOT_OFFERED: "the provider does not offer the service",
    booking.Reason.SERVICE_INACTIVE: "the service is inactive",
}

# The request field a rule's conflict names (after the caller's prefix).
_FIELDS = {
    booking.Reason.OUTSIDE_HOURS: "start_time",
    booking.Reason.MIN_NOTICE: "start_time",
    booking.Reason.BEYOND_HORIZON: "start_time",
    booking.Reason.PROVIDER_INACTIVE: "provider_id",
    booking.Reason.SERVICE_NOT_OFFERED: "service_id",
    booking.Reason.SERVICE_INACTIVE: "service_id",
}


def encode_conflict(
    c: booking.Conflict, new: Callable[..., pb.Conflict] = pb.Conflict
) -> pb.Conflict:
    """booking.v1.Conflict of a conflict (``new``: e.g. a repeated field's add)."""
    msg = new(
        reason=pb.ConflictReason.Value(f"CONFLICT_REASON_{c.reason.name}"),
        appointment_id=c.appointment_id or "",
        time_off_id=c.time_off_id or "",
    )
    if c.start is not None:
        set_time(msg.start_time, c.start)
    if c.end is not None:
        set_time(msg.end_time, c.end)
    return msg


def _subject(c: booking.Conflict, field_prefix: str) -> str:
    if c.appointment_id is not None:
        return f"appointments/{c.appointment_id}"
    if c.time_off_id is not None:
        return f"time_off/{c.time_off_id}"
    return field_prefix + _FIELDS.get(c.reason, "start_time")


def _error(conflicts: Sequence[booking.Conflict], field_prefix: str) -> FailedPrecondition:
    assert conflicts, "an error needs at least one conflict"
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=f"CONFLICT_REASON_{c.reason.name}",
                subject=_subject(c, field_prefix),
                description=_DESCRIPTIONS[c.reason],
            )
            for c in conflicts
        ]
    )
    details: list[Message] = [failure, *(encode_conflict(c) for c in conflicts)]
    first_taken = next((c for c in conflicts if c.reason.taken), None)
    if first_taken is not None:
        metadata = {"appointment_id": first_taken.appointment_id or ""}
        if first_taken.start is not None:
            metadata["start_time"] = rfc3339(first_taken.start)
        if first_taken.end is not None:
            metadata["end_time"] = rfc3339(first_taken.end)
        return FailedPrecondition(
            "another appointment occupies the time; pick another time",
            reason="TIME_SLOT_TAKEN",
            metadata=metadata,
            details=details,
        )
    names = ", ".join(dict.fromkeys(c.reason.name for c in conflicts))
    return FailedPrecondition(
        f"the booking rules refuse this appointment: {names}",
        reason="BOOKING_NOT_ALLOWED",
        details=details,
    )


def refusal(evaluation: booking.Evaluation, *, field_prefix: str = "") -> FailedPrecondition:
    """The error refusing an evaluation that is not bookable: TIME_SLOT_TAKEN
    when another appointment holds the time (OVERLAP or BUFFER; its metadata
    names the first), else BOOKING_NOT_ALLOWED. Every conflict is in the
    details. ``field_prefix`` makes rule subjects request paths (e.g.
    ``"appointment."`` for CreateAppointment's ``appointment.start_time``)."""
    return _error(evaluation.conflicts, field_prefix)


def taken(conflicts: Sequence[booking.Conflict], *, field_prefix: str = "") -> FailedPrecondition:
    """TIME_SLOT_TAKEN for the write path's race (the exclusion constraint
    refused an insert that was evaluated as free): ``conflicts`` are those of
    a re-evaluation, only the OVERLAP / BUFFER ones are reported."""
    held = [c for c in conflicts if c.reason.taken]
    # Callers look the holders up first and try again when there are none:
    # the contract promises the holder's id and interval.
    assert held, "TIME_SLOT_TAKEN without the appointment that holds the time"
    return _error(held, field_prefix)
