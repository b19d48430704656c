"""Resource encoders shared by several handler modules (a row -> its
message): an appointment, a payment and a time off are listed or attached by
other services' RPCs too (VIEW_FULL, a client's history, the day sheet), so
they live here, below every handler module, instead of in one handler module
that the others would import in a cycle.

Each takes a row (an asyncpg Record, or anything read by column name) and the
message constructor (a repeated field's ``add``, by default the class)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from booking.v1 import common_pb2, resources_pb2

from server.db import schema
from server.handlers._encoding import etag, set_time

__all__ = [
    "APPOINTMENT_STATUSES",
    "PAYMENT_METHODS",
    "PAYMENT_STATUSES",
    "PAYMENT_STATUS_NAMES",
    "encode_appointment",
    "encode_payment",
    "encode_refund",
    "encode_time_off",
    "status_name",
]

AppointmentStatus = resources_pb2.AppointmentStatus


def status_name(status: str) -> str:
    """A stored status as its proto enum name ("no_show" -> "APPOINTMENT_STATUS_NO_SHOW")."""
    return f"APPOINTMENT_STATUS_{status.upper()}"


def encode_appointment(
    row: Any, new: Callable[..., resources_pb2.Appointment] = resources_pb2.Appointment
) -> resources_pb2.Appointment:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        provider_id=str(row["provider_id"]),
        client_id=str(row["client_id"]),
        service_id=str(row["service_id"]),
        status=AppointmentStatus.Value(status_name(row["status"])),
        price=common_pb2.Money(currency_code=row["currency"], amount_minor=row["price_minor"]),
        external_id=row["external_id"] or "",
        notes=row["notes"] or "",
        etag=etag(row["version"]),
        cancel_reason=row["cancel_reason"] or "",
        buffer_before_minutes=row["buffer_before_minutes"],
        buffer_after_minutes=row["buffer_after_minutes"],
    )
    set_time(msg.start_time, row["during"].lower)
    set_time(msg.end_time, row["during"].upper)
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


# Enum number -> stored value.
APPOINTMENT_STATUSES = {
    AppointmentStatus.Value(status_name(s)): s for s in schema.APPOINTMENT_STATUSES
}

PaymentStatus = resources_pb2.PaymentStatus
PaymentMethod = resources_pb2.PaymentMethod
# Enum number -> stored value, and back.
PAYMENT_STATUSES = {
    PaymentStatus.Value(f"PAYMENT_STATUS_{s.upper()}"): s for s in schema.PAYMENT_STATUSES
}
PAYMENT_METHODS = {
    PaymentMethod.Value(f"PAYMENT_METHOD_{m.upper()}"): m for m in schema.PAYMENT_METHODS
}
_PAYMENT_STATUS_OF = {s: n for n, s in PAYMENT_STATUSES.items()}
# Stored status -> its proto enum name ("completed" -> "PAYMENT_STATUS_COMPLETED").
PAYMENT_STATUS_NAMES = {s: PaymentStatus.Name(n) for n, s in PAYMENT_STATUSES.items()}
_PAYMENT_METHOD_OF = {m: n for n, m in PAYMENT_METHODS.items()}


def encode_payment(
    row: Any, new: Callable[..., resources_pb2.Payment] = resources_pb2.Payment
) -> resources_pb2.Payment:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        client_id=str(row["client_id"]),
        appointment_id="" if row["appointment_id"] is None else str(row["appointment_id"]),
        amount=common_pb2.Money(currency_code=row["currency"], amount_minor=row["amount_minor"]),
        status=_PAYMENT_STATUS_OF[row["status"]],
        method=_PAYMENT_METHOD_OF[row["method"]],
        external_reference=row["external_reference"] or "",
        refunded_amount=common_pb2.Money(
            currency_code=row["currency"], amount_minor=row["refunded_minor"]
        ),
        etag=etag(row["version"]),
    )
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


def encode_refund(
    row: Any, new: Callable[..., resources_pb2.Refund] = resources_pb2.Refund
) -> resources_pb2.Refund:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        payment_id=str(row["payment_id"]),
        amount=common_pb2.Money(currency_code=row["currency"], amount_minor=row["amount_minor"]),
        reason=row["reason"] or "",
        external_reference=row["external_reference"] or "",
    )
    set_time(msg.create_time, row["created_at"])
    return msg


def encode_time_off(
    row: Any, new: Callable[..., resources_pb2.TimeOff] = resources_pb2.TimeOff
) -> resources_pb2.TimeOff:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        provider_id=str(row["provider_id"]),
        reason=row["reason"] or "",
    )
    set_time(msg.start_time, row["start_at"])
    set_time(msg.end_time, row["end_at"])
    set_time(msg.create_time, row["created_at"])
    return msg
