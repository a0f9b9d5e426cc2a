"""Shared fixtures: throwaway PostgreSQL servers for the tests marked ``postgres``.

``postgres_url`` starts one server per test session (``tests.pghelp``), stopped and
removed at the end whatever happens; the tests that use it are skipped when the
binaries are not installed.  ``fresh_pg_url`` gives each test its own new database on
that server; ``pg_server`` gives a test a server of its own, to stop and start.

The shell tests' fixtures (``daemon``, ``term``, ``americas``, ``ny``: an in-process
daemon and logins on it, standalone or as newyork of cluster americas) live here too,
shared by ``test_shell_commands.py`` and ``test_shell_more.py``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clusterd.node.daemon import Daemon
from tests.pghelp import PgServer
from tests.shellhelp import Term, admit_la, new_daemon


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A running PostgreSQL server (one per session); yields the URL of its database."""
    server = PgServer()
    try:
        yield server.create().url
    finally:
        server.remove()


@pytest.fixture
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of the test's own, to stop and start (outages)."""
    server = PgServer()
    try:
        yield server.create()
    finally:
        server.remove()


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
    await daemon.admin.create("americas", "admin")
    await daemon.admin.group_op("addgroup", {"group": "Paris"}, "admin")
    admit_la(daemon, "Paris")
    return daemon


@pytest.fixture
async def ny(americas: Daemon) -> Term:
    """A login on newyork, member of cluster americas (in machine mode, as after login)."""
    return Term(americas)
