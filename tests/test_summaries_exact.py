"""Every summary is exact: after seeded random walks of every write through
the real RPCs (tests/test_rollups_exact.py's Walk: four zones, EUR and USD
services, GBP payments without appointment, reschedules across midnights and
providers, payments, refunds, refused writes and retries), every figure of
every summary RPC equals the same figure computed here from scratch by plain
GROUP BY statements over the raw appointments, payments, refunds, providers
and clients (never the rollup tables, never server code).

Compared: GetRevenueSummary (organization, two providers, one service; DAY,
WEEK from SUNDAY, MONTH; every bucket, its dates, every figure, the
currencies), GetProviderMetrics of every provider (all but
available_minutes/utilization: working time is not in the raw bookings),
GetClientBalance of every client, ListClientBalances of every currency (all
pages, "balance desc": ties by client id, descending as the paging
contract's keyset has it), GetDashboard of three dates by DAY, WEEK and MONTH
(today, current and previous periods, top providers, ranking currency).
The comparison can fail: a corrupted rollup row is reported.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    organizations_pb2,
    resources_pb2,
    summaries_pb2,
    summaries_pb2_grpc,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.type import dayofweek_pb2

from server.db.engine import to_asyncpg_dsn
from tests.conftest import Stubs, new_org
from tests.test_rollups_exact import (
    ZONES,
    PStatus,
    Walk,
    World,
    book,
    change_status,
    make_world,
    payment_request,
)
from tests.test_summaries import Summaries, as_date, pb_date

pb = summaries_pb2
DAY, WEEK, MONTH = pb.GRANULARITY_DAY, pb.GRANULARITY_WEEK, pb.GRANULARITY_MONTH
SEEDS = (11, 42, 20261126)
STEPS = 300
# The range of the revenue summaries and metrics: the walk writes from two
# local days back to two ahead (and pays now); ten days either side.
AROUND = 10

# -- the oracle: plain GROUP BYs over the raw rows -----------------------------------------

# Every fact with its business date: appointments by the start in their
# provider's zone; payments (with an appointment) by their creation in that
# appointment's provider's zone; refunds by their own creation, located
# through their payment's appointment.
FACTS = """
WITH appt AS (
    SELECT a.id, a.provider_id, a.service_id, a.client_id, a.status, a.price_minor,
           a.currency, a.start_at, a.end_at, pr.time_zone,
           (a.start_at AT TIME ZONE pr.time_zone)::date AS day
    FROM appointments a
    JOIN providers pr ON pr.organization_id = a.organization_id AND pr.id = a.provider_id
    WHERE a.organization_id = $1
), facts AS (
    SELECT 'a' AS kind, provider_id, service_id, client_id, day, currency, status,
           price_minor AS amount,
           floor(extract(epoch FROM end_at - start_at) / 60)::bigint AS minutes
    FROM appt
    UNION ALL
    SELECT 'p', appt.provider_id, appt.service_id, p.client_id,
           (p.created_at AT TIME ZONE appt.time_zone)::date, p.currency, p.status,
           p.amount_minor, 0
    FROM payments p JOIN appt ON appt.id = p.appointment_id
    WHERE p.organization_id = $1
    UNION ALL
    SELECT 'r', appt.provider_id, appt.service_id, p.client_id,
           (r.created_at AT TIME ZONE appt.time_zone)::date, r.currency, 'refund',
           r.amount_minor, 0
    FROM refunds r
    JOIN payments p ON p.organization_id = r.organization_id AND p.id = r.payment_id
    JOIN appt ON appt.id = p.appointment_id
    WHERE r.organization_id = $1
)
"""

BOOKED = "('pending', 'confirmed', 'completed')"
PAID = "('completed', 'refunded')"

SUMS = f"""
    count(*) FILTER (WHERE kind = 'a' AND status = 'pending') AS pending,
    count(*) FILTER (WHERE kind = 'a' AND status = 'confirmed') AS confirmed,
    count(*) FILTER (WHERE kind = 'a' AND status = 'completed') AS completed,
    count(*) FILTER (WHERE kind = 'a' AND status = 'cancelled') AS cancelled,
    count(*) FILTER (WHERE kind = 'a' AND status = 'no_show') AS no_show,
    coalesce(sum(amount) FILTER (WHERE kind = 'a' AND status IN {BOOKED}), 0)::bigint AS expected,
    coalesce(sum(amount) FILTER (WHERE kind = 'a' AND status = 'completed'), 0)::bigint
        AS completed_minor,
    coalesce(sum(amount) FILTER (WHERE kind = 'p' AND status IN {PAID}), 0)::bigint AS paid,
    count(*) FILTER (WHERE kind = 'p' AND status IN {PAID}) AS payments,
    coalesce(sum(amount) FILTER (WHERE kind = 'r'), 0)::bigint AS refunded,
    count(*) FILTER (WHERE kind = 'r') AS refunds,
    coalesce(sum(minutes) FILTER (WHERE kind = 'a' AND status IN {BOOKED}), 0)::bigint AS minutes
