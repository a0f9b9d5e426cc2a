"""``clusterd join``: the person-facing join, over the local daemon's control socket.

1. fetch the member's host key and show its fingerprint (SHA256, as OpenSSH prints
   it); ask "Is this a valid key for this host?" -- or, with ``--fingerprint``, compare
   without asking;
2. authenticate (the cluster admin passphrase, or this machine's PREPJOIN key) and ask
   the member to check the join: a dry run that lists every setting the join discards.
   With the key, print this machine's host name, serial number and key first (what the
   admin registers on a member with PREPJOIN NEW and commits); while the member does not
   know the key, wait for Enter (or, with ``--wait SECONDS``, try again every
   ``POLL`` seconds, counting down) and go on once it does;
3. after confirmation (or ``--yes``), join: the daemon keeps a copy of the standalone
   configuration and reports where.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from clusterd.core.errors import ClusterdError
from clusterd.node import control
from clusterd.trust.lifecycle import discard_line

PASSPHRASE_ENV = "CLUSTERD_PASSPHRASE"
POLL = 5.0  # s between tries while waiting for a PREPJOIN registration


REGISTER = (
    "Register this machine on a member of the cluster (clusterconfig prepjoin new, then "
    "commit) with:"
)


def prepjoin_facts(info: dict[str, Any]) -> list[str]:
    """What a member needs to register this machine, as the reference prints it."""
    return [
        f"Host: {info['hostname']}",
        f"Serial #: {info['serial']}",
        f"Machine key: {info['machine_key']}",
    ]


def _ask(question: str, stdin: TextIO, stdout: TextIO) -> bool:
    stdout.write(f"{question} [N]> ")
    stdout.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _call(data_dir: Path, message: dict[str, Any]) -> dict[str, Any]:
    answer = control.request(data_dir, message, timeout=120.0)
    if not answer.get("ok"):
        raise ClusterdError(str(answer.get("error")))
    return answer


def _until_registered(
    data_dir: Path,
    request: dict[str, Any],
    wait: float | None,
    stdin: TextIO,
    stdout: TextIO,
) -> dict[str, Any] | None:
    """The dry run's report once the member knows this machine's key; None: cancelled
    (``q`` or the end of input), or ``wait`` seconds passed."""
    out = stdout.write
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        answer = control.request(data_dir, {**request, "dry_run": True}, timeout=120.0)
        if answer.get("ok"):
            return answer
        if answer.get("code") != "not-registered":
            raise ClusterdError(str(answer.get("error")))
        if deadline is None:
            out("The member does not know this machine's key yet. Press Enter once it is "
                "registered and committed (q to cancel)> ")  # fmt: skip
            stdout.flush()
            line = stdin.readline()
            if not line or line.strip().lower() in ("q", "quit", "cancel"):
                return None
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            out(f"Still not registered after {wait:.0f} s.\n")
            return None
        out(f"Not registered yet; trying again in {min(POLL, left):.0f} s "
            f"({left:.0f} s left).\n")  # fmt: skip
        stdout.flush()
        time.sleep(min(POLL, left))


def passphrase_from(path: Path | None, prompt: Callable[[str], str] = getpass.getpass) -> str:
    """A file's first line, else $CLUSTERD_PASSPHRASE, else typed at the terminal."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise ClusterdError(f"cannot read a passphrase from {path}: {exc}") from None
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    try:
        return prompt("Enter the cluster admin passphrase: ")
    except EOFError:
        raise ClusterdError("no passphrase given (end of input)") from None


def run(
    data_dir: Path,
    *,
    address: str,
    port: int,
    fingerprint: str | None,
    key: bool,
    ccs: bool,
    enable_ccs: bool,
    group: str,
    user: str,
    passphrase_file: Path | None,
    yes: bool,
    wait: float | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    out = stdout.write
    probed = _call(data_dir, {"op": "probe", "address": address, "port": port})
    seen = probed["fingerprint"]
    out(f"The host key fingerprint of {address} port {port} is\n  {seen}\n")
    if fingerprint is None:
        if not _ask("Is this a valid key for this host?", stdin, stdout):
            out("Join cancelled: the host key was not confirmed. Nothing was changed.\n")
            return 1
        fingerprint = seen
    request: dict[str, Any] = {
        "op": "join",
        "address": address,
        "port": port,
        "fingerprint": fingerprint,
        "group": group,
        "user": user,
        "ccs": ccs,
        "enable_ccs": enable_ccs,
    }
    if not (key or ccs):
        request["passphrase"] = passphrase_from(passphrase_file)
        report = _call(data_dir, {**request, "dry_run": True})
    else:
        out(REGISTER + "\n")
        for line in prepjoin_facts(_call(data_dir, {"op": "prepjoin_print"})):
            out(f"  {line}\n")
        found = _until_registered(data_dir, request, wait, stdin, stdout)
        if found is None:
            out("Join cancelled. Nothing was changed.\n")
            return 1
        report = found
    out(f"Joining cluster {report['cluster']!r} through {report['member']}, group {group}.\n")
    if report["discard"]:
        out("These settings of this machine will be discarded and replaced by the cluster's:\n")
        for item in report["discard"]:
            out(f"  {discard_line(item)}\n")
        out("Network settings are kept. A copy of this machine's settings is saved first.\n")
    else:
        out("This machine has no settings of its own to discard.\n")
    if not yes and not _ask("Do you want to join?", stdin, stdout):
        out("Join cancelled. Nothing was changed.\n")
        return 1
    done = _call(data_dir, request)
    out(f"Joined cluster {done['cluster']!r}. Standalone settings saved in {done['saved']}\n")
    if done.get("warning"):
        out(f"Warning: {done['warning']}\n")
    return 0
