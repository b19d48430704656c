"""Database exceptions: what they mean to a caller, and how they are logged.

The database layer's side of error handling, apart from the RPC error
hierarchy (:mod:`server.errors`)::

    DatabaseGone (Exception)          the session is lost: UNAVAILABLE + RetryInfo
    ├── ConnectionLost                ... before the transaction's outcome was decided
    └── CommitOutcomeUnknown          ... after COMMIT was sent, before its answer:
                                      the write may or may not have committed

:func:`from_database_error` translates an exception raised by the driver, the
pool or :mod:`server.db.engine` into a :class:`server.errors.ServiceError`,
keyed by exception class (asyncpg's class per SQLSTATE) and constraint name,
never by message text. What a constraint violation means to a caller (its
ErrorInfo reason and the request fields it names) is declared beside each table
in :mod:`server.db.schema` (``Table.info["constraint_fields"]``) and collected
here. :func:`describe_database_error` is the one way to put a database
exception in a log line: class, SQLSTATE, constraint, table, column; never its
message or detail (PostgreSQL's ``Key (email)=(...)`` and ``Failing row
contains (...)`` hold clients' names, e-mails and phones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType

import asyncpg
import sqlalchemy.exc
from sqlalchemy import MetaData

from server.db.schema import metadata
from server.errors import (
    DOMAIN,
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)

__all__ = [
    "CONNECTION_FAILURES",
    "CommitOutcomeUnknown",
    "ConnectionLost",
    "ConstraintMeaning",
    "DatabaseGone",
    "collect_constraint_meanings",
    "describe_database_error",
    "from_database_error",
    "root_cause",
]

RETRY_AFTER_S = 1.0


class DatabaseGone(Exception):
    """The database session was lost (restart, crash, cut network): UNAVAILABLE."""


class ConnectionLost(DatabaseGone):
    """The connection was found closed or broke before the transaction's outcome
    was decided (nothing of it was committed)."""


class CommitOutcomeUnknown(DatabaseGone):
    """The connection broke after COMMIT was sent and before its answer arrived:
    the transaction may have committed or not. A write with a ``request_id`` is
    safe to retry with the same ``request_id`` (the retry returns the stored
    result if the first committed, else writes once)."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


# Driver-side exceptions that mean "this session is unusable because its link is
# gone" when the connection is (now) closed: InterfaceError ("connection is
# closed"), InternalClientError (a protocol still waiting for an answer that
# will never come: "another operation is in progress"), socket errors.
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
)

# SQLSTATE classes that mean the server cannot serve now (asyncpg's base
# classes): 08 connection exception, 53 insufficient resources, 57P01-57P03
# shutdown / crash / cannot connect now.
_UNAVAILABLE_CLASSES: tuple[type[asyncpg.PostgresError], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)

_CONFLICTS: tuple[type[asyncpg.PostgresError], ...] = (
    asyncpg.SerializationError,  # 40001
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.LockNotAvailableError,  # 55P03
)


# -- constraints declared beside their tables --------------------------------------


class ConstraintMeaning:
    """What a violation of one constraint tells the caller."""

    __slots__ = ("fields", "reason", "table")

    def __init__(self, table: str, reason: str, fields: tuple[str, ...]) -> None:
        self.table = table
        self.reason = reason
        self.fields = fields

    def __repr__(self) -> str:
        return f"ConstraintMeaning({self.table!r}, {self.reason!r}, {self.fields!r})"


def collect_constraint_meanings(metadata: MetaData) -> Mapping[str, ConstraintMeaning]:
    """``Table.info["constraint_fields"]`` of every table: constraint name ->
    (reason, request field paths...)."""
    found: dict[str, ConstraintMeaning] = {}
    for table in metadata.tables.values():
        declared = table.info.get("constraint_fields", {})
        for name, (reason, *fields) in declared.items():
            if name in found:
                raise ValueError(f"constraint {name} declared twice")
            found[name] = ConstraintMeaning(table.name, reason, tuple(fields))
    return MappingProxyType(found)


_MEANINGS = collect_constraint_meanings(metadata)


def _constraint(name: str) -> ConstraintMeaning | None:
    return _MEANINGS.get(name) if name else None


# -- translation ---------------------------------------------------------------------


