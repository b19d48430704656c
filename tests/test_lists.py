# ruff: noqa: RUF001  (the search cases are written in the letters they fold)
"""The filters and related rows of ListProviders, ListServices,
ListAppointments, ListPayments and ListClientHistory, through the real channel
against the real server, and the statements per call of VIEW_FULL.

The paging contract (page sizes, tokens, page-number mode, counts) is tested for
every list in tests/test_paging_contract.py; here each list's own semantics.
Payments have no write RPC yet: they (and bulk or past appointments) are
inserted with SQL through the ``db`` fixture.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from booking.v1 import (
    appointments_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.type import date_pb2

from tests.conftest import Stubs, details, violated_fields
from tests.test_list_clients import counted  # noqa: F401  (a fixture: the counting server)

AStatus = resources_pb2.AppointmentStatus
PStatus = resources_pb2.PaymentStatus
Method = resources_pb2.PaymentMethod
FULL = common_pb2.VIEW_FULL
INVALID = grpc.StatusCode.INVALID_ARGUMENT
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def day(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def create_client(stubs: Stubs, org: str, name: str = "Client") -> str:
    response = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(family_name=name)
        )
    )
    return response.client.id


async def create_provider(
    stubs: Stubs,
    org: str,
    name: str = "Pat",
    *,
    time_zone: str = "Europe/Berlin",
    active: bool = True,
) -> str:
    response = await stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name=name, time_zone=time_zone, active=active),
        )
    )
    return response.provider.id


async def create_service(stubs: Stubs, org: str, name: str = "Cut", *, active: bool = True) -> str:
    response = await stubs.catalog.CreateService(
        catalog_pb2.CreateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(
                name=name,
                duration_minutes=30,
                price=common_pb2.Money(currency_code="EUR", amount_minor=2500),
                active=active,
            ),
        )
    )
    return response.service.id


async def offer(stubs: Stubs, org: str, provider_id: str, service_id: str) -> None:
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org,
            offering=resources_pb2.Offering(provider_id=provider_id, service_id=service_id),
        )
    )


@dataclass(frozen=True)
class Appt:
    provider_id: str
    client_id: str
    service_id: str
    start: datetime
    end: datetime
    status: str = "confirmed"


async def insert_appointments(db: asyncpg.Connection, org: str, rows: Sequence[Appt]) -> list[str]:
    """Appointments as rows (any instant, past ones too); the caller keeps the
    blocking ones of a provider apart (the exclusion constraint)."""
    ids = [str(uuid.uuid4()) for _ in rows]
    await db.executemany(
        "INSERT INTO appointments (organization_id, id, provider_id, client_id, service_id,"
        " during, occupied, status, price_minor, currency)"
        " VALUES ($1, $2, $3, $4, $5, tstzrange($6, $7), tstzrange($6, $7), $8, 2500, 'EUR')",
        [
            (org, i, a.provider_id, a.client_id, a.service_id, a.start, a.end, a.status)
            for i, a in zip(ids, rows, strict=True)
        ],
    )
    return ids


@dataclass(frozen=True)
class Pay:
    client_id: str
    created_at: datetime
    appointment_id: str | None = None
    amount: int = 1000
    currency: str = "EUR"
    status: str = "completed"
    method: str = "card"


async def insert_payments(db: asyncpg.Connection, org: str, rows: Sequence[Pay]) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in rows]
    await db.executemany(
        "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor,"
        " currency, status, method, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        [
            (
                org,
                i,
                p.client_id,
                p.appointment_id,
                p.amount,
                p.currency,
                p.status,
                p.method,
                p.created_at,
            )
            for i, p in zip(ids, rows, strict=True)
        ],
    )
    return ids


async def expect_invalid(call: Any, *fields: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == INVALID, caught.value
    assert violated_fields(caught.value) == set(fields), details(caught.value)


# -- ListProviders and ListServices ---------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """ListProviders or ListServices, the same filters on another table."""

    name: str
    # The order by name, and the "offered by" filter's field.
    name_order: str
    offered_by: str

    async def create(self, stubs: Stubs, org: str, name: str, *, active: bool = True) -> str:
        if self.name == "providers":
            return await create_provider(stubs, org, name, active=active)
        return await create_service(stubs, org, name, active=active)

    async def list(self, stubs: Stubs, org: str, **fields: Any) -> list[str]:
        """The ids of every match, in the list's order (one page of 1000)."""
        if self.name == "providers":
            request: Any = providers_pb2.ListProvidersRequest(
                organization_id=org, page_size=1000, **fields
            )
            response: Any = await stubs.providers.ListProviders(request)
        else:
            request = catalog_pb2.ListServicesRequest(organization_id=org, page_size=1000, **fields)
            response = await stubs.catalog.ListServices(request)
        items = getattr(response, self.name)
        assert not response.next_page_token
        return [item.id for item in items]

    async def rename(self, stubs: Stubs, org: str, item_id: str, name: str) -> None:
        if self.name == "providers":
            await stubs.providers.UpdateProvider(
                providers_pb2.UpdateProviderRequest(
                    organization_id=org,
                    provider=resources_pb2.Provider(id=item_id, display_name=name),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                )
            )
        else:
            await stubs.catalog.UpdateService(
                catalog_pb2.UpdateServiceRequest(
                    organization_id=org,
                    service=resources_pb2.Service(id=item_id, name=name),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                )
            )


