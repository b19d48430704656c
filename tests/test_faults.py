"""Real faults: a stopped PostgreSQL, deadlines, cancellation, an exhausted pool."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import asyncpg
import grpc
import pytest
from booking.v1 import clients_pb2, organizations_pb2, resources_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from server.db.embedded import EmbeddedPostgres
from server.db.engine import to_asyncpg_dsn
from server.db.migrate import upgrade
from server.testing import assert_eventually, running_server, test_settings
from tests.conftest import Stubs, details, new_org

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _assert_unavailable(error: grpc.aio.AioRpcError, reason: str) -> int:
    """UNAVAILABLE with this ErrorInfo reason and a RetryInfo; returns its delay (ms)."""
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    found = details(error)
    assert found["ErrorInfo"].reason == reason
    delay = int(found["RetryInfo"].retry_delay.ToMilliseconds())
    assert delay > 0
    return delay


@contextlib.asynccontextmanager
async def own_postgres(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """An embedded PostgreSQL of the test's own, migrated (stopping or killing
    it harms no other test): the server and its URL; stopped at the end."""
    pg = EmbeddedPostgres(tmp_path / "pgdata")
    url = await asyncio.to_thread(pg.start)
    try:
        await upgrade(url, test_settings().migrations_dir)
        yield pg, url
    finally:
        await asyncio.to_thread(pg.stop, "immediate")


@contextlib.asynccontextmanager
async def busy_server(url: str) -> AsyncIterator[Stubs]:
    """A booking server on ``url`` with a pool for ~40 concurrent callers, and
    stubs on a channel to it."""
    pool = dataclasses.replace(test_settings().pool, size=20, max_overflow=20)
    async with running_server(url, test_settings(pool=pool)) as srv:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            yield Stubs(channel)


async def test_health_follows_the_database(tmp_path: Path) -> None:
    """Its own embedded PostgreSQL, so that stopping it harms no other test."""
    pg = EmbeddedPostgres(tmp_path / "pgdata")
    url = await asyncio.to_thread(pg.start)
    try:
        await upgrade(url, test_settings().migrations_dir)
        async with running_server(url) as srv:
            async with grpc.aio.insecure_channel(srv.target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                stubs = Stubs(channel)

                async def status(service: str = "") -> int:
                    response = await health.Check(health_pb2.HealthCheckRequest(service=service))
                    return int(response.status)

                assert await status() == SERVING
                assert await status("booking.v1.ClientService") == SERVING
                org = await new_org(stubs)

                await asyncio.to_thread(pg.stop)
                await assert_eventually(lambda: _is(status, NOT_SERVING), timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stubs.clients.ListClients(
                        clients_pb2.ListClientsRequest(organization_id=org)
                    )
                _assert_unavailable(err.value, "DATABASE_UNAVAILABLE")

                await asyncio.to_thread(pg.start)
                await assert_eventually(lambda: _is(status, SERVING), timeout=10)

                async def list_works() -> bool:
                    try:
                        await stubs.clients.ListClients(
                            clients_pb2.ListClientsRequest(organization_id=org)
                        )
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE
                        return False
                    return True

                # Dead pooled connections are discarded; calls recover without a restart.
                await assert_eventually(list_works, timeout=10)
    finally:
        await asyncio.to_thread(pg.stop, "immediate")


async def _is(status: object, expected: int) -> bool:
    return await status() == expected  # type: ignore[operator]


async def test_health_not_serving_until_schema_at_head(root_url: str) -> None:
    from server.testing import create_database, drop_database

    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    try:
        async with running_server(url, wait_serving=False) as srv:
            assert await srv.server.health.probe() == NOT_SERVING
            await upgrade(url, test_settings().migrations_dir)
            assert await srv.server.health.probe() == SERVING
    finally:
        await drop_database(root_url, name)


async def _lock_clients(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    await conn.execute("BEGIN; LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")
    return conn


async def _our_waiting_queries(url: str) -> int:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'booking-data' "
                "AND state = 'active' AND query ILIKE '%FROM clients%'"
            )
        )
    finally:
        await conn.close()


async def test_deadline_becomes_the_statement_timeout(
    stubs: Stubs, org: str, database_url: str
) -> None:
    locker = await _lock_clients(database_url)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.clients.ListClients(
                clients_pb2.ListClientsRequest(organization_id=org), timeout=0.5
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    organization_id=org, client=resources_pb2.Client(family_name="Late")
                ),
                timeout=0.5,
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Nothing of ours is left waiting on the lock: the statements were cancelled.
        await assert_eventually(lambda: _zero(_our_waiting_queries(database_url)), timeout=5)
    finally:
        await locker.close()
    listed = await stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org))
    assert [c.family_name for c in listed.clients] == []  # the timed-out create wrote nothing


async def _zero(awaitable: Awaitable[int]) -> bool:
    return await awaitable == 0


async def test_cancelled_rpc_cancels_its_query(stubs: Stubs, org: str, database_url: str) -> None:
    locker = await _lock_clients(database_url)
    try:
        call = stubs.clients.ListClients(clients_pb2.ListClientsRequest(organization_id=org))
        await assert_eventually(lambda: _positive(_our_waiting_queries(database_url)), timeout=5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await assert_eventually(lambda: _zero(_our_waiting_queries(database_url)), timeout=5)
    finally:
        await locker.close()


async def _positive(awaitable: Awaitable[int]) -> bool:
    return await awaitable > 0


async def test_exhausted_pool_is_unavailable_with_retry_info(database_url: str) -> None:
    from server.config import PoolSettings

    settings = test_settings(pool=PoolSettings(size=1, max_overflow=0, timeout_s=0.3))
    locker = await _lock_clients(database_url)
    try:
        async with running_server(database_url, settings) as srv:
            async with grpc.aio.insecure_channel(srv.target) as channel:
                stubs = Stubs(channel)
                org = str(uuid.uuid4())
                blocked = asyncio.ensure_future(
                    stubs.clients.ListClients(
                        clients_pb2.ListClientsRequest(organization_id=org), timeout=5
                    )
                )
                await assert_eventually(lambda: _positive(_our_waiting_queries(database_url)))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stubs.clients.ListClients(
                        clients_pb2.ListClientsRequest(organization_id=org)
                    )
                assert _assert_unavailable(err.value, "POOL_EXHAUSTED") == 1000
                await locker.close()
                await blocked
    finally:
        if not locker.is_closed():
            await locker.close()


class TcpProxy:
    """A TCP relay in front of PostgreSQL whose connections a test can cut."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        # While set, new connections are accepted but nothing is relayed (a
        # black hole: connecting times out instead of being refused).
        self.stall = False
        # While set, the next client message holding COMMIT is relayed and then
        # the client's side is cut: the server commits, the client never hears.
        self.cut_after_commit = False
        self.commits_cut = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> int:
        """Drop every relayed connection at once, as a network failure would."""
        cut = len(self._pipes)
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()
        return cut

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stall:
            self._pipes.add(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._pipes |= {writer, up_writer}

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, to_server: bool
        ) -> None:
            hold_upstream = False
            try:
                while data := await src.read(65536):
                    if not to_server and writer.transport.is_closing():
                        break  # PostgreSQL answered the cut COMMIT: it has committed
                    dst.write(data)
                    await dst.drain()
                    if to_server and self.cut_after_commit and b"COMMIT" in data:
                        # COMMIT is on its way to PostgreSQL; the client never
                        # hears the answer. The upstream side stays open until
                        # the answer arrives (a reset could discard the unread
                        # COMMIT), then closes.
                        self.cut_after_commit = False
                        self.commits_cut += 1
                        writer.transport.abort()
                        hold_upstream = True
                        return
            except (ConnectionError, OSError):
                pass
            finally:
                if not hold_upstream:
                    writer.transport.abort()
                    up_writer.transport.abort()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


