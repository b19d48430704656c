"""GetAvailability and CheckConflicts against a brute-force oracle.

Random calendars (seeded; BOOKING_ORACLE_SEED to replay, BOOKING_ORACLE_CASES
for more) in New York, London, Lord Howe Island (30-minute DST) and Kolkata
(no DST), around the next DST changes of each zone (the test's "now" moves on:
the 2026 changes are behind us by the time this runs, so the horizon is set
to 730 days and the next changes are used): weekly rules with several
intervals a day and validity dates, overrides (closed and other hours), time
off, appointments with buffers in every status, random duration, buffers,
step and minimum notice.

The oracle knows nothing of server.scheduling: it reads the zone minute by
minute. The instant of wall time t on date d is the earliest UTC minute
whose reading is (d, t); when no minute reads so (a gap), it is the last
minute before the readings pass t plus what is left of t (the offset before
the gap). A UTC minute is working when some interval of some business date
so read holds it; stretches are the maximal runs of working minutes; a slot
starts at a stretch's start + k * step, lies within the stretch, its occupied
minutes hold no time off and no blocking appointment's occupied minute, and
it obeys the range and the policy.

The server loads the business dates from two days before start_time's UTC
date to two days after (end_time + duration)'s, and a stretch running into
that window is cut at its start (server.booking.date_window); the generator
never fills a whole day, so a stretch running into the window's first date
ends within that date, before any slot, and the oracle reads the same dates
anyway.
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from booking.v1 import availability_pb2
from google.protobuf import timestamp_pb2

from tests.conftest import Stubs
from tests.test_availability import (
    Setup,
    add_appointment,
    add_hours,
    add_override,
    add_time_off,
    make_provider,
    make_setup,
)

ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata")
SEED = int(os.environ.get("BOOKING_ORACLE_SEED", "20261125"))
CASES_PER_ZONE = int(os.environ.get("BOOKING_ORACLE_CASES", "12"))
MINUTE = timedelta(minutes=1)
HORIZON_DAYS = 730
R = availability_pb2.ConflictReason
OVERLAP, BUFFER, TIME_OFF = (
    R.CONFLICT_REASON_OVERLAP,
    R.CONFLICT_REASON_BUFFER,
    R.CONFLICT_REASON_TIME_OFF,
)
OUTSIDE_HOURS, MIN_NOTICE = R.CONFLICT_REASON_OUTSIDE_HOURS, R.CONFLICT_REASON_MIN_NOTICE
BEYOND_HORIZON = R.CONFLICT_REASON_BEYOND_HORIZON
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def reading(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def next_changes(zone: ZoneInfo, after: date, count: int) -> list[date]:
    """Local dates on which the zone's offset changes, by reading noons."""
    out: list[date] = []
    d = after
    while len(out) < count and d < after + timedelta(days=400):
        a = datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
        b = a + timedelta(days=1)
        if reading(zone, a) - a.replace(tzinfo=None) != reading(zone, b) - b.replace(tzinfo=None):
            out.append(reading(zone, b).date())
        d += timedelta(days=1)
    return out


# -- the random calendar ----------------------------------------------------------------------


@dataclass
class Scenario:
    zone: ZoneInfo
    weekly: list[tuple[int, int, int, date | None, date | None]] = field(default_factory=list)
    overrides: dict[date, list[tuple[int, int]]] = field(default_factory=dict)
    time_off: list[tuple[datetime, datetime]] = field(default_factory=list)
    # (start, end, before, after, status)
    appointments: list[tuple[datetime, datetime, int, int, str]] = field(default_factory=list)
    # The stored rows' ids, in the order of time_off and appointments.
    time_off_ids: list[str] = field(default_factory=list)
    appointment_ids: list[str] = field(default_factory=list)
    duration: int = 30
    before: int = 0
    after: int = 0
    step: int = 0
    notice: int = 0
    start: datetime = _EPOCH
    end: datetime = _EPOCH
    view_zone: str = ""


