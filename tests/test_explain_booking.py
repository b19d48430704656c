"""Plans of the booking rules' statements on a big calendar: the availability
calendar statement (one provider, a week; 100 providers, a week; one
provider, 62 days) and the conflict statements (the header, then the calendar
around one start) read appointments through the exclusion constraint's GiST
(ex_appointments_no_overlap), time off, weekly hours and overrides through
their indexes, and never scan appointments sequentially. Custom and generic
plans both (the pool's prepared statements may switch to a generic plan).

Data: a dedicated database on the test server (other tests never see it),
filled with INSERT ... SELECT generate_series: 1,000 providers with weekly
hours, overrides and time off, and BOOKING_EXPLAIN_APPOINTMENTS appointments
(default 1,000,000) back to back over each provider's past and future, every
seventh cancelled. The foreign keys are added after the load and the
exclusion constraint's GiST index is built from its exact definition as a
plain index (see _load). Assertions are plan facts (scan types, index names,
rows read), never times.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest_asyncio

from bench.generate import _appointment_constraints
from server.paging import PageRequest
from server.queries import appointments as aq
from server.queries import calendar as q
from server.queries import schedules as sq
from server.queries._listing import page_sql
from tests import plans

N = int(os.environ.get("BOOKING_EXPLAIN_APPOINTMENTS", "1000000"))
PROVIDERS = 1000
SLOT = timedelta(minutes=30)


@dataclass(frozen=True)
class Big:
    conn: asyncpg.Connection
    org: str
    providers: list[str]
    now: datetime


_nodes = plans.nodes


async def _load(conn: asyncpg.Connection) -> Big:
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SET maintenance_work_mem = '256MB'")
    org = str(uuid.uuid4())
    service = str(uuid.uuid4())
    client = str(uuid.uuid4())
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await conn.execute(
        "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'Big', $2, 'UTC')",
        org,
        f"big-{org[:8]}",
    )
    await conn.execute(
        "INSERT INTO services (organization_id, id, name, duration_minutes, price_minor,"
        " currency, name_key) VALUES ($1, $2, 'Cut', 30, 2500, 'EUR', 'cut')",
        org,
        service,
    )
    await conn.execute(
        "INSERT INTO clients (organization_id, id, given_name, given_key, family_key)"
        " VALUES ($1, $2, 'Cli', 'cli', '')",
        org,
        client,
    )
    await conn.execute(
        "INSERT INTO providers (organization_id, id, display_name, time_zone, display_key)"
        " SELECT $1, gen_random_uuid(), 'P' || g, 'Europe/Berlin', 'p' || g"
        " FROM generate_series(1, $2) g",
        org,
        PROVIDERS,
    )
    providers = [
        str(r["id"])
        for r in await conn.fetch(
            "SELECT id FROM providers WHERE organization_id = $1 ORDER BY id", org
        )
    ]
    await conn.execute(
        "INSERT INTO offerings (organization_id, provider_id, service_id)"
        " SELECT $1, id, $2 FROM providers WHERE organization_id = $1",
        org,
        service,
    )
    # Weekly hours on weekdays (a rule replaced half a year ago), overrides and
    # time off every few weeks over the appointments' years.
    await conn.execute(
        "INSERT INTO working_hours (organization_id, id, provider_id, weekday, start_minute,"
        " end_minute, valid_from, valid_to)"
        " SELECT $1, gen_random_uuid(), p.id, d, 480, 1200, v.f, v.t"
        " FROM providers p, generate_series(1, 5) d,"
        " (VALUES (NULL::date, current_date - 180), (current_date - 179, NULL::date)) v(f, t)"
        " WHERE p.organization_id = $1",
        org,
    )
    await conn.execute(
        "INSERT INTO date_overrides (organization_id, id, provider_id, on_date, closed)"
        " SELECT $1, gen_random_uuid(), p.id, current_date + 7 * k, true"
        " FROM providers p, generate_series(-40, 10) k WHERE p.organization_id = $1",
        org,
    )
    await conn.execute(
        "INSERT INTO time_off (organization_id, id, provider_id, during)"
        " SELECT $1, gen_random_uuid(), p.id,"
        " tstzrange($2::timestamptz + k * interval '10 days',"
        " $2::timestamptz + k * interval '10 days' + interval '1 day')"
        " FROM providers p, generate_series(-40, 20) k WHERE p.organization_id = $1",
        org,
        now,
    )
    # The load is one statement without the foreign keys, the secondary
    # indexes and the exclusion constraint, ids in load order as UUIDv7 ids
    # are (the primary key appends); then the keys and indexes come back and the
    # constraint's GiST index is built as a plain index of its exact
    # definition: validating the constraint probes the index once per row,
    # minutes for a million, and plans depend on the index, not the check.
    gist = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ex_appointments_no_overlap'"
    )
    rebuild = [r for r in _appointment_constraints() if r[0].startswith(("fk_", "ix_"))]
    for _, drop, _ in rebuild:
        await conn.execute(drop)
    await conn.execute("ALTER TABLE appointments DROP CONSTRAINT ex_appointments_no_overlap")
    per = N // PROVIDERS
    # Back to back, half of each provider's share before now, half after.
    await conn.execute(
        "INSERT INTO appointments (organization_id, id, provider_id, client_id, service_id,"
        " during, status, price_minor, currency, occupied)"
        " SELECT $1, lpad(to_hex(p.n * $5 + g), 32, '0')::uuid, p.id, $2, $3, r,"
        " CASE WHEN g % 7 = 0 THEN 'cancelled' ELSE 'confirmed' END, 2500, 'EUR', r"
        " FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM providers"
        " WHERE organization_id = $1) p, generate_series(0, $5 - 1) g,"
        " LATERAL (SELECT tstzrange($4::timestamptz + (g - $5 / 2) * interval '30 minutes',"
        " $4::timestamptz + (g - $5 / 2 + 1) * interval '30 minutes')) x(r)"
        " ORDER BY p.n, g",
        org,
        client,
        service,
        now,
        per,
    )
    for _, _, add in rebuild:
        await conn.execute(add)
    await conn.execute(gist)
    await conn.execute("ANALYZE")
    return Big(conn, org, providers, now)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def big(database_url: str) -> AsyncIterator[Big]:
    async with plans.database_of_its_own(database_url, "booking_explain") as conn:
        yield await _load(conn)


async def _plans(conn: asyncpg.Connection, sql: str, args: list[Any]) -> list[list[dict[str, Any]]]:
    """The executed plan's nodes, custom and generic (tests.plans)."""
    return [nodes for _mode, nodes in await plans.custom_and_generic(conn, sql, args)]


