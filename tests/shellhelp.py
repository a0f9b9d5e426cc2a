"""Shells run in-process for tests: a machine that never listens, scripted answers.

``new_daemon`` makes machine newyork.example.com (its own data directory, admin
user, a hosts file naming losangeles.example.com so that look-ups never leave the
machine); ``admit_la`` puts losangeles.example.com into its cluster as if it had
joined; ``Term`` is one admin's shell with a ``ScriptedConsole``: ``run`` gives a
command line its answers and returns the exit status and what was written.

The output is read in one layout whatever the console's line breaking: a question
ending in "?" and its ``[DEFAULT]>`` prompt share a line (``... mode? [Y]>y``), and a
menu's bare prompt line follows its last option directly.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clusterd.cli.console import ScriptedConsole
from clusterd.cli.shell import Shell
from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.dev.testbed import free_port
from clusterd.node import identity
from clusterd.node.daemon import Daemon
from clusterd.node.seal import MachineSealer
from clusterd.schema.access import hash_passphrase
from clusterd.store.session import Session
from clusterd.trust import clusterops
from clusterd.trust.logins import AdminLogin

NY = "newyork.example.com"
LA = "losangeles.example.com"
LA_ADDRESS = "127.0.0.2"
LA_SEED = b"L" * 32  # losangeles' machine key: commits made as it are signed with it
PASSPHRASE = "correct horse battery"
NO_ANSWER = "the script has no answer"
PROMPT = re.compile(r"\[[^\]\n]*\]>")
ADMIN = AdminLogin("admin", "local-key")  # what `clusterd shell` logs in as


def canonical(lines: list[str]) -> str:
    """Questions and their prompts in the layout the module docstring describes."""
    found: list[str] = []
    for line in lines:
        if PROMPT.match(line) and found:
            if found[-1].endswith("?"):
                found[-1] = f"{found[-1]} {line}"
                continue
            if found[-1] == "":
                found.pop()
        found.append(line)
    return "\n".join(found)


def public_key() -> str:
    """A valid OpenSSH public key line without comment."""
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    return " ".join(key.split()[:2])


def la_sealer(tmp_path: Path) -> MachineSealer:
    """What signs the commits of a store that plays losangeles (its key, ``LA_SEED``)."""
    key = Ed25519PrivateKey.from_private_bytes(LA_SEED)
    path = tmp_path / "la_machine_key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))  # fmt: skip
    return MachineSealer(path)


def la_sign(digest: bytes) -> str:
    """losangeles' signature of a commit's hash (hex)."""
    return Ed25519PrivateKey.from_private_bytes(LA_SEED).sign(digest).hex()


def la_public_key() -> str:
    key = Ed25519PrivateKey.from_private_bytes(LA_SEED).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()  # fmt: skip


# How the shell writes a time (every time it writes carries its zone).
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+"
SEALED = r"  \[[0-9a-f]{12} verified\]"  # commitdetail's mark of a commit whose seal verifies
# What ``commit`` says: the time with its zone.
COMMITTED = re.compile(r"Changes committed: \w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4} \S+")


def new_daemon(tmp_path: Path) -> Daemon:
    """Standalone machine newyork.example.com; DNS goes to a port nobody answers on."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{LA_ADDRESS} {LA}\n", encoding="utf-8")
    overrides = {
        "ssh_port": free_port(),
        "hosts_file": str(hosts),
        "dns_servers": ["127.0.0.1"],
        "dns_port": free_port(),
        "dns_timeout": 0.2,
        # (no links here: what waits for them, e.g. the catch-up after a reconnect, waits
        # a handshake time-out, 2 s at this interval, not the 10 s of the default)
        "ping_interval": 0.4,
    }
    config = identity.init(tmp_path / "ny", NY, "SER-NY", overrides, admin_passphrase=PASSPHRASE)
    return Daemon(config)


def admit_la(daemon: Daemon, group: str) -> None:
    """losangeles.example.com becomes a member of ``group`` (no network involved)."""
    row = {
        "serial": "SER-LA",
        "group": group,
        "address": LA_ADDRESS,
        "host_key": public_key(),
        "machine_key": la_public_key(),
    }
    clusterops.admit(daemon.store, LA, row, user="admin")
    daemon.follower.replaced()


