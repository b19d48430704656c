"""The double-booking guarantee under concurrency.

1. Hundreds of concurrent CreateAppointment calls over several channels for
   overlapping times of one provider: a non-overlapping set wins, every loser
   is TIME_SLOT_TAKEN naming a committed appointment in its way, and a SQL
   self-join finds no two blocking appointments that overlap.
2. The race between the rules' check and the INSERT, made deterministic: a
   transaction of our own holds an uncommitted booking, the RPC waits on it,
   then loses (TIME_SLOT_TAKEN naming it, never a generic error) or wins.
3. Schedules in the spirit of PostgreSQL's isolation tester: named steps of
   two sessions (the booking writes' own query functions inside explicit
   transactions) run in a chosen order; a step that blocks is detected (the
   server's ``pg_isolation_test_session_is_blocked``), then awaited after the
   step that releases it. The expected outcome of each permutation is its
   event log.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import appointments_pb2, appointments_pb2_grpc

from server.db.engine import Conn, to_asyncpg_dsn
from server.ids import uuid7
from server.queries import appointments as q
from server.queries._crud import Audit, update_row
from server.testing import RunningServer
from tests.conftest import Stubs, make_bookable
from tests.test_appointments import (
    at,
    audit_of,
    book,
    booking,
    booking_details,
    rfc3339,
    rows_of,
)

FAILED = grpc.StatusCode.FAILED_PRECONDITION

# -- 1. many callers ---------------------------------------------------------------------

# Overlapping pairs of blocking appointments of one provider: must stay empty.
OVERLAPS_SQL = """
SELECT a.id, b.id FROM appointments a JOIN appointments b
  ON a.organization_id = b.organization_id AND a.provider_id = b.provider_id
 AND a.id < b.id AND a.occupied && b.occupied
WHERE a.organization_id = $1
  AND a.status IN ('pending', 'confirmed', 'completed')
  AND b.status IN ('pending', 'confirmed', 'completed')
"""

CALLS = 240
CHANNELS = 8
TASKS_PER_CHANNEL = CALLS // CHANNELS  # 30 callers a channel, one call each


async def _create_retrying_unavailable(
    stub: appointments_pb2_grpc.AppointmentServiceAsyncStub,
    request: appointments_pb2.CreateAppointmentRequest,
) -> appointments_pb2.CreateAppointmentResponse | grpc.aio.AioRpcError:
    """One caller: a busy pool (UNAVAILABLE) is retried with the same
    request_id, as the contract tells callers to; any other answer is final."""
    while True:
        try:
            return await stub.CreateAppointment(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                return exc
            await asyncio.sleep(0.05)  # backoff of a retrying client, not synchronisation


async def _burst(
    target: str, requests: list[appointments_pb2.CreateAppointmentRequest]
) -> list[appointments_pb2.CreateAppointmentResponse | grpc.aio.AioRpcError]:
    """Every request from its own task, CHANNELS channels shared round robin:
    all the tasks are started and wait on one event, which releases them
    together, so all the calls are in flight at once."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    try:
        for ch in channels:
            await ch.channel_ready()
        stubs = [appointments_pb2_grpc.AppointmentServiceStub(ch) for ch in channels]
        go = asyncio.Event()
        all_ready = asyncio.Event()
        ready = 0

        async def caller(
            i: int,
        ) -> appointments_pb2.CreateAppointmentResponse | grpc.aio.AioRpcError:
            nonlocal ready
            ready += 1
            if ready == len(requests):
                all_ready.set()
            await go.wait()
            return await _create_retrying_unavailable(stubs[i % CHANNELS], requests[i])

        tasks = [asyncio.create_task(caller(i)) for i in range(len(requests))]
        await all_ready.wait()  # every task is started and waits on ``go``
        go.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for ch in channels:
            await ch.close()