def _scans(nodes: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """Scans of a table and of its indexes (named ix_/ex_/pk_<table>...)."""
    prefixes = tuple(f"{kind}_{table}" for kind in ("ix", "ex", "pk", "uq"))
    return [
        n
        for n in nodes
        if n.get("Relation Name") == table or n.get("Index Name", "").startswith(prefixes)
    ]


def _check_calendar_plan(nodes: list[dict[str, Any]], providers: int, days: float) -> None:
    appointments = _scans(nodes, "appointments")
    assert appointments, nodes
    assert all(n["Node Type"] != "Seq Scan" for n in appointments), appointments
    assert any(n.get("Index Name") == "ex_appointments_no_overlap" for n in appointments), (
        appointments
    )
    # Rows read from appointments: about the range's own (48 a day a provider).
    read = sum(
        (n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1)
        for n in appointments
        if n["Node Type"] in ("Index Scan", "Bitmap Heap Scan", "Index Only Scan")
    )
    assert read <= providers * (days + 2) * 48 * 1.2 + 100, (read, appointments)
    # Time off, hours and overrides through their own indexes for one
    # provider. For a tenth of the tenant's providers at once, PostgreSQL 15
    # may read the small schedule tables whole (10,000 hour rules here): the
    # rows it reads are then bounded by the tenant's, never by appointments.
    for table, rows in (("time_off", 61), ("working_hours", 10), ("date_overrides", 51)):
        scans = [n for n in _scans(nodes, table) if n["Node Type"] != "Bitmap Heap Scan"]
        assert scans, (table, nodes)
        if providers == 1:
            assert all(n["Node Type"] != "Seq Scan" for n in scans), (table, scans)
            assert all(n.get("Index Name", "").startswith(f"ix_{table}_") for n in scans), scans
        else:
            read = sum(n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0) for n in scans)
            assert read <= rows * PROVIDERS, (table, scans)


async def test_calendar_statement_plans(big: Big) -> None:
    count = await big.conn.fetchval(
        "SELECT count(*) FROM appointments WHERE organization_id = $1", big.org
    )
    assert count >= N - PROVIDERS
    start = big.now + timedelta(days=1)
    for providers, days in ((1, 7), (100, 7), (1, 62)):
        ids = big.providers[500 : 500 + providers]
        end = start + timedelta(days=days)
        args = [
            big.org,
            ids,
            start.date() - timedelta(days=2),
            end.date() + timedelta(days=2),
            asyncpg.Range(start - SLOT, end + 2 * SLOT),
            None,
        ]
        for nodes in await _plans(big.conn, q.CALENDAR_SQL, args):
            _check_calendar_plan(nodes, providers, days)


async def test_conflict_statement_plans(big: Big) -> None:
    provider = big.providers[123]
    service = await big.conn.fetchval("SELECT id FROM services WHERE organization_id = $1", big.org)
    excluded = await big.conn.fetchval(
        "SELECT id FROM appointments WHERE organization_id = $1 AND provider_id = $2"
        " AND lower(during) >= $3 ORDER BY organization_id, id LIMIT 1",
        big.org,
        provider,
        big.now,
    )
    client = await big.conn.fetchval("SELECT id FROM clients WHERE organization_id = $1", big.org)
    header = [big.org, provider, service, excluded, client]
    for nodes in await _plans(big.conn, q.BOOKING_HEADER_SQL, header):
        # (clients is not checked: the data set holds one client.)
        for table in ("appointments", "providers", "offerings"):
            scans = _scans(nodes, table)
            assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), (table, nodes)
            assert _read(scans) <= 1, (table, scans)
    # The writes' provider lock before the header: one row by its key.
    for nodes in await _plans(big.conn, q.LOCK_PROVIDER_SQL, [big.org, provider]):
        scans = _scans(nodes, "providers")
        assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), nodes
        assert _read(scans) <= 1, scans
    start = big.now + timedelta(days=3, minutes=15)
    args = [
        big.org,
        [provider],
        start.date() - timedelta(days=2),
        start.date() + timedelta(days=2),
        asyncpg.Range(start, start + SLOT),
        excluded,
    ]
    for nodes in await _plans(big.conn, q.CALENDAR_SQL, args):
        _check_calendar_plan(nodes, 1, 0)


