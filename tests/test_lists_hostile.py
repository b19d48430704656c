# ruff: noqa: RUF001, RUF002  (the search cases are written in the letters they fold)
"""A hostile caller against the list RPCs and the day sheet: ListProviders,
ListServices, ListAppointments and ListPayments (VIEW_FULL), ListClientHistory
and GetProviderSchedule, over the real channel against the real server.

Every answer must be a documented code with details (INVALID_ARGUMENT naming
the right field, NOT_FOUND, or an empty or correct result), never INTERNAL,
UNKNOWN or a hang, and no row of another tenant may ever appear. Bugs found
were marked ``xfail(strict=True)`` until fixed.

Two tenants share one world of rows with the same names, so that a leak shows
as an id of the other tenant. Payments and bulk appointments are inserted with
SQL (there is no payment write RPC), as in tests/test_lists.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    appointments_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
)
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.type import date_pb2

from server.config import DEV_PAGE_TOKEN_SECRET
from server.db.engine import to_asyncpg_dsn
from server.ids import is_uuid
from server.paging import MAX_PAGE_NUMBER, PageTokenCodec
from tests.conftest import Stubs, details, make_bookable, new_org, violated_fields
from tests.test_lists import (
    Appt,
    Pay,
    create_provider,
    create_service,
    insert_appointments,
    insert_payments,
)

CODEC = PageTokenCodec(DEV_PAGE_TOKEN_SECRET)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
FULL = common_pb2.VIEW_FULL
ESTIMATED = common_pb2.COUNT_MODE_ESTIMATED
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ZERO_ID = "00000000-0000-0000-0000-000000000000"
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
TS_MIN_SECONDS = -62_135_596_800
TS_MAX_SECONDS = 253_402_300_799
# The token keyset's timestamp range (server.queries._listing), in microseconds.
KEY_MIN_MICROS = -62_135_596_800_000_000
KEY_MAX_MICROS = 253_402_300_799_999_999
# Names both tenants use (a leak shows as the other tenant's id).
NAMES = ("İstanbul", "Yılmaz", "ΣΊΣΥΦΟΣ", "\U0010ffff\U0010ffff", "ﷺ", "100% _x\\y")


# -- the world ---------------------------------------------------------------------------


@dataclass
class Tenant:
    org: str
    provider_id: str
    service_id: str
    client_id: str
    other_client_id: str
    # Name -> id, for providers and services named in NAMES.
    providers: dict[str, str]
    services: dict[str, str]
    appointments: list[str]
    payments: list[str]

    def ids(self) -> set[str]:
        return {
            self.org,
            self.provider_id,
            self.service_id,
            self.client_id,
            self.other_client_id,
            *self.providers.values(),
            *self.services.values(),
            *self.appointments,
            *self.payments,
        }


@dataclass
class World:
    a: Tenant
    b: Tenant


async def _tenant(stubs: Stubs, conn: asyncpg.Connection) -> Tenant:
    org = await new_org(stubs)
    bookable = await make_bookable(stubs, org)
    other = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(given_name="Oth", family_name="Er")
        )
    )
    providers = {name: await create_provider(stubs, org, name) for name in NAMES}
    services = {name: await create_service(stubs, org, name) for name in NAMES}
    half_hour = timedelta(minutes=30)
    starts = [T0 + timedelta(hours=3 * i) for i in range(6)]
    appointments = await insert_appointments(
        conn,
        org,
        [
            Appt(bookable.provider_id, bookable.client_id, bookable.service_id, at, at + half_hour)
            for at in starts
        ],
    )
    # The first payment at the very instant of the first appointment's start:
    # the history's (time, kind, id) tie.
    payments = await insert_payments(
        conn,
        org,
        [
            Pay(bookable.client_id, at + timedelta(minutes=10 * (i > 0)), appointment)
            for i, (at, appointment) in enumerate(zip(starts, appointments, strict=True))
        ],
    )
    return Tenant(
        org,
        bookable.provider_id,
        bookable.service_id,
        bookable.client_id,
        other.client.id,
        providers,
        services,
        appointments,
        payments,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(channel: grpc.aio.Channel, database_url: str) -> AsyncIterator[World]:
    stubs = Stubs(channel)
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        yield World(await _tenant(stubs, conn), await _tenant(stubs, conn))
    finally:
        await conn.close()


# -- the RPCs under attack, called by name ---------------------------------------------


@dataclass(frozen=True)
class Lister:
    """One paged list RPC: its request, its stub method and its items' field."""

    name: str
    path: str
    request: type[Message]
    response: type[Message]
    items: str
    call: Callable[[Stubs], Any]
    # Fields a request needs besides the tenant (the history's client).
    needs: Callable[[Tenant], dict[str, Any]] = lambda _t: {}

    def make(self, tenant: Tenant, **fields: Any) -> Any:
        return self.request(organization_id=tenant.org, **self.needs(tenant), **fields)

    async def list(self, stubs: Stubs, tenant: Tenant, **fields: Any) -> Any:
        return await self.call(stubs)(self.make(tenant, **fields))


