"""Start-up failures through the real command (``python -m server``): one line
on stderr saying what to do, no traceback, and a distinct exit code each."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.db.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No BOOKING_* from the caller's shell; the embedded data directory (if
    one is ever used) under tmp_path, never the user's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")}
    env.update({"BOOKING_ENV": "test", "BOOKING_EMBEDDED_DATA_DIR": str(tmp_path / "pgdata")})
    env.update(extra)
    return env


async def _cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``python -m server ARGS``. A command that
    starts serving instead of failing runs into the timeout (and the test fails)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *args,
        env=_env(tmp_path, **env),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode().splitlines()


def _one_line(lines: list[str]) -> str:
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert lines[0].startswith("booking-data: ")
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BOOKING_PORT", "fifty"), ("BOOKING_MIGRATE_ON_START", "maybe"), ("BOOKING_ENV", "staging")],
)
async def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, variable: str, value: str
) -> None:
    code, lines = await _cli(tmp_path, "serve", **{variable: value})
    line = _one_line(lines)
    assert code == 2
    assert variable in line and repr(value) in line


async def test_prod_without_a_database_url_is_exit_2(tmp_path: Path) -> None:
    code, lines = await _cli(
        tmp_path, "serve", BOOKING_ENV="prod", BOOKING_PAGE_TOKEN_SECRET="s3cret"
    )
    assert code == 2
    assert "BOOKING_DATABASE_URL must be set in prod" in _one_line(lines)
    assert not (tmp_path / "pgdata").exists()  # no embedded database was started


async def test_a_bad_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, lines = await _cli(tmp_path, "serve", "--port", "x")
    assert code == 2
    assert "--port" in _one_line(lines)


@pytest.fixture(params=[False, True], ids=["plain", "so_reuseport"])
def listener(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port someone listens on; with SO_REUSEPORT like a ``--workers`` unit."""
    with socket.socket() as sock:
        if request.param:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_a_taken_port_is_exit_3_naming_the_holder(tmp_path: Path, listener: int) -> None:
    code, lines = await _cli(tmp_path, "serve", "--port", str(listener))
    line = _one_line(lines)
    assert code == 3
    assert f"port {listener} on 127.0.0.1 is in use by pid {os.getpid()}" in line
    # Checked before anything starts: no embedded database was set up.
    assert not (tmp_path / "pgdata").exists()


async def test_a_data_directory_in_use_is_exit_4_and_leaves_its_database_alone(
    tmp_path: Path, free_port: int
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pgdata")
    await asyncio.to_thread(pg.start)
    try:
        postmaster = pg.postmaster_pid()
        assert postmaster is not None
        code, lines = await _cli(tmp_path, "serve", "--port", str(free_port))
        line = _one_line(lines)
        assert code == 4
        assert f"{pg.data_dir} is in use by pid {os.getpid()}" in line
        # The first owner's database still runs (it used to be stopped under it).
        assert pg.postmaster_pid() == postmaster
    finally:
        await asyncio.to_thread(pg.stop, "immediate")


async def test_a_failing_initdb_is_exit_5(tmp_path: Path, free_port: int) -> None:
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "notes.txt").write_text("not a database\n")
    code, lines = await _cli(tmp_path, "serve", "--port", str(free_port))
    line = _one_line(lines)
    assert code == 5
    assert "embedded PostgreSQL failed to start" in line
    assert str(tmp_path / "pgdata") in line


async def test_an_unreachable_database_is_exit_6_without_the_password(
    tmp_path: Path, free_port: int
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    url = f"postgresql://booking:hunter2@127.0.0.1:{dead}/booking"
    code, lines = await _cli(tmp_path, "--database-url", url, "serve", "--port", str(free_port))
    line = _one_line(lines)
    assert code == 6
    assert f"cannot reach the database at postgresql://booking:***@127.0.0.1:{dead}/booking" in line
    assert "hunter2" not in line


async def test_a_failing_migration_is_exit_6(
    tmp_path: Path, free_port: int, database_url: str
) -> None:
    code, lines = await _cli(
        tmp_path,
        *["--database-url", database_url, "serve", "--port", str(free_port)],
        BOOKING_MIGRATIONS_DIR=str(tmp_path / "no-migrations-here"),
    )
    line = _one_line(lines)
    assert code == 6
    assert "migrating the database" in line


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
