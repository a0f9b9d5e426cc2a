"""Shared fixtures: a throwaway PostgreSQL server for the tests marked ``postgres``.

``postgres_url`` starts one server per test session from the PostgreSQL binaries of
the machine (``pg_ctl`` on the PATH, else ``/usr/lib/postgresql/*/bin``), in a
temporary directory, on a free port of 127.0.0.1, and stops and removes it at the
end whatever happens.  The tests that use it are skipped when the binaries are not
installed.  ``fresh_pg_url`` gives each test its own new database on that server.

The shell tests' fixtures (``daemon``, ``term``, ``americas``, ``ny``: an in-process
daemon and logins on it, standalone or as newyork of cluster americas) live here too,
shared by ``test_shell_commands.py`` and ``test_shell_more.py``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clusterd.daemon import Daemon
from clusterd.testbed import free_port
from tests.shellhelp import Term, admit_la, new_daemon

PG_USER = "clusterd"  # the superuser initdb creates; the server trusts local logins
PG_DATABASE = "clusterd"
SYSTEM_USER = "postgres"  # who runs the server when the tests run as root
NOT_INSTALLED = "PostgreSQL server binaries (pg_ctl) are not installed: apt-get install postgresql"


def _pg_bindir() -> Path | None:
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


def _run(cmd: list[str], *, as_user: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    if as_user is not None:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _check(result: subprocess.CompletedProcess[str], what: str, log: Path | None = None) -> None:
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip()
        if log is not None and log.exists():
            detail += "\n--- server log ---\n" + log.read_text(errors="replace")[-4000:]
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{detail}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A running PostgreSQL server (one per session); yields the URL of its database."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(NOT_INSTALLED)
    psycopg = pytest.importorskip(
        "psycopg", reason="psycopg is not installed: pip install -e .[test]"
    )

    as_user: str | None = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as the postgres system user.
        try:
            account = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            pytest.skip(
                f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL as "
                "(it refuses to run as root): install postgresql, or run the tests unprivileged"
            )
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: cannot start PostgreSQL")
        as_user = SYSTEM_USER

    # Under /tmp with mode 0755: its parents must be traversable by the postgres user.
    top = Path(tempfile.mkdtemp(prefix="clusterd-pg-", dir="/tmp"))
    data = top / "data"
    log = top / "server.log"
    started = False
    try:
        top.chmod(0o755)
        if as_user is not None:
            os.chown(top, account.pw_uid, account.pw_gid)
        result = _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "--no-sync",
                "-E",
                "UTF8",
            ],
            as_user=as_user,
            cwd=top,
        )
        _check(result, "initdb")
        port = free_port()
        options = f"-k {data} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
        started = True  # from here on, stop it whatever happens
        result = _run(
            [str(bindir / "pg_ctl"), "-w", "-D", str(data), "-l", str(log), "-o", options, "start"],
            as_user=as_user,
            cwd=top,
        )
        _check(result, "pg_ctl start", log)
        with psycopg.connect(
            host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        yield f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}"
    finally:
        if started:
            _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                as_user=as_user,
                cwd=top,
            )
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def fresh_pg_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the session's server, dropped after the test."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    name = f"t_{uuid.uuid4().hex[:16]}"
    params = {"host": url.host, "port": url.port, "user": url.username, "autocommit": True}
    with psycopg.connect(dbname=url.database, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a store the test did not close must not keep the database alive.
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(dbname=url.database, **params) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests marked ``slow`` run only when asked for (``-m slow``); CI runs the
    bounded versions that sit beside them."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seeds",
        type=int,
        default=None,
        help="simulation seeds to run with 50 members (default: the bounded CI set)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``sim_seed`` takes --seeds N values (0..N-1) when given, else the CI default."""
    if "sim_seed" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("seeds")
        default = marker.args[0] if marker else 10
        count = metafunc.config.getoption("seeds") or default
        metafunc.parametrize("sim_seed", range(count))


# -- the shell tests' daemon and logins ------------------------------------------------


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = new_daemon(tmp_path)
    try:
        yield d
    finally:
        d.store.close()


@pytest.fixture
async def term(daemon: Daemon) -> Term:
    """A login on the standalone machine."""
    return Term(daemon)


@pytest.fixture
async def americas(daemon: Daemon) -> Daemon:
    daemon.admin.create("americas", "admin")
    daemon.admin.group_op("addgroup", {"group": "Paris"}, "admin")
    admit_la(daemon, "Paris")
    return daemon


@pytest.fixture
async def ny(americas: Daemon) -> Term:
    """A login on newyork, member of cluster americas (in machine mode, as after login)."""
    return Term(americas)
