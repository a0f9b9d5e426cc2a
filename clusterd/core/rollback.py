"""Undoing one commit: the writes of a new commit that put back what it changed.

Theory of operation
-------------------
Undoing commit C means: every unit C changed shows again what it showed just before C,
unless a later commit changed it since: that unit is *changed since* and left alone,
unless ``everything`` (then it is overwritten, knowingly).  "Just before C" is
last-writer order, not arrival order: a unit's version before C is its newest version
older than C's stamp.  When today's winner is older than C, it is that version
(``known_before``); otherwise the log is read backwards from C (``versions_before``),
until the unit's write is found, the log begins (the unit did not exist: ``None``) or
a truncated commit is met (``truncate_log`` keeps headers only): the unit is then
*unknown* and left alone.

What a unit shows follows ``clusterd.core.state``: a row is visible when it is live
and not older than its mode's marker, and writing a marker is a reset.  So the inverse
is decided per (feature, mode), by what C did to the marker:

===============================  ========================================================
C wrote                          the inverse writes
===============================  ========================================================
rows only                        each row's value visible before C (None: it was not
                                 there).  A row whose mode was reset since C is changed
                                 since (by that reset).
a record (its marker)            the record before C (None: not defined)
a table's marker, defined        no marker: a new one would hide every row written since,
before and after (a reset:       others' too.  The rows visible before are written again,
define, copy onto a defined      the rows only C made visible get tombstones.
mode, loadconfig)
a table's marker, not defined    the marker None, unless some unit of the mode was written
before (define, copy or move     after C: undefining would hide it, so the table is left
into the mode)                   alone and that unit named.
a table's marker, undefining     the marker ``{}`` with the rows visible before (a reset),
it (undefine, move away,         on the same condition.
delete)
===============================  ========================================================

Internal features (membership) are never undone, and a definition of a feature in
``keep`` (users and SSH settings) is never taken away (that would lock admins out):
both are ``skipped``.  A write that would change nothing is left out.

Worked example: at t1 C1 sets ``settz`` at cluster to UTC, at t2 C2 to Asia/Tokyo; at t3
C3 adds row q1 to group Paris's defined ``ldapconfig``.  ``inverse`` of C2 writes settz
UTC; of C3, a tombstone for q1.  Had somebody set settz again at t4, C2's inverse would
write nothing and name settz as changed since by that commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clusterd.core.clock import Stamp, newer
from clusterd.core.state import ModeEntries, State
from clusterd.core.versions import JSON, MARKER, Commit, CommitId, Unit, Version, Write
from clusterd.schema.feature import Catalogue, Feature

Before = Mapping[Unit, Version | None]  # each unit's version just before the commit

MEMBERSHIP = "membership is never rolled back"
LOCKOUT = "never undefined by a rollback: it would lock every admin out"


@dataclass(frozen=True, slots=True)
class Changed:
    """A unit written after the commit by another: left alone.  ``holds``: the unit
    left alone because of it (a table's marker, when undoing its definition would hide
    this later unit)."""

    unit: Unit
    now: Version
    holds: Unit | None = None


@dataclass(frozen=True, slots=True)
class Inverse:
    """What undoing a commit writes, and what it leaves alone and why.  ``writes`` come
    grouped by mode, each mode's marker first (a pending marker drops the rows pending
    before it)."""

    writes: tuple[Write, ...]
    changed: tuple[Changed, ...]
    unknown: tuple[Unit, ...]
    skipped: tuple[tuple[Unit, str], ...]


def refusal(catalogue: Catalogue, commit: Commit) -> str | None:
    """Why ``commit`` cannot be rolled back at all, or None."""
    if commit.truncated:
        return "the log no longer holds what it changed (its changes were truncated)"
    features = {w.unit.feature for w in commit.writes}
    if "cluster" in features and any(not catalogue[f].internal for f in features):
        return ("it created the cluster, moving this machine's settings to cluster level "
                "(clusterconfig removemachine takes a machine out of a cluster)")  # fmt: skip
    for w in commit.writes:
        if w.unit.feature == "removed" and w.value is not None and "renamed_to" in w.value:
            return (f"it renamed machine {w.unit.key} to {w.value['renamed_to']}: rename it "
                    "back with sethostname at that machine")  # fmt: skip
    machines = {w.unit.mode for w in commit.writes if w.unit.mode.startswith("machine:")}
    named = {w.unit.mode for w in commit.writes if w.unit.feature == "sethostname" and w.value}
    undone = {w.unit.mode for w in commit.writes if w.unit.is_marker and w.value is None}
    if named and (undone & machines) - named:
        return "it renamed a machine, moving its settings: rename it back with sethostname"
    return None


def wanted(state: State, catalogue: Catalogue, commit: Commit) -> set[Unit]:
    """Every unit whose version before ``commit`` the inverse needs: what it wrote, the
    marker of each mode it wrote, and every row of a table whose marker it wrote."""
    units: set[Unit] = set()
    for w in commit.writes:
        if catalogue[w.unit.feature].internal:
            continue
        units.add(w.unit)
        units.add(Unit(w.unit.feature, w.unit.mode, MARKER))
        if w.unit.is_marker:
            rows = state.entries(w.unit.feature, w.unit.mode).rows
            units.update(Unit(w.unit.feature, w.unit.mode, key) for key in rows)
    return units


def known_before(
    state: State, commit: Commit, units: Iterable[Unit]
) -> tuple[dict[Unit, Version | None], set[Unit]]:
    """The versions before ``commit`` that today's state gives (a winner older than the
    commit is the version before it; a unit never written: None), and the units left
    to find in the log."""
    stamp = Stamp(commit.hlc, commit.id.origin)
    found: dict[Unit, Version | None] = {}
    rest: set[Unit] = set()
    for unit in units:
        now = state.get(unit)
        if now is None or newer(stamp, now.stamp):
            found[unit] = now
        else:
            rest.add(unit)
    return found, rest


def versions_before(
    log: Iterable[Commit], units: set[Unit]
) -> tuple[dict[Unit, Version | None], set[Unit]]:
    """Each unit's newest version in ``log``: the commits before the one undone, newest
    first (by stamp).  Read until every unit is found; a unit the log never wrote did
    not exist (None); once a truncated commit is met, the units not found yet are
    unknown (returned second)."""
    missing = set(units)
    found: dict[Unit, Version | None] = {}
    for commit in log:
        if not missing:
            break
        if commit.truncated:
            return found, missing
        for w in commit.writes:
            if w.unit in missing:
                found[w.unit] = commit.version(w)
                missing.discard(w.unit)
    found.update(dict.fromkeys(missing, None))
    return found, set()


def inverse(
    state: State,
    catalogue: Catalogue,
    commit: Commit,
    before: Before,
    *,
    everything: bool = False,
    keep: frozenset[str] = frozenset(),
    ours: frozenset[CommitId] = frozenset(),
) -> Inverse:
    """The writes that undo ``commit`` on ``state``, given ``before`` for the units of
    ``wanted`` (a unit missing from it is unknown).  ``everything``: units changed since
    are put back too.  ``keep``: features whose definition is never taken away.
    ``ours``: later commits undone together with this one (``clusterd.core.confirm``):
    what they wrote is not "changed since"."""
    out = _Out(ours)
    groups: dict[tuple[str, str], dict[str, Write]] = {}
    for w in commit.writes:
        groups.setdefault((w.unit.feature, w.unit.mode), {})[w.unit.key] = w
    for (name, mode), mine in groups.items():
        feature = catalogue[name]
        if feature.internal:
            out.skipped += [(Unit(name, mode, key), MEMBERSHIP) for key in mine]
            continue
        group = _Group(state, feature, mode, commit, before, out, everything, name in keep)
        if not feature.is_table:
            group.record()
        elif MARKER not in mine:
            group.rows(mine)
        else:
            group.table(mine)
    return Inverse(tuple(out.writes), tuple(out.changed), tuple(out.unknown), tuple(out.skipped))


@dataclass
class _Out:
    ours: frozenset[CommitId] = frozenset()
    writes: list[Write] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    unknown: list[Unit] = field(default_factory=list)
    skipped: list[tuple[Unit, str]] = field(default_factory=list)


class _Group:
    """One (feature, mode) the commit wrote."""

    def __init__(
        self,
        state: State,
        feature: Feature,
        mode: str,
        commit: Commit,
        before: Before,
        out: _Out,
        everything: bool,
        keep: bool,
    ) -> None:
        self.state, self.feature, self.mode, self.commit = state, feature, mode, commit
        self.before, self.out, self.everything, self.keep = before, out, everything, keep
        self.entries: ModeEntries = state.entries(feature.command, mode)
        self.marker = Unit(feature.command, mode, MARKER)
        self.stamp = Stamp(commit.hlc, commit.id.origin)

    def unit(self, key: str) -> Unit:
        return Unit(self.feature.command, self.mode, key)

    def later(self, version: Version | None) -> bool:
        """Written after the commit (by another commit: one commit has one stamp), and
        not by one undone with it."""
        return (version is not None and newer(version.stamp, self.stamp)
                and version.commit not in self.out.ours)  # fmt: skip

    def shown_before(self, key: str) -> JSON | None:
        """Row ``key``'s value visible just before the commit (None: not there)."""
        marker = self.before[self.marker]
        if marker is None or marker.value is None:
            return None
        row = self.before[self.unit(key)]
        if row is None or row.value is None or newer(marker.stamp, row.stamp):
            return None
        return row.value

    def shown_now(self, key: str) -> JSON | None:
        row = self.entries.visible_row(key)
        return None if row is None else row.value

    def write(self, unit: Unit, value: JSON | None, with_reset: bool = False) -> None:
        if unit.is_marker and value is None and self.keep:
            self.out.skipped.append((unit, LOCKOUT))
            return
        self.out.writes.append(Write(unit, value, with_reset))

    def record(self) -> None:
        now = self.entries.marker
        assert now is not None  # (the commit wrote it)
        if self.later(now):
            self.out.changed.append(Changed(self.marker, now))
            if not self.everything:
                return
        if self.marker not in self.before:
            self.out.unknown.append(self.marker)
            return
        was = self.before[self.marker]
        target = None if was is None else was.value
        if target != now.value:
            self.write(self.marker, target)

    def rows(self, mine: Mapping[str, Write]) -> None:
        """Rows only: each back to what was visible before."""
        reset = self.entries.marker if self.later(self.entries.marker) else None
        for key in mine:
            unit = self.unit(key)
            now = self.state.get(unit)
            assert now is not None
            if reset is not None or self.later(now):
                self.out.changed.append(Changed(unit, reset or now))
                if not self.everything:
                    continue
            if unit not in self.before or self.marker not in self.before:
                self.out.unknown.append(unit)
                continue
            target = self.shown_before(key)
            if target != self.shown_now(key):
                self.write(unit, target)

    def table(self, mine: Mapping[str, Write]) -> None:
        """The commit wrote this table's marker."""
        if self.marker not in self.before:
            self.out.unknown.append(self.marker)
            return
        was = self.before[self.marker]
        defined_before = was is not None and was.value is not None
        defined_by_it = mine[MARKER].value is not None
        if not defined_before and not defined_by_it:
            return  # undefined an undefined table: nothing changed
        if defined_before and defined_by_it:
            self.reset(mine)
            return
        now = self.entries.marker
        assert now is not None
        if self.later(now):  # defined or undefined again since: all of it is theirs
            later = [Changed(self.marker, now)]
        else:  # a later row: undoing the commit would hide it, or show it again
            versions = ((self.unit(k), self.state.get(self.unit(k))) for k in self.keys(mine))
            later = [Changed(u, v, self.marker) for u, v in versions
                     if v is not None and self.later(v)]  # fmt: skip
        if later:
            self.out.changed += later
            if not self.everything:
                return
        if defined_by_it:
            self.write(self.marker, None)  # it defined the table: undefined again
        else:
            self.restore(mine)

    def keys(self, mine: Mapping[str, Write]) -> list[str]:
        """Every row name of the mode, today's and the commit's."""
        return sorted({*self.entries.rows, *mine} - {MARKER})

    def restore(self, mine: Mapping[str, Write]) -> None:
        """The table as it was before: its marker and the rows visible then (a reset)."""
        keys = self.keys(mine)
        lost = [self.unit(k) for k in keys if self.unit(k) not in self.before]
        if lost:
            self.out.unknown += [self.marker, *lost]
            return
        self.write(self.marker, {})
        for key in keys:
            value = self.shown_before(key)
            if value is not None:
                self.write(self.unit(key), value, with_reset=True)

    def reset(self, mine: Mapping[str, Write]) -> None:
        """The commit reset a table that stays defined: rows back one by one."""
        now = self.entries.marker
        assert now is not None
        if self.later(now):  # reset or undefined again since: all of it is theirs
            self.out.changed.append(Changed(self.marker, now))
            if self.everything:
                self.restore(mine)
            return
        for key in self.keys(mine):
            unit = self.unit(key)
            row = self.state.get(unit)
            if not self.later(row):  # the commit's version, or the one before it
                if unit not in self.before:
                    self.out.unknown.append(unit)
                elif (target := self.shown_before(key)) != self.shown_now(key):
                    self.write(unit, target)
                continue
            assert row is not None
            known = unit in self.before
            target = self.shown_before(key) if known else None
            if known and (target == self.shown_now(key) or (key not in mine and target is None)):
                continue  # as it was; or a row made after the commit, not its business
            if not known and key not in mine:
                if self.everything:
                    self.out.unknown.append(unit)
                continue
            self.out.changed.append(Changed(unit, row))
            if not self.everything:
                continue
            if known:
                self.write(unit, target)
            else:
                self.out.unknown.append(unit)
