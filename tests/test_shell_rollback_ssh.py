"""``rollback`` where an admin meets it: one-command calls through the real OpenSSH
client against three real daemons (the shell runs in a worker process, which reads the
log; the commit goes through the node and replicates)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed
from tests.test_shell_ssh import ssh

ROUTE = """'destinations=[{"host": "mx.example.com"}]'"""


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 3) as bed:
        bed.start()
        bed.wait(bed.linked, what="links")
        yield bed


def run(m: Machine, line: str) -> str:
    done = ssh(m, line)
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    return done.stdout


def settz(m: Machine) -> object:
    return m.op("get", feature="settz", mode="cluster")["value"]


def routes(m: Machine) -> object:
    return m.op("get", feature="smtproutes", mode="cluster")["value"]


def test_rollback_by_id_restores_the_value_everywhere_and_keeps_later_work(
    trio: Testbed,
) -> None:
    a, b, c = trio.machines
    run(a, "clustermode cluster; settz set timezone=Europe/Paris; commit paris")
    run(a, "clustermode cluster; settz set timezone=Asia/Tokyo; commit tokyo")
    [tokyo] = json.loads(run(a, "commitdetail 1 --json"))
    assert tokyo["comment"] == "tokyo"
    trio.wait(lambda: settz(b) == {"timezone": "Asia/Tokyo"}, what="tokyo on b")
    run(b, f"clustermode cluster; smtproutes new a.example.com {ROUTE}; commit route on b")
    trio.wait(lambda: trio.converged(), what="convergence")

    asked = ssh(a, f"rollback {tokyo['id']}")  # a one-command call: only with --yes
    assert asked.returncode == 1, asked.stdout
    assert asked.stdout.splitlines()[-1] == (
        "Nothing was rolled back: a one-command call rolls back with --yes."
    )
    done = run(a, f"rollback {tokyo['id']} --yes")
    lines = done.splitlines()
    assert lines[0].startswith(f"Rollback of commit {tokyo['id']} by admin on {a.hostname}")
    assert "  settz at Cluster: set record" in lines
    assert lines[-1].startswith(f"Rolled back {tokyo['id']} in commit {a.serial}:")
    for m in trio.machines:
        trio.wait(lambda m=m: settz(m) == {"timezone": "Europe/Paris"}, what=f"paris on {m}")
        assert list(routes(m) or {}) == ["a.example.com"]  # the later commit stays
    [made] = json.loads(run(c, "commitdetail 1 --json"))
    assert made["comment"] == f"rollback of {tokyo['id']}" and made["origin"] == a.hostname


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    with Testbed(tmp_path_factory.mktemp("lone"), 1) as bed:
        bed.start()
        yield bed.machines[0]


@pytest.mark.parametrize(
    ("line", "status", "said"),
    [
        ("rollback", 2, "Usage: rollback ORIGIN:SEQ | N [--all] [--yes]"),
        ("rollback -5 --yes", 2, "Usage: rollback"),
        ("rollback 0 --yes", 2, "Usage: rollback"),
        ("rollback SER-000:abc --yes", 2, "Usage: rollback"),
        ("rollback 'SER-000:1; commit x' --yes", 2, "Usage: rollback"),
        ("rollback nobody.example.com:3 --yes", 1, "Error: no commit nobody.example.com:3 in"),
        ("rollback 99999999999999999999999999 --yes", 1, "Error: the log holds "),
        (
            "rollback SER-000:1 --yes",
            1,
            "Error: commit SER-000:1 cannot be rolled back: clusterd made it (clusterd init)",
        ),
        ("rollback SER-000:2 --yes", 1, "Error: commit SER-000:2 cannot be rolled back: it "),
    ],
)
def test_hostile_input_gets_a_reason_and_an_exit_status(
    lone: Machine, line: str, status: int, said: str
) -> None:
    before = json.loads(run(lone, "commitdetail 1 --json"))
    done = ssh(lone, line)
    assert done.returncode == status, (done.stdout, done.stderr)
    assert done.stdout.startswith(said), done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert json.loads(run(lone, "commitdetail 1 --json")) == before
