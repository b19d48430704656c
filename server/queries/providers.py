"""Providers (the people who are booked)."""

from __future__ import annotations

from server.db import schema
from server.queries._crud import Entity

__all__ = ["PROVIDER"]

PROVIDER = Entity.of(
    schema.providers, "provider", writable=("display_name", "email", "time_zone", "active")
)
