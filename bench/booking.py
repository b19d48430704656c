"""One command: the booking dataset, the server, the load, the report - ours
vs the seeds' way vs the raw statements, side by side in one run.

    python -m bench.booking                  # embedded PostgreSQL, 1,000 providers, 5M appointments
    python -m bench.booking --providers 20 --appointments 50000 --seconds 2

The dataset (bench.generate.generate_booking) is built once per size, in its
own database of an embedded PostgreSQL in bench/results/pgdata-booking (or on
--database-url), and reused; the race's bookings are deleted after each run.

Scenarios (the rules: protos/booking/v1/availability.proto):
1. availability of one provider for a week (GetAvailability, the 30-minute
   service with its 10-minute buffer): ours over gRPC; raw = the statements
   the server sends (its own query functions, recorded, replayed on a held
   asyncpg connection); seeds = the seeds' availability SQL (seeds 004, 3.2:
   working hours LEFT JOIN the day's confirmed/pending appointments on
   DATE(start_time), time zones ignored) adapted to our tables, once per
   day, as raw asyncpg (it returns hours and bookings, not slots: the slots
   would still have to be computed by the caller).
2. availability of 50 providers for one day: the same three ways (seeds:
   once per provider).
3. conflict check (CheckConflicts) of a free and of a taken start: ours,
   raw, and the seeds' check_availability_optimized (one EXISTS with
   (start, end) OVERLAPS, confirmed/pending only, no buffers, no hours).
4. booking race: --callers concurrent callers (--procs processes), half of
   them racing for the same few slots (a new set of SLOTS_PER_WAVE slots of
   CONTESTED_PROVIDERS providers every WAVE_SECONDS), half booking free slots
   of other providers. Ours: CreateAppointment over gRPC (with 1 server
   process, then with 2 sharing the port); seeds: at READ COMMITTED,
   SELECT EXISTS(... OVERLAPS ...) then INSERT in one transaction, into
   seeds.appointments (our appointments' columns, no exclusion constraint,
   the seeds' conflict index). Afterwards a self-join counts the double
   bookings each let through. The CPU the callers, the server and
   PostgreSQL spent per call (from /proc) says what bounds the calls/s.

Latency: 1 call in flight, the read scenarios taking turns in --rounds rounds;
throughput: --procs processes x --concurrency calls in flight. Everything
(clients, server, PostgreSQL) shares the machine's cores: compare ratios
within one run. The report goes to bench/results/booking-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.generate import BookingDataset
from bench.run import (
    RESULTS,
    ROOT,
    Scenario,
    _run,
    _summary,
    database,
    measure,
    results_table,
    server_process,
)
from server.db.engine import Conn, to_asyncpg_dsn

DATA_DIR = RESULTS / "pgdata-booking"
REPORT = RESULTS / "booking-latest.md"
DAY_PROVIDERS = 50
# The race: a new set of contested slots every WAVE_SECONDS.
CONTESTED_PROVIDERS = 4
SLOTS_PER_WAVE = 8
WAVE_SECONDS = 0.25
UNCONTESTED_PROVIDERS = 200
CALLERS_PER_CHANNEL = 8
RACE_NOTE = "bench.booking race"
# Targets (met / missed in the report).
TARGET_WEEK_P50_MS = 5.0
TARGET_CHECK_P50_MS = 2.0
TARGET_BOOKINGS_PER_S = 1000.0

AVAILABILITY = "/booking.v1.AvailabilityService/GetAvailability"
CHECK = "/booking.v1.AvailabilityService/CheckConflicts"

# The seeds' availability query (004, section 3.2) on our tables: weekly
# hours for barber_availability (ISO weekdays: isodow for their dow), our
# appointments' bounds for start_time / end_time. DATE() of a timestamptz is
# the session's zone (UTC here), not the provider's: the seeds' own bug.
SEEDS_DAY_SQL = """
WITH barber_schedule AS (
    SELECT weekday, start_minute, end_minute
    FROM working_hours
    WHERE organization_id = $1 AND provider_id = $2
),
existing_bookings AS (
    SELECT lower(during) AS start_time, upper(during) AS end_time
    FROM appointments
    WHERE organization_id = $1 AND provider_id = $2
      AND DATE(lower(during)) = $3
      AND status IN ('confirmed', 'pending')
)
SELECT
    bs.start_minute,
    bs.end_minute,
    COALESCE(array_agg(eb.start_time || ',' || eb.end_time)
             FILTER (WHERE eb.start_time IS NOT NULL), '{}') AS conflicts
FROM barber_schedule bs
LEFT JOIN existing_bookings eb ON bs.weekday = EXTRACT(isodow FROM $3::date)
WHERE bs.weekday = EXTRACT(isodow FROM $3::date)
GROUP BY bs.start_minute, bs.end_minute
"""

# The seeds' check_availability_optimized (004, section 5.2) on a table of
# our appointments' shape ({table}: public.appointments or seeds.appointments).
SEEDS_CHECK_SQL = """
SELECT EXISTS(
    SELECT 1 FROM {table}
    WHERE organization_id = $1 AND provider_id = $2
      AND status IN ('confirmed', 'pending')
      AND (lower(during), upper(during)) OVERLAPS ($3::timestamptz, $4::timestamptz)
) AS has_conflict
"""

# seeds.appointments: our columns (LIKE: no constraints, no indexes), the
# seeds' primary key and their conflict-detection index (004, section 1.2).
SEEDS_SETUP = [
    "DROP SCHEMA IF EXISTS seeds CASCADE",
    "CREATE SCHEMA seeds",
    "CREATE TABLE seeds.appointments (LIKE public.appointments INCLUDING DEFAULTS)",
    "ALTER TABLE seeds.appointments ADD PRIMARY KEY (organization_id, id)",
    "CREATE INDEX idx_appointments_conflict_detection ON seeds.appointments "
    "(organization_id, provider_id, status, lower(during), upper(during)) "
    "WHERE status IN ('confirmed', 'pending')",
]
SEEDS_INSERT_SQL = """
INSERT INTO seeds.appointments
    (organization_id, id, provider_id, client_id, service_id, during, occupied,
     status, price_minor, currency, notes)
