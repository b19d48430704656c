# ruff: noqa: RUF001  (Turkish İ and full-width letters are the point)
"""A hostile caller against booking.v1.SummaryService (GetRevenueSummary,
GetProviderMetrics, GetClientBalance, ListClientBalances, GetDashboard) over
the real channel against the real server and PostgreSQL.

Every answer must be a documented code with details: INVALID_ARGUMENT naming
the bad fields, NOT_FOUND with ResourceInfo (a per-entry one in
GetProviderMetrics), or a clean answer; never INTERNAL or UNKNOWN, and never
another tenant's figures. Then deadlines of 1 ms, figures at the edge of
int64 (payments of the largest amount a payment may have, 10^15 minor units,
recorded until a sum passes 2^63 - 1), and summaries read right after each
write. Server bugs are kept as ``xfail(strict=True)`` tests, the reason
saying what is wrong.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    common_pb2,
    organizations_pb2,
    payments_pb2,
    payments_pb2_grpc,
    resources_pb2,
    summaries_pb2,
    summaries_pb2_grpc,
)
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.type import date_pb2, dayofweek_pb2

from server.booking import EARLIEST_INSTANT, LATEST_INSTANT
from server.config import DEV_PAGE_TOKEN_SECRET
from server.handlers.payments import MAX_AMOUNT_MINOR
from server.handlers.summaries import MAX_IDS, MAX_TOP_PROVIDERS
from server.paging import MAX_PAGE_NUMBER, PageTokenCodec
from server.testing import test_settings
from tests.conftest import Bookable, Stubs, details, make_bookable, new_org
from tests.test_lists_hostile import _BAD_UTF8, _varint, _with_raw_string, token_payload
from tests.test_summaries import (
    Summaries,
    as_date,
    book,
    expect_invalid,
    expect_not_found,
    local_date,
    make_client,
    make_org,
    make_provider,
    make_service,
    offer,
    pay,
    pb_date,
    span,
)

pb = summaries_pb2
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
DAY, WEEK, MONTH = pb.GRANULARITY_DAY, pb.GRANULARITY_WEEK, pb.GRANULARITY_MONTH
NIL = "00000000-0000-0000-0000-000000000000"
MAX_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
CODEC = PageTokenCodec(DEV_PAGE_TOKEN_SECRET)
MAX_PAGE_SIZE = test_settings().max_page_size
BERLIN = ZoneInfo("Europe/Berlin")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")  # UTC-11: always another date than Kiritimati
PRICE = 2500  # make_bookable's EUR service


@pytest.fixture
def summaries(channel: grpc.aio.Channel) -> Summaries:
    return summaries_pb2_grpc.SummaryServiceStub(channel)


def ymd(year: int, month: int, day: int) -> date_pb2.Date:
    """A google.type.Date as sent, whatever its parts (python's date refuses most)."""
    return date_pb2.Date(year=year, month=month, day=day)


async def answer(call: Awaitable[Any]) -> Message | grpc.aio.AioRpcError:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error


def assert_documented(outcome: Message | grpc.aio.AioRpcError, what: object = "") -> None:
    """A clean answer, or an error with a google.rpc.Status whose ErrorInfo is
    ours (an INVALID_ARGUMENT names its fields), never INTERNAL or UNKNOWN."""
    if isinstance(outcome, Message):
        return
    code = outcome.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        what,
        code,
        outcome.details(),
    )
    found = details(outcome)
    if code == INVALID:
        assert "BadRequest" in found or found["ErrorInfo"].reason == "MALFORMED_REQUEST", (
            what,
            found,
        )
    if code == NOT_FOUND:
        assert found["ResourceInfo"].resource_name, (what, found)


def entry_status(
    entry: pb.ProviderMetrics,
) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo]:
    """A per-entry google.rpc.Status's ErrorInfo and ResourceInfo."""
    info, resource = error_details_pb2.ErrorInfo(), error_details_pb2.ResourceInfo()
    for packed in entry.error.details:
        for msg in (info, resource):
            if packed.Is(msg.DESCRIPTOR):
                packed.Unpack(msg)
    return info, resource


