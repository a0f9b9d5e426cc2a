"""The README's CCS join, step by step, as a person runs it: the real OpenSSH client for
the member's shell, ``ssh-keyscan | ssh-keygen -lf -`` for the fingerprint, and the
``clusterd`` command on the new machine; real daemons on loopback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from clusterd.dev.testbed import Testbed
from tests.test_shell_ssh import ssh

CLUSTERD = [sys.executable, "-m", "clusterd"]


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLUSTERD, *argv], capture_output=True, text=True, timeout=120,
                          input=stdin)  # fmt: skip


def fingerprint(port: int) -> str:
    scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=20, check=True)  # fmt: skip
    listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout,
                            capture_output=True, text=True, timeout=20, check=True)  # fmt: skip
    return listed.stdout.split()[1]


def test_the_readme_ccs_join(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, seed=False, ccs_enabled=True) as bed:
        bed.start()
        member, new = bed.machines
        member.op("ccs", enabled=False)  # a member as it starts: CCS off
        assert ssh(member, "clusterconfig create americas").returncode == 0
        # 1. On a member: turn its CCS port on.
        on = ssh(member, "clusterconfig ccs on")
        assert on.returncode == 0, on.stdout + on.stderr
        assert f"CCS is on, port {member.config.ccs_port} on {member.hostname}" in on.stdout
        # 2. On the new machine: what the member needs to know of it.
        printed = run("prepjoin", "--data-dir", str(new.dir), "print")
        assert printed.returncode == 0, printed.stderr
        facts = dict(re.findall(r"^(Host|Serial #|Machine key): (.+)$", printed.stdout, re.M))
        assert facts["Host"] == new.hostname and facts["Serial #"] == new.serial
        # 3. On the member: register it, then commit.
        line = (f"clusterconfig prepjoin new {facts['Host']} {facts['Serial #']} "
                f"{facts['Machine key']}; commit {new.hostname}")  # fmt: skip
        registered = ssh(member, line)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        # 4. On the new machine: join over the member's CCS port, its fingerprint given
        # (a wrong one is refused before anything changes).
        port = member.config.ccs_port
        wrong = run("join", "--data-dir", str(new.dir), "--ccs", "--port", str(port),
                    "--fingerprint", "SHA256:" + "A" * 43, "--yes", "127.0.0.1")  # fmt: skip
        assert wrong.returncode != 0 and "nothing was changed" in wrong.stderr + wrong.stdout
        assert "Traceback" not in wrong.stderr and new.status()["cluster"] is None
        joined = run("join", "--data-dir", str(new.dir), "--ccs", "--port", str(port),
                     "--fingerprint", fingerprint(port), "--yes", "127.0.0.1")  # fmt: skip
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert "americas" in joined.stdout
        bed.wait(bed.linked, what="the new machine linked")
        listed = ssh(new, "clusterconfig list")
        assert f"Machine {member.hostname} (Serial #: {member.serial})" in listed.stdout
        assert f"Machine {new.hostname} (Serial #: {new.serial})" in listed.stdout
