"""Plans of the summaries' statements (server.queries.summaries) on big rollups.

Each statement the SummaryService sends is EXPLAINed (ANALYZE) twice, as a
custom plan and as the generic plan the pool's prepared statements may switch
to (tests/plans.py), and must show: no node reading appointments, payments or
refunds (the summaries read the rollups only), no Seq Scan of a rollup table,
and rows read bounded by the request (whole months from the month rows: a
year of 100 providers is not 36,600 day rows).

Data: a database of its own, loaded with set-based INSERT ... SELECT
generate_series in a few seconds (no raw rows: the rollups are what is read,
written as the writes would leave them): ten tenants with 800 days of
history each, the first with 300 providers (a fifth in USD), 100 services and
20,000 clients, the others with 30, 10 and 2,000; working hours, overrides
and time off for every provider. Then VACUUM ANALYZE (the visibility map set,
as autovacuum leaves the rows of past dates: index-only scans are possible).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from server.db import schema
from server.paging import PageRequest
from server.queries import rollups
from server.queries import summaries as q
from server.queries._listing import count_sql, page_sql
from tests import plans

# The id of row n of a kind in a tenant, as pg_temp.xid (_FUNCTIONS) makes it.
from tests.test_explain_lists import _FUNCTIONS, _xid


@dataclass(frozen=True)
class Tenant:
    number: int
    providers: int
    services: int
    clients: int


MAIN = Tenant(1, providers=300, services=100, clients=20_000)
TENANTS = (MAIN, *(Tenant(n, 30, 10, 2_000) for n in range(2, 11)))
DAYS = 800
# The last date of the history.
LAST = date(2026, 6, 30)

ORG, PROVIDER, SERVICE, CLIENT = range(4)


# A provider's (or service's) day: some appointments by status, minutes and
# money; a fifth of them in USD.
_DAY_MEASURES = (
    "pending, confirmed, completed, cancelled, no_show, booked_minutes, expected_minor,"
    " completed_minor, paid_minor, payments, refunded_minor, refunds"
)
_DAY_VALUES = (
    "(k + d) % 2, (k * d) % 3, 1 + (k + d) % 4, d % 2, (k + d) % 5 / 4, 120, 6000, 4000, 3500,"
    " 2, (d % 7 / 6) * 500, d % 7 / 6"
)


async def _load_tenant(conn: asyncpg.Connection, t: Tenant) -> None:
    n = t.number
    org = _xid(n, ORG, 0)
    await conn.execute(
        "INSERT INTO organizations (id, name, slug, time_zone, first_day_of_week)"
        " VALUES ($1, $2, $3, 'Europe/Berlin', 7)",
        org,
        f"Tenant {n}",
        f"summaries-{n}",
    )
    await conn.execute(
        "INSERT INTO providers (organization_id, id, display_name, display_key, time_zone)"
        f" SELECT $1, pg_temp.xid($2, {PROVIDER}, k), 'P' || k, 'p' || k,"
        " (ARRAY['Europe/Berlin', 'America/New_York', 'Pacific/Auckland'])[1 + k % 3]"
        " FROM generate_series(1, $3) k",
        org,
        n,
        t.providers,
    )
    await conn.execute(
        "INSERT INTO clients (organization_id, id, given_name, family_name, given_key, family_key)"
        f" SELECT $1, pg_temp.xid($2, {CLIENT}, g), 'G' || g, 'F', 'g' || g, 'f'"
        " FROM generate_series(1, $3) g",
        org,
        n,
        t.clients,
    )
    # Weekly hours Monday to Friday, a closed date and an afternoon off a month.
    await conn.execute(
        "INSERT INTO working_hours (organization_id, id, provider_id, weekday, start_minute,"
        f" end_minute) SELECT $1, gen_random_uuid(), pg_temp.xid($2, {PROVIDER}, k), w, 540, 1020"
        " FROM generate_series(1, $3) k, generate_series(1, 5) w",
        org,
        n,
        t.providers,
    )
    await conn.execute(
        "INSERT INTO date_overrides (organization_id, id, provider_id, on_date, closed)"
        f" SELECT $1, gen_random_uuid(), pg_temp.xid($2, {PROVIDER}, k), $4::date - m * 30 - k % 7,"
        " true FROM generate_series(1, $3) k, generate_series(0, $5 / 30) m",
        org,
        n,
        t.providers,
        LAST,
        DAYS,
    )
    await conn.execute(
        "INSERT INTO time_off (organization_id, id, provider_id, during)"
        f" SELECT $1, gen_random_uuid(), pg_temp.xid($2, {PROVIDER}, k),"
        " tstzrange(s, s + interval '4 hours') FROM generate_series(1, $3) k,"
        " generate_series(0, $5 / 30) m,"
        " LATERAL (SELECT ($4::date - m * 30 - k % 11)::timestamp AT TIME ZONE 'UTC'"
        " + interval '12 hours' AS s) x",
        org,
        n,
        t.providers,
        LAST,
        DAYS,
    )
    currency = "CASE WHEN k % 5 = 0 THEN 'USD' ELSE 'EUR' END"
    await conn.execute(
        f"INSERT INTO provider_day_totals (organization_id, provider_id, business_date, currency,"
        f" {_DAY_MEASURES}) SELECT $1, pg_temp.xid($2, {PROVIDER}, k), $4::date - d, {currency},"
        f" {_DAY_VALUES} FROM generate_series(1, $3) k, generate_series(0, $5 - 1) d",
        org,
        n,
        t.providers,
        LAST,
        DAYS,
    )
    sums = ", ".join(f"sum({m})" for m in schema.PERIOD_MEASURES)
    await conn.execute(
        f"INSERT INTO provider_month_totals (organization_id, provider_id, month, currency,"
        f" {_DAY_MEASURES}) SELECT organization_id, provider_id,"
        f" date_trunc('month', business_date)::date, currency, {sums}"
        " FROM provider_day_totals WHERE organization_id = $1 GROUP BY 1, 2, 3, 4",
        org,
    )
    await conn.execute(
        f"INSERT INTO service_day_totals (organization_id, service_id, business_date, currency,"
        f" {_DAY_MEASURES}) SELECT $1, pg_temp.xid($2, {SERVICE}, k), $4::date - d, {currency},"
        f" {_DAY_VALUES} FROM generate_series(1, $3) k, generate_series(0, $5 - 1) d",
        org,
        n,
        t.services,
        LAST,
        DAYS,
    )
    await conn.execute(
        f"INSERT INTO organization_day_totals (organization_id, business_date, currency, shard,"
        f" {_DAY_MEASURES}) SELECT $1, $2::date - d, c, k, {_DAY_VALUES}"
        " FROM generate_series(0, $3 - 1) d, generate_series(0, 7) k,"
        " unnest(ARRAY['EUR', 'USD']) c",
        org,
        LAST,
        DAYS,
    )
    await conn.execute(
        "INSERT INTO organization_day_new_clients (organization_id, business_date, shard,"
        " new_clients) SELECT $1, $2::date - d, k, 1 + d % 3"
        " FROM generate_series(0, $3 - 1) d, generate_series(0, 7) k",
        org,
        LAST,
        DAYS,
    )
    # Clients: a EUR balance each (a tenth also in USD), visits; client g's
    # first visit with provider g % providers + 1, and one visitor a provider-day.
    await conn.execute(
        "INSERT INTO client_totals (organization_id, client_id, currency, charged_minor,"
        f" paid_minor, payments) SELECT $1, pg_temp.xid($2, {CLIENT}, g), c, (g % 50) * 100,"
        " (g % 30) * 100, g % 3 FROM generate_series(1, $3) g, unnest(ARRAY['EUR', 'USD']) c"
        " WHERE c = 'EUR' OR g % 10 = 0",
        org,
        n,
        t.clients,
    )
    await conn.execute(
        "INSERT INTO client_visits (organization_id, client_id, visits, first_visit_at,"
        f" last_visit_at, first_visit_date) SELECT $1, pg_temp.xid($2, {CLIENT}, g), 1 + g % 9,"
        " f, f + interval '90 days', f::date FROM generate_series(1, $3) g,"
        " LATERAL (SELECT ($4::date - g % $5)::timestamp AT TIME ZONE 'UTC' AS f) x",
        org,
        n,
        t.clients,
        LAST,
        DAYS,
    )
    await conn.execute(
        "INSERT INTO provider_client_visits (organization_id, provider_id, client_id, visits,"
        f" first_visit_date) SELECT $1, pg_temp.xid($2, {PROVIDER}, g % $3 + 1),"
        f" pg_temp.xid($2, {CLIENT}, g), 1 + g % 4, $5::date - g % $6"
        " FROM generate_series(1, $4) g",
        org,
        n,
        t.providers,
        t.clients,
        LAST,
        DAYS,
    )
    await conn.execute(
        "INSERT INTO provider_day_clients (organization_id, provider_id, business_date,"
        f" client_id, visits) SELECT $1, pg_temp.xid($2, {PROVIDER}, k), $5::date - d,"
        f" pg_temp.xid($2, {CLIENT}, (k * 7919 + d) % $4 + 1), 1"
        " FROM generate_series(1, $3) k, generate_series(0, $6 - 1) d",
        org,
        n,
        t.providers,
        t.clients,
        LAST,
        DAYS,
    )


@dataclass
class Data:
    conn: asyncpg.Connection
    plans: dict[str, list[tuple[str, list[dict[str, Any]]]]] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def data(database_url: str) -> AsyncIterator[Data]:
    async with plans.database_of_its_own(database_url, "booking_summaries") as conn:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute(_FUNCTIONS)
        await conn.execute("SET session_replication_role = replica")
        for t in TENANTS:
            await _load_tenant(conn, t)
        await conn.execute("RESET session_replication_role")
        await conn.execute("VACUUM ANALYZE")
        yield Data(conn)


# -- the statements, as the handlers send them ------------------------------------------

M = MAIN.number
ORG_ID = _xid(M, ORG, 0)
YEAR = (LAST - timedelta(days=365), LAST)
# A year cut inside months at both ends (whole months between).
CUT_YEAR = (date(2025, 6, 15), date(2026, 6, 14))
MONTH = (date(2026, 3, 1), date(2026, 3, 31))
HUNDRED = [_xid(M, PROVIDER, k) for k in range(1, 101)]
SERVICES = [_xid(M, SERVICE, k) for k in range(1, 101)]
CLIENT_ID = _xid(M, CLIENT, 4242)


@dataclass(frozen=True)
class Statement:
    sql: str
    args: list[Any]
    # Rows the plan may read from the rollup tables at most (all of them).
    read: int


def _list(order: str, after: tuple[Any, ...] | None, **flt: Any) -> tuple[str, list[Any]]:
    listing = q.CLIENT_BALANCES
    query = listing.build(ORG_ID, q.ClientBalanceFilter("EUR", **flt), listing.orders[order])
    number = 1 if after is None else 5
    return page_sql(query, PageRequest(size=50, number=number, after=after, offset=0))


def _count(**flt: Any) -> tuple[str, list[Any]]:
    listing = q.CLIENT_BALANCES
    query = listing.build(ORG_ID, q.ClientBalanceFilter("EUR", **flt), listing.orders["balance"])
    return count_sql(query, 10_000)


# Rows of a list page (51), and the few a filter removes.
PAGE = 60


def _org_days(days: int) -> int:
    """organization_day_totals (8 shards, 2 currencies) and _new_clients (8
    shards) rows of a dashboard's two periods of ``days`` dates at most."""
    return 2 * days * (16 + 8)


