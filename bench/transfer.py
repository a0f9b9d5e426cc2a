"""A state transfer on real daemons: how long the loops of the members that serve it
and of the member that takes it stop answering.

    .venv/bin/python bench/transfer.py [--rows 100000] [--ping 0.5]

Three members on loopback (``clusterd.dev.testbed``).  Member 0 defines the cluster's
``unsubscribe`` table with ``--rows`` rows; all converge.  Member 2 disconnects, member
0 commits one more row, and members 0 and 1 truncate their logs, so that member 2 can
only catch up by a state transfer.  Then member 2 reconnects.  Meanwhile a thread per
member asks its control socket for a small feature every 20 ms: the answer comes from
the links' loop, so its slowest round trip is how long that loop stopped.  Printed per
member: the slowest round trip and the links seen down; and the time from reconnect to
member 2's vector holding member 0's (polled every 100 ms).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterd.core.errors import ClusterdError
from clusterd.dev.testbed import Machine, Testbed

SMALL = {"op": "get", "feature": "smtproutes", "mode": "cluster"}


class LoopWatch:
    """Asks ``m`` for a small feature every 20 ms, in a thread: the slowest answer."""

    def __init__(self, m: Machine) -> None:
        self.m, self.slowest, self.answers, self.down = m, 0.0, 0, set[str]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.m.ask(SMALL)
            except (OSError, ValueError, ClusterdError):
                self.slowest = float("inf")
                return
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.answers += 1
            time.sleep(0.02)

    def peers_down(self) -> None:
        status = self.m.status()
        self.down |= {p["hostname"] for p in status["peers"] if p["state"] != "up"}


def caught_up(vv: dict[str, int], target: dict[str, int]) -> bool:
    return all(vv.get(origin, 0) >= seq for origin, seq in target.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--ping", type=float, default=0.5)
    args = parser.parse_args(argv)
    print(f"{platform.node()} Python {platform.python_version()} "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp), 3, ping=args.ping) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        rows = [{"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"}]
        rows += [
            {"do": "set_row", "feature": "unsubscribe", "mode": "cluster",
             "row": f"user{i}@example.com", "value": {}}
            for i in range(args.rows)
        ]  # fmt: skip
        bed[0].edit(*rows)
        bed.wait(bed.converged, timeout=300, what="the rows everywhere")
        bed[2].op("disconnect")
        bed[0].edit({"do": "set_row", "feature": "unsubscribe", "mode": "cluster",
                     "row": "late@example.com", "value": {}})  # fmt: skip
        for m in bed.machines[:2]:
            m.op("truncate", keep=0)
        time.sleep(3 * args.ping)
        watches = [LoopWatch(m) for m in bed.machines]
        for w in watches:
            w.thread.start()
        time.sleep(0.5)
        target = bed[0].status()["vv"]
        started = time.perf_counter()
        bed[2].op("reconnect")
        while not caught_up(bed[2].status()["vv"], target):  # (one walk per new vector)
            time.sleep(0.1)
        took = time.perf_counter() - started
        time.sleep(3 * args.ping)
        for w in watches:
            w.stop.set()
            w.thread.join(10)
            w.peers_down()
        bed.wait(bed.converged, timeout=300, what="the same digest everywhere")
        log = (bed[2].dir / "clusterd.log").read_text()
        transfers = len(re.findall(r"state transfer from \S+: \d+ commits", log))
    print(f"{args.rows:,} rows, ping {args.ping} s; reconnect -> caught up {took:.2f} s; "
          f"member 2 took {transfers} state transfer(s)")  # fmt: skip
    for i, w in enumerate(watches):
        role = "takes the transfer" if i == 2 else "serves it"
        print(
            f"  member {i} ({role}): slowest loop answer {w.slowest * 1000:8.1f} ms "
            f"({w.answers} answers); links seen down after: {sorted(w.down) or 'none'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
