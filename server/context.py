"""Per-call context: correlation id, actor and method of the RPC being served.

Set by the interceptor in a contextvar, read by handlers and by the logging
filter that stamps every log line of the call with its correlation id.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass

__all__ = ["CallInfo", "CorrelationFilter", "current_call"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    correlation_id: str
    actor: str
    method: str


_CALL: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("call", default=None)
_ANONYMOUS = CallInfo(correlation_id="-", actor="anonymous", method="-")


def current_call() -> CallInfo:
    return _CALL.get() or _ANONYMOUS


def set_call(info: CallInfo) -> contextvars.Token[CallInfo | None]:
    return _CALL.set(info)


def reset_call(token: contextvars.Token[CallInfo | None]) -> None:
    _CALL.reset(token)


class CorrelationFilter(logging.Filter):
    """Adds ``correlation_id`` and ``rpc_method`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call()
        record.correlation_id = call.correlation_id
        record.rpc_method = call.method
        return True