LISTERS = [
    Lister(
        "ListProviders",
        "/booking.v1.ProviderService/ListProviders",
        providers_pb2.ListProvidersRequest,
        providers_pb2.ListProvidersResponse,
        "providers",
        lambda s: s.providers.ListProviders,
    ),
    Lister(
        "ListServices",
        "/booking.v1.CatalogService/ListServices",
        catalog_pb2.ListServicesRequest,
        catalog_pb2.ListServicesResponse,
        "services",
        lambda s: s.catalog.ListServices,
    ),
    Lister(
        "ListAppointments",
        "/booking.v1.AppointmentService/ListAppointments",
        appointments_pb2.ListAppointmentsRequest,
        appointments_pb2.ListAppointmentsResponse,
        "appointments",
        lambda s: s.appointments.ListAppointments,
    ),
    Lister(
        "ListPayments",
        "/booking.v1.PaymentService/ListPayments",
        payments_pb2.ListPaymentsRequest,
        payments_pb2.ListPaymentsResponse,
        "payments",
        lambda s: s.payments.ListPayments,
    ),
    Lister(
        "ListClientHistory",
        "/booking.v1.ClientService/ListClientHistory",
        clients_pb2.ListClientHistoryRequest,
        clients_pb2.ListClientHistoryResponse,
        "entries",
        lambda s: s.clients.ListClientHistory,
        lambda t: {"client_id": t.client_id},
    ),
]
BY_NAME = {lister.name: lister for lister in LISTERS}
each_list = pytest.mark.parametrize("lister", LISTERS, ids=[lister.name for lister in LISTERS])


def item_ids(lister: Lister, response: Any) -> list[str]:
    items = getattr(response, lister.items)
    if lister.name == "ListClientHistory":
        return [getattr(e, e.WhichOneof("entry")).id for e in items]
    return [item.id for item in items]


def every_id(message: Message) -> set[str]:
    """Every string in ``message`` that is a UUID (ids of any field, map keys too)."""
    found: set[str] = set()

    def visit(msg: Message) -> None:
        for field, value in msg.ListFields():
            values = value if field.is_repeated else [value]
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, entry in value.items():
                    found.add(str(key))
                    if isinstance(entry, Message):
                        visit(entry)
                continue
            for item in values:
                if isinstance(item, Message):
                    visit(item)
                elif isinstance(item, str) and is_uuid(item):
                    found.add(item.lower())

    visit(message)
    return found


def assert_only_tenant(response: Message, tenant: Tenant, world: World) -> None:
    other = world.b if tenant is world.a else world.a
    leaked = every_id(response) & other.ids()
    assert not leaked, f"rows of another tenant: {leaked}"


