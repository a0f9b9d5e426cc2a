"""The sync state of each member as this machine sees it, in the words F5 users know.

One pure function, ``sync_state``, over what the node already holds in memory: the
member's link as the protocol keeps it (``mesh.peers.Peer``: state, refusal code and
reason, the version vector of its last hello, ping or pong, the DISCONNECT flag), this
machine's version vector, the commit of the member's ``machines`` row, and the
features of recent commits (``Recent``).  ``status``, ``clusterconfig connstatus`` (and
their ``--json``) and the web status page all show its answer.  The first rule that
applies decides:

* **Refused (reason)**: its last handshake was refused. Action: from the refusal's
  code (one software version; membership; keys).
* **Disconnected**: this machine, or the member, is disconnected on purpose. Action:
  ``clusterconfig reconnect``.
* **Awaiting Initial Sync**: a member just admitted: no link, no vector heard from it
  holds the commit of its ``machines`` row, and nothing it made is here. Action: wait
  for its first link; if it does not come, check that it runs and can reach us.
* **Disconnected**: no live link; the reason says why it went. Action: check the
  network and its daemon; it catches up by itself once linked.
* **Diverged (UNIT)**: linked, the same commits (at the last comparison) and another
  state: this machine's entry of UNIT is what its verified commit wrote, the member's
  is not (``node.divergence``). Action: read its status; rejoin it.
* **Changes Pending (N behind, M ahead)**: linked, and the vectors differ: N commits it
  holds that this machine lacks, M this machine holds that it lacks. Action: wait, the
  sync is under way; read the logs if it stays.
* **In Sync**: linked, the same commits. Action: none.

Worked example: this machine holds ``{m0: 7, m1: 3}``; m1's last pong said ``{m0: 5,
m1: 4}``.  m1 is "Changes Pending (1 commit behind, 2 ahead)": one commit of m1's is
not here yet, m0's 6 and 7 are not there yet.  If ``Recent`` saw m0:6 write
``dnsconfig`` and m0:7 write ``dnsconfig`` and ``userconfig``, ``features`` is
``{"dnsconfig": {"ahead": 2}, "userconfig": {"ahead": 1}}``.

**Per feature, honestly.**  Which features the commits *ahead* wrote is known here,
from memory: ``Recent`` keeps, per origin, the features of the last ``WINDOW`` commits
this daemon made durable since it started.  Commits ahead it cannot name (older, from
before a restart, or taken in by a state transfer) are counted in
``features_unknown``.  Which features the commits *behind* wrote only the member
holding them knows: its own ``status`` names them as its ``ahead``; here, the total.

The counts come from the last vector the member sent: pings carry it once per interval,
so a commit made here shows as "1 ahead" until the next ping round says it arrived.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterd.core.versions import Commit, CommitId
from clusterd.mesh.peers import Peer
from clusterd.mesh.protocol import commits_behind

WINDOW = 10_000  # commits per origin whose features are kept (between 1x and 2x this)
MEMO = 100_000  # stretches of commits whose counts are kept until the next commit

IN_SYNC = "in_sync"
CHANGES_PENDING = "changes_pending"
DISCONNECTED = "disconnected"
REFUSED = "refused"
AWAITING = "awaiting_initial_sync"
DIVERGED = "diverged"


@dataclass(slots=True)
class _Origin:
    first: int  # the oldest seq whose features are known
    last: int  # the newest (first - 1: none yet)
    seqs: dict[str, array[int]] = field(default_factory=dict)  # feature -> seqs, ascending


class Recent:
    """Per origin, which features each recent commit wrote: contiguous runs of seqs,
    recorded as commits become durable here (in each origin's order), trimmed to the
    last ``window`` when a run reaches twice that.  Counting what a vector lacks costs
    two bisections per (origin, feature), whatever the number of commits; a stretch of
    an origin's commits counted once is not counted again until a commit is recorded
    (members usually lack the same ones; ``bench/syncstate.py`` has the figures)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._origins: dict[str, _Origin] = {}
        self._counted: dict[tuple[str, int, int], list[tuple[str, int]]] = {}

    def __repr__(self) -> str:
        runs = ", ".join(f"{o}:{r.first}-{r.last}" for o, r in sorted(self._origins.items()))
        return f"<Recent {runs}>"

    def record(self, commits: Iterable[Commit]) -> None:
        for commit in commits:
            self.add(commit.id.origin, commit.id.seq, {w.unit.feature for w in commit.writes})

    def add(self, origin: str, seq: int, features: Iterable[str]) -> None:
        run = self._origins.get(origin)
        if run is not None and seq <= run.last:
            return  # known already (a durable commit never changes)
        if self._counted:
            self._counted = {}
        if run is None or seq != run.last + 1:  # a gap: a state transfer, or the first
            run = self._origins[origin] = _Origin(seq, seq - 1)
        for feature in features:
            run.seqs.setdefault(feature, array("q")).append(seq)
        run.last = seq
        if run.last - run.first + 1 >= 2 * self.window:
            run.first = run.last - self.window + 1
            for feature, seqs in list(run.seqs.items()):
                del seqs[: bisect_left(seqs, run.first)]
                if not seqs:
                    del run.seqs[feature]

    def ahead(
        self, ours: Mapping[str, int], theirs: Mapping[str, int]
    ) -> tuple[dict[str, int], int]:
        """Per feature, how many commits a holder of ``ours`` has that one of ``theirs``
        lacks wrote it; and how many such commits have features unknown here."""
        counts: dict[str, int] = {}
        unknown = 0
        for origin, seq in ours.items():
            have = theirs.get(origin, 0)
            if seq <= have:
                continue
            run = self._origins.get(origin)
            lo, hi = have + 1, seq
            if run is not None:
                lo_, hi_ = max(lo, run.first), min(hi, run.last)
            if run is None or lo_ > hi_:
                unknown += hi - lo + 1
                continue
            unknown += (hi - lo + 1) - (hi_ - lo_ + 1)
            for feature, n in self._count(origin, run, lo_, hi_):
                counts[feature] = counts.get(feature, 0) + n
        return counts, unknown

    def _count(self, origin: str, run: _Origin, lo: int, hi: int) -> list[tuple[str, int]]:
        """How many of the origin's commits lo..hi (all known) wrote each feature."""
        key = (origin, lo, hi)
        found = self._counted.get(key)
        if found is None:
            found = []
            for feature, seqs in run.seqs.items():
                n = bisect_right(seqs, hi) - bisect_left(seqs, lo)
                if n:
                    found.append((feature, n))
            if len(self._counted) >= MEMO:
                self._counted = {}
            self._counted[key] = found
        return found


@dataclass(frozen=True, slots=True)
class Sync:
    state: str  # in_sync | changes_pending | disconnected | refused | awaiting... | diverged
    text: str
    action: str
    behind: int | None = None  # commits it holds that this machine lacks (None: no link)
    ahead: int | None = None  # commits this machine holds that it lacks
    reason: str | None = None
    # feature -> {"ahead": commits}; None: not counted (``recent`` not given)
    features: dict[str, dict[str, int]] | None = field(default_factory=dict)
    features_unknown: int | None = 0  # commits ahead whose features are not known here

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "text": self.text,
            "behind": self.behind,
            "ahead": self.ahead,
            "reason": self.reason,
            "action": self.action,
            "features": self.features,
            "features_unknown": self.features_unknown,
        }


