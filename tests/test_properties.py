"""Property-based: any request to any RPC gets a deliberate answer.

Hypothesis builds requests from the messages' descriptors: every field may be
set or not, with values biased towards the edges (valid and foreign ids,
unknown enum numbers, out-of-range timestamps, NUL and non-ASCII text, huge
numbers, stale and malformed etags, tampered page tokens, junk update masks).
Whatever arrives, the server must answer OK or a deliberate error: never
INTERNAL or UNKNOWN, always a google.rpc.Status with ErrorInfo, BadRequest
field violations with INVALID_ARGUMENT, and a failed call writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import appointments_pb2, clients_pb2, resources_pb2, schedules_pb2
from google.protobuf import descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.handlers import SERVICES as HANDLED_SERVICES
from server.handlers._encoding import set_time
from tests.conftest import Stubs, details, make_bookable

# Every RPC of the contract, from the service descriptors (a new RPC is
# covered without an entry).
RPCS = [
    (service.full_name, method.name)
    for service in HANDLED_SERVICES
    for method in service.pb2.DESCRIPTOR.services_by_name[service.short_name].methods
]


def rpc_callable(channel: grpc.aio.Channel, service: str, method: str) -> Any:
    rpc = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    return channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message_factory.GetMessageClass(rpc.output_type).FromString,
    )


INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
EDGE_INTS = [0, 1, -1, 2, 49, 50, 51, 1000, 1001, 1440, 1441, 10**15, 10**15 + 1]
# Timestamp seconds: the valid range is 0001-01-01 .. 9999-12-31.
_NOW = int(datetime.now(UTC).timestamp()) // 3600 * 3600
# The edges of Timestamp, and instants near now (so that availability and
# booking requests get past range checks to the rules).
EDGE_SECONDS = [0, -1, 1, 1_700_000_000, -62_135_596_800, -62_135_596_801, 253_402_300_799] + [
    _NOW + days * 86_400 + minutes * 60
    for days in (-1, 0, 1, 7, 8, 63, 400)
    for minutes in (0, 30, 600)
]
EDGE_SECONDS += [253_402_300_800, 2**62]
WORDS = [
    "",
    " ",
    "not-a-uuid",
    "*",
    "name",
    "name desc",
    "create_time desc",
    "display_name",
    "email",
    "active",
    "price",
    "Europe/Berlin",
    "Mars/Phobos",
    "EUR",
    "usd",
    "ada@example.com",
    "not an email",
    "+15551234567",
    "client",
    "organization",
    '"v1"',
    '"v999999999"',
    '"v1',
    "ab",
    "love",
    "\x00",
    "%_\\",
    "Zoë ☃ 🙂",
    "x" * 300,
]


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(WORDS), st.text(max_size=40))


def _int(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    return st.one_of(
        st.sampled_from([i for i in EDGE_INTS if low <= i <= high] + [low, high]),
        st.integers(low, high),
    )


def _scalar(field: FieldDescriptor, ids: list[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(ids), _text())
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-3, 1000))
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return _int(INT32)
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return _int(INT64)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    raise AssertionError(f"no strategy for {field.full_name} (type {t})")


def _often(draw: Callable[..., Any], value: Any, other: st.SearchStrategy[Any]) -> Any:
    """``value`` four times in five, else a draw from ``other``."""
    return value if draw(st.integers(0, 4)) else draw(other)


def fill(msg: Message, draw: Callable[..., Any], ids: list[str], depth: int = 0) -> None:
    """Set a random subset of ``msg``'s fields (recursively, 3 levels deep).

    Requests are mostly well-formed, so that a bad value is usually the only
    one and reaches the code behind validation: the tenant is usually the test
    tenant, an id field usually names a row that exists, and each other field
    is set one time in three.
    """
    # The stubs say descriptor.Descriptor | upb's; upb's passes isinstance(_, Descriptor).
    descriptor = cast(Descriptor, msg.DESCRIPTOR)
    if descriptor.full_name == "google.protobuf.Timestamp":
        msg.seconds = draw(st.one_of(st.sampled_from(EDGE_SECONDS), _int(INT64)))  # type: ignore[attr-defined]
        msg.nanos = draw(st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1]))  # type: ignore[attr-defined]
        return
    for field in descriptor.fields:
        if field.name == "organization_id" and not field.is_repeated:
            msg.organization_id = _often(draw, ids[0], _scalar(field, ids))  # type: ignore[attr-defined]
            continue
        if field.name.endswith("id") and field.type == FieldDescriptor.TYPE_STRING:
            if draw(st.booleans()):
                setattr(msg, field.name, _often(draw, draw(st.sampled_from(ids)), _text()))
            continue
        if draw(st.integers(0, 2)):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    fill(getattr(msg, field.name).add(), draw, ids, depth + 1)
            else:
                fill(getattr(msg, field.name), draw, ids, depth + 1)
        elif field.is_repeated:
            getattr(msg, field.name).extend(draw(st.lists(_scalar(field, ids), max_size=3)))
        else:
            setattr(msg, field.name, draw(_scalar(field, ids)))


@pytest_asyncio.fixture(loop_scope="session")
async def known_ids(stubs: Stubs, org: str) -> list[str]:
    """Ids and a real page token that requests may name, so that some calls get deep."""
    bookable = await make_bookable(stubs, org, buffer_after_minutes=10)
    start = timestamp_pb2.Timestamp(seconds=_NOW + 86_400)
    appointment = await stubs.appointments.CreateAppointment(
        appointments_pb2.CreateAppointmentRequest(
            organization_id=org,
            appointment=resources_pb2.Appointment(
                provider_id=bookable.provider_id,
                client_id=bookable.client_id,
                service_id=bookable.service_id,
                start_time=start,
            ),
        )
    )
    time_off = await stubs.schedules.CreateTimeOff(
        schedules_pb2.CreateTimeOffRequest(
            organization_id=org,
            time_off=resources_pb2.TimeOff(
                provider_id=bookable.provider_id,
                start_time=timestamp_pb2.Timestamp(seconds=_NOW + 2 * 86_400),
                end_time=timestamp_pb2.Timestamp(seconds=_NOW + 2 * 86_400 + 7200),
            ),
        )
    )
    ids = [
        org,
        bookable.provider_id,
        bookable.service_id,
        appointment.appointment.id,
        time_off.time_off.id,
        str(uuid.uuid4()),
    ]
    for name in ("Ada", "Bob", "Cy"):
        created = await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                organization_id=org, client=resources_pb2.Client(given_name=name)
            )
        )
        ids.append(created.client.id)
    page = await stubs.clients.ListClients(
        clients_pb2.ListClientsRequest(organization_id=org, page_size=1)
    )
    token = page.next_page_token
    ids += [token, token[:-2] + ("AA" if not token.endswith("AA") else "BB")]
    return ids


async def _writes(db: asyncpg.Connection) -> int:
    """Every write RPC audits in its transaction: the audit count is the write count."""
    return int(await db.fetchval("SELECT count(*) FROM audit_events"))


@pytest.mark.parametrize(("service", "method"), RPCS, ids=[m for _, m in RPCS])
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_request_gets_a_deliberate_answer(
    service: str,
    method: str,
    data: st.DataObject,
    channel: grpc.aio.Channel,
    known_ids: list[str],
    db: asyncpg.Connection,
) -> None:
    call = rpc_callable(channel, service, method)
    rpc = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    request = message_factory.GetMessageClass(rpc.input_type)()
    fill(request, data.draw, known_ids)
    before = await _writes(db)
    try:
        await call(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        code = error.code()
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            f"{method} answered {code.name}: {error.details()} to {request}"
        )
        found = details(error)  # asserts a google.rpc.Status with ErrorInfo
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            assert found.get("BadRequest") and found["BadRequest"].field_violations, (
                f"{method}: INVALID_ARGUMENT without field violations for {request}"
            )
        assert await _writes(db) == before, f"{method} failed but wrote: {request}"


@given(
    value=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_timestamps_are_encoded_exactly(value: datetime, db: asyncpg.Connection) -> None:
    """What PostgreSQL stores (microseconds) arrives exactly, before and after 1970."""
    stored = await db.fetchval("SELECT $1::timestamptz", value)
    fast = timestamp_pb2.Timestamp()
    set_time(fast, stored)
    reference = timestamp_pb2.Timestamp()
    reference.FromDatetime(stored)
    assert (fast.seconds, fast.nanos) == (reference.seconds, reference.nanos)
    assert fast.ToDatetime(tzinfo=UTC) == stored
    assert stored - datetime(1970, 1, 1, tzinfo=UTC) == timedelta(
        seconds=fast.seconds, microseconds=fast.nanos // 1000
    )
