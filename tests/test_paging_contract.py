"""The paging contract every List RPC shares (AIP-132/158, DESIGN "Lists").

Each :class:`ListCase` is one list and order as a caller sees it: how to call
it, how to create N rows in a fresh tenant (ties on the leading sort key), how
to insert one row sorting below or above all of them, the order key of an item
(ending with its unique tie-breaker) and the order's direction. Every contract
test runs over every case, so a new list joins the contract with ONE entry in
:data:`CASES` per order (a test fails when a list or order has none):

- walking all pages with tokens returns every row exactly once, in the
  declared order (ties included; page_size may change between pages), also
  while rows are inserted between pages (before the position: never seen;
  after it: seen once);
- page_size 0 = default, above max = clamped, negative = INVALID_ARGUMENT;
- a token reused with another tenant, other filters, another order or another
  list = INVALID_ARGUMENT (PAGE_TOKEN_MISMATCH); a tampered one =
  INVALID_PAGE_TOKEN;
- a correctly SIGNED token (the development secret is public) with a keyset
  or a page number of the wrong shape, type or range = INVALID_ARGUMENT on
  ``page_token``, never INTERNAL;
- page-number mode returns the rows walking returns;
- count modes NONE / ESTIMATED / EXACT, and LOWER_BOUND above the cap;
- a fixed number of statements per call whatever the page size (VIEW_FULL:
  at most one more per kind of related row);
- the view is not part of a token's scope: a walk may change it between pages.

Besides the service's lists, a TEST-ONLY list is declared here in a few lines
(a ListSpec over the providers table, served by a generic handler behind the
real CallInterceptor): the contract is the generic path's, not a property of
the lists that happen to exist.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    appointments_pb2,
    audit_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
    summaries_pb2,
)
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from server.config import DEV_PAGE_TOKEN_SECRET, Settings
from server.db import schema
from server.db.engine import Database, create_engine, to_asyncpg_dsn
from server.handlers._base import Deps
from server.handlers._lists import ListSpec
from server.interceptors import CallInterceptor
from server.paging import PageTokenCodec
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey, orders
from server.telemetry import create_telemetry
from server.testing import running_server, test_settings
from server.timezones import TimeZones
from tests.conftest import Stubs, details, new_org, violated_fields

# -- statement counting (also used by tests/test_list_clients.py) ------------------


def record_statements(engine: AsyncEngine, statements: list[str]) -> None:
    """Append every statement sent on the engine's (new) connections to ``statements``."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.driver_connection.add_query_logger(
            lambda record: statements.append(record.query)
        )


# -- the TEST-ONLY list: a ListSpec over the providers table -----------------------


@dataclass(frozen=True, slots=True)
class ProviderFilter:
    active: bool | None = None


def _build_providers(org_id: str, flt: ProviderFilter, order: Order) -> ListQuery:
    query = ListQuery(
        source="providers", columns=("organization_id", "id", "display_name", "active"), order=order
    )
    query.where(f"organization_id = {query.param(org_id)}")
    if flt.active is not None:
        query.where(f"active = {query.param(flt.active)}")
    return query


TEST_LISTING: Listing[ProviderFilter] = Listing(
    name="test_providers",
    orders=orders(
        ("display_name", (SortKey("display_name", KeyType.TEXT), SortKey("id", KeyType.UUID)))
    ),
    default_order="display_name",
    build=_build_providers,
)


def _provider_filters(request: clients_pb2.ListClientsRequest, _v: object) -> ProviderFilter:
    return ProviderFilter(active=request.active if request.HasField("active") else None)


def _encode_provider(row: asyncpg.Record, new: Callable[..., Any]) -> Any:
    return new(
        id=str(row["id"]),
        organization_id=str(row["organization_id"]),
        family_name=row["display_name"],
        active=row["active"],
    )


TEST_LIST = ListSpec(
    TEST_LISTING, clients_pb2.ListClientsResponse, "clients", _provider_filters, _encode_provider
)
TEST_SERVICE = "booking.test.TestListService"


@contextlib.asynccontextmanager
async def test_list_server(
    url: str, settings: Settings, statements: list[str]
) -> AsyncIterator[str]:
    """A grpc.aio server serving TEST_LIST behind the real interceptor; its target."""
    database = Database(create_engine(settings, url), settings)  # as server/app.py does
    record_statements(database.engine, statements)
    deps = Deps(
        db=database,
        settings=settings,
        tokens=PageTokenCodec(settings.page_token_secret),
        zones=TimeZones(database),
    )

    async def list_providers(request: Any, context: Any) -> Any:
        return await TEST_LIST.serve(deps, request, context)

    handler = grpc.method_handlers_generic_handler(
        TEST_SERVICE,
        {
            "ListProviders": grpc.unary_unary_rpc_method_handler(
                list_providers,
                request_deserializer=clients_pb2.ListClientsRequest.FromString,
                response_serializer=clients_pb2.ListClientsResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(interceptors=[CallInterceptor(create_telemetry(settings))])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)
        await database.engine.dispose()


test_list_server.__test__ = False  # type: ignore[attr-defined]


# -- environments: the booking server and the test list, side by side --------------


@dataclass
class Env:
    booking: grpc.aio.Channel
    test: grpc.aio.Channel
    url: str
    statements: list[str] = field(default_factory=list)

    @property
    def stubs(self) -> Stubs:
        return Stubs(self.booking)


@contextlib.asynccontextmanager
async def open_env(url: str, settings: Settings) -> AsyncIterator[Env]:
    statements: list[str] = []
    async with running_server(url, settings) as srv:
        # The purger's statements would be counted with the calls' (it first
        # runs 5 s after start): this server does without it.
        await srv.server.purger.stop()
        record_statements(srv.server.database.engine, statements)
        await srv.server.database.engine.dispose()  # new connections get the logger
        async with (
            test_list_server(url, settings, statements) as target,
            grpc.aio.insecure_channel(srv.target) as booking,
            grpc.aio.insecure_channel(target) as test,
        ):
            yield Env(booking, test, url, statements)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(database_url: str) -> AsyncIterator[Env]:
    async with open_env(database_url, test_settings()) as e:
        yield e


CAP = 10


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def capped(database_url: str) -> AsyncIterator[Env]:
    async with open_env(database_url, test_settings(exact_count_cap=CAP)) as e:
        yield e


# -- the cases ----------------------------------------------------------------------


async def _db(env: Env) -> asyncpg.Connection:
    return await asyncpg.connect(to_asyncpg_dsn(env.url))


# Seeded timestamps: 7 distinct values (ties on purpose), microsecond
# fractions, some before 1970 (negative epoch microseconds).
_TIMESTAMP_TIES = (
    "timestamptz '1969-12-31 23:59:58+00' + make_interval(secs => "
    "(abs(hashtext(id::text)) % 7) * 0.700123)"
)


async def seed_clients(env: Env, org: str, n: int) -> list[str]:
    """n clients through the RPC (ASCII lower-case names with ties), then the
    create times rewritten to tie."""
    families = ("brown", "jones", "ng", "smith")

    async def one(i: int) -> str:
        response = await env.stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org,
                client=resources_pb2.Client(
                    given_name=f"g{i % 5}", family_name=families[i % 4], active=i % 2 == 0
                ),
            )
        )
        return response.client.id

    ids = [await one(i) for i in range(n)]
    await _tie_created(env, "clients", org)
    return ids


