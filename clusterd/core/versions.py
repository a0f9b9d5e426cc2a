"""The values the store replicates: units, versions, commits.

A **unit** is the smallest thing last-writer order decides about:
``(feature, mode, key)``.  ``key`` is a row name for a table row, or ``MARKER`` (the
empty string, never a row name) for the per-(feature, mode) marker.  The marker says
whether the mode defines the feature; for a record feature it carries the record
itself, for a table feature ``{}``.  A marker ``value`` of ``None`` means "not defined
here"; a row ``value`` of ``None`` is a deleted row (a tombstone).  Deletions are
versions like any other, so they replicate.

A **commit** is what one ``commit`` (or one remote apply) makes visible at once: an id
``(origin, seq)``, one hybrid-logical stamp shared by all its writes, who, when, the
comment, and its *context*: the writer's version vector when it committed, i.e. every
commit it had seen.  The context is what tells a knowing overwrite from a conflict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from clusterd.core.clock import Stamp

JSON = dict[str, Any]
MARKER = ""
VersionVector = Mapping[str, int]


class Unit(NamedTuple):
    feature: str
    mode: str
    key: str

    @property
    def is_marker(self) -> bool:
        return self.key == MARKER

    def __str__(self) -> str:
        return f"{self.feature}@{self.mode}" + (f"[{self.key}]" if self.key else "")


@dataclass(frozen=True, slots=True, order=True)
class CommitId:
    origin: str
    seq: int

    def __str__(self) -> str:
        return f"{self.origin}:{self.seq}"


def has_seen(context: VersionVector, commit: CommitId) -> bool:
    """True when a writer whose version vector is ``context`` had applied ``commit``."""
    return context.get(commit.origin, 0) >= commit.seq


@dataclass(frozen=True, slots=True)
class Version:
    """One unit's value as written by one commit."""

    hlc: int
    origin: str
    seq: int
    value: JSON | None
    with_reset: bool = False  # a row written by the same commit as its mode's marker
    context: VersionVector = field(default_factory=dict, compare=False, repr=False)

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.hlc, self.origin)

    @property
    def commit(self) -> CommitId:
        return CommitId(self.origin, self.seq)


@dataclass(frozen=True, slots=True)
class Write:
    unit: Unit
    value: JSON | None
    with_reset: bool = False


@dataclass(frozen=True, slots=True)
class Seal:
    """What makes a commit part of its origin's chain (``clusterd.core.chain``): the
    hash of the origin's previous commit, this commit's hash, the origin's signature."""

    prev: str | None  # None: the origin's first commit, or one after a legacy commit
    hash: str  # sha256, hex
    sig: str | None = None  # Ed25519 by the origin's machine key, hex; None: unsigned


@dataclass(frozen=True, slots=True)
class Commit:
    id: CommitId
    hlc: int
    user: str
    at: float  # wall-clock seconds of the origin, for people; ordering uses hlc
    comment: str
    context: VersionVector
    writes: tuple[Write, ...]
    truncated: bool = False  # the log dropped the writes; only the header is kept
    # None: not sealed yet (made here, not written yet) or a legacy commit (schema 1).
    # Not compared: a commit is the same commit before and after its seal.
    seal: Seal | None = field(default=None, compare=False)

    def version(self, write: Write) -> Version:
        return Version(
            self.hlc, self.id.origin, self.id.seq, write.value, write.with_reset, self.context
        )


def writes_from_json(data: list[list[Any]]) -> tuple[Write, ...]:
    found = []
    for f, m, k, v, r in data:
        if not (isinstance(f, str) and isinstance(m, str) and isinstance(k, str)):
            raise ValueError(f"a write names its unit with strings, not {[f, m, k]!r}")
        found.append(Write(Unit(f, m, k), v, bool(r)))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Loss:
    """A version superseded by a writer that had not seen it: an inconsistency."""

    unit: Unit
    loser: Version
    by: CommitId


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole store's replicated state: what a state transfer carries."""

    commits: tuple[Commit, ...]
    entries: tuple[tuple[Unit, Version], ...]
    losses: tuple[Loss, ...]

    def version_vector(self) -> dict[str, int]:
        vv: dict[str, int] = {}
        for c in self.commits:
            vv[c.id.origin] = max(vv.get(c.id.origin, 0), c.id.seq)
        return vv
