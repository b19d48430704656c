"""Keyset pages and counts, shared by every list query.

A list is declared once as a :class:`Listing`: its filters are a frozen
dataclass, its orders are named tuples of typed :class:`SortKey` columns (the
last one unique, the tie-breaker), and a ``build`` function turns (tenant,
filters, order) into a :class:`ListQuery`: the FROM source (a table, a join,
or a CTE's name with its ``WITH`` clause), the selected columns and the filter
predicates (SQL with ``$n`` parameters). Everything else is generic:

- one page is one statement: ``WHERE filters AND (sort cols) > (last row's
  values) ORDER BY sort cols LIMIT size + 1`` (the extra row says whether a
  next page exists), so page 10,000 costs what page 1 costs;
- a count is one more statement when asked: an exact count bounded by a cap,
  or the planner's estimate;
- a *match* predicate (:meth:`ListQuery.match`, e.g. a free-text search served
  by its own index) may select rows that lie anywhere in the order, so an
  ordered index walk could read most of the table before it finds a page
  (matches that sort late, or are sparse). Such a page is found in one
  statement that chooses at run time: it walks at most ``walk_budget`` rows of
  the order from the keyset, and only when fewer than the page matched there
  does it ask the match's own index for every match (a fenced CTE, so the
  planner cannot turn it back into the walk) and sort those. Its cost is at
  most the budget plus the matches, never the table; an exact count of
  matches reads them through the same fence and stops at ``cap + 1``;
- the keyset carried by page tokens is encoded and decoded by column type
  (:class:`KeyType`): a signed token is still untrusted input, and a keyset of
  the wrong shape or type is rejected (``ValueError``) before it reaches SQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Generic, TypeVar

import asyncpg

from server.db.engine import Conn
from server.paging import PageRequest
from server.text import successor

__all__ = [
    "Count",
    "CountMode",
    "KeyType",
    "ListQuery",
    "Listing",
    "Order",
    "Page",
    "SortKey",
    "count_sql",
    "estimate_sql",
    "fetch_page",
    "page_sql",
    "text_search",
]

# Searches shorter than this match a key prefix; trigrams need 3 characters.
TRIGRAM_MIN = 3

F = TypeVar("F")


class CountMode(Enum):
    NONE = "none"
    ESTIMATED = "estimated"
    EXACT = "exact"


class Count(Enum):
    NONE = "none"
    ESTIMATED = "estimated"
    EXACT = "exact"
    LOWER_BOUND = "lower_bound"


# -- keyset values in page tokens --------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# timestamptz range PostgreSQL and Python share (years 1..9999), in microseconds.
_MIN_MICROS = -62_135_596_800_000_000
_MAX_MICROS = 253_402_300_799_999_999
# A text sort key may be a folded name: NFKC and case folding expand text (one
# code point to up to 18), so the bound is the token's, not a column's.
_MAX_TEXT_KEY = 16_384


def _text_in(value: object) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT_KEY or "\x00" in value:
        raise ValueError("text keyset value")
    value.encode()  # lone surrogates cannot reach PostgreSQL
    return value


def _int_in(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
        raise ValueError("integer keyset value")
    return value


def _micros_out(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _micros_in(value: object) -> datetime:
    micros = _int_in(value)
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValueError("timestamp keyset value")
    return _EPOCH + timedelta(microseconds=micros)


def _uuid_in(value: object) -> str:
    if not isinstance(value, str) or len(value) != 36:
        raise ValueError("uuid keyset value")
    return str(uuid.UUID(value))


class KeyType(Enum):
    """How a sort column's value travels in a page token: (to JSON, from JSON)."""

    TEXT = (str, _text_in)
    INT = (int, _int_in)
    # Exact integer microseconds since the epoch (JSON numbers are exact integers).
    TIMESTAMP = (_micros_out, _micros_in)
    UUID = (str, _uuid_in)

    def to_token(self, value: Any) -> Any:
        return self.value[0](value)

    def from_token(self, value: object) -> Any:
        return self.value[1](value)


@dataclass(frozen=True, slots=True)
class SortKey:
    column: str
    type: KeyType


