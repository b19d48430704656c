"""One command: the summaries at full bench scale, side by side, and what the
rollups cost the writes - ours vs the raw statements vs the seeds' way.

    python -m bench.summaries            # the lists dataset: 1,000 providers, 1M clients,
                                         # 5M appointments, ~5M payments (bench.lists_data)
    python -m bench.summaries --quick    # 20 providers, 10k clients, 50k + 50k: a few minutes

The dataset is bench.lists_data.generate_lists' (the same database as
``python -m bench.lists``, in bench/results/pgdata-lists or on
--database-url), with each tenant's refunds and rollups built once
(check_tenant with repair: the backfill's time is printed when it runs).

Reads (latency: 1 call in flight, the scenarios taking turns in --rounds
rounds, as bench.lists):

a. GetDashboard, MONTH, on the dataset's generation date (the big tenant);
b. GetRevenueSummary: one provider, one calendar month, DAY buckets; the
   whole tenant, one calendar quarter, WEEK buckets;
c. GetProviderMetrics: 50 providers, one calendar quarter;
d. GetClientBalance of a regular client; ListClientBalances page 1,
   "balance desc", in the tenant's currency.

Each three ways: ours = the RPC over gRPC to a server process (``booking-data
serve``); raw = the statement our handler sent for that very request
(recorded by running the handler in this process on a recording connection,
its answer checked equal to the gRPC answer), replayed on a held asyncpg
connection: the database's share; seeds = the seeds' way (004's
get_dashboard_data_optimized and revenue CTE, 001's payment metrics: GROUP BY
over the raw appointments, payments and refunds through their indexes),
adapted to answer the same question exactly (business dates in the
provider's zone, payments and refunds dated by their own creation, every
figure of the contract but the working time). Each seeds answer is compared
with ours figure by figure (a line per scenario).

Writes: a scratch database beside the dataset (a small tenant of its own, its
rollups built), a server in this process (server.testing.running_server),
--callers concurrent callers in another process booking free slots
(CreateAppointment, then CompleteAppointment + RecordPayment for
--complete-share of them) for --write-seconds a round, the rounds
alternating (ABBA) between the rollups maintained and
``server.queries.rollups.apply`` replaced by a no-op coroutine (a bench-only
monkeypatch of this process's server). The rollup totals are checked to move
by the bookings in maintained rounds and not at all in the others; the
scratch database is dropped afterwards.

The report goes to bench/results/summaries-latest.md. A summary whose p50 is
over the target gets the EXPLAIN (ANALYZE, BUFFERS) of its statement, custom
and generic plans, in the report (--explain: every summary's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import multiprocessing
import os
import platform
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from bench.lists import (
    Case,
    Recorder,
    Statements,
    _load_average,
    _met,
    _row,
    check_over_grpc,
    dataset_facts,
    measure_latency,
    scenarios_of,
)
from bench.lists_data import (
    ROLLUP_TABLES,
    ListsDataset,
    add_dataset_arguments,
    dataset_options,
    lists_database,
)
from bench.run import RESULTS, ROOT, server_process
from server.db.engine import Conn, to_asyncpg_dsn

REPORT = RESULTS / "summaries-latest.md"
METRICS_PROVIDERS = 50
PAGE = 50
TARGET_P50_MS = 10.0
TARGET_SEEDS_RATIO = 100.0
TARGET_WRITE_COST = 0.20
# The write scratch tenant.
WRITE_SLUG = "bench-summaries-writes"
WRITE_PROVIDERS = 40
WRITE_APPOINTMENTS = 20_000
WRITE_CLIENTS = 2_000
CALLERS_PER_CHANNEL = 8
WRITE_NOTE = "bench.summaries writes"

SVC = "/booking.v1.SummaryService/"
DASHBOARD_RPC = SVC + "GetDashboard"
REVENUE_RPC = SVC + "GetRevenueSummary"
METRICS_RPC = SVC + "GetProviderMetrics"
BALANCE_RPC = SVC + "GetClientBalance"
BALANCES_RPC = SVC + "ListClientBalances"

COUNTS = ("pending", "confirmed", "completed", "cancelled", "no_show")
MONEY = ("expected_minor", "completed_minor", "paid_minor", "refunded_minor", "payments", "refunds")
MEASURES = (*COUNTS, "booked_minutes", *MONEY)

# The rows of each of a case's seeds statements.
Answers = list[list[asyncpg.Record]]


# -- targets ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Targets:
    org: str
    today: date  # the dataset's generation date in the organization's zone
    provider: str
    zone: str
    month: tuple[date, date]
    quarter: tuple[date, date]
    providers: list[str]
    client: str
    client_appointments: int
    currency: str
    first_day_of_week: int


def _month_before(day: date) -> tuple[date, date]:
    last = day.replace(day=1) - timedelta(days=1)
    return last.replace(day=1), last


def _quarter_before(day: date) -> tuple[date, date]:
    first = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    last = first - timedelta(days=1)
    return date(last.year, 3 * ((last.month - 1) // 3) + 1, 1), last


async def _targets(conn: asyncpg.Connection, data: ListsDataset) -> Targets:
    """The lists bench's provider (Europe/Berlin, of median load) and regular
    client, the last whole month and quarter, the first 50 providers by id,
    the tenant's most used currency."""
    from bench.lists import _targets as lists_targets

    org = data.org
    lists = await lists_targets(conn, data)
    o = await conn.fetchrow(
        "SELECT time_zone, first_day_of_week FROM organizations WHERE id = $1", org
    )
    today = data.generated_at.astimezone(ZoneInfo(o["time_zone"])).date()
    providers = [
        str(r["id"])
        for r in await conn.fetch(
            "SELECT id FROM providers WHERE organization_id = $1 ORDER BY id LIMIT $2",
            org,
            METRICS_PROVIDERS,
        )
    ]
    currency = await conn.fetchval(
        "SELECT currency FROM (SELECT currency FROM appointments WHERE organization_id = $1 "
        "LIMIT 10000) s GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
        org,
    )
    return Targets(
        org=org,
        today=today,
        provider=lists.provider,
        zone=lists.zone,
        month=_month_before(today),
        quarter=_quarter_before(today),
        providers=providers,
        client=lists.client,
        client_appointments=lists.client_appointments,
        currency=str(currency),
        first_day_of_week=int(o["first_day_of_week"]),
    )


def _dashboard_periods(t: Targets) -> tuple[date, date, date]:
    """The MONTH dashboard's current start, previous start and previous end
    (like for like: as many days as the current period has, cut to the
    previous month)."""
    current = t.today.replace(day=1)
    previous = _month_before(current)[0]
    end = min(previous + (t.today - current), current - timedelta(days=1))
    return current, previous, end


