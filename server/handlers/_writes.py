"""The write path every write RPC takes: one transaction, the audit event, and
the AIP-155 ``request_id`` (the first result is stored and returned to retries).

    async with writing(deps, context, request, response=pb.XResponse) as w:
        if w.replay is not None:
            return w.replay                      # a retry: the stored first answer
        row = await lock_row(w.conn, ENTITY, org, id)  # load under FOR UPDATE
        check(row)                                     # the transition allowed?
        row = await update_row(w.conn, ..., audit=w.audit, action="cancel")
        return await w.result(pb.XResponse(x=encode(row)))

Nothing nests: a Create, an Update and a state transition (load the row under
``FOR UPDATE``, check the transition, write it) read the same, top to bottom.
The transaction commits when the block ends normally and rolls back on any
error. A write with a ``request_id`` must end with :meth:`Write.result`
(checked: a forgotten one is a programming error that rolls the write back,
never a retry that writes twice).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from server.context import current_call
from server.db.engine import Conn
from server.handlers._base import Context, Deps, canonical_ids, timeout_of
from server.queries._crud import Audit
from server.queries.requests import claim_request, store_response

__all__ = ["Write", "writing"]

R = TypeVar("R", bound=Message)


@dataclass(slots=True)
class Write(Generic[R]):
    """One write in progress: its connection (inside the transaction), its audit
    stamp, and the stored answer when this call is a retry."""

    conn: Conn
    audit: Audit
    replay: R | None
    _scope: str
    _request_id: str
    _stored: bool = field(default=False)

    async def result(self, response: R) -> R:
        """The write's answer; stored for retries when the request has a request_id."""
        if self._request_id:
            await store_response(
                self.conn, self._scope, self._request_id, response.SerializeToString()
            )
        self._stored = True
        return response


def fingerprint(method: str, request: Message) -> bytes:
    """What a request_id is bound to: the method and the (canonical) request."""
    return hashlib.sha256(
        method.encode() + b"\0" + request.SerializeToString(deterministic=True)
    ).digest()


@asynccontextmanager
async def writing(
    deps: Deps,
    context: Context,
    request: Any,
    *,
    response: type[R],
    scope: str | None = None,
    request_id: str | None = None,
) -> AsyncIterator[Write[R]]:
    """Open the write's transaction; claim its request_id (a retry gets ``replay``).

    ``scope`` (the tenant a request_id belongs to) is the request's
    ``organization_id`` and ``request_id`` its ``request_id`` field unless
    given (a request without a tenant names its scope). ``request`` must
    already be validated; its ids are made canonical here, before they enter
    the fingerprint, so that an id's letter case does not matter.
    """
    canonical_ids(request)
    if scope is None:
        scope = str(request.organization_id)
    if request_id is None:
        request_id = str(getattr(request, "request_id", ""))
    call = current_call()
    audit = Audit(
        actor=call.actor, correlation_id=call.correlation_id, request_id=request_id or None
    )
    async with deps.db.transaction(timeout_of(context), request_id=request_id or None) as conn:
        replay: R | None = None
        if request_id:
            stored = await claim_request(
                conn, scope, request_id, call.method, fingerprint(call.method, request)
            )
            if stored is not None:
                replay = response.FromString(stored.response)
        write = Write(conn, audit, replay, scope, request_id)
        yield write
        if replay is None and request_id and not write._stored:
            raise RuntimeError("a write with a request_id ended without Write.result()")