"""


def week_start(column: str, first_iso_day: int) -> str:
    return f"({column} - ((extract(isodow FROM {column})::int - {first_iso_day} + 7) % 7))"


def bucket_sql(granularity: int, column: str, first_iso_day: int) -> str:
    if granularity == DAY:
        return column
    if granularity == WEEK:
        return week_start(column, first_iso_day)
    return f"date_trunc('month', {column})::date"


FILTERS = {
    "org": "$4::uuid[] = '{}'",  # no ids: the whole organization
    "providers": "provider_id = ANY($4::uuid[])",
    "services": "service_id = ANY($4::uuid[])",
}


def counts_of(row: Any) -> pb.AppointmentCounts:
    statuses = ("pending", "confirmed", "completed", "cancelled", "no_show")
    by = {s: int(row[s]) for s in statuses}
    return pb.AppointmentCounts(
        **by,
        total=sum(by.values()),
        booked=by["pending"] + by["confirmed"] + by["completed"],
    )


def figures_of(row: Any) -> pb.RevenueFigures:
    return pb.RevenueFigures(
        expected_minor=row["expected"],
        completed_minor=row["completed_minor"],
        paid_minor=row["paid"],
        refunded_minor=row["refunded"],
        net_paid_minor=row["paid"] - row["refunded"],
        appointments=counts_of(row),
        payments=row["payments"],
        refunds=row["refunds"],
    )


@dataclass
class Oracle:
    db: asyncpg.Connection
    world: World

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.db.fetch(FACTS + sql, self.world.org, *args))

    async def revenue(
        self, where: str, ids: list[str], first: date, last: date, granularity: int, first_iso: int
    ) -> list[pb.CurrencyRevenue]:
        bucket = bucket_sql(granularity, "day", first_iso)
        filtered = f"FROM facts WHERE day BETWEEN $2 AND $3 AND {FILTERS[where]}"
        grouped = await self.rows(
            f"SELECT {bucket} AS bucket, currency, {SUMS} {filtered} GROUP BY 1, 2",
            first, last, ids,
        )  # fmt: skip
        totals = await self.rows(
            f"SELECT currency, {SUMS} {filtered} GROUP BY currency ORDER BY currency",
            first, last, ids,
        )  # fmt: skip
        spans = await self.db.fetch(
            f"SELECT {bucket_sql(granularity, 'd::date', first_iso)} AS bucket, "
            "min(d)::date AS first, max(d)::date AS last "
            "FROM generate_series($1::date, $2::date, interval '1 day') d GROUP BY 1 ORDER BY 1",
            first,
            last,
        )
        by_key = {(r["bucket"], r["currency"]): r for r in grouped}
        out = []
        for total in totals:
            series = pb.CurrencyRevenue(currency_code=total["currency"], totals=figures_of(total))
            for span in spans:
                row = by_key.get((span["bucket"], total["currency"]))
                series.buckets.append(
                    pb.RevenueBucket(
                        start_date=pb_date(span["first"]),
                        end_date=pb_date(span["last"]),
                        figures=figures_of(row) if row else zero_figures(),
                    )
                )
            out.append(series)
        return out

    async def provider_metrics(self, first: date, last: date) -> list[pb.ProviderMetrics]:
        providers = sorted(self.world.providers)
        overall = {
            str(r["provider_id"]): r
            for r in await self.rows(
                f"SELECT provider_id, {SUMS} FROM facts WHERE day BETWEEN $2 AND $3 "
                "GROUP BY provider_id",
                first,
                last,
            )
        }
        revenue: dict[str, list[pb.ProviderRevenue]] = {p: [] for p in providers}
        for r in await self.rows(
            f"SELECT provider_id, currency, {SUMS}, "
            "coalesce(round(sum(amount) FILTER (WHERE kind = 'a' AND status = 'completed')"
            "::numeric / nullif(count(*) FILTER (WHERE kind = 'a' AND status = 'completed'), 0)"
            "), 0)::bigint AS average "
            "FROM facts WHERE day BETWEEN $2 AND $3 GROUP BY provider_id, currency "
            "ORDER BY provider_id, currency",
            first, last,
        ):  # fmt: skip
            revenue[str(r["provider_id"])].append(
                pb.ProviderRevenue(
                    currency_code=r["currency"],
                    figures=figures_of(r),
                    average_ticket_minor=r["average"],
                )
            )
        # A visit is a COMPLETED appointment; new = the first visit with the
        # provider (ever) is in the range.
        clients = {
            str(r["provider_id"]): r
            for r in await self.rows(
                """, visit AS (
                    SELECT provider_id, client_id, day,
                           min(start_at) OVER (PARTITION BY provider_id, client_id) AS first_at,
                           start_at
                    FROM appt WHERE status = 'completed'
                ), per_client AS (
                    SELECT provider_id, client_id,
                           bool_or(day BETWEEN $2 AND $3) AS visited,
                           bool_or(start_at = first_at AND day BETWEEN $2 AND $3) AS first_in
                    FROM visit GROUP BY provider_id, client_id
                )
                SELECT provider_id, count(*) FILTER (WHERE visited) AS unique_clients,
                       count(*) FILTER (WHERE first_in) AS new_clients
                FROM per_client GROUP BY provider_id""",
                first,
                last,
            )
        }
        out = []
        for p in self.world.providers:
            row = overall.get(p)
            c = counts_of(row) if row else pb.AppointmentCounts()
            unique = clients[p]["unique_clients"] if p in clients else 0
            new = clients[p]["new_clients"] if p in clients else 0
            out.append(
                pb.ProviderMetrics(
                    provider_id=p,
                    appointments=c,
                    no_show_rate=c.no_show / (c.completed + c.no_show)
                    if c.completed + c.no_show
                    else 0.0,
                    cancellation_rate=c.cancelled / c.total if c.total else 0.0,
                    booked_minutes=row["minutes"] if row else 0,
                    revenue=revenue[p],
                    unique_clients=unique,
                    new_clients=new,
                    returning_clients=unique - new,
                )
            )
        return out

    async def balances(self) -> dict[str, pb.GetClientBalanceResponse]:
        rows = await self.db.fetch(
            f"""
            WITH money AS (
                SELECT client_id, currency, price_minor AS charged, 1 AS charges,
                       0::bigint AS paid, 0 AS payments, 0::bigint AS refunded, 0 AS refunds
                FROM appointments WHERE organization_id = $1 AND status = 'completed'
                UNION ALL
                SELECT client_id, currency, 0, 0, amount_minor, 1, 0, 0
                FROM payments WHERE organization_id = $1 AND status IN {PAID}
                UNION ALL
                SELECT p.client_id, r.currency, 0, 0, 0, 0, r.amount_minor, 1
                FROM refunds r
                JOIN payments p ON p.organization_id = r.organization_id AND p.id = r.payment_id
                WHERE r.organization_id = $1
            )
            SELECT client_id, currency, sum(charged)::bigint AS charged, sum(paid)::bigint AS paid,
                   sum(refunded)::bigint AS refunded, sum(payments)::bigint AS payments,
                   sum(refunds)::bigint AS refunds
            FROM money GROUP BY client_id, currency ORDER BY client_id, currency""",
            self.world.org,
        )
        visits = {
            str(r["client_id"]): r
            for r in await self.db.fetch(
                "SELECT client_id, count(*) AS visits, min(start_at) AS first, "
                "max(start_at) AS last FROM appointments "
                "WHERE organization_id = $1 AND status = 'completed' GROUP BY client_id",
                self.world.org,
            )
        }
        out = {c: pb.GetClientBalanceResponse(client_id=c) for c in self.world.clients}
        for r in rows:
            c = str(r["client_id"])
            out[c].balances.append(
                pb.ClientBalance(
                    client_id=c,
                    currency_code=r["currency"],
                    charged_minor=r["charged"],
                    paid_minor=r["paid"],
                    refunded_minor=r["refunded"],
                    balance_minor=r["charged"] - r["paid"] + r["refunded"],
                    lifetime_value_minor=r["paid"] - r["refunded"],
                    payments=r["payments"],
                    refunds=r["refunds"],
                )
            )
        for c, v in visits.items():
            out[c].visits = v["visits"]
            out[c].first_visit_time.CopyFrom(timestamp(v["first"]))
            out[c].last_visit_time.CopyFrom(timestamp(v["last"]))
        return out

    async def period(self, first: date, last: date) -> pb.DashboardPeriod:
        total = await self.rows(
            f"SELECT {SUMS} FROM facts WHERE day BETWEEN $2 AND $3", first, last
        )
        c = counts_of(total[0])
        # A client's first visit with the organization: the earliest start
        # (ties: the earlier business date).
        new = await self.db.fetchval(
            FACTS
            + """SELECT count(*) FROM (
                SELECT DISTINCT ON (client_id) client_id, day FROM appt
                WHERE status = 'completed' ORDER BY client_id, start_at, day
            ) f WHERE day BETWEEN $2 AND $3""",
            self.world.org,
            first,
            last,
        )
        revenue = await self.rows(
            f"SELECT currency, {SUMS} FROM facts WHERE day BETWEEN $2 AND $3 "
            "GROUP BY currency ORDER BY currency",
            first, last,
        )  # fmt: skip
        return pb.DashboardPeriod(
            start_date=pb_date(first),
            end_date=pb_date(last),
            appointments=c,
            bookings=c.total - c.cancelled,
            new_clients=new,
            revenue=[
                pb.CurrencyFigures(currency_code=r["currency"], figures=figures_of(r))
                for r in revenue
            ],
        )

    async def dashboard(
        self, on: date, period: int, currency: str, first_iso: int, answered: str
    ) -> pb.GetDashboardResponse:
        start, previous, previous_end = period_bounds(on, period, first_iso)
        today = await self.rows(f"SELECT {SUMS} FROM facts WHERE day = $2", on)
        ranked = await self.rows(
            """SELECT currency, provider_id, pr.display_name,
                   sum(amount)::bigint AS completed_minor, count(*) AS completed
            FROM facts JOIN providers pr ON pr.organization_id = $1 AND pr.id = provider_id
            WHERE kind = 'a' AND status = 'completed' AND day BETWEEN $2 AND $3
            GROUP BY currency, provider_id, pr.display_name
            ORDER BY currency, completed_minor DESC, provider_id""",
            start, on,
        )  # fmt: skip
        if not currency:
            # The currency with the most completed revenue in the period; the
            # proto names no rule for a tie: any of the tied ones (``answered``).
            by_currency: dict[str, int] = {}
            for r in ranked:
                by_currency[r["currency"]] = (
                    by_currency.get(r["currency"], 0) + r["completed_minor"]
                )
            most = max(by_currency.values(), default=0)
            tied = sorted(k for k, v in by_currency.items() if v == most)
            currency = answered if answered in tied else (tied[0] if tied else "")
        top = [r for r in ranked if r["currency"] == currency and r["completed_minor"] > 0]
        return pb.GetDashboardResponse(
            date=pb_date(on),
            today=counts_of(today[0]),
            current=await self.period(start, on),
            previous=await self.period(previous, previous_end),
            top_providers=[
                pb.TopProvider(
                    provider_id=str(r["provider_id"]),
                    display_name=r["display_name"],
                    completed_minor=r["completed_minor"],
                    completed_appointments=r["completed"],
                )
                for r in top[:50]
            ],
            ranking_currency_code=currency,
            period=period,  # type: ignore[arg-type]
        )


def zero_figures() -> pb.RevenueFigures:
    return pb.RevenueFigures(appointments=pb.AppointmentCounts())


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def period_bounds(on: date, period: int, first_iso: int) -> tuple[date, date, date]:
    """The current period's start, and the previous one's start and end:
    like for like, the same number of days, cut to that period's end."""
    if period == DAY:
        return on, on - timedelta(days=1), on - timedelta(days=1)
    if period == WEEK:
        start = on - timedelta(days=(on.isoweekday() - first_iso) % 7)
        previous = start - timedelta(days=7)
        return start, previous, previous + (on - start)
    start = on.replace(day=1)
    previous = (start - timedelta(days=1)).replace(day=1)
    return start, previous, min(previous + (on - start), start - timedelta(days=1))


