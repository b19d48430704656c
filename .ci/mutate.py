#!/usr/bin/env python3
# ruff: noqa: E501  (mutant texts are exact source lines)
"""Mutation check of the guarantee modules: plant one bug at a time in a COPY
of the repository and see whether the tests catch it. On demand, not in CI:

    .venv/bin/python .ci/mutate.py                 # every mutant
    .venv/bin/python .ci/mutate.py -k scope -k hmac  # mutants whose name has a word
    .venv/bin/python .ci/mutate.py --list
    .venv/bin/python .ci/mutate.py --source worktree  # the working tree, not HEAD

The copy is ``git archive HEAD`` (or the working tree's files with
``--source worktree``) in a temporary directory; the files of this checkout
are never touched. Each mutant is one or more exact text replacements
``(file, old, new)``; a mutant may list alternatives (the same bug in another
layout of the code) and the first that applies is planted. When none applies
(the code moved), the mutant is reported as "does not apply", not as an
error. Each mutant runs only the tests mapped to it (``-x -q``, a timeout),
with this checkout's virtualenv and ``PYTHONPATH`` set to the copy.
``BOOKING_TEST_DATABASE_URL`` is passed through (e.g. the local PostgreSQL 15
makes every run ~3 s faster than starting an embedded one).

Exit status: 0 when every applicable mutant was caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"

Edit = tuple[str, str, str]  # (file, old text, new text)


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    # Alternatives: each a list of edits applied together; the first that applies wins.
    alternatives: list[list[Edit]]
    tests: list[str]
    # Optional pytest -k expression.
    select: str = ""
    timeout_s: int = 300
    notes: str = field(default="")


def one(file: str, old: str, new: str) -> list[list[Edit]]:
    return [[(file, old, new)]]


CROSS = "tests/test_cross_tenant.py"
PAGING = "tests/test_paging_contract.py"
HOSTILE = "tests/test_hostile_input.py"
WRITES = "tests/test_writes.py"
FAULTS = "tests/test_faults.py"
LISTS = "tests/test_list_clients.py"
INTERCEPTOR = "tests/test_interceptor.py"
SCHED = "tests/test_scheduling.py"
AVAIL = "tests/test_availability.py"
ORACLE = "tests/test_availability_oracle.py"
APPTS = "tests/test_appointments.py"
LOCKS = "tests/test_booking_locks.py"
CONCURRENCY = "tests/test_booking_concurrency.py"
MUTANT_TESTS = "tests/test_booking_mutants.py"
LIST_FILTERS = "tests/test_lists.py"
DAY_SHEET = "tests/test_provider_schedule.py"
EXPLAIN_LISTS = "tests/test_explain_lists.py"
PAYMENTS = "tests/test_payments.py"
ROLLUPS_EXACT = "tests/test_rollups_exact.py"
ROLLUPS_RACE = "tests/test_rollups_concurrency.py"
ROLLUP_CHECK = "tests/test_rollup_check.py"
SUMMARIES = "tests/test_summaries.py"

MUTANTS: list[Mutant] = [
    # -- tenant isolation (server/queries/_crud.py, list builders) -----------------
    Mutant(
        "crud-get-no-tenant",
        "get_row: the tenant filter dropped from the SELECT",
        one(
            "server/queries/_crud.py",
            'where = "organization_id = $1 AND id = $2" if entity.tenant_scoped else "id = $1"\n'
            '    sql = f"SELECT',
            'where = "$1::uuid IS NOT NULL AND id = $2" if entity.tenant_scoped else "id = $1"\n'
            '    sql = f"SELECT',
        ),
        [CROSS],
    ),
    Mutant(
        "crud-update-no-tenant",
        "update_row: the tenant filter dropped from the UPDATE",
        one(
            "server/queries/_crud.py",
            'where, n = "organization_id = $1 AND id = $2", 2',
            'where, n = "$1::uuid IS NOT NULL AND id = $2", 2',
        ),
        [CROSS],
    ),
    Mutant(
        "crud-update-no-version-check",
        "update_row: the etag (version) check dropped from the UPDATE",
        one(
            "server/queries/_crud.py",
            'where += f" AND version = ${n}"',
            'where += f" AND ${n}::int IS NOT NULL"',
        ),
        [WRITES],
        select="etag",
    ),
    Mutant(
        "crud-update-audited-as-create",
        "update_row: the audit event says 'create'",
        one(
            "server/queries/_crud.py",
            '    audit: Audit,\n    action: str = "update",\n) -> asyncpg.Record:',
            '    audit: Audit,\n    action: str = "create",\n) -> asyncpg.Record:',
        ),
        [CROSS, WRITES],
    ),
    Mutant(
        "lock-row-no-for-update",
        "lock_row: the row not locked (concurrent transitions both pass their check)",
        one(
            "server/queries/_crud.py",
            'return sql + " FOR UPDATE" if lock else sql',
            "return sql",
        ),
        ["tests/test_transitions.py"],
    ),
    Mutant(
        "list-clients-no-tenant",
        "ListClients query: organization_id predicate dropped",
        one(
            "server/queries/clients.py",
            'query.where(f"organization_id = {query.param(org_id)}")',
            'query.where(f"{query.param(org_id)}::uuid IS NOT NULL")',
        ),
        [CROSS],
    ),
    Mutant(
        "list-audit-no-tenant",
        "ListAuditEvents query: organization_id predicate dropped",
        one(
            "server/queries/audit.py",
            'query.where(f"organization_id = {query.param(org_id)}")',
            'query.where(f"{query.param(org_id)}::uuid IS NOT NULL")',
        ),
        [CROSS],
    ),
    # -- page token scope (server/handlers/_lists.py) -------------------------------
    Mutant(
        "scope-no-tenant",
        "ListSpec.scope: the tenant left out of the token's scope",
        one(
            "server/handlers/_lists.py",
            "request_scope(method, listing, org_id, order, desc, *fields)",
            "request_scope(method, listing, order, desc, *fields)",
        ),
        [PAGING],
        select="bound",
    ),
    Mutant(
        "scope-no-filters",
        "ListSpec.scope: the filters left out of the token's scope",
        one(
            "server/handlers/_lists.py",
            "request_scope(method, listing, org_id, order, desc, *fields)",
            "request_scope(method, listing, org_id, order, desc)",
        ),
        [PAGING],
        select="bound",
    ),
    Mutant(
        "scope-first-filter-dropped",
        "ListSpec.scope: the filters dataclass's first field left out",
        one(
            "server/handlers/_lists.py",
            "for f in dataclasses.fields(flt)]",
            "for f in dataclasses.fields(flt)[1:]]",
        ),
        [PAGING],
        select="bound",
    ),
    Mutant(
        "scope-no-direction",
        "ListSpec.scope: the order's direction left out of the scope",
        one(
            "server/handlers/_lists.py",
            "request_scope(method, listing, org_id, order, desc, *fields)",
            "request_scope(method, listing, org_id, order, *fields)",
        ),
        [PAGING],
        select="bound",
    ),
    Mutant(
        "lists-keyset-unchecked",
        "ListSpec._page: the token's keyset used without KeyType decoding",
        one(
            "server/handlers/_lists.py",
            "after = order.keyset_in(page.after)",
            "after = tuple(page.after)",
        ),
        [PAGING],
        select="signed",
    ),
    Mutant(
        "lists-no-check-text",
        "ListSpec.serve: NUL characters not checked",
        one(
            "server/handlers/_lists.py",
            "        v = request_violations(request)\n",
            "        v = request_violations(request)\n        v.items.clear()\n",
        ),
        [HOSTILE],
        select="nul",
    ),
    # -- signed page tokens (server/paging.py) --------------------------------------
    Mutant(
        "paging-no-hmac",
        "PageTokenCodec.decode: the HMAC not compared",
        one(
            "server/paging.py",
            "if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(payload)):",
            "if len(raw) <= 16:",
        ),
        [PAGING],
        select="tampered",
    ),
    Mutant(
        "paging-no-scope-compare",
        "PageTokenCodec.decode: the scope not compared",
        one(
            "server/paging.py",
            "if not hmac.compare_digest(token_scope, scope):",
            "if False:",
        ),
        [PAGING],
        select="bound",
    ),
    Mutant(
        "paging-page-number-unbounded",
        "PageTokenCodec.decode: the page number's range not checked",
        one("server/paging.py", "or not 2 <= number <= MAX_PAGE_NUMBER", ""),
        [PAGING],
        select="signed",
    ),
    Mutant(
        "paging-no-clamp",
        "resolve_page: page_size above the maximum not clamped",
        one(
            "server/paging.py",
            "size = default_size if page_size == 0 else min(page_size, max_size)",
            "size = default_size if page_size == 0 else page_size",
        ),
        [PAGING],
        select="page_size",
    ),
    Mutant(
        "paging-negative-size",
        "check_paging: page_size -1 let through",
        one("server/paging.py", "if page_size < 0:", "if page_size < -1:"),
        [PAGING],
        select="page_size",
    ),
    Mutant(
        "paging-no-max-offset",
        "resolve_page: page-number mode without the max_offset bound",
        one("server/paging.py", "if offset + size > max_offset:", "if False:"),
        [PAGING],
        select="page_number",
    ),
    # -- keyset values (server/queries/_listing.py) ---------------------------------
    Mutant(
        "keyset-text-unchecked",
        "KeyType.TEXT: type, length and NUL not checked",
        one(
            "server/queries/_listing.py",
            '    if not isinstance(value, str) or len(value) > _MAX_TEXT_KEY or "\\x00" in value:',
            "    if False:",
        ),
        [PAGING],
        select="signed",
    ),
    Mutant(
        "keyset-uuid-unchecked",
        "KeyType.UUID: not parsed",
        one(
            "server/queries/_listing.py",
            "    return str(uuid.UUID(value))",
            "    return value",
        ),
        [PAGING],
        select="signed",
    ),
    Mutant(
        "keyset-int-bool-and-range",
        "KeyType integers: bools and out-of-range integers let through",
        one(
            "server/queries/_listing.py",
            "if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:",
            "if not isinstance(value, int):",
        ),
        [PAGING],
        select="signed",
    ),
    Mutant(
        "keyset-timestamp-range",
        "KeyType.TIMESTAMP: the microsecond range not checked",
        # Equivalent today: the range is Python's datetime range, so an
        # out-of-range value raises OverflowError, which the handler maps to
        # INVALID_PAGE_TOKEN too. Kept in case the range is ever narrowed.
        one(
            "server/queries/_listing.py",
            "if not _MIN_MICROS <= micros <= _MAX_MICROS:",
            "if False:",
        ),
        [PAGING],
        select="signed",
    ),
    Mutant(
        "keyset-length",
        "Order.keyset_in: the keyset's length not checked",
        [
            [
                (
                    "server/queries/_listing.py",
                    "        if len(after) != len(self.keys):\n"
                    '            raise ValueError("keyset length")\n',
                    "",
                ),
                (
                    "server/queries/_listing.py",
                    "zip(self.keys, after, strict=True)",
                    "zip(self.keys, after)",
                ),
            ]
        ],
        [PAGING],
        select="signed",
    ),
    Mutant(
        "page-sql-inclusive",
        "page_sql: the keyset comparison inclusive (a row twice)",
        one(
            "server/queries/_listing.py",
            'op = "<" if query.order.descending else ">"',
            'op = "<=" if query.order.descending else ">="',
        ),
        [PAGING],
        select="random_walks",
    ),
    Mutant(
        "page-sql-no-lookahead",
        "page_sql: LIMIT size instead of size + 1 (has_next wrong)",
        [
            [
                (
                    "server/queries/_listing.py",
                    'ORDER BY {order} "\n        f"LIMIT {param(page.size + 1)}"',
                    'ORDER BY {order} "\n        f"LIMIT {param(page.size)}"',
                )
            ],
            [
                (
                    "server/queries/_listing.py",
                    "LIMIT {param(page.size + 1)}",
                    "LIMIT {param(page.size)}",
                )
            ],
        ],
        [PAGING],
        select="walk or page_size",
    ),
    Mutant(
        "count-cap-off-by-one",
        "fetch_page: an exact count above the cap not reported as LOWER_BOUND",
        one("server/queries/_listing.py", "if total > count_cap:", "if total > count_cap + 1:"),
        [PAGING],
        select="count",
    ),
    # -- canonical ids and NUL (server/handlers/_base.py) -----------------------------
    Mutant(
        "no-canonical-ids",
        "canonical_ids does nothing",
        one(
            "server/handlers/_base.py",
            '    rows. Values that are not UUIDs are left for validation to report."""\n',
            '    rows. Values that are not UUIDs are left for validation to report."""\n'
            "    return\n",
        ),
        [HOSTILE, CROSS],
        select="upper or other_tenants",
    ),
    Mutant(
        "no-check-text",
        "check_text reports nothing",
        [
            [
                ("server/handlers/_base.py", 'if "\\x00" in value:', "if False:"),
                ("server/handlers/_base.py", 'if "\\x00" in item:', "if False:"),
            ]
        ],
        [HOSTILE],
        select="nul",
    ),
    # -- request ids (server/queries/requests.py, server/handlers/_writes.py) ----------
    Mutant(
        "no-claim-request",
        "writing(): the request_id not claimed (retries write again)",
        one(
            "server/handlers/_writes.py",
            "        if request_id:\n            stored = await claim_request(",
            "        if False:\n            stored = await claim_request(",
        ),
        [HOSTILE, WRITES],
        select="upper or request_id",
    ),
    Mutant(
        "no-store-response",
        "Write.result: the response not stored",
        one(
            "server/handlers/_writes.py",
            "        if self._request_id:\n            await store_response(",
            "        if False:\n            await store_response(",
        ),
        [HOSTILE, WRITES],
        select="upper or request_id",
    ),
    Mutant(
        "no-fingerprint-compare",
        "claim_request: the request's fingerprint not compared",
        one(
            "server/queries/requests.py",
            'if row["method"] != method or bytes(row["request_hash"]) != request_hash:',
            'if row["method"] != method:',
        ),
        [WRITES, CROSS],
        select="request_id or other_tenants",
    ),
    Mutant(
        "request-id-global-scope",
        "request ids claimed in one global scope instead of the tenant's",
        [
            [
                (
                    "server/handlers/_writes.py",
                    "                conn, scope, request_id, call.method, fingerprint(call.method, request)",
                    '                conn, "00000000-0000-0000-0000-000000000000", request_id, call.method,'
                    " fingerprint(call.method, request)",
                ),
                (
                    "server/handlers/_writes.py",
                    "self.conn, self._scope, self._request_id,",
                    'self.conn, "00000000-0000-0000-0000-000000000000", self._request_id,',
                ),
            ]
        ],
        [CROSS],
    ),
    # -- deadlines (server/db/engine.py) ------------------------------------------------
    Mutant(
        "no-set-local-statement-timeout",
        "transaction(): no SET LOCAL statement_timeout",
        one(
            "server/db/engine.py",
            'f"BEGIN; SET LOCAL statement_timeout = {int(ms)}", timeout=conn.remaining()',
            '"BEGIN", timeout=conn.remaining()',
        ),
        [LISTS, FAULTS],
        select="deadline or cancel",
    ),
    Mutant(
        "no-statement-timeout-arg",
        "Conn.fetch*/execute: no per-statement timeout",
        [
            [
                ("server/db/engine.py", f"*args, timeout=self.remaining()){tail}", f"*args){tail}")
                for tail in (
                    "  # type: ignore[no-any-return]\n\n    async def fetchrow",
                    "\n\n    async def fetchval",
                    "\n\n    async def execute",
                )
            ]
        ],
        [LISTS, FAULTS],
        select="deadline or cancel",
    ),
    # -- database errors (server/errors.py or server/db/errors.py) ----------------------
    Mutant(
        "unique-violation-internal",
        "unique_violation no longer mapped (INTERNAL)",
        [
            [
                (
                    "server/errors.py",
                    'if state == "23505":  # unique_violation',
                    'if state == "never":',
                )
            ],
            [
                (
                    "server/db/errors.py",
                    "if isinstance(exc, asyncpg.UniqueViolationError):",
                    "if False:",
                )
            ],
        ],
        [WRITES],
        select="unique or slug",
    ),
    Mutant(
        "no-unavailable-mapping",
        "connection errors no longer mapped to UNAVAILABLE",
        [
            [
                ("server/errors.py", "if state.startswith(_UNAVAILABLE_CLASSES):", "if False:"),
                (
                    "server/errors.py",
                    "        | ConnectionLost\n        | ConnectionError\n        | OSError,\n    ):",
                    "        | ConnectionLost\n        | ConnectionError\n        | OSError,\n    ) and False:",
                ),
            ],
            [
                ("server/db/errors.py", "if isinstance(exc, _UNAVAILABLE_CLASSES):", "if False:"),
                (
                    "server/db/errors.py",
                    "if isinstance(exc, DatabaseGone):\n        return _unavailable()",
                    "if False:\n        return _unavailable()",
                ),
                (
                    "server/db/errors.py",
                    "if isinstance(exc, ConnectionError | OSError):\n        return _unavailable()",
                    "if False:\n        return _unavailable()",
                ),
            ],
            [("server/db/errors.py", "if isinstance(exc, _UNAVAILABLE_CLASSES):", "if False:")],
        ],
        [FAULTS, "tests/test_db_errors.py"],
        select="network or health or restart or unavailable or killed",
        timeout_s=400,
    ),
    Mutant(
        "statement-timeout-internal",
        "query_canceled (57014) no longer DEADLINE_EXCEEDED",
        [
            [("server/errors.py", 'if state == "57014":', 'if state == "never":')],
            [
                (
                    "server/db/errors.py",
                    "asyncpg.QueryCanceledError",
                    "asyncpg.TooManyConnectionsError",
                )
            ],
        ],
        [FAULTS, HOSTILE],
        select="deadline",
    ),
    # -- input at the edges -------------------------------------------------------------
    Mutant(
        "any-zoneinfo-name",
        "time zones: every name PostgreSQL lists accepted (posix/, right/, localtime)",
        one(
            "server/timezones.py",
            "    return not name.startswith(_EXCLUDED_PREFIXES) and name not in _EXCLUDED",
            "    return True",
        ),
        [HOSTILE],
        select="time_zone",
    ),
    Mutant(
        "any-actor",
        "x-actor not validated",
        one(
            "server/interceptors.py",
            "self.bad_actor = actor is not None and _ACTOR.match(actor) is None",
            "self.bad_actor = False",
        ),
        [HOSTILE],
        select="actor",
    ),
    # -- booking guarantees (docs/architecture.md "Scheduling and booking") ------------
    Mutant(
        "booking-sched-wall-fold1",
        "wall_instant: fold=1 (a repeated wall time read as its second occurrence)",
        one(
            "server/scheduling.py",
            "hour, minute, tzinfo=zone)  # fold=0",
            "hour, minute, tzinfo=zone, fold=1)  # fold=0",
        ),
        [SCHED],
        select="wall_clock or documented or lengths",
    ),
    Mutant(
        "booking-sched-merge-touching",
        "merge: touching intervals no longer join into one stretch",
        one(
            "server/scheduling.py",
            "if out and start <= out[-1][1]:",
            "if out and start < out[-1][1]:",
        ),
        [SCHED],
        select="stretches",
    ),
    Mutant(
        "booking-sched-busy-touching",
        "slot_starts: a busy interval that only touches the occupied time blocks it",
        one(
            "server/scheduling.py",
            "if b < nbusy and busy[b][0] < occ_end:",
            "if b < nbusy and busy[b][0] <= occ_end:",
        ),
        [SCHED],
        select="brute_force",
    ),
    Mutant(
        "booking-sched-grid-jump",
        "slot_starts: the jump past a busy interval skips one grid point",
        one("server/scheduling.py", "s += max(k, 1) * step", "s += (k + 1) * step"),
        [SCHED],
        select="brute_force",
    ),
    Mutant(
        "booking-no-provider-lock",
        "evaluate_booking: the provider row not locked (writes)",
        one(
            "server/booking.py",
            "    if lock_provider and not await q.lock_provider(conn, org_id, provider_id):\n"
            '        raise NotFound.of("provider", provider_id)\n',
            "",
        ),
        [LOCKS, AVAIL],
        select="waits or booking_lock",
    ),
    Mutant(
        "booking-provider-lock-shared",
        "the booking's provider lock FOR SHARE: bookings of one provider no longer take turns",
        one(
            "server/queries/calendar.py",
            'AND id = $2 FOR NO KEY UPDATE"',
            'AND id = $2 FOR SHARE"',
        ),
        [LOCKS],
        select="take_turns",
    ),
    Mutant(
        "booking-overlap-buffer-swapped",
        "find_conflicts: OVERLAP and BUFFER classification swapped",
        one(
            "server/booking.py",
            "reason = Reason.OVERLAP if _overlaps(b.start, b.end, start, end) else Reason.BUFFER",
            "reason = Reason.BUFFER if _overlaps(b.start, b.end, start, end) else Reason.OVERLAP",
        ),
        [AVAIL],
        select="every_reason",
    ),
    Mutant(
        "booking-min-notice-inclusive",
        "find_conflicts: a start exactly at now + notice refused (MIN_NOTICE <=)",
        one("server/booking.py", "if start < earliest:", "if start <= earliest:"),
        [AVAIL, MUTANT_TESTS],
        select="policy or notice",
    ),
    Mutant(
        "booking-horizon-day-late",
        "policy_of: the horizon one day longer than the policy says",
        one(
            "server/booking.py",
            'timedelta(days=head["booking_horizon_days"] if horizon is None else horizon),',
            'timedelta(days=(head["booking_horizon_days"] if horizon is None else horizon) + 1),',
        ),
        [AVAIL, MUTANT_TESTS],
        select="policy or horizon",
    ),
    Mutant(
        "booking-horizon-inclusive",
        "find_conflicts: a start exactly at now + horizon refused (BEYOND_HORIZON >=)",
        one("server/booking.py", "if start > latest:", "if start >= latest:"),
        [AVAIL, MUTANT_TESTS],
        select="policy or horizon",
    ),
    Mutant(
        "booking-calendar-cancelled-block",
        "calendar statement: the blocking-status predicate dropped (cancelled appointments block)",
        one(
            "server/queries/calendar.py",
            "  AND {BLOCKING_SQL} AND occupied && $5::tstzrange",
            "  AND occupied && $5::tstzrange",
        ),
        [APPTS],
        select="cancel_frees or no_show_frees",
    ),
    Mutant(
        "booking-calendar-during-not-occupied",
        "calendar statement: appointments found by during, not occupied (others' buffers ignored)",
        one(
            "server/queries/calendar.py",
            "  AND {BLOCKING_SQL} AND occupied && $5::tstzrange",
            "  AND {BLOCKING_SQL} AND during && $5::tstzrange",
        ),
        [APPTS, AVAIL],
        select="buffers or every_reason",
    ),
    Mutant(
        "booking-write-occupied-as-during",
        "interval_values: occupied written as during (buffers not occupied)",
        one(
            "server/queries/appointments.py",
            '"occupied": asyncpg.Range(slot.occupied_start, slot.occupied_end),',
            '"occupied": asyncpg.Range(slot.start, slot.end),',
        ),
        [APPTS],
        select="buffers",
    ),
    Mutant(
        "booking-race-exclusion-unmapped",
        "_taking_time: the exclusion violation not caught (the lost race is a generic error)",
        one(
            "server/handlers/appointments.py",
            "except (asyncpg.ExclusionViolationError, asyncpg.DeadlockDetectedError):",
            "except (asyncpg.DeadlockDetectedError,):",
        ),
        [CONCURRENCY],
        select="loses_the_race",
    ),
    Mutant(
        "booking-complete-from-pending",
        "TRANSITIONS: complete allowed from pending",
        one(
            "server/handlers/appointments.py",
            'Transition("complete", "completed", frozenset({"confirmed"}), "completed")',
            'Transition("complete", "completed", frozenset({"confirmed", "pending"}), "completed")',
        ),
        [APPTS],
        select="illegal_transition",
    ),
    # Not listed: _refuse with override also letting OVERLAP / BUFFER through
    # ("if any(c.reason.taken ...)" -> "if False") is an equivalent mutant: the
    # INSERT/UPDATE then fails on ex_appointments_no_overlap (same columns, same
    # blocking statuses, the same occupied interval), _taking_time reads the
    # same holders with OCCUPYING_SQL and answers the same TIME_SLOT_TAKEN; only
    # a failed statement and a round trip more (bench/, not tests).
    Mutant(
        "booking-override-reports-rules",
        "_refuse: with override, a taken time refused with every rule conflict in the details",
        one(
            "server/handlers/appointments.py",
            "raise taken(conflicts, field_prefix=field_prefix)",
            "raise refusal(evaluation, field_prefix=field_prefix)",
        ),
        [APPTS, MUTANT_TESTS],
        select="rules_decide or reschedule_respects or taken",
    ),
    Mutant(
        "booking-first-available-ties-reversed",
        "first_available: ties in reverse provider order",
        [
            [
                (
                    "server/handlers/availability.py",
                    "[(s, n, i) for i, s in enumerate(starts)]",
                    "[(s, -n, i) for i, s in enumerate(starts)]",
                ),
                ("server/handlers/availability.py", "p = valid[n]", "p = valid[-n]"),
            ]
        ],
        [ORACLE],
        select="multi_provider",
    ),
    # -- lists for every resource (issue 8) --
    Mutant(
        "lists-related-per-row",
        "VIEW_FULL: related rows read one statement per page row (N+1)",
        one(
            "server/handlers/_lists.py",
            "found.append(await conn.fetch(related.sql, org, ids) if ids else [])",
            "found.append([r for i in ids for r in await conn.fetch(related.sql, org, [i])])",
        ),
        [LIST_FILTERS],
        select="statement",
    ),
    Mutant(
        "lists-overlap-touching-end",
        "ListAppointments: an appointment ending at the range's start counted as overlapping",
        one(
            "server/queries/appointments.py",
            'query.where(f"end_at > {query.param(flt.start)}")',
            'query.where(f"end_at >= {query.param(flt.start)}")',
        ),
        [LIST_FILTERS],
        select="appointment_filters",
    ),
    Mutant(
        "lists-business-date-in-utc",
        "ListAppointments: business dates bounded in UTC, not the provider's zone",
        one(
            "server/queries/appointments.py",
            'local_date = f"(start_at AT TIME ZONE {_PROVIDER_ZONE})::date"',
            "local_date = \"(start_at AT TIME ZONE 'UTC')::date\"",
        ),
        [LIST_FILTERS],
        select="business_dates or repeated_midnight",
    ),
    Mutant(
        "lists-one-of-first-only",
        "one_of: several values filter by the first one only",
        one(
            "server/queries/_listing.py",
            "        if len(values) == 1:\n",
            "        if len(values) >= 1:\n",
        ),
        [LIST_FILTERS],
    ),
    Mutant(
        "lists-between-inclusive-end",
        "between: the upper bound included (created_before is 'strictly before')",
        one(
            "server/queries/_listing.py",
            'self.where(f"{column} < {self.param(high)}")',
            'self.where(f"{column} <= {self.param(high)}")',
        ),
        [LIST_FILTERS],
        select="created or payment",
    ),
    Mutant(
        "lists-hidden-sort-key-not-selected",
        "ListQuery._select: the sort columns the entity hides are not selected",
        one(
            "server/queries/_listing.py",
            'missing = [c for c in self.order.columns if c not in self.columns]',
            "missing: list[str] = []",
        ),
        [PAGING],
        select="walking_returns_every_row_once_in_order",
    ),
    Mutant(
        "lists-history-no-kind-key",
        "ListClientHistory: same-instant entries ordered by id alone (kind not a sort key)",
        one(
            "server/queries/history.py",
            '        SortKey("kind", KeyType.TEXT),\n',
            "",
        ),
        [LIST_FILTERS],
        select="history",
    ),
    Mutant(
        "lists-history-filter-in-branches",
        "ListClientHistory: the filters inside the UNION ALL branches (a page reads the whole history)",
        one(
            "server/queries/history.py",
            'f"client_id AS h_client, {\', \'.join(cols)} FROM {table}"',
            'f"client_id AS h_client, {\', \'.join(cols)} FROM {table} WHERE organization_id IS NOT NULL"',
        ),
        [EXPLAIN_LISTS],
        select="history",
    ),
    Mutant(
        "lists-view-ignored",
        "ListSpec: VIEW_FULL attaches nothing",
        one(
            "server/handlers/_lists.py",
            "full = view_of(request.view, v) if self.related else False",
            "full = view_of(request.view, v) and False",
        ),
        [LIST_FILTERS],
        select="full",
    ),
    Mutant(
        "lists-payments-amount-exclusive",
        "ListPayments: min_amount_minor exclusive",
        one(
            "server/queries/payments.py",
            'query.where(f"amount_minor >= {query.param(flt.min_amount)}")',
            'query.where(f"amount_minor > {query.param(flt.min_amount)}")',
        ),
        [LIST_FILTERS],
        select="payment",
    ),
    Mutant(
        "day-sheet-latest-payment-oldest",
        "GetProviderSchedule: payment_status of the oldest payment, not the latest",
        one(
            "server/queries/day_sheet.py",
            "ORDER BY p.created_at DESC, p.id DESC",
            "ORDER BY p.created_at, p.id",
        ),
        [DAY_SHEET],
    ),
    Mutant(
        "day-sheet-paid-any-currency",
        "GetProviderSchedule: amount_paid adds payments of another currency",
        one(
            "server/queries/day_sheet.py",
            "FILTER (WHERE p.status = 'completed' AND p.currency = a.currency)",
            "FILTER (WHERE p.status = 'completed')",
        ),
        [DAY_SHEET],
    ),
    Mutant(
        "lists-partition-no-keyset",
        "A partitioned list's LATERAL reads from the start, not from the keyset",
        one(
            "server/queries/_listing.py",
            'where = " AND ".join([*predicates, f"{column} = _part.v"])',
            'where = " AND ".join([*query.predicates, f"{column} = _part.v"])',
        ),
        [PAGING],
        select="two-providers",
    ),
    Mutant(
        "payments-refund-unlocked",
        "RefundPayment: the payment read without FOR UPDATE (racing refunds lose updates)",
        one(
            "server/handlers/payments.py",
            "payment = await lock_row(w.conn, q.PAYMENT, org, payment_id)",
            "payment = await get_row(w.conn, q.PAYMENT, org, payment_id)",
        ),
        [PAYMENTS],
        select="concurrent",
    ),
    Mutant(
        "payments-refund-one-too-many",
        "RefundPayment: one minor unit more than is left accepted",
        one(
            "server/handlers/payments.py",
            'if payment["status"] != "completed" or give > left or give <= 0:',
            'if payment["status"] != "completed" or give > left + 1 or give <= 0:',
        ),
        [PAYMENTS],
        select="refunds",
    ),
    Mutant(
        "payments-appointment-currency-unchecked",
        "RecordPayment: a payment in another currency than its appointment's accepted",
        one(
            "server/handlers/payments.py",
            'if booked["currency"] != values["currency"]:',
            "if False:",
        ),
        [PAYMENTS],
        select="consistency",
    ),
    Mutant(
        "booking-truncation-share-plus-one",
        "GetAvailability: each provider's share of the slots one too many",
        one(
            "server/handlers/availability.py",
            "share = MAX_SLOTS // len(ids)",
            "share = MAX_SLOTS // len(ids) + 1",
        ),
        [AVAIL],
        select="truncated or limits",
    ),
    # -- rollups (docs/architecture.md "Rollups") ---------------------------------------
    Mutant(
        "rollups-transition-unapplied",
        "a status change does not apply its facts to the rollups",
        one(
            "server/handlers/appointments.py",
            "        await rollups.apply(w.conn, org, rollups.appointment_facts(row, after))",
            "        pass",
        ),
        [ROLLUPS_EXACT],
        select="random_walks",
    ),
    Mutant(
        "rollups-overwrite",
        "a rollup upsert sets the delta instead of adding it",
        one(
            "server/queries/rollups.py",
            'sets.append(f"{name} = {stored}.{name} + {delta}.{name}")',
            'sets.append(f"{name} = {delta}.{name}")',
        ),
        [ROLLUPS_EXACT],
        select="random_walks",
    ),
    Mutant(
        "rollups-utc-dates",
        "business dates in UTC, not the provider's zone",
        one(
            "server/queries/rollups.py",
            "(coalesce(f.start_at, f.at) AT TIME ZONE p.time_zone)::date AS business_date",
            "(coalesce(f.start_at, f.at) AT TIME ZONE 'UTC')::date AS business_date",
        ),
        [ROLLUPS_EXACT],
        select="random_walks",
    ),
    Mutant(
        "rollups-refunds-as-payments",
        "a refund counted as paid, not refunded",
        one(
            "server/queries/rollups.py",
            "CASE WHEN kind = 'refund' THEN sign * amount ELSE 0 END AS refunded_minor",
            "0::bigint AS refunded_minor",
        ),
        [ROLLUPS_EXACT],
        select="random_walks",
    ),
    Mutant(
        "rollups-first-visit-kept",
        "a client's earlier visit completed later does not move their first visit",
        one(
            "server/queries/rollups.py",
            "        THEN excluded.first_visit_date ELSE t.first_visit_date END,",
            "        THEN t.first_visit_date ELSE t.first_visit_date END,",
        ),
        [ROLLUPS_EXACT],
        select="first_visits",
    ),
    Mutant(
        "rollups-move-unlocked",
        "a reschedule to another provider reads its payments without locking them",
        one(
            "server/queries/rollups.py",
            '    await conn.execute(_LOCK_PAID_FOR_SQL, org_id, after["id"])',
            "    pass",
        ),
        [ROLLUPS_RACE],
        select="racing",
    ),
    Mutant(
        "rollup-repair-overwrites",
        "a repair sets the recomputed sums instead of adding the drift (loses concurrent writes)",
        one(
            "server/queries/rollup_check.py",
            'added = [f"{n} = t.{n} + excluded.{n}" for n in sums]',
            'added = [f"{n} = excluded.{n}" for n in sums]',
        ),
        [ROLLUP_CHECK],
        select="repair",
    ),
    Mutant(
        "rollup-repair-overwrites-visits",
        "a repair sets a missing row's first/last visit to what its snapshot saw (loses a visit written meanwhile)",
        one(
            "server/queries/rollup_check.py",
            "    merged = [f\"{n} = {_merged(table, n, how, 't', 'excluded')}\" for n, how in others]",
            '    merged = [f"{n} = excluded.{n}" for n, how in others]',
        ),
        [ROLLUP_CHECK],
        select="keeps_a_visit",
    ),
]


