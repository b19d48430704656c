"""One command: the lists dataset, the server, the calls, the report - ours vs
the raw statements vs the seeds' way, side by side in one run.

    python -m bench.lists            # embedded PostgreSQL: 1,000 providers, 1M clients,
                                     # 5M appointments, 5M payments (built once, ~25 min)
    python -m bench.lists --quick    # 20 providers, 10k clients, 50k + 50k: a check in ~2 min

The dataset (bench.lists_data.generate_lists) is built once per size in its
own database of an embedded PostgreSQL in bench/results/pgdata-lists (or on
--database-url) and reused.

Three ways, each call taking turns with the others (--rounds rounds, 1 call
in flight: the machine's 2 cores are shared by the callers, the server and
PostgreSQL):

- ours: the RPC over gRPC to a server process (`booking-data serve`);
- raw: the statements our server sends for that very request, replayed on a
  held asyncpg connection. They are recorded by running the server's own
  handler in this process on a recording connection (so they are whatever
  the handler does, whichever RPC), and its answer is checked to equal the
  gRPC answer;
- seeds: what the source documents do, as raw asyncpg statements on our
  tables (no ORM, no Python service: the most generous version): an
  OFFSET/LIMIT page and a COUNT(*), then the ORM's lazy loads. A lazy
  many-to-one load by primary key is answered from SQLAlchemy's identity map
  once the row is loaded, so each distinct client, service, provider or
  appointment costs one SELECT; a one-to-many (an appointment's payments)
  costs one SELECT per row.

Scenarios:
1. ListAppointments, VIEW_FULL, one provider's week (the whole week on one
   page); page sizes 1/50/500 over the provider's last 120 days; page 10,000
   of the tenant's appointments (VIEW_FULL) against page 1.
2. GetProviderSchedule (one provider, one date) vs the seeds' daily-schedule
   query (004, get_daily_schedule_optimized: appointments LEFT JOIN clients
   LEFT JOIN payments on DATE(start_time), their session-zone date) plus the
   provider's weekly hours and a lazy load per distinct service.
3. ListClientHistory of a regular client, page 1 of 50, vs two OFFSET pages
   (appointments, payments) with their COUNT(*)s and lazy loads.
4. ListPayments, one status, a 30-day created range, VIEW_FULL (the payments'
   appointments and clients); page sizes 1/50/500; page 10,000 of one status.

Deep pages: ours reaches page 10,000 by a page token built with the server's
own codec and the dev secret (ListSpec.scope for the request's filters) from
the keyset of the row at position 10,000 x size - size - 1, read with the
listing's own query at that OFFSET; the token is checked by calling the
server with it (page_info.page and the first row's id). The seeds' way is
OFFSET (page - 1) x size. The report goes to bench/results/lists-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import importlib
import multiprocessing
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from bench.booking import SEEDS_DAY_SQL, _Recorder
from bench.lists_data import ListsDataset, generate_lists
from bench.run import RESULTS, ROOT, Scenario, _latency, _summary, database, server_process
from server.db.engine import to_asyncpg_dsn
from server.queries._crud import Entity
from server.queries.appointments import APPOINTMENT
from server.queries.catalog import SERVICE
from server.queries.clients import CLIENT
from server.queries.payments import PAYMENT
from server.queries.providers import PROVIDER

DATA_DIR = RESULTS / "pgdata-lists"
REPORT = RESULTS / "lists-latest.md"
PAGE = 50
WEEK_PAGE = 100  # a provider's week on one page
SIZES = (1, 50, 500)
DEEP_PAGE = 10_000
SWEEP_DAYS = 120
PAYMENTS_DAYS = 30
TARGET_P50_MS = 5.0
TARGET_DEEP_RATIO = 1.2

APPOINTMENTS_RPC = "/booking.v1.AppointmentService/ListAppointments"
SCHEDULE_RPC = "/booking.v1.ScheduleService/GetProviderSchedule"
HISTORY_RPC = "/booking.v1.ClientService/ListClientHistory"
PAYMENTS_RPC = "/booking.v1.PaymentService/ListPayments"

Statements = list[tuple[str, list[Any]]]
# The seeds' statements, and how many there would be without SQLAlchemy's
# identity map (one lazy-load SELECT per row and relation).
Seeds = tuple[Statements, int]


# -- response checks (module level: they travel to the measuring process) --------------


def check_items(module: str, message: str, path: str, expected: int, response: bytes) -> None:
    """The response holds ``expected`` items at ``path`` ("providers.0.appointments")."""
    cls = getattr(importlib.import_module(module), message)
    value: Any = cls.FromString(response)
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    assert len(value) == expected, f"{message}.{path}: {len(value)} items, {expected} expected"


# -- the raw statements: the server's own handler on a recording connection ------------


class _RecordingDb:
    """What a handler takes as ``deps.db``: every connection it asks for is
    one held asyncpg connection that records each statement sent."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw
        self.sent: Statements = []

    @contextlib.asynccontextmanager
    async def connection(self, timeout_s: float | None = None) -> AsyncIterator[_Recorder]:
        rec = _Recorder(self.raw)
        try:
            yield rec
        finally:
            self.sent += rec.sent