# -- the walk and the comparison ---------------------------------------------------------------


@dataclass
class Walked:
    world: World
    summaries: Summaries
    oracle: Oracle
    first: date
    last: date
    first_iso: int  # the organization's first day of the week, ISO (7 = Sunday)


async def walked_world(
    channel: grpc.aio.Channel, db: asyncpg.Connection, seed: int, steps: int, zones: tuple[str, ...]
) -> Walked:
    stubs = Stubs(channel)
    org = await new_org(stubs)
    await stubs.orgs.UpdateOrganization(
        organizations_pb2.UpdateOrganizationRequest(
            organization=resources_pb2.Organization(id=org, first_day_of_week=dayofweek_pb2.SUNDAY),
            update_mask=field_mask_pb2.FieldMask(paths=["first_day_of_week"]),
        )
    )
    world = await make_world(stubs, org, zones=zones, clients=6)
    walk = Walk(stubs, world, random.Random(seed), tag=f"summaries-{seed}")
    for _ in range(steps):
        await walk.step()
    for kind in ("create", "reschedule", "complete", "no_show", "cancel", "pay", "refund"):
        assert walk.counts[kind] > 0, (kind, walk.counts)
    # Earlier visits, a week and a month back (returning clients, previous
    # periods with figures, visits before the range), the older ones paid.
    p, s, c = world.providers, world.services, world.clients
    for days, provider, service, client in (
        (-7, p[0], s[0], c[0]),
        (-7, p[1], s[1], c[1]),
        (-31, p[0], s[0], c[2]),
        (-31, p[-1], s[1], c[0]),
    ):
        start = world.midnight(provider, days) + timedelta(hours=12)
        a = await book(stubs, world, provider, service, client, start)
        await change_status(stubs, world, "complete", a.id)
        if days == -31:
            await stubs.payments.RecordPayment(
                payment_request(world, client, 1500, world.currency[service], appointment_id=a.id)
            )
    # Without an appointment: client balances only (a pending one counts nothing).
    await stubs.payments.RecordPayment(payment_request(world, c[3], 700, "GBP"))
    await stubs.payments.RecordPayment(
        payment_request(world, c[4], 900, "CHF", status=PStatus.PAYMENT_STATUS_PENDING)
    )
    today = datetime.now(UTC).date()
    return Walked(
        world,
        summaries_stub(channel),
        Oracle(db, world),
        today - timedelta(days=AROUND),
        today + timedelta(days=AROUND),
        7,
    )


