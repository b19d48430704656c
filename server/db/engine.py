"""The engine (one pool) and the per-RPC connection and transaction scopes.

One SQLAlchemy ``AsyncEngine`` on asyncpg owns the pool (size, overflow,
checkout timeout, recycle, pre-ping). Query functions get a :class:`Conn`: the
pooled asyncpg connection itself, because SQLAlchemy's execution layer costs
~100 us per statement on the hot paths and does not pass a per-statement
timeout. SQL is literal, with bind parameters, in the query modules
(``server.queries.*``), its column lists taken from the Core tables in
``server.db.schema`` (the rule and its measurement: docs/architecture.md,
"Queries"). The pool's internals are touched only by ``server.db._pool``.

Deadlines: a call's remaining gRPC deadline bounds every statement it runs.
Reads pass it as asyncpg's ``timeout`` (on expiry the driver sends a cancel
request to PostgreSQL); write transactions also ``SET LOCAL
statement_timeout`` so the server enforces it. A cancelled RPC cancels its
query the same way (asyncpg cancels the server-side statement when the
awaiting task is cancelled); that connection is then discarded rather than
trusted back into the pool.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy.exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.config import Settings
from server.db import _pool
from server.db.errors import (
    CONNECTION_FAILURES,
    CommitOutcomeUnknown,
    ConnectionLost,
    DatabaseGone,
    root_cause,
)

__all__ = ["Conn", "Database", "create_engine", "to_asyncpg_dsn", "to_sqlalchemy_url"]


def to_sqlalchemy_url(url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://... (other drivers replaced)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def to_asyncpg_dsn(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(settings: Settings, url: str) -> AsyncEngine:
    pool = settings.pool
    return create_async_engine(
        to_sqlalchemy_url(url),
        pool_size=pool.size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.timeout_s,
        pool_recycle=pool.recycle_s,
        pool_pre_ping=pool.pre_ping,
        connect_args={
            "timeout": pool.connect_timeout_s,
            "server_settings": {
                "application_name": pool.application_name,
                "statement_timeout": str(pool.statement_timeout_ms),
                # A crashed client must not hold locks forever.
                "idle_in_transaction_session_timeout": "60000",
                # A discarded connection (cancelled or timed-out call) is closed
                # at once; this makes its backend notice within a second and
                # abandon the statement, even one waiting on a lock (PG 14+).
                "client_connection_check_interval": "1000",
                "timezone": "UTC",
                # OLTP statements: JIT compilation only adds latency (a search's
                # never-run fallback branch can push the estimate past
                # jit_above_cost: 64 ms instead of 1.8 ms on PostgreSQL 15).
                "jit": "off",
            },
        },
    )


class Conn:
    """One pooled asyncpg connection bound to one call's deadline.

    Without a deadline, each statement is still bounded on the client side by
    ``cap_s`` (a little above the server's statement_timeout, which normally
    fires first): a link that dies silently cannot hang a call forever.
    """

    __slots__ = ("_cap", "_deadline", "raw")

    def __init__(
        self, raw: asyncpg.Connection, deadline: float | None, cap_s: float | None = None
    ) -> None:
        self.raw = raw
        self._deadline = deadline
        self._cap = cap_s

    def remaining(self) -> float | None:
        if self._deadline is None:
            return self._cap
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline exceeded before the statement started")
        return left

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.raw.fetch(sql, *args, timeout=self.remaining())  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.raw.fetchrow(sql, *args, timeout=self.remaining())

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.raw.fetchval(sql, *args, timeout=self.remaining())

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.raw.execute(sql, *args, timeout=self.remaining())  # type: ignore[no-any-return]


class Database:
    """The engine plus the two scopes every RPC uses: ``connection`` and ``transaction``."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self._max_statement_ms = settings.pool.statement_timeout_ms
        # Client-side backstop for calls without a deadline (see Conn).
        self._client_cap_s = settings.pool.statement_timeout_ms / 1000 + 5.0
        self._max_connections = settings.pool.size + max(0, settings.pool.max_overflow)

    @asynccontextmanager
    async def connection(self, timeout_s: float | None = None) -> AsyncIterator[Conn]:
        """Check out one connection for the whole call (no transaction: autocommit).

        Every statement on it is bounded by ``timeout_s`` (the driver cancels
        it on expiry). A connection that failed at the connection level is
        discarded, and the failure raised as :class:`ConnectionLost`
        (UNAVAILABLE) whatever the driver called it.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        handle, raw = await self._checkout()
        discard = False
        try:
            yield Conn(raw, deadline, self._client_cap_s)
        except (asyncio.CancelledError, TimeoutError):
            # A cancel request may still be in flight: never hand this
            # connection to another call. (TimeoutError is an OSError: first.)
            discard = True
            raise
        except DatabaseGone:
            discard = True
            raise
        except CONNECTION_FAILURES as exc:
            discard = True
            # The link is gone (the driver noticed it closed, or a socket
            # error): UNAVAILABLE. An asyncpg client-state error on a
            # connection that is still open is a bug of ours: re-raised as is.
            if raw.is_closed() or not isinstance(exc, _CLIENT_STATE_ERRORS):
                raise ConnectionLost("the database connection was lost") from exc
            raise
        finally:
            if discard or raw.is_closed():
                await _pool.discard(handle)
            else:
                await _pool.release(handle)

    async def _checkout(self) -> tuple[_pool.Handle, asyncpg.Connection]:
        """A pooled connection that is still open.

        A connection whose peer closed it while it sat idle in the pool (a
        restarted server, a cut network, an idle-session timeout) is seen as
        closed by the event loop without a round trip: it is discarded here and
        the next one tried, so that a cut costs no call an error. (A link that
        dies silently is caught by ``pre_ping`` where enabled, else fails its
        call with UNAVAILABLE and is replaced.)
        """
        for _ in range(self._max_connections + 1):
            try:
                handle, raw = await _pool.checkout(self.engine)
            except sqlalchemy.exc.TimeoutError:
                raise  # the pool is exhausted: POOL_EXHAUSTED, not a lost database
            except Exception as exc:
                # Connecting failed or timed out (TimeoutError is an OSError,
                # but to the caller an unreachable database is UNAVAILABLE, not
                # its deadline), or pre-ping found the link dead.
                if isinstance(root_cause(exc), CONNECTION_FAILURES):
                    raise ConnectionLost("could not get a database connection") from exc
                raise
            if raw is not None and not raw.is_closed():
                return handle, raw
            await _pool.discard(handle)
        raise ConnectionLost("every pooled database connection was closed")

    @asynccontextmanager
    async def transaction(
        self, timeout_s: float | None = None, *, request_id: str | None = None
    ) -> AsyncIterator[Conn]:
        """One transaction for one write RPC: committed on success, else rolled back.

        The remaining deadline becomes the transaction's ``statement_timeout``
        (enforced by PostgreSQL), capped by the configured one. When the link
        breaks after COMMIT was sent and before its answer arrived, the outcome
        is unknown: :class:`CommitOutcomeUnknown` (carrying ``request_id``, the
        write's AIP-155 key, when it has one) tells the caller to retry with the
        same ``request_id``.
        """
        async with self.connection(timeout_s) as conn:
            ms = self._max_statement_ms
            left = conn.remaining()
            if left is not None:
                ms = max(1, min(ms, math.ceil(left * 1000)))
            # BEGIN, the timeout and the plan mode in one round trip (simple
            # query protocol). Generic plans always: a write's statements are
            # planned once per connection, never per call. Under "auto"
            # PostgreSQL kept planning the rollups' statement per call (1.1 ms
            # against 0.34 ms): over parameter arrays, a custom plan that knows
            # their length always looks cheaper than the generic one. Every
            # write statement's generic plan is what the EXPLAIN tests check.
            await conn.raw.execute(
                f"BEGIN; SET LOCAL statement_timeout = {int(ms)}; "
                "SET LOCAL plan_cache_mode = force_generic_plan",
                timeout=conn.remaining(),
            )
            try:
                yield conn
            except (asyncio.CancelledError, TimeoutError):
                # connection() discards the session; PostgreSQL aborts its
                # transaction with it. No await here: a cancel is in flight.
                raise
            except BaseException:
                if not conn.raw.is_closed():
                    try:
                        await conn.raw.execute("ROLLBACK")
                    except Exception:
                        conn.raw.terminate()  # connection() then discards it
                raise
            await _commit(conn, request_id)


# asyncpg raises these before it sends anything (its protocol refuses the new
# operation): a statement that failed with one of them never reached the server.
_CLIENT_STATE_ERRORS = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
# Failures after which the server may or may not have run what was sent.
_LINK_BROKEN_IN_FLIGHT = (
    asyncpg.PostgresConnectionError,  # e.g. "connection was closed in the middle of operation"
    asyncpg.AdminShutdownError,  # 57P01: the backend was terminated
    asyncpg.CrashShutdownError,  # 57P02
    OSError,
)


async def _commit(conn: Conn, request_id: str | None) -> None:
    raw = conn.raw
    if raw.is_closed():  # nothing was committed: the session died before COMMIT
        raise ConnectionLost("the database connection was lost before COMMIT")
    # Raises TimeoutError before sending when the deadline has passed: then
    # nothing was committed (the discarded session takes the transaction along).
    left = conn.remaining()
    try:
        await raw.execute("COMMIT", timeout=left)
    except TimeoutError as exc:
        # The deadline expired after COMMIT was sent: it may have committed.
        raise CommitOutcomeUnknown(
            "the deadline expired after COMMIT was sent", request_id
        ) from exc
    except _CLIENT_STATE_ERRORS as exc:
        # Refused before sending: COMMIT never left, the transaction dies with
        # the session (connection() discards it).
        raise ConnectionLost("the database connection was lost before COMMIT") from exc
    except _LINK_BROKEN_IN_FLIGHT as exc:
        raise CommitOutcomeUnknown(
            "the database connection was lost after COMMIT was sent", request_id
        ) from exc
