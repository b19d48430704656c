"""booking.v1.SummaryService through a real channel on a real PostgreSQL.

Every figure is made through the write RPCs (bookings with override_rules at
any instant, status changes, payments, refunds), which maintain the rollups,
and the expected figures are written out by hand, fact by fact: business
dates are the local dates of the instants in their providers' zones
(zoneinfo's reading, never the server's arithmetic). Payments and refunds
belong to the local date of their creation (now), read from their returned
create_time. Then bad input, per-entry and cross-tenant NOT_FOUND, and the
statement count of each RPC (one, whatever the range and the providers).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    appointments_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    organizations_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
    summaries_pb2,
    summaries_pb2_grpc,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import code_pb2
from google.type import date_pb2, dayofweek_pb2

from server.handlers.summaries import average_ticket
from server.queries import summaries as summary_queries
from server.queries.summaries import day_instants_sql, minute_instant_sql
from server.scheduling import Calendar, Interval, WeeklyRule, merge, stretches, wall_instant
from server.testing import running_server
from tests.conftest import Stubs, details, new_org, violated_fields
from tests.test_availability import add_hours, add_override, add_time_off
from tests.test_paging_contract import record_statements
from tests.test_provider_schedule import own_statements

pb = summaries_pb2
Summaries: TypeAlias = "summaries_pb2_grpc.SummaryServiceAsyncStub"  # (the stubs' typing only)
Granularity: TypeAlias = summaries_pb2.Granularity.ValueType
Status = resources_pb2.AppointmentStatus
AUCKLAND = ZoneInfo("Pacific/Auckland")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
BERLIN = ZoneInfo("Europe/Berlin")
DAY = pb.GRANULARITY_DAY
WEEK = pb.GRANULARITY_WEEK
MONTH = pb.GRANULARITY_MONTH


@pytest.fixture
def summaries(channel: grpc.aio.Channel) -> Summaries:
    return summaries_pb2_grpc.SummaryServiceStub(channel)


# -- making rows through the RPCs --------------------------------------------------------


def pb_date(on: date) -> date_pb2.Date:
    return date_pb2.Date(year=on.year, month=on.month, day=on.day)


def as_date(d: date_pb2.Date) -> date:
    return date(d.year, d.month, d.day)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def as_dt(t: timestamp_pb2.Timestamp) -> datetime:
    return t.ToDatetime(tzinfo=UTC)


async def make_org(
    stubs: Stubs,
    zone: str = "UTC",
    first_day: dayofweek_pb2.DayOfWeek.ValueType = dayofweek_pb2.DAY_OF_WEEK_UNSPECIFIED,
) -> resources_pb2.Organization:
    response = await stubs.orgs.CreateOrganization(
        organizations_pb2.CreateOrganizationRequest(
            organization=resources_pb2.Organization(
                name="Summaries",
                slug=f"s-{uuid.uuid4().hex[:16]}",
                time_zone=zone,
                first_day_of_week=first_day,
            )
        )
    )
    return response.organization


async def make_provider(stubs: Stubs, org: str, zone: str, name: str = "Pat") -> str:
    response = await stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name=name, time_zone=zone),
        )
    )
    return response.provider.id


async def make_service(stubs: Stubs, org: str, minutes: int, price: int, currency: str) -> str:
    response = await stubs.catalog.CreateService(
        catalog_pb2.CreateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(
                name=f"{minutes} min {currency}",
                duration_minutes=minutes,
                price=common_pb2.Money(currency_code=currency, amount_minor=price),
            ),
        )
    )
    return response.service.id


async def offer(stubs: Stubs, org: str, providers: Sequence[str], services: Sequence[str]) -> None:
    for p in providers:
        for s in services:
            await stubs.catalog.SetOffering(
                catalog_pb2.SetOfferingRequest(
                    organization_id=org,
                    offering=resources_pb2.Offering(provider_id=p, service_id=s),
                )
            )


async def make_client(stubs: Stubs, org: str, name: str = "Cli") -> str:
    response = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(given_name=name, family_name="Ent")
        )
    )
    return response.client.id


async def book(
    stubs: Stubs,
    org: str,
    provider: str,
    service: str,
    client: str,
    start: datetime,
    status: str = "pending",
) -> resources_pb2.Appointment:
    """An appointment at ``start`` (rules overridden) brought to ``status``
    through the transitions."""
    created = (
        await stubs.appointments.CreateAppointment(
            appointments_pb2.CreateAppointmentRequest(
                organization_id=org,
                appointment=resources_pb2.Appointment(
                    provider_id=provider,
                    service_id=service,
                    client_id=client,
                    start_time=ts(start),
                    status=Status.APPOINTMENT_STATUS_PENDING
                    if status in ("pending", "cancelled")
                    else Status.APPOINTMENT_STATUS_CONFIRMED,
                ),
                override_rules=True,
            )
        )
    ).appointment
    a, key = appointments_pb2, {"organization_id": org, "appointment_id": created.id}
    if status == "cancelled":
        return (
            await stubs.appointments.CancelAppointment(a.CancelAppointmentRequest(**key))
        ).appointment
    if status == "completed":
        return (
            await stubs.appointments.CompleteAppointment(a.CompleteAppointmentRequest(**key))
        ).appointment
    if status == "no_show":
        return (
            await stubs.appointments.MarkAppointmentNoShow(a.MarkAppointmentNoShowRequest(**key))
        ).appointment
    return created


async def pay(
    stubs: Stubs,
    org: str,
    client: str,
    amount: int,
    currency: str,
    appointment: str = "",
    **kw: Any,
) -> resources_pb2.Payment:
    response = await stubs.payments.RecordPayment(
        payments_pb2.RecordPaymentRequest(
            organization_id=org,
            payment=resources_pb2.Payment(
                client_id=client,
                appointment_id=appointment,
                amount=common_pb2.Money(currency_code=currency, amount_minor=amount),
                method=resources_pb2.PAYMENT_METHOD_CARD,
                **kw,
            ),
        )
    )
    return response.payment


async def refund(
    stubs: Stubs, org: str, payment: str, amount: int
) -> payments_pb2.RefundPaymentResponse:
    return await stubs.payments.RefundPayment(
        payments_pb2.RefundPaymentRequest(
            organization_id=org, payment_id=payment, amount_minor=amount
        )
    )


def local_date(instant: datetime | timestamp_pb2.Timestamp, zone: ZoneInfo) -> date:
    if isinstance(instant, timestamp_pb2.Timestamp):
        instant = as_dt(instant)
    return instant.astimezone(zone).date()


# -- expected figures, by the proto's definitions ------------------------------------------

STATUSES = ("pending", "confirmed", "completed", "cancelled", "no_show")


def counts(**by_status: int) -> pb.AppointmentCounts:
    n = {s: by_status.get(s, 0) for s in STATUSES}
    return pb.AppointmentCounts(
        **n, total=sum(n.values()), booked=n["pending"] + n["confirmed"] + n["completed"]
    )


def figures(
    expected: int = 0,
    completed_minor: int = 0,
    paid: int = 0,
    refunded: int = 0,
    payments: int = 0,
    refunds: int = 0,
    **by_status: int,
) -> pb.RevenueFigures:
    return pb.RevenueFigures(
        expected_minor=expected,
        completed_minor=completed_minor,
        paid_minor=paid,
        refunded_minor=refunded,
        net_paid_minor=paid - refunded,
        appointments=counts(**by_status),
        payments=payments,
        refunds=refunds,
    )


class Facts:
    """Expected figures by (key, currency), added fact by fact."""

    def __init__(self) -> None:
        self.by: dict[tuple[Any, str], Counter[str]] = defaultdict(Counter)

    def appointment(self, key: Any, currency: str, price: int, status: str) -> None:
        f = self.by[(key, currency)]
        f[status] += 1
        if status in ("pending", "confirmed", "completed"):
            f["expected"] += price
        if status == "completed":
            f["completed_minor"] += price

    def payment(self, key: Any, currency: str, amount: int) -> None:
        self.by[(key, currency)]["paid"] += amount
        self.by[(key, currency)]["payments"] += 1

    def refund(self, key: Any, currency: str, amount: int) -> None:
        self.by[(key, currency)]["refunded"] += amount
        self.by[(key, currency)]["refunds"] += 1

    def figures(self, key: Any, currency: str) -> pb.RevenueFigures:
        return figures(**self.by.get((key, currency), Counter()))


def series(
    response: pb.GetRevenueSummaryResponse,
) -> dict[str, list[tuple[date, date, pb.RevenueFigures]]]:
    return {
        c.currency_code: [
            (as_date(b.start_date), as_date(b.end_date), b.figures) for b in c.buckets
        ]
        for c in response.currencies
    }


def span(first: date, last: date) -> dict[str, date_pb2.Date]:
    """A request's start_date and end_date."""
    return {"start_date": pb_date(first), "end_date": pb_date(last)}


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


