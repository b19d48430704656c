"""``create_server(settings)``: builds the whole server and returns it unstarted.

Nothing happens at import time. The returned :class:`BookingServer` has bound
its port (``port`` is known, also for port 0); ``await start()`` starts
serving and the background tasks; ``await stop(grace)`` lets in-flight RPCs
finish within ``grace`` seconds, then closes the pool and telemetry (each step
runs even when an earlier one fails).

Services are registered from one table, :data:`server.handlers.SERVICES`:
registration, health and reflection all follow it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server.background import HealthMonitor, Purger
from server.config import Settings
from server.db.engine import Database, create_engine, to_asyncpg_dsn
from server.db.migrate import head_revision
from server.handlers import SERVICES, Deps, service_names
from server.interceptors import CallInterceptor
from server.paging import PageTokenCodec
from server.reflection import enable_reflection
from server.telemetry import Telemetry, create_telemetry
from server.timezones import TimeZones

__all__ = ["SERVICE_NAMES", "BookingServer", "PortUnavailable", "create_server"]

_log = logging.getLogger(__name__)

SERVICE_NAMES = service_names()
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class PortUnavailable(OSError):
    """The listen address cannot be bound (taken, or not an address of this host)."""


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
        steps = (
            ("health monitor", self.health.stop),
            ("purger", self.purger.stop),
            ("gRPC server", lambda: self.grpc_server.stop(grace)),
            ("connection pool", self.database.engine.dispose),
        )
        for name, step in steps:
            try:
                await step()
            except Exception:
                _log.exception("stopping the %s failed; going on with the shutdown", name)
        try:
            self.telemetry.shutdown()
        except Exception:
            _log.exception("stopping telemetry failed")

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
    deps = Deps(
        db=database,
        settings=settings,
        tokens=PageTokenCodec(settings.page_token_secret),
        zones=TimeZones(database),
    )

    server = aio.server(
        interceptors=[CallInterceptor(telemetry)],
        options=[
            # Only --workers share a port: a second server on a taken port must
            # fail to bind, not split the callers between two databases.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    for service in SERVICES:
        service.register(deps, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((*SERVICE_NAMES, HEALTH_SERVICE_NAME), server)
    try:
        # grpcio raises RuntimeError("Failed to bind ...") (older ones returned 0).
        port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    except RuntimeError as exc:
        raise PortUnavailable(f"could not bind {settings.host}:{settings.port}") from exc
    if port == 0:
        raise PortUnavailable(f"could not bind {settings.host}:{settings.port}")
    monitor = HealthMonitor(
        health_servicer,
        to_asyncpg_dsn(url),
        head_revision(settings.migrations_dir),
        settings.health_interval_s,
        SERVICE_NAMES,
    )
    purger = Purger(database, settings.request_id_retention_s, settings.purge_interval_s)
    return BookingServer(server, port, database, monitor, telemetry, settings, purger)
