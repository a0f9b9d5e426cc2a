"""The cluster protocol: every state transition of one member's links, in one place.

Sans-I/O (like h11): ``Node`` takes events — a link opened or closed, a decoded
message, a clock tick, a local commit, an administrator's disconnect — and returns
``peers.Action`` values for its driver to carry out: frames to send, links to close,
peers to dial, commits or a state transfer to apply, alerts.  It reads the store only
through the ``Log`` interface and never blocks.

A link's life::

    dialer                              acceptor
    HELLO_SENT  -- hello ------------>  AWAIT_HELLO   checks cluster, identity, versions
                <-------------- hello   UP            (or goodbye + close: refused)
    UP                                                both compare version vectors
    ping / pong every interval, each carrying the sender's version vector and live links;
    whoever sees the other holding commits it lacks sends a sync_request.

Two links to one peer (both dialled at once): each side keeps the one dialled by the
smaller serial and says goodbye on the other, so both keep the same one.  A peer's
misbehaviour drops its link with an alert; an event that makes no sense in the node's
state (a driver bug) raises ``ProtocolError`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from clusterd.core.clock import Stamp, newer
from clusterd.core.errors import ProtocolError
from clusterd.core.versions import Commit, Snapshot
from clusterd.mesh.messages import (
    RELAYABLE,
    Answer,
    CommitBody,
    CommitMsg,
    FlagStamp,
    Goodbye,
    Hello,
    MembershipChange,
    Message,
    Ping,
    Pong,
    Query,
    Relay,
    StateTransfer,
    SyncRequest,
    SyncResponse,
    VersionVector,
    from_dict,
    to_dict,
)
from clusterd.mesh.peers import (
    Action,
    Alert,
    Answered,
    Apply,
    Ask,
    Close,
    Dial,
    HeadsDiffer,
    Identity,
    Install,
    Link,
    LinkState,
    Log,
    Machine,
    Note,
    Page,
    Peer,
    ReadLog,
    Reconnect,
    Send,
    Timing,
)
from clusterd.mesh.statedigest import StateDigests, our_root
from clusterd.mesh.witness import Finding, Summary, Witnesses, attach

FULL_EVERY = 10  # every 10th ping and its pong carry the whole version vector and links
# No alert when a peer says these: it chose to go (an orderly stop included), and its
# link going down is logged, not raised.
QUIET_GOODBYES = {"duplicate", "disconnected", "removed", "shutdown"}
# A refusal's goodbye code -> (alert kind, peer state); any other code: a failed login.
REFUSALS = {
    "version": ("version mismatch", "refused"),
    "protocol-version": ("version mismatch", "refused"),
    "starting": ("connection failure", "down"),
    "shutdown": ("connection failure", "down"),
    "timeout": ("connection failure", "down"),
}
AUTH_REFUSAL = ("authentication error", "refused")


def _commit(body: CommitBody) -> Commit:
    """A commit that came in a commit or sync message: it carries writes."""
    if body.writes is None or not body.writes:  # (every commit made writes something)
        raise ProtocolError("malformed", f"commit {body.origin}:{body.seq} carries no writes")
    return body.commit()


def _changes(
    link: Link, vv: dict[str, int], live: tuple[str, ...], *, full: bool
) -> tuple[dict[str, int] | None, tuple[str, ...] | None]:
    """What a ping or pong on ``link`` carries: each part only when it changed since the
    last one we sent on this link (a new link starts with both), and both every
    ``FULL_EVERY``-th round, so that a peer which missed one still learns them."""
    vv_ = None if vv == link.sent_vv and not full else vv
    links_ = None if live == link.sent_links and not full else live
    link.sent_vv, link.sent_links = vv, live
    return vv_, links_


def commits_behind(ours: Mapping[str, int], theirs: Mapping[str, int]) -> int:
    """How many of the commits a holder of ``theirs`` has are missing from ``ours``: an
    origin numbers its commits 1, 2, 3, ..., so each origin's gap is a count."""
    return sum(max(0, seq - ours.get(origin, 0)) for origin, seq in theirs.items())


def catch_up(ours: Mapping[str, int], peers: list[dict[str, Any]]) -> dict[str, Any]:
    """How far this machine is behind the members it is linked to: the commits any of
    them holds that it lacks (counted once), and from whom they are still coming."""
    latest: dict[str, int] = dict(ours)
    behind = [p for p in peers if p["state"] == "up" and p["behind"]]
    for p in behind:
        for origin, seq in p["vv"].items():
            latest[origin] = max(latest.get(origin, 0), seq)
    return {
        "missing": commits_behind(ours, latest),
        "from": sorted(p["hostname"] for p in behind),
    }