def _month_rows(providers: int, first: date, last: date) -> int:
    """Rows a provider range reads: whole months' rows and the cut months'
    days, per provider (one currency each)."""
    cut_days = (date(first.year, first.month, 1) + timedelta(days=32)).replace(day=1) - first
    tail = last - last.replace(day=1) + timedelta(days=1)
    return providers * (cut_days.days + tail.days + 13)


STATEMENTS: dict[str, Statement] = {
    "revenue of the organization, a year by day": Statement(
        q.REVENUE_SQL["organization"], [ORG_ID, *YEAR, "day", None], 366 * 16
    ),
    "revenue of the organization, a year by week in EUR": Statement(
        q.REVENUE_SQL["organization"], [ORG_ID, *YEAR, "week", "EUR"], 366 * 16
    ),
    "revenue of 100 providers, a cut year by month": Statement(
        q.REVENUE_SQL["providers"],
        [ORG_ID, *CUT_YEAR, "month", None, HUNDRED],
        _month_rows(100, *CUT_YEAR),
    ),
    "revenue of 100 providers, a year by week": Statement(
        q.REVENUE_SQL["providers"], [ORG_ID, *YEAR, "week", None, HUNDRED], 100 * 366
    ),
    "revenue of a provider, a month by day": Statement(
        q.REVENUE_SQL["providers"], [ORG_ID, *MONTH, "day", None, HUNDRED[:1]], 31
    ),
    "revenue of 100 services, a year by month in USD": Statement(
        q.REVENUE_SQL["services"], [ORG_ID, *YEAR, "month", "USD", SERVICES], 100 * 366
    ),
    "metrics of 100 providers, a cut year": Statement(
        q.PROVIDER_METRICS_SQL,
        [ORG_ID, HUNDRED, *CUT_YEAR],
        # Totals (months and cut days) and the visitors of each day.
        _month_rows(100, *CUT_YEAR) + 100 * 366 + 20_000,
    ),
    "metrics of a provider, a month": Statement(
        q.PROVIDER_METRICS_SQL, [ORG_ID, HUNDRED[:1], *MONTH], 1 + 31 + 100
    ),
    "a client's balance": Statement(q.CLIENT_BALANCE_SQL, [ORG_ID, CLIENT_ID], 3),
    "balances, page 1": Statement(*_list("balance desc", None), PAGE),
    "balances, a deep page": Statement(*_list("balance desc", (2500, _xid(M, CLIENT, 50))), PAGE),
    "balances owing at least 4,000, page 1": Statement(
        *_list("balance", None, min_balance=4000), PAGE
    ),
    "balances by lifetime value, a deep page": Statement(
        *_list("lifetime_value", (1500, _xid(M, CLIENT, 50))), PAGE
    ),
    # The cap + 1, and the rows with no money the filter removes on the way.
    "balances, counted": Statement(*_count(), 10_001 + 200),
    "dashboard of a month": Statement(
        q.DASHBOARD_SQL,
        [ORG_ID, date(2026, 3, 14), "month", 5, None],
        # The organization's days and new clients (current and previous
        # periods), the top providers' days.
        _org_days(14) + MAIN.providers * 14,
    ),
    "dashboard late in a month": Statement(
        q.DASHBOARD_SQL,
        [ORG_ID, date(2026, 3, 25), "month", 5, None],
        # The month's row less its 6 days after the 25th, a provider.
        _org_days(25) + MAIN.providers * (1 + 6),
    ),
    "dashboard of a whole month in EUR": Statement(
        q.DASHBOARD_SQL,
        [ORG_ID, date(2026, 3, 31), "month", 50, "EUR"],
        # A month row a provider.
        _org_days(31) + MAIN.providers,
    ),
    "dashboard of a week from Sunday": Statement(
        q.DASHBOARD_SQL,
        [ORG_ID, date(2026, 3, 14), "week", 5, None],
        _org_days(7) + MAIN.providers * 7,
    ),
    "dashboard of today (no rows yet)": Statement(
        q.DASHBOARD_SQL, [ORG_ID, None, "day", 0, "USD"], _org_days(1) + MAIN.providers
    ),
}

