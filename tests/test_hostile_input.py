"""Hostile input, for every RPC (derived from the service descriptors in
``server.handlers.SERVICES``, so a new RPC is covered without an entry):

- a NUL character in any string field, top-level or nested, one at a time:
  INVALID_ARGUMENT with a field violation naming exactly that field's path,
  never a database error, never INTERNAL;
- every field violation's path, for any bad request (property-based, the
  generators of tests/test_properties.py), names a field of the request
  message (list indices allowed);
- upper-case UUIDs name the same rows, request ids and page tokens as
  lower-case ones;
- time zones: only the canonical IANA names the database knows, spelled exactly;
- the x-actor header: too long or blank = INVALID_ARGUMENT (INVALID_ACTOR);
- a deadline of 1 ms (and a few more short ones): DEADLINE_EXCEEDED or a
  deliberate answer, never INTERNAL, and nothing logged as unhandled.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    appointments_pb2,
    audit_pb2,
    availability_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    organizations_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
    summaries_pb2,
)
from google.protobuf import descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.type import date_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.db.engine import to_asyncpg_dsn
from server.handlers import SERVICES
from server.validation import MAX_REPORTED
from tests.conftest import (
    Bookable,
    Stubs,
    details,
    make_bookable,
    new_org,
    violated_fields,
    weekly,
)
from tests.test_properties import fill

# -- every RPC, from the descriptors -------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    service: str  # booking.v1.ClientService
    name: str  # CreateClient
    input: Descriptor

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    def new_request(self) -> Message:
        return message_factory.GetMessageClass(self.input)()

    def callable(self, channel: grpc.aio.Channel) -> Any:
        pool = descriptor_pool.Default()
        output = pool.FindMethodByName(f"{self.service}.{self.name}").output_type
        return channel.unary_unary(
            self.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_factory.GetMessageClass(output).FromString,
        )


RPCS = [
    Rpc(s.full_name, m.name, m.input_type)
    for s in SERVICES
    for m in s.pb2.DESCRIPTOR.services_by_name[s.short_name].methods
]
each_rpc = pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])


def test_every_service_is_covered() -> None:
    assert {r.service for r in RPCS} == {s.full_name for s in SERVICES}
    assert len(RPCS) >= 14


# -- field paths ----------------------------------------------------------------------

_INDEX = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(\[\d+\])?$")


def resolves(descriptor: Descriptor, path: str) -> bool:
    """Whether a dotted field path (list indices allowed) names a field of ``descriptor``."""
    current: Descriptor | None = descriptor
    for part in path.split("."):
        match = _INDEX.match(part)
        if current is None or match is None:
            return False
        field = current.fields_by_name.get(match.group("name"))
        if field is None or (match.group(2) and not field.is_repeated):
            return False
        current = field.message_type
    return True


def test_resolves() -> None:
    d = clients_pb2.UpdateClientRequest.DESCRIPTOR
    assert resolves(d, "client.given_name") and resolves(d, "update_mask.paths")
    assert resolves(d, "update_mask.paths[0]") and resolves(d, "client.create_time.seconds")
    for bad in ("client.name", "clients", "client.given_name.x", "client[0]", "", "a b"):
        assert not resolves(d, bad), bad


def assert_violations_resolve(request: Message, error: grpc.aio.AioRpcError) -> None:
    found = details(error).get("BadRequest")
    for violation in found.field_violations if found else ():
        # upb's Descriptor (the stubs' other half) passes isinstance(_, Descriptor).
        assert resolves(cast(Descriptor, request.DESCRIPTOR), violation.field), (
            f"{type(request).__name__}: field violation on {violation.field!r}, "
            f"which is not a field of the request ({violation.description})"
        )


def string_paths(descriptor: Descriptor, prefix: str = "", depth: int = 0) -> list[str]:
    """Every string field path of a message, nested ones too (repeated messages
    by their first item, ``x[0].y``; repeated strings by the field's path)."""
    out: list[str] = []
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            out.append(path)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            inner = f"{path}[0]." if field.is_repeated else f"{path}."
            assert field.message_type is not None
            out += string_paths(field.message_type, inner, depth + 1)
    return out


def with_nul(request: Message, path: str) -> Message:
    """A copy of ``request`` with a NUL character in the string field at ``path``."""
    out = type(request)()
    out.CopyFrom(request)
    msg: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        if part.endswith("[0]"):
            items = getattr(msg, part[:-3])
            msg = items[0] if len(items) else items.add()
        else:
            msg = getattr(msg, part)
    name = parts[-1]
    field = msg.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        getattr(msg, name).append("a\x00b")
    else:
        value = getattr(msg, name)
        setattr(msg, name, f"{value}\x00" if value else "a\x00b")
    return out


# -- a world of valid ids, and a valid request per RPC ---------------------------------


@dataclass
class World:
    org: str
    provider: resources_pb2.Provider
    service: resources_pb2.Service
    client: resources_pb2.Client
    # A provider offering a service with hours, one of its appointments and
    # one of its time offs.
    bookable: Bookable
    appointment_id: str
    time_off_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(channel: grpc.aio.Channel) -> World:
    from tests.conftest import Stubs

    stubs = Stubs(channel)
    org = await new_org(stubs)
    provider = await stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name="P", time_zone="Europe/Berlin"),
        )
    )
    service = await stubs.catalog.CreateService(
        catalog_pb2.CreateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(
                name="S",
                duration_minutes=30,
                price=common_pb2.Money(currency_code="EUR", amount_minor=100),
            ),
        )
    )
    client = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(given_name="Ada")
        )
    )
    bookable = await make_bookable(stubs, org)
    appointment = await stubs.appointments.CreateAppointment(
        appointments_pb2.CreateAppointmentRequest(
            organization_id=org,
            appointment=resources_pb2.Appointment(
                provider_id=bookable.provider_id,
                client_id=bookable.client_id,
                service_id=bookable.service_id,
                start_time=_at(days=3),
            ),
        )
    )
    time_off = await stubs.schedules.CreateTimeOff(
        schedules_pb2.CreateTimeOffRequest(
            organization_id=org,
            time_off=resources_pb2.TimeOff(
                provider_id=bookable.provider_id,
                start_time=_at(days=5),
                end_time=_at(days=5, minutes=120),
                reason="training",
            ),
        )
    )
    return World(
        org,
        provider.provider,
        service.service,
        client.client,
        bookable,
        appointment.appointment.id,
        time_off.time_off.id,
    )