# -- a tenant with figures, and another one ------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    """make_bookable's provider, EUR service and client, an appointment of
    today (Berlin) completed and paid, and two more clients with payments
    without appointment (balances only), one in EUR and one in USD."""

    b: Bookable
    today: date
    clients: tuple[str, ...]
    paid: int

    @property
    def org(self) -> str:
        return self.b.org

    def days(self) -> dict[str, date_pb2.Date]:
        return span(self.today - timedelta(days=2), self.today + timedelta(days=2))


async def make_tenant(stubs: Stubs, paid: int) -> Tenant:
    org = await new_org(stubs)
    b = await make_bookable(stubs, org)
    today = datetime.now(BERLIN).date()
    start = datetime(today.year, today.month, today.day, 12, tzinfo=BERLIN)
    a = await book(stubs, org, b.provider_id, b.service_id, b.client_id, start, "completed")
    await pay(stubs, org, b.client_id, paid, "EUR", a.id)
    more = (await make_client(stubs, org, "Two"), await make_client(stubs, org, "Three"))
    await pay(stubs, org, more[0], paid + 1, "EUR")
    await pay(stubs, org, more[1], paid + 2, "USD")
    return Tenant(b, today, (b.client_id, *more), paid)


@dataclass(frozen=True)
class Pair:
    mine: Tenant
    theirs: Tenant


@pytest_asyncio.fixture(loop_scope="session")
async def pair(stubs: Stubs) -> Pair:
    # Their figures differ from mine, so that a leak shows as a number.
    return Pair(await make_tenant(stubs, 1000), await make_tenant(stubs, 7000))


# -- dates at the edges --------------------------------------------------------------------

# (start, end) -> the violations of start_date / end_date ({} = answered).
RANGES: list[tuple[str, date_pb2.Date, date_pb2.Date, dict[str, str]]] = [
    (
        "0001-01-01",
        ymd(1, 1, 1),
        ymd(1, 1, 1),
        {"start_date": "OUT_OF_RANGE"} | {"end_date": "OUT_OF_RANGE"},
    ),
    ("1899-12-31", ymd(1899, 12, 31), ymd(1900, 1, 1), {"start_date": "OUT_OF_RANGE"}),
    ("1900-01-01", ymd(1900, 1, 1), ymd(1900, 1, 1), {}),
    ("9999-12-30", ymd(9999, 12, 30), ymd(9999, 12, 30), {}),
    ("9999 to its 30th", ymd(9999, 1, 1), ymd(9999, 12, 30), {}),
    ("9999-12-31", ymd(9999, 12, 31), ymd(9999, 12, 31), {"end_date": "OUT_OF_RANGE"}),
    (
        "10000-01-01",
        ymd(10000, 1, 1),
        ymd(10000, 1, 1),
        {"start_date": "OUT_OF_RANGE"} | {"end_date": "OUT_OF_RANGE"},
    ),
    ("month 13", ymd(2025, 13, 1), ymd(2025, 12, 1), {"start_date": "INVALID_FORMAT"}),
    ("February 31st", ymd(2025, 1, 1), ymd(2025, 2, 31), {"end_date": "INVALID_FORMAT"}),
    ("February 29th 2025", ymd(2025, 2, 29), ymd(2025, 3, 1), {"start_date": "INVALID_FORMAT"}),
    ("day -1", ymd(2025, 1, -1), ymd(2025, 1, 1), {"start_date": "INVALID_FORMAT"}),
    ("day 2^31-1", ymd(2025, 1, INT32_MAX), ymd(2025, 1, 1), {"start_date": "INVALID_FORMAT"}),
    ("year 0", ymd(0, 1, 1), ymd(2025, 1, 1), {"start_date": "OUT_OF_RANGE"}),
    ("year -1", ymd(-1, 1, 1), ymd(2025, 1, 1), {"start_date": "OUT_OF_RANGE"}),
    ("start unset", ymd(0, 0, 0), ymd(2025, 1, 1), {"start_date": "REQUIRED"}),
    (
        "both unset",
        ymd(0, 0, 0),
        ymd(0, 0, 0),
        {"start_date": "REQUIRED"} | {"end_date": "REQUIRED"},
    ),
    (
        "a year and a month, no day",
        ymd(2025, 1, 0),
        ymd(2025, 1, 1),
        {"start_date": "INVALID_FORMAT"},
    ),
    ("a year only", ymd(2025, 0, 0), ymd(2025, 1, 1), {"start_date": "INVALID_FORMAT"}),
    ("a day only", ymd(0, 0, 5), ymd(2025, 1, 1), {"start_date": "OUT_OF_RANGE"}),
    ("an anniversary", ymd(0, 5, 5), ymd(2025, 1, 1), {"start_date": "OUT_OF_RANGE"}),
    ("inverted by a day", ymd(2025, 1, 2), ymd(2025, 1, 1), {"end_date": "INVALID_RANGE"}),
    ("inverted by centuries", ymd(9999, 12, 30), ymd(1900, 1, 1), {"end_date": "INVALID_RANGE"}),
    # 2024 is a leap year: 366 days is the most, 367 is one too many.
    ("366 days: 2024", ymd(2024, 1, 1), ymd(2024, 12, 31), {}),
    ("367 days: 2024 and a day", ymd(2024, 1, 1), ymd(2025, 1, 1), {"end_date": "RANGE_TOO_LONG"}),
    ("366 days to February 29th", ymd(2023, 3, 1), ymd(2024, 2, 29), {}),
    (
        "367 days to February 29th",
        ymd(2023, 2, 28),
        ymd(2024, 2, 29),
        {"end_date": "RANGE_TOO_LONG"},
    ),
    ("366 days from February 29th", ymd(2024, 2, 29), ymd(2025, 2, 28), {}),
    (
        "367 days from February 29th",
        ymd(2024, 2, 29),
        ymd(2025, 3, 1),
        {"end_date": "RANGE_TOO_LONG"},
    ),
    ("365 days of a common year + 1", ymd(2025, 1, 1), ymd(2026, 1, 1), {}),
    (
        "367 days at the end of time",
        ymd(9998, 12, 29),
        ymd(9999, 12, 30),
        {"end_date": "RANGE_TOO_LONG"},
    ),
    ("1900 is no leap year", ymd(1900, 2, 29), ymd(1900, 3, 1), {"start_date": "INVALID_FORMAT"}),
    ("2000 is one", ymd(2000, 2, 29), ymd(2000, 3, 1), {}),
]


async def _check_range(call: Awaitable[Any], bad: dict[str, str], what: object) -> Message | None:
    outcome = await answer(call)
    assert_documented(outcome, what)
    if not bad:
        assert isinstance(outcome, Message), (what, outcome)
        return outcome
    assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == INVALID, (what, outcome)
    found = {v.field: v.reason for v in details(outcome)["BadRequest"].field_violations}
    assert found == bad, (what, found)
    return None


@pytest.mark.parametrize(
    ("start", "end", "bad"),
    [(s, e, b) for _, s, e, b in RANGES],
    ids=[name for name, *_ in RANGES],
)
async def test_date_ranges_at_the_edges(
    summaries: Summaries,
    pair: Pair,
    start: date_pb2.Date,
    end: date_pb2.Date,
    bad: dict[str, str],
) -> None:
    """GetRevenueSummary (of the organization, of providers, of services, in
    every granularity) and GetProviderMetrics: each edge is answered, or
    INVALID_ARGUMENT names exactly the date it is about."""
    t = pair.mine
    dates = {"start_date": start, "end_date": end}
    for granularity in (pb.GRANULARITY_UNSPECIFIED, DAY, WEEK, MONTH):
        for ids in ({}, {"provider_ids": [t.b.provider_id]}, {"service_ids": [t.b.service_id]}):
            request = pb.GetRevenueSummaryRequest(
                organization_id=t.org, granularity=granularity, currency_code="EUR", **ids, **dates
            )
            got = await _check_range(summaries.GetRevenueSummary(request), bad, request)
            if isinstance(got, pb.GetRevenueSummaryResponse):
                [eur] = got.currencies
                assert eur.buckets[0].start_date == start and eur.buckets[-1].end_date == end
                assert eur.totals == pb.RevenueFigures(appointments=pb.AppointmentCounts())
    metrics = pb.GetProviderMetricsRequest(
        organization_id=t.org, provider_ids=[t.b.provider_id, NIL], **dates
    )
    got = await _check_range(summaries.GetProviderMetrics(metrics), bad, metrics)
    if isinstance(got, pb.GetProviderMetricsResponse):
        own, nil = got.providers
        # All day every day (make_bookable): the range's dates are all working time.
        first, last = as_date(start), as_date(end)
        assert own.available_minutes == ((last - first).days + 1) * 1440
        assert nil.error.code == NOT_FOUND.value[0]


DASHBOARD_DATES: list[tuple[str, date_pb2.Date, str]] = [
    ("unset: today", ymd(0, 0, 0), ""),
    ("0001-01-01", ymd(1, 1, 1), "OUT_OF_RANGE"),
    ("1899-12-31", ymd(1899, 12, 31), "OUT_OF_RANGE"),
    ("1900-01-01", ymd(1900, 1, 1), ""),
    ("1900-03-01", ymd(1900, 3, 1), ""),
    ("2024-02-29", ymd(2024, 2, 29), ""),
    ("2025-02-29", ymd(2025, 2, 29), "INVALID_FORMAT"),
    ("2025-02-31", ymd(2025, 2, 31), "INVALID_FORMAT"),
    ("month 13", ymd(2025, 13, 1), "INVALID_FORMAT"),
    ("year 0", ymd(0, 1, 1), "OUT_OF_RANGE"),
    ("a day only", ymd(0, 0, 1), "OUT_OF_RANGE"),
    ("a year only", ymd(2025, 0, 0), "INVALID_FORMAT"),
    ("9999-01-01", ymd(9999, 1, 1), ""),
    ("9999-12-30", ymd(9999, 12, 30), ""),
    ("9999-12-31", ymd(9999, 12, 31), "OUT_OF_RANGE"),
    ("10000-01-01", ymd(10000, 1, 1), "OUT_OF_RANGE"),
]


@pytest.mark.parametrize(
    ("on", "reason"), [(d, r) for _, d, r in DASHBOARD_DATES], ids=[n for n, *_ in DASHBOARD_DATES]
)
async def test_dashboard_dates_at_the_edges(
    summaries: Summaries, pair: Pair, on: date_pb2.Date, reason: str
) -> None:
    t = pair.mine
    for period in (pb.GRANULARITY_UNSPECIFIED, DAY, WEEK, MONTH):
        request = pb.GetDashboardRequest(organization_id=t.org, date=on, period=period)
        if reason:
            await expect_invalid(summaries.GetDashboard(request), "date", reason=reason)
            continue
        got = await summaries.GetDashboard(request)
        assert got.period == (period or MONTH)
        day = as_date(got.date)
        if on == ymd(0, 0, 0):  # today in the organization's zone (Berlin)
            assert day in (t.today, datetime.now(BERLIN).date())
        else:
            assert got.date == on
        current, previous = got.current, got.previous
        assert as_date(current.start_date) <= day == as_date(current.end_date)
        assert as_date(previous.start_date) <= as_date(previous.end_date)
        assert as_date(previous.end_date) < as_date(current.start_date)
        if day != t.today:  # no figure there
            assert not got.top_providers and not current.revenue and not previous.revenue


# -- enums, currencies, text -----------------------------------------------------------------


async def test_enum_numbers_out_of_range(summaries: Summaries, pair: Pair) -> None:
    t = pair.mine
    for number in (-1, 4, 99, INT32_MAX, INT32_MIN):
        await expect_invalid(
            summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(
                    organization_id=t.org,
                    granularity=number,  # type: ignore[arg-type]
                    **t.days(),
                )
            ),
            "granularity",
            reason="INVALID_ENUM",
        )
        await expect_invalid(
            summaries.GetDashboard(
                pb.GetDashboardRequest(organization_id=t.org, period=number)  # type: ignore[arg-type]
            ),
            "period",
            reason="INVALID_ENUM",
        )
        await expect_invalid(
            summaries.ListClientBalances(
                pb.ListClientBalancesRequest(
                    organization_id=t.org,
                    currency_code="EUR",
                    count_mode=number,  # type: ignore[arg-type]
                )
            ),
            "count_mode",
            reason="INVALID_ENUM",
        )


BAD_CURRENCIES = (
    "eur",
    "Eur",
    "EU",
    "EURO",
    "E",
    "EU\x00",
    "\x00",
    "EUR\x00",
    "\U0010ffff",
    "EU\U0010ffff",
    "İSK",  # Turkish dotted capital I: upper case, not A-Z
    "TRı",
    "ＥＵＲ",  # full-width
    "EUR ",
    " EUR",
    "EUR\n",
    "E-R",
    "12€",
)


async def test_currency_codes(summaries: Summaries, pair: Pair) -> None:
    """Every malformed code is INVALID_ARGUMENT on currency_code alone, in the
    three RPCs that take one; empty is "every currency" where it is optional
    and REQUIRED in ListClientBalances; a well-formed unknown code (ZZZ) has
    no figures."""
    t = pair.mine
    for code in BAD_CURRENCIES:
        calls = (
            summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(organization_id=t.org, currency_code=code, **t.days())
            ),
            summaries.GetDashboard(
                pb.GetDashboardRequest(organization_id=t.org, currency_code=code)
            ),
            summaries.ListClientBalances(
                pb.ListClientBalancesRequest(organization_id=t.org, currency_code=code)
            ),
        )
        for call in calls:
            await expect_invalid(call, "currency_code", reason="INVALID_FORMAT")
    await expect_invalid(
        summaries.ListClientBalances(pb.ListClientBalancesRequest(organization_id=t.org)),
        "currency_code",
        reason="REQUIRED",
    )
    every = await summaries.GetRevenueSummary(
        pb.GetRevenueSummaryRequest(organization_id=t.org, **t.days())
    )
    # The appointment and its payment are EUR; USD was paid without appointment
    # (balances only).
    assert [c.currency_code for c in every.currencies] == ["EUR"]
    unknown = await summaries.GetRevenueSummary(
        pb.GetRevenueSummaryRequest(organization_id=t.org, currency_code="ZZZ", **t.days())
    )
    [zzz] = unknown.currencies
    assert zzz.currency_code == "ZZZ" and len(zzz.buckets) == 5
    assert zzz.totals == pb.RevenueFigures(appointments=pb.AppointmentCounts())
    assert not (
        await summaries.ListClientBalances(
            pb.ListClientBalancesRequest(organization_id=t.org, currency_code="ZZZ")
        )
    ).balances
    dashboard = await summaries.GetDashboard(
        pb.GetDashboardRequest(organization_id=t.org, currency_code="ZZZ", date=pb_date(t.today))
    )
    assert dashboard.ranking_currency_code == "ZZZ" and not dashboard.top_providers


_PATHS: dict[str, tuple[type[Message], type[Message]]] = {
    "GetRevenueSummary": (pb.GetRevenueSummaryRequest, pb.GetRevenueSummaryResponse),
    "GetProviderMetrics": (pb.GetProviderMetricsRequest, pb.GetProviderMetricsResponse),
    "GetClientBalance": (pb.GetClientBalanceRequest, pb.GetClientBalanceResponse),
    "ListClientBalances": (pb.ListClientBalancesRequest, pb.ListClientBalancesResponse),
    "GetDashboard": (pb.GetDashboardRequest, pb.GetDashboardResponse),
}


def valid_requests(t: Tenant) -> dict[str, Message]:
    """A valid request of each RPC, answered with figures."""
    return {
        "GetRevenueSummary": pb.GetRevenueSummaryRequest(
            organization_id=t.org, provider_ids=[t.b.provider_id], **t.days()
        ),
        "GetProviderMetrics": pb.GetProviderMetricsRequest(
            organization_id=t.org, provider_ids=[t.b.provider_id], **t.days()
        ),
        "GetClientBalance": pb.GetClientBalanceRequest(
            organization_id=t.org, client_id=t.b.client_id
        ),
        "ListClientBalances": pb.ListClientBalancesRequest(
            organization_id=t.org, currency_code="EUR"
        ),
        "GetDashboard": pb.GetDashboardRequest(organization_id=t.org, date=pb_date(t.today)),
    }


def raw_call(channel: grpc.aio.Channel, name: str) -> Any:
    """The RPC with the request sent as bytes (the wire takes what protobuf
    Python would refuse to build)."""
    return channel.unary_unary(
        f"/booking.v1.SummaryService/{name}",
        request_serializer=lambda raw: raw,
        response_deserializer=_PATHS[name][1].FromString,
    )


@pytest.mark.parametrize("name", list(_PATHS))
async def test_invalid_utf8_in_any_string_field_is_a_malformed_request(
    channel: grpc.aio.Channel, pair: Pair, name: str
) -> None:
    """A lone surrogate sent as its UTF-8 bytes, a stray 0xFF, an overlong '/'
    and a code point past U+10FFFF, in every string field (the repeated ids
    too): INVALID_ARGUMENT MALFORMED_REQUEST, never INTERNAL; U+10FFFF itself
    is valid UTF-8, refused by the field's own rule."""
    request = valid_requests(pair.mine)[name]
    call = raw_call(channel, name)
    strings = [f for f in request.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    assert strings
    for field in strings:
        for raw in _BAD_UTF8:
            outcome = await answer(call(_with_raw_string(request, field.number, raw)))
            assert isinstance(outcome, grpc.aio.AioRpcError), (field.name, raw)
            assert outcome.code() == INVALID, (field.name, raw, outcome.code(), outcome.details())
            assert details(outcome)["ErrorInfo"].reason == "MALFORMED_REQUEST", (field.name, raw)
        # The same injection with valid UTF-8 (U+10FFFF) is an ordinary bad value.
        outcome = await answer(call(_with_raw_string(request, field.number, "\U0010ffff".encode())))
        assert_documented(outcome, (name, field.name))
    # And the untouched request is served (the injection is what was refused).
    assert isinstance(await answer(call(request.SerializeToString())), Message)


@pytest.mark.parametrize("name", list(_PATHS))
async def test_bytes_that_are_no_request_are_a_malformed_request(
    channel: grpc.aio.Channel, pair: Pair, name: str
) -> None:
    """Truncated messages, a wrong wire type for a known field, a length past
    the end, a Date of garbage, a varint of eleven bytes: MALFORMED_REQUEST.
    Unknown fields are ignored (the request is served)."""
    request = valid_requests(pair.mine)[name]
    whole = request.SerializeToString()
    call = raw_call(channel, name)
    org = request.DESCRIPTOR.fields_by_name["organization_id"].number
    garbage = [
        whole[:-1],
        whole + _varint(org << 3 | 0),  # a varint tag with no varint
        whole + _varint(org << 3 | 2) + _varint(1_000_000) + b"x",  # length past the end
        whole + _varint(org << 3 | 2) + _varint(2**64),  # a length of 2^64
        whole + _varint(99 << 3 | 0) + b"\xff" * 10 + b"\x01",  # an 11-byte varint
        whole + b"\x00",  # field number 0
        whole + _varint(org << 3 | 7),  # wire type 7 does not exist
        whole + _varint(org << 3 | 4),  # an end-group nobody opened
    ]
    dates = [f for f in request.DESCRIPTOR.fields if f.message_type is date_pb2.Date.DESCRIPTOR]
    for field in dates:
        garbage.append(whole + _varint(field.number << 3 | 2) + _varint(3) + b"\x08\xff\xff")
    for raw in garbage:
        outcome = await answer(call(raw))
        assert isinstance(outcome, grpc.aio.AioRpcError), raw[-20:]
        assert outcome.code() == INVALID, (raw[-20:], outcome.code(), outcome.details())
        assert details(outcome)["ErrorInfo"].reason == "MALFORMED_REQUEST", raw[-20:]
    # Unknown fields of every wire type are skipped.
    unknown = (
        _varint(1000 << 3 | 0)
        + _varint(2**63)
        + _varint(1001 << 3 | 2)
        + _varint(3)
        + b"\xed\xa0\x80"
        + _varint(1002 << 3 | 5)
        + b"\x00" * 4
        + _varint(1003 << 3 | 1)
        + b"\x00" * 8
    )
    assert await call(whole + unknown) == await call(whole)


# -- ids ------------------------------------------------------------------------------------


async def test_many_duplicate_and_upper_case_ids(summaries: Summaries, pair: Pair) -> None:
    t = pair.mine
    pid, sid = t.b.provider_id, t.b.service_id
    strangers = [str(uuid.uuid4()) for _ in range(MAX_IDS + 1)]
    days = t.days()
    revenue = summaries.GetRevenueSummary
    metrics = summaries.GetProviderMetrics

    def rev(**kw: Any) -> Any:
        return revenue(pb.GetRevenueSummaryRequest(organization_id=t.org, **days, **kw))

    def met(ids: list[str]) -> Any:
        return metrics(
            pb.GetProviderMetricsRequest(organization_id=t.org, provider_ids=ids, **days)
        )

    # 101 distinct ids: TOO_MANY on the repeated field itself.
    await expect_invalid(rev(provider_ids=strangers), "provider_ids", reason="TOO_MANY")
    await expect_invalid(rev(service_ids=strangers), "service_ids", reason="TOO_MANY")
    await expect_invalid(met(strangers), "provider_ids", reason="TOO_MANY")
    # 101 in upper and lower case are 101 distinct ones too.
    mixed = [s.upper() if i % 2 else s for i, s in enumerate(strangers)]
    await expect_invalid(met(mixed), "provider_ids", reason="TOO_MANY")

    # The same id 100 (and 1,000) times is one id.
    plain = await rev(provider_ids=[pid])
    assert plain.currencies[0].totals.completed_minor == PRICE
    for times in (MAX_IDS, 1000):
        assert await rev(provider_ids=[pid] * times) == plain
        assert await rev(service_ids=[sid] * times) == await rev(service_ids=[sid])
        got = await met([pid] * times)
        assert [e.provider_id for e in got.providers] == [pid]
    # Upper case is the same provider (and counts once with its lower case).
    assert await rev(provider_ids=[pid.upper()]) == plain
    assert await rev(provider_ids=[pid.upper(), pid, pid.upper()]) == plain
    assert await rev(service_ids=[sid.upper()]) == await rev(service_ids=[sid])
    lower, upper = (await met([pid])).providers, (await met([pid.upper(), pid])).providers
    assert upper == lower and lower[0].provider_id == pid
    assert lower[0].appointments.completed == 1
    # 100 distinct ids and each again in upper case: 100, in the order sent.
    hundred = [pid, *strangers[: MAX_IDS - 1]]
    got = await met(hundred + [h.upper() for h in reversed(hundred)])
    assert [e.provider_id for e in got.providers] == hundred
    assert got.providers[0] == lower[0]
    for entry in got.providers[1:]:
        assert entry.error.code == NOT_FOUND.value[0]
        info, resource = entry_status(entry)
        assert info.reason == "PROVIDER_NOT_FOUND" and resource.resource_name == entry.provider_id
    assert await rev(provider_ids=hundred + [h.upper() for h in hundred]) == plain
    # The client and the organization in upper case.
    lower_balance = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=t.org, client_id=t.b.client_id)
    )
    upper_balance = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=t.org.upper(), client_id=t.b.client_id.upper())
    )
    assert upper_balance == lower_balance and lower_balance.client_id == t.b.client_id
    assert lower_balance.balances[0].paid_minor == t.paid
    dashboard = pb.GetDashboardRequest(organization_id=t.org, date=pb_date(t.today))
    shouted_dashboard = pb.GetDashboardRequest(organization_id=t.org.upper(), date=dashboard.date)
    assert await summaries.GetDashboard(shouted_dashboard) == await summaries.GetDashboard(
        dashboard
    )
    listing = pb.ListClientBalancesRequest(organization_id=t.org, currency_code="EUR")
    shouted_listing = pb.ListClientBalancesRequest(
        organization_id=t.org.upper(), currency_code="EUR"
    )
    listed = await summaries.ListClientBalances(listing)
    assert len(listed.balances) == 2
    assert await summaries.ListClientBalances(shouted_listing) == listed


