"""Executed query plans for the EXPLAIN tests (test_explain*.py,
test_provider_schedule.py): a database of their own for a big data set, a
plan's nodes, the custom plan and the generic plan of a statement.

The generic plan is the one the pool's prepared statements may switch to
after five calls. ``EXPLAIN`` of a statement with bound parameters always
plans for their values, whatever ``plan_cache_mode`` says, so the generic plan
is read with ``PREPARE`` and ``EXPLAIN EXECUTE`` under ``force_generic_plan``
(the values passed as literals of the parameters' types, rendered by
PostgreSQL itself); the plan must then mention ``$1``."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from server.db.engine import to_asyncpg_dsn
from server.db.migrate import upgrade
from server.testing import create_database, drop_database, test_settings

__all__ = ["analyze", "custom_and_generic", "database_of_its_own", "nodes"]


@contextlib.asynccontextmanager
async def database_of_its_own(database_url: str, prefix: str) -> AsyncIterator[asyncpg.Connection]:
    """A migrated database beside the tests' own on the same server (its big
    data set never meets other tests), a connection to it (JIT off: plans,
    not compile times), dropped afterwards."""
    root = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = await create_database(root, name)
    try:
        await upgrade(url, test_settings().migrations_dir)
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            await conn.execute("SET jit = off")
            yield conn
        finally:
            await conn.close()
    finally:
        await drop_database(root, name)


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes, depth first."""
    out = [plan]
    for child in plan.get("Plans", []):
        out += nodes(child)
    return out


async def analyze(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The executed plan's nodes (EXPLAIN ANALYZE, with BUFFERS)."""
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) {sql}", *args)
    tree = json.loads(raw) if isinstance(raw, str) else raw
    return nodes(tree[0]["Plan"])


async def custom_and_generic(
    conn: asyncpg.Connection, sql: str, args: list[Any]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """[("custom", nodes), ("generic", nodes)] of the executed statement."""
    custom = await analyze(conn, sql, *args)
    types = [
        await conn.fetchval("SELECT format_type($1::oid, NULL)", p.oid)
        for p in (await conn.prepare(sql)).get_parameters()
    ]
    literals = [
        await conn.fetchval(f"SELECT quote_nullable(CAST($1::{t} AS text)) || '::{t}'", v)
        for v, t in zip(args, types, strict=True)
    ]
    await conn.execute(f"PREPARE _generic ({', '.join(types)}) AS {sql}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        generic = await analyze(conn, f"EXECUTE _generic ({', '.join(literals)})")
        assert "$1" in json.dumps(generic), "not a generic plan"
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE _generic")
    return [("custom", custom), ("generic", generic)]
