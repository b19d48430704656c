"""ScheduleService through a real channel on a real PostgreSQL: weekly working
hours, date overrides and time off (round trips, hostile calendar fields,
overlaps, limits, NOT_FOUND across tenants, request_id replay and reuse, one
audit event per write, atomic and serialized replaces)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from booking.v1 import (
    audit_pb2,
    providers_pb2,
    resources_pb2,
    schedules_pb2,
)
from google.protobuf import timestamp_pb2
from google.type import date_pb2, dayofweek_pb2, timeofday_pb2

from server.paging import PageRequest
from server.queries import schedules as q
from server.queries._listing import page_sql
from tests.conftest import Stubs, details, new_org, time_of_day, weekly

MON, TUE, SUN = 1, 2, 7


async def new_provider(stubs: Stubs, org: str, time_zone: str = "Europe/Berlin") -> str:
    response = await stubs.providers.CreateProvider(
        providers_pb2.CreateProviderRequest(
            organization_id=org,
            provider=resources_pb2.Provider(display_name="Pat", time_zone=time_zone),
        )
    )
    return response.provider.id


@pytest_asyncio.fixture(loop_scope="session")
async def provider(stubs: Stubs, org: str) -> str:
    return await new_provider(stubs, org)


def day(y: int, m: int, d: int) -> date_pb2.Date:
    return date_pb2.Date(year=y, month=m, day=d)


def rule(
    weekday: int,
    start: int,
    end: int,
    valid_from: date_pb2.Date | None = None,
    valid_to: date_pb2.Date | None = None,
) -> resources_pb2.WorkingHours:
    out = weekly(weekday, start, end)
    if valid_from is not None:
        out.valid_from.CopyFrom(valid_from)
    if valid_to is not None:
        out.valid_to.CopyFrom(valid_to)
    return out


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


T0 = datetime(2030, 3, 1, 9, tzinfo=UTC)


async def invalid(call: Awaitable[Any]) -> dict[str, str]:
    """The field violations (field -> reason) of a call that must be INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return {v.field: v.reason for v in details(err.value)["BadRequest"].field_violations}


async def not_found(call: Awaitable[Any], reason: str, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    info = details(err.value)
    assert info["ErrorInfo"].reason == reason
    assert info["ResourceInfo"].resource_name == name


def replace_hours(
    org: str, provider: str, *rules: resources_pb2.WorkingHours, request_id: str = ""
) -> schedules_pb2.ReplaceWorkingHoursRequest:
    return schedules_pb2.ReplaceWorkingHoursRequest(
        organization_id=org, provider_id=provider, working_hours=rules, request_id=request_id
    )


def shape(hours: Any) -> list[tuple[int, int, int, int, int, int, int]]:
    """Rules without their ids: (weekday, start h, start m, end h, end m, from, to)."""
    return [
        (
            h.day_of_week,
            h.start_time.hours,
            h.start_time.minutes,
            h.end_time.hours,
            h.end_time.minutes,
            h.valid_from.year * 10_000 + h.valid_from.month * 100 + h.valid_from.day,
            h.valid_to.year * 10_000 + h.valid_to.month * 100 + h.valid_to.day,
        )
        for h in hours
    ]


async def audit_actions(stubs: Stubs, org: str, resource_type: str, resource_id: str) -> list[str]:
    response = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(
            organization_id=org, resource_type=resource_type, resource_id=resource_id
        )
    )
    return [e.action for e in reversed(response.audit_events)]  # oldest first


# -- weekly working hours ---------------------------------------------------------------


async def test_replace_and_get_working_hours(stubs: Stubs, org: str, provider: str) -> None:
    sent = [
        rule(TUE, 13 * 60, 18 * 60),
        rule(MON, 12 * 60, 13 * 60),  # adjacent to the next one: allowed
        rule(MON, 9 * 60, 12 * 60),
        rule(SUN, 23 * 60 + 59, 1440),  # 23:59-24:00
        rule(MON, 0, 1, day(2030, 1, 1), day(2030, 1, 31)),
        rule(MON, 0, 1, day(2030, 2, 1)),  # same times, later dates: no overlap
        rule(TUE, 0, 60, None, day(2029, 12, 31)),
    ]
    # Output-only fields are ignored.
    sent[0].id = "not-an-id"
    sent[0].organization_id = str(uuid.uuid4())
    sent[0].provider_id = str(uuid.uuid4())
    replaced = await stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, *sent))
    expected = [
        (MON, 0, 0, 0, 1, 20300101, 20300131),
        (MON, 0, 0, 0, 1, 20300201, 0),
        (MON, 9, 0, 12, 0, 0, 0),
        (MON, 12, 0, 13, 0, 0, 0),
        (TUE, 0, 0, 1, 0, 0, 20291231),
        (TUE, 13, 0, 18, 0, 0, 0),
        (SUN, 23, 59, 24, 0, 0, 0),
    ]
    assert shape(replaced.working_hours) == expected
    for h in replaced.working_hours:
        assert uuid.UUID(h.id).version == 7
        assert (h.organization_id, h.provider_id) == (org, provider)
    got = await stubs.schedules.GetWorkingHours(
        schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=provider.upper())
    )
    assert got.time_zone == "Europe/Berlin"
    assert list(got.working_hours) == list(replaced.working_hours)
    # An empty list clears the schedule.
    cleared = await stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider))
    assert list(cleared.working_hours) == []
    got = await stubs.schedules.GetWorkingHours(
        schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=provider)
    )
    assert list(got.working_hours) == [] and got.time_zone == "Europe/Berlin"


