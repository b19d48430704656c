"""Test harness shipped with the package: a real PostgreSQL and a real server.

    async with test_database() as url:          # embedded, or BOOKING_TEST_DATABASE_URL
        async with running_server(url) as srv:  # create_server on port 0, started
            channel = grpc.aio.insecure_channel(srv.target)

``test_database`` creates a fresh, migrated database (``booking_test_<hex>``)
on the server named by ``BOOKING_TEST_DATABASE_URL`` (e.g. the PostgreSQL 15
on 127.0.0.1:5432) or, when unset, on an embedded PostgreSQL it starts in a
temporary directory; it drops/stops what it created on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from server.app import BookingServer, create_server
from server.config import Settings, load_settings
from server.db.embedded import EmbeddedPostgres
from server.db.engine import to_asyncpg_dsn
from server.db.migrate import upgrade

__all__ = [
    "assert_eventually",
    "running_server",
    "server_root_url",
    "test_database",
    "test_settings",
]

TEST_DATABASE_URL_ENV = "BOOKING_TEST_DATABASE_URL"


def test_settings(**overrides: Any) -> Settings:
    env = {"BOOKING_ENV": "test"}
    return load_settings(env, **{"port": 0, **overrides})


test_settings.__test__ = False  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def server_root_url() -> AsyncIterator[tuple[str, EmbeddedPostgres | None]]:
    """URL of a PostgreSQL server to create databases on, and the embedded one if started."""
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        yield external, None
        return
    with tempfile.TemporaryDirectory(prefix="booking-pg-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pgdata")
        url = await asyncio.to_thread(pg.start)
        try:
            yield url, pg
        finally:
            await asyncio.to_thread(pg.stop, "immediate")


async def _execute_on(root_url: str, sql: str) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(root_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(root_url: str, name: str) -> str:
    await _execute_on(root_url, f'CREATE DATABASE "{name}"')
    return make_url(root_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(root_url: str, name: str) -> None:
    await _execute_on(root_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def test_database(
    migrations_dir: Path | None = None, *, migrate: bool = True
) -> AsyncIterator[str]:
    """A fresh database (migrated to head unless ``migrate=False``)."""
    async with server_root_url() as (root, _pg):
        name = f"booking_test_{uuid.uuid4().hex[:12]}"
        url = await create_database(root, name)
        try:
            if migrate:
                await upgrade(url, migrations_dir or test_settings().migrations_dir)
            yield url
        finally:
            await drop_database(root, name)


test_database.__test__ = False  # type: ignore[attr-defined]


@dataclass
class RunningServer:
    server: BookingServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@contextlib.asynccontextmanager
async def running_server(
    url: str, settings: Settings | None = None, *, wait_serving: bool = True, **kwargs: Any
) -> AsyncIterator[RunningServer]:
    settings = settings or test_settings()
    server = create_server(settings, database_url=url, **kwargs)
    await server.start()
    try:
        if wait_serving:
            await assert_eventually(lambda: _serving(server), timeout=10)
        yield RunningServer(server)
    finally:
        await server.stop(1.0)


async def _serving(server: BookingServer) -> bool:
    from grpc_health.v1 import health_pb2

    return bool(server.health.status == health_pb2.HealthCheckResponse.SERVING)


async def assert_eventually(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a polling budget, not a cancel scope
    interval: float = 0.05,
    message: str = "condition did not become true",
) -> None:
    """Poll ``condition`` until it is true (instead of sleeping in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout}s")
        await asyncio.sleep(interval)
