"""Rows to messages and messages to values: timestamps, etags, optional text."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from server.validation import Violations

__all__ = ["etag", "nullable", "parse_etag", "set_time", "to_datetime"]

_ETAG = re.compile(r'^"v([0-9]{1,9})"$')
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


def etag(version: int) -> str:
    return f'"v{version}"'


def parse_etag(value: str, field: str, v: Violations) -> int | None:
    """The version an etag names (None when absent or bad; a bad one is a violation)."""
    if not value:
        return None
    match = _ETAG.match(value)
    if match is None:
        v.add(field, "is not an etag this service issued", "INVALID_ETAG")
        return None
    return int(match.group(1))


def to_datetime(ts: timestamp_pb2.Timestamp, field: str, violations: Violations) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        violations.add(field, "is not a valid timestamp", "OUT_OF_RANGE")
        return None


def nullable(value: str) -> str | None:
    return value or None
