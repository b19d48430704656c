"""The server process: graceful stop on SIGTERM, and its telemetry."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import cast

import asyncpg
import grpc
import pytest
from booking.v1 import clients_pb2, clients_pb2_grpc, resources_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.db.embedded import EmbeddedPostgres
from server.db.engine import to_asyncpg_dsn
from server.telemetry import create_telemetry
from server.testing import assert_eventually, running_server, test_settings
from tests.conftest import Stubs

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _health(target: str) -> int | None:
    """The server's overall health status, or None when it refuses the call."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return None
        return int(reply.status)


async def _serving(target: str) -> bool:
    return await _health(target) == health_pb2.HealthCheckResponse.SERVING


async def _not_serving(target: str) -> bool:
    return await _health(target) in (None, health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_sigterm_lets_the_call_in_flight_finish(
    database_url: str, stubs: Stubs, org: str
) -> None:
    client = (
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org, client=resources_pb2.Client(given_name="Before")
            )
        )
    ).client
    port = _free_port()
    target = f"127.0.0.1:{port}"
    env = {**os.environ, "BOOKING_ENV": "test", "BOOKING_SHUTDOWN_GRACE_S": "15"}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "server", "--database-url", database_url],
        *["serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    lock = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await assert_eventually(lambda: _serving(target), timeout=30)
        # Hold the row so that the update stays in flight until we let it go.
        tx = lock.transaction()
        await tx.start()
        await lock.execute("SELECT 1 FROM clients WHERE id = $1 FOR UPDATE", client.id)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = clients_pb2_grpc.ClientServiceStub(channel)
            update = asyncio.ensure_future(
                stub.UpdateClient(
                    clients_pb2.UpdateClientRequest(
                        organization_id=org,
                        client=resources_pb2.Client(id=client.id, given_name="After"),
                    ),
                    timeout=30,
                )
            )

            async def blocked() -> bool:
                # (pg_stat_activity is a snapshot per transaction: clear it.)
                await lock.execute("SELECT pg_stat_clear_snapshot()")
                return bool(
                    await lock.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'WITH %UPDATE clients%'"
                    )
                )

            await assert_eventually(blocked, message="the update never waited on the lock")
            proc.send_signal(signal.SIGTERM)
            await assert_eventually(
                lambda: _not_serving(target), message="health stayed SERVING after SIGTERM"
            )
            assert not update.done()
            await tx.rollback()  # let the update through, after the stop began
            updated = await asyncio.wait_for(update, 15)
            assert updated.client.given_name == "After"
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        # The server is gone: nothing listens on its port any more.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await lock.close()


async def test_each_call_is_a_span_and_a_duration_sample(database_url: str) -> None:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = create_telemetry(test_settings(), span_exporter=spans, metric_reader=reader)
    async with running_server(database_url, telemetry=telemetry) as srv:
        async with grpc.aio.insecure_channel(srv.target) as channel:
            stub = clients_pb2_grpc.ClientServiceStub(channel)
            org = "00000000-0000-7000-8000-000000000001"
            await stub.ListClients(
                clients_pb2.ListClientsRequest(organization_id=org),
                metadata=(("x-request-id", "trace-me"),),
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListClients(clients_pb2.ListClientsRequest(organization_id="bad"))
    ok, failed = spans.get_finished_spans()
    assert ok.name == failed.name == "/booking.v1.ClientService/ListClients"
    assert ok.attributes is not None and failed.attributes is not None
    assert ok.attributes["rpc.method"] == "ListClients"
    assert ok.attributes["booking.correlation_id"] == "trace-me"
    assert ok.status.is_ok and not failed.status.is_ok
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "rpc.server.duration"
        for point in cast(Histogram, metric.data).data_points
    ]
    by_code = {p.attributes["rpc.grpc.status_code"]: p.count for p in points if p.attributes}
    assert by_code == {"OK": 1, "INVALID_ARGUMENT": 1}


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