RAW = ("appointments", "payments", "refunds")
# GetDashboard's top providers: a currency's rows of the tenant, index-only.
RANKING = {
    "provider_day_totals": "ix_provider_day_totals_org_currency_date",
    "provider_month_totals": "ix_provider_month_totals_org_currency_month",
}
ROLLUPS = tuple(t.name for t in schema.ROLLUP_TABLES)


def _table_of(node: dict[str, Any]) -> str | None:
    """The table a scan node reads (by relation, or by its index's name)."""
    if "Relation Name" in node:
        return str(node["Relation Name"])
    index = node.get("Index Name", "")
    for table in (*RAW, *ROLLUPS):
        if index.startswith((f"ix_{table}_", f"pk_{table}", f"ex_{table}_")):
            return table
    return None


def _read(nodes: list[dict[str, Any]], tables: tuple[str, ...]) -> int:
    """Rows the scans of ``tables`` read (returned + removed), all loops."""
    return int(
        sum(
            (n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0))
            * n.get("Actual Loops", 1)
            for n in nodes
            if "Scan" in n["Node Type"]
            and n["Node Type"] != "Bitmap Index Scan"
            and _table_of(n) in tables
        )
    )


def _reads(node: dict[str, Any], tables: tuple[str, ...]) -> bool:
    """Whether the node or a node below it scans one of ``tables``."""
    return _table_of(node) in tables or any(_reads(n, tables) for n in node.get("Plans", []))


