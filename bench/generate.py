"""Deterministic dataset generator, loaded with COPY.

    python -m bench.generate --clients 1000000 [--database-url URL] [--seed 7]

Creates one organization ("bench") holding the big client list, plus providers,
services, appointments (non-overlapping per provider) and payments, and a few
small tenants. Ids are UUIDv7 so that index inserts stay local.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from asyncpg.types import Range

from server.db.engine import to_asyncpg_dsn

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


def _uuid7(ms: int, rng: random.Random) -> str:
    value = (
        (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    )
    return str(uuid.UUID(int=value))


async def generate(url: str, clients: int, seed: int = 7, batch: int = 100_000) -> str:
    rng = random.Random(seed)
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        existing = await conn.fetchval("SELECT id FROM organizations WHERE slug = $1", BENCH_SLUG)
        if existing is not None:
            n = await conn.fetchval(
                "SELECT count(*) FROM clients WHERE organization_id = $1", existing
            )
            if n == clients:
                print(f"dataset present: {n} clients in org {existing}")
                return str(existing)
            raise SystemExit(f"org 'bench' exists with {n} clients; use a fresh database")
        start = time.perf_counter()
        base = datetime(2024, 1, 1, tzinfo=UTC)
        base_ms = int(base.timestamp() * 1000)
        org = _uuid7(base_ms, rng)
        await conn.execute(
            "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, $2, $3, $4)",
            org,
            "Bench",
            BENCH_SLUG,
            "Europe/Berlin",
        )
        for i in range(5):  # small neighbours
            other = _uuid7(base_ms + i, rng)
            await conn.execute(
                "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1,$2,$3,$4)",
                other,
                f"Small {i}",
                f"small-{i}",
                "UTC",
            )
        providers = [
            (org, _uuid7(base_ms + i, rng), f"Provider {i}", "Europe/Berlin") for i in range(50)
        ]
        await conn.copy_records_to_table(
            "providers",
            records=providers,
            columns=["organization_id", "id", "display_name", "time_zone"],
        )
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
        await conn.copy_records_to_table(
            "services",
            records=services,
            columns=[
                "organization_id",
                "id",
                "name",
                "duration_minutes",
                "price_minor",
                "currency",
            ],
        )
        # Clients: created over two years, ordered ids.
        span_ms = 2 * 365 * 86_400_000
        client_ids: list[str] = []
        cols = [
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
        ]
        for first in range(0, clients, batch):
            records = []
            for i in range(first, min(clients, first + batch)):
                ms = base_ms + i * span_ms // max(clients, 1)
                cid = _uuid7(ms, rng)
                given, family = rng.choice(GIVEN), rng.choice(FAMILY)
                created = base + timedelta(milliseconds=ms - base_ms)
                records.append(
                    (
                        org,
                        cid,
                        given,
                        family,
                        f"{given}.{family}{i}@example.com".lower(),
                        f"+49151{i:08d}",
                        f"crm-{i}",
                        rng.random() > 0.1,
                        created,
                        created,
                    )
                )
                if i % 10 == 0:
                    client_ids.append(cid)
            await conn.copy_records_to_table("clients", records=records, columns=cols)
        t_clients = time.perf_counter() - start
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
        await conn.copy_records_to_table(
            "appointments",
            records=appointments,
            columns=[
                "organization_id",
                "id",
                "provider_id",
                "client_id",
                "service_id",
                "during",
                "status",
                "price_minor",
                "currency",
            ],
        )
        await conn.copy_records_to_table(
            "payments",
            records=payments,
            columns=[
                "organization_id",
                "id",
                "client_id",
                "appointment_id",
                "amount_minor",
                "currency",
                "status",
                "method",
            ],
        )
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
