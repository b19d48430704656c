"""Services (the catalogue of bookable services)."""

from __future__ import annotations

from server.queries._crud import Entity

__all__ = ["SERVICE"]

SERVICE = Entity(
    table="services",
    resource_type="service",
    columns=(
        "id",
        "organization_id",
        "name",
        "duration_minutes",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "active",
        "version",
        "created_at",
        "updated_at",
    ),
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
