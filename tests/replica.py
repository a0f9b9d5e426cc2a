"""A pure, in-memory member for tests: state + clock + inbox, no database.

Replicas edit through the same ``Editor`` and build commits with the same
``make_commit`` as the store, and merge with the same ``merge``/``apply``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from clusterd.core import layers, membership
from clusterd.core.chain import commit_hash
from clusterd.core.clock import HybridClock
from clusterd.core.edits import Editor, write_definition
from clusterd.core.merge import Inbox, apply, hidden_losses, merge, merged_unit
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending, View, make_commit
from clusterd.core.state import State
from clusterd.core.versions import Commit, CommitId, Seal, Unit, has_seen
from clusterd.schema.catalogue import CATALOGUE
from clusterd.store.commitcheck import check_commit
from clusterd.store.records import JsonCache, commit_row  # (the bytes a store hashes)

MACHINES = {"m0.example.com": "G1", "m1.example.com": "G1", "m2.example.com": "G2"}


class Replica:
    def __init__(self, origin: str, hostname: str, wall: Callable[[], int]) -> None:
        self.origin = origin
        self.hostname = hostname
        self.state = State()
        self.clock = HybridClock(wall)
        self.inbox = Inbox()
        self.applied: list[Commit] = []  # in the order applied

    def edit(self, change: Callable[[Editor], object], comment: str = "") -> Commit | None:
        pending = Pending()
        change(Editor(View(self.state, pending), CATALOGUE, self.hostname))
        if not pending:
            return None
        commit = make_commit(
            self.state,
            pending,
            origin=self.origin,
            hlc=self.clock.now(),
            user="admin",
            at=0.0,
            comment=comment,
        )
        self.apply_ready([commit])
        return commit

    def receive(self, commits: Iterable[Commit]) -> list[Commit]:
        """Take commits; apply every one that is ready (these, or earlier ones that were
        waiting for them); returns those applied now, in order."""
        self.inbox.add(commits)
        ready = self.inbox.drain(self.state)
        self.apply_ready(ready)
        self.inbox.forget(layers.removed_serials(self.state))  # as the store does
        return ready

    def apply_ready(self, commits: list[Commit]) -> None:
        for commit in commits:
            self.clock.observe(commit.hlc)
            out = merge(self.state, commit)
            if out.wins or out.added or not has_seen(self.state.vv, commit.id):
                self.applied.append(commit)
            apply(self.state, out)

    def loss_ids(self) -> set[tuple[Unit, CommitId]]:
        found = {(loss.unit, loss.loser.commit) for loss in self.state.losses()}
        for feature, mode in self.state.feature_modes():
            found |= {(x.unit, x.loser.commit) for x in hidden_losses(self.state, feature, mode)}
        return found


def cluster_commit(
    origin: str = "SER-0",
    hlc: int = 1,
    *,
    name: str = "test",
    machines: Mapping[str, tuple[str, str]] | None = None,
) -> Commit:
    """The commit that creates a small cluster: groups Main_Group, G1, G2 and its machines
    (host name -> (serial, group); by default the three of ``MACHINES``)."""
    if machines is None:
        machines = {host: (f"S-{host[:2]}", group) for host, group in MACHINES.items()}
    state, pending = State(), Pending()
    view = View(state, pending)
    write_definition(view.write, CATALOGUE["cluster"], Mode.cluster(), {"name": name})
    membership.define_tables(view, CATALOGUE)
    for group in (layers.MAIN_GROUP, "G1", "G2"):  # as a real cluster: Main_Group first
        membership.add_group(view, CATALOGUE, group)
    for host, (serial, group) in machines.items():
        membership.admit(view, CATALOGUE, host, {"serial": serial}, group)
    made = make_commit(state, pending, origin=origin, hlc=hlc, user="admin", at=0.0, comment="")
    return sealed(check_commit(CATALOGUE, made))  # (in canonical form, as a store commits)


def sealed(commit: Commit, prev: str | None = None) -> Commit:
    """``commit`` with the seal its origin would give it, unsigned (no key): a store
    born sealed refuses an unsealed commit from a peer."""
    row = commit_row(commit, JsonCache())
    digest = commit_hash(*row[:6], commit.context, prev, row[7])
    return replace(commit, seal=Seal(prev, digest))


def accounted(commit: Commit, all_commits: list[Commit], replica: Replica) -> list[str]:
    """Writes of ``commit`` that are neither current, nor knowingly overwritten, nor recorded.

    Invariant 3: a committed change is present, or superseded by a write whose writer
    had seen it, or recorded as a loss.
    """
    losses = replica.loss_ids()
    problems = []
    for write in commit.writes:
        current = replica.state.get(write.unit)
        if current is not None and current.commit == commit.id:
            entries = replica.state.entries(write.unit.feature, write.unit.mode)
            hidden = (
                not write.unit.is_marker and current.value is not None and entries.hides(current)
            )
            if not hidden:
                continue
            marker = entries.marker
            if marker is not None and has_seen(marker.context, commit.id):
                continue
            if write.with_reset or (write.unit, commit.id) in losses:
                continue  # the commit's own marker write stands for it
            problems.append(f"{write.unit} of {commit.id} hidden without a record")
            continue
        seen_by_later = any(
            other.id != commit.id
            and has_seen(other.context, commit.id)
            and any(w.unit == write.unit for w in other.writes)
            for other in all_commits
        )
        if not seen_by_later and (write.unit, commit.id) not in losses:
            problems.append(f"{write.unit} of {commit.id} lost without a record")
    return problems


def merge_states(ours: State, theirs: State) -> State:
    """Two whole states merged into a third, every unit by ``merged_unit``: what the
    store's in-place transfer (``transfer_changes``, ``apply_transfer``) must equal, and
    the simulation's replicas' way of taking a transfer."""
    result = State()
    units = dict.fromkeys(u for u, _ in ours.units())
    units.update(dict.fromkeys(u for u, _ in theirs.units()))
    for unit in units:
        winner, losses = merged_unit(ours, theirs, unit)
        result.put(unit, winner)
        for loss in losses.values():
            result.add_loss(loss)
    for vv in (ours.vv, theirs.vv):
        for origin, seq in vv.items():
            result.vv[origin] = max(result.vv.get(origin, 0), seq)
    return result
