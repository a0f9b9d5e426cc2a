"""Membership under partitions on real daemons: the repros of docs/membership.md.

newyork (a), losangeles (b) and chicago (c) form cluster americas; b and c are in group
Paris.  chicago goes away (DISCONNECT), things happen on both sides, chicago comes back
(RECONNECT): every member must then list the same machines in the same existing
groups, with nothing undone by the reconnect.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.test_join_processes import americas

PARIS, LYON, MAIN = "Paris", "Lyon", "Main_Group"


def listing(m: Machine) -> dict[str, list[str]]:
    """LIST of one member: group -> its machines."""
    return {g: sorted(ms) for g, ms in m.op("list")["groups"].items()}


def same_everywhere(bed: Testbed) -> dict[str, list[str]]:
    """Every member's LIST, once they agree (and converged)."""
    bed.wait(bed.linked, what="linked")
    bed.wait(bed.converged, what="converged")
    lists = [listing(m) for m in bed.machines]
    assert all(x == lists[0] for x in lists), lists
    return lists[0]


def ssh(m: Machine, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(identity.local_ssh(m.config, command), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def paris(tmp_path: Path) -> Iterator[Testbed]:
    """americas: a in Main_Group, b and c in Paris, all linked."""
    with Testbed(tmp_path, 3, seed=False) as bed:
        bed.start()
        a, b, c = americas(bed)
        a.op("addgroup", group=PARIS)
        for m in (b, c):
            a.op("setgroup", machine=m.hostname, group=PARIS)
        assert same_everywhere(bed) == {MAIN: [a.hostname], PARIS: [b.hostname, c.hostname]}
        yield bed


def away(bed: Testbed, m: Machine) -> None:
    m.op("disconnect")
    others = [x for x in bed.machines if x is not m]
    bed.wait(lambda: bed.linked(others), what="the others linked")


def back(m: Machine) -> None:
    done = ssh(m, "clusterconfig reconnect")
    assert done.returncode == 0, done.stdout


def losses(m: Machine) -> list[Any]:
    return list(m.status()["inconsistencies"])


@pytest.mark.parametrize("how", ["setgroup", "renamegroup"])
def test_reconnect_keeps_what_happened_to_it_while_away(paris: Testbed, how: str) -> None:
    a, b, c = paris.machines
    away(paris, c)
    if how == "setgroup":
        a.op("setgroup", machine=c.hostname, group=MAIN)
        expected = {MAIN: [a.hostname, c.hostname], PARIS: [b.hostname]}
    else:
        a.op("renamegroup", old=PARIS, new=LYON)
        expected = {LYON: [b.hostname, c.hostname], MAIN: [a.hostname]}
    back(c)
    assert same_everywhere(paris) == expected
    assert losses(a) == []  # nothing was lost to the reconnect
    detail = json.loads(ssh(a, "commitdetail 20 --json").stdout)
    assert not any(r["lost"] for r in detail)


def test_a_move_into_a_group_renamed_meanwhile_follows_the_rename(paris: Testbed) -> None:
    """c, away, moves a into Paris while b's side renames Paris to Lyon: a is in Lyon."""
    a, b, c = paris.machines
    away(paris, c)
    b.op("renamegroup", old=PARIS, new=LYON)
    c.op("setgroup", machine=a.hostname, group=PARIS)
    back(c)
    assert same_everywhere(paris) == {LYON: [a.hostname, b.hostname, c.hostname], MAIN: []}
    check = json.loads(ssh(a, "clustermode cluster; clustercheck --json").stdout)
    assert not [f for f in check["facts"] if f["kind"] == "membership"], check["facts"]


def test_a_move_into_a_group_deleted_meanwhile_falls_back_to_main_group(
    paris: Testbed,
) -> None:
    """c, away, moves a into Paris while b's side deletes Paris (its machines to
    Main_Group): a is in Main_Group on every member, and clustercheck says why."""
    a, b, c = paris.machines
    away(paris, c)
    b.op("deletegroup", group=PARIS, move_to=MAIN)
    c.op("setgroup", machine=a.hostname, group=PARIS)
    back(c)
    assert same_everywhere(paris) == {MAIN: [a.hostname, b.hostname, c.hostname]}
    done = ssh(b, "clustermode cluster; clustercheck --json")
    facts = [f for f in json.loads(done.stdout)["facts"] if f["kind"] == "membership"]
    assert [(f["machine"], f["group"]) for f in facts] == [(a.hostname, MAIN)], facts
    assert done.returncode == 1
    ssh(b, f"clusterconfig setgroup {a.hostname} {MAIN}")  # placed on purpose: no fact
    paris.wait(paris.converged, what="converged")
    again = json.loads(ssh(c, "clustermode cluster; clustercheck --json").stdout)
    assert not [f for f in again["facts"] if f["kind"] == "membership"]


def test_disconnect_and_reconnect_another_machine(paris: Testbed) -> None:
    """From a, DISCONNECT c: c closes its links; RECONNECT c from a: c learns it from the
    hello of the first member that dials it, and links again."""
    a, b, c = paris.machines
    done = ssh(a, f"clusterconfig disconnect {c.hostname}")
    assert done.returncode == 0, done.stdout
    paris.wait(lambda: c.status()["disconnected"], what="c disconnected")
    paris.wait(lambda: all(p["state"] == "disconnected" for p in c.status()["peers"]),
               what="c's links closed")  # fmt: skip
    assert ssh(c, "version").stdout.count("clusterd") == 1  # its shell still answers
    done = ssh(a, f"clusterconfig reconnect {c.hostname}")
    assert done.returncode == 0, done.stdout
    paris.wait(lambda: not c.status()["disconnected"], what="c reconnected")
    assert same_everywhere(paris)[PARIS] == [b.hostname, c.hostname]


def test_twenty_disconnect_and_reconnect_cycles_leave_no_traceback(paris: Testbed) -> None:
    a, b, c = paris.machines
    for i in range(20):
        who = (b, c)[i % 2]
        who.op("disconnect")
        who.op("reconnect")
    same_everywhere(paris)
    for m in paris.machines:
        for log in ("clusterd.log", "stderr.log"):
            text = (m.dir / log).read_text(errors="replace")
            assert "Traceback" not in text, (m.hostname, log)
    assert "internal error" not in ssh(a, f"clusterconfig disconnect {c.hostname}").stdout


def test_host_names_are_compared_whatever_their_spelling(paris: Testbed, tmp_path: Path) -> None:
    a, b, c = paris.machines
    odd = c.hostname.upper() + "."
    done = ssh(a, f"clusterconfig setgroup {odd} {MAIN}")
    assert done.returncode == 0, done.stdout
    assert ssh(a, f"clustermode machine {odd}").returncode == 0
    assert ssh(a, f"explain settz {odd}").returncode == 0
    same_everywhere(paris)
    # A machine initialised under another spelling of a member's name is that member.
    twin = Machine(tmp_path / "twin", 7, 0.5, {}, hostname=a.hostname.upper() + ".")
    assert twin.hostname != twin.config.hostname == a.hostname
    twin.start()
    try:
        error = twin.refused("join", address=b.config.listen, port=b.config.ssh_port,
                             fingerprint=b.fingerprint(), passphrase=_passphrase())  # fmt: skip
        assert f"a machine named {a.hostname} is already a member" in error
    finally:
        twin.stop()


def _passphrase() -> str:
    from clusterd.dev.testbed import PASSPHRASE

    return PASSPHRASE


def test_init_normalises_and_checks_the_host_name(tmp_path: Path) -> None:
    def init(name: str) -> subprocess.CompletedProcess[str]:
        import sys

        return subprocess.run(
            [sys.executable, "-m", "clusterd", "init", "--data-dir", str(tmp_path / name),
             f"--hostname={name}", "--no-admin"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    done = init("Boston.Example.com.")
    assert done.returncode == 0 and json.loads(done.stdout)["hostname"] == "boston.example.com"
    for bad in ("boston", "bad_name.example.com", "-x.example.com"):
        done = init(bad)
        assert done.returncode == 2 and "a fully qualified host name" in done.stderr, done
