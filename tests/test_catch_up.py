"""Catch-up progress: how far behind a machine is, in status and while RECONNECT waits.

The counting is pure (``commits_behind``, ``catch_up``); the progress lines come from
real daemons: b is disconnected, a commits a few thousand times, b reconnects through
the real ssh client with its frames held back (``link_delay_ms``) so the catch-up
lasts long enough to be watched.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.mesh.protocol import catch_up, commits_behind
from clusterd.node import identity

COMMITS = 2500


def test_commits_behind_counts_each_origins_gap() -> None:
    assert commits_behind({}, {}) == 0
    assert commits_behind({"A": 3}, {"A": 3}) == 0
    assert commits_behind({"A": 5}, {"A": 3}) == 0  # ahead is not behind
    assert commits_behind({"A": 1}, {"A": 4, "B": 2}) == 5
    assert commits_behind({"A": 9, "B": 1}, {"A": 4, "B": 2}) == 1


def _peer(host: str, vv: dict[str, int], ours: dict[str, int], state: str = "up") -> Any:
    return {"hostname": host, "state": state, "vv": vv, "behind": commits_behind(ours, vv)}


def test_catch_up_counts_a_commit_held_by_several_members_once() -> None:
    ours = {"A": 1}
    peers = [
        _peer("b", {"A": 4, "B": 2}, ours),
        _peer("c", {"A": 3, "B": 2, "C": 1}, ours),
        _peer("d", {"A": 1}, ours),
        _peer("e", {"A": 90}, ours, state="down"),  # not linked: its news is old
    ]
    assert catch_up(ours, peers) == {"missing": 6, "from": ["b", "c"]}
    assert catch_up({"A": 4, "B": 2, "C": 1}, []) == {"missing": 0, "from": []}


def _commit_many(m: Machine, count: int) -> None:
    """``count`` commits on ``m`` over one control connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(m.dir / "control.sock"))
        reader = sock.makefile("rb")
        define = {"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"}
        for i in range(-1, count):
            edit = define if i < 0 else {
                "do": "set_row", "feature": "unsubscribe", "mode": "cluster",
                "row": f"u{i}@example.com", "value": {},
            }  # fmt: skip
            sock.sendall(json.dumps({"op": "edit", "edits": [edit]}).encode() + b"\n")
            answer = json.loads(reader.readline())
            assert answer.get("ok"), answer


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client (ssh)")
def test_reconnect_shows_the_catch_up_and_status_counts_it(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, link_delay_ms=400) as bed:
        bed.start()
        a, b = bed.machines
        bed.wait(bed.linked, what="linked")
        b.op("disconnect", machine=b.hostname)
        bed.wait(lambda: a.status()["links"] == 0, what="b disconnected")
        _commit_many(a, COMMITS)
        assert b.status()["catch_up"] == {"missing": 0, "from": []}  # knows of nothing yet
        done = subprocess.run(
            identity.local_ssh(b.config, "clusterconfig reconnect"),
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        progress = [x for x in lines if x.startswith(f"Catching up from {a.hostname}: ")]
        assert progress, done.stdout
        first = re.search(r": ([\d,]+) of ([\d,]+) commits received", progress[0])
        # The first line counts what b knows to be missing then (news may still come);
        # the last line counts exactly what arrived since RECONNECT.
        assert first is not None and 0 < int(first[2].replace(",", "")) <= COMMITS + 1
        assert lines[-1] == f"Catch-up done: {COMMITS + 1:,} commits received; " + (
            "up to date with all members (1)."
        )
        assert b.status()["catch_up"]["missing"] == 0
        # b's own RECONNECT commit reaches a a link delay later: then both hold the same.
        bed.wait(bed.converged, timeout=10, what="converged")
