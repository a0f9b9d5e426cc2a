"""The live part of the demo: three real daemons on 127.0.0.1 linked over SSH.

A commit on one member shows up on the others; one member is disconnected, edits alone,
reconnects and catches up; ``status`` shows links and routes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from clusterd.dev.testbed import running

ROW = "unsubscribe"


def run(out: Callable[[str], None] = print) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="clusterd-mesh-demo-") as tmp,
        running(Path(tmp), 3, ping=0.5) as bed,
    ):
        bed.wait(bed.linked, what="links")
        m0, _, m2 = bed.machines
        where = ", ".join(f"{m.hostname}:{m.config.ssh_port}" for m in bed.machines)
        out(f"three daemons up: {where}")
        for peer in m0.status()["peers"]:
            out(f"  {m0.hostname} -> {peer['hostname']}: {peer['state']}, route {peer['route']}")
        started = time.monotonic()
        m0.edit(
            {"do": "define", "feature": ROW, "mode": "cluster", "start": "empty"},
            {
                "do": "set_row",
                "feature": ROW,
                "mode": "cluster",
                "row": "live@example.com",
                "value": {},
            },
            comment="demo",
        )
        bed.wait(bed.converged, what="replication")
        took = 1000 * (time.monotonic() - started)
        out(f"a commit on {m0.hostname} reached every member in {took:.0f} ms")
        m2.ask({"op": "disconnect"})
        bed.wait(lambda: m2.status()["links"] == 0, what="disconnect")
        m2.edit(
            {
                "do": "set_row",
                "feature": ROW,
                "mode": "cluster",
                "row": "alone@example.com",
                "value": {},
            }
        )
        out(
            f"{m2.hostname} disconnected and committed alone; {m0.hostname} sees it as "
            f"{next(p['state'] for p in m0.status()['peers'] if p['hostname'] == m2.hostname)}"
        )
        m2.ask({"op": "reconnect"})
        bed.wait(bed.linked, what="reconnect")
        bed.wait(bed.converged, what="catch-up")
        value = m0.ask({"op": "get", "feature": ROW, "mode": "cluster"})["value"]
        out(f"{m2.hostname} reconnected; {m0.hostname} now has rows {sorted(value)}")