NOT_UUIDS = (
    "nope",
    " ",
    "{%s}",  # braces, a urn and no dashes: uuid.UUID and PostgreSQL take them; not ids
    "urn:uuid:%s",
    "%s\n",
    " %s",
    "%s ",
    "%s0",
    "٠٠٠٠٠٠٠٠-0000-0000-0000-000000000000",  # Arabic-Indic digits: int() takes them
    "0000000g-0000-0000-0000-000000000000",
    "00000000-0000-0000-0000-00000000000",
    "\U0010ffff",
)


def not_uuids(real: str) -> list[str]:
    return [s % real if "%s" in s else s for s in NOT_UUIDS] + [real.replace("-", "")]


async def test_ids_that_are_not_uuids(summaries: Summaries, pair: Pair) -> None:
    """INVALID_FORMAT on the field (with its index in a repeated one), never a
    look-up: forms that uuid.UUID or PostgreSQL would read as the real id are
    not ids either."""
    t = pair.mine
    for bad in not_uuids(t.b.provider_id):
        await expect_invalid(
            summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(
                    organization_id=t.org, provider_ids=[t.b.provider_id, bad], **t.days()
                )
            ),
            "provider_ids[1]",
            reason="INVALID_FORMAT",
        )
        await expect_invalid(
            summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(organization_id=t.org, service_ids=[bad], **t.days())
            ),
            "service_ids[0]",
            reason="INVALID_FORMAT",
        )
        await expect_invalid(
            summaries.GetProviderMetrics(
                pb.GetProviderMetricsRequest(
                    organization_id=t.org, provider_ids=[bad, bad], **t.days()
                )
            ),
            "provider_ids[0]",  # a repeat counts once
            reason="INVALID_FORMAT",
        )
    for bad in not_uuids(t.b.client_id):
        await expect_invalid(
            summaries.GetClientBalance(
                pb.GetClientBalanceRequest(organization_id=t.org, client_id=bad)
            ),
            "client_id",
            reason="INVALID_FORMAT",
        )
    for bad in not_uuids(t.org):
        requests: list[tuple[Callable[[Any], Any], Message]] = [
            (
                summaries.GetRevenueSummary,
                pb.GetRevenueSummaryRequest(organization_id=bad, **t.days()),
            ),
            (
                summaries.GetProviderMetrics,
                pb.GetProviderMetricsRequest(
                    organization_id=bad, provider_ids=[t.b.provider_id], **t.days()
                ),
            ),
            (
                summaries.GetClientBalance,
                pb.GetClientBalanceRequest(organization_id=bad, client_id=t.b.client_id),
            ),
            (
                summaries.ListClientBalances,
                pb.ListClientBalancesRequest(organization_id=bad, currency_code="EUR"),
            ),
            (summaries.GetDashboard, pb.GetDashboardRequest(organization_id=bad)),
        ]
        for call, request in requests:
            await expect_invalid(call(request), "organization_id", reason="INVALID_FORMAT")