@pytest.mark.parametrize(
    ("override", "buffers"),
    [(False, (0, 0)), (False, (10, 5)), (True, (10, 5))],
    ids=["rules-no-buffers", "rules-buffers", "override-buffers"],
)
async def test_hundreds_of_concurrent_bookings_never_overlap(
    booking_server: RunningServer,
    stubs: Stubs,
    org: str,
    db: asyncpg.Connection,
    override: bool,
    buffers: tuple[int, int],
) -> None:
    """240 CreateAppointment calls in flight at once (8 channels, 30 tasks
    each, released together) for overlapping times of one provider. With
    override_rules false every call goes through the rule check under the
    provider's lock (the provider works all day every day, so the rules allow
    every start but for the other bookings)."""
    b = await make_bookable(
        stubs,
        org,
        duration_minutes=45,
        buffer_before_minutes=buffers[0],
        buffer_after_minutes=buffers[1],
    )
    rng = random.Random(20261125)
    # Starts on a 5-minute grid over 8 hours: ~96 starts for 240 calls, and a
    # 45-minute appointment overlaps the 17 starts around it.
    starts = [at(5 * rng.randrange(96)) for _ in range(CALLS)]
    requests = [
        booking(b, start, override=override, request_id=f"race-{i}", notes=str(i))
        for i, start in enumerate(starts)
    ]
    outcomes = dict(enumerate(await _burst(booking_server.target, requests)))
    assert len(outcomes) == CALLS

    won = {
        i: o.appointment
        for i, o in outcomes.items()
        if isinstance(o, appointments_pb2.CreateAppointmentResponse)
    }
    lost = {i: o for i, o in outcomes.items() if isinstance(o, grpc.aio.AioRpcError)}
    assert won and lost
    assert await db.fetch(OVERLAPS_SQL, org) == []
    rows = {str(r["id"]): r for r in await rows_of(db, org)}
    assert set(rows) == {a.id for a in won.values()}
    for i, a in won.items():
        assert rows[a.id]["during"].lower == starts[i] and rows[a.id]["notes"] == str(i)
    assert sorted(rid for _, rid, _ in await audit_of(db, org)) == sorted(rows)
    actions = {act for act, _, _ in await audit_of(db, org)}
    assert actions == {"create_override" if override else "create"}
    before, after = (timedelta(minutes=m) for m in buffers)
    for i, error in lost.items():
        assert error.code() == FAILED, error
        got = booking_details(error)
        assert got["ErrorInfo"].reason == "TIME_SLOT_TAKEN", got
        holder = rows[got["ErrorInfo"].metadata["appointment_id"]]
        # The holder is committed and in the loser's way, buffers included.
        mine = asyncpg.Range(starts[i] - before, starts[i] + timedelta(minutes=45) + after)
        assert _overlap(holder["occupied"], mine), (i, holder)
        assert got["ErrorInfo"].metadata["start_time"] == rfc3339(holder["during"].lower)
        assert got["ErrorInfo"].metadata["end_time"] == rfc3339(holder["during"].upper)
        assert got["Conflicts"] and got["Conflicts"][0].appointment_id == str(holder["id"])


def _overlap(a: asyncpg.Range, b: asyncpg.Range) -> bool:
    return bool(a.lower < b.upper and b.lower < a.upper)


# -- shared: sessions of our own -----------------------------------------------------

AUDIT = Audit(actor="schedule-test", correlation_id="schedule-test", request_id=None)


@dataclass
class Session:
    """One database session driven step by step."""

    name: str
    raw: asyncpg.Connection

    @property
    def conn(self) -> Conn:
        return Conn(self.raw, None, 30.0)

    @property
    def pid(self) -> int:
        return int(self.raw.get_server_pid())


@pytest_asyncio.fixture(loop_scope="session")
async def sessions(database_url: str) -> AsyncIterator[tuple[Session, Session, Session]]:
    """s1, s2 and an observer (who asks the server whether a session waits)."""
    raws = [await asyncpg.connect(to_asyncpg_dsn(database_url)) for _ in range(3)]
    try:
        yield Session("s1", raws[0]), Session("s2", raws[1]), Session("observer", raws[2])
    finally:
        for raw in raws:
            raw.terminate()


