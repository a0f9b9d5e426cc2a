"""One member of the mesh, whatever carries its links: the protocol ``Node``, its
frames, and the driving of every action the node returns.

The daemon (``clusterd.node.daemon``, links over SSH) and the in-memory simulation
(``clusterd.mesh.transport.memory``) both drive this class, so the simulation runs the
code that ships.  What differs between them is given, not copied:

* a ``Host``: the member's machine (its store and what it does with alerts, questions
  and membership changes);
* a ``Transport``: how a link is dialled; each open link is a ``Wire``;
* a clock.

Every event goes to the node; ``execute`` carries out what it answers, in order, and
then lets membership follow once if the batch changed it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from clusterd.core.errors import BadCommit, ProtocolError
from clusterd.core.versions import Commit
from clusterd.mesh.messages import FrameReader, SnapshotBody, decode_body, encode
from clusterd.mesh.peers import (
    Action,
    Alert,
    Answered,
    Apply,
    Ask,
    Close,
    Dial,
    HeadsDiffer,
    Install,
    Log,
    LogPages,
    Note,
    Page,
    ReadLog,
    Reconnect,
    Send,
)
from clusterd.mesh.protocol import Node
from clusterd.mesh.statedigest import StateDiffers

log = logging.getLogger("clusterd.daemon")


class Wire(Protocol):
    """One open link, as its transport carries it."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    def dial(self, peer: str) -> None:
        """Open a link to ``peer``: later ``Member.opened``, or ``Member.dial_failed``."""


class Host(Protocol):
    """The member's machine: its store, and what it does with what the links bring."""

    @property
    def log(self) -> Log: ...

    def apply(self, commits: list[Commit], peer: str) -> None:
        """Take commits from a peer: durable now, or once the store's writer wrote them
        (the daemon's); BadCommit refuses them (and the link)."""

    def install(self, body: SnapshotBody, peer: str) -> None:
        """Merge a peer's state transfer; BadCommit refuses it."""

    def read_log(self, link: int, vv: Mapping[str, int], limit: int) -> Page | None:
        """A page of the log for a sync request on ``link`` (``page``): now, or None to
        give it later with ``Member.log_read`` (the daemon reads it in a thread)."""

    def ask(self, peer: str, qid: int, kind: str, args: Mapping[str, Any]) -> Any:
        """Answer a peer's question: ``(ok, body)`` now, or None to answer later with
        ``Member.reply``."""

    def alert(self, alert: Alert) -> None: ...
    def note(self, text: str) -> None: ...
    def answered(self, answer: Answered) -> None: ...
    def reconnect(self, by: str) -> None:
        """A peer has seen a RECONNECT of this machine that we missed (after this
        batch: its goodbye and close come first)."""

    def follow(self, node: Node, now: float) -> list[Action]:
        """Membership changed: what the links do about it (``clusterd.mesh.members``)."""

    def state_differs(self, news: StateDiffers) -> None:
        """A peer holds the same commits and another state, or no longer does
        (``clusterd.mesh.statedigest``)."""

    def heads_differ(self, peer: str) -> None:
        """``peer``'s chain heads differ from ours at the same vector: narrow it down
        and report it with ``Node.forked`` (``clusterd.node.witnessing``)."""


def page(log: LogPages, vv: Mapping[str, int], limit: int) -> Page:
    """What a holder of ``vv`` lacks: at most ``limit`` commits, or the whole state when
    the log was truncated past one of them."""
    missing = log.missing_from(dict(vv), limit)
    return log.snapshot() if missing is None else missing


# A frame this large (a state transfer) is decoded by ``Member.offload`` when there is
# one (the daemon's: a thread), so that the links' loop does not stop for it.
BIG_FRAME = 1024 * 1024

# Runs a job elsewhere and gives its result, or the exception it raised, to ``done`` on
# the member's own thread.
Offload = Callable[[Callable[[], Any], Callable[[Any], None]], None]


