"""Taking and giving state transfers without holding the links' loop.

A state transfer (a peer's whole state, when its log no longer holds what we lack) is
merged unit by unit (``clusterd.core.merge.merged_unit``).  At 100,000 entries that
merge, and rewriting the database after it, took seconds; done on the links' loop it
stopped every link and timer for that long.  Now:

1. On the loop, ``Store.watch`` copies memory (dicts only: 2–4 ms at 100,000
   entries) and starts noting the units that batches change from then on.
2. In a thread, ``prepare`` builds the peer's state and computes which units the merge
   changes, against the copy (``clusterd.core.merge.transfer_changes``).
3. On the loop, ``Store.take_transfer`` redoes the merge for the units that changed
   since the copy (few), applies the changes to memory, and queues them to the writer
   like any batch: entries and losses as batches write them, and the transfer's commits
   the log lacks (``write_log``), after every batch queued before it.

A failed write takes the transfer back out of memory as it does any batch; peers offer
it again.  Giving a transfer is the same in reverse: memory copied on the loop, the
log read by the writer (after every queued batch, up to the copy's vector).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Connection

from clusterd.core.merge import UnitChange, transfer_changes
from clusterd.core.state import State
from clusterd.core.versions import Commit, CommitId, Snapshot, Unit
from clusterd.store import tables as t
from clusterd.store.bulk import Bulk
from clusterd.store.records import COMMIT_COLS, JsonCache, commit_row


@dataclass
class Watch:
    """Memory as it was when a transfer's merge began (``copy``; ``generation``: the
    store's at the time), and the units batches have changed since."""

    copy: State
    generation: int
    touched: set[Unit] = field(default_factory=set)


@dataclass
class Prepared:
    """A transfer's state, and what merging it into the watched copy changes."""

    theirs: State
    changes: dict[Unit, UnitChange]
    watch: Watch


def prepare(snapshot: Snapshot, watch: Watch) -> Prepared:
    """CPU only, reading the copy: from a thread."""
    theirs = State.from_snapshot(snapshot)
    return Prepared(theirs, transfer_changes(watch.copy, theirs), watch)


def write_log(
    conn: Connection, bulk: Bulk, commits: Sequence[Commit]
) -> tuple[list[CommitId], bool]:
    """Write the transfer's commits that the log lacks, or holds truncated (a full
    record replaces a header); a commit held here sealed with another hash is a fork:
    ours is kept.  Returns the forks, and whether an unsealed commit was written."""
    c = t.commits.c
    query = select(c.origin, c.seq, c.hash, c.writes.is_(None))
    held: dict[tuple[str, int], tuple[str | None, bool]] = {
        (origin, seq): (digest, truncated) for origin, seq, digest, truncated in conn.execute(query)
    }
    forks, replaced, rows = [], [], []
    encoded = JsonCache()
    unsealed = False
    for commit in commits:
        ours = held.get((commit.id.origin, commit.id.seq))
        if ours is not None:
            digest, truncated = ours
            if digest is not None and commit.seal is not None and digest != commit.seal.hash:
                forks.append(commit.id)
                continue
            if not truncated or commit.truncated:
                continue  # held already, as whole as theirs
            replaced.append((commit.id.origin, commit.id.seq))
        rows.append(commit_row(commit, encoded))
        unsealed = unsealed or commit.seal is None
    bulk.delete(conn, t.commits, COMMIT_COLS[:2], replaced)
    bulk.insert(conn, t.commits, COMMIT_COLS, rows)
    return forks, unsealed


def log_upto(commits: Sequence[Commit], vv: Mapping[str, int]) -> tuple[Commit, ...]:
    """The commits of a log that a state at ``vv`` holds (a copy of memory taken before
    later batches were written)."""
    return tuple(c for c in commits if c.id.seq <= vv.get(c.id.origin, 0))


def snapshot_of(image: State, commits: Sequence[Commit]) -> Snapshot:
    return Snapshot(log_upto(commits, image.vv), tuple(image.units()), tuple(image.losses()))
