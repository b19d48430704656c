"""Stored write results (AIP-155): the first answer to a request_id is kept and
returned to every retry; the same request_id with another request is refused.

Concurrency: the first transaction inserts the key; a concurrent duplicate's
``INSERT ... ON CONFLICT DO NOTHING`` waits on that uncommitted row, then (once
the first commits) finds it and reads the stored answer. If the first rolls
back, the duplicate's insert succeeds and it does the write itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from server.db.engine import Conn
from server.errors import Aborted, FieldViolation, InvalidArgument

__all__ = [
    "GLOBAL_SCOPE",
    "StoredResult",
    "claim_request",
    "purge_request_results",
    "store_response",
]

# Scope of writes that no existing tenant owns (CreateOrganization).
GLOBAL_SCOPE = str(UUID(int=0))


@dataclass(frozen=True, slots=True)
class StoredResult:
    response: bytes


async def claim_request(
    conn: Conn, scope: str, request_id: str, method: str, request_hash: bytes
) -> StoredResult | None:
    """Claim ``request_id`` for this write, or return the first answer to it."""
    claimed = await conn.fetchval(
        "INSERT INTO request_results (organization_id, request_id, method, request_hash) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        scope,
        request_id,
        method,
        request_hash,
    )
    if claimed:
        return None
    row = await conn.fetchrow(
        "SELECT method, request_hash, response FROM request_results "
        "WHERE organization_id = $1 AND request_id = $2",
        scope,
        request_id,
    )
    if row is None or row["response"] is None:
        # The first claim was purged between our INSERT and this read (or holds
        # no answer): writing now would be unclaimed. The caller retries.
        raise Aborted(
            "the request_id's stored result changed while it was read; retry",
            reason="CONCURRENT_CONFLICT",
            retry_after_s=0.05,
        )
    if row["method"] != method or bytes(row["request_hash"]) != request_hash:
        raise InvalidArgument(
            "request_id was already used for a different request",
            reason="REQUEST_ID_REUSED",
            field_violations=[
                FieldViolation(
                    "request_id",
                    "was already used with a different request; use a new request_id",
                    "REQUEST_ID_REUSED",
                )
            ],
        )
    return StoredResult(bytes(row["response"]))


async def store_response(conn: Conn, scope: str, request_id: str, response: bytes) -> None:
    await conn.execute(
        "UPDATE request_results SET response = $3 WHERE organization_id = $1 AND request_id = $2",
        scope,
        request_id,
        response,
    )


async def purge_request_results(conn: Conn, older_than_s: float, batch: int = 1000) -> int:
    """Forget results older than ``older_than_s`` seconds, ``batch`` rows per
    statement (short locks, bounded WAL bursts); replicas purging at the same
    time skip each other's rows. Returns how many were deleted."""
    total = 0
    while True:
        deleted = await conn.fetchval(
            "WITH old AS (SELECT organization_id, request_id FROM request_results "
            "WHERE created_at < now() - make_interval(secs => $1) "
            "LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "gone AS (DELETE FROM request_results r USING old "
            "WHERE r.organization_id = old.organization_id AND r.request_id = old.request_id "
            "RETURNING 1) SELECT count(*) FROM gone",
            older_than_s,
            batch,
        )
        total += int(deleted)
        if deleted < batch:
            return total
