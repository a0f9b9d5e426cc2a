"""Join benchmark on real daemons: how long a join takes, and until the joiner is linked.

    .venv/bin/python bench/join.py [--members 3] [--joins 5] [--rows 0]

A cluster of ``--members`` daemons is built through the operations (create on the
first, joins over SSH with the admin passphrase), holding ``--rows`` rows of the
cluster-wide ``unsubscribe`` table.  Then ``--joins`` more standalone machines join,
one at a time, through member 0.  Per join:

* ``dry run``: the ``join`` op with ``dry_run`` (probe, SSH login with the passphrase,
  the member's check) from request to answer;
* ``join``: the real ``join`` op from request to answer (a second login, the member's
  commit, the state transfer, the joiner's install and commit);
* ``linked``: from the join's answer until every member reports the joiner "up" and
  the joiner reports all of them "up" (dials to members that learn of it by
  replication, with back-off, ping interval 0.5 s).

Figures are wall-clock milliseconds on loopback; the passphrase check is scrypt
(n = 2^14) on the member, inside both logins.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clusterd.dev.testbed import Testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--rows", type=int, default=0)
    args = parser.parse_args(argv)
    total = args.members + args.joins
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp), total, seed=False) as bed:
        bed.start()
        first, *rest = bed.machines
        first.op("create", name="bench")
        if args.rows:
            rows = [{"do": "define", "feature": "unsubscribe", "mode": "cluster",
                     "start": "empty"}] + [
                {"do": "set_row", "feature": "unsubscribe", "mode": "cluster",
                 "row": f"user{i}@example.com", "value": {}} for i in range(args.rows)
            ]  # fmt: skip
            first.edit(*rows)
        for m in rest[: args.members - 1]:
            m.join(first)
        members = bed.machines[: args.members]
        bed.wait(lambda: bed.linked(members), timeout=60, what="initial cluster linked")
        dry, real, linked = [], [], []
        for joiner in rest[args.members - 1 :]:
            t0 = time.perf_counter()
            joiner.join(first, dry_run=True)
            t1 = time.perf_counter()
            joiner.join(first)
            t2 = time.perf_counter()
            members = group = [*members, joiner]
            bed.wait(lambda g=group: bed.linked(g), timeout=60, what="joiner linked")
            t3 = time.perf_counter()
            dry.append((t1 - t0) * 1000)
            real.append((t2 - t1) * 1000)
            linked.append((t3 - t2) * 1000)
            into = len(members) - 1
            took = f"dry run {dry[-1]:.0f} ms, join {real[-1]:.0f} ms, linked {linked[-1]:.0f} ms"
            print(f"join {joiner.hostname} into {into}: {took}", file=sys.stderr)
    print(f"joins into {args.members}..{total - 1} members, {args.rows} rows of state:")
    for name, values in (("dry run", dry), ("join", real), ("linked after", linked)):
        print(
            f"  {name:<13} median {statistics.median(values):7.0f} ms   "
            f"max {max(values):7.0f} ms   (n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
