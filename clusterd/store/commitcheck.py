"""Validating a commit that came from a peer before anything of it is applied."""

from __future__ import annotations

from typing import Any

from clusterd.core.clock import PENDING_HLC
from clusterd.core.errors import BadCommit, InvalidSetting
from clusterd.core.modes import Mode
from clusterd.core.state import ModeEntries
from clusterd.core.versions import JSON, MARKER, Commit, Snapshot, Write
from clusterd.schema.feature import Catalogue, Feature

# A commit's clock may run ahead of ours (skewed clocks), but not to the end of time:
# past this, the clock could never move again (PENDING_HLC marks pending writes).
MAX_HLC = PENDING_HLC - (1 << 40)
MAX_SEQ = 1 << 62


def check_commit(catalogue: Catalogue, commit: Commit, own_mode: str | None = None) -> Commit:
    """The commit with every value in canonical form; raises BadCommit if any part is bad.

    A value may only be defined at a level its feature allows, except at ``own_mode``:
    a standalone machine keeps every feature at its own machine mode.  Tombstones
    (``None``) may stand anywhere: they define nothing.
    """
    where = f"commit {commit.id}"
    if not commit.id.origin or commit.id.seq < 1:
        raise BadCommit([f"{where}: bad commit id"])
    if commit.hlc <= 0 or commit.hlc >= MAX_HLC:
        raise BadCommit([f"{where}: bad timestamp {commit.hlc}"])
    if commit.id.seq >= MAX_SEQ:
        raise BadCommit([f"{where}: bad sequence number"])
    if any(not isinstance(s, int) or s < 0 or s >= MAX_SEQ for s in commit.context.values()):
        raise BadCommit([f"{where}: bad context"])
    if commit.context.get(commit.id.origin, 0) != commit.id.seq - 1:
        raise BadCommit([f"{where}: context does not follow the origin's previous commit"])
    seen = set()
    writes = []
    for write in commit.writes:
        if write.unit in seen:
            raise BadCommit([f"{where}: {write.unit} written twice"])
        seen.add(write.unit)
        try:
            writes.append(_check_write(catalogue, write, own_mode))
        except InvalidSetting as exc:
            raise BadCommit([f"{where}: {p}" for p in exc.problems]) from None
    return Commit(
        commit.id, commit.hlc, commit.user, commit.at, commit.comment, commit.context,
        tuple(writes), seal=commit.seal,
    )  # fmt: skip


def check_write(catalogue: Catalogue, write: Write, own_mode: str | None = None) -> Write:
    """One write in canonical form; raises InvalidSetting if it is bad."""
    return _check_write(catalogue, write, own_mode)


def _check_write(catalogue: Catalogue, write: Write, own_mode: str | None) -> Write:
    feature = catalogue[write.unit.feature]
    mode = Mode.from_key(write.unit.mode)
    exempt = write.value is None or write.unit.mode == own_mode
    if not exempt and mode.level not in feature.levels:
        raise InvalidSetting([f"{feature.command} cannot be defined at {mode.level.value} level"])
    value = _check_value(feature, write.unit.key, write.value)
    return Write(write.unit, value, write.with_reset)


def _check_value(feature: Feature, key: str, value: Any) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidSetting([f"{feature.command}: a value must be an object"])
    if key == MARKER:
        if not feature.is_table:
            return feature.validate_record(value)
        if value:
            raise InvalidSetting([f"{feature.command}: a table marker carries no fields"])
        return {}
    if not feature.is_table:
        raise InvalidSetting([f"{feature.command} is a single record, it has no rows"])
    return feature.validate_row(key, value)


def check_snapshot(catalogue: Catalogue, snapshot: Snapshot) -> None:
    """A state transfer from a peer, checked like its commits before anything of it is
    installed: every entry a valid write at an allowed level, every clock in range.

    A row that its mode's marker hides is history, not a setting: it is checked for its
    value only.  Such rows are what a cluster's creator wrote while it was standalone
    (its users at its machine level, where a cluster allows none), hidden by the reset
    that creating the cluster wrote."""
    for commit in snapshot.commits:
        check_commit(catalogue, commit)
    markers = {(u.feature, u.mode): v for u, v in snapshot.entries if u.key == MARKER}
    for unit, version in snapshot.entries:
        if not 0 < version.hlc < MAX_HLC or not 0 < version.seq < MAX_SEQ:
            raise BadCommit([f"state transfer: {unit}: bad version {version.hlc}"])
        marker = markers.get((unit.feature, unit.mode))
        hidden = unit.key != MARKER and ModeEntries(marker).hides(version)
        try:
            _check_write(catalogue, Write(unit, version.value), unit.mode if hidden else None)
        except InvalidSetting as exc:
            raise BadCommit([f"state transfer: {unit}: {p}" for p in exc.problems]) from None
