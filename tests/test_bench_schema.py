"""bench.generate's COPY column lists are the schema's: they cannot drift."""

from __future__ import annotations

from sqlalchemy import Column, Constraint, Index, Table

from bench.generate import COPY_COLUMNS
from server.db import schema


def _required(table: Table) -> set[str]:
    """Columns a row cannot be written without: NOT NULL, no server default,
    not computed."""
    out = set()
    for column in table.columns:
        assert isinstance(column, Column)
        if not column.nullable and column.server_default is None and column.computed is None:
            out.add(column.name)
    return out


def test_generator_copies_real_writable_columns_and_every_required_one() -> None:
    tables = {t.name: t for t in schema.metadata.sorted_tables}
    assert set(COPY_COLUMNS) <= set(tables)
    for name, columns in COPY_COLUMNS.items():
        table = tables[name]
        names = {c.name for c in table.columns}
        assert len(set(columns)) == len(columns), name
        assert set(columns) <= names, (name, set(columns) - names)
        computed = {c.name for c in table.columns if c.computed is not None}
        assert not set(columns) & computed, (name, set(columns) & computed)
        assert _required(table) <= set(columns), (name, _required(table) - set(columns))


def test_generator_writes_every_folded_search_key() -> None:
    """The clients' derived keys (server.queries.clients.SEARCH_KEYS) and their
    sources are all in the COPY, so that the generator computes each key."""
    from server.queries.clients import SEARCH_KEYS

    copied = set(COPY_COLUMNS["clients"])
    for key in SEARCH_KEYS:
        assert {key.column, key.source} <= copied, key


async def test_booking_dataset_obeys_the_booking_rules_and_keeps_the_constraints(
    root_url: str,
) -> None:
    """generate_booking on a fresh database, through its fast path (constraints
    and indexes dropped for the COPY, added back from the schema): every
    appointment it places is one the server's own rules would book (hours of
    the provider's zone and date, overrides, time off, the offering's duration,
    the service's buffers, no overlap with the others), and the appointments'
    constraints and indexes are all back."""
    import random
    import uuid

    import asyncpg

    from bench.generate import BOOKING_ZONES, generate, generate_booking
    from server.booking import evaluate_booking
    from server.db.engine import Conn, to_asyncpg_dsn
    from server.db.migrate import upgrade
    from server.testing import create_database, drop_database, test_settings

    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    try:
        await upgrade(url, test_settings().migrations_dir)
        data = await generate_booking(url, 7, 3_000, clients=300, fast_load=True)
        again = await generate_booking(url, 7, 3_000, clients=300)
        assert again == data  # present: reused, not loaded twice
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            per_provider = await conn.fetch(
                "SELECT provider_id, count(*) AS n FROM appointments "
                "WHERE organization_id = $1 GROUP BY 1",
                data.org,
            )
            assert sorted(r["n"] for r in per_provider) == [428] * 3 + [429] * 4
            statuses = {
                r["status"] for r in await conn.fetch("SELECT DISTINCT status FROM appointments")
            }
            assert statuses == {"pending", "confirmed", "completed", "cancelled", "no_show"}
            assert await conn.fetchval(
                "SELECT count(*) FROM appointments WHERE lower(during) > $1", data.generated_at
            )
            zones = {r["time_zone"] for r in await conn.fetch("SELECT time_zone FROM providers")}
            assert zones <= {z for z, _ in BOOKING_ZONES} and len(zones) > 1
            names = {
                r["name"]
                for r in await conn.fetch(
                    "SELECT conname AS name FROM pg_constraint "
                    "WHERE conrelid = 'appointments'::regclass UNION "
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'appointments'"
                )
            }
            items: list[Constraint | Index] = [
                *schema.appointments.constraints,
                *schema.appointments.indexes,
            ]
            expected = {str(item.name) for item in items}
            assert expected <= names, expected - names
            blocking = await conn.fetch(
                "SELECT id::text, provider_id::text, service_id::text, during, occupied "
                "FROM appointments WHERE organization_id = $1 "
                "AND status IN ('pending', 'confirmed', 'completed')",
                data.org,
            )
            for row in random.Random(3).sample(blocking, 150):
                start = row["during"].lower
                evaluation = await evaluate_booking(
                    Conn(conn, None),
                    org_id=data.org,
                    provider_id=row["provider_id"],
                    service_id=row["service_id"],
                    start=start,
                    now=start,
                    exclude_appointment_id=row["id"],
                )
                assert evaluation.conflicts == (), (row, evaluation.conflicts)
                assert (evaluation.end, evaluation.occupied_start, evaluation.occupied_end) == (
                    row["during"].upper,
                    row["occupied"].lower,
                    row["occupied"].upper,
                )
        finally:
            await conn.close()
        # The clients bench's dataset loads beside it (its own organization).
        org = await generate(url, 2_000, slug="clients-too")
        assert org != data.org
    finally:
        await drop_database(root_url, name)
