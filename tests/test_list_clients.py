"""ListClients: the paging contract, filters, search, counts, statement counts."""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import clients_pb2, common_pb2, resources_pb2
from google.protobuf import timestamp_pb2
from sqlalchemy import event

from server.db.engine import to_asyncpg_dsn
from server.ids import uuid7
from server.testing import running_server, test_settings
from tests.conftest import Stubs, details, new_org, violated_fields

LIST = clients_pb2.ListClientsRequest


async def seed_clients(url: str, org: str, n: int, *, prefix: str = "") -> list[str]:
    """Insert n clients straight into the database (fast; not what is tested)."""
    rng = random.Random(n)
    rows = []
    for i in range(n):
        family = f"{prefix}{rng.choice(['Smith', 'Jones', 'Brown', 'Müller', 'Ng'])}{i:05d}"
        rows.append((org, uuid7(), f"G{i}", family, f"c{i}@example.com", i % 3 != 0))
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        await conn.copy_records_to_table(
            "clients",
            records=rows,
            columns=["organization_id", "id", "given_name", "family_name", "email", "active"],
        )
    finally:
        await conn.close()
    return [r[1] for r in rows]


async def walk(stubs: Stubs, request: clients_pb2.ListClientsRequest) -> list[str]:
    ids: list[str] = []
    while True:
        response = await stubs.clients.ListClients(request)
        ids += [c.id for c in response.clients]
        assert response.page_info.has_next == bool(response.next_page_token)
        if not response.next_page_token:
            return ids
        request = LIST(**{**_fields(request), "page_token": response.next_page_token})


def _fields(request: clients_pb2.ListClientsRequest) -> dict[str, object]:
    return {f.name: v for f, v in request.ListFields()}


async def test_page_size_default_clamp_and_order(stubs: Stubs, org: str, database_url: str) -> None:
    await seed_clients(database_url, org, 1100)
    default = await stubs.clients.ListClients(LIST(organization_id=org))
    assert len(default.clients) == 50 and default.page_info.page_size == 50
    clamped = await stubs.clients.ListClients(LIST(organization_id=org, page_size=5000))
    assert len(clamped.clients) == 1000 and clamped.page_info.page_size == 1000
    keys = [(c.family_name.lower() + " " + c.given_name.lower(), c.id) for c in clamped.clients]
    assert keys == sorted(keys)
    desc = await stubs.clients.ListClients(
        LIST(organization_id=org, order_by="create_time desc", page_size=20)
    )
    times = [(c.create_time.ToDatetime(), c.id) for c in desc.clients]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("order_by", ["name", "name desc", "create_time", "create_time desc"])
async def test_walking_all_pages_returns_every_row_once_under_concurrent_inserts(
    stubs: Stubs, database_url: str, order_by: str
) -> None:
    org = await new_org(stubs)
    original = set(await seed_clients(database_url, org, 700))
    stop = asyncio.Event()
    inserted: list[str] = []

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            response = await stubs.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    organization_id=org,
                    client=resources_pb2.Client(
                        family_name=random.choice(["Aa", "Mm", "Zz"]) + str(i)
                    ),
                )
            )
            inserted.append(response.client.id)

    task = asyncio.create_task(writer())
    try:
        ids = await walk(stubs, LIST(organization_id=org, page_size=37, order_by=order_by))
    finally:
        stop.set()
        await task
    assert len(ids) == len(set(ids)), "a row was returned twice"
    assert original <= set(ids), "a row that existed throughout was skipped"
    assert set(ids) <= original | set(inserted)
    assert inserted, "the writer did not overlap the walk"


async def test_filters_and_search(stubs: Stubs, org: str, database_url: str) -> None:
    await seed_clients(database_url, org, 300)
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


async def test_count_modes(stubs: Stubs, org: str, database_url: str) -> None:
    await seed_clients(database_url, org, 120)
    none = await stubs.clients.ListClients(LIST(organization_id=org, page_size=50))
    assert none.page_info.count_kind == common_pb2.COUNT_KIND_NONE
    assert none.page_info.total_size == 0 and none.page_info.total_pages == 0
    exact = await stubs.clients.ListClients(
        LIST(organization_id=org, page_size=50, count_mode=common_pb2.COUNT_MODE_EXACT)
    )
    assert exact.page_info.count_kind == common_pb2.COUNT_KIND_EXACT
    assert (exact.page_info.total_size, exact.page_info.total_pages) == (120, 3)
    estimated = await stubs.clients.ListClients(
        LIST(organization_id=org, page_size=50, count_mode=common_pb2.COUNT_MODE_ESTIMATED)
    )
    assert estimated.page_info.count_kind == common_pb2.COUNT_KIND_ESTIMATED
    assert estimated.page_info.total_size >= 51  # never below what is known to exist


