"""``booking-data``: the console script.

    booking-data serve   [--database-url URL] [--host H] [--port P] [--workers N]
    booking-data migrate [upgrade|downgrade|current] [REVISION] [--database-url URL]
    booking-data rollups [check|repair] [--organization ID] [--database-url URL]

``rollups check`` compares every rollup row (the summaries' tables) with the
raw rows and exits 7 when any drifted; ``rollups repair`` fixes the drift
(rebuilds rollups from nothing too), checks again, and exits 7 if drift
remains after its passes. Both work in short batches while the
service runs (server.queries.rollup_check).

``serve`` runs in the foreground until SIGTERM or Ctrl-C (SIGINT), which let
the calls in flight finish within the shutdown grace. With no database URL
(flag or BOOKING_DATABASE_URL) both commands start the embedded PostgreSQL in
BOOKING_EMBEDDED_DATA_DIR (default ``~/.local/share/booking-data/pgdata``) and
use its ``booking`` database; ``serve`` prints its URL, e.g.
``embedded PostgreSQL at postgresql://postgres@127.0.0.1:PORT/booking``, which
``psql`` takes as is. It is stopped with the server. To reset it, stop the
server and delete the data directory. Layout (also under root) and restarts:
see :mod:`server.db.embedded`.

One server per port and per data directory: a second ``serve`` on a port in
use (only the workers of one ``--workers`` unit share a port) or on a data
directory another process holds fails at once, naming the holder's pid.

Start-up failures print one line on stderr and exit with:

    0  stopped by SIGTERM/SIGINT after serving
    1  a worker died (``--workers``), or an unexpected error
    2  usage or configuration (bad flag, bad BOOKING_* value, prod without a database URL)
    3  the port is in use or cannot be bound
    4  the embedded database's data directory is in use by another process
    5  the embedded PostgreSQL could not be set up or started (initdb, pg_ctl)
    6  the database is unreachable, or migrating it failed
    7  ``rollups check`` found drift (``repair``: drift left after its passes)
    130 interrupted (Ctrl-C) while starting
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from server.config import Settings, load_settings
from server.context import CorrelationFilter
from server.db.embedded import (
    DataDirectoryInUse,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    PostgresSupervisor,
)

__all__ = ["main"]

_log = logging.getLogger("server")
EMBEDDED_DATABASE = "booking"

EXIT_WORKER_DIED = 1
EXIT_CONFIG = 2
EXIT_PORT = 3
EXIT_DATA_DIR = 4
EXIT_EMBEDDED = 5
EXIT_DATABASE = 6
EXIT_INTERRUPTED = 130


class StartupError(Exception):
    """Start-up failed for a reason the user can fix: one line and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = " ".join(message.split())  # one line, whatever the cause said


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
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


# -- start-up checks ----------------------------------------------------------


def _safe_url(url: str) -> str:
    """The URL for a message: the password masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend != "postgresql":
        raise StartupError(
            EXIT_CONFIG,
            f"invalid database URL {_safe_url(url)}: expected "
            "postgresql://user:password@host:port/database (--database-url / BOOKING_DATABASE_URL)",
        )


def _port_holders(port: int) -> list[int]:
    """Pids with a socket listening on ``port`` (best effort: procfs, and only
    the processes we may inspect)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 the inode.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    pids: set[int] = set()
    if not inodes:
        return []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) in inodes:
                    pids.add(int(fd_dir.parent.name))
                    break
            except OSError:
                continue
    return sorted(pids)


def _describe_pids(pids: Sequence[int]) -> str:
    if not pids:
        return "another process"
    named = []
    for pid in pids[:4]:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = ""
        named.append(f"{pid} ({comm})" if comm else str(pid))
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(named)


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once without SO_REUSEPORT: fails when any server,
    one with SO_REUSEPORT included, listens there. SO_REUSEADDR keeps a
    restarted server's TIME_WAIT connections from failing the check."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(EXIT_CONFIG, f"cannot resolve host {host!r}: {exc.strerror}") from None
    failure: OSError | None = None
    bound = False
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(
                        EXIT_PORT,
                        f"port {port} on {host} is in use by "
                        f"{_describe_pids(_port_holders(port))}; stop it or choose another "
                        "port (--port / BOOKING_PORT)",
                    ) from None
                failure = exc
                continue
            bound = True
    if not bound:
        reason = failure.strerror if failure is not None else "no address"
        raise StartupError(EXIT_PORT, f"cannot listen on {host}:{port}: {reason}")