# -- running --------------------------------------------------------------------------


def make_copy(source: str, into: Path) -> None:
    if source == "head":
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"],
            check=True,
            capture_output=True,
        ).stdout
        tar_path = into.parent / "head.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(into, filter="data")
        tar_path.unlink()
    else:
        # Not the bench's databases (bench/results/pgdata-*): big, and live sockets.
        ignore = shutil.ignore_patterns(
            ".git",
            ".venv",
            "__pycache__",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            "pgdata-*",
        )
        shutil.copytree(ROOT, into, ignore=ignore)


def plant(copy: Path, mutant: Mutant) -> dict[Path, str] | None:
    """Apply the first alternative that applies; the original texts, or None."""
    for edits in mutant.alternatives:
        texts: dict[Path, str] = {}
        ok = True
        for file, old, _new in edits:
            path = copy / file
            if path not in texts:
                if not path.exists():
                    ok = False
                    break
                texts[path] = path.read_text()
            if old not in texts[path] or texts[path].count(old) != 1:
                ok = False
                break
        if not ok:
            continue
        originals = dict(texts)
        changed = dict(texts)
        for file, old, new in edits:
            path = copy / file
            changed[path] = changed[path].replace(old, new, 1)
        for path, text in changed.items():
            path.write_text(text)
        return originals
    return None


