"""booking.v1.SummaryService: GetRevenueSummary, GetProviderMetrics,
GetClientBalance, ListClientBalances and GetDashboard.

Each reads the rollups (server.queries.summaries) in ONE statement on one
pooled connection, whatever the range, the providers or the services; this
module validates the request (every violation at once) and encodes the rows.
Amounts of different currencies are never added: figures are summed per
currency, only the appointment counts of ProviderMetrics and DashboardPeriod
(which are no amounts) across them.

An unknown organization: GetRevenueSummary and GetDashboard, which read the
organization's own settings (first day of the week, time zone), are
NOT_FOUND (ORGANIZATION_NOT_FOUND, as GetOrganization); GetProviderMetrics
answers each provider NOT_FOUND (as GetProviderSchedule), GetClientBalance
CLIENT_NOT_FOUND, ListClientBalances an empty page (as every list).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date
from itertools import groupby
from typing import Any, TypeAlias, TypeVar

import asyncpg
from booking.v1 import summaries_pb2 as pb
from booking.v1 import summaries_pb2_grpc as pb_grpc

from server.errors import NotFound, OutOfRange
from server.handlers._base import Context, Deps, request_violations, timeout_of
from server.handlers._calendar_fields import date_of, date_range_of, fill_date
from server.handlers._encoding import set_time
from server.handlers._lists import ListSpec
from server.queries import summaries as q
from server.validation import Violations

__all__ = ["SummaryService", "average_ticket"]

MAX_IDS = 100
MAX_DAYS = 366
# The driver sends date.max (9999-12-31) as 'infinity', on which date
# arithmetic fails (as the day sheet and the appointment lists, the last
# business date a request names; nothing is booked after 8999 anyway).
LAST_DATE = date(9999, 12, 30)
MAX_TOP_PROVIDERS = 50
DEFAULT_TOP_PROVIDERS = 5
# A GetRevenueSummary answers at most this many buckets, all currencies
# together (a few MB at most: gRPC's default message limit is 4 MiB).
MAX_BUCKETS = 20_000
_INT64 = range(-(2**63), 2**63)


def _sum_out_of_range() -> OutOfRange:
    return OutOfRange(
        "a figure of this summary passes 9223372036854775807 minor units, the most an "
        "int64 carries: ask a shorter range, fewer providers or services, or one currency",
        reason="TOTAL_OUT_OF_RANGE",
    )


def _int64(value: int) -> int:
    if value not in _INT64:
        raise _sum_out_of_range()
    return value


# Granularity -> the query's period.
_PERIODS = {
    pb.GRANULARITY_DAY: "day",
    pb.GRANULARITY_WEEK: "week",
    pb.GRANULARITY_MONTH: "month",
}

Figures = dict[str, int]
R = TypeVar("R")


Granularity: TypeAlias = pb.Granularity.ValueType


def _granularity(value: int, field: str, default: Granularity, v: Violations) -> Granularity:
    """A Granularity as sent, UNSPECIFIED as ``default``; an unknown number
    is a violation on ``field``."""
    if value == pb.GRANULARITY_UNSPECIFIED:
        return default
    if value not in _PERIODS:
        v.add(field, "is not a known Granularity", "INVALID_ENUM")
        return default
    return pb.Granularity.ValueType(value)


def _currency(value: str, field: str, v: Violations) -> str | None:
    """An optional ISO 4217 code (None when empty)."""
    if not value:
        return None
    v.currency(field, value)
    return value


def _dates(
    request: pb.GetRevenueSummaryRequest | pb.GetProviderMetricsRequest, v: Violations
) -> tuple[date, date] | None:
    """start_date / end_date: required, inclusive, at most MAX_DAYS dates."""
    dates = date_range_of(request.start_date, request.end_date, v, max_days=MAX_DAYS)
    if dates is not None and dates[1] > LAST_DATE:
        v.add("end_date", f"must be at most {LAST_DATE.isoformat()}", "OUT_OF_RANGE")
    return dates


def _ids(values: Sequence[str], field: str, v: Violations, *, required: bool = False) -> list[str]:
    """Up to MAX_IDS distinct UUIDs (a repeat counts once, the first place kept)."""
    distinct: dict[str, None] = {}
    for i, value in enumerate(values):
        if value in distinct:
            continue
        if len(distinct) == MAX_IDS:  # beyond: TOO_MANY says it all
            v.add(field, f"must hold at most {MAX_IDS} distinct ids", "TOO_MANY")
            break
        distinct[value] = None
        v.uuid(f"{field}[{i}]", value)
    if required and not distinct:
        v.add(field, "is required", "REQUIRED")
    return list(distinct)


# -- figures ----------------------------------------------------------------------------


def _zero() -> Figures:
    return dict.fromkeys(q.MEASURES, 0)


def _add(total: Figures, row: Mapping[str, Any]) -> Figures:
    for m in q.MEASURES:
        total[m] += row[m]
    return total


def _sum(rows: Iterable[Mapping[str, Any]]) -> Figures:
    total = _zero()
    for row in rows:
        _add(total, row)
    return total


def _by_currency(rows: Iterable[Mapping[str, Any]]) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    for row in rows:
        _add(out.setdefault(row["currency"], _zero()), row)
    return dict(sorted(out.items()))


def _counts(target: pb.AppointmentCounts, f: Mapping[str, int]) -> None:
    """Sums made in Python (of day rows, of currencies) are checked against
    int64 (OUT_OF_RANGE TOTAL_OUT_OF_RANGE), as are those PostgreSQL makes
    (SummaryService catches its 22003)."""
    target.pending = _int64(f["pending"])
    target.confirmed = _int64(f["confirmed"])
    target.completed = _int64(f["completed"])
    target.cancelled = _int64(f["cancelled"])
    target.no_show = _int64(f["no_show"])
    target.total = _int64(
        f["pending"] + f["confirmed"] + f["completed"] + f["cancelled"] + f["no_show"]
    )
    target.booked = _int64(f["pending"] + f["confirmed"] + f["completed"])


def _figures(target: pb.RevenueFigures, f: Mapping[str, int]) -> None:
    target.expected_minor = _int64(f["expected_minor"])
    target.completed_minor = _int64(f["completed_minor"])
    target.paid_minor = _int64(f["paid_minor"])
    target.refunded_minor = _int64(f["refunded_minor"])
    target.net_paid_minor = _int64(f["paid_minor"] - f["refunded_minor"])
    target.payments = _int64(f["payments"])
    target.refunds = _int64(f["refunds"])
    _counts(target.appointments, f)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def average_ticket(completed_minor: int, completed: int) -> int:
    """completed_minor / completed rounded half away from zero (0 without any)."""
    if not completed:
        return 0
    quotient = (2 * abs(completed_minor) + completed) // (2 * completed)
    return quotient if completed_minor >= 0 else -quotient


# -- GetRevenueSummary ----------------------------------------------------------------------


async def _revenue_summary(
    deps: Deps, request: pb.GetRevenueSummaryRequest, context: Context
) -> pb.GetRevenueSummaryResponse:
    v = request_violations(request)
    v.uuid("organization_id", request.organization_id)
    providers = _ids(request.provider_ids, "provider_ids", v)
    services = _ids(request.service_ids, "service_ids", v)
    if providers and services:
        v.add("service_ids", "must be empty when provider_ids is set", "CONFLICTING_FIELDS")
    dates = _dates(request, v)
    granularity = _granularity(request.granularity, "granularity", pb.GRANULARITY_DAY, v)
    currency = _currency(request.currency_code, "currency_code", v)
    v.raise_if_any()
    assert dates is not None
    org = request.organization_id
    async with deps.db.connection(timeout_of(context)) as conn:
        rows = await q.revenue(
            conn,
            org,
            *dates,
            _PERIODS[granularity],
            currency,
            provider_ids=providers,
            service_ids=services,
        )
    if not rows:
        raise NotFound.of("organization", org)
    if len(rows) > MAX_BUCKETS:
        raise OutOfRange(
            f"the summary would hold {len(rows)} buckets (currencies x buckets), at most "
            f"{MAX_BUCKETS}: name a currency_code, a coarser granularity or a shorter range",
            reason="SUMMARY_TOO_LARGE",
            metadata={"buckets": str(len(rows)), "max_buckets": str(MAX_BUCKETS)},
        )
    response = pb.GetRevenueSummaryResponse(
        granularity=granularity, first_day_of_week=rows[0]["first_day_of_week"]
    )
    for code, buckets in groupby(rows, key=lambda r: r["currency"]):
        if code is None:  # no currency has a figure
            continue
        series = response.currencies.add(currency_code=code)
        totals = _zero()
        for row in buckets:
            bucket = series.buckets.add()
            fill_date(bucket.start_date, row["start_date"])
            fill_date(bucket.end_date, row["end_date"])
            _figures(bucket.figures, row)
            _add(totals, row)
        _figures(series.totals, totals)
    return response


# -- GetProviderMetrics ----------------------------------------------------------------------


def _metrics(entry: pb.ProviderMetrics, header: asyncpg.Record, rows: list[asyncpg.Record]) -> None:
    """A found provider's entry from its 'p' row and its 'c' rows (per currency)."""
    total = _sum(rows)
    _counts(entry.appointments, total)
    counts = entry.appointments
    entry.no_show_rate = _ratio(counts.no_show, counts.completed + counts.no_show)
    entry.cancellation_rate = _ratio(counts.cancelled, counts.total)
    entry.booked_minutes = _int64(total["booked_minutes"])
    entry.available_minutes = int(header["work_seconds"]) // 60
    entry.utilization = _ratio(entry.booked_minutes, entry.available_minutes)
    for code, f in _by_currency(rows).items():
        revenue = entry.revenue.add(
            currency_code=code,
            average_ticket_minor=average_ticket(f["completed_minor"], f["completed"]),
        )
        _figures(revenue.figures, f)
    entry.unique_clients = header["unique_clients"]
    entry.new_clients = header["new_clients"]
    entry.returning_clients = entry.unique_clients - entry.new_clients


