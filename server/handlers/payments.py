"""booking.v1.PaymentService: ListPayments (payment writes come with the
summaries issue)."""

from __future__ import annotations

from typing import Any

from booking.v1 import payments_pb2 as pb
from booking.v1 import payments_pb2_grpc as pb_grpc
from grpc import aio

from server.handlers import clients
from server.handlers._base import Deps
from server.handlers._encoders import (
    PAYMENT_METHODS,
    PAYMENT_STATUSES,
    encode_appointment,
    encode_payment,
)
from server.handlers._encoding import to_datetime
from server.handlers._lists import ListSpec, Related, enum_values
from server.queries import payments as q
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


class PaymentService(pb_grpc.PaymentServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListPaymentsResponse:
        return await LIST.serve(self._deps, request, context)
