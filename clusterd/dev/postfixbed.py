"""A real Postfix instance driven by a target of a test-bed machine (tests, the demo,
``bench/targets.py``).

``declare`` writes ``targets.d/postfix.toml`` into the machine's data directory: the
built-in renderer, ``clusterd postfix-check`` in staging, a reload that starts Postfix
when it is not running, an SMTP probe of the listener, and Postfix's own queue and data
directories under ``root`` (a directory Postfix's user may reach).  ``listen`` makes the
machine's interface and listener (machine level) so that Postfix listens on
127.0.0.1:``port``.  ``stop`` stops the instance.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from clusterd.dev.testbed import Machine

RELOAD = (
    "postfix -c {live} status >/dev/null 2>&1 && postfix -c {live} reload "
    "|| postfix -c {live} start"
)


def available() -> bool:
    """Postfix is installed, and we may run it (as root: it drops to its own user)."""
    return shutil.which("postfix") is not None and os.geteuid() == 0


def declare(
    m: Machine,
    root: Path,
    port: int,
    wait: str = "0.1s",
    address: str = "127.0.0.1",
    settle: float = 1.0,
    canary: bool = False,
) -> Path:
    """The target; returns its live path (a link, once the first apply made it)."""
    live, queue, data = root / "postfix-live", root / "queue", root / "data"
    queue.mkdir(parents=True, exist_ok=True)
    data.mkdir(exist_ok=True)
    shutil.chown(data, "postfix")
    (m.dir / "targets.d").mkdir(exist_ok=True)
    (m.dir / "targets.d" / "postfix.toml").write_text(f"""
[[target]]
name = "postfix"
renderer = "postfix"
path = "{live}"
validate = "{sys.executable} -m clusterd postfix-check {{staging}}"
reload = "sh -c '{RELOAD}'"
probe = "smtp {address}:{port}"
wait = "{wait}"
settle = {settle}
timeout = 20
canary = {str(canary).lower()}
canary_delay = 1.0

[target.options.main_cf]
queue_directory = "{queue}"
data_directory = "{data}"
inet_protocols = "ipv4"
maillog_file_prefixes = "{root}"
maillog_file = "{root / "maillog"}"
""")
    return live


def listen(m: Machine, port: int, address: str = "127.0.0.1") -> None:
    me = f"machine:{m.hostname}"
    m.edit({"do": "define", "feature": "interfaceconfig", "mode": me, "start": "empty"},
           {"do": "set_row", "feature": "interfaceconfig", "mode": me, "row": "Data",
            "value": {"address": address, "prefix": 8, "hostname": m.hostname}},
           {"do": "define", "feature": "listenerconfig", "mode": me, "start": "empty"},
           {"do": "set_row", "feature": "listenerconfig", "mode": me, "row": "In",
            "value": {"interface": "Data", "port": port, "type": "private"}})  # fmt: skip


def shared_listener(machines: list[Machine], addresses: dict[int, str], port: int) -> None:
    """One listener for all, at cluster level (``listener_edit``): each machine's
    interface ``Data`` on its own address (127.0.0.1 for those ``addresses`` leaves out),
    the same ``port``.  A change of the listener is then a change for the whole cluster
    (the canary's test and bench)."""
    for i, m in enumerate(machines):  # (interfaces are per machine only)
        me = f"machine:{m.hostname}"
        data = {"address": addresses.get(i, "127.0.0.1"), "prefix": 8, "hostname": m.hostname}
        m.edit({"do": "define", "feature": "interfaceconfig", "mode": me, "start": "empty"},
               {"do": "set_row", "feature": "interfaceconfig", "mode": me, "row": "Data",
                "value": data})  # fmt: skip
    machines[0].edit({"do": "define", "feature": "listenerconfig", "mode": "cluster",
                      "start": "empty"}, listener_edit(port))  # fmt: skip


def listener_edit(port: int) -> dict[str, Any]:
    """The cluster's listener ``In`` on ``port`` (an edit for ``Machine.edit``)."""
    return {"do": "set_row", "feature": "listenerconfig", "mode": "cluster", "row": "In",
            "value": {"interface": "Data", "port": port, "type": "private"}}  # fmt: skip


def stop(live: Path) -> None:
    subprocess.run(["postfix", "-c", str(live), "stop"], capture_output=True, timeout=60)
