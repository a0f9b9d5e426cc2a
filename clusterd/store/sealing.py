"""Commits sealed and checked where they are written: the store's side of the chain.

``Chains`` keeps the head of every origin's chain as the database holds it (seq and
hash), and seals or checks a batch's commits against those heads inside the batch's
transaction, with the rows the transaction writes (``clusterd/core/chain.py``):

* a commit **made here** gets its seal: ``prev`` from the heads, the hash of its row,
  the signature of the ``Sealer`` (none without one: tools and tests);
* a commit **from a peer** keeps the seal it came with, and must verify: its row gives
  its hash, its ``prev`` is the head, its origin's key signed it.  Else ``BadCommit``:
  the transaction writes nothing and the store takes the batch back out of memory.

Only the thread that writes calls ``seal`` and ``advance`` (the store's writer thread,
or the owner's without one), in queue order, so the heads follow the database.  The
heads move once the transaction committed (``advance``); a failed batch leaves them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.engine import Connection

from clusterd.core import chain
from clusterd.core.errors import BadCommit
from clusterd.core.versions import Commit, CommitId, Seal
from clusterd.store import tables as t
from clusterd.store.bulk import Bulk
from clusterd.store.records import COMMIT_COLS

log = logging.getLogger(__name__)

Head = tuple[int, str | None]  # an origin's highest contiguous seq here, and its hash
# meta key: "1" when this store holds commits older than the chain: written by the
# migration from schema 1, or with a state that holds unsealed commits.  Without it, an
# unsealed commit is refused: in a cluster made with sealed commits, none is legitimate.
LEGACY = "legacy"


class Chains:
    def __init__(self, sealer: chain.Sealer | None) -> None:
        self.sealer = sealer
        self.heads: dict[str, Head] = {}
        self.legacy = False  # this store holds commits older than the chain (``LEGACY``)

    def load(self, conn: Connection, vv: Mapping[str, int]) -> None:
        """The heads of the chains at version vector ``vv``, read from the log, and
        whether unsealed commits may be here."""
        query = select(t.meta.c.value).where(t.meta.c.key == LEGACY)
        self.legacy = conn.execute(query).scalar_one_or_none() == "1"
        self.heads = self.read_heads(conn, {origin: (seq, None) for origin, seq in vv.items()})

    @staticmethod
    def read_heads(conn: Connection, at: Mapping[str, Head]) -> dict[str, Head]:
        """The heads at the seqs of ``at`` (origin -> (seq, anything)), with their hashes
        read from the log."""
        c = t.commits.c
        heads: dict[str, Head] = {}
        for origin, (seq, _) in at.items():
            found = conn.execute(select(c.hash).where(c.origin == origin, c.seq == seq))
            heads[origin] = (seq, found.scalar_one_or_none())
        return heads

    def seal(
        self,
        conn: Connection,
        commits: list[Commit],
        rows: list[tuple[Any, ...]],
        local: bool,
        keys: Mapping[str, str],
    ) -> tuple[list[tuple[Any, ...]], list[Commit], dict[str, Head]]:
        """The batch's rows with their seals, its commits sealed, and the heads once it
        is written; ``BadCommit`` names a peer's commit that does not verify."""
        heads: dict[str, Head] = {}
        out_rows, out = [], []
        for commit, row in zip(commits, rows, strict=True):
            origin, seq = commit.id.origin, commit.id.seq
            expected = self._expected(conn, origin, seq, heads)
            if local:
                seal = self._made_here(chain.Row(*row), commit, expected)
                row = (*row[:8], seal.prev, seal.hash, seal.sig)
                commit = dataclasses.replace(commit, seal=seal)
            else:
                verdict = chain.verify(chain.Row(*row), commit.context, expected,
                                       keys.get(origin), self.sealer, self.legacy)  # fmt: skip
                if not verdict.ok:
                    raise BadCommit([f"commit {commit.id} does not verify: {verdict.broken}: "
                                     f"{verdict.why}"])  # fmt: skip
            heads[origin] = (seq, row[9])
            out_rows.append(row)
            out.append(commit)
        return out_rows, out, heads

    def advance(self, heads: Mapping[str, Head]) -> None:
        """A batch's transaction committed: its heads are the database's now."""
        for origin, head in heads.items():
            if head[0] > self.heads.get(origin, (0, None))[0]:
                self.heads[origin] = head

    def _expected(self, conn: Connection, origin: str, seq: int, batch: dict[str, Head]) -> Any:
        if seq == 1:
            return None
        head = batch.get(origin) or self.heads.get(origin)
        if head is not None and head[0] == seq - 1:
            return head[1]
        c = t.commits.c  # (after a state transfer, say: the heads are only a cache)
        found = conn.execute(select(c.hash).where(c.origin == origin, c.seq == seq - 1)).all()
        return found[0][0] if found else chain.UNKNOWN

    def _made_here(self, row: chain.Row, commit: Commit, expected: Any) -> Seal:
        if expected is chain.UNKNOWN:  # our own previous commit is not in our log
            log.warning("commit %s: commit %d of this origin is not in the log; sealed "
                        "without prev", commit.id, commit.id.seq - 1)  # fmt: skip
            expected = None
        assert row.writes is not None  # (a commit made here is never truncated)
        digest = chain.commit_hash(row.origin, row.seq, row.hlc, row.user, row.at, row.comment,
                                   commit.context, expected, row.writes)  # fmt: skip
        sig = None if self.sealer is None else self.sealer.sign(bytes.fromhex(digest))
        return Seal(expected, digest, sig)


def mark_legacy(conn: Connection) -> None:
    """Record that this store holds commits older than the chain."""
    conn.execute(delete(t.meta).where(t.meta.c.key == LEGACY))
    conn.execute(insert(t.meta).values(key=LEGACY, value="1"))


def read_rows(bulk: Bulk, conn: Connection) -> list[chain.Row]:
    """The whole log as stored, in (origin, seq) order."""
    rows = [chain.Row(*r) for r in bulk.select(conn, t.commits, COMMIT_COLS)]
    rows.sort(key=lambda r: (r.origin, r.seq))
    return rows


def verdicts(
    conn: Connection,
    ids: Iterable[CommitId],
    keys: Mapping[str, str],
    sealer: chain.Sealer | None,
    legacy: bool,
) -> dict[CommitId, chain.Verdict]:
    """What each commit's row says about its seal, for people: a few commits (the
    history's), each checked with the row of its origin's previous commit."""
    wanted = {(i.origin, i.seq) for i in ids}
    wanted |= {(o, s - 1) for o, s in wanted if s > 1}
    if not wanted:
        return {}
    c = t.commits.c
    query = select(*(c[n] for n in COMMIT_COLS)).where(
        or_(*[and_(c.origin == o, c.seq == s) for o, s in sorted(wanted)])
    )
    rows = {(r.origin, r.seq): r for r in (chain.Row(*x) for x in conn.execute(query))}
    found = {}
    for i in ids:
        row = rows.get((i.origin, i.seq))
        if row is not None:
            expected = chain.expected_prev(row.seq, rows.get((row.origin, row.seq - 1)))
            found[i] = chain.verify(row, json.loads(row.context), expected,
                                    keys.get(row.origin), sealer, legacy)  # fmt: skip
    return found