def login_as(daemon: Daemon, user: str = "admin", role: str = "admin") -> AdminLogin:
    """A login of ``user`` with ``role``: the local admin key for admin, else a
    passphrase login of a user that exists with that role (made so if need be: roles are
    read from the users at every command, so the user must be real)."""
    if user == "admin" and role == "admin":
        return AdminLogin("admin", "local-key")
    row = daemon.users().get(user)
    if row is None or row["role"] != role:
        mode = daemon.effective("userconfig").mode or Mode.machine(daemon.config.hostname)
        session = Session(daemon.store, "admin")
        hashed = row["passphrase_hash"] if row else hash_passphrase(f"{user} passphrase", n=2)
        session.set_row("userconfig", mode, user, {"role": role, "passphrase_hash": hashed})
        session.commit(f"user {user} ({role})")
    return AdminLogin(user, "passphrase")


class Term:
    """One login: a Shell on ``daemon`` with a console that answers from a script."""

    def __init__(self, daemon: Daemon, user: str = "admin", role: str = "admin") -> None:
        self.console = ScriptedConsole()
        self.daemon = daemon
        self.shell = Shell(daemon.api, login_as(daemon, user, role), self.console)

    def __repr__(self) -> str:
        return f"<Term {self.shell!r}>"

    @property
    def pending(self) -> int:
        return len(self.shell.session.pending)

    @property
    def prompt(self) -> str:
        return self.shell.prompt()

    @property
    def cluster(self) -> str | None:
        return layers.cluster_name(self.shell.store.state)

    async def run(self, line: str, *answers: str, spare: bool = False) -> tuple[int, str]:
        """Run one line with these answers, every one used unless ``spare``; returns the
        exit status and the output."""
        self.console.answers.clear()
        self.console.answers.extend(answers)
        self.console.lines.clear()
        status = await self.shell.run_line(line)
        out = canonical(self.console.lines)
        assert NO_ANSWER not in out, f"{line!r} asked more than scripted:\n{out}"
        unused = list(self.console.answers)
        assert spare or not unused, f"{line!r} left {unused}:\n{out}"
        return status, out

    async def ok(self, line: str, *answers: str) -> str:
        status, out = await self.run(line, *answers)
        assert status == 0, f"{line!r} -> {status}:\n{out}"
        return out


def asks_start(t: Term, line: str) -> bool:
    """Whether ``line`` (an edit: ``FEATURE OP ...``) asks "Start from" at ``t``'s mode: the
    first edit of a feature at a mode of a cluster that does not define it, when some
    upper mode (the cluster, the machine's group) does.  (Inheriting only the factory
    defaults, both starts are the same: nothing is asked; standalone, never.)"""
    shell = t.shell
    feature = shell.store.catalogue[line.split()[0]]
    if shell.cluster is None or layers.is_defined(shell.session.view, feature, shell.mode):
        return False
    return shell.session.edit.inherited_from(feature, shell.mode).mode is not None


def start_answers(t: Term, line: str, answer: str = "1") -> list[str]:
    """``[answer]`` if ``line`` asks "Start from" (see ``asks_start``), else none."""
    return [answer] if asks_start(t, line) else []


def menu_join_lines(port: int | str) -> list[str]:
    """The join menu's questions over SSH with the passphrase (answered 127.0.0.1,
    ``port``, the passphrase: shown as ``[]>``, a secret), up to its first stage line."""
    return [
        "Do you want to enable the Cluster Communication Service on this machine? [N]>",
        "WARNING: every setting of this machine except its network settings will be",
        "lost and replaced by the cluster's and its group's settings.",
        "Enter the IP address of a machine in the cluster.",
        "[]>127.0.0.1",
        "Enter the remote port to connect to.",
        f"[22]>{port}",
        "Authenticate with:",
        "1. the cluster admin passphrase",
        "2. pre-shared keys (PREPJOIN)",
        "[1]>1",
        "Enter the passphrase of user admin in the cluster.",
        "[]>",
        f"Connecting to 127.0.0.1 port {port}...",
    ]
