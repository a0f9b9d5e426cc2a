"""Dead-peer detection on real daemons at a 1 s ping interval.

    .venv/bin/python bench/failover.py [--rounds 5] [--ping 1.0]

Three members, linked.  Each round takes member 2 away in one of two ways and times,
from that moment, until both other members' ``status`` no longer shows it "up":

* ``kill -9``: the process dies, the kernel closes its sockets (a reset the others see
  at once);
* ``SIGSTOP``: the process freezes with its sockets open (a silent peer: only missing
  pongs tell), then ``SIGCONT`` and the round waits for the links to come back.

Status is polled every 20 ms; figures are wall-clock.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clusterd.dev.testbed import Machine, Testbed


def _gone(watchers: list[Machine], hostname: str) -> bool:
    for m in watchers:
        peer = next(p for p in m.status()["peers"] if p["hostname"] == hostname)
        if peer["state"] == "up":
            return False
    return True


def _time_until_gone(watchers: list[Machine], hostname: str, limit: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if _gone(watchers, hostname):
            return time.monotonic() - started
        time.sleep(0.02)
    raise SystemExit(f"{hostname} still up after {limit} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ping", type=float, default=1.0)
    args = parser.parse_args(argv)
    killed, frozen = [], []
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp), 3, ping=args.ping) as bed:
        bed.start()
        a, b, c = bed.machines
        for _ in range(args.rounds):
            bed.wait(bed.linked, timeout=60, what="linked")
            assert c.proc is not None
            c.proc.kill()
            killed.append(_time_until_gone([a, b], c.hostname))
            c.proc.wait()
            c.start()
            bed.wait(bed.linked, timeout=60, what="relinked after kill")
            os.kill(c.proc.pid, signal.SIGSTOP)
            try:
                frozen.append(_time_until_gone([a, b], c.hostname))
            finally:
                os.kill(c.proc.pid, signal.SIGCONT)
    print(f"dead peer detected by both other members, ping interval {args.ping} s:")
    for name, values in (("kill -9", killed), ("SIGSTOP", frozen)):
        print(f"  {name:<8} median {statistics.median(values):6.2f} s   "
              f"max {max(values):6.2f} s   (n={len(values)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
