from __future__ import annotations

import re
import subprocess
import sys

from clusterd.dev import postfixbed


def test_demo_walks_through_create_join_experiment_and_a_conflict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clusterd", "demo", "--store"],
        capture_output=True,
        text=True,
        timeout=120,
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


def test_demo_walkthrough_on_three_live_machines_through_the_shell() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "clusterd", "demo", "--no-shell"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "newyork.example.com> clusterconfig create americas" in out
    assert out.count("Joined cluster americas.") == 2  # losangeles over SSH, chicago over CCS
    assert "clusterconfig join --port " in out and " 127.0.0.11 admin '" in out  # reference form
    assert "(Machine chicago.example.com)> clusterconfig list" in out
    assert "clusterconfig join --ccs --port" in out
    assert "chicago.example.com prepared: a pending change" in out
    assert "comes from Machine losangeles.example.com" in out  # the experiment, down there
    assert "Time Zone move from Machine losangeles.example.com to Cluster" in out
    listed = (
        "  cluster = americas\n  Group Main_Group:\n"
        "  Machine chicago.example.com (Serial #: SER-002)\n"
        "  Machine newyork.example.com (Serial #: SER-000)\n"
        "  Group West:\n  Machine losangeles.example.com (Serial #: SER-001)"
    )
    assert listed in out
    assert "      Cluster: Yes\n      Group Main_Group: No" in out
    assert "No inconsistencies found.\n" in out
    for name, address in (("newyork", "127.0.0.11"), ("losangeles", "127.0.0.12"),
                          ("chicago", "127.0.0.13")):  # fmt: skip
        assert re.search(
            rf"  {name}: ssh -p \d+ admin@{re.escape(address)}   "
            rf"https://{re.escape(address)}:\d+/",
            out,
        ), out  # by hand, and the web
    if postfixbed.available():  # the services part: a route reaches chicago's Postfix
        assert "example.org smtp:[mx.example.org]:25" in out
        assert "postfix          applied" in out
    else:
        assert "the services part of the demo is skipped" in out


def test_ctrl_c_during_the_demo_stops_it_without_a_traceback() -> None:
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "clusterd", "demo", "--no-shell"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while "are running on" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    os.killpg(proc.pid, signal.SIGINT)  # (a terminal's Ctrl-C: the whole foreground group)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (seen + out, err)
    assert "The demo was interrupted; its machines are stopped." in out
    assert "Traceback" not in err, err