def day_intervals(rng: random.Random) -> list[tuple[int, int]]:
    """0-3 sorted, disjoint intervals of a day on a 15-minute grid, mostly in
    the small hours (where the changes are: their ends fall in gaps and
    repeated hours), never the whole day."""
    count = rng.choice((0, 1, 1, 2, 2, 3))
    if rng.random() < 0.3:
        points = sorted(rng.sample(range(0, 97), count * 2))  # anywhere
    else:
        points = sorted(rng.sample(range(0, 21), count * 2))  # 00:00-05:00
    out = [(points[i] * 15, points[i + 1] * 15) for i in range(0, len(points), 2)]
    if rng.random() < 0.2 and out and out[0][0] > 0:
        out[0] = (0, out[0][1])  # joins the day before when it ends at 24:00
    if rng.random() < 0.2 and out and out[-1][1] < 1440 and out[-1][0] >= 60:
        out[-1] = (out[-1][0], 1440)
    if rng.random() < 0.4 and out and out[0][1] - out[0][0] >= 30:
        a, b = out[0]
        middle = a + 15 * rng.randrange(1, (b - a) // 15)
        out[0:1] = [(a, middle), (middle, b)]  # touching: one stretch
    if out and out[0][0] == 0 and out[-1][1] == 1440 and sum(b - a for a, b in out) == 1440:
        out[-1] = (out[-1][0], 1425)  # a whole day would chain stretches for days
        out = [(a, b) for a, b in out if a < b]
    return out


def make_scenario(rng: random.Random, zone_name: str, around: date, today: date) -> Scenario:
    zone = ZoneInfo(zone_name)
    sc = Scenario(zone)
    for weekday in range(1, 8):
        for a, b in day_intervals(rng):
            valid_from = around + timedelta(days=rng.randint(-3, 1)) if rng.random() < 0.2 else None
            valid_to = around + timedelta(days=rng.randint(0, 3)) if rng.random() < 0.2 else None
            if valid_from and valid_to and valid_to < valid_from:
                valid_from, valid_to = valid_to, valid_from
            sc.weekly.append((weekday, a, b, valid_from, valid_to))
    for _ in range(rng.randint(0, 2)):
        on = around + timedelta(days=rng.randint(-2, 2))
        sc.overrides[on] = [] if rng.random() < 0.4 else day_intervals(rng)
    midnight = datetime(around.year, around.month, around.day, tzinfo=zone).astimezone(UTC)
    for _ in range(rng.randint(0, 3)):
        off = midnight + timedelta(minutes=rng.randrange(-2 * 1440, 3 * 1440, 5))
        sc.time_off.append((off, off + timedelta(minutes=rng.randrange(5, 600, 5))))
    cursor = midnight - timedelta(days=2)
    for _ in range(rng.randint(0, 6)):
        before, after = rng.choice((0, 0, 5, 15)), rng.choice((0, 0, 10, 30))
        start = cursor + timedelta(minutes=before + rng.randrange(0, 1200, 5))
        end = start + timedelta(minutes=rng.randrange(15, 180, 5))
        status = rng.choice(("pending", "confirmed", "completed", "cancelled", "no_show"))
        sc.appointments.append((start, end, before, after, status))
        if status in ("pending", "confirmed", "completed"):
            cursor = end + timedelta(minutes=after)
    sc.duration = rng.choice((15, 15, 20, 30, 45, 60, 25))
    sc.before = rng.choice((0, 0, 5, 15))
    sc.after = rng.choice((0, 0, 10, 20))
    sc.step = rng.choice((0, 5, 10, 15, 20, 45))
    sc.start = midnight + timedelta(minutes=rng.randrange(-2 * 1440, 0, 1))
    sc.end = midnight + timedelta(minutes=rng.randrange(1, 3 * 1440, 1))
    now_days = (around - today).days
    # The minimum notice lands before the range or inside it.
    sc.notice = rng.choice((0, 0, 0, max(0, (now_days - 1) * 1440 + rng.randrange(0, 1440 * 2))))
    sc.view_zone = rng.choice(("", "", "UTC", "Australia/Lord_Howe", zone_name))
    return sc


async def store(stubs: Stubs, db: asyncpg.Connection, org: str, sc: Scenario) -> Setup:
    s = await make_setup(
        stubs, org, zone=sc.zone.key, duration=sc.duration, before=sc.before, after=sc.after
    )
    await add_hours(stubs, org, s.provider_id, sc.weekly)
    for on, intervals in sc.overrides.items():
        await add_override(stubs, org, s.provider_id, on, intervals)
    sc.time_off_ids = [await add_time_off(stubs, org, s.provider_id, a, b) for a, b in sc.time_off]
    sc.appointment_ids = [
        await add_appointment(db, s, a, b, before=before, after=after, status=status)
        for a, b, before, after, status in sc.appointments
    ]
    return s


# -- the oracle -----------------------------------------------------------------------------


class Oracle:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        dur = timedelta(minutes=sc.duration)
        # The business dates the server reads (see the module docstring).
        self.first_date = sc.start.date() - timedelta(days=2)
        self.last_date = (sc.end + dur).date() + timedelta(days=2)
        self.t0 = datetime(
            self.first_date.year, self.first_date.month, self.first_date.day, tzinfo=UTC
        ) - timedelta(days=1)
        t1 = datetime(
            self.last_date.year, self.last_date.month, self.last_date.day, tzinfo=UTC
        ) + timedelta(days=2)
        self.n = int((t1 - self.t0) / MINUTE)
        self.readings = [reading(sc.zone, self.t0 + i * MINUTE) for i in range(self.n)]
        self.first_reading: dict[datetime, int] = {}
        for i, r in enumerate(self.readings):
            self.first_reading.setdefault(r, i)
        working = bytearray(self.n)
        d = self.first_date
        while d <= self.last_date:
            for a, b in self.intervals(d):
                for i in range(self.instant(d, a), self.instant(d, b)):
                    working[i] = 1
            d += timedelta(days=1)
        self.stretches: list[tuple[int, int]] = []
        i = 0
        while i < self.n:
            if working[i]:
                j = i
                while j < self.n and working[j]:
                    j += 1
                self.stretches.append((i, j))
                i = j
            else:
                i += 1
        busy = bytearray(self.n)
        for off_start, off_end in sc.time_off:
            self._mark(busy, off_start, off_end)
        for start, end, before, after, status in sc.appointments:
            if status in ("pending", "confirmed", "completed"):
                self._mark(busy, start - timedelta(minutes=before), end + timedelta(minutes=after))
        self.busy_prefix = [0]
        for x in busy:
            self.busy_prefix.append(self.busy_prefix[-1] + x)

    def _mark(self, flags: bytearray, a: datetime, b: datetime) -> None:
        for i in range(max(0, self.index(a)), min(self.n, self.index(b))):
            flags[i] = 1

    def index(self, t: datetime) -> int:
        return int((t - self.t0) / MINUTE)

    def at(self, i: int) -> datetime:
        return self.t0 + i * MINUTE

    def intervals(self, d: date) -> list[tuple[int, int]]:
        if d in self.sc.overrides:
            return self.sc.overrides[d]
        return [
            (a, b)
            for weekday, a, b, vf, vt in self.sc.weekly
            if weekday == d.isoweekday() and (vf is None or vf <= d) and (vt is None or d <= vt)
        ]

    def instant(self, d: date, minute: int) -> int:
        wall = datetime(d.year, d.month, d.day) + timedelta(minutes=minute)
        found = self.first_reading.get(wall)
        if found is not None:
            return found
        j = next(i for i, r in enumerate(self.readings) if r > wall)
        return j - 1 + int((wall - self.readings[j - 1]) / MINUTE)

    def free(self, occ_start: int, occ_end: int) -> bool:
        lo, hi = max(0, occ_start), min(self.n, occ_end)
        return self.busy_prefix[hi] - self.busy_prefix[lo] == 0

    def slots(self, now: datetime) -> list[datetime]:
        sc = self.sc
        step = sc.step or sc.duration
        earliest = max(sc.start, now + timedelta(minutes=sc.notice))
        latest = now + timedelta(days=HORIZON_DAYS)
        out = []
        for a, b in self.stretches:
            s = a
            while s + sc.duration <= b:
                t = self.at(s)
                if (
                    earliest <= t < sc.end
                    and t <= latest
                    and self.free(s - sc.before, s + sc.duration + sc.after)
                ):
                    out.append(t)
                s += step
        return out

    def inside(self, t: datetime) -> bool:
        """The appointment starting at t lies within one stretch."""
        s = self.index(t)
        k = bisect.bisect_right(self.stretches, (s, self.n + 1)) - 1
        return k >= 0 and self.stretches[k][0] <= s and s + self.sc.duration <= self.stretches[k][1]

    def conflicts(self, t: datetime, now: datetime) -> set[tuple[int, str]]:
        """Every (reason, appointment or time off id) of a start, computed from
        the scenario's own intervals (not the minute flags above)."""
        sc = self.sc
        end = t + timedelta(minutes=sc.duration)
        occ = (t - timedelta(minutes=sc.before), end + timedelta(minutes=sc.after))
        out: set[tuple[int, str]] = set()
        for (a, b, before, after, status), aid in zip(
            sc.appointments, sc.appointment_ids, strict=True
        ):
            if status not in ("pending", "confirmed", "completed"):
                continue
            if a < end and t < b:
                out.add((OVERLAP, aid))
            elif a - timedelta(minutes=before) < occ[1] and occ[0] < b + timedelta(minutes=after):
                out.add((BUFFER, aid))
        for (a, b), tid in zip(sc.time_off, sc.time_off_ids, strict=True):
            if a < occ[1] and occ[0] < b:
                out.add((TIME_OFF, tid))
        if not self.inside(t):
            out.add((OUTSIDE_HOURS, ""))
        if t < now + timedelta(minutes=sc.notice):
            out.add((MIN_NOTICE, ""))
        if t > now + timedelta(days=HORIZON_DAYS):
            out.add((BEYOND_HORIZON, ""))
        return out


def as_dt(t: timestamp_pb2.Timestamp) -> datetime:
    return t.ToDatetime(tzinfo=UTC)


async def check_conflicts(
    stubs: Stubs, org: str, provider_id: str, service_id: str, t: datetime, notice: int = 0
) -> availability_pb2.CheckConflictsResponse:
    """CheckConflicts of a start with the given notice and HORIZON_DAYS."""
    return await stubs.availability.CheckConflicts(
        availability_pb2.CheckConflictsRequest(
            organization_id=org,
            provider_id=provider_id,
            service_id=service_id,
            start_time=ts(t),
            min_notice_minutes=notice,
            booking_horizon_days=HORIZON_DAYS,
        )
    )


async def compare_conflicts(
    stubs: Stubs,
    org: str,
    s: Setup,
    oracle: Oracle,
    starts: list[datetime],
    rng: random.Random,
    context: object,
) -> list[set[tuple[int, str]]]:
    """CheckConflicts on the grid (the first offered starts), off it, and
    just around appointments' edges (where only buffers touch), compared on
    the full set of (reason, appointment or time off id) with the oracle's.
    Returns the sets seen."""
    sc = oracle.sc
    candidates = starts[:3] + [
        sc.start + timedelta(minutes=rng.randrange(0, int((sc.end - sc.start) / MINUTE)))
        for _ in range(6)
    ]
    for a, b, *_ in rng.sample(sc.appointments, min(2, len(sc.appointments))):
        candidates.append(b + timedelta(minutes=rng.randrange(0, 35)))
        candidates.append(a - timedelta(minutes=sc.duration + rng.randrange(0, 35)))
    seen = []
    for t in candidates:
        before = datetime.now(UTC)
        result = await check_conflicts(stubs, org, s.provider_id, s.service_id, t, sc.notice)
        after = datetime.now(UTC)
        got = {(int(c.reason), c.appointment_id or c.time_off_id) for c in result.conflicts}
        # The server's now lies between before and after.
        expected = (oracle.conflicts(t, before), oracle.conflicts(t, after))
        assert got in expected, (context, t, result, expected)
        assert result.bookable == (not got)
        assert as_dt(result.end_time) - t == timedelta(minutes=sc.duration), result
        ordered = [(c.reason, as_dt(c.start_time)) for c in result.conflicts]
        assert ordered == sorted(ordered), result
        seen.append(got)
    return seen


async def test_availability_matches_the_oracle(
    stubs: Stubs, db: asyncpg.Connection, org: str
) -> None:
    rng = random.Random(SEED)
    today = datetime.now(UTC).date()
    checked_slots = checked_starts = bookable = 0
    reasons_seen: set[int] = set()
    for zone_name in ZONES:
        zone = ZoneInfo(zone_name)
        changes = next_changes(zone, today + timedelta(days=4), 2) or [
            today + timedelta(days=rng.randint(5, 300)) for _ in range(2)
        ]
        for case in range(CASES_PER_ZONE):
            around = changes[case % len(changes)]
            sc = make_scenario(rng, zone_name, around, today)
            s = await store(stubs, db, org, sc)
            oracle = Oracle(sc)
            request = availability_pb2.GetAvailabilityRequest(
                organization_id=org,
                provider_ids=[s.provider_id],
                service_id=s.service_id,
                start_time=ts(sc.start),
                end_time=ts(sc.end),
                slot_step_minutes=sc.step,
                time_zone=sc.view_zone,
                min_notice_minutes=sc.notice,
                booking_horizon_days=HORIZON_DAYS,
            )
            before = datetime.now(UTC)
            got = await stubs.availability.GetAvailability(request)
            after = datetime.now(UTC)
            entry = got.providers[0]
            assert not entry.HasField("error")
            starts = [as_dt(slot.start_time) for slot in entry.slots]
            # A slot offered by the server's now lies between these two.
            wide, narrow = oracle.slots(before), oracle.slots(after)
            context = (SEED, zone_name, case, sc)
            assert set(narrow) <= set(starts) <= set(wide), context
            assert starts == sorted(starts)
            view = ZoneInfo(sc.view_zone) if sc.view_zone else zone
            assert entry.time_zone == view.key
            for slot, start in zip(entry.slots, starts, strict=True):
                local = reading(view, start)
                assert (slot.local_date.year, slot.local_date.month, slot.local_date.day) == (
                    local.year,
                    local.month,
                    local.day,
                )
                assert (slot.local_time.hours, slot.local_time.minutes) == (
                    local.hour,
                    local.minute,
                )
                assert slot.utc_offset_minutes == int((local - start.replace(tzinfo=None)) / MINUTE)
                assert as_dt(slot.end_time) - start == timedelta(minutes=sc.duration)
            checked_slots += len(starts)

            for got_conflicts in await compare_conflicts(
                stubs, org, s, oracle, starts, rng, context
            ):
                reasons_seen.update(r for r, _ in got_conflicts)
                checked_starts += 1
                bookable += not got_conflicts
    # The generator must exercise the comparison, not pass it vacuously.
    print(f"oracle: {checked_slots} slots, {checked_starts} starts, {bookable} bookable")
    assert checked_slots > 5 * CASES_PER_ZONE * len(ZONES)
    assert checked_starts >= 6 * CASES_PER_ZONE * len(ZONES)
    # Every reason the calendars can produce was compared at least once.
    assert reasons_seen >= {OVERLAP, BUFFER, TIME_OFF, OUTSIDE_HOURS}, reasons_seen


MULTI_CASES = int(os.environ.get("BOOKING_ORACLE_MULTI_CASES", "15"))


async def store_provider(
    stubs: Stubs,
    db: asyncpg.Connection,
    org: str,
    service: Setup,
    sc: Scenario,
    offering_duration: int | None,
) -> Setup:
    """Another provider of ``service``'s service, in sc's zone, with its own
    offering duration (None = the service's) and sc's calendar."""
    pid = await make_provider(
        stubs, org, service.service_id, zone=sc.zone.key, offering_duration=offering_duration
    )
    s = Setup(org, pid, service.service_id, service.client_id, sc.zone)
    await add_hours(stubs, org, pid, sc.weekly)
    for on, intervals in sc.overrides.items():
        await add_override(stubs, org, pid, on, intervals)
    sc.time_off_ids = [await add_time_off(stubs, org, pid, a, b) for a, b in sc.time_off]
    sc.appointment_ids = [
        await add_appointment(db, s, a, b, before=before, after=after, status=status)
        for a, b, before, after, status in sc.appointments
    ]
    return s


async def test_multi_provider_availability_and_first_available_match_the_oracle(
    stubs: Stubs, db: asyncpg.Connection, org: str
) -> None:
    """2-3 providers of one service in different zones with different
    offering durations, one request: each provider's slots against its own
    oracle, first_available against the oracles' merged slots (earliest
    first, ties by provider order), CheckConflicts per provider."""
    rng = random.Random(SEED + 1)
    today = datetime.now(UTC).date()
    checked_first = checked_starts = ties = 0
    for case in range(MULTI_CASES):
        zones = rng.sample(ZONES, rng.choice((2, 3)))
        changes = next_changes(ZoneInfo(zones[0]), today + timedelta(days=4), 2) or [
            today + timedelta(days=rng.randint(5, 300))
        ]
        around = changes[case % len(changes)]  # Kolkata has none: any day
        scenarios = [make_scenario(rng, z, around, today) for z in zones]
        common = scenarios[0]  # the service, the range, the step and the policy
        durations: list[int | None] = [None, *(rng.choice((15, 20, 40, 60)) for _ in zones[1:])]
        if case % 3 == 0:
            # The second provider works the first one's hours in its zone,
            # with nothing booked: slots at the same instants (ties).
            scenarios[1] = Scenario(
                common.zone, weekly=list(common.weekly), overrides=dict(common.overrides)
            )
            durations[1] = None
        base = await make_setup(
            stubs,
            org,
            zone=zones[0],
            duration=common.duration,
            before=common.before,
            after=common.after,
        )
        setups = [await store_provider(stubs, db, org, base, common, None)]
        for sc, dur in zip(scenarios[1:], durations[1:], strict=True):
            sc.before, sc.after, sc.step, sc.notice = (
                common.before,
                common.after,
                common.step,
                common.notice,
            )
            sc.start, sc.end, sc.duration = common.start, common.end, dur or common.duration
            setups.append(await store_provider(stubs, db, org, base, sc, dur))
        oracles = [Oracle(sc) for sc in scenarios]
        count = rng.choice((1, 5, 30, 1000))
        before = datetime.now(UTC)
        got = await stubs.availability.GetAvailability(
            availability_pb2.GetAvailabilityRequest(
                organization_id=org,
                provider_ids=[s.provider_id for s in setups],
                service_id=base.service_id,
                start_time=ts(common.start),
                end_time=ts(common.end),
                slot_step_minutes=common.step,
                min_notice_minutes=common.notice,
                booking_horizon_days=HORIZON_DAYS,
                first_available_count=count,
            )
        )
        after = datetime.now(UTC)
        context = (SEED, case, zones, durations, scenarios)
        assert [e.provider_id for e in got.providers] == [s.provider_id for s in setups]
        merged: list[tuple[datetime, int]] = []
        wide_merged: list[tuple[datetime, int]] = []
        narrow_merged: list[tuple[datetime, int]] = []
        for k, (entry, oracle, sc) in enumerate(
            zip(got.providers, oracles, scenarios, strict=True)
        ):
            assert not entry.HasField("error") and not entry.truncated, entry
            assert entry.time_zone == sc.zone.key
            starts = [as_dt(slot.start_time) for slot in entry.slots]
            wide, narrow = oracle.slots(before), oracle.slots(after)
            assert set(narrow) <= set(starts) <= set(wide), (context, k)
            assert starts == sorted(starts)
            for slot in entry.slots:
                assert slot.provider_id == entry.provider_id
                assert as_dt(slot.end_time) - as_dt(slot.start_time) == timedelta(
                    minutes=sc.duration
                ), (context, k)
            merged += [(t, k) for t in starts]
            wide_merged += [(t, k) for t in wide]
            narrow_merged += [(t, k) for t in narrow]
        first = [
            (as_dt(slot.start_time), [s.provider_id for s in setups].index(slot.provider_id))
            for slot in got.first_available
        ]
        # The first `count` of every provider's slots, earliest first, ties by
        # provider order: the server's own slots, and the oracles' when the
        # request's "now" does not matter.
        assert first == sorted(merged)[:count], context
        if sorted(wide_merged) == sorted(narrow_merged):
            assert first == sorted(wide_merged)[:count], context
        for slot, (t, k) in zip(got.first_available, first, strict=True):
            assert as_dt(slot.end_time) - t == timedelta(minutes=scenarios[k].duration)
        checked_first += len(first)
        ties += sum(a[0] == b[0] for a, b in itertools.pairwise(first))
        for k, (s, oracle) in enumerate(zip(setups, oracles, strict=True)):
            starts = [t for t, j in merged if j == k]
            checked_starts += len(
                await compare_conflicts(stubs, org, s, oracle, starts, rng, (context, k))
            )
    print(f"multi-provider oracle: {checked_first} first available ({ties} ties)")
    print(f"multi-provider oracle: {checked_starts} starts checked")
    assert checked_first > MULTI_CASES and ties > 0
