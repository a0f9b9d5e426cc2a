"""A fork between two members' chains, narrowed down to its first commit; and the
``heads`` query that does it (``docs/history.md``, section 2).

When a peer's heads digest differs from ours at the same vector (``HeadsDiffer``), the
daemon asks it ``heads``: every origin's durable head, answered from memory.  An origin
whose heads sit at the same seq with different hashes is narrowed down: the peer gives
the hashes at up to 16 seqs of the range where they start to differ, we read ours in a
thread, and the range shrinks 17 times per answer until it names the first seq whose
hashes differ (1,000,000 commits: 5 answers).  Then ``Node.forked`` raises "fork".

One narrowing per peer at a time; a bad answer (the peer is not trusted) ends it with
a log line and changes nothing; a failed read of ours likewise.  The next digest that
differs starts it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from clusterd.core.errors import ClusterdError, StoreError
from clusterd.mesh import witness
from clusterd.mesh.peers import Answered
from clusterd.store.store import Store

log = logging.getLogger("clusterd.daemon")

Ask = Callable[[str, str, dict[str, Any]], Awaitable[Answered]]  # peer, kind, args
Found = Callable[[str, str, int, str], None]  # peer, origin, seq, text


def answer(store: Store, args: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``heads`` query from memory: ``{"heads": ...}``, or None when it asks the
    hashes of a range (``read``, in a thread).  ValueError for a malformed query."""
    if witness.parse_query(args) is not None:
        return None
    return {"heads": {o: [seq, h] for o, (seq, h) in store.heads.items()}}


def read(store: Store, args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``heads`` query for the hashes at some seqs of one origin: a disk read."""
    query = witness.parse_query(args)
    assert query is not None
    origin, seqs = query
    return {"hashes": {str(s): h for s, h in store.hashes(origin, seqs).items()}}


class Narrowing:
    def __init__(self, store: Store, ask: Ask, found: Found, name: Callable[[str], str]):
        self.store = store
        self.ask = ask
        self.found = found
        self.name = name
        self.running: dict[str, asyncio.Task[None]] = {}

    def start(self, peer: str) -> None:
        """Narrow ``peer``'s divergence down, unless that is under way already."""
        if peer in self.running:
            return
        task = asyncio.get_running_loop().create_task(self.run(peer))
        self.running[peer] = task
        task.add_done_callback(lambda _: self.running.pop(peer, None))

    async def run(self, peer: str) -> None:
        who = self.name(peer)
        try:
            theirs = witness.parse_heads(await self._ask(peer, {}))
            ours = dict(self.store.heads)
            for origin in witness.differing(ours, theirs):
                seq, mine, other = await self._first(peer, origin, ours[origin], theirs[origin])
                text = (f"{who} holds another history of {self.name(origin)}: commit "
                        f"{origin}:{seq} has hash {_short(other)} there and {_short(mine)} "
                        "here (found by comparing chain heads at equal version vectors): a "
                        "log was rewritten, or its origin sealed two histories (run "
                        "clustercheck)")  # fmt: skip
                self.found(peer, origin, seq, text)
        except ValueError as exc:
            log.warning("witnessing: %s gave a bad heads answer (%s); nothing concluded",
                        who, exc)  # fmt: skip
        except (ClusterdError, StoreError) as exc:
            log.warning("witnessing: could not compare chains with %s: %s", who, exc)

    async def _ask(self, peer: str, args: dict[str, Any]) -> Any:
        answered = await self.ask(peer, "heads", args)
        if not answered.ok:
            raise ClusterdError(f"heads query: {answered.body}")
        return answered.body

    async def _first(
        self, peer: str, origin: str, head: witness.Head, their_head: witness.Head
    ) -> tuple[int, str | None, str | None]:
        """The first seq of ``origin`` whose hashes differ (they differ at the heads,
        both at seq ``head[0]``), and the two hashes there."""
        lo, hi = 0, head[0]
        ours: dict[int, str | None] = {hi: head[1]}
        theirs: dict[int, str | None] = {hi: their_head[1]}
        while seqs := witness.checkpoints(lo, hi):
            answer = await self._ask(peer, {"origin": origin, "seqs": seqs})
            theirs.update(witness.parse_hashes(answer, seqs))
            ours.update(await asyncio.to_thread(self.store.hashes, origin, seqs))
            lo, hi = witness.narrow(lo, hi, seqs, ours, theirs)
        return hi, ours.get(hi), theirs.get(hi)


def _short(h: Any) -> str:
    return str(h)[:12] if h else "none"