async def refused(call: Any, *fields: str) -> grpc.aio.AioRpcError:
    """The call fails with INVALID_ARGUMENT whose violations are exactly ``fields``."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == INVALID, f"{error.code()} {error.details()}"
    assert violated_fields(error) == set(fields), details(error)
    return error


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def day(year: int, month: int, day_: int) -> date_pb2.Date:
    return date_pb2.Date(year=year, month=month, day=day_)


def token_payload(token: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return dict(json.loads(raw[:-16]))


async def first_token(stubs: Stubs, lister: Lister, tenant: Tenant, **fields: Any) -> str:
    response = await lister.list(stubs, tenant, page_size=1, **fields)
    assert response.next_page_token, f"{lister.name}: one row only"
    return str(response.next_page_token)


# -- invalid UTF-8, NUL and the edges of Unicode ----------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _with_raw_string(request: Message, number: int, raw: bytes) -> bytes:
    """``request`` serialized, then string field ``number`` set to ``raw`` bytes
    (protobuf Python refuses to build such a message; the wire takes it)."""
    return request.SerializeToString() + _varint(number << 3 | 2) + _varint(len(raw)) + raw


_SCHEDULE_PATH = "/booking.v1.ScheduleService/GetProviderSchedule"
_BAD_UTF8 = (b"\xed\xa0\x80", b"ab\xff", b"\xc0\xaf", b"\xf4\x90\x80\x80")


@pytest.mark.parametrize(
    ("path", "request_type", "response_type"),
    [(x.path, x.request, x.response) for x in LISTERS]
    + [
        (
            _SCHEDULE_PATH,
            schedules_pb2.GetProviderScheduleRequest,
            schedules_pb2.GetProviderScheduleResponse,
        )
    ],
    ids=[x.name for x in LISTERS] + ["GetProviderSchedule"],
)
async def test_invalid_utf8_in_any_string_field_is_a_malformed_request(
    channel: grpc.aio.Channel,
    world: World,
    path: str,
    request_type: type[Message],
    response_type: type[Message],
) -> None:
    """A lone surrogate (as UTF-8 bytes), a stray 0xFF, an overlong '/' and a
    code point beyond U+10FFFF in every string field, repeated ones included:
    INVALID_ARGUMENT MALFORMED_REQUEST (the request cannot be parsed, so no
    field can be named), never INTERNAL or UNKNOWN."""
    call = channel.unary_unary(
        path,
        request_serializer=lambda raw: raw,
        response_deserializer=response_type.FromString,
    )
    base = request_type(organization_id=world.a.org)
    if request_type is clients_pb2.ListClientHistoryRequest:
        base = request_type(organization_id=world.a.org, client_id=world.a.client_id)
    strings = [f for f in request_type.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    assert len(strings) >= 2
    for field in strings:
        for raw in _BAD_UTF8:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(_with_raw_string(base, field.number, raw))
            error = caught.value
            assert error.code() == INVALID, (field.name, raw, error.code(), error.details())
            assert details(error)["ErrorInfo"].reason == "MALFORMED_REQUEST", (field.name, raw)
    # The same bytes made valid are served (the injection itself is right).
    ok = channel.unary_unary(
        path, request_serializer=lambda raw: raw, response_deserializer=response_type.FromString
    )
    if path != _SCHEDULE_PATH:
        order = request_type.DESCRIPTOR.fields_by_name.get("order_by")
        if order is not None:
            await ok(_with_raw_string(base, order.number, b""))
        page_token = request_type.DESCRIPTOR.fields_by_name["page_token"]
        await ok(_with_raw_string(base, page_token.number, b""))


@pytest.mark.parametrize("kind", ["providers", "services"])
async def test_search_at_the_edges_of_unicode(stubs: Stubs, world: World, kind: str) -> None:
    """Turkish İ/ı, final sigma, U+10FFFF, an 18-letter NFKC expansion and
    LIKE's own characters: each search finds what folding says, in the
    caller's tenant only (the other tenant has the same names)."""
    lister = BY_NAME["ListProviders" if kind == "providers" else "ListServices"]
    names = world.a.providers if kind == "providers" else world.a.services

    async def found(query: str) -> set[str]:
        response = await lister.list(stubs, world.a, query=query, page_size=1000)
        assert_only_tenant(response, world.a, world)
        by_id = {v: k for k, v in names.items()}
        return {by_id.get(i, "<other>") for i in item_ids(lister, response)}

    cases: dict[str, set[str]] = {
        "İSTANBUL": {"İstanbul"},
        "ıstanbul": {"İstanbul"},
        "istanbul": {"İstanbul"},
        "İ": {"İstanbul"},
        "YILMAZ": {"Yılmaz"},
        "yilmaz": {"Yılmaz"},
        "Yıl": {"Yılmaz"},
        "σίσυφος": {"ΣΊΣΥΦΟΣ"},
        "ΣΊΣΥΦΟς": {"ΣΊΣΥΦΟΣ"},
        "ς": {"ΣΊΣΥΦΟΣ"},
        "φος": {"ΣΊΣΥΦΟΣ"},
        "\U0010ffff": {"\U0010ffff\U0010ffff"},
        "\U0010ffff" * 2: {"\U0010ffff\U0010ffff"},
        "\U0010ffff" * 3: set(),
        "ﷺ": {"ﷺ"},
        "صلى الله": {"ﷺ"},
        "ﷺ" * 100: set(),
        "%": set(),
        "_": set(),
        "\\": set(),
        "0% _": {"100% _x\\y"},
        "x\\y": {"100% _x\\y"},
        "%_%": set(),
        " \t ": set(NAMES) | {"<other>"},
    }
    for query, expected in cases.items():
        assert await found(query) == expected, repr(query)
    await refused(lister.list(stubs, world.a, query="ﷺ" * 101), "query")
    await refused(lister.list(stubs, world.a, query="ab\x00"), "query")


# -- numbers at the edges ---------------------------------------------------------------


@each_list
async def test_paging_numbers_at_the_edges(stubs: Stubs, world: World, lister: Lister) -> None:
    response = await lister.list(stubs, world.a, page_size=2**31 - 1)
    assert response.page_info.page_size == 1000
    assert_only_tenant(response, world.a, world)
    await refused(lister.list(stubs, world.a, page=2**31 - 1), "page")
    await refused(lister.list(stubs, world.a, page=2**31 - 1, page_size=2**31 - 1), "page")
    await refused(lister.list(stubs, world.a, page_size=-1, page=-1), "page_size", "page")
    await refused(lister.list(stubs, world.a, page_size=-(2**31)), "page_size")
    await refused(lister.list(stubs, world.a, page=-(2**31)), "page")
    token = await first_token(stubs, lister, world.a)
    await refused(lister.list(stubs, world.a, page=2, page_token=token), "page")
    await refused(lister.list(stubs, world.a, count_mode=99), "count_mode")
    await refused(lister.list(stubs, world.a, count_mode=-1), "count_mode")
    # The last page number mode allows (page * page_size = 100,000) is served.
    deepest = await lister.list(stubs, world.a, page=100, page_size=1000)
    assert item_ids(lister, deepest) == []
    assert deepest.page_info.page == 100