async def test_network_cut_between_server_and_database(database_url: str) -> None:
    """Connections cut while idle cost no call an error (they are seen closed at
    checkout and replaced); a call whose query is cut mid-flight, or that finds
    the database unreachable, fails UNAVAILABLE with RetryInfo, never INTERNAL
    or DEADLINE_EXCEEDED; the next call after the network heals works."""
    url = make_url(database_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        pool = dataclasses.replace(test_settings().pool, connect_timeout_s=0.5)
        async with running_server(proxied, test_settings(pool=pool)) as srv:
            async with grpc.aio.insecure_channel(srv.target) as channel:
                stubs = Stubs(channel)
                org = await new_org(stubs)
                request = clients_pb2.ListClientsRequest(organization_id=org)
                # Several pooled connections, all of which the cut kills while idle.
                await asyncio.gather(*(stubs.clients.ListClients(request) for _ in range(4)))
                assert proxy.cut() >= 4
                for _ in range(4):
                    await stubs.clients.ListClients(request)

                locker = await _lock_clients(database_url)
                try:
                    in_flight = asyncio.ensure_future(stubs.clients.ListClients(request))
                    await assert_eventually(lambda: _positive(_our_waiting_queries(database_url)))
                    proxy.cut()
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await in_flight
                finally:
                    await locker.close()
                _assert_unavailable(err.value, "DATABASE_UNAVAILABLE")
                await stubs.clients.ListClients(request)
                got = await stubs.orgs.GetOrganization(
                    organizations_pb2.GetOrganizationRequest(organization_id=org)
                )
                assert got.organization.id == org

                # An unreachable database (connecting times out) is UNAVAILABLE too,
                # not the caller's DEADLINE_EXCEEDED.
                proxy.stall = True
                proxy.cut()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stubs.clients.ListClients(request, timeout=10)
                _assert_unavailable(err.value, "DATABASE_UNAVAILABLE")
                proxy.stall = False
                await stubs.clients.ListClients(request)


async def test_database_lost_under_write_load_is_unavailable(tmp_path: Path) -> None:
    """PostgreSQL dies (SIGKILL to the postmaster) while ~40 callers write with
    request_ids: every failed call is UNAVAILABLE with
    RetryInfo, whatever the statement it was in (the request claim, the write,
    COMMIT, the checkout): never INTERNAL or UNKNOWN."""
    async with own_postgres(tmp_path) as (pg, url):
        async with busy_server(url) as stubs:
            org = await new_org(stubs)
            written = 0
            failures: list[grpc.aio.AioRpcError] = []
            stop = asyncio.Event()

            async def writer(n: int) -> None:
                nonlocal written
                seen = 0
                while seen < 3 and not stop.is_set():
                    try:
                        await stubs.clients.CreateClient(
                            clients_pb2.CreateClientRequest(
                                organization_id=org,
                                client=resources_pb2.Client(family_name=f"W{n}"),
                                request_id=uuid.uuid4().hex,
                            ),
                            timeout=10,
                        )
                        written += 1
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc)
                        seen += 1

            writers = [asyncio.ensure_future(writer(n)) for n in range(40)]
            try:
                await assert_eventually(lambda: _true(written >= 200 or bool(failures)))
                assert not failures, failures[0]  # all well before the crash
                _crash(pg)
                await asyncio.wait_for(asyncio.gather(*writers), timeout=60)
            finally:
                stop.set()
                await asyncio.gather(*writers, return_exceptions=True)
            assert len(failures) >= 40
            bad = {
                (f.code().name, details(f)["ErrorInfo"].reason if f.code() else "")
                for f in failures
                if f.code() != grpc.StatusCode.UNAVAILABLE
            }
            assert not bad, f"failures other than UNAVAILABLE: {bad}"
            reasons = set()
            for failure in failures:
                found = details(failure)
                assert found["RetryInfo"].retry_delay.ToMilliseconds() > 0
                reasons.add(found["ErrorInfo"].reason)
            assert reasons <= {"DATABASE_UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN"}, reasons


