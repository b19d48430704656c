"""Every test runs against a real PostgreSQL (embedded by default, or
BOOKING_TEST_DATABASE_URL) through a real grpc.aio channel to a server on port 0."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    audit_pb2_grpc,
    catalog_pb2_grpc,
    clients_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    providers_pb2_grpc,
    resources_pb2,
)
from google.rpc import error_details_pb2, status_pb2

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


@pytest.fixture
def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(channel)


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
    """The google.rpc.Status details of an error, by type name."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no rich status in {error!r}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    out: dict[str, Any] = {}
    for any_msg in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
        ):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                out[cls.__name__] = msg
    assert out["ErrorInfo"].domain == "booking.v1"
    return out


def violated_fields(error: grpc.aio.AioRpcError) -> set[str]:
    return {v.field for v in details(error)["BadRequest"].field_violations}