async def test_the_nil_and_the_last_uuid(summaries: Summaries, pair: Pair) -> None:
    t = pair.mine
    for nobody in (NIL, MAX_ID):
        got = await summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(organization_id=t.org, provider_ids=[nobody], **t.days())
        )
        assert not got.currencies
        got = await summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(organization_id=t.org, service_ids=[nobody], **t.days())
        )
        assert not got.currencies
        [entry] = (
            await summaries.GetProviderMetrics(
                pb.GetProviderMetricsRequest(
                    organization_id=t.org, provider_ids=[nobody], **t.days()
                )
            )
        ).providers
        assert entry == pb.ProviderMetrics(provider_id=nobody, error=entry.error)
        assert entry_status(entry)[1].resource_name == nobody
        await expect_not_found(
            summaries.GetClientBalance(
                pb.GetClientBalanceRequest(organization_id=t.org, client_id=nobody)
            ),
            "CLIENT_NOT_FOUND",
            nobody,
        )
        # The organization itself.
        await expect_not_found(
            summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(organization_id=nobody, **t.days())
            ),
            "ORGANIZATION_NOT_FOUND",
            nobody,
        )
        await expect_not_found(
            summaries.GetDashboard(pb.GetDashboardRequest(organization_id=nobody)),
            "ORGANIZATION_NOT_FOUND",
            nobody,
        )
        listed = await summaries.ListClientBalances(
            pb.ListClientBalancesRequest(organization_id=nobody, currency_code="EUR")
        )
        assert not listed.balances and not listed.next_page_token


async def test_another_tenants_ids_never_give_their_figures(
    summaries: Summaries, pair: Pair
) -> None:
    """Their provider, service and client named in my organization (in any
    case), and mine in theirs: NOT_FOUND or nothing; their amounts (7,000s)
    never appear in my answers, nor mine (1,000s) in theirs."""
    for me, them in ((pair.mine, pair.theirs), (pair.theirs, pair.mine)):
        days = me.days()
        for pid in (them.b.provider_id, them.b.provider_id.upper()):
            got = await summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(organization_id=me.org, provider_ids=[pid], **days)
            )
            assert not got.currencies
            got = await summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(
                    organization_id=me.org, provider_ids=[pid], currency_code="EUR", **days
                )
            )
            assert got.currencies[0].totals == pb.RevenueFigures(
                appointments=pb.AppointmentCounts()
            )
            entry, own = (
                await summaries.GetProviderMetrics(
                    pb.GetProviderMetricsRequest(
                        organization_id=me.org, provider_ids=[pid, me.b.provider_id], **days
                    )
                )
            ).providers
            assert entry == pb.ProviderMetrics(provider_id=pid.lower(), error=entry.error)
            assert entry_status(entry)[0].reason == "PROVIDER_NOT_FOUND"
            assert [r.figures.paid_minor for r in own.revenue] == [me.paid]
        for sid in (them.b.service_id, them.b.service_id.upper()):
            got = await summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(organization_id=me.org, service_ids=[sid], **days)
            )
            assert not got.currencies
        for cid in them.clients:
            await expect_not_found(
                summaries.GetClientBalance(
                    pb.GetClientBalanceRequest(organization_id=me.org, client_id=cid.upper())
                ),
                "CLIENT_NOT_FOUND",
                cid,
            )
        # My whole organization: my figures only.
        whole = await summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(organization_id=me.org, **days)
        )
        assert [c.totals.paid_minor for c in whole.currencies] == [me.paid]
        for code, amounts in (("EUR", {me.paid, me.paid + 1}), ("USD", {me.paid + 2})):
            listed = await summaries.ListClientBalances(
                pb.ListClientBalancesRequest(organization_id=me.org, currency_code=code)
            )
            assert {b.paid_minor for b in listed.balances} == amounts
            assert {b.client_id for b in listed.balances} <= set(me.clients)
        dashboard = await summaries.GetDashboard(
            pb.GetDashboardRequest(organization_id=me.org, date=pb_date(me.today), period=DAY)
        )
        assert [p.provider_id for p in dashboard.top_providers] == [me.b.provider_id]
        assert [r.figures.paid_minor for r in dashboard.current.revenue] == [me.paid]
        raw = whole.SerializeToString() + dashboard.SerializeToString()
        for secret in (them.org, them.b.provider_id, them.b.service_id, *them.clients):
            assert secret.encode() not in raw


