"""`booking-data rollups check|repair` (server.queries.rollup_check): drift is
found row by row, repaired exactly, also while writes go on, and from nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from booking.v1 import appointments_pb2, catalog_pb2, resources_pb2

from server.db.engine import Conn
from server.db.schema import ROLLUP_TABLES
from server.queries import rollups
from server.queries.rollup_check import check_tenant
from server.testing import assert_eventually
from tests.conftest import Bookable, Stubs, make_bookable
from tests.test_appointments import at, book, ts
from tests.test_payments import record, refund

PaymentStatus = resources_pb2.PaymentStatus


async def _history(stubs: Stubs, org: str) -> list[Bookable]:
    """Two providers in zones far apart, bookings on both sides of their local
    midnights, completed / cancelled / no-show ones, payments and refunds."""
    places = [
        await make_bookable(stubs, org, time_zone="Pacific/Auckland"),
        await make_bookable(stubs, org, time_zone="America/Los_Angeles"),
    ]
    for n, b in enumerate(places):
        for k, change in enumerate(("complete", "cancel", "no_show", None, "complete")):
            a = await book(stubs, b, at(-3000 + 600 * k + 45 * n), status=2)
            if change == "complete":
                await stubs.appointments.CompleteAppointment(
                    appointments_pb2.CompleteAppointmentRequest(
                        organization_id=org, appointment_id=a.id
                    )
                )
                p = await record(stubs, b, appointment_id=a.id)
                await refund(stubs, org, p.id, amount_minor=500 + k)
            elif change == "cancel":
                await stubs.appointments.CancelAppointment(
                    appointments_pb2.CancelAppointmentRequest(
                        organization_id=org, appointment_id=a.id
                    )
                )
            elif change == "no_show":
                await stubs.appointments.MarkAppointmentNoShow(
                    appointments_pb2.MarkAppointmentNoShowRequest(
                        organization_id=org, appointment_id=a.id
                    )
                )
        await record(stubs, b, amount=700)  # no appointment: the client's balance only
        await record(stubs, b, amount=900, status=PaymentStatus.PAYMENT_STATUS_PENDING)
    return places


async def _snapshot(db: asyncpg.Connection, org: str) -> dict[str, set[tuple[Any, ...]]]:
    out = {}
    for table in ROLLUP_TABLES:
        columns = [c.name for c in table.columns if c.name != "replaced_first_visit_date"]
        rows = await db.fetch(
            f"SELECT {', '.join(columns)} FROM {table.name} WHERE organization_id = $1", org
        )
        keys = len(table.primary_key.columns)
        # A row whose measures are all zero is no row (a repair zeroes, never deletes).
        out[table.name] = {tuple(r) for r in rows if any(v != 0 for v in tuple(r)[keys:])}
    return out


async def _check(db: asyncpg.Connection, org: str, repair: bool = False) -> dict[str, int]:
    report = await check_tenant(Conn(db, None), org, repair=repair, client_batch=3)
    return {t: n for t, n in report.drifted.items() if n}


async def test_written_rollups_have_no_drift(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    await _history(stubs, org)
    assert await _check(db, org) == {}


async def test_a_reschedule_to_another_provider_takes_its_payments_along(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Payments and refunds count for their appointment's provider, dated in
    its zone: moved to a provider on the other side of the world, they move
    with it (and the rollups keep no trace of the old one)."""
    nz = await make_bookable(stubs, org, time_zone="Pacific/Auckland")
    la = await make_bookable(stubs, org, time_zone="America/Los_Angeles")
    await stubs.catalog.SetOffering(
        catalog_pb2.SetOfferingRequest(
            organization_id=org,
            offering=resources_pb2.Offering(provider_id=la.provider_id, service_id=nz.service_id),
        )
    )
    a = await book(stubs, nz, at(600), status=2)
    p = await record(stubs, nz, appointment_id=a.id)
    await refund(stubs, org, p.id, amount_minor=300)
    await stubs.appointments.RescheduleAppointment(
        appointments_pb2.RescheduleAppointmentRequest(
            organization_id=org,
            appointment_id=a.id,
            provider_id=la.provider_id,
            start_time=ts(at(900)),
            override_rules=True,
        )
    )
    assert await _check(db, org) == {}
    rows = await db.fetch(
        "SELECT provider_id::text, sum(paid_minor) AS paid, sum(refunded_minor) AS refunded "
        "FROM provider_day_totals WHERE organization_id = $1 GROUP BY 1",
        org,
    )
    assert {r["provider_id"]: (r["paid"], r["refunded"]) for r in rows} == {
        nz.provider_id: (0, 0),
        la.provider_id: (2500, 300),
    }