_HOUR = int(time.time()) // 3600 * 3600


def _at(*, days: int, minutes: int = 0) -> timestamp_pb2.Timestamp:
    """A whole hour ``days`` from now (plus minutes)."""
    return timestamp_pb2.Timestamp(seconds=_HOUR + days * 86_400 + minutes * 60)


def _date(days: int) -> date_pb2.Date:
    d = datetime.fromtimestamp(_HOUR + days * 86_400, UTC).date()
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


def _appointment_request(w: World, days: int) -> appointments_pb2.CreateAppointmentRequest:
    b = w.bookable
    return appointments_pb2.CreateAppointmentRequest(
        organization_id=w.org,
        appointment=resources_pb2.Appointment(
            provider_id=b.provider_id,
            client_id=b.client_id,
            service_id=b.service_id,
            start_time=_at(days=days, minutes=random.randrange(0, 24 * 60, 30)),
            notes="bring the form",
            external_id=uuid.uuid4().hex,
        ),
        request_id=uuid.uuid4().hex,
    )


def _org(w: World) -> resources_pb2.Organization:
    return resources_pb2.Organization(
        name="N", slug=f"h-{uuid.uuid4().hex[:12]}", time_zone="Europe/Berlin"
    )


# Valid requests (every string field set where one can be), so that the NUL
# is the request's only fault. An RPC without an entry is tried from an empty
# request: its NUL violation must still be reported, beside the others.
VALID: dict[str, Callable[[World], Message]] = {
    "CreateOrganization": lambda w: organizations_pb2.CreateOrganizationRequest(
        organization=_org(w), request_id=uuid.uuid4().hex
    ),
    "GetOrganization": lambda w: organizations_pb2.GetOrganizationRequest(organization_id=w.org),
    "UpdateOrganization": lambda w: organizations_pb2.UpdateOrganizationRequest(
        organization=resources_pb2.Organization(id=w.org, name="N2"), request_id=uuid.uuid4().hex
    ),
    "CreateProvider": lambda w: providers_pb2.CreateProviderRequest(
        organization_id=w.org,
        provider=resources_pb2.Provider(display_name="P", email="p@example.com", time_zone="UTC"),
        request_id=uuid.uuid4().hex,
    ),
    "GetProvider": lambda w: providers_pb2.GetProviderRequest(
        organization_id=w.org, provider_id=w.provider.id
    ),
    "UpdateProvider": lambda w: providers_pb2.UpdateProviderRequest(
        organization_id=w.org,
        provider=resources_pb2.Provider(id=w.provider.id, display_name="P2"),
        request_id=uuid.uuid4().hex,
    ),
    "CreateService": lambda w: catalog_pb2.CreateServiceRequest(
        organization_id=w.org,
        service=resources_pb2.Service(
            name="S",
            duration_minutes=30,
            price=common_pb2.Money(currency_code="EUR", amount_minor=100),
        ),
        request_id=uuid.uuid4().hex,
    ),
    "GetService": lambda w: catalog_pb2.GetServiceRequest(
        organization_id=w.org, service_id=w.service.id
    ),
    "UpdateService": lambda w: catalog_pb2.UpdateServiceRequest(
        organization_id=w.org,
        service=resources_pb2.Service(id=w.service.id, name="S2"),
        request_id=uuid.uuid4().hex,
    ),
    "CreateClient": lambda w: clients_pb2.CreateClientRequest(
        organization_id=w.org,
        client=resources_pb2.Client(
            given_name="A",
            family_name="B",
            email="a@example.com",
            phone="+4915112345678",
            external_id=uuid.uuid4().hex,
        ),
        request_id=uuid.uuid4().hex,
    ),
    "GetClient": lambda w: clients_pb2.GetClientRequest(
        organization_id=w.org, client_id=w.client.id
    ),
    "UpdateClient": lambda w: clients_pb2.UpdateClientRequest(
        organization_id=w.org,
        client=resources_pb2.Client(id=w.client.id, family_name="C"),
        request_id=uuid.uuid4().hex,
    ),
    "ListClients": lambda w: clients_pb2.ListClientsRequest(
        organization_id=w.org, query="ada", order_by="name"
    ),
    "ListAuditEvents": lambda w: audit_pb2.ListAuditEventsRequest(
        organization_id=w.org, resource_type="client", resource_id=w.client.id, actor="anonymous"
    ),
    "SetOffering": lambda w: catalog_pb2.SetOfferingRequest(
        organization_id=w.org,
        offering=resources_pb2.Offering(
            provider_id=w.bookable.provider_id, service_id=w.bookable.service_id
        ),
        request_id=uuid.uuid4().hex,
    ),
    "DeleteOffering": lambda w: catalog_pb2.DeleteOfferingRequest(
        organization_id=w.org,
        provider_id=w.provider.id,
        service_id=w.service.id,
        request_id=uuid.uuid4().hex,
    ),
    "ListOfferings": lambda w: catalog_pb2.ListOfferingsRequest(
        organization_id=w.org, provider_id=w.bookable.provider_id, service_id=w.bookable.service_id
    ),
    "ReplaceWorkingHours": lambda w: schedules_pb2.ReplaceWorkingHoursRequest(
        organization_id=w.org,
        provider_id=w.provider.id,
        working_hours=[weekly(1, 540, 1020)],
        request_id=uuid.uuid4().hex,
    ),
    "GetWorkingHours": lambda w: schedules_pb2.GetWorkingHoursRequest(
        organization_id=w.org, provider_id=w.bookable.provider_id
    ),
    "ReplaceDateOverrides": lambda w: schedules_pb2.ReplaceDateOverridesRequest(
        organization_id=w.org,
        provider_id=w.provider.id,
        start_date=_date(10),
        end_date=_date(12),
        date_overrides=[resources_pb2.DateOverride(date=_date(11), closed=True)],
        request_id=uuid.uuid4().hex,
    ),
    "GetDateOverrides": lambda w: schedules_pb2.GetDateOverridesRequest(
        organization_id=w.org, provider_id=w.provider.id, start_date=_date(0), end_date=_date(30)
    ),
    "CreateTimeOff": lambda w: schedules_pb2.CreateTimeOffRequest(
        organization_id=w.org,
        time_off=resources_pb2.TimeOff(
            provider_id=w.provider.id,
            start_time=_at(days=20),
            end_time=_at(days=21),
            reason="holiday",
        ),
        request_id=uuid.uuid4().hex,
    ),
    "DeleteTimeOff": lambda w: schedules_pb2.DeleteTimeOffRequest(
        organization_id=w.org, time_off_id=str(uuid.uuid4()), request_id=uuid.uuid4().hex
    ),
    "ListProviders": lambda w: providers_pb2.ListProvidersRequest(
        organization_id=w.org, query="pat", service_id=w.bookable.service_id, active=True
    ),
    "ListServices": lambda w: catalog_pb2.ListServicesRequest(
        organization_id=w.org, query="cut", provider_id=w.bookable.provider_id, order_by="name"
    ),
    "ListAppointments": lambda w: appointments_pb2.ListAppointmentsRequest(
        organization_id=w.org,
        provider_ids=[w.bookable.provider_id],
        client_id=w.client.id,
        service_id=w.bookable.service_id,
        statuses=[resources_pb2.APPOINTMENT_STATUS_PENDING],
        start_time=_at(days=0),
        end_time=_at(days=60),
        start_date=_date(0),
        end_date=_date(60),
        view=common_pb2.VIEW_FULL,
    ),
    "ListPayments": lambda w: payments_pb2.ListPaymentsRequest(
        organization_id=w.org,
        client_id=w.client.id,
        statuses=[resources_pb2.PAYMENT_STATUS_COMPLETED],
        methods=[resources_pb2.PAYMENT_METHOD_CARD],
        currency_code="EUR",
        min_amount_minor=1,
        max_amount_minor=10_000,
        view=common_pb2.VIEW_FULL,
    ),
    "RecordPayment": lambda w: payments_pb2.RecordPaymentRequest(
        organization_id=w.org,
        payment=resources_pb2.Payment(
            client_id=w.client.id,
            amount=common_pb2.Money(currency_code="EUR", amount_minor=1500),
            method=resources_pb2.PAYMENT_METHOD_CASH,
            external_reference=uuid.uuid4().hex,
        ),
        request_id=uuid.uuid4().hex,
    ),
    "GetPayment": lambda w: payments_pb2.GetPaymentRequest(
        organization_id=w.org, payment_id=str(uuid.uuid4())
    ),
    "RefundPayment": lambda w: payments_pb2.RefundPaymentRequest(
        organization_id=w.org,
        payment_id=str(uuid.uuid4()),
        amount_minor=100,
        reason="returned",
        external_reference=uuid.uuid4().hex,
        request_id=uuid.uuid4().hex,
    ),
    "ListClientHistory": lambda w: clients_pb2.ListClientHistoryRequest(
        organization_id=w.org, client_id=w.client.id
    ),
    "GetProviderSchedule": lambda w: schedules_pb2.GetProviderScheduleRequest(
        organization_id=w.org, provider_ids=[w.bookable.provider_id, w.provider.id], date=_date(1)
    ),
    "ListTimeOff": lambda w: schedules_pb2.ListTimeOffRequest(
        organization_id=w.org, provider_id=w.bookable.provider_id, order_by="start_time"
    ),
    "GetAvailability": lambda w: availability_pb2.GetAvailabilityRequest(
        organization_id=w.org,
        provider_ids=[w.bookable.provider_id, w.provider.id],
        service_id=w.bookable.service_id,
        start_time=_at(days=1),
        end_time=_at(days=8),
        time_zone="America/New_York",
        first_available_count=3,
    ),
    "CheckConflicts": lambda w: availability_pb2.CheckConflictsRequest(
        organization_id=w.org,
        provider_id=w.bookable.provider_id,
        service_id=w.bookable.service_id,
        start_time=_at(days=3),
        exclude_appointment_id=w.appointment_id,
    ),
    "CreateAppointment": lambda w: _appointment_request(w, days=30),
    "GetAppointment": lambda w: appointments_pb2.GetAppointmentRequest(
        organization_id=w.org, appointment_id=w.appointment_id
    ),
    "RescheduleAppointment": lambda w: appointments_pb2.RescheduleAppointmentRequest(
        organization_id=w.org,
        appointment_id=w.appointment_id,
        start_time=_at(days=40, minutes=random.randrange(0, 24 * 60, 30)),
        provider_id=w.bookable.provider_id,
        request_id=uuid.uuid4().hex,
    ),
    "CancelAppointment": lambda w: appointments_pb2.CancelAppointmentRequest(
        organization_id=w.org,
        appointment_id=str(uuid.uuid4()),
        reason="client called",
        request_id=uuid.uuid4().hex,
    ),
    "ConfirmAppointment": lambda w: appointments_pb2.ConfirmAppointmentRequest(
        organization_id=w.org, appointment_id=str(uuid.uuid4()), request_id=uuid.uuid4().hex
    ),
    "CompleteAppointment": lambda w: appointments_pb2.CompleteAppointmentRequest(
        organization_id=w.org, appointment_id=str(uuid.uuid4()), request_id=uuid.uuid4().hex
    ),
    "MarkAppointmentNoShow": lambda w: appointments_pb2.MarkAppointmentNoShowRequest(
        organization_id=w.org, appointment_id=str(uuid.uuid4()), request_id=uuid.uuid4().hex
    ),
    "GetRevenueSummary": lambda w: summaries_pb2.GetRevenueSummaryRequest(
        organization_id=w.org,
        provider_ids=[w.bookable.provider_id],
        start_date=_date(0),
        end_date=_date(30),
        currency_code="EUR",
    ),
    "GetProviderMetrics": lambda w: summaries_pb2.GetProviderMetricsRequest(
        organization_id=w.org,
        provider_ids=[w.bookable.provider_id],
        start_date=_date(0),
        end_date=_date(30),
    ),
    "GetClientBalance": lambda w: summaries_pb2.GetClientBalanceRequest(
        organization_id=w.org, client_id=w.client.id
    ),
    "ListClientBalances": lambda w: summaries_pb2.ListClientBalancesRequest(
        organization_id=w.org, currency_code="EUR", order_by="balance desc"
    ),
    "GetDashboard": lambda w: summaries_pb2.GetDashboardRequest(
        organization_id=w.org, date=_date(0), currency_code="EUR"
    ),
}


