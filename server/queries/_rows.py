"""Reading one side of a row that carries two tables' columns under prefixes
(a UNION ALL of differently shaped rows: a client's history, the day sheet)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Prefixed"]


class Prefixed:
    """One side of a prefixed row, read by its table's column names (what the
    appointment and payment encoders read: ``row[column]``)."""

    __slots__ = ("_prefix", "_row")

    def __init__(self, row: Mapping[str, Any] | Any, prefix: str) -> None:
        self._row, self._prefix = row, prefix

    def __getitem__(self, key: str) -> Any:
        return self._row[self._prefix + key]
