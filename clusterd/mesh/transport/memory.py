"""An in-memory network of mesh members, in virtual time, with seeded faults.

One process, one ``random.Random(seed)``: the same seed replays the same run exactly.
Each member is the shipped ``clusterd.mesh.member.Member`` (the daemon drives the same
class over SSH); this module is only its transport and its clock.  Faults: frames
dropped, duplicated, delayed or reordered; members partitioned (their frames vanish,
like a black hole); members crashed (links reset or silent) and restarted with a fresh
``Node`` over the same persistent host.  Frames travel as the bytes the member encodes,
so the simulation also exercises framing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterd.core.versions import Commit
from clusterd.mesh.member import Member, page
from clusterd.mesh.messages import SnapshotBody
from clusterd.mesh.peers import Action, Alert, Answered, LogPages, Page
from clusterd.mesh.protocol import Node
from clusterd.mesh.statedigest import StateDiffers


class Host(Protocol):
    """The persistent side of a simulated member (its store), kept across crashes."""

    member: Member | None  # the member running over it now (set at each start)

    @property
    def log(self) -> LogPages: ...

    def apply(self, commits: list[Commit], peer: str) -> None: ...
    def install(self, body: SnapshotBody, peer: str) -> None: ...
    def answer(self, kind: str, args: Mapping[str, Any]) -> tuple[bool, Any]: ...
    def reconnect(self, by: str) -> None: ...
    def follow(self, node: Node, now: float) -> list[Action]: ...


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance that a frame is held back by up to ``hold`` seconds
    hold: float = 0.5
    latency: tuple[float, float] = (0.0005, 0.003)


@dataclass
class SimMember:
    """One member's place in the network: its host, its running ``Member`` and what
    that member reported (a ``clusterd.mesh.member.Host`` and ``Transport``)."""

    net: Network
    serial: str
    host: Host
    factory: Callable[[], Node]
    member: Member = field(init=False)
    alive: bool = False
    incarnation: int = 0
    alerts: list[Alert] = field(default_factory=list)
    answers: list[Answered] = field(default_factory=list)
    differs: list[StateDiffers] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fresh()

    def fresh(self) -> None:
        self.member = Member(self.factory(), self, self, lambda: self.net.now)
        self.host.member = self.member

    @property
    def node(self) -> Node:
        return self.member.node

    @property
    def log(self) -> LogPages:
        return self.host.log

    # -- as the member's host and transport ---------------------------------------------

    def apply(self, commits: list[Commit], peer: str) -> None:
        self.host.apply(commits, peer)

    def install(self, body: SnapshotBody, peer: str) -> None:
        self.host.install(body, peer)

    def read_log(self, link: int, vv: Mapping[str, int], limit: int) -> Page:
        return page(self.host.log, vv, limit)

    def ask(self, peer: str, qid: int, kind: str, args: Mapping[str, Any]) -> Any:
        return self.host.answer(kind, args)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def note(self, text: str) -> None:
        self.net.log.append(f"{self.net.now:9.3f} {self.serial}: {text}")

    def answered(self, answer: Answered) -> None:
        self.answers.append(answer)

    def state_differs(self, news: StateDiffers) -> None:
        self.differs.append(news)

    def reconnect(self, by: str) -> None:
        incarnation = self.incarnation

        def later() -> None:
            if self.net.live(self, incarnation):
                self.host.reconnect(by)

        self.net.at(0.0, later)

    def follow(self, node: Node, now: float) -> list[Action]:
        return self.host.follow(node, now)

    def heads_differ(self, peer: str) -> None:  # (narrowing needs the daemon's threads)
        self.note(f"chain heads of {peer} differ from ours at the same vector")

    def dial(self, peer: str) -> None:
        self.net.dial(self, peer)


@dataclass
class End:
    """One end of a link: the ``Wire`` its member writes to."""

    net: Network
    id: int
    owner: str
    peer: str
    incarnation: int
    other: int = 0
    open: bool = True

    def write(self, data: bytes) -> None:
        self.net.send(self, data)

    def close(self) -> None:
        self.net.close(self)


class Network:
    def __init__(self, seed: int, faults: Faults | None = None) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.now = 0.0
        self.members: dict[str, SimMember] = {}
        self.ends: dict[int, End] = {}
        self.blocked: set[frozenset[str]] = set()
        self.frames = 0
        self.log: list[str] = []
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)

    # -- set-up and faults ----------------------------------------------------------------

    def add(self, serial: str, host: Host, factory: Callable[[], Node]) -> SimMember:
        member = self.members[serial] = SimMember(self, serial, host, factory)
        return member

    def start(self, serial: str, tick: float) -> None:
        m = self.members[serial]
        m.alive = True
        m.member.start()
        self._ticks(m, m.incarnation, tick, first=self.rng.uniform(0, tick))

    def crash(self, serial: str) -> None:
        m = self.members[serial]
        m.alive = False
        m.incarnation += 1
        reset = self.rng.random() < 0.5  # else silent: peers find out by missed pings
        for end in self.ends.values():
            if end.owner == serial and end.open:
                end.open = False
                if reset:
                    self._close_other(end, "connection reset by peer")

    def restart(self, serial: str, tick: float) -> None:
        self.members[serial].fresh()
        self.start(serial, tick)

    def partition(self, side: Sequence[str]) -> None:
        inside = set(side)
        for a in inside:
            for b in self.members:
                if b not in inside:
                    self.blocked.add(frozenset((a, b)))

    def block(self, a: str, b: str) -> None:
        self.blocked.add(frozenset((a, b)))

    def heal(self) -> None:
        self.blocked.clear()

    # -- driving ------------------------------------------------------------------------

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (self.now + delay, next(self._seq), fn))

    def run_until(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            when, _, fn = heapq.heappop(self._events)
            self.now = when
            fn()
        self.now = max(self.now, until)

    def call(self, serial: str, event: Callable[[Node], list[Action]]) -> None:
        """Feed any event to a member's node and carry out what it asks."""
        self.members[serial].member.call(event)

    def live(self, m: SimMember, incarnation: int) -> bool:
        return m.alive and m.incarnation == incarnation

    def _ticks(self, m: SimMember, incarnation: int, every: float, first: float) -> None:
        def tick() -> None:
            if self.live(m, incarnation):
                m.member.tick()
                self.at(every, tick)

        self.at(first, tick)

    # -- the transport --------------------------------------------------------------------

    def _latency(self) -> float:
        f = self.faults
        delay = self.rng.uniform(*f.latency)
        if f.reorder and self.rng.random() < f.reorder:
            delay += self.rng.uniform(0, f.hold)
        return delay

    def send(self, end: End, data: bytes) -> None:
        if not end.open or frozenset((end.owner, end.peer)) in self.blocked:
            return
        f = self.faults
        if f.drop and self.rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            self.at(self._latency(), lambda: self._deliver(self.ends[end.other], data))

    def _deliver(self, end: End, data: bytes) -> None:
        m = self.members[end.owner]
        if not end.open or not self.live(m, end.incarnation):
            return
        self.frames += 1
        m.member.data(end.id, data)

    def close(self, end: End) -> None:
        if not end.open:
            return
        end.open = False
        m = self.members[end.owner]
        self.at(0.0, lambda: self._closed(m, end, "closed here"))
        self._close_other(end, "closed by peer")

    def _close_other(self, end: End, reason: str) -> None:
        other = self.ends[end.other]

        def closed() -> None:
            if other.open:
                other.open = False
                self._closed(self.members[other.owner], other, reason)

        self.at(self._latency(), closed)

    def _closed(self, m: SimMember, end: End, reason: str) -> None:
        if self.live(m, end.incarnation):
            m.member.closed(end.id, reason)

    def dial(self, m: SimMember, peer: str) -> None:
        target = self.members.get(peer)
        incarnation = m.incarnation

        def dialing() -> bool:  # still ours to report (the peer may have been removed)
            return self.live(m, incarnation) and m.member.dialing(peer)

        def fail(reason: str) -> None:
            if dialing():
                m.member.dial_failed(peer, "connection failure", reason)

        if (
            target is None
            or not target.alive
            or frozenset((m.serial, peer)) in self.blocked
            or self.rng.random() < self.faults.drop
        ):
            self.at(self.rng.uniform(0.01, 0.3), lambda: fail(f"cannot connect to {peer}"))
            return
        a, b = next(self._ids), next(self._ids)
        ours = self.ends[a] = End(self, a, m.serial, peer, incarnation, other=b)
        theirs = self.ends[b] = End(self, b, peer, m.serial, target.incarnation, other=a)

        def opened() -> None:
            if not dialing():
                ours.open = False
                self._close_other(ours, "dialer went away")
                return
            if not self.live(target, theirs.incarnation):
                ours.open = theirs.open = False
                fail(f"{peer} went away")
                return
            target.member.opened(b, theirs, m.serial, outbound=False)
            m.member.opened(a, ours, peer, outbound=True)

        self.at(self._latency(), opened)
