"""booking.v1.PaymentService: RecordPayment, GetPayment, RefundPayment and
ListPayments."""

from __future__ import annotations

from typing import Any

import asyncpg
from booking.v1 import payments_pb2 as pb
from booking.v1 import payments_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.errors import FailedPrecondition
from server.handlers import clients
from server.handlers._base import Deps, ignore_output_only, request_violations, timeout_of
from server.handlers._encoders import (
    PAYMENT_METHODS,
    PAYMENT_STATUS_NAMES,
    PAYMENT_STATUSES,
    encode_appointment,
    encode_payment,
    encode_refund,
)
from server.handlers._encoding import check_version, parse_etag, to_datetime
from server.handlers._lists import ListSpec, Related, enum_values
from server.handlers._writes import writing
from server.ids import uuid7
from server.queries import payments as q
from server.queries import rollups
from server.queries._crud import get_row, insert_row, lock_row, update_row
from server.queries.appointments import APPOINTMENT
from server.queries.clients import CLIENT
from server.validation import Violations

__all__ = ["PaymentService"]


def _filters(request: pb.ListPaymentsRequest, v: Violations) -> q.PaymentFilter:
    v.uuid("client_id", request.client_id, required=False)
    v.uuid("appointment_id", request.appointment_id, required=False)
    if request.currency_code:
        v.currency("currency_code", request.currency_code)
    low = request.min_amount_minor if request.HasField("min_amount_minor") else None
    high = request.max_amount_minor if request.HasField("max_amount_minor") else None
    for name, value in (("min_amount_minor", low), ("max_amount_minor", high)):
        if value is not None and value < 0:
            v.add(name, "must not be negative", "OUT_OF_RANGE")
    if (low is not None or high is not None) and not request.currency_code:
        v.add(
            "currency_code",
            "is required with an amount bound: amounts of different currencies do not compare",
            "REQUIRED",
        )
    if low is not None and high is not None and low > high:
        v.add("max_amount_minor", "must not be less than min_amount_minor", "INVALID_RANGE")
    return q.PaymentFilter(
        client_id=request.client_id,
        appointment_id=request.appointment_id,
        statuses=enum_values(request.statuses, PAYMENT_STATUSES, "statuses", v),
        methods=enum_values(request.methods, PAYMENT_METHODS, "methods", v),
        created_after=to_datetime(request.created_after, "created_after", v),
        created_before=to_datetime(request.created_before, "created_before", v, end=True),
        currency=request.currency_code,
        min_amount=low,
        max_amount=high,
    )


LIST = ListSpec(
    q.PAYMENTS,
    pb.ListPaymentsResponse,
    "payments",
    _filters,
    encode_payment,
    related=(
        Related("appointments", "appointment_id", APPOINTMENT.by_ids_sql(), encode_appointment),
        Related("clients", "client_id", CLIENT.by_ids_sql(), clients.encode),
    ),
)


# -- writes ----------------------------------------------------------------------------

MAX_AMOUNT_MINOR = 10**15
MAX_REASON = 500
MAX_REFERENCE = 200
# Payment fields a RecordPayment ignores (the server sets them).
_OUTPUT_ONLY = ("id", "organization_id", "refunded_amount", "etag", "create_time", "update_time")
# What RecordPayment may record (refunds are RefundPayment's).
_RECORDABLE = {
    resources_pb2.PAYMENT_STATUS_UNSPECIFIED: "completed",
    resources_pb2.PAYMENT_STATUS_COMPLETED: "completed",
    resources_pb2.PAYMENT_STATUS_PENDING: "pending",
    resources_pb2.PAYMENT_STATUS_FAILED: "failed",
}


def _payment_values(p: resources_pb2.Payment, v: Violations) -> dict[str, Any]:
    v.uuid("payment.client_id", p.client_id)
    v.uuid("payment.appointment_id", p.appointment_id, required=False)
    v.currency("payment.amount.currency_code", p.amount.currency_code)
    v.int_range("payment.amount.amount_minor", p.amount.amount_minor, 1, MAX_AMOUNT_MINOR)
    status = _RECORDABLE.get(p.status)
    if status is None:
        v.add(
            "payment.status",
            "must be COMPLETED, PENDING or FAILED (or unset: COMPLETED)",
            "INVALID_VALUE",
        )
    method = PAYMENT_METHODS.get(p.method)
    if method is None:
        v.add(
            "payment.method",
            "must be CARD, CASH, BANK_TRANSFER or OTHER",
            "INVALID_VALUE" if p.method else "REQUIRED",
        )
    v.text(
        "payment.external_reference", p.external_reference, required=False, max_len=MAX_REFERENCE
    )
    return {
        "client_id": p.client_id,
        "appointment_id": p.appointment_id or None,
        "amount_minor": p.amount.amount_minor,
        "currency": p.amount.currency_code,
        "status": status,
        "method": method,
        "external_reference": p.external_reference or None,
    }


