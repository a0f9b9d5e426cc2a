"""``commit confirmed``: the pending record a confirmed commit carries, and its undo.

Theory of operation
-------------------
A confirmed commit C writes, in the same commit, a row of the internal cluster-level
table ``confirm`` keyed ``ORIGIN:SEQ`` (C's id): the deadline, and what undoing C
needs, taken from memory when C is made (``record``): C's writes and the versions they
replace (C is newer than every version held, so today's winners are the versions
before it: ``rollback.known_before`` finds them all, no log read).  The row replicates
with C, so every member can undo C, even when C's origin is gone or its log truncated.

Any later commit of a person removes every row (it confirms); ``commit confirmed``
again writes the new deadline into every row (``extended``).  At the deadline a member
undoes every pending row in one commit (``undo``): each row's inverse
(``rollback.inverse``) over today's state, newest first, an older one's write winning
a unit (it holds the value from before them all); what the undone commits wrote is not
"changed since" (``ours``), what others wrote after is left alone.  Who acts when
(``acts_at``): C's origin at the deadline, the other members in serial order, half a
ping interval apart, each only if the rows are still there; two rollbacks at once
write the same values, so a duplicate is harmless.

Worked example: C1 (``SER-A:4``, hlc 100) sets settz UTC -> Asia/Tokyo, confirmed; its
row keeps ``before`` settz = UTC.  Member B then sets ``ldapconfig`` row q1 (hlc 120).
At the deadline ``undo`` writes settz UTC and the tombstone of row ``SER-A:4``; q1 is
not C1's and stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clusterd.core import rollback
from clusterd.core.errors import ClusterdError
from clusterd.core.state import State
from clusterd.core.versions import JSON, Commit, CommitId, Unit, Version, Write, writes_from_json
from clusterd.schema.feature import Catalogue
from clusterd.schema.history import MAX_UNDO

FEATURE = "confirm"
UNCONFIRMED = "not confirmed in"
PROBE_FAILED = "probe failed"
MODE = "cluster"
PROBES = ("links", "targets")  # what ``--probe`` watches (docs/history.md, 5)


def probe_word(word: str) -> str | None:
    """``--probe``'s word as kept in the row (``links``, ``targets`` or
    ``links,targets``), or None: not one."""
    parts = word.split(",")
    if len(set(parts)) != len(parts) or not set(parts) <= set(PROBES):
        return None
    return ",".join(p for p in PROBES if p in parts)


def probes(kept: str | None) -> frozenset[str]:
    """The probes of a row (``Pending.probe``)."""
    return frozenset(kept.split(",")) if kept else frozenset()


def unit(cid: CommitId) -> Unit:
    return Unit(FEATURE, MODE, f"{cid.origin}:{cid.seq}")


@dataclass(frozen=True, slots=True)
class Pending:
    """One pending confirmed commit, as its row says."""

    commit: Commit  # its id, stamp and writes (user and comment are not kept)
    deadline: float
    minutes: int
    user: str
    before: dict[Unit, Version | None]
    probe: str | None = None

    @property
    def key(self) -> str:
        return f"{self.commit.id.origin}:{self.commit.id.seq}"

    @property
    def features(self) -> frozenset[str]:
        """The features the commit wrote (internal ones aside)."""
        return frozenset(w.unit.feature for w in self.commit.writes)


@dataclass(frozen=True, slots=True)
class Asked:
    """What ``commit confirmed`` asks of the commit being made."""

    deadline: float  # wall seconds
    minutes: int
    # "links", "targets" or "links,targets": rolled back at once if a member loses a
    # link, or if a service target fails to apply the commit
    probe: str | None = None


class TooBig(ClusterdError):
    """Raised when a confirmed commit writes more than ``MAX_UNDO`` units."""


def record(state: State, catalogue: Catalogue, draft: Commit, asked: Asked) -> JSON:
    """The row of ``draft`` (the commit about to be made, without its row): its writes
    and the versions they replace, from ``state`` (just before it)."""
    writes = [w for w in draft.writes if not catalogue[w.unit.feature].internal]
    units = rollback.wanted(state, catalogue, draft)
    if len(writes) > MAX_UNDO or len(units) > MAX_UNDO:
        raise TooBig(f"a confirmed commit may change {MAX_UNDO} units at most (this one: "
                     f"{max(len(writes), len(units))}): commit it plainly")  # fmt: skip
    before, _later = rollback.known_before(state, draft, units)  # (none later: it is new)
    kept = [[*u, None if v is None else [v.hlc, v.origin, v.seq, v.value, v.with_reset]]
            for u, v in sorted(before.items())]  # fmt: skip
    return {
        "deadline": asked.deadline,
        "minutes": asked.minutes,
        "probe": asked.probe,
        "user": draft.user,
        "hlc": draft.hlc,
        "writes": [[*w.unit, w.value, w.with_reset] for w in writes],
        "before": kept,
    }


def pending(state: State) -> list[Pending]:
    """The pending confirmed commits, oldest first."""
    found = [parse(key, v.value) for key, v in state.entries(FEATURE, MODE).rows.items()
             if v.value is not None]  # fmt: skip
    return sorted(found, key=lambda p: (p.commit.hlc, p.commit.id.origin))


def parse(key: str, row: Any) -> Pending:
    """One row of ``confirm`` (key ``ORIGIN:SEQ``)."""
    origin, _, seq = key.rpartition(":")
    cid = CommitId(origin, int(seq))
    writes = writes_from_json(row["writes"])
    commit = Commit(cid, row["hlc"], row["user"], 0.0, "", {}, writes)
    before: dict[Unit, Version | None] = {}
    for f, m, k, v in row["before"]:
        before[Unit(f, m, k)] = None if v is None else Version(v[0], v[1], v[2], v[3], bool(v[4]))
    return Pending(commit, float(row["deadline"]), int(row["minutes"]), row["user"], before,
                   row.get("probe"))  # fmt: skip


def deadline(state: State) -> float | None:
    """The earliest pending deadline (wall seconds), or None: nothing to confirm."""
    return min((p.deadline for p in pending(state)), default=None)


def extended(state: State, deadline: float) -> list[tuple[Unit, JSON]]:
    """Every pending row with the new deadline (``commit confirmed`` again)."""
    rows = state.entries(FEATURE, MODE).rows
    return [(Unit(FEATURE, MODE, key), {**v.value, "deadline": deadline})
            for key, v in rows.items() if isinstance(v.value, dict)]  # fmt: skip


def confirmed(state: State) -> list[Unit]:
    """The units a confirming commit removes: every pending row."""
    return [unit(p.commit.id) for p in pending(state)]


@dataclass(frozen=True, slots=True)
class Undo:
    writes: tuple[Write, ...]  # the rollback's writes, the rows' tombstones last
    changed: tuple[rollback.Changed, ...]  # left alone: written since by others
    skipped: tuple[tuple[Unit, str], ...]


def undo(state: State, catalogue: Catalogue, rows: Iterable[Pending], keep: frozenset[str]) -> Undo:
    """One commit undoing every pending row: newest first, an older one's write winning
    a unit (it holds the value from before them all)."""
    rows = sorted(rows, key=lambda p: (p.commit.hlc, p.commit.id.origin), reverse=True)
    ours = frozenset(p.commit.id for p in rows)
    writes: dict[Unit, Write] = {}
    changed: dict[Unit, rollback.Changed] = {}
    skipped: list[tuple[Unit, str]] = []
    for p in rows:
        inv = rollback.inverse(state, catalogue, p.commit, p.before, keep=keep, ours=ours)
        for w in inv.writes:
            writes.pop(w.unit, None)  # (the older one's, in its own order)
            writes[w.unit] = w
        changed.update((c.unit, c) for c in inv.changed)
        skipped += [s for s in inv.skipped if s[0].feature != FEATURE]
    tombstones = [Write(unit(p.commit.id), None) for p in rows]
    return Undo((*writes.values(), *tombstones), tuple(changed.values()), tuple(skipped))


def comment(rows: list[Pending], probe: str | None = None) -> str:
    """The comment of the rollback at the deadline (``rows`` oldest first), or of one
    a probe failed (``probe`` says why)."""
    ids = ", ".join(p.key for p in rows)
    if probe is not None:
        return f"rollback of {ids}: {PROBE_FAILED}: {probe}"
    return f"rollback of {ids}: {UNCONFIRMED} {rows[-1].minutes} min"


def at_deadline(commit: Commit) -> bool:
    """Whether ``commit`` (made by clusterd) is a rollback at a deadline: an admin may
    roll that back in turn (``rollback``), unlike clusterd's other commits."""
    text = commit.comment
    return text.startswith("rollback of ") and (
        f": {UNCONFIRMED} " in text or f": {PROBE_FAILED}: " in text
    )


def acts_at(row: Pending, me: str, members: Iterable[str], ping: float) -> float:
    """When member ``me`` rolls ``row`` back if it is still there: its origin at the
    deadline, the others by serial, half a ping interval apart."""
    if me == row.commit.id.origin:
        return row.deadline
    others = sorted(set(members) - {row.commit.id.origin} | {me})
    return row.deadline + (others.index(me) + 1) * ping / 2
