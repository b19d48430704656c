"""Cross-tenant isolation, RPC by RPC: one table, :data:`ATTACKS`.

Two tenants, A and B, each with an organization, a provider, a service and two
clients. For every RPC that names a resource or lists, an attack calls it as
tenant B naming A's ids (and A naming B's: "mixing"), in canonical and
upper-case spelling, with the other tenant's etag, with the other tenant's
``organization_id`` inside the resource message and with the request_id the
other tenant used. It must get NOT_FOUND (with ResourceInfo naming the id it
sent and nothing of the other tenant) or an empty list, and, read back
straight from PostgreSQL, the other tenant's rows (every column: version,
updated_at, values), audit events and stored write results are exactly what
they were, and nothing was audited for A's resources beyond their creation.

A NEW RPC JOINS WITH ONE ENTRY in :data:`ATTACKS`:
:func:`test_every_rpc_has_an_attack` derives the RPCs from the service
descriptors in ``server.handlers.SERVICES`` and fails for one without an entry
(or an exemption justified in :data:`EXEMPT`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
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
    summaries_pb2_grpc,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.type import date_pb2

from server.handlers import SERVICES
from tests.conftest import ALL_DAY, Stubs, details, violated_fields, weekly

# -- two tenants ---------------------------------------------------------------------


@dataclass
class Tenant:
    org: resources_pb2.Organization
    provider: resources_pb2.Provider
    service: resources_pb2.Service
    clients: list[resources_pb2.Client]
    # The provider offers the service, works every day, has a time off and an
    # appointment.
    time_off: resources_pb2.TimeOff
    appointment: resources_pb2.Appointment
    # A completed payment of the appointment (no payment write RPC yet: made
    # with SQL by add_payment).
    payment_id: str = ""

    @property
    def id(self) -> str:
        return self.org.id

    @property
    def client(self) -> resources_pb2.Client:
        return self.clients[0]

    def resource(self, kind: str) -> Any:
        return {"provider": self.provider, "service": self.service, "client": self.client}[kind]

    def resource_ids(self) -> list[str]:
        return [
            self.id,
            self.provider.id,
            self.service.id,
            *(c.id for c in self.clients),
            self.time_off.id,
            self.appointment.id,
            f"{self.provider.id}/{self.service.id}",
            *([self.payment_id] if self.payment_id else []),
        ]


async def add_payment(db: asyncpg.Connection, t: Tenant) -> None:
    t.payment_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor, "
        "currency, status, method) VALUES ($1, $2, $3, $4, 2500, 'EUR', 'completed', 'card')",
        t.id,
        t.payment_id,
        t.client.id,
        t.appointment.id,
    )


# The request_ids tenant A used; B sends the same strings (they are scoped by tenant).
REQUEST_IDS = {
    "organization": "xt-create-organization",
    "update-organization": "xt-update-organization",
    "provider": "xt-create-provider",
    "service": "xt-create-service",
    "client": "xt-create-client",
    "offering": "xt-set-offering",
    "hours": "xt-replace-working-hours",
    "time_off": "xt-create-time-off",
    "appointment": "xt-create-appointment",
}

# Whole hours a few days ahead: inside the organization's default horizon.
_HOUR = int(time.time()) // 3600 * 3600


def _at(days: int, minutes: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=_HOUR + days * 86_400 + minutes * 60)


def _provider_msg(name: str) -> resources_pb2.Provider:
    return resources_pb2.Provider(display_name=name, time_zone="Europe/Berlin")


def _service_msg(name: str) -> resources_pb2.Service:
    return resources_pb2.Service(
        name=name,
        duration_minutes=30,
        price=common_pb2.Money(currency_code="EUR", amount_minor=2500),
    )


def _client_msg(name: str) -> resources_pb2.Client:
    return resources_pb2.Client(given_name=name, family_name="Tenant", email="a@example.com")


async def make_tenant(stubs: Stubs, tag: str, *, with_request_ids: bool) -> Tenant:
    def rid(kind: str) -> str:
        return REQUEST_IDS[kind] if with_request_ids else ""

    org = (
        await stubs.orgs.CreateOrganization(
            organizations_pb2.CreateOrganizationRequest(
                organization=resources_pb2.Organization(
                    name=f"Org {tag}", slug=f"xt-{uuid.uuid4().hex[:12]}", time_zone="UTC"
                ),
                # Global scope: a fresh one per tenant (another slug).
                request_id=f"{rid('organization')}-{uuid.uuid4().hex[:8]}"
                if with_request_ids
                else "",
            )
        )
    ).organization
    if with_request_ids:
        # A stored answer to an UpdateOrganization in A's scope.
        org = (
            await stubs.orgs.UpdateOrganization(
                organizations_pb2.UpdateOrganizationRequest(
                    organization=resources_pb2.Organization(id=org.id, name=f"Org {tag}!"),
                    request_id=rid("update-organization"),
                )
            )
        ).organization
    provider = (
        await stubs.providers.CreateProvider(
            providers_pb2.CreateProviderRequest(
                organization_id=org.id, provider=_provider_msg(tag), request_id=rid("provider")
            )
        )
    ).provider
    service = (
        await stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(
                organization_id=org.id, service=_service_msg(tag), request_id=rid("service")
            )
        )
    ).service
    clients = [
        (
            await stubs.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    organization_id=org.id,
                    client=_client_msg(f"{tag}{i}"),
                    request_id=rid("client") if i == 0 else "",
                )
            )
        ).client
        for i in range(2)
    ]
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org.id,
            offering=resources_pb2.Offering(provider_id=provider.id, service_id=service.id),
            request_id=rid("offering"),
        )
    )
    await stubs.schedules.ReplaceWorkingHours(
        schedules_pb2.ReplaceWorkingHoursRequest(
            organization_id=org.id,
            provider_id=provider.id,
            working_hours=[weekly(day, start, end) for day, start, end in ALL_DAY],
            request_id=rid("hours"),
        )
    )
    time_off = (
        await stubs.schedules.CreateTimeOff(
            schedules_pb2.CreateTimeOffRequest(
                organization_id=org.id,
                time_off=resources_pb2.TimeOff(
                    provider_id=provider.id, start_time=_at(4), end_time=_at(4, 120)
                ),
                request_id=rid("time_off"),
            )
        )
    ).time_off
    appointment = (
        await stubs.appointments.CreateAppointment(
            appointments_pb2.CreateAppointmentRequest(
                organization_id=org.id,
                appointment=_appointment_msg(provider.id, clients[0].id, service.id, _at(2)),
                request_id=rid("appointment"),
            )
        )
    ).appointment
    return Tenant(org, provider, service, clients, time_off, appointment)


def _appointment_msg(
    provider_id: str, client_id: str, service_id: str, start: timestamp_pb2.Timestamp
) -> resources_pb2.Appointment:
    return resources_pb2.Appointment(
        provider_id=provider_id, client_id=client_id, service_id=service_id, start_time=start
    )


async def snapshot(db: asyncpg.Connection, t: Tenant) -> dict[str, list[dict[str, Any]]]:
    """Everything of tenant ``t`` in the database, every column."""

    async def rows(sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await db.fetch(sql, *args)]

    out = {"organizations": await rows("SELECT * FROM organizations WHERE id = $1", t.id)}
    for table in (
        "providers",
        "services",
        "clients",
        "offerings",
        "working_hours",
        "date_overrides",
        "time_off",
        "appointments",
        "payments",
        "refunds",
    ):
        out[table] = await rows(
            f"SELECT * FROM {table} AS t WHERE organization_id = $1 ORDER BY t::text", t.id
        )
    out["audit_events"] = await rows(
        "SELECT * FROM audit_events WHERE organization_id = $1 OR resource_id = ANY($2::text[]) "
        "ORDER BY id",
        t.id,
        t.resource_ids(),
    )
    out["request_results"] = await rows(
        "SELECT * FROM request_results WHERE organization_id = $1 ORDER BY request_id", t.id
    )
    return out


async def audited_actions(db: asyncpg.Connection, resource_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY id", resource_id
    )
    return [r["action"] for r in rows]


# -- what an attack expects ----------------------------------------------------------


async def not_found(call: Awaitable[Any], resource_type: str, named: str, other: Tenant) -> None:
    """NOT_FOUND with ResourceInfo naming the id sent, nothing of the other tenant."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, (err.value.code(), err.value.details())
    info = details(err.value)
    assert info["ErrorInfo"].reason == f"{resource_type.upper()}_NOT_FOUND"
    camel = "".join(part.capitalize() for part in resource_type.split("_"))
    assert info["ResourceInfo"].resource_type == f"booking.v1.{camel}"
    assert info["ResourceInfo"].resource_name == named.lower()
    raw = dict(err.value.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
    for secret in (other.id, other.org.name):
        assert secret not in (err.value.details() or "")
        assert secret.encode() not in raw


@dataclass
class World:
    stubs: Stubs
    a: Tenant
    b: Tenant
    # For the services conftest's Stubs has no stub of (SummaryService).
    channel: grpc.aio.Channel

    @property
    def summaries(self) -> Any:
        return summaries_pb2_grpc.SummaryServiceStub(self.channel)

    def mixes(self, kind: str) -> list[tuple[str, str, Tenant]]:
        """(organization_id, resource id, the tenant that owns the resource)."""
        a, b = self.a, self.b
        return [
            (b.id, a.resource(kind).id, a),  # B naming A's resource
            (b.id.upper(), a.resource(kind).id.upper(), a),  # in upper case
            (a.id, b.resource(kind).id, b),  # mixing the other way round
        ]


# Per kind: (stub attribute, Get/Update request and response message names, a field
# an update sets).
_KINDS = {
    "provider": ("providers", providers_pb2, "GetProvider", "UpdateProvider", "display_name"),
    "service": ("catalog", catalog_pb2, "GetService", "UpdateService", "name"),
    "client": ("clients", clients_pb2, "GetClient", "UpdateClient", "given_name"),
}


def _get(kind: str) -> Callable[[World], Awaitable[None]]:
    stub_name, pb, get, _update, _field = _KINDS[kind]

    async def attack(w: World) -> None:
        rpc = getattr(getattr(w.stubs, stub_name), get)
        request = getattr(pb, f"{get}Request")
        for org, rid, owner in w.mixes(kind):
            await not_found(
                rpc(request(organization_id=org, **{f"{kind}_id": rid})), kind, rid, owner
            )

    return attack


def _update(kind: str) -> Callable[[World], Awaitable[None]]:
    stub_name, pb, _get_name, update, field = _KINDS[kind]

    async def attack(w: World) -> None:
        rpc = getattr(getattr(w.stubs, stub_name), update)
        request = getattr(pb, f"{update}Request")
        message = type(w.a.resource(kind))
        for org, rid, owner in w.mixes(kind):
            target = owner.resource(kind)
            variants = [
                # With the owner's etag and an explicit mask.
                request(
                    organization_id=org,
                    update_mask=field_mask_pb2.FieldMask(paths=[field]),
                    **{kind: message(id=rid, etag=target.etag, **{field: "Hacked"})},
                ),
                # Without etag and mask.
                request(organization_id=org, **{kind: message(id=rid, **{field: "Hacked"})}),
                # The owner's organization_id inside the resource message.
                request(
                    organization_id=org,
                    **{kind: message(id=rid, organization_id=owner.id, **{field: "Hacked"})},
                ),
            ]
            if owner is w.a:
                # The request_id A created it with: A's stored answer is in A's
                # scope, never replayed to B. (The other way round the id is
                # taken in A's own scope: REQUEST_ID_REUSED, rightly.)
                variants.append(
                    request(
                        organization_id=org,
                        request_id=REQUEST_IDS[kind],
                        **{kind: message(id=rid, **{field: "Hacked"})},
                    )
                )
            for variant in variants:
                await not_found(rpc(variant), kind, rid, owner)

    return attack


def _create(kind: str) -> Callable[[World], Awaitable[None]]:
    stub_name, pb, *_ = _KINDS[kind]
    method = {"provider": "CreateProvider", "service": "CreateService", "client": "CreateClient"}
    bodies = {"provider": _provider_msg, "service": _service_msg, "client": _client_msg}

    async def attack(w: World) -> None:
        """B repeats A's create, same request_id and body: a new row of B's, not A's answer."""
        rpc = getattr(getattr(w.stubs, stub_name), method[kind])
        request = getattr(pb, f"{method[kind]}Request")
        body = bodies[kind]("A0" if kind == "client" else "A")  # A's very request body
        response = await rpc(
            request(organization_id=w.b.id, request_id=REQUEST_IDS[kind], **{kind: body})
        )
        created = getattr(response, kind)
        assert created.organization_id == w.b.id
        assert created.id not in w.a.resource_ids()

    return attack


async def list_clients(w: World) -> None:
    stubs, a, b = w.stubs, w.a, w.b
    listed = await stubs.clients.ListClients(
        clients_pb2.ListClientsRequest(
            organization_id=b.id, page_size=1000, count_mode=common_pb2.COUNT_MODE_EXACT
        )
    )
    assert sorted(c.id for c in listed.clients) == sorted(c.id for c in b.clients)
    assert listed.page_info.total_size == len(b.clients)
    for query in (a.client.given_name, a.client.given_name.lower()[:2]):
        found = await stubs.clients.ListClients(
            clients_pb2.ListClientsRequest(organization_id=b.id.upper(), query=query)
        )
        assert list(found.clients) == []
    # A's page token is A's: refused to B (and B's to A).
    for owner, caller in ((a, b), (b, a)):
        first = await stubs.clients.ListClients(
            clients_pb2.ListClientsRequest(organization_id=owner.id, page_size=1)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.clients.ListClients(
                clients_pb2.ListClientsRequest(
                    organization_id=caller.id, page_size=1, page_token=first.next_page_token
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)["ErrorInfo"].reason == "PAGE_TOKEN_MISMATCH"
        assert violated_fields(err.value) == {"page_token"}


async def list_audit_events(w: World) -> None:
    stubs, a, b = w.stubs, w.a, w.b
    for rtype, rid in (
        ("client", a.client.id),
        ("provider", a.provider.id),
        ("service", a.service.id),
        ("organization", a.id),
    ):
        found = await stubs.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                organization_id=b.id, resource_type=rtype, resource_id=rid
            )
        )
        assert list(found.audit_events) == []
    everything = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(organization_id=b.id, page_size=1000)
    )
    assert everything.audit_events
    assert {e.organization_id for e in everything.audit_events} == {b.id}
    assert not {e.resource_id for e in everything.audit_events} & set(a.resource_ids())
    first = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(organization_id=a.id, page_size=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                organization_id=b.id, page_size=1, page_token=first.next_page_token
            )
        )
    assert details(err.value)["ErrorInfo"].reason == "PAGE_TOKEN_MISMATCH"


