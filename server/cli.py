"""``booking-data``: the console script.

    booking-data serve   [--database-url URL] [--host H] [--port P] [--workers N]
    booking-data migrate [upgrade|downgrade|current] [REVISION] [--database-url URL]

With no database URL (flag or BOOKING_DATABASE_URL) both start the embedded
PostgreSQL in BOOKING_EMBEDDED_DATA_DIR and use its ``booking`` database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from server.config import Settings, load_settings
from server.context import CorrelationFilter
from server.db.embedded import EmbeddedPostgres
from server.db.engine import to_asyncpg_dsn

__all__ = ["main"]

_log = logging.getLogger("server")
EMBEDDED_DATABASE = "booking"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
            "rpc_method": getattr(record, "rpc_method", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CorrelationFilter())
    if settings.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s %(rpc_method)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextlib.asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """The configured URL, or an embedded PostgreSQL started (and stopped) here."""
    if settings.database_url:
        yield settings.database_url
        return
    pg = EmbeddedPostgres(settings.embedded_data_dir)
    admin_url = await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(to_asyncpg_dsn(admin_url))
        try:
            exists = await conn.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", EMBEDDED_DATABASE
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
        finally:
            await conn.close()
        url = pg.url(EMBEDDED_DATABASE)
        _log.info("embedded PostgreSQL: %s (data in %s)", url, settings.embedded_data_dir)
        yield url
    finally:
        await asyncio.to_thread(pg.stop)


async def _serve(settings: Settings) -> None:
    from server.db.migrate import upgrade

    async with database_url(settings) as url:
        if settings.migrate_on_start:
            await upgrade(url, settings.migrations_dir)
        if settings.workers <= 1:
            await _serve_until_signal(settings, url)
        else:
            await _supervise(dataclasses.replace(settings, database_url=url))


async def _serve_until_signal(settings: Settings, url: str) -> None:
    from server.app import create_server

    server = create_server(settings, database_url=url)
    await server.start()
    print(f"booking-data serving on {settings.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _log.info("shutting down (grace %.1fs)", settings.shutdown_grace_s)
    await server.stop(settings.shutdown_grace_s)


def _worker_main(settings: Settings) -> None:
    """One worker process: the same server on the same port (SO_REUSEPORT)."""
    configure_logging(settings)
    assert settings.database_url is not None
    _run(_serve_until_signal(settings, settings.database_url))


def _wait_any(sentinels: list[int]) -> None:
    multiprocessing.connection.wait(sentinels)


def _join_all(procs: Sequence[multiprocessing.process.BaseProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


async def _supervise(settings: Settings) -> None:
    """``workers`` server processes sharing the port; the kernel spreads new
    connections over them. SIGTERM/SIGINT reach every worker, each drains its
    calls within the grace period. A worker that dies takes the others down
    (exit status 1): the orchestrator restarts the whole unit, rather than this
    process hiding a crash loop."""
    if settings.port == 0:
        raise SystemExit("--workers needs a fixed --port (workers share it)")
    ctx = multiprocessing.get_context("spawn")
    worker_settings = dataclasses.replace(settings, migrate_on_start=False, workers=1)
    procs = [
        ctx.Process(target=_worker_main, args=(worker_settings,), name=f"worker-{i}")
        for i in range(settings.workers)
    ]
    for proc in procs:
        proc.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Wait on the processes' sentinels (no reaping here: one thread joins, at the end).
    sentinels = [p.sentinel for p in procs]
    exited: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(_wait_any, sentinels))
    signalled: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([exited, signalled], return_when=asyncio.FIRST_COMPLETED)
    crashed = not stopping.is_set()
    if crashed:
        _log.error("a worker exited unexpectedly; stopping the others")
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    await asyncio.to_thread(_join_all, procs, settings.shutdown_grace_s + 10)
    signalled.cancel()
    # A worker still starting up when SIGTERM came dies of it: that is a stop too.
    failed = [p for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    for proc in failed:
        _log.error("%s exited with status %s", proc.name, proc.exitcode)
    if crashed or failed:
        raise SystemExit(1)


async def _migrate(settings: Settings, action: str, revision: str) -> None:
    from alembic import command
    from server.db.migrate import alembic_config, downgrade, upgrade

    async with database_url(settings) as url:
        if action == "upgrade":
            await upgrade(url, settings.migrations_dir, revision or "head")
        elif action == "downgrade":
            await downgrade(url, settings.migrations_dir, revision or "-1")
        else:
            await asyncio.to_thread(
                command.current, alembic_config(url, settings.migrations_dir), verbose=True
            )


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="booking-data", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: BOOKING_DATABASE_URL, else an embedded PostgreSQL)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    migrate = sub.add_parser("migrate", help="run database migrations")
    migrate.add_argument(
        "action", nargs="?", default="upgrade", choices=["upgrade", "downgrade", "current"]
    )
    migrate.add_argument("revision", nargs="?", default="")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "workers", None) is not None:
        overrides["workers"] = args.workers
    settings = load_settings(None, **overrides)
    configure_logging(settings)
    if args.command == "serve":
        _run(_serve(settings))
    else:
        _run(_migrate(settings, args.action, args.revision))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