class _Context:
    """The little of a grpc.aio ServicerContext a read handler uses."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()


class Recorder:
    """Runs a servicer's method in this process on a recording connection."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        from server.config import load_settings
        from server.handlers import SERVICES
        from server.handlers._base import Deps
        from server.paging import PageTokenCodec
        from server.timezones import TimeZones

        self.db = _RecordingDb(raw)
        settings = load_settings({"BOOKING_ENV": "dev"})
        self.deps = Deps(
            db=self.db,  # type: ignore[arg-type]
            settings=settings,
            tokens=PageTokenCodec(settings.page_token_secret),
            zones=TimeZones(self.db),  # type: ignore[arg-type]
        )
        self._services = {s.short_name: s.servicer(self.deps) for s in SERVICES}

    async def call(self, method: str, request: Any) -> tuple[Any, Statements]:
        await self.deps.zones.ready()
        self.db.sent = []
        service, name = method.rsplit("/", 2)[1:]
        handler = getattr(self._services[service.rsplit(".", 1)[1]], name)
        response = await handler(request, _Context())
        return response, list(self.db.sent)


# -- targets ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Targets:
    org: str
    provider: str
    zone: str
    week: tuple[datetime, datetime]
    sweep: tuple[datetime, datetime]
    day: date
    client: str
    client_appointments: int
    client_payments: int
    payments_range: tuple[datetime, datetime]