async def expect_invalid(call: Any, *fields: str, reason: str | None = None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        err.value.code(),
        err.value.details(),
    )
    assert violated_fields(err.value) == set(fields), details(err.value)
    if reason is not None:
        reasons = {v.reason for v in details(err.value)["BadRequest"].field_violations}
        assert reasons == {reason}, reasons


async def expect_not_found(call: Any, reason: str, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
    info = details(err.value)
    assert info["ErrorInfo"].reason == reason
    assert info["ResourceInfo"].resource_name == name


# -- a world in two zones and two currencies ----------------------------------------------


@dataclass
class World:
    """An organization (zone UTC) with a provider in Auckland and one in Los
    Angeles, a EUR service and a USD one, three clients, appointments of
    today in each provider's zone (09:00 in Auckland is the previous UTC
    date, 20:00 in Los Angeles the next one), payments and a refund."""

    org: str
    nz: str
    la: str
    eur: str
    usd: str
    clients: list[str]
    # (provider, date) and (service, date) facts; date facts of the whole org.
    by_provider: Facts = field(default_factory=Facts)
    by_service: Facts = field(default_factory=Facts)
    by_date: Facts = field(default_factory=Facts)
    dates: set[date] = field(default_factory=set)
    appointments: list[resources_pb2.Appointment] = field(default_factory=list)

    def range(self) -> tuple[date, date]:
        return min(self.dates) - timedelta(days=1), max(self.dates) + timedelta(days=1)


ZONES = {"nz": AUCKLAND, "la": LOS_ANGELES}
PRICES = {"eur": (2500, "EUR", 30), "usd": (4000, "USD", 60)}


async def make_world(stubs: Stubs) -> World:
    org = (await make_org(stubs)).id
    nz = await make_provider(stubs, org, "Pacific/Auckland", "Nia")
    la = await make_provider(stubs, org, "America/Los_Angeles", "Lou")
    eur = await make_service(stubs, org, 30, 2500, "EUR")
    usd = await make_service(stubs, org, 60, 4000, "USD")
    await offer(stubs, org, [nz, la], [eur, usd])
    clients = [await make_client(stubs, org, f"c{i}") for i in range(3)]
    w = World(org, nz, la, eur, usd, clients)
    now = datetime.now(UTC)
    providers = {"nz": nz, "la": la}
    services = {"eur": eur, "usd": usd}

    async def appointment(where: str, hour: int, what: str, client: int, status: str) -> str:
        zone = ZONES[where]
        today = now.astimezone(zone).date()
        start = datetime(today.year, today.month, today.day, hour, tzinfo=zone)
        a = await book(stubs, org, providers[where], services[what], clients[client], start, status)
        w.appointments.append(a)
        on = local_date(a.start_time, zone)
        assert on != as_dt(a.start_time).date(), "the business date is not the UTC date"
        price, currency, _ = PRICES[what]
        w.by_provider.appointment((providers[where], on), currency, price, status)
        w.by_service.appointment((services[what], on), currency, price, status)
        w.by_date.appointment(on, currency, price, status)
        w.dates.add(on)
        return a.id

    a1 = await appointment("nz", 9, "eur", 0, "completed")
    await appointment("nz", 10, "usd", 1, "pending")
    a3 = await appointment("la", 20, "eur", 0, "completed")
    await appointment("la", 21, "eur", 1, "cancelled")
    a5 = await appointment("la", 18, "usd", 1, "no_show")
    await appointment("la", 16, "usd", 2, "confirmed")

    async def payment(where: str, what: str, appointment_id: str, client: int, amount: int) -> str:
        p = await pay(stubs, org, clients[client], amount, PRICES[what][1], appointment_id)
        on = local_date(p.create_time, ZONES[where])
        currency = PRICES[what][1]
        w.by_provider.payment((providers[where], on), currency, amount)
        w.by_service.payment((services[what], on), currency, amount)
        w.by_date.payment(on, currency, amount)
        w.dates.add(on)
        return p.id

    p1 = await payment("nz", "eur", a1, 0, 2500)
    await payment("la", "eur", a3, 0, 2000)
    # A pending payment counts nothing; a payment without appointment only in
    # the client's balance.
    await pay(stubs, org, clients[1], 4000, "USD", a5, status=resources_pb2.PAYMENT_STATUS_PENDING)
    await pay(stubs, org, clients[1], 1000, "USD")
    given = await refund(stubs, org, p1, 500)
    on = local_date(given.refund.create_time, AUCKLAND)
    w.by_provider.refund((nz, on), "EUR", 500)
    w.by_service.refund((eur, on), "EUR", 500)
    w.by_date.refund(on, "EUR", 500)
    w.dates.add(on)
    return w


@pytest_asyncio.fixture(loop_scope="session")
async def world(stubs: Stubs) -> World:
    return await make_world(stubs)


def _expected_days(
    facts: Facts, keys: Sequence[Any], first: date, last: date, currency: str
) -> list[tuple[date, date, pb.RevenueFigures]]:
    """Day buckets of [first, last] in ``currency``, summed over ``keys``
    (a key: a date, or a (provider or service, date) pair builder)."""
    out = []
    for d in days(first, last):
        total = Counter[str]()
        for key in keys:
            total.update(facts.by.get((key(d) if callable(key) else d, currency), Counter()))
        out.append((d, d, figures(**total)))
    return out


async def test_revenue_by_day_in_two_zones_and_two_currencies(
    summaries: Summaries, world: World
) -> None:
    first, last = world.range()
    response = await summaries.GetRevenueSummary(
        pb.GetRevenueSummaryRequest(organization_id=world.org, **span(first, last))
    )
    assert response.granularity == DAY  # UNSPECIFIED is DAY
    assert response.first_day_of_week == dayofweek_pb2.MONDAY
    got = series(response)
    assert list(got) == ["EUR", "USD"]  # by code, never added together
    for currency in ("EUR", "USD"):
        assert got[currency] == _expected_days(world.by_date, [None], first, last, currency)
    # Zeros on the range's first and last dates (nothing there), every date present.
    assert got["EUR"][0][2] == figures() and len(got["EUR"]) == (last - first).days + 1
    eur = next(c for c in response.currencies if c.currency_code == "EUR")
    # Two completed EUR appointments (2,500 each), one cancelled; 4,500 paid,
    # 500 refunded.
    assert eur.totals == figures(
        expected=5000,
        completed_minor=5000,
        paid=4500,
        refunded=500,
        payments=2,
        refunds=1,
        completed=2,
        cancelled=1,
    )
    usd = next(c for c in response.currencies if c.currency_code == "USD")
    assert usd.totals == figures(
        expected=8000, completed_minor=0, pending=1, confirmed=1, no_show=1
    )


async def test_revenue_of_providers_and_of_services(summaries: Summaries, world: World) -> None:
    first, last = world.range()
    request = pb.GetRevenueSummaryRequest(organization_id=world.org, **span(first, last))
    # Los Angeles only (an unknown id and a repeat add nothing).
    request.provider_ids[:] = [world.la, str(uuid.uuid4()), world.la.upper()]
    got = series(await summaries.GetRevenueSummary(request))
    for currency in ("EUR", "USD"):
        by_la = _expected_days(world.by_provider, [lambda d: (world.la, d)], first, last, currency)
        assert got[currency] == by_la
    # Both providers: the whole organization's figures.
    request.provider_ids[:] = [world.nz, world.la]
    both = series(await summaries.GetRevenueSummary(request))
    whole = series(
        await summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(organization_id=world.org, **span(first, last))
        )
    )
    assert both == whole
    # The USD service: its appointments, no payment (the one of its no-show
    # is pending, the other names no appointment).
    del request.provider_ids[:]
    request.service_ids[:] = [world.usd]
    got = series(await summaries.GetRevenueSummary(request))
    assert list(got) == ["USD"]
    assert got["USD"] == _expected_days(
        world.by_service, [lambda d: (world.usd, d)], first, last, "USD"
    )
    # A currency asked for: only its series, zeros included.
    request.currency_code = "JPY"
    got = series(await summaries.GetRevenueSummary(request))
    assert list(got) == ["JPY"]
    assert [b for _s, _e, b in got["JPY"]] == [figures()] * ((last - first).days + 1)
    # Unknown services: nothing.
    request.currency_code = ""
    request.service_ids[:] = [str(uuid.uuid4())]
    assert not (await summaries.GetRevenueSummary(request)).currencies