def _summary(nodes: list[dict[str, Any]]) -> list[str]:
    return [
        f"{n['Node Type']} {n.get('Index Name') or n.get('Relation Name') or ''}"
        f" rows={n.get('Actual Rows')} loops={n.get('Actual Loops')}"
        for n in nodes
    ]


async def _plans(data: Data, name: str) -> list[tuple[str, list[dict[str, Any]]]]:
    if name not in data.plans:
        s = STATEMENTS[name]
        data.plans[name] = await plans.custom_and_generic(data.conn, s.sql, s.args)
    return data.plans[name]


@pytest.mark.parametrize("name", list(STATEMENTS))
async def test_summary_plan(data: Data, name: str) -> None:
    statement = STATEMENTS[name]
    for mode, nodes in await _plans(data, name):
        where = (name, mode, _summary(nodes))
        raw = [n for n in nodes if _table_of(n) in RAW]
        assert not raw, ("reads raw rows", *where)
        seq = [n for n in nodes if n["Node Type"] == "Seq Scan" and _table_of(n) in ROLLUPS]
        assert not seq, ("Seq Scan of a rollup", *where)
        read = _read(nodes, ROLLUPS)
        assert read <= statement.read, ("read", read, statement.read, *where)
        assert nodes[0]["Actual Rows"] > 0, ("nothing found", *where)