def _not_allowed(message: str, reason: str, **metadata: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason=reason, metadata=metadata)


def _refundable(row: asyncpg.Record) -> int:
    return int(row["amount_minor"]) - int(row["refunded_minor"])


class PaymentService(pb_grpc.PaymentServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def RecordPayment(
        self, request: pb.RecordPaymentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RecordPaymentResponse:
        v = request_violations(request)
        ignore_output_only([request.payment], *_OUTPUT_ONLY)
        v.uuid("organization_id", request.organization_id)
        v.request_id("request_id", request.request_id)
        values = _payment_values(request.payment, v)
        v.raise_if_any()
        org = request.organization_id
        async with writing(self._deps, context, request, response=pb.RecordPaymentResponse) as w:
            if w.replay is not None:
                return w.replay
            booked = await q.payer(w.conn, org, values["client_id"], values["appointment_id"])
            if values["appointment_id"] is not None:
                if str(booked["client_id"]) != values["client_id"]:
                    raise _not_allowed(
                        "the appointment is another client's: a payment for it is its client's",
                        "PAYMENT_NOT_ALLOWED",
                        appointment_client_id=str(booked["client_id"]),
                    )
                if booked["currency"] != values["currency"]:
                    raise _not_allowed(
                        f"the appointment is priced in {booked['currency']}: a payment for it "
                        "is in that currency (amounts of different currencies are never added)",
                        "PAYMENT_NOT_ALLOWED",
                        appointment_currency=booked["currency"],
                    )
            row = await insert_row(
                w.conn, q.PAYMENT, org_id=org, row_id=uuid7(), values=values, audit=w.audit
            )
            await rollups.apply(w.conn, org, rollups.payment_facts(None, row))
            return await w.result(pb.RecordPaymentResponse(payment=encode_payment(row)))

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetPaymentResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid("payment_id", request.payment_id)
        v.raise_if_any()
        async with self._deps.db.connection(timeout_of(context)) as conn:
            row = await get_row(conn, q.PAYMENT, request.organization_id, request.payment_id)
        return pb.GetPaymentResponse(payment=encode_payment(row))

    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RefundPaymentResponse:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        v.uuid("payment_id", request.payment_id)
        v.request_id("request_id", request.request_id)
        amount = request.amount_minor if request.HasField("amount_minor") else None
        if amount is not None:
            v.int_range("amount_minor", amount, 1, MAX_AMOUNT_MINOR)
        if len(request.reason) > MAX_REASON:
            v.add("reason", f"must be at most {MAX_REASON} characters", "TOO_LONG")
        v.text(
            "external_reference", request.external_reference, required=False, max_len=MAX_REFERENCE
        )
        version = parse_etag(request.etag, "etag", v)
        v.raise_if_any()
        org, payment_id = request.organization_id, request.payment_id
        async with writing(self._deps, context, request, response=pb.RefundPaymentResponse) as w:
            if w.replay is not None:
                return w.replay
            # Locked: concurrent refunds of this payment take turns, each sees
            # what the one before it left.
            payment = await lock_row(w.conn, q.PAYMENT, org, payment_id)
            check_version(payment, version, "payment")
            left = _refundable(payment)
            give = left if amount is None else amount
            if payment["status"] != "completed" or give > left or give <= 0:
                raise _not_allowed(
                    f"a {PAYMENT_STATUS_NAMES[payment['status']]} payment with "
                    f"{left} minor units left cannot be refunded {give}",
                    "REFUND_NOT_ALLOWED",
                    refundable_minor=str(left if payment["status"] == "completed" else 0),
                    current_status=PAYMENT_STATUS_NAMES[payment["status"]],
                )
            refund = await insert_row(
                w.conn,
                q.REFUND,
                org_id=org,
                row_id=uuid7(),
                values={
                    "payment_id": payment_id,
                    "amount_minor": give,
                    "currency": payment["currency"],
                    "reason": request.reason.strip() or None,
                    "external_reference": request.external_reference or None,
                },
                audit=w.audit,
            )
            refunded = int(payment["refunded_minor"]) + give
            changes: dict[str, Any] = {"refunded_minor": refunded}
            changed = ["refunded_amount"]  # the Payment's field paths (audit)
            if refunded == payment["amount_minor"]:
                changes["status"] = "refunded"
                changed.append("status")
            row = await update_row(
                w.conn,
                q.PAYMENT,
                org_id=org,
                row_id=payment_id,
                values=changes,
                changed_fields=changed,
                expected_version=None,
                audit=w.audit,
                action="refund",
            )
            facts = [*rollups.payment_facts(payment, row), rollups.refund_fact(refund, row)]
            await rollups.apply(w.conn, org, facts)
            return await w.result(
                pb.RefundPaymentResponse(payment=encode_payment(row), refund=encode_refund(refund))
            )

    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListPaymentsResponse:
        return await LIST.serve(self._deps, request, context)
