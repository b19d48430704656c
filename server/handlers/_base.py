"""What every handler gets: its dependencies, the call's remaining deadline,
and the request's first look (:func:`request_violations`: canonical ids, no NUL)."""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc import aio

from server.config import Settings
from server.db.engine import Database
from server.ids import is_uuid
from server.paging import PageTokenCodec
from server.timezones import TimeZones
from server.validation import Violations

__all__ = [
    "Context",
    "Deps",
    "canonical_ids",
    "check_text",
    "ignore_output_only",
    "request_violations",
    "timeout_of",
]

Context = aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class Deps:
    """Everything a servicer needs, built once by create_server."""

    db: Database
    settings: Settings
    tokens: PageTokenCodec
    zones: TimeZones


def timeout_of(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, float(remaining))


# String fields that hold a caller's own key, not one of our UUIDs.
_NOT_IDS = frozenset({"request_id", "external_id"})


def _is_id_field(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_STRING
        and (field.name == "id" or field.name.endswith("_id") or field.name.endswith("_ids"))
        and field.name not in _NOT_IDS
        and not field.name.endswith("external_id")
    )


def canonical_ids(msg: Message) -> None:
    """Rewrite, in place, every UUID id field of ``msg`` (and of its nested
    messages) in canonical lower-case form, so that ``ABC...`` and ``abc...``
    name the same resource in request fingerprints, token scopes and audit
    rows. Values that are not UUIDs are left for validation to report."""
    for field, value in msg.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for item in value:
                    canonical_ids(item)
            else:
                canonical_ids(value)
        elif _is_id_field(field):
            if field.is_repeated:
                value[:] = [_canonical(v) for v in value]
            else:
                setattr(msg, field.name, _canonical(value))


def _canonical(value: str) -> str:
    return value.lower() if is_uuid(value) else value


def check_text(msg: Message, v: Violations, prefix: str = "") -> None:
    """A NUL character in any string field of ``msg`` (nested ones too) is a
    field violation: PostgreSQL's text cannot hold it, and it must be refused as
    the caller's error, naming the field, not as a database error."""
    for field, value in msg.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for i, item in enumerate(value):
                    check_text(item, v, f"{path}[{i}].")
            else:
                check_text(value, v, f"{path}.")
        elif field.type == FieldDescriptor.TYPE_STRING:
            if not field.is_repeated:
                if "\x00" in value:
                    v.add(path, "must not contain NUL characters", "INVALID_FORMAT")
                continue
            for i, item in enumerate(value):
                if "\x00" in item:
                    v.add(f"{path}[{i}]", "must not contain NUL characters", "INVALID_FORMAT")


def request_violations(request: Message, *, zones: Container[str] | None = None) -> Violations:
    """Every handler's first step: the request's ids made canonical (in place),
    and a :class:`Violations` already holding a violation per string field with
    a NUL; ``zones`` for handlers that validate time zones."""
    canonical_ids(request)
    v = Violations(zones=zones)
    check_text(request, v)
    return v


def ignore_output_only(messages: Iterable[Message], *fields: str) -> None:
    """Clear output-only ``fields`` of resource messages in a request, right
    after :func:`request_violations` (a NUL in them is still reported): they
    are ignored, and so never enter the request_id fingerprint (a retry that
    differs only in them is the same request)."""
    for msg in messages:
        for name in fields:
            msg.ClearField(name)
