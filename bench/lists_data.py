"""The lists bench's dataset (bench/lists.py): the booking dataset at list scale
plus payments, and a few small tenants beside it.

generate_lists() loads, unless present:

- the big tenant (slug "bench-lists"): bench.generate.generate_booking with
  1,000 providers in five IANA zones, 1M clients (created over two years) and
  5M appointments placed in the providers' working time (back in time from
  four weeks ahead, every working minute booked: ~2.6 years), all by COPY (binary) with
  the appointments' constraints and indexes added back from the schema;
- its payments, by one set-based INSERT ... SELECT over the appointments
  (no Python row loop): a completed appointment is paid (card, cash, bank
  transfer, other) minutes after it ends, some after a failed first attempt;
  a no-show is charged half or the charge fails; half the cancelled ones had
  a deposit, refunded; coming ones hold a pending deposit taken when booked.
  Whichever of those rows there are, at most ``payments`` are kept. The
  payments' keys, foreign keys and indexes are dropped for the load and
  added back from server.db.schema (which checks the rows);
- SMALL_TENANTS small tenants (generate_booking at a few providers) with
  their payments the same way;
- ANALYZE;
- each tenant's refunds (REFUNDS_SQL): the raw truth of a refund is the
  refunds table, so a payment loaded as refunded gets one refund of its
  refunded amount, dated at the payment's updated_at (as migration 0006's
  LEGACY_REFUNDS_SQL does for the rows it finds), one set-based INSERT;
- each tenant's rollups (the summaries' tables), built from nothing by
  ``server.queries.rollup_check.check_tenant(..., repair=True)``: the
  backfill's own measurement, its time printed and returned; then VACUUM
  (ANALYZE) of the rollup tables.

Every step is skipped when its rows are there already (a tenant by its slug
and counts, payments by any payment of the tenant: they are loaded in one
statement, so all or none; refunds likewise; rollups by the tenant's new
clients per date, the backfill's last batch: an interrupted backfill runs
again, and a repair of partial rollups adds what is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import ForeignKeyConstraint, PrimaryKeyConstraint

from bench.generate import generate_booking, load_rebuild
from server.db import schema
from server.db.engine import Conn, to_asyncpg_dsn
from server.queries.rollup_check import check_tenant
from server.queries.rollups import CLIENT_VISITS, TABLES

__all__ = [
    "LISTS_SLUG",
    "SMALL_TENANTS",
    "ListsDataset",
    "add_dataset_arguments",
    "dataset_options",
    "generate_lists",
    "lists_database",
]

LISTS_SLUG = "bench-lists"
SMALL_TENANTS = 3
# The booked share of past working time: 5,000 appointments a provider span ~2 years.
PAST_FILL = 1.0

# Columns written by PAYMENTS_SQL (tests/test_bench_schema.py's rule: every
# required column, none computed; checked by the INSERT itself here).
# $1 tenant, $2 how many at most, $3 the generation instant (no payment is
# created after it). h1..h3: three independent uniform draws in [0, 1) per
# (appointment, k), from a hash of the id (deterministic, no random()).
PAYMENTS_SQL = """
INSERT INTO payments (organization_id, id, client_id, appointment_id, amount_minor,
                      currency, status, method, created_at, updated_at, refunded_minor)
SELECT organization_id, gen_random_uuid(), client_id, id, amount, currency, pay_status,
       pay_method, at, at, CASE WHEN pay_status = 'refunded' THEN amount ELSE 0 END
