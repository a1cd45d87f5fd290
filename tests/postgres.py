"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary directory, a free port.

    with ThrowawayPostgres() as dsn:   # postgresql://postgres@127.0.0.1:PORT/postgres
        ...

The cluster is ours alone (not the package's system cluster): `initdb` into a fresh directory under
the system temporary directory, trust authentication on 127.0.0.1 only, durability off (fsync,
synchronous_commit, full_page_writes: a crash loses nothing we keep), stopped with `-m immediate` and
deleted at the end. PostgreSQL refuses to run as root, so as root every command runs as the `postgres`
user the package creates (`runuser`), on a directory it owns; as anyone else, as that user.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg

__all__ = ["INSTALL_HINT", "ThrowawayPostgres", "create_database", "find_bindir"]

INSTALL_HINT = "install it with `make postgres` (as root: apt-get install postgresql)"

# Durability is pointless for a cluster deleted at the end; the rest keeps it quiet and local.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_min_messages": "warning",
    "logging_collector": "off",
}
_START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections


def find_bindir() -> Path | None:
    """Where `initdb`, `pg_ctl` and `postgres` are: Debian's newest /usr/lib/postgresql/N/bin, else the
    directory of an `initdb` on the PATH; None if there is none."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(found, key=lambda p: int(re.sub(r"\D", "", Path(p).parent.parent.name) or 0))
        return Path(newest).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayPostgres:
    """A PostgreSQL cluster on a temporary directory and a free port, for as long as it is entered."""

    def __init__(self, bindir: Path | None = None, user: str = "postgres") -> None:
        found = bindir or find_bindir()
        if found is None:
            raise FileNotFoundError(f"no PostgreSQL server binaries (initdb): {INSTALL_HINT}")
        self.bindir = found
        self._run_as = user if os.geteuid() == 0 else None
        self._root: Path | None = None
        self.port = 0
        self.dsn = ""

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._run_as is not None:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        # cwd: the server user may not be allowed into ours (e.g. /root).
        done = subprocess.run(cmd, cwd=self._root, capture_output=True, text=True, check=False, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        assert self._root is not None, "not started"
        return self._root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        assert self._root is not None, "not started"
        return self._root / "server.log"

    def start(self) -> str:
        """initdb, configure and start the cluster; returns its DSN."""
        self._root = Path(tempfile.mkdtemp(prefix="smschannel-pg-"))
        if self._run_as is not None:
            owner = pwd.getpwnam(self._run_as)
            os.chown(self._root, owner.pw_uid, owner.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")
            # The socket lives beside the data, not in /var/run/postgresql (absent without the service).
            settings = {**_SETTINGS, "unix_socket_directories": f"'{self._root}'"}
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
            # The port is free when chosen; another process may take it before the server binds it.
            for attempt in range(3):
                self.port = _free_port()
                pg_ctl = ("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", str(_START_TIMEOUT))
                started = self._run(*pg_ctl, "-o", f"-p {self.port}", "start", check=False)
                if started.returncode == 0:
                    break
                if attempt == 2 or "could not bind" not in self._log_tail():
                    raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{self._log_tail()}")
        except BaseException:
            self._remove()
            raise
        atexit.register(self.stop)  # if a test run ends without the fixture's teardown
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self.dsn

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: nothing is kept) and delete its directory."""
        atexit.unregister(self.stop)
        if self._root is None:
            return
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        self._remove()

    def _remove(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def create_database(dsn: str, name: str, template: str = "template1") -> str:
    """A new database `name` on the server of `dsn` (a copy of `template`); returns its DSN."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'.encode())
    return f"{dsn.rsplit('/', 1)[0]}/{name}"
