"""Merging a commit into the state: the last-writer rule and the inconsistency rule.

Theory of operation
-------------------
Commits are applied in *causal order*: a commit is ready when its origin's previous
commit and everything in its context have been applied (``ready``).  ``Inbox`` holds
what arrived early.  Applying the same commit twice does nothing (idempotent).

For every write of a commit, the incoming version ``v`` meets the unit's current
winner ``w``:

* ``newer(v, w)``: ``v`` becomes the winner.  If ``v``'s writer had not seen ``w``
  (``w`` not in ``v``'s context), ``w`` is recorded as a **loss**: a committed change
  superseded by somebody who did not know it.
* otherwise ``v`` is kept only as a loss (the winner's writer cannot have seen it).
* any recorded loss of the unit that ``v``'s writer *had* seen is dropped: it was
  overwritten knowingly since.
* ``w`` is ``v`` itself (the state holds the version, the log lost the commit's
  header, and a peer sends it again): nothing changes.

With causal delivery the recorded losses of a unit are exactly the versions that are
not the winner and that no version of the unit has seen, so every member that has
applied the same commits records the same losses, whatever the arrival order.  A loss
names the unit's current winner as what superseded it (``by``): when a new winner
arrives, the losses it had not seen name it instead, so ``by`` too is the same
everywhere (it once named whichever version won on arrival, which depended on the
order; found by the network-namespace fault campaign).

Rows hidden by a reset (see ``clusterd.core.state``) are losses too when the reset's
writer had not seen them; they follow from the current state alone and are computed
on demand by ``hidden_losses``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from clusterd.core.clock import newer
from clusterd.core.state import EMPTY, State
from clusterd.core.versions import (
    MARKER,
    Commit,
    CommitId,
    Loss,
    Unit,
    Version,
    VersionVector,
    has_seen,
)


@dataclass(slots=True)
class Outcome:
    """What applying one commit changes: the state writes and the loss bookkeeping."""

    commit: Commit
    wins: list[tuple[Unit, Version]] = field(default_factory=list)
    new_units: set[Unit] = field(default_factory=set)  # winners with no version before
    added: list[Loss] = field(default_factory=list)
    dropped: list[tuple[Unit, CommitId]] = field(default_factory=list)

    @property
    def touched(self) -> set[tuple[str, str]]:
        """(feature, mode) pairs whose winners changed."""
        return {(unit.feature, unit.mode) for unit, _ in self.wins}


def is_applied(state: State, commit: CommitId) -> bool:
    return has_seen(state.vv, commit)


def ready(vv: VersionVector, commit: Commit) -> bool:
    """True when a member at version vector ``vv`` has applied all ``commit`` depends on:
    its origin's previous commit and everything in its context."""
    origin, seq = commit.id.origin, commit.id.seq
    if vv.get(origin, 0) != seq - 1:
        return False
    return all(vv.get(o, 0) >= s for o, s in commit.context.items() if o != origin)


def merge(state: State, commit: Commit) -> Outcome:
    """Decide, without changing ``state``, what applying a ready commit does."""
    out = Outcome(commit)
    if is_applied(state, commit.id):
        return out
    here: tuple[str, str] | None = None
    entries = EMPTY
    for write in commit.writes:
        incoming = commit.version(write)
        for loss in state.losses_of(write.unit):
            if has_seen(commit.context, loss.loser.commit):
                out.dropped.append((write.unit, loss.loser.commit))
        if here != (write.unit.feature, write.unit.mode):  # writes come grouped by mode
            here = (write.unit.feature, write.unit.mode)
            entries = state.entries(*here)
        current = entries.marker if write.unit.key == MARKER else entries.rows.get(write.unit.key)
        if current is not None and current.commit == incoming.commit:
            continue  # held already (a log that lost its header gets it again): no loss
        if current is None:
            out.wins.append((write.unit, incoming))
            out.new_units.add(write.unit)
        elif newer(incoming.stamp, current.stamp):
            out.wins.append((write.unit, incoming))
            if not has_seen(commit.context, current.commit):
                out.added.append(Loss(write.unit, current, commit.id))
            for loss in state.losses_of(write.unit):  # the new winner supersedes them too
                if not has_seen(commit.context, loss.loser.commit):
                    out.added.append(Loss(write.unit, loss.loser, commit.id))
        elif not has_seen(current.context, incoming.commit):
            out.added.append(Loss(write.unit, incoming, current.commit))
    return out