async def _provider_metrics(
    deps: Deps, request: pb.GetProviderMetricsRequest, context: Context
) -> pb.GetProviderMetricsResponse:
    v = request_violations(request)
    v.uuid("organization_id", request.organization_id)
    ids = _ids(request.provider_ids, "provider_ids", v, required=True)
    dates = _dates(request, v)
    v.raise_if_any()
    assert dates is not None
    async with deps.db.connection(timeout_of(context)) as conn:
        rows = await q.provider_metrics(conn, request.organization_id, ids, *dates)
    response = pb.GetProviderMetricsResponse()
    for _ord, group in groupby(rows, key=lambda r: r["ord"]):
        header, *per_currency = group
        pid = ids[header["ord"] - 1]
        entry = response.providers.add(provider_id=pid)
        if not header["found"]:
            entry.error.CopyFrom(NotFound.of("provider", pid).to_status())
            continue
        _metrics(entry, header, per_currency)
    return response


# -- GetClientBalance and ListClientBalances -------------------------------------------------


def encode_balance(
    row: Mapping[str, Any], new: Callable[..., pb.ClientBalance] = pb.ClientBalance
) -> pb.ClientBalance:
    return new(
        client_id=str(row["client_id"]),
        currency_code=row["currency"],
        charged_minor=row["charged_minor"],
        paid_minor=row["paid_minor"],
        refunded_minor=row["refunded_minor"],
        balance_minor=row["balance_minor"],
        lifetime_value_minor=row["lifetime_value_minor"],
        payments=row["payments"],
        refunds=row["refunds"],
    )


