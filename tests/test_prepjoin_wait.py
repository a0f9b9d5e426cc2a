"""The pre-shared-key join as the reference describes it, through every way in.

The joining machine prints its host name, serial number and key; the admin registers
them on a member (PREPJOIN NEW, commit); the join goes on.  Until the member knows the
key, the joiner waits: for Enter (``clusterd join --key``, the shell's menu) or, with
``--wait SECONDS``, trying again with a countdown (the CLI, the one-command shell form
over a real ``ssh``).  The facts the test registers are the ones the joiner printed.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest

from clusterd.cli.console import ScriptedConsole
from clusterd.cli.shell import Shell
from clusterd.core import layers
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.shellhelp import ADMIN, NY, new_daemon

FACTS = re.compile(r"Host: (\S+)\n\s*Serial #: (\S+)\n\s*Machine key: (.+)\n")


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 2, seed=False) as bed:
        bed.start()
        bed[0].op("create", name="americas")
        yield bed


class Reader:
    """A child's output read by a thread, so the test can wait for a line."""

    def __init__(self, stream: IO[str]) -> None:
        self.text = ""
        self.changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        while chunk := stream.read(1):
            with self.changed:
                self.text += chunk
                self.changed.notify_all()

    def until(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        with self.changed:
            found = self.changed.wait_for(
                lambda: re.search(pattern, self.text), timeout
            )  # fmt: skip
        assert found, f"no {pattern!r} in:\n{self.text}"
        return found  # type: ignore[return-value]


def register(member: Machine, printed: str) -> None:
    """The admin's part: the three facts the joiner printed, registered and committed."""
    host, serial, key = FACTS.search(printed).groups()  # type: ignore[union-attr]
    member.edit({"do": "prepjoin_new", "hostname": host, "serial": serial, "machine_key": key})


def joined(member: Machine, joiner: Machine) -> bool:
    return joiner.hostname in member.op("list")["groups"]["Main_Group"]


@contextlib.contextmanager
def child(command: list[str]) -> Iterator[tuple[subprocess.Popen[str], Reader]]:
    """A child process whose output a thread reads; killed and its pipes closed after."""
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:  # fmt: skip
        try:
            yield proc, Reader(proc.stdout)  # type: ignore[arg-type]
        finally:
            proc.kill()


def key_join(member: Machine, joiner: Machine, *more: str) -> list[str]:
    return [sys.executable, "-m", "clusterd", "join", "--data-dir", str(joiner.dir),
            "--key", "--port", str(member.config.ssh_port),
            "--fingerprint", member.fingerprint(), "--yes", *more, "127.0.0.1"]  # fmt: skip


def enter(proc: subprocess.Popen[str]) -> None:
    proc.stdin.write("\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]


def test_cli_prints_the_facts_and_waits_for_enter(bed: Testbed) -> None:
    a, b = bed.machines
    with child(key_join(a, b)) as (proc, out):
        out.until("Press Enter")
        assert f"Host: {b.hostname}" in out.text and f"Serial #: {b.serial}" in out.text
        enter(proc)
        out.until("(?s)Press Enter.*Press Enter")  # not registered yet: asked again
        assert not joined(a, b)
        register(a, out.text)
        enter(proc)
        assert proc.wait(60) == 0, out.text
    assert "Joined cluster 'americas'" in out.text
    assert joined(a, b) and a.op("list")["prepared"] == {}


def test_cli_wait_counts_down_and_goes_on_by_itself(bed: Testbed) -> None:
    a, b = bed.machines
    with child(key_join(a, b, "--wait", "60")) as (proc, out):
        out.until(r"Not registered yet; trying again in 5 s \(\d+ s left\)")
        register(a, out.text)
        assert proc.wait(60) == 0, out.text
    assert "Joined cluster 'americas'" in out.text and joined(a, b)


def test_cli_wait_gives_up_and_changes_nothing(bed: Testbed) -> None:
    a, b = bed.machines
    before = a.status()["digest"], b.status()["digest"]
    with subprocess.Popen(key_join(a, b, "--wait", "1"), stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True) as proc:  # fmt: skip
        text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Still not registered after 1 s." in text and "Join cancelled" in text
    assert (a.status()["digest"], b.status()["digest"]) == before
    assert not list(b.dir.glob("standalone-*.json"))


def test_cli_end_of_input_cancels(bed: Testbed) -> None:
    a, b = bed.machines
    with subprocess.Popen(key_join(a, b), stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip
        text, _ = proc.communicate("", timeout=60)
    assert proc.returncode == 1 and "Join cancelled. Nothing was changed." in text
    assert "Traceback" not in text and not joined(a, b)


def test_one_command_shell_join_over_ssh_waits_with_a_countdown(bed: Testbed) -> None:
    a, b = bed.machines
    line = (f"clusterconfig join --key --port {a.config.ssh_port} "
            f"--fingerprint {a.fingerprint()} --wait 60 127.0.0.1")  # fmt: skip
    with child(identity.local_ssh(b.config, line)) as (proc, out):
        out.until("trying again in")
        register(a, out.text)
        assert proc.wait(60) == 0, out.text
    assert "Joined cluster americas" in out.text and joined(a, b)


def test_one_command_shell_join_without_wait_says_how(bed: Testbed) -> None:
    a, b = bed.machines
    line = (f"clusterconfig join --key --port {a.config.ssh_port} "
            f"--fingerprint {a.fingerprint()} 127.0.0.1")  # fmt: skip
    done = subprocess.run(identity.local_ssh(b.config, line), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert f"Host: {b.hostname}" in done.stdout
    assert "register it there (clusterconfig prepjoin new, then commit)" in done.stdout
    assert "--wait SECONDS" in done.stdout and not joined(a, b)
    bad = subprocess.run(identity.local_ssh(b.config, line + " --wait soon"),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "--wait takes seconds" in bad.stdout


class RegisteringConsole(ScriptedConsole):
    """The person at the joiner's menu; at the 'Press Enter' question, the admin at the
    member registers what the menu printed (the first time after one Enter too early)."""

    def __init__(self, member: Machine, answers: list[str]) -> None:
        super().__init__(answers)
        self.member = member
        self.asked = 0

    async def ask(
        self,
        question: str,
        default: str | None = None,
        *,
        secret: bool = False,
        choices: Sequence[str] = (),
    ) -> str:
        if "Press Enter" in question:
            self.asked += 1
            if self.asked == 2:
                register(self.member, self.output + "\n")
        return await super().ask(question, default, secret=secret, choices=choices)


async def test_menu_join_with_pre_shared_keys_waits_for_enter(tmp_path: Path, bed: Testbed) -> None:
    a = bed[0]
    joiner = new_daemon(tmp_path)
    try:
        port = str(a.config.ssh_port)
        answers = ["3", "", "127.0.0.1", port, "2", "y", "", "", "", "y"]
        console = RegisteringConsole(a, answers)
        shell = Shell(joiner.api, ADMIN, console)
        assert await shell.run_line("clusterconfig") == 0, console.output
        out = console.output
        assert f"Host: {NY}" in out and "Machine key: ssh-ed25519 " in out
        assert console.asked == 2 and "Joined cluster americas" in out
        assert layers.cluster_name(joiner.store.state) == "americas"
        assert NY in a.op("list")["groups"]["Main_Group"]
    finally:
        joiner.stopping.set()
        joiner.member.stop()
        for io in list(joiner.member.wires.values()):
            io.close()
        joiner.store.close()
