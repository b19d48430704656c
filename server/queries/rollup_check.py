"""Check the rollups against the raw rows, and repair them, while the service runs.

Each batch is ONE statement that recomputes the batch's rollup rows from the
raw rows (the same fact measures as the writes: server.queries.rollups), reads
the stored rows of the same keys, and compares them, in one snapshot. Writes
keep raw rows and rollups in step in their own transactions, so within one
snapshot the two agree unless the rollups drifted; the difference found is
exactly the drift. A repair adds that difference to the stored rows with the
same additive upsert the writes use (``x = t.x + drift``): a write that
commits after the batch's snapshot adds its own delta on top, before or after
the repair, and nothing is lost. Columns that are not sums (a client's first
and last visit, a provider's first visit date with a client) are set to the
recomputed value; a concurrent visit of the same client during the repair of a
drifted row may need a second run, which the check then reports.

Batches: calendar months for the per-date tables (the raw rows whose business
date falls in the month, read by their instants with a day's margin for time
zones), clients by id for the per-client tables, then the organization's new
clients per date (one statement over the tenant's completed appointments:
the one long statement, it sorts them). Rows are only locked as they are
written: the service keeps serving while a repair runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from server.db.engine import Conn
from server.queries.rollups import (
    CLIENT_VISITS,
    TABLES,
    Rollup,
    measures_sql,
    raw_facts_sql,
    shard_sql,
)

__all__ = ["CLIENT_BATCH", "REPAIR_PASSES", "Report", "check_tenant"]

CLIENT_BATCH = 5000
# A repair's verify-and-repair-again rounds.
REPAIR_PASSES = 3

_PERIOD = {
    "provider_day_totals",
    "provider_month_totals",
    "service_day_totals",
    "organization_day_totals",
    "provider_day_clients",
}
_PERIOD_TABLES = tuple(t for t in TABLES if t.table in _PERIOD)
_CLIENT_TABLES = (*(t for t in TABLES if t.table not in _PERIOD), CLIENT_VISITS)
_DATE_COLUMN = {
    t.table: ("month" if t.table == "provider_month_totals" else "business_date")
    for t in _PERIOD_TABLES
}


@dataclass
class Report:
    """Keys whose stored rollup row differed from the raw rows, per table."""

    drifted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    # After a repair: the drift each verification pass found (the last one is
    # what remains; a first 0 means the repair alone was exact).
    verifications: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.verifications[-1] if self.verifications else 0

    def add(self, table: str, rows: int) -> None:
        self.drifted[table] = self.drifted.get(table, 0) + rows

    async def batch(self, conn: Conn, sql: str, *args: object) -> None:
        """Run one batch statement (a row of drifted keys per table)."""
        row = await conn.fetchrow(sql, *args)
        assert row is not None
        for table, n in row.items():
            self.add(table, int(n))
        self.batches += 1

    @property
    def total(self) -> int:
        return sum(self.drifted.values())


def _merged(table: Rollup, name: str, how: str, stored: str, new: str) -> str:
    """A non-sum column of a stored row merged with a recomputed one (the
    stored row may hold a visit written after the recomputation's snapshot)."""
    if how == "min":
        return f"least({stored}.{name}, {new}.{name})"
    if how == "max":
        return f"greatest({stored}.{name}, {new}.{name})"
    # "pair": (first_visit_at, first_visit_date) compared as one.
    at, day = (n for n, _, h in table.measures if h == "pair")
    return (
        f"CASE WHEN ({new}.{at}, {new}.{day}) < ({stored}.{at}, {stored}.{day}) "
        f"THEN {new}.{name} ELSE {stored}.{name} END"
    )


def _drift_ctes(i: int, table: Rollup, where: str, stored_where: str, repair: bool) -> list[str]:
    keys = ", ".join(table.key_names)
    sums = [n for n, _, how in table.measures if how == "sum"]
    others = [(n, how) for n, _, how in table.measures if how != "sum"]
    drift = [f"coalesce(r.{n}, 0) - coalesce(s.{n}, 0) AS {n}" for n in sums]
    drift += [f"r.{n} AS {n}" for n, _ in others]
    compared_r = [f"coalesce(r.{n}, 0)" for n in sums] + [f"r.{n}" for n, _ in others]
    compared_s = [f"coalesce(s.{n}, 0)" for n in sums] + [f"s.{n}" for n, _ in others]
    stored = ", ".join(n for n, _, _ in table.measures)
    # The stored row as the snapshot saw it: a repair overwrites a non-sum
    # column only when the row has not changed since (its first sum, the
    # visits, is unchanged).
    guard = sums[0]
    ctes = [
        f"r{i} AS ({table.grouped_sql(where=where)})",
        f"s{i} AS (SELECT organization_id, {keys}, {stored} FROM {table.table} "
        f"WHERE organization_id = $1 AND ({stored_where}))",
        f"d{i} AS (SELECT organization_id, {keys}, {', '.join(drift)}, "
        f"r.organization_id IS NULL AS gone, s.organization_id IS NOT NULL AS stored, "
        f"s.{guard} AS seen "
        f"FROM r{i} AS r FULL JOIN s{i} AS s USING (organization_id, {keys}) "
        f"WHERE ({', '.join(compared_r)}) IS DISTINCT FROM ({', '.join(compared_s)}))",
    ]
    if not repair:
        return ctes
    columns = ("organization_id", *table.key_names, *(n for n, _, _ in table.measures))
    key = f"organization_id, {keys}"
    added = [f"{n} = t.{n} + excluded.{n}" for n in sums]
    if not others:
        # Sums only: the drift is added to whatever the row holds by now.
        ctes.append(
            f"f{i} AS (INSERT INTO {table.table} AS t ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM d{i} ORDER BY {key} "
            f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(added)})"
        )
        return ctes
    match = " AND ".join(f"t.{k} = d.{k}" for k in table.key_names)
    unchanged = f"t.{guard} = d.seen"
    # A row with no visits left has no first visit: deleted (if unchanged).
    ctes.append(
        f"x{i} AS (DELETE FROM {table.table} AS t USING d{i} AS d "
        f"WHERE d.gone AND t.organization_id = $1 AND {match} AND {unchanged})"
    )
    # A stored row: sums get the drift; the others the recomputed values if
    # the row is unchanged, else merged with what a write added meanwhile.
    sets = [f"{n} = t.{n} + d.{n}" for n in sums] + [
        f"{n} = CASE WHEN {unchanged} THEN d.{n} ELSE {_merged(table, n, how, 't', 'd')} END"
        for n, how in others
    ]
    ctes.append(
        f"u{i} AS (UPDATE {table.table} AS t SET {', '.join(sets)} FROM d{i} AS d "
        f"WHERE d.stored AND NOT d.gone AND t.organization_id = $1 AND {match})"
    )
    # A missing row: inserted, or merged with one a write inserted meanwhile.
    merged = [f"{n} = {_merged(table, n, how, 't', 'excluded')}" for n, how in others]
    ctes.append(
        f"f{i} AS (INSERT INTO {table.table} AS t ({', '.join(columns)}) "
        f"SELECT {', '.join(columns)} FROM d{i} WHERE NOT stored ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(added + merged)})"
    )
    return ctes