# -- the seeds' way -----------------------------------------------------------------------
#
# The seeds (004 get_dashboard_data_optimized, the revenue CTE of 5.1, 001's
# payment metrics) aggregate the raw rows with GROUP BY / CTEs over a date
# range, through the indexes. Adapted to our tables and to the same question:
# an appointment's business date is its start's local date in its provider's
# zone (the seeds' DATE() is the session's UTC date), a payment counts on its
# creation's local date and a refund on its own, in the zone of the provider
# of the payment's appointment. The instants are range-filtered with a day's
# margin (the appointments' and payments' (organization, start/created)
# indexes), the dates exactly.

_BOOKED = "('pending', 'confirmed', 'completed')"
_PAID = "('completed', 'refunded')"


def _window(column: str, first: str, last: str) -> str:
    """Instants whose local date (any zone) may fall within [first, last]."""
    return (
        f"{column} >= (({first})::date - 1)::timestamp AT TIME ZONE 'UTC' "
        f"AND {column} < (({last})::date + 2)::timestamp AT TIME ZONE 'UTC'"
    )


def _seeds_facts(first: str, last: str, providers: str | None = None) -> str:
    """SQL: one row of measures per appointment, paid payment and refund of
    the tenant ($1) near dates [first, last] (of ``providers``, a uuid[]
    parameter): provider_id, client_id, d (business date), currency and the
    MEASURES."""
    only = f" AND a.provider_id = ANY({providers})" if providers else ""
    zone = "JOIN providers p ON p.organization_id = a.organization_id AND p.id = a.provider_id"
    of_payment = (
        "JOIN appointments a ON a.organization_id = y.organization_id AND a.id = y.appointment_id"
    )
    counts = ", ".join(f"(a.status = '{s}')::int AS {s}" for s in COUNTS)
    none = ", ".join("0" for _ in (*COUNTS, "booked_minutes", *MONEY[:2]))
    return f"""
SELECT a.provider_id, a.client_id, (a.start_at AT TIME ZONE p.time_zone)::date AS d, a.currency,
    {counts},
    CASE WHEN a.status IN {_BOOKED}
        THEN extract(epoch FROM a.end_at - a.start_at)::bigint / 60 ELSE 0 END AS booked_minutes,
    CASE WHEN a.status IN {_BOOKED} THEN a.price_minor ELSE 0 END AS expected_minor,
    CASE WHEN a.status = 'completed' THEN a.price_minor ELSE 0 END AS completed_minor,
    0 AS paid_minor, 0 AS refunded_minor, 0 AS payments, 0 AS refunds
FROM appointments a {zone}
WHERE a.organization_id = $1 AND {_window("a.start_at", first, last)}{only}
UNION ALL
SELECT a.provider_id, y.client_id, (y.created_at AT TIME ZONE p.time_zone)::date, y.currency,
    {none}, y.amount_minor, 0, 1, 0
FROM payments y {of_payment} {zone}
WHERE y.organization_id = $1 AND y.status IN {_PAID}
  AND {_window("y.created_at", first, last)}{only}
UNION ALL
SELECT a.provider_id, y.client_id, (r.created_at AT TIME ZONE p.time_zone)::date, r.currency,
    {none}, 0, r.amount_minor, 0, 1
FROM refunds r
JOIN payments y ON y.organization_id = r.organization_id AND y.id = r.payment_id
{of_payment} {zone}
WHERE r.organization_id = $1 AND {_window("r.created_at", first, last)}{only}"""


def _sums(names: tuple[str, ...] = MEASURES) -> str:
    return ", ".join(f"sum({m})::bigint AS {m}" for m in names)


def _bucket(period: str) -> str:
    """The bucket start of business date f.d (o.fdow: the first day of the week)."""
    return {
        "day": "f.d",
        "week": "f.d - ((extract(isodow FROM f.d)::int - o.fdow + 7) % 7)",
        "month": "date_trunc('month', f.d)::date",
    }[period]


def seeds_revenue_sql(period: str, providers: bool) -> str:
    """004's revenue CTE on our tables: $1 org, $2 first, $3 last date, $4
    the providers (with ``providers``); per currency and bucket (cut to the
    range), the buckets with rows."""
    return f"""
WITH o AS (SELECT first_day_of_week AS fdow FROM organizations WHERE id = $1),
f AS ({_seeds_facts("$2", "$3", "$4::uuid[]" if providers else None)})
SELECT f.currency, greatest({_bucket(period)}, $2::date) AS start_date, {_sums()}
FROM f CROSS JOIN o
WHERE f.d BETWEEN $2::date AND $3::date
GROUP BY 1, 2 ORDER BY 1, 2"""


# $1 org, $2 previous start, $3 the date, $4 current start, $5 previous end.
SEEDS_DASHBOARD_SQL = f"""
WITH f AS ({_seeds_facts("$2", "$3")})
SELECT CASE WHEN f.d >= $4::date THEN 'c' ELSE 'p' END AS part, f.d = $3::date AS today,
       f.currency, {_sums()}
FROM f
WHERE f.d BETWEEN $4::date AND $3::date OR f.d BETWEEN $2::date AND $5::date
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""

# The organization's new clients in each period: a client's first visit is
# their earliest completed appointment (ties: the earlier business date).
SEEDS_NEW_CLIENTS_SQL = f"""
SELECT count(*) FILTER (WHERE d BETWEEN $4::date AND $3::date) AS current,
       count(*) FILTER (WHERE d BETWEEN $2::date AND $5::date) AS previous
FROM (
    SELECT DISTINCT ON (a.client_id) a.client_id, (a.start_at AT TIME ZONE p.time_zone)::date AS d
    FROM appointments a
    JOIN providers p ON p.organization_id = a.organization_id AND p.id = a.provider_id
    WHERE a.organization_id = $1 AND a.status = 'completed' AND {_window("a.start_at", "$2", "$3")}
      AND NOT EXISTS (
          SELECT 1 FROM appointments b
          WHERE b.organization_id = $1 AND b.client_id = a.client_id
            AND b.status = 'completed' AND b.start_at < a.start_at)
    ORDER BY a.client_id, a.start_at, d
) AS first"""

# $1 org, $2 current start, $3 the date, $4 the ranking currency, $5 how many.
SEEDS_TOP_SQL = f"""
SELECT a.provider_id, p.display_name, sum(a.price_minor)::bigint AS completed_minor,
       count(*) AS completed
FROM appointments a
JOIN providers p ON p.organization_id = a.organization_id AND p.id = a.provider_id
WHERE a.organization_id = $1 AND a.status = 'completed' AND a.currency = $4
  AND {_window("a.start_at", "$2", "$3")}
  AND (a.start_at AT TIME ZONE p.time_zone)::date BETWEEN $2::date AND $3::date
