"""Keyset pages and counts, shared by every list query.

A list query is described by its FROM table, its filter predicates (SQL with
$n parameters) and its sort columns (ending in a unique column). One page is
one statement: ``WHERE filters AND (sort cols) > (last row's values) ORDER BY
sort cols LIMIT size + 1`` (the extra row says whether a next page exists), so
page 10,000 costs what page 1 costs. A count is one more statement when asked:
an exact count bounded by a cap, or the planner's estimate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import asyncpg

from server.db.engine import Conn
from server.paging import PageRequest

__all__ = [
    "Count",
    "CountMode",
    "ListQuery",
    "Page",
    "count_sql",
    "estimate_sql",
    "fetch_page",
    "page_sql",
]


class CountMode(Enum):
    NONE = "none"
    ESTIMATED = "estimated"
    EXACT = "exact"


class Count(Enum):
    NONE = "none"
    ESTIMATED = "estimated"
    EXACT = "exact"
    LOWER_BOUND = "lower_bound"


@dataclass(slots=True)
class ListQuery:
    table: str
    columns: Sequence[str]
    # Sort columns, the last one unique (the tie-breaker), all in one direction.
    sort: Sequence[str]
    descending: bool
    predicates: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self, predicate: str) -> None:
        self.predicates.append(predicate)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[asyncpg.Record]
    has_next: bool
    total: int
    count: Count


def page_sql(query: ListQuery, page: PageRequest) -> tuple[str, list[Any]]:
    """The page statement: keyset (or OFFSET) after the filters, size + 1 rows."""
    args = list(query.args)
    predicates = list(query.predicates)

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if page.after is not None:
        placeholders = ", ".join(param(v) for v in page.after)
        op = "<" if query.descending else ">"
        predicates.append(f"({', '.join(query.sort)}) {op} ({placeholders})")
    direction = " DESC" if query.descending else ""
    order = ", ".join(f"{c}{direction}" for c in query.sort)
    sql = (
        f"SELECT {', '.join(query.columns)} FROM {query.table} "
        f"WHERE {' AND '.join(predicates) or 'true'} ORDER BY {order} "
        f"LIMIT {param(page.size + 1)}"
    )
    if page.offset:
        sql += f" OFFSET {param(page.offset)}"
    return sql, args


def count_sql(query: ListQuery, cap: int) -> tuple[str, list[Any]]:
    """Exact count bounded by ``cap``: at most cap + 1 index entries are read.

    The inner ORDER BY follows the list's index so that the planner walks it
    and stops, instead of scanning the table until cap + 1 rows matched.
    """
    filters = " AND ".join(query.predicates) or "true"
    n = len(query.args) + 1
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM {query.table} WHERE {filters} "
        f"ORDER BY {', '.join(query.sort)} LIMIT ${n}) AS capped"
    )
    return sql, [*query.args, cap + 1]


def estimate_sql(query: ListQuery) -> tuple[str, list[Any]]:
    filters = " AND ".join(query.predicates) or "true"
    return f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {query.table} WHERE {filters}", list(query.args)


async def fetch_page(
    conn: Conn, query: ListQuery, page: PageRequest, count_mode: CountMode, count_cap: int
) -> Page:
    sql, args = page_sql(query, page)
    rows = await conn.fetch(sql, *args)
    has_next = len(rows) > page.size
    if has_next:
        rows = rows[: page.size]

    total, kind = 0, Count.NONE
    if count_mode is CountMode.EXACT:
        sql, args = count_sql(query, count_cap)
        total = await conn.fetchval(sql, *args)
        kind = Count.EXACT
        if total > count_cap:
            total, kind = count_cap, Count.LOWER_BOUND
    elif count_mode is CountMode.ESTIMATED:
        sql, args = estimate_sql(query)
        plan = await conn.fetchval(sql, *args)
        # EXPLAIN's json column arrives decoded or as text depending on codecs.
        tree = json.loads(plan) if isinstance(plan, str | bytes) else plan
        total = int(tree[0]["Plan"]["Plan Rows"])
        kind = Count.ESTIMATED
        # The planner never estimates below one row; what we have seen is a floor.
        seen = page.offset + len(rows) + (1 if has_next else 0)
        total = seen if page.after is None and not has_next else max(total, seen)
    return Page(rows=list(rows), has_next=has_next, total=int(total), count=kind)