def batch_sql(
    tables: tuple[Rollup, ...],
    facts: str,
    where: str,
    stored_where: Callable[[Rollup], str],
    repair: bool,
) -> str:
    """One statement: the drift of ``tables`` in one batch (and its repair),
    returning the drifted keys per table as one row."""
    ctes = [f"facts AS ({facts})", measures_sql("facts")]
    for i, table in enumerate(tables):
        ctes += _drift_ctes(i, table, where, stored_where(table), repair)
    counts = ", ".join(f"(SELECT count(*) FROM d{i}) AS {t.table}" for i, t in enumerate(tables))
    return "WITH " + ",\n".join(ctes) + f"\nSELECT {counts}"


def _window(column: str) -> str:
    """Instants whose business date may fall in [$2, $3): a day's margin for zones."""
    return (
        f"{column} >= (($2::date - 1)::timestamp AT TIME ZONE 'UTC') "
        f"AND {column} < (($3::date + 1)::timestamp AT TIME ZONE 'UTC')"
    )


MONTH_SQL = {
    repair: batch_sql(
        _PERIOD_TABLES,
        raw_facts_sql(_window("a.start_at"), _window("p.created_at"), _window("r.created_at")),
        "business_date >= $2::date AND business_date < $3::date",
        lambda t: f"{_DATE_COLUMN[t.table]} >= $2::date AND {_DATE_COLUMN[t.table]} < $3::date",
        repair,
    )
    for repair in (False, True)
}

CLIENTS_SQL = {
    repair: batch_sql(
        _CLIENT_TABLES,
        raw_facts_sql(
            "a.client_id = ANY($2::uuid[])",
            "p.client_id = ANY($2::uuid[])",
            "p.client_id = ANY($2::uuid[])",
        ),
        "client_id = ANY($2::uuid[])",
        lambda _: "client_id = ANY($2::uuid[])",
        repair,
    )
    for repair in (False, True)
}

# The organization's new clients per date and shard: each client's first
# visit (earliest start, ties by business date) from the raw appointments, in
# one statement (a sort of the tenant's completed appointments).
_NEW_CLIENTS = f"""WITH r AS (
    SELECT $1::uuid AS organization_id, day AS business_date, shard, count(*) AS new_clients
    FROM (
        SELECT DISTINCT ON (a.client_id) {shard_sql("a.client_id")} AS shard,
               (a.start_at AT TIME ZONE p.time_zone)::date AS day
        FROM appointments a
        JOIN providers p ON p.organization_id = a.organization_id AND p.id = a.provider_id
        WHERE a.organization_id = $1 AND a.status = 'completed'
        ORDER BY a.client_id, a.start_at, day
    ) AS first
    GROUP BY day, shard
), s AS (
    SELECT organization_id, business_date, shard, new_clients
    FROM organization_day_new_clients WHERE organization_id = $1
), d AS (
    SELECT organization_id, business_date, shard,
           coalesce(r.new_clients, 0) - coalesce(s.new_clients, 0) AS new_clients
    FROM r FULL JOIN s USING (organization_id, business_date, shard)
    WHERE coalesce(r.new_clients, 0) <> coalesce(s.new_clients, 0)
){{fix}}
SELECT count(*) AS organization_day_new_clients FROM d"""
NEW_CLIENTS_SQL = {
    False: _NEW_CLIENTS.format(fix=""),
    True: _NEW_CLIENTS.format(
        fix=""", f AS (
    INSERT INTO organization_day_new_clients AS t
        (organization_id, business_date, shard, new_clients)
    SELECT organization_id, business_date, shard, new_clients FROM d
    ORDER BY organization_id, business_date, shard
    ON CONFLICT (organization_id, business_date, shard)
    DO UPDATE SET new_clients = t.new_clients + excluded.new_clients
)"""
    ),
}

