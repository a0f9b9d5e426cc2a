"""The inverse of a commit (clusterd.core.rollback), table-driven over a pure state.

Each case is a history of commits, the commit undone, and what every mode it touched
defines once the inverse is committed on top, with what was left alone (changed since,
unknown, skipped).  ``History`` applies commits with the real merge, keeps the log in
memory, and reads it backwards from the commit undone as the store does.
"""

from __future__ import annotations

from typing import Any

import pytest

from clusterd.core import rollback
from clusterd.core.merge import apply, merge
from clusterd.core.pending import Pending
from clusterd.core.state import State, definition
from clusterd.core.versions import MARKER, Commit, CommitId, Unit, Write
from clusterd.schema.catalogue import CATALOGUE

TZ = ("settz", "cluster")  # a record
ROUTES = ("smtproutes", "group:Paris")  # a table
USERS = ("userconfig", "cluster")


def rec(value: Any) -> tuple[str, str, str, Any]:
    return (*TZ, MARKER, value)


def tbl(value: Any) -> tuple[str, str, str, Any]:
    return (*ROUTES, MARKER, value)


def row(key: str, value: Any) -> tuple[str, str, str, Any]:
    return (*ROUTES, key, value)


class History:
    """Commits applied in stamp order (one per step, each having seen all before unless
    ``blind``), and the log."""

    def __init__(self) -> None:
        self.state = State()
        self.log: list[Commit] = []
        self.hlc = 0

    def commit(self, *writes: tuple[str, str, str, Any], origin: str = "A",
               blind: bool = False, truncated: bool = False, hlc: int = 0) -> Commit:  # fmt: skip
        self.hlc += 10
        hlc = hlc or self.hlc
        markers = {(f, m) for f, m, k, _ in writes if k == MARKER}
        made = tuple(Write(Unit(f, m, k), v, k != MARKER and (f, m) in markers)
                     for f, m, k, v in writes)  # fmt: skip
        seq = self.state.vv.get(origin, 0) + 1
        context = {origin: seq - 1} if blind else {**self.state.vv, origin: seq - 1}
        commit = Commit(CommitId(origin, seq), hlc, "admin", float(hlc), "", context,
                        made)  # fmt: skip
        apply(self.state, merge(self.state, commit))
        kept = Commit(commit.id, commit.hlc, "admin", commit.at, "", context, (), True)
        self.log.append(kept if truncated else commit)
        return commit

    def undo(self, target: Commit, everything: bool = False) -> rollback.Inverse:
        units = rollback.wanted(self.state, CATALOGUE, target)
        before, rest = rollback.known_before(self.state, target, units)

        def stamp(c: Commit) -> tuple[int, str]:
            return (c.hlc, c.id.origin)

        older = sorted((c for c in self.log if stamp(c) < stamp(target)), key=stamp)
        found, _unknown = rollback.versions_before(reversed(older), rest)
        inv = rollback.inverse(self.state, CATALOGUE, target, {**before, **found},
                               everything=everything, keep=frozenset({"userconfig"}))  # fmt: skip
        pending = Pending()  # as the shell writes them: with_reset as a commit derives it
        for w in inv.writes:
            pending.write(self.state, w.unit, w.value)
        assert [(w.unit, w.value) for w in pending.to_writes()] == [
            (w.unit, w.value) for w in inv.writes
        ], "writes not in an order pending changes keep"
        if inv.writes:
            self.commit(*[(*w.unit, w.value) for w in pending.to_writes()], origin="R")
        return inv

    def defines(self, feature: str, mode: str) -> Any:
        return definition(self.state.entries(feature, mode), CATALOGUE[feature].is_table)


R1, R2, R3, R4 = ({"server": f"10.0.0.{i}"} for i in range(1, 5))
UTC, TOKYO, PARIS = ({"timezone": z} for z in ("UTC", "Asia/Tokyo", "Europe/Paris"))


def parse(step: str) -> list[tuple[str, str, str, Any]]:
    """One commit in the cases' words: ``tz=UTC`` / ``tz-`` set or undefine the record;
    ``T{}`` / ``T-`` define or undefine the table; ``a=1`` / ``a-`` write or delete row a
    (value: server 10.0.0.1)."""
    writes = []
    for word in step.split():
        if word.startswith("tz"):
            writes.append(rec(None if word == "tz-" else {"timezone": word[3:]}))
        elif word.startswith("T"):
            writes.append(tbl(None if word == "T-" else {}))
        else:
            key, value = word.rstrip("-").split("=") if "=" in word else (word[:-1], None)
            writes.append(row(key, None if value is None else {"server": f"10.0.0.{value}"}))
    return writes