def _hm(hours: int, minutes: int = 0, seconds: int = 0, nanos: int = 0) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=hours, minutes=minutes, seconds=seconds, nanos=nanos)


def _with(start: timeofday_pb2.TimeOfDay, end: timeofday_pb2.TimeOfDay) -> Any:
    return resources_pb2.WorkingHours(
        day_of_week=dayofweek_pb2.MONDAY, start_time=start, end_time=end
    )


BAD_RULES: list[tuple[str, resources_pb2.WorkingHours, dict[str, str]]] = [
    ("24:00 as a start", _with(_hm(24), _hm(24)), {"start_time": "OUT_OF_RANGE"}),
    ("seconds set", _with(_hm(9, 0, 30), _hm(10)), {"start_time": "INVALID_FORMAT"}),
    ("nanos set", _with(_hm(9), _hm(10, 0, 0, 1)), {"end_time": "INVALID_FORMAT"}),
    ("end before start", _with(_hm(10), _hm(9)), {"end_time": "INVALID_RANGE"}),
    ("end equals start", _with(_hm(10), _hm(10)), {"end_time": "INVALID_RANGE"}),
    ("end unset (00:00)", _with(_hm(10), _hm(0)), {"end_time": "INVALID_RANGE"}),
    ("24:01 end", _with(_hm(10), _hm(24, 1)), {"end_time": "OUT_OF_RANGE"}),
    (
        "hour 25",
        _with(_hm(25), _hm(26)),
        {"start_time": "OUT_OF_RANGE", "end_time": "OUT_OF_RANGE"},
    ),
    ("minute 60", _with(_hm(9, 60), _hm(11)), {"start_time": "OUT_OF_RANGE"}),
    ("negative", _with(_hm(-1), _hm(1)), {"start_time": "OUT_OF_RANGE"}),
    (
        "day unspecified",
        resources_pb2.WorkingHours(start_time=_hm(9), end_time=_hm(10)),
        {"day_of_week": "REQUIRED"},
    ),
    (
        "day 8",
        resources_pb2.WorkingHours(day_of_week=8, start_time=_hm(9), end_time=_hm(10)),
        {"day_of_week": "INVALID_ENUM"},
    ),
    ("year 0", rule(MON, 60, 120, day(0, 1, 1)), {"valid_from": "OUT_OF_RANGE"}),
    ("year 1899", rule(MON, 60, 120, day(1899, 12, 31)), {"valid_from": "OUT_OF_RANGE"}),
    ("year 10000", rule(MON, 60, 120, None, day(10000, 1, 1)), {"valid_to": "OUT_OF_RANGE"}),
    ("month 13", rule(MON, 60, 120, day(2030, 13, 1)), {"valid_from": "INVALID_FORMAT"}),
    ("Feb 30", rule(MON, 60, 120, None, day(2030, 2, 30)), {"valid_to": "INVALID_FORMAT"}),
    ("Feb 29 of 2029", rule(MON, 60, 120, day(2029, 2, 29)), {"valid_from": "INVALID_FORMAT"}),
    ("year only", rule(MON, 60, 120, date_pb2.Date(year=2030)), {"valid_from": "INVALID_FORMAT"}),
    (
        "from after to",
        rule(MON, 60, 120, day(2030, 2, 1), day(2030, 1, 31)),
        {"valid_to": "INVALID_RANGE"},
    ),
]


@pytest.mark.parametrize(("case", "bad", "fields"), BAD_RULES, ids=[c[0] for c in BAD_RULES])
async def test_hostile_rule_fields(
    stubs: Stubs,
    org: str,
    provider: str,
    case: str,
    bad: resources_pb2.WorkingHours,
    fields: dict[str, str],
) -> None:
    await stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, rule(TUE, 60, 120)))
    good = rule(SUN, 60, 120)
    violations = await invalid(
        stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, good, bad))
    )
    assert violations == {f"working_hours[1].{f}": r for f, r in fields.items()}, case
    # Nothing was written.
    got = await stubs.schedules.GetWorkingHours(
        schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=provider)
    )
    assert shape(got.working_hours) == [(TUE, 1, 0, 2, 0, 0, 0)]


async def test_edge_values_are_accepted(stubs: Stubs, org: str, provider: str) -> None:
    response = await stubs.schedules.ReplaceWorkingHours(
        replace_hours(
            org,
            provider,
            rule(MON, 0, 1440, day(1900, 1, 1), day(9999, 12, 31)),
            rule(TUE, 0, 1, day(2028, 2, 29), day(2028, 2, 29)),
            rule(TUE, 1439, 1440),
        )
    )
    assert shape(response.working_hours) == [
        (MON, 0, 0, 24, 0, 19000101, 99991231),
        (TUE, 0, 0, 0, 1, 20280229, 20280229),
        (TUE, 23, 59, 24, 0, 0, 0),
    ]


async def test_every_violation_is_reported_at_once(stubs: Stubs, org: str) -> None:
    violations = await invalid(
        stubs.schedules.ReplaceWorkingHours(
            schedules_pb2.ReplaceWorkingHoursRequest(
                organization_id="nope",
                provider_id="",
                request_id="bad id!",
                working_hours=[
                    _with(_hm(24), _hm(10)),
                    rule(MON, 60, 120, day(2030, 2, 30)),
                    resources_pb2.WorkingHours(start_time=_hm(9), end_time=_hm(9, 0, 1)),
                ],
            )
        )
    )
    assert violations == {
        "organization_id": "INVALID_FORMAT",
        "provider_id": "REQUIRED",
        "request_id": "INVALID_FORMAT",
        "working_hours[0].start_time": "OUT_OF_RANGE",
        "working_hours[1].valid_from": "INVALID_FORMAT",
        "working_hours[2].day_of_week": "REQUIRED",
        "working_hours[2].end_time": "INVALID_FORMAT",
    }