async def _token_refused(
    call: Callable[..., Awaitable[Any]], make: Callable[..., Any], w: World
) -> None:
    """A page token of one tenant's list is refused to the other (both ways)."""
    for owner, caller in ((w.a, w.b), (w.b, w.a)):
        first = await call(make(organization_id=owner.id, page_size=1))
        assert first.next_page_token or not first.page_info.has_next
        if not first.next_page_token:
            continue
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(
                make(organization_id=caller.id, page_size=1, page_token=first.next_page_token)
            )
        assert details(err.value)["ErrorInfo"].reason == "PAGE_TOKEN_MISMATCH"


async def list_providers(w: World) -> None:
    rpc, make = w.stubs.providers.ListProviders, providers_pb2.ListProvidersRequest
    for org, _pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for request in (
            make(organization_id=org, service_id=owner.service.id),
            make(organization_id=org, query=owner.provider.display_name),
            make(organization_id=org, query=owner.provider.display_name.lower()[:1]),
        ):
            assert list((await rpc(request)).providers) == []
        everything = await rpc(make(organization_id=org, count_mode=common_pb2.COUNT_MODE_EXACT))
        assert [p.id for p in everything.providers] == [mine.provider.id]
        assert everything.page_info.total_size == 1
    await _token_refused(rpc, make, w)


