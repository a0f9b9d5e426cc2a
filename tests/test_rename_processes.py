"""Renaming a member with a committed ``sethostname``, on real daemons over real ``ssh``.

The reference needs an eight-step procedure (leave, rename, rejoin ...).  Here the
machine keeps its serial, keys, group and links; its name is a replicated fact: LIST,
the mode names and prompts, the machine mode's settings, ``clusterd.toml`` and the log
follow, on every member, while all of them run.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.tmuxbed import Tmux

NEW = "mail1.example.com"


def ssh(m: Machine, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(identity.local_ssh(m.config, command), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def names(m: Machine) -> set[str]:
    return {host for rows in m.op("list")["groups"].values() for host in rows}


def toml_hostname(m: Machine) -> str:
    return str(tomllib.loads((m.dir / "clusterd.toml").read_text())["hostname"])


@contextlib.contextmanager
def linked(root: Path, n: int) -> Iterator[Testbed]:
    with Testbed(root, n, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        yield bed


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run does)")
def test_rename_a_member_while_the_others_run(tmp_path: Path) -> None:
    with linked(tmp_path, 3) as bed:
        a, b, c = bed.machines
        old = b.hostname
        a.op("addgroup", group="Paris")
        a.op("setgroup", machine=old, group="Paris")
        # b's own settings at its machine mode, made on a.
        made = ssh(a, f"clustermode machine {old}; settz set timezone=Asia/Tokyo; commit tz")
        assert made.returncode == 0, made.stdout
        bed.wait(bed.converged, what="converged")
        # An admin sits in b's interactive shell, at b's machine mode.
        tmux = Tmux(f"{sys.executable} -m clusterd shell --data-dir {b.dir}", 150, 40)
        try:
            tmux.wait_for(f"(Machine {old})>")
            # Renamed from another member: a.
            line = f"clustermode machine {old}; sethostname set hostname={NEW}; commit rename"
            done = ssh(a, line)
            assert done.returncode == 0, done.stdout
            assert f"Machine {old} is now {NEW}" in done.stdout
            bed.wait(lambda: all(names(m) == {a.hostname, NEW, c.hostname} for m in bed.machines),
                     what="every LIST has the new name")  # fmt: skip
            bed.wait(lambda: b.status()["hostname"] == NEW, what="b knows its new name")
            tmux.keys("Enter")
            tmux.wait_for(f"(Machine {NEW})>")  # the open shell follows
            tmux.keys("sethostname print", "Enter")
            tmux.wait_for(f'"hostname": "{NEW}"')
        finally:
            tmux.close()
        assert toml_hostname(b) == NEW
        b.hostname = NEW  # the test bed's own record of it
        assert a.op("list")["groups"]["Paris"].keys() == {NEW}  # its group went with it
        for m in bed.machines:  # the machine mode's settings, under the new name
            got = m.op("get", feature="settz", mode=f"machine:{NEW}")["value"]
            assert got == {"timezone": "Asia/Tokyo"}
        bed.wait(bed.linked, what="still linked")  # never dropped: links know serials
        assert all(p["hostname"] == NEW for p in a.status()["peers"] if p["serial"] == b.serial)
        bed.wait(bed.converged, what="converged")
        check = ssh(c, "clustermode cluster; clustercheck")
        assert check.returncode == 0, check.stdout
        assert "No inconsistencies found" in check.stdout
        # Edits at the new name work from anywhere; the old name is gone.
        again = ssh(c, f"clustermode machine {NEW}; settz set timezone=Europe/Paris; commit")
        assert again.returncode == 0, again.stdout
        gone = ssh(c, f"clustermode machine {old}")
        assert gone.returncode != 0 and old in gone.stdout
        # b restarts under its new name, from clusterd.toml.
        b.stop()
        b.start()
        bed.wait(bed.linked, what="linked after b's restart")
        assert b.status()["hostname"] == NEW
        assert f"[{NEW}]" in (b.dir / "clusterd.log").read_text().splitlines()[-1]


def test_a_rename_that_would_clash_changes_nothing(tmp_path: Path) -> None:
    with linked(tmp_path, 2) as bed:
        a, b = bed.machines
        before = a.status()["digest"]
        line = f"clustermode machine {b.hostname}; sethostname set hostname={a.hostname}; commit"
        done = ssh(a, line)
        assert done.returncode == 1
        assert f"a machine named {a.hostname} is already a member of the cluster" in done.stdout
        assert a.status()["digest"] == before and names(a) == {a.hostname, b.hostname}
        bad = ssh(a, f"clustermode machine {b.hostname}; sethostname set hostname=nodots")
        assert bad.returncode == 1 and "not a fully qualified host name" in bad.stdout
        assert a.status()["digest"] == before
        assert toml_hostname(b) == b.hostname


def test_rename_a_standalone_machine(tmp_path: Path) -> None:
    with Testbed(tmp_path, 1, seed=False) as bed:
        bed.start()
        (m,) = bed.machines
        done = ssh(m, f"sethostname set hostname={NEW}; commit rename")
        assert done.returncode == 0, done.stdout
        bed.wait(lambda: m.status()["hostname"] == NEW, what="renamed")
        assert toml_hostname(m) == NEW
        # Its own settings went with it: the admin user still logs in, with a passphrase.
        users = m.op("get", feature="userconfig", mode=f"machine:{NEW}")["value"]
        assert "admin" in users
        shown = ssh(m, "version")
        assert f"on {NEW}" in shown.stdout
        m.op("create", name="americas")
        assert names(m) == {NEW}


def test_renames_made_apart_settle_on_the_newest_name(tmp_path: Path) -> None:
    """a and b, each disconnected, rename c two ways, and a edits c's machine mode by
    its old name: after the reconnects c has one name everywhere (the newest), its stale
    row is gone, and clustercheck names the change made at the old name."""
    with linked(tmp_path, 3) as bed:
        a, b, c = bed.machines
        old = c.hostname
        for m in (a, b):
            assert ssh(m, "clusterconfig disconnect").returncode == 0
        first = ssh(a, f"clustermode machine {old}; sethostname set hostname=x.example.com; "
                       "commit")  # fmt: skip
        assert first.returncode == 0, first.stdout
        late = ssh(b, f"clustermode machine {old}; settz set timezone=Asia/Tokyo; commit")
        assert late.returncode == 0, late.stdout
        time.sleep(0.05)
        second = ssh(b, f"clustermode machine {old}; sethostname set hostname=y.example.com; "
                        "commit")  # fmt: skip
        assert second.returncode == 0, second.stdout
        for m in (a, b):
            assert ssh(m, "clusterconfig reconnect").returncode == 0
        c.hostname = "y.example.com"
        bed.wait(lambda: all(names(m) == {a.hostname, b.hostname, "y.example.com"}
                             for m in bed.machines), what="one name everywhere")  # fmt: skip
        bed.wait(bed.linked, what="linked")
        bed.wait(bed.converged, what="converged")
        assert toml_hostname(c) == "y.example.com"
        for m in bed.machines:  # the stale row x is gone, c itself dropped it
            rows = m.op("get", feature="machines", mode="cluster")["value"]
            assert sorted(rows) == sorted([a.hostname, b.hostname, "y.example.com"])
        check = ssh(a, "clustermode cluster; clustercheck --json")
        assert check.returncode == 1
        import json

        found = json.loads(check.stdout)
        assert found["unreachable"] == {}
        assert any(x["feature"] == "removed" for x in found["lost"])  # the rename x lost
        assert not [f for f in found["facts"] if "x.example.com" in f["message"]]
        # b's time zone edit at the old name came before b's own rename: it moved along.
        assert a.op("get", feature="settz", mode="machine:y.example.com")["value"] == {
            "timezone": "Asia/Tokyo"
        }


def test_an_edit_at_the_old_name_made_apart_is_reported(tmp_path: Path) -> None:
    with linked(tmp_path, 3) as bed:
        a, b, c = bed.machines
        old = c.hostname
        assert ssh(a, "clusterconfig disconnect").returncode == 0
        renamed = ssh(b, f"clustermode machine {old}; sethostname set hostname={NEW}; commit")
        assert renamed.returncode == 0, renamed.stdout
        late = ssh(a, f"clustermode machine {old}; settz set timezone=Asia/Tokyo; commit")
        assert late.returncode == 0, late.stdout
        assert ssh(a, "clusterconfig reconnect").returncode == 0
        c.hostname = NEW
        bed.wait(bed.linked, what="linked")
        bed.wait(bed.converged, what="converged")
        check = ssh(b, "clustermode cluster; clustercheck")
        assert check.returncode == 1
        assert (f"Time Zone was changed at Machine {old} after {old} was renamed {NEW}"
                in check.stdout), check.stdout  # fmt: skip
        assert f"Make the change again at Machine {NEW}" in check.stdout