async def _is_blocked(observer: Session, waiter: Session, by: list[Session]) -> bool:
    return bool(
        await observer.raw.fetchval(
            "SELECT pg_isolation_test_session_is_blocked($1, $2)",
            waiter.pid,
            [s.pid for s in by],
        )
    )


async def _settle(
    task: asyncio.Task[Any], waiter: Session, others: list[Session], observer: Session
) -> bool:
    """True once ``task`` has finished, False once the server says its
    session waits for one of ``others`` (detected, never assumed from time)."""
    for _ in range(2000):  # a backstop: at most ~20 s per step
        done, _pending = await asyncio.wait({task}, timeout=0.01)
        if done:
            return True
        if await _is_blocked(observer, waiter, others):
            return False
    raise AssertionError(f"{waiter.name}'s step neither finished nor waited")


def _outcome(task: asyncio.Task[Any]) -> str:
    exc = task.exception()
    return "ok" if exc is None else type(exc).__name__


StepFn = Callable[[Conn], Coroutine[Any, Any, Any]]


async def run_schedule(steps: list[tuple[Session, str, StepFn]], observer: Session) -> list[str]:
    """Run the steps in order, each in its session. A step whose session waits
    for another is logged "<session> <step> waits"; after every later step the
    waiting ones are settled again, and logged "<session> <step> -> <outcome>"
    once they finish. Returns the log."""
    log: list[str] = []
    waiting: list[tuple[Session, str, asyncio.Task[Any]]] = []
    everyone = sorted({s.name: s for s, _, _ in steps}.values(), key=lambda s: s.name)
    for session, name, fn in steps:
        assert all(s is not session for s, _, _ in waiting), f"{session.name} is waiting"
        task = asyncio.create_task(fn(session.conn))
        others = [s for s in everyone if s is not session]
        if await _settle(task, session, others, observer):
            log.append(f"{session.name} {name} -> {_outcome(task)}")
        else:
            log.append(f"{session.name} {name} waits")
            waiting.append((session, name, task))
        for entry in list(waiting):
            w_session, w_name, w_task = entry
            if w_task is task:
                continue
            others = [s for s in everyone if s is not w_session]
            if await _settle(w_task, w_session, others, observer):
                log.append(f"{w_session.name} {w_name} -> {_outcome(w_task)}")
                waiting.remove(entry)
    assert not waiting, f"steps still waiting at the end: {[n for _, n, _ in waiting]}"
    return log


# Steps, in terms of the booking writes' query functions.


async def begin(conn: Conn) -> Any:
    return await conn.execute("BEGIN")


async def commit(conn: Conn) -> Any:
    return await conn.execute("COMMIT")


async def rollback(conn: Conn) -> Any:
    return await conn.execute("ROLLBACK")


def create_at(org: str, b: Any, start: datetime, duration: int = 60) -> StepFn:
    slot = q.Slot(b.provider_id, start, start + timedelta(minutes=duration), 0, 0)

    async def step(conn: Conn) -> Any:
        return await q.insert_appointment(
            conn,
            org_id=org,
            row_id=uuid7(),
            values={
                **q.interval_values(slot),
                "client_id": b.client_id,
                "service_id": b.service_id,
                "status": "pending",
                "price_minor": 0,
                "currency": "EUR",
            },
            audit=AUDIT,
            action="create",
        )

    return step


def reschedule_to(org: str, appointment: Any, start: datetime, duration: int = 60) -> StepFn:
    slot = q.Slot(appointment.provider_id, start, start + timedelta(minutes=duration), 0, 0)

    async def step(conn: Conn) -> Any:
        return await update_row(
            conn,
            q.APPOINTMENT,
            org_id=org,
            row_id=appointment.id,
            values=q.interval_values(slot),
            changed_fields=["start_time", "end_time"],
            expected_version=None,
            audit=AUDIT,
            action="reschedule",
        )

    return step


