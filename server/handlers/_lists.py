"""The one path every List RPC takes (AIP-132/158 plus page-number mode).

A list RPC is a :class:`ListSpec`: the query layer's :class:`Listing` (filters
dataclass, orders with typed sort keys, query builder), the response message
and its repeated field, a function that decodes and validates the request's
filters into the filters dataclass, and an encoder. :meth:`ListSpec.serve`
does the rest the same way for every list:

- validation of tenant, order_by, count_mode and paging, reported together
  with the filters' own violations;
- the page token's scope: a digest of method, tenant, order and *every field*
  of the filters dataclass (derived, not listed by hand, so a filter added
  later is bound to tokens automatically);
- the token's keyset decoded by column type (untrusted even when signed);
- one connection, one page statement (plus one when a count is asked);
- items encoded straight into the repeated field, ``next_page_token`` (empty
  only on the last page) and ``PageInfo``;
- with ``view = VIEW_FULL``, each :class:`Related` kind of the list read for
  the whole page in ONE statement on the same connection (ids gathered from
  the page's rows, ``= ANY($2)``): the statements per call are fixed whatever
  the page size, never one per row.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import asyncpg
from booking.v1 import common_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from server.errors import FieldViolation, InvalidArgument
from server.handlers._base import Context, Deps, request_violations, timeout_of
from server.paging import (
    MAX_PAGE_NUMBER,
    PageRequest,
    check_paging,
    request_scope,
    resolve_page,
)
from server.queries._listing import Count, CountMode, Listing, Order, Page, fetch_page
from server.text import fold
from server.validation import Violations

__all__ = [
    "MAX_QUERY_LEN",
    "ListSpec",
    "Related",
    "count_mode_of",
    "enum_values",
    "page_info",
    "search_term",
    "view_of",
]

# A list's free-text search, in characters.
MAX_QUERY_LEN = 100

F = TypeVar("F")
R = TypeVar("R", bound=Message)

_COUNT_MODES = {
    common_pb2.COUNT_MODE_UNSPECIFIED: CountMode.NONE,
    common_pb2.COUNT_MODE_NONE: CountMode.NONE,
    common_pb2.COUNT_MODE_ESTIMATED: CountMode.ESTIMATED,
    common_pb2.COUNT_MODE_EXACT: CountMode.EXACT,
}
_COUNT_KINDS = {
    Count.NONE: common_pb2.COUNT_KIND_NONE,
    Count.ESTIMATED: common_pb2.COUNT_KIND_ESTIMATED,
    Count.EXACT: common_pb2.COUNT_KIND_EXACT,
    Count.LOWER_BOUND: common_pb2.COUNT_KIND_LOWER_BOUND,
}


def count_mode_of(value: int, violations: Violations) -> CountMode:
    mode = _COUNT_MODES.get(value)  # type: ignore[call-overload]
    if mode is None:
        violations.add("count_mode", "is not a known CountMode", "INVALID_ENUM")
        return CountMode.NONE
    return cast(CountMode, mode)


def search_term(value: str, v: Violations, field: str = "query") -> str:
    """A search as the stored keys are folded (server.text.fold). The length
    asked of the caller is of what they sent (white space runs collapsed)."""
    if len(" ".join(value.split())) > MAX_QUERY_LEN:
        v.add(field, f"must be at most {MAX_QUERY_LEN} characters", "TOO_LONG")
    return fold(value)


def enum_values(
    values: Sequence[int], names: Mapping[Any, str], field: str, v: Violations
) -> tuple[str, ...]:
    """A repeated enum filter as the stored values, sorted and distinct (the
    token scope is derived from them); UNSPECIFIED or unknown numbers are
    violations on ``field[i]``."""
    out = set()
    for i, value in enumerate(values):
        name = names.get(value)
        if name is None:
            v.add(f"{field}[{i}]", "is not a known value (UNSPECIFIED is not one)", "INVALID_ENUM")
        else:
            out.add(name)
    return tuple(sorted(out))


def view_of(value: int, violations: Violations) -> bool:
    """Whether the request's ``view`` asks for related rows (VIEW_FULL)."""
    if value not in (common_pb2.VIEW_UNSPECIFIED, common_pb2.VIEW_BASIC, common_pb2.VIEW_FULL):
        violations.add("view", "is not a known View", "INVALID_ENUM")
    return value == common_pb2.VIEW_FULL


@dataclasses.dataclass(frozen=True, slots=True)
class Related:
    """One kind of row related to a list's items (VIEW_FULL), read for a whole
    page in one statement.

    ``sql`` takes the tenant as $1 and the distinct non-null values of the
    page rows' ``key`` column as $2 (a uuid[]), e.g. ``SELECT ... FROM clients
    WHERE organization_id = $1 AND id = ANY($2::uuid[])``. Each row found is
    encoded into the response's ``field``: a map keyed by the row's ``id``, or
    (``repeated=True``) a repeated field in the statement's order.
    """

    field: str
    key: str
    sql: str
    encode: Callable[[asyncpg.Record, Callable[..., Any]], Any]
    repeated: bool = False

    def ids(self, rows: Sequence[asyncpg.Record]) -> list[str]:
        key = self.key
        return list(dict.fromkeys(str(r[key]) for r in rows if r[key] is not None))

    def fill(self, response: Message, found: Sequence[asyncpg.Record]) -> None:
        target = getattr(response, self.field)
        if self.repeated:
            for row in found:
                self.encode(row, target.add)
            return
        entry = response.DESCRIPTOR.fields_by_name[self.field].message_type
        assert entry is not None  # a map field's entry message
        value = entry.fields_by_name["value"].message_type
        assert value is not None  # maps of messages only
        new = GetMessageClass(value)  # type: ignore[arg-type]
        for row in found:
            target[str(row["id"])].CopyFrom(self.encode(row, new))


