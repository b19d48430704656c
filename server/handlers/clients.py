"""booking.v1.ClientService, including ListClients (the reference paged list)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import clients_pb2 as pb
from booking.v1 import clients_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.handlers._common import (
    Deps,
    count_mode_of,
    epoch_micros,
    etag,
    from_epoch_micros,
    list_response,
    nullable,
    resolve_list_page,
    set_time,
    timeout_of,
    to_datetime,
)
from server.handlers._resource import TenantResource
from server.paging import check_paging, request_scope
from server.queries import clients as q
from server.validation import Violations

UPDATABLE = ("given_name", "family_name", "email", "phone", "external_id", "active")
MAX_QUERY_LEN = 100
_ORDERS = {
    "name": q.ClientOrder("name", False),
    "name asc": q.ClientOrder("name", False),
    "name desc": q.ClientOrder("name", True),
    "create_time": q.ClientOrder("create_time", False),
    "create_time asc": q.ClientOrder("create_time", False),
    "create_time desc": q.ClientOrder("create_time", True),
}


def encode(
    row: asyncpg.Record, new: Callable[..., resources_pb2.Client] = resources_pb2.Client
) -> resources_pb2.Client:
    msg = new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        given_name=row["given_name"],
        family_name=row["family_name"],
        email=row["email"] or "",
        phone=row["phone"] or "",
        external_id=row["external_id"] or "",
        active=row["active"],
        etag=etag(row["version"]),
    )
    set_time(msg.create_time, row["created_at"])
    set_time(msg.update_time, row["updated_at"])
    return msg


def _values(
    c: resources_pb2.Client, fields: list[str], v: Violations, creating: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        path = f"client.{f}"
        if f in ("given_name", "family_name"):
            value = getattr(c, f)
            v.text(path, value, required=False)
            out[f] = value.strip()
        elif f == "email":
            v.email(path, c.email)
            out[f] = nullable(c.email.strip())
        elif f == "phone":
            v.phone(path, c.phone)
            out[f] = nullable(c.phone)
        elif f == "external_id":
            v.text(path, c.external_id, required=False)
            out[f] = nullable(c.external_id)
        elif f == "active":
            out[f] = c.active if c.HasField("active") else creating
    if creating and not (c.given_name.strip() or c.family_name.strip()):
        v.add("client.family_name", "given_name or family_name is required", "REQUIRED")
    return out


def _keyset_out(order: q.ClientOrder, row: asyncpg.Record) -> tuple[Any, ...]:
    if order.key == "name":
        return (row["name_key"], str(row["id"]))
    return (epoch_micros(row["created_at"]), str(row["id"]))


def _keyset_in(order: q.ClientOrder, after: tuple[Any, ...]) -> tuple[Any, ...]:
    if order.key == "name":
        return after
    return (from_epoch_micros(int(after[0])), after[1])


RESOURCE = TenantResource("client", q.CLIENT, UPDATABLE, _values, encode)


class ClientService(pb_grpc.ClientServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateClient(
        self, request: pb.CreateClientRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateClientResponse:
        return await RESOURCE.create(self._deps, request, context, pb.CreateClientResponse)

    async def GetClient(
        self, request: pb.GetClientRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetClientResponse:
        return await RESOURCE.get(self._deps, request, context, pb.GetClientResponse)

    async def UpdateClient(
        self, request: pb.UpdateClientRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UpdateClientResponse:
        return await RESOURCE.update(self._deps, request, context, pb.UpdateClientResponse)

    async def ListClients(
        self, request: pb.ListClientsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListClientsResponse:
        settings = self._deps.settings
        v = Violations()
        v.uuid("organization_id", request.organization_id)
        order = _ORDERS.get(" ".join(request.order_by.lower().split()) or "name")
        if order is None:
            v.add(
                "order_by",
                'must be "name" or "create_time", optionally followed by " desc"',
                "INVALID_ORDER_BY",
            )
            order = _ORDERS["name"]
        text = " ".join(request.query.lower().split())
        if len(text) > MAX_QUERY_LEN:
            v.add("query", f"must be at most {MAX_QUERY_LEN} characters", "TOO_LONG")
        if "\x00" in text:
            v.add("query", "must not contain NUL characters", "INVALID_FORMAT")
        created_after = to_datetime(request.created_after, "created_after", v)
        created_before = to_datetime(request.created_before, "created_before", v)
        count_mode = count_mode_of(request.count_mode, v)
        check_paging(request.page_size, request.page, request.page_token, v)
        v.raise_if_any()
        flt = q.ClientFilter(
            active=request.active if request.HasField("active") else None,
            created_after=created_after,
            created_before=created_before,
            query=text,
        )
        scope = request_scope(
            "ListClients",
            request.organization_id,
            flt.active,
            created_after.isoformat() if created_after else None,
            created_before.isoformat() if created_before else None,
            text,
            order.key,
            order.descending,
        )
        page = resolve_list_page(self._deps, request, scope, lambda after: _keyset_in(order, after))
        async with self._deps.db.connection(timeout_of(context)) as conn:
            result = await q.list_clients_page(
                conn,
                request.organization_id,
                flt,
                order,
                page,
                count_mode,
                settings.exact_count_cap,
            )
        return list_response(
            self._deps,
            pb.ListClientsResponse,
            "clients",
            encode,
            result,
            page,
            scope,
            lambda row: _keyset_out(order, row),
        )