GROUP BY 1, 2 HAVING sum(a.price_minor) > 0
ORDER BY 3 DESC, 1 LIMIT $5"""

# $1 org, $2 first, $3 last date, $4 the providers.
SEEDS_METRICS_SQL = f"""
WITH f AS ({_seeds_facts("$2", "$3", "$4::uuid[]")})
SELECT f.provider_id, f.currency, {_sums()}
FROM f WHERE f.d BETWEEN $2::date AND $3::date
GROUP BY 1, 2 ORDER BY 1, 2"""

# Distinct clients with a visit in the range; of them, those without an
# earlier visit with the provider.
SEEDS_METRICS_CLIENTS_SQL = f"""
SELECT a.provider_id, count(DISTINCT a.client_id) AS unique_clients,
       count(DISTINCT a.client_id) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM appointments b
           WHERE b.organization_id = $1 AND b.client_id = a.client_id
             AND b.provider_id = a.provider_id AND b.status = 'completed'
             AND b.start_at < a.start_at)) AS new_clients
FROM appointments a
JOIN providers p ON p.organization_id = a.organization_id AND p.id = a.provider_id
WHERE a.organization_id = $1 AND a.provider_id = ANY($4::uuid[]) AND a.status = 'completed'
  AND {_window("a.start_at", "$2", "$3")}
  AND (a.start_at AT TIME ZONE p.time_zone)::date BETWEEN $2::date AND $3::date
GROUP BY 1"""

_MONEY_ROWS = """
    SELECT {key}currency, price_minor AS charged_minor, 0 AS paid_minor, 0 AS payments,
           0 AS refunded_minor, 0 AS refunds
    FROM appointments WHERE organization_id = $1 AND {where} AND status = 'completed'
    UNION ALL
    SELECT {key}currency, 0, amount_minor, 1, 0, 0
    FROM payments WHERE organization_id = $1 AND {where} AND status IN {paid}
    UNION ALL
    SELECT {ykey}r.currency, 0, 0, 0, r.amount_minor, 1
    FROM refunds r JOIN payments y ON y.organization_id = r.organization_id AND y.id = r.payment_id
    WHERE r.organization_id = $1 AND {ywhere}"""
_BALANCE = ("charged_minor", "paid_minor", "payments", "refunded_minor", "refunds")

# $1 org, $2 the client.
SEEDS_BALANCE_SQL = f"""
SELECT currency, {_sums(_BALANCE)} FROM ({
    _MONEY_ROWS.format(
        key="", ykey="", where="client_id = $2", ywhere="y.client_id = $2", paid=_PAID
    )
}) AS x GROUP BY currency ORDER BY currency"""
SEEDS_VISITS_SQL = """
SELECT count(*) AS visits, min(start_at) AS first_visit, max(start_at) AS last_visit
FROM appointments WHERE organization_id = $1 AND client_id = $2 AND status = 'completed'"""

# $1 org, $2 the currency, $3 the page size: every client's sums, then the page.
SEEDS_BALANCES_SQL = f"""
SELECT client_id, {", ".join(_BALANCE)},
       charged_minor - paid_minor + refunded_minor AS balance_minor,
       paid_minor - refunded_minor AS lifetime_value_minor
FROM (
    SELECT client_id, {_sums(_BALANCE)} FROM ({
    _MONEY_ROWS.format(
        key="client_id, ",
        ykey="y.client_id, ",
        where="currency = $2",
        ywhere="r.currency = $2",
        paid=_PAID,
    )
}) AS x GROUP BY client_id
) AS t
WHERE {" OR ".join(f"{c} <> 0" for c in _BALANCE)}
ORDER BY balance_minor DESC, client_id DESC LIMIT $3"""


# -- cases ---------------------------------------------------------------------------------


def _set_date(message: Any, day: date) -> None:
    message.year, message.month, message.day = day.year, day.month, day.day


async def _seeds(conn: asyncpg.Connection, statements: Statements) -> list[list[asyncpg.Record]]:
    return [await conn.fetch(sql, *args) for sql, args in statements]


async def build_cases(
    conn: asyncpg.Connection, recorder: Recorder, t: Targets
) -> tuple[list[Case], dict[str, Answers]]:
    """Each summary's request, its recorded statement, the seeds' statements,
    and the seeds' answers (label -> rows of each statement)."""
    from booking.v1 import summaries_pb2 as pb

    org = t.org
    cases: list[Case] = []
    answers: dict[str, Answers] = {}

    async def add(label: str, method: str, request: Any, items: str, seeds: Statements) -> None:
        answers[label] = await _seeds(conn, seeds)
        cases.append(Case(label, "summaries", method, request, items, (seeds, len(seeds))))

    # a. the dashboard
    current, previous, previous_end = _dashboard_periods(t)
    dash = pb.GetDashboardRequest(organization_id=org, period=pb.GRANULARITY_MONTH)
    _set_date(dash.date, t.today)
    periods = [org, previous, t.today, current, previous_end]
    figures = await conn.fetch(SEEDS_DASHBOARD_SQL, *periods)
    ranking = _ranking_currency(figures)
    await add(
        "a. dashboard, MONTH",
        DASHBOARD_RPC,
        dash,
        "top_providers",
        [
            (SEEDS_DASHBOARD_SQL, periods),
            (SEEDS_NEW_CLIENTS_SQL, periods),
            (SEEDS_TOP_SQL, [org, current, t.today, ranking, 5]),
        ],
    )
    # b. revenue
    for label, period, granularity, span, providers in (
        ("b. revenue, 1 provider x 1 month, DAY", "day", pb.GRANULARITY_DAY, t.month, [t.provider]),
        ("b. revenue, tenant x 1 quarter, WEEK", "week", pb.GRANULARITY_WEEK, t.quarter, []),
    ):
        request = pb.GetRevenueSummaryRequest(
            organization_id=org, provider_ids=providers, granularity=granularity
        )
        _set_date(request.start_date, span[0])
        _set_date(request.end_date, span[1])
        sql = seeds_revenue_sql(period, bool(providers))
        await add(
            label,
            REVENUE_RPC,
            request,
            "currencies.0.buckets",
            [(sql, [org, *span, *([providers] if providers else [])])],
        )
    # c. provider metrics
    metrics = pb.GetProviderMetricsRequest(organization_id=org, provider_ids=t.providers)
    _set_date(metrics.start_date, t.quarter[0])
    _set_date(metrics.end_date, t.quarter[1])
    margs = [org, *t.quarter, t.providers]
    await add(
        f"c. provider metrics, {len(t.providers)} providers x 1 quarter",
        METRICS_RPC,
        metrics,
        "providers",
        [(SEEDS_METRICS_SQL, margs), (SEEDS_METRICS_CLIENTS_SQL, margs)],
    )
    # d. balances
    await add(
        "d. client balance",
        BALANCE_RPC,
        pb.GetClientBalanceRequest(organization_id=org, client_id=t.client),
        "balances",
        [(SEEDS_BALANCE_SQL, [org, t.client]), (SEEDS_VISITS_SQL, [org, t.client])],
    )
    await add(
        f"d. client balances, page 1 of {PAGE}, balance desc",
        BALANCES_RPC,
        pb.ListClientBalancesRequest(
            organization_id=org, page_size=PAGE, currency_code=t.currency, order_by="balance desc"
        ),
        "balances",
        [(SEEDS_BALANCES_SQL, [org, t.currency, PAGE])],
    )
    for case in cases:
        case.response, case.raw = await recorder.call(case.method, case.request)
        case.rows = len(_items(case.response, case.items))
    return cases, answers