# -- ListClientBalances: paging, bounds, tokens ------------------------------------------------


def signed(raw: bytes) -> str:
    """``raw`` as a token signed with the public development secret."""
    return base64.urlsafe_b64encode(raw + CODEC._mac(raw)).rstrip(b"=").decode()


def forge(scope: str, number: int = 2, keyset: Any = None, **extra: Any) -> str:
    """A token as the service makes them (``extra`` overrides or adds keys)."""
    payload = {"v": 1, "s": scope, "n": number, "k": [] if keyset is None else keyset, **extra}
    return signed(json.dumps(payload, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Balances:
    org: str
    # Client id -> EUR balance (charged - paid + refunded), all distinct.
    eur: dict[str, int]


@pytest_asyncio.fixture(loop_scope="session")
async def balances(stubs: Stubs) -> Balances:
    """Five clients with EUR payments without appointment (balance = -paid)."""
    org = await new_org(stubs)
    eur = {}
    for i in range(5):
        client = await make_client(stubs, org, f"c{i}")
        await pay(stubs, org, client, 100 * (i + 1), "EUR")
        eur[client] = -100 * (i + 1)
    return Balances(org, eur)


async def walk(summaries: Summaries, request: pb.ListClientBalancesRequest) -> list[str]:
    seen: list[str] = []
    while True:
        got = await summaries.ListClientBalances(request)
        seen += [b.client_id for b in got.balances]
        if not got.next_page_token:
            return seen
        request = replace_token(request, got.next_page_token)


def replace_token(
    request: pb.ListClientBalancesRequest, token: str
) -> pb.ListClientBalancesRequest:
    out = pb.ListClientBalancesRequest()
    out.CopyFrom(request)
    out.page_token = token
    return out


async def test_page_sizes_and_balance_bounds(summaries: Summaries, balances: Balances) -> None:
    org = balances.org
    by_balance_desc = sorted(balances.eur, key=lambda c: (-balances.eur[c], c))

    def req(**kw: Any) -> pb.ListClientBalancesRequest:
        return pb.ListClientBalancesRequest(organization_id=org, currency_code="EUR", **kw)

    for size in (-1, INT32_MIN):
        await expect_invalid(
            summaries.ListClientBalances(req(page_size=size)), "page_size", reason="OUT_OF_RANGE"
        )
    for size in (INT32_MAX, MAX_PAGE_SIZE + 1, 0):
        got = await summaries.ListClientBalances(req(page_size=size))
        assert [b.client_id for b in got.balances] == by_balance_desc
        assert got.page_info.page_size == (MAX_PAGE_SIZE if size else got.page_info.page_size)
        assert not got.next_page_token
    assert await walk(summaries, req(page_size=1)) == by_balance_desc
    for page in (-1, INT32_MIN):
        await expect_invalid(
            summaries.ListClientBalances(req(page=page)), "page", reason="OUT_OF_RANGE"
        )
    await expect_invalid(
        summaries.ListClientBalances(req(page=INT32_MAX, page_size=MAX_PAGE_SIZE)),
        "page",
        reason="OUT_OF_RANGE",
    )
    # min > max (by one, and at the extremes).
    for low, high in ((-299, -300), (INT64_MAX, INT64_MIN), (1, 0)):
        await expect_invalid(
            summaries.ListClientBalances(req(min_balance_minor=low, max_balance_minor=high)),
            "max_balance_minor",
            reason="INVALID_RANGE",
        )
    cases: list[tuple[dict[str, int], set[int]]] = [
        ({"min_balance_minor": INT64_MIN, "max_balance_minor": INT64_MAX}, set(range(1, 6))),
        ({"min_balance_minor": INT64_MIN}, set(range(1, 6))),
        ({"max_balance_minor": INT64_MAX}, set(range(1, 6))),
        ({"min_balance_minor": INT64_MAX}, set()),
        ({"max_balance_minor": INT64_MIN}, set()),
        ({"min_balance_minor": INT64_MAX, "max_balance_minor": INT64_MAX}, set()),
        ({"min_balance_minor": INT64_MIN, "max_balance_minor": INT64_MIN}, set()),
        ({"min_balance_minor": -300, "max_balance_minor": -300}, {3}),
        ({"min_balance_minor": -400, "max_balance_minor": -200}, {2, 3, 4}),
        ({"min_balance_minor": 0}, set()),  # nobody owes anything
        ({"max_balance_minor": 0}, set(range(1, 6))),
    ]
    for bounds, which in cases:
        expected = {c for c, v in balances.eur.items() if -v // 100 in which}
        for order in ("", "balance", "balance desc", "lifetime_value", "LIFETIME_VALUE  DESC"):
            for mode in (common_pb2.COUNT_MODE_EXACT, common_pb2.COUNT_MODE_ESTIMATED):
                request = req(order_by=order, count_mode=mode, page_size=2, **bounds)
                assert set(await walk(summaries, request)) == expected, (bounds, order)
                got = await summaries.ListClientBalances(request)
                if mode == common_pb2.COUNT_MODE_EXACT:
                    assert got.page_info.total_size == len(expected), (bounds, order)
    for order in (
        "balance asc desc",
        "client_id",
        "balance_minor",
        "lıfetime_value",
        "ＢＡＬＡＮＣＥ",
    ):
        await expect_invalid(
            summaries.ListClientBalances(req(order_by=order)),
            "order_by",
            reason="INVALID_ORDER_BY",
        )


async def test_page_tokens_forged_tampered_and_reused(
    summaries: Summaries, stubs: Stubs, balances: Balances
) -> None:
    """The development secret is public: a token signed with it is still
    untrusted. Another scope (currency, order, bounds, tenant, method) is
    PAGE_TOKEN_MISMATCH; a keyset or page number of the wrong type or range is
    INVALID_PAGE_TOKEN; a keyset of the right types anywhere (the int64
    extremes included) is a page of this request, never an error."""
    org = balances.org

    def req(**kw: Any) -> pb.ListClientBalancesRequest:
        fields: dict[str, Any] = {"organization_id": org, "currency_code": "EUR", "page_size": 2}
        return pb.ListClientBalancesRequest(**(fields | kw))

    first = await summaries.ListClientBalances(req())
    token = first.next_page_token
    assert token
    scope = token_payload(token)["s"]
    second = await summaries.ListClientBalances(req(page_token=token))
    # page_size and count_mode may change while paging; a token may be used twice.
    assert (await summaries.ListClientBalances(req(page_token=token))) == second
    await summaries.ListClientBalances(req(page_token=token, page_size=1000))
    await summaries.ListClientBalances(
        req(page_token=token, count_mode=common_pb2.COUNT_MODE_EXACT)
    )
    # A re-signed copy of a real token is the same token.
    real = token_payload(token)
    assert forge(real["s"], real["n"], real["k"]) == token

    other_org = await new_org(stubs)
    mismatched = [
        req(page_token=token, currency_code="USD"),
        req(page_token=token, order_by="balance"),
        req(page_token=token, order_by="lifetime_value desc"),
        req(page_token=token, min_balance_minor=INT64_MIN),
        req(page_token=token, max_balance_minor=INT64_MAX),
        req(page_token=token, min_balance_minor=0),
        req(page_token=token, organization_id=other_org),
        req(page_token=token, organization_id=NIL),
    ]
    for request in mismatched:
        await expect_invalid(
            summaries.ListClientBalances(request), "page_token", reason="PAGE_TOKEN_MISMATCH"
        )
    # A token of another list (ListPayments of the same tenant) or scope.
    payments = await stubs.payments.ListPayments(
        payments_pb2.ListPaymentsRequest(organization_id=org, page_size=1)
    )
    assert payments.next_page_token
    for foreign in (
        payments.next_page_token,
        forge(scope="0" * 32, keyset=token_payload(token)["k"]),
        forge(scope=scope.upper(), keyset=token_payload(token)["k"]),
        forge(scope="", keyset=token_payload(token)["k"]),
    ):
        await expect_invalid(
            summaries.ListClientBalances(req(page_token=foreign)),
            "page_token",
            reason="PAGE_TOKEN_MISMATCH",
        )

    key = token_payload(token)["k"]
    malformed = [
        "garbage",
        "",  # (empty: first page; below, as bytes)
        token[:-1],
        token + "A",
        token[:10],
        "A" * 4096,
        "====",
        "\U0010ffff",
        signed(b"not json"),
        signed(b"[]"),
        signed(b"null"),
        signed(b"[" * 100_000 + b"]" * 100_000),
        signed(b"\xff\xfe"),
        forge(scope, keyset={"a": 1}),
        forge(scope, keyset=[]),
        forge(scope, keyset=key[:1]),
        forge(scope, keyset=[*key, key[-1]]),
        forge(scope, keyset=[str(key[0]), key[1]]),
        forge(scope, keyset=[INT64_MAX + 1, key[1]]),
        forge(scope, keyset=[INT64_MIN - 1, key[1]]),
        forge(scope, keyset=[10**400, key[1]]),
        forge(scope, keyset=[1.5, key[1]]),
        forge(scope, keyset=[True, key[1]]),
        forge(scope, keyset=[None, key[1]]),
        forge(scope, keyset=[[1], key[1]]),
        forge(scope, keyset=[key[0], "not-a-uuid-not-a-uuid-not-a-uuid-xx"]),
        forge(scope, keyset=[key[0], key[1] + "0"]),
        forge(scope, keyset=[key[0], 12345]),
        forge(scope, keyset=[key[0], None]),
        forge(scope, keyset=[key[0], "\x00" * 36]),
        forge(scope, keyset=[key[0], "\ud800" * 36]),
        forge(scope, number=1, keyset=key),
        forge(scope, number=0, keyset=key),
        forge(scope, number=-1, keyset=key),
        forge(scope, number=MAX_PAGE_NUMBER + 1, keyset=key),
        forge(scope, number=True, keyset=key),
        forge(scope, number="2", keyset=key),  # type: ignore[arg-type]
        forge(scope, number=2.0, keyset=key),  # type: ignore[arg-type]
        forge(scope, keyset=key, v=2),
        forge(scope, keyset=key, v=None),
        forge(scope, keyset=key, s=None),
        forge(scope, keyset=key, s=[scope]),
    ]
    for bad in malformed:
        if not bad:
            continue
        outcome = await answer(summaries.ListClientBalances(req(page_token=bad)))
        assert isinstance(outcome, grpc.aio.AioRpcError), bad[:80]
        assert outcome.code() == INVALID, (bad[:80], outcome.code(), outcome.details())
        fields = {v.field: v.reason for v in details(outcome)["BadRequest"].field_violations}
        assert fields.keys() == {"page_token"}, (bad[:80], fields)
        assert fields["page_token"] in ("INVALID_PAGE_TOKEN", "PAGE_TOKEN_MISMATCH"), fields
    # A token with page: the two modes do not mix.
    await expect_invalid(
        summaries.ListClientBalances(req(page_token=token, page=2)),
        "page",
        reason="CONFLICTING_FIELDS",
    )
    # Keysets of the right types, anywhere: pages of this request.
    order = sorted(balances.eur, key=lambda c: (-balances.eur[c], c))  # balance desc
    for keyset, expected in (
        ([INT64_MAX, NIL], order),
        ([INT64_MAX, MAX_ID], order),
        ([INT64_MIN, NIL], []),
        ([INT64_MIN, MAX_ID], []),
        ([0, NIL], order),
        # (balance, client_id) both descending: after (-300, the last id)
        # comes -300's own client, after (-300, the nil id) the one below.
        ([-300, MAX_ID], order[2:]),
        ([-300, NIL], order[3:]),
        ([key[0], key[1].upper()], order[2:]),
    ):
        for number in (2, MAX_PAGE_NUMBER):
            got = await summaries.ListClientBalances(
                req(page_token=forge(scope, number=number, keyset=keyset), page_size=1000)
            )
            assert [b.client_id for b in got.balances] == expected, keyset
            assert got.page_info.page == number and not got.next_page_token
    walked = await summaries.ListClientBalances(
        req(page_token=forge(scope, number=MAX_PAGE_NUMBER, keyset=[INT64_MAX, NIL]), page_size=1)
    )
    assert token_payload(walked.next_page_token)["n"] == MAX_PAGE_NUMBER


# -- GetDashboard's top providers ------------------------------------------------------------


async def test_dashboard_top_providers(summaries: Summaries, pair: Pair) -> None:
    t = pair.mine
    for top in (-1, MAX_TOP_PROVIDERS + 1, INT32_MAX, INT32_MIN, -(2**30)):
        await expect_invalid(
            summaries.GetDashboard(
                pb.GetDashboardRequest(organization_id=t.org, top_providers=top)
            ),
            "top_providers",
            reason="OUT_OF_RANGE",
        )
    for top in (0, 1, MAX_TOP_PROVIDERS):
        got = await summaries.GetDashboard(
            pb.GetDashboardRequest(organization_id=t.org, top_providers=top, date=pb_date(t.today))
        )
        assert [p.provider_id for p in got.top_providers] == [t.b.provider_id]
        assert got.top_providers[0].completed_minor == PRICE
    # Everything wrong at once: every field named.
    await expect_invalid(
        summaries.GetDashboard(
            pb.GetDashboardRequest(
                organization_id=t.org[:-1],
                date=ymd(2025, 2, 30),
                period=-5,  # type: ignore[arg-type]
                top_providers=INT32_MAX,
                currency_code="eur",
            )
        ),
        "organization_id",
        "date",
        "period",
        "top_providers",
        "currency_code",
    )


# -- figures on the first and last bookable dates ---------------------------------------------


async def test_figures_on_the_first_and_last_bookable_dates(
    summaries: Summaries, stubs: Stubs
) -> None:
    """The first instants a booking may have (1970-01-01T00:0xZ) are 1969-12-31
    in Pago Pago; the last (just before 9000-01-01T00:00Z) is 9000-01-01 in
    Kiritimati. Both business dates are counted in every summary, by day,
    week and month (whole months from the month rows), for the organization,
    the providers and the service."""
    org = (await make_org(stubs)).id
    early = await make_provider(stubs, org, "Pacific/Pago_Pago", "Early")
    late = await make_provider(stubs, org, "Pacific/Kiritimati", "Late")
    service = await make_service(stubs, org, 30, PRICE, "EUR")
    await offer(stubs, org, [early, late], [service])
    client = await make_client(stubs, org)
    # (The epoch itself is a Timestamp of zeros: unset, REQUIRED.)
    earliest = EARLIEST_INSTANT + timedelta(minutes=1)
    first = await book(stubs, org, early, service, client, earliest, "completed")
    latest = LATEST_INSTANT - timedelta(minutes=30)
    last = await book(stubs, org, late, service, client, latest, "completed")
    edges = {
        early: local_date(first.start_time, PAGO_PAGO),
        late: local_date(last.start_time, KIRITIMATI),
    }
    assert edges == {early: date(1969, 12, 31), late: date(9000, 1, 1)}
    one = pb.RevenueFigures(
        expected_minor=PRICE,
        completed_minor=PRICE,
        appointments=pb.AppointmentCounts(completed=1, total=1, booked=1),
    )
    for provider, on in edges.items():
        around = [
            (on - timedelta(days=3), on + timedelta(days=3)),
            (on.replace(day=1) - timedelta(days=31), on + timedelta(days=40)),
            (on - timedelta(days=200), on + timedelta(days=165)),  # 366 days
        ]
        for low, high in around:
            for granularity in (DAY, WEEK, MONTH):
                sources: tuple[dict[str, Any], ...] = (
                    {},
                    {"provider_ids": [provider]},
                    {"service_ids": [service]},
                )
                for ids in sources:
                    got = await summaries.GetRevenueSummary(
                        pb.GetRevenueSummaryRequest(
                            organization_id=org,
                            granularity=granularity,
                            **span(low, high),
                            **ids,
                        )
                    )
                    [eur] = got.currencies
                    what = (on, low, high, granularity, ids)
                    assert eur.totals == one, what
                    [bucket] = [b for b in eur.buckets if b.figures.appointments.completed]
                    assert as_date(bucket.start_date) <= on <= as_date(bucket.end_date), what
            [metrics] = (
                await summaries.GetProviderMetrics(
                    pb.GetProviderMetricsRequest(
                        organization_id=org, provider_ids=[provider], **span(low, high)
                    )
                )
            ).providers
            assert metrics.appointments == one.appointments
            # The first visit with each provider (with the organization: the early one).
            assert (metrics.unique_clients, metrics.new_clients) == (1, 1)
        for period in (DAY, WEEK, MONTH):
            got_dashboard = await summaries.GetDashboard(
                pb.GetDashboardRequest(organization_id=org, date=pb_date(on), period=period)
            )
            assert got_dashboard.today == one.appointments
            assert [p.provider_id for p in got_dashboard.top_providers] == [provider]
            assert got_dashboard.current.new_clients == (1 if on == edges[early] else 0)
    balance = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=org, client_id=client)
    )
    assert balance.visits == 2 and balance.balances[0].charged_minor == 2 * PRICE
    assert balance.first_visit_time.ToDatetime(tzinfo=UTC) == earliest
    assert balance.last_visit_time.ToDatetime(tzinfo=UTC) == latest


# -- a response past gRPC's 4 MiB ---------------------------------------------------------------

# Each currency's series holds every bucket, zeros included: ~8.8 KB a year by
# day. Any three capital letters are a currency code, so 500 currencies with a
# figure in a year (500 services, one appointment each) make a response of
# some 4.4 MB, above the 4 MiB a gRPC client receives by default.
MANY_CURRENCIES = 500


async def test_a_revenue_summary_of_many_currencies_fits_in_a_message(
    summaries: Summaries, stubs: Stubs
) -> None:
    org = (await make_org(stubs)).id
    provider = await make_provider(stubs, org, "UTC")
    client = await make_client(stubs, org)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    codes = [f"Q{letters[i // 26]}{letters[i % 26]}" for i in range(MANY_CURRENCIES)]
    start = datetime(2025, 6, 2, tzinfo=UTC)
    gate = asyncio.Semaphore(16)

    async def one(i: int, code: str) -> None:
        async with gate:
            service = await make_service(stubs, org, 30, 100, code)
            await offer(stubs, org, [provider], [service])
            await book(stubs, org, provider, service, client, start + timedelta(minutes=30 * i))

    await asyncio.gather(*(one(i, code) for i, code in enumerate(codes)))
    request = pb.GetRevenueSummaryRequest(
        organization_id=org, granularity=DAY, **span(date(2025, 1, 1), date(2025, 12, 31))
    )
    # A year by month is small: every currency is there.
    by_month = await summaries.GetRevenueSummary(
        pb.GetRevenueSummaryRequest(
            organization_id=org, granularity=MONTH, **span(date(2025, 1, 1), date(2025, 12, 31))
        )
    )
    assert [c.currency_code for c in by_month.currencies] == codes
    outcome = await answer(summaries.GetRevenueSummary(request))
    assert isinstance(outcome, grpc.aio.AioRpcError), "500 x 365 buckets: past the bound"
    assert_documented(outcome, "a year by day in 500 currencies")
    assert outcome.code() == grpc.StatusCode.OUT_OF_RANGE, outcome.details()
    info = details(outcome)["ErrorInfo"]
    assert (info.reason, info.metadata["buckets"]) == ("SUMMARY_TOO_LARGE", str(500 * 365))


# -- deadlines --------------------------------------------------------------------------------


async def test_a_one_millisecond_deadline_on_each_rpc(
    summaries: Summaries, stubs: Stubs, pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """Heavy requests (100 providers over 366 days, a page of 1,000) with 1 ms
    to run, ten at a time: DEADLINE_EXCEEDED (or an answer), never INTERNAL,
    nothing logged as unhandled; then each is served again."""
    caplog.set_level(logging.WARNING, logger="server")
    t = pair.mine
    ids = [t.b.provider_id, *(str(uuid.uuid4()) for _ in range(MAX_IDS - 1))]
    year = span(t.today - timedelta(days=365), t.today)
    heavy: dict[str, Callable[[float], Awaitable[Any]]] = {
        "GetRevenueSummary": lambda s: summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(
                organization_id=t.org, provider_ids=ids, granularity=WEEK, **year
            ),
            timeout=s,
        ),
        "GetProviderMetrics": lambda s: summaries.GetProviderMetrics(
            pb.GetProviderMetricsRequest(organization_id=t.org, provider_ids=ids, **year),
            timeout=s,
        ),
        "GetClientBalance": lambda s: summaries.GetClientBalance(
            pb.GetClientBalanceRequest(organization_id=t.org, client_id=t.b.client_id), timeout=s
        ),
        "ListClientBalances": lambda s: summaries.ListClientBalances(
            pb.ListClientBalancesRequest(
                organization_id=t.org,
                currency_code="EUR",
                page_size=1000,
                count_mode=common_pb2.COUNT_MODE_EXACT,
            ),
            timeout=s,
        ),
        "GetDashboard": lambda s: summaries.GetDashboard(
            pb.GetDashboardRequest(organization_id=t.org, top_providers=MAX_TOP_PROVIDERS),
            timeout=s,
        ),
    }
    for name, call in heavy.items():
        codes = set()
        for seconds in (0.001, 0.0002, 0.005):
            outcomes = await asyncio.gather(*(answer(call(seconds)) for _ in range(10)))
            for outcome in outcomes:
                if isinstance(outcome, grpc.aio.AioRpcError):
                    assert outcome.code() == DEADLINE, (name, outcome.code(), outcome.details())
                    codes.add(outcome.code())
                else:
                    assert isinstance(outcome, Message), (name, outcome)
        assert DEADLINE in codes, name
        assert isinstance(await answer(call(30.0)), Message), name
    unhandled = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("server") and r.levelno >= logging.ERROR
    ]
    assert not unhandled, unhandled
    # The server still serves writes and reads promptly.
    again = await make_tenant(stubs, 5)
    got = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=again.org, client_id=again.b.client_id),
        timeout=10,
    )
    assert got.balances[0].paid_minor == 5


