"""Every test runs against a real PostgreSQL (embedded by default, or
BOOKING_TEST_DATABASE_URL) through a real grpc.aio channel to a server on port 0."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    appointments_pb2_grpc,
    audit_pb2_grpc,
    availability_pb2,
    availability_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    clients_pb2,
    clients_pb2_grpc,
    common_pb2,
    organizations_pb2,
    organizations_pb2_grpc,
    payments_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    resources_pb2,
    schedules_pb2,
    schedules_pb2_grpc,
)
from google.rpc import error_details_pb2, status_pb2
from google.type import dayofweek_pb2, timeofday_pb2

from server.db.engine import to_asyncpg_dsn
from server.testing import RunningServer, running_server, server_root_url, test_database


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url() -> AsyncIterator[str]:
    async with test_database() as url:
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def root_url() -> AsyncIterator[str]:
    """A server to create extra databases on (migration tests)."""
    async with server_root_url() as (root, _pg):
        yield root


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def booking_server(database_url: str) -> AsyncIterator[RunningServer]:
    async with running_server(database_url) as srv:
        yield srv


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def channel(booking_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(booking_server.target) as ch:
        yield ch


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.orgs = organizations_pb2_grpc.OrganizationServiceStub(channel)
        self.providers = providers_pb2_grpc.ProviderServiceStub(channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        self.clients = clients_pb2_grpc.ClientServiceStub(channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(channel)
        self.schedules = schedules_pb2_grpc.ScheduleServiceStub(channel)
        self.availability = availability_pb2_grpc.AvailabilityServiceStub(channel)
        self.appointments = appointments_pb2_grpc.AppointmentServiceStub(channel)
        self.payments = payments_pb2_grpc.PaymentServiceStub(channel)


@pytest.fixture
def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(channel)


@pytest_asyncio.fixture(loop_scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test database, for reading rows back
    (and for the few set-ups an RPC cannot make)."""
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def new_org(stubs: Stubs) -> str:
    response = await stubs.orgs.CreateOrganization(
        organizations_pb2.CreateOrganizationRequest(
            organization=resources_pb2.Organization(
                name="Test Org", slug=f"t-{uuid.uuid4().hex[:16]}", time_zone="Europe/Berlin"
            )
        )
    )
    return response.organization.id


@pytest_asyncio.fixture(loop_scope="session")
async def org(stubs: Stubs) -> str:
    """A fresh tenant per test: tests never see each other's rows."""
    return await new_org(stubs)


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The google.rpc.Status details of an error, by type name (booking.v1.Conflict:
    a list, one per conflict)."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no rich status in {error!r}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    out: dict[str, Any] = {}
    for any_msg in status.details:
        if any_msg.Is(availability_pb2.Conflict.DESCRIPTOR):
            conflict = availability_pb2.Conflict()
            any_msg.Unpack(conflict)
            out.setdefault("Conflict", []).append(conflict)  # one per conflict
            continue
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.PreconditionFailure,
        ):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                out[cls.__name__] = msg
    assert out["ErrorInfo"].domain == "booking.v1"
    return out


def violated_fields(error: grpc.aio.AioRpcError) -> set[str]:
    return {v.field for v in details(error)["BadRequest"].field_violations}


# -- a provider that can be booked ---------------------------------------------------


@dataclass(frozen=True)
class Bookable:
    """A provider offering a service, with working hours, and a client."""

    org: str
    provider_id: str
    service_id: str
    client_id: str
    time_zone: str


ALL_DAY = tuple((day, 0, 1440) for day in range(1, 8))


async def make_bookable(
    stubs: Stubs,
    org: str,
    *,
    time_zone: str = "Europe/Berlin",
    duration_minutes: int = 30,
    buffer_before_minutes: int = 0,
    buffer_after_minutes: int = 0,
    hours: tuple[tuple[int, int, int], ...] = ALL_DAY,
) -> Bookable:
    """Provider + service + offering + weekly hours ((ISO weekday, start
    minute, end minute), default all day every day) + a client, through the
    RPCs. The organization's default policy applies (no notice, 365 days)."""
    provider = await stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name="Pat", time_zone=time_zone),
        )
    )
    service = await stubs.catalog.CreateService(
        catalog_pb2.CreateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(
                name="Cut",
                duration_minutes=duration_minutes,
                price=common_pb2.Money(currency_code="EUR", amount_minor=2500),
                buffer_before_minutes=buffer_before_minutes,
                buffer_after_minutes=buffer_after_minutes,
            ),
        )
    )
    provider_id, service_id = provider.provider.id, service.service.id
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org,
            offering=resources_pb2.Offering(provider_id=provider_id, service_id=service_id),
        )
    )
    await stubs.schedules.ReplaceWorkingHours(
        schedules_pb2.ReplaceWorkingHoursRequest(
            organization_id=org,
            provider_id=provider_id,
            working_hours=[weekly(day, start, end) for day, start, end in hours],
        )
    )
    client = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(given_name="Cli", family_name="Ent")
        )
    )
    return Bookable(org, provider_id, service_id, client.client.id, time_zone)


def time_of_day(minute: int) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=minute // 60, minutes=minute % 60)


def weekly(iso_weekday: int, start_minute: int, end_minute: int) -> resources_pb2.WorkingHours:
    """A weekly rule (google.type.DayOfWeek numbers Monday 1 ... Sunday 7, as ISO)."""
    return resources_pb2.WorkingHours(
        day_of_week=dayofweek_pb2.DayOfWeek.Value(dayofweek_pb2.DayOfWeek.Name(iso_weekday)),
        start_time=time_of_day(start_minute),
        end_time=time_of_day(end_minute),
    )
