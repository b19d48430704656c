"""The rollups stay exact under concurrent writes.

Dozens of writes of one provider and one business day (and a second provider
sharing the clients) are released at once: bookings of free and overlapping
times, completions racing cancellations and no-shows of the same
appointments, payments of appointments being completed, refunds of the same
payments racing each other, a reschedule to the other provider racing a
payment of the appointment, and identical retries racing each other. Every
caller gets an answer or a documented business refusal (TIME_SLOT_TAKEN,
INVALID_TRANSITION, REFUND_NOT_ALLOWED): never ABORTED CONCURRENT_CONFLICT, a
deadlock or serialization failure, or INTERNAL. Afterwards every rollup equals
the oracle (tests/rollup_oracle.py). Once through one server, once through
two server instances on the same database.

A schedule of our own makes one interleaving certain: a refund of a payment
whose appointment is being moved to another provider.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import common_pb2, payments_pb2, providers_pb2, resources_pb2
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from server.db.engine import Conn, to_asyncpg_dsn
from server.queries import rollups
from server.testing import RunningServer, assert_eventually, running_server
from tests.conftest import Stubs, details, make_bookable
from tests.test_appointments import BASE
from tests.test_appointments import booking as booking_request
from tests.test_rollups_exact import (
    BLOCKED_SQL,
    CONFIRMED,
    PENDING,
    World,
    assert_exact,
    book,
    create_request,
    make_world,
    pay,
    payment_request,
    refund_request,
    refusal,
    reschedule_request,
    transition_request,
)

# The only refusals a caller may get here (the business rules).
BUSINESS = frozenset({"TIME_SLOT_TAKEN", "INVALID_TRANSITION", "REFUND_NOT_ALLOWED"})
CHANNELS_PER_TARGET = 4

# A write of the burst: a label, the stub method (from a Stubs), the request.
Job = tuple[str, Callable[[Stubs], Any], Message]


@dataclass
class Outcome:
    label: str
    answer: Message | None
    error: str | None  # refusal(): the reason, or the code and details
    unavailable: int  # UNAVAILABLE answers retried (a busy pool), as the contract says


async def _call(stubs: Stubs, job: Job, go: asyncio.Event) -> Outcome:
    label, method, request = job
    await go.wait()
    retried = 0
    while True:
        try:
            answer = await method(stubs)(request, timeout=60)
            return Outcome(label, answer, None, retried)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                return Outcome(label, None, refusal(error), retried)
            retried += 1
            await asyncio.sleep(0.05)  # a retrying client's backoff, not synchronisation


async def burst(targets: list[str], jobs: list[Job]) -> list[Outcome]:
    """Every job in its own task, over CHANNELS_PER_TARGET channels per
    server, all released at once."""
    channels = [grpc.aio.insecure_channel(t) for t in targets for _ in range(CHANNELS_PER_TARGET)]
    try:
        for ch in channels:
            await ch.channel_ready()
        stubs = [Stubs(ch) for ch in channels]
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(_call(stubs[i % len(stubs)], job, go)) for i, job in enumerate(jobs)
        ]
        await asyncio.sleep(0)  # every task starts and waits on ``go``
        go.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for ch in channels:
            await ch.close()


def create(s: Stubs) -> Any:
    return s.appointments.CreateAppointment


def reschedule(s: Stubs) -> Any:
    return s.appointments.RescheduleAppointment


def record(s: Stubs) -> Any:
    return s.payments.RecordPayment


def refund(s: Stubs) -> Any:
    return s.payments.RefundPayment


def status_job(world: World, kind: str, appointment_id: str, request_id: str) -> Job:
    name, request = transition_request(world, kind, appointment_id, request_id)
    return (kind, lambda s: getattr(s.appointments, name), request)


async def day_of_contention(
    stubs: Stubs, w: World, rng: random.Random, tag: str, days: int
) -> list[Job]:
    """The rows before the burst (sequential), and the burst's jobs: one
    business day of the first provider (today + ``days``, local), the second
    one's same instants, the clients shared."""
    p, other = w.providers
    cut, colour = w.services[0], w.services[1]
    nine = w.midnight(p, days) + timedelta(hours=9)  # 09:00 local

    def hour(h: float) -> Any:
        return nine + timedelta(hours=h - 9)

    clients = w.clients
    confirmed = [
        await book(stubs, w, p, cut, clients[i % 3], hour(16 + i)) for i in range(6)
    ]  # 16:00-22:00, 60 minutes each (the first provider's offering)
    pending = [
        await book(stubs, w, p, cut, clients[i % 3], hour(13 + i), PENDING) for i in range(3)
    ]
    theirs = [await book(stubs, w, other, colour, clients[i % 3], hour(12 + i)) for i in range(3)]
    paid = [await pay(stubs, w, a.client_id, 3000, a.id) for a in confirmed[:2]]
    await pay(stubs, w, clients[0], 2000)
    await pay(stubs, w, pending[0].client_id, 1500, pending[0].id)

    def rid(label: str) -> str:
        return f"{tag}-{label}"

    jobs: list[Job] = []

    def add(label: str, method: Callable[[Stubs], Any], request: Message) -> None:
        jobs.append((label, method, request))

    # Bookings of free and overlapping times (09:00-12:45, 60 minutes) and of
    # a taken one; some of the other provider.
    for i in range(6):
        start = hour(9 + rng.randrange(16) / 4)
        status = rng.choice((PENDING, CONFIRMED))
        client = rng.choice(clients)
        add(
            "create",
            create,
            create_request(w, p, cut, client, start, status=status, request_id=rid(f"c{i}")),
        )
    add(
        "create",
        create,
        create_request(w, p, cut, clients[3], hour(16.5), request_id=rid("c-taken")),
    )
    for i in range(3):
        add(
            "create",
            create,
            create_request(w, other, colour, clients[i], hour(9 + i), request_id=rid(f"o{i}")),
        )
    # Each confirmed appointment completed and, at the same time, cancelled or
    # marked a no-show: one of them wins.
    for i, a in enumerate(confirmed):
        jobs.append(status_job(w, "complete", a.id, rid(f"done{i}")))
        jobs.append(status_job(w, rng.choice(("cancel", "no_show")), a.id, rid(f"undone{i}")))
    # The other provider's visits of the same clients.
    for i, a in enumerate(theirs):
        jobs.append(status_job(w, "complete", a.id, rid(f"theirs{i}")))
    # Payments of appointments being completed (and of the other provider's),
    # and one on account.
    for i, a in enumerate(confirmed[2:5] + theirs[:1]):
        currency = a.price.currency_code
        add(
            "pay",
            record,
            payment_request(
                w, a.client_id, 1000 + i, currency, appointment_id=a.id, request_id=rid(f"pay{i}")
            ),
        )
    add("pay", record, payment_request(w, clients[2], 900, "USD", request_id=rid("pay-acct")))
    # Refunds of the same payments: 600 six times of 3000 (one too many),
    # and "all that is left" twice.
    for i in range(6):
        add("refund", refund, refund_request(w, paid[0].id, 600, rid(f"r{i}")))
    for i in range(2):
        add("refund", refund, refund_request(w, paid[1].id, None, rid(f"rest{i}")))
    # The pending ones: one (paid) moved within the day, one moved to the
    # other provider while paid for, one confirmed while cancelled.
    add("reschedule", reschedule, reschedule_request(w, pending[0].id, hour(11), "", rid("m0")))
    add("reschedule", reschedule, reschedule_request(w, pending[1].id, hour(16), other, rid("m1")))
    moving = pending[1]
    add(
        "pay",
        record,
        payment_request(
            w, moving.client_id, 800, "EUR", appointment_id=moving.id, request_id=rid("pay-moving")
        ),
    )
    jobs.append(status_job(w, "confirm", pending[2].id, rid("confirm2")))
    jobs.append(status_job(w, "cancel", pending[2].id, rid("cancel2")))
    # Identical requests racing (the same request_id): one write.
    same = payment_request(w, clients[1], 4321, "EUR", request_id=rid("dup-pay"))
    jobs += [("dup pay", record, same)] * 3
    jobs += [status_job(w, "no_show", confirmed[5].id, rid("dup-no-show"))] * 2
    rng.shuffle(jobs)
    return jobs


