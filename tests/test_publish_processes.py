"""The running daemon publishes its effective configuration and runs the local hook.

Every commit applied (made here through the shell or the control socket, or arriving
from a member) rewrites ``effective.json`` in the data directory and then runs
``publish_hook`` (a local setting of ``clusterd.toml``) with the changed features'
names.  The hook runs outside the event loop: a slow or failing hook delays neither the
links nor the next commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.test_security_load import Probe

HOOK = """\
import json, os, sys, time
doc = json.load(open(os.environ["CLUSTERD_EFFECTIVE"]))
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps({"features": sys.argv[2:], "vv": doc["version_vector"]}) + "\\n")
time.sleep(SLEEP)
"""


def hook_command(tmp_path: Path, name: str, sleep: float = 0.0, fail: bool = False) -> str:
    script = tmp_path / f"{name}.py"
    body = HOOK.replace("SLEEP", repr(sleep))
    if fail:
        body += "sys.stderr.write('the service refused it\\n'); sys.exit(3)\n"
    script.write_text(body)
    return f"{sys.executable} {script} {tmp_path / (name + '.log')}"


def runs(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def effective(m: Machine) -> dict[str, Any]:
    return json.loads((m.dir / "effective.json").read_text())


def unsubscribe(m: Machine, address: str) -> None:
    m.edit(
        {"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"},
        {"do": "set_row", "feature": "unsubscribe", "mode": "cluster", "row": address,
         "value": {"comment": "published"}},
    )  # fmt: skip


def test_every_commit_here_or_from_a_member_is_published_and_hooked(tmp_path: Path) -> None:
    each = {1: {"publish_hook": hook_command(tmp_path, "b")}}
    with Testbed(tmp_path, 2, each=each) as bed:
        bed.start()
        a, b = bed.machines
        bed.wait(bed.linked, what="linked")
        # At start-up: the whole effective configuration, and the hook for every feature.
        bed.wait(lambda: runs(tmp_path, "b"), what="the hook at start-up")
        doc = effective(b)
        assert doc["machine"] == b.hostname and doc["cluster"] == "testbed"
        assert "unsubscribe" in doc["features"] and "unsubscribe" in runs(tmp_path, "b")[0][
            "features"]  # fmt: skip
        # A commit on a (control socket) reaches b's effective.json and b's hook.
        unsubscribe(a, "one@example.com")
        bed.wait(lambda: "one@example.com" in (effective(b)["features"]["unsubscribe"] or {}),
                 what="b published a's commit")  # fmt: skip
        bed.wait(lambda: len(runs(tmp_path, "b")) >= 2, what="b's hook ran again")
        last = runs(tmp_path, "b")[-1]
        assert last["features"] == ["unsubscribe"]  # only what changed
        assert last["vv"] == effective(b)["version_vector"]
        assert effective(a)["features"]["unsubscribe"] == effective(b)["features"]["unsubscribe"]
        # A commit through the shell on b (a real ssh client) publishes on b at once.
        shell = subprocess.run(
            identity.local_ssh(b.config, "clustermode cluster; unsubscribe new "
                                         "two@example.com; commit all"),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert shell.returncode == 0, shell.stdout + shell.stderr
        bed.wait(lambda: "two@example.com" in effective(b)["features"]["unsubscribe"],
                 what="b published its own commit")  # fmt: skip
        bed.wait(lambda: len(runs(tmp_path, "b")) >= 3, what="b's hook ran for it")
        status = b.status()["publish"]
        assert status["written"] >= 3 and status["last_hook"]["returncode"] == 0, status
        # A commit that changes nothing b sees (a's own machine level) runs no hook.
        hooked = len(runs(tmp_path, "b"))
        a.edit({"do": "define", "feature": "unsubscribe", "mode": f"machine:{a.hostname}",
                "start": "empty"})  # fmt: skip
        bed.wait(bed.converged, what="converged")
        time.sleep(1.0)
        assert len(runs(tmp_path, "b")) == hooked


def test_a_slow_or_failing_hook_delays_neither_links_nor_commits(tmp_path: Path) -> None:
    each = {0: {"publish_hook": hook_command(tmp_path, "slow", sleep=4.0),
                "publish_hook_timeout": 2.0},
            1: {"publish_hook": hook_command(tmp_path, "bad", fail=True)}}  # fmt: skip
    with Testbed(tmp_path, 2, each=each) as bed:
        bed.start()
        a, b = bed.machines
        bed.wait(bed.linked, what="linked")
        with Probe(a) as probe:
            for i in range(5):
                started = time.monotonic()
                unsubscribe(a, f"n{i}@example.com")
                assert time.monotonic() - started < 1.0  # the hook is not waited for
            bed.wait(bed.converged, what="converged")
            bed.wait(lambda: a.status()["publish"]["last_hook"] is not None, timeout=30,
                     what="a's hook timed out")  # fmt: skip
        assert probe.slowest < 0.5, (probe.slowest, probe.failed)
        assert probe.down == []
        # Five commits while the hook was busy: published, and the hook ran for them
        # coalesced rather than five times in a row.
        assert "n4@example.com" in effective(a)["features"]["unsubscribe"]
        slow = a.status()["publish"]["last_hook"]
        assert slow["returncode"] is None and "timed out after 2" in slow["error"], slow
        bad = b.status()["publish"]["last_hook"]
        assert bad["returncode"] == 3 and "the service refused it" in bad["error"], bad
        text = (b.dir / "clusterd.log").read_text()
        assert "target publish_hook: reload failed" in text and "the service refused it" in text
        assert "Traceback" not in text


def test_a_bad_hook_setting_is_refused_at_start_and_a_missing_program_is_said(
    tmp_path: Path,
) -> None:
    """clusterd.toml is the only place a hook comes from: a line that is not a command
    line stops ``clusterd run`` with the reason; a program that does not exist is a
    failed hook run in status, and the daemon goes on."""
    bed = Testbed(tmp_path, 1, each={0: {"publish_hook": "/nonexistent/apply-config"}})
    (m,) = bed.machines
    toml = m.dir / "clusterd.toml"
    good = toml.read_text()
    toml.write_text(good.replace('publish_hook = "/nonexistent/apply-config"',
                                 "publish_hook = 'apply \"unbalanced'"))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "clusterd", "run", "--data-dir", str(m.dir)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "publish_hook" in done.stderr and "Traceback" not in done.stderr, done.stderr
    toml.write_text(good)
    with bed:
        bed.start()
        bed.wait(lambda: m.status()["publish"]["last_hook"] is not None, what="a hook run")
        run = m.status()["publish"]["last_hook"]
        assert run["returncode"] is None and "cannot run /nonexistent/apply-config" in run[
            "error"], run  # fmt: skip
        unsubscribe(m, "after@example.com")  # the daemon goes on committing
        assert "after@example.com" in m.op("effective")["values"]["unsubscribe"]