async def test_client_balances_per_currency_and_visits(summaries: Summaries, world: World) -> None:
    c0, c1, c2 = world.clients
    got = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=world.org, client_id=c0.upper())
    )
    # Two completed EUR appointments (5,000), paid 2,500 + 2,000, 500 refunded.
    assert got.client_id == c0
    assert list(got.balances) == [
        pb.ClientBalance(
            client_id=c0,
            currency_code="EUR",
            charged_minor=5000,
            paid_minor=4500,
            refunded_minor=500,
            balance_minor=1000,
            lifetime_value_minor=4000,
            payments=2,
            refunds=1,
        )
    ]
    visits = sorted(
        as_dt(a.start_time)
        for a in world.appointments
        if a.client_id == c0 and a.status == Status.APPOINTMENT_STATUS_COMPLETED
    )
    assert got.visits == 2
    assert (as_dt(got.first_visit_time), as_dt(got.last_visit_time)) == (visits[0], visits[-1])
    # c1: nothing completed, a cancelled EUR appointment, a pending USD
    # payment and a USD payment of nothing: in credit in USD, no EUR.
    got = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=world.org, client_id=c1)
    )
    assert list(got.balances) == [
        pb.ClientBalance(
            client_id=c1,
            currency_code="USD",
            paid_minor=1000,
            balance_minor=-1000,
            lifetime_value_minor=1000,
            payments=1,
        )
    ]
    assert got.visits == 0
    assert not got.HasField("first_visit_time") and not got.HasField("last_visit_time")
    # c2: a confirmed appointment only: no money, no visit.
    got = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=world.org, client_id=c2)
    )
    assert got == pb.GetClientBalanceResponse(client_id=c2)


async def test_list_client_balances_in_one_currency(
    summaries: Summaries, stubs: Stubs, world: World
) -> None:
    c0, c1, _c2 = world.clients
    # Another client owing 2,500 EUR (a completed appointment, unpaid).
    c3 = await make_client(stubs, world.org, "c3")
    at = datetime(2025, 6, 2, 10, tzinfo=AUCKLAND)
    await book(stubs, world.org, world.nz, world.eur, c3, at, "completed")

    async def listed(**kw: Any) -> list[tuple[str, int, int]]:
        got = await summaries.ListClientBalances(
            pb.ListClientBalancesRequest(organization_id=world.org, **kw)
        )
        return [(b.client_id, b.balance_minor, b.lifetime_value_minor) for b in got.balances]

    assert await listed(currency_code="EUR") == [(c3, 2500, 0), (c0, 1000, 4000)]
    assert await listed(currency_code="EUR", order_by="balance") == [
        (c0, 1000, 4000),
        (c3, 2500, 0),
    ]
    assert await listed(currency_code="EUR", order_by="lifetime_value desc") == [
        (c0, 1000, 4000),
        (c3, 2500, 0),
    ]
    assert await listed(currency_code="EUR", min_balance_minor=1001) == [(c3, 2500, 0)]
    assert await listed(currency_code="EUR", max_balance_minor=1000) == [(c0, 1000, 4000)]
    assert await listed(currency_code="USD", order_by="lifetime_value") == [(c1, -1000, 1000)]
    assert await listed(currency_code="JPY") == []
    request = pb.ListClientBalancesRequest
    await expect_invalid(
        summaries.ListClientBalances(request(organization_id=world.org)),
        "currency_code",
        reason="REQUIRED",
    )
    for bad in ("eur", "EURO", "EUR\n", "€UR"):
        await expect_invalid(
            summaries.ListClientBalances(request(organization_id=world.org, currency_code=bad)),
            "currency_code",
        )
    await expect_invalid(
        summaries.ListClientBalances(
            request(
                organization_id=world.org,
                currency_code="EUR",
                min_balance_minor=5,
                max_balance_minor=4,
                order_by="owed",
            )
        ),
        "max_balance_minor",
        "order_by",
    )


# -- Organization.first_day_of_week ---------------------------------------------------------


async def test_an_organizations_first_day_of_week(stubs: Stubs) -> None:
    """MONDAY when unspecified on create, always returned set, updatable,
    an unknown number refused."""
    org = await make_org(stubs)
    assert org.first_day_of_week == dayofweek_pb2.MONDAY
    got = await stubs.orgs.GetOrganization(
        organizations_pb2.GetOrganizationRequest(organization_id=org.id)
    )
    assert got.organization.first_day_of_week == dayofweek_pb2.MONDAY
    sunday = await make_org(stubs, first_day=dayofweek_pb2.SUNDAY)
    assert sunday.first_day_of_week == dayofweek_pb2.SUNDAY
    updated = await stubs.orgs.UpdateOrganization(
        organizations_pb2.UpdateOrganizationRequest(
            organization=resources_pb2.Organization(
                id=org.id, first_day_of_week=dayofweek_pb2.FRIDAY, etag=org.etag
            )
        )
    )
    assert updated.organization.first_day_of_week == dayofweek_pb2.FRIDAY
    assert updated.organization.name == org.name
    for bad in (8, -1):
        await expect_invalid(
            stubs.orgs.UpdateOrganization(
                organizations_pb2.UpdateOrganizationRequest(
                    organization=resources_pb2.Organization(
                        id=org.id,
                        first_day_of_week=bad,
                    )
                )
            ),
            "organization.first_day_of_week",
            reason="INVALID_ENUM",
        )
        await expect_invalid(
            stubs.orgs.CreateOrganization(
                organizations_pb2.CreateOrganizationRequest(
                    organization=resources_pb2.Organization(
                        name="N",
                        slug=f"s-{uuid.uuid4().hex[:16]}",
                        time_zone="UTC",
                        first_day_of_week=bad,
                    )
                )
            ),
            "organization.first_day_of_week",
            reason="INVALID_ENUM",
        )


# -- buckets: weeks from the organization's first day, months cut to the range ------------


@dataclass
class Berlin:
    org: str
    provider: str
    other: str
    service: str
    client: str


# Appointments (date, hour) in Berlin, completed, 2,500 EUR each; the other
# provider has one on 2025-04-10.
BERLIN_DATES = [
    date(2025, 3, 1),  # Saturday
    date(2025, 3, 2),  # Sunday
    date(2025, 3, 9),  # Sunday
    date(2025, 3, 31),
    date(2025, 4, 1),
    date(2025, 4, 30),
    date(2025, 5, 15),
]


async def make_berlin(stubs: Stubs, first_day: int) -> Berlin:
    org = (await make_org(stubs, "Europe/Berlin", first_day)).id
    provider = await make_provider(stubs, org, "Europe/Berlin")
    other = await make_provider(stubs, org, "Europe/Berlin", "Other")
    service = await make_service(stubs, org, 30, 2500, "EUR")
    await offer(stubs, org, [provider, other], [service])
    client = await make_client(stubs, org)
    for on in BERLIN_DATES:
        # 00:30 local: the previous UTC date.
        start = datetime(on.year, on.month, on.day, 0, 30, tzinfo=BERLIN)
        await book(stubs, org, provider, service, client, start, "completed")
    await book(
        stubs, org, other, service, client, datetime(2025, 4, 10, 12, tzinfo=BERLIN), "completed"
    )
    return Berlin(org, provider, other, service, client)


def done(n: int) -> pb.RevenueFigures:
    """n completed 2,500 EUR appointments."""
    return figures(expected=2500 * n, completed_minor=2500 * n, completed=n)


async def revenue(
    summaries: Summaries,
    org: str,
    first: date,
    last: date,
    granularity: int,
    **kw: Any,
) -> pb.GetRevenueSummaryResponse:
    return await summaries.GetRevenueSummary(
        pb.GetRevenueSummaryRequest(
            organization_id=org,
            **span(first, last),
            granularity=granularity,  # type: ignore[arg-type]
            **kw,
        )
    )