def shown(h: History) -> str:
    """What the modes of the cases define, in the cases' words."""
    found = []
    tz = h.defines(*TZ)
    if h.state.entries(*TZ).marker is not None:
        found.append("tz-" if tz is None else f"tz={tz['timezone']}")
    if h.state.entries(*ROUTES).marker is not None:
        rows = h.defines(*ROUTES)
        found.append(
            "T-"
            if rows is None
            else "T{"
            + " ".join(f"{k}={v['server'].rsplit('.', 1)[1]}" for k, v in sorted(rows.items()))
            + "}"
        )
    return " ".join(found)


def said(h: History, made: list[Commit], inv: rollback.Inverse) -> str:
    """The units left alone, in the cases' words: ``KEY@COMMIT`` (T: the table's marker,
    tz the record's), ``?KEY`` unknown."""
    number = {c.id: i for i, c in enumerate(made)}
    name = {TZ: "tz", ROUTES: "T"}
    words = [
        f"{c.unit.key or name[(c.unit.feature, c.unit.mode)]}@{number[c.now.commit]}"
        for c in inv.changed
    ]
    return " ".join(words + [f"?{u.key or name[(u.feature, u.mode)]}" for u in inv.unknown])


# name, history (one commit per '|'), the commit undone, --all, what is defined after
# the rollback, what was left alone (changed since: KEY@COMMIT)
CASES = [
    ("record back to its value", "tz=UTC | tz=Tokyo", 1, False, "tz=UTC", ""),
    ("record defined: undefined again", "tz=Tokyo", 0, False, "tz-", ""),
    ("record changed since: left alone", "tz=UTC | tz=Tokyo | tz=Rome", 1, False, "tz=Rome",
     "tz@2"),
    ("record changed since, --all", "tz=UTC | tz=Tokyo | tz=Rome", 1, True, "tz=UTC", "tz@2"),
    ("record set to what it was: nothing to write", "tz=UTC | tz=UTC", 1, False, "tz=UTC", ""),
    ("new row: deleted", "T{} a=1 | b=2", 1, False, "T{a=1}", ""),
    ("edited row: its old value", "T{} a=1 | a=2", 1, False, "T{a=1}", ""),
    ("deleted row: back", "T{} a=1 | a-", 1, False, "T{a=1}", ""),
    ("another row edited since: kept", "T{} a=1 | b=2 | a=3", 1, False, "T{a=3}", ""),
    ("the row edited since: left alone", "T{} a=1 | a=2 | a=3", 1, False, "T{a=3}", "a@2"),
    ("a row hidden before is not there before", "T{} a=1 | T{} | a=2", 2, False, "T{}", ""),
    ("rows of a table reset since: left alone", "T{} a=1 | a=2 | T{} b=3", 1, False, "T{b=3}",
     "a@2"),
    ("table defined (a copy): undefined", "T{} a=1 b=2", 0, False, "T-", ""),
    ("table defined, a row added since by another: left alone", "T{} a=1 | b=2", 0, False,
     "T{a=1 b=2}", "b@1"),
    ("table defined, a row added since, --all: undefined", "T{} a=1 | b=2", 0, True, "T-",
     "b@1"),
    ("table undefined: back with its rows", "T{} a=1 b=2 | b- | T-", 2, False, "T{a=1}", ""),
    ("table undefined, defined again since: left alone", "T{} a=1 | T- | T{} c=3", 1, False,
     "T{c=3}", "T@2"),
    ("table reset (define on a defined table) keeps rows others wrote later",
     "T{} a=1 b=2 | T{} b=3 c=4 | d=1", 1, False, "T{a=1 b=2 d=1}", ""),
    ("table reset, a row it hid edited since: left alone", "T{} a=1 b=2 | T{} c=3 | a=4", 1,
     False, "T{a=4 b=2}", "a@2"),
    ("table reset, a row it wrote edited since: left alone", "T{} a=1 | T{} c=3 | c=4", 1,
     False, "T{a=1 c=4}", "c@2"),
    ("table reset, reset again since: left alone", "T{} a=1 | T{} b=2 | T{} c=3", 1, False,
     "T{c=3}", "T@2"),
    ("table reset, reset again since, --all: as before it", "T{} a=1 | T{} b=2 | T{} c=3", 1,
     True, "T{a=1}", "T@2"),
    ("undefining an undefined table changed nothing", "T{} a=1 | T- | T-", 2, False, "T-", ""),
]  # fmt: skip


def run(history: str, undone: int, everything: bool = False
        ) -> tuple[History, list[Commit], rollback.Inverse]:  # fmt: skip
    h = History()
    steps = history.split("|")
    made = [h.commit(*parse(step), origin="AB"[i % 2]) for i, step in enumerate(steps)]
    return h, made, h.undo(made[undone], everything)