def set_status(org: str, appointment: Any, status: str) -> StepFn:
    async def step(conn: Conn) -> Any:
        return await update_row(
            conn,
            q.APPOINTMENT,
            org_id=org,
            row_id=appointment.id,
            values={"status": status},
            changed_fields=["status"],
            expected_version=None,
            audit=AUDIT,
            action=status,
        )

    return step


# -- 3. schedules ------------------------------------------------------------------------

T1, T2 = 0, 180  # minutes after BASE; A is booked at T1 for 60 minutes


def s1_change(org: str, a: Any, change: str) -> StepFn:
    """s1's write to A: "reschedule" (T1 -> T2) or a new status."""
    if change == "reschedule":
        return reschedule_to(org, a, at(T2))
    return set_status(org, a, change)


# (s1's change to A, where s2 books, how s1 ends, what s2's booking gets). In
# every permutation s2's booking waits for s1: the outcome depends on s1's end.
SCHEDULES = [
    # A move frees its old time only when it commits...
    ("reschedule", T1, "commit", "ok"),
    ("reschedule", T1, "rollback", "ExclusionViolationError"),
    # ...and takes the new one from the move on, for good if it commits.
    ("reschedule", T2, "commit", "ExclusionViolationError"),
    ("reschedule", T2, "rollback", "ok"),
    # CANCELLED and NO_SHOW free the time once they commit.
    ("cancelled", T1 + 30, "commit", "ok"),
    ("cancelled", T1 + 30, "rollback", "ExclusionViolationError"),
    ("no_show", T1 + 30, "commit", "ok"),
    ("no_show", T1 + 30, "rollback", "ExclusionViolationError"),
    # COMPLETED keeps it, committed or not.
    ("completed", T1 + 30, "commit", "ExclusionViolationError"),
    ("completed", T1 + 30, "rollback", "ExclusionViolationError"),
]


@pytest.mark.parametrize(("change", "target", "end", "expected"), SCHEDULES)
async def test_schedule_change_vs_create(
    stubs: Stubs,
    org: str,
    db: asyncpg.Connection,
    sessions: tuple[Session, Session, Session],
    change: str,
    target: int,
    end: str,
    expected: str,
) -> None:
    s1, s2, observer = sessions
    b = await make_bookable(stubs, org, duration_minutes=60)
    a = await book(stubs, b, at(T1))
    log = await run_schedule(
        [
            (s1, "begin", begin),
            (s1, f"A {change}", s1_change(org, a, change)),
            (s2, "begin", begin),
            (s2, f"create at {target}", create_at(org, b, at(target))),
            (s1, end, commit if end == "commit" else rollback),
            (s2, "commit", commit),
        ],
        observer,
    )
    assert log == [
        "s1 begin -> ok",
        f"s1 A {change} -> ok",
        "s2 begin -> ok",
        f"s2 create at {target} waits",
        f"s1 {end} -> ok",
        f"s2 create at {target} -> {expected}",
        "s2 commit -> ok",
    ]
    assert await db.fetch(OVERLAPS_SQL, org) == []
    rows = {str(r["id"]): r for r in await rows_of(db, org)}
    assert len(rows) == (2 if expected == "ok" else 1)
    moved = change == "reschedule" and end == "commit"
    assert rows[a.id]["during"].lower == at(T2 if moved else T1)
    assert rows[a.id]["status"] == (change if end == "commit" and not moved else "pending")


async def test_schedule_create_vs_create_and_disjoint_ones_do_not_wait(
    stubs: Stubs, org: str, db: asyncpg.Connection, sessions: tuple[Session, Session, Session]
) -> None:
    s1, s2, observer = sessions
    b = await make_bookable(stubs, org, duration_minutes=60)
    log = await run_schedule(
        [
            (s1, "begin", begin),
            (s1, "create at 0", create_at(org, b, at(0))),
            (s2, "begin", begin),
            (s2, "create at 60", create_at(org, b, at(60))),  # touching: no wait
            (s2, "create at 30", create_at(org, b, at(30))),
            (s1, "commit", commit),
            (s2, "commit", commit),
        ],
        observer,
    )
    assert log == [
        "s1 begin -> ok",
        "s1 create at 0 -> ok",
        "s2 begin -> ok",
        "s2 create at 60 -> ok",
        "s2 create at 30 waits",
        "s1 commit -> ok",
        "s2 create at 30 -> ExclusionViolationError",
        "s2 commit -> ok",  # COMMIT of an aborted transaction rolls it back
    ]
    assert [r["during"].lower for r in await rows_of(db, org)] == [at(0)]


