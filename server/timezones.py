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
not, so a name has one stored spelling. Zone names that are also PostgreSQL
time zone abbreviations with another meaning are refused too: in ``AT TIME
ZONE`` PostgreSQL reads ``CET``, ``EET``, ``MET`` and ``WET`` as the fixed
abbreviations (+01:00, ...), not as the zones with summer time that Python's
zoneinfo sees, so SQL and Python would disagree by an hour half the year
(``UTC``, ``GMT``, ``EST``, ... mean the same either way and are kept).
IANA's backward-compatible links (``US/Eastern``, ``Asia/Calcutta``) are IANA
names too and are accepted: they resolve to the same rules in PostgreSQL and
in Python's zoneinfo.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.db.engine import Database

__all__ = ["TimeZones", "is_canonical_zone_name"]

_EXCLUDED_PREFIXES = ("posix/", "right/")
_EXCLUDED = frozenset({"localtime", "posixrules", "Factory"})


# Each zone name, and whether PostgreSQL also knows it as an abbreviation.
_NAMES_SQL = (
    "SELECT n.name, EXISTS (SELECT 1 FROM pg_timezone_abbrevs a WHERE a.abbrev = n.name) "
    "AS abbreviation FROM pg_timezone_names n"
)


def _has_summer_time(name: str) -> bool:
    """Whether the zone's offset changes within the year (then a fixed
    abbreviation of the same name means something else half of it)."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return True
    year = datetime.now(UTC).year
    return len({datetime(year, m, 1, tzinfo=zone).utcoffset() for m in (1, 4, 7, 10)}) > 1


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
                    rows = await conn.fetch(_NAMES_SQL)
                self._names = frozenset(
                    r["name"]
                    for r in rows
                    if is_canonical_zone_name(r["name"])
                    and not (r["abbreviation"] and _has_summer_time(r["name"]))
                )
        return self._names