async def test_amounts_at_the_int64_edges(stubs: Stubs, world: World) -> None:
    lister = BY_NAME["ListPayments"]
    everything = await lister.list(
        stubs,
        world.a,
        currency_code="EUR",
        min_amount_minor=0,
        max_amount_minor=2**63 - 1,
        count_mode=ESTIMATED,
    )
    assert set(item_ids(lister, everything)) == set(world.a.payments)
    top = await lister.list(
        stubs, world.a, currency_code="EUR", min_amount_minor=2**63 - 1, max_amount_minor=2**63 - 1
    )
    assert item_ids(lister, top) == []
    call = lister.list
    await refused(
        call(stubs, world.a, currency_code="EUR", min_amount_minor=-(2**63)), "min_amount_minor"
    )
    await refused(
        call(stubs, world.a, currency_code="EUR", max_amount_minor=-1), "max_amount_minor"
    )
    await refused(
        call(stubs, world.a, currency_code="EUR", min_amount_minor=2**63 - 1, max_amount_minor=0),
        "max_amount_minor",
    )
    await refused(call(stubs, world.a, max_amount_minor=2**63 - 1), "currency_code")
    for bad in ("eur", "EURO", "€", "ÉUR", "\U0010ffff", "EU", " EUR"):
        await refused(call(stubs, world.a, currency_code=bad), "currency_code")


async def test_currency_code_with_a_trailing_newline_is_refused(stubs: Stubs, world: World) -> None:
    await refused(
        BY_NAME["ListPayments"].list(stubs, world.a, currency_code="EUR\n"), "currency_code"
    )


# -- timestamps and dates at the edges --------------------------------------------------

# (list, lower bound field, upper bound field)
_TIME_FILTERS = [
    ("ListProviders", "created_after", "created_before"),
    ("ListServices", "created_after", "created_before"),
    ("ListAppointments", "start_time", "end_time"),
    ("ListPayments", "created_after", "created_before"),
]


@pytest.mark.parametrize(("name", "low", "high"), _TIME_FILTERS, ids=[c[0] for c in _TIME_FILTERS])
async def test_timestamps_at_and_beyond_the_protobuf_range(
    stubs: Stubs, world: World, name: str, low: str, high: str
) -> None:
    lister = BY_NAME[name]
    all_ids = set(item_ids(lister, await lister.list(stubs, world.a, page_size=1000)))
    assert all_ids
    # The first instant as a lower bound: everything; as an upper bound: nothing.
    since_first = await lister.list(stubs, world.a, page_size=1000, **{low: ts(TS_MIN_SECONDS)})
    assert set(item_ids(lister, since_first)) == all_ids
    before_first = await lister.list(stubs, world.a, **{high: ts(TS_MIN_SECONDS, 1)})
    assert item_ids(lister, before_first) == []
    # The last instant as a lower bound: nothing.
    since_last = await lister.list(stubs, world.a, **{low: ts(TS_MAX_SECONDS, 999_999_999)})
    assert item_ids(lister, since_last) == []
    beyond = [
        ts(TS_MIN_SECONDS - 1),
        ts(TS_MAX_SECONDS + 1),
        ts(2**63 - 1),
        ts(-(2**63)),
        ts(100, -1),
        ts(100, 1_000_000_000),
        ts(100, 2**31 - 1),
    ]
    for bad in beyond:
        await refused(lister.list(stubs, world.a, **{low: bad}), low)
        await refused(lister.list(stubs, world.a, **{high: bad}), high)


@pytest.mark.parametrize(("name", "low", "high"), _TIME_FILTERS, ids=[c[0] for c in _TIME_FILTERS])
async def test_the_last_timestamp_as_an_upper_bound_is_served(
    stubs: Stubs, world: World, name: str, low: str, high: str
) -> None:
    del low
    lister = BY_NAME[name]
    all_ids = set(item_ids(lister, await lister.list(stubs, world.a, page_size=1000)))
    until_last = await lister.list(
        stubs, world.a, page_size=1000, **{high: ts(TS_MAX_SECONDS, 999_999_999)}
    )
    assert set(item_ids(lister, until_last)) == all_ids


async def test_appointment_dates_at_the_edges(stubs: Stubs, world: World) -> None:
    lister = BY_NAME["ListAppointments"]
    call = lister.list
    await refused(call(stubs, world.a, start_date=day(1, 1, 1)), "start_date")
    await refused(call(stubs, world.a, end_date=day(1, 1, 1)), "end_date")
    await refused(call(stubs, world.a, start_date=day(2024, 2, 30)), "start_date")
    await refused(call(stubs, world.a, end_date=day(2023, 2, 29)), "end_date")
    await refused(call(stubs, world.a, start_date=day(-1, 1, 1)), "start_date")
    await refused(call(stubs, world.a, end_date=day(2024, 13, 1)), "end_date")
    await refused(call(stubs, world.a, start_date=day(2024, 1, -1)), "start_date")
    await refused(
        call(stubs, world.a, start_date=day(2024, 1, 2), end_date=day(2024, 1, 1)), "end_date"
    )
    await refused(
        call(stubs, world.a, start_time=ts(TS_MAX_SECONDS), end_time=ts(TS_MAX_SECONDS)), "end_time"
    )
    # The widest range is everything; the last date alone is nothing.
    widest = await call(
        stubs, world.a, start_date=day(1900, 1, 1), end_date=day(9999, 12, 31), page_size=1000
    )
    assert set(item_ids(lister, widest)) == set(world.a.appointments)
    for first, last in ((day(9999, 12, 31), day(9999, 12, 31)), (day(9999, 12, 31), day(0, 0, 0))):
        response = await call(stubs, world.a, start_date=first, end_date=last)
        assert item_ids(lister, response) == []
    until_last = await call(stubs, world.a, end_date=day(9999, 12, 31), page_size=1000)
    assert set(item_ids(lister, until_last)) == set(world.a.appointments)
    # The business date of the appointments (Europe/Berlin: 10:00 local).
    on_t0 = await call(stubs, world.a, start_date=day(2026, 3, 2), end_date=day(2026, 3, 2))
    assert set(item_ids(lister, on_t0)) == set(world.a.appointments[:5])