VALUES ($1, $2, $3, $4, $5, tstzrange($6, $7), tstzrange($6, $7), 'pending', $8, 'EUR', $9)
"""

# Pairs of blocking appointments of one provider whose intervals overlap.
DOUBLE_BOOKINGS_SQL = """
SELECT count(*) FROM {table} a
JOIN {table} b
  ON b.organization_id = a.organization_id AND b.provider_id = a.provider_id
 AND b.id > a.id AND b.{column} && a.{column}
 AND b.status IN ('pending', 'confirmed', 'completed')
WHERE a.organization_id = $1 AND a.provider_id = ANY($2::uuid[])
  AND a.status IN ('pending', 'confirmed', 'completed')
  AND a.{column} && tstzrange($3, $4)
"""


# -- response checks (module level: they travel to the load processes) ----------------


def check_has_slots(response: bytes) -> None:
    from booking.v1 import availability_pb2

    got = availability_pb2.GetAvailabilityResponse.FromString(response)
    assert all(not p.HasField("error") for p in got.providers), "a provider's entry has an error"
    assert any(p.slots for p in got.providers), "no slots"


def check_bookable(response: bytes) -> None:
    from booking.v1 import availability_pb2

    assert availability_pb2.CheckConflictsResponse.FromString(response).bookable


def check_taken(response: bytes) -> None:
    from booking.v1 import availability_pb2

    got = availability_pb2.CheckConflictsResponse.FromString(response)
    assert not got.bookable and got.conflicts


# -- the raw statements: the server's own query code, recorded -------------------------


class _Recorder(Conn):
    """A Conn that keeps every statement it sends (SQL and arguments)."""

    __slots__ = ("sent",)

    def __init__(self, raw: asyncpg.Connection) -> None:
        super().__init__(raw, None)
        self.sent: list[tuple[str, list[Any]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.sent.append((sql, list(args)))
        return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self.sent.append((sql, list(args)))
        return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.sent.append((sql, list(args)))
        return await super().fetchval(sql, *args)


async def availability_statements(
    conn: asyncpg.Connection,
    org: str,
    service_id: str,
    provider_ids: list[str],
    start: datetime,
    end: datetime,
) -> list[tuple[str, list[Any]]]:
    """What GetAvailability sends for the request (server.handlers.availability:
    the providers' header, then one calendar statement for the valid ones)."""
    from datetime import timedelta

    from server import booking
    from server.queries import calendar as q

    rec = _Recorder(conn)
    rows = await q.providers_header(rec, org, service_id, provider_ids)
    head = rows[0]
    now = datetime.now(UTC)
    notice, horizon = booking.policy_of(booking.Policy(), head)
    rules_start, latest = max(start, now + notice), now + horizon
    durations = [
        timedelta(minutes=r["offering_duration_minutes"] or head["duration_minutes"])
        for r in rows[1:]
    ]
    longest = max(durations)
    window = booking.date_window(start, end + longest)
    await q.calendar_rows(
        rec,
        org,
        provider_ids,
        *window,
        rules_start - timedelta(minutes=head["buffer_before_minutes"]),
        min(end, latest) + longest + timedelta(minutes=head["buffer_after_minutes"]),
    )
    return rec.sent


async def check_statements(
    conn: asyncpg.Connection, org: str, provider_id: str, service_id: str, start: datetime
) -> list[tuple[str, list[Any]]]:
    """What CheckConflicts sends: server.booking.evaluate_booking, run on a recorder."""
    from server import booking

    rec = _Recorder(conn)
    await booking.evaluate_booking(
        rec,
        org_id=org,
        provider_id=provider_id,
        service_id=service_id,
        start=start,
        now=datetime.now(UTC),
    )
    return rec.sent


# -- the race ---------------------------------------------------------------------------

# (provider id, start, end, occupied start, occupied end)
RaceSlot = tuple[str, datetime, datetime, datetime, datetime]


@dataclass(frozen=True)
class RacePlan:
    org: str
    service_id: str
    price_minor: int
    clients: list[str]
    # waves[k]: the contested slots of wave k.
    waves: list[list[RaceSlot]]
    # Free slots of other providers, never two callers on the same one.
    uncontested: list[RaceSlot]
    providers: list[str]
    window: tuple[datetime, datetime]


@dataclass
class RaceResult:
    calls: int = 0
    booked: int = 0
    taken: int = 0
    contested_booked: int = 0
    other: collections.Counter[str] | None = None
    latencies: list[float] | None = None
    seconds: float = 0.0
    double_bookings: int = 0
    workers: int = 0
    # CPU seconds spent during the race: server processes, PostgreSQL backends.
    cpu: dict[str, float] | None = None


def _error_reason(error: Any) -> str:
    """ErrorInfo.reason of a gRPC error (from grpc-status-details-bin)."""
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return ""
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


async def _race(
    way: str,
    target: str,
    plan: RacePlan,
    proc: int,
    procs: int,
    callers: int,
    t0: float,
    seconds: float,
) -> dict[str, Any]:
    """One load process: ``callers`` callers, the even ones racing for the wave's
    contested slots, the odd ones booking their own share of the free slots."""
    rng = random.Random(proc)
    counts: collections.Counter[str] = collections.Counter()
    lat: list[float] = []
    mine = plan.uncontested[proc::procs]
    odd = callers // 2
    shares = [iter(mine[i::odd]) for i in range(odd)]

    def pick(n: int) -> tuple[RaceSlot, bool]:
        if n % 2:
            slot = next(shares[n // 2], None)
            if slot is not None:
                return slot, False
        wave = min(int((time.time() - t0) / WAVE_SECONDS), len(plan.waves) - 1)
        return rng.choice(plan.waves[max(wave, 0)]), True

    async with contextlib.AsyncExitStack() as stack:
        calls = []
        if way == "grpc":
            import grpc
            from booking.v1 import appointments_pb2, appointments_pb2_grpc, resources_pb2

            # A connection per CALLERS_PER_CHANNEL callers (own subchannels), so
            # that the kernel spreads them over the workers of `serve --workers`.
            creates = []
            for _ in range(max(1, callers // CALLERS_PER_CHANNEL)):
                channel = await stack.enter_async_context(
                    grpc.aio.insecure_channel(
                        target, options=[("grpc.use_local_subchannel_pool", 1)]
                    )
                )
                creates.append(
                    appointments_pb2_grpc.AppointmentServiceStub(channel).CreateAppointment
                )

            def grpc_caller(n: int) -> Any:
                create = creates[n % len(creates)]

                async def call() -> None:
                    slot, contested = pick(n)
                    request = appointments_pb2.CreateAppointmentRequest(
                        organization_id=plan.org,
                        appointment=resources_pb2.Appointment(
                            provider_id=slot[0],
                            client_id=rng.choice(plan.clients),
                            service_id=plan.service_id,
                            notes=RACE_NOTE,
                        ),
                    )
                    request.appointment.start_time.FromDatetime(slot[1])
                    try:
                        await create(request, timeout=30)
                        counts["booked"] += 1
                        counts["contested_booked"] += contested
                    except grpc.aio.AioRpcError as error:
                        reason = _error_reason(error)
                        counts[
                            "taken"
                            if reason == "TIME_SLOT_TAKEN"
                            else f"{error.code().name} {reason}".strip()
                        ] += 1

                return call

            calls = [grpc_caller(n) for n in range(callers)]
        else:
            check = SEEDS_CHECK_SQL.format(table="seeds.appointments")

            def seeds_caller(n: int, conn: asyncpg.Connection) -> Any:
                async def call() -> None:
                    slot, contested = pick(n)
                    try:
                        async with conn.transaction():  # READ COMMITTED
                            if await conn.fetchval(check, plan.org, slot[0], slot[1], slot[2]):
                                counts["taken"] += 1
                                return
                            await conn.execute(
                                SEEDS_INSERT_SQL,
                                *(plan.org, str(uuid.uuid4()), slot[0]),
                                *(rng.choice(plan.clients), plan.service_id, slot[1], slot[2]),
                                *(plan.price_minor, RACE_NOTE),
                            )
                        counts["booked"] += 1
                        counts["contested_booked"] += contested
                    except asyncpg.PostgresError as error:
                        counts[type(error).__name__] += 1

                return call

            def raw_caller(n: int, conn: asyncpg.Connection) -> Any:
                async def call() -> None:
                    slot, contested = pick(n)
                    try:
                        if await _raw_booking(conn, plan, slot, rng.choice(plan.clients)):
                            counts["booked"] += 1
                            counts["contested_booked"] += contested
                        else:
                            counts["taken"] += 1
                    except asyncpg.PostgresError as error:
                        counts[type(error).__name__] += 1

                return call

            for n in range(callers):
                conn = await asyncpg.connect(target)
                stack.push_async_callback(conn.close)
                calls.append((raw_caller if way == "raw" else seeds_caller)(n, conn))
        await asyncio.sleep(max(0.0, t0 - time.time()))
        client_cpu = time.process_time()
        await _run(calls, seconds, lat)
        client_cpu = time.process_time() - client_cpu
    return {"counts": dict(counts), "lat": lat, "client": client_cpu}


async def _raw_booking(
    conn: asyncpg.Connection, plan: RacePlan, slot: RaceSlot, client_id: str
) -> bool:
    """CreateAppointment's statements and rules without gRPC and without the
    server's plumbing (pool, interceptor, writing()): in one transaction, the
    statement timeout, evaluate_booking (the provider locked FOR SHARE, the
    client checked), the INSERT with its audit event; a lost race (the exclusion
    constraint) looks up the winner as the server does. Whether it booked."""
    from server import booking
    from server.ids import uuid7
    from server.queries import appointments as q
    from server.queries._crud import Audit

    c = Conn(conn, None)
    taking = None
    # BEGIN and the timeout in one round trip, as server.db.engine does.
    await conn.execute("BEGIN; SET LOCAL statement_timeout = 30000")
    try:
        evaluation = await booking.evaluate_booking(
            c,
            org_id=plan.org,
            provider_id=slot[0],
            service_id=plan.service_id,
            start=slot[1],
            now=datetime.now(UTC),
            lock_provider=True,
            client_id=client_id,
        )
        if not evaluation.bookable:
            await conn.execute("ROLLBACK")
            return False
        taking = q.Slot(
            slot[0],
            evaluation.start,
            evaluation.end,
            evaluation.buffer_before_minutes,
            evaluation.buffer_after_minutes,
        )
        await q.insert_appointment(
            c,
            org_id=plan.org,
            row_id=uuid7(),
            values={
                **q.interval_values(taking),
                "client_id": client_id,
                "service_id": plan.service_id,
                "status": "pending",
                "price_minor": evaluation.price_minor,
                "currency": evaluation.currency,
                "external_id": None,
                "notes": RACE_NOTE,
            },
            audit=Audit("bench", "bench-correlation", None),
            action="create",
        )
    except (asyncpg.ExclusionViolationError, asyncpg.DeadlockDetectedError):
        await conn.execute("ROLLBACK")
        assert taking is not None
        await q.occupying(c, plan.org, taking)
        return False
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    return True


def _race_worker(job: tuple[Any, ...]) -> dict[str, Any]:
    return asyncio.run(_race(*job))


def _processes() -> dict[int, tuple[int, str, float, float]]:
    """pid -> (parent pid, command line, CPU seconds so far, CPU seconds of its
    children that ended), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = [int(x) for x in stat[stat.rindex(")") + 4 :].split()]
        # After the state: ppid, ..., utime (index 10), stime, cutime, cstime.
        own, reaped = (fields[10] + fields[11]) / tick, (fields[12] + fields[13]) / tick
        out[int(entry.name)] = (fields[0], command, own, reaped)
    return out


async def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine."""
    conn = await asyncpg.connect(dsn)
    try:  # its backend's parent, read while the backend lives
        found = _processes().get(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()
    return found[0] if found else None


def cpu_seconds(port: int | None, postmaster: int | None) -> dict[str, float]:
    """CPU seconds used so far by the server on ``port`` (the process and its
    workers) and by PostgreSQL (the main process, its live children: backends
    and background processes, and the children that ended: closed backends)."""
    table = _processes()
    server = {
        pid
        for pid, (_, command, _, _) in table.items()
        if port is not None and " serve " in command and f"--port {port} " in command + " "
    }
    grew = True
    while grew:  # and its descendants (the workers)
        more = {pid for pid, row in table.items() if row[0] in server} - server
        server |= more
        grew = bool(more)
    out = {"server": sum(table[pid][2] for pid in server)}
    if postmaster in table:
        out["postgres"] = (
            table[postmaster][2]
            + table[postmaster][3]
            + sum(row[2] for row in table.values() if row[0] == postmaster)
        )
    return out


def race(
    way: str,
    target: str,
    plan: RacePlan,
    procs: int,
    callers: int,
    seconds: float,
    postmaster: int | None,
) -> RaceResult:
    """The race from ``procs`` processes of ``callers / procs`` callers; with
    the CPU seconds the callers, the server and PostgreSQL spent."""
    ctx = multiprocessing.get_context("spawn")
    t0 = time.time() + 3.0  # all processes start together, after their set-up
    each = callers // procs
    port = int(target.rsplit(":", 1)[1]) if way == "grpc" else None
    cpu_before = cpu_seconds(port, postmaster)
    with ctx.Pool(procs) as pool:
        runs = pool.map(
            _race_worker, [(way, target, plan, i, procs, each, t0, seconds) for i in range(procs)]
        )
    cpu_after = cpu_seconds(port, postmaster)
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before.keys() & cpu_after.keys()}
    counts: collections.Counter[str] = collections.Counter()
    lat: list[float] = []
    for r in runs:
        counts.update(r["counts"])
        lat += r["lat"]
        cpu["client"] = cpu.get("client", 0.0) + r["client"]
    booked, taken = counts.pop("booked", 0), counts.pop("taken", 0)
    contested = counts.pop("contested_booked", 0)
    return RaceResult(
        calls=len(lat),
        booked=booked,
        taken=taken,
        contested_booked=contested,
        other=counts,
        latencies=lat,
        seconds=seconds,
        cpu=cpu,
    )


async def _race_plan(
    target: str, dsn: str, org: str, service_id: str, providers: list[str], seconds: float
) -> RacePlan:
    """Free slots (GetAvailability, the 30-minute service) beyond the dataset's
    bookings, non-overlapping per provider (buffers included)."""
    import grpc
    from booking.v1 import availability_pb2, availability_pb2_grpc

    from bench.generate import FUTURE_DAYS

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today + timedelta(days=FUTURE_DAYS + 3)
    window = (first, first + timedelta(days=21))
    contested_ids = providers[:CONTESTED_PROVIDERS]
    free_ids = providers[CONTESTED_PROVIDERS : CONTESTED_PROVIDERS + UNCONTESTED_PROVIDERS]

    async def free(ids: list[str]) -> dict[str, list[RaceSlot]]:
        out: dict[str, list[RaceSlot]] = {}
        async with grpc.aio.insecure_channel(target) as channel:
            stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
            for i in range(0, len(ids), 100):
                request = availability_pb2.GetAvailabilityRequest(
                    organization_id=org, provider_ids=ids[i : i + 100], service_id=service_id
                )
                request.start_time.FromDatetime(window[0])
                request.end_time.FromDatetime(window[1])
                got = await stub.GetAvailability(request, timeout=60)
                for p in got.providers:
                    last_end = window[0] - timedelta(days=1)
                    for s in p.slots:
                        start = s.start_time.ToDatetime(tzinfo=UTC)
                        end = s.end_time.ToDatetime(tzinfo=UTC)
                        occupied = (start - before, end + after)
                        if occupied[0] >= last_end:
                            out.setdefault(p.provider_id, []).append(
                                (p.provider_id, start, end, *occupied)
                            )
                            last_end = occupied[1]
        return out

    conn = await asyncpg.connect(dsn)
    try:
        svc = await conn.fetchrow(
            "SELECT price_minor, buffer_before_minutes, buffer_after_minutes FROM services "
            "WHERE organization_id = $1 AND id = $2",
            org,
            service_id,
        )
        clients = [
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM clients WHERE organization_id = $1 ORDER BY id LIMIT 2000", org
            )
        ]
    finally:
        await conn.close()
    before = timedelta(minutes=svc["buffer_before_minutes"])
    after = timedelta(minutes=svc["buffer_after_minutes"])
    contested = await free(contested_ids)
    # Round robin over the contested providers, in time order.
    ordered = [s for group in zip(*contested.values(), strict=False) for s in group]
    waves = [
        ordered[i : i + SLOTS_PER_WAVE]
        for i in range(0, len(ordered) - SLOTS_PER_WAVE + 1, SLOTS_PER_WAVE)
    ]
    needed = int(seconds / WAVE_SECONDS) + 8
    if len(waves) < needed:
        raise SystemExit(f"only {len(waves)} waves of contested slots, {needed} needed")
    uncontested = [s for slots in (await free(free_ids)).values() for s in slots]
    random.Random(1).shuffle(uncontested)
    return RacePlan(
        org,
        service_id,
        int(svc["price_minor"]),
        clients,
        waves[:needed],
        uncontested,
        contested_ids + free_ids,
        window,
    )


async def _count_double_bookings(dsn: str, plan: RacePlan, table: str, column: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        sql = DOUBLE_BOOKINGS_SQL.format(table=table, column=column)
        return int(await conn.fetchval(sql, plan.org, plan.providers, *plan.window))
    finally:
        await conn.close()


async def _delete_race_bookings(dsn: str, org: str, providers: list[str]) -> int:
    """Ours: the race's appointments (notes = RACE_NOTE) and their audit events."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            ids = [
                str(r["id"])
                for r in await conn.fetch(
                    "DELETE FROM appointments WHERE organization_id = $1 "
                    "AND provider_id = ANY($2::uuid[]) AND notes = $3 RETURNING id",
                    org,
                    providers,
                    RACE_NOTE,
                )
            ]
            await conn.execute(
                "DELETE FROM audit_events WHERE organization_id = $1 "
                "AND resource_type = 'appointment' AND resource_id = ANY($2::text[])",
                org,
                ids,
            )
        return len(ids)
    finally:
        await conn.close()


async def _seeds_table(dsn: str, plan: RacePlan) -> int:
    """seeds.appointments with the race providers' confirmed and pending
    appointments (the only ones the seeds' check looks at)."""
    conn = await asyncpg.connect(dsn)
    try:
        for sql in SEEDS_SETUP:
            await conn.execute(sql)
        await conn.execute(
            "INSERT INTO seeds.appointments SELECT * FROM public.appointments "
            "WHERE organization_id = $1 AND provider_id = ANY($2::uuid[]) "
            "AND status IN ('confirmed', 'pending')",
            plan.org,
            plan.providers,
        )
        await conn.execute("ANALYZE seeds.appointments")
        return int(await conn.fetchval("SELECT count(*) FROM seeds.appointments"))
    finally:
        await conn.close()


# -- the read scenarios -----------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    org: str
    service_id: str
    week_provider: str
    week_bookings: int
    week: tuple[datetime, datetime]
    day_providers: list[str]
    day: tuple[datetime, datetime]
    providers: list[str]
    taken_start: datetime


async def _targets(dsn: str, org: str) -> Targets:
    from bench.generate import AVAILABILITY_SERVICE

    conn = await asyncpg.connect(dsn)
    try:
        service_id = str(
            await conn.fetchval(
                "SELECT id FROM services WHERE organization_id = $1 AND name = $2",
                org,
                AVAILABILITY_SERVICE,
            )
        )
        providers = [
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM providers WHERE organization_id = $1 ORDER BY id", org
            )
        ]
        tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=1
        )
        week = (tomorrow, tomorrow + timedelta(days=7))
        # The week's provider: the median of the first 100 by blocking
        # appointments that week.
        rows = await conn.fetch(
            "SELECT p.id::text AS id, (SELECT count(*) FROM appointments a "
            "  WHERE a.organization_id = $1 AND a.provider_id = p.id "
            "  AND a.status IN ('pending', 'confirmed', 'completed') "
            "  AND a.occupied && tstzrange($2, $3)) AS n "
            "FROM unnest($4::uuid[]) AS p(id) ORDER BY n, id",
            org,
            *week,
            providers[:100],
        )
        middle = rows[len(rows) // 2]
        taken = await conn.fetchval(
            "SELECT lower(during) FROM appointments WHERE organization_id = $1 "
            "AND provider_id = $2 AND status IN ('pending', 'confirmed') "
            "AND during && tstzrange($3, $4) ORDER BY lower(during) LIMIT 1",
            org,
            middle["id"],
            *week,
        )
        if taken is None:
            raise SystemExit("the week's provider has no booking that week (dataset too old?)")
        return Targets(
            org=org,
            service_id=service_id,
            week_provider=middle["id"],
            week_bookings=int(middle["n"]),
            week=week,
            day_providers=providers[CONTESTED_PROVIDERS + UNCONTESTED_PROVIDERS :][:DAY_PROVIDERS]
            or providers[:DAY_PROVIDERS],
            day=(tomorrow, tomorrow + timedelta(days=1)),
            providers=providers,
            taken_start=taken,
        )
    finally:
        await conn.close()


def _availability_request(
    t: Targets, provider_ids: list[str], span: tuple[datetime, datetime]
) -> bytes:
    from booking.v1 import availability_pb2

    request = availability_pb2.GetAvailabilityRequest(
        organization_id=t.org, provider_ids=provider_ids, service_id=t.service_id
    )
    request.start_time.FromDatetime(span[0])
    request.end_time.FromDatetime(span[1])
    return request.SerializeToString()


def _check_request(t: Targets, start: datetime) -> bytes:
    from booking.v1 import availability_pb2

    request = availability_pb2.CheckConflictsRequest(
        organization_id=t.org, provider_id=t.week_provider, service_id=t.service_id
    )
    request.start_time.FromDatetime(start)
    return request.SerializeToString()


async def _free_start(target: str, t: Targets) -> datetime:
    """A bookable start of the week's provider (its first slot after a day)."""
    import grpc
    from booking.v1 import availability_pb2

    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = channel.unary_unary(AVAILABILITY)
        got = availability_pb2.GetAvailabilityResponse.FromString(
            await call(_availability_request(t, [t.week_provider], t.week), timeout=30)
        )
    starts = [s.start_time.ToDatetime(tzinfo=UTC) for s in got.providers[0].slots]
    later = [s for s in starts if s >= t.week[0] + timedelta(days=1)]
    if not later:
        raise SystemExit("the week's provider has no free slot")
    return later[0]


def read_scenarios(target: str, dsn: str, t: Targets) -> tuple[list[Scenario], datetime]:
    """Scenarios 1-3 (grpc, seeds, raw each) and a gRPC floor; the free start."""
    free = asyncio.run(_free_start(target, t))

    async def statements() -> dict[str, list[tuple[str, list[Any]]]]:
        conn = await asyncpg.connect(dsn)
        try:
            return {
                "week": await availability_statements(
                    conn, t.org, t.service_id, [t.week_provider], *t.week
                ),
                "day": await availability_statements(
                    conn, t.org, t.service_id, t.day_providers, *t.day
                ),
                "free": await check_statements(conn, t.org, t.week_provider, t.service_id, free),
                "taken": await check_statements(
                    conn, t.org, t.week_provider, t.service_id, t.taken_start
                ),
            }
        finally:
            await conn.close()

    raw = asyncio.run(statements())
    dates = [(t.week[0] + timedelta(days=i)).date() for i in range(7)]
    seeds_week = [(SEEDS_DAY_SQL, [t.org, t.week_provider, d]) for d in dates]
    seeds_day = [(SEEDS_DAY_SQL, [t.org, p, t.day[0].date()]) for p in t.day_providers]
    check_sql = SEEDS_CHECK_SQL.format(table="appointments")
    span = timedelta(minutes=30)
    seeds_free = [(check_sql, [t.org, t.week_provider, free, free + span])]
    seeds_taken = [(check_sql, [t.org, t.week_provider, t.taken_start, t.taken_start + span])]
    week_request = _availability_request(t, [t.week_provider], t.week)
    day_request = _availability_request(t, t.day_providers, t.day)
    scenarios: list[Scenario] = [
        (
            "grpc availability, 1 provider x 7 days",
            "rpc",
            (target, AVAILABILITY, week_request, check_has_slots),
        ),
        ("seeds availability, 1 provider x 7 days", "sql", (dsn, seeds_week)),
        ("raw availability, 1 provider x 7 days", "sql", (dsn, raw["week"])),
        (
            f"grpc availability, {len(t.day_providers)} providers x 1 day",
            "rpc",
            (target, AVAILABILITY, day_request, check_has_slots),
        ),
        (f"seeds availability, {len(t.day_providers)} providers x 1 day", "sql", (dsn, seeds_day)),
        (f"raw availability, {len(t.day_providers)} providers x 1 day", "sql", (dsn, raw["day"])),
        ("grpc check, free start", "rpc", (target, CHECK, _check_request(t, free), check_bookable)),
        ("seeds check, free start", "sql", (dsn, seeds_free)),
        ("raw check, free start", "sql", (dsn, raw["free"])),
        (
            "grpc check, taken start",
            "rpc",
            (target, CHECK, _check_request(t, t.taken_start), check_taken),
        ),
        ("seeds check, taken start", "sql", (dsn, seeds_taken)),
        ("raw check, taken start", "sql", (dsn, raw["taken"])),
        ("grpc floor (health Check, no SQL)", "health", (target,)),
    ]
    return scenarios, free


# -- report -----------------------------------------------------------------------------


def _race_row(name: str, r: RaceResult) -> str:
    assert r.latencies is not None and r.other is not None
    s = _summary(r.latencies, r.seconds)
    other = ", ".join(f"{k}: {v}" for k, v in sorted(r.other.items())) or "0"
    cpu = r.cpu or {}
    per_call = [
        f"{cpu[k] * 1000 / r.calls:.2f}" if cpu.get(k) and r.calls else "-"
        for k in ("client", "server", "postgres")
    ]
    return (
        f"| {name} | {r.calls / r.seconds:.0f} | {r.booked / r.seconds:.0f} | {r.booked} | "
        f"{r.contested_booked} | {r.taken} | {other} | {s['p50']:.2f} | {s['p95']:.2f} | "
        f"{s['p99']:.2f} | {r.double_bookings} | {' | '.join(per_call)} |"
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


async def dataset_facts(dsn: str, data: BookingDataset) -> str:
    """One line on what the dataset holds (bench.generate.generate_booking)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE lower(during) >= $2) AS future, "
            "count(*) FILTER (WHERE status IN ('cancelled', 'no_show')) AS freed "
            "FROM appointments WHERE organization_id = $1",
            data.org,
            data.generated_at,
        )
        zones = await conn.fetch(
            "SELECT time_zone, count(*) AS n FROM providers WHERE organization_id = $1 "
            "GROUP BY 1 ORDER BY 2 DESC",
            data.org,
        )
        small = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM services WHERE organization_id = $1) AS services, "
            "(SELECT count(*) FROM offerings WHERE organization_id = $1) AS offerings, "
            "(SELECT count(*) FROM working_hours WHERE organization_id = $1) AS hours, "
            "(SELECT count(*) FROM date_overrides WHERE organization_id = $1) AS overrides, "
            "(SELECT count(*) FROM time_off WHERE organization_id = $1) AS time_off, "
            "(SELECT count(*) FROM clients WHERE organization_id = $1) AS clients",
            data.org,
        )
    finally:
        await conn.close()
    n = max(int(row["n"]), 1)
    return (
        f"Dataset (bench.generate.generate_booking, generated {data.generated_at:%Y-%m-%d %H:%M} "
        f"UTC): {data.providers:,} providers ("
        + ", ".join(f"{z['time_zone']} {z['n']}" for z in zones)
        + f"), {small['services']} services with buffers, {small['offerings']:,} offerings, "
        f"{small['hours']:,} weekly hour rules, {small['overrides']:,} date overrides, "
        f"{small['time_off']:,} time off, {small['clients']:,} clients, {row['n']:,} "
        f"appointments ({row['future'] / n:.1%} from the generation on, "
        f"{row['freed'] / n:.1%} cancelled or no-show)."
    )


def report(
    args: argparse.Namespace,
    started: datetime,
    t: Targets,
    free: datetime,
    results: dict[str, dict[str, dict[str, float]]],
    races: list[tuple[str, RaceResult]],
    seeds_rows: int,
    facts: str,
    load: tuple[str, str],
) -> str:
    day_n = len(t.day_providers)
    command = (
        f"python -m bench.booking --providers {args.providers} --appointments "
        f"{args.appointments} --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--procs {args.procs} --concurrency {args.concurrency} --callers {args.callers} "
        f"--race-seconds {args.race_seconds:g}"
    )
    lines = [
        f"# bench: availability, conflict check and booking at {args.providers:,} providers, "
        f"{args.appointments:,} appointments",
        "",
        f"`{command}`",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC to {datetime.now(UTC):%H:%M} UTC on "
        f"{os.cpu_count()} cores shared by the clients, the server and PostgreSQL "
        "(a shared, noisy machine: compare ratios within the run); load average "
        f"{load[0]} at the start, {load[1]} at the end. Embedded PostgreSQL "
        "unless --database-url.",
        "",
        facts,
        "",
        f"Week: {t.week[0]:%Y-%m-%d} to {t.week[1]:%Y-%m-%d} (UTC), provider "
        f"{t.week_provider} ({t.week_bookings} blocking appointments that week); "
        f"day: {t.day[0]:%Y-%m-%d}, {day_n} providers; service: 30 minutes + 10-minute "
        f"buffer after. Check: free start {free:%Y-%m-%d %H:%M}Z, taken start "
        f"{t.taken_start:%Y-%m-%d %H:%M}Z (the week provider's first booking that week).",
        "",
        "## Reads",
        "",
        "p50 / p95 / p99 ms with 1 call in flight (the scenarios take turns in "
        f"{args.rounds} rounds); calls/s with {args.procs}x{args.concurrency} in flight. "
        "grpc = our server; raw = the statements it sends, on a held asyncpg connection; "
        "seeds = the seeds' SQL as raw asyncpg (no gRPC, no Python service: the most "
        "generous version; it returns hours and bookings, not slots).",
        "",
        *results_table(results, args.procs, args.concurrency),
    ]
    lines += [
        "",
        "Ratios (p50 latency; calls/s with all callers in flight): above 1.00x in the "
        "last three columns = ours is faster than the seeds' way (seeds / raw compares "
        "SQL with SQL: the seeds' statements against the ones our server sends).",
        "",
        "| scenario | ours / raw (p50) | ours / raw (calls/s) | seeds / ours (p50) "
        "| ours / seeds (calls/s) | seeds / raw (p50) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in (
        "availability, 1 provider x 7 days",
        f"availability, {day_n} providers x 1 day",
        "check, free start",
        "check, taken start",
    ):
        g, s, r = (results[f"{w} {label}"] for w in ("grpc", "seeds", "raw"))
        gl, sl, rl = g["latency"]["p50"], s["latency"]["p50"], r["latency"]["p50"]
        gt, st, rt = (x["throughput"]["rps"] for x in (g, s, r))
        lines.append(
            f"| {label} | {gl / rl:.2f}x | {gt / rt:.2f}x | {sl / gl:.2f}x | {gt / st:.2f}x "
            f"| {sl / rl:.2f}x |"
        )
    week = results["grpc availability, 1 provider x 7 days"]["latency"]["p50"]
    check = max(
        results["grpc check, free start"]["latency"]["p50"],
        results["grpc check, taken start"]["latency"]["p50"],
    )
    floor = results["grpc floor (health Check, no SQL)"]["latency"]["p50"]
    lines += [
        "",
        f"gRPC floor (a health Check: no SQL, no handler): p50 {floor:.2f} ms.",
        "",
        "## Booking race",
        "",
        f"{args.callers} concurrent callers ({args.procs} processes) for "
        f"{args.race_seconds:g} s: the even ones race for {SLOTS_PER_WAVE} slots of "
        f"{CONTESTED_PROVIDERS} providers (a new set every {WAVE_SECONDS:g} s), the odd "
        f"ones book free slots of up to {UNCONTESTED_PROVIDERS} other providers (each "
        "slot once). Ours: CreateAppointment over gRPC (every booking rule, the exclusion "
        "constraint, the audit event); raw: the same statements and rules (the server's "
        "own functions) on held asyncpg connections, no gRPC and no server; seeds: "
        "SELECT EXISTS(... (start, end) OVERLAPS ...) "
        "then INSERT in one READ COMMITTED transaction, on seeds.appointments (our columns, "
        f"no exclusion constraint, the seeds' conflict index; {seeds_rows:,} confirmed/"
        "pending rows of the race's providers copied in). Double bookings: pairs of "
        "blocking appointments of one provider whose intervals overlap (ours: occupied, "
        "buffers included; seeds: the appointment itself), by a self-join after the run.",
        "",
        "| way | calls/s | bookings/s | booked | of them contested | TIME_SLOT_TAKEN / taken "
        "| other errors | p50 ms | p95 ms | p99 ms | double bookings | CPU ms/call: callers "
        "| server | PostgreSQL |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, race_result in races:
        lines.append(_race_row(name, race_result))
    lines += [
        "",
        "CPU ms/call: CPU time over the race divided by its calls, read from /proc: the "
        "callers' processes, the server's (all its workers), PostgreSQL's (the whole "
        "server: backends, closed ones, background processes). On this machine they share "
        f"{os.cpu_count()} cores, so {os.cpu_count()} x 1000 / (their sum) bounds the calls/s:",
        "",
    ]
    for name, race_result in races:
        total = sum((race_result.cpu or {}).values()) * 1000 / max(race_result.calls, 1)
        lines.append(
            f"- {name}: {total:.2f} ms of CPU per call in all, at most "
            f"{(os.cpu_count() or 1) * 1000 / total:,.0f} calls/s here"
        )
    ours = [(n, x) for n, x in races if n.startswith("ours")]
    one = ours[0][1]
    best_name, best = max(ours, key=lambda x: x[1].calls)
    doubles = sum(x.double_bookings for _, x in ours)
    rate = best.calls / best.seconds
    if one.calls / one.seconds >= TARGET_BOOKINGS_PER_S:
        needed = " (without --workers)"
    elif rate >= TARGET_BOOKINGS_PER_S:
        needed = f" (only with {best_name.split(', ')[1]})"
    else:
        needed = f" (neither with 1 nor with {max(x.workers for _, x in ours)} server processes)"
    lines += [
        "",
        "## Targets",
        "",
        f"- availability for a provider-week, p50 < {TARGET_WEEK_P50_MS:g} ms: "
        f"{week:.2f} ms, {_met(week < TARGET_WEEK_P50_MS)}",
        f"- conflict check p50 < {TARGET_CHECK_P50_MS:g} ms: {check:.2f} ms (the slower of "
        f"free and taken), {_met(check < TARGET_CHECK_P50_MS)}",
        f"- booking >= {TARGET_BOOKINGS_PER_S:,.0f}/s with zero double bookings: "
        f"{one.calls / one.seconds:.0f} CreateAppointment calls/s with 1 server process "
        f"({one.booked / one.seconds:.0f} bookings/s), best {rate:.0f} calls/s "
        f"({best_name}); {doubles} double bookings: "
        f"{_met(rate >= TARGET_BOOKINGS_PER_S and not doubles)}{needed}",
    ]
    for name, x in races:
        if name.startswith("seeds"):
            lines.append(
                f"- the seeds' way under the same load: {x.calls / x.seconds:.0f} calls/s, "
                f"{x.double_bookings} double bookings"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--providers", type=int, default=1_000)
    parser.add_argument("--appointments", type=int, default=5_000_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--callers", type=int, default=64, help="the booking race's callers")
    parser.add_argument("--race-seconds", type=float, default=10.0)
    parser.add_argument(
        "--race-workers",
        default="1,2",
        help="server processes (serve --workers) of our race runs, comma separated",
    )
    args = parser.parse_args()
    if args.providers < CONTESTED_PROVIDERS + 2:
        raise SystemExit(f"--providers must be at least {CONTESTED_PROVIDERS + 2}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started, load_start = datetime.now(UTC), _load_average()

    from bench.generate import generate_booking
    from server.db.migrate import upgrade

    name = f"booking_{args.providers}p_{args.appointments}a"
    with database(args.database_url, DATA_DIR, name) as url:
        asyncio.run(upgrade(url, ROOT / "alembic"))
        dataset = asyncio.run(
            generate_booking(url, args.providers, args.appointments, args.clients)
        )
        dsn = to_asyncpg_dsn(url)
        postmaster = asyncio.run(postmaster_pid(dsn))
        org = dataset.org
        facts = asyncio.run(dataset_facts(dsn, dataset))
        print(facts, flush=True)
        t = asyncio.run(_targets(dsn, org))
        with server_process(url, 1) as target:
            asyncio.run(_delete_race_bookings(dsn, org, t.providers))  # an earlier run's
            scenarios, free = read_scenarios(target, dsn, t)
            results = measure(scenarios, args.seconds, args.rounds, args.procs, args.concurrency)
            plan = asyncio.run(
                _race_plan(target, dsn, org, t.service_id, t.providers, args.race_seconds)
            )
        races: list[tuple[str, RaceResult]] = []
        for workers in [int(w) for w in args.race_workers.split(",")]:
            with server_process(url, workers) as target:
                r = race(
                    "grpc", target, plan, args.procs, args.callers, args.race_seconds, postmaster
                )
            r.workers = workers
            r.double_bookings = asyncio.run(
                _count_double_bookings(dsn, plan, "appointments", "occupied")
            )
            deleted = asyncio.run(_delete_race_bookings(dsn, org, plan.providers))
            if deleted != r.booked:
                print(f"warning: {r.booked} booked, {deleted} race rows deleted", flush=True)
            races.append((f"ours, --workers {workers}", r))
            print(
                f"race ours --workers {workers}: {r.calls} calls, {r.booked} booked, "
                f"{r.taken} taken, other {dict(r.other or {})}, "
                f"{r.double_bookings} double bookings",
                flush=True,
            )
        r = race("raw", dsn, plan, args.procs, args.callers, args.race_seconds, postmaster)
        r.double_bookings = asyncio.run(
            _count_double_bookings(dsn, plan, "appointments", "occupied")
        )
        deleted = asyncio.run(_delete_race_bookings(dsn, org, plan.providers))
        if deleted != r.booked:
            print(f"warning: {r.booked} booked raw, {deleted} race rows deleted", flush=True)
        races.append(("raw (our statements and rules, no gRPC)", r))
        seeds_rows = asyncio.run(_seeds_table(dsn, plan))
        r = race("seeds", dsn, plan, args.procs, args.callers, args.race_seconds, postmaster)
        r.double_bookings = asyncio.run(
            _count_double_bookings(dsn, plan, "seeds.appointments", "during")
        )
        races.append(("seeds (EXISTS OVERLAPS, then INSERT)", r))

        async def drop_seeds() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("DROP SCHEMA seeds CASCADE")
            finally:
                await conn.close()

        asyncio.run(drop_seeds())
    load = (load_start, _load_average())
    text = report(args, started, t, free, results, races, seeds_rows, facts, load)
    REPORT.write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