def summaries_stub(channel: grpc.aio.Channel) -> Summaries:
    return summaries_pb2_grpc.SummaryServiceStub(channel)


def differ(request: Message, expected: Message, actual: Message) -> list[str]:
    if expected == actual:
        return []
    return [f"{type(request).__name__}({request})\n  expected: {expected}\n  actual:   {actual}"]


async def revenue_differences(w: Walked) -> list[str]:
    p = w.world.providers
    cases: list[tuple[str, list[str], dict[str, Any]]] = [
        ("org", [], {}),
        ("providers", [p[0], p[-1]], {"provider_ids": [p[0], p[-1]]}),
        ("services", [w.world.services[0]], {"service_ids": [w.world.services[0]]}),
    ]
    out = []
    for where, ids, filters in cases:
        for granularity in (DAY, WEEK, MONTH):
            request = pb.GetRevenueSummaryRequest(
                organization_id=w.world.org,
                start_date=pb_date(w.first),
                end_date=pb_date(w.last),
                granularity=granularity,
                **filters,
            )
            answer = await w.summaries.GetRevenueSummary(request)
            expected = pb.GetRevenueSummaryResponse(
                currencies=await w.oracle.revenue(
                    where, ids, w.first, w.last, granularity, w.first_iso
                ),
                granularity=granularity,
                first_day_of_week=dayofweek_pb2.SUNDAY,
            )
            out += differ(request, expected, answer)
    return out


