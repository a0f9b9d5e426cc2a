"""What the protocol knows about its links and peers, and what it asks its driver to do.

Plain data for ``clusterd.mesh.protocol``: no transitions happen here.  Actions are the
protocol's only output; a driver (the asyncio daemon, or the in-memory simulation)
carries them out in the order given.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterd.core.versions import Commit, Snapshot, VersionVector
from clusterd.mesh.messages import PROTOCOL_MAX, PROTOCOL_MIN, Message, SnapshotBody, StateTransfer
from clusterd.mesh.statedigest import StateDiffers


@dataclass(frozen=True, slots=True)
class Identity:
    serial: str
    hostname: str
    cluster: str
    software: str
    proto_min: int = PROTOCOL_MIN
    proto_max: int = PROTOCOL_MAX


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine of the cluster as membership records it (keys are the transport's)."""

    serial: str
    hostname: str
    disconnected: bool = False


@dataclass(frozen=True, slots=True)
class Timing:
    ping_interval: float = 60.0
    dead_after: float = 2.5  # ping intervals without a frame before a link is dropped
    backoff_min: float = 1.0
    backoff_max: float = 30.0
    handshake_timeout: float = 10.0
    sync_batch: int = 2000  # commits per sync response frame (one page per request)
    relay_ttl: int = 3
    max_dials: int = 8  # dials and outbound handshakes in flight at once (start-up storms)

    @classmethod
    def for_interval(cls, ping_interval: float) -> Timing:
        """Timings scaled to a ping interval (tests run at 0.2 s, production at 60 s)."""
        p = ping_interval
        return cls(
            ping_interval=p,
            backoff_min=min(1.0, p / 4),
            backoff_max=max(1.0, min(30.0, p)),
            handshake_timeout=max(2.0, min(10.0, 5 * p)),
        )

    def backoff(self, me: str, peer: str, attempts: int) -> float:
        """Capped exponential delay, with a jitter that is the same on every run."""
        base = min(self.backoff_max, self.backoff_min * 2.0 ** min(attempts, 30))
        jitter = zlib.crc32(f"{me}|{peer}|{attempts}".encode()) % 1000 / 2000  # [0, 0.5)
        return base * (0.75 + jitter)


@dataclass(frozen=True, slots=True)
class Flag:
    """The winning write of a member's DISCONNECT flag: its stamp and what it says."""

    hlc: int
    origin: str
    disconnected: bool


class Log(Protocol):
    """What the protocol reads from the member's state in memory.  Reading the commit
    log (a disk) is an action, ``ReadLog``, whose result comes back as an event.

    A log may also say what its durable state is (the store's, ``StoreLog``):
    ``heads_digest()``, the digest of its durable chain heads and the vector they
    describe (``clusterd.mesh.witness``), and ``state_root()``, its durable state's root
    (``clusterd.mesh.statedigest``); each None while writes are under way.  A log without
    them (the pure simulation's) sends no ``hd`` or ``sd``."""

    def version_vector(self) -> VersionVector: ...
    def flag(self, hostname: str) -> Flag | None: ...


class LogPages(Log, Protocol):
    """A log as its driver reads it for ``ReadLog`` (``clusterd.mesh.member.page``)."""

    def missing_from(self, vv: VersionVector, limit: int) -> list[Commit] | None:
        """The first ``limit`` commits a holder of ``vv`` lacks, oldest first (None: the
        log was truncated past one of them)."""

    def snapshot(self) -> Snapshot: ...


# A page of the log for one sync request: the commits the asker lacks, or, when the log
# was truncated past one of them, the whole state (a state transfer; the daemon builds
# its message, and encodes it, in a thread).
Page = list[Commit] | Snapshot | StateTransfer


class LinkState(enum.Enum):
    AWAIT_HELLO = "await-hello"  # inbound, waiting for the dialer's hello
    HELLO_SENT = "hello-sent"  # outbound, waiting for the answer
    UP = "up"
    CLOSED = "closed"  # closed by us; the transport's close event is still to come


@dataclass(slots=True)
class Link:
    id: int
    peer: str
    outbound: bool
    state: LinkState
    opened: float
    last_heard: float
    proto: int = 0
    sent_vv: dict[str, int] | None = None  # what our last ping or pong on it carried
    sent_links: tuple[str, ...] | None = None
    sent_hd: str | None = None  # the last heads digest sent on it
    # the vector the peer last sent on it (hello, ping, pong or vv): what an ``hd`` or
    # ``sd`` in a frame without a vector describes (frames on one link keep their order)
    heard_vv: dict[str, int] | None = None

    def __repr__(self) -> str:
        way = "out" if self.outbound else "in"
        return f"<Link {self.id} {way} {self.peer} {self.state.name}>"


@dataclass(slots=True)
class Peer:
    serial: str
    hostname: str
    admin_off: bool = False  # administratively disconnected
    state: str = "down"  # down | connecting | up | refused | disconnected
    link: int | None = None
    dialing: bool = False
    attempts: int = 0
    next_dial: float = 0.0
    since: float = 0.0
    reason: str = ""
    refusal: str = ""  # while refused: the goodbye code ("version", ...) or "key" (SSH)
    links: frozenset[str] = frozenset()
    vv: dict[str, int] = field(default_factory=dict)
    syncing_since: float | None = None
    ping_seq: int = 0
    ping_at: float = 0.0
    rtt: float | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.hostname} {self.state.upper()} link={self.link}>"


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    link: int
    msg: Message


@dataclass(frozen=True, slots=True)
class Close:
    link: int
    reason: str


@dataclass(frozen=True, slots=True)
class Dial:
    peer: str


@dataclass(frozen=True, slots=True)
class Apply:
    commits: tuple[Commit, ...]
    peer: str


@dataclass(frozen=True, slots=True)
class Install:
    """A state transfer to take, as it came (its host builds the state: ``snapshot()``,
    the daemon in a thread)."""

    body: SnapshotBody
    peer: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an administrator must hear about (REFERENCE §7's clustering alerts)."""

    kind: str  # connection failure | connection dropped | authentication error | ...
    peer: str
    text: str


@dataclass(frozen=True, slots=True)
class Note:
    """Worth a line in the log, not an alert."""

    text: str


@dataclass(frozen=True, slots=True)
class Ask:
    """A peer's query: the driver computes the answer and calls ``Node.answer``."""

    peer: str
    qid: int
    kind: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReadLog:
    """Read what a holder of ``vv`` lacks, at most ``limit`` commits (off the links'
    loop: it is a disk read), and give the page to ``Node.log_read``."""

    link: int
    vv: Mapping[str, int]
    limit: int


@dataclass(frozen=True, slots=True)
class Answered:
    peer: str
    qid: int
    ok: bool
    body: Any


@dataclass(frozen=True, slots=True)
class Reconnect:
    """This disconnected member learnt from ``by``'s hello of a RECONNECT of it that it
    had not seen: the driver commits its own flag off (then the node reconnects)."""

    by: str


@dataclass(frozen=True, slots=True)
class HeadsDiffer:
    """``peer``'s durable vector equals ours and its chain heads do not: the driver
    narrows it down to the first commit that differs (``clusterd.node.witnessing``) and
    reports it with ``Node.forked``."""

    peer: str


Action = (
    Send
    | Close
    | Dial
    | Apply
    | Install
    | Alert
    | Note
    | Ask
    | Answered
    | Reconnect
    | ReadLog
    | StateDiffers
    | HeadsDiffer
)
