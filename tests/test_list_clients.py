"""ListClients: its filters and search, and statement counts of searches and writes.

The paging contract (page sizes, tokens, page-number mode, counts, statements
per call) is tested for every list, ListClients included, in
tests/test_paging_contract.py."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
import pytest_asyncio
from booking.v1 import clients_pb2, common_pb2, resources_pb2
from google.protobuf import timestamp_pb2
from sqlalchemy import event

from server.testing import running_server
from tests.conftest import Stubs, new_org
from tests.test_paging_contract import record_statements

LIST = clients_pb2.ListClientsRequest
# Every statement of the counting server, with its driver-side timeout.
LOGGED: list[Any] = []


async def seed_clients(stubs: Stubs, org: str, n: int, *, prefix: str = "") -> list[str]:
    """Create n clients through the RPC, ten at a time (through the RPC, not by
    COPY, so that the derived columns are the server's own)."""
    rng = random.Random(n)
    requests = []
    for i in range(n):
        family = f"{prefix}{rng.choice(['Smith', 'Jones', 'Brown', 'Müller', 'Ng'])}{i:05d}"
        client = resources_pb2.Client(
            given_name=f"G{i}", family_name=family, email=f"c{i}@example.com", active=i % 3 != 0
        )
        requests.append(clients_pb2.CreateClientRequest(organization_id=org, client=client))
    ids: list[str] = []
    for start in range(0, n, 10):
        batch = [stubs.clients.CreateClient(r) for r in requests[start : start + 10]]
        ids += [r.client.id for r in await asyncio.gather(*batch)]
    return ids


async def walk(stubs: Stubs, request: clients_pb2.ListClientsRequest) -> list[str]:
    ids: list[str] = []
    while True:
        response = await stubs.clients.ListClients(request)
        ids += [c.id for c in response.clients]
        assert response.page_info.has_next == bool(response.next_page_token)
        if not response.next_page_token:
            return ids
        request = LIST(**{**_fields(request), "page_token": response.next_page_token})


def _fields(request: clients_pb2.ListClientsRequest) -> dict[str, Any]:
    return {f.name: v for f, v in request.ListFields()}


async def test_filters_and_search(stubs: Stubs, org: str) -> None:
    await seed_clients(stubs, org, 300)
    active = await walk(stubs, LIST(organization_id=org, active=True, page_size=1000))
    inactive = await walk(stubs, LIST(organization_id=org, active=False, page_size=1000))
    assert len(active) == 200 and len(inactive) == 100
    smith = await stubs.clients.ListClients(
        LIST(organization_id=org, query="SMITH", page_size=1000)
    )
    assert smith.clients and all("smith" in c.family_name.lower() for c in smith.clients)
    email = await stubs.clients.ListClients(LIST(organization_id=org, query="c42@example"))
    assert [c.email for c in email.clients] == ["c42@example.com"]
    prefix = await stubs.clients.ListClients(LIST(organization_id=org, query="mü", page_size=1000))
    assert prefix.clients and all(c.family_name.startswith("Müller") for c in prefix.clients)
    pattern = await stubs.clients.ListClients(LIST(organization_id=org, query="%_%"))
    assert list(pattern.clients) == []  # LIKE wildcards are matched literally
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    before = await stubs.clients.ListClients(
        LIST(organization_id=org, created_before=now, count_mode=common_pb2.COUNT_MODE_EXACT)
    )
    after = await stubs.clients.ListClients(
        LIST(organization_id=org, created_after=now, count_mode=common_pb2.COUNT_MODE_EXACT)
    )
    assert (before.page_info.total_size, after.page_info.total_size) == (300, 0)


@pytest_asyncio.fixture(loop_scope="session")
async def counted(database_url: str) -> AsyncIterator[tuple[Stubs, list[str]]]:
    """A server whose every statement sent to PostgreSQL is recorded."""
    statements: list[str] = []
    async with running_server(database_url) as srv:
        await srv.server.purger.stop()  # its statements would be counted too
        record_statements(srv.server.database.engine, statements)

        @event.listens_for(srv.server.database.engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: object) -> None:
            dbapi_connection.driver_connection.add_query_logger(LOGGED.append)

        await srv.server.database.engine.dispose()  # new connections get the logger
        async with grpc.aio.insecure_channel(srv.target) as channel:
            yield Stubs(channel), statements


@pytest.mark.parametrize(
    ("count_mode", "expected"),
    [
        (common_pb2.COUNT_MODE_NONE, 1),
        (common_pb2.COUNT_MODE_EXACT, 2),
        (common_pb2.COUNT_MODE_ESTIMATED, 2),
    ],
)
async def test_search_statement_count_is_fixed_whatever_the_page_size(
    counted: tuple[Stubs, list[str]], count_mode: common_pb2.CountMode.ValueType, expected: int
) -> None:
    """The paging contract counts statements without filters
    (tests/test_paging_contract.py); searches (trigram and prefix) too."""
    stubs, statements = counted
    org = await new_org(stubs)
    await seed_clients(stubs, org, 300)
    await stubs.clients.ListClients(LIST(organization_id=org))  # warm the connection
    for size in (1, 10, 250):
        for query in ("smith", "sm"):
            statements.clear()
            response = await stubs.clients.ListClients(
                LIST(organization_id=org, page_size=size, count_mode=count_mode, query=query)
            )
            assert response.clients
            assert len(statements) == expected, statements


async def test_write_statement_count(counted: tuple[Stubs, list[str]]) -> None:
    stubs, statements = counted
    org = await new_org(stubs)
    request = clients_pb2.CreateClientRequest(
        organization_id=org,
        client=resources_pb2.Client(family_name="Count"),
    )
    await stubs.clients.CreateClient(request)
    statements.clear()
    await stubs.clients.CreateClient(request)
    # BEGIN+SET LOCAL, INSERT (with its audit row), COMMIT.
    assert len(statements) == 3, statements
    statements.clear()
    await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=request.client, request_id=str(uuid.uuid4())
        )
    )
    # + claim the request id, + store the response.
    assert len(statements) == 5, statements


async def test_the_deadline_bounds_every_statement(counted: tuple[Stubs, list[str]]) -> None:
    """A call's deadline is each statement's timeout (the driver cancels it) and,
    in a write, the transaction's statement_timeout (PostgreSQL enforces it)."""
    stubs, _statements = counted
    org = await new_org(stubs)
    for with_deadline in (False, True):
        timeout = 5.0 if with_deadline else None
        LOGGED.clear()
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org, client=resources_pb2.Client(family_name="Deadline")
            ),
            timeout=timeout,
        )
        await stubs.clients.ListClients(
            LIST(organization_id=org, count_mode=common_pb2.COUNT_MODE_EXACT), timeout=timeout
        )
        begin = LOGGED[0].query
        match = re.search(r"SET LOCAL statement_timeout = (\d+)", begin)
        assert match, begin
        statements = LOGGED[1:]
        assert len(statements) >= 4, statements  # INSERT, COMMIT, page, count
        if with_deadline:
            # gRPC rounds the deadline it sends up a little (5009 ms seen for 5 s).
            assert 0 < int(match.group(1)) <= 5100
            assert all(r.timeout is not None and 0 < r.timeout <= 5.1 for r in statements), [
                (r.query[:40], r.timeout) for r in statements
            ]
        else:  # the configured statement_timeout (test preset: 15 s)
            assert int(match.group(1)) == 15_000