def page_info(page: Page, number: int, size: int) -> common_pb2.PageInfo:
    total_pages = -(-page.total // size) if page.count is not Count.NONE and size else 0
    # PageInfo's page fields are int32 (a forged page number near the top
    # with an estimate past it would not fit).
    total_pages = min(total_pages, MAX_PAGE_NUMBER)
    return common_pb2.PageInfo(
        page=number,
        page_size=size,
        total_size=page.total,
        total_pages=total_pages,
        has_next=page.has_next,
        has_prev=number > 1,
        count_kind=_COUNT_KINDS[page.count],
    )


def _scope_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list | frozenset | set):
        items = [_scope_value(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    return value


@functools.lru_cache(maxsize=4096)
def _scope(method: str, listing: str, org_id: str, order: str, desc: bool, flt: Any) -> str:
    """The scope digest; cached (a caller paging through a list asks for the same
    one on every page), filters being frozen dataclasses, hashable by value."""
    fields = [_scope_value(getattr(flt, f.name)) for f in dataclasses.fields(flt)]
    return request_scope(method, listing, org_id, order, desc, *fields)


@dataclasses.dataclass(frozen=True, slots=True)
class ListSpec(Generic[F, R]):
    """One List RPC, declared."""

    listing: Listing[F]
    response: type[R]
    # The response's repeated field of items, e.g. "clients".
    items_field: str
    # Decode and validate the request's filters (violations reported with the rest).
    filters: Callable[[Any, Violations], F]
    # (row, message constructor) -> message; the constructor is the repeated field's add.
    encode: Callable[[asyncpg.Record, Callable[..., Any]], Any]
    # What VIEW_FULL attaches (the request then has a ``view`` field).
    related: tuple[Related, ...] = ()

    @property
    def method(self) -> str:
        return self.response.DESCRIPTOR.name.removesuffix("Response")

    def scope(self, org_id: str, flt: F, order: Order) -> str:
        """What a page token is bound to: method and list, tenant, order, every filter."""
        return _scope(self.method, self.listing.name, org_id, order.name, order.descending, flt)

    def _order(self, request: Any, v: Violations) -> Order:
        order_by = getattr(request, "order_by", "")
        order = self.listing.order(order_by)
        if order is None:
            names = " or ".join(f'"{n}"' for n in self.listing.order_names())
            v.add(
                "order_by", f'must be {names}, optionally followed by " desc"', "INVALID_ORDER_BY"
            )
            order = self.listing.orders[self.listing.default_order]
        return order

    def _page(self, deps: Deps, request: Any, scope: str, order: Order) -> PageRequest:
        settings = deps.settings
        page = resolve_page(
            page_size=request.page_size,
            page_token=request.page_token,
            page=request.page,
            scope=scope,
            codec=deps.tokens,
            default_size=settings.default_page_size,
            max_size=settings.max_page_size,
            max_offset=settings.max_offset,
        )
        if page.after is None:
            return page
        try:
            after = order.keyset_in(page.after)
        except (ValueError, TypeError, OverflowError, UnicodeError):
            raise InvalidArgument(
                "page_token is not a token this service issued",
                reason="INVALID_PAGE_TOKEN",
                field_violations=[
                    FieldViolation("page_token", "is malformed", "INVALID_PAGE_TOKEN")
                ],
            ) from None
        return dataclasses.replace(page, after=after)

    async def serve(self, deps: Deps, request: Any, context: Context) -> R:
        v = request_violations(request)
        v.uuid("organization_id", request.organization_id)
        order = self._order(request, v)
        flt = self.filters(request, v)
        count_mode = count_mode_of(request.count_mode, v)
        full = view_of(request.view, v) if self.related else False
        check_paging(request.page_size, request.page, request.page_token, v)
        v.raise_if_any()
        org = request.organization_id
        scope = self.scope(org, flt, order)
        page = self._page(deps, request, scope, order)
        query = self.listing.build(org, flt, order)
        async with deps.db.connection(timeout_of(context)) as conn:
            result = await fetch_page(conn, query, page, count_mode, deps.settings.exact_count_cap)
            found = []
            if full and result.rows:
                for related in self.related:
                    ids = related.ids(result.rows)
                    found.append(await conn.fetch(related.sql, org, ids) if ids else [])
        next_token = ""
        if result.has_next and result.rows:
            next_token = deps.tokens.encode(
                # The last page number a token may carry is also the next
                # one's: a walk that long keeps it (PageInfo.page is int32).
                scope,
                min(page.number + 1, MAX_PAGE_NUMBER),
                tuple(order.keyset_out(result.rows[-1])),
            )
        response = self.response(
            next_page_token=next_token, page_info=page_info(result, page.number, page.size)
        )
        add = getattr(response, self.items_field).add
        encode = self.encode
        for row in result.rows:
            encode(row, add)
        for related, rows in zip(self.related, found, strict=False):
            related.fill(response, rows)
        return response