def run_tests(copy: Path, tests: list[str], select: str, timeout_s: int) -> tuple[str, float]:
    """'passed', 'failed' or 'timeout', and the seconds it took."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    cmd = [str(PYTHON), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    if select:
        cmd += ["-k", select]
    started = time.monotonic()
    try:
        result = subprocess.run(
            cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started
    took = time.monotonic() - started
    if result.returncode == 0:
        return "passed", took
    if result.returncode == 5:  # no tests collected: the mapping is wrong
        return "no tests", took
    # Caught means a test FAILED; errors (setup, collection) say nothing of the mutant.
    summary = result.stdout.strip().splitlines()[-1:] or [""]
    if result.returncode == 1 and " failed" in summary[0]:
        return "failed", took
    return f"error: {summary[0][:120]}", took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="only mutants whose name has this")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--source", choices=("head", "worktree"), default="head")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.k or any(k in m.name for k in args.k)]
    if args.list:
        for m in mutants:
            print(f"{m.name:34} {m.description}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="booking-mutants-"))
    copy = tmp / "repo"
    make_copy(args.source, copy)
    print(f"copy of {args.source} in {copy}")
    # The copy must be what is imported, not this checkout.
    probe = subprocess.run(
        [str(PYTHON), "-c", "import server; print(server.__file__)"],
        cwd=copy,
        env=dict(os.environ, PYTHONPATH=str(copy)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not probe.startswith(str(copy)):
        print(f"the copy's server package is not the one imported ({probe})", file=sys.stderr)
        return 2

    all_tests = sorted({t for m in mutants for t in m.tests})
    status, took = run_tests(copy, all_tests, "", 900)
    print(f"baseline ({' '.join(all_tests)}): {status} in {took:.0f}s")
    if status != "passed":
        print("the tests fail without any mutant: fix that first", file=sys.stderr)
        return 2

    results: list[tuple[Mutant, str, float]] = []
    for mutant in mutants:
        originals = plant(copy, mutant)
        if originals is None:
            results.append((mutant, "does not apply", 0.0))
            print(f"  {mutant.name:34} does not apply (the code moved)")
            continue
        try:
            status, took = run_tests(copy, mutant.tests, mutant.select, mutant.timeout_s)
        finally:
            for path, text in originals.items():
                path.write_text(text)
        verdict = {"failed": "caught", "timeout": "caught (timeout)"}.get(status, "SURVIVED")
        if status == "no tests":
            verdict = "SURVIVED (no test selected)"
        elif status.startswith("error"):
            verdict = f"ERROR ({status})"
        results.append((mutant, verdict, took))
        print(f"  {mutant.name:34} {verdict:14} {took:5.0f}s  {mutant.description}")

    applied = [r for r in results if r[1] != "does not apply"]
    caught = [r for r in applied if r[1].startswith("caught")]
    survivors = [r for r in applied if not r[1].startswith(("caught", "ERROR"))]
    for mutant, verdict, _ in applied:
        if verdict.startswith("ERROR"):
            print(f"  error (rerun it): {mutant.name}: {verdict}")
    print(f"\nscore: {len(caught)}/{len(applied)} caught", end="")
    skipped = len(results) - len(applied)
    print(f", {skipped} did not apply" if skipped else "")
    for mutant, verdict, _ in survivors:
        print(f"  survived: {mutant.name}: {mutant.description} ({verdict})")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
