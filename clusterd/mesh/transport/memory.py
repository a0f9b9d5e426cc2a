"""An in-memory network of protocol nodes, in virtual time, with seeded faults.

One process, one ``random.Random(seed)``: the same seed replays the same run exactly.
Faults: frames dropped, duplicated, delayed or reordered; members partitioned (their
frames vanish, like a black hole); members crashed (links reset or silent) and
restarted with a fresh ``Node`` over the same persistent host.  Frames go through the
real wire encoding (``wire=True``) so the simulation also exercises framing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterd.core.errors import ProtocolError
from clusterd.core.versions import Commit, Snapshot
from clusterd.mesh.messages import FrameReader, Message, decode_body, encode
from clusterd.mesh.peers import (
    Action,
    Alert,
    Answered,
    Apply,
    Ask,
    Close,
    Dial,
    Install,
    Log,
    Note,
    Reconnect,
    Send,
)
from clusterd.mesh.protocol import Node


class Host(Protocol):
    """The persistent side of a simulated member (its store)."""

    log: Log

    def apply(self, commits: Sequence[Commit]) -> None: ...
    def install(self, snapshot: Snapshot) -> None: ...
    def answer(self, kind: str, args: Mapping[str, Any]) -> tuple[bool, Any]: ...
    def reconnect(self, by: str) -> None: ...


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance that a frame is held back by up to ``hold`` seconds
    hold: float = 0.5
    latency: tuple[float, float] = (0.0005, 0.003)


@dataclass
class SimMember:
    serial: str
    host: Host
    factory: Callable[[], Node]
    node: Node
    alive: bool = False
    incarnation: int = 0
    alerts: list[Alert] = field(default_factory=list)
    answers: list[Answered] = field(default_factory=list)


@dataclass
class End:
    owner: str
    peer: str
    incarnation: int
    other: int = 0
    open: bool = True
    reader: FrameReader = field(default_factory=FrameReader)


class Network:
    def __init__(self, seed: int, faults: Faults | None = None, *, wire: bool = True) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.wire = wire
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
        member = self.members[serial] = SimMember(serial, host, factory, factory())
        return member

    def start(self, serial: str, tick: float) -> None:
        m = self.members[serial]
        m.alive = True
        self._do(m, m.node.start(self.now))
        self._ticks(m, m.incarnation, tick, first=self.rng.uniform(0, tick))

    def crash(self, serial: str) -> None:
        m = self.members[serial]
        m.alive = False
        m.incarnation += 1
        reset = self.rng.random() < 0.5  # else silent: peers find out by missed pings
        for end_id, end in self.ends.items():
            if end.owner == serial and end.open:
                end.open = False
                if reset:
                    self._close_other(end_id, "connection reset by peer")

    def restart(self, serial: str, tick: float) -> None:
        m = self.members[serial]
        m.node = m.factory()
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

    def commit(self, serial: str, commit: Commit) -> None:
        m = self.members[serial]
        self._do(m, m.node.committed(commit, self.now))

    def call(self, serial: str, event: Callable[[Node], list[Action]]) -> None:
        """Feed any event to a member's node and carry out what it asks."""
        m = self.members[serial]
        self._do(m, event(m.node))

    # -- actions ------------------------------------------------------------------------

    def _do(self, m: SimMember, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(link, msg):
                    self._send(link, msg)
                case Close(link, reason):
                    self._close(m, link, reason)
                case Dial(peer):
                    self._dial(m, peer)
                case Apply(commits, _):
                    m.host.apply(commits)
                case Install(snapshot, _):
                    m.host.install(snapshot)
                case Alert():
                    m.alerts.append(action)
                case Note(text):
                    self.log.append(f"{self.now:9.3f} {m.serial}: {text}")
                case Ask(peer, qid, kind, args):
                    ok, body = m.host.answer(kind, args)
                    self._do(m, m.node.answer(peer, qid, ok, body, self.now))
                case Answered():
                    m.answers.append(action)
                case Reconnect(by):
                    self.at(0.0, self._reconnect(m, by))

    def _reconnect(self, m: SimMember, by: str) -> Callable[[], None]:
        def later() -> None:
            if m.alive:
                m.host.reconnect(by)

        return later

    def _live(self, m: SimMember, incarnation: int) -> bool:
        return m.alive and m.incarnation == incarnation

    def _ticks(self, m: SimMember, incarnation: int, every: float, first: float) -> None:
        def tick() -> None:
            if self._live(m, incarnation):
                self._do(m, m.node.tick(self.now))
                self.at(every, tick)

        self.at(first, tick)

    def _latency(self) -> float:
        f = self.faults
        delay = self.rng.uniform(*f.latency)
        if f.reorder and self.rng.random() < f.reorder:
            delay += self.rng.uniform(0, f.hold)
        return delay

    def _send(self, link: int, msg: Message) -> None:
        end = self.ends.get(link)
        if end is None or not end.open or frozenset((end.owner, end.peer)) in self.blocked:
            return
        f = self.faults
        if f.drop and self.rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        data: bytes | Message = encode(msg) if self.wire else msg
        for _ in range(copies):
            self.at(self._latency(), lambda: self._deliver(end.other, data))

    def _deliver(self, end_id: int, data: bytes | Message) -> None:
        end = self.ends[end_id]
        m = self.members[end.owner]
        if not end.open or not self._live(m, end.incarnation):
            return
        self.frames += 1
        if isinstance(data, Message):
            self._do(m, m.node.received(end_id, data, self.now))
            return
        try:
            bodies = end.reader.feed(data)
            for body in bodies:
                msg = decode_body(body)
                self._do(m, m.node.received(end_id, msg, self.now))
        except ProtocolError as exc:
            if end.open:
                self._do(m, m.node.frame_error(end_id, self.now, exc))

    def _close(self, m: SimMember, link: int, reason: str) -> None:
        end = self.ends.get(link)
        if end is None or not end.open:
            return
        end.open = False
        incarnation = end.incarnation
        self.at(0.0, lambda: self._closed(m, incarnation, link, "closed here"))
        self._close_other(link, reason)

    def _close_other(self, link: int, reason: str) -> None:
        other_id = self.ends[link].other
        other = self.ends[other_id]

        def closed() -> None:
            if other.open:
                other.open = False
                self._closed(self.members[other.owner], other.incarnation, other_id, reason)

        self.at(self._latency(), closed)

    def _closed(self, m: SimMember, incarnation: int, link: int, reason: str) -> None:
        if self._live(m, incarnation) and link in m.node.links:
            self._do(m, m.node.link_closed(link, self.now, reason))

    def _dial(self, m: SimMember, peer: str) -> None:
        target = self.members.get(peer)
        incarnation = m.incarnation

        def dialing() -> bool:  # still ours to report (the peer may have been removed)
            p = m.node.peers.get(peer)
            return self._live(m, incarnation) and p is not None and p.dialing

        def fail(reason: str) -> None:
            if dialing():
                self._do(m, m.node.dial_failed(peer, self.now, "connection failure", reason))

        if (
            target is None
            or not target.alive
            or frozenset((m.serial, peer)) in self.blocked
            or self.rng.random() < self.faults.drop
        ):
            self.at(self.rng.uniform(0.01, 0.3), lambda: fail(f"cannot connect to {peer}"))
            return
        a, b = next(self._ids), next(self._ids)
        self.ends[a] = End(m.serial, peer, incarnation, other=b)
        self.ends[b] = End(peer, m.serial, target.incarnation, other=a)

        def opened() -> None:
            if not dialing():
                self.ends[a].open = False
                self._close_other(a, "dialer went away")
                return
            if not self._live(target, self.ends[b].incarnation):
                self.ends[a].open = self.ends[b].open = False
                fail(f"{peer} went away")
                return
            self._do(target, target.node.link_opened(b, self.now, peer=m.serial, outbound=False))
            self._do(m, m.node.link_opened(a, self.now, peer=peer, outbound=True))

        self.at(self._latency(), opened)