# The months a tenant's rows span: raw instants (a day's margin) and stored dates.
BOUNDS_SQL = """
SELECT least(
           (SELECT min(start_at) FROM appointments WHERE organization_id = $1),
           (SELECT min(created_at) FROM payments WHERE organization_id = $1),
           (SELECT min(created_at) FROM refunds WHERE organization_id = $1)
       )::date - 1 AS raw_first,
       greatest(
           (SELECT max(start_at) FROM appointments WHERE organization_id = $1),
           (SELECT max(created_at) FROM payments WHERE organization_id = $1),
           (SELECT max(created_at) FROM refunds WHERE organization_id = $1)
       )::date + 1 AS raw_last,
       (SELECT min(business_date) FROM organization_day_totals WHERE organization_id = $1)
           AS stored_first,
       (SELECT max(business_date) FROM organization_day_totals WHERE organization_id = $1)
           AS stored_last
"""

# The months of stored per-date rows outside the months checked (nothing raw
# is there, unless written since): each is then checked as a month.
OUTSIDE_MONTHS_SQL = " UNION ".join(
    f"SELECT date_trunc('month', {_DATE_COLUMN[t.table]})::date AS month FROM {t.table} "
    f"WHERE organization_id = $1 "
    f"AND NOT ({_DATE_COLUMN[t.table]} >= $2::date AND {_DATE_COLUMN[t.table]} < $3::date)"
    for t in _PERIOD_TABLES
)

CLIENT_IDS_SQL = """
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM (
    SELECT id FROM clients WHERE organization_id = $1 AND id > $2::uuid ORDER BY id LIMIT $3
) AS batch
"""


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


async def _pass(
    conn: Conn,
    org_id: str,
    repair: bool,
    client_batch: int,
    progress: Callable[[str], None] | None,
) -> Report:
    """One pass over every batch of the tenant."""
    report = Report()
    bounds = await conn.fetchrow(BOUNDS_SQL, org_id)
    assert bounds is not None
    firsts = [d for d in (bounds["raw_first"], bounds["stored_first"]) if d is not None]
    lasts = [d for d in (bounds["raw_last"], bounds["stored_last"]) if d is not None]
    lo = _month_start(min(firsts)) if firsts else date(2000, 1, 1)
    hi = _next_month(max(lasts)) if lasts else lo
    months = []
    month = lo
    while month < hi:
        months.append(month)
        month = _next_month(month)
    months += [r["month"] for r in await conn.fetch(OUTSIDE_MONTHS_SQL, org_id, lo, hi)]
    for month in sorted(months):
        await report.batch(conn, MONTH_SQL[repair], org_id, month, _next_month(month))
        if progress:
            progress(f"{month:%Y-%m}")
    last = "00000000-0000-0000-0000-000000000000"
    while True:
        ids = await conn.fetchval(CLIENT_IDS_SQL, org_id, last, client_batch)
        if not ids:
            break
        await report.batch(conn, CLIENTS_SQL[repair], org_id, ids)
        if progress:
            progress(f"clients to {ids[-1]}")
        last = str(ids[-1])
    await report.batch(conn, NEW_CLIENTS_SQL[repair], org_id)
    return report


async def check_tenant(
    conn: Conn,
    org_id: str,
    *,
    repair: bool = False,
    client_batch: int = CLIENT_BATCH,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Compare (and with ``repair`` fix) every rollup row of a tenant with its
    raw rows, batch by batch; each batch is its own statement and, on a
    connection outside a transaction, its own transaction.

    A repair is verified: a check pass follows it, and what it still finds
    (a non-sum column a concurrent write touched while it was being
    repaired) is repaired again, up to REPAIR_PASSES passes;
    ``Report.verifications`` is what each check found (the last: what remains)."""
    report = await _pass(conn, org_id, repair, client_batch, progress)
    if not repair:
        return report
    for attempt in range(REPAIR_PASSES):
        check = await _pass(conn, org_id, False, client_batch, progress)
        report.verifications.append(check.total)
        if not check.total or attempt == REPAIR_PASSES - 1:
            break
        await _pass(conn, org_id, True, client_batch, progress)
    return report