def _items(response: Any, path: str) -> Any:
    value: Any = response
    for part in path.split("."):
        if part.isdigit():
            if int(part) >= len(value):
                return []
            value = value[int(part)]
        else:
            value = getattr(value, part)
    return value


def _ranking_currency(rows: list[asyncpg.Record]) -> str | None:
    """The currency with the most completed revenue in the current period."""
    by: collections.Counter[str] = collections.Counter()
    for r in rows:
        if r["part"] == "c":
            by[r["currency"]] += r["completed_minor"]
    ranked = sorted((-v, c) for c, v in by.items() if v > 0)
    return ranked[0][1] if ranked else None


# -- exactness: ours against the seeds, figure by figure -----------------------------------

Figures = tuple[int, ...]


def _proto_figures(f: Any) -> Figures:
    return (*(getattr(f.appointments, c) for c in COUNTS), *(getattr(f, m) for m in MONEY))


def _row_figures(rows: list[Any]) -> Figures:
    return tuple(sum(int(r[m]) for r in rows) for m in (*COUNTS, *MONEY))


def _nonzero(f: Figures) -> bool:
    return any(f)


def _day(d: Any) -> date:
    return date(d.year, d.month, d.day)


def _revenue(r: Any, seeds: Answers) -> tuple[Any, Any]:
    ours = {
        (c.currency_code, _day(b.start_date)): _proto_figures(b.figures)
        for c in r.currencies
        for b in c.buckets
        if _nonzero(_proto_figures(b.figures))
    }
    theirs = {
        (s["currency"], s["start_date"]): _row_figures([s])
        for s in seeds[0]
        if _nonzero(_row_figures([s]))
    }
    return ours, theirs


def _counts(message: Any) -> tuple[int, ...]:
    return tuple(getattr(message, c) for c in COUNTS)


def _dashboard(r: Any, seeds: Answers) -> tuple[Any, Any]:
    figures, new, top = seeds

    def ours_period(p: Any) -> dict[str, Any]:
        revenue = {x.currency_code: _proto_figures(x.figures) for x in p.revenue}
        return {
            "counts": _counts(p.appointments),
            "bookings": p.bookings,
            "revenue": {c: f for c, f in revenue.items() if _nonzero(f)},
            "new_clients": p.new_clients,
        }

    def seeds_period(rows: list[Any], new_clients: int) -> dict[str, Any]:
        by: dict[str, list[Any]] = {}
        for row in rows:
            by.setdefault(row["currency"], []).append(row)
        counts = _row_figures(rows)[: len(COUNTS)]
        return {
            "counts": counts,
            "bookings": sum(counts) - counts[COUNTS.index("cancelled")],
            "revenue": {c: _row_figures(v) for c, v in by.items() if _nonzero(_row_figures(v))},
            "new_clients": new_clients,
        }

    ours = {
        "today": _counts(r.today),
        "current": ours_period(r.current),
        "previous": ours_period(r.previous),
        "ranking": r.ranking_currency_code,
        "top": [
            (p.provider_id, p.completed_minor, p.completed_appointments) for p in r.top_providers
        ],
    }
    current = [row for row in figures if row["part"] == "c"]
    theirs = {
        "today": _row_figures([row for row in current if row["today"]])[: len(COUNTS)],
        "current": seeds_period(current, new[0]["current"]),
        "previous": seeds_period(
            [row for row in figures if row["part"] == "p"], new[0]["previous"]
        ),
        "ranking": _ranking_currency(figures) or "",
        "top": [(str(p["provider_id"]), p["completed_minor"], p["completed"]) for p in top],
    }
    return ours, theirs


def _metrics(r: Any, seeds: Answers, providers: list[str]) -> tuple[Any, Any]:
    from server.handlers.summaries import average_ticket

    figures, clients = seeds
    ours = {
        p.provider_id: {
            "counts": _counts(p.appointments),
            "booked_minutes": p.booked_minutes,
            "revenue": {
                x.currency_code: (_proto_figures(x.figures), x.average_ticket_minor)
                for x in p.revenue
            },
            "clients": (p.unique_clients, p.new_clients, p.returning_clients),
        }
        for p in r.providers
    }
    theirs = {}
    for provider in providers:
        rows = [x for x in figures if str(x["provider_id"]) == provider]
        c = next((x for x in clients if str(x["provider_id"]) == provider), None)
        unique, new = (int(c["unique_clients"]), int(c["new_clients"])) if c else (0, 0)
        theirs[provider] = {
            "counts": _row_figures(rows)[: len(COUNTS)],
            "booked_minutes": sum(int(x["booked_minutes"]) for x in rows),
            "revenue": {
                x["currency"]: (
                    _row_figures([x]),
                    average_ticket(x["completed_minor"], x["completed"]),
                )
                for x in rows
                if _nonzero(_row_figures([x])) or x["booked_minutes"]
            },
            "clients": (unique, new, unique - new),
        }
    return ours, theirs


def _balance(r: Any, seeds: Answers) -> tuple[Any, Any]:
    money, visits = seeds
    ours = {
        "balances": [
            (
                b.currency_code,
                b.charged_minor,
                b.paid_minor,
                b.refunded_minor,
                b.balance_minor,
                b.payments,
                b.refunds,
            )
            for b in r.balances
        ],
        "visits": r.visits,
        "first": r.first_visit_time.ToDatetime(tzinfo=UTC) if r.visits else None,
        "last": r.last_visit_time.ToDatetime(tzinfo=UTC) if r.visits else None,
    }
    theirs = {
        "balances": [
            (
                m["currency"],
                m["charged_minor"],
                m["paid_minor"],
                m["refunded_minor"],
                m["charged_minor"] - m["paid_minor"] + m["refunded_minor"],
                m["payments"],
                m["refunds"],
            )
            for m in money
            if any(m[c] for c in _BALANCE)
        ],
        "visits": visits[0]["visits"],
        "first": visits[0]["first_visit"],
        "last": visits[0]["last_visit"],
    }
    return ours, theirs


