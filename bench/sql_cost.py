"""What writing a list's SQL costs per call, three ways (no database needed).

    .venv/bin/python -m bench.sql_cost [--calls 20000]

For the ListClients page statement with a search filter and a keyset:
1. literal SQL built by the query module (``server.queries.clients`` through
   ``server.queries._listing.page_sql``: what the service does);
2. SQLAlchemy Core: the same statement built as a ``select()`` and compiled
   for the asyncpg dialect on every call;
3. SQLAlchemy Core compiled once per statement shape (cached by the shape's
   key: which filters are present, the order, keyset or not), binding the
   parameters on each call.

The figures go into docs/architecture.md ("Queries"): the rule there is
chosen by them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, select, tuple_
from sqlalchemy.dialects import postgresql

from server.db import schema
from server.paging import PageRequest
from server.queries._listing import page_sql
from server.queries.clients import CLIENT, CLIENTS, ClientFilter, build_list_clients_query

ORG = "0192f0c4-0000-7000-8000-000000000001"
AFTER = ("smith john", "0192f0c4-0000-7000-8000-0000000000ff")
FILTER = ClientFilter(active=True, created_after=datetime(2026, 1, 1, tzinfo=UTC), query="smith")
ORDER = CLIENTS.orders["name"]
PAGE = PageRequest(size=50, number=2, after=AFTER, offset=0)
# SQLAlchemy leaves PGDialect_asyncpg.__init__ unannotated.
DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


def literal() -> tuple[str, list[Any]]:
    return page_sql(build_list_clients_query(ORG, FILTER, ORDER), PAGE)


def _core_statement() -> Any:
    c = schema.clients.c
    cols = [c[name] for name in CLIENT.columns]
    return (
        select(*cols)
        .where(
            and_(
                c.organization_id == bindparam("org"),
                c.active == bindparam("active"),
                c.created_at >= bindparam("created_after"),
                c.search_text.like(bindparam("pattern"), escape="\\"),
                tuple_(c.name_key, c.id) > tuple_(bindparam("k0"), bindparam("k1")),
            )
        )
        .order_by(c.name_key, c.id)
        .limit(bindparam("limit"))
    )


def _params() -> dict[str, Any]:
    return {
        "org": ORG,
        "active": True,
        "created_after": FILTER.created_after,
        "pattern": "%smith%",
        "k0": AFTER[0],
        "k1": AFTER[1],
        "limit": 51,
    }


def core_each_call() -> tuple[str, list[Any]]:
    compiled = _core_statement().compile(dialect=DIALECT)
    params = compiled.construct_params(_params())
    return str(compiled), [params[k] for k in compiled.positiontup or ()]


@lru_cache(maxsize=256)
def _compiled(shape: tuple[bool, ...]) -> Any:
    return _core_statement().compile(dialect=DIALECT)


def core_cached() -> tuple[str, list[Any]]:
    shape = (FILTER.active is not None, FILTER.created_after is not None, bool(FILTER.query))
    compiled = _compiled(shape)
    params = compiled.construct_params(_params())
    return str(compiled), [params[k] for k in compiled.positiontup or ()]


def measure(fn: Callable[[], object], calls: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    calls = parser.parse_args().calls
    rows = [
        ("literal SQL (query module + page_sql)", measure(literal, calls)),
        ("SQLAlchemy Core, compiled every call", measure(core_each_call, max(1, calls // 10))),
        ("SQLAlchemy Core, compiled once per shape", measure(core_cached, calls)),
    ]
    base = rows[0][1]
    print("| way | us per call | vs literal |")
    print("|---|---:|---:|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} | {micros / base:.1f}x |")


if __name__ == "__main__":
    main()