def _read(nodes: list[dict[str, Any]]) -> int:
    """Rows the scans of ``nodes`` read (returned + removed by a filter or recheck)."""
    return int(
        sum(
            (
                n.get("Actual Rows", 0)
                + n.get("Rows Removed by Filter", 0)
                + n.get("Rows Removed by Index Recheck", 0)
            )
            * n.get("Actual Loops", 1)
            for n in nodes
            if "Scan" in n["Node Type"] and n["Node Type"] != "Bitmap Index Scan"
        )
    )


async def test_providers_header_plans(big: Big) -> None:
    """GetAvailability's header for 1 and 100 of the 1,000 providers (and an
    unknown one): never a look at appointments or time off. One provider is
    read through the keys of providers and offerings; for a tenth of the
    tenant's providers at once the planner may hash the two small tables
    whole (seen on PostgreSQL 18), so the rows read are then bounded by the
    tenant's providers, never more."""
    service = await big.conn.fetchval("SELECT id FROM services WHERE organization_id = $1", big.org)
    for count in (1, 100):
        ids = [*big.providers[200 : 200 + count], str(uuid.uuid4())]
        for nodes in await _plans(big.conn, q.PROVIDERS_HEADER_SQL, [big.org, service, ids]):
            for table in ("providers", "offerings"):
                scans = _scans(nodes, table)
                assert scans, (table, nodes)
                if count == 1:
                    assert all(n["Node Type"] != "Seq Scan" for n in scans), (table, scans)
                    assert _read(scans) <= len(ids), (table, scans)
                else:
                    assert _read(scans) <= PROVIDERS, (table, scans)
            for table in ("appointments", "time_off", "working_hours", "date_overrides"):
                assert not _scans(nodes, table), (table, nodes)


async def test_occupying_statement_plans(big: Big) -> None:
    """The committed appointments in a slot's way (the lost race's look-up):
    through the exclusion constraint's GiST, reading a few rows of one
    provider's thousand, whether or not an appointment is excluded."""
    provider = big.providers[321]
    start = big.now + timedelta(days=2, minutes=10)
    end = start + timedelta(minutes=45)
    excluded = await big.conn.fetchval(
        "SELECT id FROM appointments WHERE organization_id = $1 AND provider_id = $2"
        " AND during && tstzrange($3, $4) ORDER BY id LIMIT 1",
        big.org,
        provider,
        start,
        end,
    )
    assert excluded is not None
    for exclude in (None, excluded):
        args = [big.org, provider, start - SLOT, end + SLOT, start, end, exclude]
        for nodes in await _plans(big.conn, aq.OCCUPYING_SQL, args):
            scans = _scans(nodes, "appointments")
            assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
            assert any(n.get("Index Name") == "ex_appointments_no_overlap" for n in scans), scans
            # 45 minutes widened by an hour: 5 back-to-back 30-minute rows.
            assert _read(scans) <= 10, scans
            assert not _scans(nodes, "time_off"), nodes


async def test_list_time_off_page_plans(big: Big) -> None:
    """ListTimeOff's page statement (first page and a keyset page, with and
    without a range): one provider's time off through its index, no
    sequential scan, rows read bounded by the page, not by the 61,000 rows."""
    provider = big.providers[654]
    order = sq.TIME_OFF_LIST.orders["start_time"]
    filters = [
        sq.TimeOffFilter(provider),
        sq.TimeOffFilter(provider, start=big.now - timedelta(days=30)),
        sq.TimeOffFilter(provider, start=big.now, end=big.now + timedelta(days=60)),
    ]
    page_size = 10
    keyset = (big.now - timedelta(days=100), uuid.UUID(int=0))
    for flt in filters:
        query = sq.TIME_OFF_LIST.build(big.org, flt, order)
        for after in (None, keyset):
            sql, args = page_sql(
                query, PageRequest(size=page_size, number=2, after=after, offset=0)
            )
            for nodes in await _plans(big.conn, sql, args):
                scans = _scans(nodes, "time_off")
                assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
                assert all(
                    n.get("Index Name", "").startswith("ix_time_off_")
                    for n in scans
                    if n["Node Type"] != "Bitmap Heap Scan"
                ), scans
                # The page (+1) and, for a range, the few rows before it.
                assert _read(scans) <= page_size + 1 + 40, (flt, after, scans)
                assert not _scans(nodes, "appointments"), nodes
