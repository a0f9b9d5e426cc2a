"""The replicated state in memory: the winning version of every unit, the recorded
losses, and the version vector.  Pure data; the store keeps it in step with the database.

Visibility (``definition``) is decided here, in one place:

* a mode defines a feature when its marker exists and its value is not ``None``;
* a record feature's value is the marker's value;
* a table's rows are the live rows (value not ``None``) that are not older than the
  marker.  Writing a marker is a *reset*: it hides every row written before it.  Rows
  written by the same commit as the marker share its stamp and stay visible.

Worked example — group Paris, feature ldapconfig::

    marker  {}      @ t5        (re-created at t5)
    row q1  {...}   @ t3        hidden: older than the reset
    row q2  {...}   @ t5        visible: written with the reset
    row q3  {...}   @ t7        visible: edited after the reset
    row q4  None    @ t8        deleted
    definition -> {"q2": ..., "q3": ...}
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from clusterd.core.clock import newer
from clusterd.core.versions import JSON, CommitId, Loss, Snapshot, Unit, Version


@dataclass(slots=True)
class ModeEntries:
    """Every version of one feature at one mode."""

    marker: Version | None = None
    rows: dict[str, Version] = field(default_factory=dict)

    def visible_rows(self) -> Iterator[tuple[str, Version]]:
        """Live rows not hidden by the marker (each ``value`` is a dict, never None)."""
        marker = self.marker
        if marker is None or marker.value is None:
            return
        reset = marker.stamp
        for name, row in self.rows.items():
            if row.value is not None and not newer(reset, row.stamp):
                yield name, row

    def visible_row(self, key: str) -> Version | None:
        """One row if it is live and visible, without walking the table."""
        row = self.rows.get(key)
        if row is None or row.value is None or self.hides(row):
            return None
        return row

    def hides(self, row: Version) -> bool:
        """True when a live row is hidden by this mode's reset or undefined marker."""
        marker = self.marker
        return marker is None or marker.value is None or newer(marker.stamp, row.stamp)


EMPTY = ModeEntries()


def definition(entries: ModeEntries, is_table: bool) -> JSON | None:
    """What a mode defines for a feature: ``None`` (not defined), a record, or rows."""
    marker = entries.marker
    if marker is None or marker.value is None:
        return None
    if not is_table:
        return marker.value
    return {name: row.value for name, row in entries.visible_rows()}


class State:
    """The winning versions by unit, the losses recorded against them, the version vector."""

    def __init__(self) -> None:
        self._modes: dict[tuple[str, str], ModeEntries] = {}
        self._losses: dict[Unit, dict[CommitId, Loss]] = {}
        self.vv: dict[str, int] = {}

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> State:
        state = cls()
        for unit, version in snapshot.entries:
            state.put(unit, version)
        for loss in snapshot.losses:
            state.add_loss(loss)
        state.vv = snapshot.version_vector()
        return state

    def copy(self) -> State:
        """A copy that later changes to this state leave alone (versions and losses are
        immutable: only the dicts that hold them are copied)."""
        copy = State()
        copy._modes = {k: ModeEntries(e.marker, dict(e.rows)) for k, e in self._modes.items()}
        copy._losses = {unit: dict(by_commit) for unit, by_commit in self._losses.items()}
        copy.vv = dict(self.vv)
        return copy

    def entries(self, feature: str, mode: str) -> ModeEntries:
        return self._modes.get((feature, mode), EMPTY)

    def row(self, feature: str, mode: str, key: str) -> JSON | None:
        """One visible row's value (None: no such row), without walking the table."""
        version = self.entries(feature, mode).visible_row(key)
        return version.value if version is not None else None

    def is_defined(self, feature: str, mode: str) -> bool:
        """Whether the mode defines the feature: its marker exists and is not None."""
        marker = self.entries(feature, mode).marker
        return marker is not None and marker.value is not None

    def get(self, unit: Unit) -> Version | None:
        entries = self._modes.get((unit.feature, unit.mode))
        if entries is None:
            return None
        return entries.marker if unit.is_marker else entries.rows.get(unit.key)

    def put(self, unit: Unit, version: Version) -> None:
        entries = self._modes.setdefault((unit.feature, unit.mode), ModeEntries())
        if unit.is_marker:
            entries.marker = version
        else:
            entries.rows[unit.key] = version

    def unput(self, unit: Unit, previous: Version | None) -> None:
        """Put back what ``unit`` held before (``None``: it held nothing): undoes ``put``."""
        if previous is not None:
            self.put(unit, previous)
            return
        entries = self._modes.get((unit.feature, unit.mode))
        if entries is None:
            return
        if unit.is_marker:
            entries.marker = None
        else:
            entries.rows.pop(unit.key, None)
        if entries.marker is None and not entries.rows:
            del self._modes[(unit.feature, unit.mode)]

    def loss(self, unit: Unit, loser: CommitId) -> Loss | None:
        by_commit = self._losses.get(unit)
        return None if by_commit is None else by_commit.get(loser)

    def units(self) -> Iterator[tuple[Unit, Version]]:
        for (feature, mode), entries in self._modes.items():
            if entries.marker is not None:
                yield Unit(feature, mode, ""), entries.marker
            for key, row in entries.rows.items():
                yield Unit(feature, mode, key), row

    def feature_modes(self) -> list[tuple[str, str]]:
        return sorted(self._modes)

    def losses_of(self, unit: Unit) -> list[Loss]:
        by_commit = self._losses.get(unit)
        return list(by_commit.values()) if by_commit else []

    def losses(self) -> list[Loss]:
        return [loss for by_commit in self._losses.values() for loss in by_commit.values()]

    def add_loss(self, loss: Loss) -> None:
        self._losses.setdefault(loss.unit, {})[loss.loser.commit] = loss

    def drop_loss(self, unit: Unit, loser: CommitId) -> None:
        by_commit = self._losses.get(unit)
        if by_commit is not None:
            by_commit.pop(loser, None)
            if not by_commit:
                del self._losses[unit]