async def list_services(w: World) -> None:
    rpc, make = w.stubs.catalog.ListServices, catalog_pb2.ListServicesRequest
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for request in (
            make(organization_id=org, provider_id=pid),
            make(organization_id=org, query=owner.service.name),
        ):
            assert list((await rpc(request)).services) == []
        everything = await rpc(make(organization_id=org, count_mode=common_pb2.COUNT_MODE_EXACT))
        assert [s.id for s in everything.services] == [mine.service.id]
    await _token_refused(rpc, make, w)


async def list_appointments(w: World) -> None:
    rpc, make = w.stubs.appointments.ListAppointments, appointments_pb2.ListAppointmentsRequest
    full = common_pb2.VIEW_FULL
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for request in (
            make(organization_id=org, provider_ids=[pid], view=full),
            make(organization_id=org, client_id=owner.client.id, view=full),
            make(organization_id=org, service_id=owner.service.id, view=full),
            make(
                organization_id=org, provider_ids=[pid, mine.provider.id], client_id=owner.client.id
            ),
        ):
            listed = await rpc(request)
            assert list(listed.appointments) == [] and not listed.clients and not listed.payments
        everything = await rpc(make(organization_id=org, view=full))
        assert [x.id for x in everything.appointments] == [mine.appointment.id]
        assert set(everything.clients) == {mine.client.id}
        assert set(everything.services) == {mine.service.id}
        assert set(everything.providers) == {mine.provider.id}
        assert [p.id for p in everything.payments] == [mine.payment_id]
    await _token_refused(rpc, make, w)


