"""What the sync states cost on the links' loop (``clusterd.node.syncstate``).

    .venv/bin/python bench/syncstate.py [--members 100] [--commits 10000]

``status``, ``connstatus`` and the web page's events compute every member's sync state
on the node's loop.  This times, in one process, with ``--members`` members each the
origin of ``--commits`` commits that ``Recent`` keeps (one or two features each):

* recording a batch of commits as it becomes durable (per commit; and one commit of
  100,000 writes, a large ``loadconfig``);
* the states of every member when each lacks a different stretch of every origin's
  commits (the worst case: every per-feature count is done, none shared), the same
  without the per-feature counts (what is polled often), and when all are in sync.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterd.core.versions import Commit, CommitId, Unit, Write
from clusterd.mesh.peers import Peer
from clusterd.node.syncstate import Recent, sync_state
from clusterd.schema.catalogue import CATALOGUE

FEATURES = [f.command for f in CATALOGUE if not f.internal]


def commit(origin: str, seq: int, features: list[str], rows: int = 1) -> Commit:
    writes = tuple(Write(Unit(f, "cluster", f"r{i}"), {"v": i}) for f in features
                   for i in range(rows))  # fmt: skip
    return Commit(CommitId(origin, seq), seq, "admin", 0.0, "", {}, writes)


def timed(work: object, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--commits", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(1)
    origins = [f"SER-{i:03d}" for i in range(args.members)]
    batch = [commit(o, s, rng.sample(FEATURES, rng.choice((1, 2))))
             for s in range(1, args.commits + 1) for o in origins]  # fmt: skip
    recent = Recent()
    start = time.perf_counter()
    recent.record(batch)
    took = time.perf_counter() - start
    print(f"{platform.python_version()}, {args.members} members x {args.commits:,} commits")
    print(f"record: {took / len(batch) * 1e6:.2f} us per commit ({len(batch):,} commits)")
    big = commit("SER-BIG", 1, FEATURES[:4], rows=25_000)
    print(f"record one commit of {len(big.writes):,} writes: "
          f"{timed(lambda: Recent().record([big])) * 1000:.1f} ms")  # fmt: skip
    ours = dict.fromkeys(origins, args.commits)
    lagging = [Peer(o, o, state="up", vv={x: rng.randrange(args.commits) for x in origins})
               for o in origins[1:]]  # fmt: skip
    synced = [Peer(o, o, state="up", vv=dict(ours)) for o in origins[1:]]
    fresh = iter(range(1, 1_000_000))

    def states(peers: list[Peer], counted: Recent | None, cold: bool) -> None:
        if cold:  # a commit recorded since the last call: every stretch counted again
            recent.add("SER-NEW", next(fresh), ["settz"])
        for p in peers:
            sync_state(p, ours, recent=counted)

    for name, peers, counted, cold in (
        ("every member lacks some of every origin's", lagging, recent, True),
        ("the same, asked again (nothing recorded since)", lagging, recent, False),
        ("the same, features not counted (progress, web events)", lagging, None, True),
        ("every member lacks the same commits", [Peer(o, o, state="up", vv=dict(
            lagging[0].vv)) for o in origins[1:]], recent, True),
        ("every member in sync", synced, recent, True),
    ):  # fmt: skip
        best = timed(lambda p=peers, r=counted, c=cold: states(p, r, c))
        print(f"all {len(peers)} states, {name}: {best * 1000:.2f} ms")


if __name__ == "__main__":
    main()