async def test_day_sheet_dates_at_the_edges_in_the_extreme_zones(
    stubs: Stubs, world: World
) -> None:
    """UTC-12 and UTC+14 at the first and last date the contract allows: each
    day is 24 hours within the Timestamp range; a date beyond is refused on
    ``date``, whatever else the request holds."""
    west = await create_provider(stubs, world.a.org, "West", time_zone="Etc/GMT+12")
    east = await create_provider(stubs, world.a.org, "East", time_zone="Pacific/Kiritimati")
    request = schedules_pb2.GetProviderScheduleRequest
    for date in (day(1900, 1, 1), day(9999, 12, 30)):
        response = await stubs.schedules.GetProviderSchedule(
            request(organization_id=world.a.org, provider_ids=[west, east], date=date)
        )
        assert [e.provider_id for e in response.providers] == [west, east]
        for entry in response.providers:
            assert not entry.HasField("error")
            length = entry.day_end_time.seconds - entry.day_start_time.seconds
            assert length == 86_400, (entry.time_zone, date)
            assert entry.day_start_time.seconds >= TS_MIN_SECONDS
            assert entry.day_end_time.seconds <= TS_MAX_SECONDS + 1
    for bad in (day(1, 1, 1), day(1899, 12, 31), day(9999, 12, 31), day(2024, 2, 30), day(0, 0, 0)):
        await refused(
            stubs.schedules.GetProviderSchedule(
                request(organization_id=world.a.org, provider_ids=[west], date=bad)
            ),
            "date",
        )


# -- forged but signed page tokens ------------------------------------------------------


