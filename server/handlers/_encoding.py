"""Rows to messages and messages to values: timestamps, etags, optional text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import timestamp_pb2

from server.errors import Aborted
from server.validation import Violations

__all__ = [
    "check_version",
    "etag",
    "not_after",
    "nullable",
    "parse_etag",
    "set_time",
    "to_datetime",
]

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
    match = _ETAG.fullmatch(value)
    if match is None:
        v.add(field, "is not an etag this service issued", "INVALID_ETAG")
        return None
    return int(match.group(1))


def to_datetime(
    ts: timestamp_pb2.Timestamp, field: str, violations: Violations, *, end: bool = False
) -> datetime | None:
    """The instant (microseconds: PostgreSQL's precision), None when unset.

    ``end=True`` for an exclusive upper bound ("strictly before"): nanoseconds
    round UP, so that a stored instant lies before the exact bound exactly
    when it lies before the rounded one (truncating would drop a row at T from
    a range ending at T + 500 ns)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    try:
        value = ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        violations.add(field, "is not a valid timestamp", "OUT_OF_RANGE")
        return None
    if end and ts.nanos % 1000:
        try:
            value += timedelta(microseconds=1)
        except OverflowError:
            # Within the last microsecond a Timestamp holds: every storable
            # instant lies before it, so it bounds nothing.
            return None
    return value


def check_version(row: Any, version: int | None, resource_type: str) -> None:
    """ABORTED ETAG_MISMATCH when an etag was given and the (locked) row has moved on."""
    if version is not None and row["version"] != version:
        raise Aborted(
            f"{resource_type} {str(row['id'])!r} was changed by someone else: the etag is "
            "stale; get it again and retry",
            reason="ETAG_MISMATCH",
            metadata={"resource_id": str(row["id"])},
        )


def not_after(a: timestamp_pb2.Timestamp, b: timestamp_pb2.Timestamp) -> bool:
    """a <= b, to the nanosecond (the datetimes are rounded to microseconds)."""
    return (a.seconds, a.nanos) <= (b.seconds, b.nanos)


def nullable(value: str) -> str | None:
    return value or None
