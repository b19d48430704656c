"""Update masks (AIP-134): which fields an update writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from server.errors import FieldViolation, InvalidArgument
from server.validation import Violations

__all__ = ["has_value", "require_fields", "resolve_mask"]


def has_value(msg: Message, field: str) -> bool:
    """Whether an update without a mask sets ``field``: presence where the field
    tracks it (``optional`` scalars, messages), else a non-default value."""
    descriptor = msg.DESCRIPTOR.fields_by_name[field]
    if descriptor.has_presence:
        return msg.HasField(field)
    return bool(getattr(msg, field))


def resolve_mask(
    mask: field_mask_pb2.FieldMask,
    updatable: Iterable[str],
    is_set: Callable[[str], bool],
    v: Violations,
) -> list[str]:
    """Paths to update: the mask's, or every set updatable field when empty.
    Unknown paths are violations on ``update_mask.paths``, reported with the
    request's others; the known ones are returned either way."""
    allowed = list(updatable)
    paths = list(mask.paths)
    if not paths:
        return [p for p in allowed if is_set(p)]
    if paths == ["*"]:
        return allowed
    for p in paths:
        if p not in allowed:
            v.add(
                "update_mask.paths",
                f"{p!r} is not one of {', '.join(allowed)}"[:300],
                "UNKNOWN_FIELD",
            )
    return [p for p in dict.fromkeys(paths) if p in allowed]


def require_fields(values: Mapping[str, Any]) -> None:
    if not values:
        raise InvalidArgument(
            "nothing to update: set update_mask or at least one updatable field",
            reason="EMPTY_UPDATE",
            field_violations=[FieldViolation("update_mask", "selects no field")],
        )