# -- figures at the edge of int64 ------------------------------------------------------------

# A rollup row holds int64: 9,223 payments of 10^15 fit (9.223e18 <= 2^63-1 =
# 9.223372...e18), the 9,224th does not. There is no limit on how many payments
# a client or an organization records, so a sum past 2^63-1 is within the
# documented limits: two clients, 9,223 payments for one and one for the other.
FITS = INT64_MAX // MAX_AMOUNT_MINOR
assert FITS == 9223 and (FITS + 1) * MAX_AMOUNT_MINOR > INT64_MAX


@dataclass(frozen=True)
class Huge:
    """An organization (zone UTC) with a provider in Kiritimati (UTC+14) and
    one in Pago Pago (UTC-11), each a completed EUR appointment of a client of
    its own; FITS payments of MAX_AMOUNT_MINOR for the first client and one
    for the second. Kiritimati's and Pago Pago's dates always differ: the two
    providers' figures are on different business dates."""

    org: str
    kiritimati: str
    pago_pago: str
    service: str
    heavy_client: str
    light_client: str
    heavy_appointment: str
    # The business dates of the payments.
    first: date
    last: date


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def huge(channel: grpc.aio.Channel) -> Huge:
    stubs = Stubs(channel)
    org = (await make_org(stubs)).id
    kiritimati = await make_provider(stubs, org, "Pacific/Kiritimati", "Kiri")
    pago_pago = await make_provider(stubs, org, "Pacific/Pago_Pago", "Pago")
    service = await make_service(stubs, org, 30, PRICE, "EUR")
    await offer(stubs, org, [kiritimati, pago_pago], [service])
    heavy, light = await make_client(stubs, org, "Heavy"), await make_client(stubs, org, "Light")
    now = datetime.now(UTC)
    a = await book(stubs, org, kiritimati, service, heavy, now + timedelta(hours=1), "completed")
    b = await book(stubs, org, pago_pago, service, light, now + timedelta(hours=2), "completed")
    gate = asyncio.Semaphore(16)

    async def one(client: str, appointment: str) -> resources_pb2.Payment:
        async with gate:
            return await pay(stubs, org, client, MAX_AMOUNT_MINOR, "EUR", appointment)

    made = await asyncio.gather(*(one(heavy, a.id) for _ in range(FITS)))
    lone = await one(light, b.id)
    dates = {local_date(p.create_time, KIRITIMATI) for p in made}
    dates.add(local_date(lone.create_time, PAGO_PAGO))
    assert len(dates) >= 2
    return Huge(org, kiritimati, pago_pago, service, heavy, light, a.id, min(dates), max(dates))


