"""Migration 0006 on rows written before it: the rollups are filled from them
(business dates in each provider's zone), a payment stored as REFUNDED gets
its refund row, organizations start their weeks on Monday; the downgrade
gives the old shape back."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

from server.db.engine import Conn, to_asyncpg_dsn
from server.db.migrate import downgrade, upgrade
from server.queries.rollup_check import check_tenant
from server.testing import create_database, drop_database, test_settings

# 23:30 UTC: already the next day in Auckland, still that day in Los Angeles.
START = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)


async def _rows_before_0006(conn: asyncpg.Connection) -> dict[str, str]:
    ids = {k: str(uuid.uuid4()) for k in ("org", "nz", "la", "svc", "c1", "c2")}
    org = ids["org"]
    await conn.execute(
        "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'O', $2, 'UTC')",
        org,
        f"m-{org[:8]}",
    )
    for key, zone in (("nz", "Pacific/Auckland"), ("la", "America/Los_Angeles")):
        await conn.execute(
            "INSERT INTO providers (organization_id, id, display_name, display_key, time_zone) "
            "VALUES ($1, $2, 'P', 'p', $3)",
            org,
            ids[key],
            zone,
        )
    await conn.execute(
        "INSERT INTO services (organization_id, id, name, name_key, duration_minutes, "
        "price_minor, currency) VALUES ($1, $2, 'S', 's', 45, 4000, 'EUR')",
        org,
        ids["svc"],
    )
    for key in ("c1", "c2"):
        await conn.execute(
            "INSERT INTO clients (organization_id, id, given_name, given_key, family_key) "
            "VALUES ($1, $2, 'C', 'c', '')",
            org,
            ids[key],
        )
    appointments = []
    for n, (provider, client, status) in enumerate(
        (("nz", "c1", "completed"), ("la", "c1", "completed"), ("la", "c2", "cancelled"))
    ):
        start = START + timedelta(days=n)
        during = asyncpg.Range(start, start + timedelta(minutes=45))
        appointment = str(uuid.uuid4())
        appointments.append(appointment)
        await conn.execute(
            "INSERT INTO appointments (organization_id, id, provider_id, client_id, service_id, "
            "during, occupied, status, price_minor, currency) "
            "VALUES ($1, $2, $3, $4, $5, $6, $6, $7, 4000, 'EUR')",
            org,
            appointment,
            ids[provider],
            ids[client],
            ids["svc"],
            during,
            status,
        )
    # A completed payment of the first, partly refunded with a refund row; a
    # payment stored REFUNDED before refunds were recorded; a failed one.
    paid, legacy = str(uuid.uuid4()), str(uuid.uuid4())
    for pid, appointment, status, refunded in (
        (paid, appointments[0], "completed", 1000),
        (legacy, appointments[1], "refunded", 4000),
        (str(uuid.uuid4()), appointments[1], "failed", 0),
    ):
        await conn.execute(
            "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor, "
            "currency, status, method, refunded_minor, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, 4000, 'EUR', $5, 'card', $6, $7::timestamptz, "
            "$7::timestamptz + interval '1 day')",
            org,
            pid,
            ids["c1"],
            appointment,
            status,
            refunded,
            START + timedelta(hours=2),
        )
    await conn.execute(
        "INSERT INTO refunds (organization_id, id, payment_id, amount_minor, currency, created_at) "
        "VALUES ($1, $2, $3, 1000, 'EUR', $4)",
        org,
        str(uuid.uuid4()),
        paid,
        START + timedelta(hours=3),
    )
    return {**ids, "legacy": legacy}


async def test_0006_fills_the_rollups_from_the_rows_before_it(root_url: str) -> None:
    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    migrations = test_settings().migrations_dir
    try:
        await upgrade(url, migrations, "0005")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            ids = await _rows_before_0006(conn)
        finally:
            await conn.close()

        await upgrade(url, migrations, "0006")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            org = ids["org"]
            legacy = await conn.fetch(
                "SELECT amount_minor, created_at FROM refunds WHERE payment_id = $1", ids["legacy"]
            )
            assert [(r["amount_minor"], r["created_at"]) for r in legacy] == [
                (4000, START + timedelta(days=1, hours=2))
            ]
            days = await conn.fetch(
                "SELECT provider_id::text, business_date, pending, completed, cancelled, "
                "booked_minutes, expected_minor, completed_minor, paid_minor, refunded_minor "
                "FROM provider_day_totals WHERE organization_id = $1 "
                "ORDER BY business_date, provider_id",
                org,
            )
            got = sorted(tuple(r) for r in days)
            assert got == sorted(
                [
                    # 03-10 23:30 UTC is 03-11 in Auckland: the completed visit, its
                    # payment (01:30 UTC = 03-11 too) and its refund of 1,000.
                    (ids["nz"], date(2026, 3, 11), 0, 1, 0, 45, 4000, 4000, 4000, 1000),
                    # 03-11 23:30 UTC is 03-11 in Los Angeles; the legacy payment
                    # (created 03-11 01:30 UTC = 03-10 18:30 there) and its refund
                    # (dated at its update, 03-12 01:30 UTC = 03-11 there).
                    (ids["la"], date(2026, 3, 10), 0, 0, 0, 0, 0, 0, 4000, 0),
                    (ids["la"], date(2026, 3, 11), 0, 1, 0, 45, 4000, 4000, 0, 4000),
                    (ids["la"], date(2026, 3, 12), 0, 0, 1, 0, 0, 0, 0, 0),
                ]
            )
            balance = await conn.fetchrow(
                "SELECT charged_minor, paid_minor, refunded_minor, balance_minor "
                "FROM client_totals WHERE organization_id = $1 AND client_id = $2",
                org,
                ids["c1"],
            )
            assert tuple(balance) == (8000, 8000, 5000, 5000)
            assert (
                await conn.fetchval(
                    "SELECT first_day_of_week FROM organizations WHERE id = $1", org
                )
                == 1
            )
            report = await check_tenant(Conn(conn, None), org)
            assert report.total == 0, report.drifted
        finally:
            await conn.close()

        await downgrade(url, migrations, "0005")
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            assert await conn.fetchval("SELECT to_regclass('client_totals')") is None
            assert await conn.fetchval("SELECT count(*) FROM refunds") == 1
        finally:
            await conn.close()
    finally:
        await drop_database(root_url, name)