KINDS = [
    Kind("providers", "display_name", "service_id"),
    Kind("services", "name", "provider_id"),
]
kinds = pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)


async def named(kind: Kind, stubs: Stubs, org: str, names: Sequence[str]) -> dict[str, str]:
    ids = await asyncio.gather(*(kind.create(stubs, org, n) for n in names))
    return dict(zip(names, ids, strict=True))


@kinds
async def test_search_folds_case_and_matches_substrings_or_prefixes(
    kind: Kind, stubs: Stubs, org: str
) -> None:
    names = [
        "İstanbul Studio",
        "Yılmaz Salon",
        "ΟΔΟΣ Spa",
        "Straße Cuts",
        "Abel",
        "abigail",
        "Cab Corner",
        "100% Natural",
        "a_b salon",
        "axb salon",
        "back\\slash",
    ]
    ids = await named(kind, stubs, org, names)

    async def search(term: str) -> set[str]:
        found = await kind.list(stubs, org, query=term)
        assert len(found) == len(set(found))
        return {names[list(ids.values()).index(i)] for i in found}

    # 3+ characters: a substring, case-insensitive by Unicode case folding.
    assert await search("ISTANBUL") == {"İstanbul Studio"}
    assert await search("stanb") == {"İstanbul Studio"}
    assert await search("YILMAZ") == {"Yılmaz Salon"}
    assert await search("yilmaz") == {"Yılmaz Salon"}
    assert await search("οδος") == {"ΟΔΟΣ Spa"}  # final sigma = capital sigma
    assert await search("STRASSE") == {"Straße Cuts"}
    assert await search("salon") == {"Yılmaz Salon", "a_b salon", "axb salon"}
    assert await search("bigai") == {"abigail"}
    # 1-2 characters: the start of the folded name only.
    assert await search("ab") == {"Abel", "abigail"}
    assert await search("AB") == {"Abel", "abigail"}
    assert await search("İs") == {"İstanbul Studio"}
    assert await search("c") == {"Cab Corner"}
    # LIKE metacharacters are literal.
    assert await search("0% n") == {"100% Natural"}
    assert await search("%") == set()
    assert await search("a_b") == {"a_b salon"}
    assert await search("_") == set()
    assert await search("k\\s") == {"back\\slash"}
    assert await search("\\") == set()
    assert await search("zzz") == set()