async def _client_balance(
    deps: Deps, request: pb.GetClientBalanceRequest, context: Context
) -> pb.GetClientBalanceResponse:
    v = request_violations(request)
    v.uuid("organization_id", request.organization_id)
    v.uuid("client_id", request.client_id)
    v.raise_if_any()
    async with deps.db.connection(timeout_of(context)) as conn:
        rows = await q.client_balance(conn, request.organization_id, request.client_id)
    if not rows:
        raise NotFound.of("client", request.client_id)
    response = pb.GetClientBalanceResponse(client_id=request.client_id)
    for row in rows:
        if row["currency"] is not None:
            encode_balance(row, response.balances.add)
    first = rows[0]
    if first["visits"]:
        response.visits = first["visits"]
        set_time(response.first_visit_time, first["first_visit_at"])
        set_time(response.last_visit_time, first["last_visit_at"])
    return response


def _balance_filters(request: pb.ListClientBalancesRequest, v: Violations) -> q.ClientBalanceFilter:
    if not request.currency_code:
        v.add(
            "currency_code",
            "is required: balances of different currencies do not compare",
            "REQUIRED",
        )
    else:
        v.currency("currency_code", request.currency_code)
    low = request.min_balance_minor if request.HasField("min_balance_minor") else None
    high = request.max_balance_minor if request.HasField("max_balance_minor") else None
    if low is not None and high is not None and low > high:
        v.add("max_balance_minor", "must not be less than min_balance_minor", "INVALID_RANGE")
    return q.ClientBalanceFilter(request.currency_code, low, high)