async def test_week_buckets_start_on_the_organizations_first_day(
    summaries: Summaries, stubs: Stubs
) -> None:
    b = await make_berlin(stubs, dayofweek_pb2.SUNDAY)
    first, last = date(2025, 3, 1), date(2025, 3, 20)
    got = await revenue(summaries, b.org, first, last, WEEK)
    assert (got.granularity, got.first_day_of_week) == (WEEK, dayofweek_pb2.SUNDAY)
    assert series(got) == {
        "EUR": [
            (date(2025, 3, 1), date(2025, 3, 1), done(1)),  # the week of Sun 23 Feb, cut
            (date(2025, 3, 2), date(2025, 3, 8), done(1)),
            (date(2025, 3, 9), date(2025, 3, 15), done(1)),
            (date(2025, 3, 16), date(2025, 3, 20), done(0)),  # cut, and zeros
        ]
    }
    # The same weeks of the provider.
    mine = await revenue(summaries, b.org, first, last, WEEK, provider_ids=[b.provider])
    assert series(mine) == series(got)
    # Back to Monday (an update naming the field with UNSPECIFIED = the default).
    updated = await stubs.orgs.UpdateOrganization(
        organizations_pb2.UpdateOrganizationRequest(
            organization=resources_pb2.Organization(id=b.org),
            update_mask=field_mask_pb2.FieldMask(paths=["first_day_of_week"]),
        )
    )
    assert updated.organization.first_day_of_week == dayofweek_pb2.MONDAY
    got = await revenue(summaries, b.org, first, last, WEEK)
    assert got.first_day_of_week == dayofweek_pb2.MONDAY
    assert series(got)["EUR"] == [
        (date(2025, 3, 1), date(2025, 3, 2), done(2)),
        (date(2025, 3, 3), date(2025, 3, 9), done(1)),
        (date(2025, 3, 10), date(2025, 3, 16), done(0)),
        (date(2025, 3, 17), date(2025, 3, 20), done(0)),
    ]
    # Saturday, without a mask (set = updated).
    await stubs.orgs.UpdateOrganization(
        organizations_pb2.UpdateOrganizationRequest(
            organization=resources_pb2.Organization(
                id=b.org, first_day_of_week=dayofweek_pb2.SATURDAY
            )
        )
    )
    got = await revenue(summaries, b.org, first, last, WEEK)
    assert [(s, e) for s, e, _ in series(got)["EUR"]] == [
        (date(2025, 3, 1), date(2025, 3, 7)),
        (date(2025, 3, 8), date(2025, 3, 14)),
        (date(2025, 3, 15), date(2025, 3, 20)),
    ]


async def test_month_buckets_are_cut_to_the_range(summaries: Summaries, stubs: Stubs) -> None:
    b = await make_berlin(stubs, dayofweek_pb2.DAY_OF_WEEK_UNSPECIFIED)
    first, last = date(2025, 3, 2), date(2025, 6, 10)
    expected = [
        (date(2025, 3, 2), date(2025, 3, 31), done(3)),  # not 1 March
        (date(2025, 4, 1), date(2025, 4, 30), done(2)),
        (date(2025, 5, 1), date(2025, 5, 31), done(1)),
        (date(2025, 6, 1), date(2025, 6, 10), done(0)),
    ]
    mine = await revenue(summaries, b.org, first, last, MONTH, provider_ids=[b.provider])
    # April and May from the provider's month rows, March and June from days.
    assert series(mine) == {"EUR": expected}
    whole = await revenue(summaries, b.org, first, last, MONTH)
    # The other provider's April appointment.
    assert series(whole)["EUR"][1] == (date(2025, 4, 1), date(2025, 4, 30), done(3))
    of_service = await revenue(summaries, b.org, first, last, MONTH, service_ids=[b.service])
    assert series(of_service) == series(whole)
    # Whole months only: every figure from month rows.
    got = await revenue(
        summaries,
        b.org,
        date(2025, 3, 1),
        date(2025, 4, 30),
        MONTH,
        provider_ids=[b.provider, b.other],
    )
    assert series(got)["EUR"] == [
        (date(2025, 3, 1), date(2025, 3, 31), done(4)),
        (date(2025, 4, 1), date(2025, 4, 30), done(3)),
    ]
    # One date, as a month and a week.
    for granularity in (MONTH, WEEK, DAY):
        one = await revenue(summaries, b.org, date(2025, 4, 30), date(2025, 4, 30), granularity)
        assert series(one) == {"EUR": [(date(2025, 4, 30), date(2025, 4, 30), done(1))]}
    # 366 days, by day: every date of the range.
    year = await revenue(summaries, b.org, date(2024, 6, 1), date(2025, 6, 1), DAY)
    eur = series(year)["EUR"]
    assert len(eur) == 366 and eur[0][0] == date(2024, 6, 1)
    assert sum(f.completed_minor for _s, _e, f in eur) == 2500 * (len(BERLIN_DATES) + 1)


# -- provider metrics: working time in real minutes ----------------------------------------


async def test_provider_metrics_counts_rates_revenue_clients_and_working_time(
    summaries: Summaries, stubs: Stubs, org: str
) -> None:
    la = "America/Los_Angeles"
    p = await make_provider(stubs, org, la)
    eur = await make_service(stubs, org, 30, 2500, "EUR")
    eur2 = await make_service(stubs, org, 30, 2501, "EUR")
    usd = await make_service(stubs, org, 60, 4000, "USD")
    await offer(stubs, org, [p], [eur, eur2, usd])
    c1, c2, c3 = [await make_client(stubs, org, f"c{i}") for i in range(3)]
    # Weekly hours (ISO weekday, minutes), 9-15 March 2025 (DST begins on Sunday the 9th):
    await add_hours(
        stubs,
        org,
        p,
        [
            (7, 60, 180),  # Sun 01:00-03:00: 02:00-03:00 does not exist: 60
            (1, 540, 1020),  # Mon: the override below instead: 150
            (2, 540, 1020),  # Tue: closed by an override: 0
            (3, 540, 1020),  # Wed 09:00-17:00 less time off: 360
            (4, 540, 1020, None, date(2025, 3, 12)),  # Thu: valid until the 12th: 0
            (5, 1320, 1440),  # Fri 22:00-24:00: 120 (and touches Saturday's)
            (6, 0, 60),  # Sat 00:00-01:00: 60
        ],
    )
    await add_override(stubs, org, p, date(2025, 3, 10), [(540, 600), (660, 750)])
    await add_override(stubs, org, p, date(2025, 3, 11), [])

    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2025, 3, day, hour, minute, tzinfo=LOS_ANGELES)

    await add_time_off(stubs, org, p, at(12, 12), at(12, 13, 30))  # 90 of the hours
    await add_time_off(stubs, org, p, at(12, 8), at(12, 9, 30))  # 30 of them
    await add_time_off(stubs, org, p, at(16, 0), at(16, 5))  # after the range
    # Appointments (rules overridden: any time).
    await book(stubs, org, p, eur, c1, datetime(2025, 3, 1, 10, tzinfo=LOS_ANGELES), "completed")
    await book(stubs, org, p, eur, c1, at(12, 10), "completed")
    await book(stubs, org, p, usd, c2, at(12, 14), "completed")
    await book(stubs, org, p, eur, c1, at(10, 9), "cancelled")
    await book(stubs, org, p, eur, c2, at(13, 10), "no_show")
    await book(stubs, org, p, usd, c1, at(14, 10), "pending")
    await book(stubs, org, p, eur2, c3, at(15, 0, 10), "completed")
    got = await summaries.GetProviderMetrics(
        pb.GetProviderMetricsRequest(
            organization_id=org,
            provider_ids=[p],
            **span(date(2025, 3, 9), date(2025, 3, 15)),
        )
    )
    [m] = got.providers
    assert m.provider_id == p and not m.HasField("error")
    assert m.appointments == counts(pending=1, completed=3, cancelled=1, no_show=1)
    assert m.no_show_rate == pytest.approx(1 / 4)
    assert m.cancellation_rate == pytest.approx(1 / 6)
    assert m.booked_minutes == 30 + 60 + 60 + 30
    assert m.available_minutes == 60 + 150 + 0 + 360 + 0 + 120 + 60
    assert m.utilization == pytest.approx(180 / 750)
    assert list(m.revenue) == [
        pb.ProviderRevenue(
            currency_code="EUR",
            figures=figures(
                expected=5001, completed_minor=5001, completed=2, cancelled=1, no_show=1
            ),
            average_ticket_minor=2501,  # 5001 / 2 = 2500.5, half away from zero
        ),
        pb.ProviderRevenue(
            currency_code="USD",
            figures=figures(expected=8000, completed_minor=4000, completed=1, pending=1),
            average_ticket_minor=4000,
        ),
    ]
    # c1 (first visit on 1 March), c2, c3 (first visits in the range).
    assert (m.unique_clients, m.new_clients, m.returning_clients) == (3, 2, 1)
    # A month and more: the whole of March from the month rows, 1-3 April by day.
    got = await summaries.GetProviderMetrics(
        pb.GetProviderMetricsRequest(
            organization_id=org,
            provider_ids=[p],
            **span(date(2025, 3, 1), date(2025, 4, 3)),
        )
    )
    [m] = got.providers
    assert m.appointments == counts(pending=1, completed=4, cancelled=1, no_show=1)
    assert (m.unique_clients, m.new_clients, m.returning_clients) == (3, 3, 0)


