"""Migration 0005 on payments written before it: a payment stored as REFUNDED
was refunded in full (refunded_minor = amount_minor), others have refunded
nothing; the downgrade gives the old shape back."""

from __future__ import annotations

import uuid

import asyncpg

from server.db.engine import to_asyncpg_dsn
from server.db.migrate import downgrade, upgrade
from server.testing import create_database, drop_database, test_settings


async def test_0005_backfills_refunded_payments(root_url: str) -> None:
    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    migrations = test_settings().migrations_dir
    org, client = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await upgrade(url, migrations, "0004")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            await conn.execute(
                "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'O', $2, 'UTC')",
                org,
                f"m-{org[:8]}",
            )
            await conn.execute(
                "INSERT INTO clients (organization_id, id, given_name, given_key, family_key) "
                "VALUES ($1, $2, 'C', 'c', '')",
                org,
                client,
            )
            for status, amount in (("refunded", 700), ("completed", 300), ("failed", 50)):
                await conn.execute(
                    "INSERT INTO payments (organization_id, id, client_id, amount_minor, currency,"
                    " status, method) VALUES ($1, $2, $3, $4, 'EUR', $5, 'card')",
                    org,
                    str(uuid.uuid4()),
                    client,
                    amount,
                    status,
                )
        finally:
            await conn.close()

        await upgrade(url, migrations, "0005")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            rows = await conn.fetch("SELECT status, refunded_minor, version FROM payments")
            got = {r["status"]: (r["refunded_minor"], r["version"]) for r in rows}
            assert got == {"refunded": (700, 1), "completed": (0, 1), "failed": (0, 1)}
        finally:
            await conn.close()

        await downgrade(url, migrations, "0004")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            columns = {
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'payments'"
                )
            }
            assert not columns & {"refunded_minor", "version"}
            assert await conn.fetchval("SELECT to_regclass('refunds')") is None
        finally:
            await conn.close()
    finally:
        await drop_database(root_url, name)
