"""The demo: the reference's walkthrough on three live machines, through the shell.

newyork, losangeles and chicago run as real daemons on 127.0.0.11-13.  Every step is a
shell command sent with the real OpenSSH client (``ssh admin@HOST 'COMMAND'``, the local
admin key), printed with its output:

1. newyork creates the cluster ``americas``;
2. losangeles joins over SSH (host key fingerprint given, admin passphrase);
3. chicago prints its key, newyork registers it (PREPJOIN, committed), chicago joins
   over newyork's CCS port;
4. a group ``West`` is added and losangeles moved into it;
5. the experiment: a cluster setting is copied down to losangeles, changed there, and
   moved back up to the cluster;
6. with Postfix installed (and root), chicago runs a Postfix instance through a
   target (``clusterd.dev.postfixbed``): newyork commits a route, and chicago's rendered
   ``transport`` map and its target's status are shown (without Postfix: one line says
   the part is skipped);
7. LIST, CLUSTERSHOW and clustercheck.

Then the user is dropped into the shell on newyork (``--no-shell``: not; used by tests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterd.core.errors import ClusterdError
from clusterd.dev import postfixbed
from clusterd.dev.testbed import PASSPHRASE, Machine, free_port
from clusterd.node import identity

HOSTS = {"newyork": "127.0.0.11", "losangeles": "127.0.0.12", "chicago": "127.0.0.13"}


class Demo:
    def __init__(self, root: Path, out: Callable[[str], None]) -> None:
        self.out = out
        # The demo's own hosts file: members find (and reverse-resolve) each other by it,
        # as they would by DNS on a real network.
        hosts = root / "hosts"
        hosts.write_text("".join(f"{a} {n}.example.com\n" for n, a in HOSTS.items()))
        self.machines = {
            name: Machine(
                root,
                i,
                1.0,
                {
                    "listen": address,
                    "ccs_enabled": name == "newyork",
                    "hosts_file": str(hosts),
                    "ccs_port": free_port(),  # (chicago turns CCS on when it joins)
                    "web_listen": f"{address}:{free_port()}",
                },
                hostname=f"{name}.example.com",
            )
            for i, (name, address) in enumerate(HOSTS.items())
        }
        self.postfix: tuple[Path, int] | None = None  # chicago's live link, its port
        if postfixbed.available():
            where = Path(tempfile.mkdtemp(prefix="clusterd-demo-postfix-", dir="/tmp"))
            os.chmod(where, 0o755)  # (Postfix's own user reads its directories)
            port = free_port()
            chicago = self.machines["chicago"]
            self.postfix = (postfixbed.declare(chicago, where, port,
                                               address=HOSTS["chicago"]), port)  # fmt: skip

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    def shell(self, name: str, command: str) -> str:
        """Run one shell command on ``name`` through OpenSSH; print it and its output."""
        m = self[name]
        prompt = f"(Machine {m.hostname})>" if m.status()["cluster"] else f"{m.hostname}>"
        argv = identity.local_ssh(m.config, command)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        self.out(f"{prompt} {command}")
        for line in (done.stdout + done.stderr).rstrip().splitlines():
            self.out(f"  {line}")
        if done.returncode != 0:
            raise ClusterdError(f"{command!r} on {name} failed ({done.returncode})")
        self.settle()
        return done.stdout

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until the members hold the same state (the next step reads it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterdError, OSError, ValueError):
                found = [m.status() for m in self.machines.values()]
                if len({s["digest"] for s in found if s["cluster"]}) <= 1:
                    return
            time.sleep(0.05)
        raise ClusterdError("the members did not converge within 20 s")

    def walkthrough(self) -> None:
        ny, la, chi = self["newyork"], self["losangeles"], self["chicago"]
        self.shell("newyork", "clusterconfig create americas")
        self.shell("losangeles", f"clusterconfig join --port {ny.config.ssh_port} --fingerprint "
                                 f"{ny.fingerprint()} {ny.config.listen} admin '{PASSPHRASE}' "
                                 "Main_Group")  # fmt: skip
        printed = self.shell("chicago", "clusterconfig prepjoin print").splitlines()
        key = next(line.split(": ", 1)[1] for line in printed if line.startswith("Machine key"))
        self.shell("newyork", f"clusterconfig prepjoin new {chi.hostname} {chi.serial} "
                              f"'{key}'; commit prepare chicago")  # fmt: skip
        self.shell("chicago", f"clusterconfig join --ccs --port {ny.config.ccs_port} "
                              f"--fingerprint {ny.fingerprint()} {ny.config.listen}")  # fmt: skip
        self.shell("newyork", "clusterconfig addgroup West")
        self.shell("newyork", f"clusterconfig setgroup {la.hostname} West")
        self.shell("newyork", "clustermode cluster; settz set timezone=America/New_York; "
                              "commit time zone for everyone")  # fmt: skip
        self.shell("newyork", f"clustermode cluster; settz clusterset copy machine "
                              f"{la.hostname}; commit try a time zone on losangeles")  # fmt: skip
        here = "settz set timezone=America/Los_Angeles; commit works here"
        self.shell("losangeles", f"clustermode machine {la.hostname}; {here}")
        self.shell("newyork", f"explain settz {la.hostname}")
        self.shell("newyork", f"clustermode machine {la.hostname}; settz clusterset move "
                              "cluster; commit the whole cluster takes it")  # fmt: skip
        self.services()
        self.shell("chicago", "clusterconfig list")
        self.shell("chicago", "clustermode cluster; settz clustershow")
        self.shell("newyork", "clustercheck")

    def services(self) -> None:
        """A route committed on newyork, rendered into chicago's Postfix and reloaded."""
        if self.postfix is None:
            self.out("(Postfix is not installed, or this is not root: the services part of "
                     "the demo is skipped; docs/services.md shows it.)")  # fmt: skip
            return
        live, port = self.postfix
        chi = self["chicago"]
        postfixbed.listen(chi, port, HOSTS["chicago"])
        self.out(f"chicago runs Postfix on {HOSTS['chicago']}:{port}, driven by its target "
                 "(targets.d/postfix.toml)")  # fmt: skip
        route = """'destinations=[{"host": "mx.example.org", "port": 25}]'"""
        self.shell("newyork", f"clustermode cluster; smtproutes new example.org {route}; "
                              "commit route example.org")  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            target = chi.status()["targets"]["postfix"]
            if target["applied"] and target["applied"] == target["desired"]:
                break
            time.sleep(0.1)
        self.out(f"chicago's live {live}/transport:")
        for line in (live / "transport").read_text().splitlines():
            self.out(f"  {line}")
        self.shell("chicago", "target status")

    def start(self) -> None:
        for m in self.machines.values():
            m.start()

    def stop(self) -> None:
        for m in self.machines.values():
            m.stop()
        if self.postfix is not None:
            postfixbed.stop(self.postfix[0])
            shutil.rmtree(self.postfix[0].parent, ignore_errors=True)


