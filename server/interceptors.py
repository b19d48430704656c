"""The one interceptor: correlation id, actor, telemetry, and error mapping.

For every booking RPC, of all four kinds (unary and streaming, in either
direction), it
- takes the caller's ``x-request-id`` (or makes one), puts it in the call
  context (every log line of the call carries it), echoes it in the response
  trailers (on success and on error) and attaches it to the trace span;
- validates ``x-actor`` (printable ASCII, at most 200 characters) before it
  reaches the audit trail;
- turns :class:`server.errors.ServiceError` and database exceptions into a
  ``google.rpc.Status`` (``grpc-status-details-bin``); anything else becomes
  INTERNAL with a generic message, logged with its stack and correlation id.
  Database errors are logged by class, SQLSTATE and constraint only: never the
  driver's message, which can quote row values;
- re-runs a unary handler whose transaction PostgreSQL broke off with
  a deadlock (40P01) or a serialization failure (40001): the transaction was
  rolled back whole, so the handler runs again from the start (up to
  RETRY_ATTEMPTS times, with jittered backoff, within the call's deadline).
  Callers only see ABORTED CONCURRENT_CONFLICT when every attempt failed.

Handlers are wrapped once per method (cached), not per call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import asyncpg
import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from opentelemetry import trace

from server.context import CallInfo, reset_call, set_call
from server.db.errors import describe_database_error, from_database_error, root_cause
from server.errors import InvalidArgument, ServiceError, internal_error
from server.telemetry import Telemetry

__all__ = ["MAX_ACTOR_LEN", "RETRY_ATTEMPTS", "CallInterceptor"]

_log = logging.getLogger("server.rpc")
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_ACTOR_LEN = 200
# Printable ASCII without leading/trailing blanks (gRPC text metadata is ASCII).
_ACTOR = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$")
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Attempts of a handler whose transaction was broken off by PostgreSQL (a
# deadlock or a serialization failure: retrying is what PostgreSQL asks for).
RETRY_ATTEMPTS = 4
_RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

Context = aio.ServicerContext[Any, Any]


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


class _Call:
    """One served call: its correlation id, timing, span and outcome."""

    __slots__ = ("bad_actor", "code", "correlation_id", "echo", "started", "token")

    def __init__(self, method: str, context: Context) -> None:
        metadata = context.invocation_metadata()
        given = _metadata_value(metadata, "x-request-id")
        valid = given is not None and _CORRELATION_ID.fullmatch(given) is not None
        self.correlation_id = given if given and valid else uuid.uuid4().hex
        actor = _metadata_value(metadata, "x-actor")
        self.bad_actor = actor is not None and _ACTOR.fullmatch(actor) is None
        self.token = set_call(
            CallInfo(
                self.correlation_id, actor if actor and not self.bad_actor else "anonymous", method
            )
        )
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        # Trailers, not headers: sending headers early costs the call one more
        # batch through gRPC's completion queue (~0.1-0.2 ms of CPU), and
        # trailers reach the caller on errors too.
        self.echo = ("x-request-id", self.correlation_id)
        context.set_trailing_metadata((self.echo,))

    def check_actor(self) -> None:
        """Raised inside the span (by the wrappers), so it is mapped like any error."""
        if self.bad_actor:
            raise InvalidArgument(
                f"the x-actor header must be 1-{MAX_ACTOR_LEN} printable ASCII characters "
                "without leading or trailing blanks",
                reason="INVALID_ACTOR",
                metadata={"header": "x-actor"},
            )

    def to_error(self, exc: Exception, method: str) -> ServiceError:
        if isinstance(exc, ServiceError):
            return exc
        mapped = from_database_error(exc)
        if mapped is None:
            if isinstance(root_cause(exc), asyncpg.PostgresError):
                # Its message and DETAIL can quote row values: the frames only.
                _log.error(
                    "unhandled database error in %s: %s\n%s",
                    method,
                    describe_database_error(exc),
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
            else:
                _log.exception("unhandled error in %s", method)
            return internal_error(self.correlation_id)
        _log.warning("%s: %s (%s)", method, mapped.reason, describe_database_error(exc))
        return mapped

    async def abort(self, context: Context, error: ServiceError) -> None:
        self.code = error.code
        status = error.to_status()
        await context.abort(
            error.code,
            status.message,
            trailing_metadata=(self.echo, (_STATUS_DETAILS_KEY, status.SerializeToString())),
        )


async def _retrying(behavior: Any, request: Any, context: Context, method: str) -> Any:
    """``behavior(request, context)``, run again when PostgreSQL broke its
    transaction off (nothing of it was committed)."""
    attempt = 1
    while True:
        try:
            return await behavior(request, context)
        except Exception as exc:
            if attempt >= RETRY_ATTEMPTS or not isinstance(root_cause(exc), _RETRIED):
                raise
            delay = random.uniform(0.005, 0.02) * 2 ** (attempt - 1)
            remaining = context.time_remaining()
            if remaining is not None and remaining < delay + 0.05:
                raise
            _log.info(
                "%s: %s, attempt %d of %d",
                method,
                describe_database_error(exc),
                attempt + 1,
                RETRY_ATTEMPTS,
            )
            attempt += 1
            await asyncio.sleep(delay)


def _parsed(parse: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return parse(raw)
    except DecodeError:
        # The parser's message names no values; the bytes are never echoed.
        raise InvalidArgument(
            "the request is not a valid protobuf message of its type "
            "(a broken wire format, or a string that is not UTF-8)",
            reason="MALFORMED_REQUEST",
        ) from None


class CallInterceptor(aio.ServerInterceptor):
    """Wraps each booking method's handler once (cached per method name); the
    wrapper reads the call's metadata from its context, so no per-call closure
    or handler object is built."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith("/booking."):
            return handler  # health, reflection: not ours to wrap
        wrapped = self._wrap_handler(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap_handler(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        serde = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        # A unary request is parsed in the wrapper, not by grpc: bytes that do
        # not parse would fail in grpc's deserializer, as UNKNOWN without details.
        parse = handler.request_deserializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary, parse, retry=True),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary), **serde
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_streaming(method, handler.unary_stream, parse),
                response_serializer=handler.response_serializer,
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_streaming(method, handler.stream_stream), **serde
        )

    def _span(self, method: str, short: str, call: _Call) -> AbstractContextManager[trace.Span]:
        return self._telemetry.tracer.start_as_current_span(
            method,
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.method": short,
                "booking.correlation_id": call.correlation_id,
            },
        )

    def _finish(self, short: str, call: _Call) -> None:
        self._telemetry.rpc_duration.record(
            (time.perf_counter() - call.started) * 1000,
            {"rpc.method": short, "rpc.grpc.status_code": call.code.name},
        )
        reset_call(call.token)

    @staticmethod
    def _failed(span: trace.Span, error: ServiceError) -> None:
        span.set_attribute("rpc.grpc.status_code", error.code.value[0])
        span.set_status(trace.Status(trace.StatusCode.ERROR, error.reason))

    def _wrap_unary(
        self,
        method: str,
        behavior: Any,
        parse: Callable[[bytes], Any] | None = None,
        retry: bool = False,
    ) -> Callable[..., Awaitable[Any]]:
        """Unary response (unary or streamed request): one answer or one error.
        ``parse``: the request's deserializer when the request arrives as bytes;
        ``retry``: re-run on a deadlock or serialization failure (unary requests)."""
        short = method.rsplit("/", 1)[-1]

        async def wrapped(request: Any, context: Context) -> Any:
            call = _Call(short, context)
            try:
                with self._span(method, short, call) as span:
                    try:
                        call.check_actor()
                        if parse is not None:
                            request = _parsed(parse, request)
                        if not retry:  # a streamed request is consumed: not re-run
                            return await behavior(request, context)
                        return await _retrying(behavior, request, context, short)
                    except Exception as exc:
                        error = call.to_error(exc, short)
                    self._failed(span, error)
                await call.abort(context, error)
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._finish(short, call)

        return wrapped

    def _wrap_streaming(
        self, method: str, behavior: Any, parse: Callable[[bytes], Any] | None = None
    ) -> Callable[..., AsyncIterator[Any]]:
        """Streamed response: items as the handler yields them, then OK or one error
        (an error after some items ends the stream with that status). ``parse``:
        as for :meth:`_wrap_unary`."""
        short = method.rsplit("/", 1)[-1]

        async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(short, context)
            try:
                with self._span(method, short, call) as span:
                    try:
                        call.check_actor()
                        if parse is not None:
                            request = _parsed(parse, request)
                        result = behavior(request, context)
                        if hasattr(result, "__aiter__"):
                            async for item in result:
                                yield item
                        else:  # a handler that writes with context.write()
                            await result
                        return
                    except Exception as exc:
                        error = call.to_error(exc, short)
                    self._failed(span, error)
                await call.abort(context, error)
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                self._finish(short, call)

        return wrapped
