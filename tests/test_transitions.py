"""The write path carries state machines: load under a row lock, check the
transition, write it, audited as itself, with request_id replay.

A test-only transition (DeactivateClient) is written the way the booking
writes to come will be (handlers/_writes.writing + queries._crud.lock_row +
update_row(action=...)), served behind the real interceptor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from booking.v1 import clients_pb2, resources_pb2

from server.db.engine import Database, create_engine, to_asyncpg_dsn
from server.errors import FailedPrecondition
from server.handlers._base import Context, Deps
from server.handlers._writes import writing
from server.handlers.clients import encode
from server.interceptors import CallInterceptor
from server.paging import PageTokenCodec
from server.queries._crud import lock_row, update_row
from server.queries.clients import CLIENT
from server.telemetry import create_telemetry
from server.testing import test_settings
from server.timezones import TimeZones
from tests.conftest import Stubs, details

SERVICE = "booking.v1test.Transitions"


async def deactivate_client(
    deps: Deps, request: clients_pb2.UpdateClientRequest, context: Context
) -> clients_pb2.UpdateClientResponse:
    org, client_id = request.organization_id, request.client.id
    response = clients_pb2.UpdateClientResponse
    async with writing(deps, context, request, response=response) as w:
        if w.replay is not None:
            return w.replay
        row = await lock_row(w.conn, CLIENT, org, client_id)
        if not row["active"]:
            raise FailedPrecondition("the client is already inactive", reason="ALREADY_INACTIVE")
        row = await update_row(
            w.conn,
            CLIENT,
            org_id=org,
            row_id=client_id,
            values={"active": False},
            changed_fields=["active"],
            expected_version=None,
            audit=w.audit,
            action="deactivate",
        )
        return await w.result(response(client=encode(row)))


@contextlib.asynccontextmanager
async def transitions_server(url: str) -> AsyncIterator[grpc.aio.UnaryUnaryMultiCallable[Any, Any]]:
    settings = test_settings()
    database = Database(create_engine(settings, url), settings)
    deps = Deps(database, settings, PageTokenCodec(settings.page_token_secret), TimeZones(database))

    async def handler(request: Any, context: Any) -> Any:
        return await deactivate_client(deps, request, context)

    server = grpc.aio.server(interceptors=[CallInterceptor(create_telemetry(settings))])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "DeactivateClient": grpc.unary_unary_rpc_method_handler(
                        handler,
                        request_deserializer=clients_pb2.UpdateClientRequest.FromString,
                        response_serializer=clients_pb2.UpdateClientResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel.unary_unary(
                f"/{SERVICE}/DeactivateClient",
                request_serializer=clients_pb2.UpdateClientRequest.SerializeToString,
                response_deserializer=clients_pb2.UpdateClientResponse.FromString,
            )
    finally:
        await server.stop(0.5)
        await database.engine.dispose()


async def _new_client(stubs: Stubs, org: str) -> str:
    created = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(family_name="Turing")
        )
    )
    return created.client.id


def _request(org: str, client_id: str, request_id: str) -> clients_pb2.UpdateClientRequest:
    return clients_pb2.UpdateClientRequest(
        organization_id=org, client=resources_pb2.Client(id=client_id), request_id=request_id
    )


async def _audit_actions(url: str, org: str, client_id: str) -> list[str]:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT action FROM audit_events WHERE organization_id = $1 AND resource_id = $2 "
            "ORDER BY occurred_at, id",
            org,
            client_id,
        )
        return [r["action"] for r in rows]
    finally:
        await conn.close()


async def test_transition_is_checked_audited_as_itself_and_replayed(
    database_url: str, stubs: Stubs, org: str
) -> None:
    client_id = await _new_client(stubs, org)
    async with transitions_server(database_url) as deactivate:
        first = await deactivate(_request(org, client_id, "deact-1"))
        assert first.client.active is False and first.client.etag == '"v2"'
        # Not allowed from the new state: nothing written.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await deactivate(_request(org, client_id, "deact-2"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(caught.value)["ErrorInfo"].reason == "ALREADY_INACTIVE"
        # The first request retried: its stored answer, not the precondition.
        assert await deactivate(_request(org, client_id, "deact-1")) == first
    assert await _audit_actions(database_url, org, client_id) == ["create", "deactivate"]


async def test_concurrent_transitions_of_one_row_take_turns(
    database_url: str, stubs: Stubs, org: str
) -> None:
    client_id = await _new_client(stubs, org)
    async with transitions_server(database_url) as deactivate:
        outcomes = await asyncio.gather(
            *(deactivate(_request(org, client_id, f"race-{i}")) for i in range(6)),
            return_exceptions=True,
        )
    ok = [o for o in outcomes if isinstance(o, clients_pb2.UpdateClientResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(ok) == 1, outcomes
    assert [e.code() for e in refused] == [grpc.StatusCode.FAILED_PRECONDITION] * 5
    assert await _audit_actions(database_url, org, client_id) == ["create", "deactivate"]
