from __future__ import annotations

import subprocess
import sys


def test_demo_walks_through_create_join_experiment_and_a_conflict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clusterd", "demo"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "newyork created cluster 'americas'"
    assert "losangeles.example.com joined; the join discarded: Time Zone" in lines
    assert (
        "  losangeles.example.com: time zone America/Los_Angeles "
        "(from Machine losangeles.example.com)" in lines
    )
    assert "  chicago.example.com: time zone America/Los_Angeles (from Cluster)" in lines
    assert any(
        line.startswith("  inconsistency on unsubscribe@cluster[news@example.com]: ")
        for line in lines
    )
    assert any(line.startswith("three daemons up: m0.example.com:") for line in lines)
    assert lines[-1].endswith("now has rows ['alone@example.com', 'live@example.com']")
