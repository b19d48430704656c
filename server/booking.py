"""The booking rules, in one place: what CheckConflicts reports, what
GetAvailability offers, and what CreateAppointment / RescheduleAppointment
enforce (availability.proto's service comment is their contract).

This module is the interface between the availability side (GetAvailability,
CheckConflicts) and the write side (appointments). It holds no protobuf;
SQL lives in :mod:`server.queries.calendar`, the wall-clock arithmetic in
:mod:`server.scheduling`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from server.db.engine import Conn

__all__ = ["Conflict", "Evaluation", "Policy", "Reason", "evaluate_booking"]


class Reason(Enum):
    """booking.v1.ConflictReason without its prefix (the names match)."""

    OVERLAP = "OVERLAP"
    BUFFER = "BUFFER"
    TIME_OFF = "TIME_OFF"
    OUTSIDE_HOURS = "OUTSIDE_HOURS"
    MIN_NOTICE = "MIN_NOTICE"
    BEYOND_HORIZON = "BEYOND_HORIZON"
    PROVIDER_INACTIVE = "PROVIDER_INACTIVE"
    SERVICE_NOT_OFFERED = "SERVICE_NOT_OFFERED"
    SERVICE_INACTIVE = "SERVICE_INACTIVE"

    @property
    def taken(self) -> bool:
        """Another appointment holds the time (TIME_SLOT_TAKEN), as opposed to
        a rule refusing it (BOOKING_NOT_ALLOWED)."""
        return self in (Reason.OVERLAP, Reason.BUFFER)


@dataclass(frozen=True, slots=True)
class Conflict:
    """One reason a start cannot be booked (booking.v1.Conflict)."""

    reason: Reason
    appointment_id: str | None = None
    time_off_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A request's own booking policy; None = the service's, else the
    organization's."""

    min_notice_minutes: int | None = None
    booking_horizon_days: int | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A proposed appointment and everything that stands in its way."""

    provider_id: str
    service_id: str
    start: datetime
    end: datetime
    occupied_start: datetime
    occupied_end: datetime
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    # The offering's price, else the service's.
    price_minor: int
    currency: str
    # Ordered by reason (enum order), then start.
    conflicts: tuple[Conflict, ...] = field(default=())

    @property
    def bookable(self) -> bool:
        return not self.conflicts


async def evaluate_booking(
    conn: Conn,
    *,
    org_id: str,
    provider_id: str,
    service_id: str,
    start: datetime,
    now: datetime,
    policy: Policy = Policy(),
    exclude_appointment_id: str | None = None,
    lock_provider: bool = False,
) -> Evaluation:
    """Evaluate an appointment of ``service_id`` with ``provider_id`` at
    ``start`` against every rule, on ``conn`` (inside the caller's transaction
    for writes). Raises NotFound (PROVIDER_NOT_FOUND, SERVICE_NOT_FOUND,
    APPOINTMENT_NOT_FOUND for ``exclude_appointment_id``) for ids that do not
    exist in the tenant. ``lock_provider`` (writes) takes the provider's row
    with FOR SHARE: schedule writes take it FOR NO KEY UPDATE, so a booking
    sees a schedule change whole or not at all, and bookings do not wait for
    each other."""
    raise NotImplementedError  # implemented with the availability core
