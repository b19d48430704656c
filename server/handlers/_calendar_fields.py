"""Calendar fields of requests: ``google.type.Date``, ``google.type.TimeOfDay``
and ``booking.v1.TimeInterval``, validated into plain values (a violation per
bad field, reported with the request's others), and back into messages.

- A Date with every part 0 is unset (``None``, no violation unless required);
  otherwise it must be a real calendar date of the years 1900-9999.
- A TimeOfDay is whole minutes of a day (seconds and nanos 0): a start is
  00:00-23:59, an end 00:01-24:00 (24:00 = the end of the day, only as an end)
  and after its start. Minutes are 0-1440, as stored.
"""

from __future__ import annotations

from datetime import date

from google.type import date_pb2, timeofday_pb2

from server.validation import Violations

__all__ = [
    "MAX_YEAR",
    "MIN_YEAR",
    "date_of",
    "date_range_of",
    "fill_date",
    "fill_time",
    "interval_of",
    "minute_of",
]

MIN_YEAR = 1900
MAX_YEAR = 9999
MINUTES_PER_DAY = 1440


def date_of(
    msg: date_pb2.Date, field: str, v: Violations, *, required: bool = False
) -> date | None:
    """The date ``msg`` names (None when unset or invalid; invalid = a violation on ``field``)."""
    if msg.year == 0 and msg.month == 0 and msg.day == 0:
        if required:
            v.add(field, "is required", "REQUIRED")
        return None
    if not MIN_YEAR <= msg.year <= MAX_YEAR:
        v.add(field, f"year must be between {MIN_YEAR} and {MAX_YEAR}", "OUT_OF_RANGE")
        return None
    try:
        return date(msg.year, msg.month, msg.day)
    except ValueError:
        v.add(
            field, "is not a calendar date (year, month 1-12, day of that month)", "INVALID_FORMAT"
        )
        return None


def date_range_of(
    start: date_pb2.Date,
    end: date_pb2.Date,
    v: Violations,
    *,
    max_days: int,
    start_field: str = "start_date",
    end_field: str = "end_date",
) -> tuple[date, date] | None:
    """A required inclusive range of business dates, at most ``max_days`` dates long."""
    first = date_of(start, start_field, v, required=True)
    last = date_of(end, end_field, v, required=True)
    if first is None or last is None:
        return None
    if last < first:
        v.add(end_field, f"must not be before {start_field}", "INVALID_RANGE")
        return None
    if (last - first).days + 1 > max_days:
        v.add(end_field, f"the range must be at most {max_days} days (inclusive)", "RANGE_TOO_LONG")
        return None
    return first, last


def minute_of(
    msg: timeofday_pb2.TimeOfDay, field: str, v: Violations, allow_24: bool = False
) -> int | None:
    """The minute of the day ``msg`` names: 0-1439, or 1440 for 24:00 when
    ``allow_24`` (an end). None and a violation on ``field`` otherwise."""
    if msg.seconds != 0 or msg.nanos != 0:
        v.add(field, "must be whole minutes (seconds and nanos 0)", "INVALID_FORMAT")
        return None
    if allow_24 and msg.hours == 24 and msg.minutes == 0:
        return MINUTES_PER_DAY
    if not (0 <= msg.hours <= 23 and 0 <= msg.minutes <= 59):
        limit = "24:00" if allow_24 else "23:59"
        v.add(field, f"must be a time of day between 00:00 and {limit}", "OUT_OF_RANGE")
        return None
    return int(msg.hours * 60 + msg.minutes)


def interval_of(
    start: timeofday_pb2.TimeOfDay, end: timeofday_pb2.TimeOfDay, prefix: str, v: Violations
) -> tuple[int, int] | None:
    """A TimeInterval's [start, end) minutes; fields ``{prefix}start_time`` and
    ``{prefix}end_time`` (``prefix`` ends with a dot, or is empty)."""
    first = minute_of(start, f"{prefix}start_time", v)
    last = minute_of(end, f"{prefix}end_time", v, allow_24=True)
    if first is None or last is None:
        return None
    if last <= first:
        v.add(f"{prefix}end_time", "must be after start_time", "INVALID_RANGE")
        return None
    return first, last


def fill_date(target: date_pb2.Date, value: date) -> None:
    """Fill a message's Date field in place."""
    target.year, target.month, target.day = value.year, value.month, value.day


def fill_time(target: timeofday_pb2.TimeOfDay, minute: int) -> None:
    """Fill a message's TimeOfDay field in place from a minute of the day (1440 = 24:00)."""
    target.hours, target.minutes = divmod(minute, 60)