OVERLAPS: list[tuple[str, list[resources_pb2.WorkingHours], int | None]] = [
    ("same times", [rule(MON, 540, 720), rule(MON, 540, 720)], 0),
    ("inside", [rule(MON, 540, 720), rule(MON, 600, 660)], 0),
    ("one minute", [rule(MON, 540, 720), rule(MON, 719, 780)], 0),
    ("adjacent", [rule(MON, 540, 720), rule(MON, 720, 780)], None),
    ("other day", [rule(MON, 540, 720), rule(TUE, 540, 720)], None),
    (
        "disjoint dates",
        [
            rule(MON, 540, 720, None, day(2030, 1, 31)),
            rule(MON, 540, 720, day(2030, 2, 1), None),
        ],
        None,
    ),
    (
        "dates share one day",
        [
            rule(MON, 540, 720, None, day(2030, 2, 1)),
            rule(MON, 540, 720, day(2030, 2, 1), None),
        ],
        0,
    ),
    ("open and bounded", [rule(MON, 540, 720), rule(MON, 600, 700, day(2030, 1, 1))], 0),
    (
        "bounded inside open-ended",
        [
            rule(MON, 540, 720, day(2030, 1, 1), day(2030, 1, 31)),
            rule(MON, 600, 700, None, day(2030, 1, 15)),
        ],
        0,
    ),
]


@pytest.mark.parametrize(("case", "rules", "clash"), OVERLAPS, ids=[c[0] for c in OVERLAPS])
async def test_overlapping_rules(
    stubs: Stubs,
    org: str,
    provider: str,
    case: str,
    rules: list[resources_pb2.WorkingHours],
    clash: int | None,
) -> None:
    # A third, unrelated rule first: the violation names the right indexes.
    request = replace_hours(org, provider, rule(SUN, 0, 60), *rules)
    if clash is None:
        response = await stubs.schedules.ReplaceWorkingHours(request)
        assert len(response.working_hours) == 3, case
        return
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.schedules.ReplaceWorkingHours(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [violation] = details(err.value)["BadRequest"].field_violations
    assert (violation.field, violation.reason) == ("working_hours[2]", "OVERLAPPING_HOURS")
    assert f"working_hours[{clash + 1}]" in violation.description


async def test_at_most_200_rules(stubs: Stubs, org: str, provider: str) -> None:
    rules = [rule(i % 7 + 1, (i // 7) * 10, (i // 7) * 10 + 5) for i in range(201)]
    violations = await invalid(
        stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, *rules))
    )
    assert violations == {"working_hours": "TOO_MANY"}
    response = await stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, *rules[:200]))
    assert len(response.working_hours) == 200


async def test_unknown_or_other_tenants_provider_is_not_found(
    stubs: Stubs, org: str, provider: str
) -> None:
    other_org = await new_org(stubs)
    others = await new_provider(stubs, other_org)
    await stubs.schedules.ReplaceWorkingHours(replace_hours(other_org, others, rule(MON, 0, 60)))
    for pid in (str(uuid.uuid4()), others, others.upper()):
        await not_found(
            stubs.schedules.ReplaceWorkingHours(replace_hours(org, pid, rule(MON, 60, 120))),
            "PROVIDER_NOT_FOUND",
            pid.lower(),
        )
        await not_found(
            stubs.schedules.GetWorkingHours(
                schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=pid)
            ),
            "PROVIDER_NOT_FOUND",
            pid.lower(),
        )
        await not_found(
            stubs.schedules.ReplaceDateOverrides(
                overrides(org, pid, day(2030, 1, 1), day(2030, 1, 2), closed(day(2030, 1, 1)))
            ),
            "PROVIDER_NOT_FOUND",
            pid.lower(),
        )
        await not_found(
            stubs.schedules.GetDateOverrides(
                schedules_pb2.GetDateOverridesRequest(
                    organization_id=org,
                    provider_id=pid,
                    start_date=day(2030, 1, 1),
                    end_date=day(2030, 1, 2),
                )
            ),
            "PROVIDER_NOT_FOUND",
            pid.lower(),
        )
        await not_found(
            stubs.schedules.CreateTimeOff(time_off(org, pid, T0, T0 + timedelta(hours=1))),
            "PROVIDER_NOT_FOUND",
            pid.lower(),
        )
    # The other tenant's schedule is untouched.
    got = await stubs.schedules.GetWorkingHours(
        schedules_pb2.GetWorkingHoursRequest(organization_id=other_org, provider_id=others)
    )
    assert shape(got.working_hours) == [(MON, 0, 0, 1, 0, 0, 0)]