async def metrics_differences(w: Walked) -> list[str]:
    out = []
    returning = 0
    # The whole walk, and from two days back (earlier first visits: returning).
    for first in (w.first, datetime.now(UTC).date() - timedelta(days=2)):
        request = pb.GetProviderMetricsRequest(
            organization_id=w.world.org,
            provider_ids=w.world.providers,
            start_date=pb_date(first),
            end_date=pb_date(w.last),
        )
        answer = await w.summaries.GetProviderMetrics(request)
        actual = pb.GetProviderMetricsResponse()
        actual.CopyFrom(answer)
        for m in actual.providers:  # working time is not in the raw bookings
            m.ClearField("available_minutes")
            m.ClearField("utilization")
        expected = pb.GetProviderMetricsResponse(
            providers=await w.oracle.provider_metrics(first, w.last)
        )
        returning += sum(m.returning_clients for m in expected.providers)
        out += differ(request, expected, actual)
    if not returning:
        out.append("the walk made no returning client: the comparison proves little")
    return out


async def balance_differences(w: Walked) -> list[str]:
    expected = await w.oracle.balances()
    out = []
    for client in w.world.clients:
        request = pb.GetClientBalanceRequest(organization_id=w.world.org, client_id=client)
        out += differ(request, expected[client], await w.summaries.GetClientBalance(request))
    if not all(
        any(b.currency_code == code for r in expected.values() for b in r.balances)
        for code in ("EUR", "USD", "GBP")
    ):
        out.append("vacuous: a currency without balances")
    for currency in ("EUR", "USD", "GBP"):
        listed: list[pb.ClientBalance] = []
        listing = pb.ListClientBalancesRequest(
            organization_id=w.world.org,
            currency_code=currency,
            order_by="balance desc",
            page_size=2,
        )
        while True:
            page = await w.summaries.ListClientBalances(listing)
            listed += page.balances
            if not page.next_page_token:
                break
            listing.page_token = page.next_page_token
        # "balance desc": (balance, client id) descending, the tie-breaker
        # in the order's direction (tests/test_paging_contract.py's keyset).
        want = sorted(
            (b for r in expected.values() for b in r.balances if b.currency_code == currency),
            key=lambda b: (b.balance_minor, b.client_id),
            reverse=True,
        )
        first = pb.ListClientBalancesRequest(organization_id=w.world.org, currency_code=currency)
        out += differ(
            first,
            pb.ListClientBalancesResponse(balances=want),
            pb.ListClientBalancesResponse(balances=listed),
        )
    return out