async def check_database(url: str, settings: Settings) -> None:
    """Fail start-up when the database does not answer (rather than serve
    UNAVAILABLE from the first call on)."""
    import asyncpg

    from server.db.engine import to_asyncpg_dsn

    try:
        conn = await asyncpg.connect(to_asyncpg_dsn(url), timeout=settings.pool.connect_timeout_s)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {settings.pool.connect_timeout_s:g}s"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StartupError(
            EXIT_DATABASE,
            f"cannot reach the database at {_safe_url(url)}: {reason}; check that it runs "
            "and --database-url / BOOKING_DATABASE_URL",
        ) from None


@contextlib.asynccontextmanager
async def _migration(url: str) -> AsyncIterator[None]:
    """A failed migration is one line (exit 6), not Alembic's traceback."""
    try:
        yield
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StartupError(
            EXIT_DATABASE,
            f"migrating the database at {_safe_url(url)} failed: {type(exc).__name__}: {first}",
        ) from None


# -- the embedded database ----------------------------------------------------


async def _start_embedded(pg: EmbeddedPostgres) -> str:
    try:
        return await asyncio.to_thread(pg.start)
    except DataDirectoryInUse as exc:
        raise StartupError(
            EXIT_DATA_DIR,
            f"embedded database {exc}; stop that server, or set BOOKING_EMBEDDED_DATA_DIR "
            "to another directory, or pass --database-url",
        ) from None
    except EmbeddedPostgresError as exc:
        log = pg.cluster_dir / "server.log"
        hint = f" (see {log})" if log.exists() else ""
        raise StartupError(
            EXIT_EMBEDDED, f"embedded PostgreSQL failed to start: {exc}{hint}"
        ) from None


async def _create_embedded_database(admin_url: str) -> None:
    import asyncpg

    from server.db.engine import to_asyncpg_dsn

    conn = await asyncpg.connect(to_asyncpg_dsn(admin_url))
    try:
        exists = await conn.fetchval(
            "SELECT true FROM pg_database WHERE datname = $1", EMBEDDED_DATABASE
        )
        if not exists:
            await conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_url(settings: Settings, *, supervise: bool = False) -> AsyncIterator[str]:
    """The configured URL, or an embedded PostgreSQL started (and stopped) here,
    watched by a :class:`PostgresSupervisor` when ``supervise``."""
    import asyncpg

    if settings.database_url:
        yield settings.database_url
        return
    pg = EmbeddedPostgres(settings.embedded_data_dir)
    admin_url = await _start_embedded(pg)
    supervisor: PostgresSupervisor | None = None
    try:
        try:
            await _create_embedded_database(admin_url)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StartupError(
                EXIT_EMBEDDED, f"embedded PostgreSQL failed to start: {exc}"
            ) from None
        url = pg.url(EMBEDDED_DATABASE)
        print(f"embedded PostgreSQL at {url} (data in {pg.data_dir})", flush=True)
        if supervise:
            supervisor = PostgresSupervisor(pg)
            supervisor.start()
        yield url
    finally:
        if supervisor is not None:
            await supervisor.stop()
        try:
            await asyncio.to_thread(pg.stop)
        except EmbeddedPostgresError as exc:
            _log.warning("stopping the embedded PostgreSQL failed: %s", exc)


# -- serve --------------------------------------------------------------------


async def _serve(settings: Settings) -> None:
    if settings.workers > 1 and settings.port == 0:
        raise StartupError(EXIT_CONFIG, "--workers needs a fixed --port (workers share it)")
    # Before anything starts: a taken port must not cost an initdb or a migration.
    check_port_free(settings.host, settings.port)
    async with database_url(settings, supervise=True) as url:
        await check_database(url, settings)
        if settings.migrate_on_start:
            from server.db.migrate import upgrade

            async with _migration(url):
                await upgrade(url, settings.migrations_dir)
        if settings.workers <= 1:
            await _serve_until_signal(settings, url)
        else:
            await _supervise(dataclasses.replace(settings, database_url=url))