async def list_payments(w: World) -> None:
    rpc, make = w.stubs.payments.ListPayments, payments_pb2.ListPaymentsRequest
    full = common_pb2.VIEW_FULL
    for org, _pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for request in (
            make(organization_id=org, client_id=owner.client.id, view=full),
            make(organization_id=org, appointment_id=owner.appointment.id, view=full),
        ):
            listed = await rpc(request)
            assert list(listed.payments) == [] and not listed.appointments and not listed.clients
        everything = await rpc(make(organization_id=org, view=full))
        assert [p.id for p in everything.payments] == [mine.payment_id]
        assert set(everything.appointments) == {mine.appointment.id}
        assert set(everything.clients) == {mine.client.id}
    await _token_refused(rpc, make, w)


async def list_client_history(w: World) -> None:
    rpc, make = w.stubs.clients.ListClientHistory, clients_pb2.ListClientHistoryRequest
    for org, _pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for client_id in (owner.client.id, owner.client.id.upper()):
            listed = await rpc(make(organization_id=org, client_id=client_id))
            assert list(listed.entries) == []
        own = await rpc(make(organization_id=org, client_id=mine.client.id))
        assert {e.appointment.id or e.payment.id for e in own.entries} == {
            mine.appointment.id,
            mine.payment_id,
        }
    for owner, caller in ((w.a, w.b), (w.b, w.a)):
        first = await rpc(make(organization_id=owner.id, client_id=owner.client.id, page_size=1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc(
                make(
                    organization_id=caller.id,
                    client_id=owner.client.id,
                    page_size=1,
                    page_token=first.next_page_token,
                )
            )
        assert details(err.value)["ErrorInfo"].reason == "PAGE_TOKEN_MISMATCH"


def _payments(w: World) -> list[tuple[str, str, Tenant]]:
    """(organization_id, payment id, owner): B naming A's payment, in upper
    case, and A naming B's."""
    return [
        (w.b.id, w.a.payment_id, w.a),
        (w.b.id.upper(), w.a.payment_id.upper(), w.a),
        (w.a.id, w.b.payment_id, w.b),
    ]


async def get_payment(w: World) -> None:
    for org, pid, owner in _payments(w):
        await not_found(
            w.stubs.payments.GetPayment(
                payments_pb2.GetPaymentRequest(organization_id=org, payment_id=pid)
            ),
            "payment",
            pid,
            owner,
        )


async def refund_payment(w: World) -> None:
    for org, pid, owner in _payments(w):
        variants: list[dict[str, Any]] = [{}, {"amount_minor": 1, "etag": '"v1"'}]
        for fields in variants:
            await not_found(
                w.stubs.payments.RefundPayment(
                    payments_pb2.RefundPaymentRequest(organization_id=org, payment_id=pid, **fields)
                ),
                "payment",
                pid,
                owner,
            )


async def record_payment(w: World) -> None:
    """A payment naming the other tenant's client, or its appointment: NOT_FOUND."""
    for org, _pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        money = common_pb2.Money(currency_code="EUR", amount_minor=100)
        card = resources_pb2.PAYMENT_METHOD_CARD
        for payment, kind, named in (
            (
                resources_pb2.Payment(client_id=owner.client.id, amount=money, method=card),
                "client",
                owner.client.id,
            ),
            (
                resources_pb2.Payment(
                    client_id=mine.client.id,
                    appointment_id=owner.appointment.id,
                    amount=money,
                    method=card,
                ),
                "appointment",
                owner.appointment.id,
            ),
        ):
            await not_found(
                w.stubs.payments.RecordPayment(
                    payments_pb2.RecordPaymentRequest(organization_id=org, payment=payment)
                ),
                kind,
                named,
                owner,
            )


async def get_provider_schedule(w: World) -> None:
    day = datetime.fromtimestamp(_at(2).seconds, UTC).date()  # the appointments' date (UTC zone)
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        got = await w.stubs.schedules.GetProviderSchedule(
            schedules_pb2.GetProviderScheduleRequest(
                organization_id=org,
                provider_ids=[pid, mine.provider.id],
                date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
            )
        )
        foreign, own = got.providers
        assert foreign.error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert not foreign.appointments and not foreign.time_off and not foreign.working_intervals
        assert not foreign.display_name and not foreign.time_zone
        raw = foreign.SerializeToString()
        for secret in (owner.id, owner.org.name, owner.provider.display_name):
            assert secret.encode() not in raw
        assert not own.HasField("error")
        assert {x.appointment.id for x in own.appointments} <= {mine.appointment.id}


async def get_organization(w: World) -> None:
    """The org id is the tenant: naming A's id is acting as A (access control,
    still to come, is what will refuse it). What holds here: B's id gives B
    and nothing of A, in any letter case; an unknown id is NOT_FOUND."""
    for spelled in (w.b.id, w.b.id.upper()):
        got = await w.stubs.orgs.GetOrganization(
            organizations_pb2.GetOrganizationRequest(organization_id=spelled)
        )
        assert got.organization == w.b.org
    unknown = str(uuid.uuid4())
    await not_found(
        w.stubs.orgs.GetOrganization(
            organizations_pb2.GetOrganizationRequest(organization_id=unknown)
        ),
        "organization",
        unknown,
        w.a,
    )


async def update_organization(w: World) -> None:
    """Its own case, the org id being the tenant (see get_organization): B
    updating B with A's request_id and etag changes B only and is not answered
    with A's stored response; an unknown id is NOT_FOUND and creates nothing;
    A's slug is refused to B without a word about A."""
    stubs, a, b = w.stubs, w.a, w.b
    updated = (
        await stubs.orgs.UpdateOrganization(
            organizations_pb2.UpdateOrganizationRequest(
                organization=resources_pb2.Organization(id=b.id, name="B renamed"),
                request_id=REQUEST_IDS["update-organization"],
            )
        )
    ).organization
    assert (updated.id, updated.name) == (b.id, "B renamed")
    stale = await stubs.orgs.UpdateOrganization(
        organizations_pb2.UpdateOrganizationRequest(
            organization=resources_pb2.Organization(id=b.id.upper(), name="B", etag=a.org.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
    )
    # B is at v2 after the rename: A's etag "v2" names a version, not a row.
    assert stale.organization.id == b.id
    unknown = str(uuid.uuid4())
    await not_found(
        stubs.orgs.UpdateOrganization(
            organizations_pb2.UpdateOrganizationRequest(
                organization=resources_pb2.Organization(id=unknown, name="Ghost")
            )
        ),
        "organization",
        unknown,
        a,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.orgs.UpdateOrganization(
            organizations_pb2.UpdateOrganizationRequest(
                organization=resources_pb2.Organization(id=b.id, slug=a.org.slug),
                update_mask=field_mask_pb2.FieldMask(paths=["slug"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert a.id not in (err.value.details() or "")
    raw = dict(err.value.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
    assert a.id.encode() not in raw


# -- scheduling, availability, booking -------------------------------------------------


async def refused(call: Awaitable[Any], other: Tenant, reason: str | None = None) -> None:
    """NOT_FOUND (with ``reason`` when given) and nothing of the other tenant."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, (err.value.code(), err.value.details())
    if reason is not None:
        assert details(err.value)["ErrorInfo"].reason == reason
    raw = dict(err.value.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
    for secret in (other.id, other.org.name):
        assert secret not in (err.value.details() or "")
        assert secret.encode() not in raw


def _providers(w: World) -> list[tuple[str, str, Tenant]]:
    """(organization_id, provider id, owner): B naming A's provider, in upper
    case, and A naming B's."""
    return [
        (w.b.id, w.a.provider.id, w.a),
        (w.b.id.upper(), w.a.provider.id.upper(), w.a),
        (w.a.id, w.b.provider.id, w.b),
    ]


async def set_offering(w: World) -> None:
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for provider_id, service_id in (
            (pid, owner.service.id),  # the other tenant's link
            (pid, mine.service.id),  # the other's provider with my service
            (mine.provider.id, owner.service.id),  # my provider with the other's service
        ):
            await refused(
                w.stubs.catalog.SetOffering(
                    catalog_pb2.SetOfferingRequest(
                        organization_id=org,
                        offering=resources_pb2.Offering(
                            provider_id=provider_id,
                            service_id=service_id,
                            duration_minutes=5,
                            etag=w.a.provider.etag,
                        ),
                        request_id=REQUEST_IDS["offering"] if owner is w.a else "",
                    )
                ),
                owner,
            )


async def delete_offering(w: World) -> None:
    for org, pid, owner in _providers(w):
        await refused(
            w.stubs.catalog.DeleteOffering(
                catalog_pb2.DeleteOfferingRequest(
                    organization_id=org, provider_id=pid, service_id=owner.service.id
                )
            ),
            owner,
        )


async def list_offerings(w: World) -> None:
    for org, pid, owner in _providers(w):
        for request in (
            catalog_pb2.ListOfferingsRequest(organization_id=org, provider_id=pid),
            catalog_pb2.ListOfferingsRequest(organization_id=org, service_id=owner.service.id),
        ):
            listed = await w.stubs.catalog.ListOfferings(request)
            assert list(listed.offerings) == []
    mine = await w.stubs.catalog.ListOfferings(
        catalog_pb2.ListOfferingsRequest(organization_id=w.b.id)
    )
    assert [(o.provider_id, o.service_id) for o in mine.offerings] == [
        (w.b.provider.id, w.b.service.id)
    ]


async def replace_working_hours(w: World) -> None:
    for org, pid, owner in _providers(w):
        await not_found(
            w.stubs.schedules.ReplaceWorkingHours(
                schedules_pb2.ReplaceWorkingHoursRequest(
                    organization_id=org,
                    provider_id=pid,
                    working_hours=[weekly(1, 0, 60)],
                    request_id=REQUEST_IDS["hours"] if owner is w.a else "",
                )
            ),
            "provider",
            pid,
            owner,
        )


async def get_working_hours(w: World) -> None:
    for org, pid, owner in _providers(w):
        await not_found(
            w.stubs.schedules.GetWorkingHours(
                schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=pid)
            ),
            "provider",
            pid,
            owner,
        )


def _date(days: int) -> date_pb2.Date:
    d = datetime.fromtimestamp(_HOUR + days * 86_400, UTC).date()
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


async def replace_date_overrides(w: World) -> None:
    for org, pid, owner in _providers(w):
        await not_found(
            w.stubs.schedules.ReplaceDateOverrides(
                schedules_pb2.ReplaceDateOverridesRequest(
                    organization_id=org,
                    provider_id=pid,
                    start_date=_date(1),
                    end_date=_date(9),
                    date_overrides=[resources_pb2.DateOverride(date=_date(2), closed=True)],
                )
            ),
            "provider",
            pid,
            owner,
        )


async def get_date_overrides(w: World) -> None:
    for org, pid, owner in _providers(w):
        await not_found(
            w.stubs.schedules.GetDateOverrides(
                schedules_pb2.GetDateOverridesRequest(
                    organization_id=org, provider_id=pid, start_date=_date(0), end_date=_date(30)
                )
            ),
            "provider",
            pid,
            owner,
        )


async def create_time_off(w: World) -> None:
    for org, pid, owner in _providers(w):
        await not_found(
            w.stubs.schedules.CreateTimeOff(
                schedules_pb2.CreateTimeOffRequest(
                    organization_id=org,
                    time_off=resources_pb2.TimeOff(
                        provider_id=pid,
                        organization_id=owner.id,
                        start_time=_at(2),
                        end_time=_at(3),
                    ),
                    request_id=REQUEST_IDS["time_off"] if owner is w.a else "",
                )
            ),
            "provider",
            pid,
            owner,
        )


async def delete_time_off(w: World) -> None:
    for org, owner in ((w.b.id, w.a), (w.b.id.upper(), w.a), (w.a.id, w.b)):
        for spelled in (owner.time_off.id, owner.time_off.id.upper()):
            await not_found(
                w.stubs.schedules.DeleteTimeOff(
                    schedules_pb2.DeleteTimeOffRequest(organization_id=org, time_off_id=spelled)
                ),
                "time_off",
                spelled,
                owner,
            )


async def list_time_off(w: World) -> None:
    for org, pid, owner in _providers(w):
        try:
            listed = await w.stubs.schedules.ListTimeOff(
                schedules_pb2.ListTimeOffRequest(organization_id=org, provider_id=pid)
            )
        except grpc.aio.AioRpcError:
            await refused(
                w.stubs.schedules.ListTimeOff(
                    schedules_pb2.ListTimeOffRequest(organization_id=org, provider_id=pid)
                ),
                owner,
            )
        else:
            assert list(listed.time_off) == []


async def get_availability(w: World) -> None:
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        got = await w.stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(
                organization_id=org,
                provider_ids=[pid, mine.provider.id],
                service_id=mine.service.id,
                start_time=_at(1),
                end_time=_at(8),
                first_available_count=5,
            )
        )
        foreign, own = got.providers
        assert foreign.provider_id == pid.lower() and not foreign.slots
        assert foreign.error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert own.slots and not own.HasField("error")
        assert {s.provider_id for s in got.first_available} == {mine.provider.id}
        # The other tenant's service.
        await refused(
            w.stubs.availability.GetAvailability(
                availability_pb2.GetAvailabilityRequest(
                    organization_id=org,
                    provider_ids=[mine.provider.id],
                    service_id=owner.service.id,
                    start_time=_at(1),
                    end_time=_at(2),
                )
            ),
            owner,
            "SERVICE_NOT_FOUND",
        )


async def check_conflicts(w: World) -> None:
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for provider_id, service_id, exclude, reason in (
            (pid, mine.service.id, "", "PROVIDER_NOT_FOUND"),
            (mine.provider.id, owner.service.id, "", "SERVICE_NOT_FOUND"),
            (mine.provider.id, mine.service.id, owner.appointment.id, "APPOINTMENT_NOT_FOUND"),
        ):
            await refused(
                w.stubs.availability.CheckConflicts(
                    availability_pb2.CheckConflictsRequest(
                        organization_id=org,
                        provider_id=provider_id,
                        service_id=service_id,
                        start_time=owner.appointment.start_time,
                        exclude_appointment_id=exclude,
                    )
                ),
                owner,
                reason,
            )


async def create_appointment(w: World) -> None:
    """Any of provider, client, service of the other tenant: NOT_FOUND,
    nothing booked; the same request_id as A's in B's scope books B's own."""
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for provider_id, client_id, service_id in (
            (pid, mine.client.id, mine.service.id),
            (mine.provider.id, owner.client.id, mine.service.id),
            (mine.provider.id, mine.client.id, owner.service.id),
        ):
            await refused(
                w.stubs.appointments.CreateAppointment(
                    appointments_pb2.CreateAppointmentRequest(
                        organization_id=org,
                        appointment=_appointment_msg(provider_id, client_id, service_id, _at(6)),
                        override_rules=True,
                    )
                ),
                owner,
            )
    created = await w.stubs.appointments.CreateAppointment(
        appointments_pb2.CreateAppointmentRequest(
            organization_id=w.b.id,
            appointment=_appointment_msg(w.b.provider.id, w.b.client.id, w.b.service.id, _at(3)),
            request_id=REQUEST_IDS["appointment"],
        )
    )
    assert created.appointment.organization_id == w.b.id
    assert created.appointment.id not in w.a.resource_ids()


def _appointments(w: World) -> list[tuple[str, str, Tenant]]:
    """(organization_id, appointment id, owner)."""
    return [
        (w.b.id, w.a.appointment.id, w.a),
        (w.b.id.upper(), w.a.appointment.id.upper(), w.a),
        (w.a.id, w.b.appointment.id, w.b),
    ]


def _transition(method: str) -> Callable[[World], Awaitable[None]]:
    request = getattr(appointments_pb2, f"{method}Request")

    async def attack(w: World) -> None:
        rpc = getattr(w.stubs.appointments, method)
        for org, aid, owner in _appointments(w):
            extra: dict[str, Any] = {}
            if method != "GetAppointment":
                extra["etag"] = owner.appointment.etag
                if owner is w.a:
                    extra["request_id"] = REQUEST_IDS["appointment"]
            if method == "RescheduleAppointment":
                extra["start_time"] = _at(7)
            await not_found(
                rpc(request(organization_id=org, appointment_id=aid, **extra)),
                "appointment",
                aid,
                owner,
            )

    return attack


async def reschedule_appointment(w: World) -> None:
    await _transition("RescheduleAppointment")(w)
    # My own appointment onto the other tenant's provider.
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        await refused(
            w.stubs.appointments.RescheduleAppointment(
                appointments_pb2.RescheduleAppointmentRequest(
                    organization_id=org,
                    appointment_id=mine.appointment.id,
                    start_time=_at(7),
                    provider_id=pid,
                    override_rules=True,
                )
            ),
            owner,
            "PROVIDER_NOT_FOUND",
        )


# -- summaries (read from the rollups) ----------------------------------------------------


def _days() -> dict[str, date_pb2.Date]:
    """start_date / end_date around the tenants' appointments (UTC zone)."""
    return {"start_date": _date(0), "end_date": _date(9)}


async def get_revenue_summary(w: World) -> None:
    """The other tenant's providers and services contribute nothing; my own
    figures are mine only (each tenant has one pending EUR appointment)."""
    request = summaries_pb2.GetRevenueSummaryRequest
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        for foreign in (
            request(organization_id=org, provider_ids=[pid], **_days()),
            request(organization_id=org, service_ids=[owner.service.id.upper()], **_days()),
        ):
            assert not (await w.summaries.GetRevenueSummary(foreign)).currencies
        everything = await w.summaries.GetRevenueSummary(request(organization_id=org, **_days()))
        own = await w.summaries.GetRevenueSummary(
            request(organization_id=org, provider_ids=[pid, mine.provider.id], **_days())
        )
        assert everything.currencies == own.currencies
        [eur] = own.currencies
        assert eur.totals.appointments.pending == 1


async def get_provider_metrics(w: World) -> None:
    for org, pid, owner in _providers(w):
        mine = w.b if owner is w.a else w.a
        got = await w.summaries.GetProviderMetrics(
            summaries_pb2.GetProviderMetricsRequest(
                organization_id=org, provider_ids=[pid, mine.provider.id], **_days()
            )
        )
        foreign, own = got.providers
        assert foreign.provider_id == pid.lower()
        assert foreign.error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert foreign == summaries_pb2.ProviderMetrics(
            provider_id=foreign.provider_id, error=foreign.error
        )
        raw = foreign.SerializeToString()
        for secret in (owner.id, owner.org.name, owner.provider.display_name):
            assert secret.encode() not in raw
        assert not own.HasField("error") and own.appointments.pending == 1


async def get_client_balance(w: World) -> None:
    for org, rid, owner in w.mixes("client"):
        await not_found(
            w.summaries.GetClientBalance(
                summaries_pb2.GetClientBalanceRequest(organization_id=org, client_id=rid)
            ),
            "client",
            rid,
            owner,
        )


async def list_client_balances(w: World) -> None:
    """B's clients in credit (a payment each); A's list shows none of them,
    B's none of A's; tokens are refused across tenants."""
    for client in w.b.clients:
        await w.stubs.payments.RecordPayment(
            payments_pb2.RecordPaymentRequest(
                organization_id=w.b.id,
                payment=resources_pb2.Payment(
                    client_id=client.id,
                    amount=common_pb2.Money(currency_code="EUR", amount_minor=100),
                    method=resources_pb2.PAYMENT_METHOD_CASH,
                ),
            )
        )
    rpc, make = w.summaries.ListClientBalances, summaries_pb2.ListClientBalancesRequest
    own = await rpc(make(organization_id=w.b.id, currency_code="EUR", page_size=1000))
    assert sorted(x.client_id for x in own.balances) == sorted(c.id for c in w.b.clients)
    other = await rpc(make(organization_id=w.a.id.upper(), currency_code="EUR", page_size=1000))
    assert not other.balances
    first = await rpc(make(organization_id=w.b.id, currency_code="EUR", page_size=1))
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rpc(
            make(
                organization_id=w.a.id,
                currency_code="EUR",
                page_size=1,
                page_token=first.next_page_token,
            )
        )
    assert details(err.value)["ErrorInfo"].reason == "PAGE_TOKEN_MISMATCH"


async def get_dashboard(w: World) -> None:
    """Each tenant's day has its own appointment only, its own providers."""
    day = datetime.fromtimestamp(_at(2).seconds, UTC).date()
    for t in (w.a, w.b):
        got = await w.summaries.GetDashboard(
            summaries_pb2.GetDashboardRequest(
                organization_id=t.id.upper(),
                date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
                period=summaries_pb2.GRANULARITY_DAY,
                currency_code="EUR",
            )
        )
        assert got.today.pending == 1 and got.today.total == 1
        assert not got.top_providers


@dataclass(frozen=True)
class Attack:
    run: Callable[[World], Awaitable[None]]
    # Whether the attack may change B (a create or an update of B's own); A never.
    changes_b: bool = False


# THE TABLE: every RPC that names a resource or lists. A new RPC joins with ONE
# entry here (test_every_rpc_has_an_attack fails until it has one).
ATTACKS: dict[str, Attack] = {
    "booking.v1.OrganizationService/GetOrganization": Attack(get_organization),
    "booking.v1.OrganizationService/UpdateOrganization": Attack(
        update_organization, changes_b=True
    ),
    "booking.v1.ProviderService/CreateProvider": Attack(_create("provider"), changes_b=True),
    "booking.v1.ProviderService/GetProvider": Attack(_get("provider")),
    "booking.v1.ProviderService/UpdateProvider": Attack(_update("provider")),
    "booking.v1.CatalogService/CreateService": Attack(_create("service"), changes_b=True),
    "booking.v1.CatalogService/GetService": Attack(_get("service")),
    "booking.v1.CatalogService/UpdateService": Attack(_update("service")),
    "booking.v1.ClientService/CreateClient": Attack(_create("client"), changes_b=True),
    "booking.v1.ClientService/GetClient": Attack(_get("client")),
    "booking.v1.ClientService/UpdateClient": Attack(_update("client")),
    "booking.v1.ClientService/ListClients": Attack(list_clients),
    "booking.v1.ClientService/ListClientHistory": Attack(list_client_history),
    "booking.v1.ProviderService/ListProviders": Attack(list_providers),
    "booking.v1.CatalogService/ListServices": Attack(list_services),
    "booking.v1.AppointmentService/ListAppointments": Attack(list_appointments),
    "booking.v1.PaymentService/ListPayments": Attack(list_payments),
    "booking.v1.PaymentService/RecordPayment": Attack(record_payment),
    "booking.v1.PaymentService/GetPayment": Attack(get_payment),
    "booking.v1.PaymentService/RefundPayment": Attack(refund_payment),
    "booking.v1.ScheduleService/GetProviderSchedule": Attack(get_provider_schedule),
    "booking.v1.AuditService/ListAuditEvents": Attack(list_audit_events),
    "booking.v1.CatalogService/SetOffering": Attack(set_offering),
    "booking.v1.CatalogService/DeleteOffering": Attack(delete_offering),
    "booking.v1.CatalogService/ListOfferings": Attack(list_offerings),
    "booking.v1.ScheduleService/ReplaceWorkingHours": Attack(replace_working_hours),
    "booking.v1.ScheduleService/GetWorkingHours": Attack(get_working_hours),
    "booking.v1.ScheduleService/ReplaceDateOverrides": Attack(replace_date_overrides),
    "booking.v1.ScheduleService/GetDateOverrides": Attack(get_date_overrides),
    "booking.v1.ScheduleService/CreateTimeOff": Attack(create_time_off),
    "booking.v1.ScheduleService/DeleteTimeOff": Attack(delete_time_off),
    "booking.v1.ScheduleService/ListTimeOff": Attack(list_time_off),
    "booking.v1.AvailabilityService/GetAvailability": Attack(get_availability),
    "booking.v1.AvailabilityService/CheckConflicts": Attack(check_conflicts),
    "booking.v1.AppointmentService/CreateAppointment": Attack(create_appointment, changes_b=True),
    "booking.v1.AppointmentService/GetAppointment": Attack(_transition("GetAppointment")),
    "booking.v1.AppointmentService/RescheduleAppointment": Attack(reschedule_appointment),
    "booking.v1.AppointmentService/CancelAppointment": Attack(_transition("CancelAppointment")),
    "booking.v1.AppointmentService/ConfirmAppointment": Attack(_transition("ConfirmAppointment")),
    "booking.v1.AppointmentService/CompleteAppointment": Attack(_transition("CompleteAppointment")),
    "booking.v1.AppointmentService/MarkAppointmentNoShow": Attack(
        _transition("MarkAppointmentNoShow")
    ),
    "booking.v1.SummaryService/GetRevenueSummary": Attack(get_revenue_summary),
    "booking.v1.SummaryService/GetProviderMetrics": Attack(get_provider_metrics),
    "booking.v1.SummaryService/GetClientBalance": Attack(get_client_balance),
    "booking.v1.SummaryService/ListClientBalances": Attack(list_client_balances, changes_b=True),
    "booking.v1.SummaryService/GetDashboard": Attack(get_dashboard),
}

# RPCs without an attack, each with the reason.
EXEMPT = {
    # No tenant exists before it: it names no resource and lists nothing. Its
    # request_id is global by design (GLOBAL_SCOPE); another caller's create
    # can only be replayed with the very same request (same slug), which is
    # then the same organization.
    "booking.v1.OrganizationService/CreateOrganization",
}


def all_rpcs() -> set[str]:
    return {
        f"{s.full_name}/{m.name}"
        for s in SERVICES
        for m in s.pb2.DESCRIPTOR.services_by_name[s.short_name].methods
    }


def test_every_rpc_has_an_attack() -> None:
    rpcs = all_rpcs()
    assert len(rpcs) >= 14
    missing = rpcs - EXEMPT - set(ATTACKS)
    assert not missing, f"RPCs without a cross-tenant attack (add ONE entry each): {missing}"
    assert not set(ATTACKS) - rpcs, "attacks on RPCs that do not exist"
    assert not EXEMPT & set(ATTACKS)


@pytest.mark.parametrize("rpc", sorted(ATTACKS))
async def test_other_tenants_rows_are_out_of_reach(
    rpc: str, stubs: Stubs, db: asyncpg.Connection, channel: grpc.aio.Channel
) -> None:
    a = await make_tenant(stubs, "A", with_request_ids=True)
    b = await make_tenant(stubs, "B", with_request_ids=False)
    for t in (a, b):
        await add_payment(db, t)
    before_a, before_b = await snapshot(db, a), await snapshot(db, b)
    attack = ATTACKS[rpc]
    await attack.run(World(stubs, a, b, channel))
    after_a = await snapshot(db, a)
    for table, rows in before_a.items():
        assert after_a[table] == rows, f"{rpc} changed tenant A's {table}"
    if not attack.changes_b:
        after_b = await snapshot(db, b)
        for table, rows in before_b.items():
            assert after_b[table] == rows, f"{rpc} changed tenant B's {table}"
    for rid in (a.service.id, *(c.id for c in a.clients), a.time_off.id, a.appointment.id):
        assert await audited_actions(db, rid) == ["create"]
    assert await audited_actions(db, a.provider.id) == ["create", "replace_working_hours"]
    assert await audited_actions(db, a.id) == ["create", "update"]
