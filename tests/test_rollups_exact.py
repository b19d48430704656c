"""The rollups are exact: after any sequence of writes through the real RPCs,
every rollup table holds what the raw rows say (tests/rollup_oracle.py, a
plain GROUP BY computation written apart from server/queries/rollups.py).

- Seeded random walks of every appointment and payment write, on providers
  in four zones (Auckland, Los Angeles, London, Kolkata: business dates a day
  apart for one instant), services in two currencies, appointments around
  local midnights (reschedules cross them), moves to another provider,
  payments with and without an appointment, refunds in part and in full,
  refused writes and retries; checked at checkpoints and at the end.
- A retry with the same request_id applies nothing twice.
- Refused writes leave the rollups as they were, also a write refused after
  its evaluation (the race for the time) and one that fails after its
  rollups statement ran.
- The comparison itself can fail: a changed, deleted or added rollup row is
  reported, exactly that row.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from booking.v1 import (
    appointments_pb2,
    catalog_pb2,
    clients_pb2,
    common_pb2,
    payments_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
)
from google.protobuf.message import Message

from server.db.engine import Conn, to_asyncpg_dsn
from server.db.schema import ROLLUP_TABLES
from server.ids import uuid7
from server.queries import appointments as q
from server.queries._crud import Audit
from server.testing import assert_eventually
from tests.conftest import Stubs, details, weekly
from tests.rollup_oracle import KEYS, describe, rollup_differences, stored_rollups
from tests.test_appointments import ts

T = TypeVar("T")

AStatus = resources_pb2.AppointmentStatus
PStatus = resources_pb2.PaymentStatus
PENDING = AStatus.APPOINTMENT_STATUS_PENDING
CONFIRMED = AStatus.APPOINTMENT_STATUS_CONFIRMED
COMPLETED = AStatus.APPOINTMENT_STATUS_COMPLETED
MOVABLE = (PENDING, CONFIRMED)

# Four zones: for most instants, three business dates.
ZONES = ("Pacific/Auckland", "America/Los_Angeles", "Europe/London", "Asia/Kolkata")
# name, currency, price, minutes, buffer before, buffer after
SERVICES = (
    ("Cut", "EUR", 2500, 30, 0, 0),
    ("Colour", "USD", 4000, 45, 0, 10),
    ("Long", "EUR", 9000, 90, 5, 0),
)
# The first provider's own length and price of the first service.
OFFERING_OVERRIDE = (60, 3100)
# The business refusals a random walk meets; anything else fails it.
REFUSALS = frozenset(
    {"TIME_SLOT_TAKEN", "INVALID_TRANSITION", "REFUND_NOT_ALLOWED", "PAYMENT_NOT_ALLOWED"}
)


# -- the world: providers in four zones, services in two currencies, clients --------


@dataclass(frozen=True)
class World:
    org: str
    providers: tuple[str, ...]
    zone: dict[str, str]
    services: tuple[str, ...]
    currency: dict[str, str]
    clients: tuple[str, ...]

    def starts(self, provider_id: str) -> list[datetime]:
        """Starts around the provider's local midnights, two days back to two
        ahead (past ones need override_rules), every 20 minutes from 80
        before to 80 after, and its local noons."""
        out = []
        for days in range(-2, 3):
            midnight = self.midnight(provider_id, days)
            out += [midnight + timedelta(minutes=20 * k) for k in range(-4, 5)]
            out.append(midnight + timedelta(hours=12))
        return out

    def midnight(self, provider_id: str, days: int = 0) -> datetime:
        """The instant the provider's local date of today + ``days`` begins."""
        zone = ZoneInfo(self.zone[provider_id])
        day = datetime.now(zone).date() + timedelta(days=days)
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)

    def business_date(self, provider_id: str, instant: datetime) -> date:
        return instant.astimezone(ZoneInfo(self.zone[provider_id])).date()