async def test_whole_months_are_read_from_the_month_rows(data: Data) -> None:
    """A year of 100 providers cut inside June: eleven whole months a row
    each, the cut ones' days, never the year's days."""
    for mode, nodes in await _plans(data, "revenue of 100 providers, a cut year by month"):
        months = _read(nodes, ("provider_month_totals",))
        days = _read(nodes, ("provider_day_totals",))
        where = (mode, _summary(nodes))
        assert months == 100 * 11, (months, *where)
        # 16-30 June 2025 and 1-14 June 2026.
        assert days == 100 * (16 + 14), (days, *where)


@pytest.mark.parametrize("name", [n for n in STATEMENTS if n.startswith("dashboard")])
async def test_the_dashboard_ranks_providers_without_a_scan_per_provider(
    data: Data, name: str
) -> None:
    """The top providers: each provider rollup read by its ranking index
    (index-only where the visibility map allows), each scan once, never once
    per provider of the tenant; then only the listed providers' names (a
    primary key probe each)."""
    top = STATEMENTS[name].args[3]
    for mode, nodes in await _plans(data, name):
        where = (name, mode, _summary(nodes))
        rollups = [n for n in nodes if _table_of(n) in RANKING]
        assert any(n["Node Type"] == "Index Only Scan" for n in rollups), where
        for n in rollups:
            ranking = RANKING[str(_table_of(n))]
            assert n.get("Index Name", ranking) == ranking, where
            assert n["Actual Loops"] <= 1, where
        names = [n for n in nodes if n.get("Relation Name") == "providers"]
        assert sum(n["Actual Loops"] for n in names) <= top, where