LIST_BALANCES = ListSpec(
    q.CLIENT_BALANCES, pb.ListClientBalancesResponse, "balances", _balance_filters, encode_balance
)


# -- GetDashboard --------------------------------------------------------------------------


def _period(
    target: pb.DashboardPeriod, start: Any, end: Any, rows: list[asyncpg.Record], new: int
) -> None:
    fill_date(target.start_date, start)
    fill_date(target.end_date, end)
    total = _sum(rows)
    _counts(target.appointments, total)
    target.bookings = target.appointments.total - target.appointments.cancelled
    target.new_clients = new
    for code, f in _by_currency(rows).items():
        _figures(target.revenue.add(currency_code=code).figures, f)


async def _dashboard(
    deps: Deps, request: pb.GetDashboardRequest, context: Context
) -> pb.GetDashboardResponse:
    v = request_violations(request)
    v.uuid("organization_id", request.organization_id)
    on = date_of(request.date, "date", v)
    if on is not None and on > LAST_DATE:
        v.add("date", f"must be at most {LAST_DATE.isoformat()}", "OUT_OF_RANGE")
    period = _granularity(request.period, "period", pb.GRANULARITY_MONTH, v)
    top = request.top_providers or DEFAULT_TOP_PROVIDERS
    v.int_range("top_providers", request.top_providers, 0, MAX_TOP_PROVIDERS)
    currency = _currency(request.currency_code, "currency_code", v)
    v.raise_if_any()
    org = request.organization_id
    async with deps.db.connection(timeout_of(context)) as conn:
        rows = await q.dashboard(conn, org, on, _PERIODS[period], top, currency)
    kinds = {kind: list(group) for kind, group in groupby(rows, key=lambda r: r["kind"])}
    if "h" not in kinds:
        raise NotFound.of("organization", org)
    [h] = kinds["h"]
    parts = {part: list(group) for part, group in groupby(kinds.get("f", ()), lambda r: r["part"])}
    response = pb.GetDashboardResponse(period=period, ranking_currency_code=h["currency"] or "")
    fill_date(response.date, h["on_date"])
    _counts(response.today, _sum(parts.get("t", ())))
    current = [*parts.get("c", ()), *parts.get("t", ())]
    _period(response.current, h["cur_start"], h["on_date"], current, h["new_current"])
    _period(
        response.previous, h["prev_start"], h["prev_end"], parts.get("p", []), h["new_previous"]
    )
    for row in kinds.get("t", ()):
        response.top_providers.add(
            provider_id=str(row["provider_id"]),
            display_name=row["display_name"],
            completed_minor=row["completed_minor"],
            completed_appointments=row["completed"],
        )
    return response


async def _fitting(answer: Awaitable[R]) -> R:
    """The answer, or OUT_OF_RANGE when PostgreSQL's sum passed int64 (22003)."""
    try:
        return await answer
    except asyncpg.NumericValueOutOfRangeError:
        raise _sum_out_of_range() from None


class SummaryService(pb_grpc.SummaryServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def GetRevenueSummary(
        self, request: pb.GetRevenueSummaryRequest, context: Context
    ) -> pb.GetRevenueSummaryResponse:
        return await _fitting(_revenue_summary(self._deps, request, context))

    async def GetProviderMetrics(
        self, request: pb.GetProviderMetricsRequest, context: Context
    ) -> pb.GetProviderMetricsResponse:
        return await _fitting(_provider_metrics(self._deps, request, context))

    async def GetClientBalance(
        self, request: pb.GetClientBalanceRequest, context: Context
    ) -> pb.GetClientBalanceResponse:
        return await _fitting(_client_balance(self._deps, request, context))

    async def ListClientBalances(
        self, request: pb.ListClientBalancesRequest, context: Context
    ) -> pb.ListClientBalancesResponse:
        return await _fitting(LIST_BALANCES.serve(self._deps, request, context))

    async def GetDashboard(
        self, request: pb.GetDashboardRequest, context: Context
    ) -> pb.GetDashboardResponse:
        return await _fitting(_dashboard(self._deps, request, context))
