"""Plans of the list statements the server sends (migration 0004's shapes).

Each shape (SHAPES) is built with its Listing's build function, then its
statements as ListSpec.serve sends them: page_sql for the first page and for
a deep page after a keyset, count_sql for the bounded count. Each statement is
EXPLAINed (ANALYZE) twice, as a custom plan and as the generic plan that the
pool's prepared statements may switch to, and must show: no sequential scan
of the list's tables, the index made for the shape read, rows read bounded by
the page or the filter's range (never by the tenant), and no sort where the
index order was meant to serve the ORDER BY. The VIEW_FULL statements of a
page (Entity.by_ids_sql) must read their tables by key, and every index
migration 0004 creates must be read by at least one of these plans.

Shapes known to be planned badly are XFAIL (strict), with the diagnosis.

Data: a dedicated database, filled by set-based INSERT ... SELECT
generate_series in a few seconds: three tenants (so that the tenant prefix of
every index matters), the first with 12,000 providers and 12,000 services
(the name lists), 20,000 clients, 100,000 appointments and 100,000 payments;
two smaller ones with 30,000 appointments and payments each. Ids are
deterministic (tenant, kind, number), so rows refer to each other without
joins; the foreign keys are not checked during the load (the rows are built
consistent), then everything is ANALYZEd.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from server.db import schema
from server.handlers import appointments as appointment_handlers
from server.handlers import payments as payment_handlers
from server.handlers._lists import Related
from server.paging import PageRequest
from server.queries import appointments as aq
from server.queries import catalog as cq
from server.queries import history as hq
from server.queries import payments as pq
from server.queries import providers as prq
from server.queries._listing import Listing, count_sql, page_sql
from server.queries.appointments import AppointmentFilter
from server.queries.payments import PaymentFilter
from server.testing import test_settings
from tests import plans


@dataclass(frozen=True)
class Tenant:
    number: int
    providers: int
    services: int
    clients: int
    appointments: int
    # Appointments go to the first `busy` providers and `booked` services.
    busy: int
    booked: int


MAIN = Tenant(
    1, providers=12_000, services=12_000, clients=20_000, appointments=100_000, busy=500, booked=40
)
TENANTS = (
    MAIN,
    Tenant(2, 1_000, 200, 5_000, 30_000, busy=300, booked=40),
    Tenant(3, 1_000, 200, 5_000, 30_000, busy=300, booked=40),
)
SPAN = timedelta(days=400)
BASE = datetime(2026, 6, 1, tzinfo=UTC)


def _xid(tenant: int, kind: int, n: int) -> str:
    """The id of row ``n`` of ``kind`` in ``tenant`` (as pg_temp.xid makes it)."""
    return str(uuid.UUID(f"{tenant:08x}{kind:04x}{n:020x}"))


ORG, PROVIDER, SERVICE, CLIENT, APPOINTMENT, PAYMENT = range(6)

_FUNCTIONS = """
CREATE FUNCTION pg_temp.xid(t int, k int, n bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
SELECT (lpad(to_hex(t), 8, '0') || lpad(to_hex(k), 4, '0') || lpad(to_hex(n), 20, '0'))::uuid $$
"""

# Provider names: a first name, a family name and the row's number ("Leon
# Weber 11"), so that a number is a rare search term; service names likewise.
FIRST = "Anna Ben Clara David Emma Felix Greta Hugo Ida Jonas Klara Leon Mia Noah Olga Paul Rosa"
LAST = "Bauer Becker Fischer Hoffmann Koch Meyer Richter Schmidt Schneider Schulz Wagner Weber"
WORDS = "Cut Colour Massage Facial Manicure Pedicure Shave Styling Therapy Consultation"


def _word(words: str, number: str) -> str:
    """SQL: word ``number`` (modulo their count) of the space-separated ``words``."""
    return f"(string_to_array('{words}', ' '))[1 + ({number}) % {len(words.split())}]"


async def _load_tenant(conn: asyncpg.Connection, t: Tenant) -> None:
    org = _xid(t.number, ORG, 0)
    n = t.number
    await conn.execute(
        "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, $2, $3, 'UTC')",
        org,
        f"Tenant {n}",
        f"lists-{n}",
    )
    name = f"{_word(FIRST, 'g')} || ' ' || {_word(LAST, 'g / 7')} || ' ' || g"
    await conn.execute(
        "INSERT INTO providers (organization_id, id, display_name, display_key, time_zone,"
        " created_at)"
        f" SELECT $1, pg_temp.xid($2, {PROVIDER}, g), n, lower(n),"
        " (ARRAY['Europe/Berlin', 'America/New_York', 'Asia/Tokyo', 'UTC'])[1 + g % 4],"
        " $3::timestamptz - (($4 - g) * interval '1 minute')"
        f" FROM generate_series(1, $4) g, LATERAL (SELECT {name} AS n) x",
        org,
        n,
        BASE,
        t.providers,
    )
    service = f"{_word(WORDS, 'g')} || ' ' || g"
    await conn.execute(
        "INSERT INTO services (organization_id, id, name, name_key, duration_minutes, price_minor,"
        " currency, created_at)"
        f" SELECT $1, pg_temp.xid($2, {SERVICE}, g), n, lower(n), 60, 1000, 'EUR',"
        " $3::timestamptz - (($4 - g) * interval '1 minute')"
        f" FROM generate_series(1, $4) g, LATERAL (SELECT {service} AS n) x",
        org,
        n,
        BASE,
        t.services,
    )
    # Each provider offers three services.
    await conn.execute(
        "INSERT INTO offerings (organization_id, provider_id, service_id)"
        f" SELECT $1, pg_temp.xid($2, {PROVIDER}, g),"
        f" pg_temp.xid($2, {SERVICE}, (g + k * ($4 / 3)) % $4 + 1)"
        " FROM generate_series(1, $3) g, generate_series(0, 2) k",
        org,
        n,
        t.providers,
        t.services,
    )
    await conn.execute(
        "INSERT INTO clients (organization_id, id, given_name, family_name, given_key, family_key)"
        f" SELECT $1, pg_temp.xid($2, {CLIENT}, g), 'Given' || g, 'Family' || g % 100,"
        " 'given' || g, 'family' || g % 100 FROM generate_series(1, $3) g",
        org,
        n,
        t.clients,
    )
    # Appointment i: provider i % busy (its k-th, every SPAN / per days, an hour
    # long: never overlapping), client 1 for every 50th (a regular with a long
    # history), service i % booked; statuses mixed per provider.
    per = t.appointments // t.busy
    step = SPAN / per
    await conn.execute(
        "INSERT INTO appointments (organization_id, id, provider_id, client_id, service_id, during,"
        " occupied, status, price_minor, currency)"
        f" SELECT $1, pg_temp.xid($2, {APPOINTMENT}, i), pg_temp.xid($2, {PROVIDER}, p),"
        f" pg_temp.xid($2, {CLIENT}, CASE WHEN i % 50 = 0 THEN 1 ELSE (i * 7919) % $3 + 1 END),"
        f" pg_temp.xid($2, {SERVICE}, i % $4 + 1), r, r,"
        " (ARRAY['confirmed', 'confirmed', 'confirmed', 'completed', 'completed', 'cancelled',"
        " 'pending', 'no_show', 'confirmed', 'completed'])[1 + (k + p) % 10], 1000, 'EUR'"
        " FROM generate_series(1, $5) i,"
        " LATERAL (SELECT i % $6 + 1 AS p, i / $6 AS k) pk,"
        " LATERAL (SELECT tstzrange(s, s + interval '1 hour') AS r FROM"
        " (SELECT $7::timestamptz + k * $8::interval + (p % 40) * interval '30 minutes' AS s) s) x",
        org,
        n,
        t.clients,
        t.booked,
        t.appointments,
        t.busy,
        BASE,
        step,
    )
    # Payment j: of appointment j (none for every tenth), created in order over
    # the span; statuses mixed (a tenth failed).
    await conn.execute(
        "INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor,"
        " currency, status, method, created_at)"
        f" SELECT $1, pg_temp.xid($2, {PAYMENT}, j),"
        f" pg_temp.xid($2, {CLIENT}, CASE WHEN j % 50 = 0 THEN 1 ELSE (j * 7919) % $3 + 1 END),"
        f" CASE WHEN j % 10 = 3 THEN NULL ELSE pg_temp.xid($2, {APPOINTMENT}, j) END,"
        " 1000, 'EUR',"
        " (ARRAY['completed', 'completed', 'completed', 'completed', 'completed', 'completed',"
        " 'pending', 'refunded', 'completed', 'failed'])[1 + (j / 3) % 10],"
        " (ARRAY['card', 'cash', 'bank_transfer', 'other'])[1 + j % 4],"
        " $5::timestamptz + j * $6::interval"
        " FROM generate_series(1, $4) j",
        org,
        n,
        t.clients,
        t.appointments,
        BASE,
        SPAN / t.appointments,
    )


@dataclass(frozen=True)
class Data:
    conn: asyncpg.Connection
    # Shape name -> its statements' plans (see _plans).
    plans: dict[str, list[tuple[str, str, list[dict[str, Any]]]]] = field(default_factory=dict)


async def _load(conn: asyncpg.Connection) -> Data:
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SET maintenance_work_mem = '256MB'")
    await conn.execute(_FUNCTIONS)
    # The rows are consistent by construction: no foreign key triggers.
    await conn.execute("SET session_replication_role = replica")
    for t in TENANTS:
        await _load_tenant(conn, t)
    await conn.execute("RESET session_replication_role")
    # VACUUM too: the trigram GINs' pending lists flushed, as autovacuum leaves
    # them; their cost (and so the plans) otherwise depends on whether it ran.
    await conn.execute("VACUUM ANALYZE")
    return Data(conn)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def data(database_url: str) -> AsyncIterator[Data]:
    async with plans.database_of_its_own(database_url, "booking_lists") as conn:
        yield await _load(conn)


# -- plans ---------------------------------------------------------------------------

PAGE = 50
CAP = 10_000
ZERO = str(uuid.UUID(int=0))
LAST_ID = str(uuid.UUID(int=2**128 - 1))
T0 = BASE + timedelta(days=100)
M = MAIN.number
ORG_ID = _xid(M, ORG, 0)
REGULAR = _xid(M, CLIENT, 1)  # every 50th appointment and payment: 2,000 each
BUSY = _xid(M, PROVIDER, 7)  # 200 appointments over the span
SOME = tuple(sorted(_xid(M, PROVIDER, p) for p in range(10, 20)))
OFTEN = _xid(M, SERVICE, 5)  # 2,500 appointments


_nodes = plans.nodes
_explain = plans.custom_and_generic


def _summary(nodes: list[dict[str, Any]]) -> list[str]:
    """One line a node: type, relation / index, rows and loops (assertion messages)."""
    out = []
    for n in nodes:
        where = n.get("Index Name") or n.get("Relation Name") or n.get("CTE Name") or ""
        removed = n.get("Rows Removed by Filter", 0)
        out.append(
            f"{n['Node Type']} {where} rows={n.get('Actual Rows')} loops={n.get('Actual Loops')}"
            + (f" removed={removed}" if removed else "")
        )
    return out


def _scans(nodes: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """Scans of a table and of its indexes (named ix_/pk_<table>...)."""
    prefixes = (f"ix_{table}_", f"pk_{table}", f"ex_{table}_")
    return [
        n
        for n in nodes
        if n.get("Relation Name") == table or n.get("Index Name", "").startswith(prefixes)
    ]


def _read(nodes: list[dict[str, Any]]) -> int:
    """Rows the scans among ``nodes`` read (returned + removed), all loops."""
    return int(
        sum(
            (
                n.get("Actual Rows", 0)
                + n.get("Rows Removed by Filter", 0)
                + n.get("Rows Removed by Index Recheck", 0)
            )
            * n.get("Actual Loops", 1)
            for n in nodes
            if "Scan" in n["Node Type"] and n["Node Type"] != "Bitmap Index Scan"
        )
    )


def _used(nodes: list[dict[str, Any]]) -> set[str]:
    """Indexes the executed part of a plan read."""
    return {n["Index Name"] for n in nodes if "Index Name" in n and n.get("Actual Loops")}


@dataclass(frozen=True)
class Shape:
    """One list query shape: the Listing, its filters and order, and what its plans must show."""

    listing: Listing[Any]
    flt: Any
    order: str
    # A keyset inside the shape's rows: the deep page starts after it.
    after: tuple[Any, ...]
    # Indexes every page statement must read (all of them).
    uses: tuple[str, ...]
    # Tables never read sequentially (the list's own and those its filters probe).
    tables: tuple[str, ...]
    # Rows a page may read from `tables`: the page's, plus what its filters
    # remove (a range's day of margin, other statuses), never the tenant's.
    read: int = 4 * (PAGE + 1)
    # The page sorts the rows its filters select (no index order fits).
    sorts: bool = False
    # Ordered index scans merged (Merge Append), ties of the leading key then
    # sorted (Incremental Sort): a union's branches (client history).
    merges: bool = False


# Rows a day in the main tenant (appointments by start, payments by creation).
DAY = MAIN.appointments * 86_400 // int(SPAN.total_seconds())
A_START = "ix_appointments_org_start_at_id"
A_PROVIDER = "ix_appointments_org_provider_start_at_id"
A_CLIENT = "ix_appointments_org_client_start_at_id"
A_SERVICE = "ix_appointments_org_service_start_at_id"
P_CREATED = "ix_payments_org_created_at_id"
P_CLIENT = "ix_payments_org_client_created_at_id"
P_STATUS = "ix_payments_org_status_created_at_id"
P_APPOINTMENT = "ix_payments_org_appointment_id"
APPOINTMENTS = ("appointments",)
PAYMENTS = ("payments",)


def _appointments(flt: AppointmentFilter, uses: str, **kw: Any) -> Shape:
    order = kw.pop("order", "start_time")
    after = (T0 + timedelta(days=2), LAST_ID if order.endswith("desc") else ZERO)
    return Shape(aq.APPOINTMENTS, flt, order, after, (uses,), APPOINTMENTS, **kw)


def _payments(flt: PaymentFilter, uses: str, **kw: Any) -> Shape:
    after = (T0 + timedelta(days=3), LAST_ID)
    return Shape(pq.PAYMENTS, flt, "create_time desc", after, (uses,), PAYMENTS, **kw)


SHAPES: dict[str, Shape] = {
    # ListAppointments
    "appointments by tenant and start range": _appointments(
        AppointmentFilter(start=T0, end=T0 + timedelta(days=7)), A_START, read=PAGE + 1 + 2 * DAY
    ),
    "appointments by tenant and business dates": Shape(
        aq.APPOINTMENTS,
        AppointmentFilter(start_date=T0.date(), end_date=(T0 + timedelta(days=6)).date()),
        "start_time",
        (T0 + timedelta(days=2), ZERO),
        (A_START,),
        # The zone of each row's provider: a primary key probe.
        ("appointments", "providers"),
        read=2 * (PAGE + 1 + 2 * DAY),
    ),
    "appointments of one provider": _appointments(
        AppointmentFilter(provider_ids=(BUSY,)), A_PROVIDER
    ),
    "appointments of several providers in a range": _appointments(
        AppointmentFilter(provider_ids=SOME, start=T0, end=T0 + timedelta(days=60)),
        A_PROVIDER,
        # Each provider's first rows in the range (at most a page each: a
        # LATERAL per provider), merged and sorted.
        read=len(SOME) * 35,
        sorts=True,
    ),
    "appointments of several providers, no range": _appointments(
        AppointmentFilter(provider_ids=SOME),
        A_PROVIDER,
        # At most a page of each provider's, whatever it has: never all its rows.
        read=len(SOME) * (PAGE + 1),
        sorts=True,
    ),
    "appointments of several providers, no range, newest first": _appointments(
        AppointmentFilter(provider_ids=SOME),
        A_PROVIDER,
        order="start_time desc",
        read=len(SOME) * (PAGE + 1),
        sorts=True,
    ),
    "appointments of a client": _appointments(AppointmentFilter(client_id=REGULAR), A_CLIENT),
    "appointments of a service": _appointments(AppointmentFilter(service_id=OFTEN), A_SERVICE),
    "appointments by statuses in a range": _appointments(
        AppointmentFilter(statuses=("cancelled", "no_show"), start=T0, end=T0 + timedelta(days=30)),
        A_START,
        # A fifth of the rows match: five read a row found, plus the day of margin.
        read=10 * (PAGE + 1) + 2 * DAY,
    ),
    "appointments newest first": _appointments(
        AppointmentFilter(), A_START, order="start_time desc"
    ),
    # ListPayments
    "payments newest first": _payments(PaymentFilter(), P_CREATED),
    "payments in a created range": _payments(
        PaymentFilter(created_after=T0, created_before=T0 + timedelta(days=7)), P_CREATED
    ),
    "payments of one status in a created range": _payments(
        PaymentFilter(
            statuses=("failed",), created_after=T0, created_before=T0 + timedelta(days=30)
        ),
        P_STATUS,
    ),
    "payments of a client": _payments(PaymentFilter(client_id=REGULAR), P_CLIENT),
    "payments of an appointment": _payments(
        PaymentFilter(appointment_id=_xid(M, APPOINTMENT, 1234)), P_APPOINTMENT, sorts=True
    ),
    # ListClientHistory: both branches by their client index, newest first.
    "client history": Shape(
        hq.HISTORY,
        hq.HistoryFilter(client_id=REGULAR),
        "time desc",
        (T0 + timedelta(days=50), "payment", LAST_ID),
        (A_CLIENT, P_CLIENT),
        ("appointments", "payments"),
        merges=True,
    ),
}


def _catalogue(
    kind: str,
    listing: Listing[Any],
    make: Any,
    key: str,
    prefix: tuple[str, str],
    offered: tuple[str, dict[str, str], str, str],
) -> None:
    """ListProviders / ListServices shapes: name order; a 1-2 character prefix
    (and a keyset among its matches); a 3+ character search (the match path;
    a number, a rare term: the trigram index must find it); "offered by" (its
    filter, the offerings' index that serves it); create time with a range."""
    name_order = listing.default_order
    by_key = f"ix_{kind}_org_{key}_id"
    since = BASE - timedelta(minutes=MAIN.providers // 2)
    SHAPES[f"{kind} by name"] = Shape(
        listing, make(), name_order, ("leon", ZERO), (by_key,), (kind,)
    )
    SHAPES[f"{kind} by name prefix"] = Shape(
        listing, make(query=prefix[0]), name_order, (prefix[1], ZERO), (by_key,), (kind,)
    )
    SHAPES[f"{kind} by name search"] = Shape(
        listing,
        make(query="1234"),
        name_order,
        ("leon", ZERO),
        (f"ix_{kind}_org_{key}_trgm",),
        (kind,),
        # The walk (its budget), then the matches, sorted, and the page's rows.
        read=2_000 + 10 + 2 * (PAGE + 1),
        sorts=True,
    )
    # The three offerers (or offered) through the offerings' index, then sorted.
    label, flt, index, after = offered
    SHAPES[f"{kind} {label}"] = Shape(
        listing, make(**flt), name_order, (after, ZERO), (index,), (kind, "offerings"), sorts=True
    )
    SHAPES[f"{kind} by create time in a range"] = Shape(
        listing,
        make(created_after=since),
        "create_time",
        (since + timedelta(minutes=100), ZERO),
        (f"ix_{kind}_org_created_at_id",),
        (kind,),
    )


_catalogue(
    "providers",
    prq.PROVIDERS,
    prq.ProviderFilter,
    "display_key",
    ("kl", "klara m"),
    (
        "offering a service",
        {"service_id": _xid(M, SERVICE, 100)},
        "ix_offerings_org_service_id_provider_id",
        "leon",  # olga (.. 99), before: clara (.. 4099), hugo (.. 8099)
    ),
)
_catalogue(
    "services",
    cq.SERVICES,
    cq.ServiceFilter,
    "name_key",
    ("ma", "mas"),
    (
        "offered by a provider",
        {"provider_id": _xid(M, PROVIDER, 100)},
        "pk_offerings",
        "colour 4",  # colour 4101, colour 8101; before: colour 101
    ),
)


def _statements(shape: Shape) -> list[tuple[str, str, list[Any]]]:
    query = shape.listing.build(ORG_ID, shape.flt, shape.listing.orders[shape.order])
    out = []
    for label, number, after in (("page 1", 1, None), ("deep page", 5, shape.after)):
        sql, args = page_sql(query, PageRequest(size=PAGE, number=number, after=after, offset=0))
        out.append((label, sql, args))
    sql, args = count_sql(query, CAP)
    out.append(("count", sql, args))
    return out


async def _plans(data: Data, name: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(statement label, SQL, executed plan nodes) of a shape's statements,
    custom and generic plans, once a module."""
    if name not in data.plans:
        data.plans[name] = [
            (f"{label}, {mode} plan", sql, nodes)
            for label, sql, args in _statements(SHAPES[name])
            for mode, nodes in await _explain(data.conn, sql, args)
        ]
    return data.plans[name]


def _check(name: str, label: str, sql: str, nodes: list[dict[str, Any]]) -> None:
    shape = SHAPES[name]
    where = (name, label, sql, _summary(nodes))
    for table in shape.tables:
        seq = [n for n in _scans(nodes, table) if n["Node Type"] == "Seq Scan"]
        assert not seq, ("Seq Scan", table, *where)
    read = sum(_read(_scans(nodes, table)) for table in shape.tables)
    if label.startswith("count"):
        # At most the cap + 1 rows (or the filter's range, when smaller).
        assert read <= CAP + 1 + shape.read, ("read", read, *where)
        return
    # The keysets lie inside the shape's rows: every page finds some.
    assert nodes[0]["Actual Rows"] > 0, ("empty page", *where)
    missing = set(shape.uses) - _used(nodes)
    assert not missing, ("index not used", missing, *where)
    assert read <= shape.read, ("read", read, *where)
    if shape.merges:
        assert any(n["Node Type"] == "Merge Append" for n in nodes), ("not merged", *where)
    if not shape.sorts:
        sorting = ("Sort",) if shape.merges else ("Sort", "Incremental Sort")
        sorts = [n for n in nodes if n["Node Type"] in sorting]
        assert not sorts, ("sorted, not read in index order", *where)


@pytest.mark.parametrize("name", list(SHAPES))
async def test_list_plan(data: Data, name: str) -> None:
    for label, sql, nodes in await _plans(data, name):
        _check(name, label, sql, nodes)


# VIEW_FULL: the related rows of a page, one statement each (ListSpec.related):
# the page's list shape, and the index each related statement must read.
RELATED: dict[str, tuple[str, tuple[Related, ...], dict[str, str]]] = {
    "appointments": (
        "appointments by tenant and start range",
        appointment_handlers.LIST.related,
        {
            "clients": "pk_clients",
            "services": "pk_services",
            "providers": "pk_providers",
            "payments": P_APPOINTMENT,
        },
    ),
    "payments": (
        "payments newest first",
        payment_handlers.LIST.related,
        {"appointments": "pk_appointments", "clients": "pk_clients"},
    ),
}


async def _related_plans(data: Data, listing: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(table and plan, SQL, plan nodes) of each related statement, custom and
    generic plans, for the first page of the list's shape (its rows' ids, as
    ListSpec.serve passes them)."""
    key = f"{listing} (full view)"
    if key not in data.plans:
        shape, related, _ = RELATED[listing]
        _, sql, args = _statements(SHAPES[shape])[0]
        rows = (await data.conn.fetch(sql, *args))[:PAGE]
        assert len(rows) == PAGE
        data.plans[key] = [
            (f"{r.field}, {mode} plan", r.sql, nodes)
            for r in related
            for mode, nodes in await _explain(data.conn, r.sql, [ORG_ID, r.ids(rows)])
        ]
    return data.plans[key]


@pytest.mark.parametrize("listing", list(RELATED))
async def test_full_view_related_plans(data: Data, listing: str) -> None:
    _, related, indexes = RELATED[listing]
    plans = await _related_plans(data, listing)
    assert len(plans) == 2 * len(related)
    for label, sql, nodes in plans:
        table = label.split(",")[0]
        where = (listing, label, sql, _summary(nodes))
        scans = _scans(nodes, table)
        assert scans, where
        assert all(n["Node Type"] != "Seq Scan" for n in scans), ("Seq Scan", *where)
        assert indexes[table] in _used(nodes), ("index not used", indexes[table], *where)
        # At most the page's related rows (a payment an appointment here).
        assert _read(scans) <= PAGE, ("read", _read(scans), *where)


class _Recorder:
    """Stands in for alembic's ``op`` while a migration's upgrade() runs: it
    records the indexes created and does nothing else (no rows to backfill)."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create_index(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.created.append(name)

    def get_bind(self) -> Any:
        return self

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def all(self) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _indexes_created_by_0004() -> list[str]:
    path = test_settings().migrations_dir / "versions" / "0004_lists_for_every_resource.py"
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recorder = _Recorder()
    vars(module)["op"] = recorder
    module.upgrade()
    return recorder.created


async def test_every_index_of_0004_serves_a_list(data: Data) -> None:
    """No index without a query: each index migration 0004 creates (as
    declared in server/db/schema.py) is read by the plan of at least one list
    statement above, and is the index some shape expects."""
    created = set(_indexes_created_by_0004())
    declared = {str(i.name) for table in schema.metadata.tables.values() for i in table.indexes}
    assert len(created) >= 13, created  # 3 + 3 + 4 + 3 (see its docstring)
    assert created <= declared, created - declared
    expected = {i for shape in SHAPES.values() for i in shape.uses}
    expected |= {i for _, _, indexes in RELATED.values() for i in indexes.values()}
    assert created <= expected, ("no shape expects", created - expected)
    seen: set[str] = set()
    for name in SHAPES:
        for _, _, nodes in await _plans(data, name):
            seen |= _used(nodes)
    for listing in RELATED:
        for _, _, nodes in await _related_plans(data, listing):
            seen |= _used(nodes)
    assert created <= seen, ("never read", created - seen)
