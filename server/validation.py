"""Request validation: collect every field violation, then raise once."""

from __future__ import annotations

import re
from collections.abc import Container

from server.errors import FieldViolation, InvalidArgument
from server.ids import is_uuid

__all__ = ["MAX_REPORTED", "Violations"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


# The most field violations one error carries (see Violations.raise_if_any).
MAX_REPORTED = 25


class Violations:
    """Accumulates BadRequest field violations for one request."""

    __slots__ = ("items", "zones")

    def __init__(self, *, zones: Container[str] | None = None) -> None:
        self.items: list[FieldViolation] = []
        # The accepted time zone names (server.timezones), for time_zone().
        self.zones = zones

    def add(self, field: str, description: str, reason: str = "") -> None:
        violation = FieldViolation(field, description, reason)
        if violation not in self.items:
            self.items.append(violation)

    def raise_if_any(self, message: str = "the request has invalid fields") -> None:
        """One INVALID_ARGUMENT with the violations, the first MAX_REPORTED of
        them: the details travel in a trailer, and gRPC clients refuse
        metadata above 8 KiB (a request with 100 bad ids would otherwise get
        a transport error instead of its answer)."""
        if self.items:
            shown = self.items[:MAX_REPORTED]
            fields = ", ".join(v.field for v in shown)
            more = len(self.items) - len(shown)
            if more:
                fields += f" (and {more} more not listed)"
            raise InvalidArgument(f"{message}: {fields}", field_violations=shown)

    # -- checks ----------------------------------------------------------------

    def uuid(self, field: str, value: str, *, required: bool = True) -> None:
        if not value:
            if required:
                self.add(field, "is required", "REQUIRED")
        elif not is_uuid(value):
            self.add(field, "must be a UUID", "INVALID_FORMAT")

    def text(self, field: str, value: str, *, required: bool, max_len: int = 200) -> None:
        if not value.strip():
            if required:
                self.add(field, "is required", "REQUIRED")
            elif value:
                self.add(field, "must not be blank", "INVALID_FORMAT")
        elif len(value) > max_len:
            self.add(field, f"must be at most {max_len} characters", "TOO_LONG")

    def email(self, field: str, value: str) -> None:
        if value and (len(value) > 254 or not _EMAIL.fullmatch(value)):
            self.add(field, "must be an e-mail address", "INVALID_FORMAT")

    def phone(self, field: str, value: str) -> None:
        if value and not _PHONE.fullmatch(value):
            self.add(field, "must be an E.164 phone number, e.g. +4915112345678", "INVALID_FORMAT")

    def slug(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "is required", "REQUIRED")
        elif len(value) > 63 or not _SLUG.fullmatch(value):
            self.add(
                field,
                "must be 1-63 lower-case letters, digits and single dashes",
                "INVALID_FORMAT",
            )

    def time_zone(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "is required", "REQUIRED")
        else:
            if self.zones is None:
                raise RuntimeError("Violations(zones=...) is needed to check time zones")
            if value not in self.zones:
                self.add(
                    field,
                    "must be a canonical IANA time zone name, e.g. Europe/Berlin",
                    "UNKNOWN_TIME_ZONE",
                )

    def currency(self, field: str, value: str) -> None:
        if not _CURRENCY.fullmatch(value):
            self.add(field, "must be a 3-letter ISO 4217 code, e.g. EUR", "INVALID_FORMAT")

    def int_range(self, field: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.add(field, f"must be between {low} and {high}", "OUT_OF_RANGE")

    def request_id(self, field: str, value: str) -> None:
        if value and not _REQUEST_ID.fullmatch(value):
            self.add(
                field,
                "must be 1-100 characters of letters, digits and . _ : -",
                "INVALID_FORMAT",
            )