@dataclass(frozen=True, slots=True)
class Order:
    """A named order: sort keys (the last one unique) all in one direction."""

    name: str
    keys: tuple[SortKey, ...]
    descending: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(k.column for k in self.keys)

    def keyset_out(self, row: asyncpg.Record) -> list[Any]:
        """The token form of a row's position in this order."""
        return [k.type.to_token(row[k.column]) for k in self.keys]

    def keyset_in(self, after: Sequence[object]) -> tuple[Any, ...]:
        """A token's keyset as SQL parameters; ValueError when its shape is wrong."""
        if len(after) != len(self.keys):
            raise ValueError("keyset length")
        return tuple(k.type.from_token(v) for k, v in zip(self.keys, after, strict=True))


def orders(*choices: tuple[str, tuple[SortKey, ...]]) -> dict[str, Order]:
    """``name``, ``name asc`` and ``name desc`` for each (name, keys) choice."""
    out: dict[str, Order] = {}
    for name, keys in choices:
        out[name] = out[f"{name} asc"] = Order(name, keys)
        out[f"{name} desc"] = Order(name, keys, descending=True)
    return out


@dataclass(slots=True)
class ListQuery:
    """One list's SQL: the statements are made from it by :func:`page_sql` & co."""

    # A table or join ("clients", "appointments a JOIN clients c ON ...").
    source: str
    columns: Sequence[str]
    order: Order
    predicates: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    # An optional WITH clause (without the keyword) the source may name.
    with_: str = ""
    # Predicates with an index of their own whose matches may lie anywhere in
    # the order (see the module docstring); ANDed with ``predicates``.
    matches: list[str] = field(default_factory=list)
    # Rows of the order a page walks from its keyset looking for matches
    # before it reads all matches instead. A walk row and a match row cost
    # about the same (an index entry and a heap row), so walking wins when
    # density d > sqrt((size + 1) / rows): the switch belongs near
    # sqrt((size + 1) * rows), ~2,300 rows at 100k and ~7,100 at 1M for pages
    # of 50. 2,000 favours rare terms (whose cost is then the budget).
    walk_budget: int = 2000
    # Optional: a column the request names several values of (a few providers
    # of many): (column, the array's $n, its element type). In token mode each
    # value's rows are read apart, in the order from the keyset, at most a
    # page each (a LATERAL per value, the column's own index), then merged: a
    # page costs values x page rows, never all of their rows, range or not.
    # Page-number mode filters with = ANY and takes its OFFSET as usual.
    partition: tuple[str, str, str] | None = None

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self, predicate: str) -> None:
        self.predicates.append(predicate)

    def between(self, column: str, low: Any | None, high: Any | None) -> None:
        """``low <= column < high``, each bound only when given."""
        if low is not None:
            self.where(f"{column} >= {self.param(low)}")
        if high is not None:
            self.where(f"{column} < {self.param(high)}")

    def equals(self, column: str, value: Any | None) -> None:
        """``column = value`` when a value is given ("" and None = no filter)."""
        if value is not None and value != "":
            self.where(f"{column} = {self.param(value)}")

    def one_of(self, column: str, values: Sequence[Any], cast: str = "text") -> None:
        """``column`` in ``values`` when any (a single value as ``=``, which
        the planner treats as an index equality whatever the plan cache)."""
        if len(values) == 1:
            self.where(f"{column} = {self.param(values[0])}")
        elif values:
            self.where(f"{column} = ANY({self.param(list(values))}::{cast}[])")

    def match(self, predicate: str) -> None:
        self.matches.append(predicate)

    def partition_by(self, column: str, values: Sequence[Any], cast: str) -> None:
        """``column`` in ``values`` (distinct), each value's rows read apart
        (see ``partition``); the order's columns must be plain column names."""
        if any("." in c for c in self.order.columns):
            raise ValueError("a partitioned list orders by plain column names")
        self.partition = (column, self.param(list(dict.fromkeys(values))), cast)

    def _with(self, *more: str) -> str:
        clauses = [c for c in (self.with_, *more) if c]
        return f"WITH {', '.join(clauses)} " if clauses else ""

    def _select(self) -> str:
        """The columns, and the order's sort columns the entity hides (a
        folded name key): the next page's keyset is read from the last row."""
        missing = [c for c in self.order.columns if c not in self.columns]
        return ", ".join((*self.columns, *missing))

    def _partition_filter(self) -> list[str]:
        if self.partition is None:
            return []
        column, values, cast = self.partition
        return [f"{column} = ANY({values}::{cast}[])"]

    def _filters(self) -> str:
        return " AND ".join(self.predicates + self.matches + self._partition_filter()) or "true"


