"""Pending changes of one shell session, and the view that shows them over the state.

A session edits a ``Pending`` set: for each unit the value it will write and the
*base* (the committed version the session saw when it first touched the unit).  A
``View`` answers reads as if the pending changes were committed, so the shell shows
what ``commit`` would make true.  Pending versions carry ``PENDING_HLC``, newer than
anything committed; writing a marker (a reset) drops the session's earlier pending
rows of that feature and mode, as the committed reset will hide older rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterd.core.clock import PENDING_HLC
from clusterd.core.errors import TooManyChanges
from clusterd.core.state import ModeEntries, State
from clusterd.core.versions import JSON, MARKER, Commit, CommitId, Unit, Version, Write

PENDING_ORIGIN = "~pending"


@dataclass(frozen=True, slots=True)
class PendingWrite:
    value: JSON | None
    base: CommitId | None
    checked: bool = False  # validated (value, mode, level) by the editor that wrote it


@dataclass(frozen=True, slots=True)
class Conflict:
    """A pending change whose unit was committed by somebody else since it was read."""

    unit: Unit
    base: CommitId | None
    current: Version | None


class Pending:
    """``limit``: the most units one session may hold (``TooManyChanges`` beyond it)."""

    def __init__(self, limit: int | None = None) -> None:
        self._modes: dict[tuple[str, str], dict[str, PendingWrite]] = {}
        self.limit = limit
        self._count = 0

    def __bool__(self) -> bool:
        return bool(self._modes)

    def saved(self) -> dict[tuple[str, str], dict[str, PendingWrite]]:
        """A copy to go back to (``restore``) when a command fails half-way."""
        return {mode: dict(keys) for mode, keys in self._modes.items()}

    def restore(self, saved: dict[tuple[str, str], dict[str, PendingWrite]]) -> None:
        self._modes = {mode: dict(keys) for mode, keys in saved.items()}
        self._count = sum(len(keys) for keys in self._modes.values())

    def __len__(self) -> int:
        return self._count

    def items(self) -> list[tuple[Unit, PendingWrite]]:
        return [
            (Unit(feature, mode, key), pw)
            for (feature, mode), keys in self._modes.items()
            for key, pw in keys.items()
        ]

    def of_mode(self, feature: str, mode: str) -> dict[str, PendingWrite]:
        return self._modes.get((feature, mode), {})

    def write(self, state: State, unit: Unit, value: JSON | None, *, checked: bool = False) -> None:
        keys = self._modes.get((unit.feature, unit.mode), {})
        if self.limit is not None and unit.key not in keys and self._count >= self.limit:
            raise TooManyChanges(self.limit)
        self._modes[(unit.feature, unit.mode)] = keys
        if unit.is_marker:
            for key in [k for k in keys if k != MARKER]:
                del keys[key]
                self._count -= 1
        known = keys.get(unit.key)
        if known is not None:
            base = known.base
        else:
            current = state.get(unit)
            base = current.commit if current is not None else None
            self._count += 1
        keys[unit.key] = PendingWrite(value, base, checked)

    def mark_checked(self, unit: Unit, value: JSON | None) -> None:
        """Replace a write's value by its validated form, in place (no reset)."""
        keys = self._modes[(unit.feature, unit.mode)]
        keys[unit.key] = PendingWrite(value, keys[unit.key].base, True)

    def unchecked(self) -> list[tuple[Unit, PendingWrite]]:
        """Writes no editor has validated: the store checks these before committing."""
        return [
            (Unit(feature, mode, key), pw)
            for (feature, mode), keys in self._modes.items()
            for key, pw in keys.items()
            if not pw.checked
        ]

    def drop(self, units: list[Unit]) -> None:
        for unit in units:
            keys = self._modes.get((unit.feature, unit.mode))
            if keys is not None:
                if keys.pop(unit.key, None) is not None:
                    self._count -= 1
                if not keys:
                    del self._modes[(unit.feature, unit.mode)]

    def clear(self) -> None:
        self._modes.clear()
        self._count = 0

    def conflicts(self, state: State) -> list[Conflict]:
        found = []
        for (feature, mode), keys in self._modes.items():
            entries = state.entries(feature, mode)
            for key, pw in keys.items():
                current = entries.marker if key == MARKER else entries.rows.get(key)
                now = None if current is None else current.commit
                if now != pw.base:
                    found.append(Conflict(Unit(feature, mode, key), pw.base, current))
        return found

    def to_writes(self) -> tuple[Write, ...]:
        writes = []
        for (feature, mode), keys in self._modes.items():
            reset = MARKER in keys
            for key, pw in keys.items():
                writes.append(Write(Unit(feature, mode, key), pw.value, reset and key != MARKER))
        return tuple(writes)


class View:
    """The committed state with a session's pending changes laid over it."""

    def __init__(self, state: State, pending: Pending | None = None) -> None:
        self.state = state
        self.pending = pending if pending is not None else Pending()

    def entries(self, feature: str, mode: str) -> ModeEntries:
        base = self.state.entries(feature, mode)
        mine = self.pending.of_mode(feature, mode)
        if not mine:
            return base
        merged = ModeEntries(base.marker, dict(base.rows))
        for key, pw in mine.items():
            version = Version(PENDING_HLC, PENDING_ORIGIN, 0, pw.value)
            if key == MARKER:
                merged.marker = version
            else:
                merged.rows[key] = version
        return merged

    def is_defined(self, feature: str, mode: str) -> bool:
        """Whether the mode defines the feature, looking at the marker only."""
        mine = self.pending.of_mode(feature, mode).get(MARKER)
        if mine is not None:
            return mine.value is not None
        return self.state.is_defined(feature, mode)

    def row(self, feature: str, mode: str, key: str) -> JSON | None:
        """One visible row's value (None: no such row), without walking the table."""
        mine = self.pending.of_mode(feature, mode)
        if key in mine:
            return mine[key].value
        if MARKER in mine:
            return None  # a pending reset hides every committed row
        version = self.state.entries(feature, mode).visible_row(key)
        return version.value if version is not None else None

    def write(self, unit: Unit, value: JSON | None, *, checked: bool = False) -> None:
        self.pending.write(self.state, unit, value, checked=checked)


def make_commit(
    state: State, pending: Pending, *, origin: str, hlc: int, user: str, at: float, comment: str
) -> Commit:
    """The next commit of ``origin``: pending writes, stamped, with what it has seen."""
    seq = state.vv.get(origin, 0) + 1
    return Commit(
        CommitId(origin, seq), hlc, user, at, comment, dict(state.vv), pending.to_writes()
    )