async def _workers(pid: int) -> list[int]:
    """The worker processes of the supervisor (spawn's resource tracker aside)."""
    found = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:  # noqa: ASYNC230 - procfs
                cmdline = f.read()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(child)
    return found


async def test_workers_share_the_port_and_stop_together(database_url: str) -> None:
    port = _free_port()
    target = f"127.0.0.1:{port}"
    env = {**os.environ, "BOOKING_ENV": "test"}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "server", "--database-url", database_url],
        *["serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        await assert_eventually(lambda: _serving(target), timeout=30)

        async def two_workers() -> bool:
            return len(await _workers(proc.pid)) == 2

        await assert_eventually(two_workers, message="no two worker processes")
        # Separate channels are separate connections: the kernel spreads them.
        for _ in range(6):
            async with grpc.aio.insecure_channel(target) as channel:
                await clients_pb2_grpc.ClientServiceStub(channel).ListClients(
                    clients_pb2.ListClientsRequest(organization_id=str(uuid.uuid4()))
                )
        # Only the unit's own workers share the port: a second server, plain or
        # another unit, fails at once naming the port (exit 3).
        for extra in ([], ["--workers", "2"]):
            second = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "server", "--database-url", database_url],
                *["serve", "--port", str(port), *extra],
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, err = await asyncio.wait_for(second.communicate(), 30)
            finally:
                if second.returncode is None:
                    second.kill()
                    await second.wait()
            assert second.returncode == 3, err
            (line,) = err.decode().splitlines()
            assert f"port {port} on 127.0.0.1 is in use by pid" in line
        workers = await _workers(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert not any(_alive(w) for w in workers)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_crashed_worker_takes_the_unit_down(database_url: str) -> None:
    """Fail fast: the orchestrator restarts the unit instead of a hidden crash loop."""
    port = _free_port()
    env = {**os.environ, "BOOKING_ENV": "test"}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "server", "--database-url", database_url],
        *["serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await assert_eventually(lambda: _serving(f"127.0.0.1:{port}"), timeout=30)

        async def two_workers() -> bool:
            return len(await _workers(proc.pid)) == 2

        await assert_eventually(two_workers)
        first, second = await _workers(proc.pid)
        os.kill(first, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 20) == 1
        assert not _alive(second)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_embedded_postgres_comes_back_after_kill_9(tmp_path: Path) -> None:
    """``serve`` owns its embedded PostgreSQL: a dead postmaster is restarted
    (same port, so the pool's URL stays valid) and health returns to SERVING."""
    port = _free_port()
    target = f"127.0.0.1:{port}"
    data_dir = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")}
    env.update({"BOOKING_ENV": "test", "BOOKING_EMBEDDED_DATA_DIR": str(data_dir)})
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "server", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    pg = EmbeddedPostgres(data_dir)  # only to read its postmaster.pid
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert first.startswith("embedded PostgreSQL at postgresql://postgres@127.0.0.1:")
        await assert_eventually(lambda: _serving(target), timeout=30)
        postmaster = pg.postmaster_pid()
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)

        async def restarted() -> bool:
            pid = pg.postmaster_pid()
            return pid is not None and pid != postmaster

        await assert_eventually(restarted, timeout=30, message="the postmaster was not restarted")
        await assert_eventually(lambda: _serving(target), timeout=30)
        # Calls work again (dead pooled connections are replaced).
        async with grpc.aio.insecure_channel(target) as channel:
            stub = clients_pb2_grpc.ClientServiceStub(channel)

            async def list_works() -> bool:
                try:
                    await stub.ListClients(
                        clients_pb2.ListClientsRequest(organization_id=str(uuid.uuid4()))
                    )
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    return False
                return True

            await assert_eventually(list_works, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        # Stopped with the server (cleanly: postmaster.pid is gone), and not
        # brought back by the supervisor.
        assert pg.postmaster_pid() is None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if pg.postmaster_pid() is not None:  # left behind by a failure: adopt, stop
            await asyncio.to_thread(pg.start)
            await asyncio.to_thread(pg.stop, "immediate")
