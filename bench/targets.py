"""Commit on one member -> the other member's Postfix reloaded with the new route.

    .venv/bin/python bench/targets.py [--changes 50] [--settle 1.0] [--json]

Two members of a ``clusterd.dev.testbed``; m1 has a Postfix target (``clusterd.dev.
postfixbed``: render, ``clusterd postfix-check``, reload, SMTP probe) with the debounce
at its minimum (``wait = "0"``).  Each change sets the ``example.org`` route at cluster
level on m0 (through its control socket) to another port.  Measured from just before
the edit request, through the public interfaces only:

* **watch**: the change's line on m1's ``clusterd watch --feature smtproutes``;
* **reloaded**: the end of the reload command that carried it, from m1's ``status``
  (the target's ``last_run``: start + duration, wall clock);
* **applied**: ``status`` says the commit is applied (reloaded, ``settle``, probed).

Needs Postfix and root (Postfix's own user runs it); says so and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterd.dev import postfixbed
from clusterd.dev.testbed import Testbed, free_port


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Watch:
    """m1's ``clusterd watch``: the wall-clock arrival of each commit's line."""

    def __init__(self, data_dir: Path) -> None:
        argv = [sys.executable, "-m", "clusterd", "watch", "--data-dir", str(data_dir),
                "--feature", "smtproutes"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.seen: dict[str, float] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seen[json.loads(line)["commit"]] = time.time()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not postfixbed.available():
        print("bench/targets.py needs Postfix and root", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="clusterd-bench-targets-", dir="/tmp"))
    os.chmod(root, 0o755)
    port = free_port()
    sinks = [free_port(), free_port()]
    bed = Testbed(root / "bed", 2, ping=1.0)
    m0, m1 = bed.machines
    live = postfixbed.declare(m1, root / "postfix", port, wait="0", settle=args.settle)
    watch = None
    rows: list[dict[str, float]] = []
    try:
        bed.start()
        bed.wait(bed.linked, what="linked")
        postfixbed.listen(m1, port)
        m0.edit({"do": "define", "feature": "smtproutes", "mode": "cluster", "start": "empty"})
        bed.wait(lambda: m1.status()["targets"]["postfix"]["state"] == "applied", timeout=60)
        watch = Watch(m1.dir)
        time.sleep(1.0)
        for i in range(args.changes):
            value = {"destinations": [{"host": "127.0.0.1", "port": sinks[i % 2], "priority": 0}]}
            started = time.time()
            m0.edit({"do": "set_row", "feature": "smtproutes", "mode": "cluster",
                     "row": "example.org", "value": value})  # fmt: skip
            commit = f"SER-000:{m0.status()['vv']['SER-000']}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                t = m1.status()["targets"]["postfix"]
                if t["applied"] == commit:
                    break
                time.sleep(0.005)
            applied = time.time()
            run = t["last_run"]
            rows.append({"watch": watch.seen.get(commit, float("nan")) - started,
                         "reloaded": run["at"] + run["took"] - started,
                         "applied": applied - started})  # fmt: skip
            print(
                f"[{i + 1}/{args.changes}] {commit}: {rows[-1]} reload took {run['took']}",
                file=sys.stderr,
            )
    finally:
        if watch is not None:
            watch.stop()
        bed.stop()
        postfixbed.stop(live)
    report: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/targets.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "python": platform.python_version(),
        "changes": len(rows), "settle_s": args.settle,
    }  # fmt: skip
    print("commit on m0 -> m1's Postfix (ms)")
    print(f"  {'':<10} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for key in ("watch", "reloaded", "applied"):
        values = [r[key] * 1000 for r in rows if r[key] == r[key]]
        figures = {"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
                   "max": max(values), "mean": statistics.fmean(values)}  # fmt: skip
        report[key] = {k: round(v, 1) for k, v in figures.items()}
        print(f"  {key:<10} {figures['p50']:8.1f} {figures['p90']:8.1f} {figures['p99']:8.1f} "
              f"{figures['max']:8.1f}")  # fmt: skip
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
