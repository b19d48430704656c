"""Deterministic dataset generators, loaded with COPY.

    python -m bench.generate --database-url URL --clients 1000000 [--seed 7]
    python -m bench.generate --database-url URL --booking [--providers 1000 --appointments 5000000]

generate() (bench.run): one organization ("bench") holding the big client
list, plus providers, services, appointments (non-overlapping per provider)
and payments, and a few small tenants. Ids are UUIDv7 so that index inserts
stay local.

generate_booking() (bench.booking): one organization ("bench-booking") whose
providers, in a few IANA zones, have weekly hours, holidays, date overrides
and time off, offer services with buffers, and hold appointments placed in
their working time by the booking rules (see its docstring); a test checks
them against the server's own rules (server.booking.evaluate_booking).

The clients' folded search keys are computed with the server's own
``server.text.fold`` (one rule: never a copy of it), and the COPY column lists
are module constants that a test checks against ``server.db.schema``. The
clients' secondary indexes are dropped for the load and built again from the
schema's own definitions afterwards (a GIN trigram index maintained row by
row makes COPY ~10x slower than building it once).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from asyncpg.types import Range
from sqlalchemy import Constraint, ForeignKeyConstraint, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.schema import AddConstraint, CreateIndex

from server.db import schema
from server.db.engine import to_asyncpg_dsn
from server.text import fold

GIVEN = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "John",
    "Mary",
    "Edsger",
    "Radia",
    "Tim",
    "Sophie",
    "Niklaus",
    "Hedy",
    "Donald",
]
FAMILY = [
    "Smith",
    "Jones",
    "Brown",
    "Müller",
    "Garcia",
    "Nguyen",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Silva",
    "Novak",
    "Larsen",
    "Okafor",
    "Haddad",
    "Ivanova",
]
BENCH_SLUG = "bench"

# What each COPY writes, by table (tests/test_bench_schema.py checks them
# against server.db.schema: real columns, none computed, every required one).
COPY_COLUMNS: dict[str, tuple[str, ...]] = {
    "providers": ("organization_id", "id", "display_name", "time_zone", "display_key"),
    "services": (
        "organization_id",
        "id",
        "name",
        "duration_minutes",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
        "name_key",
    ),
    "offerings": (
        "organization_id",
        "provider_id",
        "service_id",
        "duration_minutes",
        "price_minor",
        "currency",
    ),
    "working_hours": (
        "organization_id",
        "id",
        "provider_id",
        "weekday",
        "start_minute",
        "end_minute",
        "valid_from",
        "valid_to",
    ),
    "date_overrides": (
        "organization_id",
        "id",
        "provider_id",
        "on_date",
        "closed",
        "start_minute",
        "end_minute",
    ),
    "time_off": ("organization_id", "id", "provider_id", "during", "reason"),
    "clients": (
        "organization_id",
        "id",
        "given_name",
        "family_name",
        "email",
        "phone",
        "external_id",
        "active",
        "created_at",
        "updated_at",
        "given_key",
        "family_key",
        "email_key",
    ),
    "appointments": (
        "organization_id",
        "id",
        "provider_id",
        "client_id",
        "service_id",
        "during",
        "occupied",
        "status",
        "price_minor",
        "currency",
        "buffer_before_minutes",
        "buffer_after_minutes",
    ),
    "payments": (
        "organization_id",
        "id",
        "client_id",
        "appointment_id",
        "amount_minor",
        "currency",
        "status",
        "method",
    ),
}


async def _copy(conn: asyncpg.Connection, table: str, records: Sequence[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(table, records=records, columns=list(COPY_COLUMNS[table]))


def _secondary_indexes() -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the clients' indexes, from the schema."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return [
        (str(index.name), str(CreateIndex(index).compile(dialect=dialect)))
        for index in sorted(schema.clients.indexes, key=lambda i: str(i.name))
    ]


def _uuid7(ms: int, rng: random.Random) -> str:
    value = (
        (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    )
    return str(uuid.UUID(int=value))


async def _load_clients(
    conn: asyncpg.Connection,
    org: str,
    clients: int,
    base: datetime,
    rng: random.Random,
    batch: int = 100_000,
) -> list[str]:
    """COPY ``clients`` clients of ``org``, created over two years after
    ``base`` (ordered ids), the secondary indexes dropped for the load and built
    again from the schema; their ids in creation order."""
    base_ms = int(base.timestamp() * 1000)
    span_ms = 2 * 365 * 86_400_000
    client_ids: list[str] = []
    indexes = _secondary_indexes()
    for name, _ in indexes:
        await conn.execute(f"DROP INDEX IF EXISTS {name}")
    for first in range(0, clients, batch):
        records = []
        for i in range(first, min(clients, first + batch)):
            ms = base_ms + i * span_ms // max(clients, 1)
            cid = _uuid7(ms, rng)
            given, family = rng.choice(GIVEN), rng.choice(FAMILY)
            created = base + timedelta(milliseconds=ms - base_ms)
            email = f"{given}.{family}{i}@example.com".lower()
            records.append(
                (
                    org,
                    cid,
                    given,
                    family,
                    email,
                    f"+49151{i:08d}",
                    f"crm-{i}",
                    rng.random() > 0.1,
                    created,
                    created,
                    fold(given),
                    fold(family),
                    fold(email),
                )
            )
            client_ids.append(cid)
        await _copy(conn, "clients", records)
    for _, create in indexes:
        await conn.execute(create)
    return client_ids


async def generate(
    url: str,
    clients: int,
    seed: int = 7,
    batch: int = 100_000,
    *,
    slug: str = BENCH_SLUG,
    appointments_too: bool = True,
) -> str:
    """Load the dataset (unless the org ``slug`` already holds it); its org id.

    ``appointments_too=False`` loads the organizations and clients only (the
    test suite's search-plan fixture)."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        existing = await conn.fetchval("SELECT id FROM organizations WHERE slug = $1", slug)
        if existing is not None:
            n = await conn.fetchval(
                "SELECT count(*) FROM clients WHERE organization_id = $1", existing
            )
            if n == clients:
                print(f"dataset present: {n} clients in org {existing}")
                return str(existing)
            raise SystemExit(f"org {slug!r} exists with {n} clients; use a fresh database")
        start = time.perf_counter()
        base = datetime(2024, 1, 1, tzinfo=UTC)
        base_ms = int(base.timestamp() * 1000)
        org = _uuid7(base_ms, rng)
        await conn.execute(
            "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, $2, $3, $4)",
            org,
            "Bench",
            slug,
            "Europe/Berlin",
        )
        for i in range(5):  # small neighbours
            other = _uuid7(base_ms + i, rng)
            await conn.execute(
                "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1,$2,$3,$4)",
                other,
                f"Small {i}",
                f"{slug}-small-{i}",
                "UTC",
            )
        providers = [
            (org, _uuid7(base_ms + i, rng), f"Provider {i}", "Europe/Berlin", f"provider {i}")
            for i in range(50)
        ]
        await _copy(conn, "providers", providers)
        services = [
            (
                org,
                _uuid7(base_ms + i, rng),
                f"Service {i}",
                30 + 15 * (i % 4),
                2000 + 500 * i,
                "EUR",
                0,
                0,
                f"service {i}",
            )
            for i in range(20)
        ]
        await _copy(conn, "services", services)
        client_ids = (await _load_clients(conn, org, clients, base, rng, batch))[::10]
        t_clients = time.perf_counter() - start
        if not appointments_too:
            await conn.execute("ANALYZE organizations, clients")
            print(f"loaded {clients} clients in {t_clients:.1f}s")
            return org
        # Appointments: back to back per provider, a fraction of the clients.
        appointments, payments = [], []
        slot = timedelta(minutes=30)
        for n, client_id in enumerate(client_ids):
            provider = providers[n % len(providers)][1]
            service = services[n % len(services)]
            begin = base + slot * (n // len(providers))
            status = "completed" if n % 7 else "cancelled"
            aid = _uuid7(base_ms + n, rng)
            appointments.append(
                (
                    org,
                    aid,
                    provider,
                    client_id,
                    service[1],
                    Range(begin, begin + slot),
                    Range(begin, begin + slot),
                    status,
                    service[4],
                    "EUR",
                    0,
                    0,
                )
            )
            if status == "completed":
                payments.append(
                    (
                        org,
                        _uuid7(base_ms + n, rng),
                        client_id,
                        aid,
                        service[4],
                        "EUR",
                        "completed",
                        "card",
                    )
                )
        await _copy(conn, "appointments", appointments)
        await _copy(conn, "payments", payments)
        await conn.execute("ANALYZE")
        total = time.perf_counter() - start
        print(
            f"loaded {clients} clients in {t_clients:.1f}s "
            f"({clients / t_clients:,.0f} rows/s), {len(appointments)} appointments, "
            f"{len(payments)} payments; total {total:.1f}s"
        )
        return org
    finally:
        await conn.close()


# -- the booking dataset (bench/booking.py) ------------------------------------------

BOOKING_SLUG = "bench-booking"
# IANA zones of the providers, with their shares.
BOOKING_ZONES: tuple[tuple[str, float], ...] = (
    ("Europe/Berlin", 0.35),
    ("America/New_York", 0.25),
    ("America/Los_Angeles", 0.15),
    ("Asia/Tokyo", 0.15),
    ("Australia/Sydney", 0.10),
)
# (name, duration, buffer before, buffer after, price minor). Every provider
# offers the first one (AVAILABILITY_SERVICE: the benchmark's 30-minute
# service, with a 10-minute buffer after it), never with its own duration.
BOOKING_SERVICES: tuple[tuple[str, int, int, int, int], ...] = (
    ("Cut", 30, 0, 10, 3000),
    ("Beard trim", 15, 0, 5, 1500),
    ("Cut and beard", 45, 0, 10, 4000),
    ("Colour", 90, 10, 15, 9000),
    ("Consultation", 20, 0, 0, 0),
    ("Massage", 60, 5, 15, 7000),
    ("Long massage", 90, 5, 15, 9500),
    ("Check-up", 30, 5, 5, 5000),
    ("Treatment", 45, 10, 10, 6000),
    ("Session", 120, 0, 15, 12000),
    ("Express", 10, 0, 0, 1000),
    ("Follow-up", 30, 0, 0, 2500),
)
AVAILABILITY_SERVICE = BOOKING_SERVICES[0][0]
_H = 60
# Weekly hours: {ISO weekday: ((start minute, end minute), ...)}.
WEEK_TEMPLATES: tuple[dict[int, tuple[tuple[int, int], ...]], ...] = (
    # Mon-Fri with a lunch break, Saturday morning.
    {
        **{d: ((9 * _H, 12 * _H), (13 * _H, 18 * _H)) for d in range(1, 6)},
        6: ((10 * _H, 14 * _H),),
    },
    # Tuesday to Saturday, long days.
    {d: ((10 * _H, 19 * _H),) for d in range(2, 7)},
    # Mon-Fri early shift.
    {d: ((8 * _H, 16 * _H),) for d in range(1, 6)},
    # Late Mon/Wed/Fri (Monday as two rules that touch: one stretch), early
    # Tue/Thu, Saturday morning.
    {
        1: ((12 * _H, 16 * _H), (16 * _H, 20 * _H)),
        2: ((8 * _H, 14 * _H),),
        3: ((12 * _H, 20 * _H),),
        4: ((8 * _H, 14 * _H),),
        5: ((12 * _H, 20 * _H),),
        6: ((9 * _H, 13 * _H),),
    },
)
FUTURE_DAYS = 28  # booked up to four weeks ahead, fuller in the coming days
PAST_FILL = 0.8  # share of past working time that was booked
_PAST_STATUSES = (("completed", 0.86), ("cancelled", 0.94), ("no_show", 0.98), ("confirmed", 1.0))
_FUTURE_STATUSES = (("confirmed", 0.55), ("pending", 0.9), ("cancelled", 1.0))
_MINUTES = [timedelta(minutes=m) for m in range(1441)]


@dataclass(frozen=True, slots=True)
class BookingDataset:
    org: str
    # When it was generated (the organization's created_at): its
    # appointments before then are in the past.
    generated_at: datetime
    providers: int
    appointments: int


@dataclass(frozen=True, slots=True)
class _Offered:
    """A service as one provider offers it."""

    service_id: str
    duration: int
    before: int
    after: int
    price: int
    # The provider's own duration and price (the offering's), not the service's.
    own: bool = False


@dataclass
class _Provider:
    """One provider's hours, overrides and time off in wall-clock minutes of
    its zone, as the generator places appointments by them."""

    id: str
    zone: ZoneInfo
    week: dict[int, tuple[tuple[int, int], ...]]
    overrides: dict[date, tuple[tuple[int, int], ...]]  # () = closed
    days_off: set[date]
    off_from: dict[date, int]  # time off from this minute to the end of the day
    menu: list[_Offered]

    def stretches(self, day: date) -> list[tuple[int, int]]:
        """The day's working time, rules that touch merged, time off removed."""
        if day in self.days_off:
            return []
        merged: list[tuple[int, int]] = []
        for start, end in sorted(self.overrides.get(day, self.week.get(day.isoweekday(), ()))):
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        cut = self.off_from.get(day)
        if cut is not None:
            merged = [(s, min(e, cut)) for s, e in merged if s < cut]
        return merged

    def midnight(self, day: date) -> datetime:
        """The UTC instant of the day's wall-clock 00:00 at the day's noon
        offset: exact for working hours (these zones change offset at night)."""
        offset = self.zone.utcoffset(datetime(day.year, day.month, day.day, 12))
        assert offset is not None
        return datetime(day.year, day.month, day.day, tzinfo=UTC) - offset

    def instant(self, day: date, minute: int) -> datetime:
        """A wall-clock time of the day (DST-exact; 1440 = the next 00:00)."""
        moment = datetime(day.year, day.month, day.day, tzinfo=self.zone) + _MINUTES[minute]
        return moment.astimezone(UTC)


def load_rebuild(table: Table, kinds: tuple[type[Constraint], ...]) -> list[tuple[str, str, str]]:
    """(name, drop, add) of what a table's load is faster without: its
    constraints of ``kinds`` and its secondary indexes, added back from the
    schema's own definitions (which checks the rows)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    out = []
    for constraint in sorted(table.constraints, key=lambda c: str(c.name)):
        if isinstance(constraint, kinds):
            name = str(constraint.name)
            drop = f"ALTER TABLE {table.name} DROP CONSTRAINT IF EXISTS {name}"
            out.append((name, drop, str(AddConstraint(constraint).compile(dialect=dialect))))
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        name = str(index.name)
        create = str(CreateIndex(index).compile(dialect=dialect))
        out.append((name, f"DROP INDEX IF EXISTS {name}", create))
    return out


def _appointment_constraints() -> list[tuple[str, str, str]]:
    """The appointments' exclusion constraint, foreign keys and secondary indexes."""
    return load_rebuild(schema.appointments, (ForeignKeyConstraint, ExcludeConstraint))


def _status(table: tuple[tuple[str, float], ...], r: float) -> str:
    return next(status for status, upto in table if r < upto)


def _new_provider(
    rng: random.Random, pid: str, zone: str, today: date, services: list[_Offered]
) -> _Provider:
    overrides: dict[date, tuple[tuple[int, int], ...]] = {}
    for year in range(today.year - 5, today.year + 1):  # closed on holidays
        for month, day in ((1, 1), (12, 25), (12, 26)):
            overrides[date(year, month, day)] = ()
    days_off: set[date] = set()
    vacation = today - timedelta(days=5 * 365 - rng.randrange(180))
    while vacation < today:  # a week off about twice a year
        days_off.update(vacation + timedelta(days=i) for i in range(7))
        vacation += timedelta(days=160 + rng.randrange(40))
    r = rng.random()
    if r < 0.25:  # a closed day in the coming weeks
        overrides[today + timedelta(days=rng.randrange(3, 42))] = ()
    elif r < 0.4:  # a short day
        overrides[today + timedelta(days=rng.randrange(3, 42))] = ((10 * _H, 14 * _H),)
    off_from: dict[date, int] = {}
    r = rng.random()
    if r < 0.2:  # a few days off ahead
        begin = today + timedelta(days=rng.randrange(10, 40))
        days_off.update(begin + timedelta(days=i) for i in range(rng.randrange(3, 6)))
    elif r < 0.4:  # an afternoon off ahead
        off_from[today + timedelta(days=rng.randrange(1, FUTURE_DAYS))] = 13 * _H
    menu = [services[0]]
    for i in rng.sample(range(1, len(services)), rng.randrange(3, 6)):
        s = services[i]
        if rng.random() < 0.1:  # the provider's own duration and price
            s = _Offered(s.service_id, s.duration + 15, s.before, s.after, s.price * 6 // 5, True)
        menu.append(s)
    week = rng.choice(WEEK_TEMPLATES)
    return _Provider(pid, ZoneInfo(zone), week, overrides, days_off, off_from, menu)


def _schedule_rows(
    org: str, p: _Provider, today: date, rng: random.Random, ms: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The provider's working_hours, date_overrides and time_off rows."""
    hours = [
        (org, _uuid7(ms, rng), p.id, weekday, start, end, None, None)
        for weekday, rules in sorted(p.week.items())
        for start, end in rules
    ]
    overrides = [
        (org, _uuid7(ms, rng), p.id, day, not rules, *(rules[0] if rules else (None, None)))
        for day, rules in sorted(p.overrides.items())
    ]
    time_off: list[tuple[Any, ...]] = []
    days = sorted(p.days_off)
    while days:  # runs of consecutive days
        first = last = days.pop(0)
        while days and days[0] == last + timedelta(days=1):
            last = days.pop(0)
        during = Range(p.instant(first, 0), p.instant(last, 1440))
        time_off.append((org, _uuid7(ms, rng), p.id, during, "Holiday"))
    for day, minute in sorted(p.off_from.items()):
        during = Range(p.instant(day, minute), p.instant(day, 1440))
        time_off.append((org, _uuid7(ms, rng), p.id, during, "Afternoon off"))
    return hours, overrides, time_off


def _place(
    org: str,
    p: _Provider,
    day: date,
    fill: float,
    now: datetime,
    quota: int,
    clients: list[str],
    rng: random.Random,
    next_id: Callable[[], str],
    out: list[tuple[Any, ...]],
) -> int:
    """Appointments of one provider on one day, back to back in its working
    time with gaps (``fill`` = the booked share), occupied intervals apart;
    a cancelled or no-show one's time is often booked again. Appends at most
    ``quota`` rows to ``out``; how many it appended."""
    placed = 0
    midnight = p.midnight(day)
    menu = p.menu
    for start, end in p.stretches(day):
        cursor = start
        while cursor < end and placed < quota:
            if rng.random() > fill:
                cursor += 30
                continue
            s = menu[0] if rng.random() < 0.4 else rng.choice(menu)
            length = s.before + s.duration + s.after
            if cursor + length > end:
                break
            occupied = Range(midnight + _MINUTES[cursor], midnight + _MINUTES[cursor + length])
            begin = midnight + _MINUTES[cursor + s.before]
            during = Range(begin, begin + _MINUTES[s.duration])
            past = begin < now
            status = _status(_PAST_STATUSES if past else _FUTURE_STATUSES, rng.random())
            statuses = [status]
            if status in ("cancelled", "no_show") and rng.random() < 0.4 and placed + 1 < quota:
                statuses.append("completed" if past else "confirmed")  # booked again
            for st in statuses:
                out.append(
                    (
                        org,
                        next_id(),
                        p.id,
                        rng.choice(clients),
                        s.service_id,
                        during,
                        occupied,
                        st,
                        s.price,
                        "EUR",
                        s.before,
                        s.after,
                    )
                )
                placed += 1
            cursor += length
    return placed


async def generate_booking(
    url: str,
    providers: int = 1_000,
    appointments: int = 5_000_000,
    clients: int = 100_000,
    seed: int = 7,
    *,
    slug: str = BOOKING_SLUG,
    fast_load: bool | None = None,
    batch: int = 200_000,
    past_fill: float = PAST_FILL,
) -> BookingDataset:
    """Load the booking dataset (unless the org ``slug`` already holds it).

    ``providers`` in a few IANA zones with weekly hours, holidays, some date
    overrides and time off; the services of BOOKING_SERVICES (buffers), each
    provider offering the first and 3-5 others (some with its own duration
    and price); ``appointments`` spread evenly over the providers, placed in
    each one's working time (wall clock of its zone), occupied intervals
    never overlapping: the coming FUTURE_DAYS days first (confirmed, pending,
    cancelled), then back in time day by day (completed, cancelled, no_show)
    until each provider has its share. ``fast_load`` (default: 100,000
    appointments or more) drops the appointments' exclusion constraint,
    foreign keys and secondary indexes for the COPY and adds them back from
    the schema's definitions (which checks the data against them).
    ``past_fill``: the booked share of past working time (bench.lists packs
    its 5M appointments into ~2 years with 1.0)."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT id::text, created_at FROM organizations WHERE slug = $1", slug
        )
        if row is not None:
            got = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM providers WHERE organization_id = $1) AS p, "
                "(SELECT count(*) FROM appointments WHERE organization_id = $1) AS a",
                row["id"],
            )
            if (got["p"], got["a"]) == (providers, appointments):
                print(f"dataset present: {providers} providers, {appointments} appointments")
                return BookingDataset(row["id"], row["created_at"], providers, appointments)
            raise SystemExit(
                f"org {slug!r} holds {got['p']} providers and {got['a']} appointments; "
                "use a fresh database"
            )
        started = time.perf_counter()
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        now = datetime.now(UTC).replace(microsecond=0)
        ms = int(now.timestamp() * 1000)
        org = _uuid7(ms, rng)
        await conn.execute(
            "INSERT INTO organizations (id, name, slug, time_zone, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $5)",
            *(org, "Bench booking", slug, "Europe/Berlin", now),
        )
        services = [
            _Offered(_uuid7(ms, rng), duration, before, after, price)
            for _, duration, before, after, price in BOOKING_SERVICES
        ]
        await _copy(
            conn,
            "services",
            [
                (org, s.service_id, name, s.duration, s.price, "EUR", s.before, s.after, fold(name))
                for s, (name, *_) in zip(services, BOOKING_SERVICES, strict=True)
            ],
        )
        client_ids = await _load_clients(conn, org, clients, now - timedelta(days=730), rng)
        zones = [z for z, _ in BOOKING_ZONES]
        weights = [w for _, w in BOOKING_ZONES]
        today = now.date()
        people = [
            _new_provider(rng, _uuid7(ms, rng), rng.choices(zones, weights)[0], today, services)
            for _ in range(providers)
        ]
        await _copy(
            conn,
            "providers",
            [
                (org, p.id, f"Provider {i}", p.zone.key, f"provider {i}")
                for i, p in enumerate(people)
            ],
        )
        await _copy(
            conn,
            "offerings",
            [
                (org, p.id, s.service_id, *((s.duration, s.price, "EUR") if s.own else (None,) * 3))
                for p in people
                for s in p.menu
            ],
        )
        schedule: tuple[list[tuple[Any, ...]], ...] = ([], [], [])
        for p in people:
            for rows, more in zip(schedule, _schedule_rows(org, p, today, rng, ms), strict=True):
                rows.extend(more)
        for table, rows in zip(
            ("working_hours", "date_overrides", "time_off"), schedule, strict=True
        ):
            await _copy(conn, table, rows)
        t_setup = time.perf_counter() - started
        rebuild = (
            _appointment_constraints()
            if (fast_load is None and appointments >= 100_000) or fast_load
            else []
        )
        for _, drop, _ in rebuild:
            await conn.execute(drop)
        ids = itertools.count(ms - appointments)  # uuid7 in load order: the primary key appends

        def next_id() -> str:
            return _uuid7(next(ids), rng)

        records: list[tuple[Any, ...]] = []
        total = 0
        for n, p in enumerate(people):
            quota = appointments // providers + (1 if n < appointments % providers else 0)
            day = today
            while quota > 0 and day < today + timedelta(days=FUTURE_DAYS):
                fill = max(0.1, PAST_FILL - 0.025 * (day - today).days)
                quota -= _place(org, p, day, fill, now, quota, client_ids, rng, next_id, records)
                day += timedelta(days=1)
            day = today - timedelta(days=1)
            while quota > 0:
                quota -= _place(
                    org, p, day, past_fill, now, quota, client_ids, rng, next_id, records
                )
                day -= timedelta(days=1)
            if len(records) >= batch:
                await _copy(conn, "appointments", records)
                total += len(records)
                records = []
        await _copy(conn, "appointments", records)
        total += len(records)
        t_copy = time.perf_counter() - started - t_setup
        for name, _, add in rebuild:
            t = time.perf_counter()
            await conn.execute(add)
            print(f"  {name}: {time.perf_counter() - t:.1f}s", flush=True)
        await conn.execute("ANALYZE")
        print(
            f"loaded {providers} providers, {clients} clients, {total} appointments in "
            f"{time.perf_counter() - started:.0f}s (setup {t_setup:.0f}s, appointments "
            f"{t_copy:.0f}s = {total / t_copy:,.0f} rows/s, then constraints and indexes)"
        )
        return BookingDataset(org, now, providers, total)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--clients", type=int, help="default 1,000,000 (--booking: 100,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--booking", action="store_true", help="the booking dataset")
    parser.add_argument("--providers", type=int, default=1_000)
    parser.add_argument("--appointments", type=int, default=5_000_000)
    args = parser.parse_args()
    if args.booking:
        clients = 100_000 if args.clients is None else args.clients
        asyncio.run(
            generate_booking(
                args.database_url, args.providers, args.appointments, clients, args.seed
            )
        )
    else:
        clients = 1_000_000 if args.clients is None else args.clients
        asyncio.run(generate(args.database_url, clients, args.seed))


if __name__ == "__main__":
    main()