def _crash(pg: EmbeddedPostgres) -> None:
    """The postmaster dies (SIGKILL): its backends notice and exit at their own
    pace, mid-statement, some with a FATAL, some silently; new connections are
    refused. (Sent directly: forking pg_ctl while gRPC's threads are busy can
    crash the forked child.) Its pid file goes too: where nothing reaps the dead
    postmaster (a container's init), pg_ctl would take the zombie for a server."""
    pid_file = pg.cluster_dir / "postmaster.pid"
    pid = int(pid_file.read_text().split("\n", 1)[0])
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reap it if it is our child
    pid_file.unlink()


async def _true(value: bool) -> bool:
    return value


async def test_commit_with_unknown_outcome_then_retry_with_the_same_request_id(
    database_url: str,
) -> None:
    """The link breaks after COMMIT was sent and before its answer: the call is
    UNAVAILABLE with reason COMMIT_OUTCOME_UNKNOWN and RetryInfo (not a plain
    DATABASE_UNAVAILABLE: the write may have happened). A retry with the same
    request_id returns the first result; the row and its audit event exist once."""
    url = make_url(database_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with running_server(proxied) as srv:
            async with grpc.aio.insecure_channel(srv.target) as channel:
                stubs = Stubs(channel)
                org = await new_org(stubs)
                request_id = uuid.uuid4().hex
                request = clients_pb2.CreateClientRequest(
                    organization_id=org,
                    client=resources_pb2.Client(family_name="Committed", external_id="once-1"),
                    request_id=request_id,
                )
                proxy.cut_after_commit = True
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stubs.clients.CreateClient(
                        request, metadata=(("x-request-id", "first-call"),)
                    )
                assert proxy.commits_cut == 1
                _assert_unavailable(err.value, "COMMIT_OUTCOME_UNKNOWN")
                metadata = details(err.value)["ErrorInfo"].metadata
                assert metadata.get("request_id", request_id) == request_id

                retried = await stubs.clients.CreateClient(
                    request, metadata=(("x-request-id", "retry"),)
                )
                again = await stubs.clients.CreateClient(request)
                assert retried == again
                assert retried.client.external_id == "once-1"

    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT id::text FROM clients WHERE organization_id = $1", uuid.UUID(org)
        )
        assert [r["id"] for r in rows] == [retried.client.id]  # the first write, once
        audited = await conn.fetch(
            "SELECT correlation_id FROM audit_events "
            "WHERE organization_id = $1 AND resource_id = $2",
            uuid.UUID(org),
            retried.client.id,
        )
        # Written once, by the first call (whose COMMIT the client never heard).
        assert [r["correlation_id"] for r in audited] == ["first-call"]
    finally:
        await conn.close()