async def test_request_id_replay_and_reuse(stubs: Stubs, org: str, provider: str) -> None:
    request = replace_hours(org, provider, rule(MON, 540, 600), request_id="wh-1")
    first = await stubs.schedules.ReplaceWorkingHours(request)
    # Someone else changes the hours in between: the retry still gets the first answer.
    await stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, rule(TUE, 0, 60)))
    again = await stubs.schedules.ReplaceWorkingHours(request)
    assert again == first
    got = await stubs.schedules.GetWorkingHours(
        schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=provider)
    )
    assert shape(got.working_hours) == [(TUE, 0, 0, 1, 0, 0, 0)], "the retry wrote again"
    # Output-only fields do not make another request of it.
    noisy = replace_hours(org, provider, rule(MON, 540, 600), request_id="wh-1")
    noisy.working_hours[0].id = "ignored"
    assert await stubs.schedules.ReplaceWorkingHours(noisy) == first
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.schedules.ReplaceWorkingHours(
            replace_hours(org, provider, rule(MON, 540, 601), request_id="wh-1")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    assert await audit_actions(stubs, org, "provider", provider) == [
        "create",
        "replace_working_hours",
        "replace_working_hours",
    ]


async def test_one_audit_event_per_replace(stubs: Stubs, org: str, provider: str) -> None:
    many = [rule(d, 60, 120) for d in range(1, 8)]
    await stubs.schedules.ReplaceWorkingHours(
        replace_hours(org, provider, *many, request_id="audit-wh")
    )
    await stubs.schedules.ReplaceDateOverrides(
        overrides(org, provider, day(2030, 1, 1), day(2030, 1, 31), closed(day(2030, 1, 5)))
    )
    response = await stubs.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(
            organization_id=org, resource_type="provider", resource_id=provider
        )
    )
    events = list(reversed(response.audit_events))
    assert [e.action for e in events] == [
        "create",
        "replace_working_hours",
        "replace_date_overrides",
    ]
    assert events[1].request_id == "audit-wh" and events[2].request_id == ""


async def test_a_failing_replace_leaves_the_old_rules(
    stubs: Stubs, org: str, provider: str, db: asyncpg.Connection
) -> None:
    """The replace's INSERT fails after its DELETE ran (a trigger, for this
    provider only): the transaction rolls back, the old rules stay whole."""
    old = await stubs.schedules.ReplaceWorkingHours(
        replace_hours(org, provider, rule(MON, 60, 120), rule(TUE, 60, 120))
    )
    function = f"fail_{uuid.uuid4().hex}"
    await db.execute(
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.provider_id = '{provider}' AND NEW.start_minute = 7 THEN "
        "RAISE EXCEPTION 'planted failure'; END IF; RETURN NEW; END $$"
    )
    await db.execute(
        f"CREATE TRIGGER {function} BEFORE INSERT ON working_hours "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await stubs.schedules.ReplaceWorkingHours(
                replace_hours(org, provider, rule(SUN, 0, 60), rule(SUN, 7, 60 * 8 + 7))
            )
    finally:
        await db.execute(f"DROP TRIGGER {function} ON working_hours")
        await db.execute(f"DROP FUNCTION {function}()")
    got = await stubs.schedules.GetWorkingHours(
        schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=provider)
    )
    assert list(got.working_hours) == list(old.working_hours)
    assert await audit_actions(stubs, org, "provider", provider) == [
        "create",
        "replace_working_hours",
    ]


async def test_concurrent_replaces_leave_one_set_whole(
    stubs: Stubs, org: str, provider: str
) -> None:
    a = [rule(d, 60, 120) for d in range(1, 8)]
    b = [rule(d, 600, 660) for d in range(1, 8)] + [rule(MON, 700, 720)]
    for _ in range(8):
        await asyncio.gather(
            *(
                stubs.schedules.ReplaceWorkingHours(replace_hours(org, provider, *rules))
                for rules in (a, b, a, b)
            )
        )
        got = await stubs.schedules.GetWorkingHours(
            schedules_pb2.GetWorkingHoursRequest(organization_id=org, provider_id=provider)
        )
        stored = shape(got.working_hours)
        assert stored in (sorted(shape(a)), sorted(shape(b))), stored


# -- date overrides ---------------------------------------------------------------------


def closed(on: date_pb2.Date) -> resources_pb2.DateOverride:
    return resources_pb2.DateOverride(date=on, closed=True)


def hours_on(on: date_pb2.Date, *intervals: tuple[int, int]) -> resources_pb2.DateOverride:
    return resources_pb2.DateOverride(
        date=on,
        intervals=[
            resources_pb2.TimeInterval(start_time=time_of_day(s), end_time=time_of_day(e))
            for s, e in intervals
        ],
    )


def overrides(
    org: str,
    provider: str,
    start: date_pb2.Date,
    end: date_pb2.Date,
    *items: resources_pb2.DateOverride,
    request_id: str = "",
) -> schedules_pb2.ReplaceDateOverridesRequest:
    return schedules_pb2.ReplaceDateOverridesRequest(
        organization_id=org,
        provider_id=provider,
        start_date=start,
        end_date=end,
        date_overrides=items,
        request_id=request_id,
    )


def override_shape(items: Any) -> list[tuple[str, bool, list[tuple[int, int]]]]:
    return [
        (
            f"{o.date.year:04d}-{o.date.month:02d}-{o.date.day:02d}",
            o.closed,
            [
                (
                    i.start_time.hours * 60 + i.start_time.minutes,
                    i.end_time.hours * 60 + i.end_time.minutes,
                )
                for i in o.intervals
            ],
        )
        for o in items
    ]


async def get_overrides(
    stubs: Stubs, org: str, provider: str, start: date_pb2.Date, end: date_pb2.Date
) -> schedules_pb2.GetDateOverridesResponse:
    return await stubs.schedules.GetDateOverrides(
        schedules_pb2.GetDateOverridesRequest(
            organization_id=org, provider_id=provider, start_date=start, end_date=end
        )
    )