async def make_world(
    stubs: Stubs, org: str, zones: tuple[str, ...] = ZONES, clients: int = 5
) -> World:
    """Through the RPCs: a provider per zone working 08:00-20:00 on weekdays,
    every provider offering every service (the first one the first service
    at its own length and price), and the clients."""
    providers = []
    for i, zone in enumerate(zones):
        created = await stubs.providers.CreateProvider(
            providers_pb2.CreateProviderRequest(
                organization_id=org,
                provider=resources_pb2.Provider(display_name=f"P{i}", time_zone=zone),
            )
        )
        providers.append(created.provider.id)
        await stubs.schedules.ReplaceWorkingHours(
            schedules_pb2.ReplaceWorkingHoursRequest(
                organization_id=org,
                provider_id=created.provider.id,
                working_hours=[weekly(day, 8 * 60, 20 * 60) for day in range(1, 6)],
            )
        )
    services, currency = [], {}
    for name, code, price, minutes, before, after in SERVICES:
        created_service = await stubs.catalog.CreateService(
            catalog_pb2.CreateServiceRequest(
                organization_id=org,
                service=resources_pb2.Service(
                    name=name,
                    duration_minutes=minutes,
                    price=common_pb2.Money(currency_code=code, amount_minor=price),
                    buffer_before_minutes=before,
                    buffer_after_minutes=after,
                ),
            )
        )
        services.append(created_service.service.id)
        currency[created_service.service.id] = code
    for p, provider_id in enumerate(providers):
        for s, service_id in enumerate(services):
            offering = resources_pb2.Offering(provider_id=provider_id, service_id=service_id)
            if (p, s) == (0, 0):
                offering.duration_minutes = OFFERING_OVERRIDE[0]
                offering.price.CopyFrom(
                    common_pb2.Money(
                        currency_code=SERVICES[0][1], amount_minor=OFFERING_OVERRIDE[1]
                    )
                )
            await stubs.catalog.SetOffering(
                catalog_pb2.SetOfferingRequest(organization_id=org, offering=offering)
            )
    client_ids = []
    for i in range(clients):
        created_client = await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org,
                client=resources_pb2.Client(given_name=f"C{i}", family_name="Rollup"),
            )
        )
        client_ids.append(created_client.client.id)
    return World(
        org,
        tuple(providers),
        dict(zip(providers, zones, strict=True)),
        tuple(services),
        currency,
        tuple(client_ids),
    )


# -- requests ---------------------------------------------------------------------------

# A status change: its RPC, request and the statuses it may start from.
TRANSITIONS: dict[str, tuple[str, type[Message], tuple[int, ...]]] = {
    "confirm": ("ConfirmAppointment", appointments_pb2.ConfirmAppointmentRequest, (PENDING,)),
    "complete": ("CompleteAppointment", appointments_pb2.CompleteAppointmentRequest, (CONFIRMED,)),
    "no_show": (
        "MarkAppointmentNoShow",
        appointments_pb2.MarkAppointmentNoShowRequest,
        (CONFIRMED,),
    ),
    "cancel": ("CancelAppointment", appointments_pb2.CancelAppointmentRequest, MOVABLE),
}


def create_request(
    world: World,
    provider_id: str,
    service_id: str,
    client_id: str,
    start: datetime,
    *,
    status: int = PENDING,
    request_id: str = "",
) -> appointments_pb2.CreateAppointmentRequest:
    return appointments_pb2.CreateAppointmentRequest(
        organization_id=world.org,
        appointment=resources_pb2.Appointment(
            provider_id=provider_id,
            client_id=client_id,
            service_id=service_id,
            start_time=ts(start),
            status=status,  # type: ignore[arg-type]
        ),
        override_rules=True,
        request_id=request_id,
    )


def payment_request(
    world: World,
    client_id: str,
    amount: int,
    currency: str,
    *,
    appointment_id: str = "",
    status: int = PStatus.PAYMENT_STATUS_COMPLETED,
    request_id: str = "",
) -> payments_pb2.RecordPaymentRequest:
    return payments_pb2.RecordPaymentRequest(
        organization_id=world.org,
        payment=resources_pb2.Payment(
            client_id=client_id,
            appointment_id=appointment_id,
            amount=common_pb2.Money(currency_code=currency, amount_minor=amount),
            method=resources_pb2.PaymentMethod.PAYMENT_METHOD_CARD,
            status=status,  # type: ignore[arg-type]
        ),
        request_id=request_id,
    )


def reschedule_request(
    world: World,
    appointment_id: str,
    start: datetime,
    provider_id: str = "",
    request_id: str = "",
) -> appointments_pb2.RescheduleAppointmentRequest:
    return appointments_pb2.RescheduleAppointmentRequest(
        organization_id=world.org,
        appointment_id=appointment_id,
        start_time=ts(start),
        provider_id=provider_id,
        override_rules=True,
        request_id=request_id,
    )


