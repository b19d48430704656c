"""The booking policy fields: Organization.min_notice_minutes /
booking_horizon_days (defaults 0 / 365, always returned) and the same on
Service (unset = NULL = the organization's), through Create, Get and Update."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from booking.v1 import catalog_pb2, common_pb2, organizations_pb2, resources_pb2
from google.protobuf import field_mask_pb2

from tests.conftest import Stubs, details


async def invalid(call: Awaitable[Any]) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return {v.field: v.reason for v in details(err.value)["BadRequest"].field_violations}


def new_org_request(**policy: Any) -> organizations_pb2.CreateOrganizationRequest:
    return organizations_pb2.CreateOrganizationRequest(
        organization=resources_pb2.Organization(
            name="Policy", slug=f"p-{uuid.uuid4().hex[:16]}", time_zone="UTC", **policy
        )
    )


def update_org(
    org: str, paths: list[str] | None = None, **fields: Any
) -> organizations_pb2.UpdateOrganizationRequest:
    return organizations_pb2.UpdateOrganizationRequest(
        organization=resources_pb2.Organization(id=org, **fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths or []),
    )


async def test_organization_policy_defaults_and_updates(stubs: Stubs) -> None:
    created = (await stubs.orgs.CreateOrganization(new_org_request())).organization
    assert created.HasField("min_notice_minutes") and created.HasField("booking_horizon_days")
    assert (created.min_notice_minutes, created.booking_horizon_days) == (0, 365)
    org = created.id
    explicit = (
        await stubs.orgs.CreateOrganization(
            new_org_request(min_notice_minutes=525_600, booking_horizon_days=1)
        )
    ).organization
    assert (explicit.min_notice_minutes, explicit.booking_horizon_days) == (525_600, 1)
    # Without a mask: only what is set (0 is set: the field tracks presence).
    updated = (
        await stubs.orgs.UpdateOrganization(update_org(org, min_notice_minutes=90))
    ).organization
    assert (updated.min_notice_minutes, updated.booking_horizon_days) == (90, 365)
    updated = (
        await stubs.orgs.UpdateOrganization(update_org(org, booking_horizon_days=730))
    ).organization
    assert (updated.min_notice_minutes, updated.booking_horizon_days) == (90, 730)
    updated = (
        await stubs.orgs.UpdateOrganization(update_org(org, min_notice_minutes=0))
    ).organization
    assert (updated.min_notice_minutes, updated.booking_horizon_days) == (0, 730)
    # Named by the mask but unset: back to the default; other fields untouched.
    await stubs.orgs.UpdateOrganization(update_org(org, min_notice_minutes=15))
    updated = (
        await stubs.orgs.UpdateOrganization(
            update_org(org, ["booking_horizon_days", "min_notice_minutes"], name="Ignored")
        )
    ).organization
    assert (updated.min_notice_minutes, updated.booking_horizon_days) == (0, 365)
    assert updated.name == "Policy"
    got = (
        await stubs.orgs.GetOrganization(
            organizations_pb2.GetOrganizationRequest(organization_id=org)
        )
    ).organization
    assert got == updated


async def test_organization_policy_ranges(stubs: Stubs) -> None:
    bad: dict[str, Any] = {"min_notice_minutes": -1, "booking_horizon_days": 0}
    expected = {
        "organization.min_notice_minutes": "OUT_OF_RANGE",
        "organization.booking_horizon_days": "OUT_OF_RANGE",
    }
    assert await invalid(stubs.orgs.CreateOrganization(new_org_request(**bad))) == expected
    too_big: dict[str, Any] = {"min_notice_minutes": 525_601, "booking_horizon_days": 731}
    assert await invalid(stubs.orgs.CreateOrganization(new_org_request(**too_big))) == expected
    org = (await stubs.orgs.CreateOrganization(new_org_request())).organization.id
    assert await invalid(stubs.orgs.UpdateOrganization(update_org(org, **too_big))) == expected
    got = (
        await stubs.orgs.GetOrganization(
            organizations_pb2.GetOrganizationRequest(organization_id=org)
        )
    ).organization
    assert (got.min_notice_minutes, got.booking_horizon_days) == (0, 365)


def service(**fields: Any) -> resources_pb2.Service:
    return resources_pb2.Service(
        name="Cut",
        duration_minutes=30,
        price=common_pb2.Money(currency_code="EUR", amount_minor=100),
        **fields,
    )


def update_service(
    org: str, service_id: str, paths: list[str] | None = None, **fields: Any
) -> catalog_pb2.UpdateServiceRequest:
    return catalog_pb2.UpdateServiceRequest(
        organization_id=org,
        service=resources_pb2.Service(id=service_id, **fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths or []),
    )


def policy_of(s: resources_pb2.Service) -> tuple[int | None, int | None]:
    return (
        s.min_notice_minutes if s.HasField("min_notice_minutes") else None,
        s.booking_horizon_days if s.HasField("booking_horizon_days") else None,
    )


async def test_service_policy_inherits_until_set(stubs: Stubs, org: str) -> None:
    created = (
        await stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(organization_id=org, service=service())
        )
    ).service
    assert policy_of(created) == (None, None)
    sid = created.id
    both = (
        await stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(
                organization_id=org, service=service(min_notice_minutes=0, booking_horizon_days=730)
            )
        )
    ).service
    assert policy_of(both) == (0, 730)
    updated = (
        await stubs.catalog.UpdateService(update_service(org, sid, min_notice_minutes=60))
    ).service
    assert policy_of(updated) == (60, None)
    updated = (
        await stubs.catalog.UpdateService(update_service(org, sid, booking_horizon_days=7))
    ).service
    assert policy_of(updated) == (60, 7)
    # Named by the mask and unset: NULL again (the organization's).
    updated = (
        await stubs.catalog.UpdateService(update_service(org, sid, ["min_notice_minutes"]))
    ).service
    assert policy_of(updated) == (None, 7)
    assert updated.name == "Cut" and updated.duration_minutes == 30
    got = (
        await stubs.catalog.GetService(
            catalog_pb2.GetServiceRequest(organization_id=org, service_id=sid)
        )
    ).service
    assert got == updated


async def test_service_policy_ranges(stubs: Stubs, org: str) -> None:
    expected = {
        "service.min_notice_minutes": "OUT_OF_RANGE",
        "service.booking_horizon_days": "OUT_OF_RANGE",
    }
    for bad in (
        {"min_notice_minutes": -1, "booking_horizon_days": 0},
        {"min_notice_minutes": 525_601, "booking_horizon_days": 731},
    ):
        assert (
            await invalid(
                stubs.catalog.CreateService(
                    catalog_pb2.CreateServiceRequest(organization_id=org, service=service(**bad))
                )
            )
            == expected
        )
    sid = (
        await stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(organization_id=org, service=service())
        )
    ).service.id
    assert (
        await invalid(
            stubs.catalog.UpdateService(
                update_service(org, sid, min_notice_minutes=-5, booking_horizon_days=1000)
            )
        )
        == expected
    )
