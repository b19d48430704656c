"""bench.generate's COPY column lists are the schema's: they cannot drift."""

from __future__ import annotations

from sqlalchemy import Column, Table

from bench.generate import COPY_COLUMNS
from server.db import schema


def _required(table: Table) -> set[str]:
    """Columns a row cannot be written without: NOT NULL, no server default,
    not computed."""
    out = set()
    for column in table.columns:
        assert isinstance(column, Column)
        if not column.nullable and column.server_default is None and column.computed is None:
            out.add(column.name)
    return out


def test_generator_copies_real_writable_columns_and_every_required_one() -> None:
    tables = {t.name: t for t in schema.metadata.sorted_tables}
    assert set(COPY_COLUMNS) <= set(tables)
    for name, columns in COPY_COLUMNS.items():
        table = tables[name]
        names = {c.name for c in table.columns}
        assert len(set(columns)) == len(columns), name
        assert set(columns) <= names, (name, set(columns) - names)
        computed = {c.name for c in table.columns if c.computed is not None}
        assert not set(columns) & computed, (name, set(columns) & computed)
        assert _required(table) <= set(columns), (name, _required(table) - set(columns))


def test_generator_writes_every_folded_search_key() -> None:
    """The clients' derived keys (server.queries.clients.SEARCH_KEYS) and their
    sources are all in the COPY, so that the generator computes each key."""
    from server.queries.clients import SEARCH_KEYS

    copied = set(COPY_COLUMNS["clients"])
    for key in SEARCH_KEYS:
        assert {key.column, key.source} <= copied, key
