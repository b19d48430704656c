"""The one place that reaches into SQLAlchemy's pool internals.

:class:`server.db.engine.Database` hands each call a raw asyncpg connection
from the engine's pool (QueuePool: size, overflow, checkout timeout, recycle,
pre-ping), without SQLAlchemy's ``Connection`` facade, which the raw path never
uses and which costs two more greenlet hops per call. That needs three things
SQLAlchemy documents but does not offer as an asyncio API:

- ``engine.sync_engine.pool.connect()`` run through ``greenlet_spawn`` (the
  pool is synchronous; the asyncpg adapter awaits inside it);
- ``PoolProxiedConnection.driver_connection`` (the asyncpg connection);
- ``PoolProxiedConnection.close()`` (back to the pool, with its reset) and
  ``invalidate()`` (drop it and close the session).

Everything else uses the narrow interface below; ``tests/test_pool_internals``
pins its behaviour so that an SQLAlchemy upgrade that changes any of it fails
there, not in production.
"""

from __future__ import annotations

from typing import NewType

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

__all__ = ["Handle", "checkout", "discard", "release"]

# What checkout() returns to give back later: opaque to callers.
Handle = NewType("Handle", PoolProxiedConnection)


async def checkout(engine: AsyncEngine) -> tuple[Handle, asyncpg.Connection | None]:
    """A connection from ``engine``'s pool and its asyncpg connection.

    Raises ``sqlalchemy.exc.TimeoutError`` when the pool stays exhausted for
    its timeout, and the driver's (SQLAlchemy-wrapped) error when connecting
    fails. The asyncpg connection is None only if the pool handed out an
    invalidated entry (never seen; callers discard it).
    """
    # The attribute, not a cached pool: engine.dispose() replaces the pool.
    pooled = await greenlet_spawn(engine.sync_engine.pool.connect)
    return Handle(pooled), pooled.driver_connection


async def release(handle: Handle) -> None:
    """Give a healthy connection back to the pool (SQLAlchemy resets it)."""
    await greenlet_spawn(handle.close)


async def discard(handle: Handle) -> None:
    """Close the session at once (no goodbye: a cancel may be in flight) and
    drop it from the pool; the pool opens a new one when needed."""
    raw = handle.driver_connection
    if raw is not None:
        raw.terminate()

    def invalidate() -> None:
        try:
            handle.invalidate()
        finally:
            handle.close()

    await greenlet_spawn(invalidate)