def _lacks(vv: Mapping[str, int], other: Mapping[str, int]) -> bool:
    """True when ``vv`` is missing something ``other`` has."""
    if vv == other:
        return False
    return any(seq > vv.get(origin, 0) for origin, seq in other.items())


class Node:
    def __init__(
        self, me: Identity, log: Log, members: Iterable[Machine], timing: Timing | None = None
    ) -> None:
        self.me = me
        self.log = log
        self.timing = timing or Timing()
        self.links: dict[int, Link] = {}
        self.peers: dict[str, Peer] = {}
        self.started = False
        self.disconnected = False  # this member, administratively
        self.next_ping = 0.0
        self.ping_seq = 0
        self.next_qid = 1
        self.queries: dict[int, str] = {}  # qid -> peer asked
        self.sd = StateDigests()  # state roots sent and heard (``mesh.statedigest``)
        self.witness = Witnesses()  # peers' chain heads as they sent them (in memory)
        self._members(members, 0.0)

    def __repr__(self) -> str:
        up = sum(p.state == "up" for p in self.peers.values())
        return f"<Node {self.me.hostname} up={up}/{len(self.peers)}>"

    # -- events from the driver ---------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self.started:
            raise ProtocolError("illegal", "node already started")
        self.started = True
        self.next_ping = now + self.timing.ping_interval
        for peer in self.peers.values():
            peer.next_dial = self._first_dial(peer.serial, now)
        return self._dials(now)

    def stop(self, now: float) -> list[Action]:
        """Clean shutdown: goodbye on every link."""
        out: list[Action] = []
        for link in list(self.links.values()):
            out += self._close(link, "shutdown", "the member is shutting down", now)
        self.started = False
        return out

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        t = self.timing
        dead = t.dead_after * t.ping_interval
        for link in list(self.links.values()):
            if link.state in (LinkState.AWAIT_HELLO, LinkState.HELLO_SENT):
                if now - link.opened > t.handshake_timeout:
                    out += self._close(link, "timeout", "no hello in time", now, alert=True)
            elif link.state is LinkState.UP and now - link.last_heard > dead:
                silent = now - link.last_heard
                out += self._close(
                    link, "timeout", f"no answer for {silent:.1f} s", now, alert=True
                )
        for peer in self.peers.values():
            if (
                peer.syncing_since is not None
                and now - peer.syncing_since > 4 * t.handshake_timeout
            ):
                peer.syncing_since = None  # ask again at the next comparison
        if self.started and now >= self.next_ping:
            self.next_ping = now + t.ping_interval
            self.ping_seq += 1
            vv, live = dict(self.log.version_vector()), self.live_peers()
            heads, full = self._heads(), self.ping_seq % FULL_EVERY == 0
            for link in self._up_links():
                if link.peer < self.me.serial:
                    continue  # the smaller serial of a pair pings; the other answers
                peer = self.peers[link.peer]
                peer.ping_seq, peer.ping_at = self.ping_seq, now
                vv_, links_ = _changes(link, vv, live, full=full)
                hd, vv_, link.sent_hd = attach(link.sent_hd, heads, vv, vv_, full=full)
                sd = self._sd(link, full=full)
                ping = Ping.model_construct(seq=self.ping_seq, vv=vv_, links=links_, hd=hd, sd=sd)
                out.append(Send(link.id, ping))
        return out + self._dials(now)

    def dial_failed(self, serial: str, now: float, kind: str, reason: str) -> list[Action]:
        peer = self._peer(serial)
        if not peer.dialing:
            raise ProtocolError("illegal", f"no dial to {serial} in progress")
        peer.dialing = False
        state = AUTH_REFUSAL[1] if kind == AUTH_REFUSAL[0] else "down"  # refused our key
        if state == "refused":
            peer.refusal = "key"  # a host key or our machine key refused (SSH)
        return self._retry_later(peer, now, kind, reason, state)

    def link_opened(self, link_id: int, now: float, *, peer: str, outbound: bool) -> list[Action]:
        """A transport link to an authenticated ``peer`` is open (not yet a member link)."""
        if link_id in self.links:
            raise ProtocolError("illegal", f"link {link_id} is already open")
        p = self._peer(peer) if outbound else self.peers.get(peer)
        if outbound and not p.dialing:  # type: ignore[union-attr]
            raise ProtocolError("illegal", f"no dial to {peer} in progress")
        state = LinkState.HELLO_SENT if outbound else LinkState.AWAIT_HELLO
        link = self.links[link_id] = Link(link_id, peer, outbound, state, now, now)
        if outbound:
            p.dialing = False  # type: ignore[union-attr]
        # A disconnected member still reads an inbound hello: it may carry news of a
        # RECONNECT of this member made elsewhere (``_on_handshake``).
        off = self.disconnected and outbound
        if p is None or off or not self.started:
            why = "disconnected" if off else "unknown" if p is None else "starting"
            text = {
                "disconnected": "this member is administratively disconnected",
                "unknown": f"{peer} is not a member of cluster {self.me.cluster}",
                "starting": "this member is not serving yet",
            }[why]
            return self._close(link, why, text, now, alert=p is None, kind="authentication error")
        if outbound:
            if p.link is None:  # a live link may already exist (both dialled at once)
                p.state = "connecting"
            return [Send(link_id, self._hello(p, link))]
        return []

    def link_closed(self, link_id: int, now: float, reason: str) -> list[Action]:
        link = self.links.get(link_id)
        if link is None:
            raise ProtocolError("illegal", f"link {link_id} is not open")
        if link.state is LinkState.CLOSED:
            del self.links[link_id]
            return []
        return self._lost(link, now, f"connection dropped: {reason}", alert=True)

    def frame_error(self, link_id: int, now: float, error: ProtocolError) -> list[Action]:
        """The driver could not decode a frame from this link."""
        link = self._link(link_id)
        if link.state is LinkState.CLOSED:
            return []
        return self._violation(link, error, now)

    def received(self, link_id: int, msg: Message, now: float) -> list[Action]:
        link = self._link(link_id)
        if link.state is LinkState.CLOSED:
            return []  # frames already in flight when we closed it
        link.last_heard = now
        try:
            if link.state is LinkState.UP:
                return self._on_up_message(link, msg, now)
            return self._on_handshake(link, msg, now)
        except ProtocolError as exc:
            return self._violation(link, exc, now)

    def rejected(self, serial: str, now: float, reason: str) -> list[Action]:
        """The store refused what ``serial`` sent (a bad commit): drop its link."""
        peer = self._peer(serial)
        if peer.link is None:
            return [Alert("bad commit", serial, reason)]
        return self._close(
            self.links[peer.link], "bad-commit", reason, now, alert=True, kind="bad commit"
        )

    def committed(self, commit: Commit, now: float) -> list[Action]:
        """A local commit: straight to every member reachable, relayed where needed."""
        if self.disconnected:
            return []
        # One message for every member: the daemon encodes it once for all direct links.
        msg = CommitMsg(commit=CommitBody.of(commit))
        out: list[Action] = []
        for peer in self.peers.values():
            if peer.admin_off:
                continue
            out += self._to_peer(peer.serial, msg, alert=False)
        return out

    def set_members(self, members: Iterable[Machine], now: float) -> list[Action]:
        """Membership changed (a commit touched it): dial new members, drop removed ones."""
        return self._members(members, now) + self._dials(now)

    def disconnect(self, now: float) -> list[Action]:
        """DISCONNECT this member: tell the peers, close every link, dial no one."""
        if self.disconnected:
            raise ProtocolError("illegal", "this member is already disconnected")
        self.disconnected = True
        out: list[Action] = []
        for link in self._up_links():
            out.append(Send(link.id, MembershipChange(node=self.me.serial, disconnected=True)))
        for link in list(self.links.values()):
            out += self._close(link, "disconnected", "administratively disconnected", now)
        return out

    def reconnect(self, now: float) -> list[Action]:
        """RECONNECT: try every member at once, whatever its flag says here (it may have
        reconnected too, its commit still on the way; one still disconnected says so);
        the version vectors do the rest."""
        if not self.disconnected:
            raise ProtocolError("illegal", "this member is not disconnected")
        self.disconnected = False
        for peer in self.peers.values():
            peer.attempts, peer.next_dial, peer.admin_off = 0, now, False
            if peer.link is None:
                peer.state = "down"
        return self._dials(now)

    def query(
        self, serial: str, kind: str, args: Mapping[str, Any], now: float
    ) -> tuple[int, list[Action]]:
        self._peer(serial)
        qid = self.next_qid
        self.next_qid += 1
        self.queries[qid] = serial
        out = self._to_peer(serial, Query(qid=qid, kind=kind, args=dict(args)), alert=True)
        if not any(isinstance(a, Send) for a in out):
            del self.queries[qid]
            out.append(Answered(serial, qid, False, f"no route to {self.peers[serial].hostname}"))
        return qid, out

    def answer(self, serial: str, qid: int, ok: bool, body: Any, now: float) -> list[Action]:
        self._peer(serial)
        return self._to_peer(serial, Answer(qid=qid, ok=ok, body=body), alert=True)

    def forked(self, serial: str, origin: str, seq: int, text: str, now: float) -> list[Action]:
        """The driver narrowed a divergence of ``serial``'s heads down to ``origin``'s
        commit ``seq``: alert "fork" (once while it stands)."""
        peer = self._peer(serial)
        finding = Finding("fork", serial, origin, seq, None, now, text)
        return [Alert("fork", peer.serial, text)] if self.witness.found(finding) else []

    # -- witnessing (``clusterd.mesh.witness``) -------------------------------------------

    def _heads(self) -> Summary | None:
        summary = getattr(self.log, "heads_digest", None)  # (a log may not say: no hd)
        return None if summary is None else summary()

    def _witness(
        self,
        peer: Peer,
        link: Link,
        vv: Mapping[str, int],
        hd: str | None,
        now: float,
        order: int | None,
    ) -> list[Action]:
        """A peer's ``hd`` (at ``vv``) on ``link``: compared with what it sent before and
        with ours (``order``: the ping's or pong's seq; None for a hello)."""
        heard = self.witness.heard(peer.serial, vv, hd, None if hd is None else self._heads(),
                                   link=(link.id, link.opened), now=now, order=order)  # fmt: skip
        out: list[Action] = []
        for origin, was, seq in heard.went_back:
            name = self._name(origin)
            text = (f"{peer.hostname} advertised {name}'s commits up to {origin}:{was} and now "
                    f"only up to {origin}:{seq}: its log lost commits (truncated or rewritten, "
                    "a restored backup, or a power loss)")  # fmt: skip
            if self.witness.found(Finding("history went back", peer.serial, origin, seq, was,
                                          now, text)):  # fmt: skip
                out.append(Alert("history went back", peer.serial, text))
        if heard.diverged:
            out.append(HeadsDiffer(peer.serial))
        return out

    def _name(self, serial: str) -> str:
        if serial == self.me.serial:
            return self.me.hostname
        peer = self.peers.get(serial)
        return serial if peer is None else peer.hostname

    # -- handshake ----------------------------------------------------------------------

    def _hello(self, peer: Peer, link: Link) -> Hello:
        me = self.me
        flag = self.log.flag(peer.hostname)
        vv, heads = dict(self.log.version_vector()), self._heads()
        return Hello(
            node=me.serial,
            hostname=me.hostname,
            cluster=me.cluster,
            proto_min=me.proto_min,
            proto_max=me.proto_max,
            software=me.software,
            flag=None
            if flag is None
            else FlagStamp(hlc=flag.hlc, origin=flag.origin, disconnected=flag.disconnected),
            vv=vv,
            hd=attach(None, heads, vv, vv, full=True)[0],
            sd=self._sd(link, full=True),
        )

    def _on_handshake(self, link: Link, msg: Message, now: float) -> list[Action]:
        if isinstance(msg, Goodbye):
            peer = self.peers[link.peer]
            del self.links[link.id]
            text = f"refused by {peer.hostname}: {msg.reason}"
            if msg.code == "disconnected":  # it dials us when it reconnects
                peer.admin_off, peer.state = True, "disconnected"
            if msg.code in QUIET_GOODBYES or not link.outbound:
                return [Close(link.id, text), Note(text)]
            kind, state = REFUSALS.get(msg.code, AUTH_REFUSAL)
            peer.refusal = msg.code
            return [Close(link.id, text), *self._retry_later(peer, now, kind, text, state)]
        if not isinstance(msg, Hello):
            raise ProtocolError("out-of-order", f"{msg.type_name} before hello")
        refusal = self._check_hello(link, msg)
        if refusal is None and self.disconnected:
            news = [Reconnect(link.peer)] if self._reconnected(msg) else []
            text = "this member is administratively disconnected"
            return news + self._close(link, "disconnected", text, now)
        if refusal is not None:
            code, text = refusal
            kind = REFUSALS.get(code, AUTH_REFUSAL)[0]
            refused = self.peers.get(link.peer)
            if refused is not None and refused.link is None:  # a live link is fresher news
                refused.state, refused.refusal = "refused", code
                if not link.outbound:
                    refused.reason = text
            return self._close(link, code, text, now, alert=True, kind=kind)
        out: list[Action] = (
            [] if link.outbound else [Send(link.id, self._hello(self.peers[link.peer], link))]
        )
        link.state = LinkState.UP
        link.proto = min(msg.proto_max, self.me.proto_max)
        peer = self.peers[link.peer]
        alone = peer.link is None  # (else the link kept may be the other one)
        link.heard_vv = dict(msg.vv)
        out += self._up(link, msg.vv, now)
        out += self._sd_heard(peer, msg.sd, msg.vv, hello=True)
        if not alone or peer.link != link.id:
            return out
        return out + self._witness(peer, link, msg.vv, msg.hd, now, None)

    def _reconnected(self, hello: Hello) -> bool:
        """Whether ``hello`` says this (disconnected) member was reconnected by a write
        of its flag newer than the one it holds (``docs/membership.md``)."""
        theirs, mine = hello.flag, self.log.flag(self.me.hostname)
        if theirs is None or theirs.disconnected:
            return False
        return mine is None or newer(Stamp(theirs.hlc, theirs.origin), Stamp(mine.hlc, mine.origin))

    def _check_hello(self, link: Link, msg: Hello) -> tuple[str, str] | None:
        """Why a hello is refused: (goodbye code, reason), or None."""
        me = self.me
        if msg.node != link.peer:
            return "identity", f"hello from {msg.node} on a link of {link.peer}"
        if msg.cluster != me.cluster:
            return (
                "cluster",
                f"{msg.hostname} belongs to cluster {msg.cluster!r}, not {me.cluster!r}",
            )
        if msg.node not in self.peers:
            return "unknown", f"{msg.hostname} ({msg.node}) is not a member of cluster {me.cluster}"
        if msg.software != me.software:
            text = (
                f"software versions differ: {msg.hostname} runs {msg.software}, "
                f"{me.hostname} runs {me.software}; members must run the same version"
            )
            return "version", text
        if msg.proto_max < me.proto_min or msg.proto_min > me.proto_max:
            theirs, ours = f"{msg.proto_min}-{msg.proto_max}", f"{me.proto_min}-{me.proto_max}"
            return "protocol-version", f"no common protocol version ({theirs} vs {ours})"
        return None

    def _up(self, link: Link, their_vv: Mapping[str, int], now: float) -> list[Action]:
        peer = self.peers[link.peer]
        out: list[Action] = []
        if peer.link is not None and peer.link != link.id:
            other = self.links[peer.link]
            smaller = min(self.me.serial, peer.serial)
            keep_new = link.outbound == (smaller == self.me.serial)
            if not keep_new:
                return self._close(link, "duplicate", "a second link to the same member", now)
            peer.link = None
            out += self._close(other, "duplicate", "a second link to the same member", now)
        was = peer.state
        peer.link, peer.state, peer.reason = link.id, "up", ""
        peer.attempts, peer.admin_off, peer.since = 0, False, now
        if was != "up":
            out.append(Note(f"link to {peer.hostname} is up ({'out' if link.outbound else 'in'})"))
        return out + self._compare(peer, their_vv, link, now)

    # -- a live link --------------------------------------------------------------------

    def _on_up_message(self, link: Link, msg: Message, now: float) -> list[Action]:
        peer = self.peers[link.peer]
        if isinstance(msg, Ping):
            if msg.links is not None:
                peer.links = frozenset(msg.links)
            vv, full = dict(self.log.version_vector()), msg.seq % FULL_EVERY == 0
            vv_, links_ = _changes(link, vv, self.live_peers(), full=full)
            hd, vv_, link.sent_hd = attach(link.sent_hd, self._heads(), vv, vv_, full=full)
            sd = self._sd(link, full=full)
            pong = Pong.model_construct(seq=msg.seq, vv=vv_, links=links_, hd=hd, sd=sd)
            heard = peer.vv if msg.vv is None else msg.vv
            answer: list[Action] = [Send(link.id, pong), *self._compare(peer, heard, link, now)]
            return answer + self._digests_heard(peer, link, msg, now)
        if isinstance(msg, Pong):
            if msg.links is not None:
                peer.links = frozenset(msg.links)
            if msg.seq == peer.ping_seq:
                peer.rtt = now - peer.ping_at
            heard = peer.vv if msg.vv is None else msg.vv
            compared = self._compare(peer, heard, link, now)
            return compared + self._digests_heard(peer, link, msg, now)
        if isinstance(msg, VersionVector):
            link.heard_vv = dict(msg.vv)
            return self._compare(peer, msg.vv, link, now)
        if isinstance(msg, CommitMsg):
            return [Apply((_commit(msg.commit),), peer.serial)]
        if isinstance(msg, SyncRequest):
            return self._sync_response(link, msg.vv)
        if isinstance(msg, SyncResponse):
            commits = tuple(_commit(c) for c in msg.commits)
            out: list[Action] = [Apply(commits, peer.serial)] if commits else []
            if not msg.more:
                peer.syncing_since = None
                return out
            # One page at a time: ask for the next first, as if this one were applied
            # (it is in causal order, so it will be), so that the sender reads it while
            # this one is applied here.
            peer.syncing_since = now
            after = dict(self.log.version_vector())
            for c in commits:
                after[c.id.origin] = max(after.get(c.id.origin, 0), c.id.seq)
            return [Send(link.id, SyncRequest(vv=after)), *out]
        if isinstance(msg, StateTransfer):
            return self._state_transfer(link, msg)
        if isinstance(msg, MembershipChange):
            if msg.node != peer.serial:
                raise ProtocolError("malformed", f"{peer.serial} spoke for {msg.node}")
            peer.admin_off = msg.disconnected
            return []
        if isinstance(msg, Goodbye):
            quiet = msg.code in QUIET_GOODBYES
            if msg.code == "disconnected":
                peer.admin_off = True
            del self.links[link.id]
            text = f"{peer.hostname} closed the link: {msg.reason}"
            return [Close(link.id, text), *self._lost(link, now, text, alert=not quiet)]
        if isinstance(msg, Relay):
            return self._relay(msg, link.peer, now)
        return self._deliver(peer.serial, msg)

    def _deliver(self, src: str, msg: Message) -> list[Action]:
        """A commit, query or answer from ``src`` (directly or relayed)."""
        if isinstance(msg, CommitMsg):
            return [Apply((_commit(msg.commit),), src)]
        if isinstance(msg, Query):
            return [Ask(src, msg.qid, msg.kind, msg.args)]
        if isinstance(msg, Answer):
            if self.queries.get(msg.qid) != src:
                return [Note(f"ignored an answer to query {msg.qid} nobody asked {src}")]
            del self.queries[msg.qid]
            return [Answered(src, msg.qid, msg.ok, msg.body)]
        raise ProtocolError("out-of-order", f"{msg.type_name} after hello")

    def _relay(self, msg: Relay, hop: str, now: float) -> list[Action]:
        if msg.src == self.me.serial:  # our own message came back: routes changed under it
            return [Note(f"dropped a relay of ours to {msg.dst} that came back from {hop}")]
        if msg.src not in self.peers:
            raise ProtocolError("malformed", f"relayed message from non-member {msg.src}")
        if msg.dst == self.me.serial:
            inner = from_dict(msg.inner)
            if not isinstance(inner, RELAYABLE):
                raise ProtocolError("malformed", f"{inner.type_name} cannot be relayed")
            return self._deliver(msg.src, inner)
        if msg.dst not in self.peers:
            raise ProtocolError("malformed", f"relay to non-member {msg.dst}")
        if msg.ttl <= 0:
            return [Alert("forward failed", msg.dst, f"message from {msg.src} ran out of hops")]
        back = frozenset((msg.src, hop))
        return self._to_peer(
            msg.dst, msg.inner, alert=True, src=msg.src, ttl=msg.ttl - 1, avoid=back
        )

    # -- replication --------------------------------------------------------------------

    def _compare(
        self, peer: Peer, their_vv: Mapping[str, int], link: Link, now: float
    ) -> list[Action]:
        peer.vv = dict(their_vv)
        ours = self.log.version_vector()
        if peer.syncing_since is None and _lacks(ours, their_vv):
            peer.syncing_since = now
            return [Send(link.id, SyncRequest(vv=dict(ours)))]
        return []

    def _sync_response(self, link: Link, their_vv: Mapping[str, int]) -> list[Action]:
        """The first page of what the asker lacks (it asks again for the next): one
        page read and encoded per request, never the whole backlog at once.  The driver
        reads it and gives it to ``log_read``."""
        return [ReadLog(link.id, dict(their_vv), self.timing.sync_batch)]

    def log_read(self, link_id: int, page: Page, now: float) -> list[Action]:
        """A page read for ``ReadLog``: to the asker, if its link is still up."""
        link = self.links.get(link_id)
        if link is None or link.state is not LinkState.UP:
            return []
        if isinstance(page, Snapshot | StateTransfer):
            msg = page if isinstance(page, StateTransfer) else StateTransfer.of(page)
            return [
                Send(link.id, msg),
                Note(f"state transfer to {link.peer}: the log is truncated"),
            ]
        more = len(page) >= self.timing.sync_batch
        commits = tuple(CommitBody.of(c) for c in page)
        return [Send(link.id, SyncResponse(commits=commits, more=more))]

    def _state_transfer(self, link: Link, msg: StateTransfer) -> list[Action]:
        """Take the sender's whole state, merged with ours (it may lack some of ours)."""
        peer = self.peers[link.peer]
        if msg.snapshot.version_vector() != msg.vv:
            raise ProtocolError("malformed", "state transfer does not match its vector")
        peer.syncing_since = None
        if not _lacks(self.log.version_vector(), msg.vv):
            return []  # nothing new in it (a late answer)
        return [Install(msg.snapshot, peer.serial)]

    # -- the state root (``mesh.statedigest``) ------------------------------------------

    def _sd(self, link: Link, *, full: bool) -> str | None:
        """The state root a hello, ping or pong on ``link`` carries (or None)."""
        return self.sd.to_send(link.peer, link.id, our_root(self.log), full=full)

    def _digests_heard(self, peer: Peer, link: Link, msg: Ping | Pong, now: float) -> list[Action]:
        """A ping's or pong's ``hd`` and ``sd``, each of the vector it carries or, without
        one, of the last vector heard on this link (``witness.attach``)."""
        if msg.vv is not None:
            link.heard_vv = dict(msg.vv)
        vv = peer.vv if link.heard_vv is None else link.heard_vv
        found = self._witness(peer, link, vv, msg.hd, now, msg.seq)
        return found + self._sd_heard(peer, msg.sd, vv)

    def _sd_heard(
        self, peer: Peer, sd: str | None, their_vv: Mapping[str, int], *, hello: bool = False
    ) -> list[Action]:
        ours, root = dict(self.log.version_vector()), our_root(self.log)
        return list(self.sd.heard_from(peer.serial, sd, their_vv, ours, root, hello=hello))

    # -- routing ------------------------------------------------------------------------

    def route(self, serial: str, avoid: frozenset[str] = frozenset()) -> Link | None:
        """The live link a message for ``serial`` leaves by: direct, else via a neighbour
        (never one in ``avoid``: a relay does not go back where it came from)."""
        peer = self.peers[serial]
        if peer.link is not None and self.links[peer.link].state is LinkState.UP:
            return self.links[peer.link]
        for hop in sorted(self.peers):
            via = self.peers[hop]
            if hop in avoid:
                continue
            if via.state == "up" and via.link is not None and serial in via.links:
                return self.links[via.link]
        return None

    def _to_peer(
        self,
        serial: str,
        msg: Message | dict[str, Any],
        *,
        alert: bool,
        src: str = "",
        ttl: int = -1,
        avoid: frozenset[str] = frozenset(),
    ) -> list[Action]:
        link = self.route(serial, avoid)
        if link is None:
            if not alert:
                return []
            how = "forward failed" if src else "no route"
            return [Alert(how, serial, f"no route to {self.peers[serial].hostname}")]
        if link.peer == serial and not src:
            return [Send(link.id, msg if isinstance(msg, Message) else from_dict(msg))]
        ttl = self.timing.relay_ttl if ttl < 0 else ttl
        inner = to_dict(msg) if isinstance(msg, Message) else msg
        relay = Relay(src=src or self.me.serial, dst=serial, ttl=ttl, inner=inner)
        return [Send(link.id, relay)]

    # -- bookkeeping --------------------------------------------------------------------

    def _members(self, members: Iterable[Machine], now: float) -> list[Action]:
        wanted = {m.serial: m for m in members if m.serial != self.me.serial}
        out: list[Action] = []
        for serial in [s for s in self.peers if s not in wanted]:
            for link in [lk for lk in self.links.values() if lk.peer == serial]:
                out += self._close(link, "removed", "no longer a member of the cluster", now)
            del self.peers[serial]
            self.sd.forget(serial)
            self.witness.forget(serial)
        for serial in sorted(wanted):
            m = wanted[serial]
            if serial not in self.peers:
                self.peers[serial] = Peer(
                    serial, m.hostname, next_dial=self._first_dial(serial, now)
                )
            peer = self.peers[serial]
            peer.hostname = m.hostname
            if m.disconnected and not peer.admin_off:
                # A live link is fresher news than a replicated flag: a member closes its
                # own links when it disconnects (goodbye "disconnected"), and one that
                # talks to us has reconnected even if its RECONNECT commit is still on
                # the way.  So the flag only stops us dialling a member we cannot reach.
                if peer.link is None:
                    peer.state, peer.admin_off = "disconnected", True
            elif not m.disconnected and peer.admin_off:
                peer.state, peer.next_dial, peer.attempts = "down", now, 0
                peer.admin_off = False
        return out

    def _first_dial(self, serial: str, now: float) -> float:
        """The smaller serial dials first; the other waits a little, so that a pair
        usually opens one link rather than two (either dial may win)."""
        return now if self.me.serial < serial else now + self.timing.handshake_timeout / 4

    def _dials(self, now: float) -> list[Action]:
        if not self.started or self.disconnected:
            return []
        out: list[Action] = []
        handshaking = {lk.peer for lk in self.links.values() if lk.state is not LinkState.UP}
        in_flight = sum(p.dialing for p in self.peers.values()) + sum(
            lk.outbound and lk.state is LinkState.HELLO_SENT for lk in self.links.values()
        )
        for peer in self.peers.values():
            if in_flight >= self.timing.max_dials:
                break  # the rest at the next tick: a member starting among many does not
                # open dozens of SSH handshakes at once and time them all out
            if peer.admin_off or peer.dialing or peer.link is not None or now < peer.next_dial:
                continue
            if peer.serial in handshaking:
                continue  # a handshake is under way
            peer.dialing = True
            in_flight += 1
            out.append(Dial(peer.serial))
        return out

    def _retry_later(
        self, peer: Peer, now: float, kind: str, reason: str, state: str = "down"
    ) -> list[Action]:
        """A dial or handshake failed: back off; alert unless it failed the same way."""
        peer.next_dial = now + self.timing.backoff(self.me.serial, peer.serial, peer.attempts)
        peer.attempts += 1
        if peer.link is not None:
            return []  # a second dial failed while a link is up: the peer is still up
        peer.state = "disconnected" if peer.admin_off else state
        repeat = reason == peer.reason
        peer.reason = reason
        return [] if repeat else [Alert(kind, peer.serial, reason)]

    def _close(
        self,
        link: Link,
        code: str,
        text: str,
        now: float,
        *,
        alert: bool = False,
        kind: str = "connection dropped",
    ) -> list[Action]:
        """Close a link ourselves: goodbye, close, and account for the peer."""
        out: list[Action] = [Send(link.id, Goodbye(code=code, reason=text)), Close(link.id, text)]
        link.state = LinkState.CLOSED
        peer = self.peers.get(link.peer)
        if peer is not None and peer.link == link.id:
            peer.link = None
            out += self._down(peer, now, text, alert, kind)
        elif (
            peer is not None and peer.link is None and link.outbound and code not in QUIET_GOODBYES
        ):
            out += self._retry_later(peer, now, kind, text, peer.state)
        elif alert:
            out.append(Alert(kind, link.peer, text))
        return out

    def _lost(self, link: Link, now: float, text: str, *, alert: bool) -> list[Action]:
        """The transport lost a link (or the peer closed it)."""
        self.links.pop(link.id, None)
        peer = self.peers.get(link.peer)
        if peer is None:
            return []
        if peer.link == link.id:
            peer.link = None
            return self._down(peer, now, text, alert, "connection dropped")
        if link.outbound and link.state is not LinkState.UP:
            return self._retry_later(peer, now, "connection failure", text)
        return []

    def _down(self, peer: Peer, now: float, text: str, alert: bool, kind: str) -> list[Action]:
        peer.syncing_since = None
        peer.since = now
        peer.next_dial = now + self.timing.backoff(self.me.serial, peer.serial, 0)
        peer.attempts = 1
        if peer.admin_off or self.disconnected:
            peer.state = "disconnected"
            return [Note(f"{peer.hostname}: {text}")]
        peer.state, peer.reason = "down", text
        return [Alert(kind, peer.serial, text)] if alert else [Note(f"{peer.hostname}: {text}")]

    def _violation(self, link: Link, exc: ProtocolError, now: float) -> list[Action]:
        text = f"protocol error from {link.peer}: {exc.reason}"
        return self._close(link, "protocol", text, now, alert=True, kind="protocol error")

    def _link(self, link_id: int) -> Link:
        link = self.links.get(link_id)
        if link is None:
            raise ProtocolError("illegal", f"link {link_id} is not open")
        return link

    def _peer(self, serial: str) -> Peer:
        peer = self.peers.get(serial)
        if peer is None:
            raise ProtocolError("illegal", f"{serial} is not a member")
        return peer

    def _up_links(self) -> list[Link]:
        return [lk for lk in self.links.values() if lk.state is LinkState.UP]

    def live_peers(self) -> tuple[str, ...]:
        """The members this one has a live link to (what pings advertise)."""
        return tuple(s for s, p in self.peers.items() if p.state == "up")
