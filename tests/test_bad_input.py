"""Bad input gets a clear error and changes nothing: not the store, not the session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clusterd.core.digest import state_digest
from clusterd.core.edits import Start
from clusterd.core.errors import BadCommit, InvalidSetting, LevelNotAllowed, NotDefined, UnknownMode
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit, CommitId, Unit, Write
from clusterd.schema.feature import UnknownFeature
from clusterd.store.session import Session
from clusterd.store.store import Store
from tests.storehelp import ME, americas, session, standalone

CL, WEST = Mode.cluster(), Mode.group("West")


def snapshot(store: Store, s: Session) -> tuple[str, int, list[Any]]:
    return state_digest(store.state), len(store.commit_log()), s.pending.items()


CASES: list[tuple[str, Callable[[Session], Any], type[Exception], str]] = [
    (
        "bad value",
        lambda s: s.set_record("settz", CL, {"timezone": "Mars/Olympus"}),
        InvalidSetting,
        "settz field 'timezone': unknown time zone 'Mars/Olympus'",
    ),
    (
        "bad field type",
        lambda s: s.set_row("unsubscribe", CL, "a@x.example", {"comment": 5}),
        InvalidSetting,
        "unsubscribe row 'a@x.example' field 'comment'",
    ),
    (
        "unknown field",
        lambda s: s.set_record("settz", CL, {"timezone": "UTC", "dst": True}),
        InvalidSetting,
        "settz field 'dst'",
    ),
    (
        "bad row name",
        lambda s: s.set_row("unsubscribe", CL, "#x", {"comment": ""}),
        InvalidSetting,
        "bad row name",
    ),
    (
        "unknown feature",
        lambda s: s.define("mailfilters", CL, Start.EMPTY),
        UnknownFeature,
        "unknown feature 'mailfilters'",
    ),
    (
        "unknown group",
        lambda s: s.define("settz", Mode.group("Rome"), Start.DEFAULTS),
        UnknownMode,
        "no such group",
    ),
    (
        "unknown machine",
        lambda s: s.define("settz", Mode.machine("x.example.com"), Start.EMPTY),
        UnknownMode,
        "no such machine",
    ),
    (
        "cluster-only at group",
        lambda s: s.define("userconfig", WEST, Start.EMPTY),
        LevelNotAllowed,
        "userconfig cannot be defined at group level (only at cluster)",
    ),
    (
        "machine-only at cluster",
        lambda s: s.define("interfaceconfig", CL, Start.EMPTY),
        LevelNotAllowed,
        "only at machine",
    ),
    (
        "row of undefined table",
        lambda s: s.set_row("unsubscribe", WEST, "a@x.example", {}),
        NotDefined,
        "unsubscribe is not defined at Group West",
    ),
    (
        "delete missing row",
        lambda s: s.delete_row("bounceconfig", CL, "nope"),
        NotDefined,
        "bounceconfig has no row 'nope' at Cluster",
    ),
    (
        "rows of a record",
        lambda s: s.set_row("settz", CL, "x", {}),
        InvalidSetting,
        "settz: is a single record",
    ),
    (
        "membership is not edited",
        lambda s: s.define("groups", CL, Start.EMPTY),
        InvalidSetting,
        "changed by cluster operations",
    ),
    (
        "copy onto itself",
        lambda s: s.copy("bounceconfig", WEST, WEST),
        InvalidSetting,
        "onto itself",
    ),
    (
        "copy from undefined",
        lambda s: s.copy("unsubscribe", WEST, CL),
        NotDefined,
        "not defined at Group West",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_edit_is_refused_and_changes_nothing(
    tmp_path: Path,
    case: str,
    call: Callable[[Session], Any],
    error: type[Exception],
    message: str,
) -> None:
    store = americas(tmp_path)
    s = session(store)
    s.define("bounceconfig", CL, Start.DEFAULTS)  # a pending change that must survive
    before = snapshot(store, s)
    with pytest.raises(error) as exc:
        call(s)
    assert message in str(exc.value)
    assert all("\n" not in line for line in exc.value.problems)  # type: ignore[attr-defined]
    assert snapshot(store, s) == before


def test_standalone_machine_edits_only_its_own_mode(tmp_path: Path) -> None:
    store = standalone(tmp_path)
    s = session(store)
    with pytest.raises(UnknownMode, match="not in a cluster"):
        s.define("settz", Mode.cluster(), Start.DEFAULTS)
    s.define("userconfig", Mode.machine(ME), Start.EMPTY)  # standalone holds everything
    assert s.commit("ok") is not None


def good_commit(store: Store, origin: str = "SER-9") -> Commit:
    return Commit(
        id=CommitId(origin, 1),
        hlc=1 << 40,
        user="mallory",
        at=0.0,
        comment="",
        context={},
        writes=(Write(Unit("settz", "cluster", ""), {"timezone": "UTC"}),),
    )


BAD_COMMITS: list[tuple[str, Callable[[Commit], Commit], str]] = [
    (
        "unknown feature",
        lambda c: replace(c, writes=(Write(Unit("nope", "cluster", ""), {}),)),
        "unknown feature 'nope'",
    ),
    (
        "bad value",
        lambda c: replace(
            c, writes=(Write(Unit("settz", "cluster", ""), {"timezone": "Nowhere"}),)
        ),
        "unknown time zone",
    ),
    (
        "bad mode",
        lambda c: replace(c, writes=(Write(Unit("settz", "planet:x", ""), None),)),
        "unknown mode",
    ),
    (
        "level not allowed",
        lambda c: replace(c, writes=(Write(Unit("userconfig", "group:West", ""), {}),)),
        "cannot be defined at group level",
    ),
    (
        "row of a record",
        lambda c: replace(c, writes=(Write(Unit("settz", "cluster", "row"), {"timezone": "UTC"}),)),
        "single record",
    ),
    (
        "fields on a table marker",
        lambda c: replace(c, writes=(Write(Unit("unsubscribe", "cluster", ""), {"x": 1}),)),
        "marker carries no fields",
    ),
    ("unit twice", lambda c: replace(c, writes=c.writes * 2), "written twice"),
    ("seq zero", lambda c: replace(c, id=CommitId("SER-9", 0)), "bad commit id"),
    (
        "skips its own history",
        lambda c: replace(c, context={"SER-9": 5}),
        "does not follow the origin's previous commit",
    ),
    ("negative context", lambda c: replace(c, context={"SER-1": -1}), "bad context"),
    ("bad timestamp", lambda c: replace(c, hlc=0), "bad timestamp"),
]


@pytest.mark.parametrize(("case", "spoil", "message"), BAD_COMMITS, ids=[c[0] for c in BAD_COMMITS])
def test_bad_remote_commit_is_refused_and_the_batch_applies_nothing(
    tmp_path: Path, case: str, spoil: Callable[[Commit], Commit], message: str
) -> None:
    store = americas(tmp_path)
    before = (state_digest(store.state), len(store.commit_log()), store.version_vector)
    good = good_commit(store, "SER-8")
    with pytest.raises(BadCommit) as exc:
        store.apply_remote([good, spoil(good_commit(store))])
    assert message in str(exc.value)
    assert (state_digest(store.state), len(store.commit_log()), store.version_vector) == before
    assert len(store.inbox) == 0


def test_a_local_commit_is_checked_like_a_remote_one(tmp_path: Path) -> None:
    """A value that bypassed the editor must not be committed: peers would refuse it,
    and with it every later commit of this machine."""
    store = americas(tmp_path)
    s = session(store)
    before = (state_digest(store.state), len(store.commit_log()))
    s.view.write(Unit("settz", "cluster", ""), {"timezone": "Mars/Olympus"})
    with pytest.raises(BadCommit, match="unknown time zone 'Mars/Olympus'"):
        s.commit("bad")
    s.pending.clear()
    s.view.write(Unit("userconfig", "group:West", ""), {})
    with pytest.raises(BadCommit, match="cannot be defined at group level"):
        s.commit("wrong level")
    assert (state_digest(store.state), len(store.commit_log())) == before


def test_checked_writes_keep_the_rows_written_with_their_marker(tmp_path: Path) -> None:
    """Unchecked marker and rows are validated in place: the rows survive the check."""
    store = americas(tmp_path)
    s = session(store)
    s.view.write(Unit("unsubscribe", "cluster", ""), {})
    s.view.write(Unit("unsubscribe", "cluster", "a@x.example"), {})  # comment defaults
    s.commit("direct writes")
    from clusterd.core import layers

    value = layers.effective(store.state, store.catalogue, ME)["unsubscribe"].value
    assert value == {"a@x.example": {"comment": ""}}  # validated, canonical, kept
