"""Wall-clock and slot arithmetic of the booking rules (availability.proto's
service comment, resources.proto's WorkingHours for DST). Pure: no SQL, no
protobuf; instants are aware UTC datetimes.

A wall-clock time of a business date in a zone is read as RFC 5545 and
java.time do, which is Python's ``fold=0``: a time in a spring-forward gap is
read with the offset before the gap (it moves later by the gap's length), a
time that occurs twice means its first occurrence; 24:00 is 00:00 of the next
date. A date's intervals (its override's, else its weekly rules') so read are
merged with their neighbours (touching or overlapping, also across midnight)
into *stretches* of work. Slots of a stretch start at its start and every
step after it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "Calendar",
    "Interval",
    "SlotRules",
    "WeeklyRule",
    "day_intervals",
    "first_outside",
    "merge",
    "slot_starts",
    "stretches",
    "wall_instant",
]

MINUTES_PER_DAY = 1440
_ONE_DAY = timedelta(days=1)

# [start, end) instants.
Interval = tuple[datetime, datetime]


def wall_instant(zone: ZoneInfo, on: date, minute: int) -> datetime:
    """The instant (UTC) of wall-clock ``minute`` (0-1440) of business date
    ``on`` in ``zone``: 1440 is 00:00 of the next date; a nonexistent time
    moves later by the gap's length; an ambiguous one is its first occurrence."""
    if minute >= MINUTES_PER_DAY:
        on = on + _ONE_DAY
        minute -= MINUTES_PER_DAY
    hour, minute = divmod(minute, 60)
    local = datetime(on.year, on.month, on.day, hour, minute, tzinfo=zone)  # fold=0
    return local.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    """working_hours: ISO weekday, wall-clock minutes [start, end), valid dates
    (inclusive, None = open)."""

    weekday: int
    start_minute: int
    end_minute: int
    valid_from: date | None = None
    valid_to: date | None = None

    def applies(self, on: date) -> bool:
        return (
            on.isoweekday() == self.weekday
            and (self.valid_from is None or self.valid_from <= on)
            and (self.valid_to is None or on <= self.valid_to)
        )


@dataclass(frozen=True, slots=True)
class Calendar:
    """A provider's working hours: weekly rules and date overrides (a date
    present in ``overrides`` ignores the weekly rules; an empty sequence is a
    closed date)."""

    zone: ZoneInfo
    weekly: Sequence[WeeklyRule] = ()
    overrides: Mapping[date, Sequence[tuple[int, int]]] | None = None


def day_intervals(calendar: Calendar, on: date) -> list[tuple[int, int]]:
    """The wall-clock minute intervals of business date ``on``, sorted."""
    if calendar.overrides is not None and on in calendar.overrides:
        return sorted(calendar.overrides[on])
    return sorted((r.start_minute, r.end_minute) for r in calendar.weekly if r.applies(on))


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-touching intervals covering the same instants
    (empty ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def stretches(calendar: Calendar, first: date, last: date) -> list[Interval]:
    """The stretches of work of business dates ``first`` to ``last``
    (inclusive), merged. A stretch that runs on before ``first`` or after
    ``last`` is cut there: callers load a day more than they need on each side."""
    pieces: list[Interval] = []
    zone = calendar.zone
    on = first
    while on <= last:
        for start, end in day_intervals(calendar, on):
            pieces.append((wall_instant(zone, on, start), wall_instant(zone, on, end)))
        on += _ONE_DAY
    return merge(pieces)


def first_outside(work: Sequence[Interval], start: datetime, end: datetime) -> Interval | None:
    """The first part of [start, end) not within one stretch of ``work``
    (sorted, merged), or None when one stretch holds it all."""
    i = bisect.bisect_right(work, (start, datetime.max.replace(tzinfo=UTC))) - 1
    if i >= 0 and work[i][0] <= start < work[i][1]:
        if end <= work[i][1]:
            return None
        gap_start = work[i][1]
        i += 1
    else:
        gap_start = start
        i += 1
    gap_end = min(end, work[i][0]) if i < len(work) else end
    return (gap_start, gap_end)


@dataclass(frozen=True, slots=True)
class SlotRules:
    """What a slot must satisfy besides the working hours and the busy time."""

    duration: timedelta
    before: timedelta
    after: timedelta
    step: timedelta
    # Slot starts lie in [earliest, before_end) and are <= latest.
    earliest: datetime
    before_end: datetime
    latest: datetime


def slot_starts(
    work: Sequence[Interval],
    busy: Sequence[Interval],
    rules: SlotRules,
    limit: int | None = None,
) -> list[datetime]:
    """The bookable starts: on each stretch's grid (its start + k * step),
    [s, s + duration) within the stretch, [s - before, s + duration + after)
    overlapping nothing of ``busy`` (sorted and merged, see :func:`merge`),
    in the rules' bounds; the first ``limit`` of them when given. Linear in
    stretches + grid points + busy intervals, and stops at the limit."""
    out: list[datetime] = []
    dur, before, after, step = rules.duration, rules.before, rules.after, rules.step
    low = rules.earliest
    high = rules.before_end
    latest = rules.latest
    b = 0
    nbusy = len(busy)
    for stretch_start, stretch_end in work:
        if stretch_start >= high or stretch_start > latest:
            break
        s = stretch_start
        if s < low:
            k = -((stretch_start - low) // step)  # ceil((low - start) / step)
            s = stretch_start + k * step
        last_start = stretch_end - dur
        while s <= last_start and s < high and s <= latest:
            occ_start = s - before
            occ_end = s + dur + after
            while b < nbusy and busy[b][1] <= occ_start:
                b += 1
            if b < nbusy and busy[b][0] < occ_end:
                # Taken: jump to the first grid point whose occupied interval
                # starts at or after this busy interval's end.
                free_from = busy[b][1] + before
                k = -((s - free_from) // step)
                s += max(k, 1) * step
                continue
            out.append(s)
            if limit is not None and len(out) >= limit:
                return out
            s += step
    return out