def valid_request(rpc: Rpc, w: World) -> Message:
    build = VALID.get(rpc.name)
    return build(w) if build else rpc.new_request()


async def outcome(call: Any, request: Message, **kwargs: Any) -> set[str]:
    """The violated fields of a call (empty when it is not INVALID_ARGUMENT);
    fails on INTERNAL / UNKNOWN and on violations naming no request field."""
    try:
        await call(request, timeout=10, **kwargs)
    except grpc.aio.AioRpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            error.details()
        )
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            return set()
        assert_violations_resolve(request, error)
        return violated_fields(error)
    return set()


# -- NUL in every string field ----------------------------------------------------------


def _nul_params() -> list[Any]:
    out = []
    for rpc in RPCS:
        for path in string_paths(rpc.input):
            out.append(pytest.param(rpc, path, id=f"{rpc.name}-{path}"))
    return out


@pytest.mark.parametrize(("rpc", "path"), _nul_params())
async def test_nul_in_any_string_field_names_that_field(
    rpc: Rpc, path: str, channel: grpc.aio.Channel, world: World
) -> None:
    call = rpc.callable(channel)
    base = valid_request(rpc, world)
    baseline = await outcome(call, base) if rpc.name in VALID else None
    request = with_nul(valid_request(rpc, world), path)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request, timeout=10)
    error = err.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{rpc.name} {path}: {error.code()} {error.details()}"
    )
    assert_violations_resolve(request, error)
    # A repeated field's violation names the item (provider_ids[2]).
    reported = {re.sub(r"\[\d+\]$", "", f) for f in violated_fields(error)}
    assert path in reported, f"{rpc.name}: NUL in {path} not reported"
    if baseline is not None:
        # Nothing else is reported but what the valid request had (nothing).
        assert reported == baseline | {path}