def check_outcomes(outcomes: list[Outcome]) -> Counter[str]:
    """Only business refusals; identical requests got one answer. Returns
    the outcomes counted by label and reason."""
    counts: Counter[str] = Counter()
    unexpected = []
    for o in outcomes:
        counts[f"{o.label}: {o.error or 'ok'}"] += 1
        counts["UNAVAILABLE retried"] += o.unavailable
        if o.error is not None and o.error not in BUSINESS:
            unexpected.append(f"{o.label}: {o.error}")
    assert not unexpected, f"callers got errors other than business refusals: {unexpected}"
    dups = [o.answer for o in outcomes if o.label == "dup pay"]
    assert len(dups) == 3 and all(d == dups[0] for d in dups), dups
    return counts


async def contend(targets: list[str], stubs: Stubs, db: asyncpg.Connection, org: str) -> None:
    w = await make_world(stubs, org, zones=("Europe/London", "Asia/Kolkata"), clients=4)
    totals: Counter[str] = Counter()
    for round_ in range(2):
        rng = random.Random(f"{org}-{round_}")
        jobs = await day_of_contention(stubs, w, rng, f"round{round_}", days=1 + round_)
        assert 24 <= len(jobs) <= 60
        totals += check_outcomes(await burst(targets, jobs))
        await assert_exact(db, org, f"after round {round_}: {dict(totals)}")
    # The burst really contended.
    for outcome in (
        "create: ok", "create: TIME_SLOT_TAKEN", "complete: ok", "refund: ok",
        "refund: REFUND_NOT_ALLOWED", "pay: ok",
    ):  # fmt: skip
        assert totals[outcome] > 0, (outcome, totals)
    assert any(k.endswith("INVALID_TRANSITION") for k in totals), totals
    assert totals["reschedule: ok"] > 0, totals


