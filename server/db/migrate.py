"""Run Alembic programmatically against a database URL (no alembic.ini)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command

__all__ = ["alembic_config", "downgrade", "head_revision", "upgrade"]


def alembic_config(url: str, migrations_dir: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.attributes["url"] = url
    return cfg


def head_revision(migrations_dir: Path) -> str:
    script = ScriptDirectory.from_config(alembic_config("", migrations_dir))
    head = script.get_current_head()
    assert head is not None
    return head


async def upgrade(url: str, migrations_dir: Path, revision: str = "head") -> None:
    # Alembic's env runs its own event loop: keep it off ours.
    await asyncio.to_thread(command.upgrade, alembic_config(url, migrations_dir), revision)


async def downgrade(url: str, migrations_dir: Path, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url, migrations_dir), revision)