async def seed_audit(env: Env, org: str, n: int) -> list[str]:
    """n - 1 client creations (+ the organization's own) = n audit events, with ties."""
    await seed_clients(env, org, n - 1)
    conn = await _db(env)
    try:
        await conn.execute(
            f"UPDATE audit_events SET occurred_at = {_TIMESTAMP_TIES} WHERE organization_id = $1",
            org,
        )
        rows = await conn.fetch("SELECT id FROM audit_events WHERE organization_id = $1", org)
    finally:
        await conn.close()
    assert len(rows) == n
    return [str(r["id"]) for r in rows]


async def seed_providers(env: Env, org: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        response = await env.stubs.providers.CreateProvider(
            providers_pb2.CreateProviderRequest(
                organization_id=org,
                provider=resources_pb2.Provider(
                    display_name=f"p{i % 9:02d}", time_zone="UTC", active=i % 2 == 0
                ),
            )
        )
        ids.append(response.provider.id)
    return ids


# The provider whose time off a tenant's ListTimeOff case lists; the provider
# whose offerings the ListOfferings filter keeps.
_PROVIDER_OF: dict[str, str] = {}
_NO_PROVIDER = "00000000-0000-7000-8000-000000000000"


async def _provider(env: Env, org: str) -> str:
    response = await env.stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name="Pat", time_zone="UTC"),
        )
    )
    return str(response.provider.id)


async def seed_time_off(env: Env, org: str, n: int) -> list[str]:
    """n time offs of one provider, starting at 7 distinct instants (ties)."""
    provider = _PROVIDER_OF[org] = await _provider(env, org)
    ids = []
    for i in range(n):
        start = 1_900_000_000 + (i % 7) * 3_600
        response = await env.stubs.schedules.CreateTimeOff(
            schedules_pb2.CreateTimeOffRequest(
                organization_id=org,
                time_off=resources_pb2.TimeOff(
                    provider_id=provider,
                    start_time=timestamp_pb2.Timestamp(seconds=start, nanos=(i % 3) * 1000),
                    end_time=timestamp_pb2.Timestamp(seconds=start + 1_800 + i),
                ),
            )
        )
        ids.append(response.time_off.id)
    return ids


def _time_off_provider(org: str) -> dict[str, Any]:
    return {"provider_id": _PROVIDER_OF.get(org, _NO_PROVIDER)}


def _time_off_key(item: Any) -> tuple[Any, ...]:
    return (item.start_time.seconds, item.start_time.nanos, item.id)