def root_cause(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapping (``DBAPIError.orig``,
    whose ``__cause__`` is asyncpg's) and our own re-raises."""
    for _ in range(5):
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
            exc = exc.orig
            continue
        cause = exc.__cause__
        if (
            cause is not None
            and not isinstance(exc, asyncpg.PostgresError | OSError | DatabaseGone)
            and isinstance(cause, (asyncpg.PostgresError, DatabaseGone, *CONNECTION_FAILURES))
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
            retry_after_s=RETRY_AFTER_S,
        )
    exc = root_cause(exc)
    if isinstance(exc, CommitOutcomeUnknown):
        return Unavailable(
            "the database connection was lost while committing: the write may or may "
            "not have been applied; retry with the same request_id",
            reason="COMMIT_OUTCOME_UNKNOWN",
            retry_after_s=RETRY_AFTER_S,
            metadata={"request_id": exc.request_id} if exc.request_id else None,
        )
    if isinstance(exc, DatabaseGone):
        return _unavailable()
    if isinstance(exc, asyncpg.PostgresError):
        return _from_postgres(exc)
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a value the driver cannot encode
        return InvalidArgument("a value is out of range or malformed", reason="INVALID_VALUE")
    # Before OSError: TimeoutError is one.
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DeadlineExceeded(
            "the call's deadline expired while the database was working; the statement "
            "was cancelled",
            reason="STATEMENT_TIMEOUT",
        )
    # Other InterfaceErrors (an open connection) are misuse of the driver:
    # INTERNAL. server.db.engine turns those on a closed connection into
    # ConnectionLost.
    if isinstance(exc, ConnectionError | OSError):
        return _unavailable()
    return None


def _unavailable() -> Unavailable:
    return Unavailable(
        "the database is unavailable; retry later",
        reason="DATABASE_UNAVAILABLE",
        retry_after_s=RETRY_AFTER_S,
    )


def _from_postgres(exc: asyncpg.PostgresError) -> ServiceError | None:
    constraint: str = getattr(exc, "constraint_name", None) or ""
    table: str = getattr(exc, "table_name", None) or ""
    meta = {"constraint": constraint} if constraint else {}
    known = _constraint(constraint)
    if isinstance(exc, asyncpg.UniqueViolationError):
        reason = known.reason if known else "ALREADY_EXISTS"
        fields = known.fields if known else ()
        return AlreadyExists(
            f"{fields[0] if fields else 'the resource'} already exists",
            reason=reason,
            metadata=meta,
            field_violations=[FieldViolation(f, "must be unique", reason) for f in fields],
        )
    if isinstance(exc, asyncpg.ExclusionViolationError):  # a double booking
        return FailedPrecondition(
            "the provider already has an appointment overlapping that time",
            reason=known.reason if known else "CONFLICT",
            metadata=meta,
        )
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        if known is not None and known.reason == "ORGANIZATION_NOT_FOUND":
            return NotFound(
                "organization not found",
                reason="ORGANIZATION_NOT_FOUND",
                resource=(f"{DOMAIN}.Organization", ""),
                metadata=meta,
            )
        return FailedPrecondition(
            "a referenced resource does not exist in this organization",
            reason=known.reason if known else "REFERENCED_RESOURCE_NOT_FOUND",
            metadata=meta,
            field_violations=[
                FieldViolation(f, "does not exist in this organization")
                for f in (known.fields if known else ())
            ],
        )
    if isinstance(exc, asyncpg.CheckViolationError):
        fields = known.fields if known else ()
        return InvalidArgument(
            f"{', '.join(fields) or (table or 'a value')} is not valid",
            reason=known.reason if known else "CONSTRAINT_VIOLATED",
            metadata=meta,
            field_violations=[FieldViolation(f, f"violates {constraint}") for f in fields],
        )
    if isinstance(exc, asyncpg.NotNullViolationError | asyncpg.DataError):  # 23502, class 22
        return InvalidArgument(
            "a value is out of range or malformed",
            reason="INVALID_VALUE",
            metadata={"sqlstate": exc.sqlstate},
        )
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):  # 23000, 23001 restrict, ...
        return FailedPrecondition(
            "the write conflicts with a rule of related data",
            reason="CONSTRAINT_VIOLATED",
            metadata={"sqlstate": exc.sqlstate, **meta},
        )
    if isinstance(exc, asyncpg.QueryCanceledError):  # statement_timeout or a cancel request
        return DeadlineExceeded(
            "the statement ran past the call's deadline and was cancelled",
            reason="STATEMENT_TIMEOUT",
        )
    if isinstance(exc, _CONFLICTS):
        return Aborted(
            "the transaction conflicted with a concurrent one; retry",
            reason="CONCURRENT_CONFLICT",
            retry_after_s=0.05,
        )
    if isinstance(exc, _UNAVAILABLE_CLASSES):
        return _unavailable()
    return None


# -- logs ---------------------------------------------------------------------------------


def describe_database_error(exc: BaseException) -> str:
    """A database exception for a log line, without any row value: its class,
    SQLSTATE, constraint, table and column (and the class of its root cause when
    wrapped), never ``str(exc)`` or ``detail``."""
    root = root_cause(exc)
    parts = [type(exc).__name__]
    if root is not exc:
        parts.append(f"cause={type(root).__name__}")
    for label, attr in (
        ("sqlstate", "sqlstate"),
        ("constraint", "constraint_name"),
        ("table", "table_name"),
        ("column", "column_name"),
    ):
        value = getattr(root, attr, None)
        if isinstance(value, str) and value:
            parts.append(f"{label}={value}")
    return " ".join(parts)
