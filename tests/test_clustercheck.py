"""clustercheck against real daemons: two disconnected members change the same setting
(a record: the time zone; a table row: an SMTP route); after reconnecting, clustercheck
shows both versions and forcing one converges all."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node.checkrun import when as _when
from clusterd.node.daemon import Daemon
from clusterd.store.session import Session
from tests.shellhelp import Term
from tests.test_clustercheck_console import mesh, until
from tests.test_join_processes import americas
from tests.test_shell_ssh import ssh
from tests.tmuxbed import Tmux

TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}


def zone(m: Machine) -> str:
    return str(m.op("effective")["values"]["settz"]["timezone"])


def diverge_time_zones(bed: Testbed, a: Machine, b: Machine) -> None:
    """``a`` and ``b`` set the cluster's time zone while both are disconnected (Paris,
    then Tokyo), then reconnect: Tokyo wins, Paris is recorded as lost."""
    for m in (a, b):
        m.op("disconnect")
    a.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="a while away")
    b.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="b while away")
    for m in (a, b):
        m.op("reconnect")
    bed.wait(bed.linked, what="relinked")
    bed.wait(bed.converged, what="converged on the newer change")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run does)")
def test_disconnected_edits_found_and_forced(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, seed=False) as bed:
        bed.start()
        a, b, c = americas(bed)
        a.edit({"do": "define", "feature": "settz", "mode": "cluster", "start": "defaults"})
        bed.wait(bed.converged, what="converged")
        clean = ssh(c, "clustercheck")
        assert clean.returncode == 0 and "No inconsistencies found." in clean.stdout
        assert f"Checking {a.hostname}..." in clean.stdout
        diverge_time_zones(bed, a, b)
        assert zone(a) == zone(b) == zone(c) == "Asia/Tokyo"  # b's change was the later one
        found = json.loads(ssh(c, "clustercheck --json").stdout)
        assert len(found["lost"]) == 1 and found["lost"][0]["unit"].startswith("settz")

        tmux = Tmux(f"{sys.executable} -m clusterd shell --data-dir {c.dir}", 160, 50)
        try:
            tmux.wait_for(f"(Machine {c.hostname})>")
            tmux.keys("clustercheck", "Enter")
            tmux.wait_for('Would you like to switch to "cluster" mode?')
            tmux.keys("Enter")
            screen = tmux.wait_for("How do you want to resolve this inconsistency?")
            assert "Inconsistency found!" in screen and "Time Zone at Cluster:" in screen
            assert f"{b.hostname} version was updated" in screen and "by 'admin'" in screen
            assert f"{a.hostname} version was updated" in screen and "(overwritten" in screen
            assert f"2. Force entire cluster to use {a.hostname} version." in screen
            assert "3. Ignore." in screen
            tmux.keys("2", "Enter")
            tmux.wait_for(f"The whole cluster now uses the {a.hostname} version.")
            tmux.keys("quit", "Enter")
        finally:
            tmux.close()
        bed.wait(lambda: zone(a) == zone(b) == "Europe/Paris", what="forced version everywhere")
        bed.wait(bed.converged, what="converged after forcing")
        again = ssh(a, "clustermode cluster; clustercheck")
        assert "No inconsistencies found." in again.stdout, again.stdout


ROUTE = "example.com"
ROUTES = {
    who: {"destinations": [{"host": f"mx-{who}.example.com", "port": 25, "priority": 0}]}
    for who in ("start", "bob", "carol")
}


def _routes_everywhere(bed: Testbed) -> None:
    """Before anything starts: every member defines the cluster's SMTP routes."""
    first, *rest = bed.machines
    store = first.store()
    s = Session(store, "admin")
    s.define("smtproutes", Mode.cluster(), Start.EMPTY)
    s.set_row("smtproutes", Mode.cluster(), ROUTE, ROUTES["start"])
    s.commit("routes")
    snapshot = store.export_state()
    store.close()
    for m in rest:
        other = m.store()
        other.replace_state(snapshot)
        other.close()


