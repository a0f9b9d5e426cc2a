"""A member's store as the mesh sees it: the part of a member's ``Host``
(``clusterd.mesh.member``) that the daemon and the store-backed simulation share.

The protocol reads the log through ``StoreLog``; commits and state transfers from peers
are checked and made durable here, and every batch the store makes durable tells the
member whether membership changed (so its links follow once, after the batch).  A
peer's commit whose seal the store's writer refuses (``Store.on_refused``) refuses
that peer, as an invalid commit does at once (``docs/history.md``, section 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from clusterd.core import layers
from clusterd.core.errors import StoreError
from clusterd.core.merge import Outcome
from clusterd.core.versions import Commit, CommitId, Snapshot, VersionVector
from clusterd.mesh import witness
from clusterd.mesh.member import Member
from clusterd.mesh.members import WHO_WE_ARE, flag_of
from clusterd.mesh.messages import SnapshotBody
from clusterd.mesh.peers import Action, Alert, Flag, LogPages
from clusterd.store.commitcheck import check_snapshot
from clusterd.store.store import Store


class StoreLog:
    """The protocol's read-only view of the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # the last heads' summary and the ``heads_moved`` it was made at: pings and pongs
        # ask for it on every link each round, and it changes only with a durable batch
        self._summary: tuple[int, witness.Summary | None] = (-1, None)

    def version_vector(self) -> VersionVector:
        return self.store.state.vv

    def state_root(self) -> int | None:
        """The durable state's root, when it describes ``version_vector``."""
        return self.store.durable_root()

    def missing_from(self, vv: VersionVector, limit: int) -> list[Commit] | None:
        try:
            return self.store.commits_missing_from(vv, limit)
        except StoreError:  # the store is down: nothing to send now; asked again later
            return []

    def snapshot(self) -> Snapshot:
        return self.store.export_state()

    def flag(self, hostname: str) -> Flag | None:
        return flag_of(self.store.state, hostname)

    def heads_digest(self) -> witness.Summary | None:
        """The durable chain heads' digest, when they are those of the vector we
        advertise (no batch waiting for the writer)."""
        moved, made = self._summary
        vv = self.store.state.vv
        if moved == self.store.heads_moved and made is not None and made.vv == vv:
            return made
        made = witness.summary(self.store.heads, vv)
        self._summary = (self.store.heads_moved, made)
        return made


class StoreHost:
    """Commits and state transfers from peers into the store (BadCommit refuses them),
    and membership changes to the member."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.log: LogPages = StoreLog(store)
        self.member: Member | None = None  # set once the member is built over this host
        store.listeners.append(self._durable)
        store.on_refused.append(self._refused)

    def apply(self, commits: list[Commit], peer: str) -> None:
        self.store.queue_remote(commits, peer)  # written by the store's writer, if it has one

    def install(self, body: SnapshotBody, peer: str) -> None:
        """Check the transfer's chains (BadCommit), then take it (``take``).  The daemon
        does this in a thread (``clusterd.node.links``)."""
        snapshot = body.snapshot()
        self.store.check_transfer(snapshot, self.store.transfer_keys(snapshot))
        self.take(snapshot, peer)

    def take(self, snapshot: Snapshot, peer: str) -> None:
        """Merge a state transfer whose chains verify: validated first (BadCommit)."""
        check_snapshot(self.store.catalogue, snapshot)
        self.transferred(peer, self.store.take_transfer(snapshot))

    def transferred(self, peer: str, forks: list[CommitId]) -> None:
        """A state transfer from ``peer`` is durable: membership follows; a commit sealed
        here with another hash than the peer's is a fork (ours kept)."""
        self.membership_changed()
        if self.member is None:
            return
        actions: list[Action] = []
        if forks:
            text = (f"its state transfer holds {len(forks)} commit(s) sealed here with another "
                    f"hash (first {forks[0]}); ours are kept: an origin sealed two histories, "
                    "or a log was rewritten (run clustercheck)")  # fmt: skip
            actions.append(Alert("fork", peer, text))
        self.member.execute(actions)

    def _refused(self, peer: str | None, reason: str) -> None:
        """The store's writer refused a batch from ``peer``: a commit did not verify."""
        member = self.member
        if member is None:
            return
        if peer is not None and peer in member.node.peers:
            member.call(lambda node: node.rejected(peer, member.now(), reason))
        else:
            member.execute([Alert("bad commit", peer or "a member", reason)])

    def membership_changed(self) -> None:
        if self.member is not None:
            self.member.membership_changed = True

    def _durable(self, outcomes: Sequence[Outcome], local: bool) -> None:
        """Every batch the store made durable: the one place after a commit.  A commit
        made here (shell, control socket, web, the daemon itself) goes to the members
        from here, so no caller can forget to replicate it (not a leaver's)."""
        if any(feature in WHO_WE_ARE for o in outcomes for feature, _ in o.touched):
            self.membership_changed()
        if local and self.member is not None and layers.cluster_name(self.store.state) is not None:
            self.member.committed(o.commit for o in outcomes)