async def test_all_violations_are_reported_at_once(channel: grpc.aio.Channel, world: World) -> None:
    """TenantResource promises every violation at once; an invalid etag or
    update_mask path drops the others (here the e-mail's and the NUL's)."""
    for extra in (
        {"client": resources_pb2.Client(id=world.client.id, email="bad", etag="junk")},
        {
            "client": resources_pb2.Client(id=world.client.id, email="bad", given_name="\x00"),
            # A mask names what is written (and validated): email is in it.
            "update_mask": {"paths": ["nope", "email"]},
        },
    ):
        request = clients_pb2.UpdateClientRequest(organization_id=world.org, **extra)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _rpc("UpdateClient").callable(channel)(request, timeout=10)
        assert "client.email" in violated_fields(err.value)


# -- every violation names a field of the request -----------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def known_ids(world: World, channel: grpc.aio.Channel) -> list[str]:
    from tests.conftest import Stubs

    page = await Stubs(channel).clients.ListClients(
        clients_pb2.ListClientsRequest(organization_id=world.org, page_size=1)
    )
    return [
        world.org,
        world.provider.id,
        world.service.id,
        world.client.id,
        world.client.id.upper(),
        world.bookable.provider_id,
        world.bookable.service_id,
        world.appointment_id,
        world.time_off_id,
        str(uuid.uuid4()),
        page.next_page_token or "x",
    ]