async def test_figures_up_to_int64_are_exact(summaries: Summaries, huge: Huge) -> None:
    """Every single figure that fits in int64 is reported exactly: the heavy
    client's balance and lifetime value, its provider's revenue and metrics."""
    top = FITS * MAX_AMOUNT_MINOR
    got = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=huge.org, client_id=huge.heavy_client)
    )
    [eur] = got.balances
    assert (eur.paid_minor, eur.payments, eur.charged_minor) == (top, FITS, PRICE)
    assert eur.balance_minor == PRICE - top and eur.lifetime_value_minor == top
    for order, first in (
        ("lifetime_value desc", huge.heavy_client),
        ("balance", huge.heavy_client),
    ):
        listed = await summaries.ListClientBalances(
            pb.ListClientBalancesRequest(
                organization_id=huge.org,
                currency_code="EUR",
                order_by=order,
                page_size=1,
                min_balance_minor=INT64_MIN,
                max_balance_minor=INT64_MAX,
            )
        )
        assert listed.balances[0].client_id == first and listed.balances[0].paid_minor == top
    days = span(huge.first, huge.last)
    for granularity in (DAY, WEEK, MONTH):
        got_revenue = await summaries.GetRevenueSummary(
            pb.GetRevenueSummaryRequest(
                organization_id=huge.org,
                provider_ids=[huge.kiritimati],
                granularity=granularity,
                **days,
            )
        )
        assert got_revenue.currencies[0].totals.paid_minor == top
    [metrics] = (
        await summaries.GetProviderMetrics(
            pb.GetProviderMetricsRequest(
                organization_id=huge.org, provider_ids=[huge.kiritimati], **days
            )
        )
    ).providers
    assert metrics.revenue[0].figures.paid_minor == top
    assert metrics.revenue[0].figures.payments == FITS


