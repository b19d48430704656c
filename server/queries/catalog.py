"""Services (the catalogue of bookable services)."""

from __future__ import annotations

from server.db import schema
from server.queries._crud import Entity

__all__ = ["SERVICE"]

SERVICE = Entity.of(
    schema.services,
    "service",
    writable=(
        "name",
        "duration_minutes",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "active",
    ),
)
