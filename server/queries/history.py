"""A client's history: appointments and payments in one timeline, newest first.

The list's source is a UNION ALL of the client's appointments (at = start_at)
and payments (at = created_at), each branch carrying its own table's columns
(prefixed ``a_`` / ``p_``, NULL in the other branch), so a page is ONE
statement with no join back. The filters and the keyset ``(at, kind, id)``
are pushed into both branches, each a backward range scan of its client index (migration 0004:
``(organization_id, client_id, start_at, id)`` on appointments,
``(organization_id, client_id, created_at, id)`` on payments), merged by at.
At the same instant payments sort before appointments ("payment" > "appointment"
descending), then by id.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey
from server.queries._rows import Prefixed
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


def _branch(kind: str, at: str, table: str) -> str:
    """One branch: the tenant and client to filter on, then every column of
    the row (a_* then p_*), NULL for the other table's.

    No WHERE of its own: the outer filters are pushed into both branches of
    the flattened UNION ALL, whose ordered index scans are then merged (Merge
    Append). A branch with a WHERE is planned as a subquery of its own, without
    the outer order: every page would read and sort the whole history."""
    if kind == APPOINTMENT_KIND:
        cols = [f"{c} AS a_{c}" for c in APPOINTMENT.columns] + [f"NULL AS {c}" for c in _P]
    else:
        cols = [f"NULL AS {c}" for c in _A] + [f"{c} AS p_{c}" for c in PAYMENT.columns]
    return (
        f"SELECT {at} AS at, '{kind}'::text AS kind, id, organization_id AS h_org, "
        f"client_id AS h_client, {', '.join(cols)} FROM {table}"
    )


_SOURCE = (
    f"({_branch(APPOINTMENT_KIND, 'start_at', 'appointments')} "
    f"UNION ALL {_branch(PAYMENT_KIND, 'created_at', 'payments')}) AS history"
)


def build_history_query(org_id: str, flt: HistoryFilter, order: Order) -> ListQuery:
    query = ListQuery(source=_SOURCE, columns=("at", "kind", "id", *_A, *_P), order=order)
    query.where(f"h_org = {query.param(org_id)}")
    query.where(f"h_client = {query.param(flt.client_id)}")
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
