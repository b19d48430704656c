"""Payments: ListPayments.

Indexes (migration 0004): ``(organization_id, created_at, id)`` for the
tenant's payments by create time and the created range; ``(organization_id,
client_id, created_at, id)`` for a client's; ``(organization_id, status,
created_at, id)`` for one status; ``(organization_id, appointment_id)`` for an
appointment's (and for the payments of a page of appointments).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.db import schema
from server.queries._crud import Entity
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey, orders

__all__ = ["PAYMENT", "PAYMENTS", "PaymentFilter"]

PAYMENT = Entity.of(
    schema.payments,
    "payment",
    writable=(
        "client_id",
        "appointment_id",
        "amount_minor",
        "currency",
        "status",
        "method",
        "external_reference",
    ),
)


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    client_id: str = ""
    appointment_id: str = ""
    # Sorted and distinct stored values ("completed", "card", ...).
    statuses: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    currency: str = ""
    # Inclusive bounds in minor units of ``currency``.
    min_amount: int | None = None
    max_amount: int | None = None


def build_list_payments_query(org_id: str, flt: PaymentFilter, order: Order) -> ListQuery:
    query = ListQuery(source="payments", columns=PAYMENT.columns, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    query.equals("client_id", flt.client_id or None)
    query.equals("appointment_id", flt.appointment_id or None)
    query.one_of("status", flt.statuses)
    query.one_of("method", flt.methods)
    query.between("created_at", flt.created_after, flt.created_before)
    query.equals("currency", flt.currency or None)
    if flt.min_amount is not None:
        query.where(f"amount_minor >= {query.param(flt.min_amount)}")
    if flt.max_amount is not None:
        query.where(f"amount_minor <= {query.param(flt.max_amount)}")
    return query


PAYMENTS: Listing[PaymentFilter] = Listing(
    name="payments",
    orders=orders(
        ("create_time", (SortKey("created_at", KeyType.TIMESTAMP), SortKey("id", KeyType.UUID)))
    ),
    default_order="create_time desc",
    build=build_list_payments_query,
)