def _commits(n: int) -> str:
    return f"{n:,} commit{'' if n == 1 else 's'}"


def sync_state(
    peer: Peer,
    ours: Mapping[str, int],
    *,
    here_disconnected: bool = False,
    admitted: CommitId | None = None,
    route: str | None = None,
    recent: Recent | None = None,
    diverged: Mapping[str, Any] | None = None,
) -> Sync:
    """The sync state of ``peer`` (see the module's table).  ``ours``: this machine's
    version vector; ``admitted``: the commit of the member's ``machines`` row;
    ``route``: how a message reaches it without a direct link ("via HOST"), if any;
    ``recent``: without it, the features ahead are not counted (``None``): what is
    polled often (a catch-up's progress, the web page's events) leaves them out.
    ``diverged``: the divergence with it that stands (``node.divergence``), if any."""
    name, link = peer.hostname, peer.state
    if link == "refused":  # (the dialer's reason says "refused by NAME: ..." already)
        why = peer.reason.removeprefix(f"refused by {name}: ")
        return Sync(REFUSED, f"Refused ({why})", _refused_action(peer), reason=peer.reason)
    if here_disconnected:
        return Sync(DISCONNECTED, "Disconnected (this machine, on purpose)",
                    "Reconnect this machine when it should sync again: clusterconfig "
                    "reconnect.", reason="this machine is disconnected on purpose")  # fmt: skip
    if peer.admin_off:
        return Sync(DISCONNECTED, "Disconnected (on purpose)",
                    f"Reconnect it when it should sync again: clusterconfig reconnect {name} "
                    "(from any member, or on it).",
                    reason=f"{name} is disconnected on purpose")  # fmt: skip
    if link != "up":
        never = admitted is not None and peer.vv.get(admitted.origin, 0) < admitted.seq
        if never and not ours.get(peer.serial, 0):
            return Sync(AWAITING, "Awaiting Initial Sync",
                        f"Wait for its first link: {name} links to every member once its "
                        "daemon runs after the join. If it does not, check that clusterd runs "
                        "there and that the two reach each other (clusterconfig connstatus).",
                        reason=peer.reason or None)  # fmt: skip
        why = "; ".join(filter(None, [peer.reason, f"reached {route}" if route else ""]))
        return Sync(DISCONNECTED, f"Disconnected ({why})" if why else "Disconnected",
                    f"Check the network to {name} and that its daemon runs (clusterconfig "
                    "connstatus shows its address and DNS); it catches up by itself once "
                    "linked.", reason=peer.reason or None)  # fmt: skip
    behind, ahead = commits_behind(ours, peer.vv), commits_behind(peer.vv, ours)
    if diverged is not None:
        units = ", ".join(diverged["units"])
        return Sync(DIVERGED, f"Diverged ({units})",
                    f"{name} holds the same commits and another value of {units}; here it is "
                    "what its verified commit wrote. Read the status of "
                    f"{name} (corruption): if it names the unit, it is corrupt there and "
                    f"serves no sync: rejoin it (clusterconfig removemachine {name}, then join "
                    "it again). Run clustercheck.",
                    behind, ahead, reason=f"its entry of {units} differs")  # fmt: skip
    if not behind and not ahead:
        return Sync(IN_SYNC, "In Sync", "None.", 0, 0)
    counts, unknown = recent.ahead(ours, peer.vv) if ahead and recent else ({}, 0)
    counted = recent is not None or not ahead
    if behind and ahead:
        text, who = f"{_commits(behind)} behind, {ahead:,} ahead", "each is fetching from the other"
    elif behind:
        text, who = f"{_commits(behind)} behind", f"this machine is fetching them from {name}"
    else:
        text = f"{_commits(ahead)} ahead"
        who = f"{name} is fetching them from this machine (or has them: its next ping says)"
    return Sync(CHANGES_PENDING, f"Changes Pending ({text})",
                f"Wait: {who}. If it stays so for more than a few ping intervals, read the "
                f"daemon logs (tail, here and on {name}).", behind, ahead,
                features={f: {"ahead": n} for f, n in sorted(counts.items())} if counted else None,
                features_unknown=unknown if counted else None)  # fmt: skip


def _refused_action(peer: Peer) -> str:
    """What to do about a refused handshake, from its code (``mesh.protocol``)."""
    name, code = peer.hostname, peer.refusal
    if code in ("version", "protocol-version"):
        return (f"Make {name} and this machine run one clusterd version: upgrade the older "
                "(the 'upgrade' command shows who runs what; docs/upgrade.md). The link comes "
                "up by itself then.")  # fmt: skip
    if code == "unknown":
        return (f"Membership differs: one of the two does not list the other. Compare "
                f"'clusterconfig list' here and on {name}; a member removed from the cluster "
                "joins again.")  # fmt: skip
    if code == "cluster":
        return (f"{name} is in another cluster: remove it here (clusterconfig removemachine "
                f"{name}), or have it leave that cluster and join this one.")  # fmt: skip
    if code == "key" and "was removed from the cluster" in peer.reason:
        return (
            "This machine was removed from the cluster: run 'clusterconfig "
            "removemachine' with its own name here to leave for good, or join again."
        )
    return (f"The keys differ from those membership records for {name} or for this machine "
            "(re-initialised? removed?): the reason says which. Remove the machine whose keys "
            "changed (clusterconfig removemachine) and join it again.")  # fmt: skip
