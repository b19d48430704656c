"""Payment writes: RecordPayment, GetPayment, RefundPayment (payments.proto).

Money is integer minor units with a currency; a payment for an appointment is
its client's and in its currency; refunds never exceed what is left of a
payment, also when they race; request_id replays; every write is audited."""

from __future__ import annotations

import asyncio
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from booking.v1 import clients_pb2, common_pb2, payments_pb2, resources_pb2, schedules_pb2
from google.type import date_pb2

from tests.conftest import Bookable, Stubs, details, make_bookable, violated_fields
from tests.test_appointments import at, book

Status = resources_pb2.PaymentStatus
Method = resources_pb2.PaymentMethod


def payment(
    b: Bookable, amount: int = 2500, currency: str = "EUR", **fields: Any
) -> resources_pb2.Payment:
    fields.setdefault("client_id", b.client_id)
    fields.setdefault("method", Method.PAYMENT_METHOD_CARD)
    return resources_pb2.Payment(
        amount=common_pb2.Money(currency_code=currency, amount_minor=amount), **fields
    )


async def record(stubs: Stubs, b: Bookable, **fields: Any) -> resources_pb2.Payment:
    request_id = fields.pop("request_id", "")
    response = await stubs.payments.RecordPayment(
        payments_pb2.RecordPaymentRequest(
            organization_id=b.org, payment=payment(b, **fields), request_id=request_id
        )
    )
    return response.payment


async def refund(stubs: Stubs, org: str, payment_id: str, **fields: Any) -> Any:
    return await stubs.payments.RefundPayment(
        payments_pb2.RefundPaymentRequest(organization_id=org, payment_id=payment_id, **fields)
    )