async def test_replace_and_get_date_overrides(stubs: Stubs, org: str, provider: str) -> None:
    noisy = hours_on(day(2030, 1, 7), (780, 1440), (0, 60), (60, 120))  # adjacent: allowed
    noisy.id = "deprecated"
    noisy.start_time.CopyFrom(time_of_day(600))
    noisy.end_time.CopyFrom(time_of_day(660))
    noisy.organization_id = str(uuid.uuid4())
    replaced = await stubs.schedules.ReplaceDateOverrides(
        overrides(org, provider, day(2030, 1, 1), day(2030, 1, 31), noisy, closed(day(2030, 1, 3)))
    )
    expected = [
        ("2030-01-03", True, []),
        ("2030-01-07", False, [(0, 60), (60, 120), (780, 1440)]),
    ]
    assert override_shape(replaced.date_overrides) == expected
    for o in replaced.date_overrides:
        assert (o.organization_id, o.provider_id, o.id) == (org, provider, "")
        assert not o.HasField("start_time") and not o.HasField("end_time")
    got = await get_overrides(stubs, org, provider, day(2030, 1, 1), day(2030, 12, 31))
    assert got.time_zone == "Europe/Berlin"
    assert list(got.date_overrides) == list(replaced.date_overrides)
    # A replace of another range leaves these; one of an overlapping range replaces its part.
    await stubs.schedules.ReplaceDateOverrides(
        overrides(org, provider, day(2030, 2, 1), day(2030, 2, 28), closed(day(2030, 2, 1)))
    )
    await stubs.schedules.ReplaceDateOverrides(
        overrides(
            org, provider, day(2030, 1, 5), day(2030, 1, 10), hours_on(day(2030, 1, 10), (60, 90))
        )
    )
    got = await get_overrides(stubs, org, provider, day(2029, 12, 1), day(2030, 3, 1))
    assert override_shape(got.date_overrides) == [
        ("2030-01-03", True, []),
        ("2030-01-10", False, [(60, 90)]),
        ("2030-02-01", True, []),
    ]
    # Get's range is inclusive at both ends.
    got = await get_overrides(stubs, org, provider, day(2030, 1, 10), day(2030, 2, 1))
    assert [o[0] for o in override_shape(got.date_overrides)] == ["2030-01-10", "2030-02-01"]
    # An empty list clears the range.
    await stubs.schedules.ReplaceDateOverrides(
        overrides(org, provider, day(2030, 1, 1), day(2030, 1, 31))
    )
    got = await get_overrides(stubs, org, provider, day(2029, 12, 1), day(2030, 3, 1))
    assert override_shape(got.date_overrides) == [("2030-02-01", True, [])]


BAD_OVERRIDES: list[tuple[str, list[resources_pb2.DateOverride], dict[str, str]]] = [
    ("outside the range", [closed(day(2030, 2, 1))], {"date_overrides[0].date": "OUT_OF_RANGE"}),
    ("date unset", [closed(date_pb2.Date())], {"date_overrides[0].date": "REQUIRED"}),
    ("Feb 30", [closed(day(2030, 2, 30))], {"date_overrides[0].date": "INVALID_FORMAT"}),
    (
        "duplicate date",
        [closed(day(2030, 1, 2)), hours_on(day(2030, 1, 2), (60, 120))],
        {"date_overrides[1].date": "DUPLICATE_DATE"},
    ),
    (
        "closed with hours",
        [
            resources_pb2.DateOverride(
                date=day(2030, 1, 2),
                closed=True,
                intervals=[
                    resources_pb2.TimeInterval(
                        start_time=time_of_day(60), end_time=time_of_day(120)
                    )
                ],
            )
        ],
        {"date_overrides[0].intervals": "CONFLICTING_FIELDS"},
    ),
    (
        "open without hours",
        [resources_pb2.DateOverride(date=day(2030, 1, 2))],
        {"date_overrides[0].intervals": "REQUIRED"},
    ),
    (
        "overlapping intervals",
        [hours_on(day(2030, 1, 2), (60, 120), (600, 700), (119, 130))],
        {"date_overrides[0].intervals[2]": "OVERLAPPING_HOURS"},
    ),
    (
        "25 intervals",
        [hours_on(day(2030, 1, 2), *((i * 10, i * 10 + 5) for i in range(25)))],
        {"date_overrides[0].intervals": "TOO_MANY"},
    ),
    (
        "24:00 as a start",
        [hours_on(day(2030, 1, 2), (1440, 1440))],
        {"date_overrides[0].intervals[0].start_time": "OUT_OF_RANGE"},
    ),
    (
        "end before start",
        [hours_on(day(2030, 1, 2), (600, 540))],
        {"date_overrides[0].intervals[0].end_time": "INVALID_RANGE"},
    ),
]


@pytest.mark.parametrize(
    ("case", "items", "fields"), BAD_OVERRIDES, ids=[c[0] for c in BAD_OVERRIDES]
)
async def test_hostile_overrides(
    stubs: Stubs,
    org: str,
    provider: str,
    case: str,
    items: list[resources_pb2.DateOverride],
    fields: dict[str, str],
) -> None:
    await stubs.schedules.ReplaceDateOverrides(
        overrides(org, provider, day(2030, 1, 1), day(2030, 1, 31), closed(day(2030, 1, 20)))
    )
    violations = await invalid(
        stubs.schedules.ReplaceDateOverrides(
            overrides(org, provider, day(2030, 1, 1), day(2030, 1, 31), *items)
        )
    )
    assert violations == fields, case
    got = await get_overrides(stubs, org, provider, day(2030, 1, 1), day(2030, 1, 31))
    assert override_shape(got.date_overrides) == [("2030-01-20", True, [])]


