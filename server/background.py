"""Work the server does outside RPCs: the health monitor and the purger.

Each is a task started by ``BookingServer.start`` and cancelled by ``stop``.
Their database work is bounded like an RPC's: the monitor's probe by its own
timeouts, the purger's statements by ``Database.connection(timeout_s=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from grpc_health.v1 import health, health_pb2

from server.db.engine import Database
from server.db.errors import describe_database_error
from server.queries.requests import purge_request_results

__all__ = ["HealthMonitor", "Purger"]

_log = logging.getLogger(__name__)

# The purger's statements may take this long (seconds); batches keep each short.
PURGE_TIMEOUT_S = 60.0


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
        self,
        servicer: health.aio.HealthServicer,
        dsn: str,
        head: str,
        interval: float,
        services: tuple[str, ...],
    ) -> None:
        self._servicer = servicer
        self._services = services
        self._dsn = dsn
        self._head = head
        self._interval = interval
        self._conn: asyncpg.Connection | None = None
        # One probe at a time on the one connection: the periodic one and an
        # explicit one (start-up, tests) would otherwise collide ("another
        # operation is in progress") and read as NOT_SERVING.
        self._probing = asyncio.Lock()
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
        for name in self._services:
            await self._servicer.set(name, status)

    async def probe(self) -> int:
        async with self._probing:
            return await self._probe()

    async def _probe(self) -> int:
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
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            # Raised by a connection that died mid-operation (a killed server).
            asyncpg.exceptions.InternalClientError,
        ):
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
        async with self._database.connection(timeout_s=PURGE_TIMEOUT_S) as conn:
            return await purge_request_results(conn, self._retention_s)

    async def _run(self) -> None:
        await asyncio.sleep(min(self._interval, 5.0))
        while True:
            try:
                purged = await self.purge()
                if purged:
                    _log.info("purged %d request_id results", purged)
            except Exception as exc:
                _log.warning("purging request_id results failed: %s", describe_database_error(exc))
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="purge-request-results")

    async def stop(self) -> None:
        await _cancel(self._task)
