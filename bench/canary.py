"""How many members' live Postfix a breaking value reaches, with canary rollout and without.

    .venv/bin/python bench/canary.py [--rounds 10] [--json]

Four members of a ``clusterd.dev.testbed``: m0 commits, m1-m3 each run a real Postfix
through a target (``clusterd.dev.postfixbed``) on 127.0.0.11-13, all listening on one
port set at cluster level.  Each round commits, on m0, the listener moved to another
port (``postfix check`` passes; the SMTP probe fails), waits until every member has
settled, then commits the port back with a new route and waits until every member
applied it.  A thread reads each member's live link every 10 ms: a member is *reached*
when its live link pointed at a generation holding the moved port.  The same rounds
run with ``canary = true`` on the three targets and without.

Needs Postfix and root (Postfix's own user runs it); says so and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterd.dev import postfixbed
from clusterd.dev.testbed import Testbed, free_port

ADDRESSES = {1: "127.0.0.11", 2: "127.0.0.12", 3: "127.0.0.13"}


class Sampler:
    """Which members' live ``master.cf`` named ``bad`` (a port) at any reading."""

    def __init__(self, live: dict[int, Path]) -> None:
        self.live, self.bad, self.reached = live, "", set[int]()
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.done.is_set():
            for i, path in self.live.items():
                try:
                    if self.bad and self.bad in (path / "master.cf").read_text():
                        self.reached.add(i)
                except OSError:
                    pass
            time.sleep(0.01)


def target(m: Any) -> dict[str, Any]:
    return dict(m.status()["targets"]["postfix"])


def settled(status: dict[str, Any], bad: str) -> bool:
    """The member reverted ``bad`` after its probe failed, or holds back behind its
    canary."""
    error = status["error"] or {}
    reverted = error.get("commit") == bad and "reverted" in error.get("text", "")
    return reverted or error.get("stage") == "canary"


def run(rounds: int, canary: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="clusterd-canary-bench-", dir="/tmp"))
    os.chmod(root, 0o755)
    bed = Testbed(root / "bed", 4)
    port, live = free_port(), {}
    for i in ADDRESSES:
        service = root / f"postfix{i}"
        service.mkdir()
        live[i] = postfixbed.declare(bed.machines[i], service, port, address=ADDRESSES[i],
                                     canary=canary)  # fmt: skip
    reached, recovered = [], []
    try:
        bed.start()
        bed.wait(bed.linked, timeout=60, what="linked")
        m0 = bed.machines[0]
        postfixbed.shared_listener(bed.machines, ADDRESSES, port)
        members = [bed.machines[i] for i in ADDRESSES]
        for m in members:
            bed.wait(lambda m=m: target(m)["state"] == "applied", timeout=60, what="started")
        sampler = Sampler(live)
        for n in range(rounds):
            moved = free_port()
            sampler.bad, sampler.reached = f":{moved} inet", set()
            m0.edit(postfixbed.listener_edit(moved))
            bad = f"SER-000:{m0.status()['vv']['SER-000']}"
            bed.wait(lambda bad=bad: all(settled(target(m), bad) for m in members),
                     timeout=60, what="every member settled")  # fmt: skip
            time.sleep(0.5)  # (a late swap would be seen by now)
            reached.append(len(sampler.reached))
            started = time.monotonic()
            route = {"destinations": [{"host": "127.0.0.1", "port": 2000 + n}]}
            m0.edit(postfixbed.listener_edit(port),
                    {"do": "define", "feature": "smtproutes", "mode": "cluster",
                     "start": "empty"},
                    {"do": "set_row", "feature": "smtproutes", "mode": "cluster",
                     "row": "example.org", "value": route})  # fmt: skip
            good = f"SER-000:{m0.status()['vv']['SER-000']}"
            bed.wait(lambda good=good: all(target(m)["applied"] == good for m in members),
                     timeout=60, what="the good commit everywhere")  # fmt: skip
            recovered.append(time.monotonic() - started)
        sampler.done.set()
    finally:
        bed.stop()
        for path in live.values():
            postfixbed.stop(path)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "canary": canary,
        "rounds": rounds,
        "members_reached_mean": statistics.mean(reached),
        "members_reached_max": max(reached),
        "good_commit_everywhere_s_p50": round(statistics.median(recovered), 2),
        "good_commit_everywhere_s_max": round(max(recovered), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not postfixbed.available():
        print("needs Postfix and root; nothing measured")
        return 2
    found = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "runs": [run(args.rounds, canary) for canary in (True, False)],
    }
    if args.json:
        print(json.dumps(found, indent=1))
    else:
        for r in found["runs"]:
            print(f"canary {'on ' if r['canary'] else 'off'}: members reached by a breaking "
                  f"value: mean {r['members_reached_mean']:.2f}, max {r['members_reached_max']} "
                  f"of 3; good commit on all 3: p50 {r['good_commit_everywhere_s_p50']} s, "
                  f"max {r['good_commit_everywhere_s_max']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