async def test_working_time_on_dst_days_is_real_time(
    summaries: Summaries, stubs: Stubs, org: str
) -> None:
    """Sunday all day: 23 hours when DST begins, 25 when it ends; Sunday
    01:00-03:00: 60 minutes (02:00-03:00 does not exist), then 180 (01:00
    is its first occurrence)."""
    all_day = await make_provider(stubs, org, "America/Los_Angeles")
    early = await make_provider(stubs, org, "America/Los_Angeles")
    await add_hours(stubs, org, all_day, [(7, 0, 1440)])
    await add_hours(stubs, org, early, [(7, 60, 180)])
    service = await make_service(stubs, org, 60, 1000, "USD")
    await offer(stubs, org, [all_day], [service])
    client = await make_client(stubs, org)
    # Six hours booked on the 23-hour day.
    for hour in (0, 1, 3, 4, 5, 6):
        at = datetime(2025, 3, 9, hour, tzinfo=LOS_ANGELES)
        await book(stubs, org, all_day, service, client, at, "confirmed")
    expected = {
        date(2025, 3, 9): (23 * 60, 60),
        date(2025, 11, 2): (25 * 60, 180),
        date(2025, 3, 16): (24 * 60, 120),
    }
    for on, minutes in expected.items():
        got = await summaries.GetProviderMetrics(
            pb.GetProviderMetricsRequest(
                organization_id=org,
                provider_ids=[all_day, early],
                **span(on, on),
            )
        )
        assert tuple(m.available_minutes for m in got.providers) == minutes, on
    got = await summaries.GetProviderMetrics(
        pb.GetProviderMetricsRequest(
            organization_id=org,
            provider_ids=[all_day],
            **span(date(2025, 3, 9), date(2025, 3, 9)),
        )
    )
    assert got.providers[0].booked_minutes == 360
    assert got.providers[0].utilization == pytest.approx(360 / (23 * 60))


# Offset changes of zones: gaps, repeated hours, a 30-minute change, a skipped
# date, negative DST, changes at midnight.
DST_CHANGES = {
    "America/Los_Angeles": (date(2025, 3, 9), date(2025, 11, 2)),
    "Pacific/Auckland": (date(2025, 4, 6), date(2025, 9, 28)),
    "Australia/Lord_Howe": (date(2025, 4, 6), date(2025, 10, 5)),
    "Pacific/Apia": (date(2011, 12, 30),),
    "Europe/Dublin": (date(2025, 3, 30), date(2025, 10, 26)),
    "America/Havana": (date(2025, 3, 9), date(2025, 11, 2)),
    "America/Santiago": (date(2025, 4, 6), date(2025, 9, 7)),
}


async def test_wall_instants_are_read_as_availability_reads_them(db: asyncpg.Connection) -> None:
    """The SQL reading of wall-clock minutes (working time) against
    server.scheduling's (availability's), every 5 minutes of DST change days
    and the days around them: gaps, repeated hours, a 30-minute change, a
    skipped date, negative DST, changes at midnight (Havana falls back from
    01:00 to 00:00: its midnight is repeated; Santiago springs forward at
    midnight)."""
    cases = [
        (zone, on + timedelta(days=shift), minute)
        for zone, dates in DST_CHANGES.items()
        for on in dates
        for shift in (-1, 0, 1)
        for minute in range(0, 1441, 5)
    ]
    sql = (
        f"SELECT {minute_instant_sql('x.d', 'x.m', 'x.z', 'c')} AS at "
        "FROM unnest($1::timestamp[], $2::int[], $3::text[]) WITH ORDINALITY AS x(d, m, z, n) "
        f"CROSS JOIN LATERAL ({day_instants_sql('x.d', 'x.z')}) AS c ORDER BY x.n"
    )
    rows = await db.fetch(
        sql,
        [datetime(on.year, on.month, on.day) for _z, on, _m in cases],
        [m for _z, _on, m in cases],
        [z for z, _on, _m in cases],
    )
    got = [r["at"] for r in rows]
    expected = [wall_instant(ZoneInfo(z), on, m) for z, on, m in cases]
    wrong = [(c, g, e) for c, g, e in zip(cases, got, expected, strict=True) if g != e]
    assert not wrong, wrong[:10]


@dataclass
class Schedule:
    """A provider's working hours as stored (rules, override rows, time off)
    and a range of dates."""

    zone: str
    first: date
    last: date
    rules: list[WeeklyRule] = field(default_factory=list)
    # Override rows of a date: (start, end) minutes, None for a closed row.
    overrides: dict[date, list[tuple[int, int] | None]] = field(default_factory=dict)
    time_off: list[Interval] = field(default_factory=list)

    def available(self) -> timedelta:
        """Working time as availability reads it (server.scheduling's
        stretches), less the time off."""
        calendar = Calendar(
            ZoneInfo(self.zone),
            self.rules,
            {on: [i for i in rows if i is not None] for on, rows in self.overrides.items()},
        )
        work = stretches(calendar, self.first, self.last)
        total = sum((end - start for start, end in work), timedelta())
        for start, end in work:
            for off_start, off_end in merge(self.time_off):
                total -= max(timedelta(), min(end, off_end) - max(start, off_start))
        return total


# Wall-clock minutes around offset changes (01:00-03:00, midnight) and others.
_MINUTES = (0, 30, 60, 90, 120, 150, 180, 210, 1380, 1410, 1440)


def random_schedule(rnd: random.Random, zone: str, around: date) -> Schedule:
    """Rules (some overlapping, touching, across midnight, with validity
    windows), overrides (closed, several and overlapping intervals) and
    overlapping time off (short, to the second, over days, outside the
    hours), for a range over ``around``."""
    first = around - timedelta(days=rnd.randrange(0, 10))
    last = around + timedelta(days=rnd.choice((0, 1, 3, 9, 40, 130)))
    s = Schedule(zone, first, last)

    def minutes() -> tuple[int, int]:
        start = rnd.choice((*_MINUTES[:-1], rnd.randrange(0, 1440)))
        end = rnd.choice((1440, rnd.randrange(start + 1, 1441), min(1440, start + 60)))
        return start, end

    def near() -> date:
        return first + timedelta(days=rnd.randrange(-3, (last - first).days + 4))

    for _ in range(rnd.randrange(1, 9)):
        start, end = minutes()
        valid_from = rnd.choice((None, None, near()))
        valid_to = rnd.choice((None, None, near()))
        if valid_from and valid_to and valid_to < valid_from:
            valid_from, valid_to = valid_to, valid_from
        s.rules.append(WeeklyRule(rnd.randrange(1, 8), start, end, valid_from, valid_to))
    for _ in range(rnd.randrange(0, 4)):
        on = first + timedelta(days=rnd.randrange(0, (last - first).days + 1))
        rows: list[tuple[int, int] | None] = [minutes() for _ in range(rnd.randrange(0, 4))]
        s.overrides[on] = rows or [None]
    zone_info = ZoneInfo(zone)
    for _ in range(rnd.randrange(0, 6)):
        wall = rnd.choice((*_MINUTES, rnd.randrange(0, 1440)))
        begin = wall_instant(zone_info, near(), wall) + timedelta(
            seconds=rnd.randrange(0, 60), microseconds=rnd.choice((0, 250_000))
        )
        length = rnd.choice(
            (timedelta(minutes=rnd.randrange(1, 300)), timedelta(hours=rnd.randrange(20, 100)))
        )
        s.time_off.append((begin, begin + length))
        if rnd.random() < 0.3:  # another overlapping it
            s.time_off.append((begin + length / 2, begin + length * 2))
    return s