def transition_request(
    world: World, kind: str, appointment_id: str, request_id: str = ""
) -> tuple[str, Message]:
    """The RPC's name and request of a status change (TRANSITIONS' kinds)."""
    name, request_type, _ = TRANSITIONS[kind]
    request = request_type(
        organization_id=world.org, appointment_id=appointment_id, request_id=request_id
    )
    return name, request


def refund_request(
    world: World, payment_id: str, amount: int | None = None, request_id: str = ""
) -> payments_pb2.RefundPaymentRequest:
    """A refund of ``amount`` (None: all that is left)."""
    request = payments_pb2.RefundPaymentRequest(
        organization_id=world.org, payment_id=payment_id, request_id=request_id
    )
    if amount is not None:
        request.amount_minor = amount
    return request


async def book(
    stubs: Stubs,
    world: World,
    provider_id: str,
    service_id: str,
    client_id: str,
    start: datetime,
    status: int = CONFIRMED,
) -> resources_pb2.Appointment:
    request = create_request(world, provider_id, service_id, client_id, start, status=status)
    return (await stubs.appointments.CreateAppointment(request)).appointment


async def pay(
    stubs: Stubs, world: World, client_id: str, amount: int, appointment_id: str = ""
) -> resources_pb2.Payment:
    """A completed payment in EUR."""
    request = payment_request(world, client_id, amount, "EUR", appointment_id=appointment_id)
    return (await stubs.payments.RecordPayment(request)).payment


async def change_status(
    stubs: Stubs, world: World, kind: str, appointment_id: str
) -> resources_pb2.Appointment:
    name, request = transition_request(world, kind, appointment_id)
    return (await getattr(stubs.appointments, name)(request)).appointment


def refusal(error: grpc.aio.AioRpcError) -> str:
    """FAILED_PRECONDITION's reason, or the code (and reason) of anything else."""
    try:
        reason = details(error)["ErrorInfo"].reason
    except (AssertionError, KeyError):
        reason = ""
    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return str(reason)
    return f"{error.code().name} {reason}: {error.details()}"