async def dashboard_differences(w: Walked) -> list[str]:
    today = datetime.now(UTC).date()
    out = []
    # Periods whose previous period had appointments, and top providers seen.
    previous_seen: set[int] = set()
    ranked = 0
    for on in (today - timedelta(days=1), today, today + timedelta(days=1)):
        for period in (DAY, WEEK, MONTH):
            for currency in ("", "EUR", "USD"):
                request = pb.GetDashboardRequest(
                    organization_id=w.world.org,
                    date=pb_date(on),
                    period=period,
                    top_providers=50,
                    currency_code=currency,
                )
                answer = await w.summaries.GetDashboard(request)
                expected = await w.oracle.dashboard(
                    on, period, currency, w.first_iso, answer.ranking_currency_code
                )
                if expected.previous.appointments.total:
                    previous_seen.add(period)
                ranked += len(expected.top_providers)
                out += differ(request, expected, answer)
    if previous_seen != {DAY, WEEK, MONTH} or not ranked:
        out.append(f"vacuous: previous periods with figures {previous_seen}, {ranked} ranked")
    return out


CHECKS = {
    "revenue": revenue_differences,
    "metrics": metrics_differences,
    "balances": balance_differences,
    "dashboard": dashboard_differences,
}


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=SEEDS)
async def walked(
    request: pytest.FixtureRequest, channel: grpc.aio.Channel, database_url: str
) -> AsyncIterator[Walked]:
    db = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        yield await walked_world(channel, db, request.param, STEPS, ZONES)
    finally:
        await db.close()


