"""ListClients plans on a big tenant: no sequential scan of clients, and a
search costs what its matches cost, never the table.

The data set is bench.generate's (COPY, indexes built once after the load):
N clients in one tenant, family names drawn uniformly from 16, so that in name
order "brown" matches come first, "smith" and "tanaka" late and clustered, a
phone number once and "example.com" everywhere. The assertions are on plan
facts that bound the work (rows read and removed by the scan nodes of clients,
shared buffers), never on times: bench/ measures times.

Size: the ordered index walk that a search used to take reads every row that
sorts before its matches, ~0.875 N for "smith", while the bounded plan reads
at most walk_budget + its matches, 2,000 + 0.0625 N; the two differ by 5x from
N = 20,000 and by 10x from N = 40,000. N = 100,000 (bench.generate: ~10 s on 2
busy cores) keeps the difference far from any noise; the same figures at 1M
rows are bench/'s search scenarios.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from bench.generate import generate
from server.db.engine import to_asyncpg_dsn
from server.ids import uuid7
from server.paging import PageRequest
from server.queries._listing import ListQuery, count_sql, estimate_sql, page_sql
from server.queries.clients import CLIENTS, ClientFilter, build_list_clients_query
from server.text import fold

# BOOKING_EXPLAIN_CLIENTS=1000000 runs the same assertions at 1M (on demand:
# the load alone takes ~1.5 min on 2 cores).
N = int(os.environ.get("BOOKING_EXPLAIN_CLIENTS", "100000"))
CAP = 10_000
PAGE = 50


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def big(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    org = await generate(database_url, N, slug="search-plans", appointments_too=False)
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    # Plans as the server's pool would see them; JIT only adds noise here.
    await conn.execute("SET jit = off")
    try:
        yield conn, org
    finally:
        await conn.close()


async def _explain(
    conn: asyncpg.Connection, sql: str, args: list[Any], *, analyze: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    raw = await conn.fetchval(f"EXPLAIN ({options}) {sql}", *args)
    tree = json.loads(raw) if isinstance(raw, str) else raw
    return tree[0]["Plan"], _nodes(tree[0]["Plan"])


def _work(nodes: list[dict[str, Any]]) -> int:
    """Rows the scan nodes of clients produced or threw away, all loops."""
    total = 0
    for n in nodes:
        if n.get("Relation Name") == "clients" or n.get("Index Name", "").startswith("ix_clients"):
            rows = n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)
            rows += n.get("Rows Removed by Index Recheck", 0)
            total += rows * max(n.get("Actual Loops", 1), 1)
    return total


def _executed_scans(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scans of clients that ran. A search's fallback (every match) may be
    planned as a sequential scan when the term matches most rows; it then never
    runs, because the walk finds the page first (the tests below check that)."""
    return [n for n in nodes if n.get("Relation Name") == "clients" and n.get("Actual Loops")]


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))


async def test_list_clients_plans_never_seq_scan_clients(
    big: tuple[asyncpg.Connection, str],
) -> None:
    conn, org = big
    since = datetime(2025, 1, 1, tzinfo=UTC) - timedelta(days=1)
    shapes = [
        (ClientFilter(), CLIENTS.orders["name"]),
        (ClientFilter(), CLIENTS.orders["name desc"]),
        (ClientFilter(), CLIENTS.orders["create_time"]),
        (ClientFilter(active=True), CLIENTS.orders["create_time desc"]),
        (ClientFilter(created_after=since), CLIENTS.orders["create_time"]),
        (ClientFilter(query="smith"), CLIENTS.orders["name"]),
        (ClientFilter(query="ada.brown42@"), CLIENTS.orders["create_time desc"]),
        (ClientFilter(query="+49151000"), CLIENTS.orders["name"]),
        (ClientFilter(query="sm"), CLIENTS.orders["name"]),
    ]
    checked = 0
    for flt, order in shapes:
        query = build_list_clients_query(org, flt, order)
        keyset: tuple[Any, ...] = ("smith", uuid7()) if order.name == "name" else (since, uuid7())
        for after in (None, keyset):
            sql, args = page_sql(query, PageRequest(size=PAGE, number=2, after=after, offset=0))
            _, nodes = await _explain(conn, sql, args, analyze=True)
            scans = _executed_scans(nodes)
            assert scans, nodes
            assert all(n["Node Type"] != "Seq Scan" for n in scans), (flt, order, scans)
            checked += 1
        sql, args = count_sql(query, CAP)
        _, nodes = await _explain(conn, sql, args, analyze=True)
        for scan in _executed_scans(nodes):
            if scan["Node Type"] == "Seq Scan":
                # Only a count of matches the planner expects nearly every row to
                # satisfy (here: every phone number), through the fence and
                # stopped at cap + 1 matches.
                assert query.matches and scan["Actual Rows"] <= CAP + 1, (flt, nodes)
                assert await _matches(conn, org, flt.query) > N // 2, (flt, nodes)
    assert checked == 2 * len(shapes)


# (term, where its matches lie in name order)
TERMS = [
    ("brown", "early"),
    ("smith", "late"),
    ("tanaka", "late"),
    ("00012345", "rare"),  # one phone number
    ("zzzqqq", "none"),
    ("example.com", "everywhere"),
    ("ada", "often"),  # a given name: spread through the name order
]


async def _matches(conn: asyncpg.Connection, org: str, term: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM clients WHERE organization_id = $1 AND search_text LIKE $2",
            org,
            f"%{fold(term)}%",
        )
    )