class Member:
    def __init__(
        self,
        node: Node,
        host: Host,
        transport: Transport,
        clock: Callable[[], float],
        offload: Offload | None = None,
    ):
        self.node = node
        self.host = host
        self.transport = transport
        self.now = clock
        self.offload = offload
        self.wires: dict[int, Wire] = {}
        self.readers: dict[int, FrameReader] = {}
        # frames that arrived on a link behind a big one still being decoded: they wait
        self.backlog: dict[int, list[bytes]] = {}
        self.membership_changed = False  # set by the host; followed after the batch
        # Mesh frames and bytes (framing included, the transport's own overhead not).
        self.traffic = dict.fromkeys(("frames_out", "bytes_out", "frames_in", "bytes_in"), 0)

    def __repr__(self) -> str:
        return f"<Member {self.node!r}>"

    # -- events ---------------------------------------------------------------------------

    def start(self) -> None:
        self.execute(self.node.start(self.now()))

    def stop(self) -> None:
        self.execute(self.node.stop(self.now()))

    def tick(self) -> None:
        self.execute(self.node.tick(self.now()))

    def committed(self, commits: Iterable[Commit]) -> None:
        """Commits made here, durable: to every member."""
        for commit in commits:
            self.execute(self.node.committed(commit, self.now()))

    def opened(self, link: int, wire: Wire, peer: str, outbound: bool) -> None:
        self.wires[link] = wire
        self.readers[link] = FrameReader()
        self.execute(self.node.link_opened(link, self.now(), peer=peer, outbound=outbound))

    def data(self, link: int, data: bytes) -> None:
        reader = self.readers.get(link)
        if reader is None or link not in self.node.links:
            return
        self.traffic["bytes_in"] += len(data)
        try:
            bodies = reader.feed(data)
        except ProtocolError as exc:
            self.execute(self.node.frame_error(link, self.now(), exc))
            return
        self.traffic["frames_in"] += len(bodies)
        waiting = self.backlog.get(link)
        if waiting is not None:
            waiting.extend(bodies)  # behind a big frame of this link: in order
            return
        self._frames(link, bodies)

    def _frames(self, link: int, bodies: list[bytes]) -> None:
        for i, body in enumerate(bodies):
            if link not in self.node.links:
                return
            if self.offload is not None and len(body) >= BIG_FRAME:
                self.backlog[link] = bodies[i + 1 :]
                self.offload(functools.partial(decode_body, body),
                             functools.partial(self._decoded, link))  # fmt: skip
                return
            try:
                msg = decode_body(body)
            except ProtocolError as exc:
                self.execute(self.node.frame_error(link, self.now(), exc))
                return
            self.execute(self.node.received(link, msg, self.now()))

    def _decoded(self, link: int, found: Any) -> None:
        """A big frame decoded: it, then the frames that waited behind it."""
        rest = self.backlog.pop(link, None)
        if rest is None or link not in self.node.links:
            return
        if isinstance(found, ProtocolError):
            self.execute(self.node.frame_error(link, self.now(), found))
            return
        if isinstance(found, BaseException):
            raise found
        self.execute(self.node.received(link, found, self.now()))
        self._frames(link, rest)

    def closed(self, link: int, reason: str) -> None:
        self.wires.pop(link, None)
        self.readers.pop(link, None)
        self.backlog.pop(link, None)
        if link in self.node.links:
            self.execute(self.node.link_closed(link, self.now(), reason))

    def dial_failed(self, peer: str, kind: str, reason: str) -> None:
        p = self.node.peers.get(peer)
        if p is not None and p.dialing:
            self.execute(self.node.dial_failed(peer, self.now(), kind, reason))

    def dialing(self, peer: str) -> bool:
        """Whether a dial to ``peer`` is still wanted (it may have been removed)."""
        p = self.node.peers.get(peer)
        return p is not None and p.dialing

    def reply(self, peer: str, qid: int, ok: bool, body: Any) -> None:
        if peer in self.node.peers:
            self.execute(self.node.answer(peer, qid, ok, body, self.now()))

    def log_read(self, link: int, page: Page, frame: bytes | None = None) -> None:
        """``frame``: the page's frame, encoded already (a state transfer, by the daemon
        in a thread)."""
        self.execute(self.node.log_read(link, page, self.now()),
                     {id(page): frame} if frame is not None else None)  # fmt: skip

    def call(self, event: Callable[[Node], list[Action]]) -> None:
        """Feed any other event to the node and carry out what it asks."""
        self.execute(event(self.node))

    # -- actions --------------------------------------------------------------------------

    def execute(self, actions: list[Action], encoded: dict[int, bytes] | None = None) -> None:
        frames = encoded or {}  # id(message) -> its frame, for this batch
        for action in actions:
            self._execute(action, frames)
        if self.membership_changed:
            self.membership_changed = False
            self.execute(self.host.follow(self.node, self.now()))

    def _execute(self, action: Action, frames: dict[int, bytes]) -> None:
        match action:
            case Send(link, msg):
                wire = self.wires.get(link)
                if wire is not None:
                    data = frames.get(id(msg))
                    if data is None:  # (a commit to every member is encoded once)
                        data = frames[id(msg)] = encode(msg)
                    self.traffic["frames_out"] += 1
                    self.traffic["bytes_out"] += len(data)
                    wire.write(data)
            case Close(link, reason):
                wire = self.wires.get(link)
                if wire is not None:
                    log.info("closing link %d: %s", link, reason)
                    wire.close()
            case Dial(peer):
                self.transport.dial(peer)
            case Apply(commits, peer):
                self._refusing(peer, self.host.apply, list(commits))
            case Install(body, peer):
                self._refusing(peer, self.host.install, body)
            case Alert():
                self.host.alert(action)
            case Note(text):
                self.host.note(text)
            case Ask(peer, qid, kind, args):
                answer = self.host.ask(peer, qid, kind, args)
                if answer is not None:
                    self.reply(peer, qid, *answer)
            case Answered():
                self.host.answered(action)
            case Reconnect(by):
                self.host.reconnect(by)
            case StateDiffers():
                self.host.state_differs(action)
            case HeadsDiffer(peer):
                self.host.heads_differ(peer)
            case ReadLog(link, vv, limit):
                found = self.host.read_log(link, vv, limit)
                if found is not None:
                    self.log_read(link, found)

    def _refusing(self, peer: str, take: Callable[[Any, str], None], what: Any) -> None:
        """Hand the host what a peer sent; a bad commit refuses that peer."""
        try:
            take(what, peer)
        except BadCommit as exc:
            self.execute(self.node.rejected(peer, self.now(), "; ".join(exc.problems[:3])))
