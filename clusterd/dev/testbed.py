"""A cluster of real daemons on loopback, for tests, benchmarks and the demo.

``Testbed(root, n)`` initialises n machines (``clusterd init``), seeds the same
membership into every store (cluster ``testbed``, group ``Main_Group``, each machine's
address, port and keys) the way a join will, starts each daemon as its own process
(``clusterd run``), and stops them all on exit whatever happens.  Ports are free ports
of 127.0.0.1 picked at start.  A machine's ``prefix`` runs its daemon under another
command (``ip netns exec NS``: ``bench/netns_faults.py``); its membership row carries
its ``listen`` address.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from clusterd.core import membership
from clusterd.core.errors import ClusterdError
from clusterd.core.pending import Pending, View
from clusterd.node import control, identity
from clusterd.node.seal import MachineSealer
from clusterd.schema.catalogue import CATALOGUE
from clusterd.store.store import Store
from clusterd.trust import lifecycle

_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port of 127.0.0.1 outside the kernel's ephemeral range, never handed out
    twice by this process: dozens of daemons dialling each other while others are
    still starting would otherwise take a listener's port for an outgoing connection."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(10_000, 65_000) if not low <= p <= high]
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(candidates)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise ClusterdError("no free port of 127.0.0.1 outside the ephemeral range")


PASSPHRASE = "correct horse battery"  # the testbed's admin passphrase


class Machine:
    def __init__(
        self,
        root: Path,
        index: int,
        ping: float,
        extra: dict[str, Any],
        passphrase: str | None = PASSPHRASE,
        hostname: str | None = None,
    ) -> None:
        self.index = index
        self.hostname = hostname or f"m{index}.example.com"
        self.serial = f"SER-{index:03d}"
        self.dir = root / self.hostname
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix: list[str] = []  # run the daemon under this (e.g. ip netns exec NS)
        # DNS goes to a loopback port nobody answers on unless a test gives a server (its
        # dnsmasq): a test bed never asks the host's resolvers, which may be off loopback.
        overrides = {"listen": "127.0.0.1", "ssh_port": free_port(), "ping_interval": ping,
                     "dns_servers": ["127.0.0.1"], "dns_port": free_port(),
                     "dns_timeout": 0.5}  # fmt: skip
        overrides.update(extra)
        if overrides.get("ccs_enabled"):
            overrides["ccs_port"] = free_port()
        self.config = identity.init(
            self.dir, self.hostname, self.serial, overrides, admin_passphrase=passphrase
        )
        self.info = identity.describe(self.config)

    def __repr__(self) -> str:
        return f"<Machine {self.hostname} pid={self.proc.pid if self.proc else None}>"

    def row(self, ccs: bool = False) -> dict[str, Any]:
        row = {
            "serial": self.serial,
            "address": self.config.listen,
            "ssh_port": self.config.ssh_port,
            "host_key": self.info["host_key"],
            "machine_key": self.info["machine_key"],
        }
        if ccs:
            row.update(transport="ccs", ccs_port=self.config.ccs_port)
        return row

    def start(self, *flags: str, wait: bool = True) -> None:
        """Start the daemon; ``wait``: until its control socket answers."""
        log = open(self.dir / "stderr.log", "ab")  # noqa: SIM115 - the child keeps it
        command = [sys.executable, "-m", "clusterd", "run", "--data-dir", str(self.dir)]
        self.proc = subprocess.Popen(
            [*self.prefix, *command, *flags],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClusterdError(f"{self.hostname} exited: {self.tail()}")
            with contextlib.suppress(ClusterdError, OSError, ValueError):
                if self.ask({"op": "status"}, timeout=2.0).get("ok"):
                    return
            time.sleep(0.05)
        raise ClusterdError(f"{self.hostname} did not start: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text = (self.dir / "stderr.log").read_text(errors="replace") if self.dir.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def ask(self, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        return control.request(self.dir, message, timeout)

    def status(self) -> dict[str, Any]:
        return self.ask({"op": "status"})

    def op(self, op: str, **args: Any) -> dict[str, Any]:
        """A control-socket operation that must succeed."""
        answer = self.ask({"op": op, **args}, timeout=60.0)
        if not answer.get("ok"):
            raise ClusterdError(f"{self.hostname} {op}: {answer.get('error')}")
        return answer

    def refused(self, op: str, **args: Any) -> str:
        """A control-socket operation that must be refused: its error."""
        answer = self.ask({"op": op, **args}, timeout=60.0)
        if answer.get("ok"):
            raise AssertionError(f"{self.hostname} {op} was not refused: {answer}")
        return str(answer["error"])

    def store(self) -> Store:
        """This machine's store, opened as its daemon opens it: the commits made through
        it are signed with its machine key (open it while the daemon is stopped)."""
        return Store(self.config.database_url, origin=self.serial, hostname=self.hostname,
                     sealer=MachineSealer(self.config.machine_key))  # fmt: skip

    def fingerprint(self) -> str:
        """This machine's host key fingerprint, from its key file."""
        import asyncssh

        return str(asyncssh.read_public_key(self.config.host_key.with_suffix(".pub"))
                   .get_fingerprint("sha256"))  # fmt: skip

    def join(self, member: Machine, **args: Any) -> dict[str, Any]:
        """Join ``member``'s cluster over its admin port with the testbed passphrase."""
        request = {
            "address": member.config.listen,
            "port": member.config.ssh_port,
            "fingerprint": member.fingerprint(),
            "passphrase": PASSPHRASE,
            **args,
        }
        return self.op("join", **request)

    def edit(self, *edits: dict[str, Any], comment: str = "") -> dict[str, Any]:
        answer = self.ask({"op": "edit", "edits": list(edits), "comment": comment})
        if not answer.get("ok"):
            raise ClusterdError(f"{self.hostname}: {answer.get('error')}")
        return answer

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def seed_membership(machines: list[Machine], ccs: bool = False, name: str = "testbed") -> None:
    """Create the cluster on the first machine with every member, give all the same state."""
    first = machines[0]
    store = first.store()
    lifecycle.create_cluster(store, name, machine=first.row(ccs))
    pending = Pending()
    view = View(store.state, pending)
    for m in machines[1:]:
        membership.admit(view, CATALOGUE, m.hostname, m.row(ccs), lifecycle.MAIN_GROUP)
    store.commit(pending, user="admin", comment="members")
    snapshot = store.export_state()
    store.close()
    for m in machines[1:]:
        other = Store(m.config.database_url, origin=m.serial, hostname=m.hostname)
        other.replace_state(snapshot)
        other.close()


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        root: Path,
        n: int,
        *,
        ping: float = 0.5,
        ccs: bool = False,
        seed: bool = True,
        each: dict[int, dict[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        """``seed=False``: n standalone machines, for create and join to build a cluster;
        ``each``: settings of one machine (by index) on top of ``extra``."""
        if ccs:
            extra = {"ccs_enabled": True, **extra}
        own = each or {}
        self.machines = [Machine(root, i, ping, {**extra, **own.get(i, {})}) for i in range(n)]
        if seed:
            seed_membership(self.machines, ccs=ccs)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __getitem__(self, index: int) -> Machine:
        return self.machines[index]

    def start(self, timeout: float = 20.0) -> None:
        """Start every daemon, then wait for each (they start up in parallel)."""
        for m in self.machines:
            m.start(wait=False)
        for m in self.machines:
            m.wait_ready(timeout)

    def stop(self) -> None:
        for m in self.machines:
            m.stop()

    def wait(self, condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterdError, OSError, ValueError):
                if condition():
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.describe()}")

    def linked(self, machines: list[Machine] | None = None) -> bool:
        """Every running machine has a live link to every other running one."""
        group = machines or [m for m in self.machines if m.proc and m.proc.poll() is None]
        names = {m.hostname for m in group}
        for m in group:
            up = {p["hostname"] for p in m.status()["peers"] if p["state"] == "up"}
            if not names - {m.hostname} <= up:
                return False
        return True

    def converged(self, machines: list[Machine] | None = None) -> bool:
        group = machines or [m for m in self.machines if m.proc and m.proc.poll() is None]
        return len({m.status()["digest"] for m in group}) == 1

    def describe(self) -> str:
        lines = []
        for m in self.machines:
            try:
                s = m.status()
                peers = {p["hostname"]: (p["state"], p["reason"][:60]) for p in s["peers"]}
                lines.append(f"{m.hostname}: vv={s['vv']} peers={json.dumps(peers)}")
            except (ClusterdError, OSError, ValueError) as exc:
                lines.append(f"{m.hostname}: {exc}")
        return "\n".join(lines)


@contextlib.contextmanager
def running(root: Path, n: int, **kwargs: Any) -> Iterator[Testbed]:
    bed = Testbed(root, n, **kwargs)
    try:
        bed.start()
        yield bed
    finally:
        bed.stop()
