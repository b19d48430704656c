"""Executed query plans for the EXPLAIN tests (test_explain*.py,
test_provider_schedule.py): a plan's nodes, the custom plan and the generic
plan of a statement.

The generic plan is the one the pool's prepared statements may switch to
after five calls. ``EXPLAIN`` of a statement with bound parameters always
plans for their values, whatever ``plan_cache_mode`` says, so the generic plan
is read with ``PREPARE`` and ``EXPLAIN EXECUTE`` under ``force_generic_plan``
(the values passed as literals of the parameters' types, rendered by
PostgreSQL itself); the plan must then mention ``$1``."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

__all__ = ["analyze", "custom_and_generic", "nodes"]


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
