"""A throwaway PostgreSQL server for tests: made in a temporary directory, on a free
port of 127.0.0.1, from the machine's binaries (``pg_ctl`` on the PATH, else
``/usr/lib/postgresql/*/bin``); stopped and started at will (outage tests), removed at
the end whatever happens.  Run as the ``postgres`` system user when the tests run as
root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from clusterd.dev.testbed import free_port

PG_USER = "clusterd"  # the superuser initdb creates; the server trusts local logins
PG_DATABASE = "clusterd"
SYSTEM_USER = "postgres"  # who runs the server when the tests run as root
NOT_INSTALLED = "PostgreSQL server binaries (pg_ctl) are not installed: apt-get install postgresql"


def _bindir() -> Path | None:
    """The directory holding pg_ctl, initdb and postgres, or None."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [
        Path(d)
        for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    ]
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("pg_ctl", "initdb", "postgres")):
            return bindir
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class PgServer:
    """One server: ``create()`` (skips the test when PostgreSQL cannot run here), then
    ``start()`` / ``stop()`` as often as wanted, ``remove()`` at the end."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip(NOT_INSTALLED)
        self.bindir = bindir
        self.psycopg = pytest.importorskip(
            "psycopg", reason="psycopg is not installed: pip install -e .[test]"
        )
        self.as_user: str | None = None
        if os.geteuid() == 0:
            try:
                self.account = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                pytest.skip(
                    f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL "
                    "as (it refuses to run as root): install postgresql, or run unprivileged"
                )
            if shutil.which("runuser") is None:
                pytest.skip("running as root and runuser is missing: cannot start PostgreSQL")
            self.as_user = SYSTEM_USER
        # Under /tmp with mode 0755: its parents must be traversable by the postgres user.
        self.top = Path(tempfile.mkdtemp(prefix="clusterd-pg-", dir="/tmp"))
        self.data = self.top / "data"
        self.log = self.top / "server.log"
        self.port = free_port()
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        if self.as_user is not None:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(
            cmd, cwd=self.top, capture_output=True, text=True, timeout=120, check=False
        )

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip()
            if self.log.exists():
                detail += "\n--- server log ---\n" + self.log.read_text(errors="replace")[-4000:]
            pytest.fail(f"{what} failed (exit {result.returncode}):\n{detail}", pytrace=False)

    def create(self) -> PgServer:
        self.top.chmod(0o755)
        if self.as_user is not None:
            os.chown(self.top, self.account.pw_uid, self.account.pw_gid)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  PG_USER, "--no-sync", "-E", "UTF8"]  # fmt: skip
        self._check(self._run(initdb), "initdb")
        self.start()
        with self.psycopg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        return self

    def start(self) -> None:
        options = f"-k {self.data} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self.running = True  # from here on, stop it whatever happens
        pg_ctl = [str(self.bindir / "pg_ctl"), "-w", "-D", str(self.data), "-l", str(self.log)]
        self._check(self._run([*pg_ctl, "-o", options, "start"]), "pg_ctl start")

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"])
            self.running = False

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.top, ignore_errors=True)