async def _serve_until_signal(settings: Settings, url: str) -> None:
    from server.app import create_server

    try:
        server = create_server(settings, database_url=url)
    except OSError as exc:
        raise StartupError(
            EXIT_PORT, f"cannot listen on {settings.host}:{settings.port}: {exc}"
        ) from None
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
    try:
        _run(_serve_until_signal(settings, settings.database_url))
    except StartupError as exc:
        _fail(exc.code, exc.message)


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
    ctx = multiprocessing.get_context("spawn")
    # Only these processes bind with SO_REUSEPORT (the parent checked the port is free).
    worker_settings = dataclasses.replace(
        settings, migrate_on_start=False, workers=1, reuse_port=True
    )
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
        raise SystemExit(EXIT_WORKER_DIED)


# -- migrate ------------------------------------------------------------------


async def _migrate(settings: Settings, action: str, revision: str) -> None:
    from alembic import command
    from server.db.migrate import alembic_config, downgrade, upgrade

    async with database_url(settings) as url:
        await check_database(url, settings)
        async with _migration(url):
            if action == "upgrade":
                await upgrade(url, settings.migrations_dir, revision or "head")
            elif action == "downgrade":
                await downgrade(url, settings.migrations_dir, revision or "-1")
            else:
                await asyncio.to_thread(
                    command.current, alembic_config(url, settings.migrations_dir), verbose=True
                )


# -- rollups ------------------------------------------------------------------

EXIT_DRIFT = 7


async def _rollups(settings: Settings, action: str, organization: str | None) -> int:
    import asyncpg

    from server.db.engine import Conn, to_asyncpg_dsn
    from server.queries.rollup_check import check_tenant

    repair = action == "repair"
    drifted = 0
    async with database_url(settings) as url:
        await check_database(url, settings)
        raw = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            orgs = (
                [organization]
                if organization
                else [
                    str(r["id"])
                    for r in await raw.fetch("SELECT id FROM organizations ORDER BY id")
                ]
            )
            for org in orgs:
                started = time.perf_counter()
                report = await check_tenant(Conn(raw, None), org, repair=repair)
                drifted += report.remaining if repair else report.total
                tables = ", ".join(f"{t} {n}" for t, n in sorted(report.drifted.items()) if n)
                left = f"; {report.remaining} still drifted" if report.remaining else ""
                print(
                    f"{org}: {report.total} rollup rows {'repaired' if repair else 'drifted'}"
                    f"{' (' + tables + ')' if tables else ''}{left}; {report.batches} batches "
                    f"in {time.perf_counter() - started:.1f}s",
                    flush=True,
                )
        finally:
            await raw.close()
    return EXIT_DRIFT if drifted else 0


# -- entry point --------------------------------------------------------------


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def _fail(code: int, message: str) -> NoReturn:
    print(f"booking-data: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line (argparse prints the usage too): the usage is one --help away.
        _fail(EXIT_CONFIG, f"{message} (see {self.prog} --help)")


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = _ArgumentParser(prog="booking-data", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: BOOKING_DATABASE_URL, else an embedded PostgreSQL)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    migrate = sub.add_parser("migrate", help="run database migrations")
    migrate.add_argument(
        "action", nargs="?", default="upgrade", choices=["upgrade", "downgrade", "current"]
    )
    migrate.add_argument("revision", nargs="?", default="")
    rollups = sub.add_parser(
        "rollups", help="check the summaries' rollups against the raw rows, or repair them"
    )
    rollups.add_argument("action", nargs="?", default="check", choices=["check", "repair"])
    rollups.add_argument(
        "--organization", type=_uuid, help="one tenant's id (default: every tenant)"
    )
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
    try:
        settings = load_settings(None, **overrides)
    except ValueError as exc:
        _fail(EXIT_CONFIG, f"configuration: {exc}")
    configure_logging(settings)
    try:
        if settings.database_url:
            _check_database_url(settings.database_url)
        if args.command == "serve":
            _run(_serve(settings))
        elif args.command == "rollups":
            outcome: list[int] = []

            async def run_rollups() -> None:
                outcome.append(await _rollups(settings, args.action, args.organization))

            _run(run_rollups())
            return outcome[0] if outcome else 1
        else:
            _run(_migrate(settings, args.action, args.revision))
    except StartupError as exc:
        _fail(exc.code, exc.message)
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, "interrupted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