@pytest.mark.parametrize("check", sorted(CHECKS))
async def test_every_summary_figure_equals_the_group_by_of_the_raw_rows(
    walked: Walked, check: str
) -> None:
    differences = await CHECKS[check](walked)
    assert not differences, "\n".join(differences)


async def test_the_comparison_reports_a_corrupted_rollup_row(
    channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    w = await walked_world(channel, db, 7, 60, ZONES[:2])
    assert not await revenue_differences(w)
    row = await db.fetchrow(
        "SELECT provider_id, business_date, currency FROM provider_day_totals "
        "WHERE organization_id = $1 AND provider_id = $2 AND paid_minor > 0 "
        "ORDER BY business_date LIMIT 1",
        w.world.org,
        w.world.providers[0],
    )
    assert row is not None
    provider = str(row["provider_id"])
    await db.execute(
        "UPDATE provider_day_totals SET paid_minor = paid_minor + 1 WHERE organization_id = $1 "
        "AND provider_id = $2 AND business_date = $3 AND currency = $4",
        w.world.org, row["provider_id"], row["business_date"], row["currency"],
    )  # fmt: skip
    assert await revenue_differences(w)
    # That provider's revenue: exactly that bucket's paid (and net) is off
    # by one, and its currency's totals.
    request = pb.GetRevenueSummaryRequest(
        organization_id=w.world.org,
        start_date=pb_date(w.first),
        end_date=pb_date(w.last),
        granularity=DAY,
        provider_ids=[provider],
    )
    expected = await w.oracle.revenue("providers", [provider], w.first, w.last, DAY, w.first_iso)
    (series,) = [s for s in expected if s.currency_code == row["currency"]]
    (bucket,) = [b for b in series.buckets if as_date(b.start_date) == row["business_date"]]
    for figures in (bucket.figures, series.totals):
        figures.paid_minor += 1
        figures.net_paid_minor += 1
    answer = await w.summaries.GetRevenueSummary(request)
    assert list(answer.currencies) == expected