@dataclass
class Undo:
    """What ``apply`` changed, to put back exactly (a write that failed changes nothing)."""

    units: list[tuple[Unit, Version | None]] = field(default_factory=list)
    losses: list[tuple[Unit, CommitId, Loss | None]] = field(default_factory=list)
    vv: list[tuple[str, int | None]] = field(default_factory=list)  # (origin, seq before)

    def revert(self, state: State) -> None:
        for origin, seq in self.vv:
            if seq is None:
                state.vv.pop(origin, None)
            else:
                state.vv[origin] = seq
        for unit, loser, loss in reversed(self.losses):
            state.drop_loss(unit, loser)
            if loss is not None:
                state.add_loss(loss)
        for unit, previous in reversed(self.units):
            state.unput(unit, previous)


def apply(state: State, out: Outcome) -> Undo:
    """Make an outcome of ``merge`` part of the state; returns how to take it back."""
    undo = Undo()
    for unit, loser in out.dropped:
        undo.losses.append((unit, loser, state.loss(unit, loser)))
        state.drop_loss(unit, loser)
    for unit, version in out.wins:
        undo.units.append((unit, state.get(unit)))
        state.put(unit, version)
    for loss in out.added:
        undo.losses.append((loss.unit, loss.loser.commit, state.loss(loss.unit, loss.loser.commit)))
        state.add_loss(loss)
    commit = out.commit.id
    undo.vv.append((commit.origin, state.vv.get(commit.origin)))
    if state.vv.get(commit.origin, 0) < commit.seq:
        state.vv[commit.origin] = commit.seq
    return undo


def hidden_losses(state: State, feature: str, mode: str) -> list[Loss]:
    """Live rows hidden by a reset whose writer had not seen them.

    Rows written together with a superseded marker are not listed one by one: that
    marker's own loss stands for them.
    """
    entries = state.entries(feature, mode)
    marker = entries.marker
    if marker is None:
        return []
    return [
        Loss(Unit(feature, mode, key), row, marker.commit)
        for key, row in sorted(entries.rows.items())
        if row.value is not None
        and not row.with_reset
        and entries.hides(row)
        and not has_seen(marker.context, row.commit)
    ]


def inconsistencies(state: State) -> list[Loss]:
    """Every recorded loss plus every row hidden by a reset whose writer missed it."""
    found = state.losses()
    for feature, mode in state.feature_modes():
        found.extend(hidden_losses(state, feature, mode))
    return sorted(found, key=lambda loss: (loss.unit, loss.loser.hlc))


class Inbox:
    """Holds commits that arrived before what they depend on; releases them in order."""

    def __init__(self) -> None:
        self._waiting: dict[str, dict[int, Commit]] = {}

    def __len__(self) -> int:
        return sum(len(by_seq) for by_seq in self._waiting.values())

    def add(self, commits: Iterable[Commit]) -> None:
        for commit in commits:
            self._waiting.setdefault(commit.id.origin, {}).setdefault(commit.id.seq, commit)

    def drain(self, state: State) -> list[Commit]:
        """Remove and return, in a causal order, every commit ready against ``state``.

        The caller applies them in the returned order.  Each origin's commits wait in
        sequence; a round offers every origin's next commit, and rounds repeat while
        one of them was released.
        """
        vv = dict(state.vv)
        released: list[Commit] = []
        progress = True
        while progress:
            progress = False
            for origin in sorted(self._waiting):
                by_seq = self._waiting[origin]
                for seq in [s for s in by_seq if s <= vv.get(origin, 0)]:
                    del by_seq[seq]  # duplicates of what is applied
                while (commit := by_seq.get(vv.get(origin, 0) + 1)) is not None and ready(
                    vv, commit
                ):
                    del by_seq[commit.id.seq]
                    released.append(commit)
                    vv[origin] = commit.id.seq
                    progress = True
            self._waiting = {o: by_seq for o, by_seq in self._waiting.items() if by_seq}
        return released

    def forget(self, origins: Iterable[str]) -> int:
        """Drop what waits from ``origins`` (machines removed from the cluster: what they
        made that nobody can apply never will be); returns how many were dropped."""
        dropped = 0
        for origin in origins:
            dropped += len(self._waiting.pop(origin, {}))
        return dropped