async def test_drift_is_reported_per_row_and_repaired_exactly(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    places = await _history(stubs, org)
    before = await _snapshot(db, org)
    p = places[0].provider_id
    await db.execute(
        "UPDATE provider_day_totals SET completed = completed + 1 "
        "WHERE organization_id = $1 AND provider_id = $2 "
        "AND business_date = (SELECT min(business_date) FROM provider_day_totals "
        "WHERE organization_id = $1 AND provider_id = $2)",
        org,
        p,
    )
    await db.execute(
        "DELETE FROM client_totals WHERE organization_id = $1 AND client_id = $2",
        org,
        places[1].client_id,
    )
    await db.execute(
        "INSERT INTO provider_day_totals (organization_id, provider_id, business_date, currency, "
        "pending) VALUES ($1, $2, '1999-01-01', 'EUR', 3)",
        org,
        p,
    )
    await db.execute(
        "UPDATE client_visits SET first_visit_date = first_visit_date - 1 "
        "WHERE organization_id = $1 AND client_id = $2",
        org,
        places[0].client_id,
    )
    assert await _check(db, org) == {
        "provider_day_totals": 2,
        "client_totals": 1,
        "client_visits": 1,
    }
    assert await _check(db, org, repair=True) == {
        "provider_day_totals": 2,
        "client_totals": 1,
        "client_visits": 1,
    }
    assert await _check(db, org) == {}
    assert await _snapshot(db, org) == before


async def test_repair_builds_the_rollups_from_nothing(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    await _history(stubs, org)
    before = await _snapshot(db, org)
    for table in ROLLUP_TABLES:
        await db.execute(f"DELETE FROM {table.name} WHERE organization_id = $1", org)
    assert sum((await _check(db, org)).values()) > 0
    await _check(db, org, repair=True)
    assert await _check(db, org) == {}
    assert await _snapshot(db, org) == before


async def test_a_repair_while_writes_go_on_loses_none_of_them(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str
) -> None:
    """The rollups are emptied, then rebuilt by a repair while bookings,
    completions and payments keep coming: afterwards no drift."""
    places = await _history(stubs, org)
    for table in ROLLUP_TABLES:
        await db.execute(f"DELETE FROM {table.name} WHERE organization_id = $1", org)

    async def writes() -> None:
        for k in range(12):
            b = places[k % 2]
            a = await book(stubs, b, at(3000 + 90 * k) - timedelta(days=k), status=2)
            await stubs.appointments.CompleteAppointment(
                appointments_pb2.CompleteAppointmentRequest(
                    organization_id=org, appointment_id=a.id
                )
            )
            await record(stubs, b, appointment_id=a.id)

    verified: list[list[int]] = []

    async def repairs() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(3):
                report = await check_tenant(Conn(conn, None), org, repair=True, client_batch=1)
                verified.append(report.verifications)
        finally:
            await conn.close()

    await asyncio.gather(writes(), repairs())
    # Each repair was exact at once (its own check found nothing), and so is the end.
    assert verified == [[0], [0], [0]]
    assert await _check(db, org) == {}


async def test_a_repair_keeps_a_visit_written_while_it_waits(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str
) -> None:
    """The client's visits row is missing; a completion of a later visit has
    applied its facts but not committed when a repair reaches the row: the
    repair waits, then merges (visits 2, the first visit the old one, the last
    the new one) instead of overwriting with what its snapshot saw."""
    b = await make_bookable(stubs, org, time_zone="Europe/London")
    first = await book(stubs, b, at(-3000), status=2)
    await stubs.appointments.CompleteAppointment(
        appointments_pb2.CompleteAppointmentRequest(organization_id=org, appointment_id=first.id)
    )
    later = await book(stubs, b, at(-1500), status=2)
    await db.execute("DELETE FROM client_visits WHERE organization_id = $1", org)
    holder = await asyncpg.connect(database_url)
    repairing = None
    try:
        tx = holder.transaction()
        await tx.start()
        conn = Conn(holder, None)
        before = await conn.fetchrow(
            "SELECT * FROM appointments WHERE organization_id = $1 AND id = $2 FOR UPDATE",
            org,
            later.id,
        )
        after = await conn.fetchrow(
            "UPDATE appointments SET status = 'completed' WHERE organization_id = $1 AND id = $2 "
            "RETURNING *",
            org,
            later.id,
        )
        assert before is not None and after is not None
        await rollups.apply(conn, org, rollups.appointment_facts(before, after))

        async def repair() -> Any:
            other = await asyncpg.connect(database_url)
            try:
                return await check_tenant(Conn(other, None), org, repair=True)
            finally:
                await other.close()

        repairing = asyncio.ensure_future(repair())
        pid = holder.get_server_pid()
        blocked = (
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))"
        )
        await assert_eventually(lambda: db.fetchval(blocked, pid), timeout=20)
        await tx.commit()
        report = await repairing
    finally:
        await holder.close()
    assert report.verifications == [0]  # exact at once, not by a second pass
    assert await _check(db, org) == {}
    row = await db.fetchrow(
        "SELECT visits, first_visit_at, last_visit_at FROM client_visits "
        "WHERE organization_id = $1",
        org,
    )
    assert tuple(row) == (2, at(-3000), at(-1500))


@pytest.mark.parametrize("action", ["check", "repair"])
async def test_the_cli(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str, action: str
) -> None:
    await _history(stubs, org)
    await db.execute(
        "UPDATE client_totals SET paid_minor = paid_minor + 1 WHERE organization_id = $1", org
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BOOKING_LOG_LEVEL": "WARNING"}
        return subprocess.run(
            [sys.executable, "-m", "server", "--database-url", database_url, "rollups", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    done = await asyncio.to_thread(run, action, "--organization", org)
    assert done.returncode == (7 if action == "check" else 0), done.stderr
    verb = "drifted" if action == "check" else "repaired"
    assert f"{org}: 2 rollup rows {verb} (client_totals 2)" in done.stdout
    done = await asyncio.to_thread(run, "check", "--organization", org)
    assert done.returncode == (7 if action == "check" else 0), done.stdout