def _balances(r: Any, seeds: Answers) -> tuple[Any, Any]:
    ours = [
        (
            b.client_id,
            b.charged_minor,
            b.paid_minor,
            b.refunded_minor,
            b.balance_minor,
            b.lifetime_value_minor,
            b.payments,
            b.refunds,
        )
        for b in r.balances
    ]
    theirs = [
        (
            str(s["client_id"]),
            s["charged_minor"],
            s["paid_minor"],
            s["refunded_minor"],
            s["balance_minor"],
            s["lifetime_value_minor"],
            s["payments"],
            s["refunds"],
        )
        for s in seeds[0]
    ]
    return ours, theirs


def compare(case: Case, seeds: Answers) -> tuple[Any, Any]:
    """(ours, seeds): the same figures from both answers, ready to compare."""
    r = case.response
    if case.method == METRICS_RPC:
        return _metrics(r, seeds, list(case.request.provider_ids))
    return {
        REVENUE_RPC: _revenue,
        DASHBOARD_RPC: _dashboard,
        BALANCE_RPC: _balance,
        BALANCES_RPC: _balances,
    }[case.method](r, seeds)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '/'}: ours {a!r}, seeds {b!r}"


def exactness(cases: list[Case], answers: dict[str, Answers]) -> list[str]:
    """A line per scenario: do ours and the seeds' way give the same figures?"""
    lines = []
    for case in cases:
        ours, theirs = compare(case, answers[case.label])
        if ours == theirs:
            lines.append(f"- {case.label}: **same figures** ({_size(ours)} compared)")
        else:
            lines.append(f"- {case.label}: **DIFFERENT**: {_first_difference(ours, theirs)[:400]}")
    return lines


def _size(value: Any) -> int:
    """How many numbers a compared answer holds."""
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    return 1


# -- EXPLAIN of a slow summary's statement ---------------------------------------------------


async def explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> dict[str, str]:
    """The executed plan (ANALYZE, BUFFERS, text), custom and generic (the one
    the server's prepared statement may switch to after five calls: PREPARE +
    EXPLAIN EXECUTE under force_generic_plan, the values as typed literals)."""
    out = {}
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    out["custom"] = "\n".join(r[0] for r in rows)
    params = (await conn.prepare(sql)).get_parameters()
    types = [await conn.fetchval("SELECT format_type($1::oid, NULL)", p.oid) for p in params]
    literals = [
        await conn.fetchval(f"SELECT quote_nullable(CAST($1::{t} AS text)) || '::{t}'", v)
        for v, t in zip(args, types, strict=True)
    ]
    await conn.execute(f"PREPARE _bench_generic ({', '.join(types)}) AS {sql}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        rows = await conn.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE _bench_generic ({', '.join(literals)})"
        )
        out["generic"] = "\n".join(r[0] for r in rows)
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE _bench_generic")
    return out


async def explain_cases(dsn: str, cases: list[Case]) -> dict[str, list[dict[str, str]]]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET jit = off")
        return {c.label: [await explain(conn, sql, args) for sql, args in c.raw] for c in cases}
    finally:
        await conn.close()


# -- the write cost -------------------------------------------------------------------------

Slot = tuple[str, datetime]  # provider, start


@dataclasses.dataclass(frozen=True)
class WritePlan:
    org: str
    service_id: str
    clients: list[str]
    slots: list[Slot]


@dataclasses.dataclass
class WriteRound:
    maintained: bool
    seconds: float
    calls: int
    bookings: int
    completed: int
    errors: dict[str, int]
    rollup_delta: int
    slots_left: bool
    # CPU seconds of the round: the callers, the server (this process), PostgreSQL.
    cpu: dict[str, float]


async def _writes(
    target: str, plan: WritePlan, slots: list[Slot], callers: int, seconds: float, share: float
) -> dict[str, Any]:
    """--callers callers booking ``slots`` in turn for ``seconds``: CreateAppointment
    (CONFIRMED), then for ``share`` of them CompleteAppointment and RecordPayment."""
    import grpc
    from booking.v1 import (
        appointments_pb2,
        appointments_pb2_grpc,
        common_pb2,
        payments_pb2,
        payments_pb2_grpc,
        resources_pb2,
    )

    rng = random.Random(len(slots))
    counts: collections.Counter[str] = collections.Counter()
    queue = iter(slots)
    async with contextlib.AsyncExitStack() as stack:
        stubs = []
        for _ in range(max(1, callers // CALLERS_PER_CHANNEL)):
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            )
            stubs.append(
                (
                    appointments_pb2_grpc.AppointmentServiceStub(channel),
                    payments_pb2_grpc.PaymentServiceStub(channel),
                )
            )
        end = time.perf_counter() + seconds

        async def caller(n: int) -> None:
            appointments, payments = stubs[n % len(stubs)]
            while time.perf_counter() < end:
                slot = next(queue, None)
                if slot is None:
                    counts["slots exhausted"] = 1
                    return
                request = appointments_pb2.CreateAppointmentRequest(
                    organization_id=plan.org,
                    appointment=resources_pb2.Appointment(
                        provider_id=slot[0],
                        client_id=rng.choice(plan.clients),
                        service_id=plan.service_id,
                        status=resources_pb2.APPOINTMENT_STATUS_CONFIRMED,
                        notes=WRITE_NOTE,
                    ),
                )
                request.appointment.start_time.FromDatetime(slot[1])
                try:
                    counts["calls"] += 1
                    created = (
                        await appointments.CreateAppointment(request, timeout=30)
                    ).appointment
                    counts["bookings"] += 1
                    if rng.random() >= share:
                        continue
                    counts["calls"] += 1
                    await appointments.CompleteAppointment(
                        appointments_pb2.CompleteAppointmentRequest(
                            organization_id=plan.org, appointment_id=created.id
                        ),
                        timeout=30,
                    )
                    counts["calls"] += 1
                    await payments.RecordPayment(
                        payments_pb2.RecordPaymentRequest(
                            organization_id=plan.org,
                            payment=resources_pb2.Payment(
                                client_id=created.client_id,
                                appointment_id=created.id,
                                amount=common_pb2.Money(
                                    currency_code=created.price.currency_code,
                                    amount_minor=created.price.amount_minor,
                                ),
                                status=resources_pb2.PAYMENT_STATUS_COMPLETED,
                                method=resources_pb2.PAYMENT_METHOD_CARD,
                            ),
                        ),
                        timeout=30,
                    )
                    counts["completed"] += 1
                except grpc.aio.AioRpcError as error:
                    counts[error.code().name] += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(n) for n in range(callers)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"counts": dict(counts), "seconds": elapsed, "cpu": cpu}


