"""``commit confirmed`` in the store and the pure core (clusterd.core.confirm): the row a
confirmed commit carries, and the one commit that undoes every pending row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clusterd.core import confirm
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending
from clusterd.core.versions import CommitId, Unit
from clusterd.store.store import Store
from clusterd.trust.logins import ADMIN_ONLY_FEATURES
from tests.storehelp import americas, session

LA = "losangeles.example.com"
CHI = "chicago.example.com"


def tz(store: Store, host: str) -> Any:
    version = store.state.entries("settz", Mode.machine(host).key).marker
    return None if version is None or version.value is None else version.value["timezone"]


def set_tz(store: Store, host: str, zone: str, *, minutes: int | None = None,
           deadline: float = 1000.0) -> CommitId:  # fmt: skip
    s = session(store)
    s.set_record("settz", Mode.machine(host), {"timezone": zone})
    made = s.commit("tz", confirm=None if minutes is None else confirm.Asked(deadline, minutes))
    assert made is not None
    return made.id


def roll_back(store: Store) -> None:
    """What a member does at the deadline (clusterd.node.confirms), without a daemon."""
    undo = confirm.undo(store.state, store.catalogue, confirm.pending(store.state),
                        ADMIN_ONLY_FEATURES)  # fmt: skip
    s = session(store, "clusterd")
    for w in undo.writes:
        s.view.write(w.unit, w.value, checked=w.unit.feature == confirm.FEATURE)
    s.commit("rollback")


def test_the_row_travels_with_the_commit_and_undoes_it(tmp_path: Path) -> None:
    store = americas(tmp_path)
    set_tz(store, LA, "UTC")
    cid = set_tz(store, LA, "Asia/Tokyo", minutes=5)
    [p] = confirm.pending(store.state)
    assert (p.commit.id, p.deadline, p.minutes, p.user) == (cid, 1000.0, 5, "admin")
    assert confirm.deadline(store.state) == 1000.0
    commit = store.get_commit(cid)
    assert confirm.unit(cid) in {w.unit for w in commit.writes}  # the same commit
    roll_back(store)
    assert tz(store, LA) == "UTC"
    assert confirm.pending(store.state) == []


def test_a_unit_written_since_by_another_commit_is_kept(tmp_path: Path) -> None:
    store = americas(tmp_path)
    set_tz(store, LA, "UTC")
    set_tz(store, CHI, "UTC")
    set_tz(store, LA, "Asia/Tokyo", minutes=5)
    s = session(store)  # (a store commit: only the API's commits confirm)
    s.set_record("settz", Mode.machine(CHI), {"timezone": "Europe/Paris"})
    s.commit("bob's")
    assert len(confirm.pending(store.state)) == 1
    roll_back(store)
    assert (tz(store, LA), tz(store, CHI)) == ("UTC", "Europe/Paris")


def test_two_pending_rows_are_undone_together_the_oldest_winning(tmp_path: Path) -> None:
    store = americas(tmp_path)
    set_tz(store, LA, "UTC")
    set_tz(store, LA, "Asia/Tokyo", minutes=5)
    set_tz(store, LA, "Europe/Paris", minutes=5)
    set_tz(store, CHI, "Europe/Berlin", minutes=5)
    assert len(confirm.pending(store.state)) == 3
    roll_back(store)
    assert (tz(store, LA), tz(store, CHI)) == ("UTC", None)


def test_a_commit_with_nothing_but_internal_rows_carries_no_row(tmp_path: Path) -> None:
    store = americas(tmp_path)
    assert store.commit(Pending(), user="admin", comment="", confirm=confirm.Asked(1.0, 1)) is None
    assert confirm.pending(store.state) == []


def test_a_refused_confirmed_commit_leaves_the_pending_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = americas(tmp_path)
    s = session(store)
    s.set_record("settz", Mode.machine(LA), {"timezone": "UTC"})
    before = s.pending.saved()
    monkeypatch.setattr(confirm, "MAX_UNDO", 0)
    with pytest.raises(confirm.TooBig, match="commit it plainly"):
        s.commit("tz", confirm=confirm.Asked(1.0, 1))
    assert s.pending.saved() == before
    assert tz(store, LA) is None


def test_who_acts_when() -> None:
    row = confirm.Pending(_commit("B"), 100.0, 1, "admin", {})
    members = ["A", "B", "C"]
    assert confirm.acts_at(row, "B", members, 2.0) == 100.0  # the origin first
    assert confirm.acts_at(row, "A", members, 2.0) == 101.0
    assert confirm.acts_at(row, "C", members, 2.0) == 102.0


def test_extended_moves_every_deadline(tmp_path: Path) -> None:
    store = americas(tmp_path)
    set_tz(store, LA, "Asia/Tokyo", minutes=5)
    [(unit, row)] = confirm.extended(store.state, 2000.0)
    assert unit.feature == "confirm" and row["deadline"] == 2000.0


def _commit(origin: str) -> Any:
    from clusterd.core.versions import Commit

    return Commit(CommitId(origin, 1), 1, "admin", 0.0, "", {}, ())


def test_row_unit() -> None:
    assert confirm.unit(CommitId("SER-1", 7)) == Unit("confirm", "cluster", "SER-1:7")


def test_the_undo_is_never_shown(tmp_path: Path) -> None:
    store = americas(tmp_path)
    set_tz(store, LA, "Asia/Tokyo", minutes=5)
    [(key, version)] = store.state.entries("confirm", "cluster").rows.items()
    shown = store.catalogue["confirm"].shown({key: version.value})[key]
    assert (shown["writes"], shown["before"], shown["minutes"]) == ("set", "set", 5)


def test_probe_words() -> None:
    assert confirm.probe_word("links") == "links"
    assert confirm.probe_word("targets,links") == "links,targets"
    for bad in ("", "mesh", "links,links", "links,", "Links", "links;targets"):
        assert confirm.probe_word(bad) is None, bad
    assert confirm.probes("links,targets") == {"links", "targets"}
    assert confirm.probes(None) == frozenset()