@each_rpc
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_field_violation_names_a_request_field(
    rpc: Rpc, data: st.DataObject, channel: grpc.aio.Channel, known_ids: list[str]
) -> None:
    request = rpc.new_request()
    fill(request, data.draw, known_ids)
    await outcome(rpc.callable(channel), request)


# -- upper-case UUIDs ----------------------------------------------------------------------


async def test_upper_case_ids_name_the_same_request_and_rows(
    channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    from tests.conftest import Stubs

    stubs = Stubs(channel)
    org = await new_org(stubs)
    request = clients_pb2.CreateClientRequest(
        organization_id=org.upper(),
        client=resources_pb2.Client(family_name="Case"),
        request_id="case-1",
    )
    first = await stubs.clients.CreateClient(request)
    assert first.client.organization_id == org  # canonical on the way out
    request.organization_id = org
    again = await stubs.clients.CreateClient(request)
    assert again == first
    assert await db.fetchval("SELECT count(*) FROM clients WHERE organization_id = $1", org) == 1
    audited = await db.fetch(
        "SELECT action, resource_id FROM audit_events WHERE organization_id = $1 "
        "AND resource_type = 'client'",
        org,
    )
    assert [(r["action"], r["resource_id"]) for r in audited] == [("create", first.client.id)]
    # Get / Update by the upper-case id.
    got = await stubs.clients.GetClient(
        clients_pb2.GetClientRequest(organization_id=org.upper(), client_id=first.client.id.upper())
    )
    assert got.client == first.client
    # A page token obtained with one spelling works with the other.
    await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(family_name="Other")
        )
    )
    for got_with, used_with in ((org, org.upper()), (org.upper(), org)):
        page = await stubs.clients.ListClients(
            clients_pb2.ListClientsRequest(organization_id=got_with, page_size=1)
        )
        second = await stubs.clients.ListClients(
            clients_pb2.ListClientsRequest(
                organization_id=used_with, page_size=1, page_token=page.next_page_token
            )
        )
        assert second.page_info.page == 2 and len(second.clients) == 1
        assert second.clients[0].id != page.clients[0].id
    events = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(organization_id=org, page_size=1)
    )
    more = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(
            organization_id=org.upper(), page_size=1, page_token=events.next_page_token
        )
    )
    assert more.audit_events and more.audit_events[0].id != events.audit_events[0].id