@kinds
async def test_active_offered_by_and_created_range(
    kind: Kind, stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    on = await kind.create(stubs, org, "On")
    off = await kind.create(stubs, org, "Off", active=False)
    other = await kind.create(stubs, org, "Other")
    assert await kind.list(stubs, org, active=True) == [on, other]  # "on" < "other"
    assert await kind.list(stubs, org, active=False) == [off]
    assert set(await kind.list(stubs, org)) == {on, off, other}

    # Offered by: the other side of an offering.
    partner = (
        await create_service(stubs, org, "Partner")
        if kind.name == "providers"
        else await create_provider(stubs, org, "Partner")
    )
    for item in (on, off):
        if kind.name == "providers":
            await offer(stubs, org, item, partner)
        else:
            await offer(stubs, org, partner, item)
    assert set(await kind.list(stubs, org, **{kind.offered_by: partner})) == {on, off}
    assert await kind.list(stubs, org, **{kind.offered_by: partner}, active=False) == [off]
    assert await kind.list(stubs, org, **{kind.offered_by: str(uuid.uuid4())}) == []

    # Created at or after / strictly before.
    table = kind.name
    for item, hour in ((on, 1), (off, 2), (other, 3)):
        await db.execute(
            f"UPDATE {table} SET created_at = $3 WHERE organization_id = $1 AND id = $2",
            org,
            item,
            T0 + timedelta(hours=hour),
        )
    order = {"order_by": "create_time"}
    at2 = ts(T0 + timedelta(hours=2))
    assert await kind.list(stubs, org, created_after=at2, **order) == [off, other]
    assert await kind.list(stubs, org, created_before=at2, **order) == [on]
    assert await kind.list(
        stubs, org, created_after=ts(T0), created_before=ts(T0 + timedelta(hours=3)), **order
    ) == [on, off]
    assert await kind.list(stubs, org, order_by="create_time desc") == [other, off, on]

    await expect_invalid(kind.list(stubs, org, **{kind.offered_by: "nope"}), kind.offered_by)
    await expect_invalid(kind.list(stubs, org, query="x" * 101), "query")


@kinds
async def test_name_order_is_case_insensitive_ties_by_id_and_follows_renames(
    kind: Kind, stubs: Stubs, org: str
) -> None:
    created = await asyncio.gather(
        *(kind.create(stubs, org, n) for n in ("bob", "ALICE", "alice", "Alice", "Émile", "carl"))
    )
    bob, alice1, alice2, alice3, emile, carl = created
    alices = sorted([alice1, alice2, alice3])  # uuid order = its hex text order
    expected = [*alices, bob, carl, emile]  # "é" sorts after every ASCII letter
    assert await kind.list(stubs, org) == expected
    assert await kind.list(stubs, org, order_by=kind.name_order) == expected
    assert await kind.list(stubs, org, order_by=f"{kind.name_order} desc") == expected[::-1]
    # A rename moves the row: the folded key follows the update.
    await kind.rename(stubs, org, bob, "AARON")
    assert await kind.list(stubs, org) == [bob, *alices, carl, emile]
    assert await kind.list(stubs, org, query="aaron") == [bob]
    assert await kind.list(stubs, org, query="bob") == []
    assert await kind.list(stubs, org, query="b") == []
    await kind.rename(stubs, org, emile, "ÄÄ")  # folds to "ää", still after ASCII
    assert await kind.list(stubs, org, query="ää") == [emile]
    await kind.rename(stubs, org, emile, "Able")
    assert await kind.list(stubs, org) == [bob, emile, *alices, carl]


@kinds
async def test_name_order_pages_with_ties_broken_by_id(kind: Kind, stubs: Stubs, org: str) -> None:
    created = await asyncio.gather(
        *(kind.create(stubs, org, n) for n in ("bob", "ALICE", "alice", "Alice", "Émile", "carl"))
    )
    bob, alice1, alice2, alice3, emile, carl = created
    expected = [*sorted([alice1, alice2, alice3]), bob, carl, emile]
    # Page by page too (the tie is broken by id in the keyset).
    walked: list[str] = []
    token = ""
    while True:
        if kind.name == "providers":
            page: Any = await stubs.providers.ListProviders(
                providers_pb2.ListProvidersRequest(
                    organization_id=org, page_size=2, page_token=token
                )
            )
        else:
            page = await stubs.catalog.ListServices(
                catalog_pb2.ListServicesRequest(organization_id=org, page_size=2, page_token=token)
            )
        walked += [item.id for item in getattr(page, kind.name)]
        token = page.next_page_token
        if not token:
            break
    assert walked == expected


# -- ListAppointments -----------------------------------------------------------------


async def list_appointments(stubs: Stubs, org: str, **fields: Any) -> list[str]:
    response = await stubs.appointments.ListAppointments(
        appointments_pb2.ListAppointmentsRequest(organization_id=org, page_size=1000, **fields)
    )
    assert not response.next_page_token
    return [a.id for a in response.appointments]


@dataclass(frozen=True)
class Tenant:
    org: str
    providers: list[str]
    clients: list[str]
    services: list[str]


async def tenant(stubs: Stubs, org: str, n: int = 3, zones: Sequence[str] = ()) -> Tenant:
    zones = list(zones) or ["Europe/Berlin"] * n
    providers = await asyncio.gather(
        *(create_provider(stubs, org, f"P{i}", time_zone=zones[i]) for i in range(n))
    )
    clients = await asyncio.gather(*(create_client(stubs, org, f"C{i}") for i in range(n)))
    services = await asyncio.gather(*(create_service(stubs, org, f"S{i}") for i in range(n)))
    return Tenant(org, list(providers), list(clients), list(services))


def hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


async def test_appointment_filters(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    t = await tenant(stubs, org)
    p, c, s = t.providers, t.clients, t.services
    rows = [
        Appt(p[0], c[0], s[0], hours(0), hours(1)),  # 0
        Appt(p[0], c[1], s[1], hours(2), hours(3), "pending"),  # 1
        Appt(p[1], c[0], s[1], hours(1), hours(2), "cancelled"),  # 2
        Appt(p[1], c[2], s[2], hours(3), hours(4), "completed"),  # 3
        Appt(p[2], c[1], s[0], hours(0.5), hours(1.5), "no_show"),  # 4
        Appt(p[2], c[2], s[2], hours(4), hours(5)),  # 5
    ]
    ids = await insert_appointments(db, org, rows)
    by_start = [ids[i] for i in (0, 4, 2, 1, 3, 5)]
    assert await list_appointments(stubs, org) == by_start
    assert await list_appointments(stubs, org, order_by="start_time desc") == by_start[::-1]
    assert await list_appointments(stubs, org, order_by="start_time") == by_start

    def only(*wanted: int) -> list[str]:
        return [i for i in by_start if ids.index(i) in wanted]

    # Providers: one, several, duplicates, unknown.
    assert await list_appointments(stubs, org, provider_ids=[p[1]]) == only(2, 3)
    assert await list_appointments(stubs, org, provider_ids=[p[0], p[2]]) == only(0, 1, 4, 5)
    assert await list_appointments(stubs, org, provider_ids=[p[2], p[0], p[2]]) == only(0, 1, 4, 5)
    assert await list_appointments(stubs, org, provider_ids=[str(uuid.uuid4())]) == []
    # Client, service, statuses; filters combine.
    assert await list_appointments(stubs, org, client_id=c[0]) == only(0, 2)
    assert await list_appointments(stubs, org, service_id=s[2]) == only(3, 5)
    assert await list_appointments(stubs, org, client_id=str(uuid.uuid4())) == []
    assert await list_appointments(
        stubs, org, statuses=[AStatus.APPOINTMENT_STATUS_CONFIRMED]
    ) == only(0, 5)
    assert await list_appointments(
        stubs,
        org,
        statuses=[AStatus.APPOINTMENT_STATUS_CANCELLED, AStatus.APPOINTMENT_STATUS_NO_SHOW],
    ) == only(2, 4)
    assert await list_appointments(
        stubs, org, client_id=c[1], service_id=s[0], provider_ids=[p[2]]
    ) == only(4)
    assert await list_appointments(
        stubs, org, client_id=c[1], statuses=[AStatus.APPOINTMENT_STATUS_PENDING]
    ) == only(1)

    # The instant range is an OVERLAP of [start, end): straddling a bound is
    # in, touching one is out.
    window = {"start_time": ts(hours(1)), "end_time": ts(hours(3))}
    # 0 ends at 1 (touches), 4 straddles 1, 2 inside, 1 inside, 3 starts at 3 (touches).
    assert await list_appointments(stubs, org, **window) == only(4, 2, 1)
    straddle = {"start_time": ts(hours(2.5)), "end_time": ts(hours(3.5))}
    assert await list_appointments(stubs, org, **straddle) == only(1, 3)
    assert await list_appointments(stubs, org, start_time=ts(hours(3))) == only(3, 5)
    assert await list_appointments(stubs, org, end_time=ts(hours(1))) == only(0, 4)
    assert await list_appointments(stubs, org, end_time=ts(hours(0))) == []


async def test_appointment_filter_validation(stubs: Stubs, org: str) -> None:
    def call(**fields: Any) -> Any:
        return stubs.appointments.ListAppointments(
            appointments_pb2.ListAppointmentsRequest(organization_id=org, **fields)
        )

    await expect_invalid(call(start_time=ts(hours(2)), end_time=ts(hours(1))), "end_time")
    await expect_invalid(call(start_time=ts(hours(2)), end_time=ts(hours(2))), "end_time")
    await expect_invalid(
        call(start_date=day(date(2026, 3, 9)), end_date=day(date(2026, 3, 8))), "end_date"
    )
    await expect_invalid(call(start_date=date_pb2.Date(year=2026, month=2, day=30)), "start_date")
    await expect_invalid(call(statuses=[AStatus.APPOINTMENT_STATUS_UNSPECIFIED]), "statuses[0]")
    await expect_invalid(call(statuses=[AStatus.APPOINTMENT_STATUS_PENDING, 99]), "statuses[1]")
    await expect_invalid(call(provider_ids=[str(uuid.uuid4()), "x"]), "provider_ids[1]")
    await expect_invalid(call(client_id="nope", service_id="1234"), "client_id", "service_id")
    await expect_invalid(call(provider_ids=[str(uuid.uuid4()) for _ in range(101)]), "provider_ids")
    await expect_invalid(call(view=9), "view")
    await expect_invalid(call(order_by="end_time"), "order_by")
    # 100 ids (duplicates included) are fine.
    ok = await call(provider_ids=[org] * 50 + [str(uuid.uuid4()) for _ in range(50)])
    assert list(ok.appointments) == []


def local(zone: str, y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(zone)).astimezone(UTC)


async def test_business_dates_are_in_each_providers_own_zone(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    ny, kiri, pago = "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago"
    t = await tenant(stubs, org, 3, [ny, kiri, pago])
    (p_ny, p_kiri, p_pago), client, service = t.providers, t.clients[0], t.services[0]

    def appt(provider: str, start: datetime) -> Appt:
        return Appt(provider, client, service, start, start + timedelta(minutes=1))

    cases = {
        # 2026-03-08 is 23 hours long in New York (02:00 EST -> 03:00 EDT).
        "mar7_late": appt(p_ny, local(ny, 2026, 3, 7, 23, 59)),
        "mar8_first": appt(p_ny, local(ny, 2026, 3, 8, 0, 0)),
        "mar8_last": appt(p_ny, local(ny, 2026, 3, 8, 23, 30)),
        "mar9_first": appt(p_ny, local(ny, 2026, 3, 9, 0, 0)),
        # 2026-11-01 is 25 hours long (02:00 EDT -> 01:00 EST).
        "nov1_first": appt(p_ny, local(ny, 2026, 11, 1, 0, 0)),
        "nov1_last": appt(p_ny, local(ny, 2026, 11, 1, 23, 30)),
        "nov2_first": appt(p_ny, local(ny, 2026, 11, 2, 0, 0)),
        # The same date 25 hours apart: UTC+14 and UTC-11.
        "kiri_before": appt(p_kiri, local(kiri, 2026, 6, 14, 23, 30)),
        "kiri_first": appt(p_kiri, local(kiri, 2026, 6, 15, 0, 0)),
        "kiri_last": appt(p_kiri, local(kiri, 2026, 6, 15, 23, 30)),
        "pago_first": appt(p_pago, local(pago, 2026, 6, 15, 0, 0)),
        "pago_last": appt(p_pago, local(pago, 2026, 6, 15, 23, 30)),
        "pago_after": appt(p_pago, local(pago, 2026, 6, 16, 0, 0)),
    }
    ids = dict(zip(cases, await insert_appointments(db, org, list(cases.values())), strict=True))
    assert cases["mar8_last"].start - cases["mar8_first"].start == timedelta(hours=22, minutes=30)
    assert cases["nov1_last"].start - cases["nov1_first"].start == timedelta(hours=24, minutes=30)

    async def on(first: date | None, last: date | None, **fields: Any) -> set[str]:
        if first is not None:
            fields["start_date"] = day(first)
        if last is not None:
            fields["end_date"] = day(last)
        found = await list_appointments(stubs, org, **fields)
        return {name for name, i in ids.items() if i in found}

    mar8, nov1, jun15 = date(2026, 3, 8), date(2026, 11, 1), date(2026, 6, 15)
    assert await on(mar8, mar8) == {"mar8_first", "mar8_last"}
    assert await on(nov1, nov1) == {"nov1_first", "nov1_last"}
    assert await on(jun15, jun15) == {"kiri_first", "kiri_last", "pago_first", "pago_last"}
    assert await on(jun15, jun15, provider_ids=[p_kiri]) == {"kiri_first", "kiri_last"}
    assert await on(date(2026, 3, 7), mar8) == {"mar7_late", "mar8_first", "mar8_last"}
    assert await on(date(2026, 6, 14), jun15) == {
        "kiri_before",
        "kiri_first",
        "kiri_last",
        "pago_first",
        "pago_last",
    }
    # One bound.
    assert await on(date(2026, 11, 2), None) == {"nov2_first"}
    assert await on(None, date(2026, 3, 7)) == {"mar7_late"}
    assert await on(date(2026, 6, 16), date(2026, 10, 31)) == {"pago_after"}
    # With an instant range too (both apply).
    assert await on(jun15, jun15, end_time=ts(local(pago, 2026, 6, 15, 1))) == {
        "kiri_first",
        "kiri_last",
        "pago_first",
    }


# -- ListPayments ---------------------------------------------------------------------


async def list_payments(stubs: Stubs, org: str, **fields: Any) -> list[str]:
    response = await stubs.payments.ListPayments(
        payments_pb2.ListPaymentsRequest(organization_id=org, page_size=1000, **fields)
    )
    assert not response.next_page_token
    return [p.id for p in response.payments]


async def test_payment_filters(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    t = await tenant(stubs, org, 2)
    c0, c1 = t.clients
    (a0,) = await insert_appointments(
        db, org, [Appt(t.providers[0], c0, t.services[0], hours(0), hours(1))]
    )
    rows = [
        Pay(c0, hours(1), a0, 1000, "EUR", "completed", "card"),  # 0
        Pay(c0, hours(2), None, 2500, "EUR", "pending", "cash"),  # 1
        Pay(c1, hours(3), None, 2500, "USD", "refunded", "bank_transfer"),  # 2
        Pay(c1, hours(4), None, 0, "EUR", "failed", "other"),  # 3
        Pay(c0, hours(5), a0, 4000, "EUR", "completed", "cash"),  # 4
    ]
    ids = await insert_payments(db, org, rows)

    def only(*wanted: int) -> list[str]:  # newest first
        return [ids[i] for i in sorted(wanted, reverse=True)]

    assert await list_payments(stubs, org) == only(0, 1, 2, 3, 4)
    assert await list_payments(stubs, org, order_by="create_time desc") == only(0, 1, 2, 3, 4)
    assert await list_payments(stubs, org, order_by="create_time") == only(0, 1, 2, 3, 4)[::-1]
    assert await list_payments(stubs, org, client_id=c1) == only(2, 3)
    assert await list_payments(stubs, org, appointment_id=a0) == only(0, 4)
    assert await list_payments(stubs, org, appointment_id=str(uuid.uuid4())) == []
    assert await list_payments(stubs, org, statuses=[PStatus.PAYMENT_STATUS_COMPLETED]) == only(
        0, 4
    )
    assert await list_payments(
        stubs, org, statuses=[PStatus.PAYMENT_STATUS_PENDING, PStatus.PAYMENT_STATUS_FAILED]
    ) == only(1, 3)
    assert await list_payments(stubs, org, methods=[Method.PAYMENT_METHOD_CASH]) == only(1, 4)
    assert await list_payments(
        stubs, org, methods=[Method.PAYMENT_METHOD_BANK_TRANSFER, Method.PAYMENT_METHOD_OTHER]
    ) == only(2, 3)
    assert await list_payments(
        stubs,
        org,
        client_id=c0,
        methods=[Method.PAYMENT_METHOD_CASH],
        statuses=[PStatus.PAYMENT_STATUS_COMPLETED],
    ) == only(4)
    # Created at or after / strictly before.
    assert await list_payments(stubs, org, created_after=ts(hours(4))) == only(3, 4)
    assert await list_payments(stubs, org, created_before=ts(hours(2))) == only(0)
    assert await list_payments(
        stubs, org, created_after=ts(hours(2)), created_before=ts(hours(4))
    ) == only(1, 2)
    # Currency and inclusive amount bounds.
    assert await list_payments(stubs, org, currency_code="USD") == only(2)
    assert await list_payments(stubs, org, currency_code="EUR") == only(0, 1, 3, 4)
    eur = {"currency_code": "EUR"}
    assert await list_payments(stubs, org, min_amount_minor=2500, **eur) == only(1, 4)
    assert await list_payments(stubs, org, max_amount_minor=1000, **eur) == only(0, 3)
    assert await list_payments(
        stubs, org, min_amount_minor=1000, max_amount_minor=2500, **eur
    ) == only(0, 1)
    assert await list_payments(
        stubs, org, min_amount_minor=2500, max_amount_minor=2500, **eur
    ) == only(1)
    assert await list_payments(stubs, org, min_amount_minor=0, **eur) == only(0, 1, 3, 4)


async def test_payment_filter_validation(stubs: Stubs, org: str) -> None:
    def call(**fields: Any) -> Any:
        return stubs.payments.ListPayments(
            payments_pb2.ListPaymentsRequest(organization_id=org, **fields)
        )

    await expect_invalid(call(min_amount_minor=1), "currency_code")
    await expect_invalid(call(max_amount_minor=0), "currency_code")
    await expect_invalid(call(currency_code="EUR", min_amount_minor=-1), "min_amount_minor")
    await expect_invalid(call(currency_code="EUR", max_amount_minor=-5), "max_amount_minor")
    await expect_invalid(
        call(currency_code="EUR", min_amount_minor=10, max_amount_minor=9), "max_amount_minor"
    )
    await expect_invalid(call(currency_code="eur"), "currency_code")
    await expect_invalid(call(statuses=[PStatus.PAYMENT_STATUS_UNSPECIFIED]), "statuses[0]")
    await expect_invalid(call(methods=[Method.PAYMENT_METHOD_CARD, 42]), "methods[1]")
    await expect_invalid(call(client_id="x", appointment_id="y"), "client_id", "appointment_id")
    await expect_invalid(call(order_by="amount"), "order_by")
    await expect_invalid(call(view=3), "view")


# -- ListClientHistory ----------------------------------------------------------------


async def test_client_history(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    t = await tenant(stubs, org, 2)
    me, other = t.clients
    p, s = t.providers, t.services[0]
    appts = await insert_appointments(
        db,
        org,
        [
            Appt(p[0], me, s, hours(0), hours(1)),  # 0
            Appt(p[0], me, s, hours(5), hours(6), "cancelled"),  # 1
            Appt(p[1], me, s, hours(3), hours(4)),  # 2: a payment at the same instant
            Appt(p[1], other, s, hours(1), hours(2)),  # 3: another client's
        ],
    )
    pays = await insert_payments(
        db,
        org,
        [
            Pay(me, hours(1), appts[0]),  # 0
            Pay(me, hours(3)),  # 1: at appointment 2's start
            Pay(me, hours(3), None, 1234),  # 2: the same instant again
            Pay(other, hours(2)),  # 3: another client's
            Pay(me, hours(7), appts[1], status="refunded"),  # 4
        ],
    )
    tied = sorted([pays[1], pays[2]], reverse=True)  # by id, descending
    expected = [pays[4], appts[1], *tied, appts[2], pays[0], appts[0]]
    times = [hours(7), hours(5), hours(3), hours(3), hours(3), hours(1), hours(0)]

    def request(**fields: Any) -> clients_pb2.ListClientHistoryRequest:
        return clients_pb2.ListClientHistoryRequest(organization_id=org, client_id=me, **fields)

    response = await stubs.clients.ListClientHistory(request(page_size=100))
    entries = list(response.entries)
    assert [e.appointment.id or e.payment.id for e in entries] == expected
    assert [e.time.ToDatetime(tzinfo=UTC) for e in entries] == times
    assert [e.WhichOneof("entry") for e in entries] == [
        "payment",
        "appointment",
        "payment",
        "payment",
        "appointment",
        "payment",
        "appointment",
    ]
    # Page by page: the same timeline.
    walked: list[str] = []
    token = ""
    while True:
        page = await stubs.clients.ListClientHistory(request(page_size=2, page_token=token))
        walked += [e.appointment.id or e.payment.id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert walked == expected
    # The full messages, as GetAppointment and ListPayments encode them.
    listed = await stubs.payments.ListPayments(
        payments_pb2.ListPaymentsRequest(organization_id=org, client_id=me)
    )
    payments = {pay.id: pay for pay in listed.payments}
    for entry in entries:
        if entry.WhichOneof("entry") == "payment":
            assert entry.payment == payments[entry.payment.id]
        else:
            got = await stubs.appointments.GetAppointment(
                appointments_pb2.GetAppointmentRequest(
                    organization_id=org, appointment_id=entry.appointment.id
                )
            )
            assert entry.appointment == got.appointment
    # Another client's history holds only theirs; an unknown client's is empty.
    theirs = await stubs.clients.ListClientHistory(
        clients_pb2.ListClientHistoryRequest(organization_id=org, client_id=other)
    )
    assert [e.appointment.id or e.payment.id for e in theirs.entries] == [pays[3], appts[3]]
    nobody = await stubs.clients.ListClientHistory(
        clients_pb2.ListClientHistoryRequest(organization_id=org, client_id=str(uuid.uuid4()))
    )
    assert list(nobody.entries) == []
    await expect_invalid(
        stubs.clients.ListClientHistory(clients_pb2.ListClientHistoryRequest(organization_id=org)),
        "client_id",
    )


# -- VIEW_FULL ------------------------------------------------------------------------


async def test_list_appointments_full_view(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    t = await tenant(stubs, org, 4)
    p, c, s = t.providers, t.clients, t.services
    appts = await insert_appointments(
        db,
        org,
        [
            Appt(p[0], c[0], s[0], hours(0), hours(1)),  # page 1
            Appt(p[1], c[1], s[0], hours(1), hours(2)),  # page 1
            Appt(p[0], c[0], s[1], hours(2), hours(3)),  # page 1
            Appt(p[2], c[2], s[2], hours(3), hours(4)),  # page 2
            Appt(p[3], c[3], s[3], hours(4), hours(5)),  # page 2
        ],
    )
    pays = await insert_payments(
        db,
        org,
        [
            Pay(c[0], hours(9), appts[2]),  # 0
            Pay(c[1], hours(8), appts[1]),  # 1
            Pay(c[1], hours(7), appts[1]),  # 2: before 1
            Pay(c[0], hours(6), appts[0]),  # 3
            Pay(c[0], hours(5)),  # 4: no appointment
            Pay(c[2], hours(5), appts[3]),  # 5: page 2's
        ],
    )

    def request(**fields: Any) -> appointments_pb2.ListAppointmentsRequest:
        return appointments_pb2.ListAppointmentsRequest(organization_id=org, page_size=3, **fields)

    first = await stubs.appointments.ListAppointments(request(view=FULL))
    assert [a.id for a in first.appointments] == appts[:3]
    assert set(first.clients) == {c[0], c[1]}
    assert set(first.services) == {s[0], s[1]}
    assert set(first.providers) == {p[0], p[1]}
    # Every payment of the page's appointments: appointment order, then create time.
    assert [x.id for x in first.payments] == [pays[3], pays[2], pays[1], pays[0]]
    for key, value in first.clients.items():
        got = await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=key)
        )
        assert value == got.client
    for key, service in first.services.items():
        svc = await stubs.catalog.GetService(
            catalog_pb2.GetServiceRequest(organization_id=org, service_id=key)
        )
        assert service == svc.service
    for key, provider in first.providers.items():
        prov = await stubs.providers.GetProvider(
            providers_pb2.GetProviderRequest(organization_id=org, provider_id=key)
        )
        assert provider == prov.provider
    listed = await stubs.payments.ListPayments(
        payments_pb2.ListPaymentsRequest(organization_id=org)
    )
    as_listed = {x.id: x for x in listed.payments}
    assert all(x == as_listed[x.id] for x in first.payments)

    second = await stubs.appointments.ListAppointments(
        request(view=FULL, page_token=first.next_page_token)
    )
    assert [a.id for a in second.appointments] == appts[3:]
    assert (set(second.clients), set(second.services), set(second.providers)) == (
        {c[2], c[3]},
        {s[2], s[3]},
        {p[2], p[3]},
    )
    assert [x.id for x in second.payments] == [pays[5]]
    # The view may change between pages; BASIC and UNSPECIFIED carry no related rows.
    for view in (common_pb2.VIEW_BASIC, common_pb2.VIEW_UNSPECIFIED):
        basic = await stubs.appointments.ListAppointments(request(view=view))
        assert [a.id for a in basic.appointments] == appts[:3]
        assert not (basic.clients or basic.services or basic.providers or basic.payments)
    empty = await stubs.appointments.ListAppointments(
        request(view=FULL, client_id=str(uuid.uuid4()))
    )
    assert not (empty.appointments or empty.clients or empty.payments)


async def test_list_payments_full_view(stubs: Stubs, org: str, db: asyncpg.Connection) -> None:
    t = await tenant(stubs, org, 3)
    p, c, s = t.providers, t.clients, t.services
    appts = await insert_appointments(
        db,
        org,
        [Appt(p[0], c[0], s[0], hours(0), hours(1)), Appt(p[1], c[1], s[1], hours(0), hours(1))],
    )
    pays = await insert_payments(
        db,
        org,
        [
            Pay(c[0], hours(4), appts[0]),  # 0
            Pay(c[0], hours(3), appts[0]),  # 1
            Pay(c[1], hours(2)),  # 2: no appointment
            Pay(c[2], hours(1), appts[1]),  # 3: page 2 (another client than its appointment's)
        ],
    )

    def request(**fields: Any) -> payments_pb2.ListPaymentsRequest:
        return payments_pb2.ListPaymentsRequest(organization_id=org, page_size=3, **fields)

    first = await stubs.payments.ListPayments(request(view=FULL))
    assert [x.id for x in first.payments] == pays[:3]
    assert set(first.appointments) == {appts[0]}
    assert set(first.clients) == {c[0], c[1]}
    got = await stubs.appointments.GetAppointment(
        appointments_pb2.GetAppointmentRequest(organization_id=org, appointment_id=appts[0])
    )
    assert first.appointments[appts[0]] == got.appointment
    for key, value in first.clients.items():
        client = await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=key)
        )
        assert value == client.client
    second = await stubs.payments.ListPayments(request(view=FULL, page_token=first.next_page_token))
    assert [x.id for x in second.payments] == pays[3:]
    assert (set(second.appointments), set(second.clients)) == ({appts[1]}, {c[2]})
    basic = await stubs.payments.ListPayments(request())
    assert [x.id for x in basic.payments] == pays[:3]
    assert not (basic.appointments or basic.clients)


# -- statements per call --------------------------------------------------------------


def shown(statements: list[str]) -> str:
    return "\n".join(" ".join(sql.split())[:160] for sql in statements)


async def seed_many(stubs: Stubs, org: str, db: asyncpg.Connection, n: int) -> Tenant:
    """n appointments (one payment each, every third a second one) over 25
    providers, 40 clients and 20 services."""
    providers = await asyncio.gather(*(create_provider(stubs, org, f"P{i}") for i in range(25)))
    clients = await asyncio.gather(*(create_client(stubs, org, f"C{i}") for i in range(40)))
    services = await asyncio.gather(*(create_service(stubs, org, f"S{i}") for i in range(20)))
    rows = [
        Appt(
            providers[i % 25], clients[i % 40], services[i % 20], hours(i // 25), hours(i // 25 + 1)
        )
        for i in range(n)
    ]
    appts = await insert_appointments(db, org, rows)
    pays = [Pay(rows[i].client_id, hours(i), a) for i, a in enumerate(appts)]
    pays += [Pay(rows[i].client_id, hours(i + 0.5), appts[i]) for i in range(0, n, 3)]
    await insert_payments(db, org, pays)
    return Tenant(org, list(providers), list(clients), list(services))


async def test_full_view_statements_are_fixed_whatever_the_page_size(
    counted: tuple[Stubs, list[str]],  # noqa: F811  (the imported fixture)
    stubs: Stubs,
    org: str,
    db: asyncpg.Connection,
) -> None:
    # Seeded through the shared server (its concurrent calls would open more
    # connections on the counting one, each with its own first-use statements).
    t = await seed_many(stubs, org, db, 510)
    stubs, statements = counted
    exact = common_pb2.COUNT_MODE_EXACT
    # Warm the connection: its first statements of a kind introspect types once.
    for count_mode in (common_pb2.COUNT_MODE_NONE, exact):
        await stubs.appointments.ListAppointments(
            appointments_pb2.ListAppointmentsRequest(
                organization_id=org, view=FULL, count_mode=count_mode
            )
        )
        await stubs.payments.ListPayments(
            payments_pb2.ListPaymentsRequest(organization_id=org, view=FULL, count_mode=count_mode)
        )
        await stubs.clients.ListClientHistory(
            clients_pb2.ListClientHistoryRequest(
                organization_id=org, client_id=t.clients[0], count_mode=count_mode
            )
        )
    for size in (1, 50, 500):
        for count_mode, extra in ((common_pb2.COUNT_MODE_NONE, 0), (exact, 1)):
            statements.clear()
            response: Any = await stubs.appointments.ListAppointments(
                appointments_pb2.ListAppointmentsRequest(
                    organization_id=org, page_size=size, view=FULL, count_mode=count_mode
                )
            )
            assert len(response.appointments) == size
            assert len(response.payments) >= size
            if size == 500:  # the page spans many related rows
                assert len(response.clients) == 40 and len(response.providers) == 25
                assert len(response.services) == 20
            # The page, clients, services, providers, payments (+ the count).
            assert len(statements) == 5 + extra, shown(statements)

            statements.clear()
            response = await stubs.payments.ListPayments(
                payments_pb2.ListPaymentsRequest(
                    organization_id=org, page_size=size, view=FULL, count_mode=count_mode
                )
            )
            assert len(response.payments) == size
            assert response.appointments and response.clients
            # The page, appointments, clients (+ the count).
            assert len(statements) == 3 + extra, shown(statements)

            statements.clear()
            history = await stubs.clients.ListClientHistory(
                clients_pb2.ListClientHistoryRequest(
                    organization_id=org,
                    client_id=t.clients[0],
                    page_size=size,
                    count_mode=count_mode,
                )
            )
            assert len(history.entries) == min(size, 13 + 13 + 5)
            assert len(statements) == 1 + extra, shown(statements)


async def test_a_repeated_midnight_starts_its_date_at_the_first_one(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Havana falls back from 01:00 CDT to 00:00 CST on 2026-11-01: 00:00-00:59
    happens twice, and the date begins at the first 00:00 (04:00Z), as the day
    sheet's bounds do (scheduling.wall_instant), not at the second (05:00Z)."""
    havana = "America/Havana"
    t = await tenant(stubs, org, 1, [havana])
    first_midnight = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    assert datetime(2026, 11, 1, tzinfo=ZoneInfo(havana)).astimezone(UTC) == first_midnight
    starts = {
        "oct31_last": first_midnight - timedelta(minutes=30),  # 23:30 CDT
        "nov1_first_0030": first_midnight + timedelta(minutes=30),  # 00:30 CDT
        "nov1_second_0030": first_midnight + timedelta(minutes=90),  # 00:30 CST
    }
    ids = dict(
        zip(
            starts,
            await insert_appointments(
                db,
                org,
                [
                    Appt(t.providers[0], t.clients[0], t.services[0], s, s + timedelta(minutes=1))
                    for s in starts.values()
                ],
            ),
            strict=True,
        )
    )

    async def on(d: date) -> set[str]:
        found = await list_appointments(stubs, org, start_date=day(d), end_date=day(d))
        return {name for name, i in ids.items() if i in found}

    assert await on(date(2026, 11, 1)) == {"nov1_first_0030", "nov1_second_0030"}
    assert await on(date(2026, 10, 31)) == {"oct31_last"}


async def test_exclusive_bounds_keep_their_nanoseconds(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Stored instants are microseconds; a bound with nanoseconds is exact: an
    appointment starting at T is in a range ending at T + 500 ns, and start ==
    end to the nanosecond is still an empty (refused) range."""
    t = await tenant(stubs, org, 1, ["UTC"])
    start = datetime(2026, 5, 4, 10, tzinfo=UTC)
    (aid,) = await insert_appointments(
        db,
        org,
        [Appt(t.providers[0], t.clients[0], t.services[0], start, start + timedelta(minutes=30))],
    )
    seconds = int(start.timestamp())
    end = timestamp_pb2.Timestamp(seconds=seconds, nanos=500)
    assert await list_appointments(stubs, org, end_time=end) == [aid]
    assert await list_appointments(
        stubs, org, start_time=timestamp_pb2.Timestamp(seconds=seconds - 60), end_time=end
    ) == [aid]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.appointments.ListAppointments(
            appointments_pb2.ListAppointmentsRequest(
                organization_id=org,
                start_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=600),
                end_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=600),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
