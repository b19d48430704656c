"""The booking rules, in one place: what CheckConflicts reports, what
GetAvailability offers, and what CreateAppointment / RescheduleAppointment
enforce (availability.proto's service comment is their contract).

This module is the interface between the availability side (GetAvailability,
CheckConflicts) and the write side (appointments). It holds no protobuf;
SQL lives in :mod:`server.queries.calendar`, the wall-clock arithmetic in
:mod:`server.scheduling`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

import asyncpg

from server import scheduling
from server.db.engine import Conn
from server.errors import NotFound
from server.queries import calendar as q

__all__ = [
    "Conflict",
    "Evaluation",
    "Policy",
    "ProviderCalendar",
    "Reason",
    "calendars_from_rows",
    "date_window",
    "evaluate_booking",
    "find_conflicts",
    "policy_of",
]


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


# The instants a booking, a conflict check or an availability range may name
# ([EARLIEST, LATEST)): real dates, with room for the days of arithmetic around
# them (a 62-day range, a day's appointment and its buffers, the calendar's
# extra days), never the driver's infinity (datetime.min / max).
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)

# The booking policy's ranges (organizations, services and requests alike;
# the database checks the same in ck_*_booking_policy_range).
POLICY_RANGES = {"min_notice_minutes": (0, 525_600), "booking_horizon_days": (1, 730)}


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
    client_id: str | None = None,
) -> Evaluation:
    """Evaluate an appointment of ``service_id`` with ``provider_id`` at
    ``start`` against every rule, on ``conn`` (inside the caller's transaction
    for writes). Raises NotFound (PROVIDER_NOT_FOUND, SERVICE_NOT_FOUND,
    APPOINTMENT_NOT_FOUND for ``exclude_appointment_id``) for ids that do not
    exist in the tenant, and CLIENT_NOT_FOUND for ``client_id`` when given.
    ``lock_provider`` (writes) first takes the provider's row FOR NO KEY
    UPDATE, in a statement of its own, as schedule and offering writes do: a
    booking waits for such a write and then reads what it committed, whole,
    and bookings of one provider take turns (no exclusion-constraint
    deadlocks between them); bookings of other providers never wait.

    Two statements (three with the lock): the header (provider, service,
    policy, offering, client), then the provider's calendar around ``start``."""
    if lock_provider and not await q.lock_provider(conn, org_id, provider_id):
        raise NotFound.of("provider", provider_id)
    head = await q.booking_header(
        conn, org_id, provider_id, service_id, exclude_appointment_id, client_id
    )
    if not head["provider_found"]:
        raise NotFound.of("provider", provider_id)
    if not head["client_found"]:
        assert client_id is not None
        raise NotFound.of("client", client_id)
    if not head["service_found"]:
        raise NotFound.of("service", service_id)
    if not head["excluded_found"]:
        assert exclude_appointment_id is not None
        raise NotFound.of("appointment", exclude_appointment_id)
    duration = timedelta(minutes=head["duration_minutes"])
    before = timedelta(minutes=head["buffer_before_minutes"])
    after = timedelta(minutes=head["buffer_after_minutes"])
    start = start.astimezone(UTC)
    end = start + duration
    occupied = (start - before, end + after)
    window = date_window(start, end)
    rows = await q.calendar_rows(
        conn, org_id, [provider_id], *window, occupied[0], occupied[1], exclude_appointment_id
    )
    zones = {provider_id: ZoneInfo(head["time_zone"])}
    cal = calendars_from_rows(rows, zones, window)[provider_id]
    notice, horizon = policy_of(policy, head)
    conflicts = find_conflicts(
        cal,
        start=start,
        end=end,
        occupied=occupied,
        earliest=now + notice,
        latest=now + horizon,
    )
    if not head["provider_active"]:
        conflicts.append(Conflict(Reason.PROVIDER_INACTIVE))
    if not head["offered"]:
        conflicts.append(Conflict(Reason.SERVICE_NOT_OFFERED))
    if not head["service_active"]:
        conflicts.append(Conflict(Reason.SERVICE_INACTIVE))
    return Evaluation(
        provider_id=provider_id,
        service_id=service_id,
        start=start,
        end=end,
        occupied_start=occupied[0],
        occupied_end=occupied[1],
        duration_minutes=head["duration_minutes"],
        buffer_before_minutes=head["buffer_before_minutes"],
        buffer_after_minutes=head["buffer_after_minutes"],
        price_minor=head["price_minor"],
        currency=head["currency"],
        conflicts=tuple(sorted(conflicts, key=_conflict_order)),
    )


# -- shared with GetAvailability ------------------------------------------------------

_REASON_ORDER = {reason: i for i, reason in enumerate(Reason)}
_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)


def _conflict_order(c: Conflict) -> tuple[int, datetime]:
    return (_REASON_ORDER[c.reason], c.start or _MIN)


