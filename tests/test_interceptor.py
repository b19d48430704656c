"""The interceptor wraps all four handler kinds: correlation id, error mapping,
telemetry; and it validates x-actor. Probed with a test-only service on a real
grpc.aio server and channel."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from grpc import aio
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.errors import FieldViolation, InvalidArgument
from server.interceptors import CallInterceptor
from server.telemetry import create_telemetry
from server.testing import test_settings
from tests.conftest import details

SERVICE = "booking.v1test.Probe"


# Calls per payload of the deadlock probes.
_CALLS: dict[bytes, int] = {}


def _deadlock() -> Exception:
    return asyncpg.exceptions.DeadlockDetectedError.new(
        {"M": "deadlock detected", "D": "Process 1 waits for ShareLock", "C": "40P01"}
    )


async def _unary(request: bytes, context: Any) -> bytes:
    if request.startswith(b"deadlock"):
        # "deadlock-N": the first N calls are broken off by a deadlock.
        _CALLS[request] = _CALLS.get(request, 0) + 1
        if _CALLS[request] <= int(request.split(b"-")[1]):
            raise _deadlock()
        return b"ok after %d" % _CALLS[request]
    if request == b"fail":
        raise InvalidArgument("bad", field_violations=[FieldViolation("payload", "is bad")])
    if request == b"crash":
        raise RuntimeError("boom")
    if request in _DB_ERRORS:
        raise _DB_ERRORS[request]
    return request.upper()


# Database errors whose message and DETAIL quote row values (as PostgreSQL's do).
_DB_ERRORS: dict[bytes, Exception] = {
    # raise_exception from a trigger: not mapped, so INTERNAL.
    b"db-unmapped": asyncpg.exceptions.RaiseError.new(
        {"M": "rejected secret@x.org", "D": "Key (email)=(secret@x.org)", "C": "P0001"}
    ),
    # restrict_violation (a delete of a referenced row): FAILED_PRECONDITION.
    b"db-restrict": asyncpg.exceptions.RestrictViolationError.new(
        {
            "M": "update or delete violates RESTRICT",
            "D": "Key (email)=(secret@x.org) is still referenced",
            "C": "23001",
            "n": "fk_payments_client_id_clients",
        }
    ),
}


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for part in request.split(b","):
        if part == b"fail":
            raise InvalidArgument("bad", field_violations=[FieldViolation("payload", "is bad")])
        yield part


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    parts = [r async for r in requests]
    if parts and parts[0].startswith(b"deadlock"):
        _CALLS[parts[0]] = _CALLS.get(parts[0], 0) + 1
        raise _deadlock()
    if b"fail" in parts:
        raise InvalidArgument("bad", field_violations=[FieldViolation("payload", "is bad")])
    return b"+".join(parts)


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        if r == b"crash":
            raise RuntimeError("boom")
        yield r[::-1]


@pytest.fixture
async def probe() -> AsyncIterator[tuple[aio.Channel, InMemorySpanExporter, InMemoryMetricReader]]:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = create_telemetry(test_settings(), span_exporter=spans, metric_reader=metrics)
    server = aio.server(interceptors=[CallInterceptor(telemetry)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
                    "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, spans, metrics
    finally:
        await server.stop(0)
        telemetry.shutdown()


def _method(channel: aio.Channel, kind: str) -> Any:
    factory = {
        "Unary": channel.unary_unary,
        "ServerStream": channel.unary_stream,
        "ClientStream": channel.stream_unary,
        "Bidi": channel.stream_stream,
    }[kind]
    return factory(f"/{SERVICE}/{kind}")


def _requests(*items: bytes) -> Iterator[bytes]:
    return iter(items)


async def test_every_handler_kind_gets_the_correlation_id_and_telemetry(probe: Any) -> None:
    channel, spans, metrics = probe
    meta = (("x-request-id", "probe-1"),)

    call = _method(channel, "Unary")(b"abc", metadata=meta)
    assert await call == b"ABC"
    assert dict(await call.trailing_metadata())["x-request-id"] == "probe-1"

    call = _method(channel, "ServerStream")(b"a,b,c", metadata=meta)
    assert [item async for item in call] == [b"a", b"b", b"c"]
    assert dict(await call.trailing_metadata())["x-request-id"] == "probe-1"

    call = _method(channel, "ClientStream")(_requests(b"a", b"b"), metadata=meta)
    assert await call == b"a+b"
    assert dict(await call.trailing_metadata())["x-request-id"] == "probe-1"

    call = _method(channel, "Bidi")(_requests(b"ab", b"cd"), metadata=meta)
    assert [item async for item in call] == [b"ba", b"dc"]
    assert dict(await call.trailing_metadata())["x-request-id"] == "probe-1"

    names = sorted(s.attributes["rpc.method"] for s in spans.get_finished_spans())
    assert names == ["Bidi", "ClientStream", "ServerStream", "Unary"]
    assert {s.attributes["booking.correlation_id"] for s in spans.get_finished_spans()} == {
        "probe-1"
    }
    data = metrics.get_metrics_data()
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "rpc.server.duration"
        for p in m.data.data_points
    ]
    assert {p.attributes["rpc.method"] for p in points} == {
        "Unary",
        "ServerStream",
        "ClientStream",
        "Bidi",
    }


@pytest.mark.parametrize(
    ("kind", "request_"),
    [
        ("Unary", b"fail"),
        ("ServerStream", b"a,fail"),
        ("ClientStream", [b"a", b"fail"]),
    ],
)
async def test_service_errors_are_mapped_in_every_kind(
    probe: Any, kind: str, request_: Any
) -> None:
    channel, _spans, _metrics = probe
    arg = _requests(*request_) if isinstance(request_, list) else request_
    call = _method(channel, kind)(arg, metadata=(("x-request-id", "probe-2"),))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if kind == "ServerStream":
            _ = [item async for item in call]
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = details(caught.value)
    assert [v.field for v in got["BadRequest"].field_violations] == ["payload"]
    assert dict(caught.value.trailing_metadata())["x-request-id"] == "probe-2"


async def test_unknown_error_in_a_stream_is_internal_with_the_correlation_id(
    probe: Any,
) -> None:
    channel, _spans, _metrics = probe
    call = _method(channel, "Bidi")(_requests(b"ok", b"crash"), metadata=(("x-request-id", "p3"),))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for item in call:
            received.append(item)
    assert received == [b"ko"]
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert details(caught.value)["ErrorInfo"].metadata["correlation_id"] == "p3"
    assert "boom" not in (caught.value.details() or "")


@pytest.mark.parametrize(
    "actor",
    ["", " alice", "alice ", "x" * 201, "   "],
)
async def test_bad_actor_is_invalid_argument_before_the_handler(probe: Any, actor: str) -> None:
    channel, _spans, _metrics = probe
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _method(channel, "Unary")(b"abc", metadata=(("x-actor", actor),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = details(caught.value)["ErrorInfo"]
    assert (info.reason, info.metadata["header"]) == ("INVALID_ACTOR", "x-actor")


async def test_a_good_actor_passes(probe: Any) -> None:
    channel, _spans, _metrics = probe
    assert await _method(channel, "Unary")(b"a", metadata=(("x-actor", "svc:billing@eu-1"),)) == (
        b"A"
    )


async def test_database_errors_are_logged_without_row_values(
    stubs: Any, org: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's messages quote row values ("Key (...)=(...)", "Failing row
    contains (...)"): the warning line must carry the constraint and SQLSTATE only."""
    from booking.v1 import clients_pb2, resources_pb2

    secret = "ext-Secret-Person-4711"
    client = resources_pb2.Client(
        given_name="Hülya", family_name="Y\u0131lmaz", email="hulya@example.com", external_id=secret
    )
    await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(organization_id=org, client=client)
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.clients.CreateClient(
            clients_pb2.CreateClientRequest(organization_id=org, client=client)
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    lines = [r.getMessage() for r in caplog.records]
    assert any("uq_clients_organization_id_external_id" in line for line in lines), lines
    assert any("23505" in line for line in lines), lines
    for value in (secret, "Hülya", "Y\u0131lmaz", "hulya@example.com", "Key (", "Failing row"):
        assert not any(value in line for line in lines), (value, lines)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (b"db-unmapped", grpc.StatusCode.INTERNAL),
        (b"db-restrict", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_any_database_error_is_logged_without_its_message(
    probe: Any, caplog: pytest.LogCaptureFixture, request_: bytes, code: grpc.StatusCode
) -> None:
    channel, _spans, _metrics = probe
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _method(channel, "Unary")(request_)
    assert caught.value.code() == code
    assert "secret" not in (caught.value.details() or "")
    text = caplog.text  # formatted: messages and tracebacks
    assert "sqlstate=" in text, text
    assert "secret@x.org" not in text, text


async def test_a_unary_call_broken_off_by_a_deadlock_is_run_again(probe: Any) -> None:
    """PostgreSQL asks for a retry of a transaction it broke off: the caller
    never sees the first attempts."""
    channel, _, _ = probe
    assert await _method(channel, "Unary")(b"deadlock-2") == b"ok after 3"


async def test_retries_are_bounded_then_aborted_concurrent_conflict(probe: Any) -> None:
    from server.interceptors import RETRY_ATTEMPTS

    channel, _, _ = probe
    with pytest.raises(aio.AioRpcError) as caught:
        await _method(channel, "Unary")(b"deadlock-99")
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert details(caught.value)["ErrorInfo"].reason == "CONCURRENT_CONFLICT"
    assert _CALLS[b"deadlock-99"] == RETRY_ATTEMPTS


async def test_a_streamed_request_is_not_run_again(probe: Any) -> None:
    """Its messages were consumed by the first attempt."""
    channel, _, _ = probe
    with pytest.raises(aio.AioRpcError) as caught:
        await _method(channel, "ClientStream")(_requests(b"deadlock-stream", b"x"))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert _CALLS[b"deadlock-stream"] == 1
