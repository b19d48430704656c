"""Offerings (SetOffering, DeleteOffering, ListOfferings) through a real channel
on a real PostgreSQL: upsert with overrides, etags, currency, NOT_FOUND
across tenants, request_id replay, audit events, the list's filters."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    audit_pb2,
    catalog_pb2,
    common_pb2,
    resources_pb2,
)
from google.protobuf import timestamp_pb2

from server.paging import PageRequest
from server.queries import catalog as q
from server.queries._listing import page_sql
from tests.conftest import Stubs, details, new_org
from tests.test_schedules import explain_work, new_provider


async def new_service(stubs: Stubs, org: str, currency: str = "EUR") -> str:
    response = await stubs.catalog.CreateService(
        catalog_pb2.CreateServiceRequest(
            organization_id=org,
            service=resources_pb2.Service(
                name="Cut",
                duration_minutes=30,
                price=common_pb2.Money(currency_code=currency, amount_minor=2500),
            ),
        )
    )
    return response.service.id


@pytest_asyncio.fixture(loop_scope="session")
async def pair(stubs: Stubs, org: str) -> tuple[str, str]:
    return await new_provider(stubs, org), await new_service(stubs, org)


def offering(provider: str, service: str, **fields: Any) -> resources_pb2.Offering:
    return resources_pb2.Offering(provider_id=provider, service_id=service, **fields)


def set_request(
    org: str, o: resources_pb2.Offering, request_id: str = ""
) -> catalog_pb2.SetOfferingRequest:
    return catalog_pb2.SetOfferingRequest(organization_id=org, offering=o, request_id=request_id)


async def error(call: Awaitable[Any], code: grpc.StatusCode) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return details(err.value)


async def invalid(call: Awaitable[Any]) -> dict[str, str]:
    info = await error(call, grpc.StatusCode.INVALID_ARGUMENT)
    return {v.field: v.reason for v in info["BadRequest"].field_violations}


async def audit_of(stubs: Stubs, org: str, resource_id: str) -> list[resources_pb2.AuditEvent]:
    response = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(
            organization_id=org, resource_type="offering", resource_id=resource_id
        )
    )
    return list(reversed(response.audit_events))


async def listed(stubs: Stubs, org: str, **fields: Any) -> list[tuple[str, str]]:
    response = await stubs.catalog.ListOfferings(
        catalog_pb2.ListOfferingsRequest(organization_id=org, **fields)
    )
    return [(o.provider_id, o.service_id) for o in response.offerings]


async def test_set_creates_then_updates(stubs: Stubs, org: str, pair: tuple[str, str]) -> None:
    provider, service = pair
    noisy = offering(provider.upper(), service, organization_id=str(uuid.uuid4()))
    noisy.create_time.CopyFrom(timestamp_pb2.Timestamp(seconds=5))
    created = (await stubs.catalog.SetOffering(set_request(org, noisy))).offering
    assert (created.organization_id, created.provider_id, created.service_id) == (
        org,
        provider,
        service,
    )
    assert not created.HasField("duration_minutes") and not created.HasField("price")
    assert created.etag == '"v1"' and created.create_time.seconds > 5
    updated = (
        await stubs.catalog.SetOffering(
            set_request(
                org,
                offering(
                    provider,
                    service,
                    duration_minutes=45,
                    price=common_pb2.Money(currency_code="EUR", amount_minor=0),
                    etag=created.etag,
                ),
            )
        )
    ).offering
    assert updated.duration_minutes == 45 and updated.HasField("price")
    assert (updated.price.currency_code, updated.price.amount_minor) == ("EUR", 0)
    assert updated.etag == '"v2"' and updated.create_time == created.create_time
    # Set replaces the whole offering: unset overrides go back to the service's.
    again = (
        await stubs.catalog.SetOffering(set_request(org, offering(provider, service)))
    ).offering
    assert not again.HasField("duration_minutes") and not again.HasField("price")
    events = await audit_of(stubs, org, f"{provider}/{service}")
    assert [e.action for e in events] == ["create", "update", "update"]
    assert await listed(stubs, org) == [(provider, service)]


async def test_stale_or_foreign_etag_is_aborted(
    stubs: Stubs, org: str, pair: tuple[str, str]
) -> None:
    provider, service = pair
    # An etag for an offering that does not exist is stale too.
    info = await error(
        stubs.catalog.SetOffering(set_request(org, offering(provider, service, etag='"v1"'))),
        grpc.StatusCode.ABORTED,
    )
    assert info["ErrorInfo"].reason == "ETAG_MISMATCH"
    assert await listed(stubs, org) == []
    first = (
        await stubs.catalog.SetOffering(set_request(org, offering(provider, service)))
    ).offering
    await stubs.catalog.SetOffering(set_request(org, offering(provider, service, etag=first.etag)))
    info = await error(
        stubs.catalog.SetOffering(
            set_request(org, offering(provider, service, duration_minutes=5, etag=first.etag))
        ),
        grpc.StatusCode.ABORTED,
    )
    assert info["ErrorInfo"].reason == "ETAG_MISMATCH"
    response = await stubs.catalog.ListOfferings(
        catalog_pb2.ListOfferingsRequest(organization_id=org)
    )
    assert response.offerings[0].etag == '"v2"'
    assert not response.offerings[0].HasField("duration_minutes")
    assert await invalid(
        stubs.catalog.SetOffering(set_request(org, offering(provider, service, etag="v2")))
    ) == {"offering.etag": "INVALID_ETAG"}


async def test_set_validation(stubs: Stubs, org: str, pair: tuple[str, str]) -> None:
    provider, service = pair
    cases: list[tuple[resources_pb2.Offering, dict[str, str]]] = [
        (
            resources_pb2.Offering(),
            {"offering.provider_id": "REQUIRED", "offering.service_id": "REQUIRED"},
        ),
        (offering("x", service), {"offering.provider_id": "INVALID_FORMAT"}),
        (
            offering(provider, service, duration_minutes=0),
            {"offering.duration_minutes": "OUT_OF_RANGE"},
        ),
        (
            offering(provider, service, duration_minutes=1441),
            {"offering.duration_minutes": "OUT_OF_RANGE"},
        ),
        (
            offering(
                provider, service, price=common_pb2.Money(currency_code="EUR", amount_minor=-1)
            ),
            {"offering.price.amount_minor": "OUT_OF_RANGE"},
        ),
        (
            offering(provider, service, price=common_pb2.Money(amount_minor=100)),
            {"offering.price.currency_code": "INVALID_FORMAT"},
        ),
        (
            offering(
                provider, service, price=common_pb2.Money(currency_code="USD", amount_minor=1)
            ),
            {"offering.price.currency_code": "CURRENCY_MISMATCH"},
        ),
    ]
    for bad, fields in cases:
        assert await invalid(stubs.catalog.SetOffering(set_request(org, bad))) == fields, bad
    assert await listed(stubs, org) == []
    edge = await stubs.catalog.SetOffering(
        set_request(org, offering(provider, service, duration_minutes=1440))
    )
    assert edge.offering.duration_minutes == 1440


async def test_unknown_or_other_tenants_ids_are_not_found(
    stubs: Stubs, org: str, pair: tuple[str, str]
) -> None:
    provider, service = pair
    other_org = await new_org(stubs)
    their_provider, their_service = (
        await new_provider(stubs, other_org),
        await new_service(stubs, other_org),
    )
    await stubs.catalog.SetOffering(set_request(other_org, offering(their_provider, their_service)))
    for p, s, reason, name in [
        (str(uuid.uuid4()), service, "PROVIDER_NOT_FOUND", None),
        (their_provider, service, "PROVIDER_NOT_FOUND", their_provider),
        (provider, str(uuid.uuid4()), "SERVICE_NOT_FOUND", None),
        (provider, their_service.upper(), "SERVICE_NOT_FOUND", their_service),
        (their_provider, their_service, "PROVIDER_NOT_FOUND", their_provider),
    ]:
        info = await error(
            stubs.catalog.SetOffering(set_request(org, offering(p, s))), grpc.StatusCode.NOT_FOUND
        )
        assert info["ErrorInfo"].reason == reason
        if name is not None:
            assert info["ResourceInfo"].resource_name == name
    info = await error(
        stubs.catalog.DeleteOffering(
            catalog_pb2.DeleteOfferingRequest(
                organization_id=org, provider_id=their_provider, service_id=their_service
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info["ErrorInfo"].reason == "PROVIDER_NOT_FOUND"
    assert await listed(stubs, org) == []
    assert await listed(stubs, org, provider_id=their_provider) == []
    assert await listed(stubs, other_org) == [(their_provider, their_service)]


async def test_delete(stubs: Stubs, org: str, pair: tuple[str, str]) -> None:
    provider, service = pair
    await stubs.catalog.SetOffering(set_request(org, offering(provider, service)))
    delete = catalog_pb2.DeleteOfferingRequest(
        organization_id=org, provider_id=provider, service_id=service.upper(), request_id="d-1"
    )
    assert await stubs.catalog.DeleteOffering(delete) == catalog_pb2.DeleteOfferingResponse()
    assert await stubs.catalog.DeleteOffering(delete) == catalog_pb2.DeleteOfferingResponse()
    assert await listed(stubs, org) == []
    info = await error(
        stubs.catalog.DeleteOffering(
            catalog_pb2.DeleteOfferingRequest(
                organization_id=org, provider_id=provider, service_id=service
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert info["ErrorInfo"].reason == "OFFERING_NOT_FOUND"
    assert info["ResourceInfo"].resource_name == f"{provider}/{service}"
    events = await audit_of(stubs, org, f"{provider}/{service}")
    assert [(e.action, e.request_id) for e in events] == [("create", ""), ("delete", "d-1")]
    assert await invalid(
        stubs.catalog.DeleteOffering(catalog_pb2.DeleteOfferingRequest(organization_id=org))
    ) == {"provider_id": "REQUIRED", "service_id": "REQUIRED"}


async def test_set_request_id_replay_and_reuse(
    stubs: Stubs, org: str, pair: tuple[str, str]
) -> None:
    provider, service = pair
    request = set_request(org, offering(provider, service, duration_minutes=20), "s-1")
    first = await stubs.catalog.SetOffering(request)
    assert await stubs.catalog.SetOffering(request) == first
    info = await error(
        stubs.catalog.SetOffering(
            set_request(org, offering(provider, service, duration_minutes=21), "s-1")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert info["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    events = await audit_of(stubs, org, f"{provider}/{service}")
    assert [e.action for e in events] == ["create"]


async def test_list_filters_and_order(stubs: Stubs, org: str) -> None:
    providers = sorted([await new_provider(stubs, org) for _ in range(3)])
    services = sorted([await new_service(stubs, org) for _ in range(3)])
    links = [(p, s) for p in providers for s in services if (p, s) != (providers[1], services[2])]
    for p, s in reversed(links):
        await stubs.catalog.SetOffering(set_request(org, offering(p, s)))
    assert await listed(stubs, org) == links
    assert await listed(stubs, org, provider_id=providers[1].upper()) == [
        (providers[1], services[0]),
        (providers[1], services[1]),
    ]
    assert await listed(stubs, org, service_id=services[2]) == [
        (providers[0], services[2]),
        (providers[2], services[2]),
    ]
    assert await listed(stubs, org, provider_id=providers[2], service_id=services[0]) == [
        (providers[2], services[0])
    ]
    # Paging with the service filter.
    first = await stubs.catalog.ListOfferings(
        catalog_pb2.ListOfferingsRequest(organization_id=org, service_id=services[0], page_size=2)
    )
    rest = await stubs.catalog.ListOfferings(
        catalog_pb2.ListOfferingsRequest(
            organization_id=org,
            service_id=services[0],
            page_size=2,
            page_token=first.next_page_token,
        )
    )
    assert [o.provider_id for o in (*first.offerings, *rest.offerings)] == providers
    assert not rest.next_page_token
    assert await invalid(
        stubs.catalog.ListOfferings(
            catalog_pb2.ListOfferingsRequest(organization_id=org, provider_id="p", service_id="s")
        )
    ) == {"provider_id": "INVALID_FORMAT", "service_id": "INVALID_FORMAT"}


async def test_list_by_service_walks_its_own_index(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """4,000 offerings (200 providers x 20 services): a page of one service's
    reads that page from (organization_id, service_id, provider_id), not
    every 20th row of the primary key; a provider's, the primary key."""
    services = [await new_service(stubs, org) for _ in range(20)]
    await db.execute(
        "INSERT INTO providers (organization_id, id, display_name, time_zone, display_key) "
        "SELECT $1, gen_random_uuid(), 'p' || i, 'UTC', 'p' || i FROM generate_series(1, 200) AS i",
        org,
    )
    await db.execute(
        "INSERT INTO offerings (organization_id, provider_id, service_id) "
        "SELECT $1, p.id, s FROM providers p, unnest($2::uuid[]) AS s "
        "WHERE p.organization_id = $1",
        org,
        services,
    )
    await db.execute("ANALYZE offerings")
    order = q.OFFERINGS.orders["provider_id"]
    page = PageRequest(size=50, number=1, after=None, offset=0)
    by_service = q.build_list_offerings_query(org, q.OfferingFilter(service_id=services[7]), order)
    work, indexes = await explain_work(db, "offerings", *page_sql(by_service, page))
    assert indexes == {"ix_offerings_org_service_id_provider_id"} and work <= 51, (work, indexes)
    provider = await db.fetchval(
        "SELECT provider_id FROM offerings WHERE organization_id = $1 ORDER BY 1 LIMIT 1", org
    )
    by_provider = q.build_list_offerings_query(org, q.OfferingFilter(provider_id=provider), order)
    work, indexes = await explain_work(db, "offerings", *page_sql(by_provider, page))
    assert indexes == {"pk_offerings"} and work <= 20, (work, indexes)
    listed_ids = await listed(stubs, org, service_id=services[7], page_size=1000)
    assert len(listed_ids) == 200 and {s for _, s in listed_ids} == {services[7]}
