"""Deterministic dataset generator, loaded with COPY.

    python -m bench.generate --clients 1000000 [--database-url URL] [--seed 7]

Creates one organization ("bench") holding the big client list, plus providers,
services, appointments (non-overlapping per provider) and payments, and a few
small tenants. Ids are UUIDv7 so that index inserts stay local.

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
import random
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from asyncpg.types import Range
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

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
    "providers": ("organization_id", "id", "display_name", "time_zone"),
    "services": ("organization_id", "id", "name", "duration_minutes", "price_minor", "currency"),
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
            (org, _uuid7(base_ms + i, rng), f"Provider {i}", "Europe/Berlin") for i in range(50)
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
            )
            for i in range(20)
        ]
        await _copy(conn, "services", services)
        # Clients: created over two years, ordered ids.
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
                if i % 10 == 0:
                    client_ids.append(cid)
            await _copy(conn, "clients", records)
        for _, create in indexes:
            await conn.execute(create)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(generate(args.database_url, args.clients, args.seed))


if __name__ == "__main__":
    main()
