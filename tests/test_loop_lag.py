"""How late the links' loop runs its timers (``clusterd.node.looplag``), on a running
daemon: reported by ``status`` on the control socket and in the shell over ssh, and
moved by work that really runs on the loop (one commit of 5,000 rows merged and
written there)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from clusterd.dev.testbed import Testbed
from clusterd.node import identity


def test_status_reports_how_late_the_loop_runs_and_sees_a_big_commit(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a = bed[0]
        time.sleep(1.0)
        loop = a.status()["loop"]
        assert loop["every_ms"] == 50.0
        idle = loop["last_minute"]
        assert 0 <= idle["p50_ms"] <= idle["p99_ms"] <= idle["max_ms"] <= loop["worst_ms"]
        assert idle["p50_ms"] < 50, loop  # an idle member's timers are on time

        a.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        row = {"do": "set_row", "feature": "unsubscribe", "mode": "cluster", "value": {}}
        a.edit(*[{**row, "row": f"r{i}@lag.example"} for i in range(5000)])
        time.sleep(0.2)
        after = a.status()["loop"]
        assert after["worst_ms"] > max(20.0, loop["worst_ms"]), (loop, after)
        assert after["last_minute"]["max_ms"] == after["worst_ms"]

        shown = subprocess.run(identity.local_ssh(a.config, "status"), capture_output=True,
                               text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "Links' loop: timers late by " in shown.stdout
        assert (
            f"({after['worst_ms']} ms since start)" in shown.stdout or "since start" in shown.stdout
        )
