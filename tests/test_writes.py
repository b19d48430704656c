"""The write path: validation, errors with details, request ids, audit, etags."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from booking.v1 import (
    audit_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    organizations_pb2,
    providers_pb2,
    resources_pb2,
)
from google.protobuf import field_mask_pb2

from server.db.engine import Conn, to_asyncpg_dsn
from server.queries.requests import purge_request_results
from server.testing import assert_eventually, running_server, test_settings
from tests.conftest import Stubs, details, new_org, violated_fields

Client = resources_pb2.Client


async def create_client(stubs: Stubs, org: str, **fields: Any) -> resources_pb2.Client:
    fields.setdefault("family_name", "Doe")
    response = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(organization_id=org, client=Client(**fields))
    )
    return response.client


async def audit_events(stubs: Stubs, org: str, **filters: Any) -> list[resources_pb2.AuditEvent]:
    response = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(organization_id=org, page_size=1000, **filters)
    )
    return list(response.audit_events)


async def test_create_get_update_client_round_trip(stubs: Stubs, org: str) -> None:
    created = await create_client(
        stubs,
        org,
        given_name="Ada",
        family_name="Lovelace",
        email="ada@example.com",
        phone="+441234567890",
        external_id="crm-1",
    )
    assert created.id and created.organization_id == org and created.active
    assert created.etag == '"v1"'
    got = (
        await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=created.id)
        )
    ).client
    assert got == created
    updated = (
        await stubs.clients.UpdateClient(
            clients_pb2.UpdateClientRequest(
                organization_id=org,
                client=Client(id=created.id, email="ada@lovelace.org", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["email"]),
            )
        )
    ).client
    assert updated.email == "ada@lovelace.org"
    assert updated.given_name == "Ada" and updated.etag == '"v2"'
    events = await audit_events(stubs, org, resource_type="client", resource_id=created.id)
    assert [(e.action, list(e.changed_fields)) for e in events] == [
        ("update", ["email"]),
        ("create", []),
    ]


async def test_bad_input_is_invalid_argument_with_field_violations(stubs: Stubs, org: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org,
                client=Client(given_name="x" * 201, email="nope", phone="12345"),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"client.given_name", "client.email", "client.phone"}
    assert await audit_events(stubs, org, resource_type="client") == []


@pytest.mark.parametrize(
    ("call", "request_", "fields"),
    [
        (
            "orgs.CreateOrganization",
            organizations_pb2.CreateOrganizationRequest(
                organization=resources_pb2.Organization(
                    name="", slug="Bad Slug", time_zone="Mars/X"
                )
            ),
            {"organization.name", "organization.slug", "organization.time_zone"},
        ),
        (
            "orgs.GetOrganization",
            organizations_pb2.GetOrganizationRequest(organization_id="1"),
            {"organization_id"},
        ),
        (
            "orgs.UpdateOrganization",
            organizations_pb2.UpdateOrganizationRequest(
                organization=resources_pb2.Organization(id="x", slug="-")
            ),
            {"organization.id", "organization.slug"},
        ),
        (
            "providers.CreateProvider",
            providers_pb2.CreateProviderRequest(
                organization_id="", provider=resources_pb2.Provider(time_zone="UTC")
            ),
            {"organization_id", "provider.display_name"},
        ),
        (
            "providers.GetProvider",
            providers_pb2.GetProviderRequest(provider_id="p"),
            {"organization_id", "provider_id"},
        ),
        (
            "providers.UpdateProvider",
            providers_pb2.UpdateProviderRequest(
                organization_id=str(uuid.uuid4()), provider=resources_pb2.Provider(id="p")
            ),
            {"provider.id"},
        ),
        (
            "catalog.CreateService",
            catalog_pb2.CreateServiceRequest(
                organization_id=str(uuid.uuid4()),
                service=resources_pb2.Service(
                    name="Cut",
                    duration_minutes=0,
                    price=common_pb2.Money(currency_code="eur", amount_minor=-1),
                ),
            ),
            {
                "service.duration_minutes",
                "service.price.currency_code",
                "service.price.amount_minor",
            },
        ),
        (
            "catalog.GetService",
            catalog_pb2.GetServiceRequest(organization_id="o"),
            {"organization_id", "service_id"},
        ),
        (
            "catalog.UpdateService",
            catalog_pb2.UpdateServiceRequest(
                organization_id=str(uuid.uuid4()),
                service=resources_pb2.Service(id=str(uuid.uuid4()), buffer_after_minutes=5000),
            ),
            {"service.buffer_after_minutes"},
        ),
        (
            "clients.GetClient",
            clients_pb2.GetClientRequest(organization_id="x", client_id="y"),
            {"organization_id", "client_id"},
        ),
        (
            "clients.UpdateClient",
            clients_pb2.UpdateClientRequest(
                organization_id=str(uuid.uuid4()), client=Client(id=str(uuid.uuid4()), phone="0")
            ),
            {"client.phone"},
        ),
        (
            "clients.ListClients",
            clients_pb2.ListClientsRequest(
                organization_id="x",
                page_size=-1,
                order_by="age",
                count_mode=common_pb2.CountMode.ValueType(99),
            ),
            {"organization_id", "page_size", "order_by", "count_mode"},
        ),
        (
            "audit.ListAuditEvents",
            audit_pb2.ListAuditEventsRequest(organization_id=str(uuid.uuid4()), resource_id="abc"),
            {"resource_type"},
        ),
    ],
)
async def test_every_rpc_rejects_bad_input(
    stubs: Stubs, call: str, request_: object, fields: set[str]
) -> None:
    service, method = call.split(".")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(getattr(stubs, service), method)(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = details(err.value)
    assert info["ErrorInfo"].reason
    assert fields <= violated_fields(err.value), violated_fields(err.value)


async def test_not_found_carries_resource_info(stubs: Stubs, org: str) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=missing)
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    d = details(err.value)
    assert d["ErrorInfo"].reason == "CLIENT_NOT_FOUND"
    assert d["ResourceInfo"].resource_type == "booking.v1.Client"
    assert d["ResourceInfo"].resource_name == missing


async def test_other_tenants_rows_are_not_found(stubs: Stubs, org: str) -> None:
    from tests.conftest import new_org

    client = await create_client(stubs, org)
    other = await new_org(stubs)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=other, client_id=client.id)
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert org not in (err.value.details() or "")


async def test_unique_violation_is_already_exists(stubs: Stubs, org: str) -> None:
    await create_client(stubs, org, external_id="ext-1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create_client(stubs, org, external_id="ext-1")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    d = details(err.value)
    assert d["ErrorInfo"].reason == "EXTERNAL_ID_TAKEN"
    assert violated_fields(err.value) == {"client.external_id"}
    assert "INSERT" not in (err.value.details() or "").upper()


async def test_foreign_key_to_missing_organization_is_not_found(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create_client(stubs, str(uuid.uuid4()))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)["ErrorInfo"].reason == "ORGANIZATION_NOT_FOUND"


async def test_stale_etag_is_aborted_and_writes_nothing(stubs: Stubs, org: str) -> None:
    client = await create_client(stubs, org, given_name="Old")
    first = (
        await stubs.clients.UpdateClient(
            clients_pb2.UpdateClientRequest(
                organization_id=org,
                client=Client(id=client.id, given_name="New", etag=client.etag),
            )
        )
    ).client
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.UpdateClient(
            clients_pb2.UpdateClientRequest(
                organization_id=org,
                client=Client(id=client.id, given_name="Lost", etag=client.etag),
            )
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert details(err.value)["ErrorInfo"].reason == "ETAG_MISMATCH"
    now = (
        await stubs.clients.GetClient(
            clients_pb2.GetClientRequest(organization_id=org, client_id=client.id)
        )
    ).client
    assert now == first and now.given_name == "New"
    events = await audit_events(stubs, org, resource_type="client", resource_id=client.id)
    assert [e.action for e in events] == ["update", "create"]


async def test_unknown_update_mask_path_is_rejected(stubs: Stubs, org: str) -> None:
    client = await create_client(stubs, org)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.UpdateClient(
            clients_pb2.UpdateClientRequest(
                organization_id=org,
                client=Client(id=client.id),
                update_mask=field_mask_pb2.FieldMask(paths=["id"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"update_mask.paths"}


async def test_retried_write_with_request_id_writes_and_audits_once(stubs: Stubs, org: str) -> None:
    request = clients_pb2.CreateClientRequest(
        organization_id=org, client=Client(family_name="Once"), request_id="req-seq-1"
    )
    first = await stubs.clients.CreateClient(request)
    again = await stubs.clients.CreateClient(request)
    assert again == first
    listed = await stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org))
    assert [c.id for c in listed.clients] == [first.client.id]
    events = await audit_events(stubs, org, resource_type="client")
    assert len(events) == 1 and events[0].request_id == "req-seq-1"


async def test_concurrent_retries_with_one_request_id_write_once(stubs: Stubs, org: str) -> None:
    request = clients_pb2.CreateClientRequest(
        organization_id=org, client=Client(family_name="Racer"), request_id="req-race-1"
    )
    responses = await asyncio.gather(*(stubs.clients.CreateClient(request) for _ in range(8)))
    assert len({r.client.id for r in responses}) == 1
    listed = await stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org))
    assert len(listed.clients) == 1
    assert len(await audit_events(stubs, org, resource_type="client")) == 1


async def test_request_id_reused_with_other_payload_is_rejected(stubs: Stubs, org: str) -> None:
    await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=Client(family_name="A"), request_id="req-reuse"
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org, client=Client(family_name="B"), request_id="req-reuse"
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    listed = await stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org))
    assert [c.family_name for c in listed.clients] == ["A"]


async def test_failed_write_is_not_stored_so_retry_can_succeed(stubs: Stubs, org: str) -> None:
    await create_client(stubs, org, external_id="dup")
    request = clients_pb2.CreateClientRequest(
        organization_id=org,
        client=Client(family_name="B", external_id="dup"),
        request_id="req-after-failure",
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.CreateClient(request)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # The failed attempt stored nothing: after the conflict is gone the retry writes.
    clients = await stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org))
    await stubs.clients.UpdateClient(
        clients_pb2.UpdateClientRequest(
            organization_id=org, client=Client(id=clients.clients[0].id, external_id="other")
        )
    )
    assert (await stubs.clients.CreateClient(request)).client.external_id == "dup"


async def test_correlation_id_is_echoed_and_audited(stubs: Stubs, org: str) -> None:
    call = stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(organization_id=org, client=Client(family_name="C")),
        metadata=(("x-request-id", "corr-42"), ("x-actor", "alice")),
    )
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == "corr-42"
    (event,) = await audit_events(stubs, org, resource_type="client")
    assert (event.correlation_id, event.actor) == ("corr-42", "alice")
    generated = stubs.orgs.GetOrganization(
        organizations_pb2.GetOrganizationRequest(organization_id=org)
    )
    await generated
    assert len(dict(await generated.trailing_metadata())["x-request-id"]) == 32
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stubs.orgs.GetOrganization(
            organizations_pb2.GetOrganizationRequest(organization_id="nope"),
            metadata=(("x-request-id", "corr-43"),),
        )
    trailers = dict(failed.value.trailing_metadata())
    assert trailers["x-request-id"] == "corr-43"
    assert "grpc-status-details-bin" in trailers


async def test_provider_and_service_crud(stubs: Stubs, org: str) -> None:
    provider = (
        await stubs.providers.CreateProvider(
            providers_pb2.CreateProviderRequest(
                organization_id=org,
                provider=resources_pb2.Provider(display_name="Bob", time_zone="America/New_York"),
            ),
        )
    ).provider
    assert provider.active
    off = (
        await stubs.providers.UpdateProvider(
            providers_pb2.UpdateProviderRequest(
                organization_id=org,
                provider=resources_pb2.Provider(id=provider.id, active=False),
            )
        )
    ).provider
    assert not off.active and off.display_name == "Bob"
    service = (
        await stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(
                organization_id=org,
                service=resources_pb2.Service(
                    name="Cut",
                    duration_minutes=30,
                    price=common_pb2.Money(currency_code="EUR", amount_minor=2500),
                ),
            )
        )
    ).service
    assert service.price.amount_minor == 2500
    got = (
        await stubs.catalog.GetService(
            catalog_pb2.GetServiceRequest(organization_id=org, service_id=service.id)
        )
    ).service
    assert got == service
    renamed = (
        await stubs.orgs.UpdateOrganization(
            organizations_pb2.UpdateOrganizationRequest(
                organization=resources_pb2.Organization(id=org, name="Renamed"),
            )
        )
    ).organization
    assert renamed.name == "Renamed" and renamed.etag == '"v2"'


async def test_taken_slug_is_already_exists(stubs: Stubs, org: str) -> None:
    slug = (
        await stubs.orgs.GetOrganization(
            organizations_pb2.GetOrganizationRequest(organization_id=org)
        )
    ).organization.slug
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.orgs.CreateOrganization(
            organizations_pb2.CreateOrganizationRequest(
                organization=resources_pb2.Organization(name="X", slug=slug, time_zone="UTC")
            )
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)["ErrorInfo"].reason == "SLUG_TAKEN"


async def test_request_ids_are_remembered_for_the_retention_only(database_url: str) -> None:
    """Within the retention a retry returns the first result; the purger then
    forgets the request_id (in the background), and the same id writes anew."""
    settings = test_settings(request_id_retention_s=2.0, purge_interval_s=0.1)
    async with running_server(database_url, settings) as srv:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            stubs = Stubs(channel)
            org = await new_org(stubs)
            request = clients_pb2.CreateClientRequest(
                organization_id=org, client=Client(family_name="Once"), request_id="r-1"
            )
            first = await stubs.clients.CreateClient(request)
            assert (await stubs.clients.CreateClient(request)).client.id == first.client.id
            conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
            try:

                async def forgotten() -> bool:
                    return not await conn.fetchval(
                        "SELECT count(*) FROM request_results WHERE organization_id = $1",
                        org,
                    )

                await assert_eventually(forgotten, timeout=15)
            finally:
                await conn.close()
            again = await stubs.clients.CreateClient(request)
            assert again.client.id != first.client.id


async def test_purge_takes_only_results_older_than_the_retention(
    database_url: str, stubs: Stubs, org: str
) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        for request_id, age in (("old", timedelta(hours=2)), ("young", timedelta(minutes=10))):
            await conn.execute(
                "INSERT INTO request_results (organization_id, request_id, method, "
                "request_hash, response, created_at) "
                "VALUES ($1, $2, 'CreateClient', '\\x00', '\\x00', now() - $3::interval)",
                org,
                request_id,
                age,
            )
        purged = await purge_request_results(Conn(conn, None), older_than_s=3600, batch=1)
        assert purged >= 1  # other tests' old rows may go too, never young ones
        left = await conn.fetch(
            "SELECT request_id FROM request_results WHERE organization_id = $1", org
        )
        assert [r["request_id"] for r in left] == ["young"]
    finally:
        await conn.close()


async def test_an_update_cannot_clear_both_names(stubs: Stubs, org: str) -> None:
    client = await create_client(stubs, org, given_name="Ada", family_name="Lovelace")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.clients.UpdateClient(
            clients_pb2.UpdateClientRequest(
                organization_id=org,
                client=Client(id=client.id),
                update_mask=field_mask_pb2.FieldMask(paths=["given_name", "family_name"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"client.family_name"}
    assert details(err.value)["BadRequest"].field_violations[0].reason == "REQUIRED"


async def test_a_claim_without_a_stored_answer_is_aborted_never_written_twice(
    database_url: str, org: str
) -> None:
    """A request_id whose row holds no answer (its first write's result purged or
    not stored: a race with the purger) must not let the write go ahead unclaimed:
    ABORTED with CONCURRENT_CONFLICT, retryable."""
    from server.errors import Aborted
    from server.queries.requests import claim_request

    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "INSERT INTO request_results (organization_id, request_id, method, request_hash) "
            "VALUES ($1, 'half-claimed', 'CreateClient', '\\x00')",
            org,
        )
        with pytest.raises(Aborted) as caught:
            await claim_request(Conn(conn, None), org, "half-claimed", "CreateClient", b"\0")
        assert caught.value.reason == "CONCURRENT_CONFLICT"
        assert caught.value.retry_after_s is not None
    finally:
        await conn.close()
