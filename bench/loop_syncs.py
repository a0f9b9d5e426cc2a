"""Disk syncs on the links' loop: how many, how long, and which files, on running daemons.

    .venv/bin/python bench/loop_syncs.py [--commits 300] [--rows 20]

Two daemons on loopback (``clusterd.dev.testbed``); strace (``-f -T -y``) follows both
while the first commits ``--commits`` changes of ``--rows`` rows each and the second
applies them.  For each member, the syncs (fsync, fdatasync) made by the main thread
(the event loop that carries links and timers) and by other threads: count, total and
slowest, per file.  A sync on the loop is time during which no ping is answered.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterd.dev.testbed import Machine, Testbed

LINE = re.compile(r"^(\d+)\s+(?:fsync|fdatasync)\(\d+<([^>]*)>\)\s+=\s+\S+\s+<([\d.]+)>")


def trace(m: Machine, out: Path) -> subprocess.Popen[bytes]:
    assert m.proc is not None
    command = ["strace", "-f", "-qq", "-T", "-y", "-e", "trace=fsync,fdatasync", "-o", str(out)]
    return subprocess.Popen([*command, "-p", str(m.proc.pid)], stderr=subprocess.DEVNULL)


def report(name: str, pid: int, out: Path) -> None:
    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in out.read_text().splitlines():
        match = LINE.match(line)
        if match:
            where = "loop" if int(match[1]) == pid else "thread"
            file = re.sub(r"^\.(\w+)\.\w+\.tmp$", r".\1.*.tmp", Path(match[2]).name)
            seen[(where, file)].append(float(match[3]) * 1000)
    print(f"{name}:")
    if not seen:
        print("  no syncs")
    for (where, file), times in sorted(seen.items()):
        print(f"  {where:6} {file:24} {len(times):4} syncs, total {sum(times):7.2f} ms, "
              f"slowest {max(times):6.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    print(f"{platform.node()} {platform.python_version()} {time.strftime('%Y-%m-%d %H:%M %Z')}")
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp), 2, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        a.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        outs = [Path(tmp) / f"{m.hostname}.strace" for m in (a, b)]
        tracers = [trace(m, out) for m, out in zip((a, b), outs, strict=True)]
        time.sleep(1.0)
        started = time.monotonic()
        for i in range(args.commits):
            a.edit(*[{"do": "set_row", "feature": "unsubscribe", "mode": "cluster",
                      "row": f"r{i}-{j}@disk.example", "value": {"comment": "x" * 200}}
                     for j in range(args.rows)])  # fmt: skip
        bed.wait(bed.converged, what="converged", timeout=120)
        took = time.monotonic() - started
        time.sleep(2.5)
        for tracer in tracers:
            tracer.terminate()
            tracer.wait(10)
        print(f"{args.commits} commits of {args.rows} rows in {took:.1f} s (under strace)")
        for m, out in zip((a, b), outs, strict=True):
            assert m.proc is not None
            report(f"{m.hostname} ({'commits' if m is a else 'applies'})", m.proc.pid, out)


if __name__ == "__main__":
    main()