FROM (
    SELECT a.organization_id, a.id, a.client_id, a.currency, k, h1, h2, h3,
        CASE
            WHEN a.status = 'completed' AND k = 1 THEN a.price_minor
            WHEN a.status = 'completed' THEN a.price_minor          -- the failed first try
            WHEN a.status = 'no_show' THEN a.price_minor / 2
            ELSE a.price_minor / 5                                   -- a deposit
        END AS amount,
        CASE
            WHEN a.status = 'completed' AND k = 1 THEN 'completed'
            WHEN a.status = 'completed' THEN 'failed'
            WHEN a.status = 'no_show' THEN CASE WHEN h1 < 0.5 THEN 'completed' ELSE 'failed' END
            WHEN a.status = 'cancelled' THEN 'refunded'
            ELSE 'pending'
        END AS pay_status,
        CASE
            WHEN h2 < 0.6 THEN 'card' WHEN h2 < 0.85 THEN 'cash'
            WHEN h2 < 0.95 THEN 'bank_transfer' ELSE 'other'
        END AS pay_method,
        least($3::timestamptz, CASE
            WHEN a.status = 'completed' AND k = 1
                THEN a.end_at + make_interval(secs => 60 + h3 * 1800)
            WHEN a.status = 'completed' THEN a.end_at + make_interval(secs => h3 * 50)
            WHEN a.status = 'no_show' THEN a.end_at + make_interval(secs => 3600 + h3 * 86400)
            ELSE a.start_at - make_interval(secs => 3600 + h3 * 14 * 86400)
        END) AS at
    FROM appointments a
    CROSS JOIN LATERAL (VALUES (1), (2)) AS ks(k)
    CROSS JOIN LATERAL (
        SELECT (hashtext(a.id::text || k) & 65535) / 65536.0 AS h1,
               (hashtext(a.id::text || k || 'm') & 65535) / 65536.0 AS h2,
               (hashtext(a.id::text || k || 't') & 65535) / 65536.0 AS h3
    ) AS h
    WHERE a.organization_id = $1
      AND (
        (k = 1 AND (a.status <> 'cancelled' OR h1 < 0.5))
        OR (k = 2 AND a.status = 'completed' AND h1 < 0.08)
      )
) AS candidates
LIMIT $2
"""


# One refund per payment loaded as refunded ($1 tenant): its refunded
# amount, in its currency, at its updated_at (migration 0006's
# LEGACY_REFUNDS_SQL for a tenant without refunds).
REFUNDS_SQL = """
INSERT INTO refunds (organization_id, id, payment_id, amount_minor, currency, reason, created_at)
SELECT organization_id, gen_random_uuid(), id, refunded_minor, currency,
       'bench: refunded when loaded', updated_at
FROM payments
WHERE organization_id = $1 AND refunded_minor > 0
"""

# The rollup tables (vacuumed and analyzed once built).
ROLLUP_TABLES = (
    *(t.table for t in TABLES),
    CLIENT_VISITS.table,
    "organization_day_new_clients",
)


@dataclass(frozen=True, slots=True)
class ListsDataset:
    org: str
    generated_at: datetime
    providers: int
    appointments: int
    payments: int
    clients: int
    small_orgs: tuple[str, ...]
    refunds: int = 0
    # Seconds the big tenant's rollups took to build from nothing (check_tenant
    # with repair), when this run built them; None when they were there.
    rollups_backfill_s: float | None = None


def _payments_rebuild() -> list[tuple[str, str, str]]:
    """The payments' primary key, foreign keys and secondary indexes, then the
    refunds' foreign key to them (dropped first, added back last: it needs the
    primary key)."""
    refunds_fk = [
        step
        for step in load_rebuild(schema.refunds, (ForeignKeyConstraint,))
        if "payment_id" in step[0]
    ]
    return [
        *load_rebuild(schema.payments, (ForeignKeyConstraint, PrimaryKeyConstraint)),
        *refunds_fk,
    ]


async def _load_payments(
    conn: asyncpg.Connection, org: str, most: int, now: datetime, *, fast: bool
) -> int:
    """The tenant's payments (PAYMENTS_SQL) unless it has some; how many it has."""
    have = int(await conn.fetchval("SELECT count(*) FROM payments WHERE organization_id = $1", org))
    if have:
        return have
    rebuild = _payments_rebuild() if fast else []
    for _, drop, _ in reversed(rebuild):
        await conn.execute(drop)
    t = time.perf_counter()
    status = await conn.execute(PAYMENTS_SQL, org, most, now)
    loaded = int(status.split()[-1])
    print(f"  payments: {loaded:,} in {time.perf_counter() - t:.0f}s", flush=True)
    for name, _, add in rebuild:
        t = time.perf_counter()
        await conn.execute(add)
        print(f"  {name}: {time.perf_counter() - t:.1f}s", flush=True)
    return loaded


async def _load_refunds(conn: asyncpg.Connection, org: str) -> int:
    """The tenant's refunds (REFUNDS_SQL) unless it has some; how many it has."""
    have = int(await conn.fetchval("SELECT count(*) FROM refunds WHERE organization_id = $1", org))
    if have:
        return have
    t = time.perf_counter()
    loaded = int((await conn.execute(REFUNDS_SQL, org)).split()[-1])
    print(f"  refunds: {loaded:,} in {time.perf_counter() - t:.1f}s", flush=True)
    return loaded


