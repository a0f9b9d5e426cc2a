"""Divergence found on its own: a peer with the same commits and another state.

The protocol says when a peer's state root differs from ours at the same durable
version vector (``clusterd.mesh.statedigest``).  Then, one narrowing at a time per
peer, this machine asks it ``tree`` queries (answered from memory on both sides:
``core.unitdigest``) down to the units that differ, and checks each against its own
log, in a thread (``Store.check_entry``: the winning commit, its seal verified, the
value it wrote):

* the entry here differs from its verified log: this member is **corrupt** there.
  Alert "corruption" naming the unit and the peer; listed in ``status`` (``corruption``)
  and by clustercheck; this member serves no sync page nor state transfer while any
  unit is quarantined (the asker takes them from another member).  No repair: the
  action is to rejoin this member (remove it, join it again);
* the entry here is what its verified commit wrote (or there is none): the peer's is
  suspect. Alert "divergence"; its sync state is Diverged (``node.syncstate``);
* the commit is no longer in the log, or its seal does not verify: this side cannot
  tell. Listed in ``corruption`` as "unverifiable", not quarantined.

Both members of a pair narrow (each decides only about its own entries). A peer's
malformed answer stops the narrowing with a log line; nothing changes.  Everything
clears when the two roots agree again at the same vector.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from clusterd.core.errors import ClusterdError
from clusterd.core.unitdigest import parse_answer, step
from clusterd.core.versions import Unit
from clusterd.mesh.statedigest import StateDiffers

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

log = logging.getLogger("clusterd.daemon")
MAX_QUERIES = 64  # tree queries in one narrowing (a unit takes 4)
MAX_UNITS = 16  # units checked from one narrowing


class NarrowingFailed(Exception):
    def __init__(self, text: str, *, again: bool = False) -> None:
        super().__init__(text)
        self.again = again  # worth trying at the next ping (a state moved)


class Divergence:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.narrowing: dict[str, asyncio.Task[None]] = {}  # peer serial -> its narrowing
        # (unit, peer serial) -> {unit, with, verdict, why, since}: entries here that
        # differ from a peer's, and this side found them wrong or could not tell
        self.corrupt: dict[tuple[Unit, str], dict[str, Any]] = {}
        self.diverged: dict[str, dict[str, Any]] = {}  # peer -> {units, since}
        self.again: set[str] = set()  # peers to compare again once their narrowing ends

    @property
    def quarantined(self) -> bool:
        """Whether an entry here differs from its verified log: no serving syncs."""
        return any(c["verdict"] == "differs" for c in self.corrupt.values())

    def news(self, news: StateDiffers) -> None:
        peer = news.peer
        if not news.differs:
            self._clear(peer)
            return
        if peer in self.narrowing:
            self.again.add(peer)  # one at a time: compared again once it ends
            return
        task = asyncio.get_running_loop().create_task(self._narrow(peer))
        self.narrowing[peer] = task
        task.add_done_callback(lambda _t: self._ended(peer))

    def _ended(self, peer: str) -> None:
        self.narrowing.pop(peer, None)
        if peer in self.again:  # the roots moved meanwhile: the next ping tells again
            self.again.discard(peer)
            self.d.node.sd.told.pop(peer, None)

    def status(self) -> list[dict[str, Any]]:
        return [dict(c) for _, c in sorted(self.corrupt.items(), key=lambda kv: kv[1]["since"])]

    def diverged_with(self, peer: str) -> dict[str, Any] | None:
        return self.diverged.get(peer)

    def _name(self, serial: str) -> str:
        peer = self.d.node.peers.get(serial)
        return serial if peer is None else peer.hostname

    def _clear(self, peer: str) -> None:
        gone = [k for k in self.corrupt if k[1] == peer]
        for k in gone:
            del self.corrupt[k]
        if self.diverged.pop(peer, None) is not None or gone:
            log.info("%s holds the same state as this member again", self._name(peer))

    async def _narrow(self, peer: str) -> None:
        name = self._name(peer)
        try:
            units = await self.narrow(peer)
        except NarrowingFailed as exc:
            log.warning("divergence with %s not narrowed: %s", name, exc)
            if exc.again:
                self.again.add(peer)
            return
        if not units:
            return
        keys = self.d.store.keys()  # (on the loop, where memory changes)
        fine: list[str] = []
        corrupt: dict[tuple[Unit, str], dict[str, Any]] = {}
        for unit in units:
            try:
                verdict, why = await asyncio.to_thread(self.d.store.check_entry, unit, keys)
            except ClusterdError as exc:
                log.warning("divergence with %s: %s not checked: %s", name, unit, exc)
                continue
            if verdict in ("ok", "absent"):
                fine.append(str(unit))
                continue
            before = self.corrupt.get((unit, peer))
            since = before["since"] if before else time.time()
            corrupt[(unit, peer)] = {"unit": str(unit), "with": name, "verdict": verdict,
                                     "why": why, "since": since}  # fmt: skip
            if before is not None:
                continue  # said already (a later commit elsewhere narrows to it again)
            if verdict == "differs":
                text = (f"{unit}: this member's entry differs from its verified log ({why}), "
                        f"and from {name}'s: corrupt here. It serves no sync while so; rejoin "
                        "this member (clusterconfig removemachine, then join again)")  # fmt: skip
            else:
                text = (f"{unit}: this member's entry differs from {name}'s and cannot be "
                        f"checked here ({why}): run clustercheck, then rejoin the member in "
                        "doubt")  # fmt: skip
            self.d.alert("corruption", name, text)
        # What this narrowing found replaces what the last one found with this peer.
        for gone in [k for k in self.corrupt if k[1] == peer and k not in corrupt]:
            del self.corrupt[gone]
        self.corrupt.update(corrupt)
        was = self.diverged.pop(peer, None)
        if not fine:
            return
        self.diverged[peer] = {"units": fine, "since": was["since"] if was else time.time()}
        new = [u for u in fine if was is None or u not in was["units"]]
        if new:
            self.d.alert("divergence", name, f"{name} holds another state of {', '.join(new)} "
                         "at the same commits; here it is what its verified commit wrote: the "
                         f"copy on {name} is suspect (its status says)")  # fmt: skip

    async def narrow(self, peer: str) -> list[Unit]:
        """The units whose leaves differ between this machine and ``peer`` (at most
        ``MAX_UNITS``); NarrowingFailed when the peer does not answer, answers garbage,
        or a state moved meanwhile."""
        queue: list[dict[str, Any]] = [{}]
        roots: tuple[str, str] | None = None
        named: list[Unit] = []
        asked = 0
        while queue and len(named) < MAX_UNITS:
            if asked >= MAX_QUERIES:
                raise NarrowingFailed(f"more than {MAX_QUERIES} tree queries")
            args = queue.pop(0)
            asked += 1
            answer = await self.d.ask(peer, "tree", args, self.d.timeout)
            if not answer.ok:
                raise NarrowingFailed(f"no answer to a tree query: {answer.body}")
            try:
                theirs_root, theirs = parse_answer(answer.body)
                ours_root, ours = parse_answer(self.d.store.digests.tree(args))
                if roots is None:
                    roots = (theirs_root, ours_root)
                    if theirs_root == ours_root:
                        return []  # the same again
                elif roots != (theirs_root, ours_root):
                    raise NarrowingFailed("a state changed meanwhile", again=True)
                more, units = step(args, ours, theirs)
            except ValueError as exc:
                raise NarrowingFailed(f"a malformed tree answer: {exc}") from None
            queue += more
            named += units
        return named[:MAX_UNITS]
