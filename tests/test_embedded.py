"""The embedded PostgreSQL: one owner per data directory, and (as root, as
here) a layout that leaves the permissions of the user's directories alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest

from server.db.embedded import DataDirectoryInUse, EmbeddedPostgres
from server.db.engine import to_asyncpg_dsn


async def _fetch(url: str, sql: str) -> object:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_private_parent_stays_private(tmp_path: Path) -> None:
    """Under root the database runs as another user; it used to get there by
    making every parent of the data directory world-readable (0700 -> 0755)."""
    parent = tmp_path / "private"
    parent.mkdir()
    parent.chmod(0o700)
    tmp_mode = _mode(tmp_path)
    pg = EmbeddedPostgres(parent / "pgdata")
    url = await asyncio.to_thread(pg.start)
    try:
        assert await _fetch(url, "SELECT 1") == 1
        assert _mode(parent) == 0o700
        await asyncio.to_thread(pg.stop)
        await asyncio.to_thread(pg.start)  # a restart keeps the port and the data
        assert pg.url() == url
        assert await _fetch(url, "SELECT 1") == 1
    finally:
        await asyncio.to_thread(pg.stop)
    assert _mode(parent) == 0o700
    assert _mode(tmp_path) == tmp_mode
    if os.geteuid() == 0:
        # The cluster lives where the database user may go; the data directory
        # holds only the link to it.
        assert pg.cluster_dir != pg.data_dir
        assert os.listdir(pg.data_dir) == ["pgdata"]
        assert pg.cluster_dir.stat().st_uid != 0


async def test_one_owner_per_data_directory(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path / "pgdata")
    await asyncio.to_thread(first.start)
    try:
        second = EmbeddedPostgres(tmp_path / "pgdata")
        with pytest.raises(DataDirectoryInUse) as err:
            await asyncio.to_thread(second.start)
        assert err.value.pid == os.getpid()
        assert str(tmp_path / "pgdata") in str(err.value)
        # Stopping the one that failed does not stop the owner's database.
        await asyncio.to_thread(second.stop)
        assert first.postmaster_pid() is not None
    finally:
        await asyncio.to_thread(first.stop)
    # Released on stop: the next owner may start it.
    await asyncio.to_thread(second.start)
    await asyncio.to_thread(second.stop, "immediate")


async def test_deleting_the_data_directory_resets_the_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    pg = EmbeddedPostgres(data_dir)
    url = await asyncio.to_thread(pg.start)
    cluster = pg.cluster_dir
    try:
        await _fetch(url, "CREATE TABLE kept (id int)")
    finally:
        await asyncio.to_thread(pg.stop)
    shutil.rmtree(data_dir)
    pg = EmbeddedPostgres(data_dir)
    url = await asyncio.to_thread(pg.start)
    try:
        assert await _fetch(url, "SELECT to_regclass('kept') IS NULL") is True
    finally:
        await asyncio.to_thread(pg.stop, "immediate")
    if cluster != data_dir:
        # Root layout: the deleted directory's cluster is gone too, nothing leaks.
        assert not cluster.exists()