async def _week_from(stubs: Stubs, org: str, first: date) -> None:
    """The organization's weeks start on ``first``'s weekday."""
    await stubs.orgs.UpdateOrganization(
        organizations_pb2.UpdateOrganizationRequest(
            organization=resources_pb2.Organization(
                id=org,
                first_day_of_week=dayofweek_pb2.DayOfWeek.Value(
                    dayofweek_pb2.DayOfWeek.Name(first.isoweekday())
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["first_day_of_week"]),
        )
    )


SUMS = ["revenue by day", "revenue by week", "revenue by month", "revenue of the providers"]
SUMS += ["revenue of the service", "dashboard of the week", "dashboard of the month"]


@pytest.mark.parametrize("what", SUMS)
async def test_a_sum_past_int64_is_a_documented_answer(
    summaries: Summaries, channel: grpc.aio.Channel, huge: Huge, what: str
) -> None:
    """The organization's EUR paid_minor over the two dates is (FITS + 1) *
    10^15 > 2^63 - 1: it cannot be an int64 figure. The answer must say so
    (OUT_OF_RANGE or FAILED_PRECONDITION with ErrorInfo), not fail inside."""
    await _week_from(Stubs(channel), huge.org, huge.first)
    days = span(huge.first, huge.last)
    revenue = pb.GetRevenueSummaryRequest
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "revenue by day": lambda: summaries.GetRevenueSummary(
            revenue(organization_id=huge.org, granularity=DAY, **days)
        ),
        "revenue by week": lambda: summaries.GetRevenueSummary(
            revenue(organization_id=huge.org, granularity=WEEK, **days)
        ),
        "revenue by month": lambda: summaries.GetRevenueSummary(
            revenue(organization_id=huge.org, granularity=MONTH, **days)
        ),
        "revenue of the providers": lambda: summaries.GetRevenueSummary(
            revenue(
                organization_id=huge.org,
                provider_ids=[huge.kiritimati, huge.pago_pago],
                granularity=WEEK,
                **days,
            )
        ),
        "revenue of the service": lambda: summaries.GetRevenueSummary(
            revenue(organization_id=huge.org, service_ids=[huge.service], granularity=WEEK, **days)
        ),
        "dashboard of the week": lambda: summaries.GetDashboard(
            pb.GetDashboardRequest(organization_id=huge.org, date=pb_date(huge.last), period=WEEK)
        ),
        "dashboard of the month": lambda: summaries.GetDashboard(
            pb.GetDashboardRequest(
                organization_id=huge.org,
                date=pb_date(huge.last),
                period=MONTH if huge.first.month == huge.last.month else WEEK,
            )
        ),
    }
    outcome = await answer(calls[what]())
    assert isinstance(outcome, grpc.aio.AioRpcError), f"{what}: an int64 cannot hold the sum"
    assert outcome.code() == grpc.StatusCode.OUT_OF_RANGE, (what, outcome.details())
    assert details(outcome)["ErrorInfo"].reason == "TOTAL_OUT_OF_RANGE"


async def test_a_payment_past_int64_is_refused_with_a_documented_code(
    summaries: Summaries, channel: grpc.aio.Channel, huge: Huge
) -> None:
    stubs = Stubs(channel)
    outcome = await answer(
        pay(stubs, huge.org, huge.heavy_client, MAX_AMOUNT_MINOR, "EUR", huge.heavy_appointment)
    )
    assert isinstance(outcome, grpc.aio.AioRpcError), "the client's paid_minor is an int64"
    # Nothing of it was written.
    got = await summaries.GetClientBalance(
        pb.GetClientBalanceRequest(organization_id=huge.org, client_id=huge.heavy_client)
    )
    assert got.balances[0].payments == FITS
    listed = await payments_pb2_grpc.PaymentServiceStub(channel).ListPayments(
        payments_pb2.ListPaymentsRequest(
            organization_id=huge.org, page_size=1, count_mode=common_pb2.COUNT_MODE_EXACT
        )
    )
    assert listed.page_info.total_size == FITS + 1
    assert_documented(outcome, "RecordPayment")
    assert outcome.code() == grpc.StatusCode.OUT_OF_RANGE, outcome.code()
    assert details(outcome)["ErrorInfo"].reason == "TOTAL_OUT_OF_RANGE"


# -- no staleness ------------------------------------------------------------------------------


async def test_every_summary_reflects_each_write_at_once(
    summaries: Summaries, stubs: Stubs, org: str
) -> None:
    """Twenty times: book and complete an appointment, pay it, then read every
    summary at once (no pause, a fresh call each): each has it."""
    b = await make_bookable(stubs, org)
    today = datetime.now(BERLIN).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=BERLIN)
    first, last = today - timedelta(days=1), today + timedelta(days=1)
    paid = 0
    pay_dates: set[date] = set()
    for i in range(20):
        n = i + 1
        start = midnight + timedelta(minutes=30 * i)
        a = await book(stubs, org, b.provider_id, b.service_id, b.client_id, start, "completed")
        assert local_date(a.start_time, BERLIN) == today
        amount = 100 + i
        p = await pay(stubs, org, b.client_id, amount, "EUR", a.id)
        paid += amount
        pay_dates.add(local_date(p.create_time, BERLIN))
        assert pay_dates <= {today, today + timedelta(days=1)}

        revenue, metrics, balance, listed, dashboard = await asyncio.gather(
            summaries.GetRevenueSummary(
                pb.GetRevenueSummaryRequest(
                    organization_id=org, currency_code="EUR", **span(first, last)
                )
            ),
            summaries.GetProviderMetrics(
                pb.GetProviderMetricsRequest(
                    organization_id=org, provider_ids=[b.provider_id], **span(first, last)
                )
            ),
            summaries.GetClientBalance(
                pb.GetClientBalanceRequest(organization_id=org, client_id=b.client_id)
            ),
            summaries.ListClientBalances(
                pb.ListClientBalancesRequest(organization_id=org, currency_code="EUR")
            ),
            summaries.GetDashboard(
                pb.GetDashboardRequest(organization_id=org, date=pb_date(today), period=DAY)
            ),
        )
        totals = revenue.currencies[0].totals
        assert (totals.appointments.completed, totals.completed_minor) == (n, n * PRICE), i
        assert (totals.paid_minor, totals.payments) == (paid, n), i
        [entry] = metrics.providers
        assert entry.appointments.completed == n and entry.unique_clients == 1, i
        assert entry.revenue[0].figures.paid_minor == paid, i
        [eur] = balance.balances
        assert (eur.charged_minor, eur.paid_minor, balance.visits) == (n * PRICE, paid, n), i
        assert eur.balance_minor == n * PRICE - paid, i
        assert [x.balance_minor for x in listed.balances] == [n * PRICE - paid], i
        assert dashboard.today.completed == n, i
        [day] = dashboard.current.revenue
        assert day.figures.completed_minor == n * PRICE, i
        if pay_dates == {today}:
            assert day.figures.paid_minor == paid, i
        assert [(p.provider_id, p.completed_minor) for p in dashboard.top_providers] == [
            (b.provider_id, n * PRICE)
        ], i