async def _targets(conn: asyncpg.Connection, data: ListsDataset) -> Targets:
    """A Europe/Berlin provider of median load two weeks back (the seeds'
    DATE() is the session's UTC date: closest to the truth there), its
    busiest day that week, a regular client, the last 30 days of payments."""
    org = data.org
    today = data.generated_at.replace(hour=0, minute=0, second=0, microsecond=0)
    monday = today - timedelta(days=today.weekday() + 14)
    week = (monday, monday + timedelta(days=7))
    rows = await conn.fetch(
        "SELECT p.id::text AS id, p.time_zone, (SELECT count(*) FROM appointments a "
        "  WHERE a.organization_id = $1 AND a.provider_id = p.id "
        "  AND a.start_at >= $2 AND a.start_at < $3) AS n "
        "FROM providers p WHERE p.organization_id = $1 AND p.time_zone = 'Europe/Berlin' "
        "ORDER BY n, p.id",
        org,
        *week,
    )
    if not rows:
        raise SystemExit("no Europe/Berlin provider in the dataset")
    provider = rows[len(rows) // 2]
    zone = ZoneInfo(provider["time_zone"])
    starts = await conn.fetch(
        "SELECT start_at FROM appointments WHERE organization_id = $1 AND provider_id = $2 "
        "AND start_at >= $3 AND start_at < $4",
        org,
        provider["id"],
        *week,
    )
    per_day: dict[date, int] = {}
    for r in starts:
        d = r["start_at"].astimezone(zone).date()
        per_day[d] = per_day.get(d, 0) + 1
    day = max(sorted(per_day), key=lambda d: per_day[d])
    # A regular: the client with the most appointments among 2,000 of them.
    client = await conn.fetchrow(
        "SELECT c.id::text AS id, (SELECT count(*) FROM appointments a "
        "  WHERE a.organization_id = $1 AND a.client_id = c.id) AS n, "
        "(SELECT count(*) FROM payments p "
        "  WHERE p.organization_id = $1 AND p.client_id = c.id) AS pays "
        "FROM (SELECT id FROM clients WHERE organization_id = $1 ORDER BY id LIMIT 2000) c "
        "ORDER BY n DESC, c.id LIMIT 1",
        org,
    )
    return Targets(
        org=org,
        provider=provider["id"],
        zone=provider["time_zone"],
        week=week,
        sweep=(today - timedelta(days=SWEEP_DAYS), today),
        day=day,
        client=client["id"],
        client_appointments=int(client["n"]),
        client_payments=int(client["pays"]),
        payments_range=(today - timedelta(days=PAYMENTS_DAYS), today),
    )


# -- the seeds' way -----------------------------------------------------------------------


def _columns(entity: Entity) -> str:
    return ", ".join(entity.columns)


def _lazy(table: str, entity: Entity, org: str, ids: list[str], column: str = "id") -> Statements:
    """One SELECT per id (a lazy load by key: ``column = $2``)."""
    sql = f"SELECT {_columns(entity)} FROM {table} WHERE organization_id = $1 AND {column} = $2"
    return [(sql, [org, i]) for i in ids]


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _column(rows: list[asyncpg.Record], key: str) -> list[str]:
    return [str(r[key]) for r in rows if r[key] is not None]


async def _offset_page(
    conn: asyncpg.Connection,
    table: str,
    entity: Entity,
    order: str,
    where: str,
    args: list[Any],
    offset: int,
    limit: int,
) -> tuple[Statements, list[asyncpg.Record]]:
    """An OFFSET page of ``table`` and its COUNT(*), and the page's rows."""
    n = len(args)
    page = (
        f"SELECT {_columns(entity)} FROM {table} WHERE {where} "
        f"ORDER BY {order} OFFSET ${n + 1} LIMIT ${n + 2}"
    )
    rows = await conn.fetch(page, *args, offset, limit)
    count = f"SELECT count(*) FROM {table} WHERE {where}"
    return [(page, [*args, offset, limit]), (count, list(args))], rows


# A lazy load: (table, entity, the page row's column, the table's column,
# one SELECT per row (one-to-many) rather than per distinct value).
Lazy = tuple[str, Entity, str, str, bool]


@dataclasses.dataclass(frozen=True)
class SeedsList:
    """A list the seeds' way: an OFFSET page of ``table`` and its COUNT(*),
    then the lazy loads (a many-to-one once per distinct row: SQLAlchemy's
    identity map)."""

    table: str
    entity: Entity
    order: str
    lazies: tuple[Lazy, ...]

    async def statements(
        self,
        conn: asyncpg.Connection,
        org: str,
        where: str,
        args: list[Any],
        offset: int,
        limit: int,
        lazy: bool = True,
    ) -> Seeds:
        head, rows = await _offset_page(
            conn, self.table, self.entity, self.order, where, args, offset, limit
        )
        if not lazy:
            return head, len(head)
        statements = list(head)
        for table, entity, key, column, per_row in self.lazies:
            ids = _column(rows, key)
            statements += _lazy(table, entity, org, ids if per_row else _distinct(ids), column)
        return statements, len(head) + len(self.lazies) * len(rows)


SEEDS_APPOINTMENTS = SeedsList(
    "appointments",
    APPOINTMENT,
    "start_at, id",
    (
        ("clients", CLIENT, "client_id", "id", False),
        ("services", SERVICE, "service_id", "id", False),
        ("providers", PROVIDER, "provider_id", "id", False),
        ("payments", PAYMENT, "id", "appointment_id", True),
    ),
)
SEEDS_PAYMENTS = SeedsList(
    "payments",
    PAYMENT,
    "created_at DESC, id DESC",
    (
        ("appointments", APPOINTMENT, "appointment_id", "id", False),
        ("clients", CLIENT, "client_id", "id", False),
    ),
)


async def seeds_history(conn: asyncpg.Connection, org: str, client: str) -> Seeds:
    """The client, then two OFFSET pages (appointments, payments; newest
    first) with their COUNT(*)s, then each distinct service and provider."""

    where = "organization_id = $1 AND client_id = $2"
    args: list[Any] = [org, client]
    appointments, rows = await _offset_page(
        conn, "appointments", APPOINTMENT, "start_at DESC, id DESC", where, args, 0, PAGE
    )
    payments, _ = await _offset_page(
        conn, "payments", PAYMENT, "created_at DESC, id DESC", where, args, 0, PAGE
    )
    statements = [
        *_lazy("clients", CLIENT, org, [client]),
        *appointments,
        *payments,
        *_lazy("services", SERVICE, org, _distinct(_column(rows, "service_id"))),
        *_lazy("providers", PROVIDER, org, _distinct(_column(rows, "provider_id"))),
    ]
    return statements, 1 + len(appointments) + len(payments) + 2 * len(rows)


# The seeds' get_daily_schedule_optimized (004, section 5.2) on our tables:
# their service_name is not a column of ours (a lazy load per service follows).
SEEDS_SCHEDULE_SQL = """
SELECT
    a.id, lower(a.during) AS start_time, upper(a.during) AS end_time, a.status,
    a.service_id, a.price_minor,
    c.given_name || ' ' || c.family_name AS client_name, c.phone AS client_phone,
    p.status AS payment_status
FROM appointments a
LEFT JOIN clients c ON c.organization_id = a.organization_id AND a.client_id = c.id
LEFT JOIN payments p ON p.organization_id = a.organization_id AND a.id = p.appointment_id
WHERE a.organization_id = $1 AND a.provider_id = $2
  AND DATE(a.start_at) = $3
ORDER BY a.start_at
"""


async def seeds_schedule(conn: asyncpg.Connection, t: Targets) -> Seeds:

    rows = await conn.fetch(SEEDS_SCHEDULE_SQL, t.org, t.provider, t.day)
    statements = [
        *_lazy("providers", PROVIDER, t.org, [t.provider]),
        (SEEDS_DAY_SQL, [t.org, t.provider, t.day]),
        (SEEDS_SCHEDULE_SQL, [t.org, t.provider, t.day]),
        *_lazy("services", SERVICE, t.org, _distinct(_column(rows, "service_id"))),
    ]
    return statements, 3 + len(rows)


# -- cases: one request, three ways ------------------------------------------------------


@dataclasses.dataclass
class Case:
    label: str
    group: str
    method: str
    request: Any
    items: str  # path of the items in the response
    seeds_plan: Seeds
    raw: Statements = dataclasses.field(default_factory=list)
    rows: int = 0
    response: Any = None

    @property
    def seeds(self) -> Statements:
        return self.seeds_plan[0]

    @property
    def related(self) -> int:
        """Related rows in the response (VIEW_FULL's maps and repeated fields)."""
        top = self.items.split(".")[0]
        return sum(
            len(getattr(self.response, f.name))
            for f in self.response.DESCRIPTOR.fields
            if f.name != top and f.is_repeated
        )

    @property
    def literal(self) -> int:
        """The seeds' statements without the identity map."""
        return self.seeds_plan[1]


def _ts(message: Any, value: datetime) -> None:
    message.FromDatetime(value)


async def build_cases(
    conn: asyncpg.Connection, recorder: Recorder, t: Targets, deep_page: int
) -> tuple[list[Case], dict[str, Any]]:
    """Every case's request, its recorded raw statements and the seeds'
    statements; plus facts for the report."""
    from booking.v1 import (
        appointments_pb2,
        clients_pb2,
        common_pb2,
        payments_pb2,
        resources_pb2,
        schedules_pb2,
    )

    org = t.org
    full = common_pb2.VIEW_FULL
    cases: list[Case] = []

    def appointments_request(size: int, span: tuple[datetime, datetime] | None) -> Any:
        r = appointments_pb2.ListAppointmentsRequest(organization_id=org, page_size=size, view=full)
        if span is not None:
            r.provider_ids.append(t.provider)
            _ts(r.start_time, span[0])
            _ts(r.end_time, span[1])
        return r

    # ListAppointments' filter overlaps [start, end): start_at < end and
    # end_at > start; the seeds filter on start_at within the range (the
    # same rows here: no appointment crosses the week's Monday midnight UTC).
    a_where = "organization_id = $1 AND provider_id = $2 AND start_at < $4 AND end_at > $3"
    week_seeds = await SEEDS_APPOINTMENTS.statements(
        conn, org, a_where, [org, t.provider, *t.week], 0, WEEK_PAGE
    )
    cases.append(
        Case(
            "1. provider-week, VIEW_FULL",
            "week",
            APPOINTMENTS_RPC,
            appointments_request(WEEK_PAGE, t.week),
            "appointments",
            week_seeds,
        )
    )
    for size in SIZES:
        cases.append(
            Case(
                f"1. provider, {SWEEP_DAYS} days, VIEW_FULL, page size {size}",
                "appointments sizes",
                APPOINTMENTS_RPC,
                appointments_request(size, t.sweep),
                "appointments",
                await SEEDS_APPOINTMENTS.statements(
                    conn, org, a_where, [org, t.provider, *t.sweep], 0, size
                ),
            )
        )
    # 2. the day sheet
    schedule = schedules_pb2.GetProviderScheduleRequest(organization_id=org)
    schedule.provider_ids.append(t.provider)
    schedule.date.year, schedule.date.month, schedule.date.day = (
        t.day.year,
        t.day.month,
        t.day.day,
    )
    cases.append(
        Case(
            "2. day sheet (GetProviderSchedule)",
            "schedule",
            SCHEDULE_RPC,
            schedule,
            "providers.0.appointments",
            await seeds_schedule(conn, t),
        )
    )
    # 3. a client's history
    cases.append(
        Case(
            "3. client history, page 1",
            "history",
            HISTORY_RPC,
            clients_pb2.ListClientHistoryRequest(
                organization_id=org, client_id=t.client, page_size=PAGE
            ),
            "entries",
            await seeds_history(conn, org, t.client),
        )
    )
    # 4. payments of one status in 30 days
    completed = resources_pb2.PAYMENT_STATUS_COMPLETED
    p_where = "organization_id = $1 AND status = $2 AND created_at >= $3 AND created_at < $4"

    def payments_request(size: int, ranged: bool) -> Any:
        r = payments_pb2.ListPaymentsRequest(organization_id=org, page_size=size, view=full)
        r.statuses.append(completed)
        if ranged:
            _ts(r.created_after, t.payments_range[0])
            _ts(r.created_before, t.payments_range[1])
        return r

    for size in SIZES:
        cases.append(
            Case(
                f"4. payments, completed, {PAYMENTS_DAYS} days, VIEW_FULL, page size {size}",
                "payments sizes",
                PAYMENTS_RPC,
                payments_request(size, True),
                "payments",
                await SEEDS_PAYMENTS.statements(
                    conn, org, p_where, [org, "completed", *t.payments_range], 0, size
                ),
            )
        )
    # Deep pages: the tenant's appointments; one status of payments.
    from server.handlers import appointments as appointment_handlers
    from server.handlers import payments as payment_handlers
    from server.paging import PageRequest
    from server.queries._listing import page_sql
    from server.validation import Violations

    facts: dict[str, Any] = {}
    deep_lists: list[tuple[str, Any, Any, Any, str, list[Any]]] = [
        (
            "appointments deep",
            appointment_handlers.LIST,
            appointments_request(PAGE, None),
            SEEDS_APPOINTMENTS.statements,
            "organization_id = $1",
            [org],
        ),
        (
            "payments deep",
            payment_handlers.LIST,
            payments_request(PAGE, False),
            SEEDS_PAYMENTS.statements,
            "organization_id = $1 AND status = $2",
            [org, "completed"],
        ),
    ]
    for group, spec, request, seeds_of, where, args in deep_lists:
        total = int(
            await conn.fetchval(f"SELECT count(*) FROM {spec.listing.name} WHERE {where}", *args)
        )
        deep = min(deep_page, total // PAGE - 1)
        v = Violations()
        flt = spec.filters(request, v)
        order = spec.listing.orders[spec.listing.default_order]
        query = spec.listing.build(org, flt, order)
        offset = (deep - 1) * PAGE
        # The rows at positions offset - 1 (the last of page deep - 1) and offset.
        sql, sql_args = page_sql(
            query, PageRequest(size=1, number=1, after=None, offset=offset - 1)
        )
        before, first = await conn.fetch(sql, *sql_args)
        token = recorder.deps.tokens.encode(
            spec.scope(org, flt, order), deep, tuple(order.keyset_out(before))
        )
        facts[group] = {"page": deep, "rows": total, "first": str(first["id"])}
        # VIEW_FULL, and VIEW_BASIC: the page statement alone (the related
        # rows differ from page to page; the token is the same, the view is
        # not bound to it).
        for view, view_name in ((full, "VIEW_FULL"), (common_pb2.VIEW_BASIC, "VIEW_BASIC")):
            for number, offset_of in ((1, 0), (deep, offset)):
                message = type(request)()
                message.CopyFrom(request)
                message.view = view
                if number > 1:
                    message.page_token = token
                cases.append(
                    Case(
                        f"{group.split()[0]}, {view_name}: page {number:,}"
                        + (" (token)" if number > 1 else ""),
                        group,
                        PAYMENTS_RPC if spec.listing.name == "payments" else APPOINTMENTS_RPC,
                        message,
                        spec.items_field,
                        await seeds_of(conn, org, where, args, offset_of, PAGE, lazy=view == full),
                    )
                )
    for case in cases:
        case.response, case.raw = await recorder.call(case.method, case.request)
        case.rows = _count(case.response, case.items)
    for group in ("appointments deep", "payments deep"):
        for deep_case in [c for c in cases if c.group == group and c.request.page_token]:
            items = getattr(deep_case.response, deep_case.items)
            got = (deep_case.response.page_info.page, items[0].id if items else None)
            want = (facts[group]["page"], facts[group]["first"])
            assert got == want, f"{deep_case.label}: the token landed on {got}, not {want}"
    return cases, facts


def _count(response: Any, path: str) -> int:
    value: Any = response
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return len(value)


async def prepare(
    dsn: str, data: ListsDataset, deep_page: int
) -> tuple[Targets, list[Case], dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        t = await _targets(conn, data)
        recorder = Recorder(conn)
        cases, facts = await build_cases(conn, recorder, t, deep_page)
        return t, cases, facts
    finally:
        await conn.close()


async def check_over_grpc(target: str, cases: list[Case]) -> None:
    """Each request over gRPC answers what the recorded handler answered."""
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        for case in cases:
            call: Any = channel.unary_unary(case.method)
            got = type(case.response).FromString(
                await call(case.request.SerializeToString(), timeout=120)
            )
            assert got == case.response, f"{case.label}: the server answered otherwise"


def scenarios_of(target: str, dsn: str, cases: list[Case]) -> list[Scenario]:
    out: list[Scenario] = []
    for case in cases:
        module = type(case.response).__module__
        check = functools.partial(
            check_items, module, type(case.response).__name__, case.items, case.rows
        )
        out += [
            (
                f"ours {case.label}",
                "rpc",
                (target, case.method, case.request.SerializeToString(), check),
            ),
            (f"raw {case.label}", "sql", (dsn, case.raw)),
            (f"seeds {case.label}", "sql", (dsn, case.seeds)),
        ]
    out.append(("ours gRPC floor (health Check, no SQL)", "health", (target,)))
    return out


def _latency_worker(job: tuple[list[Scenario], float, int]) -> dict[str, list[float]]:
    return asyncio.run(_latency(*job))


def measure_latency(
    scenarios: list[Scenario], seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """1 call in flight, in a process of its own; the scenarios take turns."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        lat = pool.apply(_latency_worker, ((scenarios, seconds, rounds),))
    return {name: _summary(values, seconds) for name, values in lat.items()}


# -- report -------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


async def dataset_facts(dsn: str, data: ListsDataset) -> tuple[str, str]:
    """bench.booking's line on the tenant's providers, schedules, clients and
    appointments, then the payments, the span and the small tenants; and the
    server's version."""
    from bench.booking import dataset_facts as booking_facts
    from bench.generate import BookingDataset

    booking = BookingDataset(data.org, data.generated_at, data.providers, data.appointments)
    text = await booking_facts(dsn, booking)
    conn = await asyncpg.connect(dsn)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        span = await conn.fetchrow(
            "SELECT min(start_at) AS first, max(start_at) AS last FROM appointments "
            "WHERE organization_id = $1",
            data.org,
        )
        pays = await conn.fetch(
            "SELECT status, count(*) AS n FROM payments WHERE organization_id = $1 "
            "GROUP BY 1 ORDER BY 2 DESC",
            data.org,
        )
        small = await conn.fetchval(
            "SELECT count(*) FROM appointments WHERE organization_id = ANY($1::uuid[])",
            list(data.small_orgs),
        )
    finally:
        await conn.close()
    text += (
        f" Appointments start from {span['first']:%Y-%m-%d} to {span['last']:%Y-%m-%d}; "
        f"{data.payments:,} payments ("
        + ", ".join(f"{p['status']} {p['n']:,}" for p in pays)
        + f"). Beside the tenant: {len(data.small_orgs)} small tenants ({small:,} "
        "appointments, with payments)."
    )
    return text, version


def _row(label: str, r: dict[str, dict[str, float]]) -> str:
    o, w, s = (r[f"{k} {label}"] for k in ("ours", "raw", "seeds"))
    return (
        f"| {label} | {o['p50']:.2f} / {o['p95']:.2f} / {o['p99']:.2f} | "
        f"{w['p50']:.2f} / {w['p95']:.2f} / {w['p99']:.2f} | "
        f"{s['p50']:.2f} / {s['p95']:.2f} / {s['p99']:.2f} | {o['p50'] / w['p50']:.2f}x | "
        f"{s['p50'] / o['p50']:.2f}x | {s['p50'] / w['p50']:.2f}x |"
    )


def report(
    args: argparse.Namespace,
    command: str,
    started: datetime,
    t: Targets,
    cases: list[Case],
    facts: dict[str, Any],
    results: dict[str, dict[str, float]],
    dataset: str,
    version: str,
    load: tuple[str, str],
) -> str:
    head = (
        "| case | rows | ours p50 / p95 / p99 ms | raw p50 / p95 / p99 | seeds p50 / p95 / p99 "
        "| ours / raw (p50) | seeds / ours (p50) | seeds / raw (p50) |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"

    def table(group: str) -> list[str]:
        lines = [head, rule]
        for c in cases:
            if c.group == group:
                row = _row(c.label, results)
                rows = f"{c.rows}" + (f" (+{c.related} related)" if c.related else "")
                lines.append(row.replace(f"| {c.label} |", f"| {c.label} | {rows} |", 1))
        return lines

    def statements(group: str) -> list[str]:
        lines = [
            "| case | rows | statements: ours (recorded) | seeds "
            "| seeds without the identity map |",
            "|---|---:|---:|---:|---:|",
        ]
        for c in cases:
            if c.group == group:
                lines.append(
                    f"| {c.label} | {c.rows} | {len(c.raw)} | {len(c.seeds)} | {c.literal} |"
                )
        return lines

    def p50(label: str) -> float:
        return results[f"ours {label}"]["p50"]

    floor = results["ours gRPC floor (health Check, no SQL)"]["p50"]
    lines = [
        "# bench: lists (appointments, day sheet, client history, payments)",
        "",
        f"`{command}`",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC to {datetime.now(UTC):%H:%M} UTC on "
        f"{os.cpu_count()} cores shared by the caller, the server and PostgreSQL "
        f"{version} ({'--database-url' if args.database_url else 'embedded'}); load average "
        f"{load[0]} at the start, {load[1]} at the end. 1 call in flight; the "
        f"{len(results)} scenarios take turns in {args.rounds} rounds of "
        f"{args.seconds / args.rounds:g} s each.",
        "",
        dataset,
        "",
        f"Provider {t.provider} ({t.zone}); week {t.week[0]:%Y-%m-%d} to {t.week[1]:%Y-%m-%d} "
        f"(UTC); day {t.day} (its busiest that week); client {t.client} "
        f"({t.client_appointments} appointments, {t.client_payments} payments); payments "
        f"created {t.payments_range[0]:%Y-%m-%d} to {t.payments_range[1]:%Y-%m-%d}.",
        "",
        "ours = the RPC over gRPC (a server process, Python client); raw = the statements "
        "our handler sent for the same request (recorded in-process, answer checked equal "
        "to the gRPC answer), replayed on a held asyncpg connection; seeds = the source "
        "documents' way as raw asyncpg statements on our tables (OFFSET page + COUNT(*), "
        "then one lazy-load SELECT per distinct related row: SQLAlchemy's identity map "
        "answers a many-to-one load of a row it holds; per row for one-to-many; no ORM "
        "cost counted; the statement tables also give the count without the identity map, "
        "one SELECT per row and relation). Ours sends no count (count_mode unset); the "
        "seeds always "
        f"count. gRPC floor (a health Check, no SQL): p50 {floor:.2f} ms. Ratios: seeds / "
        "ours above 1.00x = ours is faster end to end; seeds / raw compares SQL with SQL "
        "(the seeds' statements against the ones our server sends); ours / raw is what "
        "gRPC, the Python server and the encoding add.",
        "",
        "## 1. ListAppointments, one provider's week, VIEW_FULL",
        "",
        *table("week"),
        "",
        f"Page sizes (the provider's last {SWEEP_DAYS} days, VIEW_FULL):",
        "",
        *table("appointments sizes"),
        "",
        *statements("appointments sizes"),
        "",
        "## 2. Day sheet: GetProviderSchedule, one provider, one date",
        "",
        "seeds = the provider's row, their barber_schedule hours query (004, 3.2), "
        "their get_daily_schedule_optimized (004, 5.2: DATE() of the start in the "
        "session's zone, UTC, not the provider's) and a lazy load per distinct service.",
        "",
        *table("schedule"),
        "",
        *statements("schedule"),
        "",
        "## 3. ListClientHistory, page 1",
        "",
        "seeds = the client's row, two OFFSET pages (appointments, payments) with a "
        "COUNT(*) each, a lazy load per distinct service and provider.",
        "",
        *table("history"),
        "",
        *statements("history"),
        "",
        f"## 4. ListPayments, status COMPLETED, {PAYMENTS_DAYS} days, VIEW_FULL",
        "",
        *table("payments sizes"),
        "",
        *statements("payments sizes"),
        "",
        f"## Deep pages (page size {PAGE})",
        "",
        "Ours reaches the deep page by a page token (built with the server's codec and "
        "the dev secret from the keyset of the row before it, read with the listing's own "
        "query at that OFFSET; the server's answer is checked: that page number, that "
        "first row). VIEW_BASIC is the page statement alone, the paging cost; VIEW_FULL "
        "adds the related rows, which differ from page to page (their number is given). "
        "seeds = OFFSET + COUNT(*) (and, for VIEW_FULL, the lazy loads).",
        "",
    ]
    for group, title in (
        ("appointments deep", "the tenant's appointments by start time"),
        ("payments deep", "the tenant's COMPLETED payments, newest first"),
    ):
        f = facts[group]
        lines += [
            f"{title} ({f['rows']:,} rows; page {f['page']:,} = OFFSET "
            f"{(f['page'] - 1) * PAGE:,} for the seeds):",
            "",
            *table(group),
            "",
        ]
    lines += ["## Targets", ""]
    main = [
        ("1. provider-week", "1. provider-week, VIEW_FULL"),
        ("2. day sheet", "2. day sheet (GetProviderSchedule)"),
        ("3. client history", "3. client history, page 1"),
        (
            "4. payments page",
            f"4. payments, completed, {PAYMENTS_DAYS} days, VIEW_FULL, page size 50",
        ),
    ]
    for name, label in main:
        v = p50(label)
        lines.append(
            f"- {name}: p50 {v:.2f} ms end to end < {TARGET_P50_MS:g} ms: {_met(v < TARGET_P50_MS)}"
        )
    for group, word in (("appointments deep", "appointments"), ("payments deep", "payments")):
        deep = facts[group]["page"]
        for view in ("VIEW_BASIC", "VIEW_FULL"):
            one = p50(f"{word}, {view}: page 1")
            far = p50(f"{word}, {view}: page {deep:,} (token)")
            ok = far / one <= TARGET_DEEP_RATIO
            lines.append(
                f"- {word}, {view}: page {deep:,} / page 1 (ours, p50): {far:.2f} / {one:.2f} ms "
                f"= {far / one:.2f}x, within {TARGET_DEEP_RATIO}x: {_met(ok)}"
                + ("" if deep == DEEP_PAGE else f" (page {DEEP_PAGE:,} is beyond this dataset)")
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--quick", action="store_true", help="20 providers, 10k clients, 50k + 50k")
    parser.add_argument("--providers", type=int)
    parser.add_argument("--appointments", type=int)
    parser.add_argument("--payments", type=int, help="default: as many as appointments")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario, all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--build-only", action="store_true", help="build the dataset and stop")
    args = parser.parse_args()
    quick = (20, 50_000, 10_000) if args.quick else (1_000, 5_000_000, 1_000_000)
    args.providers = args.providers or quick[0]
    args.appointments = args.appointments or quick[1]
    args.clients = args.clients or quick[2]
    args.payments = args.payments or args.appointments
    command = (
        f"python -m bench.lists --providers {args.providers} --appointments {args.appointments} "
        f"--payments {args.payments} --clients {args.clients} --seconds {args.seconds:g} "
        f"--rounds {args.rounds}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    from server.db.migrate import upgrade

    name = f"lists_{args.providers}p_{args.appointments}a_{args.payments}pay_{args.clients}c"
    started, load_start = datetime.now(UTC), _load_average()
    with database(args.database_url, DATA_DIR, name) as url:
        asyncio.run(upgrade(url, ROOT / "alembic"))
        t0 = time.perf_counter()
        data = asyncio.run(
            generate_lists(url, args.providers, args.appointments, args.payments, args.clients)
        )
        print(f"dataset ready ({time.perf_counter() - t0:.0f}s): {data}", flush=True)
        if args.build_only:
            return
        dsn = to_asyncpg_dsn(url)
        dataset, version = asyncio.run(dataset_facts(dsn, data))
        print(dataset, flush=True)
        t, cases, facts = asyncio.run(prepare(dsn, data, DEEP_PAGE))
        for c in cases:
            print(
                f"{c.label}: {c.rows} rows, {len(c.raw)} statements ours, {len(c.seeds)} seeds",
                flush=True,
            )
        with server_process(url, 1) as target:
            asyncio.run(check_over_grpc(target, cases))
            results = measure_latency(scenarios_of(target, dsn, cases), args.seconds, args.rounds)
    text = report(
        args,
        command,
        started,
        t,
        cases,
        facts,
        results,
        dataset,
        version,
        (load_start, _load_average()),
    )
    REPORT.write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
