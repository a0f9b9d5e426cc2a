"""The shell through the real OpenSSH client: one-command calls and an interactive
session in tmux (completion, mode switch, an edit, commit), against real daemons."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.tmuxbed import Tmux


def ssh(
    m: Machine, command: str, key: Path | None = None, user: str = "admin"
) -> subprocess.CompletedProcess[str]:
    argv = identity.local_ssh(m.config, command)
    if key is not None:
        argv[argv.index("-i") + 1] = str(key)
    argv[-2] = argv[-2].replace("admin@", f"{user}@", 1)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 2, seed=False) as bed:
        bed.start()
        yield bed


def test_one_command_calls_exit_with_their_status(pair: Testbed) -> None:
    a, b = pair.machines
    done = ssh(a, "version")
    assert done.returncode == 0 and f"on {a.hostname}" in done.stdout
    assert ssh(a, "bogus").returncode == 2
    assert ssh(a, "clustermode group Nope").returncode == 1
    assert ssh(a, "clusterconfig create americas").returncode == 0
    listed = ssh(a, "clusterconfig list")
    assert listed.stdout.strip() == (
        f"cluster = americas\nGroup Main_Group:\nMachine {a.hostname} (Serial #: {a.serial})"
    )
    # Pending changes live as long as the call: commit in the same line.
    lost = ssh(a, "clustermode cluster; settz set timezone=Europe/Paris")
    assert lost.returncode == 1 and "Error: 1 uncommitted change(s) discarded" in lost.stdout
    kept = ssh(a, "clustermode cluster; settz set timezone=Europe/Paris; commit over ssh")
    assert kept.returncode == 0 and "Changes committed:" in kept.stdout, kept.stdout
    assert "→" not in kept.stdout + kept.stderr  # nothing inherited: nothing was asked
    assert a.op("get", feature="settz", mode="cluster")["value"] == {"timezone": "Europe/Paris"}
    # Below the cluster, which now defines settz, "Start from" is asked: a one-command
    # call takes the default and says so, on the standard error (not in the output).
    line = "clustermode group Main_Group; settz set timezone=Asia/Tokyo; commit group"
    below = ssh(a, line)
    assert below.returncode == 0 and "Changes committed:" in below.stdout, below.stdout
    said = "→ 2 (a copy of the inherited settings)"
    assert said in below.stderr and said not in below.stdout, below.stderr
    value = a.op("get", feature="settz", mode="group:Main_Group")["value"]
    assert value == {"timezone": "Asia/Tokyo"}
    # Another machine's local key is not an admin key here.
    refused = ssh(a, "version", key=b.config.admin_key)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_preview_through_openssh_lists_the_change_then_each_machines_diff(pair: Testbed) -> None:
    a, _ = pair.machines
    a.op("create", name="americas")
    done = ssh(a, "clustermode cluster; settz set timezone=Europe/Paris; preview")
    assert done.returncode == 1  # the edit is discarded at the end of the call
    lines = done.stdout.splitlines()
    start = lines.index("Pending changes:")
    assert lines[start : start + 6] == [
        "Pending changes:",
        "  settz at Cluster: define",
        '  + timezone: "Europe/Paris"',
        f"Machine {a.hostname}:",
        "  settz:",
        '    timezone: "UTC" → "Europe/Paris"',
    ], done.stdout


def test_json_forms(pair: Testbed) -> None:
    import json

    a, _ = pair.machines
    a.op("create", name="americas")
    listed = json.loads(ssh(a, "clusterconfig list --json").stdout)
    assert listed["cluster"] == "americas" and a.hostname in listed["groups"]["Main_Group"]
    status = json.loads(ssh(a, "status --json").stdout)
    assert status["hostname"] == a.hostname
    commits = json.loads(ssh(a, "commitdetail 5 --json").stdout)
    assert commits[0]["comment"] == "create cluster americas"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run does)")
def test_interactive_shell_in_tmux(pair: Testbed) -> None:
    a, _ = pair.machines
    a.op("create", name="americas")
    a.op("addgroup", group="Paris")
    tz = {"do": "set_record", "feature": "settz", "mode": "cluster"}
    a.edit({**tz, "value": {"timezone": "Europe/Paris"}})  # Paris inherits: "Start from" asked
    tmux = Tmux(f"{sys.executable} -m clusterd shell --data-dir {a.dir}")
    try:
        tmux.wait_for(f"(Machine {a.hostname})>")
        tmux.keys("clusterm")
        tmux.wait_for("clustermode")  # offered while typing
        tmux.keys("Tab")  # completion of the command name
        tmux.wait_for("> clustermode")
        tmux.keys(" group Pa")
        tmux.wait_for("Paris")
        tmux.keys("Tab")  # and of the group name
        tmux.wait_for("> clustermode group Paris")
        tmux.keys("Enter")
        tmux.wait_for("(Group Paris)>")
        tmux.keys("settz set timezone=Asia/Tokyo", "Enter")
        tmux.wait_for("a copy of the inherited settings")
        tmux.keys("1", "Enter")  # start from the factory defaults
        tmux.keys("commit", "Enter")
        tmux.wait_for("Please enter some comments")
        tmux.keys("from tmux", "Enter")
        tmux.wait_for("Changes committed:")
        tmux.keys("settz clustershow", "Enter")
        tmux.wait_for("Group Paris: Yes")
        tmux.keys("quit", "Enter")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tmux.alive():
            time.sleep(0.1)
        assert not tmux.alive()  # quit ended the ssh session
    finally:
        tmux.close()
    value = a.op("get", feature="settz", mode="group:Paris")["value"]
    assert value == {"timezone": "Asia/Tokyo"}
    assert a.op("list")["groups"]["Paris"] == {}


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run does)")
def test_menus_complete_names_and_come_back_in_tmux(pair: Testbed) -> None:
    """In a real terminal: the cluster menu completes an operation's name with Tab, its
    machine and group lists take a name (completed too), and the menu comes back after
    the operation until Enter."""
    a, _ = pair.machines
    a.op("create", name="americas")
    a.op("addgroup", group="Paris")
    tmux = Tmux(f"{sys.executable} -m clusterd shell --data-dir {a.dir}")
    try:
        tmux.wait_for(f"(Machine {a.hostname})>")
        tmux.keys("clusterconfig", "Enter")
        tmux.wait_for("Would you like to switch")
        tmux.keys("Enter")
        tmux.wait_for("- CONNSTATUS")
        tmux.keys("setg")
        _completion_offered(tmux, "[]> setg", "SETGROUP")
        tmux.keys("Tab")  # the operation's name, completed
        tmux.wait_for("[]> SETGROUP")
        tmux.keys("Enter")
        tmux.wait_for("Choose the machine to move:")
        tmux.keys("1", "Enter")  # by number
        tmux.wait_for("Choose its new group:")
        tmux.keys("Pa")
        _completion_offered(tmux, "[]> Pa", "Paris")
        tmux.keys("Tab")  # by name, completed
        tmux.wait_for("> Paris")
        tmux.keys("Enter")
        tmux.wait_for("is in group Paris")
        screen = tmux.wait_for("- CONNSTATUS")  # the menu, once more
        assert screen.count("Choose the operation you want to perform:") >= 2
        tmux.keys("Enter")  # leaves it
        tmux.wait_for("(Cluster americas)>")
    finally:
        tmux.close()
    assert a.hostname in a.op("list")["groups"]["Paris"]


def _completion_offered(tmux: Tmux, typed: str, offered: str, timeout: float = 20.0) -> None:
    """Wait until the completion menu under the line ending in ``typed`` offers
    ``offered`` (the names also appear in the menu text above it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = tmux.screen().splitlines()
        at = max((i for i, line in enumerate(lines) if line.rstrip().endswith(typed)), default=-1)
        if at >= 0 and any(line.strip() == offered for line in lines[at + 1 :]):
            return
        time.sleep(0.05)
    raise AssertionError(f"{offered!r} not offered under {typed!r}:\n{tmux.screen()}")


def _ssh_password_session(m: Machine, user: str) -> Tmux:
    known = m.dir / "known_hosts"
    identity.local_ssh(m.config)  # writes the pinned host key to known_hosts
    command = (
        f"ssh -p {m.config.ssh_port} -o UserKnownHostsFile={known} "
        "-o StrictHostKeyChecking=yes -o PubkeyAuthentication=no "
        f"-o PreferredAuthentications=password {user}@{m.config.listen}"
    )
    return Tmux(command)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run does)")
