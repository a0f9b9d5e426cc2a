"""The store on a real PostgreSQL server (``conftest.postgres_url``): the same behaviour
as on SQLite, through the PostgreSQL driver and dialect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clusterd.core import layers
from clusterd.core.digest import state_digest
from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit, CommitId, Unit, Write
from clusterd.schema.validation import InvalidSetting
from clusterd.store.session import Session
from clusterd.store.store import Store

pytestmark = pytest.mark.postgres

ORIGIN, HOST = "SER-1", "m1.example.com"
ME = Mode.machine(HOST)
UNSUB = "unsubscribe"


def open_store(url: str, origin: str = ORIGIN, host: str = HOST) -> Store:
    return Store(url, origin=origin, hostname=host)


def effective(store: Store, host: str = HOST) -> dict[str, Any]:
    return layers.effective_values(store.state, store.catalogue, host)


def rows(store: Store, host: str = HOST) -> dict[str, Any]:
    return effective(store, host)[UNSUB]


def fill(store: Store, rows: dict[str, dict[str, Any]], comment: str) -> Commit:
    """One commit that (re)defines the unsubscribe table of this machine with ``rows``."""
    session = Session(store, "admin")
    session.define(UNSUB, ME, Start.EMPTY)
    for name, row in rows.items():
        session.set_row(UNSUB, ME, name, row)
    commit = session.commit(comment)
    assert commit is not None
    return commit


def test_define_commit_and_reopen(fresh_pg_url: str) -> None:
    store = open_store(fresh_pg_url)
    try:
        assert store.engine.dialect.name == "postgresql"
        s = Session(store, "alice")
        s.define("settz", ME, Start.DEFAULTS)
        s.set_record("settz", ME, {"timezone": "Europe/Paris"})
        s.define(UNSUB, ME, Start.EMPTY)
        s.set_row(UNSUB, ME, "a@x.example", {"comment": "first"})
        s.set_row(UNSUB, ME, "@spam.example", {"comment": ""})
        first = s.commit("paris")
        assert first is not None
        s.delete_row(UNSUB, ME, "@spam.example")
        s.set_row(UNSUB, ME, "b@x.example", {"comment": "second"})
        second = s.commit("edit rows")
        assert second is not None
        digest, values, vv = state_digest(store.state), effective(store), store.version_vector
    finally:
        store.close()
    assert values["settz"] == {"timezone": "Europe/Paris"}
    assert values[UNSUB] == {
        "a@x.example": {"comment": "first"},
        "b@x.example": {"comment": "second"},
    }

    again = open_store(fresh_pg_url)
    try:
        assert state_digest(again.state) == digest
        assert effective(again) == values
        assert again.version_vector == vv == {ORIGIN: 2}
        log = again.commit_log()
        assert [(c.id, c.user, c.comment) for c in log] == [
            (second.id, "alice", "edit rows"),
            (first.id, "alice", "paris"),
        ]
        assert log[0].writes == second.writes and log[1].writes == first.writes
        assert log[0].hlc == second.hlc and log[0].context == second.context
        # the reopened store goes on where it stopped
        s = Session(again, "bob")
        s.set_record("settz", ME, {"timezone": "UTC"})
        third = s.commit("back to UTC")
        assert third is not None and third.id == CommitId(ORIGIN, 3)
        assert third.hlc > second.hlc
    finally:
        again.close()


def test_ten_thousand_rows_round_trip(fresh_pg_url: str) -> None:
    big = {f"user{i}@example.com": {"comment": f"row {i}"} for i in range(10_000)}
    store = open_store(fresh_pg_url)
    try:
        commit = fill(store, big, "big")
        assert len(commit.writes) == 10_001  # the marker and the rows
        digest = state_digest(store.state)
        assert rows(store) == big
    finally:
        store.close()
    again = open_store(fresh_pg_url)
    try:
        assert rows(again) == big
        assert state_digest(again.state) == digest
        logged = again.commit_log()
        assert len(logged) == 1 and logged[0].writes == commit.writes
        # and a second big commit over it: 10,000 updates, every row changed
        changed = {name: {"comment": "changed"} for name in big}
        fill(again, changed, "all changed")
        digest = state_digest(again.state)
    finally:
        again.close()
    third = open_store(fresh_pg_url)
    try:
        assert rows(third) == changed
        assert state_digest(third.state) == digest
        assert third.version_vector == {ORIGIN: 2}
    finally:
        third.close()


def _sqlite_store_with_history(path: Path) -> Store:
    """A SQLite store with records, rows, deletions, a reset and hidden rows."""
    store = open_store(str(path))
    s = Session(store, "alice")
    s.define("settz", ME, Start.DEFAULTS)
    s.define(UNSUB, ME, Start.EMPTY)
    for i in range(50):
        s.set_row(UNSUB, ME, f"u{i}@example.com", {"comment": f"c{i}"})
    s.commit("start")
    s.set_record("settz", ME, {"timezone": "Asia/Tokyo"})
    for i in range(0, 50, 5):
        s.delete_row(UNSUB, ME, f"u{i}@example.com")
    s.commit("deletions")
    s.define(UNSUB, ME, Start.EMPTY)  # a reset: the 40 rows left are hidden from now on
    s.set_row(UNSUB, ME, "@.example.net", {"comment": "after the reset"})
    s.commit("reset")
    return store


def test_replace_state_from_sqlite_gives_the_same_digest(tmp_path: Path, fresh_pg_url: str) -> None:
    source = _sqlite_store_with_history(tmp_path / "source.db")
    try:
        snapshot = source.export_state()
        digest, values = state_digest(source.state), effective(source)
        log = [(c.id, c.hlc, c.user, c.comment, c.writes) for c in source.commit_log()]
    finally:
        source.close()
    assert len(snapshot.entries) > 50  # hidden rows and tombstones are carried too

    # the same machine, its store moved to PostgreSQL
    target = open_store(fresh_pg_url)
    try:
        target.replace_state(snapshot)
        assert state_digest(target.state) == digest
        assert effective(target) == values
    finally:
        target.close()
    again = open_store(fresh_pg_url)
    try:
        assert state_digest(again.state) == digest
        assert effective(again) == values
        assert again.version_vector == {ORIGIN: 3}
        assert [(c.id, c.hlc, c.user, c.comment, c.writes) for c in again.commit_log()] == log
        # and it accepts a new commit on top
        s = Session(again, "bob")
        s.set_row(UNSUB, ME, "z@example.org", {"comment": ""})
        assert s.commit("after the move") is not None
        assert again.version_vector == {ORIGIN: 4}
    finally:
        again.close()


def test_invalid_value_raises_and_leaves_the_database_unchanged(fresh_pg_url: str) -> None:
    store = open_store(fresh_pg_url)
    try:
        s = Session(store, "alice")
        s.define("settz", ME, Start.DEFAULTS)
        s.set_record("settz", ME, {"timezone": "Europe/Paris"})
        s.commit("paris")
        digest, count = state_digest(store.state), len(store.commit_log())

        # through a session: refused at once, nothing pending, nothing to commit
        with pytest.raises(InvalidSetting, match="Mars/Olympus"):
            s.set_record("settz", ME, {"timezone": "Mars/Olympus"})
        assert not s.pending
        assert s.commit("nothing") is None

        # from a peer: refused before anything of the commit is applied
        bad = Commit(
            id=CommitId("SER-2", 1),
            hlc=store.state.entries("settz", ME.key).marker.hlc + 1,  # type: ignore[union-attr]
            user="mallory",
            at=0.0,
            comment="bad zone",
            context={},
            writes=(
                Write(Unit(UNSUB, ME.key, "ok@example.com"), {"comment": "fine"}),
                Write(Unit("settz", ME.key, ""), {"timezone": "Mars/Olympus"}),
            ),
        )
        with pytest.raises(InvalidSetting, match="Mars/Olympus"):
            store.apply_remote([bad])
        assert state_digest(store.state) == digest
        assert len(store.commit_log()) == count
        assert effective(store)["settz"] == {"timezone": "Europe/Paris"}
    finally:
        store.close()
    again = open_store(fresh_pg_url)
    try:
        assert state_digest(again.state) == digest
        assert len(again.commit_log()) == count == 1
        assert again.version_vector == {ORIGIN: 1}
    finally:
        again.close()


def test_the_plain_postgresql_url_form_works(fresh_pg_url: str) -> None:
    """``postgresql://`` (what people write) means psycopg, the driver we ship."""
    plain = fresh_pg_url.replace("postgresql+psycopg://", "postgresql://")
    store = open_store(plain)
    try:
        assert store.engine.dialect.name == "postgresql"
        assert store.engine.dialect.driver == "psycopg"
    finally:
        store.close()


def test_a_failed_init_leaves_nothing_and_can_be_run_again(tmp_path: Path) -> None:
    """init against a database that does not answer fails with the reason, exit 2, and
    leaves no directory, keys or scratch behind; run again with a good store it works."""
    import subprocess
    import sys

    from clusterd.dev.testbed import free_port

    def init(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clusterd", "init", "--data-dir", str(tmp_path / "m"),
             "--hostname", "m.example.com", "--no-admin", *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    done = init("--database", f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    assert done.returncode == 2 and "cannot open the store" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.init-*"))
    assert init().returncode == 0
