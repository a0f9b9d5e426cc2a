"""``rollback COMMIT`` / ``rollback N`` in the shell, in-process with scripted answers.

newyork.example.com is in cluster americas with losangeles.example.com (group Paris,
unreachable); each test reads the exit status and the text the console got.  The
inverse itself is tested table-driven in tests/test_rollback.py.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence

import pytest

from clusterd.cli.console import BatchConsole, ScriptedConsole
from clusterd.cli.shell import Shell
from clusterd.core.errors import CommitConflict
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.core.versions import JSON
from clusterd.node.daemon import Daemon
from clusterd.store.session import Session
from tests.shellhelp import ADMIN, LA, NY, STAMP, Term, start_answers
from tests.test_shell_access import complete

CLUSTER = Mode.cluster().key
ROUTE = """'destinations=[{"host": "mx.example.com"}]'"""
TIME = r"\w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4} \S+"


async def in_cluster_mode(t: Term) -> None:
    await t.ok("clustermode cluster", "y")


async def commit(t: Term, *lines: str, comment: str = "change") -> str:
    """Edit and commit at ``t``'s mode; returns the new commit's id."""
    for line in lines:
        await t.ok(line, *start_answers(t, line))
    await t.ok(f"commit {comment}")
    return newest(t.daemon)


def newest(d: Daemon) -> str:
    return str(d.store.commit_log(1)[0].id)


def defines(d: Daemon, feature: str, mode: str = CLUSTER) -> JSON | None:
    return definition(d.store.state.entries(feature, mode), d.store.catalogue[feature].is_table)


def tz(d: Daemon) -> str | None:
    value = defines(d, "settz")
    return None if value is None else value["timezone"]


async def test_rollback_previews_asks_and_commits_a_new_commit(ny: Term) -> None:
    await in_cluster_mode(ny)
    await commit(ny, "settz set timezone=Europe/Paris", comment="paris")
    cid = await commit(ny, "settz set timezone=Asia/Tokyo", comment="tokyo")
    status, out = await ny.run(f"rollback {cid}", "y")
    lines = out.splitlines()
    assert status == 0, out
    assert re.fullmatch(rf"Rollback of commit {cid} by admin on {NY} at {STAMP} 'tokyo':", lines[0])
    diff = ["  settz:", '    timezone: "Asia/Tokyo" → "Europe/Paris"']
    assert lines[1:-1] == [
        "Pending changes:",
        "  settz at Cluster: set record",
        '    timezone: "Asia/Tokyo" → "Europe/Paris"',
        f"Machine {LA}:", *diff,
        f"Machine {NY}:", *diff,
        f"Commit this rollback of {cid}? [N]>y",
    ]  # fmt: skip
    made = ny.daemon.store.commit_log(1)[0]
    assert re.fullmatch(rf"Rolled back {cid} in commit {made.id}: {TIME}", lines[-1])
    assert (made.user, made.comment) == ("admin", f"rollback of {cid}")
    assert tz(ny.daemon) == "Europe/Paris"
    # Ids are fixed: the same commit again is now changed since (by the rollback).
    status, out = await ny.run(f"rollback {cid}")
    assert status == 1
    assert out.splitlines()[1:] == [
        "Changed since, left alone (--all puts them back):",
        out.splitlines()[2],
        f"Nothing to roll back: all that {cid} changed is left alone (above); nothing was "
        "committed.",
    ] and re.fullmatch(
        rf"  settz at Cluster: changed by commit {made.id} by admin on {NY} at {STAMP}",
        out.splitlines()[2],
    )
    # A rollback is a commit like any other: rolled back in turn, it redoes.
    await ny.ok(f"rollback {made.id}", "y")
    assert tz(ny.daemon) == "Asia/Tokyo"


async def test_answering_no_changes_nothing(ny: Term) -> None:
    await in_cluster_mode(ny)
    cid = await commit(ny, "settz set timezone=Asia/Tokyo")
    before = newest(ny.daemon)
    status, out = await ny.run(f"rollback {cid}", "n")
    assert status == 1 and out.splitlines()[-1] == "Nothing was rolled back."
    assert newest(ny.daemon) == before and tz(ny.daemon) == "Asia/Tokyo"


async def test_units_changed_since_are_listed_and_left_alone_unless_all(americas: Daemon) -> None:
    ny, bob = Term(americas), Term(americas, user="bob")
    await in_cluster_mode(ny)
    await in_cluster_mode(bob)
    await commit(ny, "settz set timezone=Europe/Paris")
    cid = await commit(ny, "settz set timezone=Asia/Tokyo",
                       f"smtproutes new a.example.com {ROUTE}")  # fmt: skip
    theirs = await commit(bob, "settz set timezone=Europe/Rome", comment="rome")
    status, out = await ny.run(f"rollback {cid}", "n")
    lines = out.splitlines()
    assert status == 1
    assert lines[1] == "Changed since, left alone (--all puts them back):"
    assert re.fullmatch(
        rf"  settz at Cluster: changed by commit {theirs} by bob on {NY} at {STAMP}", lines[2]
    )
    assert lines[3:5] == ["Pending changes:", "  smtproutes at Cluster: undefine"]
    assert "settz" not in "\n".join(lines[3:])  # not in the preview: left alone
    # --all puts them back too, knowingly.
    status, out = await ny.run(f"rollback {cid} --all", "y")
    assert status == 0 and "Changed since, put back all the same (--all):" in out
    assert tz(americas) == "Europe/Paris" and defines(americas, "smtproutes") is None


async def test_a_reset_undone_keeps_the_rows_others_added_since(americas: Daemon) -> None:
    ny, bob = Term(americas), Term(americas, user="bob")
    await in_cluster_mode(ny)
    await in_cluster_mode(bob)
    await commit(
        ny, f"smtproutes new a.example.com {ROUTE}", f"smtproutes new b.example.com {ROUTE}"
    )
    reset = await commit(ny, "smtproutes define empty", f"smtproutes new c.example.com {ROUTE}")
    await commit(bob, f"smtproutes new d.example.com {ROUTE}")
    out = await ny.ok(f"rollback {reset}", "y")
    assert [line for line in out.splitlines() if line.startswith("  smtproutes at")] == [
        "  smtproutes at Cluster: new row a.example.com",
        "  smtproutes at Cluster: new row b.example.com",
        "  smtproutes at Cluster: delete row c.example.com",
    ]
    rows = defines(americas, "smtproutes")
    assert rows is not None and sorted(rows) == ["a.example.com", "b.example.com", "d.example.com"]


async def test_rollback_n_counts_the_commits_that_changed_settings_at_the_mode(ny: Term) -> None:
    await in_cluster_mode(ny)
    first = await commit(ny, "settz set timezone=Asia/Tokyo")
    second = await commit(ny, f"smtproutes new a.example.com {ROUTE}")
    await ny.ok("clusterconfig addgroup Rome")  # membership at cluster mode: not counted
    await ny.ok(f"clustermode machine {NY}")
    mine = await commit(ny, "settz set timezone=Europe/Paris")
    await in_cluster_mode(ny)
    for n, cid in ((1, second), (2, first)):
        status, out = await ny.run(f"rollback {n}", "n")
        assert status == 1 and out.startswith(f"Rollback of commit {cid} "), out
    status, out = await ny.run("rollback 3")  # the commit that created the cluster
    assert status == 1 and out.startswith("Error: commit SER-NY:2 cannot be rolled back: it "
                                          "created the cluster")  # fmt: skip
    status, out = await ny.run("rollback 4")
    assert (status, out) == (1, "Error: only 3 commit(s) in the log changed settings at Cluster")
    await ny.ok(f"clustermode machine {NY}")
    status, out = await ny.run("rollback 1", "n")
    assert out.startswith(f"Rollback of commit {mine} "), out


@pytest.mark.parametrize(
    ("line", "status", "said"),
    [
        ("rollback", 2, "Usage: rollback ORIGIN:SEQ | N [--all] [--yes]"),
        ("rollback 1 2", 2, "Usage: rollback"),
        ("rollback -1", 2, "Usage: rollback"),
        ("rollback -- -1", 2, "Usage: rollback"),
        ("rollback 0", 2, "Usage: rollback ORIGIN:SEQ | N [--all] [--yes]   (N counts from 1"),
        ("rollback --force 1", 2, "Usage: rollback"),
        ("rollback abc", 2, "Usage: rollback"),
        ("rollback ²", 2, "Usage: rollback"),
        ("rollback SER-NY:", 2, "Usage: rollback"),
        ("rollback :3", 2, "Usage: rollback"),
        ("rollback SER-NY:x", 2, "Usage: rollback"),
        ("rollback SER-NY:-3", 2, "Usage: rollback"),
        ("rollback SER-NY:1e3", 2, "Usage: rollback"),
        ("rollback " + "x" * 3000 + ":1", 2, "Usage: rollback"),
        ("rollback SER-NY:99999999999999999999999", 2, "Usage: rollback"),
        ("rollback nobody:5", 1, "Error: no commit nobody:5 in the log (commitdetail shows the"),
        ("rollback SER-NY:999", 1, "Error: no commit SER-NY:999 in the log"),
        ("rollback SER-NY:1", 1, "Error: commit SER-NY:1 cannot be rolled back: clusterd made it"),
        ("rollback 999", 1, "Error: the log holds 4 commit(s): there is no commit 999 back"),
        ("rollback " + "9" * 4000, 1, "Error: the log holds 4 commit(s): there is no commit"),
    ],
)
async def test_bad_input_is_refused_with_a_reason(
    ny: Term, line: str, status: int, said: str
) -> None:
    before = newest(ny.daemon)
    got, out = await ny.run(line)
    assert got == status and out.startswith(said), out
    assert "Traceback" not in out and len(out) < 400
    assert newest(ny.daemon) == before


async def test_host_name_or_serial_name_the_same_commit(ny: Term) -> None:
    await in_cluster_mode(ny)
    cid = await commit(ny, "settz set timezone=Asia/Tokyo")
    seq = cid.split(":")[1]
    for line in (f"rollback {NY}:{seq}", f"rollback NewYork.Example.com.:{seq}"):
        status, out = await ny.run(line, "n")
        assert status == 1 and out.startswith(f"Rollback of commit {cid} "), out


async def test_membership_is_skipped(ny: Term) -> None:
    joined = str(ny.daemon.store.commit_log(1)[0].id)  # losangeles joins group Paris
    status, out = await ny.run(f"rollback {joined}")
    assert status == 1
    assert out.splitlines()[1:] == [
        "Skipped: machines at Cluster, placement at Cluster, detached at Cluster (membership "
        "is never rolled back).",
        f"Nothing to roll back: all that {joined} changed is left alone (above); nothing was "
        "committed.",
    ]


async def test_a_truncated_commit_cannot_be_rolled_back(ny: Term) -> None:
    await in_cluster_mode(ny)
    cid = await commit(ny, "settz set timezone=Asia/Tokyo")
    await commit(ny, "settz set timezone=Europe/Paris")
    ny.daemon.store.truncate_log(1)  # only the newest commit keeps its changes
    status, out = await ny.run(f"rollback {cid}")
    assert (status, out) == (1, f"Error: commit {cid} cannot be rolled back: the log no longer "
                                "holds what it changed (its changes were truncated); nothing "
                                "changed")  # fmt: skip
    # The newest commit still holds its changes, but what stood before it is gone.
    status, out = await ny.run("rollback 1")
    assert status == 1 and out.splitlines()[1:3] == [
        f"Unknown, left alone (the log no longer holds their value before {newest(ny.daemon)}):",
        "  settz at Cluster",
    ]
    status, out = await ny.run("rollback 2")
    assert (status, out) == (1, "Error: only 1 commit(s) that changed settings at Cluster are "
                                "in the log before the truncated ones (what those changed is "
                                "gone)")  # fmt: skip


async def test_read_only_is_refused_and_users_need_an_admin(americas: Daemon) -> None:
    rita = Term(americas, user="rita", role="read-only")
    assert await rita.run("rollback 1") == (1, "Error: rita (read-only) may not roll back a commit")
    otto = Term(americas, user="otto", role="operator")  # made by a commit of userconfig
    made = newest(americas)
    status, out = await otto.run(f"rollback {made}")
    assert (status, out) == (1, "Error: otto (operator) may not roll back userconfig: only "
                                "admins manage users and SSH settings")  # fmt: skip
    assert newest(americas) == made


async def test_a_one_command_call_needs_yes(americas: Daemon) -> None:
    ny = Term(americas)
    await in_cluster_mode(ny)
    cid = await commit(ny, "settz set timezone=Asia/Tokyo")
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line(f"rollback {cid}") == 1
    assert batch.lines[-1] == "Nothing was rolled back: a one-command call rolls back with --yes."
    assert tz(americas) == "Asia/Tokyo"
    assert await shell.run_line(f"rollback {cid} --yes") == 0
    assert tz(americas) is None  # the cluster did not define it before


async def test_the_shells_own_pending_changes_stay_pending(ny: Term) -> None:
    await in_cluster_mode(ny)
    cid = await commit(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok(f"smtproutes new a.example.com {ROUTE}", *start_answers(ny, "smtproutes new"))
    out = await ny.ok(f"rollback {cid} --yes")
    assert "(The 2 pending change(s) of this shell stay pending: the rollback is a commit of its " \
           "own.)" in out  # fmt: skip
    assert ny.pending == 2 and tz(ny.daemon) is None


class Meddling(ScriptedConsole):
    """Answers like a script; before its first answer, another admin commits settz."""

    def __init__(self, daemon: Daemon, answers: Sequence[str]) -> None:
        super().__init__(answers)
        self.daemon = daemon

    async def ask(self, question: str, default: str | None = None, **kw: object) -> str:
        session = Session(self.daemon.store, "bob")
        session.set_record("settz", Mode.cluster(), {"timezone": "Europe/Rome"})
        session.commit("meanwhile")
        return await super().ask(question, default)


async def test_a_change_made_while_asking_fails_the_whole_rollback(americas: Daemon) -> None:
    ny = Term(americas)
    await in_cluster_mode(ny)
    cid = await commit(ny, "settz set timezone=Asia/Tokyo")
    console = Meddling(americas, ["y"])
    shell = Shell(americas.api, ADMIN, console)
    assert await shell.run_line(f"rollback {cid}") == 1
    assert console.lines[-1] == (
        "Error: changed by another commit since you read them: settz@cluster; nothing was "
        "rolled back: run rollback again"
    )
    assert tz(americas) == "Europe/Rome"


def test_a_commit_conflict_crosses_to_a_shell_worker() -> None:
    conflict = CommitConflict([])
    assert str(pickle.loads(pickle.dumps(conflict))) == str(conflict)


async def test_help_and_completion(ny: Term) -> None:
    assert (await ny.ok("help rollback")).startswith(
        "rollback: Undo a past commit with a new one, after a preview\n"
        "rollback ORIGIN:SEQ | N [--all] [--yes]"
    )
    offered = complete(ny, "rollback ")
    assert offered[0] == newest(ny.daemon) and offered[-2:] == ["--all", "--yes"]
    assert complete(ny, f"rollback {newest(ny.daemon)} --a") == ["--all"]