async def refused(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, (err.value.code(), err.value.details())
    return err.value


async def audit_actions(db: asyncpg.Connection, resource_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT action FROM audit_events WHERE resource_id = $1 ORDER BY occurred_at, id",
        resource_id,
    )
    return [r["action"] for r in rows]


@pytest.fixture
async def b(stubs: Stubs, org: str) -> Bookable:
    return await make_bookable(stubs, org)


async def test_record_and_get(stubs: Stubs, b: Bookable, db: asyncpg.Connection) -> None:
    appointment = await book(stubs, b, at(60))
    paid = await record(
        stubs, b, appointment_id=appointment.id, external_reference="psp-1", request_id="pay-1"
    )
    assert paid.status == Status.PAYMENT_STATUS_COMPLETED  # the default
    assert (paid.amount.currency_code, paid.amount.amount_minor) == ("EUR", 2500)
    assert paid.refunded_amount == common_pb2.Money(currency_code="EUR", amount_minor=0)
    assert (paid.appointment_id, paid.client_id, paid.etag) == (appointment.id, b.client_id, '"v1"')
    got = await stubs.payments.GetPayment(
        payments_pb2.GetPaymentRequest(organization_id=b.org, payment_id=paid.id)
    )
    assert got.payment == paid
    # A retry with the same request_id returns the first answer, records nothing twice.
    again = await record(
        stubs, b, appointment_id=appointment.id, external_reference="psp-1", request_id="pay-1"
    )
    assert again == paid
    assert await db.fetchval("SELECT count(*) FROM payments WHERE organization_id = $1", b.org) == 1
    assert await audit_actions(db, paid.id) == ["create"]
    for status in (Status.PAYMENT_STATUS_PENDING, Status.PAYMENT_STATUS_FAILED):
        other = await record(stubs, b, status=status, method=Method.PAYMENT_METHOD_CASH)
        assert (other.status, other.appointment_id) == (status, "")


async def test_bad_payments_are_refused_with_their_fields(stubs: Stubs, b: Bookable) -> None:
    async def bad(expected: set[str], **fields: Any) -> None:
        error = await refused(record(stubs, b, **fields), grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(error) == expected, error.details()

    await bad({"payment.amount.amount_minor"}, amount=0)
    await bad({"payment.amount.amount_minor"}, amount=-5)
    await bad({"payment.amount.amount_minor"}, amount=10**15 + 1)
    await bad({"payment.amount.currency_code"}, currency="eur")
    await bad({"payment.amount.currency_code"}, currency="EUR\n")
    await bad({"payment.status"}, status=Status.PAYMENT_STATUS_REFUNDED)
    await bad({"payment.status"}, status=99)
    await bad({"payment.method"}, method=Method.PAYMENT_METHOD_UNSPECIFIED)
    await bad({"payment.client_id"}, client_id="nope")
    await bad({"payment.appointment_id"}, appointment_id="nope")
    await bad({"payment.external_reference"}, external_reference="x" * 201)
    await bad({"payment.external_reference"}, external_reference="  ")
    # The largest amount is fine.
    assert (await record(stubs, b, amount=10**15)).amount.amount_minor == 10**15


async def test_references_and_consistency(stubs: Stubs, b: Bookable, org: str) -> None:
    # Unknown client / appointment: NOT_FOUND naming them.
    unknown = "01a214ef-0000-7000-8000-000000000000"
    error = await refused(record(stubs, b, client_id=unknown), grpc.StatusCode.NOT_FOUND)
    assert details(error)["ErrorInfo"].reason == "CLIENT_NOT_FOUND"
    error = await refused(record(stubs, b, appointment_id=unknown), grpc.StatusCode.NOT_FOUND)
    assert details(error)["ErrorInfo"].reason == "APPOINTMENT_NOT_FOUND"
    # The appointment is another client's, or priced in another currency.
    appointment = await book(stubs, b, at(120))
    other = await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org, client=resources_pb2.Client(given_name="O", family_name="T")
        )
    )
    error = await refused(
        record(stubs, b, appointment_id=appointment.id, client_id=other.client.id),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["appointment_client_id"]) == (
        "PAYMENT_NOT_ALLOWED",
        b.client_id,
    )
    error = await refused(
        record(stubs, b, appointment_id=appointment.id, currency="USD"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["appointment_currency"]) == ("PAYMENT_NOT_ALLOWED", "EUR")
    # An external reference is unique per organization.
    await record(stubs, b, external_reference="psp-9")
    error = await refused(
        record(stubs, b, external_reference="psp-9"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert details(error)["ErrorInfo"].reason == "EXTERNAL_REFERENCE_TAKEN"
    assert violated_fields(error) == {"payment.external_reference"}


async def test_refunds_in_part_then_in_full(
    stubs: Stubs, b: Bookable, db: asyncpg.Connection
) -> None:
    paid = await record(stubs, b, amount=1000)
    first = await refund(
        stubs, b.org, paid.id, amount_minor=300, reason=" changed mind ", etag=paid.etag
    )
    assert first.payment.refunded_amount.amount_minor == 300
    assert first.payment.status == Status.PAYMENT_STATUS_COMPLETED
    assert (first.refund.amount.amount_minor, first.refund.amount.currency_code) == (300, "EUR")
    assert (first.refund.payment_id, first.refund.reason) == (paid.id, "changed mind")
    assert first.payment.etag == '"v2"'
    # A stale etag: ABORTED, nothing written.
    error = await refused(
        refund(stubs, b.org, paid.id, amount_minor=1, etag=paid.etag), grpc.StatusCode.ABORTED
    )
    assert details(error)["ErrorInfo"].reason == "ETAG_MISMATCH"
    # More than is left: refused, saying what is left.
    error = await refused(
        refund(stubs, b.org, paid.id, amount_minor=701), grpc.StatusCode.FAILED_PRECONDITION
    )
    info = details(error)["ErrorInfo"]
    assert (info.reason, info.metadata["refundable_minor"]) == ("REFUND_NOT_ALLOWED", "700")
    # The rest (amount unset): REFUNDED.
    rest = await refund(stubs, b.org, paid.id, request_id="refund-rest")
    assert rest.refund.amount.amount_minor == 700
    assert rest.payment.status == Status.PAYMENT_STATUS_REFUNDED
    assert rest.payment.refunded_amount.amount_minor == 1000
    # Its retry replays; anything more is refused (nothing is left).
    assert await refund(stubs, b.org, paid.id, request_id="refund-rest") == rest
    error = await refused(refund(stubs, b.org, paid.id), grpc.StatusCode.FAILED_PRECONDITION)
    info = details(error)["ErrorInfo"]
    assert (info.metadata["refundable_minor"], info.metadata["current_status"]) == (
        "0",
        "PAYMENT_STATUS_REFUNDED",
    )
    rows = await db.fetch(
        "SELECT amount_minor FROM refunds WHERE organization_id = $1 ORDER BY created_at", b.org
    )
    assert [r["amount_minor"] for r in rows] == [300, 700]
    assert await audit_actions(db, paid.id) == ["create", "refund", "refund"]


async def test_only_completed_payments_are_refunded(stubs: Stubs, b: Bookable) -> None:
    for status in (Status.PAYMENT_STATUS_PENDING, Status.PAYMENT_STATUS_FAILED):
        pending = await record(stubs, b, status=status)
        error = await refused(
            refund(stubs, b.org, pending.id, amount_minor=1), grpc.StatusCode.FAILED_PRECONDITION
        )
        info = details(error)["ErrorInfo"]
        assert (info.reason, info.metadata["refundable_minor"]) == ("REFUND_NOT_ALLOWED", "0")


async def test_refund_validation_and_references(stubs: Stubs, b: Bookable) -> None:
    paid = await record(stubs, b, amount=500)
    for fields, field in (
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -1}, "amount_minor"),
        ({"reason": "r" * 501}, "reason"),
        ({"external_reference": "x" * 201}, "external_reference"),
        ({"etag": "v1"}, "etag"),
        ({"request_id": "a b"}, "request_id"),
    ):
        error = await refused(
            refund(stubs, b.org, paid.id, **fields), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert violated_fields(error) == {field}, (fields, error.details())
    error = await refused(
        refund(stubs, b.org, "01a214ef-0000-7000-8000-000000000000"), grpc.StatusCode.NOT_FOUND
    )
    assert details(error)["ErrorInfo"].reason == "PAYMENT_NOT_FOUND"
    await refund(stubs, b.org, paid.id, amount_minor=1, external_reference="re-1")
    error = await refused(
        refund(stubs, b.org, paid.id, amount_minor=1, external_reference="re-1"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert violated_fields(error) == {"external_reference"}


async def test_concurrent_refunds_never_exceed_the_payment(
    stubs: Stubs, b: Bookable, db: asyncpg.Connection
) -> None:
    """Twelve refunds of 30 race for a payment of 100: three succeed, the rest
    are refused with what is left; the refunds add up to the payment's
    refunded_minor, never above its amount."""
    paid = await record(stubs, b, amount=100)
    results = await asyncio.gather(
        *(refund(stubs, b.org, paid.id, amount_minor=30) for _ in range(12)),
        return_exceptions=True,
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(done) == 3, results
    for error in failed:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert details(error)["ErrorInfo"].metadata["refundable_minor"] == "10"
    row = await db.fetchrow(
        "SELECT refunded_minor, (SELECT sum(amount_minor) FROM refunds r WHERE "
        "r.organization_id = p.organization_id AND r.payment_id = p.id) AS refunds "
        "FROM payments p WHERE organization_id = $1 AND id = $2",
        b.org,
        paid.id,
    )
    assert (row["refunded_minor"], row["refunds"]) == (90, 90)


async def test_the_day_sheet_counts_payments_less_their_refunds(stubs: Stubs, b: Bookable) -> None:
    """amount_paid of an appointment: its completed payments less their
    refunds (a payment refunded in full counts nothing)."""
    start = at(180)
    appointment = await book(stubs, b, start)
    kept = await record(stubs, b, appointment_id=appointment.id, amount=2000)
    gone = await record(stubs, b, appointment_id=appointment.id, amount=500)
    await refund(stubs, b.org, kept.id, amount_minor=300)
    await refund(stubs, b.org, gone.id)
    local = start.astimezone(ZoneInfo(b.time_zone)).date()
    sheet = await stubs.schedules.GetProviderSchedule(
        schedules_pb2.GetProviderScheduleRequest(
            organization_id=b.org,
            provider_ids=[b.provider_id],
            date=date_pb2.Date(year=local.year, month=local.month, day=local.day),
        )
    )
    (entry,) = sheet.providers[0].appointments
    assert entry.amount_paid == common_pb2.Money(currency_code="EUR", amount_minor=1700)
    # The latest payment (the one refunded in full) gives the status.
    assert entry.payment_status == Status.PAYMENT_STATUS_REFUNDED


async def test_output_only_fields_are_ignored_and_refunds_audited_by_field(
    stubs: Stubs, b: Bookable, db: asyncpg.Connection
) -> None:
    """RecordPayment ignores its output-only fields, so a retry that sends
    them back is the same request; a refund's audit names the Payment's fields."""
    first = await record(stubs, b, amount=400, request_id="pay-oo")
    again = await record(
        stubs,
        b,
        amount=400,
        request_id="pay-oo",
        id=first.id,
        etag=first.etag,
        refunded_amount=common_pb2.Money(currency_code="EUR", amount_minor=7),
    )
    assert again == first
    await refund(stubs, b.org, first.id, amount_minor=100)
    await refund(stubs, b.org, first.id)
    rows = await db.fetch(
        "SELECT changed_fields FROM audit_events WHERE resource_id = $1 AND action = 'refund' "
        "ORDER BY occurred_at, id",
        first.id,
    )
    assert [list(r["changed_fields"]) for r in rows] == [
        ["refunded_amount"],
        ["refunded_amount", "status"],
    ]
