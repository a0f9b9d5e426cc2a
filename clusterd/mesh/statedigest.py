"""The state root on hellos, pings and pongs (``sd``), and what a receiver makes of it.

Pure bookkeeping for ``clusterd.mesh.protocol.Node``.  The root (``core.unitdigest``)
describes the **durable** state, so a member sends it only when its durable vector is
the one it advertises (its log's ``state_root`` is None otherwise: writes take
milliseconds, the next round sends it), when it changed since the last one sent on that
link, and every ``FULL_EVERY``-th round.  A log without ``state_root`` (the pure
simulation's) sends none.

A receiver keeps the last root each peer sent with the vector it held then; whenever
its own durable vector equals that vector and its own root differs, the two hold the
same commits and different states: corruption, not lag.  It says so once per (their
root, our root), and once more when the two agree again (``StateDiffers``); its host
narrows the difference down to the units (``clusterd.node.divergence``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterd.core.unitdigest import root_text


@dataclass(frozen=True, slots=True)
class StateDiffers:
    """An action: ``peer`` holds the same commits as this member and another state
    (``differs``), or no longer does."""

    peer: str
    differs: bool


def our_root(log: Any) -> str | None:
    """The log's durable root as pings carry it, or None (none kept, or a write is
    still under way)."""
    root_of = getattr(log, "state_root", None)
    root = None if root_of is None else root_of()
    return None if root is None else root_text(root)


@dataclass(slots=True)
class StateDigests:
    sent: dict[str, tuple[int, str]] = field(default_factory=dict)  # peer -> (link, sd)
    heard: dict[str, tuple[dict[str, int], str]] = field(default_factory=dict)  # (vv, sd)
    told: dict[str, tuple[str, str]] = field(default_factory=dict)  # peer -> (theirs, ours)

    def to_send(self, peer: str, link: int, root: str | None, *, full: bool) -> str | None:
        """What the next hello, ping or pong to ``peer`` on ``link`` carries."""
        if root is None:
            return None
        if not full and self.sent.get(peer) == (link, root):
            return None
        self.sent[peer] = (link, root)
        return root

    def heard_from(
        self,
        peer: str,
        sd: str | None,
        their_vv: Mapping[str, int],
        our_vv: Mapping[str, int],
        ours: str | None,
        *,
        hello: bool = False,
    ) -> list[StateDiffers]:
        """A hello, ping or pong from ``peer`` (``sd`` as sent, ``their_vv`` the vector
        it holds): whether this starts, or ends, a divergence with it.  A hello starts
        a new link: a divergence already said is said again (and narrowed again)."""
        if hello:
            self.heard.pop(peer, None)
            self.told.pop(peer, None)
        if sd is not None:
            self.heard[peer] = (dict(their_vv), sd)
        known = self.heard.get(peer)
        if known is None or ours is None or known[0] != our_vv:
            return []
        theirs = known[1]
        before = self.told.get(peer)
        if theirs == ours:
            if before is None:
                return []
            del self.told[peer]
            return [StateDiffers(peer, False)]
        if before == (theirs, ours):
            return []
        self.told[peer] = (theirs, ours)
        return [StateDiffers(peer, True)]

    def forget(self, peer: str) -> None:
        """The peer left the cluster."""
        for kept in (self.sent, self.heard, self.told):
            kept.pop(peer, None)