def merged_unit(ours: State, theirs: State, unit: Unit) -> tuple[Version, dict[CommitId, Loss]]:
    """One unit after a state transfer's merge: its winner and its losses by loser.

    Per unit the newer winner wins.  A version is a loss when it is not the winner and
    no version either side still holds had seen it; this is the rule ``merge`` keeps
    commit by commit, because a writer that saw a version had seen everything that
    version's writer had (causal delivery), so versions dropped along the way never see
    more than the ones kept.
    """
    a, b = ours.get(unit), theirs.get(unit)
    if a is None or (b is not None and newer(b.stamp, a.stamp)):
        assert b is not None
        winner = b
    else:
        winner = a
    known: dict[CommitId, Loss | Version] = {}
    for side in (ours, theirs):
        for loss in side.losses_of(unit):
            known.setdefault(loss.loser.commit, loss)
    for v in (a, b):
        if v is not None:
            known.setdefault(v.commit, v)
    held = [k.loser if isinstance(k, Loss) else k for k in known.values()]
    losses = {}
    for commit, item in known.items():
        version = item.loser if isinstance(item, Loss) else item
        if commit == winner.commit or any(has_seen(u.context, commit) for u in held):
            continue
        losses[commit] = Loss(unit, version, winner.commit)
    return winner, losses


# A unit a state transfer changes: its new winner and losses (``merged_unit``).
UnitChange = tuple[Version, dict[CommitId, Loss]]


def transfer_changes(
    ours: State, theirs: State, units: Iterable[Unit] | None = None
) -> dict[Unit, UnitChange]:
    """The units whose winner or losses merging ``theirs`` into ``ours`` changes (of
    ``units``; None: all of ``theirs``, since a unit only ours holds stays as it is).
    Reads both states only: a thread may compute it on a copy of ours (``State.copy``)."""
    changes: dict[Unit, UnitChange] = {}
    for unit in units if units is not None else (u for u, _ in theirs.units()):
        a, b = ours.get(unit), theirs.get(unit)
        if a is not None and b is not None and a.stamp == b.stamp \
                and not ours.losses_of(unit) and not theirs.losses_of(unit):  # fmt: skip
            continue  # the same version, nothing lost: the common case
        winner, losses = merged_unit(ours, theirs, unit)
        if winner != a or losses != {x.loser.commit: x for x in ours.losses_of(unit)}:
            changes[unit] = (winner, losses)
    return changes


@dataclass
class TransferEffect:
    """What taking a state transfer's changes did to a state: the entries and loss rows
    the database must follow (as ``clusterd.store``'s batches write them), and the undo."""

    wins: dict[Unit, Version] = field(default_factory=dict)
    new_units: set[Unit] = field(default_factory=set)
    loss_ops: dict[tuple[Unit, CommitId], Loss | None] = field(default_factory=dict)
    undo: Undo = field(default_factory=Undo)


def apply_transfer(
    state: State, changes: dict[Unit, UnitChange], vv: VersionVector
) -> TransferEffect:
    """Make ``changes`` (``transfer_changes``) and the transfer's vector part of
    ``state``; returns what changed and how to take it back."""
    effect = TransferEffect()
    undo = effect.undo
    for unit, (winner, losses) in changes.items():
        current = state.get(unit)
        if winner != current:
            undo.units.append((unit, current))
            state.put(unit, winner)
            effect.wins[unit] = winner
            if current is None:
                effect.new_units.add(unit)
        before = {x.loser.commit: x for x in state.losses_of(unit)}
        for loser, loss in before.items():
            if losses.get(loser) != loss:
                undo.losses.append((unit, loser, loss))
                state.drop_loss(unit, loser)
                effect.loss_ops[(unit, loser)] = None
        for loser, loss in losses.items():
            if before.get(loser) != loss:
                undo.losses.append((unit, loser, state.loss(unit, loser)))
                state.add_loss(loss)
                effect.loss_ops[(unit, loser)] = loss
    for origin, seq in vv.items():
        if state.vv.get(origin, 0) < seq:
            undo.vv.append((origin, state.vv.get(origin)))
            state.vv[origin] = seq
    return effect
