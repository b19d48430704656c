"""``create_server(settings)``: builds the whole server and returns it unstarted.

Nothing happens at import time. The returned :class:`BookingServer` has bound
its port (``port`` is known, also for port 0); ``await start()`` starts
serving and the health monitor; ``await stop(grace)`` lets in-flight RPCs
finish within ``grace`` seconds, then closes the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from booking.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    clients_pb2,
    clients_pb2_grpc,
    organizations_pb2,
    organizations_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server.config import Settings
from server.db.engine import Database, create_engine, to_asyncpg_dsn
from server.db.migrate import head_revision
from server.handlers._common import Deps
from server.handlers.audit import AuditService
from server.handlers.catalog import CatalogService
from server.handlers.clients import ClientService
from server.handlers.organizations import OrganizationService
from server.handlers.providers import ProviderService
from server.interceptors import CallInterceptor
from server.paging import PageTokenCodec
from server.queries.requests import purge_request_results
from server.reflection import enable_reflection
from server.telemetry import Telemetry, create_telemetry

__all__ = ["SERVICE_NAMES", "BookingServer", "create_server"]

_log = logging.getLogger(__name__)

SERVICE_NAMES = (
    organizations_pb2.DESCRIPTOR.services_by_name["OrganizationService"].full_name,
    providers_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    clients_pb2.DESCRIPTOR.services_by_name["ClientService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class HealthMonitor:
    """SERVING only while the database answers and its schema is at head.

    Probes on a dedicated connection (not the pool: an exhausted pool is load,
    not an outage) every ``interval`` seconds.
    """

    def __init__(
        self, servicer: health.aio.HealthServicer, dsn: str, head: str, interval: float
    ) -> None:
        self._servicer = servicer
        self._dsn = dsn
        self._head = head
        self._interval = interval
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.status = health_pb2.HealthCheckResponse.NOT_SERVING

    async def _set(self, status: int) -> None:
        if status != self.status:
            level = (
                logging.INFO
                if status == health_pb2.HealthCheckResponse.SERVING
                else logging.WARNING
            )
            _log.log(level, "health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        self.status = status
        await self._servicer.set("", status)
        for name in SERVICE_NAMES:
            await self._servicer.set(name, status)

    async def probe(self) -> int:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self._dsn,
                    timeout=max(1.0, self._interval),
                    server_settings={"application_name": "booking-data-health"},
                )
            version = await self._conn.fetchval(
                "SELECT version_num FROM alembic_version", timeout=max(1.0, self._interval)
            )
            ok = version == self._head
            if not ok:
                _log.warning("schema at %s, expected head %s", version, self._head)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            ok = False
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set(status)
        return int(status)

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        await _cancel(self._task)
        await self._servicer.enter_graceful_shutdown()
        if self._conn is not None:
            self._conn.terminate()


class Purger:
    """Forgets request_id results older than the retention, every ``interval`` seconds
    (the first pass soon after start). Failures are logged and retried next time."""

    def __init__(self, database: Database, retention_s: float, interval: float) -> None:
        self._database = database
        self._retention_s = retention_s
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def purge(self) -> int:
        async with self._database.connection(timeout_s=60.0) as conn:
            return await purge_request_results(conn, self._retention_s)

    async def _run(self) -> None:
        await asyncio.sleep(min(self._interval, 5.0))
        while True:
            try:
                purged = await self.purge()
                if purged:
                    _log.info("purged %d request_id results", purged)
            except Exception as exc:
                _log.warning("purging request_id results failed: %s", exc)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="purge-request-results")

    async def stop(self) -> None:
        await _cancel(self._task)


@dataclass
class BookingServer:
    grpc_server: aio.Server
    port: int
    database: Database
    health: HealthMonitor
    telemetry: Telemetry
    settings: Settings
    purger: Purger

    async def start(self) -> None:
        await self.grpc_server.start()
        await self.health.start()
        self.purger.start()
        _log.info("serving on %s:%s", self.settings.host, self.port)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_s if grace is None else grace
        await self.health.stop()
        await self.purger.stop()
        await self.grpc_server.stop(grace)
        await self.database.engine.dispose()
        self.telemetry.shutdown()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


def create_server(
    settings: Settings,
    *,
    database_url: str | None = None,
    telemetry: Telemetry | None = None,
) -> BookingServer:
    """Build the server for ``database_url`` (default ``settings.database_url``)."""
    url = database_url or settings.database_url
    if not url:
        raise ValueError("create_server needs a database URL (the CLI starts an embedded one)")
    telemetry = telemetry or create_telemetry(settings)
    database = Database(create_engine(settings, url), settings)
    deps = Deps(db=database, settings=settings, tokens=PageTokenCodec(settings.page_token_secret))

    server = aio.server(
        interceptors=[CallInterceptor(telemetry)],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    organizations_pb2_grpc.add_OrganizationServiceServicer_to_server(
        OrganizationService(deps), server
    )
    providers_pb2_grpc.add_ProviderServiceServicer_to_server(ProviderService(deps), server)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogService(deps), server)
    clients_pb2_grpc.add_ClientServiceServicer_to_server(ClientService(deps), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditService(deps), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    monitor = HealthMonitor(
        health_servicer,
        to_asyncpg_dsn(url),
        head_revision(settings.migrations_dir),
        settings.health_interval_s,
    )
    purger = Purger(database, settings.request_id_retention_s, settings.purge_interval_s)
    return BookingServer(server, port, database, monitor, telemetry, settings, purger)
