"""Deadlines seen from PostgreSQL: what the database enforces, not what gRPC's
own cancellation makes the caller see (which would hide a missing timeout).

- a write transaction's statement_timeout is the call's remaining deadline;
- a read's per-statement timeout cancels its statement on the server;
- work outside any RPC (background jobs) is bounded the same way.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import clients_pb2, resources_pb2

from server.db.engine import Database, create_engine, to_asyncpg_dsn
from server.testing import assert_eventually, test_settings
from tests.conftest import Stubs


@pytest_asyncio.fixture(loop_scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    settings = test_settings()
    db = Database(create_engine(settings, database_url), settings)
    try:
        yield db
    finally:
        await db.engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def _timeout_ms(conn: object) -> int:
    value = await conn.fetchval(  # type: ignore[attr-defined]
        "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"
    )
    return int(value)


async def test_write_transaction_timeout_is_the_remaining_deadline(database: Database) -> None:
    async with database.transaction(2.0) as conn:
        ms = await _timeout_ms(conn)
    assert 1000 < ms <= 2000
    # No deadline: the configured cap.
    cap = test_settings().pool.statement_timeout_ms
    async with database.transaction() as conn:
        assert await _timeout_ms(conn) == cap
    # A deadline beyond the cap does not raise it.
    async with database.transaction(cap / 1000 * 10) as conn:
        assert await _timeout_ms(conn) == cap
    # SET LOCAL: the next call on the same pooled connection is back at the cap.
    async with database.connection() as conn:
        assert await _timeout_ms(conn) == cap


async def _state(admin: asyncpg.Connection, pid: int) -> str | None:
    """The backend's state, or None once it is gone."""
    return await admin.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)


async def _not_active(admin: asyncpg.Connection, pid: int) -> bool:
    return await _state(admin, pid) != "active"


async def _blocked_statement_is_cancelled_by_the_server(
    database: Database,
    admin: asyncpg.Connection,
    table: str,
    sql: str,
    *args: object,
) -> None:
    """``sql`` waits on a lock of ``table`` inside ``database.connection(0.5)``: the
    statement stops (on the server) within about the deadline, far below the cap."""
    locker = await asyncpg.connect(to_asyncpg_dsn(database.engine.url.render_as_string(False)))
    pids: list[int] = []
    try:
        await locker.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

        async def job() -> None:
            async with database.connection(0.5) as conn:
                pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
                await conn.execute(sql, *args)

        task = asyncio.ensure_future(job())
        await assert_eventually(lambda: _true(bool(pids)), timeout=5)
        pid = pids[0]
        # The job's statement waits on the lock, then is cancelled by its timeout
        # alone: nothing else cancels it here. 5 s << the 30 s cap.
        await assert_eventually(lambda: _not_active(admin, pid), timeout=5)
        assert task.done()
        with pytest.raises(TimeoutError):
            await task
    finally:
        await locker.close()
        if pids and not task.done():
            task.cancel()


async def _true(value: bool) -> bool:
    return value


async def test_read_statement_timeout_cancels_on_the_server(
    database: Database, admin: asyncpg.Connection
) -> None:
    await _blocked_statement_is_cancelled_by_the_server(
        database, admin, "clients", "SELECT count(*) FROM clients"
    )


async def test_background_job_statement_is_bounded(
    database: Database, admin: asyncpg.Connection
) -> None:
    """Like the purger: a DELETE under database.connection(timeout_s) without RPC."""
    await _blocked_statement_is_cancelled_by_the_server(
        database,
        admin,
        "request_results",
        "DELETE FROM request_results WHERE created_at < now() - make_interval(secs => $1)",
        86400.0,
    )


async def test_blocked_write_rpc_stops_waiting_within_its_deadline(
    stubs: Stubs, org: str, admin: asyncpg.Connection, database_url: str
) -> None:
    """CreateClient waits on a row lock of its organization (the foreign key
    check) under a 1 s deadline: its backend stops waiting within about the
    deadline, not at the 30 s cap."""
    locker = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await locker.execute("BEGIN")
        await locker.execute("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE", uuid.UUID(org))
        call = stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org, client=resources_pb2.Client(family_name="Blocked")
            ),
            timeout=1.0,
        )
        pid_sql = (
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'booking-data' "
            "AND state = 'active' AND wait_event_type = 'Lock' "
            "AND query ILIKE '%INSERT INTO clients%'"
        )
        found: list[int] = []

        async def waiting() -> bool:
            found[:] = [int(p) for p in await admin.fetch(pid_sql) for p in p.values()]
            return bool(found)

        await assert_eventually(waiting, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for pid in found:
            await assert_eventually(functools.partial(_not_active, admin, pid), timeout=3)
    finally:
        await locker.close()
