"""The store: atomic commits, sessions, conflicts, replication between two stores."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clusterd.core import layers
from clusterd.core.digest import state_digest
from clusterd.core.edits import Start
from clusterd.core.errors import CommitConflict
from clusterd.core.modes import Mode
from clusterd.store.store import Store
from clusterd.trust import clusterops, lifecycle
from tests.storehelp import ME, americas, session

CLUSTER, WEST = Mode.cluster(), Mode.group("West")
LA, CHI = "losangeles.example.com", "chicago.example.com"
UNSUB = "unsubscribe"


def rows(store: Store, machine: str, feature: str = UNSUB) -> dict[str, object]:
    return layers.effective(store.state, store.catalogue, machine)[feature].value


def test_commit_makes_all_levels_visible_at_once_and_logs_who_and_why(tmp_path: Path) -> None:
    store = americas(tmp_path)
    s = session(store, "alice")
    s.define(UNSUB, CLUSTER, Start.EMPTY)
    s.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "cluster"})
    s.define(UNSUB, WEST, Start.EMPTY)
    s.set_record("settz", Mode.machine(CHI), {"timezone": "America/Chicago"})
    assert rows(store, ME) == {}  # nothing visible before commit
    commit = s.commit("three levels")
    assert commit is not None and not s.pending
    assert rows(store, ME) == {"a@x.example": {"comment": "cluster"}}
    assert rows(store, LA) == {}  # West defines it, empty
    assert rows(store, CHI, "settz") == {"timezone": "America/Chicago"}
    logged = store.commit_log(limit=1)[0]
    assert (logged.id, logged.user, logged.comment) == (commit.id, "alice", "three levels")
    assert {(w.unit.feature, w.unit.mode) for w in logged.writes} == {
        (UNSUB, "cluster"),
        (UNSUB, "group:West"),
        ("settz", f"machine:{CHI}"),
    }


def test_empty_is_not_absent_and_survives_reopening(tmp_path: Path) -> None:
    store = americas(tmp_path)
    s = session(store)
    s.define(UNSUB, CLUSTER, Start.EMPTY)
    for key in ("a@x.example", "b@x.example", "c@x.example"):
        s.set_row(UNSUB, CLUSTER, key, {"comment": key})
    s.define(UNSUB, WEST, Start.EMPTY)
    s.commit("west has none")
    assert len(rows(store, ME)) == 3 and rows(store, LA) == {}
    store.close()
    store = Store(tmp_path / f"{ME}.db", origin="SER-NY", hostname=ME)
    assert rows(store, LA) == {}
    r = layers.effective(store.state, store.catalogue, LA)[UNSUB]
    assert r.mode == WEST and r.defined_by is not None
    s = session(store)
    s.undefine(UNSUB, WEST)
    s.commit("west inherits again")
    assert len(rows(store, LA)) == 3


def test_clear_discards_pending_changes_of_every_level(tmp_path: Path) -> None:
    store = americas(tmp_path)
    before = state_digest(store.state)
    s = session(store)
    s.define(UNSUB, CLUSTER, Start.EMPTY)
    s.set_record("settz", Mode.machine(LA), {"timezone": "UTC"})
    assert s.clear() == 2  # the marker of the new definition, the record
    assert s.commit("nothing") is None
    assert state_digest(store.state) == before


def test_sessions_are_independent_and_conflicts_are_reported(tmp_path: Path) -> None:
    store = americas(tmp_path)
    setup = session(store)
    setup.define(UNSUB, CLUSTER, Start.EMPTY)
    setup.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "v0"})
    setup.commit("setup")
    alice, bob = session(store, "alice"), session(store, "bob")
    alice.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "alice"})
    alice.set_row(UNSUB, CLUSTER, "b@x.example", {"comment": "alice"})
    bob.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "bob"})
    assert rows(store, ME)["a@x.example"] == {"comment": "v0"}  # neither sees the other
    bob.commit("bob first")
    with pytest.raises(CommitConflict) as exc:
        alice.commit("alice second")
    assert [str(c.unit) for c in exc.value.conflicts] == ["unsubscribe@cluster[a@x.example]"]
    assert rows(store, ME)["a@x.example"] == {"comment": "bob"}  # nothing changed
    alice.commit("alice, without the conflicting row", on_conflict="discard")
    assert rows(store, ME) == {
        "a@x.example": {"comment": "bob"},
        "b@x.example": {"comment": "alice"},
    }
    carol = session(store, "carol")
    carol.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "carol"})
    bob.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "bob again"})
    bob.commit("bob")
    carol.commit("carol overwrites knowingly", on_conflict="keep")
    assert rows(store, ME)["a@x.example"] == {"comment": "carol"}
    assert store.inconsistencies() == []  # every overwrite was made knowingly


def pair(tmp_path: Path, la_ahead_ms: int | None = None) -> tuple[Store, Store]:
    """newyork's cluster, and losangeles joined to it with a copy of its state.

    ``la_ahead_ms`` sets losangeles' wall clock that far ahead of the real one.
    """
    ny = americas(tmp_path)
    wall = None if la_ahead_ms is None else (lambda: time.time_ns() // 1_000_000 + la_ahead_ms)
    la = Store(tmp_path / f"{LA}.db", origin="SER-0", hostname=LA, wall_ms=wall)
    lifecycle.join(la, ny.export_state(), group="West")
    sync(la, ny)
    return ny, la


def sync(src: Store, dst: Store) -> None:
    dst.apply_remote(src.commits_missing_from(dst.version_vector) or [])


def test_concurrent_edits_of_the_same_row_converge_and_record_both_versions(
    tmp_path: Path,
) -> None:
    ny, la = pair(tmp_path)
    s = session(ny)
    s.define(UNSUB, CLUSTER, Start.EMPTY)
    s.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "v0"})
    s.commit("v0")
    sync(ny, la)
    a, b = session(ny, "alice"), session(la, "bob")
    a.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "alice"})
    a.set_row(UNSUB, CLUSTER, "z@x.example", {"comment": "alice only"})
    b.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": "bob"})
    b.set_row(UNSUB, CLUSTER, "y@x.example", {"comment": "bob only"})
    ca, cb = a.commit("alice"), b.commit("bob")
    sync(ny, la)
    sync(la, ny)
    assert state_digest(ny.state) == state_digest(la.state)
    winner = max([ca, cb], key=lambda c: (c.hlc, c.id.origin))
    loser = cb if winner is ca else ca
    got = rows(ny, CHI)
    assert got["a@x.example"] == {"comment": "alice" if winner is ca else "bob"}
    assert got["y@x.example"] == {"comment": "bob only"}  # different rows: both kept
    assert got["z@x.example"] == {"comment": "alice only"}
    for store in (ny, la):
        [loss] = store.inconsistencies()
        assert loss.loser.commit == loser.id and loss.by == winner.id
        assert str(loss.unit) == "unsubscribe@cluster[a@x.example]"
        assert store.get_commit(loss.loser.commit).user in {"alice", "bob"}


def test_deleting_a_definition_beats_a_concurrent_row_edit_and_records_it(
    tmp_path: Path,
) -> None:
    ny, la = pair(tmp_path)
    s = session(ny)
    s.define(UNSUB, WEST, Start.EMPTY)
    s.set_row(UNSUB, WEST, "a@x.example", {"comment": "v0"})
    s.commit("west list")
    sync(ny, la)
    a, b = session(ny, "alice"), session(la, "bob")
    a.undefine(UNSUB, WEST)
    b.set_row(UNSUB, WEST, "b@x.example", {"comment": "bob"})
    b.commit("bob adds a row")  # later in time than nothing: order does not matter
    a.commit("alice deletes West's list")
    sync(ny, la)
    sync(la, ny)
    assert state_digest(ny.state) == state_digest(la.state)
    for store in (ny, la):
        assert layers.effective(store.state, store.catalogue, LA)[UNSUB].mode is None
        lost = [str(x.unit) for x in store.inconsistencies()]
        assert "unsubscribe@group:West[b@x.example]" in lost


@pytest.mark.parametrize("bob_ahead_ms", [1000, -1000])
def test_recreating_keeps_row_edits_made_after_it_and_records_older_ones(
    tmp_path: Path, bob_ahead_ms: int
) -> None:
    ny, la = pair(tmp_path, la_ahead_ms=bob_ahead_ms)
    s = session(ny)
    s.define(UNSUB, WEST, Start.EMPTY)
    s.set_row(UNSUB, WEST, "old@x.example", {"comment": "old"})
    s.commit("west list")
    sync(ny, la)
    a = session(ny, "alice")
    a.define(UNSUB, WEST, Start.EMPTY)  # start West's list again, empty
    a.commit("reset")
    b = session(la, "bob")  # bob has not seen the reset
    b.set_row(UNSUB, WEST, "new@x.example", {"comment": "bob"})
    b.commit("bob edits a row")
    sync(ny, la)
    sync(la, ny)
    if bob_ahead_ms > 0:  # bob's edit is newer than the reset: it survives
        assert rows(ny, LA) == rows(la, LA) == {"new@x.example": {"comment": "bob"}}
        assert ny.inconsistencies() == []
    else:  # older than the reset: hidden, and recorded on both members
        assert rows(ny, LA) == rows(la, LA) == {}
        for store in (ny, la):
            [loss] = store.inconsistencies()
            assert str(loss.unit) == "unsubscribe@group:West[new@x.example]"


def test_commits_arriving_early_wait_for_what_they_depend_on(tmp_path: Path) -> None:
    ny, la = pair(tmp_path)
    s = session(ny)
    s.define(UNSUB, CLUSTER, Start.EMPTY)
    c1 = s.commit("one")
    s.set_row(UNSUB, CLUSTER, "a@x.example", {"comment": ""})
    c2 = s.commit("two")
    assert c1 is not None and c2 is not None
    first = la.apply_remote([c2])
    assert first.applied == [] and first.waiting == 1
    second = la.apply_remote([c1])
    assert second.applied == [c1.id, c2.id] and second.waiting == 0
    assert rows(la, CHI) == {"a@x.example": {"comment": ""}}
    assert la.apply_remote([c1, c2]).applied == []  # duplicates change nothing


def test_what_a_removed_machine_made_waits_for_nobody(tmp_path: Path) -> None:
    """losangeles commits twice; newyork receives only the second (it waits), then removes
    losangeles: nothing can complete the waiting commit any more, so it goes."""
    ny, la = pair(tmp_path)
    s = session(la)
    s.set_record("settz", Mode.machine(LA), {"timezone": "Asia/Tokyo"})
    first = s.commit("one")
    s.set_record("settz", Mode.machine(LA), {"timezone": "Europe/Paris"})
    second = s.commit("two")
    assert first is not None and second is not None
    assert ny.apply_remote([second]).waiting == 1
    clusterops.remove_machine(ny, LA, user="admin")
    assert len(ny.inbox) == 0
    assert ny.state.vv.get(la.origin, 0) == first.id.seq - 1  # neither was applied