async def test_disconnected_edits_of_one_table_row_found_and_forced(tmp_path: Path) -> None:
    """m1 (bob) and m2 (carol) change the same SMTP route while disconnected; carol's later
    change wins on reconnection; clustercheck on m0 shows both, forcing bob's converges
    every member on it and leaves nothing to report."""
    async with mesh(tmp_path, 3, _routes_everywhere) as cluster:
        m0, m1, m2 = cluster.bed.machines
        here = cluster.here

        async def away() -> bool:
            states: dict[str, str] = {
                p["hostname"]: p["state"] for p in (await here.status())["peers"]
            }
            return states[m1.hostname] != "up" and states[m2.hostname] != "up"

        for m in (m1, m2):
            await cluster.op(m, "disconnect")
        await until(away, "m1 and m2 disconnected")
        row = {"do": "set_row", "feature": "smtproutes", "mode": "cluster", "row": ROUTE}
        await cluster.edit(m1, {**row, "value": ROUTES["bob"]}, user="bob", comment="bob away")
        await cluster.edit(m2, {**row, "value": ROUTES["carol"]}, user="carol", comment="away")
        for m in (m1, m2):
            await cluster.op(m, "reconnect")
        await until(cluster.linked, "relinked")
        await until(cluster.converged, "converged on the later change")
        assert await cluster.effective("smtproutes") == [{ROUTE: ROUTES["carol"]}] * 3

        t = Term(here)
        status, out = await t.run("clustercheck -j", "y")
        assert status == 1
        found = json.loads(out.split("\n", 1)[1])
        assert [x["unit"] for x in found["lost"]] == [f"smtproutes@cluster[{ROUTE}]"]
        assert found["inconsistencies"] == [] and found["unreachable"] == {}

        status, out = await t.run("clustercheck", "2")
        assert status == 0, out
        lines = out.splitlines()
        assert lines[:3] == [f"Checking {m.hostname}..." for m in (m0, m1, m2)]
        assert lines[3:6] == [
            "Inconsistency found!",
            f"SMTP Routes at Cluster, row '{ROUTE}':",
            f"{m2.hostname} version was updated {_when_of(here, m2, 'carol')} by 'carol' on "
            f"{m2.hostname} (in use)",
        ]
        assert lines[6] == (
            f"{m1.hostname} version was updated {_when_of(here, m1, 'bob')} by 'bob' on "
            f"{m1.hostname} (overwritten: made without seeing the other)"
        )
        assert lines[7:11] == [
            "How do you want to resolve this inconsistency?",
            f"1. Force entire cluster to use {m2.hostname} version.",
            f"2. Force entire cluster to use {m1.hostname} version.",
            "3. Ignore.",
        ]
        assert lines[-1] == f"The whole cluster now uses the {m1.hostname} version."

        await until(cluster.converged, "converged on the forced version")
        assert await cluster.effective("smtproutes") == [{ROUTE: ROUTES["bob"]}] * 3
        assert (await t.ok("clustercheck")).endswith("No inconsistencies found.")
        elsewhere = await asyncio.to_thread(ssh, m2, "clustermode cluster; clustercheck --json")
        assert elsewhere.returncode == 0, elsewhere.stdout
        clean = json.loads(elsewhere.stdout)
        assert clean["lost"] == clean["inconsistencies"] == clean["facts"] == []
        assert clean["checked"] == [m.hostname for m in (m0, m1, m2)]


def _when_of(here: Daemon, m: Machine, user: str) -> str:
    """When ``user``'s commit on ``m`` was made (every member's log holds it)."""
    [commit] = [c for c in here.store.commit_log() if c.id.origin == m.serial and c.user == user]
    return _when(commit.at)


def test_the_same_value_written_twice_is_said_so(tmp_path: Path) -> None:
    """Two members write the same time zone while apart (as two members rolling back one
    confirmed commit at once do): clustercheck says so, and finds nothing to resolve;
    a different value is still a conflicting change."""
    with Testbed(tmp_path, 3) as bed:
        bed.start()
        bed.wait(bed.linked, what="links")
        a, b, c = bed.machines
        a.edit({"do": "define", "feature": "settz", "mode": "cluster", "start": "defaults"})
        bed.wait(bed.converged, what="converged")
        for m in (a, b):
            m.op("disconnect")
        a.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="a while away")
        b.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="b while away")
        for m in (a, b):
            m.op("reconnect")
        bed.wait(bed.linked, what="relinked")
        bed.wait(bed.converged, what="converged")
        said = ssh(c, "clustercheck")
        assert said.returncode == 0, said.stdout
        lines = said.stdout.splitlines()
        at = lines.index("The same value, written twice (nothing lost):")
        assert lines[at + 1] == "Time Zone at Cluster:"
        assert lines[at + 2].startswith(f"{b.hostname} version was updated")  # (the later)
        assert lines[at + 2].endswith("(in use)")
        assert lines[at + 3].startswith(f"{a.hostname} version was updated")
        assert lines[at + 3].endswith("(the same value, written without seeing the other)")
        assert "Inconsistency found!" not in said.stdout
        assert "No inconsistencies found." in said.stdout
        found = ssh(c, "clustercheck --json")
        assert found.returncode == 0
        [lost] = json.loads(found.stdout)["lost"]
        assert lost["same_value"] is True and lost["unit"].startswith("settz")
        assert lost["overwritten"]["machine"] == a.hostname

        diverge_time_zones(bed, a, b)  # Paris, then Tokyo: a real loss (it supersedes)
        found = ssh(c, "clustercheck --json")
        assert found.returncode == 1
        assert [x["same_value"] for x in json.loads(found.stdout)["lost"]] == [False]
        said = ssh(c, "clustercheck")
        assert "Inconsistency found!" in said.stdout and "written twice" not in said.stdout