def policy_of(policy: Policy, head: asyncpg.Record) -> tuple[timedelta, timedelta]:
    """(minimum notice, horizon): the request's, else the service's, else the
    organization's (the header's COALESCE)."""
    notice = policy.min_notice_minutes
    horizon = policy.booking_horizon_days
    return (
        timedelta(minutes=head["min_notice_minutes"] if notice is None else notice),
        timedelta(days=head["booking_horizon_days"] if horizon is None else horizon),
    )


def date_window(first: datetime, last: datetime) -> tuple[date, date]:
    """Business dates to load for instants [first, last] in any zone: a
    business date is within a day of the UTC date, plus a day each side for
    the stretches that cross midnight."""
    return (first.date() - timedelta(days=2), last.date() + timedelta(days=2))


@dataclass(frozen=True, slots=True)
class Busy:
    """A time off (``appointment`` False) or a blocking appointment: its id,
    its own [start, end) (None = unbounded) and the interval it occupies."""

    id: str
    appointment: bool
    start: datetime | None
    end: datetime | None
    occupied_start: datetime
    occupied_end: datetime


@dataclass(frozen=True, slots=True)
class ProviderCalendar:
    """One provider's rows of the calendar statement, ready for the rules."""

    calendar: scheduling.Calendar
    first_date: date
    last_date: date
    busy: list[Busy] = field(default_factory=list)

    def work(self) -> list[scheduling.Interval]:
        return scheduling.stretches(self.calendar, self.first_date, self.last_date)

    def merged_busy(self) -> list[scheduling.Interval]:
        return scheduling.merge((b.occupied_start, b.occupied_end) for b in self.busy)


def calendars_from_rows(
    rows: Iterable[asyncpg.Record],
    zones: dict[str, ZoneInfo],
    window: tuple[date, date],
) -> dict[str, ProviderCalendar]:
    """Group calendar rows (server.queries.calendar.CALENDAR_SQL) by provider;
    every provider of ``zones`` gets an entry, rows or not."""
    weekly: dict[str, list[scheduling.WeeklyRule]] = {p: [] for p in zones}
    overrides: dict[str, dict[date, list[tuple[int, int]]]] = {p: {} for p in zones}
    busy: dict[str, list[Busy]] = {p: [] for p in zones}
    first, last = window
    for r in rows:
        provider = str(r["provider_id"])
        kind = r["kind"]
        if kind == "w":
            weekly[provider].append(
                scheduling.WeeklyRule(
                    r["weekday"], r["start_minute"], r["end_minute"], r["d1"], r["d2"]
                )
            )
        elif kind == "o":
            hours = overrides[provider].setdefault(r["d1"], [])
            if not r["closed"]:
                hours.append((r["start_minute"], r["end_minute"]))
        elif kind == "t":
            busy[provider].append(
                Busy(str(r["id"]), False, r["t1"], r["t2"], r["t1"] or _MIN, r["t2"] or _MAX)
            )
        else:
            busy[provider].append(Busy(str(r["id"]), True, r["t1"], r["t2"], r["t3"], r["t4"]))
    return {
        p: ProviderCalendar(
            scheduling.Calendar(zone, weekly[p], overrides[p]), first, last, busy[p]
        )
        for p, zone in zones.items()
    }


def _overlaps(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> bool:
    return a0 < b1 and b0 < a1


def find_conflicts(
    cal: ProviderCalendar,
    *,
    start: datetime,
    end: datetime,
    occupied: tuple[datetime, datetime],
    earliest: datetime,
    latest: datetime,
) -> list[Conflict]:
    """The time-related conflicts of [start, end) occupying ``occupied``
    (unordered): OVERLAP / BUFFER per appointment, TIME_OFF, OUTSIDE_HOURS,
    MIN_NOTICE, BEYOND_HORIZON."""
    out: list[Conflict] = []
    for b in cal.busy:
        if not _overlaps(b.occupied_start, b.occupied_end, occupied[0], occupied[1]):
            continue
        if not b.appointment:
            out.append(Conflict(Reason.TIME_OFF, time_off_id=b.id, start=b.start, end=b.end))
            continue
        assert b.start is not None and b.end is not None
        reason = Reason.OVERLAP if _overlaps(b.start, b.end, start, end) else Reason.BUFFER
        out.append(Conflict(reason, appointment_id=b.id, start=b.start, end=b.end))
    outside = scheduling.first_outside(cal.work(), start, end)
    if outside is not None:
        out.append(Conflict(Reason.OUTSIDE_HOURS, start=outside[0], end=outside[1]))
    if start < earliest:
        out.append(Conflict(Reason.MIN_NOTICE, start=earliest))
    if start > latest:
        out.append(Conflict(Reason.BEYOND_HORIZON, start=latest))
    return out