async def test_24_intervals_and_366_days_are_the_limits(
    stubs: Stubs, org: str, provider: str
) -> None:
    full = hours_on(day(2028, 2, 29), *((i * 60, i * 60 + 60) for i in range(24)))
    response = await stubs.schedules.ReplaceDateOverrides(
        overrides(org, provider, day(2028, 1, 1), day(2028, 12, 31), full)  # 366 dates
    )
    assert len(response.date_overrides[0].intervals) == 24
    got = await get_overrides(stubs, org, provider, day(2028, 1, 1), day(2028, 12, 31))
    assert list(got.date_overrides) == list(response.date_overrides)


RANGES: list[tuple[str, date_pb2.Date, date_pb2.Date, dict[str, str]]] = [
    ("367 days", day(2030, 1, 1), day(2031, 1, 2), {"end_date": "RANGE_TOO_LONG"}),
    ("367 days, leap", day(2028, 1, 1), day(2029, 1, 1), {"end_date": "RANGE_TOO_LONG"}),
    ("end before start", day(2030, 1, 2), day(2030, 1, 1), {"end_date": "INVALID_RANGE"}),
    (
        "both unset",
        date_pb2.Date(),
        date_pb2.Date(),
        {"start_date": "REQUIRED", "end_date": "REQUIRED"},
    ),
    (
        "year 0",
        date_pb2.Date(year=0, month=1, day=1),
        day(2030, 1, 1),
        {"start_date": "OUT_OF_RANGE"},
    ),
    ("month 13", day(2030, 1, 1), day(2030, 13, 1), {"end_date": "INVALID_FORMAT"}),
    ("Feb 30", day(2030, 2, 30), day(2030, 3, 1), {"start_date": "INVALID_FORMAT"}),
]


@pytest.mark.parametrize(("case", "start", "end", "fields"), RANGES, ids=[c[0] for c in RANGES])
async def test_hostile_ranges(
    stubs: Stubs,
    org: str,
    provider: str,
    case: str,
    start: date_pb2.Date,
    end: date_pb2.Date,
    fields: dict[str, str],
) -> None:
    assert (
        await invalid(stubs.schedules.ReplaceDateOverrides(overrides(org, provider, start, end)))
        == fields
    )
    assert (
        await invalid(
            stubs.schedules.GetDateOverrides(
                schedules_pb2.GetDateOverridesRequest(
                    organization_id=org, provider_id=provider, start_date=start, end_date=end
                )
            )
        )
        == fields
    )


