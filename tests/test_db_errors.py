"""server.db.errors: database exceptions -> RPC errors by class and declared
constraint meanings, and log descriptions that hold no row values."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from booking.v1 import (
    catalog_pb2,
    clients_pb2,
    organizations_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
)
from google.protobuf.descriptor import Descriptor
from sqlalchemy import PrimaryKeyConstraint

from server.db import errors as db_errors
from server.db.engine import Database, create_engine, to_asyncpg_dsn
from server.db.schema import metadata
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from server.testing import test_settings

# Which request a table's declared field paths must exist in.
_REQUESTS: dict[str, Descriptor] = {
    "organizations": organizations_pb2.CreateOrganizationRequest.DESCRIPTOR,
    "providers": providers_pb2.CreateProviderRequest.DESCRIPTOR,
    "services": catalog_pb2.CreateServiceRequest.DESCRIPTOR,
    "clients": clients_pb2.CreateClientRequest.DESCRIPTOR,
    "offerings": catalog_pb2.SetOfferingRequest.DESCRIPTOR,
    "time_off": schedules_pb2.CreateTimeOffRequest.DESCRIPTOR,
    "payments": payments_pb2.RecordPaymentRequest.DESCRIPTOR,
    "refunds": payments_pb2.RefundPaymentRequest.DESCRIPTOR,
}
# Tables without a write RPC yet: their paths must exist in the resource message.
_RESOURCES: dict[str, tuple[str, Descriptor]] = {
    "appointments": ("appointment", resources_pb2.Appointment.DESCRIPTOR),
}


def _resolves(descriptor: Descriptor, path: str) -> bool:
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part)
        if field is None:
            return False
        if field.message_type is not None:
            descriptor = field.message_type
    return True


def test_every_constraint_is_declared_beside_its_table() -> None:
    meanings = db_errors.collect_constraint_meanings(metadata)
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, PrimaryKeyConstraint):
                continue
            assert str(constraint.name) in meanings, f"{table.name}: {constraint.name}"
            assert meanings[str(constraint.name)].table == table.name
    names = {str(c.name) for t in metadata.tables.values() for c in t.constraints}
    assert set(meanings) <= names  # no stale declarations


def test_declared_fields_exist_in_the_request() -> None:
    """A violation never names a field the caller did not send."""
    for name, meaning in db_errors.collect_constraint_meanings(metadata).items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", meaning.reason), name
        for path in meaning.fields:
            if meaning.table in _REQUESTS:
                assert _resolves(_REQUESTS[meaning.table], path), (name, path)
            elif meaning.table in _RESOURCES:
                prefix, descriptor = _RESOURCES[meaning.table]
                head, _, rest = path.partition(".")
                assert head == prefix and _resolves(descriptor, rest), (name, path)
            else:
                pytest.fail(f"{name} names {path} but {meaning.table} has no request yet")


def test_no_bare_sqlstate_literals() -> None:
    source = Path(db_errors.__file__).read_text()
    assert not re.findall(r"[\"'][0-9][0-9A-Z][0-9A-Z]{3}[\"']", source)


@pytest_asyncio.fixture(loop_scope="session")
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(to_asyncpg_dsn(database_url))
    await connection.execute("BEGIN")
    try:
        yield connection
    finally:
        await connection.execute("ROLLBACK")
        await connection.close()


async def _raised(conn: asyncpg.Connection, sql: str, *args: object) -> asyncpg.PostgresError:
    await conn.execute("SAVEPOINT s")
    with pytest.raises(asyncpg.PostgresError) as err:
        await conn.execute(sql, *args)
    await conn.execute("ROLLBACK TO SAVEPOINT s")
    return err.value


async def _org(conn: asyncpg.Connection) -> uuid.UUID:
    org = uuid.uuid4()
    await conn.execute(
        "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'O', $2, 'UTC')",
        org,
        f"o-{org.hex[:12]}",
    )
    return org


_SECRET = "Very Private Person"
_SECRET_MAIL = "private.person@example.org"


async def test_unique_violation_names_the_declared_field(conn: asyncpg.Connection) -> None:
    org = await _org(conn)
    insert = (
        "INSERT INTO clients (organization_id, id, family_name, email, external_id, "
        "given_key, family_key) VALUES ($1, $2, $3, $4, 'ext-1', '', 'x')"
    )
    await conn.execute(insert, org, uuid.uuid4(), _SECRET, _SECRET_MAIL)
    exc = await _raised(conn, insert, org, uuid.uuid4(), _SECRET, _SECRET_MAIL)
    mapped = db_errors.from_database_error(exc)
    assert isinstance(mapped, AlreadyExists)
    assert mapped.reason == "EXTERNAL_ID_TAKEN"
    assert [v.field for v in mapped.field_violations] == ["client.external_id"]
    assert mapped.metadata == {"constraint": "uq_clients_organization_id_external_id"}
    described = db_errors.describe_database_error(exc)
    assert described == (
        "UniqueViolationError sqlstate=23505 "
        "constraint=uq_clients_organization_id_external_id table=clients"
    )
    assert "ext-1" in str(exc)  # PostgreSQL's detail holds the value; ours does not


async def test_check_violation_names_declared_fields_only(conn: asyncpg.Connection) -> None:
    org = await _org(conn)
    exc = await _raised(
        conn,
        "INSERT INTO clients (organization_id, id, family_name, phone, email, "
        "given_key, family_key) VALUES ($1, $2, $3, '12345', $4, '', 'x')",
        org,
        uuid.uuid4(),
        _SECRET,
        _SECRET_MAIL,
    )
    mapped = db_errors.from_database_error(exc)
    assert isinstance(mapped, InvalidArgument)
    assert [v.field for v in mapped.field_violations] == ["client.phone"]
    described = db_errors.describe_database_error(exc)
    assert "constraint=ck_clients_phone_e164" in described
    assert _SECRET not in described and _SECRET_MAIL not in described and "12345" not in described
    assert _SECRET in (exc.detail or "")  # "Failing row contains (...)"

    # Both name parts empty: the constraint names both fields (declared), not
    # a guessed "client.name".
    exc = await _raised(
        conn,
        "INSERT INTO clients (organization_id, id, given_key, family_key) VALUES ($1, $2, '', '')",
        org,
        uuid.uuid4(),
    )
    mapped = db_errors.from_database_error(exc)
    assert isinstance(mapped, InvalidArgument)
    assert [v.field for v in mapped.field_violations] == ["client.given_name", "client.family_name"]


async def test_foreign_keys(conn: asyncpg.Connection) -> None:
    exc = await _raised(
        conn,
        "INSERT INTO providers (organization_id, id, display_name, time_zone, display_key) "
        "VALUES ($1, $2, 'P', 'UTC', 'p')",
        uuid.uuid4(),
        uuid.uuid4(),
    )
    mapped = db_errors.from_database_error(exc)
    assert isinstance(mapped, NotFound)
    assert mapped.reason == "ORGANIZATION_NOT_FOUND"

    org = await _org(conn)
    exc = await _raised(
        conn,
        "INSERT INTO payments (organization_id, id, client_id, amount_minor, currency, status, "
        "method) VALUES ($1, $2, $3, 1, 'EUR', 'pending', 'cash')",
        org,
        uuid.uuid4(),
        uuid.uuid4(),
    )
    mapped = db_errors.from_database_error(exc)
    assert isinstance(mapped, FailedPrecondition)
    assert mapped.reason == "CLIENT_NOT_FOUND"
    assert [v.field for v in mapped.field_violations] == ["payment.client_id"]


async def test_a_connection_killed_under_a_call_is_unavailable(database_url: str) -> None:
    """pg_terminate_backend on the call's connection: whatever asyncpg raises next
    (ConnectionDoesNotExistError, InterfaceError, InternalClientError), the call
    gets UNAVAILABLE and the connection is not reused."""
    settings = test_settings()
    database = Database(create_engine(settings, database_url), settings)
    admin = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        with pytest.raises(Exception) as err:
            async with database.transaction(5.0, request_id="r-1") as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                await conn.fetchval("SELECT 1")
        mapped = db_errors.from_database_error(err.value)
        assert mapped is not None and mapped.reason == "DATABASE_UNAVAILABLE", repr(err.value)
        async with database.connection(5.0) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await admin.close()
        await database.engine.dispose()


def test_commit_outcome_unknown_carries_the_request_id() -> None:
    mapped = db_errors.from_database_error(db_errors.CommitOutcomeUnknown("lost", "req-7"))
    assert mapped is not None
    assert mapped.reason == "COMMIT_OUTCOME_UNKNOWN"
    assert mapped.metadata == {"request_id": "req-7"}
    assert mapped.retry_after_s
