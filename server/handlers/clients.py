"""booking.v1.ClientService, including ListClients (the reference paged list)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from booking.v1 import clients_pb2 as pb
from booking.v1 import clients_pb2_grpc as pb_grpc
from booking.v1 import resources_pb2
from grpc import aio

from server.handlers._base import Deps
from server.handlers._encoders import encode_appointment, encode_payment
from server.handlers._encoding import etag, nullable, set_time, to_datetime
from server.handlers._lists import ListSpec, search_term
from server.handlers._resource import TenantResource
from server.queries import clients as q
from server.queries import history
from server.validation import Violations

UPDATABLE = ("given_name", "family_name", "email", "phone", "external_id", "active")


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
    # A client keeps a name: on create, and on an update that writes both parts.
    both = creating or ("given_name" in fields and "family_name" in fields)
    if both and not (c.given_name.strip() or c.family_name.strip()):
        v.add("client.family_name", "given_name or family_name is required", "REQUIRED")
    return out


def _filters(request: pb.ListClientsRequest, v: Violations) -> q.ClientFilter:
    return q.ClientFilter(
        active=request.active if request.HasField("active") else None,
        created_after=to_datetime(request.created_after, "created_after", v),
        created_before=to_datetime(request.created_before, "created_before", v, end=True),
        query=search_term(request.query, v),
    )


RESOURCE = TenantResource("client", q.CLIENT, UPDATABLE, _values, encode)
LIST = ListSpec(q.CLIENTS, pb.ListClientsResponse, "clients", _filters, encode)


def _history_filters(request: pb.ListClientHistoryRequest, v: Violations) -> history.HistoryFilter:
    v.uuid("client_id", request.client_id)
    return history.HistoryFilter(client_id=request.client_id)


def _encode_entry(row: asyncpg.Record, new: Callable[..., pb.ClientHistoryEntry]) -> None:
    entry = new()
    set_time(entry.time, row["at"])
    if row["kind"] == history.APPOINTMENT_KIND:
        entry.appointment.CopyFrom(encode_appointment(history.Prefixed(row, "a_")))
    else:
        entry.payment.CopyFrom(encode_payment(history.Prefixed(row, "p_")))


HISTORY = ListSpec(
    history.HISTORY, pb.ListClientHistoryResponse, "entries", _history_filters, _encode_entry
)


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
        return await LIST.serve(self._deps, request, context)

    async def ListClientHistory(
        self, request: pb.ListClientHistoryRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListClientHistoryResponse:
        return await HISTORY.serve(self._deps, request, context)
