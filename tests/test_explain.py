"""Every ListClients query shape uses an index at 100k clients: no Seq Scan on clients."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from server.db.engine import to_asyncpg_dsn
from server.ids import uuid7
from server.paging import PageRequest
from server.queries._listing import count_sql, page_sql
from server.queries.clients import CLIENTS, ClientFilter, build_list_clients_query

N = 100_000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


@pytest.fixture(scope="module")
def big_org() -> str:
    return uuid7()


async def _explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    tree = json.loads(raw) if isinstance(raw, str) else raw
    return _nodes(tree[0]["Plan"])


async def test_list_clients_plans_never_seq_scan_clients(database_url: str, big_org: str) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'Big', $2, 'UTC')",
            big_org,
            f"big-{big_org[-12:]}",
        )
        # Another tenant with as many rows, so the tenant predicate matters too.
        other = uuid7()
        await conn.execute(
            "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, 'O', $2, 'UTC')",
            other,
            f"other-{other[-12:]}",
        )
        for tenant in (big_org, other):
            await conn.execute(
                """INSERT INTO clients (organization_id, id, given_name, family_name, email,
                                        phone, active, created_at)
                   SELECT $1::uuid, gen_random_uuid(), 'Given' || g, 'Family' || (g * 7919 % $2),
                          'user' || g || '@example.com', '+1555' || lpad(g::text, 7, '0'),
                          g % 4 <> 0, now() - make_interval(secs => g)
                   FROM generate_series(1, $2) AS g""",
                tenant,
                N,
            )
        await conn.execute("ANALYZE clients")
        since = datetime.now(UTC) - timedelta(days=1)
        shapes = [
            (ClientFilter(), CLIENTS.orders["name"]),
            (ClientFilter(), CLIENTS.orders["name desc"]),
            (ClientFilter(), CLIENTS.orders["create_time"]),
            (ClientFilter(active=True), CLIENTS.orders["create_time desc"]),
            (ClientFilter(created_after=since), CLIENTS.orders["create_time"]),
            (ClientFilter(query="family123"), CLIENTS.orders["name"]),
            (ClientFilter(query="user4242@"), CLIENTS.orders["create_time desc"]),
            (ClientFilter(query="+1555000"), CLIENTS.orders["name"]),
            (ClientFilter(query="fa"), CLIENTS.orders["name"]),
        ]
        checked = 0
        for flt, order in shapes:
            query = build_list_clients_query(big_org, flt, order)
            keyset: tuple[Any, ...] = (
                ("family5", uuid7()) if order.name == "name" else (since, uuid7())
            )
            for after in (None, keyset):
                sql, args = page_sql(query, PageRequest(size=50, number=2, after=after, offset=0))
                nodes = await _explain(conn, sql, args)
                scans = [n for n in nodes if n.get("Relation Name") == "clients"]
                assert scans, nodes
                assert all(n["Node Type"] != "Seq Scan" for n in scans), (flt, order, scans)
                checked += 1
            # The count statements too.
            sql, args = count_sql(query, 10_000)
            nodes = await _explain(conn, sql, args)
            assert all(
                n["Node Type"] != "Seq Scan" for n in nodes if n.get("Relation Name") == "clients"
            ), (flt, nodes)
        assert checked == 2 * len(shapes)
    finally:
        await conn.execute(
            "DELETE FROM clients WHERE organization_id = ANY($1::uuid[])", [big_org, other]
        )
        await conn.close()