def run(*, shell: bool = True, out: Callable[[str], None] = print) -> int:
    """The demo; Ctrl-C stops it with one line.  A terminal's Ctrl-C reaches the demo's
    machines too, so the walkthrough may first see a machine's connection reset: after
    a Ctrl-C, any failure is the interruption."""
    interrupted = False

    def on_ctrl_c(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        return _run(shell, out)
    except Exception:
        if not interrupted:
            raise
    except KeyboardInterrupt:  # (the machines were stopped on the way out)
        pass
    finally:
        signal.signal(signal.SIGINT, previous)
    out("")
    out("The demo was interrupted; its machines are stopped.")
    return 130


def _run(shell: bool, out: Callable[[str], None]) -> int:
    with tempfile.TemporaryDirectory(prefix="clusterd-demo-") as tmp:
        demo = Demo(Path(tmp), out)
        try:
            demo.start()
            out("newyork, losangeles and chicago are running on " + ", ".join(
                f"{h} ({a})" for h, a in HOSTS.items()))  # fmt: skip
            demo.walkthrough()
            out("")
            out(f"Reach them by hand while the demo runs (user admin, passphrase "
                f"{PASSPHRASE!r}):")  # fmt: skip
            for name, m in demo.machines.items():
                out(f"  {name}: ssh -p {m.config.ssh_port} admin@{m.config.listen}   "
                    f"https://{m.config.web_listen}/")  # fmt: skip
            out("  (the web certificates are each machine's own: the browser asks you to "
                "accept them)")  # fmt: skip
            if shell:
                out("")
                out("You are now in the shell on newyork. Try: help, clusterconfig list,")
                out("clustermode cluster, settz, commit, clustercheck; quit ends the demo.")
                sys.stdout.flush()
                subprocess.call(identity.local_ssh(demo["newyork"].config))
        finally:
            demo.stop()
    return 0
