"""A booking and a concurrent change of its provider's schedule or offering,
through the real RPC: the booking waits for the change's transaction and then
decides on what it committed, whole (schedule and offering writes lock the
provider's row FOR NO KEY UPDATE; bookings take it FOR SHARE, then read)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from booking.v1 import appointments_pb2, resources_pb2
from google.protobuf import timestamp_pb2

from server.db.engine import to_asyncpg_dsn
from tests.conftest import Bookable, Stubs, details, make_bookable


async def _wait_until_blocked(db: asyncpg.Connection, timeout_s: float = 10.0) -> None:
    """Until a backend of this database waits on a lock (the booking)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the booking never waited for the provider's lock")


def _booking(b: Bookable, start: datetime) -> appointments_pb2.CreateAppointmentRequest:
    return appointments_pb2.CreateAppointmentRequest(
        organization_id=b.org,
        appointment=resources_pb2.Appointment(
            provider_id=b.provider_id,
            client_id=b.client_id,
            service_id=b.service_id,
            start_time=timestamp_pb2.Timestamp(seconds=int(start.timestamp())),
        ),
    )


async def _during_change(
    stubs: Stubs,
    database_url: str,
    db: asyncpg.Connection,
    b: Bookable,
    change: Callable[[asyncpg.Connection], Awaitable[object]],
) -> appointments_pb2.CreateAppointmentResponse | grpc.aio.AioRpcError:
    """Hold the provider's lock as a schedule write does, make ``change``,
    book meanwhile (the booking must wait), commit; the booking's outcome."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    writer = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await writer.execute("BEGIN")
        await writer.execute(
            "SELECT 1 FROM providers WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE",
            b.org,
            b.provider_id,
        )
        await change(writer)
        booking = asyncio.ensure_future(stubs.appointments.CreateAppointment(_booking(b, start)))
        await _wait_until_blocked(db)
        assert not booking.done()
        await writer.execute("COMMIT")
        try:
            return await booking
        except grpc.aio.AioRpcError as error:
            return error
    finally:
        await writer.close()


def _refused_for(outcome: object, reason: str) -> None:
    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
    assert outcome.code() == grpc.StatusCode.FAILED_PRECONDITION, outcome.details()
    found = details(outcome)
    assert found["ErrorInfo"].reason == "BOOKING_NOT_ALLOWED"
    assert reason in {v.type for v in found["PreconditionFailure"].violations}


async def test_a_booking_waits_for_an_offering_removed_meanwhile(
    stubs: Stubs, org: str, database_url: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)

    async def remove_offering(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM offerings WHERE organization_id = $1 AND provider_id = $2",
            b.org,
            b.provider_id,
        )

    _refused_for(
        await _during_change(stubs, database_url, db, b, remove_offering),
        "CONFLICT_REASON_SERVICE_NOT_OFFERED",
    )


async def test_a_booking_waits_for_a_duration_changed_meanwhile(
    stubs: Stubs, org: str, database_url: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org, duration_minutes=30)

    async def longer(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "UPDATE offerings SET duration_minutes = 75, version = version + 1 "
            "WHERE organization_id = $1 AND provider_id = $2",
            b.org,
            b.provider_id,
        )

    outcome = await _during_change(stubs, database_url, db, b, longer)
    assert isinstance(outcome, appointments_pb2.CreateAppointmentResponse), outcome
    booked = outcome.appointment
    assert booked.end_time.seconds - booked.start_time.seconds == 75 * 60


@pytest.mark.parametrize("what", ["hours", "provider"])
async def test_a_booking_waits_for_hours_or_provider_changed_meanwhile(
    what: str, stubs: Stubs, org: str, database_url: str, db: asyncpg.Connection
) -> None:
    b = await make_bookable(stubs, org)

    async def change(conn: asyncpg.Connection) -> None:
        if what == "hours":
            await conn.execute(
                "DELETE FROM working_hours WHERE organization_id = $1 AND provider_id = $2",
                b.org,
                b.provider_id,
            )
        else:
            await conn.execute(
                "UPDATE providers SET active = false WHERE organization_id = $1 AND id = $2",
                b.org,
                b.provider_id,
            )

    reason = {
        "hours": "CONFLICT_REASON_OUTSIDE_HOURS",
        "provider": "CONFLICT_REASON_PROVIDER_INACTIVE",
    }
    _refused_for(await _during_change(stubs, database_url, db, b, change), reason[what])


async def test_bookings_of_one_provider_take_turns(
    stubs: Stubs, org: str, database_url: str, db: asyncpg.Connection
) -> None:
    """A booking holds its provider's lock until it commits, so another booking
    of that provider waits for it (two overlapping inserts never deadlock on
    the exclusion constraint); a booking of another provider does not wait."""
    from server.queries.calendar import LOCK_PROVIDER_SQL

    b = await make_bookable(stubs, org)
    other = await make_bookable(stubs, org)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    first = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await first.execute("BEGIN")
        assert await first.fetchval(LOCK_PROVIDER_SQL, b.org, b.provider_id) == 1
        # Another provider's booking goes through meanwhile.
        await stubs.appointments.CreateAppointment(_booking(other, start))
        second = asyncio.ensure_future(stubs.appointments.CreateAppointment(_booking(b, start)))
        await _wait_until_blocked(db)
        assert not second.done()
        await first.execute("COMMIT")
        booked = await second
        assert booked.appointment.provider_id == b.provider_id
    finally:
        await first.close()
