"""What every handler shares: dependencies, the write path, encoders, masks."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

import asyncpg
from booking.v1 import common_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from grpc import aio

from server.config import Settings
from server.context import current_call
from server.db.engine import Conn, Database
from server.errors import FieldViolation, InvalidArgument
from server.paging import PageRequest, PageTokenCodec, resolve_page
from server.queries._crud import Audit
from server.queries._listing import Count, CountMode, Page
from server.queries.requests import claim_request, store_response
from server.validation import Violations

R = TypeVar("R", bound=Message)

_ETAG = re.compile(r'^"v([0-9]{1,9})"$')


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything a servicer needs, built once by create_server."""

    db: Database
    settings: Settings
    tokens: PageTokenCodec


def timeout_of(context: aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, float(remaining))


def audit_of(request_id: str) -> Audit:
    call = current_call()
    return Audit(
        actor=call.actor, correlation_id=call.correlation_id, request_id=request_id or None
    )


async def run_write(
    deps: Deps,
    context: aio.ServicerContext[Any, Any],
    *,
    scope: str,
    request: Message,
    request_id: str,
    response_type: type[R],
    body: Callable[[Conn], Awaitable[R]],
) -> R:
    """The write path every write RPC uses: one transaction; with a request_id,
    the first result is stored and returned to retries (AIP-155)."""
    method = current_call().method
    async with deps.db.transaction(timeout_of(context)) as conn:
        if not request_id:
            return await body(conn)
        fingerprint = hashlib.sha256(
            method.encode() + b"\0" + request.SerializeToString(deterministic=True)
        ).digest()
        stored = await claim_request(conn, scope, request_id, method, fingerprint)
        if stored is not None:
            return response_type.FromString(stored.response)
        response = await body(conn)
        await store_response(conn, scope, request_id, response.SerializeToString())
        return response


# -- encoding -----------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_time(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Fill a message's Timestamp field in place from an aware datetime, exactly.

    Integer arithmetic, ~3x faster than ``Timestamp.FromDatetime``, which
    dominated encoding a page; filling in place also saves a copy. Encoders
    take the message constructor (``new``) so that a list fills its repeated
    field directly (``response.clients.add``) instead of copying each item.
    """
    delta = value - _EPOCH
    target.seconds = delta.days * 86_400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def epoch_micros(value: datetime) -> int:
    """An instant as integer microseconds (exact, for page-token keysets)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def etag(version: int) -> str:
    return f'"v{version}"'


def parse_etag(value: str, field: str) -> int | None:
    if not value:
        return None
    match = _ETAG.match(value)
    if match is None:
        raise InvalidArgument(
            f"{field} is not an etag this service issued",
            reason="INVALID_ETAG",
            field_violations=[FieldViolation(field, "is not an etag this service issued")],
        )
    return int(match.group(1))


def to_datetime(ts: timestamp_pb2.Timestamp, field: str, violations: Violations) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        violations.add(field, "is not a valid timestamp", "OUT_OF_RANGE")
        return None


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


class PagedRequest(Protocol):
    """The paging fields every List request has (AIP-158 plus page-number mode)."""

    page_size: int
    page_token: str
    page: int


def resolve_list_page(
    deps: Deps,
    request: PagedRequest,
    scope: str,
    keyset_in: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None,
) -> PageRequest:
    """The page a List request asks for; its token's keyset converted by ``keyset_in``
    (a signed token whose keyset does not convert is still INVALID_ARGUMENT)."""
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
    if page.after is None or keyset_in is None:
        return page
    try:
        after = keyset_in(page.after)
    except (ValueError, TypeError, IndexError, OverflowError):
        raise InvalidArgument(
            "page_token is not a token this service issued",
            reason="INVALID_PAGE_TOKEN",
            field_violations=[FieldViolation("page_token", "is malformed")],
        ) from None
    return dataclasses.replace(page, after=after)


def list_response(
    deps: Deps,
    response_type: type[R],
    items_field: str,
    encode: Callable[[asyncpg.Record, Callable[..., Any]], Any],
    result: Page,
    page: PageRequest,
    scope: str,
    keyset_out: Callable[[asyncpg.Record], tuple[Any, ...]],
) -> R:
    """A List response: items encoded straight into the repeated field, the next
    page's token (empty only on the last page) and PageInfo."""
    next_token = ""
    if result.has_next and result.rows:
        next_token = deps.tokens.encode(scope, page.number + 1, keyset_out(result.rows[-1]))
    response = response_type(
        next_page_token=next_token, page_info=page_info(result, page.number, page.size)
    )
    add = getattr(response, items_field).add
    for row in result.rows:
        encode(row, add)
    return response


def page_info(page: Page, number: int, size: int) -> common_pb2.PageInfo:
    total_pages = -(-page.total // size) if page.count is not Count.NONE and size else 0
    return common_pb2.PageInfo(
        page=number,
        page_size=size,
        total_size=page.total,
        total_pages=total_pages,
        has_next=page.has_next,
        has_prev=number > 1,
        count_kind=_COUNT_KINDS[page.count],
    )


# -- update masks (AIP-134) ------------------------------------------------------------


def resolve_mask(
    mask: field_mask_pb2.FieldMask,
    updatable: Iterable[str],
    is_set: Callable[[str], bool],
) -> list[str]:
    """Paths to update: the mask's, or every set updatable field when empty."""
    allowed = list(updatable)
    paths = list(mask.paths)
    if not paths:
        return [p for p in allowed if is_set(p)]
    if paths == ["*"]:
        return allowed
    unknown = [p for p in paths if p not in allowed]
    if unknown:
        raise InvalidArgument(
            f"update_mask names fields that cannot be updated: {', '.join(unknown)}",
            reason="INVALID_UPDATE_MASK",
            field_violations=[
                FieldViolation(
                    "update_mask", f"{p!r} is not one of {', '.join(allowed)}", "UNKNOWN_FIELD"
                )
                for p in unknown
            ],
        )
    return list(dict.fromkeys(paths))


def nullable(value: str) -> str | None:
    return value or None


def require_fields(values: Mapping[str, Any]) -> None:
    if not values:
        raise InvalidArgument(
            "nothing to update: set update_mask or at least one updatable field",
            reason="EMPTY_UPDATE",
            field_violations=[FieldViolation("update_mask", "selects no field")],
        )