async def _build_rollups(conn: asyncpg.Connection, org: str) -> float | None:
    """The tenant's rollups from its raw rows (check_tenant, repair), unless
    built: the seconds it took, None when skipped."""
    if await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM organization_day_new_clients WHERE organization_id = $1)",
        org,
    ):
        return None
    t = last = time.perf_counter()

    def progress(batch: str) -> None:
        nonlocal last
        if time.perf_counter() - last >= 30:
            last = time.perf_counter()
            print(f"  rollups of {org}: {batch} ({last - t:.0f}s)", flush=True)

    report = await check_tenant(Conn(conn, None), org, repair=True, progress=progress)
    took = time.perf_counter() - t
    print(
        f"  rollups of {org}: built in {took:.1f}s ({report.batches} batches, "
        f"{report.total:,} rows written)",
        flush=True,
    )
    return took


async def generate_lists(
    url: str,
    providers: int = 1_000,
    appointments: int = 5_000_000,
    payments: int = 5_000_000,
    clients: int = 1_000_000,
    seed: int = 7,
) -> ListsDataset:
    """Load the lists dataset (see the module docstring) unless present."""
    started = time.perf_counter()
    big = await generate_booking(
        url, providers, appointments, clients, seed, slug=LISTS_SLUG, past_fill=PAST_FILL
    )
    small = [
        await generate_booking(
            url, 4, 2_000, clients=500, seed=seed + 1 + i, slug=f"{LISTS_SLUG}-small-{i}"
        )
        for i in range(SMALL_TENANTS)
    ]
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        fresh = not await conn.fetchval(
            "SELECT count(*) FROM payments WHERE organization_id = $1", big.org
        )
        # The small tenants first (indexes in place: a few thousand rows), then
        # the big one with its keys and indexes rebuilt around the load.
        for s in small:
            await _load_payments(conn, s.org, s.appointments, s.generated_at, fast=False)
        n = await _load_payments(
            conn, big.org, payments, big.generated_at, fast=payments >= 100_000
        )
        if fresh:
            await conn.execute("ANALYZE")
            print(f"lists dataset loaded in {time.perf_counter() - started:.0f}s", flush=True)
        refunds = 0
        for org in (*(s.org for s in small), big.org):
            refunds = await _load_refunds(conn, org)
        backfill = None
        for org in (*(s.org for s in small), big.org):
            backfill = await _build_rollups(conn, org)
        if backfill is not None:
            # As autovacuum would after such inserts: statistics, and the
            # visibility map that lets the summaries' index-only scans skip
            # the heap.
            await conn.execute(f"VACUUM (ANALYZE) refunds, {', '.join(ROLLUP_TABLES)}")
    finally:
        await conn.close()
    return ListsDataset(
        org=big.org,
        generated_at=big.generated_at,
        providers=big.providers,
        appointments=big.appointments,
        payments=n,
        clients=clients,
        small_orgs=tuple(s.org for s in small),
        refunds=refunds,
        rollups_backfill_s=backfill,
    )


# -- the command line of the benches on this dataset (bench.lists, bench.summaries) --------


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """--database-url, --quick and the dataset's sizes."""
    parser.add_argument("--database-url")
    parser.add_argument("--quick", action="store_true", help="20 providers, 10k clients, 50k + 50k")
    parser.add_argument("--providers", type=int)
    parser.add_argument("--appointments", type=int)
    parser.add_argument("--payments", type=int, help="default: as many as appointments")
    parser.add_argument("--clients", type=int)


def dataset_options(args: argparse.Namespace) -> str:
    """The sizes (defaults filled in: full scale, or --quick's) as options."""
    quick = (20, 50_000, 10_000) if args.quick else (1_000, 5_000_000, 1_000_000)
    args.providers = args.providers or quick[0]
    args.appointments = args.appointments or quick[1]
    args.clients = args.clients or quick[2]
    args.payments = args.payments or args.appointments
    return (
        f"--providers {args.providers} --appointments {args.appointments} "
        f"--payments {args.payments} --clients {args.clients}"
    )


@contextlib.contextmanager
def lists_database(args: argparse.Namespace) -> Iterator[tuple[str, ListsDataset]]:
    """The dataset of ``args``' sizes (dataset_options first) in its own
    database, migrated and loaded unless present: of an embedded PostgreSQL in
    bench/results/pgdata-lists (running while this is open), or on
    --database-url."""
    from bench.run import RESULTS, ROOT, database
    from server.db.migrate import upgrade

    name = f"lists_{args.providers}p_{args.appointments}a_{args.payments}pay_{args.clients}c"
    with database(args.database_url, RESULTS / "pgdata-lists", name) as url:
        asyncio.run(upgrade(url, ROOT / "alembic"))
        t0 = time.perf_counter()
        data = asyncio.run(
            generate_lists(url, args.providers, args.appointments, args.payments, args.clients)
        )
        print(f"dataset ready ({time.perf_counter() - t0:.0f}s): {data}", flush=True)
        yield url, data