@dataclass(frozen=True, slots=True)
class Listing(Generic[F]):
    """A list declared once: filters dataclass ``F``, orders, and the query builder."""

    name: str
    orders: Mapping[str, Order]
    default_order: str
    build: Callable[[str, F, Order], ListQuery]

    def order(self, order_by: str) -> Order | None:
        """The order an ``order_by`` names ("" = default), or None when unknown."""
        return self.orders.get(" ".join(order_by.lower().split()) or self.default_order)

    def order_names(self) -> list[str]:
        return sorted({o.name for o in self.orders.values()})


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[asyncpg.Record]
    has_next: bool
    total: int
    count: Count


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_search(query: ListQuery, term: str, *, substring: str, prefix: str) -> None:
    """A folded search ``term`` (server.text.fold) on a list: 3+ characters match
    any substring of the ``substring`` column (a trigram GIN index; a match,
    whose rows may lie anywhere in the order), 1-2 characters a prefix range of
    the "C"-collated ``prefix`` column (its btree; code point order = byte
    order, so the range is exact)."""
    if not term:
        return
    if len(term) >= TRIGRAM_MIN:
        query.match(f"{substring} LIKE {query.param('%' + _escape_like(term) + '%')}")
        return
    query.where(f"{prefix} >= {query.param(term)}")
    upper = successor(term)
    if upper is not None:
        query.where(f"{prefix} < {query.param(upper)}")


def page_sql(query: ListQuery, page: PageRequest) -> tuple[str, list[Any]]:
    """The page statement: keyset (or OFFSET) after the filters, size + 1 rows."""
    args = list(query.args)
    predicates = list(query.predicates)

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    sort = query.order.columns
    if page.after is not None:
        placeholders = ", ".join(param(v) for v in page.after)
        op = "<" if query.order.descending else ">"
        predicates.append(f"({', '.join(sort)}) {op} ({placeholders})")
    direction = " DESC" if query.order.descending else ""
    order = ", ".join(f"{c}{direction}" for c in sort)
    if query.matches:
        return _match_page_sql(
            query, page, predicates + query._partition_filter(), order, args, param
        )
    if query.partition is not None:
        if not page.offset:
            return _partitioned_page_sql(query, page, predicates, order, param), args
        # Page-number mode: OFFSET over the values' merged order (a LATERAL
        # each would read offset + size rows of every value).
        predicates += query._partition_filter()
    sql = (
        f"{query._with()}SELECT {query._select()} FROM {query.source} "
        f"WHERE {' AND '.join(predicates) or 'true'} ORDER BY {order} "
        f"LIMIT {param(page.size + 1)}"
    )
    if page.offset:
        sql += f" OFFSET {param(page.offset)}"
    return sql, args


def _partitioned_page_sql(
    query: ListQuery,
    page: PageRequest,
    predicates: list[str],
    order: str,
    param: Callable[[Any], str],
) -> str:
    """A page of a partitioned list (``ListQuery.partition``) in token mode:
    for each value, its first size + 1 rows from the keyset in the order (a
    LATERAL on the column's index), then those merged, sorted and cut to the
    page."""
    assert query.partition is not None and not page.offset
    column, values, cast = query.partition
    where = " AND ".join([*predicates, f"{column} = _part.v"])
    limit = param(page.size + 1)
    inner = (
        f"SELECT {query._select()} FROM {query.source} WHERE {where} ORDER BY {order} LIMIT {limit}"
    )
    return (
        f"{query._with()}SELECT _p.* FROM unnest({values}::{cast}[]) AS _part(v) "
        f"CROSS JOIN LATERAL ({inner}) AS _p ORDER BY {order} LIMIT {limit}"
    )


