"""server.db._pool: the one place that reaches into SQLAlchemy's pool. These
pin what it relies on, so that an SQLAlchemy upgrade that changes any of it
fails here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from server.config import PoolSettings
from server.db import _pool
from server.db.engine import create_engine, to_asyncpg_dsn
from server.testing import assert_eventually, test_settings


def _engine(url: str, **pool: object) -> AsyncEngine:
    settings = test_settings(pool=dataclasses.replace(PoolSettings(), **pool))  # type: ignore[arg-type]
    return create_engine(settings, url)


@pytest_asyncio.fixture(loop_scope="session")
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def _alive(admin: asyncpg.Connection, pid: int) -> bool:
    return bool(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


async def test_size_overflow_and_timeout(database_url: str) -> None:
    engine = _engine(database_url, size=1, max_overflow=1, timeout_s=0.2)
    try:
        first, raw1 = await _pool.checkout(engine)
        second, raw2 = await _pool.checkout(engine)  # the overflow
        assert raw1 is not None and raw2 is not None and raw1 is not raw2
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            await _pool.checkout(engine)
        await _pool.release(first)
        third, raw3 = await _pool.checkout(engine)  # a free one again
        assert raw3 is raw1
        await _pool.release(second)
        await _pool.release(third)
    finally:
        await engine.dispose()


async def test_released_is_reused_discarded_is_closed(
    database_url: str, admin: asyncpg.Connection
) -> None:
    engine = _engine(database_url, size=1, max_overflow=0)
    try:
        handle, raw = await _pool.checkout(engine)
        assert raw is not None
        pid = raw.get_server_pid()
        await _pool.release(handle)

        handle, raw = await _pool.checkout(engine)
        assert raw is not None and raw.get_server_pid() == pid  # reused
        # Released connections are reset (the pool's rollback), still usable.
        assert await raw.fetchval("SELECT 1") == 1
        await _pool.discard(handle)
        assert raw.is_closed()
        await assert_eventually(lambda: _not(_alive(admin, pid)))  # its backend is gone

        handle, raw = await _pool.checkout(engine)
        assert raw is not None and raw.get_server_pid() != pid  # a new one
        await _pool.release(handle)
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_recycle_replaces_old_connections(database_url: str) -> None:
    # recycle 0: every pooled connection is already too old at its next checkout.
    engine = _engine(database_url, size=1, max_overflow=0, recycle_s=0)
    try:
        handle, raw = await _pool.checkout(engine)
        assert raw is not None
        pid = raw.get_server_pid()
        await _pool.release(handle)
        handle, raw = await _pool.checkout(engine)
        assert raw is not None and raw.get_server_pid() != pid
        await _pool.release(handle)
    finally:
        await engine.dispose()


async def test_dispose_replaces_the_pool(database_url: str, admin: asyncpg.Connection) -> None:
    engine = _engine(database_url, size=2, max_overflow=0)
    try:
        handle, raw = await _pool.checkout(engine)
        assert raw is not None
        pid = raw.get_server_pid()
        await _pool.release(handle)
        old = engine.sync_engine.pool
        await engine.dispose()
        assert engine.sync_engine.pool is not old
        await assert_eventually(lambda: _not(_alive(admin, pid)))
        handle, raw = await _pool.checkout(engine)  # from the new pool
        assert raw is not None and raw.get_server_pid() != pid
        await _pool.release(handle)
    finally:
        await engine.dispose()


async def _not(awaitable: object) -> bool:
    return not await awaitable  # type: ignore[misc]


async def test_concurrent_checkouts_never_share(database_url: str) -> None:
    engine = _engine(database_url, size=3, max_overflow=0, timeout_s=5)
    try:

        async def one() -> int:
            handle, raw = await _pool.checkout(engine)
            assert raw is not None
            try:
                return int(await raw.fetchval("SELECT pg_backend_pid()"))
            finally:
                await _pool.release(handle)

        pids = await asyncio.gather(*(one() for _ in range(12)))
        assert len(set(pids)) <= 3
    finally:
        await engine.dispose()
