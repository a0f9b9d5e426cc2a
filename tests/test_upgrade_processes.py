"""The reference's upgrade routine on real daemons, with a real version change.

The routine (``docs/upgrade.md``): DISCONNECT every machine; upgrade each (here: stop,
another software version in ``clusterd.toml``, start); once all run the new version,
RECONNECT them all.  Members of different versions never link; at the end every member
lists every other as up, in any order of disconnects and reconnects.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import config as cfg
from clusterd.node import identity


def ssh(m: Machine, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(identity.local_ssh(m.config, command), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def upgrade(m: Machine, version: str) -> None:
    m.stop()
    m.config = cfg.save(m.config, software_version=version)
    m.start()


def states(m: Machine) -> dict[str, str]:
    return {p["hostname"]: p["state"] for p in m.status()["peers"]}


def test_disconnect_both_then_reconnect_both(tmp_path: Path) -> None:
    """The minimal repro: each used to list the other as disconnected for good."""
    with Testbed(tmp_path, 2, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        for m in (a, b):
            assert ssh(m, "clusterconfig disconnect").returncode == 0
        first = ssh(a, "clusterconfig reconnect")
        assert first.returncode == 0, first.stdout  # b is disconnected on purpose: no failure
        assert f"{b.hostname}: disconnected on purpose" in first.stdout
        assert "Catch-up done" not in first.stdout  # never claimed while b is away
        second = ssh(b, "clusterconfig reconnect")
        assert second.returncode == 0, second.stdout
        assert "Catch-up done" in second.stdout and "all members (1)" in second.stdout
        bed.wait(bed.linked, timeout=10, what="linked again")
        assert not any(m.status()["disconnected"] for m in (a, b))


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_the_upgrade_routine_with_a_new_version(tmp_path: Path, order: str) -> None:
    with Testbed(tmp_path, 3, ping=0.5, software_version="1.0") as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        a.edit({"do": "define", "feature": "settz", "mode": "cluster", "start": "defaults"})
        bed.wait(bed.converged, what="converged")
        machines = [a, b, c] if order == "forward" else [c, b, a]
        for m in machines:
            assert ssh(m, "clusterconfig disconnect").returncode == 0
        for m in machines:
            upgrade(m, "2.0")
            assert m.status()["disconnected"] is True  # it stays out until RECONNECT
            assert "clusterd 2.0" in ssh(m, "version").stdout
        guide = ssh(machines[0], "upgrade")
        assert guide.returncode == 0 and "Next: reconnect" in guide.stdout, guide.stdout
        for m in machines:
            done = ssh(m, "clusterconfig reconnect")
            assert done.returncode == 0, done.stdout
        bed.wait(bed.linked, timeout=15, what="every member linked on 2.0")
        bed.wait(bed.converged, what="converged")
        for m in bed.machines:
            assert set(states(m).values()) == {"up"}


def test_a_member_still_on_the_old_version_is_refused_with_both_versions(
    tmp_path: Path,
) -> None:
    with Testbed(tmp_path, 2, ping=0.5, software_version="1.0") as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        assert ssh(a, "clusterconfig disconnect").returncode == 0
        upgrade(a, "2.0")
        done = ssh(a, "clusterconfig reconnect")
        assert done.returncode == 1, done.stdout
        assert "software versions differ" in done.stdout and "runs 1.0" in done.stdout
        guide = ssh(a, "upgrade")
        assert f"{b.hostname}: runs 1.0" in guide.stdout, guide.stdout
        assert f"Next: upgrade {b.hostname}" in guide.stdout
