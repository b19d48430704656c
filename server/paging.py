"""The paging contract shared by every list RPC (AIP-132/158).

- ``page_size``: 0 -> default, above max -> clamped, negative -> INVALID_ARGUMENT.
- ``page_token``: opaque and signed (HMAC-SHA256 with the server's secret). It
  carries the keyset position (the sort values of the last row returned) and
  the page ordinal, and is bound to the method, tenant, filters and order by a
  digest of them: tampering, another tenant, or other filters give
  INVALID_ARGUMENT with a field violation on ``page_token``.
- ``page``: the page-number mode (OFFSET), bounded by ``max_offset``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from server.errors import FieldViolation, InvalidArgument
from server.validation import Violations

__all__ = [
    "PageRequest",
    "PageTokenCodec",
    "check_paging",
    "request_scope",
    "resolve_page",
]

_VERSION = 1
# PageInfo.page is an int32; a token is only ever issued for page 2 and later.
MAX_PAGE_NUMBER = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a list query needs to know about the page wanted."""

    size: int
    # 1-based ordinal of the page being fetched.
    number: int
    # Keyset position after which to start (token mode), or None for page 1.
    after: tuple[Any, ...] | None
    # OFFSET in page-number mode, else 0.
    offset: int


class PageTokenCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, number: int, after: tuple[Any, ...]) -> str:
        payload = json.dumps(
            {"v": _VERSION, "s": scope, "n": number, "k": list(after)},
            separators=(",", ":"),
        ).encode()
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, token: str, scope: str) -> tuple[int, tuple[Any, ...]]:
        def bad(description: str, reason: str) -> InvalidArgument:
            return InvalidArgument(
                f"page_token {description}",
                reason=reason,
                field_violations=[FieldViolation("page_token", description, reason)],
            )

        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise bad("is not a token this service issued", "INVALID_PAGE_TOKEN") from None
        payload, mac = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(payload)):
            raise bad("is not a token this service issued", "INVALID_PAGE_TOKEN")
        # Signed is not trusted: the development secret is public, and a leaked
        # production secret must not turn into a database error. Every value
        # is checked for type and range before it is used.
        try:
            data = json.loads(payload)
            number, after, token_scope = data["n"], data["k"], data["s"]
        except (ValueError, KeyError, TypeError, UnicodeError, RecursionError):
            raise bad("is not a token this service issued", "INVALID_PAGE_TOKEN") from None
        if (
            not isinstance(data, dict)
            or not isinstance(number, int)
            or isinstance(number, bool)
            or not 2 <= number <= MAX_PAGE_NUMBER
            or not isinstance(after, list)
            or not isinstance(token_scope, str)
        ):
            raise bad("is not a token this service issued", "INVALID_PAGE_TOKEN")
        if data.get("v") != _VERSION:
            raise bad("was issued by another version of the service", "INVALID_PAGE_TOKEN")
        if not hmac.compare_digest(token_scope, scope):
            raise bad(
                "was issued for another request: organization, filters and order_by "
                "must stay the same while paging",
                "PAGE_TOKEN_MISMATCH",
            )
        return number, tuple(after)


def request_scope(method: str, *parts: object) -> str:
    """Digest of everything a token is bound to (method, tenant, filters, order)."""
    text = json.dumps([method, *parts], separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_paging(page_size: int, page: int, page_token: str, v: Violations) -> None:
    """Paging violations, reported together with the request's other ones."""
    if page_size < 0:
        v.add("page_size", "must not be negative", "OUT_OF_RANGE")
    if page < 0:
        v.add("page", "must not be negative", "OUT_OF_RANGE")
    if page and page_token:
        v.add("page", "cannot be combined with page_token", "CONFLICTING_FIELDS")


def resolve_page(
    *,
    page_size: int,
    page_token: str,
    page: int,
    scope: str,
    codec: PageTokenCodec,
    default_size: int,
    max_size: int,
    max_offset: int,
) -> PageRequest:
    """The page wanted; the fields have passed :func:`check_paging`."""
    size = default_size if page_size == 0 else min(page_size, max_size)
    if page:
        offset = (page - 1) * size
        if offset + size > max_offset:
            raise InvalidArgument(
                f"page * page_size may not exceed {max_offset}; use page_token to go deeper",
                reason="PAGE_TOO_DEEP",
                field_violations=[
                    FieldViolation(
                        "page", f"page * page_size must be <= {max_offset}", "OUT_OF_RANGE"
                    )
                ],
            )
        return PageRequest(size=size, number=page, after=None, offset=offset)
    if page_token:
        number, after = codec.decode(page_token, scope)
        return PageRequest(size=size, number=number, after=after, offset=0)
    return PageRequest(size=size, number=1, after=None, offset=0)