async def test_the_ranking_indexes_include_the_ranked_figures(data: Data) -> None:
    """The migrations build the ranking indexes as schema.py declares them,
    INCLUDE columns too (alembic's comparison does not look at those)."""
    for table, name in RANKING.items():
        [index] = [i for i in schema.metadata.tables[table].indexes if i.name == name]
        definition = await data.conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = $1", name
        )
        keys = ", ".join(str(c.name) for c in index.columns)
        include = ", ".join(index.dialect_options["postgresql"]["include"])
        assert definition.endswith(f"USING btree ({keys}) INCLUDE ({include})"), definition


def _work_rows(providers: int, first: date, last: date) -> int:
    """Rows a node of GetProviderMetrics' working time may handle: the rules
    (5 a provider), twice the overrides and stretches of time off (a closed
    date and an afternoon off a month: the dates they fall on), and every date
    of the range (and the 2 around it) once per zone (3 here), for the
    zones' offset changes. Not one per date and rule."""
    days = (last - first).days + 1
    months = days // 30 + 2
    return providers * (5 + 2 * 2 * months) + min(providers, 3) * (days + 2)


@pytest.mark.parametrize("name", [n for n in STATEMENTS if n.startswith("metrics")])
async def test_working_time_handles_no_row_per_date_and_rule(data: Data, name: str) -> None:
    """Apart from the rollups' rows (bounded above: the nodes that read
    them), no node of the metrics' plan handles more rows than the
    providers' rules, overrides, time off and the zones' dates allow (a row
    per date and rule: 100 providers' cut year would be some 26,000)."""
    statement = STATEMENTS[name]
    ids, first, last = statement.args[1:4]
    bound = _work_rows(len(ids), first, last)
    for mode, nodes in await _plans(data, name):
        handled = [
            n.get("Actual Rows", 0) * n.get("Actual Loops", 1)
            for n in nodes
            if not _reads(n, ROLLUPS)
        ]
        assert max(handled) <= bound, (name, mode, bound, _summary(nodes))


async def test_a_writes_rollup_statement_probes_its_provider_and_appointment(data: Data) -> None:
    """rollups.apply (every write's last statement): each fact's provider (and
    appointment) is a primary-key probe, in the custom and the generic plan; a
    generic plan of plain joins hashed the tenant's providers (a Seq Scan of
    1,000 providers, 0.4 ms a write). Run in a transaction rolled back."""
    conn = data.conn
    row = await conn.fetchrow(
        "SELECT organization_id::text AS org, id::text AS provider FROM providers LIMIT 1"
    )
    assert row is not None
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    facts = [
        rollups.Fact(
            kind="appointment",
            sign=1,
            client_id=str(uuid.uuid4()),
            amount=2500,
            currency="EUR",
            provider_id=row["provider"],
            service_id=str(uuid.uuid4()),
            status="completed",
            start_at=start,
            end_at=start + timedelta(minutes=30),
        ),
        rollups.Fact(
            kind="payment",
            sign=1,
            client_id=str(uuid.uuid4()),
            amount=2500,
            currency="EUR",
            status="completed",
            appointment_id=str(uuid.uuid4()),
            at=start,
        ),
    ]
    sql = rollups.apply_sql(groups=rollups.groups_of(facts))
    args = [row["org"], *rollups.fact_params(facts)]
    tx = conn.transaction()
    await tx.start()
    try:
        for mode, nodes in await plans.custom_and_generic(conn, sql, args):
            # (This database's appointments table is empty: only providers say.)
            read = [n["Node Type"] for n in nodes if n.get("Relation Name") == "providers"]
            assert read == ["Index Scan"], (mode, read)
    finally:
        await tx.rollback()
