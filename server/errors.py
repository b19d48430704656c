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
UPPER_SNAKE, domain ``booking.v1``) in one interceptor
(:mod:`server.interceptors`). Database exceptions are translated by
:func:`from_database_error`, keyed by SQLSTATE and constraint name, never by
message text: no SQL, stack or other tenant's data reaches a caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg
import grpc
import sqlalchemy.exc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "DOMAIN",
    "Aborted",
    "AlreadyExists",
    "ConnectionLost",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ServiceError",
    "Unavailable",
    "from_database_error",
    "internal_error",
    "root_cause",
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
    ) -> None:
        super().__init__(message)
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


# -- database errors --------------------------------------------------------------

# Constraint name -> (reason, request field) for messages a caller can act on.
# Names are fixed by the naming convention in server.db.schema.
_CONSTRAINTS: dict[str, tuple[str, str]] = {
    "uq_organizations_slug": ("SLUG_TAKEN", "organization.slug"),
    "uq_clients_organization_id_external_id": ("EXTERNAL_ID_TAKEN", "client.external_id"),
    "uq_appointments_organization_id_external_id": ("EXTERNAL_ID_TAKEN", "appointment.external_id"),
    "uq_payments_organization_id_external_reference": (
        "EXTERNAL_REFERENCE_TAKEN",
        "payment.external_reference",
    ),
    "ex_appointments_no_overlap": ("TIME_SLOT_TAKEN", "appointment.start_time"),
}

_UNAVAILABLE_CLASSES = ("08", "53", "57P")  # connection, resources, operator intervention
_RETRY_AFTER_S = 1.0


class ConnectionLost(Exception):
    """The pooled connection was found closed (the database restarted or the link broke)."""


def root_cause(exc: BaseException) -> BaseException:
    """SQLAlchemy wraps driver errors (DBAPIError.orig, whose cause is asyncpg's)."""
    seen = 0
    while seen < 5:
        seen += 1
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
            exc = exc.orig
            continue
        cause = exc.__cause__
        if cause is not None and not isinstance(exc, asyncpg.PostgresError | OSError):
            if isinstance(
                cause, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | ConnectionLost
            ):
                exc = cause
                continue
        break
    return exc


def from_database_error(exc: BaseException) -> ServiceError | None:
    """Translate a database-layer exception, or None when it is not one."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return Unavailable(
            "no database connection free within the pool timeout; retry later",
            reason="POOL_EXHAUSTED",
            retry_after_s=_RETRY_AFTER_S,
        )
    if not isinstance(exc, ConnectionLost):
        exc = root_cause(exc)
    if isinstance(exc, asyncpg.PostgresError):
        return _from_sqlstate(exc)
    if isinstance(exc, asyncpg.DataError):  # a value the driver cannot encode
        return InvalidArgument("a value is out of range or malformed", reason="INVALID_VALUE")
    # Before OSError: TimeoutError is one.
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DeadlineExceeded(
            "the call's deadline expired while the database was working; the statement "
            "was cancelled",
            reason="STATEMENT_TIMEOUT",
        )
    # Other InterfaceErrors are misuse of the driver: INTERNAL, not UNAVAILABLE.
    # (server.db.engine turns "connection is closed" into ConnectionLost.)
    if isinstance(
        exc,
        asyncpg.ConnectionDoesNotExistError
        | asyncpg.PostgresConnectionError
        | ConnectionLost
        | ConnectionError
        | OSError,
    ):
        return Unavailable(
            "the database is unavailable; retry later",
            reason="DATABASE_UNAVAILABLE",
            retry_after_s=_RETRY_AFTER_S,
        )
    return None


def _from_sqlstate(exc: asyncpg.PostgresError) -> ServiceError | None:
    state: str = getattr(exc, "sqlstate", "") or ""
    constraint: str = getattr(exc, "constraint_name", "") or ""
    table: str = getattr(exc, "table_name", "") or ""
    meta = {"constraint": constraint} if constraint else {}
    known = _CONSTRAINTS.get(constraint)
    if state == "23505":  # unique_violation
        reason, field = known or ("ALREADY_EXISTS", table)
        return AlreadyExists(
            f"{field or 'resource'} already exists",
            reason=reason,
            metadata=meta,
            field_violations=[FieldViolation(field, "must be unique", reason)] if field else (),
        )
    if state == "23P01":  # exclusion_violation: a double booking
        reason, field = known or ("CONFLICT", "")
        return FailedPrecondition(
            "the provider already has an appointment overlapping that time",
            reason=reason,
            metadata=meta,
        )
    if state == "23503":  # foreign_key_violation
        if constraint.endswith("_organization_id_organizations"):
            return NotFound(
                "organization not found",
                reason="ORGANIZATION_NOT_FOUND",
                resource=(f"{DOMAIN}.Organization", ""),
                metadata=meta,
            )
        return FailedPrecondition(
            "a referenced resource does not exist in this organization",
            reason="REFERENCED_RESOURCE_NOT_FOUND",
            metadata=meta,
        )
    if state == "23514":  # check_violation
        field = _check_field(table, constraint)
        return InvalidArgument(
            f"{field} is not valid",
            reason="CONSTRAINT_VIOLATED",
            metadata=meta,
            field_violations=[FieldViolation(field, f"violates {constraint}")],
        )
    if state in ("23502",) or state.startswith("22"):  # not null, data exceptions
        return InvalidArgument(
            "a value is out of range or malformed",
            reason="INVALID_VALUE",
            metadata={"sqlstate": state},
        )
    if state == "57014":  # query_canceled: statement_timeout or a cancel request
        return DeadlineExceeded(
            "the statement ran past the call's deadline and was cancelled",
            reason="STATEMENT_TIMEOUT",
        )
    if state in ("40001", "40P01", "55P03"):  # serialization, deadlock, lock not available
        return Aborted(
            "the transaction conflicted with a concurrent one; retry",
            reason="CONCURRENT_CONFLICT",
            retry_after_s=0.05,
        )
    if state.startswith(_UNAVAILABLE_CLASSES):
        return Unavailable(
            "the database is unavailable; retry later",
            reason="DATABASE_UNAVAILABLE",
            retry_after_s=_RETRY_AFTER_S,
        )
    return None


def _check_field(table: str, constraint: str) -> str:
    resource = table[:-1] if table.endswith("s") else table
    prefix = f"ck_{table}_"
    name = constraint[len(prefix) :] if constraint.startswith(prefix) else constraint
    for suffix in ("_length", "_format", "_range", "_values", "_non_negative", "_e164"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{resource}.{name}" if resource else name