async def seed_offerings(env: Env, org: str, n: int) -> list[str]:
    """n offerings: two providers (one kept by the filter), services shared."""
    providers = [await _provider(env, org) for _ in range(2)]
    _PROVIDER_OF[org] = providers[0]
    services = []
    for i in range(-(-n // 2)):
        response = await env.stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(
                organization_id=org,
                service=resources_pb2.Service(
                    name=f"s{i}",
                    duration_minutes=30,
                    price=common_pb2.Money(currency_code="EUR", amount_minor=100),
                ),
            )
        )
        services.append(response.service.id)
    ids = []
    for i in range(n):
        offering = resources_pb2.Offering(provider_id=providers[i % 2], service_id=services[i // 2])
        await env.stubs.catalog.SetOffering(
            catalog_pb2.SetOfferingRequest(organization_id=org, offering=offering)
        )
        ids.append(f"{offering.provider_id}/{offering.service_id}")
    return ids


def _offering_ident(item: Any) -> str:
    return f"{item.provider_id}/{item.service_id}"


def _offering_key(item: Any) -> tuple[Any, ...]:
    return (item.provider_id, item.service_id)


def _name_key(item: Any) -> tuple[Any, ...]:
    return (f"{item.family_name} {item.given_name}", item.id)


def _created_key(item: Any) -> tuple[Any, ...]:
    return (item.create_time.seconds, item.create_time.nanos, item.id)


def _occurred_key(item: Any) -> tuple[Any, ...]:
    return (item.occur_time.seconds, item.occur_time.nanos, item.id)


def _display_name_key(item: Any) -> tuple[Any, ...]:
    return (item.family_name, item.id)


# -- the lists of commit 75d0da5: providers, services, appointments, payments,
# a client's history. Parents (providers, clients, services) are made through
# the RPCs; appointments and payments are written with SQL (payments have no
# write RPC; SQL lets appointments tie: cancelled and no_show ones occupy no
# time, so only the first seven, at distinct instants, are blocking).

# What a tenant's seed made, for the cases' per-tenant fields and insert hooks.
_PARENTS: dict[str, dict[str, str]] = {}
_NO_ID = _NO_PROVIDER

# Seven distinct instants an hour apart (ties on purpose), microsecond
# fractions, some before 1970; the low and high instants of inserted rows.
_T0 = datetime(1969, 12, 31, 22, 0, 0, 700_123, tzinfo=UTC)
_LOW = datetime(1901, 1, 1, 0, 0, 0, 123, tzinfo=UTC)
_HIGH = datetime(2101, 1, 1, 0, 0, 0, 456, tzinfo=UTC)


def _tied(i: int) -> datetime:
    return _T0 + (i % 7) * timedelta(hours=1, microseconds=1)


def _parent(org: str, name: str) -> str:
    return _PARENTS.get(org, {}).get(name, _NO_ID)


def _lists() -> ModuleType:
    """tests/test_lists.py, whose helpers make rows here; imported when used:
    it imports this module (through tests/test_list_clients.py)."""
    import tests.test_lists

    return tests.test_lists


async def _set_created(env: Env, table: str, org: str, row_id: str, at: datetime) -> None:
    conn = await _db(env)
    try:
        await conn.execute(
            f"UPDATE {table} SET created_at = $3 WHERE organization_id = $1 AND id = $2",
            org,
            row_id,
            at,
        )
    finally:
        await conn.close()


async def _tie_created(env: Env, table: str, org: str) -> None:
    conn = await _db(env)
    try:
        await conn.execute(
            f"UPDATE {table} SET created_at = {_TIMESTAMP_TIES} WHERE organization_id = $1", org
        )
    finally:
        await conn.close()


async def _insert_appointments(
    env: Env, org: str, rows: Sequence[tuple[str, str, str, datetime, str]]
) -> list[str]:
    """(provider, client, service, start, status) rows of 30 minutes; their ids."""
    conn = await _db(env)
    try:
        half_hour = timedelta(minutes=30)
        return await _lists().insert_appointments(
            conn,
            org,
            [_lists().Appt(p, c, s, at, at + half_hour, st) for p, c, s, at, st in rows],
        )
    finally:
        await conn.close()


async def _insert_payments(
    env: Env, org: str, rows: Sequence[tuple[str, str | None, int, str, str, datetime]]
) -> list[str]:
    """(client, appointment or None, amount, status, method, created_at) rows in EUR."""
    conn = await _db(env)
    try:
        return await _lists().insert_payments(
            conn,
            org,
            [_lists().Pay(c, at, a, amount, "EUR", st, m) for c, a, amount, st, m, at in rows],
        )
    finally:
        await conn.close()


def _blocking_or_not(i: int) -> str:
    """Blocking statuses for the first seven rows (distinct instants), else not."""
    if i < 7:
        return ("pending", "confirmed", "completed")[i % 3]
    return ("cancelled", "no_show")[i % 2]


async def _make_parents(env: Env, org: str) -> dict[str, str]:
    """A provider, two clients and a service, remembered as the tenant's (the
    cases' per-tenant fields and insert hooks read them)."""
    parents = _PARENTS[org] = {
        "provider": await _provider(env, org),
        "client": await _lists().create_client(env.stubs, org),
        "client2": await _lists().create_client(env.stubs, org),
        "service": await _lists().create_service(env.stubs, org),
    }
    return parents


async def seed_real_providers(env: Env, org: str, n: int) -> list[str]:
    """n providers (names with ties, half active), create times rewritten to tie."""
    ids = await seed_providers(env, org, n)
    await _tie_created(env, "providers", org)
    return ids


async def seed_services(env: Env, org: str, n: int) -> list[str]:
    ids = [
        await _lists().create_service(env.stubs, org, f"s{i % 9}", active=i % 2 == 0)
        for i in range(n)
    ]
    await _tie_created(env, "services", org)
    return ids


async def seed_appointments(env: Env, org: str, n: int) -> list[str]:
    """n appointments of two providers and two clients at 7 instants; a payment
    for every tenth (VIEW_FULL has every kind of related row)."""
    parents = await _make_parents(env, org)
    parents["provider2"] = await _provider(env, org)
    rows = [
        (
            parents["provider" if i % 2 == 0 else "provider2"],
            parents["client" if i % 3 == 0 else "client2"],
            parents["service"],
            _tied(i),
            _blocking_or_not(i),
        )
        for i in range(n)
    ]
    ids = await _insert_appointments(env, org, rows)
    await _insert_payments(
        env,
        org,
        [(rows[i][1], ids[i], 100, "completed", "card", _tied(i)) for i in range(0, n, 10)],
    )
    return ids


async def seed_payments(env: Env, org: str, n: int) -> list[str]:
    """n payments of two clients, at 7 instants, a third of an appointment."""
    parents = await _make_parents(env, org)
    [appointment] = await _insert_appointments(
        env, org, [(parents["provider"], parents["client"], parents["service"], _T0, "confirmed")]
    )
    parents["appointment"] = appointment
    statuses, methods = schema.PAYMENT_STATUSES, schema.PAYMENT_METHODS
    return await _insert_payments(
        env,
        org,
        [
            (
                parents["client" if i % 2 == 0 else "client2"],
                appointment if i % 3 == 0 else None,
                100 * (i % 5 + 1),
                statuses[i % len(statuses)],
                methods[i % 3],
                _tied(i),
            )
            for i in range(n)
        ],
    )


async def seed_history(env: Env, org: str, n: int) -> list[str]:
    """A client's n entries: appointments and payments at the same 7 instants
    (ties within a kind and across kinds); another client has 5 entries."""
    parents = await _make_parents(env, org)
    provider, service = parents["provider"], parents["service"]
    half = n // 2
    # The other client's appointments are not blocking (the provider's are).
    appointments = [
        (provider, parents["client"], service, _tied(i), _blocking_or_not(i)) for i in range(half)
    ] + [(provider, parents["client2"], service, _tied(i), "cancelled") for i in range(2)]
    appointment_ids = await _insert_appointments(env, org, appointments)
    payments = [
        (parents["client"], appointment_ids[i % half], 100, "completed", "cash", _tied(i))
        for i in range(n - half)
    ] + [(parents["client2"], None, 100, "pending", "card", _tied(i)) for i in range(3)]
    payment_ids = await _insert_payments(env, org, payments)
    return appointment_ids[:half] + payment_ids[: n - half]


def _history_client(org: str) -> dict[str, Any]:
    return {"client_id": _parent(org, "client")}


def _history_other_client(org: str) -> dict[str, Any]:
    return {"client_id": _parent(org, "client2")}


def _history_ident(item: Any) -> str:
    return str(getattr(item, str(item.WhichOneof("entry"))).id)


def _history_key(item: Any) -> tuple[Any, ...]:
    kind = str(item.WhichOneof("entry"))
    return (item.time.seconds, item.time.nanos, kind, getattr(item, kind).id)


def _provider_name_key(item: Any) -> tuple[Any, ...]:
    return (item.display_name, item.id)


def _service_name_key(item: Any) -> tuple[Any, ...]:
    return (item.name, item.id)


def _start_key(item: Any) -> tuple[Any, ...]:
    return (item.start_time.seconds, item.start_time.nanos, item.id)


# -- insert hooks: one row whose sort key is below (low) or above every seeded
# row's, in every order of the list (the walk test maps low/high to
# before/after the position by the order's direction).


def _edge(low: bool) -> tuple[str, datetime]:
    """A name prefix and an instant below / above every seeded one."""
    return ("aa", _LOW) if low else ("zz", _HIGH)


def _named_insert(
    table: str, create: Callable[[Stubs, str, str], Awaitable[str]]
) -> Callable[[Env, str, bool], Awaitable[str]]:
    """The insert hook of a list of named rows ordered by name or create time."""

    async def insert(env: Env, org: str, low: bool) -> str:
        prefix, at = _edge(low)
        row_id = str(await create(env.stubs, org, f"{prefix}{uuid.uuid4().hex[:8]}"))
        await _set_created(env, table, org, row_id, at)
        return row_id

    return insert


insert_client = _named_insert("clients", lambda *args: _lists().create_client(*args))
insert_service = _named_insert("services", lambda *args: _lists().create_service(*args))
insert_provider = _named_insert("providers", lambda *args: _lists().create_provider(*args))


async def insert_audit(env: Env, org: str, low: bool) -> str:
    """A client creation's event, its time moved to the edge."""
    client_id = await _lists().create_client(env.stubs, org)
    conn = await _db(env)
    try:
        event_id = await conn.fetchval(
            "UPDATE audit_events SET occurred_at = $3 WHERE organization_id = $1 "
            "AND resource_id = $2 RETURNING id",
            org,
            client_id,
            _edge(low)[1],
        )
    finally:
        await conn.close()
    return str(event_id)


async def insert_time_off(env: Env, org: str, low: bool) -> str:
    start = 1_000_000_000 if low else 2_500_000_000
    response = await env.stubs.schedules.CreateTimeOff(
        schedules_pb2.CreateTimeOffRequest(
            organization_id=org,
            time_off=resources_pb2.TimeOff(
                provider_id=_PROVIDER_OF[org],
                start_time=timestamp_pb2.Timestamp(seconds=start),
                end_time=timestamp_pb2.Timestamp(seconds=start + 600),
            ),
        )
    )
    return str(response.time_off.id)


async def insert_offering(env: Env, org: str, low: bool) -> str:
    """An offering of a new provider whose id is below / above every uuid made."""
    tail = uuid.uuid4().hex[:12]
    provider = f"00000000-0000-0000-0000-{tail}" if low else f"ffffffff-ffff-ffff-ffff-{tail}"
    conn = await _db(env)
    try:
        await conn.execute(
            "INSERT INTO providers (organization_id, id, display_name, display_key, time_zone) "
            "VALUES ($1, $2, 'edge', 'edge', 'UTC')",
            org,
            provider,
        )
        service = await conn.fetchval(
            "SELECT service_id FROM offerings WHERE organization_id = $1 LIMIT 1", org
        )
    finally:
        await conn.close()
    offering = resources_pb2.Offering(provider_id=provider, service_id=str(service))
    await env.stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(organization_id=org, offering=offering)
    )
    return _offering_ident(offering)


async def insert_appointment(env: Env, org: str, low: bool) -> str:
    [appointment] = await _insert_appointments(
        env,
        org,
        [
            (
                _parent(org, "provider"),
                _parent(org, "client"),
                _parent(org, "service"),
                _edge(low)[1],
                "cancelled",
            )
        ],
    )
    return appointment


async def insert_payment(env: Env, org: str, low: bool) -> str:
    [payment] = await _insert_payments(
        env, org, [(_parent(org, "client"), None, 100, "completed", "card", _edge(low)[1])]
    )
    return payment


async def insert_history(env: Env, org: str, low: bool) -> str:
    """The listed client's: a payment at the low edge, an appointment at the high one."""
    if low:
        return await insert_payment(env, org, low)
    return await insert_appointment(env, org, low)


@dataclass(frozen=True)
class ListCase:
    id: str
    # Full method name and which server serves it ("booking" or "test").
    method: str
    server: str
    request: type[Message]
    response: type[Message]
    items_field: str
    order_by: str
    seed: Callable[[Env, str, int], Awaitable[list[str]]]
    # The order key of an item, ending with its unique tie-breaker.
    key: Callable[[Any], tuple[Any, ...]]
    descending: bool
    # The sort keys' types, as carried in the token's keyset.
    key_types: tuple[KeyType, ...]
    # Filters that change the result (a token must not survive a change to them).
    other_filters: dict[str, Any]
    # Another valid order_by, if the list has one.
    other_order: str | None
    # Insert one row whose key sorts below (True) or above (False) every
    # seeded row's, listed by the case's request (its base fields); its ident.
    insert: Callable[[Env, str, bool], Awaitable[str]]
    # Fields every request carries, per tenant (a required parent id).
    base: Callable[[str], dict[str, Any]] = lambda _org: {}
    # Per tenant filters, for lists whose filters are ids (added to other_filters).
    tenant_filters: Callable[[str], dict[str, Any]] = lambda _org: {}
    # The item's unique identity.
    ident: Callable[[Any], str] = lambda item: str(item.id)
    # Whether the filters select a subset of the list (False: they replace a
    # required parent, e.g. another client's history, disjoint from it).
    filters_narrow: bool = True

    def filters(self, org: str) -> dict[str, Any]:
        return {**self.other_filters, **self.tenant_filters(org)}

    async def call(self, env: Env, **fields: Any) -> Any:
        channel = env.booking if self.server == "booking" else env.test
        rpc = channel.unary_unary(
            self.method,
            request_serializer=self.request.SerializeToString,
            response_deserializer=self.response.FromString,
        )
        if self.order_by:
            fields.setdefault("order_by", self.order_by)
        for name, value in self.base(str(fields.get("organization_id", "")).lower()).items():
            fields.setdefault(name, value)
        return await rpc(self.request(**fields), timeout=30)

    def items(self, response: Any) -> list[Any]:
        return list(getattr(response, self.items_field))


_CLIENTS = {
    "method": "/booking.v1.ClientService/ListClients",
    "server": "booking",
    "request": clients_pb2.ListClientsRequest,
    "response": clients_pb2.ListClientsResponse,
    "items_field": "clients",
    "seed": seed_clients,
    "insert": insert_client,
    "other_filters": {"active": True},
}
_TEXT_ID = (KeyType.TEXT, KeyType.UUID)
_TIME_ID = (KeyType.TIMESTAMP, KeyType.UUID)

CASES = [
    ListCase(
        id="clients-name",
        order_by="name",
        key=_name_key,
        descending=False,
        key_types=_TEXT_ID,
        other_order="name desc",
        **_CLIENTS,  # type: ignore[arg-type]
    ),
    ListCase(
        id="clients-name-desc",
        order_by="name desc",
        key=_name_key,
        descending=True,
        key_types=_TEXT_ID,
        other_order="name",
        **_CLIENTS,  # type: ignore[arg-type]
    ),
    ListCase(
        id="clients-create_time",
        order_by="create_time",
        key=_created_key,
        descending=False,
        key_types=_TIME_ID,
        other_order="create_time desc",
        **_CLIENTS,  # type: ignore[arg-type]
    ),
    ListCase(
        id="clients-create_time-desc",
        order_by="create_time desc",
        key=_created_key,
        descending=True,
        key_types=_TIME_ID,
        other_order="name desc",
        **_CLIENTS,  # type: ignore[arg-type]
    ),
    ListCase(
        id="audit",
        method="/booking.v1.AuditService/ListAuditEvents",
        server="booking",
        request=audit_pb2.ListAuditEventsRequest,
        response=audit_pb2.ListAuditEventsResponse,
        items_field="audit_events",
        order_by="",
        seed=seed_audit,
        insert=insert_audit,
        key=_occurred_key,
        descending=True,
        key_types=_TIME_ID,
        other_filters={"resource_type": "client"},
        other_order=None,  # one order only
    ),
    ListCase(
        id="time-off",
        method="/booking.v1.ScheduleService/ListTimeOff",
        server="booking",
        request=schedules_pb2.ListTimeOffRequest,
        response=schedules_pb2.ListTimeOffResponse,
        items_field="time_off",
        order_by="start_time",
        seed=seed_time_off,
        insert=insert_time_off,
        key=_time_off_key,
        descending=False,
        key_types=_TIME_ID,
        # Overlapping [start, end): the time offs starting at the first three instants.
        other_filters={"end_time": timestamp_pb2.Timestamp(seconds=1_900_000_000 + 3 * 3_600)},
        other_order="start_time desc",
        base=_time_off_provider,
    ),
    ListCase(
        id="time-off-desc",
        method="/booking.v1.ScheduleService/ListTimeOff",
        server="booking",
        request=schedules_pb2.ListTimeOffRequest,
        response=schedules_pb2.ListTimeOffResponse,
        items_field="time_off",
        order_by="start_time desc",
        seed=seed_time_off,
        insert=insert_time_off,
        key=_time_off_key,
        descending=True,
        key_types=_TIME_ID,
        other_filters={"start_time": timestamp_pb2.Timestamp(seconds=1_900_000_000 + 3 * 3_600)},
        other_order="start_time",
        base=_time_off_provider,
    ),
    ListCase(
        id="offerings",
        method="/booking.v1.CatalogService/ListOfferings",
        server="booking",
        request=catalog_pb2.ListOfferingsRequest,
        response=catalog_pb2.ListOfferingsResponse,
        items_field="offerings",
        order_by="",
        seed=seed_offerings,
        insert=insert_offering,
        key=_offering_key,
        descending=False,
        key_types=(KeyType.UUID, KeyType.UUID),
        other_filters={},
        other_order=None,  # one order only
        tenant_filters=_time_off_provider,
        ident=_offering_ident,
    ),
    ListCase(
        id="test-providers",
        method=f"/{TEST_SERVICE}/ListProviders",
        server="test",
        request=clients_pb2.ListClientsRequest,
        response=clients_pb2.ListClientsResponse,
        items_field="clients",
        order_by="display_name",
        seed=seed_providers,
        insert=insert_provider,
        key=_display_name_key,
        descending=False,
        key_types=_TEXT_ID,
        other_filters={"active": False},
        other_order="display_name desc",
    ),
    ListCase(
        id="test-providers-desc",
        method=f"/{TEST_SERVICE}/ListProviders",
        server="test",
        request=clients_pb2.ListClientsRequest,
        response=clients_pb2.ListClientsResponse,
        items_field="clients",
        order_by="display_name desc",
        seed=seed_providers,
        insert=insert_provider,
        key=_display_name_key,
        descending=True,
        key_types=_TEXT_ID,
        other_filters={"active": True},
        other_order="display_name",
    ),
]

_PROVIDERS = {
    "method": "/booking.v1.ProviderService/ListProviders",
    "server": "booking",
    "request": providers_pb2.ListProvidersRequest,
    "response": providers_pb2.ListProvidersResponse,
    "items_field": "providers",
    "seed": seed_real_providers,
    "insert": insert_provider,
}
_SERVICES = {
    "method": "/booking.v1.CatalogService/ListServices",
    "server": "booking",
    "request": catalog_pb2.ListServicesRequest,
    "response": catalog_pb2.ListServicesResponse,
    "items_field": "services",
    "seed": seed_services,
    "insert": insert_service,
}
_APPOINTMENTS = {
    "method": "/booking.v1.AppointmentService/ListAppointments",
    "server": "booking",
    "request": appointments_pb2.ListAppointmentsRequest,
    "response": appointments_pb2.ListAppointmentsResponse,
    "items_field": "appointments",
    "seed": seed_appointments,
    "insert": insert_appointment,
}
_PAYMENTS = {
    "method": "/booking.v1.PaymentService/ListPayments",
    "server": "booking",
    "request": payments_pb2.ListPaymentsRequest,
    "response": payments_pb2.ListPaymentsResponse,
    "items_field": "payments",
    "seed": seed_payments,
    "insert": insert_payment,
}


def _created_range(first: int, last: int) -> dict[str, Any]:
    """created_after / created_before around the instants first..last of
    _TIMESTAMP_TIES (create times rewritten by the seeds)."""
    zero = datetime(1969, 12, 31, 23, 59, 58, tzinfo=UTC)
    low = zero + timedelta(microseconds=700_123 * first)
    high = zero + timedelta(microseconds=700_123 * last + 1)
    out = {}
    for name, at in (("created_after", low), ("created_before", high)):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(at)
        out[name] = stamp
    return out


def _no_filters(_org: str) -> dict[str, Any]:
    return {}


def _both_ways(
    name: str,
    order: str,
    key: Callable[[Any], tuple[Any, ...]],
    key_types: tuple[KeyType, ...],
    filters: tuple[dict[str, Any], dict[str, Any]],
    other_orders: tuple[str, str],
    list_fields: dict[str, Any],
    tenant_filters: Callable[[str], dict[str, Any]] | None = None,
) -> list[ListCase]:
    """The cases of one order, ascending then descending (each with its own
    narrowing filters and another order; tenant filters for the descending)."""
    return [
        ListCase(
            id=f"{name}-{order}{' desc' * descending}".replace(" ", "-"),
            order_by=f"{order}{' desc' * descending}",
            key=key,
            descending=descending,
            key_types=key_types,
            other_filters=other_filters,
            other_order=other_order,
            tenant_filters=tenant_filters if descending and tenant_filters else _no_filters,
            **list_fields,
        )
        for descending, other_filters, other_order in zip(
            (False, True), filters, other_orders, strict=True
        )
    ]


CASES += [
    *_both_ways(
        "providers",
        "display_name",
        _provider_name_key,
        _TEXT_ID,
        ({"active": True}, {"query": "p05"}),  # 3+ characters: a trigram match
        ("display_name desc", "create_time desc"),
        _PROVIDERS,
    ),
    *_both_ways(
        "providers",
        "create_time",
        _created_key,
        _TIME_ID,
        (_created_range(1, 3), {"active": False}),
        ("display_name", "create_time"),
        _PROVIDERS,
    ),
    *_both_ways(
        "services",
        "name",
        _service_name_key,
        _TEXT_ID,
        ({"active": True}, {"query": "s1"}),  # 1-2 characters: a prefix range
        ("name desc", "create_time"),
        _SERVICES,
    ),
    *_both_ways(
        "services",
        "create_time",
        _created_key,
        _TIME_ID,
        ({"active": False}, _created_range(0, 2)),
        ("create_time desc", "name"),
        _SERVICES,
    ),
    *_both_ways(
        "appointments",
        "start_time",
        _start_key,
        _TIME_ID,
        (
            {"statuses": [resources_pb2.APPOINTMENT_STATUS_CANCELLED]},
            # Overlapping [start, end): those starting at the first three instants.
            {"end_time": timestamp_pb2.Timestamp(seconds=int(_tied(3).timestamp()))},
        ),
        ("start_time desc", "start_time"),
        _APPOINTMENTS,
        tenant_filters=lambda org: {"provider_ids": [_parent(org, "provider")]},
    ),
    # Several providers: each one's rows read apart and merged
    # (ListQuery.partition); the seeded rows are the two providers'.
    *(
        ListCase(
            id=f"appointments-of-two-providers{'-desc' * descending}",
            order_by=f"start_time{' desc' * descending}",
            key=_start_key,
            descending=descending,
            key_types=_TIME_ID,
            other_filters={"statuses": [resources_pb2.APPOINTMENT_STATUS_CANCELLED]},
            other_order="start_time" if descending else "start_time desc",
            base=lambda org: {
                "provider_ids": [_parent(org, "provider"), _parent(org, "provider2")]
            },
            **_APPOINTMENTS,  # type: ignore[arg-type]
        )
        for descending in (False, True)
    ),
    *_both_ways(
        "payments",
        "create_time",
        _created_key,
        _TIME_ID,
        (
            {"statuses": [resources_pb2.PAYMENT_STATUS_COMPLETED]},
            {"currency_code": "EUR", "min_amount_minor": 300},
        ),
        ("create_time desc", "create_time"),
        _PAYMENTS,
        tenant_filters=lambda org: {"client_id": _parent(org, "client")},
    ),
    ListCase(
        id="client-history",
        method="/booking.v1.ClientService/ListClientHistory",
        server="booking",
        request=clients_pb2.ListClientHistoryRequest,
        response=clients_pb2.ListClientHistoryResponse,
        items_field="entries",
        order_by="",  # one order, no order_by field: "time desc"
        seed=seed_history,
        insert=insert_history,
        key=_history_key,
        descending=True,
        key_types=(KeyType.TIMESTAMP, KeyType.TEXT, KeyType.UUID),
        other_filters={},
        other_order=None,
        base=_history_client,
        # client_id is the list's only filter: another client's history.
        tenant_filters=_history_other_client,
        ident=_history_ident,
        filters_narrow=False,
    ),
]

# ListClientBalances: client_totals rows (the rollup the payment and
# appointment writes maintain) written with SQL for clients made through the
# RPC: EUR balances and lifetime values with ties (and negative ones), and a
# USD row for every third client, which the EUR list never shows.
_TOTALS_SQL = (
    "INSERT INTO client_totals (organization_id, client_id, currency, charged_minor,"
    " paid_minor, refunded_minor, payments, refunds) VALUES ($1, $2, $3, $4, $5, $6, 1, 0)"
)


async def _insert_totals(env: Env, org: str, rows: Sequence[tuple[Any, ...]]) -> None:
    conn = await _db(env)
    try:
        await conn.executemany(_TOTALS_SQL, [(org, *row) for row in rows])
    finally:
        await conn.close()


async def seed_balances(env: Env, org: str, n: int) -> list[str]:
    ids = [await _lists().create_client(env.stubs, org) for _ in range(n)]
    rows = [(c, "EUR", (i % 7 + 1) * 1000, (i % 5) * 700, 0) for i, c in enumerate(ids)]
    rows += [(c, "USD", 100, 0, 0) for c in ids[::3]]
    await _insert_totals(env, org, rows)
    return ids


async def insert_balance(env: Env, org: str, low: bool) -> str:
    """A client whose balance and lifetime value are below / above every seeded one."""
    client = await _lists().create_client(env.stubs, org)
    big = 10**12
    charged, paid, refunded = (-2 * big, 0, big) if low else (2 * big, big, 0)
    await _insert_totals(env, org, [(client, "EUR", charged, paid, refunded)])
    return client


_BALANCES = {
    "method": "/booking.v1.SummaryService/ListClientBalances",
    "server": "booking",
    "request": summaries_pb2.ListClientBalancesRequest,
    "response": summaries_pb2.ListClientBalancesResponse,
    "items_field": "balances",
    "seed": seed_balances,
    "insert": insert_balance,
    "base": lambda _org: {"currency_code": "EUR"},
    "ident": lambda item: str(item.client_id),
}
_INT_ID = (KeyType.INT, KeyType.UUID)

CASES += [
    *_both_ways(
        "client-balances",
        "balance",
        lambda item: (item.balance_minor, item.client_id),
        _INT_ID,
        ({"min_balance_minor": 0}, {"max_balance_minor": 500}),
        ("balance desc", "lifetime_value"),
        _BALANCES,
    ),
    *_both_ways(
        "client-balances",
        "lifetime_value",
        lambda item: (item.lifetime_value_minor, item.client_id),
        _INT_ID,
        ({"min_balance_minor": 1}, {"max_balance_minor": 0}),
        ("lifetime_value desc", "balance"),
        _BALANCES,
    ),
]
N = 60  # rows per seeded tenant: more than the default page size (50)

each_case = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


@dataclass(frozen=True)
class Seeded:
    org: str
    ids: list[str]


class SeededTenants:
    """One seeded tenant per case, shared by the read-only tests of this module."""

    def __init__(self, env: Env) -> None:
        self._env = env
        self._done: dict[str, Seeded] = {}

    async def of(self, case: ListCase) -> Seeded:
        if case.id not in self._done:
            org = await new_org(self._env.stubs)
            self._done[case.id] = Seeded(org, await case.seed(self._env, org, N))
        return self._done[case.id]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(env: Env) -> SeededTenants:
    return SeededTenants(env)


async def walk(case: ListCase, env: Env, sizes: tuple[int, ...] = (7,), **fields: Any) -> list[Any]:
    """Every item, following next_page_token; page sizes taken in turn."""
    items: list[Any] = []
    token = ""
    for turn in range(10_000):
        response = await case.call(
            env, page_size=sizes[turn % len(sizes)], page_token=token, **fields
        )
        items += case.items(response)
        assert response.page_info.has_next == bool(response.next_page_token)
        assert response.page_info.page == turn + 1
        token = response.next_page_token
        if not token:
            return items
    raise AssertionError("the walk did not end")


def assert_in_order(case: ListCase, items: list[Any]) -> None:
    keys = [case.key(i) for i in items]
    expected = sorted(keys, reverse=case.descending)
    assert keys == expected, "not in the declared order"
    assert len(set(keys)) == len(keys), "a row was returned twice"


async def expect_invalid(
    call: Awaitable[Any], field: str = "page_token", reason: str | None = None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        err.value.code(),
        err.value.details(),
    )
    assert field in violated_fields(err.value)
    if reason is not None:
        assert details(err.value)["ErrorInfo"].reason == reason


# -- walking ------------------------------------------------------------------------


@each_case
async def test_walking_returns_every_row_once_in_order(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    for sizes in ((7,), (1, 13, 4), (N,), (N + 1,)):
        items = await walk(case, env, sizes, organization_id=tenant.org)
        assert sorted(case.ident(i) for i in items) == sorted(tenant.ids)
        assert_in_order(case, items)
    # The seeded rows tie on the leading sort key: the tie-breaker is exercised.
    keys = [case.key(i)[:-1] for i in items]
    assert len(set(keys)) < len(keys)


@each_case
async def test_filtered_walk_is_the_filtered_full_list(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    everything = await walk(case, env, (N + 1,), organization_id=tenant.org)
    filtered = await walk(case, env, (4,), organization_id=tenant.org, **case.filters(tenant.org))
    assert 0 < len(filtered) < len(everything)
    ids = {case.ident(i) for i in filtered}
    ident = case.ident
    if not case.filters_narrow:  # another parent's rows: none of these
        assert_in_order(case, filtered)
        assert not ids & {ident(i) for i in everything}
        return
    assert [ident(i) for i in everything if ident(i) in ids] == [ident(i) for i in filtered]


@each_case
async def test_walk_with_inserts_between_pages(case: ListCase, env: Env) -> None:
    """A schedule: after every page, one row is inserted before the position
    reached (it must not appear: keyset pages never go back) and one after it
    (it must appear, exactly once)."""
    org = await new_org(env.stubs)
    original = set(await case.seed(env, org, 30))
    before: list[str] = []
    after: list[str] = []
    items: list[Any] = []
    token = ""
    for _ in range(100):
        response = await case.call(env, organization_id=org, page_size=6, page_token=token)
        items += case.items(response)
        token = response.next_page_token
        if not token:
            break
        # Before the position = the lowest key ascending, the highest descending.
        before.append(await case.insert(env, org, not case.descending))
        after.append(await case.insert(env, org, case.descending))
    ids = [case.ident(i) for i in items]
    assert len(before) >= 4, "too few pages to test"
    assert_in_order(case, items)
    assert original <= set(ids), "a row that existed throughout was skipped"
    assert set(after) <= set(ids), "a row inserted ahead of the position was skipped"
    assert not set(before) & set(ids), "a page went back"
    assert len(ids) == len(original) + len(after)
    # The inserted rows are listed by the case's request: a final walk has them all.
    final = {case.ident(i) for i in await walk(case, env, (N,), organization_id=org)}
    assert final == original | set(before) | set(after)


# -- view: not part of the token's scope -------------------------------------------


def _related_fields(case: ListCase) -> list[str]:
    """The response's fields for VIEW_FULL's related rows (all but the items,
    the token and the page info)."""
    plain = {case.items_field, "next_page_token", "page_info"}
    return [f.name for f in case.response.DESCRIPTOR.fields if f.name not in plain]


_VIEW_CASES = [c for c in CASES if "view" in c.request.DESCRIPTOR.fields_by_name]


@pytest.mark.parametrize("case", _VIEW_CASES, ids=[c.id for c in _VIEW_CASES])
async def test_view_does_not_change_a_token(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    """A walk may change the view between pages (the proto: the view is not in
    the token's scope): BASIC then FULL, and FULL then BASIC, list the rows a
    BASIC walk lists; the FULL pages carry their related rows."""
    tenant = await seeded.of(case)
    basic = [case.ident(i) for i in await walk(case, env, (7,), organization_id=tenant.org)]
    related = _related_fields(case)
    assert related
    for first, then in (
        (common_pb2.VIEW_BASIC, common_pb2.VIEW_FULL),
        (common_pb2.VIEW_FULL, common_pb2.VIEW_BASIC),
    ):
        response = await case.call(env, organization_id=tenant.org, page_size=7, view=first)
        items = case.items(response)
        filled: set[str] = set()
        while response.next_page_token:
            response = await case.call(
                env,
                organization_id=tenant.org,
                page_size=7,
                page_token=response.next_page_token,
                view=then,
            )
            items += case.items(response)
            filled |= {f for f in related if len(getattr(response, f))}
            if then == common_pb2.VIEW_BASIC:
                assert not filled, "a BASIC page carried related rows"
        assert [case.ident(i) for i in items] == basic
        if then == common_pb2.VIEW_FULL:
            assert filled == set(related), "the FULL pages lacked a kind of related row"


# -- page_size ----------------------------------------------------------------------


@each_case
async def test_page_size_default_clamp_and_negative(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    default = await case.call(env, organization_id=tenant.org)
    assert len(case.items(default)) == 50 and default.page_info.page_size == 50
    assert default.next_page_token and default.page_info.has_next
    clamped = await case.call(env, organization_id=tenant.org, page_size=5000)
    assert clamped.page_info.page_size == 1000
    assert len(case.items(clamped)) == N and not clamped.next_page_token
    assert_in_order(case, case.items(clamped))
    for size in (-1, -(2**31)):
        await expect_invalid(
            case.call(env, organization_id=tenant.org, page_size=size), "page_size"
        )


# -- tokens: bound to their request, tamper-proof -----------------------------------


async def _first_token(case: ListCase, env: Env, org: str, **fields: Any) -> str:
    response = await case.call(env, organization_id=org, page_size=5, **fields)
    assert response.next_page_token
    return str(response.next_page_token)


@each_case
async def test_token_is_bound_to_tenant_filters_and_order(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    token = await _first_token(case, env, tenant.org)
    other_org = await new_org(env.stubs)
    reuses: list[dict[str, Any]] = [
        {"organization_id": other_org},
        {"organization_id": tenant.org, **case.filters(tenant.org)},
    ]
    if case.other_order is not None:
        reuses.append({"organization_id": tenant.org, "order_by": case.other_order})
    for fields in reuses:
        await expect_invalid(
            case.call(env, page_size=5, page_token=token, **fields),
            reason="PAGE_TOKEN_MISMATCH",
        )
    # The same request goes on, with another page_size too (AIP-158).
    second = await case.call(env, organization_id=tenant.org, page_size=9, page_token=token)
    assert second.page_info.page == 2 and second.page_info.has_prev


@each_case
async def test_token_of_another_list_is_refused(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    for other in CASES:
        if other.method == case.method and other.order_by == case.order_by:
            continue
        token = await _first_token(other, env, (await seeded.of(other)).org)
        # Same tenant as the token's, so only the list (or its order) differs.
        await expect_invalid(
            case.call(
                env,
                organization_id=(await seeded.of(other)).org,
                page_size=5,
                page_token=token,
            )
        )
    assert tenant.ids


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@each_case
async def test_tampered_token_is_invalid(case: ListCase, env: Env, seeded: SeededTenants) -> None:
    tenant = await seeded.of(case)
    token = await _first_token(case, env, tenant.org)
    raw = _unb64(token)
    tampered = []
    for position in (0, len(raw) // 3, len(raw) // 2, len(raw) - 20, len(raw) - 1):
        changed = bytearray(raw)
        changed[position] ^= 0x01
        tampered.append(_b64(bytes(changed)))
    tampered += [token[:-3], token + "A", "not-a-token!", "", "=", _b64(raw[-16:]), _b64(b"x")]
    for bad in [t for t in tampered if t]:
        await expect_invalid(
            case.call(env, organization_id=tenant.org, page_token=bad),
            reason="INVALID_PAGE_TOKEN",
        )


# -- signed but forged tokens (the development secret is public) -------------------

CODEC = PageTokenCodec(DEV_PAGE_TOKEN_SECRET)


def _payload(token: str) -> dict[str, Any]:
    return dict(json.loads(_unb64(token)[:-16]))


def _sign_raw(payload: bytes) -> str:
    mac = hmac.new(DEV_PAGE_TOKEN_SECRET, payload, hashlib.sha256).digest()[:16]
    return _b64(payload + mac)


_BAD_ANYWHERE: list[Any] = [
    None,
    True,
    False,
    1.5,
    [[1]],
    [],
    {"a": 1},
    10**30,
    -(10**30),
    "\ud800",
    "a\x00b",
    "x" * 100_000,
]
_BAD_FOR: dict[KeyType, list[Any]] = {
    KeyType.TEXT: [0, 2**63],
    KeyType.TIMESTAMP: ["2024-01-01T00:00:00Z", "0", 2**62, -(2**62), 2**63, -(2**63) - 1],
    KeyType.UUID: [
        "not-a-uuid",
        "0" * 36,
        "\x00" * 36,
        "\ud800" * 36,
        "{12345678-1234-1234-1234-1234567890ab}",
        1234,
    ],
    KeyType.INT: ["1", 2**63, 1.0],
}
_BAD_PAGE_NUMBERS: list[Any] = [0, 1, -1, 2**31, 10**20, 1.5, 2.0, "2", True, None, [2]]


@each_case
async def test_signed_token_with_bad_keyset_or_page_number_is_invalid(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    real = _payload(await _first_token(case, env, tenant.org))
    scope, keyset = real["s"], real["k"]
    assert len(keyset) == len(case.key_types)

    async def refused(token: str, what: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await case.call(env, organization_id=tenant.org, page_size=5, page_token=token)
        code = err.value.code()
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {code} {err.value.details()}"
        assert violated_fields(err.value) == {"page_token"}, what

    # The forging is right: the real keyset re-signed is accepted.
    ok = await case.call(
        env, organization_id=tenant.org, page_size=5, page_token=CODEC.encode(scope, 2, keyset)
    )
    assert ok.page_info.page == 2
    # Keysets of the wrong length.
    for bad_keyset in ([], keyset[:1], [*keyset, keyset[-1]], [keyset[0]] * 5):
        await refused(CODEC.encode(scope, 2, tuple(bad_keyset)), f"keyset {bad_keyset!r}")
    # A wrong value at each position.
    for position, key_type in enumerate(case.key_types):
        for value in _BAD_ANYWHERE + _BAD_FOR[key_type]:
            forged = list(keyset)
            forged[position] = value
            await refused(CODEC.encode(scope, 2, tuple(forged)), f"k[{position}]={value!r:.40}")
    # Absurd page numbers.
    for number in _BAD_PAGE_NUMBERS:
        await refused(CODEC.encode(scope, number, tuple(keyset)), f"n={number!r}")
    # Payloads of the wrong shape, correctly signed.
    shapes: list[Any] = [
        [],
        "x",
        {},
        {"v": 1, "s": scope, "n": 2},
        {"v": 1, "s": scope, "n": 2, "k": "abc"},
        {"v": 1, "s": scope, "n": 2, "k": {"a": 1}},
        {"v": 2, "s": scope, "n": 2, "k": keyset},
        {"v": 1, "s": 5, "n": 2, "k": keyset},
    ]
    for shape in shapes:
        await refused(_sign_raw(json.dumps(shape).encode()), f"payload {shape!r:.60}")
    for raw in (b"\xff\xfe", b"[" * 100_000, b'{"v":1}' * 3, b"NaN"):
        await refused(_sign_raw(raw), f"payload {raw[:20]!r}")


# -- page-number mode ----------------------------------------------------------------


@each_case
async def test_page_number_mode_returns_the_rows_walking_returns(
    case: ListCase, env: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    walked = [case.ident(i) for i in await walk(case, env, (7,), organization_id=tenant.org)]
    pages = -(-N // 7)
    for number in range(1, pages + 1):
        response = await case.call(
            env,
            organization_id=tenant.org,
            page_size=7,
            page=number,
            count_mode=common_pb2.COUNT_MODE_EXACT,
        )
        assert [case.ident(i) for i in case.items(response)] == walked[
            (number - 1) * 7 : number * 7
        ]
        info = response.page_info
        assert (info.page, info.total_pages, info.total_size) == (number, pages, N)
        assert (info.has_prev, info.has_next) == (number > 1, number < pages)
    beyond = await case.call(env, organization_id=tenant.org, page_size=7, page=pages + 1)
    assert case.items(beyond) == [] and not beyond.page_info.has_next
    await expect_invalid(
        case.call(env, organization_id=tenant.org, page_size=1000, page=101),
        "page",
        "PAGE_TOO_DEEP",
    )
    await expect_invalid(case.call(env, organization_id=tenant.org, page=-1), "page")
    token = await _first_token(case, env, tenant.org)
    await expect_invalid(
        case.call(env, organization_id=tenant.org, page=2, page_token=token), "page"
    )


# -- counts -------------------------------------------------------------------------


@each_case
async def test_count_modes(case: ListCase, env: Env, seeded: SeededTenants) -> None:
    tenant = await seeded.of(case)
    for mode in (common_pb2.COUNT_MODE_UNSPECIFIED, common_pb2.COUNT_MODE_NONE):
        none = await case.call(env, organization_id=tenant.org, page_size=25, count_mode=mode)
        info = none.page_info
        assert (info.count_kind, info.total_size, info.total_pages) == (
            common_pb2.COUNT_KIND_NONE,
            0,
            0,
        )
    exact = await case.call(
        env, organization_id=tenant.org, page_size=25, count_mode=common_pb2.COUNT_MODE_EXACT
    )
    info = exact.page_info
    assert (info.count_kind, info.total_size, info.total_pages) == (
        common_pb2.COUNT_KIND_EXACT,
        N,
        3,
    )
    estimated = await case.call(
        env, organization_id=tenant.org, page_size=25, count_mode=common_pb2.COUNT_MODE_ESTIMATED
    )
    assert estimated.page_info.count_kind == common_pb2.COUNT_KIND_ESTIMATED
    assert estimated.page_info.total_size >= 26  # never below what is known to exist
    # The last page of an estimated count knows the exact total.
    last = await case.call(
        env, organization_id=tenant.org, page_size=N, count_mode=common_pb2.COUNT_MODE_ESTIMATED
    )
    assert last.page_info.total_size == N
    await expect_invalid(case.call(env, organization_id=tenant.org, count_mode=99), "count_mode")


@each_case
async def test_exact_count_above_the_cap_is_a_lower_bound(
    case: ListCase, capped: Env, seeded: SeededTenants
) -> None:
    tenant = await seeded.of(case)
    response = await case.call(
        capped, organization_id=tenant.org, count_mode=common_pb2.COUNT_MODE_EXACT, page_size=5
    )
    info = response.page_info
    assert (info.count_kind, info.total_size) == (common_pb2.COUNT_KIND_LOWER_BOUND, CAP)
    small = await case.call(
        capped,
        organization_id=tenant.org,
        count_mode=common_pb2.COUNT_MODE_EXACT,
        page_size=5,
        **case.filters(tenant.org),
    )
    exact_filtered = len(
        await walk(case, capped, (N,), organization_id=tenant.org, **case.filters(tenant.org))
    )
    expected_kind = (
        common_pb2.COUNT_KIND_EXACT if exact_filtered <= CAP else common_pb2.COUNT_KIND_LOWER_BOUND
    )
    assert small.page_info.count_kind == expected_kind
    assert small.page_info.total_size == min(exact_filtered, CAP)


# -- statements per call ------------------------------------------------------------


@each_case
@pytest.mark.parametrize(
    ("count_mode", "expected"),
    [
        (common_pb2.COUNT_MODE_NONE, 1),
        (common_pb2.COUNT_MODE_EXACT, 2),
        (common_pb2.COUNT_MODE_ESTIMATED, 2),
    ],
)
async def test_statement_count_is_fixed_whatever_the_page_size(
    case: ListCase, env: Env, seeded: SeededTenants, count_mode: int, expected: int
) -> None:
    tenant = await seeded.of(case)
    await case.call(env, organization_id=tenant.org)  # warm the connections
    token = await _first_token(case, env, tenant.org)
    # VIEW_FULL: one more statement per kind of related row at most (none for
    # a kind the page has no ids of; a page of every row has every kind).
    views: list[dict[str, Any]] = [{}]
    if case in _VIEW_CASES:
        views.append({"view": common_pb2.VIEW_FULL})
    for view in views:
        most = expected + len(_related_fields(case)) * bool(view)
        for size in (1, 7, N, 1000):
            for page_token, page in (("", 0), (token, 0), ("", 2)):
                env.statements.clear()
                response = await case.call(
                    env,
                    organization_id=tenant.org,
                    page_size=size,
                    page_token=page_token,
                    page=page,
                    count_mode=count_mode,
                    **view,
                )
                assert case.items(response) or page == 2
                assert expected <= len(env.statements) <= most, env.statements
                if size >= N and not page_token and not page:
                    assert len(env.statements) == most, env.statements


async def test_cases_cover_every_list_rpc() -> None:
    """Every List RPC of every service is a case of the contract."""
    from server.handlers import SERVICES

    lists = {
        f"/{s.full_name}/{m.name}"
        for s in SERVICES
        for m in s.pb2.DESCRIPTOR.services_by_name[s.short_name].methods
        if m.name.startswith("List")
    }
    assert lists <= {c.method for c in CASES}, lists - {c.method for c in CASES}


def test_cases_cover_every_order_of_every_list() -> None:
    """Each order of each List RPC, in both directions, is a case (the
    ListSpec serving a method is found by its response message)."""
    import importlib
    import pkgutil

    import server.handlers
    from server.handlers import SERVICES

    specs: dict[str, ListSpec[Any, Any]] = {}
    for module in pkgutil.iter_modules(server.handlers.__path__):
        handlers = importlib.import_module(f"server.handlers.{module.name}")
        for value in vars(handlers).values():
            if isinstance(value, ListSpec):
                specs[value.response.DESCRIPTOR.full_name] = value
    by_method = {
        f"/{s.full_name}/{m.name}": specs[m.output_type.full_name]
        for s in SERVICES
        for m in s.pb2.DESCRIPTOR.services_by_name[s.short_name].methods
        if m.name.startswith("List")
    }
    declared = {
        (method, order.name, order.descending)
        for method, spec in by_method.items()
        for order in spec.listing.orders.values()
    }
    covered = {
        (c.method, order.name, order.descending)
        for c in CASES
        if c.method in by_method
        and (order := by_method[c.method].listing.order(c.order_by)) is not None
    }
    assert declared == covered, declared ^ covered
