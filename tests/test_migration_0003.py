"""Migration 0003 on data written before it: hours become wall-clock minutes,
appointments get their occupied interval, time off is made finite and at most
366 days long (split, never dropped), and the downgrade gives the old shape back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import asyncpg
from asyncpg.types import Range

from server.db.engine import to_asyncpg_dsn
from server.db.migrate import downgrade, upgrade
from server.testing import create_database, drop_database, test_settings

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


async def test_0003_keeps_and_fits_existing_rows(root_url: str) -> None:
    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    migrations = test_settings().migrations_dir
    org, provider, client, service = (str(uuid.uuid4()) for _ in range(4))
    appointment = str(uuid.uuid4())
    try:
        await upgrade(url, migrations, "0002")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            await conn.execute(
                "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'O', $2, 'UTC')",
                org,
                f"m-{org[:8]}",
            )
            await conn.execute(
                "INSERT INTO providers (organization_id, id, display_name, time_zone) "
                "VALUES ($1, $2, 'P', 'Europe/Berlin')",
                org,
                provider,
            )
            await conn.execute(
                "INSERT INTO services (organization_id, id, name, duration_minutes, price_minor, "
                "currency) VALUES ($1, $2, 'S', 30, 100, 'EUR')",
                org,
                service,
            )
            await conn.execute(
                "INSERT INTO clients (organization_id, id, given_name, given_key, family_key) "
                "VALUES ($1, $2, 'C', 'c', '')",
                org,
                client,
            )
            await conn.execute(
                "INSERT INTO working_hours (organization_id, id, provider_id, weekday, "
                "start_time, end_time, valid_from) VALUES ($1, $2, $3, 1, $4, $5, '2026-01-01')",
                org,
                str(uuid.uuid4()),
                provider,
                time(9, 30),
                time(17, 0),
            )
            await conn.execute(
                "INSERT INTO appointments (organization_id, id, provider_id, client_id, "
                "service_id, during, status, price_minor, currency) "
                "VALUES ($1, $2, $3, $4, $5, $6, 'confirmed', 100, 'EUR')",
                org,
                appointment,
                provider,
                client,
                service,
                Range(T0, T0 + timedelta(minutes=30)),
            )
            for during, reason in (
                (Range(T0, None), "open end"),
                (Range(T0, T0 + timedelta(days=800)), "long"),
                (Range(T0, T0 + timedelta(days=2)), "short"),
            ):
                await conn.execute(
                    "INSERT INTO time_off (organization_id, id, provider_id, during, reason) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    org,
                    str(uuid.uuid4()),
                    provider,
                    during,
                    reason,
                )
        finally:
            await conn.close()

        await upgrade(url, migrations)
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            hours = await conn.fetchrow("SELECT start_minute, end_minute FROM working_hours")
            assert (hours["start_minute"], hours["end_minute"]) == (570, 1020)
            row = await conn.fetchrow("SELECT during, occupied FROM appointments")
            assert row["occupied"] == row["during"]
            pieces = await conn.fetch(
                "SELECT reason, lower(during) AS s, upper(during) AS e FROM time_off "
                "ORDER BY reason, lower(during)"
            )
            by_reason: dict[str, list[tuple[datetime, datetime]]] = {}
            for p in pieces:
                by_reason.setdefault(p["reason"], []).append((p["s"], p["e"]))
            year = timedelta(days=366)
            assert by_reason["open end"] == [(T0, T0 + year)]
            assert by_reason["short"] == [(T0, T0 + timedelta(days=2))]
            # 800 days: 366 + 366 + 68, back to back, nothing lost.
            assert by_reason["long"] == [
                (T0, T0 + year),
                (T0 + year, T0 + 2 * year),
                (T0 + 2 * year, T0 + timedelta(days=800)),
            ]
        finally:
            await conn.close()

        await downgrade(url, migrations, "0002")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            back = await conn.fetchrow("SELECT start_time, end_time FROM working_hours")
            assert (back["start_time"], back["end_time"]) == (time(9, 30), time(17, 0))
        finally:
            await conn.close()
    finally:
        await drop_database(root_url, name)