async def store_schedule(db: asyncpg.Connection, org: str, provider: str, s: Schedule) -> None:
    """The rows as stored, written directly (whatever the write RPCs would
    refuse or merge: overlapping rules and intervals, a closed row beside
    intervals)."""
    await db.executemany(
        "INSERT INTO working_hours (organization_id, id, provider_id, weekday, start_minute,"
        " end_minute, valid_from, valid_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                org,
                str(uuid.uuid4()),
                provider,
                r.weekday,
                r.start_minute,
                r.end_minute,
                r.valid_from,
                r.valid_to,
            )
            for r in s.rules
        ],
    )
    await db.executemany(
        "INSERT INTO date_overrides (organization_id, id, provider_id, on_date, closed,"
        " start_minute, end_minute) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (org, str(uuid.uuid4()), provider, on, i is None, *(i or (None, None)))
            for on, rows in s.overrides.items()
            for i in rows
        ],
    )
    await db.executemany(
        "INSERT INTO time_off (organization_id, id, provider_id, during)"
        " VALUES ($1, $2, $3, tstzrange($4, $5))",
        [(org, str(uuid.uuid4()), provider, a, b) for a, b in s.time_off],
    )


async def test_working_time_equals_availabilitys_on_random_schedules(
    stubs: Stubs, db: asyncpg.Connection, org: str
) -> None:
    """The working seconds of the metrics' one statement (ordinary dates by
    weekday arithmetic, the others date by date) against server.scheduling's
    stretches less the time off, to the microsecond, on random schedules
    around every offset change of DST_CHANGES (ranges of one date to 131)."""
    rnd = random.Random(20251109)
    cases: list[tuple[str, Schedule]] = []
    for zone, changes in DST_CHANGES.items():
        for around in changes:
            for _ in range(3):
                provider = await make_provider(stubs, org, zone)
                schedule = random_schedule(rnd, zone, around)
                await store_schedule(db, org, provider, schedule)
                cases.append((provider, schedule))
    wrong = []
    for provider, s in cases:
        [row] = await summary_queries.provider_metrics(db, org, [provider], s.first, s.last)
        expected = Decimal(s.available() // timedelta(microseconds=1)) / 1_000_000
        if row["work_seconds"] != expected:
            wrong.append((s.zone, s.first, s.last, row["work_seconds"], expected))
    assert not wrong, wrong
    # The cases hold what they are meant to.
    assert any(len(s.overrides) for _p, s in cases)
    assert any(len(s.time_off) > 1 for _p, s in cases)
    assert any((s.last - s.first).days > 100 for _p, s in cases)


async def test_unknown_and_other_tenants_providers_are_per_entry_not_found(
    summaries: Summaries, stubs: Stubs, world: World
) -> None:
    other_org = await new_org(stubs)
    foreign = await make_provider(stubs, other_org, "UTC")
    unknown = str(uuid.uuid4())
    first, last = world.range()
    got = await summaries.GetProviderMetrics(
        pb.GetProviderMetricsRequest(
            organization_id=world.org,
            provider_ids=[world.nz, unknown, world.nz.upper(), foreign, world.la],
            **span(first, last),
        )
    )
    assert [m.provider_id for m in got.providers] == [world.nz, unknown, foreign, world.la]
    for entry, name in ((got.providers[1], unknown), (got.providers[2], foreign)):
        assert entry.error.code == code_pb2.NOT_FOUND
        assert entry == pb.ProviderMetrics(provider_id=name, error=entry.error)
        assert "PROVIDER_NOT_FOUND" in entry.error.SerializeToString().decode("latin-1")
    nz, la = got.providers[0], got.providers[3]
    assert nz.appointments == counts(completed=1, pending=1)
    assert la.appointments == counts(completed=1, cancelled=1, no_show=1, confirmed=1)
    assert [r.currency_code for r in la.revenue] == ["EUR", "USD"]
    la_eur = la.revenue[0].figures
    assert (la_eur.paid_minor, la_eur.refunded_minor) == (2000, 0)


# -- the dashboard --------------------------------------------------------------------------


async def test_dashboard_periods_today_and_top_providers(
    summaries: Summaries, stubs: Stubs
) -> None:
    org = (await make_org(stubs, "Europe/Berlin", dayofweek_pb2.SUNDAY)).id
    names = ("Bo", "Al", "Cy", "Di")
    providers = [await make_provider(stubs, org, "Europe/Berlin", n) for n in names]
    eur = await make_service(stubs, org, 30, 2500, "EUR")
    eur_big = await make_service(stubs, org, 30, 5000, "EUR")
    usd = await make_service(stubs, org, 30, 9000, "USD")
    await offer(stubs, org, providers, [eur, eur_big, usd])
    clients = [await make_client(stubs, org, f"c{i}") for i in range(4)]
    bo, al, cy, di = providers

    async def at(p: str, s: str, c: int, d: date, hour: int, status: str) -> None:
        start = datetime(d.year, d.month, d.day, hour, tzinfo=BERLIN)
        await book(stubs, org, p, s, clients[c], start, status)

    wed = date(2025, 3, 12)  # a Wednesday; the week from Sunday 9 March
    await at(bo, eur_big, 0, wed, 9, "completed")  # today
    await at(al, eur, 1, wed, 10, "pending")  # today
    await at(cy, eur, 2, wed, 11, "cancelled")  # today
    await at(al, eur_big, 1, date(2025, 3, 10), 9, "completed")
    await at(cy, eur, 2, date(2025, 3, 9), 9, "completed")
    await at(cy, eur, 3, date(2025, 3, 9), 10, "completed")
    await at(di, usd, 3, date(2025, 3, 11), 9, "completed")  # USD: never ranked with EUR
    await at(di, eur, 0, date(2025, 3, 5), 9, "completed")  # last week, in its first 4 days
    await at(di, eur, 0, date(2025, 3, 7), 9, "no_show")  # last week, after its first 4 days
    await at(bo, eur, 3, date(2025, 2, 12), 9, "completed")  # last month, in its first 12 days
    await at(bo, eur, 3, date(2025, 2, 20), 9, "completed")  # last month, later

    async def dashboard(period: int, **kw: Any) -> pb.GetDashboardResponse:
        return await summaries.GetDashboard(
            pb.GetDashboardRequest(
                organization_id=org,
                date=pb_date(wed),
                period=period,  # type: ignore[arg-type]
                **kw,
            )
        )

    week = await dashboard(WEEK)
    assert as_date(week.date) == wed and week.period == WEEK
    assert week.today == counts(completed=1, pending=1, cancelled=1)
    cur = week.current
    assert (as_date(cur.start_date), as_date(cur.end_date)) == (date(2025, 3, 9), wed)
    assert cur.appointments == counts(completed=5, pending=1, cancelled=1)
    assert cur.bookings == 6
    # First visits with the organization: c0 on the 5th, c1 the 10th, c2 the
    # 9th, c3 in February.
    assert cur.new_clients == 2
    assert [(r.currency_code, r.figures) for r in cur.revenue] == [
        (
            "EUR",
            figures(
                expected=5000 + 2500 + 5000 + 2500 * 2,
                completed_minor=5000 + 5000 + 2500 * 2,
                completed=4,
                pending=1,
                cancelled=1,
            ),
        ),
        ("USD", figures(expected=9000, completed_minor=9000, completed=1)),
    ]
    prev = week.previous
    # Like for like: Sunday 2 March and the 3 days after it.
    assert (as_date(prev.start_date), as_date(prev.end_date)) == (
        date(2025, 3, 2),
        date(2025, 3, 5),
    )
    assert prev.appointments == counts(completed=1) and prev.new_clients == 1
    # EUR ranks (15,000 of 24,000 EUR completed vs 9,000 USD): Al and Bo tie
    # at 5,000 (by id), Cy 5,000 too; Di has USD only.
    assert week.ranking_currency_code == "EUR"
    appointments = {al: 1, bo: 1, cy: 2}
    assert [
        (t.provider_id, t.completed_minor, t.completed_appointments) for t in week.top_providers
    ] == [(p, 5000, appointments[p]) for p in sorted(appointments)]
    assert {t.provider_id: t.display_name for t in week.top_providers} == {
        al: "Al",
        bo: "Bo",
        cy: "Cy",
    }
    # In USD: Di only; two at most.
    usd_week = await dashboard(WEEK, currency_code="USD", top_providers=2)
    assert usd_week.ranking_currency_code == "USD"
    assert [(t.provider_id, t.completed_minor) for t in usd_week.top_providers] == [(di, 9000)]
    assert len((await dashboard(WEEK, top_providers=2)).top_providers) == 2
    # No revenue in a currency: ranked by it, nobody listed.
    jpy = await dashboard(WEEK, currency_code="JPY")
    assert jpy.ranking_currency_code == "JPY" and not jpy.top_providers

    month = await summaries.GetDashboard(
        pb.GetDashboardRequest(organization_id=org, date=pb_date(wed))
    )
    assert month.period == MONTH  # the default
    cur, prev = month.current, month.previous
    assert (as_date(cur.start_date), as_date(cur.end_date)) == (date(2025, 3, 1), wed)
    assert cur.appointments == counts(completed=6, pending=1, cancelled=1, no_show=1)
    assert (as_date(prev.start_date), as_date(prev.end_date)) == (
        date(2025, 2, 1),
        date(2025, 2, 12),
    )
    assert prev.appointments == counts(completed=1) and prev.new_clients == 1
    assert cur.new_clients == 3
    # Di's EUR appointment of the 5th is in the month.
    assert [(t.provider_id, t.completed_minor) for t in month.top_providers] == [
        *((p, 5000) for p in sorted([al, bo, cy])),
        (di, 2500),
    ]

    day = await dashboard(DAY)
    assert (as_date(day.current.start_date), as_date(day.current.end_date)) == (wed, wed)
    assert (as_date(day.previous.start_date), as_date(day.previous.end_date)) == (
        date(2025, 3, 11),
        date(2025, 3, 11),
    )
    assert day.current.appointments == day.today
    assert day.previous.revenue[0].currency_code == "USD"
    assert [t.provider_id for t in day.top_providers] == [bo]


async def test_dashboard_of_a_whole_month_and_of_today(summaries: Summaries, stubs: Stubs) -> None:
    org = (await make_org(stubs, "Pacific/Auckland")).id
    p = await make_provider(stubs, org, "Pacific/Auckland")
    q = await make_provider(stubs, org, "America/Los_Angeles")
    eur = await make_service(stubs, org, 30, 2500, "EUR")
    await offer(stubs, org, [p, q], [eur])
    client = await make_client(stubs, org)
    # March 2025: three for p, one for q (its 31 March is Auckland's 1 April).
    for d in (1, 15, 31):
        at = datetime(2025, 3, d, 9, tzinfo=AUCKLAND)
        await book(stubs, org, p, eur, client, at, "completed")
    await book(
        stubs, org, q, eur, client, datetime(2025, 3, 31, 20, tzinfo=LOS_ANGELES), "completed"
    )
    # The whole of March: its month rows rank the providers.
    got = await summaries.GetDashboard(
        pb.GetDashboardRequest(organization_id=org, date=pb_date(date(2025, 3, 31)))
    )
    assert [(t.provider_id, t.completed_minor) for t in got.top_providers] == [
        (p, 7500),
        (q, 2500),
    ]
    assert got.current.appointments == counts(completed=4)
    assert (as_date(got.previous.start_date), as_date(got.previous.end_date)) == (
        date(2025, 2, 1),
        date(2025, 2, 28),
    )
    # Today in the organization's zone (Auckland), when no date is given.
    before = datetime.now(AUCKLAND).date()
    got = await summaries.GetDashboard(pb.GetDashboardRequest(organization_id=org))
    after = datetime.now(AUCKLAND).date()
    assert as_date(got.date) in (before, after)
    assert got.today == counts() and not got.top_providers and got.ranking_currency_code == ""


async def test_dashboard_top_providers_on_every_date_of_a_month(
    summaries: Summaries, stubs: Stubs
) -> None:
    """Top providers on every date of a month, by MONTH (the month's rows
    less the days after the date, or the days up to it, whichever are fewer)
    and by WEEK: what they completed in the ranking currency from the
    period's start to the date, never later, never in another currency."""
    org = (await make_org(stubs, "Europe/Berlin")).id
    providers = [await make_provider(stubs, org, "Europe/Berlin", n) for n in ("Al", "Bo", "Cy")]
    al, bo, cy = providers
    eur = await make_service(stubs, org, 30, 2500, "EUR")
    usd = await make_service(stubs, org, 30, 9000, "USD")
    await offer(stubs, org, providers, [eur, usd])
    client = await make_client(stubs, org)
    completed = [
        (al, date(2025, 3, 3), eur),
        (al, date(2025, 3, 28), eur),
        (bo, date(2025, 3, 20), eur),
        (bo, date(2025, 3, 20), eur),
        (cy, date(2025, 3, 27), eur),
        (cy, date(2025, 3, 10), usd),
        (bo, date(2025, 2, 27), eur),  # in the week of 1 March
        (cy, date(2025, 4, 1), eur),
    ]
    for hour, (p, on, s) in enumerate(completed, start=8):
        start = datetime(on.year, on.month, on.day, hour, tzinfo=BERLIN)
        await book(stubs, org, p, s, client, start, "completed")
    await book(stubs, org, al, eur, client, datetime(2025, 3, 5, 9, tzinfo=BERLIN), "cancelled")

    def expected(first: date, last: date) -> list[tuple[str, int, int]]:
        done = Counter(p for p, on, s in completed if s == eur and first <= on <= last)
        return sorted(((p, 2500 * n, n) for p, n in done.items()), key=lambda t: (-t[1], t[0]))

    for on in days(date(2025, 3, 1), date(2025, 3, 31)):
        monday = on - timedelta(days=on.weekday())
        for period, first in ((MONTH, on.replace(day=1)), (WEEK, monday), (DAY, on)):
            got = await summaries.GetDashboard(
                pb.GetDashboardRequest(
                    organization_id=org,
                    date=pb_date(on),
                    period=period,
                    currency_code="EUR",
                    top_providers=50,
                )
            )
            assert [
                (t.provider_id, t.completed_minor, t.completed_appointments)
                for t in got.top_providers
            ] == expected(first, on), (on, period)
    # Two at most: the first two of the ranking.
    got = await summaries.GetDashboard(
        pb.GetDashboardRequest(
            organization_id=org, date=pb_date(date(2025, 3, 30)), top_providers=2
        )
    )
    assert [t.provider_id for t in got.top_providers] == [
        p for p, _m, _n in expected(date(2025, 3, 1), date(2025, 3, 30))[:2]
    ]


# -- bad input -------------------------------------------------------------------------------


async def test_bad_requests_name_every_bad_field(summaries: Summaries, org: str) -> None:
    d = pb_date
    ok = span(date(2025, 1, 1), date(2025, 1, 31))
    revenue_request = pb.GetRevenueSummaryRequest
    rev = summaries.GetRevenueSummary
    for (first, last), reason in (
        ((date(2025, 2, 1), date(2025, 1, 1)), "INVALID_RANGE"),
        ((date(2024, 1, 1), date(2025, 1, 1)), "RANGE_TOO_LONG"),
    ):
        await expect_invalid(
            rev(revenue_request(organization_id=org, **span(first, last))),
            "end_date",
            reason=reason,
        )
    # 366 days is the most.
    await rev(revenue_request(organization_id=org, **span(date(2024, 1, 2), date(2025, 1, 1))))
    await expect_invalid(rev(revenue_request(organization_id=org)), "start_date", "end_date")
    await expect_invalid(
        rev(revenue_request(organization_id=org, granularity=9, **ok)),  # type: ignore[arg-type]
        "granularity",
        reason="INVALID_ENUM",
    )
    for bad in ("usd", "US", "USDX", "USD\n", "ÜSD"):
        await expect_invalid(
            rev(revenue_request(organization_id=org, currency_code=bad, **ok)), "currency_code"
        )
    ids = [str(uuid.uuid4())]
    await expect_invalid(
        rev(revenue_request(organization_id=org, provider_ids=ids, service_ids=ids, **ok)),
        "service_ids",
        reason="CONFLICTING_FIELDS",
    )
    many = [str(uuid.uuid4()) for _ in range(101)]
    await expect_invalid(
        rev(revenue_request(organization_id=org, provider_ids=many, **ok)),
        "provider_ids",
        reason="TOO_MANY",
    )
    await expect_invalid(
        rev(revenue_request(organization_id=org, service_ids=many, **ok)),
        "service_ids",
        reason="TOO_MANY",
    )
    # 100 distinct ids (and their repeats) are fine.
    await rev(revenue_request(organization_id=org, service_ids=many[:100] * 2, **ok))
    await expect_invalid(
        rev(revenue_request(organization_id=org, provider_ids=[ids[0], "nope", ""], **ok)),
        "provider_ids[1]",
        "provider_ids[2]",
    )
    # Everything at once.
    await expect_invalid(
        rev(
            revenue_request(
                organization_id="x",
                provider_ids=ids,
                service_ids=["y"],
                start_date=date_pb2.Date(year=2025, month=2, day=30),
                granularity=-1,  # type: ignore[arg-type]
                currency_code="eur",
            )
        ),
        "organization_id",
        "service_ids",
        "service_ids[0]",
        "start_date",
        "end_date",
        "granularity",
        "currency_code",
    )

    metrics = pb.GetProviderMetricsRequest
    await expect_invalid(
        summaries.GetProviderMetrics(metrics(organization_id=org, **ok)), "provider_ids"
    )
    await expect_invalid(
        summaries.GetProviderMetrics(metrics(organization_id=org, provider_ids=many, **ok)),
        "provider_ids",
        reason="TOO_MANY",
    )
    await expect_invalid(
        summaries.GetProviderMetrics(
            metrics(
                organization_id=org,
                provider_ids=ids,
                **span(date(2025, 1, 1), date(2026, 1, 2)),
            )
        ),
        "end_date",
        reason="RANGE_TOO_LONG",
    )

    balance = pb.GetClientBalanceRequest
    await expect_invalid(
        summaries.GetClientBalance(balance(organization_id=org, client_id="nope")), "client_id"
    )

    dash = pb.GetDashboardRequest
    for top in (-1, 51, -(2**31)):
        await expect_invalid(
            summaries.GetDashboard(dash(organization_id=org, top_providers=top)),
            "top_providers",
            reason="OUT_OF_RANGE",
        )
    await expect_invalid(
        summaries.GetDashboard(
            dash(
                organization_id=org,
                period=4,  # type: ignore[arg-type]
                currency_code="EU",
                date=date_pb2.Date(year=2025, month=13, day=1),
            )
        ),
        "period",
        "currency_code",
        "date",
    )
    # The extremes of the calendar are answered (9999-12-31 is the driver's
    # 'infinity': the last date named is the 30th, as for the day sheet).
    await expect_invalid(
        summaries.GetDashboard(dash(organization_id=org, date=d(date(9999, 12, 31)))),
        "date",
        reason="OUT_OF_RANGE",
    )
    await expect_invalid(
        rev(
            revenue_request(
                organization_id=org,
                **span(date(9999, 12, 1), date(9999, 12, 31)),
            )
        ),
        "end_date",
        reason="OUT_OF_RANGE",
    )
    for granularity in (DAY, WEEK, MONTH):
        got_revenue = await rev(
            revenue_request(
                organization_id=org,
                **span(date(9999, 1, 1), date(9999, 12, 30)),
                granularity=granularity,
                currency_code="EUR",
            )
        )
        assert as_date(got_revenue.currencies[0].buckets[-1].end_date) == date(9999, 12, 30)
        got_revenue = await rev(
            revenue_request(
                organization_id=org,
                **span(date(1900, 1, 1), date(1900, 2, 1)),
                granularity=granularity,
                currency_code="EUR",
            )
        )
        assert as_date(got_revenue.currencies[0].buckets[0].start_date) == date(1900, 1, 1)
    for on in (date(1900, 1, 1), date(9999, 12, 30)):
        for period in (DAY, WEEK, MONTH):
            got = await summaries.GetDashboard(dash(organization_id=org, date=d(on), period=period))
            assert as_date(got.date) == on


async def test_unknown_organization_and_other_tenants_client(
    summaries: Summaries, stubs: Stubs, world: World
) -> None:
    unknown = str(uuid.uuid4())
    first, last = world.range()
    await expect_not_found(
        summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(organization_id=unknown, **span(first, last))
        ),
        "ORGANIZATION_NOT_FOUND",
        unknown,
    )
    await expect_not_found(
        summaries.GetDashboard(pb.GetDashboardRequest(organization_id=unknown)),
        "ORGANIZATION_NOT_FOUND",
        unknown,
    )
    other = await new_org(stubs)
    for org, client in ((other, world.clients[0]), (world.org, unknown)):
        await expect_not_found(
            summaries.GetClientBalance(
                pb.GetClientBalanceRequest(organization_id=org, client_id=client)
            ),
            "CLIENT_NOT_FOUND",
            client,
        )
    listed = await summaries.ListClientBalances(
        pb.ListClientBalancesRequest(organization_id=unknown, currency_code="EUR")
    )
    assert not listed.balances


