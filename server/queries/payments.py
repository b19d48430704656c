"""Payments: their writes' SQL (RecordPayment inserts through the generic
``insert_row``; RefundPayment locks the payment with ``lock_row``, then
inserts the refund and updates the payment's refunded_minor) and ListPayments.

Indexes (migration 0004): ``(organization_id, created_at, id)`` for the
tenant's payments by create time and the created range; ``(organization_id,
client_id, created_at, id)`` for a client's; ``(organization_id, status,
created_at, id)`` for one status; ``(organization_id, appointment_id)`` for an
appointment's (and for the payments of a page of appointments).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from server.db import schema
from server.db.engine import Conn
from server.errors import NotFound
from server.queries._crud import Entity
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey, orders

__all__ = [
    "PAYER_SQL",
    "PAYMENT",
    "PAYMENTS",
    "REFUND",
    "PaymentFilter",
    "payer",
]

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
        "refunded_minor",
    ),
)

REFUND = Entity.of(
    schema.refunds,
    "refund",
    writable=("payment_id", "amount_minor", "currency", "reason", "external_reference"),
)

# Whether the payment's client exists, and the client and currency of the
# appointment it names ($3, may be NULL): primary-key probes in the payment's
# transaction, one statement.
PAYER_SQL = """
SELECT EXISTS (SELECT 1 FROM clients WHERE organization_id = $1 AND id = $2) AS client_found,
       a.id AS appointment_id, a.client_id, a.currency
FROM (SELECT 1) AS one
LEFT JOIN appointments a ON a.organization_id = $1 AND a.id = $3::uuid
"""


async def payer(
    conn: Conn, org_id: str, client_id: str, appointment_id: str | None
) -> asyncpg.Record:
    """The payment's references: NotFound when the client, or the appointment
    it names, is not the tenant's; else the appointment's client_id and
    currency (None without an appointment)."""
    row = await conn.fetchrow(PAYER_SQL, org_id, client_id, appointment_id)
    assert row is not None  # one row, always
    if not row["client_found"]:
        raise NotFound.of("client", client_id)
    if appointment_id is not None and row["appointment_id"] is None:
        raise NotFound.of("appointment", appointment_id)
    return row


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
