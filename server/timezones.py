"""The time zones the service accepts: exactly the canonical IANA names that
the database knows.

Python's zoneinfo accepts names PostgreSQL does not know (``localtime``,
``posix/...``, ``right/...``, anything in the system's zoneinfo directory);
a provider stored with one would break every time-zone computation in SQL
later. So the list is the database's own (``pg_timezone_names``) without the
``posix/`` and ``right/`` trees (the same zones again, or with leap seconds)
and the non-zone entries (``localtime``, ``posixrules``, ``Factory``). It is
read once per process, on the first call that needs it, and cached.
Spelling is exact: PostgreSQL itself matches names case-insensitively, we do
not, so a name has one stored spelling. IANA's backward-compatible links
(``US/Eastern``, ``Asia/Calcutta``) are IANA names too and are accepted: they
resolve to the same rules in PostgreSQL and in Python's zoneinfo.
"""

from __future__ import annotations

import asyncio

from server.db.engine import Database

__all__ = ["TimeZones", "is_canonical_zone_name"]

_EXCLUDED_PREFIXES = ("posix/", "right/")
_EXCLUDED = frozenset({"localtime", "posixrules", "Factory"})


def is_canonical_zone_name(name: str) -> bool:
    return not name.startswith(_EXCLUDED_PREFIXES) and name not in _EXCLUDED


class TimeZones:
    """The accepted zone names, loaded from the database once."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._names: frozenset[str] | None = None
        self._lock = asyncio.Lock()

    @property
    def names(self) -> frozenset[str]:
        if self._names is None:
            raise RuntimeError("TimeZones.ready() was not awaited")
        return self._names

    async def ready(self, timeout_s: float | None = None) -> frozenset[str]:
        """The names, read from the database on the first call."""
        if self._names is not None:
            return self._names
        async with self._lock:
            if self._names is None:
                async with self._database.connection(timeout_s) as conn:
                    rows = await conn.fetch("SELECT name FROM pg_timezone_names")
                self._names = frozenset(
                    r["name"] for r in rows if is_canonical_zone_name(r["name"])
                )
        return self._names
