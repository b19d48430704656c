"""A client's history: appointments and payments in one timeline, newest first.

The list's source is a UNION ALL of the client's appointments (at = start_at)
and payments (at = created_at), each branch carrying its own table's columns
(prefixed ``a_`` / ``p_``, NULL in the other branch), so a page is ONE
statement with no join back. The keyset ``(at, kind, id)`` is pushed into both
branches, each a backward range scan of its client index (migration 0004:
``(organization_id, client_id, start_at, id)`` on appointments,
``(organization_id, client_id, created_at, id)`` on payments), merged by at.
At the same instant payments sort before appointments ("payment" > "appointment"
descending), then by id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey
from server.queries.appointments import APPOINTMENT
from server.queries.payments import PAYMENT

__all__ = ["APPOINTMENT_KIND", "HISTORY", "PAYMENT_KIND", "HistoryFilter", "Prefixed"]

APPOINTMENT_KIND = "appointment"
PAYMENT_KIND = "payment"
_A = tuple(f"a_{c}" for c in APPOINTMENT.columns)
_P = tuple(f"p_{c}" for c in PAYMENT.columns)


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    client_id: str = ""


def _branch(kind: str, at: str, table: str, org: str, client: str) -> str:
    """One branch: every column of the row (a_* then p_*), NULL for the other table's."""
    if kind == APPOINTMENT_KIND:
        cols = [f"{c} AS a_{c}" for c in APPOINTMENT.columns] + [f"NULL AS {c}" for c in _P]
    else:
        cols = [f"NULL AS {c}" for c in _A] + [f"{c} AS p_{c}" for c in PAYMENT.columns]
    return (
        f"SELECT {at} AS at, '{kind}'::text AS kind, id, {', '.join(cols)} FROM {table} "
        f"WHERE organization_id = {org} AND client_id = {client}"
    )


def build_history_query(org_id: str, flt: HistoryFilter, order: Order) -> ListQuery:
    query = ListQuery(source="", columns=("at", "kind", "id", *_A, *_P), order=order)
    org, client = query.param(org_id), query.param(flt.client_id)
    appointments = _branch(APPOINTMENT_KIND, "start_at", "appointments", org, client)
    payments = _branch(PAYMENT_KIND, "created_at", "payments", org, client)
    query.source = f"({appointments} UNION ALL {payments}) AS history"
    return query


_NEWEST_FIRST = Order(
    "time desc",
    (
        SortKey("at", KeyType.TIMESTAMP),
        SortKey("kind", KeyType.TEXT),
        SortKey("id", KeyType.UUID),
    ),
    descending=True,
)

HISTORY: Listing[HistoryFilter] = Listing(
    name="client_history",
    orders={"time desc": _NEWEST_FIRST},
    default_order="time desc",
    build=build_history_query,
)


class Prefixed:
    """One side of a history row, read by its table's column names (what the
    appointment and payment encoders read: ``row[column]``)."""

    __slots__ = ("_prefix", "_row")

    def __init__(self, row: Mapping[str, Any] | Any, prefix: str) -> None:
        self._row, self._prefix = row, prefix

    def __getitem__(self, key: str) -> Any:
        return self._row[self._prefix + key]