def _match_page_sql(
    query: ListQuery,
    page: PageRequest,
    predicates: list[str],
    order: str,
    args: list[Any],
    param: Callable[[Any], str],
) -> tuple[str, list[Any]]:
    """A page of a list with match predicates, in one statement (see the module
    docstring): the walk, or else every match; then the page's rows by key.

    Both ways carry only the sort keys (aliased ``_k0``.., so that qualified
    sort columns work too); the page's rows are then read by those keys (the
    order's own index: the keys are unique). The walk's CTE is run first (the
    gates are InitPlans); the matches' CTE runs only when a gate opens it.
    """
    sort = query.order.columns
    keys = [f"_k{i}" for i in range(len(sort))]
    direction = " DESC" if query.order.descending else ""
    key_order = ", ".join(f"{k}{direction}" for k in keys)
    aliased = ", ".join(f"{c} AS {k}" for c, k in zip(sort, keys, strict=True))
    base = " AND ".join(predicates) or "true"
    hit = " AND ".join(query.matches)
    need = param(page.offset + page.size + 1)
    # Page-number mode skips `offset` matches first: the walk covers them too.
    walk_limit = param(page.offset + query.walk_budget)
    walk = (
        f"_walk AS MATERIALIZED (SELECT {', '.join(keys)} FROM (SELECT {aliased}, ({hit}) AS _hit "
        f"FROM {query.source} WHERE {base} ORDER BY {order} LIMIT {walk_limit}) "
        f"AS _w WHERE _hit LIMIT {need})"
    )
    matches = (
        f"_matches AS MATERIALIZED (SELECT {aliased} FROM {query.source} WHERE {base} AND {hit})"
    )
    found = "(SELECT count(*) FROM _walk)"
    # The page's keys only (the OFFSET is applied to keys, here): the rows are
    # then read for size + 1 keys, never for offset + size + 1 (a join that
    # large is planned as a scan of the tenant's rows).
    keyed = (
        f"_page AS (SELECT {', '.join(keys)} FROM (SELECT {', '.join(keys)} FROM _walk "
        f"WHERE {found} >= {need} "
        f"UNION ALL (SELECT {', '.join(keys)} FROM _matches WHERE {found} < {need} "
        f"ORDER BY {key_order} LIMIT {need})) AS _p "
        f"ORDER BY {key_order} LIMIT {param(page.size + 1)} OFFSET {param(page.offset)})"
    )
    sql = (
        f"{query._with(walk, matches, keyed)}SELECT {query._select()} "
        f"FROM {query.source} WHERE {base} AND ({', '.join(sort)}) IN "
        f"(SELECT {', '.join(keys)} FROM _page) ORDER BY {order} LIMIT {param(page.size + 1)}"
    )
    return sql, args


def count_sql(query: ListQuery, cap: int) -> tuple[str, list[Any]]:
    """Exact count bounded by ``cap``: at most cap + 1 index entries are read.

    The inner ORDER BY follows the list's index so that the planner walks it
    and stops, instead of scanning the table until cap + 1 rows matched.
    """
    n = len(query.args) + 1
    if query.matches:
        return _match_count_sql(query, cap)
    sql = (
        f"{query._with()}SELECT count(*) FROM (SELECT 1 FROM {query.source} "
        f"WHERE {query._filters()} ORDER BY {', '.join(query.order.columns)} LIMIT ${n}) "
        "AS capped"
    )
    return sql, [*query.args, cap + 1]


def _match_count_sql(query: ListQuery, cap: int) -> tuple[str, list[Any]]:
    """Exact count bounded by ``cap`` of a list with match predicates.

    Their matches may lie anywhere in the list's order, so the ordered walk
    that bounds other counts could read most of the table before cap + 1
    matched. The matches are read through a fence instead, planned for all
    rows (the match's own index when it is selective: its entries, then at
    most cap + 1 rows), and stop at cap + 1. When the planner expects most
    rows to match it may plan a sequential scan there: it also stops at
    cap + 1 matches, which are then dense.
    """
    n = len(query.args) + 1
    fenced = f"_matches AS MATERIALIZED (SELECT 1 FROM {query.source} WHERE {query._filters()})"
    sql = f"{query._with(fenced)}SELECT count(*) FROM (SELECT 1 FROM _matches LIMIT ${n}) AS capped"
    return sql, [*query.args, cap + 1]


def estimate_sql(query: ListQuery) -> tuple[str, list[Any]]:
    sql = f"SELECT 1 FROM {query.source} WHERE {query._filters()}"
    return f"EXPLAIN (FORMAT JSON) {query._with()}{sql}", list(query.args)


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
        # Rows before this page: the offset, or the pages a token walked past.
        before = page.offset or (page.number - 1) * page.size
        seen = before + len(rows) + (1 if has_next else 0)
        total = seen if page.after is None and not has_next else max(total, seen)
    return Page(rows=list(rows), has_next=has_next, total=int(total), count=kind)
