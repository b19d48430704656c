"""What the summaries (booking.v1.SummaryService) read: the rollup tables
(server.queries.rollups keeps them exact on every write) and a few small
ones (organizations, providers, working_hours, date_overrides, time_off),
never the raw appointments, payments or refunds. One statement per RPC,
whatever the range, the providers or the services. No protobuf.

Figures are the rollups' :data:`MEASURES` (schema.PERIOD_MEASURES: the five
status counts, booked minutes, expected, completed, paid and refunded minor
units, payments and refunds), summed per currency. A rollup row whose
figures are all zero (its appointment moved to another date) says nothing:
a currency is reported where some figure is not zero.

Dates are business dates (each row's, in its provider's zone). Ranges are
inclusive. Periods ("day", "week", "month") start on the date itself, on the
organization's ``first_day_of_week`` (ISO 1 = Monday ... 7 = Sunday), or on
the first of the month.

Indexes: every rollup is read by its primary key, tenant first: a provider's
(or service's) rows of a range are one range scan per requested id (a
``LATERAL`` per id, so that a generic plan never hashes the tenant's rows);
whole months of a provider come from ``provider_month_totals`` (one row a
month) and only the cut months' days from ``provider_day_totals``. The
organization's days are one range scan of ``organization_day_totals``
(its shards summed). The dashboard ranks every provider of the tenant from
one index-only range scan of a currency's rows (the ``_org_currency_``
indexes of provider_day_totals and provider_month_totals), never a scan
per provider. ``tests/test_explain_summaries.py`` checks the plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from server.db import schema
from server.db.engine import Conn
from server.queries._listing import KeyType, Listing, ListQuery, Order, SortKey, orders

__all__ = [
    "BALANCE_COLUMNS",
    "CLIENT_BALANCES",
    "CLIENT_BALANCE_SQL",
    "DASHBOARD_SQL",
    "MEASURES",
    "PROVIDER_METRICS_SQL",
    "REVENUE_SQL",
    "ClientBalanceFilter",
    "client_balance",
    "dashboard",
    "day_instants_sql",
    "minute_instant_sql",
    "provider_metrics",
    "revenue",
    "wall_instant_sql",
]

MEASURES = schema.PERIOD_MEASURES

_COLUMNS = ", ".join(MEASURES)
_NONZERO = " OR ".join(f"{m} <> 0" for m in MEASURES)
_NULLS = ", ".join(f"NULL::bigint AS {m}" for m in MEASURES)


def _sums(prefix: str = "") -> str:
    return ", ".join(f"sum({prefix}{m})::bigint AS {m}" for m in MEASURES)


def _of(alias: str) -> str:
    return ", ".join(f"{alias}.{m}" for m in MEASURES)


def period_start_sql(day: str, period: str, first_day_of_week: str) -> str:
    """SQL: the first date of the period (``period``: an SQL text expression,
    'day', 'week' or 'month') that holds date ``day``."""
    return (
        f"(CASE {period} WHEN 'day' THEN {day} "
        f"WHEN 'week' THEN {day} - ((extract(isodow FROM {day})::int - {first_day_of_week} + 7)"
        " % 7) "
        f"ELSE date_trunc('month', ({day})::timestamp)::date END)"
    )


def _months_sql(first: str, last: str, whole_months: str = "true") -> str:
    """SQL: one row (ms, me): the month starts [ms, me) of the whole calendar
    months within dates [first, last], read from provider_month_totals; the
    dates [first, ms) and [me, last] are read from provider_day_totals. No
    whole month (or not ``whole_months``): ms = me = last + 1."""
    m1 = f"(date_trunc('month', ({first} - 1)::timestamp) + interval '1 month')::date"
    m2 = f"date_trunc('month', ({last} + 1)::timestamp)::date"
    some = f"({whole_months}) AND m.m1 < m.m2"
    return (
        f"SELECT CASE WHEN {some} THEN m.m1 ELSE {last} + 1 END AS ms, "
        f"CASE WHEN {some} THEN m.m2 ELSE {last} + 1 END AS me "
        f"FROM (SELECT {m1} AS m1, {m2} AS m2) AS m"
    )


def _provider_rows_sql(provider: str, first: str, last: str, months: str) -> str:
    """SQL: a provider's rollup rows covering dates [first, last] (each with
    ``d``, the month or the date it holds, its currency and measures): its
    month rows of the whole months (``months``: the (ms, me) row of
    _months_sql) and its day rows of the rest. Primary key range scans."""
    where = f"organization_id = $1 AND provider_id = {provider}"
    return (
        f"SELECT month AS d, currency, {_COLUMNS} FROM provider_month_totals "
        f"WHERE {where} AND month >= {months}.ms AND month < {months}.me "
        "UNION ALL "
        f"SELECT business_date, currency, {_COLUMNS} FROM provider_day_totals "
        f"WHERE {where} AND business_date >= {first} AND business_date < {months}.ms "
        "UNION ALL "
        f"SELECT business_date, currency, {_COLUMNS} FROM provider_day_totals "
        f"WHERE {where} AND business_date >= {months}.me AND business_date <= {last}"
    )


def wall_instant_sql(local: str, zone: str) -> str:
    """SQL: the instant of wall-clock ``local`` (a timestamp) in ``zone``, as
    server.scheduling.wall_instant reads it (Python's fold=0, RFC 5545): a
    time in a spring-forward gap with the offset before the gap (PostgreSQL's
    own reading), a repeated time as its FIRST occurrence (PostgreSQL reads
    the second: the offset of 24 hours earlier gives the first, when it is a
    reading of ``local`` at all)."""
    pg = f"(({local}) AT TIME ZONE {zone})"
    earlier = f"(((({local}) - interval '1 day') AT TIME ZONE {zone}) + interval '24 hours')"
    return (
        f"(CASE WHEN {earlier} < {pg} AND ({earlier} AT TIME ZONE {zone}) = ({local}) "
        f"THEN {earlier} ELSE {pg} END)"
    )


def day_instants_sql(day: str, zone: str) -> str:
    """SQL: a LATERAL subquery of one row (m0, m1, e0) for the local midnight
    ``day`` (a timestamp) in ``zone``: its instant as PostgreSQL reads it,
    the next midnight's, and the midnight read with the offset of 24 hours
    earlier. Three zone conversions a date (OFFSET 0: evaluated once, not
    inlined into every use) instead of several a wall time."""
    return (
        f"SELECT ({day}) AT TIME ZONE {zone} AS m0, "
        f"(({day}) + interval '1 day') AT TIME ZONE {zone} AS m1, "
        f"((({day}) - interval '1 day') AT TIME ZONE {zone}) + interval '24 hours' AS e0 OFFSET 0"
    )


def minute_instant_sql(day: str, minute: str, zone: str, instants: str) -> str:
    """SQL: the instant of wall-clock ``minute`` (0-1440) of local date
    ``day`` (a timestamp at midnight) in ``zone``, as wall_instant_sql reads
    it; ``instants`` is the alias of the date's day_instants_sql. On a date
    whose midnight has one reading and which lasts 24 hours (no offset change
    from the day before to the day after), the midnight's instant plus the
    minutes; else wall_instant_sql."""
    c = instants
    minutes = f"({minute}) * interval '1 minute'"
    return (
        f"(CASE WHEN {c}.e0 = {c}.m0 AND {c}.m1 - {c}.m0 = interval '24 hours' "
        f"THEN {c}.m0 + {minutes} ELSE {wall_instant_sql(f'({day}) + {minutes}', zone)} END)"
    )


# -- GetRevenueSummary -------------------------------------------------------------------
#
# $1 organization, $2 first date, $3 last date, $4 period ('day' | 'week' |
# 'month'), $5 currency (NULL = every currency with a figure), $6 the
# provider or service ids (distinct) for those sources.
#
# One row per currency and bucket, in order (every bucket, zeros included),
# each with the organization's first_day_of_week; an organization without a
# currency gives one row with a NULL currency, an unknown one no row.

_REVENUE_SOURCES = {
    # The organization's days, its shards summed by the grouping.
    "organization": (
        f"SELECT business_date AS d, currency, {_COLUMNS} FROM organization_day_totals "
        "WHERE organization_id = $1 AND business_date BETWEEN $2 AND $3"
    ),
    # Whole months from provider_month_totals when the buckets are months.
    "providers": (
        "SELECT x.* FROM unnest($6::uuid[]) AS k(id) CROSS JOIN s CROSS JOIN LATERAL ("
        + _provider_rows_sql("k.id", "$2::date", "$3::date", "s")
        + ") AS x"
    ),
    # OFFSET 0 keeps the LATERAL a range scan per id (pulled up into a join,
    # it may be planned as a scan of the tenant's rows, hashed).
    "services": (
        "SELECT x.* FROM unnest($6::uuid[]) AS k(id) CROSS JOIN LATERAL ("
        f"SELECT business_date AS d, currency, {_COLUMNS} FROM service_day_totals "
        "WHERE organization_id = $1 AND service_id = k.id AND business_date BETWEEN $2 AND $3"
        " OFFSET 0) AS x"
    ),
}

_STEP = (
    "(CASE $4::text WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days' "
    "ELSE interval '1 month' END)"
)


def _revenue_sql(source: str) -> str:
    def start(day: str) -> str:
        return period_start_sql(day, "$4::text", "o.fdow")

    return f"""
WITH o AS (
    SELECT first_day_of_week AS fdow FROM organizations WHERE id = $1
), s AS (
    {_months_sql("$2::date", "$3::date", "$4::text = 'month'")}
), src AS (
    {_REVENUE_SOURCES[source]}
), agg AS (
    SELECT {start("src.d")} AS b, src.currency, {_sums("src.")},
           bool_or({" OR ".join(f"src.{m} <> 0" for m in MEASURES)}) AS nonzero
    FROM src CROSS JOIN o
    WHERE $5::text IS NULL OR src.currency = $5::text
    GROUP BY 1, 2
), cur AS (
    SELECT $5::text AS currency WHERE $5::text IS NOT NULL
    UNION ALL
    SELECT currency FROM agg WHERE $5::text IS NULL GROUP BY currency HAVING bool_or(nonzero)
), g AS (
    SELECT g.b::date AS b, (g.b + {_STEP})::date - 1 AS e
    FROM o CROSS JOIN generate_series(
        {start("$2::date")}::timestamp, {start("$3::date")}::timestamp, {_STEP}
    ) AS g(b)
)
SELECT o.fdow AS first_day_of_week, c.currency,
       greatest(g.b, $2::date) AS start_date, least(g.e, $3::date) AS end_date,
       {", ".join(f"coalesce(a.{m}, 0)::bigint AS {m}" for m in MEASURES)}
FROM o LEFT JOIN (
    cur c CROSS JOIN g LEFT JOIN agg a ON a.b = g.b AND a.currency = c.currency
) ON true
ORDER BY c.currency, g.b
"""


REVENUE_SQL = {source: _revenue_sql(source) for source in _REVENUE_SOURCES}


async def revenue(
    conn: Conn,
    org_id: str,
    first: date,
    last: date,
    period: str,
    currency: str | None,
    *,
    provider_ids: Sequence[str] = (),
    service_ids: Sequence[str] = (),
) -> list[asyncpg.Record]:
    """The buckets of [first, last] per currency (see REVENUE_SQL): of the
    providers, else of the services, else of the whole organization."""
    args: list[object] = [org_id, first, last, period, currency]
    if provider_ids:
        return await conn.fetch(REVENUE_SQL["providers"], *args, list(provider_ids))
    if service_ids:
        return await conn.fetch(REVENUE_SQL["services"], *args, list(service_ids))
    return await conn.fetch(REVENUE_SQL["organization"], *args)


# -- GetProviderMetrics --------------------------------------------------------------------
#
# $1 organization, $2 provider ids (distinct, in the request's order), $3
# first date, $4 last date. Per requested provider (ord = its place): one 'p'
# row (found or not; distinct clients with a visit in the range, those whose
# first visit with the provider is in it, and the seconds of working time),
# then its 'c' rows: the measures per currency.
#
# Working time, as server.scheduling computes it for availability: each date's
# intervals are its overrides' (a date with an override row, even a closed
# one, ignores the weekly rules) or else its weekly rules' (weekday, valid
# from/to), wall-clock minutes of the provider's zone read as instants by
# minute_instant_sql (1440 = midnight at the end of the date; an interval
# that a spring-forward gap leaves empty or inverted counts nothing); their union
# (overlapping and touching ones merged) less the union of the provider's time
# off, in seconds.
#
# Without a row per date and rule: the cost is the rules, overrides, time off
# and the zones' offset changes, not the days of the range.
# - A *simple* date (its local midnights before and after are 24 hours away:
#   no offset change from the day before to the day after; minute_instant_sql
#   reads it as its midnight plus the minutes) lasts 24 hours, its wall-clock
#   time runs as real time, and its intervals share no instant with another
#   date's (no zone changes its offset twice within two days).
# - Ordinary dates (simple, not overridden, no time off starting or ending on
#   them) count their weekly rules' merged wall-clock minutes (k: per weekday
#   and per stretch of dates over which the same rules are valid) by weekday
#   arithmetic (weekdays_sql): the range's, less the dates wholly within a
#   stretch of time off (wo: those strictly between the local dates of its
#   start and end), less the special dates that are not.
# - The *special* dates (sd: overridden ones, the zone's dates that are not
#   simple (zd), the local dates on which a stretch of time off starts or
#   ends) are read date by date (sv: their intervals): their union less the
#   time off, on simple dates in wall-clock time (local timestamps less the
#   time off's local images), on the others as instants.


def weekdays_sql(weekday: str, first: str, last: str) -> str:
    """SQL: how many dates of [first, last] (dates; none when last < first)
    fall on ISO ``weekday``."""
    return (
        f"greatest(0, (({last}) - ({first}) + 7"
        f" - (({weekday}) - extract(isodow FROM {first})::int + 7) % 7) / 7)"
    )


_WEEKDAYS = weekdays_sql("k.w", "greatest(k.lo, x.a)", "least(k.hi, x.b)")
_START = minute_instant_sql("v.ts", "v.sm", "r.time_zone", "i")
_END = minute_instant_sql("v.ts", "v.em", "r.time_zone", "i")
_LOCAL = "tsrange(v.ts + v.sm * interval '1 minute', v.ts + v.em * interval '1 minute')"

# CTEs of PROVIDER_METRICS_SQL after r (the requested providers): w holds the
# working seconds of each found provider that has any (by ord).
_WORK_CTES = f"""
h AS (
    -- The providers' weekly rules valid in the range, their validity cut to it.
    SELECT r.ord, x.weekday AS w, x.start_minute AS sm, x.end_minute AS em, x.vf, x.vt
    FROM r CROSS JOIN LATERAL (
        SELECT weekday, start_minute, end_minute,
               greatest($3::date, valid_from) AS vf, least($4::date, valid_to) AS vt
        FROM working_hours
        WHERE organization_id = $1 AND provider_id = r.id
          AND (valid_from IS NULL OR valid_from <= $4::date)
          AND (valid_to IS NULL OR valid_to >= $3::date)
        OFFSET 0
    ) AS x
    WHERE r.time_zone IS NOT NULL
), k AS (
    -- Per provider, stretch of dates [lo, hi] between the rules' validity
    -- bounds, and weekday: the merged wall-clock minutes of its rules (each
    -- rule, by start, adds what it reaches beyond the rules before it).
    SELECT ord, lo, hi, w, sum(greatest(0, em - greatest(sm, reach))) AS minutes
    FROM (
        SELECT b.ord, b.lo, b.hi, h.w, h.sm, h.em,
               coalesce(max(h.em) OVER (
                   PARTITION BY b.ord, b.lo, h.w ORDER BY h.sm, h.em
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS reach
        FROM (
            SELECT ord, lo,
                   coalesce(lead(lo) OVER (PARTITION BY ord ORDER BY lo) - 1, $4::date) AS hi
            FROM (SELECT ord, vf AS lo FROM h UNION SELECT ord, vt + 1 FROM h WHERE vt < $4::date)
                AS c
        ) AS b
        JOIN h ON h.ord = b.ord AND h.vf <= b.lo AND h.vt >= b.hi
    ) AS x
    GROUP BY ord, lo, hi, w
), zd AS MATERIALIZED (
    -- The dates of the range that are not simple in a zone of the providers
    -- (MATERIALIZED: once a zone, not once a provider).
    SELECT z.zone, y.d
    FROM (SELECT DISTINCT time_zone AS zone FROM r WHERE time_zone IS NOT NULL) AS z
    CROSS JOIN LATERAL (
        SELECT g.d, g.m - lag(g.m) OVER d AS before, lead(g.m) OVER d - g.m AS after
        FROM (
            SELECT x.d::date AS d, x.d AT TIME ZONE z.zone AS m
            FROM generate_series(
                ($3::date - 1)::timestamp, ($4::date + 1)::timestamp, interval '1 day'
            ) AS x(d)
        ) AS g
        WINDOW d AS (ORDER BY g.d)
    ) AS y
    WHERE y.d BETWEEN $3::date AND $4::date
      AND (y.before <> interval '24 hours' OR y.after <> interval '24 hours')
), o AS (
    -- The providers' override rows of the range.
    SELECT r.ord, x.on_date, x.closed, x.start_minute AS sm, x.end_minute AS em
    FROM r CROSS JOIN LATERAL (
        SELECT on_date, closed, start_minute, end_minute FROM date_overrides
        WHERE organization_id = $1 AND provider_id = r.id
          AND on_date BETWEEN $3::date AND $4::date
        OFFSET 0
    ) AS x
    WHERE r.time_zone IS NOT NULL
), tm AS (
    -- The providers' time off within two days of the range's dates (local
    -- midnights lie within a day of UTC's in every zone), merged.
    SELECT r.ord, r.time_zone AS zone, x.off
    FROM r CROSS JOIN LATERAL (
        SELECT range_agg(during) AS off FROM time_off
        WHERE organization_id = $1 AND provider_id = r.id
          AND during && tstzrange(
              ($3::date - 2)::timestamp AT TIME ZONE 'UTC',
              ($4::date + 3)::timestamp AT TIME ZONE 'UTC')
    ) AS x
    WHERE r.time_zone IS NOT NULL AND x.off IS NOT NULL
), tp AS (
    -- Each stretch of time off: its start and end in local time.
    SELECT tm.ord, lower(p) AT TIME ZONE tm.zone AS la, upper(p) AT TIME ZONE tm.zone AS lb
    FROM tm CROSS JOIN LATERAL unnest(tm.off) AS p
), wo AS (
    -- Per provider, the dates of the range wholly off (strictly between the
    -- local dates of a stretch's start and end), and the time off's local
    -- images (exact on simple dates).
    SELECT ord,
           range_agg(daterange(la::date + 1, greatest(la::date + 1, lb::date)))
               * datemultirange(daterange($3::date, $4::date + 1)) AS dates,
           range_agg(tsrange(la, greatest(la, lb))) AS local
    FROM tp GROUP BY ord
), sd AS (
    -- Per provider, its special dates, whether each has an override row and
    -- whether it is simple.
    SELECT e.ord, e.d, bool_or(e.overridden) AS overridden, bool_and(e.simple) AS simple
    FROM (
        SELECT ord, on_date AS d, true AS overridden, true AS simple FROM o
        UNION ALL
        SELECT r.ord, zd.d, false, false FROM r JOIN zd ON zd.zone = r.time_zone
        UNION ALL
        SELECT tp.ord, x.d, false, true
        FROM tp CROSS JOIN LATERAL (VALUES (tp.la::date), (tp.lb::date)) AS x(d)
        WHERE x.d BETWEEN $3::date AND $4::date
    ) AS e
    GROUP BY e.ord, e.d
), sv AS (
    -- The special dates' intervals: their overrides', else their rules'.
    SELECT sd.ord, sd.d::timestamp AS ts, sd.simple, x.sm, x.em
    FROM sd JOIN o x ON x.ord = sd.ord AND x.on_date = sd.d AND NOT x.closed
    UNION ALL
    SELECT sd.ord, sd.d::timestamp, sd.simple, h.sm, h.em
    FROM sd JOIN h ON h.ord = sd.ord AND h.w = extract(isodow FROM sd.d)
        AND sd.d BETWEEN h.vf AND h.vt
    WHERE NOT sd.overridden
), w AS (
    -- Per provider, its working seconds: the ordinary dates' minutes (the
    -- range's, less the dates wholly off, less the special dates that are
    -- not), and the special dates' seconds less the time off (simple dates
    -- in wall-clock time, the others as instants).
    SELECT y.ord, sum(y.seconds) AS seconds
    FROM (
        SELECT x.ord, 60 * x.sign * k.minutes * {_WEEKDAYS} AS seconds
        FROM (
            SELECT ord, $3::date AS a, $4::date AS b, 1 AS sign FROM r WHERE time_zone IS NOT NULL
            UNION ALL
            SELECT wo.ord, lower(p), upper(p) - 1, -1
            FROM wo CROSS JOIN LATERAL unnest(wo.dates) AS p
        ) AS x
        JOIN k ON k.ord = x.ord AND k.lo <= x.b AND k.hi >= x.a
        UNION ALL
        SELECT sd.ord, -60 * k.minutes
        FROM sd JOIN k ON k.ord = sd.ord AND k.w = extract(isodow FROM sd.d)::int
            AND sd.d BETWEEN k.lo AND k.hi
        LEFT JOIN wo ON wo.ord = sd.ord
        WHERE wo.dates IS NULL OR NOT wo.dates @> sd.d
        UNION ALL
        SELECT u.ord, extract(epoch FROM upper(p) - lower(p))
        FROM (
            SELECT v.ord, range_agg({_LOCAL}) AS work FROM sv AS v WHERE v.simple GROUP BY v.ord
        ) AS u
        LEFT JOIN wo ON wo.ord = u.ord
        CROSS JOIN LATERAL unnest(u.work - coalesce(wo.local, '{{}}'::tsmultirange)) AS p
        UNION ALL
        SELECT u.ord, extract(epoch FROM upper(p) - lower(p))
        FROM (
            SELECT v.ord, range_agg(tstzrange({_START}, greatest({_START}, {_END}))) AS work
            FROM sv AS v JOIN r ON r.ord = v.ord
            CROSS JOIN LATERAL ({day_instants_sql("v.ts", "r.time_zone")}) AS i
            WHERE NOT v.simple
            GROUP BY v.ord
        ) AS u
        LEFT JOIN tm ON tm.ord = u.ord
        CROSS JOIN LATERAL unnest(u.work - coalesce(tm.off, '{{}}'::tstzmultirange)) AS p
    ) AS y
    GROUP BY y.ord
)"""


PROVIDER_METRICS_SQL = f"""
WITH s AS (
    {_months_sql("$3::date", "$4::date")}
), r AS (
    SELECT r.ord, r.id, p.time_zone
    FROM unnest($2::uuid[]) WITH ORDINALITY AS r(id, ord)
    LEFT JOIN LATERAL (
        SELECT time_zone FROM providers WHERE organization_id = $1 AND id = r.id LIMIT 1
    ) p ON true
), t AS (
    SELECT r.ord, x.currency, {_sums("x.")},
           bool_or({" OR ".join(f"x.{m} <> 0" for m in MEASURES)}) AS nonzero
    FROM r CROSS JOIN s
    CROSS JOIN LATERAL ({_provider_rows_sql("r.id", "$3::date", "$4::date", "s")}) AS x
    WHERE r.time_zone IS NOT NULL
    GROUP BY r.ord, x.currency
), {_WORK_CTES.strip()}
SELECT 'p' AS kind, r.ord, r.time_zone IS NOT NULL AS found, NULL::text AS currency, {_NULLS},
    CASE WHEN r.time_zone IS NOT NULL THEN (
        -- provider_day_clients rows exist only with visits (a visit is final)
        SELECT count(DISTINCT c.client_id) FROM provider_day_clients c
        WHERE c.organization_id = $1 AND c.provider_id = r.id
          AND c.business_date BETWEEN $3::date AND $4::date
    ) END AS unique_clients,
    CASE WHEN r.time_zone IS NOT NULL THEN (
        SELECT count(*) FROM provider_client_visits v
        WHERE v.organization_id = $1 AND v.provider_id = r.id
          AND v.first_visit_date BETWEEN $3::date AND $4::date
    ) END AS new_clients,
    CASE WHEN r.time_zone IS NOT NULL THEN coalesce(w.seconds, 0) END AS work_seconds
FROM r LEFT JOIN w ON w.ord = r.ord
UNION ALL
SELECT 'c', t.ord, true, t.currency, {_of("t")}, NULL, NULL, NULL
FROM t WHERE t.nonzero
ORDER BY ord, kind DESC, currency
"""


async def provider_metrics(
    conn: Conn, org_id: str, provider_ids: Sequence[str], first: date, last: date
) -> list[asyncpg.Record]:
    """Per provider, in ``provider_ids`` order: its 'p' row, then its 'c' rows."""
    return await conn.fetch(PROVIDER_METRICS_SQL, org_id, list(provider_ids), first, last)


# -- GetClientBalance and ListClientBalances -------------------------------------------------

# client_totals' columns but the tenant: the client, the currency, the sums,
# balance and lifetime value (computed columns).
BALANCE_COLUMNS = tuple(c.name for c in schema.client_totals.columns if c.name != "organization_id")
# A client_totals row with every sum zero holds nothing to report.
_HAS_MONEY = " OR ".join(
    f"{{t}}{c} <> 0"
    for c in ("charged_minor", "paid_minor", "payments", "refunded_minor", "refunds")
)

# The client (no row: not the tenant's), its visits (NULL without), and one
# row per currency it has money in (NULL currency: none), by currency.
CLIENT_BALANCE_SQL = f"""
SELECT c.id AS found_id, v.visits, v.first_visit_at, v.last_visit_at,
       {", ".join(f"t.{col}" for col in BALANCE_COLUMNS)}
FROM clients c
LEFT JOIN client_visits v ON v.organization_id = $1 AND v.client_id = c.id
LEFT JOIN client_totals t
    ON t.organization_id = $1 AND t.client_id = c.id AND ({_HAS_MONEY.format(t="t.")})
WHERE c.organization_id = $1 AND c.id = $2
ORDER BY t.currency
"""


async def client_balance(conn: Conn, org_id: str, client_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(CLIENT_BALANCE_SQL, org_id, client_id)


@dataclass(frozen=True, slots=True)
class ClientBalanceFilter:
    currency: str = ""
    # Inclusive bounds of balance_minor.
    min_balance: int | None = None
    max_balance: int | None = None


def build_list_client_balances_query(
    org_id: str, flt: ClientBalanceFilter, order: Order
) -> ListQuery:
    """A currency's balances (ix_client_totals_org_currency_balance and
    _lifetime_value serve the orders; the balance bounds are that index's
    range in the balance order, a filter in the other)."""
    query = ListQuery(source="client_totals", columns=BALANCE_COLUMNS, order=order)
    query.where(f"organization_id = {query.param(org_id)}")
    query.where(f"currency = {query.param(flt.currency)}")
    if flt.min_balance is not None:
        query.where(f"balance_minor >= {query.param(flt.min_balance)}")
    if flt.max_balance is not None:
        query.where(f"balance_minor <= {query.param(flt.max_balance)}")
    query.where(f"({_HAS_MONEY.format(t='')})")
    return query


CLIENT_BALANCES: Listing[ClientBalanceFilter] = Listing(
    name="client_balances",
    orders=orders(
        ("balance", (SortKey("balance_minor", KeyType.INT), SortKey("client_id", KeyType.UUID))),
        (
            "lifetime_value",
            (SortKey("lifetime_value_minor", KeyType.INT), SortKey("client_id", KeyType.UUID)),
        ),
    ),
    default_order="balance desc",
    build=build_list_client_balances_query,
)


# -- GetDashboard ------------------------------------------------------------------------------
#
# $1 organization, $2 the date (NULL = today in the organization's zone), $3
# period ('day' | 'week' | 'month'), $4 how many top providers, $5 the ranking
# currency (NULL = the one with the most completed revenue in the current
# period).
#
# Rows: one 'h' (the date, the current period's start, the previous period's
# start and end, the ranking currency, new clients in each period; none for
# an unknown organization), 'f' rows (part 't' = the date, 'c' = the rest of
# the current period, 'p' = the previous period; measures per currency), and
# 't' rows (the top providers, rank 1 first).


def _period_start(day: str) -> str:
    return period_start_sql(day, "$3::text", "o.fdow")


DASHBOARD_SQL = f"""
WITH o AS (
    SELECT first_day_of_week AS fdow,
           coalesce($2::date, (now() AT TIME ZONE time_zone)::date) AS on_date
    FROM organizations WHERE id = $1
), b AS (
    SELECT o.on_date, c.cur_start, p.prev_start,
           least(p.prev_start + (o.on_date - c.cur_start), c.cur_start - 1) AS prev_end
    FROM o
    CROSS JOIN LATERAL (SELECT {_period_start("o.on_date")} AS cur_start) c
    CROSS JOIN LATERAL (SELECT {_period_start("c.cur_start - 1")} AS prev_start) p
), f AS (
    SELECT CASE WHEN t.business_date = b.on_date THEN 't' ELSE 'c' END AS part, t.currency,
           {_of("t")}
    FROM b JOIN organization_day_totals t
        ON t.organization_id = $1 AND t.business_date BETWEEN b.cur_start AND b.on_date
    UNION ALL
    SELECT 'p', t.currency, {_of("t")}
    FROM b JOIN organization_day_totals t
        ON t.organization_id = $1 AND t.business_date BETWEEN b.prev_start AND b.prev_end
), fs AS (
    SELECT part, currency, {_sums()}, bool_or({_NONZERO}) AS nonzero
    FROM f GROUP BY part, currency
), rc AS (
    SELECT coalesce($5::text, (
        SELECT currency FROM fs WHERE part <> 'p' GROUP BY currency
        HAVING sum(completed_minor) > 0 ORDER BY sum(completed_minor) DESC, currency LIMIT 1
    )) AS currency
), tr AS (
    -- The rows of the current period in the ranking currency: by MONTH, the
    -- month's row less the days after the date when they are fewer than the
    -- days up to it (a month's row holds its every date), else the days up
    -- to the date.
    SELECT rc.currency, b.cur_start, b.on_date,
           CASE WHEN x.by_month THEN b.cur_start END AS month,
           CASE WHEN x.by_month THEN b.cur_start - 1 ELSE b.on_date END AS add_last,
           CASE WHEN x.by_month THEN x.month_last ELSE b.on_date END AS sub_last
    FROM b CROSS JOIN rc
    CROSS JOIN LATERAL (
        SELECT m.month_last,
               $3::text = 'month' AND b.on_date - b.cur_start + 1 > m.month_last - b.on_date
                   AS by_month
        FROM (SELECT (date_trunc('month', b.cur_start::timestamp) + interval '1 month')::date - 1
                  AS month_last) AS m
    ) AS x
    WHERE rc.currency IS NOT NULL
), ranked AS (
    -- Every provider's completed figures: index-only range scans of the
    -- tenant's rows in the currency (ix_provider_*_totals_org_currency_*).
    SELECT y.provider_id, sum(y.completed_minor)::bigint AS completed_minor,
           sum(y.completed)::bigint AS completed
    FROM (
        SELECT m.provider_id, m.completed_minor, m.completed
        FROM tr JOIN provider_month_totals m
            ON m.organization_id = $1 AND m.currency = tr.currency AND m.month = tr.month
        UNION ALL
        SELECT d.provider_id, d.completed_minor, d.completed
        FROM tr JOIN provider_day_totals d
            ON d.organization_id = $1 AND d.currency = tr.currency
            AND d.business_date BETWEEN tr.cur_start AND tr.add_last
        UNION ALL
        SELECT d.provider_id, -d.completed_minor, -d.completed
        FROM tr JOIN provider_day_totals d
            ON d.organization_id = $1 AND d.currency = tr.currency
            AND d.business_date BETWEEN tr.on_date + 1 AND tr.sub_last
    ) AS y
    GROUP BY y.provider_id
    HAVING sum(y.completed_minor) > 0
    ORDER BY 2 DESC, 1
), top AS (
    -- The first $4 and only their names: a primary key probe each, in rank
    -- order (ranked's own ORDER BY: the LIMIT stops the probes; a provider
    -- without its row would be skipped, as the join did before).
    SELECT t.*, row_number() OVER (ORDER BY t.completed_minor DESC, t.id) AS rank
    FROM (
        SELECT x.provider_id AS id, p.display_name, x.completed_minor, x.completed
        FROM ranked x
        CROSS JOIN LATERAL (
            SELECT display_name FROM providers WHERE organization_id = $1 AND id = x.provider_id
            LIMIT 1
        ) p
        ORDER BY x.completed_minor DESC, x.provider_id
        LIMIT $4
    ) t
)
SELECT 'h' AS kind, 0::bigint AS rank, b.on_date, b.cur_start, b.prev_start, b.prev_end,
    (SELECT coalesce(sum(n.new_clients), 0)::bigint FROM organization_day_new_clients n
     WHERE n.organization_id = $1 AND n.business_date BETWEEN b.cur_start AND b.on_date)
        AS new_current,
    (SELECT coalesce(sum(n.new_clients), 0)::bigint FROM organization_day_new_clients n
     WHERE n.organization_id = $1 AND n.business_date BETWEEN b.prev_start AND b.prev_end)
        AS new_previous,
    NULL::text AS part, rc.currency, {_NULLS},
    NULL::uuid AS provider_id, NULL::text AS display_name
FROM b CROSS JOIN rc
UNION ALL
SELECT 'f', 0, NULL, NULL, NULL, NULL, NULL, NULL, fs.part, fs.currency, {_of("fs")}, NULL, NULL
FROM fs WHERE fs.nonzero
UNION ALL
SELECT 't', top.rank, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    {", ".join("top." + m if m in ("completed", "completed_minor") else "NULL" for m in MEASURES)},
    top.id, top.display_name
FROM top
ORDER BY kind, rank, part, currency
"""


async def dashboard(
    conn: Conn, org_id: str, on: date | None, period: str, top: int, currency: str | None
) -> list[asyncpg.Record]:
    return await conn.fetch(DASHBOARD_SQL, org_id, on, period, top, currency)