async def test_override_request_id_replay(stubs: Stubs, org: str, provider: str) -> None:
    request = overrides(
        org, provider, day(2030, 1, 1), day(2030, 1, 2), closed(day(2030, 1, 1)), request_id="do-1"
    )
    first = await stubs.schedules.ReplaceDateOverrides(request)
    # The deprecated fields are ignored by the fingerprint too.
    noisy = overrides(
        org, provider, day(2030, 1, 1), day(2030, 1, 2), closed(day(2030, 1, 1)), request_id="do-1"
    )
    noisy.date_overrides[0].id = "x"
    assert await stubs.schedules.ReplaceDateOverrides(noisy) == first
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.schedules.ReplaceDateOverrides(
            overrides(org, provider, day(2030, 1, 1), day(2030, 1, 3), request_id="do-1")
        )
    assert details(err.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    assert await audit_actions(stubs, org, "provider", provider) == [
        "create",
        "replace_date_overrides",
    ]


# -- time off ---------------------------------------------------------------------------


def time_off(
    org: str, provider: str, start: datetime, end: datetime, reason: str = "", request_id: str = ""
) -> schedules_pb2.CreateTimeOffRequest:
    return schedules_pb2.CreateTimeOffRequest(
        organization_id=org,
        time_off=resources_pb2.TimeOff(
            provider_id=provider, start_time=ts(start), end_time=ts(end), reason=reason
        ),
        request_id=request_id,
    )


async def list_time_off(stubs: Stubs, org: str, provider: str, **fields: Any) -> list[str]:
    response = await stubs.schedules.ListTimeOff(
        schedules_pb2.ListTimeOffRequest(organization_id=org, provider_id=provider, **fields)
    )
    return [t.reason for t in response.time_off]


async def test_create_list_and_delete_time_off(stubs: Stubs, org: str, provider: str) -> None:
    created = (
        await stubs.schedules.CreateTimeOff(
            time_off(org, provider, T0, T0 + timedelta(days=366), "sabbatical")
        )
    ).time_off
    assert uuid.UUID(created.id).version == 7
    assert (created.organization_id, created.provider_id, created.reason) == (
        org,
        provider,
        "sabbatical",
    )
    assert created.start_time.ToDatetime(tzinfo=UTC) == T0
    assert created.end_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(days=366)
    assert created.create_time.seconds > 0
    deleted = await stubs.schedules.DeleteTimeOff(
        schedules_pb2.DeleteTimeOffRequest(organization_id=org, time_off_id=created.id.upper())
    )
    assert deleted == schedules_pb2.DeleteTimeOffResponse()
    assert await list_time_off(stubs, org, provider) == []
    await not_found(
        stubs.schedules.DeleteTimeOff(
            schedules_pb2.DeleteTimeOffRequest(organization_id=org, time_off_id=created.id)
        ),
        "TIME_OFF_NOT_FOUND",
        created.id,
    )
    assert await audit_actions(stubs, org, "time_off", created.id) == ["create", "delete"]


async def test_time_off_validation(stubs: Stubs, org: str, provider: str) -> None:
    cases: list[tuple[schedules_pb2.CreateTimeOffRequest, dict[str, str]]] = [
        (time_off(org, "", T0, T0 + timedelta(hours=1)), {"time_off.provider_id": "REQUIRED"}),
        (time_off(org, provider, T0, T0), {"time_off.end_time": "INVALID_RANGE"}),
        (time_off(org, provider, T0, T0 - timedelta(1)), {"time_off.end_time": "INVALID_RANGE"}),
        (
            time_off(org, provider, T0, T0 + timedelta(days=366, microseconds=1)),
            {"time_off.end_time": "RANGE_TOO_LONG"},
        ),
        (
            time_off(org, provider, T0, T0 + timedelta(hours=1), "x" * 501),
            {"time_off.reason": "TOO_LONG"},
        ),
        (
            schedules_pb2.CreateTimeOffRequest(
                organization_id=org, time_off=resources_pb2.TimeOff(provider_id=provider)
            ),
            {"time_off.start_time": "REQUIRED", "time_off.end_time": "REQUIRED"},
        ),
    ]
    for seconds, nanos in ((0, 10**9), (1, -1), (253_402_300_800, 0), (-62_135_596_801, 0)):
        hostile = time_off(org, provider, T0, T0 + timedelta(hours=1))
        hostile.time_off.end_time.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
        cases.append((hostile, {"time_off.end_time": "OUT_OF_RANGE"}))
    for request, fields in cases:
        assert await invalid(stubs.schedules.CreateTimeOff(request)) == fields
    assert await invalid(
        stubs.schedules.ListTimeOff(
            schedules_pb2.ListTimeOffRequest(
                organization_id=org,
                provider_id=provider,
                start_time=timestamp_pb2.Timestamp(seconds=1, nanos=-1),
            )
        )
    ) == {"start_time": "OUT_OF_RANGE"}
    # The driver writes datetime.min / max as -infinity / infinity: refused.
    for start, end in (
        (datetime(1, 1, 1, tzinfo=UTC), T0),
        (datetime(1899, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), T0),
    ):
        assert await invalid(
            stubs.schedules.CreateTimeOff(time_off(org, provider, start, end))
        ) == {"time_off.start_time": "OUT_OF_RANGE"}
    end = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert await invalid(
        stubs.schedules.CreateTimeOff(time_off(org, provider, end - timedelta(1), end))
    ) == {"time_off.end_time": "OUT_OF_RANGE"}
    # The first and last instants accepted.
    first = datetime(1900, 1, 1, tzinfo=UTC)
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    await stubs.schedules.CreateTimeOff(time_off(org, provider, first, first + timedelta(1), "f"))
    await stubs.schedules.CreateTimeOff(time_off(org, provider, last - timedelta(1), last, "l"))
    assert await list_time_off(stubs, org, provider, start_time=ts(first)) == ["f", "l"]
    assert await list_time_off(stubs, org, provider, end_time=ts(last)) == ["f", "l"]
    extremes = {"start_time": ts(datetime(1, 1, 1, tzinfo=UTC)), "end_time": ts(end)}
    assert await list_time_off(stubs, org, provider, **extremes) == ["f", "l"]
    ok = await stubs.schedules.CreateTimeOff(
        time_off(org, provider, T0, T0 + timedelta(hours=1), "é" * 500)
    )
    assert len(ok.time_off.reason) == 500
    for bad_id in ("", "nope"):
        assert "time_off_id" in await invalid(
            stubs.schedules.DeleteTimeOff(
                schedules_pb2.DeleteTimeOffRequest(organization_id=org, time_off_id=bad_id)
            )
        )


async def test_time_off_request_ids(stubs: Stubs, org: str, provider: str) -> None:
    request = time_off(org, provider, T0, T0 + timedelta(hours=2), "a", request_id="to-1")
    first = await stubs.schedules.CreateTimeOff(request)
    assert await stubs.schedules.CreateTimeOff(request) == first
    assert await list_time_off(stubs, org, provider) == ["a"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.schedules.CreateTimeOff(
            time_off(org, provider, T0, T0 + timedelta(hours=3), "a", request_id="to-1")
        )
    assert details(err.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    # A retried delete with its request_id succeeds again; without one it is NOT_FOUND.
    delete = schedules_pb2.DeleteTimeOffRequest(
        organization_id=org, time_off_id=first.time_off.id, request_id="del-1"
    )
    await stubs.schedules.DeleteTimeOff(delete)
    await stubs.schedules.DeleteTimeOff(delete)
    await not_found(
        stubs.schedules.DeleteTimeOff(
            schedules_pb2.DeleteTimeOffRequest(organization_id=org, time_off_id=first.time_off.id)
        ),
        "TIME_OFF_NOT_FOUND",
        first.time_off.id,
    )
    assert await audit_actions(stubs, org, "time_off", first.time_off.id) == ["create", "delete"]


async def test_time_off_of_another_tenant_is_not_found(
    stubs: Stubs, org: str, provider: str
) -> None:
    other_org = await new_org(stubs)
    others = await new_provider(stubs, other_org)
    theirs = await stubs.schedules.CreateTimeOff(
        time_off(other_org, others, T0, T0 + timedelta(hours=1), "theirs")
    )
    await not_found(
        stubs.schedules.DeleteTimeOff(
            schedules_pb2.DeleteTimeOffRequest(organization_id=org, time_off_id=theirs.time_off.id)
        ),
        "TIME_OFF_NOT_FOUND",
        theirs.time_off.id,
    )
    assert await list_time_off(stubs, org, others) == []
    assert await list_time_off(stubs, other_org, others) == ["theirs"]


async def test_list_time_off_range_and_order(stubs: Stubs, org: str, provider: str) -> None:
    hour = timedelta(hours=1)
    spans = {
        "a": (T0, T0 + hour),
        "b": (T0 + hour, T0 + 3 * hour),
        "c": (T0 + 2 * hour, T0 + 4 * hour),
        "long": (T0 - timedelta(days=365), T0 + timedelta(days=1)),  # 366 days
        "far": (T0 + timedelta(days=30), T0 + timedelta(days=31)),
    }
    for reason, (start, end) in spans.items():
        await stubs.schedules.CreateTimeOff(time_off(org, provider, start, end, reason))
    other = await new_provider(stubs, org)
    await stubs.schedules.CreateTimeOff(time_off(org, other, T0, T0 + hour, "other"))
    assert await list_time_off(stubs, org, provider) == ["long", "a", "b", "c", "far"]
    assert await list_time_off(stubs, org, provider, order_by="start_time desc") == [
        "far",
        "c",
        "b",
        "a",
        "long",
    ]
    # [start, end) overlaps: touching is not overlapping.
    between = {"start_time": ts(T0 + hour), "end_time": ts(T0 + 2 * hour)}
    assert await list_time_off(stubs, org, provider, **between) == ["long", "b"]
    assert await list_time_off(stubs, org, provider, start_time=ts(T0 + 3 * hour)) == [
        "long",
        "c",
        "far",
    ]
    assert await list_time_off(stubs, org, provider, end_time=ts(T0)) == ["long"]
    # The 366-day time off still overlaps a range that starts just before its end.
    just = T0 + timedelta(days=1) - timedelta(microseconds=1)
    assert await list_time_off(
        stubs, org, provider, start_time=ts(just), end_time=ts(just + hour)
    ) == ["long"]
    # Paging through all of them.
    first = await stubs.schedules.ListTimeOff(
        schedules_pb2.ListTimeOffRequest(organization_id=org, provider_id=provider, page_size=2)
    )
    second = await stubs.schedules.ListTimeOff(
        schedules_pb2.ListTimeOffRequest(
            organization_id=org, provider_id=provider, page_size=3, page_token=first.next_page_token
        )
    )
    assert [t.reason for t in (*first.time_off, *second.time_off)] == ["long", "a", "b", "c", "far"]
    assert not second.next_page_token


async def test_list_time_off_validation(stubs: Stubs, org: str, provider: str) -> None:
    assert await invalid(
        stubs.schedules.ListTimeOff(schedules_pb2.ListTimeOffRequest(organization_id=org))
    ) == {"provider_id": "REQUIRED"}
    assert await invalid(
        stubs.schedules.ListTimeOff(
            schedules_pb2.ListTimeOffRequest(
                organization_id=org,
                provider_id=provider,
                start_time=ts(T0),
                end_time=ts(T0),
                order_by="end_time",
            )
        )
    ) == {"end_time": "INVALID_RANGE", "order_by": "INVALID_ORDER_BY"}
    assert "provider_id" in await invalid(
        stubs.schedules.ListTimeOff(
            schedules_pb2.ListTimeOffRequest(organization_id=org, provider_id="x")
        )
    )
    # An unknown provider has no time off.
    assert await list_time_off(stubs, org, str(uuid.uuid4())) == []


# -- plans ------------------------------------------------------------------------------


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


async def explain_work(
    db: asyncpg.Connection, table: str, sql: str, args: list[Any]
) -> tuple[int, set[str]]:
    """EXPLAIN ANALYZE of a statement: the rows the scans of ``table`` produced
    or threw away (all loops), and the indexes they used."""
    raw = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    tree = json.loads(raw) if isinstance(raw, str) else raw
    work, indexes = 0, set()
    for node in plan_nodes(tree[0]["Plan"]):
        index = node.get("Index Name", "")
        if node.get("Relation Name") == table or index.startswith(f"ix_{table}"):
            work += node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            work += node.get("Rows Removed by Filter", 0) + node.get(
                "Rows Removed by Index Recheck", 0
            )
            if index:
                indexes.add(index)
    return work, indexes


async def test_time_off_range_reads_at_most_a_year_before_it(
    stubs: Stubs, org: str, provider: str, db: asyncpg.Connection
) -> None:
    """3,000 daily time offs of the provider (and as many of another): a page
    of those overlapping a late range starts its index walk at most
    MAX_TIME_OFF before the range, instead of at the provider's first one."""
    other = await new_provider(stubs, org)
    await db.execute(
        "INSERT INTO time_off (organization_id, id, provider_id, during) "
        "SELECT $1, gen_random_uuid(), p, tstzrange(t, t + interval '1 hour') "
        "FROM unnest($2::uuid[]) AS p, "
        "generate_series(timestamptz '2030-01-01', "
        "timestamptz '2030-01-01' + interval '2999 days', interval '1 day') AS t",
        org,
        [provider, other],
    )
    await db.execute("ANALYZE time_off")
    start = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=2500)
    order = q.TIME_OFF_LIST.orders["start_time"]
    query = q.build_list_time_off_query(org, q.TimeOffFilter(provider, start), order)
    sql, args = page_sql(query, PageRequest(size=50, number=1, offset=0, after=None))
    work, indexes = await explain_work(db, "time_off", sql, args)
    assert indexes == {"ix_time_off_org_provider_start_at_id"}
    # ~366 rows of the year before, then the page; the provider has 3,000.
    assert work <= 366 + 51 + 10, work
    response = await stubs.schedules.ListTimeOff(
        schedules_pb2.ListTimeOffRequest(
            organization_id=org, provider_id=provider, start_time=ts(start), page_size=2
        )
    )
    assert [t.start_time.ToDatetime(tzinfo=UTC) for t in response.time_off] == [
        start,
        start + timedelta(days=1),
    ]