def _writes_worker(job: tuple[Any, ...]) -> dict[str, Any]:
    return asyncio.run(_writes(*job))


async def _write_plan(target: str, dsn: str, org: str, today: date) -> WritePlan:
    """Free slots of the tenant's shared service (GetAvailability) beyond the
    dataset's bookings, non-overlapping per provider (buffers included),
    shuffled (bookings spread over providers and dates)."""
    import grpc
    from booking.v1 import availability_pb2, availability_pb2_grpc

    from bench.generate import FUTURE_DAYS

    conn = await asyncpg.connect(dsn)
    try:
        providers = [
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM providers WHERE organization_id = $1 ORDER BY id", org
            )
        ]
        svc = await conn.fetchrow(
            "SELECT s.id::text AS id, s.buffer_before_minutes AS before, "
            "s.buffer_after_minutes AS after FROM services s WHERE s.organization_id = $1 "
            "AND (SELECT count(*) FROM offerings o WHERE o.organization_id = $1 "
            "     AND o.service_id = s.id) = $2 ORDER BY s.id LIMIT 1",
            org,
            len(providers),
        )
        clients = [
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM clients WHERE organization_id = $1 ORDER BY id LIMIT 2000", org
            )
        ]
    finally:
        await conn.close()
    before = timedelta(minutes=svc["before"])
    after = timedelta(minutes=svc["after"])
    first = datetime.combine(today + timedelta(days=FUTURE_DAYS + 2), datetime.min.time(), UTC)
    slots: list[Slot] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        for weeks in range(0, 12, 4):
            window = (first + timedelta(weeks=weeks), first + timedelta(weeks=weeks + 4))
            for i in range(0, len(providers), 10):
                request = availability_pb2.GetAvailabilityRequest(
                    organization_id=org, provider_ids=providers[i : i + 10], service_id=svc["id"]
                )
                request.start_time.FromDatetime(window[0])
                request.end_time.FromDatetime(window[1])
                got = await stub.GetAvailability(request, timeout=60)
                for p in got.providers:
                    last_end = window[0] - timedelta(days=1)
                    for s in p.slots:
                        start = s.start_time.ToDatetime(tzinfo=UTC)
                        end = s.end_time.ToDatetime(tzinfo=UTC)
                        if start - before >= last_end:
                            slots.append((p.provider_id, start))
                            last_end = end + after
    random.Random(3).shuffle(slots)
    return WritePlan(org, svc["id"], clients, slots)


ROLLUP_BOOKED_SQL = """
SELECT coalesce(sum(confirmed + completed), 0)::bigint FROM organization_day_totals
WHERE organization_id = $1
"""


@contextlib.contextmanager
def rollups_maintained(on: bool) -> Iterator[None]:
    """Bench only: ``server.queries.rollups.apply`` replaced by a no-op
    coroutine in this process while ``on`` is False."""
    from server.queries import rollups

    real = rollups.apply

    async def no_apply(conn: Conn, org_id: str, facts: Sequence[rollups.Fact]) -> None:
        return None

    if not on:
        rollups.apply = no_apply
    try:
        yield
    finally:
        rollups.apply = real


async def write_cost(url: str, args: argparse.Namespace) -> tuple[list[WriteRound], str]:
    """The write rounds (ABBA: maintained, not, not, maintained, ...) on a
    scratch database beside ``url``, dropped afterwards; and a line on the
    scratch tenant."""
    from bench.booking import cpu_seconds, postmaster_pid
    from bench.generate import generate_booking
    from server.config import load_settings
    from server.db.migrate import upgrade
    from server.queries.rollup_check import check_tenant
    from server.testing import create_database, drop_database, running_server

    name = f"bench_summaries_writes_{os.getpid()}"
    scratch = await create_database(url, name)
    try:
        await upgrade(scratch, ROOT / "alembic")
        data = await generate_booking(
            scratch, args.write_providers, WRITE_APPOINTMENTS, WRITE_CLIENTS, slug=WRITE_SLUG
        )
        dsn = to_asyncpg_dsn(scratch)
        conn = await asyncpg.connect(dsn)
        try:
            t = time.perf_counter()
            await check_tenant(Conn(conn, None), data.org, repair=True)
            built = time.perf_counter() - t
            await conn.execute(f"ANALYZE {', '.join(ROLLUP_TABLES)}")
        finally:
            await conn.close()
        about = (
            f"scratch database `{name}` on the same PostgreSQL: a tenant of {args.write_providers} "
            f"providers, {WRITE_APPOINTMENTS:,} appointments, {WRITE_CLIENTS:,} clients "
            f"(bench.generate.generate_booking), rollups built in {built:.1f}s"
        )
        settings = load_settings(
            {"BOOKING_ENV": "dev", "BOOKING_LOG_LEVEL": "WARNING"},
            port=0,
            migrate_on_start=False,
        )
        rounds: list[WriteRound] = []
        async with running_server(scratch, settings) as server:
            plan = await _write_plan(server.target, dsn, data.org, data.generated_at.date())
            each = len(plan.slots) // (args.write_rounds + 1)
            about += f"; {len(plan.slots):,} free slots, {each:,} a round"
            print(about, flush=True)
            conn = await asyncpg.connect(dsn)
            postmaster = await postmaster_pid(dsn)
            ctx = multiprocessing.get_context("spawn")
            try:
                with ctx.Pool(1) as pool:
                    # A warm-up round (the server's and PostgreSQL's caches), not counted.
                    warm = (server.target, plan, plan.slots[-each:], args.callers)
                    await asyncio.to_thread(
                        pool.apply,
                        _writes_worker,
                        ((*warm, min(2.0, args.write_seconds), args.complete_share),),
                    )
                    for i in range(args.write_rounds):
                        on = i % 4 in (0, 3)
                        slots = plan.slots[i * each : (i + 1) * each]
                        job: tuple[Any, ...] = (server.target, plan, slots, args.callers)
                        job += (args.write_seconds, args.complete_share)
                        before = await conn.fetchval(ROLLUP_BOOKED_SQL, data.org)
                        cpu = cpu_seconds(None, postmaster), time.process_time()
                        with rollups_maintained(on):
                            got = await asyncio.to_thread(pool.apply, _writes_worker, (job,))
                        cpu_after = cpu_seconds(None, postmaster), time.process_time()
                        after = await conn.fetchval(ROLLUP_BOOKED_SQL, data.org)
                        counts = dict(got["counts"])
                        r = WriteRound(
                            maintained=on,
                            seconds=got["seconds"],
                            calls=counts.pop("calls", 0),
                            bookings=counts.pop("bookings", 0),
                            completed=counts.pop("completed", 0),
                            errors=counts,
                            rollup_delta=int(after - before),
                            slots_left="slots exhausted" not in counts,
                            cpu={
                                "callers": got["cpu"],
                                "server": cpu_after[1] - cpu[1],
                                "postgres": cpu_after[0].get("postgres", 0.0)
                                - cpu[0].get("postgres", 0.0),
                            },
                        )
                        rounds.append(r)
                        print(
                            f"writes round {i + 1} ({'rollups' if on else 'no-op apply'}): "
                            f"{r.calls / r.seconds:,.0f} calls/s, {r.bookings / r.seconds:,.0f} "
                            f"bookings/s, rollup booked +{r.rollup_delta}, errors {r.errors}",
                            flush=True,
                        )
                        expected = r.bookings if on else 0
                        assert r.rollup_delta == expected, (
                            f"round {i + 1}: the rollups moved by {r.rollup_delta}, "
                            f"{expected} expected"
                        )
            finally:
                await conn.close()
    finally:
        await drop_database(url, name)
    return rounds, about