async def test_a_burst_on_one_provider_and_day_keeps_the_rollups_exact(
    booking_server: RunningServer, stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    await contend([booking_server.target], stubs, db, org)


@pytest_asyncio.fixture(loop_scope="session")
async def second_server(database_url: str) -> AsyncIterator[RunningServer]:
    async with running_server(database_url) as srv:
        yield srv


async def test_a_burst_through_two_servers_keeps_the_rollups_exact(
    booking_server: RunningServer,
    second_server: RunningServer,
    stubs: Stubs,
    org: str,
    db: asyncpg.Connection,
) -> None:
    await contend([booking_server.target, second_server.target], stubs, db, org)


# -- one interleaving, made certain ------------------------------------------------------


async def test_a_refund_racing_a_move_to_another_provider(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str
) -> None:
    """A payment's appointment is rescheduled to another provider while the
    payment is refunded. The reschedule reads the appointment's payments and
    refunds to move them, then waits (for a rollup row a session of ours
    holds); the refund, meanwhile, locates itself through the appointment as
    committed (the old provider). Whatever the order, the refund must end up
    under the appointment's provider."""
    w = await make_world(stubs, org, zones=("Pacific/Auckland", "America/Los_Angeles"), clients=1)
    old, new = w.providers
    start = w.midnight(old, 1) + timedelta(hours=10)
    a = await book(stubs, w, old, w.services[0], w.clients[0], start)
    paid = await pay(stubs, w, w.clients[0], 3000, a.id)
    # Another appointment of the new provider that day: its rollup rows exist.
    await book(stubs, w, new, w.services[0], w.clients[0], start + timedelta(hours=3))
    await assert_exact(db, org)
    day = w.business_date(new, start)
    holder = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        tx = holder.transaction()
        await tx.start()
        locked = await holder.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM provider_day_totals WHERE organization_id = $1 "
            "AND provider_id = $2 AND business_date = $3 FOR UPDATE) AS held",
            org, new, day,
        )  # fmt: skip
        assert locked == 1
        moving = asyncio.ensure_future(
            stubs.appointments.RescheduleAppointment(reschedule_request(w, a.id, start, new))
        )
        pid = holder.get_server_pid()
        await assert_eventually(lambda: db.fetchval(BLOCKED_SQL, pid), timeout=20)
        refunding = asyncio.ensure_future(
            stubs.payments.RefundPayment(refund_request(w, paid.id, 500))
        )

        async def refund_settled() -> bool:
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return refunding.done() or waiting >= 2

        await assert_eventually(refund_settled, timeout=20)
        await tx.commit()
        await moving
        await refunding
    finally:
        await holder.close()
    await assert_exact(db, org, "after the refund raced the move")