# -- 2. the race between the rules' check and the write, through the RPC -------------


@pytest.mark.parametrize("end", ["commit", "rollback"])
async def test_rpc_that_loses_the_race_names_the_winner(
    stubs: Stubs,
    org: str,
    db: asyncpg.Connection,
    sessions: tuple[Session, Session, Session],
    end: str,
) -> None:
    """s1 holds an uncommitted booking; the RPC's rules check cannot see it
    (READ COMMITTED), so its INSERT waits on the exclusion constraint. If s1
    commits, the RPC is TIME_SLOT_TAKEN naming s1's appointment (found after
    the RPC's rollback); if s1 rolls back, the RPC books."""
    s1, _s2, observer = sessions
    b = await make_bookable(stubs, org, duration_minutes=60)
    await s1.raw.execute("BEGIN")
    winner = await create_at(org, b, at(0))(s1.conn)
    call = asyncio.ensure_future(stubs.appointments.CreateAppointment(booking(b, at(30))))
    await _wait_until_some_session_waits_for(s1, observer, call)
    await s1.raw.execute("COMMIT" if end == "commit" else "ROLLBACK")
    if end == "rollback":
        won = (await call).appointment
        assert [str(r["id"]) for r in await rows_of(db, org)] == [won.id]
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == FAILED
    got = booking_details(caught.value)
    assert dict(got["ErrorInfo"].metadata) == {
        "appointment_id": str(winner["id"]),
        "start_time": rfc3339(at(0)),
        "end_time": rfc3339(at(60)),
    }
    assert [v.subject for v in got["PreconditionFailure"].violations] == [
        f"appointments/{winner['id']}"
    ]
    assert [str(r["id"]) for r in await rows_of(db, org)] == [str(winner["id"])]


async def test_reschedule_that_loses_the_race_changes_nothing(
    stubs: Stubs, org: str, db: asyncpg.Connection, sessions: tuple[Session, Session, Session]
) -> None:
    s1, _s2, observer = sessions
    b = await make_bookable(stubs, org, duration_minutes=60)
    a = await book(stubs, b, at(0))
    before = await rows_of(db, org), await audit_of(db, org)
    await s1.raw.execute("BEGIN")
    winner = await create_at(org, b, at(180))(s1.conn)
    call = asyncio.ensure_future(
        stubs.appointments.RescheduleAppointment(
            appointments_pb2.RescheduleAppointmentRequest(
                organization_id=org,
                appointment_id=a.id,
                start_time=booking(b, at(150)).appointment.start_time,
                override_rules=True,
                request_id="move-1",
            )
        )
    )
    await _wait_until_some_session_waits_for(s1, observer, call)
    await s1.raw.execute("COMMIT")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    got = booking_details(caught.value)
    assert got["ErrorInfo"].reason == "TIME_SLOT_TAKEN"
    assert got["ErrorInfo"].metadata["appointment_id"] == str(winner["id"])
    rows = [r for r in await rows_of(db, org) if str(r["id"]) == a.id]
    assert (rows, [e for e in await audit_of(db, org) if e[1] == a.id]) == (
        [r for r in before[0] if str(r["id"]) == a.id],
        before[1],
    )
    # The request_id was not used up by the refused attempt: a retry books
    # nothing either, and is refused the same way.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stubs.appointments.RescheduleAppointment(
            appointments_pb2.RescheduleAppointmentRequest(
                organization_id=org,
                appointment_id=a.id,
                start_time=booking(b, at(150)).appointment.start_time,
                override_rules=True,
                request_id="move-1",
            )
        )
    assert booking_details(again.value)["ErrorInfo"].reason == "TIME_SLOT_TAKEN"


