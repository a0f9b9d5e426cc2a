"""clustercheck against real daemons: two disconnected members change the same setting;
after reconnecting, clustercheck shows both versions and forcing one converges all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clusterd.testbed import Machine, Testbed
from tests.test_join_processes import americas
from tests.test_shell_ssh import Tmux, ssh

TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}


def zone(m: Machine) -> str:
    return str(m.op("effective")["values"]["settz"]["timezone"])


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
        for m in (a, b):
            m.op("disconnect")
        a.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="a while away")
        b.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="b while away")
        for m in (a, b):
            m.op("reconnect")
        bed.wait(bed.linked, what="relinked")
        bed.wait(bed.converged, what="converged on the newer change")
        assert zone(a) == zone(b) == zone(c) == "Asia/Tokyo"  # b's change was the later one
        found = json.loads(ssh(c, "clustercheck --json").stdout)
        assert len(found["lost"]) == 1 and found["lost"][0]["unit"].startswith("settz")

        name = f"clustercheck-{a.config.ssh_port}"
        tmux = Tmux(name)
        command = f"{sys.executable} -m clusterd shell --data-dir {c.dir}"
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50",
                        command], check=True, timeout=10)  # fmt: skip
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
            subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=10)
        bed.wait(lambda: zone(a) == zone(b) == "Europe/Paris", what="forced version everywhere")
        bed.wait(bed.converged, what="converged after forcing")
        again = ssh(a, "clustermode cluster; clustercheck")
        assert "No inconsistencies found." in again.stdout, again.stdout