async def test_a_zone_change_waits_for_a_booking_in_flight_and_sees_it(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str
) -> None:
    """A booking holds its provider's lock and inserts the provider's first
    appointment; a time-zone change waits for that lock, then must see the
    appointment (TIME_ZONE_IN_USE), not the snapshot it started with."""
    b = await make_bookable(stubs, org, time_zone="Pacific/Kiritimati")
    holder = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT 1 FROM providers WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE",
            org,
            b.provider_id,
        )
        during = asyncpg.Range(BASE, BASE + timedelta(minutes=30))
        await holder.execute(
            "INSERT INTO appointments (organization_id, id, provider_id, client_id, service_id, "
            "during, occupied, status, price_minor, currency) "
            "VALUES ($1, $2, $3, $4, $5, $6, $6, 'pending', 2500, 'EUR')",
            org,
            str(uuid.uuid4()),
            b.provider_id,
            b.client_id,
            b.service_id,
            during,
        )
        changing = asyncio.ensure_future(
            stubs.providers.UpdateProvider(
                providers_pb2.UpdateProviderRequest(
                    organization_id=org,
                    provider=resources_pb2.Provider(id=b.provider_id, time_zone="Pacific/Honolulu"),
                    update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
                )
            )
        )
        pid = holder.get_server_pid()
        await assert_eventually(lambda: db.fetchval(BLOCKED_SQL, pid), timeout=20)
        await tx.commit()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await changing
    finally:
        await holder.close()
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(refused.value)["ErrorInfo"].reason == "TIME_ZONE_IN_USE"
    zone = await db.fetchval("SELECT time_zone FROM providers WHERE id = $1", b.provider_id)
    assert zone == "Pacific/Kiritimati"


async def test_a_payment_racing_a_move_to_another_provider(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str
) -> None:
    """A move holds its appointment FOR UPDATE (as lock_row takes it) until it
    commits: a payment for the appointment waits at its foreign key check
    (KEY SHARE), then locates itself through the new provider. With a weaker
    lock (FOR NO KEY UPDATE) the payment would be dated under the old one."""
    nz = await make_bookable(stubs, org, time_zone="Pacific/Auckland")
    la = await make_bookable(stubs, org, time_zone="America/Los_Angeles")
    a = (
        await stubs.appointments.CreateAppointment(
            booking_request(nz, BASE + timedelta(hours=6), status=2)
        )
    ).appointment
    holder = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        tx = holder.transaction()
        await tx.start()
        conn = Conn(holder, None)
        before = await conn.fetchrow(
            "SELECT * FROM appointments WHERE organization_id = $1 AND id = $2 FOR UPDATE",
            org,
            a.id,
        )
        after = await conn.fetchrow(
            "UPDATE appointments SET provider_id = $3 WHERE organization_id = $1 AND id = $2 "
            "RETURNING *",
            org,
            a.id,
            la.provider_id,
        )
        assert before is not None and after is not None
        facts = rollups.appointment_facts(before, after)
        facts += await rollups.moved_payment_facts(conn, org, before, after)
        await rollups.apply(conn, org, facts)
        paying = asyncio.ensure_future(
            stubs.payments.RecordPayment(
                payments_pb2.RecordPaymentRequest(
                    organization_id=org,
                    payment=resources_pb2.Payment(
                        client_id=nz.client_id,
                        appointment_id=a.id,
                        amount=common_pb2.Money(currency_code="EUR", amount_minor=1200),
                        method=resources_pb2.PaymentMethod.PAYMENT_METHOD_CASH,
                    ),
                )
            )
        )
        pid = holder.get_server_pid()
        await assert_eventually(lambda: db.fetchval(BLOCKED_SQL, pid), timeout=20)
        await tx.commit()
        await paying
    finally:
        await holder.close()
    await assert_exact(db, org, "after the payment raced the move")