# -- time zones ----------------------------------------------------------------------------

BAD_ZONES = [
    "localtime",
    "posix/Europe/Berlin",
    "right/Europe/Berlin",
    "Factory",
    "posixrules",
    "europe/berlin",
    "EUROPE/BERLIN",
    "Mars/Olympus",
    " Europe/Berlin",
    "Europe/Berlin ",
    "Europe/Berlin/",
    "../Europe/Berlin",
    "Europe//Berlin",
    # Zones that are also PostgreSQL abbreviations of a fixed offset: AT TIME
    # ZONE would read them without their summer time (server.timezones).
    "CET",
    "EET",
    "MET",
    "WET",
]
GOOD_ZONES = ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", "Etc/GMT+5", "EST"]


def _zone_requests(world: World, zone: str) -> list[tuple[str, str, Message]]:
    """(RPC name, field path, request) for every request that takes a time zone."""
    return [
        (
            "CreateOrganization",
            "organization.time_zone",
            organizations_pb2.CreateOrganizationRequest(
                organization=resources_pb2.Organization(
                    name="Z", slug=f"z-{uuid.uuid4().hex[:12]}", time_zone=zone
                )
            ),
        ),
        (
            "UpdateOrganization",
            "organization.time_zone",
            organizations_pb2.UpdateOrganizationRequest(
                organization=resources_pb2.Organization(id=world.org, time_zone=zone)
            ),
        ),
        (
            "CreateProvider",
            "provider.time_zone",
            providers_pb2.CreateProviderRequest(
                organization_id=world.org,
                provider=resources_pb2.Provider(display_name="Z", time_zone=zone),
            ),
        ),
        (
            "UpdateProvider",
            "provider.time_zone",
            providers_pb2.UpdateProviderRequest(
                organization_id=world.org,
                provider=resources_pb2.Provider(id=world.provider.id, time_zone=zone),
            ),
        ),
        (
            "GetAvailability",
            "time_zone",
            availability_pb2.GetAvailabilityRequest(
                organization_id=world.org,
                provider_ids=[world.bookable.provider_id],
                service_id=world.bookable.service_id,
                start_time=_at(days=1),
                end_time=_at(days=2),
                time_zone=zone,
            ),
        ),
    ]


def _rpc(name: str) -> Rpc:
    return next(r for r in RPCS if r.name == name)