@pytest.mark.parametrize(("term", "where"), TERMS)
async def test_a_search_page_costs_what_its_matches_cost(
    big: tuple[asyncpg.Connection, str], term: str, where: str
) -> None:
    """Page 1, a page from the middle of the matches, and an exact count:
    each reads at most the walk budget plus the matches (plus the page's own
    rows), whatever the term and wherever its matches sort."""
    conn, org = big
    matches = await _matches(conn, org, term)
    query = build_list_clients_query(org, ClientFilter(query=fold(term)), CLIENTS.orders["name"])
    assert query.matches, "a 3+ character search is a match predicate"
    bound = query.walk_budget + 2 * matches + 3 * (PAGE + 1)

    sql, args = page_sql(query, PageRequest(size=PAGE, number=1, after=None, offset=0))
    plan, nodes = await _explain(conn, sql, args, analyze=True)
    assert plan["Actual Rows"] == min(PAGE + 1, matches)
    assert _work(nodes) <= bound, (term, where, matches, _work(nodes))
    # A page reads at most a buffer per row it reads, plus the indexes' inner pages.
    assert _buffers(plan) <= bound + 500, (term, _buffers(plan))
    if where in ("early", "everywhere", "often"):
        # Dense matches: the walk alone found the page; the matches were never read.
        bitmap = [n for n in nodes if n["Node Type"] == "Bitmap Heap Scan"]
        assert all(n.get("Actual Loops", 0) == 0 for n in bitmap), bitmap
        assert _work(nodes) <= query.walk_budget + 3 * (PAGE + 1)

    # The page after the 200th match (a keyset inside the matches).
    if matches > 200:
        after = await conn.fetchrow(
            "SELECT name_key, id::text FROM clients WHERE organization_id = $1 "
            "AND search_text LIKE $2 ORDER BY name_key, id OFFSET 199 LIMIT 1",
            org,
            f"%{fold(term)}%",
        )
        assert after is not None
        keyset = (after["name_key"], after["id"])
        sql, args = page_sql(query, PageRequest(size=PAGE, number=5, after=keyset, offset=0))
        plan, nodes = await _explain(conn, sql, args, analyze=True)
        assert _work(nodes) <= bound, (term, "page 5", _work(nodes))

    # Page-number mode, page 100 (offset 4,950): the walk covers the offset
    # too, so dense terms still never read every match (it used to: the walk
    # stopped at the budget and every page past ~40 read all matches).
    offset = 99 * PAGE
    if matches > offset + PAGE:
        sql, args = page_sql(query, PageRequest(size=PAGE, number=100, after=None, offset=offset))
        plan, nodes = await _explain(conn, sql, args, analyze=True)
        assert plan["Actual Rows"] == PAGE + 1
        assert _work(nodes) <= bound + offset, (term, "page 100", _work(nodes))
        if where in ("early", "everywhere"):
            assert _work(nodes) <= offset + query.walk_budget + 3 * (PAGE + 1), (
                term,
                "page 100 of a dense term",
                _work(nodes),
            )

    # Exact count (bounded by the cap): at most cap + 1 matches read from the
    # table, every match's index entry at most once.
    sql, args = count_sql(query, CAP)
    plan, nodes = await _explain(conn, sql, args, analyze=True)
    assert _work(nodes) <= 2 * matches + 2, (term, "count", _work(nodes))
    counted = await conn.fetchval(sql, *args)
    assert counted == min(matches, CAP + 1)

    # The estimate is a plan, not a scan.
    sql, args = estimate_sql(query)
    raw = await conn.fetchval(sql, *args)
    estimate = json.loads(raw) if isinstance(raw, str) else raw
    assert estimate[0]["Plan"]["Plan Rows"] >= 1


async def test_late_matches_do_not_walk_the_table(big: tuple[asyncpg.Connection, str]) -> None:
    """The defect itself: "smith" sorts late (~87% of the tenant's rows come
    first), and the plan must not read those rows to find its page."""
    conn, org = big
    query = build_list_clients_query(org, ClientFilter(query="smith"), CLIENTS.orders["name"])
    sql, args = page_sql(query, PageRequest(size=PAGE, number=1, after=None, offset=0))
    _, nodes = await _explain(conn, sql, args, analyze=True)
    removed = sum(
        n.get("Rows Removed by Filter", 0) * max(n.get("Actual Loops", 1), 1)
        for n in nodes
        if n.get("Relation Name") == "clients"
    )
    before = await conn.fetchval(
        "SELECT count(*) FROM clients WHERE organization_id = $1 AND name_key < 'smith'", org
    )
    assert before > N // 2, "the data set must put smith late in name order"
    assert removed <= query.walk_budget, removed
    assert removed < before // 10


async def test_match_predicates_keep_other_lists_as_they_were() -> None:
    """A list without match predicates gets the plain keyset statement and the
    ordered capped count: the generic path is unchanged for it."""
    query = ListQuery(source="t", columns=["a", "name_key", "id"], order=CLIENTS.orders["name"])
    query.where(f"a = {query.param(1)}")
    sql, _ = page_sql(query, PageRequest(size=10, number=1, after=None, offset=0))
    assert "_walk" not in sql
    assert sql.startswith("SELECT a, name_key, id FROM t WHERE a = $1 ORDER BY")
    sql, _ = count_sql(query, 5)
    assert "_matches" not in sql and "ORDER BY name_key, id" in sql


def test_a_hidden_sort_column_is_selected_for_the_keyset() -> None:
    """A sort key the entity hides from its rows (a folded name key) is still
    selected: the next page's token is read from the last row's sort keys."""
    query = ListQuery(source="t", columns=["a", "id"], order=CLIENTS.orders["name"])
    sql, _ = page_sql(query, PageRequest(size=10, number=1, after=None, offset=0))
    assert sql.startswith("SELECT a, id, name_key FROM t ")