async def test_exact_count_is_capped(database_url: str) -> None:
    async with running_server(database_url, test_settings(exact_count_cap=100)) as srv:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            stubs = Stubs(channel)
            org = await new_org(stubs)
            await seed_clients(database_url, org, 150)
            response = await stubs.clients.ListClients(
                LIST(organization_id=org, count_mode=common_pb2.COUNT_MODE_EXACT)
            )
    assert response.page_info.count_kind == common_pb2.COUNT_KIND_LOWER_BOUND
    assert response.page_info.total_size == 100


async def test_page_number_mode(stubs: Stubs, org: str, database_url: str) -> None:
    await seed_clients(database_url, org, 95)
    by_token = await walk(stubs, LIST(organization_id=org, page_size=10))
    third = await stubs.clients.ListClients(
        LIST(organization_id=org, page_size=10, page=3, count_mode=common_pb2.COUNT_MODE_EXACT)
    )
    assert [c.id for c in third.clients] == by_token[20:30]
    info = third.page_info
    assert (info.page, info.total_pages, info.has_prev, info.has_next) == (3, 10, True, True)
    last = await stubs.clients.ListClients(LIST(organization_id=org, page_size=10, page=10))
    assert len(last.clients) == 5 and not last.page_info.has_next
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.ListClients(LIST(organization_id=org, page_size=1000, page=101))
    assert details(err.value)["ErrorInfo"].reason == "PAGE_TOO_DEEP"


async def test_page_token_is_bound_to_tenant_filters_and_integrity(
    stubs: Stubs, org: str, database_url: str
) -> None:
    await seed_clients(database_url, org, 30)
    first = await stubs.clients.ListClients(LIST(organization_id=org, page_size=10))
    token = first.next_page_token
    second = await stubs.clients.ListClients(
        LIST(organization_id=org, page_size=10, page_token=token)
    )
    assert second.page_info.page == 2 and second.page_info.has_prev
    other = await new_org(stubs)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    cases = {
        "PAGE_TOKEN_MISMATCH": [
            LIST(organization_id=other, page_size=10, page_token=token),
            LIST(organization_id=org, page_size=10, page_token=token, active=True),
            LIST(organization_id=org, page_size=10, page_token=token, order_by="name desc"),
            LIST(organization_id=org, page_size=10, page_token=token, query="smith"),
        ],
        "INVALID_PAGE_TOKEN": [
            LIST(organization_id=org, page_token=tampered),
            LIST(organization_id=org, page_token="not-a-token!"),
            LIST(organization_id=org, page_token=token[:-3]),
        ],
    }
    for reason, requests in cases.items():
        for request in requests:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stubs.clients.ListClients(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert details(err.value)["ErrorInfo"].reason == reason
            assert violated_fields(err.value) == {"page_token"}
    # page_size may change between pages (AIP-158).
    bigger = await stubs.clients.ListClients(
        LIST(organization_id=org, page_size=20, page_token=token)
    )
    assert [c.id for c in bigger.clients] == [c.id for c in second.clients] + [
        c.id
        for c in (
            await stubs.clients.ListClients(
                LIST(organization_id=org, page_size=10, page_token=second.next_page_token)
            )
        ).clients
    ]


@pytest_asyncio.fixture(loop_scope="session")
async def counted(database_url: str) -> AsyncIterator[tuple[Stubs, list[str]]]:
    """A server whose every statement sent to PostgreSQL is recorded."""
    statements: list[str] = []
    async with running_server(database_url) as srv:

        @event.listens_for(srv.server.database.engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: object, _record: object) -> None:
            dbapi_connection.driver_connection.add_query_logger(  # type: ignore[attr-defined]
                lambda record: statements.append(record.query)
            )

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
async def test_statement_count_is_fixed_whatever_the_page_size(
    counted: tuple[Stubs, list[str]], database_url: str, count_mode: int, expected: int
) -> None:
    stubs, statements = counted
    org = await new_org(stubs)
    await seed_clients(database_url, org, 300)
    await stubs.clients.ListClients(LIST(organization_id=org))  # warm the connection
    for size in (1, 10, 250):
        for query in ("", "smith"):
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