async def test_unknown_time_zones_are_refused(channel: grpc.aio.Channel, world: World) -> None:
    for zone in BAD_ZONES:
        for name, path, request in _zone_requests(world, zone):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _rpc(name).callable(channel)(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (zone, name)
            violations = details(err.value)["BadRequest"].field_violations
            assert [(v.field, v.reason) for v in violations] == [(path, "UNKNOWN_TIME_ZONE")], (
                zone,
                name,
            )


async def test_canonical_time_zones_are_accepted_as_spelled(
    channel: grpc.aio.Channel, world: World
) -> None:
    for zone in GOOD_ZONES:
        for name, _path, request in _zone_requests(world, zone):
            response = await _rpc(name).callable(channel)(request, timeout=10)
            if name == "GetAvailability":
                assert [p.time_zone for p in response.providers] == [zone]
                continue
            resource = response.organization if "Organization" in name else response.provider
            assert resource.time_zone == zone


# -- x-actor ---------------------------------------------------------------------------------

BAD_ACTORS = ["", " ", "   ", "a" * 201, " leading", "trailing ", "x" * 5000]


@each_rpc
async def test_bad_actor_header_is_invalid_argument(
    rpc: Rpc, channel: grpc.aio.Channel, world: World
) -> None:
    call = rpc.callable(channel)
    for actor in BAD_ACTORS:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(valid_request(rpc, world), timeout=10, metadata=(("x-actor", actor),))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc.name, actor)
        info = details(err.value)["ErrorInfo"]
        assert info.reason == "INVALID_ACTOR" and info.metadata["header"] == "x-actor"


async def test_longest_actor_is_accepted_and_audited(
    channel: grpc.aio.Channel, world: World, db: asyncpg.Connection
) -> None:
    actor = "a" * 199 + "z"
    response = await _rpc("CreateClient").callable(channel)(
        VALID["CreateClient"](world), timeout=10, metadata=(("x-actor", actor),)
    )
    stored = await db.fetchval(
        "SELECT actor FROM audit_events WHERE resource_id = $1", response.client.id
    )
    assert stored == actor


# -- deadlines -------------------------------------------------------------------------------

_DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    # What the valid request may get on its own, the deadline aside.
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
    # A booking whose slot another valid request took (TIME_SLOT_TAKEN).
    grpc.StatusCode.FAILED_PRECONDITION,
}


@each_rpc
async def test_short_deadlines_never_give_internal(
    rpc: Rpc, channel: grpc.aio.Channel, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server")
    call = rpc.callable(channel)
    codes = []
    # 0.2 ms expires on the way in, 1-13 ms anywhere in the handler or its
    # statements, or not at all: a Get on an idle machine can answer within
    # 1 ms. (gRPC's client notices an expired deadline 1-3 ms late: a call that
    # answers within 1 ms is OK even past a 0.2 ms deadline. Until one
    # DEADLINE_EXCEEDED was seen, more 0.2 ms calls follow, at most 200.)

    async def one(seconds: float) -> None:
        try:
            await call(valid_request(rpc, world), timeout=seconds)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                # The deadline expired after COMMIT was sent: documented as
                # COMMIT_OUTCOME_UNKNOWN (retry with the same request_id).
                assert details(error)["ErrorInfo"].reason == "COMMIT_OUTCOME_UNKNOWN"
                return
            codes.append(error.code())

    for timeout in (0.0002,) * 3 + (0.001,) * 10 + (0.002, 0.003, 0.005, 0.008, 0.013):
        await one(timeout)
    for _ in range(200):
        if grpc.StatusCode.DEADLINE_EXCEEDED in codes:
            break
        await one(0.0002)
    # A call may also finish within 1 ms: OK is a deliberate answer too.
    assert set(codes) <= _DELIBERATE, codes
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    # Nothing unhandled in the server (asyncio's own "Future exception was
    # never retrieved" from asyncpg's terminated connections is not ours).
    unhandled = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("server") and r.levelno >= logging.ERROR
    ]
    assert not unhandled, unhandled
    # And the server is fine afterwards: the same call with time to spare.
    assert await outcome(call, valid_request(rpc, world)) == set()


async def test_statement_timeout_without_a_deadline_is_deadline_exceeded(
    database_url: str, db: asyncpg.Connection
) -> None:
    """PostgreSQL's own statement_timeout (57014) is the server's answer, not
    the client's deadline: DEADLINE_EXCEEDED with STATEMENT_TIMEOUT details,
    never INTERNAL (a client-side deadline would hide the server's mapping)."""
    import dataclasses

    from server.testing import running_server, test_settings
    from tests.conftest import Stubs

    base = test_settings()
    quick = test_settings(pool=dataclasses.replace(base.pool, statement_timeout_ms=300))
    async with running_server(database_url, quick) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            stubs = Stubs(ch)
            org = await new_org(stubs)
            locker = await asyncpg.connect(to_asyncpg_dsn(database_url))
            try:
                await locker.execute("BEGIN; LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")
                calls: list[Awaitable[Message]] = [
                    stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org)),
                    stubs.clients.CreateClient(
                        clients_pb2.CreateClientRequest(
                            organization_id=org, client=resources_pb2.Client(family_name="Late")
                        )
                    ),
                ]
                for call in calls:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await call
                    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    assert details(err.value)["ErrorInfo"].reason == "STATEMENT_TIMEOUT"
            finally:
                await locker.close()
    assert await db.fetchval("SELECT count(*) FROM clients WHERE organization_id = $1", org) == 0


