"""The load benchmark keeps working on a small scale (its figures are recorded, never
asserted against targets): 6 concurrent admin shells over SSH, 2 rounds each, on 3 real
daemons; every commit must be on every member."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_load_benchmark_small_run() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--sessions", "6", "--rounds", "2",
         "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["why_failed"] == []
    assert report["sessions"] == 6 and report["sessions_per_member"] == [2, 2, 2]
    assert report["commits_expected"] == report["commits_made"] == 12
    assert report["commits_lost"] == 0 and report["sessions_failed"] == 0
    assert report["converged"] is True
    assert report["commits_in_vv"] == [12, 12, 12]
    for kind, n in {"login": 6, "clustermode": 6, "edit": 12, "commit": 12, "read": 12}.items():
        figures = report["latency_ms"][kind]
        assert figures["n"] == n
        assert all(isinstance(figures[p], float) for p in ("p50", "p90", "p99", "max"))
    assert report["wall_s"] > 0 and report["commits_per_s"] > 0
