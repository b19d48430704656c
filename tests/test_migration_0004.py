"""Migration 0004 on data written before it: providers and services get their
folded name keys (server.text.fold, the rule the list searches fold by),
appointments their start_at / end_at and the 24-hour bound; the downgrade
gives the old shape back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from asyncpg.types import Range

from server.db.engine import to_asyncpg_dsn
from server.db.migrate import downgrade, upgrade
from server.testing import create_database, drop_database, test_settings
from server.text import fold

T0 = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
NAMES = ("İSTANBUL Straße", "ΟΔΥΣΣΕΥΣ", "Dr\u00a0Grey", "ﬀ ligature")


async def test_0004_backfills_keys_and_bounds(root_url: str) -> None:
    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    migrations = test_settings().migrations_dir
    org, client, appointment = (str(uuid.uuid4()) for _ in range(3))
    providers = [str(uuid.uuid4()) for _ in NAMES]
    services = [str(uuid.uuid4()) for _ in NAMES]
    try:
        await upgrade(url, migrations, "0003")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            await conn.execute(
                "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'O', $2, 'UTC')",
                org,
                f"m-{org[:8]}",
            )
            for pid, sid, text in zip(providers, services, NAMES, strict=True):
                await conn.execute(
                    "INSERT INTO providers (organization_id, id, display_name, time_zone) "
                    "VALUES ($1, $2, $3, 'America/New_York')",
                    org,
                    pid,
                    text,
                )
                await conn.execute(
                    "INSERT INTO services (organization_id, id, name, duration_minutes, "
                    "price_minor, currency) VALUES ($1, $2, $3, 30, 100, 'EUR')",
                    org,
                    sid,
                    text,
                )
            await conn.execute(
                "INSERT INTO clients (organization_id, id, given_name, given_key, family_key) "
                "VALUES ($1, $2, 'C', 'c', '')",
                org,
                client,
            )
            during = Range(T0, T0 + timedelta(minutes=30))
            await conn.execute(
                "INSERT INTO appointments (organization_id, id, provider_id, client_id, "
                "service_id, during, occupied, status, price_minor, currency) "
                "VALUES ($1, $2, $3, $4, $5, $6, $6, 'confirmed', 100, 'EUR')",
                org,
                appointment,
                providers[0],
                client,
                services[0],
                during,
            )
        finally:
            await conn.close()

        await upgrade(url, migrations)
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            keys = {
                r["display_name"]: r["display_key"]
                for r in await conn.fetch("SELECT display_name, display_key FROM providers")
            }
            assert keys == {text: fold(text) for text in NAMES}
            keys = {
                r["name"]: r["name_key"]
                for r in await conn.fetch("SELECT name, name_key FROM services")
            }
            assert keys == {text: fold(text) for text in NAMES}
            row = await conn.fetchrow("SELECT start_at, end_at FROM appointments")
            assert (row["start_at"], row["end_at"]) == (T0, T0 + timedelta(minutes=30))
            # Longer than a day is refused from now on.
            with_day = Range(T0 + timedelta(days=2), T0 + timedelta(days=3, seconds=1))
            try:
                await conn.execute("UPDATE appointments SET during = $1, occupied = $1", with_day)
            except asyncpg.CheckViolationError as err:
                assert err.constraint_name == "ck_appointments_during_bounded"
            else:
                raise AssertionError("an appointment longer than 24 hours was accepted")
        finally:
            await conn.close()

        await downgrade(url, migrations, "0003")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            columns = {
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name IN ('providers', 'services', 'appointments')"
                )
            }
            assert not columns & {"display_key", "name_key", "start_at", "end_at"}
            assert await conn.fetchval("SELECT count(*) FROM appointments") == 1
        finally:
            await conn.close()
    finally:
        await drop_database(root_url, name)