# -- the instants the driver turns into infinity -------------------------------------------

_INFINITE_TIMESTAMPS = [
    timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999),  # datetime.max
    timestamp_pb2.Timestamp(seconds=-62_135_596_800),  # datetime.min
]


@pytest.mark.parametrize("ts", _INFINITE_TIMESTAMPS, ids=["max", "min"])
async def test_timestamps_that_would_become_infinity_are_refused(
    ts: timestamp_pb2.Timestamp, channel: grpc.aio.Channel, world: World
) -> None:
    """asyncpg sends datetime.max / datetime.min as PostgreSQL's infinity: as a
    list filter that is harmless (an unbounded side), but a write or a booking
    check refuses them on the field, never storing or computing with them."""
    cases: list[tuple[str, str, Message]] = [
        (
            "CreateTimeOff",
            "time_off.end_time",
            schedules_pb2.CreateTimeOffRequest(
                organization_id=world.org,
                time_off=resources_pb2.TimeOff(
                    provider_id=world.provider.id, start_time=_at(days=30), end_time=ts
                ),
            ),
        ),
        (
            "CheckConflicts",
            "start_time",
            availability_pb2.CheckConflictsRequest(
                organization_id=world.org,
                provider_id=world.bookable.provider_id,
                service_id=world.bookable.service_id,
                start_time=ts,
            ),
        ),
    ]
    for name, path, request in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _rpc(name).callable(channel)(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.value.details())
        assert path in violated_fields(err.value), name


# -- many violations at once ----------------------------------------------------------------


async def test_a_hundred_bad_ids_get_invalid_argument_not_a_transport_error(
    stubs: Stubs,
) -> None:
    """100 invalid ids make 100 violations: the error carries the first
    MAX_REPORTED (its trailer stays under gRPC's 8 KiB metadata limit, which
    the client would otherwise refuse as RESOURCE_EXHAUSTED) and says how
    many more there were."""
    org = await new_org(stubs)
    bad = [f"not-a-uuid-{i:03d}" for i in range(100)]
    for call in (
        stubs.appointments.ListAppointments(
            appointments_pb2.ListAppointmentsRequest(organization_id=org, provider_ids=bad)
        ),
        stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(organization_id=org, provider_ids=bad)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        violations = details(err.value)["BadRequest"].field_violations
        assert len(violations) == MAX_REPORTED
        assert violations[0].field == "provider_ids[0]"
        assert "more not listed" in (err.value.details() or "")


# -- a final newline ---------------------------------------------------------------------------


async def test_a_final_newline_is_not_part_of_a_valid_value(stubs: Stubs) -> None:
    """A regex ending in "$" also matches before a final newline: every format
    check matches the whole value (e-mail, phone, slug, request_id, currency)."""
    org = await new_org(stubs)
    cases: list[tuple[Any, str]] = [
        (
            stubs.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    organization_id=org,
                    client=resources_pb2.Client(family_name="N", email="a@b.example\n"),
                )
            ),
            "client.email",
        ),
        (
            stubs.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    organization_id=org,
                    client=resources_pb2.Client(family_name="N", phone="+4915112345678\n"),
                )
            ),
            "client.phone",
        ),
        (
            stubs.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    organization_id=org,
                    client=resources_pb2.Client(family_name="N"),
                    request_id="retry-1\n",
                )
            ),
            "request_id",
        ),
        (
            stubs.orgs.CreateOrganization(
                organizations_pb2.CreateOrganizationRequest(
                    organization=resources_pb2.Organization(
                        name="N", slug=f"n-{uuid.uuid4().hex[:8]}\n", time_zone="UTC"
                    )
                )
            ),
            "organization.slug",
        ),
        (
            stubs.payments.ListPayments(
                payments_pb2.ListPaymentsRequest(organization_id=org, currency_code="EUR\n")
            ),
            "currency_code",
        ),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.value.details())
        assert field in violated_fields(err.value), (field, err.value.details())