async def _wait_until_some_session_waits_for(
    holder: Session, observer: Session, call: asyncio.Task[Any] | Any
) -> None:
    """Until a server session (the RPC's) waits for ``holder``'s transaction."""
    for _ in range(2000):
        if await observer.raw.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            holder.pid,
        ):
            return
        assert not call.done(), "the RPC finished without waiting for the holder"
        await asyncio.sleep(0.01)  # polling the server's lock table, not a guess
    raise AssertionError("no session waited for the holder")


async def test_rpc_whose_winner_left_again_tries_again_and_books(
    stubs: Stubs, org: str, db: asyncpg.Connection, sessions: tuple[Session, Session, Session]
) -> None:
    """The winner of the race is cancelled between the loser's rollback and its
    look-up (held there by s2's table lock): the look-up finds no one in the
    way, so the loser tries again, in a new transaction, and books."""
    s1, s2, observer = sessions
    b = await make_bookable(stubs, org, duration_minutes=60)
    await s1.raw.execute("BEGIN")
    winner = await create_at(org, b, at(0))(s1.conn)
    call = asyncio.ensure_future(stubs.appointments.CreateAppointment(booking(b, at(30))))
    await _wait_until_some_session_waits_for(s1, observer, call)
    # s2 queues for the whole table: granted once s1 and the RPC's first
    # transaction are over, it then holds the RPC's look-up.
    await s2.raw.execute("BEGIN")
    lock = asyncio.ensure_future(s2.raw.execute("LOCK TABLE appointments IN ACCESS EXCLUSIVE MODE"))
    assert not await _settle(lock, s2, [s1], observer)
    await s1.raw.execute("COMMIT")
    await lock
    await _wait_until_some_session_waits_for(s2, observer, call)
    await s2.raw.execute(
        "UPDATE appointments SET status = 'cancelled' WHERE organization_id = $1 AND id = $2",
        org,
        winner["id"],
    )
    await s2.raw.execute("COMMIT")
    booked = (await call).appointment
    rows = {str(r["id"]): r["status"] for r in await rows_of(db, org)}
    assert rows == {str(winner["id"]): "cancelled", booked.id: "pending"}
    assert await db.fetch(OVERLAPS_SQL, org) == []


async def test_concurrent_reschedules_into_one_time_move_one(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Twenty appointments moved at once into overlapping times around one
    slot: the moves that win never overlap, each loser is TIME_SLOT_TAKEN
    naming a winner and stays exactly where it was (row and audit)."""
    b = await make_bookable(stubs, org, duration_minutes=60)
    booked = [await book(stubs, b, at(120 * i)) for i in range(1, 21)]
    before = {str(r["id"]): r for r in await rows_of(db, org)}
    targets = [at(-15 * (i % 4)) for i in range(len(booked))]  # -45 .. 0: all overlap
    outcomes = await asyncio.gather(
        *(
            stubs.appointments.RescheduleAppointment(
                appointments_pb2.RescheduleAppointmentRequest(
                    organization_id=org,
                    appointment_id=a.id,
                    start_time=booking(b, t).appointment.start_time,
                    etag=a.etag,
                    override_rules=True,
                ),
                timeout=60,
            )
            for a, t in zip(booked, targets, strict=True)
        ),
        return_exceptions=True,
    )
    moved = [o.appointment.id for o in outcomes if not isinstance(o, BaseException)]
    assert len(moved) == 1, outcomes
    after = {str(r["id"]): r for r in await rows_of(db, org)}
    assert await db.fetch(OVERLAPS_SQL, org) == []
    for a, outcome in zip(booked, outcomes, strict=True):
        if a.id in moved:
            continue
        assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == FAILED
        assert booking_details(outcome)["ErrorInfo"].metadata["appointment_id"] in moved
        assert after[a.id] == before[a.id]
    actions = [(act, rid) for act, rid, _ in await audit_of(db, org) if act != "create_override"]
    assert actions == [("reschedule_override", moved[0])]