def test_average_ticket_rounds_half_away_from_zero() -> None:
    assert [average_ticket(c, n) for c, n in ((5, 2), (7, 2), (4, 3), (5, 3), (0, 0), (9, 0))] == [
        3,
        4,
        1,
        2,
        0,
        0,
    ]
    assert [average_ticket(-5, 2), average_ticket(-4, 3)] == [-3, -1]


# -- statements --------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def counting(
    database_url: str,
) -> AsyncIterator[tuple[Stubs, Summaries, list[str]]]:
    """A server whose every statement sent to PostgreSQL is recorded."""
    statements: list[str] = []
    async with running_server(database_url) as srv:
        await srv.server.purger.stop()  # its statements would be counted too
        record_statements(srv.server.database.engine, statements)
        await srv.server.database.engine.dispose()  # new connections get the logger
        async with grpc.aio.insecure_channel(srv.target) as channel:
            yield Stubs(channel), summaries_pb2_grpc.SummaryServiceStub(channel), statements


async def test_one_statement_per_call_whatever_the_range_and_the_ids(
    counting: tuple[Stubs, Summaries, list[str]],
) -> None:
    stubs, summaries, statements = counting
    w = await make_world(stubs)
    first, last = w.range()
    year = (last - timedelta(days=365), last)
    many_providers = [w.nz, w.la, *(str(uuid.uuid4()) for _ in range(98))]
    many_services = [w.eur, w.usd, *(str(uuid.uuid4()) for _ in range(98))]

    def revenue(dates: tuple[date, date], granularity: Granularity, **kw: Any) -> Any:
        return summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(
                organization_id=w.org,
                **span(dates[0], dates[1]),
                granularity=granularity,
                **kw,
            )
        )

    def metrics(ids: list[str], dates: tuple[date, date]) -> Any:
        return summaries.GetProviderMetrics(
            pb.GetProviderMetricsRequest(
                organization_id=w.org,
                provider_ids=ids,
                **span(dates[0], dates[1]),
            )
        )

    def dashboard(period: Granularity) -> Awaitable[Any]:
        return summaries.GetDashboard(pb.GetDashboardRequest(organization_id=w.org, period=period))

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "revenue, a few days": lambda: revenue((first, last), DAY),
        "revenue, a year by day": lambda: revenue(year, DAY),
        "revenue of a provider by month": lambda: revenue(year, MONTH, provider_ids=[w.la]),
        "revenue of 100 providers by week": lambda: revenue(
            year, WEEK, provider_ids=many_providers
        ),
        "revenue of 100 services in USD": lambda: revenue(
            year, MONTH, service_ids=many_services, currency_code="USD"
        ),
        "metrics of a provider, a few days": lambda: metrics([w.nz], (first, last)),
        "metrics of 100 providers, a year": lambda: metrics(many_providers, year),
        "a client's balance": lambda: summaries.GetClientBalance(
            pb.GetClientBalanceRequest(organization_id=w.org, client_id=w.clients[0])
        ),
        "a page of balances": lambda: summaries.ListClientBalances(
            pb.ListClientBalancesRequest(organization_id=w.org, currency_code="EUR")
        ),
        "dashboard by day": lambda: dashboard(DAY),
        "dashboard by week": lambda: dashboard(WEEK),
        "dashboard by month": lambda: dashboard(MONTH),
    }
    for name, call in calls.items():
        await call()  # the connection's type look-ups once
        statements.clear()
        await call()
        assert len(own_statements(statements)) == 1, (name, statements)
