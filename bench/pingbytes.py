"""What the chain heads' digest (``hd``) and the state root (``sd``) add to pings.

    .venv/bin/python bench/pingbytes.py [--sizes 20,100] [--rounds 1000] [--json]

Frames are made by the real encoder (``clusterd.mesh.messages.encode``, 4-byte header
included; SSH's overhead not) for a cluster of N members whose serials and sequence
numbers look like a testbed's, then a link is driven by the real sending rules
(``protocol._changes``, ``witness.attach``, ``statedigest.StateDigests``) for
``--rounds`` idle rounds and for rounds each after a commit.  Printed per size:

* the frame sizes of an idle ping, of one with ``hd``, ``sd``, both, and a full round's;
* bytes per ping, averaged over the idle rounds, without the digests and with them;
* the same over rounds that each follow a commit (vector changed, then heads and root).

Measured on the real daemons, the totals per ping round are in ``bench/scale.py``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
from typing import Any

from clusterd.mesh import witness
from clusterd.mesh.messages import Ping, encode
from clusterd.mesh.peers import Link, LinkState
from clusterd.mesh.protocol import FULL_EVERY, _changes
from clusterd.mesh.statedigest import StateDigests


def _digest() -> str:
    return base64.urlsafe_b64encode(os.urandom(8)).rstrip(b"=").decode()


def _cluster(n: int) -> tuple[dict[str, int], tuple[str, ...]]:
    vv = {f"{i:04X}-{i * 7919 % 65536:04X}-{i * 104729 % 65536:04X}": 10 + i for i in range(n)}
    return vv, tuple(sorted(vv)[1:])


def sizes(n: int) -> dict[str, int]:
    vv, links = _cluster(n)
    hd, sd = _digest(), _digest()

    def size(**kw: Any) -> int:
        return len(encode(Ping.model_construct(seq=123, **kw)))

    return {
        "idle": size(),
        "hd": size(hd=hd),
        "sd": size(sd=sd),
        "hd_sd": size(hd=hd, sd=sd),
        "vv": size(vv=vv),
        "full": size(vv=vv, links=links),
        "full_hd_sd": size(vv=vv, links=links, hd=hd, sd=sd),
    }


def rounds(n: int, count: int, *, commit_every: int | None, digests: bool) -> float:
    """Mean bytes per ping on one link over ``count`` rounds; a commit before one round
    in ``commit_every``, never a full one (its vector goes at once; its heads and root,
    durable a few ms later, on the next round)."""
    vv, links = _cluster(n)
    origin = next(iter(vv))
    link = Link(1, "peer", True, LinkState.UP, 0.0, 0.0)
    sd_state = StateDigests()
    heads = {o: (s, "ab" * 32) for o, s in vv.items()}
    root = _digest()
    durable = dict(vv)
    sent: list[int] = []
    for seq in range(1, count + 1):
        if commit_every and seq % commit_every == commit_every // 2:  # (off full rounds)
            vv[origin] += 1  # a commit: in memory now, durable after this round
        full = seq % FULL_EVERY == 0
        vv_, links_ = _changes(link, dict(vv), links, full=full)
        hd = sd = None
        if digests:
            ours = witness.summary(heads, vv) if durable == vv else None
            hd, vv_, link.sent_hd = witness.attach(link.sent_hd, ours, vv, vv_, full=full)
            sd = sd_state.to_send("peer", 1, root if durable == vv else None, full=full)
        sent.append(len(encode(Ping.model_construct(seq=seq, vv=vv_, links=links_, hd=hd, sd=sd))))
        if durable != vv:  # the batch is written: heads and root move
            durable = dict(vv)
            heads[origin] = (vv[origin], os.urandom(32).hex())
            root = _digest()
    return statistics.fmean(sent)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="20,100")
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out: dict[str, Any] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        row: dict[str, Any] = {"frames": sizes(n)}
        for name, every in (("idle", None), ("a_commit_every_round", 1), ("a_commit_every_10", 10)):
            without = rounds(n, args.rounds, commit_every=every, digests=False)
            with_ = rounds(n, args.rounds, commit_every=every, digests=True)
            row[name] = {"without": round(without, 1), "with": round(with_, 1),
                         "extra": round(with_ - without, 1)}  # fmt: skip
        out[str(n)] = row
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for n, row in out.items():
        f = row["frames"]
        print(f"{n} members: frames (bytes, framed): idle ping {f['idle']}, with hd "
              f"{f['hd']}, with sd {f['sd']}, with both {f['hd_sd']}; the vector alone "
              f"{f['vv']}, a full round {f['full']} ({f['full_hd_sd']} with both)")  # fmt: skip
        for name in ("idle", "a_commit_every_10", "a_commit_every_round"):
            r = row[name]
            print(f"   {name.replace('_', ' ')}: {r['without']} bytes per ping without the "
                  f"digests, {r['with']} with them: {r['extra']:+} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