def _history_key(entry: clients_pb2.ClientHistoryEntry) -> tuple[int, str, str]:
    kind = str(entry.WhichOneof("entry"))
    item = getattr(entry, kind)
    return (entry.time.seconds * 1_000_000 + entry.time.nanos // 1000, kind, item.id)


async def test_history_keyset_with_foreign_kinds(stubs: Stubs, world: World) -> None:
    """The history's keyset (time, kind, id) with kinds that are neither
    'payment' nor 'appointment': a signed token is still only a position, so
    any text of the allowed length is a position (the next rows after it, in
    order, this client's only); longer, or not a string, is INVALID_ARGUMENT."""
    lister = BY_NAME["ListClientHistory"]
    full = await lister.list(stubs, world.a, page_size=1000)
    keys = [_history_key(e) for e in full.entries]
    assert keys == sorted(keys, reverse=True)
    assert {k[1] for k in keys} == {"payment", "appointment"}
    real = token_payload(await first_token(stubs, lister, world.a))
    scope = real["s"]
    at, _kind, some_id = real["k"]
    # Kinds whose order against 'appointment' and 'payment' no collation changes.
    for kind in ("", "bogus", "zzzz", "\U0010ffff" * 16_384):
        token = CODEC.encode(scope, 2, (at, kind, some_id))
        response = await lister.list(stubs, world.a, page_size=1000, page_token=token)
        expected = [k for k in keys if k < (at, kind, some_id)]
        assert [_history_key(e) for e in response.entries] == expected, kind[:10]
        assert_only_tenant(response, world.a, world)
    bad_kinds: list[Any] = [
        "x" * 16_385,
        "x" * 20_000,
        7,
        None,
        ["payment"],
        "pay\x00ment",
        "\ud800",
    ]
    for bad_kind in bad_kinds:
        token = CODEC.encode(scope, 2, (at, bad_kind, some_id))
        await refused(lister.list(stubs, world.a, page_token=token), "page_token")
    for keyset in ([at, "payment"], [at, "payment", some_id, some_id], [at, some_id, "payment"]):
        token = CODEC.encode(scope, 2, tuple(keyset))
        await refused(lister.list(stubs, world.a, page_token=token), "page_token")


# (list, a keyset before every row in the list's default order, its length)
_FIRST_KEYS: dict[str, tuple[Any, ...]] = {
    "ListProviders": ("", ZERO_ID),
    "ListServices": ("", ZERO_ID),
    "ListAppointments": (KEY_MIN_MICROS, ZERO_ID),
    "ListPayments": (KEY_MAX_MICROS, "ffffffff-ffff-ffff-ffff-ffffffffffff"),
    "ListClientHistory": (
        KEY_MAX_MICROS,
        "\U0010ffff" * 16_384,
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ),
}


@each_list
async def test_forged_keysets_at_the_edges(stubs: Stubs, world: World, lister: Lister) -> None:
    """Keysets at the ends of each type's range (before every row: the whole
    list; the largest text key is 16,384 times U+10FFFF, 64 KB of UTF-8; the
    first and last microsecond) and with another tenant's ids: a position
    only, the caller's rows only; a step beyond is INVALID_ARGUMENT."""
    real = token_payload(await first_token(stubs, lister, world.a))
    scope = real["s"]
    every = item_ids(lister, await lister.list(stubs, world.a, page_size=1000))
    first = _FIRST_KEYS[lister.name]
    response = await lister.list(
        stubs, world.a, page_size=1000, page_token=CODEC.encode(scope, 2, first)
    )
    assert item_ids(lister, response) == every
    assert response.page_info.page == 2
    assert response.page_info.has_prev
    # Another tenant's row id as the tie-breaker: still the caller's rows only.
    foreign = list(real["k"])
    foreign[-1] = (world.b.payments + world.b.appointments)[0]
    response = await lister.list(
        stubs, world.a, page_size=1000, page_token=CODEC.encode(scope, 2, tuple(foreign))
    )
    assert set(item_ids(lister, response)) <= set(every)
    assert_only_tenant(response, world.a, world)
    # A step beyond each end of a keyset value's type.
    for position, value in enumerate(first):
        beyond: list[Any] = []
        if isinstance(value, int):
            beyond = [KEY_MIN_MICROS - 1, KEY_MAX_MICROS + 1, 2**63, float(value)]
        elif len(value) == 36:
            beyond = [value.replace("-", ""), f"{{{value}}}", value[:-1] + "g", value + " "]
        else:
            beyond = ["\U0010ffff" * 16_385, "\ud800", b"x".decode() + "\x00"]
        for bad in beyond:
            forged = list(first)
            forged[position] = bad
            await refused(
                lister.list(stubs, world.a, page_token=CODEC.encode(scope, 2, tuple(forged))),
                "page_token",
            )


async def at_the_last_page_number(stubs: Stubs, world: World, lister: Lister, **fields: Any) -> Any:
    """Page 2**31-1 of 1 row, positioned before the first row (a forged token)."""
    scope = token_payload(await first_token(stubs, lister, world.a))["s"]
    token = CODEC.encode(scope, MAX_PAGE_NUMBER, _FIRST_KEYS[lister.name])
    return await lister.list(stubs, world.a, page_size=1, page_token=token, **fields)


@each_list
async def test_last_page_number_with_an_estimated_count_is_not_internal(
    stubs: Stubs, world: World, lister: Lister
) -> None:
    response = await at_the_last_page_number(stubs, world, lister, count_mode=ESTIMATED)
    assert response.page_info.page == MAX_PAGE_NUMBER


@each_list
async def test_a_token_issued_after_the_last_page_number_is_accepted(
    stubs: Stubs, world: World, lister: Lister
) -> None:
    last = await at_the_last_page_number(stubs, world, lister)
    assert last.next_page_token
    await lister.list(stubs, world.a, page_size=1, page_token=last.next_page_token)


async def test_a_token_works_on_its_own_list_and_tenant_only(stubs: Stubs, world: World) -> None:
    """Every list's token on every other list, and on its own list for the
    other tenant: INVALID_ARGUMENT on page_token, never a page."""
    tokens = {x.name: await first_token(stubs, x, world.a) for x in LISTERS}
    for source, token in tokens.items():
        for target in LISTERS:
            if target.name == source:
                response = await target.list(stubs, world.a, page_size=1, page_token=token)
                assert response.page_info.page == 2
                await refused(target.list(stubs, world.b, page_token=token), "page_token")
                continue
            error = await refused(target.list(stubs, world.a, page_token=token), "page_token")
            reason = details(error)["BadRequest"].field_violations[0].reason
            assert reason in ("PAGE_TOKEN_MISMATCH", "INVALID_PAGE_TOKEN"), (source, target.name)
    # The history of another client of the same tenant.
    history = BY_NAME["ListClientHistory"]
    await refused(
        stubs.clients.ListClientHistory(
            clients_pb2.ListClientHistoryRequest(
                organization_id=world.a.org,
                client_id=world.a.other_client_id,
                page_token=tokens[history.name],
            )
        ),
        "page_token",
    )


# -- another tenant's ids in every id filter --------------------------------------------


async def test_another_tenants_ids_in_every_id_filter_match_nothing(
    stubs: Stubs, world: World
) -> None:
    a, b = world.a, world.b
    cases: list[tuple[str, dict[str, Any]]] = [
        ("ListProviders", {"service_id": b.service_id}),
        ("ListServices", {"provider_id": b.provider_id}),
        ("ListAppointments", {"provider_ids": [b.provider_id]}),
        ("ListAppointments", {"provider_ids": [b.provider_id.upper(), b.provider_id]}),
        ("ListAppointments", {"client_id": b.client_id}),
        ("ListAppointments", {"service_id": b.service_id}),
        ("ListPayments", {"client_id": b.client_id}),
        ("ListPayments", {"appointment_id": b.appointments[0]}),
    ]
    for name, fields in cases:
        lister = BY_NAME[name]
        extra = {"view": FULL} if name in ("ListAppointments", "ListPayments") else {}
        response = await lister.list(
            stubs, a, count_mode=common_pb2.COUNT_MODE_EXACT, **fields, **extra
        )
        assert item_ids(lister, response) == [], (name, fields)
        assert response.page_info.total_size == 0
        assert_only_tenant(response, a, world)
    history = await stubs.clients.ListClientHistory(
        clients_pb2.ListClientHistoryRequest(organization_id=a.org, client_id=b.client_id)
    )
    assert list(history.entries) == []
    # VIEW_FULL of the caller's own rows carries the caller's related rows only.
    for name in ("ListAppointments", "ListPayments"):
        response = await BY_NAME[name].list(stubs, a, page_size=1000, view=FULL)
        assert item_ids(BY_NAME[name], response)
        assert_only_tenant(response, a, world)
    # The day sheet: another tenant's provider is NOT_FOUND and tells nothing.
    sheet = await stubs.schedules.GetProviderSchedule(
        schedules_pb2.GetProviderScheduleRequest(
            organization_id=a.org,
            provider_ids=[b.provider_id.upper(), a.provider_id],
            date=day(2026, 3, 2),
        )
    )
    theirs, ours = sheet.providers
    assert theirs.provider_id == b.provider_id  # the id asked for, echoed (canonical)
    assert theirs.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert not theirs.display_name and not theirs.time_zone and not theirs.appointments
    assert not theirs.working_intervals and not theirs.time_off
    assert not ours.HasField("error")
    assert {x.appointment.id for x in ours.appointments} == set(a.appointments[:5])
    assert_only_tenant(ours, a, world)


# -- enums, views and id lists ----------------------------------------------------------


async def test_enum_values_out_of_range_name_each_index(stubs: Stubs, world: World) -> None:
    appointments, payments = BY_NAME["ListAppointments"], BY_NAME["ListPayments"]
    await refused(
        appointments.list(stubs, world.a, statuses=[99, -1, 0, 1], view=99),
        "statuses[0]",
        "statuses[1]",
        "statuses[2]",
        "view",
    )
    for view in (-1, 3, 2**31 - 1, -(2**31)):
        await refused(appointments.list(stubs, world.a, view=view), "view")
        await refused(payments.list(stubs, world.a, view=view), "view")
    await refused(
        payments.list(stubs, world.a, statuses=[1, 99], methods=[2**31 - 1, -(2**31), 1]),
        "statuses[1]",
        "methods[0]",
        "methods[1]",
    )
    # Repeats of a known value are one value: the same rows, the same token scope.
    once = await appointments.list(stubs, world.a, statuses=[2], page_size=1)
    twice = await appointments.list(stubs, world.a, statuses=[2, 2, 2], page_size=1)
    assert item_ids(appointments, once) == item_ids(appointments, twice)
    await appointments.list(stubs, world.a, statuses=[2, 2], page_token=once.next_page_token)


async def test_a_hundred_provider_ids_with_repeats_and_upper_case(
    stubs: Stubs, world: World
) -> None:
    lister = BY_NAME["ListAppointments"]
    a = world.a
    strangers = [str(uuid.uuid4()).upper() for _ in range(48)]
    b_id = world.b.provider_id
    ids = [a.provider_id.upper(), *([a.provider_id] * 50), *strangers, b_id]
    assert len(ids) == 100
    response = await lister.list(stubs, a, provider_ids=ids, page_size=2, view=FULL)
    distinct_lower = [a.provider_id, b_id, *(i.lower() for i in strangers)]
    lower = await lister.list(stubs, a, provider_ids=distinct_lower, page_size=2)
    only_a = await lister.list(stubs, a, provider_ids=[a.provider_id], page_size=2)
    assert item_ids(lister, response) == item_ids(lister, lower) == item_ids(lister, only_a)
    assert set(response.providers) == {a.provider_id}
    assert_only_tenant(response, a, world)
    # The same filter however spelled: one token scope.
    await lister.list(stubs, a, provider_ids=ids[::-1], page_token=lower.next_page_token)
    await refused(lister.list(stubs, a, provider_ids=[a.provider_id] * 101), "provider_ids")
    await refused(
        lister.list(stubs, a, provider_ids=[a.provider_id, "x", "", a.provider_id + " "]),
        "provider_ids[1]",
        "provider_ids[2]",
        "provider_ids[3]",
    )
    # The day sheet wants distinct ids: upper and lower case are the same id.
    sheet = schedules_pb2.GetProviderScheduleRequest
    date = day(2026, 3, 2)
    await refused(
        stubs.schedules.GetProviderSchedule(
            sheet(
                organization_id=a.org,
                provider_ids=[a.provider_id, a.provider_id.upper()],
                date=date,
            )
        ),
        "provider_ids[1]",
    )
    distinct = [a.provider_id.upper(), *strangers, *(str(uuid.uuid4()) for _ in range(51))]
    assert len(distinct) == 100
    response = await stubs.schedules.GetProviderSchedule(
        sheet(organization_id=a.org, provider_ids=distinct, date=date)
    )
    assert [e.provider_id for e in response.providers] == [i.lower() for i in distinct]
    assert [e.HasField("error") for e in response.providers] == [False] + [True] * 99
    await refused(
        stubs.schedules.GetProviderSchedule(
            sheet(organization_id=a.org, provider_ids=[*distinct, str(uuid.uuid4())], date=date)
        ),
        "provider_ids",
    )


# -- deadlines and concurrent writes ----------------------------------------------------


async def test_a_one_millisecond_deadline_is_deadline_exceeded_and_harmless(
    stubs: Stubs, world: World
) -> None:
    a = world.a

    def list_call(x: Lister) -> Callable[[float], Any]:
        full = {"view": FULL} if x.name in ("ListAppointments", "ListPayments") else {}
        return lambda t: x.call(stubs)(x.make(a, page_size=1000, **full), timeout=t)

    calls = [list_call(x) for x in LISTERS]
    calls.append(
        lambda t: stubs.schedules.GetProviderSchedule(
            schedules_pb2.GetProviderScheduleRequest(
                organization_id=a.org, provider_ids=[a.provider_id], date=day(2026, 3, 2)
            ),
            timeout=t,
        )
    )
    for call in calls:
        outcomes = await asyncio.gather(*(call(0.001) for _ in range(10)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, grpc.aio.AioRpcError):
                assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED, outcome
            else:
                assert isinstance(outcome, Message), outcome
        # Nothing was left behind: the pool still serves, promptly.
        await call(10.0)


async def _walk(
    stubs: Stubs, lister: Lister, tenant: Tenant, pause: Callable[[], Any], **fields: Any
) -> list[Any]:
    items: list[Any] = []
    token = ""
    while True:
        response = await lister.list(stubs, tenant, page_size=3, page_token=token, **fields)
        items.extend(getattr(response, lister.items))
        token = response.next_page_token
        if not token:
            return items
        await pause()


@pytest.mark.parametrize("name", ["ListAppointments", "ListPayments", "ListClientHistory"])
async def test_concurrent_writes_while_paging(stubs: Stubs, database_url: str, name: str) -> None:
    """Rows inserted all over the order between the pages a caller reads:
    every row that existed throughout appears exactly once, nothing appears
    twice, nothing foreign appears, and the walk is in order."""
    org = await new_org(stubs)
    bookable = await make_bookable(stubs, org)
    tenant = Tenant(
        org, bookable.provider_id, bookable.service_id, bookable.client_id, "", {}, {}, [], []
    )
    lister = BY_NAME[name]
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:

        async def insert(i: int, status: str) -> dict[str, str]:
            """An appointment at slot i and its payment at its start instant."""
            start = T0 + timedelta(minutes=7 * i)
            (appointment,) = await insert_appointments(
                conn,
                org,
                [
                    Appt(
                        bookable.provider_id,
                        bookable.client_id,
                        bookable.service_id,
                        start,
                        start + timedelta(minutes=5),
                        status,
                    )
                ],
            )
            (payment,) = await insert_payments(
                conn, org, [Pay(bookable.client_id, start, appointment)]
            )
            return {"ListAppointments": appointment, "ListPayments": payment}

        def of_list(rows: dict[str, str]) -> set[str]:
            return set(rows.values()) if name == "ListClientHistory" else {rows[name]}

        before: set[str] = set()
        for i in range(0, 40, 2):
            before |= of_list(await insert(i, "confirmed"))
        added: set[str] = set()
        slots = list(range(1, 40, 2))
        random.Random(7).shuffle(slots)

        async def writer() -> None:
            # Concurrently with the walk, on a connection of its own.
            for i in slots:
                added.update(of_list(await insert(i, "cancelled")))
                await asyncio.sleep(0.002)

        progress: list[int] = []

        async def pause() -> None:
            progress.append(len(added))
            await asyncio.sleep(0.002)

        items, _ = await asyncio.gather(_walk(stubs, lister, tenant, pause), writer())
        if name == "ListClientHistory":
            keys = [_history_key(e) for e in items]
            assert keys == sorted(keys, reverse=True)
            ids = [k[2] for k in keys]
        else:
            ids = [item.id for item in items]
            field = "start_time" if name == "ListAppointments" else "create_time"
            order = [(getattr(i, field).ToDatetime(), i.id) for i in items]
            assert order == sorted(order, reverse=name == "ListPayments")
        assert len(ids) == len(set(ids)), "a row appeared twice"
        assert not before - set(ids), "rows present throughout were skipped"
        assert set(ids) <= before | added
        # The writes really happened between pages (not all before or after).
        assert progress[0] < len(slots) and progress[-1] > 0, progress
    finally:
        await conn.close()
