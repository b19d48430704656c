"""The service's errors and their mapping to ``google.rpc.Status``.

Hierarchy (each class carries its gRPC status code)::

    ServiceError                      INTERNAL (base; also "anything unknown")
    ├── InvalidArgument               INVALID_ARGUMENT   + BadRequest field violations
    ├── NotFound                      NOT_FOUND          + ResourceInfo
    ├── AlreadyExists                 ALREADY_EXISTS     (+ field violations)
    ├── FailedPrecondition            FAILED_PRECONDITION
    ├── Aborted                       ABORTED            (+ RetryInfo when a retry can succeed)
    ├── PermissionDenied              PERMISSION_DENIED
    ├── DeadlineExceeded              DEADLINE_EXCEEDED
    └── Unavailable                   UNAVAILABLE        + RetryInfo

Every error becomes a ``google.rpc.Status`` with an ``ErrorInfo`` (reason in
UPPER_SNAKE, domain ``booking.v1``), then the standard details it carries, then
any ``details`` messages given (e.g. a PreconditionFailure, booking.v1.Conflict), in one interceptor
(:mod:`server.interceptors`). Database exceptions are translated into these by
:mod:`server.db.errors` (keyed by exception class / SQLSTATE and constraint
name, never by message text: no SQL, stack or other tenant's data reaches a
caller).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "DOMAIN",
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ServiceError",
    "Unavailable",
    "internal_error",
]

DOMAIN = "booking.v1"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str
    reason: str = ""


class ServiceError(Exception):
    """Base of every error the service returns on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        resource: tuple[str, str] | None = None,
        retry_after_s: float | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.details = tuple(details)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.resource = resource
        self.retry_after_s = retry_after_s

    def to_status(self) -> status_pb2.Status:
        details: list[any_pb2.Any] = []

        def pack(message: object) -> None:
            packed = any_pb2.Any()
            packed.Pack(message)  # type: ignore[arg-type]
            details.append(packed)

        pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata))
        if self.field_violations:
            pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.resource is not None:
            pack(
                error_details_pb2.ResourceInfo(
                    resource_type=self.resource[0],
                    resource_name=self.resource[1],
                    description=self.message,
                )
            )
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(self.retry_after_s * 1000))
            pack(error_details_pb2.RetryInfo(retry_delay=delay))
        for extra in self.details:
            pack(extra)
        return status_pb2.Status(
            code=_CODE_NUMBERS[self.code], message=self.message, details=details
        )


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    @classmethod
    def of(cls, resource_type: str, resource_id: str) -> NotFound:
        return cls(
            f"{resource_type} {resource_id!r} not found",
            reason=f"{resource_type.upper()}_NOT_FOUND",
            resource=(f"{DOMAIN}.{_camel(resource_type)}", resource_id),
        )


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(ServiceError):
    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        retry_after_s: float = 1.0,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retry_after_s=retry_after_s, metadata=metadata)


def internal_error(correlation_id: str) -> ServiceError:
    return ServiceError(
        f"internal error; quote correlation id {correlation_id} when reporting it",
        metadata={"correlation_id": correlation_id},
    )


_CODE_NUMBERS = {code: getattr(code_pb2, code.name) for code in grpc.StatusCode}


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