async def attempt(call: Awaitable[T], allowed: frozenset[str] = REFUSALS) -> T | None:
    """The answer, or None for an allowed business refusal; anything else
    (INTERNAL, UNKNOWN, ABORTED, INVALID_ARGUMENT...) fails the test."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        reason = refusal(error)
        assert reason in allowed, f"unexpected error: {reason}"
        return None


async def assert_exact(db: asyncpg.Connection, org: str, when: str = "") -> None:
    differences = await rollup_differences(db, org)
    assert not differences, f"rollups differ from the raw rows {when}:\n{describe(differences)}"


# -- the random walk --------------------------------------------------------------------


Call = Callable[[Any], Awaitable[Any]]


@dataclass
class Walk:
    """A seeded random sequence of writes; what it knows of the rows is only
    for choosing likely-valid writes (refusals are fine)."""

    stubs: Stubs
    world: World
    rng: random.Random
    tag: str
    appointments: dict[str, resources_pb2.Appointment] = field(default_factory=dict)
    payments: dict[str, resources_pb2.Payment] = field(default_factory=dict)
    # (method, request, first answer) of writes that succeeded: for retries.
    done: list[tuple[Call, Message, Message]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    steps: int = 0

    def request_id(self) -> str:
        return f"{self.tag}-{self.steps}"

    async def write(self, kind: str, method: Call, request: Message) -> Any:
        answer = await attempt(method(request))
        self.counts[kind if answer is not None else f"{kind} refused"] += 1
        if answer is not None:
            self.done.append((method, request, answer))
        return answer

    def pick_appointment(self, statuses: tuple[int, ...]) -> resources_pb2.Appointment | None:
        if not self.appointments:
            return None
        likely = [a for a in self.appointments.values() if a.status in statuses]
        pool = likely if likely and self.rng.random() < 0.85 else list(self.appointments.values())
        return self.rng.choice(pool)

    def start_for(self, provider_id: str) -> datetime:
        if self.rng.random() < 0.2:
            provider_id = self.rng.choice(self.world.providers)
        return self.rng.choice(self.world.starts(provider_id))

    async def create(self) -> None:
        w, rng = self.world, self.rng
        provider_id = rng.choice(w.providers)
        request = create_request(
            w,
            provider_id,
            rng.choice(w.services),
            rng.choice(w.clients),
            self.start_for(provider_id),
            status=rng.choice(MOVABLE),
            request_id=self.request_id(),
        )
        answer = await self.write("create", self.stubs.appointments.CreateAppointment, request)
        if answer is not None:
            self.appointments[answer.appointment.id] = answer.appointment

    async def reschedule(self) -> None:
        w, rng = self.world, self.rng
        a = self.pick_appointment(MOVABLE)
        if a is None:
            return
        provider_id = a.provider_id
        if rng.random() < 0.5:
            provider_id = rng.choice(w.providers)
        start = self.start_for(provider_id)
        other = "" if provider_id == a.provider_id else provider_id
        request = reschedule_request(w, a.id, start, other, self.request_id())
        answer = await self.write(
            "reschedule", self.stubs.appointments.RescheduleAppointment, request
        )
        if answer is not None:
            moved = answer.appointment
            self.appointments[moved.id] = moved
            old = w.business_date(a.provider_id, a.start_time.ToDatetime(UTC))
            new = w.business_date(moved.provider_id, moved.start_time.ToDatetime(UTC))
            if old != new:
                self.counts["reschedule to another business date"] += 1
            if moved.provider_id != a.provider_id:
                self.counts["reschedule to another provider"] += 1

    async def transition(self, kind: str) -> None:
        a = self.pick_appointment(TRANSITIONS[kind][2])
        if a is None:
            return
        name, request = transition_request(self.world, kind, a.id, self.request_id())
        answer = await self.write(kind, getattr(self.stubs.appointments, name), request)
        if answer is not None:
            self.appointments[a.id] = answer.appointment

    async def pay(self) -> None:
        w, rng = self.world, self.rng
        status = rng.choices(
            (PStatus.PAYMENT_STATUS_COMPLETED, PStatus.PAYMENT_STATUS_PENDING,
             PStatus.PAYMENT_STATUS_FAILED),
            (8, 1, 1),
        )[0]  # fmt: skip
        amount = rng.randrange(100, 6000)
        if self.appointments and rng.random() < 0.7:
            a = rng.choice(list(self.appointments.values()))
            client_id, currency = a.client_id, a.price.currency_code
            if rng.random() < 0.08:  # another client's appointment: PAYMENT_NOT_ALLOWED
                client_id = rng.choice(w.clients)
            request = payment_request(
                w, client_id, amount, currency, appointment_id=a.id, status=status,
                request_id=self.request_id(),
            )  # fmt: skip
        else:
            request = payment_request(
                w, rng.choice(w.clients), amount, rng.choice(("EUR", "USD", "GBP")),
                status=status, request_id=self.request_id(),
            )  # fmt: skip
        answer = await self.write("pay", self.stubs.payments.RecordPayment, request)
        if answer is not None:
            self.payments[answer.payment.id] = answer.payment

    async def refund(self) -> None:
        rng = self.rng
        if not self.payments:
            return
        paid = [p for p in self.payments.values() if p.status == PStatus.PAYMENT_STATUS_COMPLETED]
        pool = paid if paid and rng.random() < 0.9 else list(self.payments.values())
        p = rng.choice(pool)
        request = refund_request(self.world, p.id, request_id=self.request_id())
        left = p.amount.amount_minor - p.refunded_amount.amount_minor
        roll = rng.random()
        if roll < 0.55:
            request.amount_minor = rng.randrange(1, max(2, left // 2 + 1))
        elif roll < 0.65:
            request.amount_minor = left + 1  # more than is left: REFUND_NOT_ALLOWED
        # else: all that is left
        answer = await self.write("refund", self.stubs.payments.RefundPayment, request)
        if answer is not None:
            self.payments[p.id] = answer.payment

    async def retry(self) -> None:
        if not self.done:
            return
        method, request, first = self.rng.choice(self.done)
        again = await method(request)
        assert again == first, "a retry with the same request_id must return the first answer"
        self.counts["retry"] += 1

    async def step(self) -> None:
        kind = self.rng.choices(
            ("create", "reschedule", "confirm", "complete", "no_show", "cancel", "pay",
             "refund", "retry"),
            (24, 16, 12, 12, 4, 7, 15, 11, 4),
        )[0]  # fmt: skip
        if kind == "create":
            await self.create()
        elif kind == "reschedule":
            await self.reschedule()
        elif kind == "pay":
            await self.pay()
        elif kind == "refund":
            await self.refund()
        elif kind == "retry":
            await self.retry()
        else:
            await self.transition(kind)
        self.steps += 1


WALK_STEPS = 250
CHECKPOINT_EVERY = 50


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 20261126])
async def test_random_walks_keep_every_rollup_exact(
    stubs: Stubs, org: str, db: asyncpg.Connection, seed: int
) -> None:
    world = await make_world(stubs, org)
    walk = Walk(stubs, world, random.Random(seed), tag=f"walk-{seed}")
    for n in range(WALK_STEPS):
        await walk.step()
        if n % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            await assert_exact(db, org, f"after step {n} of seed {seed} ({dict(walk.counts)})")
    await assert_exact(db, org, f"at the end of seed {seed} ({dict(walk.counts)})")
    # The walk went everywhere it should (else it proves little).
    for kind in (
        "create", "reschedule", "confirm", "complete", "no_show", "cancel", "pay", "refund",
        "reschedule to another provider", "reschedule to another business date",
    ):  # fmt: skip
        assert walk.counts[kind] > 0, (kind, walk.counts)
    assert sum(n for k, n in walk.counts.items() if k.endswith("refused")) > 0, walk.counts
    # Rows in every table (a walk that fills none would prove nothing of it).
    stored = await stored_rollups(db, org)
    assert all(stored[table] for table in KEYS), {t: len(r) for t, r in stored.items()}


def test_the_oracle_covers_every_rollup_table() -> None:
    assert set(KEYS) == {t.name for t in ROLLUP_TABLES}
    for t in ROLLUP_TABLES:
        assert ("organization_id", *KEYS[t.name]) == tuple(c.name for c in t.primary_key), t.name


# -- a retry applies nothing twice ------------------------------------------------------


async def test_a_retry_with_the_same_request_id_applies_its_delta_once(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """Every write kind with a request_id, retried at once and again at the
    end: the retry answers the first answer and leaves the rollups as the
    first call left them."""
    w = await make_world(stubs, org)
    auckland, los_angeles = w.providers[0], w.providers[1]
    cut, colour = w.services[0], w.services[1]
    alice, bob = w.clients[0], w.clients[1]
    midnight = w.midnight(auckland, -1)
    a_stub, p_stub = stubs.appointments, stubs.payments
    sent: list[tuple[Call, Message, Message]] = []

    async def once(method: Call, request: Message) -> Any:
        first = await method(request)
        after_first = await stored_rollups(db, org)
        assert await method(request) == first
        assert await stored_rollups(db, org) == after_first, request
        sent.append((method, request, first))
        return first

    async def status(kind: str, appointment_id: str, request_id: str) -> None:
        name, request = transition_request(w, kind, appointment_id, request_id)
        await once(getattr(a_stub, name), request)

    early = midnight - timedelta(minutes=40)
    creating = create_request(w, auckland, cut, alice, early, request_id="r-1")
    a = (await once(a_stub.CreateAppointment, creating)).appointment
    await status("confirm", a.id, "r-2")
    # Across Auckland's midnight, then to Los Angeles (another business date).
    late = midnight + timedelta(minutes=20)
    await once(a_stub.RescheduleAppointment, reschedule_request(w, a.id, late, "", "r-3"))
    await once(a_stub.RescheduleAppointment, reschedule_request(w, a.id, late, los_angeles, "r-4"))
    await status("complete", a.id, "r-5")
    paying = payment_request(w, alice, 2000, "EUR", appointment_id=a.id, request_id="r-6")
    paid = (await once(p_stub.RecordPayment, paying)).payment
    await once(p_stub.RefundPayment, refund_request(w, paid.id, 500, "r-7"))
    await once(p_stub.RefundPayment, refund_request(w, paid.id, None, "r-8"))
    creating = create_request(
        w, auckland, colour, bob, midnight, status=CONFIRMED, request_id="r-9"
    )
    b = (await once(a_stub.CreateAppointment, creating)).appointment
    await status("no_show", b.id, "r-10")
    creating = create_request(w, auckland, colour, bob, midnight, request_id="r-11")
    c = (await once(a_stub.CreateAppointment, creating)).appointment
    await status("cancel", c.id, "r-12")
    await once(p_stub.RecordPayment, payment_request(w, bob, 700, "USD", request_id="r-13"))
    await assert_exact(db, org)
    before = await stored_rollups(db, org)
    for method, request, first in reversed(sent):
        assert await method(request) == first
    assert await stored_rollups(db, org) == before
    await assert_exact(db, org)


# -- refused and failed writes leave the rollups as they were ----------------------------

AUDIT = Audit(actor="rollups-test", correlation_id="rollups-test", request_id=None)

BLOCKED_SQL = """SELECT EXISTS (
    SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid)))"""


async def refused_with(call: Awaitable[Any], reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert refusal(caught.value) == reason
    return caught.value


async def test_refused_writes_leave_the_rollups_unchanged(
    stubs: Stubs, org: str, db: asyncpg.Connection, database_url: str
) -> None:
    w = await make_world(stubs, org)
    provider, cut, alice = w.providers[0], w.services[0], w.clients[0]
    start = w.midnight(provider) - timedelta(minutes=20)
    a = await book(stubs, w, provider, cut, alice, start)
    paid = await pay(stubs, w, alice, 1000, a.id)
    await assert_exact(db, org)
    before = await stored_rollups(db, org)

    async def unchanged() -> None:
        assert await stored_rollups(db, org) == before
        await assert_exact(db, org)

    a_stub, p_stub = stubs.appointments, stubs.payments
    # The time is taken (found by the evaluation), before and across midnight.
    await refused_with(
        a_stub.CreateAppointment(create_request(w, provider, cut, w.clients[1], start)),
        "TIME_SLOT_TAKEN",
    )
    other = await book(stubs, w, provider, cut, alice, start + timedelta(hours=3), PENDING)
    before = await stored_rollups(db, org)
    await refused_with(
        a_stub.RescheduleAppointment(
            reschedule_request(w, other.id, start + timedelta(minutes=30))
        ),
        "TIME_SLOT_TAKEN",
    )
    await unchanged()
    # Transitions the status does not allow; a stale etag.
    await refused_with(change_status(stubs, w, "confirm", a.id), "INVALID_TRANSITION")
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await a_stub.CancelAppointment(
            appointments_pb2.CancelAppointmentRequest(
                organization_id=org, appointment_id=a.id, etag='"v9"'
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    await unchanged()
    # A refund over the amount, a payment in another currency / of another client.
    await refused_with(
        p_stub.RefundPayment(refund_request(w, paid.id, 1001)),
        "REFUND_NOT_ALLOWED",
    )
    await refused_with(
        p_stub.RecordPayment(payment_request(w, alice, 10, "USD", appointment_id=a.id)),
        "PAYMENT_NOT_ALLOWED",
    )
    await refused_with(
        p_stub.RecordPayment(payment_request(w, w.clients[1], 10, "EUR", appointment_id=a.id)),
        "PAYMENT_NOT_ALLOWED",
    )
    await unchanged()

    # Refused after its evaluation: a booking of ours, uncommitted, holds the
    # time; the RPC's evaluation does not see it, its INSERT waits for it and
    # fails once it commits (TIME_SLOT_TAKEN naming it). Then ours is removed
    # again (the rollups never knew it).
    late = w.midnight(provider, 1) + timedelta(minutes=40)
    raw = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        tx = raw.transaction()
        await tx.start()
        slot = q.Slot(provider, late, late + timedelta(minutes=30), 0, 0)
        blocker = await q.insert_appointment(
            Conn(raw, None, 30.0),
            org_id=org,
            row_id=uuid7(),
            values={
                **q.interval_values(slot),
                "client_id": alice,
                "service_id": cut,
                "status": "pending",
                "price_minor": 0,
                "currency": "EUR",
            },
            audit=AUDIT,
            action="create",
        )
        task = asyncio.ensure_future(
            a_stub.CreateAppointment(create_request(w, provider, cut, w.clients[2], late))
        )
        pid = raw.get_server_pid()
        await assert_eventually(lambda: db.fetchval(BLOCKED_SQL, pid), timeout=20)
        await tx.commit()
        error = await refused_with(task, "TIME_SLOT_TAKEN")
        assert details(error)["ErrorInfo"].metadata["appointment_id"] == str(blocker["id"])
        await raw.execute(
            "DELETE FROM appointments WHERE organization_id = $1 AND id = $2", org, blocker["id"]
        )
    finally:
        await raw.close()
    await unchanged()


async def test_a_write_failing_after_its_rollups_statement_leaves_them_unchanged(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """The rollups statement runs inside the write's transaction: a write that
    fails after it (here: storing its request_id's answer, the last statement,
    fails by a trigger of ours) leaves neither raw rows nor rollups."""
    w = await make_world(stubs, org, zones=ZONES[:2], clients=2)
    provider, cut, alice = w.providers[0], w.services[0], w.clients[0]
    start = w.midnight(provider)
    a = await book(stubs, w, provider, cut, alice, start)
    paid = await pay(stubs, w, alice, 1000, a.id)
    before = await stored_rollups(db, org)
    name = f"rollups_test_fail_{uuid.uuid4().hex[:8]}"
    await db.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'failing on purpose'; END $$"
    )
    await db.execute(
        f"CREATE TRIGGER {name} BEFORE UPDATE ON request_results FOR EACH ROW "
        f"WHEN (NEW.request_id LIKE '{name}%') EXECUTE FUNCTION {name}()"
    )
    try:
        a_stub, p_stub = stubs.appointments, stubs.payments
        later = start + timedelta(hours=2)
        writes: list[tuple[Call, Message]] = [
            (a_stub.RescheduleAppointment, reschedule_request(w, a.id, later, "", f"{name}-2")),
            (a_stub.CreateAppointment, create_request(w, provider, cut, alice, start + timedelta(hours=5), request_id=f"{name}-3")),  # noqa: E501
            (p_stub.RecordPayment, payment_request(w, alice, 50, "EUR", request_id=f"{name}-4")),
            (p_stub.RefundPayment, refund_request(w, paid.id, None, f"{name}-5")),
            (a_stub.CompleteAppointment, transition_request(w, "complete", a.id, f"{name}-1")[1]),
        ]  # fmt: skip
        for method, request in writes:
            with pytest.raises(grpc.aio.AioRpcError):
                await method(request)
            assert await stored_rollups(db, org) == before
    finally:
        await db.execute(f"DROP TRIGGER {name} ON request_results")
        await db.execute(f"DROP FUNCTION {name}()")
    await assert_exact(db, org)
    # The same writes without the trigger do change them (the test could fail).
    for method, request in writes:
        await method(request)
    assert await stored_rollups(db, org) != before
    await assert_exact(db, org)


# -- the comparison can fail --------------------------------------------------------------


async def test_the_comparison_reports_exactly_the_rows_changed(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    w = await make_world(stubs, org, zones=ZONES[:2], clients=2)
    walk = Walk(stubs, w, random.Random(7), tag="mutation")
    for _ in range(40):
        await walk.step()
    await assert_exact(db, org)

    # A measure changed.
    row = await db.fetchrow(
        "SELECT provider_id, business_date, currency FROM provider_day_totals "
        "WHERE organization_id = $1 AND paid_minor > 0 ORDER BY provider_id, business_date LIMIT 1",
        org,
    )
    assert row is not None
    key = (str(row["provider_id"]), row["business_date"], row["currency"])
    where = "organization_id = $1 AND provider_id = $2 AND business_date = $3 AND currency = $4"
    await db.execute(f"UPDATE provider_day_totals SET paid_minor = paid_minor + 1 WHERE {where}",
                     org, *key)  # fmt: skip
    diffs = await rollup_differences(db, org)
    assert list(diffs) == ["provider_day_totals"], describe(diffs)
    diff = diffs["provider_day_totals"]
    assert (diff.missing, diff.extra, list(diff.different)) == ({}, {}, [key])
    want, have = diff.different[key]
    assert have == {**want, "paid_minor": want["paid_minor"] + 1}
    await db.execute(f"UPDATE provider_day_totals SET paid_minor = paid_minor - 1 WHERE {where}",
                     org, *key)  # fmt: skip
    await assert_exact(db, org)

    # A row gone: missing; a row too many: extra.
    visits = await db.fetchrow(
        "DELETE FROM client_visits WHERE organization_id = $1 AND client_id = $2 RETURNING *",
        org,
        alice := w.clients[0],
    )
    assert visits is not None, "the walk completed no appointment of the first client"
    stranger = str(uuid7())
    await db.execute(
        "INSERT INTO provider_day_clients (organization_id, provider_id, business_date, "
        "client_id, visits) VALUES ($1, $2, $3, $4, 1)",
        org, w.providers[0], date(2026, 1, 1), stranger,
    )  # fmt: skip
    diffs = await rollup_differences(db, org)
    assert sorted(diffs) == ["client_visits", "provider_day_clients"], describe(diffs)
    assert list(diffs["client_visits"].missing) == [(alice,)]
    assert (diffs["client_visits"].extra, diffs["client_visits"].different) == ({}, {})
    extra_key = (w.providers[0], date(2026, 1, 1), stranger)
    assert list(diffs["provider_day_clients"].extra) == [extra_key]
    assert diffs["provider_day_clients"].extra[extra_key] == {"visits": 1}
    assert not diffs["provider_day_clients"].missing
    assert not diffs["provider_day_clients"].different

    # What does not count: an all-zero row of an additive table, the bookkeeping.
    await db.execute(
        "DELETE FROM provider_day_clients WHERE organization_id = $1 AND client_id = $2",
        org, stranger,
    )  # fmt: skip
    await db.execute(
        "INSERT INTO client_visits SELECT * FROM jsonb_populate_record(NULL::client_visits, $1)",
        _json(dict(visits)),
    )
    await db.execute(
        "INSERT INTO service_day_totals (organization_id, service_id, business_date, currency) "
        "VALUES ($1, $2, '2026-01-01', 'EUR')",
        org, w.services[0],
    )  # fmt: skip
    await db.execute(
        "UPDATE client_visits SET replaced_first_visit_date = '2000-01-01' "
        "WHERE organization_id = $1",
        org,
    )
    await assert_exact(db, org)


def _json(row: dict[str, Any]) -> str:
    return json.dumps({k: v.isoformat() if hasattr(v, "isoformat") else str(v) if v is not None
                       else None for k, v in row.items()})  # fmt: skip


async def test_first_visits_move_earlier_and_ties_take_the_earlier_date(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """A client's first visit moves when an earlier appointment is completed
    later (organization_day_new_clients moves from one date to the other); two
    visits at the same instant with providers whose dates differ: the earlier
    business date is the first visit's, whichever is completed first."""
    w = await make_world(stubs, org, zones=ZONES[:2], clients=3)
    auckland, los_angeles = w.providers
    cut = w.services[0]
    # An hour after Auckland's midnight: the day before in Los Angeles.
    tie = w.midnight(auckland) + timedelta(hours=1)
    assert w.business_date(los_angeles, tie) < w.business_date(auckland, tie)

    async def visit(provider_id: str, client_id: str, start: datetime) -> None:
        a = await book(stubs, w, provider_id, cut, client_id, start)
        await change_status(stubs, w, "complete", a.id)
        await assert_exact(db, org)

    first, second, third = w.clients
    # Later first, then earlier: the first visit (and the new client) moves.
    await visit(auckland, first, tie + timedelta(days=1))
    await visit(los_angeles, first, tie - timedelta(days=1))
    await visit(auckland, first, tie)
    # Ties, in both orders.
    await visit(auckland, second, tie + timedelta(hours=2))
    await visit(los_angeles, second, tie + timedelta(hours=2))
    await visit(los_angeles, third, tie + timedelta(hours=4))
    await visit(auckland, third, tie + timedelta(hours=4))
    rows = await db.fetch(
        "SELECT client_id, first_visit_date FROM client_visits WHERE organization_id = $1", org
    )
    dates = {str(r["client_id"]): r["first_visit_date"] for r in rows}
    assert dates == {
        first: w.business_date(los_angeles, tie - timedelta(days=1)),
        second: w.business_date(los_angeles, tie + timedelta(hours=2)),
        third: w.business_date(los_angeles, tie + timedelta(hours=4)),
    }


# -- payments follow their appointment -------------------------------------------------------------


async def test_payments_follow_their_appointment_to_another_provider(
    stubs: Stubs, org: str, db: asyncpg.Connection
) -> None:
    """A payment and its refunds count for their appointment's provider, dated
    in its zone: a reschedule to another provider (Auckland -> Los Angeles, a
    day apart) moves them. (Found by the random walk: they stayed behind.)"""
    w = await make_world(stubs, org, zones=ZONES[:2], clients=1)
    auckland, los_angeles = w.providers
    start = w.midnight(auckland) + timedelta(hours=1)
    a = await book(stubs, w, auckland, w.services[0], w.clients[0], start)
    paid = await pay(stubs, w, w.clients[0], 2000, a.id)
    await stubs.payments.RefundPayment(refund_request(w, paid.id, 500))
    await assert_exact(db, org)
    await stubs.appointments.RescheduleAppointment(reschedule_request(w, a.id, start, los_angeles))
    await assert_exact(db, org, "after the move to another provider")