def test_passphrase_logins_and_two_shells_at_once(pair: Testbed) -> None:
    from clusterd.dev.testbed import PASSPHRASE

    a, _ = pair.machines
    a.op("create", name="americas")
    one = _ssh_password_session(a, "admin")
    two = _ssh_password_session(a, "admin")
    try:
        for t in (one, two):
            t.wait_for("password:")
            t.keys(PASSPHRASE, "Enter")
            t.wait_for(f"(Machine {a.hostname})>")
        one.keys("clustermode cluster", "Enter")
        one.wait_for("Continue? [Y]>")
        one.keys("Enter")
        one.wait_for("(Cluster americas)>")
        one.keys("settz set timezone=Europe/Paris", "Enter")  # nothing inherited: not asked
        one.keys("settz print", "Enter")
        one.wait_for('"timezone": "Europe/Paris"')
        two.keys("who", "Enter")
        screen = two.wait_for("shell")
        assert screen.count("admin ") >= 2  # both shells are listed
        two.keys("preview", "Enter")
        two.wait_for("There are no pending changes.")  # one's pending edit is its own
        two.keys("clustermode", "Enter")
        two.wait_for(f"Current mode: Machine {a.hostname}")
        one.keys("commit", "Enter")
        one.wait_for("comments")
        one.keys("from one", "Enter")
        one.wait_for("Changes committed:")
        two.keys("explain settz", "Enter")
        two.wait_for("'from one'")
        for t in (one, two):
            t.keys("quit", "Enter")
    finally:
        for t in (one, two):
            t.close()
    wrong = _ssh_password_session(a, "admin")
    try:
        wrong.wait_for("password:")
        wrong.keys("not the passphrase", "Enter")
        wrong.wait_for("wrong passphrase for user 'admin'")  # the banner says why
    finally:
        wrong.close()


def test_editing_keys_inside_a_line_sent_at_once_keep_their_meaning(pair: Testbed) -> None:
    """Plain characters that arrive together reach prompt_toolkit as one piece of text
    (cli/channelinput.py); the editing keys among them must still act where they
    stand.  Through ``ssh -tt``, each line in one write: Meta-b (Escape b) moves back a
    word, Ctrl-A to the start of the line, Ctrl-Q (Emacs mode's quoted insert) inserts
    the next key as it is."""
    from tests.test_security_load import _paste

    a, _ = pair.machines
    lines = (
        b"sion\x1bbver\r"  # "sion", back a word, "ver" before it: "version"
        b"ion\x01vers\r"  # "ion", to the start, "vers": "version"
        b"hel\x11\x01p\r"  # a quoted Ctrl-A is a character: "hel?p", not "phel"
    )
    out = _paste(a, lines, seconds=4.0)
    assert out.count(f"on {a.hostname}") >= 2, out[-2000:]  # version ran twice
    assert "Unknown command: hel" in out and "Unknown command: phel" not in out, out[-2000:]
    assert "Unknown command: sion" not in out and "Unknown command: vers" not in out