@pytest.mark.parametrize(("name", "history", "undone", "everything", "after", "left"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_inverse(name: str, history: str, undone: int, everything: bool, after: str,
                 left: str) -> None:  # fmt: skip
    h, made, inv = run(history, undone, everything)
    assert (shown(h), said(h, made, inv)) == (after, left)
    assert not inv.skipped


def test_a_later_unit_holds_the_definition_and_says_so() -> None:
    _, made, inv = run("T{} a=1 | b=2", 0)
    assert inv.writes == ()
    assert inv.changed == (
        rollback.Changed(Unit(*ROUTES, "b"), made[1].version(made[1].writes[0]),
                         Unit(*ROUTES, MARKER)),
    )  # fmt: skip


def test_membership_is_skipped_and_settings_of_the_same_commit_undone() -> None:
    h = History()
    h.commit(rec(UTC))
    both = h.commit(("groups", "cluster", "g1", {"name": "Paris"}), rec(TOKYO))
    inv = h.undo(both)
    assert inv.skipped == ((Unit("groups", "cluster", "g1"), rollback.MEMBERSHIP),)
    assert h.defines(*TZ) == UTC
    group = h.state.get(Unit("groups", "cluster", "g1"))
    assert group is not None and group.value == {"name": "Paris"}


def test_users_are_never_undefined() -> None:
    h = History()
    made = h.commit((*USERS, MARKER, {}), (*USERS, "admin", {"role": "admin"}))
    inv = h.undo(made)
    assert inv.writes == ()
    assert inv.skipped == ((Unit(*USERS, MARKER), rollback.LOCKOUT),)
    assert h.defines(*USERS) == {"admin": {"role": "admin"}}


def test_a_value_before_a_truncated_commit_is_unknown() -> None:
    h = History()
    h.commit(rec(UTC), tbl({}), row("a", R1))
    h.commit(rec(TOKYO), row("a", R2), truncated=True)  # its writes gone from the log
    undone = h.commit(rec(PARIS), row("a", R3), row("b", R4))
    inv = h.undo(undone)
    # The values before the commit undone were written by the truncated commit, or
    # earlier: nobody can say which.  b is new, but whether it existed before the
    # truncated commit is unknown too.
    assert sorted(u.key for u in inv.unknown) == ["", "a", "b"]
    assert inv.writes == ()


def test_before_means_in_last_writer_order_not_in_arrival_order() -> None:
    h = History()
    h.commit(rec(UTC))
    undone = h.commit(rec(TOKYO), origin="A")  # stamp 20
    late = h.commit(rec(PARIS), origin="B", blind=True, hlc=15)  # concurrent, older: it lost
    assert h.state.loss(Unit(*TZ, MARKER), late.id) is not None
    h.undo(undone)
    assert h.defines(*TZ) == PARIS  # what stood just before the commit, everywhere


def test_versions_before_stops_at_the_first_truncated_commit() -> None:
    a, b = Unit(*TZ, MARKER), Unit(*ROUTES, "a")
    log = [
        Commit(CommitId("A", 3), 30, "u", 0, "", {}, (Write(a, UTC),)),
        Commit(CommitId("A", 2), 20, "u", 0, "", {}, (), truncated=True),
        Commit(CommitId("A", 1), 10, "u", 0, "", {}, (Write(b, R1),)),
    ]
    found, unknown = rollback.versions_before(log, {a, b})
    assert found[a] is not None and found[a].value == UTC and unknown == {b}
    found, unknown = rollback.versions_before(log[2:], {a, b})
    assert found == {a: None, b: found[b]} and unknown == set()
    assert found[b] is not None and found[b].value == R1


@pytest.mark.parametrize(
    ("writes", "why"),
    [
        ([("cluster", "cluster", MARKER, {"name": "c"}), rec(UTC)], "it created the cluster"),
        ([("removed", "cluster", "old.example.com", {"renamed_to": "new.example.com"})],
         "it renamed machine old.example.com to new.example.com"),
        ([("sethostname", "machine:new.example.com", MARKER, {"hostname": "new.example.com"}),
          ("settz", "machine:old.example.com", MARKER, None)], "it renamed a machine"),
    ],
)  # fmt: skip
def test_commits_that_cannot_be_rolled_back(writes: list[Any], why: str) -> None:
    h = History()
    made = h.commit(*writes)
    reason = rollback.refusal(CATALOGUE, made)
    assert reason is not None and reason.startswith(why)
    assert rollback.refusal(CATALOGUE, h.commit(rec(TOKYO))) is None
    gone = Commit(CommitId("A", 9), 1, "u", 0, "", {}, (), truncated=True)
    assert "truncated" in (rollback.refusal(CATALOGUE, gone) or "")
