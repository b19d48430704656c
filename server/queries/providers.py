"""Providers (the people who are booked)."""

from __future__ import annotations

from server.queries._crud import Entity

__all__ = ["PROVIDER"]

PROVIDER = Entity(
    table="providers",
    resource_type="provider",
    columns=(
        "id",
        "organization_id",
        "display_name",
        "email",
        "time_zone",
        "active",
        "version",
        "created_at",
        "updated_at",
    ),
    writable=("display_name", "email", "time_zone", "active"),
)