def _rate(rounds: list[WriteRound], what: str) -> float:
    return sum(getattr(r, what) for r in rounds) / sum(r.seconds for r in rounds)


# -- report -----------------------------------------------------------------------------------


def _machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}"


def _fmt(ms: float) -> str:
    return f"{ms:,.2f}" if ms < 100 else f"{ms:,.0f}"


def _ratio(x: float) -> str:
    return f"{x:,.1f}x" if x < 100 else f"{x:,.0f}x"


def report(
    args: argparse.Namespace,
    command: str,
    started: datetime,
    t: Targets,
    cases: list[Case],
    results: dict[str, dict[str, float]],
    exact: list[str],
    dataset: str,
    version: str,
    load: tuple[str, str],
    writes: tuple[list[WriteRound], str] | None,
    plans: dict[str, list[dict[str, str]]],
) -> str:
    floor = results["ours gRPC floor (health Check, no SQL)"]["p50"]
    current, previous, previous_end = _dashboard_periods(t)
    lines = [
        "# bench: summaries (SummaryService over the rollups) and the rollups' write cost",
        "",
        f"`{command}`",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC to {datetime.now(UTC):%H:%M} UTC on {_machine()}, "
        f"shared by the callers, the server and PostgreSQL {version} "
        f"({'--database-url' if args.database_url else 'embedded'}); load average {load[0]} "
        f"at the start, {load[1]} at the end. Reads: 1 call in flight; the "
        f"{len(results)} scenarios take turns in {args.rounds} rounds of "
        f"{args.seconds / args.rounds:g} s each (a seeds call longer than that is one call "
        "a round).",
        "",
        dataset,
        "",
        f"Today = {t.today} (the dataset's generation date, organization zone); MONTH "
        f"dashboard: {current} to {t.today} against {previous} to {previous_end}. Provider "
        f"{t.provider} ({t.zone}), month {t.month[0]} to {t.month[1]}; quarter "
        f"{t.quarter[0]} to {t.quarter[1]}; {len(t.providers)} providers (the first by id); "
        f"client {t.client} ({t.client_appointments} appointments); currency {t.currency}; "
        f"first day of the week {t.first_day_of_week}.",
        "",
        "ours = the RPC over gRPC (a `booking-data serve` process, Python client); raw = "
        "the statement our handler sent for the same request (recorded in-process, its "
        "answer checked equal to the gRPC answer), replayed on a held asyncpg connection; "
        "seeds = the seeds' way (GROUP BY / CTE over the raw appointments, payments and "
        "refunds through their indexes: 004's dashboard and revenue CTEs, 001's payment "
        "metrics) answering the same question (business dates in the provider's zone), "
        "raw asyncpg statements, no ORM. seeds / ours above 1x = ours is faster end to "
        f"end; seeds / raw compares SQL with SQL. gRPC floor (a health Check, no SQL): p50 "
        f"{floor:.2f} ms.",
        "",
        "## Reads",
        "",
        "| scenario | rows | ours p50 ms | ours p95 | raw p50 | seeds p50 ms | seeds p95 "
        "| seeds / ours (p50) | seeds / raw (p50) | statements ours / seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        o, w, s = (results[f"{k} {c.label}"] for k in ("ours", "raw", "seeds"))
        lines.append(
            f"| {c.label} | {c.rows} | {_fmt(o['p50'])} | {_fmt(o['p95'])} | {_fmt(w['p50'])} "
            f"| {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_ratio(s['p50'] / o['p50'])} "
            f"| {_ratio(s['p50'] / w['p50'])} | {len(c.raw)} / {len(c.seeds)} |"
        )
    lines += [
        "",
        "p50 / p95 / p99 of each way (ms), and the ratios of the p50s:",
        "",
        "| case | ours | raw | seeds | ours / raw | seeds / ours | seeds / raw |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(_row(c.label, results) for c in cases),
        "",
        "Ours against the seeds' way, figure by figure (every count and amount of the "
        "answer; the seeds do not compute working time, so ProviderMetrics' "
        "available_minutes and utilization are not compared):",
        "",
        *exact,
        "",
    ]
    rounds_text: list[str] = []
    cost: float | None = None
    cpu_cost = 0.0
    if writes is not None:
        rounds, about = writes
        on = [r for r in rounds if r.maintained]
        off = [r for r in rounds if not r.maintained]
        cost = 1 - _rate(on, "calls") / _rate(off, "calls")
        booking_cost = 1 - _rate(on, "bookings") / _rate(off, "bookings")
        cpu_on, cpu_off = (
            sum(sum(r.cpu.values()) for r in group) / sum(r.calls for r in group)
            for group in (on, off)
        )
        cpu_cost = 1 - cpu_off / cpu_on
        errors: collections.Counter[str] = collections.Counter()
        for r in rounds:
            errors.update(r.errors)
        rounds_text = [
            "## Write cost of the rollups",
            "",
            f"{about}. A server in this process (server.testing.running_server, dev pool), "
            f"{args.callers} callers in another process, each in a loop: CreateAppointment "
            f"(CONFIRMED) of a free slot (shuffled over providers and dates), then for "
            f"{args.complete_share:.0%} of them CompleteAppointment and RecordPayment "
            f"(COMPLETED, the price). {len(rounds)} rounds of {args.write_seconds:g} s, "
            "ABBA: with the rollups maintained, and with `server.queries.rollups.apply` "
            "replaced by a no-op coroutine (**a bench-only monkeypatch** of the in-process "
            "server; the writes are otherwise the same statements). Checked: the rollups' "
            "booked count moved by the bookings in every maintained round and not at all "
            "in the others. The scratch database is dropped afterwards.",
            "",
            "| way | rounds | seconds | calls | calls/s | bookings/s | completed + paid/s "
            "| CPU ms a call: callers / server / PostgreSQL |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, group in (("rollups maintained", on), ("apply() a no-op", off)):
            calls = sum(r.calls for r in group)
            cpu = " / ".join(
                f"{sum(r.cpu[k] for r in group) / calls * 1000:.2f}"
                for k in ("callers", "server", "postgres")
            )
            rounds_text.append(
                f"| {label} | {len(group)} | {sum(r.seconds for r in group):.1f} | "
                f"{calls:,} | {_rate(group, 'calls'):,.0f} | "
                f"{_rate(group, 'bookings'):,.0f} | {_rate(group, 'completed'):,.0f} | {cpu} |"
            )
        rounds_text += [
            "",
            f"Cost of the rollups: {cost:.1%} of the write calls/s ({booking_cost:.1%} of "
            f"the bookings/s). CPU a write call, callers, server and PostgreSQL together: "
            f"{cpu_on * 1000:.2f} ms with the rollups, {cpu_off * 1000:.2f} ms without "
            f"(+{cpu_on / cpu_off - 1:.0%}): on a machine whose cores all of them share, "
            f"the throughput the rollups leave is at most {1 - cpu_cost:.0%} "
            f"(a cost of {cpu_cost:.0%}); the calls/s measure it under "
            "whatever else runs. Per round (calls/s): "
            + ", ".join(
                f"{'R' if r.maintained else 'N'} {r.calls / r.seconds:,.0f}" for r in rounds
            )
            + (f". Errors: {dict(errors)}" if errors else ". No errors.")
            + ("" if all(r.slots_left for r in rounds) else " Some rounds ran out of slots."),
            "",
        ]
    lines += rounds_text
    lines += ["## Targets", ""]
    for c in cases:
        ours, seeds = results[f"ours {c.label}"]["p50"], results[f"seeds {c.label}"]["p50"]
        lines.append(
            f"- {c.label}: p50 {ours:.2f} ms < {TARGET_P50_MS:g} ms: "
            f"{_met(ours < TARGET_P50_MS)}; seeds / ours {_ratio(seeds / ours)} >= "
            f"{TARGET_SEEDS_RATIO:g}x: {_met(seeds / ours >= TARGET_SEEDS_RATIO)}"
        )
    if cost is not None:
        lines.append(
            f"- rollup maintenance {cost:.1%} of the booking throughput < "
            f"{TARGET_WRITE_COST:.0%}: {_met(cost < TARGET_WRITE_COST)} (by CPU a call: "
            f"{cpu_cost:.0%}, {_met(cpu_cost < TARGET_WRITE_COST)})"
        )
    if plans:
        lines += ["", "## Plans", ""]
        for label, statements in plans.items():
            lines.append(f"### {label}")
            for i, plan in enumerate(statements):
                for kind, text in plan.items():
                    last = text.rsplit("\n", 1)[-1]
                    lines += [
                        "",
                        f"<details><summary>statement {i + 1}, {kind} plan ({last})</summary>",
                        "",
                        "```",
                        text,
                        "```",
                        "",
                        "</details>",
                    ]
            lines.append("")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


async def prepare(dsn: str, data: ListsDataset) -> tuple[Targets, list[Case], dict[str, Answers]]:
    conn = await asyncpg.connect(dsn)
    try:
        t = await _targets(conn, data)
        cases, answers = await build_cases(conn, Recorder(conn), t)
        return t, cases, answers
    finally:
        await conn.close()


async def rollup_facts(dsn: str, data: ListsDataset) -> str:
    """The rollup tables' rows (the big tenant's and all)."""
    conn = await asyncpg.connect(dsn)
    try:
        counts = {
            table: await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE organization_id = $1", data.org
            )
            for table in ROLLUP_TABLES
        }
    finally:
        await conn.close()
    built = (
        f"built from nothing in this run in {data.rollups_backfill_s:.0f}s "
        "(check_tenant with repair: the backfill)"
        if data.rollups_backfill_s is not None
        else "built by an earlier run (its time is in that run's output)"
    )
    return (
        f"{data.refunds:,} refunds. The tenant's rollups ({built}): "
        + ", ".join(f"{table} {n:,}" for table, n in counts.items())
        + " rows."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--seconds", type=float, default=3.0, help="per read scenario, all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-seconds", type=float, help="per write round (default 5, quick 2)")
    parser.add_argument("--write-rounds", type=int, help="ABBA rounds (default 8, quick 4)")
    parser.add_argument("--callers", type=int, default=32, help="concurrent write callers")
    parser.add_argument(
        "--write-providers",
        type=int,
        default=WRITE_PROVIDERS,
        help=f"providers of the write scratch tenant (default {WRITE_PROVIDERS})",
    )
    parser.add_argument("--complete-share", type=float, default=0.5)
    parser.add_argument("--no-writes", action="store_true", help="skip the write cost")
    parser.add_argument("--explain", action="store_true", help="every summary's plans")
    args = parser.parse_args()
    sizes = dataset_options(args)
    args.write_seconds = args.write_seconds or (2.0 if args.quick else 5.0)
    args.write_rounds = args.write_rounds or (4 if args.quick else 8)
    command = (
        f"python -m bench.summaries {sizes} --seconds {args.seconds:g} --rounds {args.rounds} "
        + (
            "--no-writes"
            if args.no_writes
            else f"--write-seconds {args.write_seconds:g} --write-rounds {args.write_rounds} "
            f"--callers {args.callers} --complete-share {args.complete_share:g}"
        )
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    started, load_start = datetime.now(UTC), _load_average()
    with lists_database(args) as (url, data):
        dsn = to_asyncpg_dsn(url)
        dataset, version = asyncio.run(dataset_facts(dsn, data))
        dataset += " " + asyncio.run(rollup_facts(dsn, data))
        print(dataset, flush=True)
        t, cases, answers = asyncio.run(prepare(dsn, data))
        exact = exactness(cases, answers)
        print("\n".join(exact), flush=True)
        for c in cases:
            print(f"{c.label}: {c.rows} items, {len(c.raw)} statement(s) ours", flush=True)
        with server_process(url, 1) as target:
            asyncio.run(check_over_grpc(target, cases))
            results = measure_latency(scenarios_of(target, dsn, cases), args.seconds, args.rounds)
        slow = [
            c for c in cases if args.explain or results[f"ours {c.label}"]["p50"] >= TARGET_P50_MS
        ]
        plans = asyncio.run(explain_cases(dsn, slow)) if slow else {}
        writes = None if args.no_writes else asyncio.run(write_cost(url, args))
    text = report(
        args,
        command,
        started,
        t,
        cases,
        results,
        exact,
        dataset,
        version,
        (load_start, _load_average()),
        writes,
        plans,
    )
    REPORT.write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
