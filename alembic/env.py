"""Alembic environment: migrations run on the service's own async engine.

The service calls ``server.db.migrate`` which passes the URL in the config's
attributes; there is no alembic.ini (``booking-data migrate`` is the CLI).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from server.db.engine import to_sqlalchemy_url
from server.db.schema import metadata

config = context.config
target_metadata = metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # One lock-protected transaction per migration run: two servers starting
        # at once do not both migrate.
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        # Serialize concurrent migrators (several replicas starting together).
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7262531)")
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    else:
        asyncio.run(_run_async(config.attributes["url"]))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
