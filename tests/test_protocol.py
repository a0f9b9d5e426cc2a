"""The sans-I/O protocol ``Node``, driven by hand: events in, exact actions out.

No network object: a test takes the ``Send`` actions of one node and hands the same
message objects to ``received`` on the other, with link ids it chooses (the dialer's
end is link 1, the acceptor's link 2, unless said otherwise).  ``Net`` at the bottom is a
tiny synchronous delivery loop for the tests with three or four members.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from clusterd.core.errors import ProtocolError
from clusterd.core.versions import Commit, CommitId, Snapshot, Unit, Write
from clusterd.mesh.member import page
from clusterd.mesh.messages import (
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
    SnapshotBody,
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
    Flag,
    Identity,
    Install,
    LinkState,
    Machine,
    Note,
    ReadLog,
    Reconnect,
    Send,
    Timing,
)
from clusterd.mesh.protocol import Node

T = Timing.for_interval(1.0)  # ping 1 s, dead after 2.5 s, backoff 0.25-1 s, handshake 5 s
DEAD = T.dead_after * T.ping_interval


def serial(i: int) -> str:
    return f"S{i:03d}"


def hostname(i: int) -> str:
    return f"m{i}.example.com"


A, B, C, D = (serial(i) for i in range(4))


def commit(origin: str, seq: int) -> Commit:
    return Commit(
        CommitId(origin, seq),
        hlc=seq,
        user="admin",
        at=0.0,
        comment=f"change {seq}",
        context={origin: seq - 1},
        writes=(Write(Unit("settz", "cluster", ""), {"timezone": f"Zone/{seq}"}),),
    )


def wire(origin: str, seq: int) -> dict[str, Any]:
    """``commit(origin, seq)`` as it travels: the JSON of its typed payload."""
    return CommitBody.of(commit(origin, seq)).model_dump(mode="json")


class TinyLog:
    """A ``Log`` over a dict of commits; ``truncated`` makes it ask for a state transfer."""

    def __init__(self, commits: Iterable[Commit] = ()) -> None:
        self.commits: dict[CommitId, Commit] = {}
        self.truncated = False
        self.flags: dict[str, Flag] = {}  # DISCONNECT flags by host name
        self.add(*commits)

    def add(self, *commits: Commit) -> None:
        for c in commits:
            self.commits[c.id] = c

    def version_vector(self) -> dict[str, int]:
        vv: dict[str, int] = {}
        for cid in self.commits:
            vv[cid.origin] = max(vv.get(cid.origin, 0), cid.seq)
        return vv

    def missing_from(self, vv: dict[str, int], limit: int) -> list[Commit] | None:
        if self.truncated:
            return None
        found = [c for cid, c in sorted(self.commits.items()) if cid.seq > vv.get(cid.origin, 0)]
        return found[:limit]

    def snapshot(self) -> Snapshot:
        return Snapshot(tuple(c for _, c in sorted(self.commits.items())), (), ())

    def flag(self, hostname: str) -> Flag | None:
        return self.flags.get(hostname)


def node(i: int, n: int = 2, *, log: TinyLog | None = None, timing: Timing = T, **me: Any) -> Node:
    ident = {"cluster": "prod", "software": "1.0", **me}
    members = [Machine(serial(j), hostname(j)) for j in range(n)]
    return Node(Identity(serial(i), hostname(i), **ident), log or TinyLog(), members, timing)


def served(n: Node, link: int, request: SyncRequest, now: float) -> list[Action]:
    """A sync request, and the page its ``ReadLog`` reads (as a driver does)."""
    [read] = n.received(link, request, now)
    assert read == ReadLog(link, request.vv, n.timing.sync_batch)
    return n.log_read(link, page(n.log, read.vv, read.limit), now)  # type: ignore[arg-type]


def sends(actions: list[Action]) -> list[Message]:
    return [a.msg for a in actions if isinstance(a, Send)]


def shape(actions: list[Action]) -> list[tuple[Any, ...]]:
    """Actions reduced to their type and key fields, for exact-sequence assertions."""
    out: list[tuple[Any, ...]] = []
    for a in actions:
        match a:
            case Send(link, Goodbye(code=code)):
                out.append(("send", link, "goodbye", code))
            case Send(link, msg):
                out.append(("send", link, msg.type_name))
            case Close(link):
                out.append(("close", link))
            case Dial(peer):
                out.append(("dial", peer))
            case Alert(kind, peer):
                out.append(("alert", kind, peer))
            case Note():
                out.append(("note",))
            case Apply(commits, peer):
                out.append(("apply", peer, tuple(str(c.id) for c in commits)))
            case Install(_, peer):
                out.append(("install", peer))
            case Ask(peer, qid, kind):
                out.append(("ask", peer, qid, kind))
            case Answered(peer, qid, ok):
                out.append(("answered", peer, qid, ok))
    return out


def state_of(n: Node) -> tuple[Any, ...]:
    """Everything a node knows, deep-copied, to show an event changed nothing."""
    return (
        {i: dataclasses.asdict(lk) for i, lk in n.links.items()},
        {s: dataclasses.asdict(p) for s, p in n.peers.items()},
        (n.started, n.disconnected, n.next_ping, n.ping_seq, n.next_qid, dict(n.queries)),
    )


def handshake(
    dialer: Node, dlink: int, acceptor: Node, alink: int, now: float = 0.0
) -> tuple[list[Action], list[Action]]:
    """Open a dialled link and exchange hellos: (acceptor's actions, dialer's actions)."""
    assert dialer.peers[acceptor.me.serial].dialing
    assert acceptor.link_opened(alink, now, peer=dialer.me.serial, outbound=False) == []
    [hello] = sends(dialer.link_opened(dlink, now, peer=acceptor.me.serial, outbound=True))
    answer = acceptor.received(alink, hello, now)
    reply = next(m for m in sends(answer) if isinstance(m, Hello))
    return answer, dialer.received(dlink, reply, now)


def pair(
    a_log: TinyLog | None = None, b_log: TinyLog | None = None, timing: Timing = T
) -> tuple[Node, Node]:
    """S000 (link 1) and S001 (link 2), up at t=0."""
    a, b = node(0, log=a_log, timing=timing), node(1, log=b_log, timing=timing)
    a.start(0.0)
    b.start(0.0)
    handshake(a, 1, b, 2)
    return a, b


def trio() -> tuple[Node, Node, Node]:
    """A-B up (links 1/2), B-C up (3/4), no link A-C (A's dial to C never completes)."""
    a, b, c = node(0, 3), node(1, 3), node(2, 3)
    assert a.start(0.0) == [Dial(B), Dial(C)]
    assert b.start(0.0) == [Dial(C)]
    assert c.start(0.0) == []
    handshake(a, 1, b, 2)
    handshake(b, 3, c, 4)
    return a, b, c


def hello_from(i: int, **fields: Any) -> Hello:
    base = {
        "node": serial(i),
        "hostname": hostname(i),
        "cluster": "prod",
        "proto_min": 2,
        "proto_max": 2,
        "software": "1.0",
        "vv": {},
    }
    return Hello(**{**base, **fields})


# -- start and handshake ------------------------------------------------------------------


def test_start_smaller_serial_dials_at_once_larger_waits() -> None:
    a, b = node(0), node(1)
    assert a.start(0.0) == [Dial(B)]
    assert b.start(0.0) == []
    assert b.tick(0.5) == []
    wait = T.handshake_timeout / 4
    assert b.tick(wait - 0.01) == []
    assert b.tick(wait) == [Dial(A)]
    assert b.tick(wait + 0.5) == []  # a dial is in progress


def test_no_dial_before_start() -> None:
    a = node(0)
    assert a.tick(10.0) == []
    assert a.set_members([Machine(A, hostname(0)), Machine(B, hostname(1))], 10.0) == []


def test_larger_serial_waits_whenever_it_starts() -> None:
    b = node(1)
    assert b.start(100.0) == []


def test_handshake_exact_sequence() -> None:
    a, b = node(0), node(1)
    a.start(0.0)
    b.start(0.0)
    out = a.link_opened(1, 0.1, peer=B, outbound=True)
    assert out == [Send(1, hello_from(0))]
    assert a.peers[B].state == "connecting"
    assert a.links[1].state is LinkState.HELLO_SENT
    assert b.link_opened(2, 0.1, peer=A, outbound=False) == []
    assert b.links[2].state is LinkState.AWAIT_HELLO
    out = b.received(2, hello_from(0), 0.2)
    assert out == [Send(2, hello_from(1)), Note("link to m0.example.com is up (in)")]
    assert a.received(1, hello_from(1), 0.3) == [Note("link to m1.example.com is up (out)")]
    assert a.peers[B].state == b.peers[A].state == "up"
    assert (a.peers[B].link, b.peers[A].link) == (1, 2)
    assert a.route(B) is a.links[1] and b.route(A) is b.links[2]
    assert a.links[1].proto == b.links[2].proto == 2
    assert repr(a) == "<Node m0.example.com up=1/1>"


def test_hello_with_more_commits_starts_a_sync_at_once() -> None:
    a, b = node(0, log=TinyLog([commit(A, 1)])), node(1)
    a.start(0.0)
    b.start(0.0)
    answer, dialer = handshake(a, 1, b, 2)
    assert shape(answer) == [("send", 2, "hello"), ("note",), ("send", 2, "sync_request")]
    assert sends(answer)[1] == SyncRequest(vv={})
    assert shape(dialer) == [("note",)]
    assert b.peers[A].vv == {A: 1}


# -- refusals ------------------------------------------------------------------------------


def test_version_mismatch_refused_on_both_sides() -> None:
    a, b = node(0, software="1.0"), node(1, software="2.0")
    a.start(0.0)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    [hello] = sends(a.link_opened(1, 0.0, peer=B, outbound=True))
    out = b.received(2, hello, 0.1)
    assert shape(out) == [
        ("send", 2, "goodbye", "version"),
        ("close", 2),
        ("alert", "version mismatch", A),
    ]
    assert (b.peers[A].state, b.peers[A].refusal) == ("refused", "version")  # (its action)
    assert "1.0" in b.peers[A].reason and "2.0" in b.peers[A].reason
    assert b.link_closed(2, 0.1, "closed here") == [] and b.links == {}

    out = a.received(1, sends(out)[0], 0.2)
    assert shape(out) == [("close", 1), ("alert", "version mismatch", B)]
    peer = a.peers[B]
    assert peer.state == "refused" and 1 not in a.links and peer.refusal == "version"
    assert "runs 1.0" in peer.reason and "runs 2.0" in peer.reason
    assert a.tick(0.2) == []  # backs off before trying again
    assert a.tick(peer.next_dial) == [Dial(B)]


def test_a_repeated_refusal_alerts_once() -> None:
    a, b = node(0, software="1.0"), node(1, software="2.0")
    a.start(0.0)
    b.start(0.0)
    alerts = []
    for attempt, now in enumerate([0.0, 5.0, 10.0]):
        if attempt:
            assert a.tick(now) == [Dial(B)]
        b.link_opened(2 * attempt + 2, now, peer=A, outbound=False)
        [hello] = sends(a.link_opened(2 * attempt + 1, now, peer=B, outbound=True))
        [goodbye] = sends(b.received(2 * attempt + 2, hello, now))
        alerts += [x for x in a.received(2 * attempt + 1, goodbye, now) if isinstance(x, Alert)]
    assert [x.kind for x in alerts] == ["version mismatch"]
    assert a.peers[B].attempts == 3


def test_unknown_node_is_refused_with_authentication_error() -> None:
    b = node(1)
    b.start(0.0)
    out = b.link_opened(2, 0.0, peer="S999", outbound=False)
    assert shape(out) == [
        ("send", 2, "goodbye", "unknown"),
        ("close", 2),
        ("alert", "authentication error", "S999"),
    ]
    assert "S999 is not a member of cluster prod" in out[2].text
    assert b.received(2, hello_from(9), 0.1) == []  # frames still in flight: ignored
    assert b.link_closed(2, 0.1, "closed here") == []
    assert b.links == {}


def test_wrong_cluster_is_refused_on_both_sides() -> None:
    a, b = node(0, cluster="test"), node(1, cluster="prod")
    a.start(0.0)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    [hello] = sends(a.link_opened(1, 0.0, peer=B, outbound=True))
    out = b.received(2, hello, 0.1)
    assert shape(out) == [
        ("send", 2, "goodbye", "cluster"),
        ("close", 2),
        ("alert", "authentication error", A),
    ]
    assert "cluster 'test', not 'prod'" in b.peers[A].reason
    out = a.received(1, sends(out)[0], 0.1)
    assert shape(out) == [("close", 1), ("alert", "authentication error", B)]
    assert a.peers[B].state == b.peers[A].state == "refused"
    assert a.peers[B].refusal == b.peers[A].refusal == "cluster"


def test_hello_for_another_node_than_the_authenticated_one_is_refused() -> None:
    b = node(1, 3)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    out = b.received(2, hello_from(2), 0.1)  # S002 speaking on S000's link
    assert shape(out) == [
        ("send", 2, "goodbye", "identity"),
        ("close", 2),
        ("alert", "authentication error", A),
    ]
    assert b.peers[A].state == "refused" and b.peers[C].state == "down"


def test_a_refused_second_link_leaves_the_live_one_and_its_peer_alone() -> None:
    """A second link claiming a member that is already up, whose hello is refused, is
    closed with an alert; the member's state and live link stay as they were."""
    _, b = pair()
    before = state_of(b)
    assert b.link_opened(7, 1.0, peer=A, outbound=False) == []
    out = b.received(7, hello_from(0, cluster="other"), 1.1)
    assert shape(out) == [
        ("send", 7, "goodbye", "cluster"),
        ("close", 7),
        ("alert", "authentication error", A),
    ]
    assert b.peers[A].state == "up" and b.peers[A].link == 2 and b.peers[A].reason == ""
    del b.links[7]  # the transport reports the close; what is left is as before
    assert state_of(b) == before


def test_dialer_refuses_an_answer_from_the_wrong_node() -> None:
    a = node(0, 3)
    a.start(0.0)
    a.link_opened(1, 0.0, peer=B, outbound=True)
    out = a.received(1, hello_from(2), 0.1)
    assert shape(out) == [
        ("send", 1, "goodbye", "identity"),
        ("close", 1),
        ("alert", "authentication error", B),
    ]
    assert a.peers[B].state == "refused" and a.peers[B].next_dial > 0.1


def test_no_common_protocol_version_is_refused() -> None:
    a, b = node(0, proto_min=3, proto_max=4), node(1)
    a.start(0.0)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    [hello] = sends(a.link_opened(1, 0.0, peer=B, outbound=True))
    out = b.received(2, hello, 0.1)
    assert shape(out) == [
        ("send", 2, "goodbye", "protocol-version"),
        ("close", 2),
        ("alert", "version mismatch", A),
    ]
    assert "(3-4 vs 2-2)" in b.peers[A].reason


def test_dialer_reports_no_common_protocol_version_as_version_mismatch() -> None:
    a, b = node(0, proto_min=3, proto_max=4), node(1)
    a.start(0.0)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    [hello] = sends(a.link_opened(1, 0.0, peer=B, outbound=True))
    [goodbye] = sends(b.received(2, hello, 0.1))
    assert shape(a.received(1, goodbye, 0.1)) == [("close", 1), ("alert", "version mismatch", B)]


@pytest.mark.parametrize("acceptor_state", ["starting", "shutting down"])
def test_an_acceptor_that_is_not_serving_is_not_an_authentication_error(
    acceptor_state: str,
) -> None:
    a, b = node(0), node(1)
    a.start(0.0)
    if acceptor_state == "starting":
        [goodbye, _] = b.link_opened(2, 0.0, peer=A, outbound=False)
        assert isinstance(goodbye, Send) and goodbye.msg.code == "starting"
    else:
        b.start(0.0)
        b.link_opened(2, 0.0, peer=A, outbound=False)
        [goodbye, *_] = b.stop(0.1)
    a.link_opened(1, 0.0, peer=B, outbound=True)
    out = a.received(1, goodbye.msg, 0.2)
    assert ("alert", "authentication error", B) not in shape(out)
    assert a.peers[B].state != "refused"


# -- protocol violations -------------------------------------------------------------------

EARLY = [
    Ping(seq=1, vv={}, links=()),
    CommitMsg(commit=CommitBody.of(commit(A, 1))),
    SyncResponse(commits=(CommitBody.of(commit(A, 1)),), more=False),
    StateTransfer(vv={}, snapshot=SnapshotBody.of(Snapshot((), (), ()))),
]


@pytest.mark.parametrize("msg", EARLY, ids=lambda m: m.type_name)
def test_messages_before_hello_are_a_protocol_error(msg: Message) -> None:
    b = node(1)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    out = b.received(2, msg, 0.1)
    assert shape(out) == [
        ("send", 2, "goodbye", "protocol"),
        ("close", 2),
        ("alert", "protocol error", A),
    ]
    assert f"{msg.type_name} before hello" in out[2].text


def test_dialer_gets_a_message_before_the_hello_answer() -> None:
    a = node(0)
    a.start(0.0)
    a.link_opened(1, 0.0, peer=B, outbound=True)
    out = a.received(1, CommitMsg(commit=CommitBody.of(commit(B, 1))), 0.1)
    assert shape(out) == [
        ("send", 1, "goodbye", "protocol"),
        ("close", 1),
        ("alert", "protocol error", B),
    ]


def test_a_second_hello_on_an_up_link_is_a_protocol_error() -> None:
    _, b = pair()
    out = b.received(2, hello_from(0), 1.0)
    assert shape(out) == [
        ("send", 2, "goodbye", "protocol"),
        ("close", 2),
        ("alert", "protocol error", A),
    ]
    assert "hello after hello" in out[2].text
    assert b.peers[A].state == "down" and b.peers[A].link is None
    assert (
        b.received(2, CommitMsg(commit=CommitBody.of(commit(A, 1))), 1.1) == []
    )  # nothing applied
    assert b.frame_error(2, 1.1, ProtocolError("malformed", "x")) == []


@pytest.mark.parametrize("up", [True, False], ids=["up", "await-hello"])
def test_frame_error_is_a_protocol_error(up: bool) -> None:
    b = pair()[1] if up else node(1)
    if not up:
        b.start(0.0)
        b.link_opened(2, 0.0, peer=A, outbound=False)
    out = b.frame_error(2, 1.0, ProtocolError("oversized", "frame of 99 MB"))
    assert shape(out) == [
        ("send", 2, "goodbye", "protocol"),
        ("close", 2),
        ("alert", "protocol error", A),
    ]
    assert out[2].text == "protocol error from S000: frame of 99 MB"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"type": "commit", "commit": {"origin": A}}, "bad commit message: commit.seq"),
        (
            {
                "type": "commit",
                "commit": {**CommitBody.of(commit(A, 1)).model_dump(mode="json"), "writes": None},
            },
            "carries no writes",
        ),
        ({"type": "sync_response", "commits": [{"seq": "x"}], "more": False}, "commits.0"),
        ({"type": "state_transfer", "vv": {}, "snapshot": {"commits": 5}}, "snapshot.commits"),
        (
            {
                "type": "state_transfer",
                "vv": {A: 9},
                "snapshot": SnapshotBody.of(Snapshot((commit(A, 1),), (), ())).model_dump(
                    mode="json"
                ),
            },
            "does not match its vector",
        ),
        (to_dict(MembershipChange(node=C, disconnected=True)), "S001 spoke for S002"),
    ],
    ids=["commit", "truncated", "sync", "transfer", "transfer-vv", "membership"],
)
def test_bad_content_on_an_up_link_drops_it_and_applies_nothing(
    data: dict[str, Any], why: str
) -> None:
    """Decoded as the daemon decodes a frame: a payload of the wrong shape fails there
    (typed payloads), one that is well formed but wrong fails in the node."""
    a, _ = pair()
    try:
        out = a.received(1, from_dict(data), 1.0)
    except ProtocolError as exc:
        out = a.frame_error(1, 1.0, exc)
    assert shape(out) == [
        ("send", 1, "goodbye", "protocol"),
        ("close", 1),
        ("alert", "protocol error", B),
    ]
    assert why in out[2].text


# -- illegal events (driver bugs) ------------------------------------------------------

ILLEGAL: list[tuple[str, Callable[[Node], Any], Callable[[Node], Any] | None]] = [
    ("received on unknown link", lambda n: n.received(9, Ping(seq=1, vv={}, links=()), 1), None),
    ("frame_error on unknown link", lambda n: n.frame_error(9, 1, ProtocolError("x", "y")), None),
    ("link_opened twice", lambda n: n.link_opened(1, 1, peer=B, outbound=False), None),
    ("link_closed unknown", lambda n: n.link_closed(9, 1, "reset"), None),
    ("dial_failed with no dial", lambda n: n.dial_failed(B, 1, "connection failure", "x"), None),
    ("dial_failed non-member", lambda n: n.dial_failed("S999", 1, "x", "y"), None),
    ("outbound with no dial", lambda n: n.link_opened(5, 1, peer=B, outbound=True), None),
    ("outbound to non-member", lambda n: n.link_opened(5, 1, peer="S999", outbound=True), None),
    ("start twice", lambda n: n.start(1), None),
    ("disconnect twice", lambda n: n.disconnect(1), lambda n: n.disconnect(0.5)),
    ("reconnect when connected", lambda n: n.reconnect(1), None),
    ("rejected non-member", lambda n: n.rejected("S999", 1, "bad"), None),
    ("query non-member", lambda n: n.query("S999", "digest", {}, 1), None),
    ("answer non-member", lambda n: n.answer("S999", 1, True, None, 1), None),
]


@pytest.mark.parametrize(("name", "event", "prepare"), ILLEGAL, ids=[c[0] for c in ILLEGAL])
def test_illegal_events_raise_and_change_nothing(
    name: str, event: Callable[[Node], Any], prepare: Callable[[Node], Any] | None
) -> None:
    a, _ = pair()
    if prepare is not None:
        prepare(a)
    before = state_of(a)
    with pytest.raises(ProtocolError) as info:
        event(a)
    assert info.value.code == "illegal"
    assert state_of(a) == before


# -- pings, sync and state transfer --------------------------------------------------------


def test_ping_pong_and_sync_in_batches() -> None:
    missing = [commit(B, i) for i in range(1, 6)]
    a, b = pair(timing=dataclasses.replace(T, sync_batch=2))
    b.log.add(*missing)  # b commits after the handshake
    assert a.tick(0.9) == []
    ping = Ping(seq=1, vv={}, links=(B,))
    assert a.tick(1.0) == [Send(1, ping)]
    assert b.received(2, ping, 1.0) == [Send(2, Pong(seq=1, vv={B: 5}, links=(A,)))]
    out = a.received(1, Pong(seq=1, vv={B: 5}, links=(A,)), 1.25)
    assert out == [Send(1, SyncRequest(vv={}))]
    assert a.peers[B].rtt == 0.25 and a.peers[B].links == {A}
    assert a.peers[B].syncing_since == 1.25
    assert a.received(1, Pong(seq=1, vv={B: 5}, links=(A,)), 1.3) == []  # already asked

    # One page per request: the asker asks for the next while it applies this one.
    request, pages = SyncRequest(vv={}), []
    for _ in range(3):
        [response] = sends(served(b, 2, request, 1.3))
        pages.append((len(response.commits), response.more))
        out = a.received(1, response, 1.4)
        assert out[-1] == Apply(tuple(missing[2 * len(pages) - 2 : 2 * len(pages)]), B)
        if response.more:  # the next page is asked for before this one is applied
            assert a.peers[B].syncing_since == 1.4
            assert out[:-1] == [Send(1, SyncRequest(vv={B: 2 * len(pages)}))]
            request = out[0].msg
        else:
            assert out[:-1] == []
    assert pages == [(2, True), (2, True), (1, False)]
    assert a.peers[B].syncing_since is None


def test_the_smaller_serial_pings_and_idle_rounds_carry_only_changes() -> None:
    """Scale: an idle link costs a few bytes per round whatever the cluster's size."""
    a, b = pair()
    assert b.tick(1.0) == []  # S001 > S000: B answers, never pings A
    [first] = sends(a.tick(1.0))
    assert first == Ping(seq=1, vv={}, links=(B,))  # a new link starts with everything
    [pong] = sends(b.received(2, first, 1.0))
    assert pong == Pong(seq=1, vv={}, links=(A,))
    a.received(1, pong, 1.0)
    [second] = sends(a.tick(2.0))
    assert second == Ping(seq=2, vv=None, links=None)
    assert sends(b.received(2, second, 2.0)) == [Pong(seq=2, vv=None, links=None)]
    b.log.add(commit(B, 1))  # B's vector changes: its next pong says so, and A asks
    out = a.received(1, b.received(2, sends(a.tick(3.0))[0], 3.0)[0].msg, 3.0)
    assert out == [Send(1, SyncRequest(vv={}))]
    # A peer that compared against a remembered vector still asks after a lost answer.
    a.peers[B].syncing_since = None
    assert a.received(1, Pong(seq=3, vv=None, links=None), 3.1) == [Send(1, SyncRequest(vv={}))]
    for t in range(4, 10):
        [ping] = sends(a.tick(float(t)))
        assert ping.vv is None and ping.links is None
        [pong] = sends(b.received(2, ping, float(t)))
        a.received(1, pong, float(t))
    [tenth] = sends(a.tick(10.0))
    assert tenth == Ping(seq=10, vv={}, links=(B,))  # every 10th round: all of it
    assert sends(b.received(2, tenth, 10.0)) == [Pong(seq=10, vv={B: 1}, links=(A,))]


def test_pong_for_an_older_ping_does_not_set_rtt() -> None:
    a, _ = pair()
    a.tick(1.0)
    assert a.received(1, Pong(seq=0, vv={}, links=()), 1.5) == []
    assert a.peers[B].rtt is None


def test_nothing_missing_gives_one_empty_last_batch() -> None:
    a, b = pair()
    assert served(b, 2, SyncRequest(vv={}), 1.0) == [Send(2, SyncResponse(commits=(), more=False))]
    assert a.received(1, SyncResponse(commits=(), more=False), 1.0) == []


def test_unanswered_sync_is_asked_again_later() -> None:
    a, _ = pair()
    assert sends(a.received(1, VersionVector(vv={B: 1}), 1.0)) == [SyncRequest(vv={})]
    assert a.received(1, VersionVector(vv={B: 1}), 2.0) == []  # waiting for the answer
    later = 1.0 + 4 * T.handshake_timeout + 0.1
    a.received(1, VersionVector(vv={B: 1}), later)  # keeps the link alive
    assert a.tick(later) == [Send(1, Ping(seq=1, vv={}, links=(B,)))]
    assert a.peers[B].syncing_since is None
    assert sends(a.received(1, VersionVector(vv={B: 1}), later)) == [SyncRequest(vv={})]


def test_state_transfer_when_the_log_is_truncated() -> None:
    log = TinyLog([commit(B, 1), commit(B, 2)])
    log.truncated = True
    a, b = node(0), node(1, log=log)
    a.start(0.0)
    b.start(0.0)
    _, dialer = handshake(a, 1, b, 2)
    assert shape(dialer) == [("note",), ("send", 1, "sync_request")]
    out = served(b, 2, sends(dialer)[0], 1.0)
    assert out == [
        Send(2, StateTransfer(vv={B: 2}, snapshot=SnapshotBody.of(log.snapshot()))),
        Note("state transfer to S000: the log is truncated"),
    ]
    [install] = a.received(1, sends(out)[0], 1.1)
    assert isinstance(install, Install) and install.peer == B
    assert install.body.snapshot() == log.snapshot()  # as it came: its host builds it
    a.log.add(*log.commits.values())
    assert a.received(1, sends(out)[0], 1.2) == []  # a late copy: nothing new in it


def test_a_page_read_for_a_link_gone_meanwhile_is_dropped() -> None:
    """The log is read off the links' loop: the link may be closed when the page comes."""
    _, b = pair()
    b.log.add(commit(B, 1))
    [read] = b.received(2, SyncRequest(vv={}), 1.0)
    assert read == ReadLog(2, {}, T.sync_batch)
    b.link_closed(2, 1.1, "connection lost")
    assert b.log_read(2, [commit(B, 1)], 1.2) == []
    assert b.log_read(99, [commit(B, 1)], 1.2) == []  # never a link


# -- local commits, routes and queries -----------------------------------------------------


def test_local_commit_goes_direct_and_relayed_via_a_neighbour() -> None:
    a, b, c = trio()
    ping = Ping(seq=1, vv={}, links=(B,))
    assert a.tick(1.0) == [Send(1, ping)]
    [pong] = sends(b.received(2, ping, 1.0))
    assert pong == Pong(seq=1, vv={}, links=(A, C))
    assert a.received(1, pong, 1.0) == []
    assert a.route(C) is a.links[1]

    c1 = commit(A, 1)
    data = to_dict(CommitMsg(commit=CommitBody.of(c1)))
    relay = Relay(src=A, dst=C, ttl=T.relay_ttl, inner=data)
    assert a.committed(c1, 1.5) == [Send(1, CommitMsg(commit=CommitBody.of(c1))), Send(1, relay)]
    assert b.received(2, CommitMsg(commit=CommitBody.of(c1)), 1.5) == [Apply((c1,), A)]
    forwarded = Relay(src=A, dst=C, ttl=T.relay_ttl - 1, inner=data)
    assert b.received(2, relay, 1.5) == [Send(3, forwarded)]
    assert c.received(4, forwarded, 1.5) == [Apply((c1,), A)]


def test_no_route_sends_nothing_and_queries_fail_at_once() -> None:
    a, _, _ = trio()  # a has not heard b's links yet
    c1 = commit(A, 1)
    assert a.committed(c1, 0.5) == [Send(1, CommitMsg(commit=CommitBody.of(c1)))]
    assert a.route(C) is None
    qid, out = a.query(C, "digest", {}, 0.5)
    assert out == [
        Alert("no route", C, "no route to m2.example.com"),
        Answered(C, qid, False, "no route to m2.example.com"),
    ]
    assert a.queries == {}
    assert a.answer(C, 7, True, "x", 0.5) == [Alert("no route", C, "no route to m2.example.com")]


def test_query_and_answer_direct() -> None:
    a, b = pair()
    qid, out = a.query(B, "digest", {"mode": "cluster"}, 1.0)
    assert out == [Send(1, Query(qid=qid, kind="digest", args={"mode": "cluster"}))]
    assert a.queries == {qid: B}
    ask = b.received(2, sends(out)[0], 1.0)
    assert ask == [Ask(A, qid, "digest", {"mode": "cluster"})]
    [reply] = sends(b.answer(A, qid, True, "abc", 1.0))
    assert reply == Answer(qid=qid, ok=True, body="abc")
    assert a.received(1, reply, 1.1) == [Answered(B, qid, True, "abc")]
    assert shape(a.received(1, reply, 1.2)) == [("note",)]  # answered already: ignored
    assert a.queries == {}


def test_query_and_answer_relayed() -> None:
    a, b, c = trio()
    b_links = Pong(seq=0, vv={}, links=(A, C))
    a.received(1, b_links, 0.5)
    c.received(4, b_links, 0.5)
    qid, [out] = a.query(C, "digest", {}, 1.0)
    assert shape([out]) == [("send", 1, "relay")]
    [hop] = sends(b.received(2, out.msg, 1.0))
    assert c.received(4, hop, 1.0) == [Ask(A, qid, "digest", {})]
    [back] = sends(c.answer(A, qid, True, "abc", 1.0))
    assert (back.src, back.dst, back.ttl) == (C, A, T.relay_ttl)
    [hop] = sends(b.received(3, back, 1.0))
    assert a.received(1, hop, 1.0) == [Answered(C, qid, True, "abc")]


def test_relay_out_of_hops_is_an_alert() -> None:
    _, b, _ = trio()
    inner = to_dict(CommitMsg(commit=CommitBody.of(commit(A, 1))))
    out = b.received(2, Relay(src=A, dst=C, ttl=0, inner=inner), 1.0)
    assert out == [Alert("forward failed", C, "message from S000 ran out of hops")]


def test_relay_with_no_route_onwards_is_an_alert() -> None:
    _, b, _ = trio()
    b.link_closed(3, 0.5, "reset")
    inner = to_dict(CommitMsg(commit=CommitBody.of(commit(A, 1))))
    out = b.received(2, Relay(src=A, dst=C, ttl=2, inner=inner), 1.0)
    assert out == [Alert("forward failed", C, "no route to m2.example.com")]


def test_a_relay_never_goes_back_where_it_came_from() -> None:
    """Regression (netns campaign): two members that lost the destination at once
    routed to each other, and the source took its own message back as a protocol error
    and closed a working link."""
    a, b, _ = trio()
    b.link_closed(3, 0.5, "reset")  # B lost C ...
    b.received(2, Ping(seq=1, vv={}, links=(B, C)), 0.6)  # ... and A says it has C
    inner = to_dict(CommitMsg(commit=CommitBody.of(commit(A, 1))))
    out = b.received(2, Relay(src=A, dst=C, ttl=2, inner=inner), 1.0)
    assert out == [Alert("forward failed", C, "no route to m2.example.com")]  # not to A
    mine = a.received(1, Relay(src=A, dst=C, ttl=1, inner=inner), 1.0)
    assert shape(mine) == [("note",)] and a.peers[B].state == "up"


def test_a_dial_refused_at_login_is_a_refusal_of_keys() -> None:
    a = node(0)
    assert a.start(0.0) == [Dial(B)]
    out = a.dial_failed(B, 0.1, "authentication error", "m1 refused our machine key")
    assert out == [Alert("authentication error", B, "m1 refused our machine key")]
    assert (a.peers[B].state, a.peers[B].refusal) == ("refused", "key")  # (its action)


def test_a_failed_second_dial_leaves_a_live_peer_up() -> None:
    """Regression (netns campaign): the peer was shown "down", and left out of the
    links pings advertise, while a link to it was up."""
    a, _ = pair()
    a.peers[B].dialing = True  # a redial raced the link that is up
    assert a.dial_failed(B, 1.0, "connection failure", "refused") == []
    assert a.peers[B].state == "up" and a.live_peers() == (B,)


@pytest.mark.parametrize(
    ("relay", "why"),
    [
        (Relay(src="S999", dst=C, ttl=3, inner={}), "relayed message from non-member S999"),
        (Relay(src=A, dst="S999", ttl=3, inner={}), "relay to non-member S999"),
        (
            Relay(src=A, dst=B, ttl=3, inner=to_dict(SyncRequest(vv={}))),
            "sync_request cannot be relayed",
        ),
        (Relay(src=A, dst=B, ttl=3, inner={"type": "nope"}), "unknown message type 'nope'"),
    ],
    ids=["src", "dst", "not-relayable", "unknown-inner"],
)
def test_bad_relays_are_protocol_errors(relay: Relay, why: str) -> None:
    _, b, _ = trio()
    out = b.received(2, relay, 1.0)
    assert shape(out) == [
        ("send", 2, "goodbye", "protocol"),
        ("close", 2),
        ("alert", "protocol error", A),
    ]
    assert why in out[2].text


def test_committed_skips_members_marked_disconnected() -> None:
    _, b = pair()
    b.received(2, MembershipChange(node=A, disconnected=True), 1.0)
    assert b.peers[A].admin_off
    assert b.committed(commit(B, 1), 1.0) == []
    b.received(2, MembershipChange(node=A, disconnected=False), 1.0)
    assert sends(b.committed(commit(B, 1), 1.0)) == [CommitMsg(commit=CommitBody.of(commit(B, 1)))]


# -- dead peers, lost links, backoff -------------------------------------------------------


def test_a_member_among_many_has_at_most_max_dials_in_flight() -> None:
    a = node(0, 21)  # 20 peers, all smaller-serial dials of ours
    first = a.start(0.0)
    assert len(first) == T.max_dials and all(isinstance(x, Dial) for x in first)
    assert a.tick(0.5) == []  # all in flight
    a.dial_failed(first[0].peer, 0.6, "connection failure", "refused")
    [more] = a.tick(0.7)
    assert isinstance(more, Dial) and more.peer not in {d.peer for d in first}
    a.link_opened(1, 0.8, peer=first[1].peer, outbound=True)  # its handshake still counts
    assert a.tick(0.9) == []


def test_dead_peer_is_dropped_and_redialled_with_capped_backoff() -> None:
    a, _ = pair()
    assert a.tick(1.0) == [Send(1, Ping(seq=1, vv={}, links=(B,)))]
    assert a.tick(DEAD) == [Send(1, Ping(seq=2, vv=None, links=None))]  # not yet: > dead
    out = a.tick(DEAD + 0.1)
    assert shape(out) == [
        ("send", 1, "goodbye", "timeout"),
        ("close", 1),
        ("alert", "connection dropped", B),
    ]
    assert out[2].text == "no answer for 2.6 s"
    peer = a.peers[B]
    assert peer.state == "down" and peer.link is None
    assert a.link_closed(1, DEAD + 0.1, "closed here") == []
    assert peer.next_dial == DEAD + 0.1 + T.backoff(A, B, 0)

    now, delays, alerts = peer.next_dial, [], []
    assert a.tick(now - 0.01) == []
    for attempt in range(1, 7):
        assert a.tick(now) == [Dial(B)]
        out = a.dial_failed(B, now, "connection failure", "connection refused")
        alerts += out
        delays.append(peer.next_dial - now)
        assert delays[-1] == pytest.approx(T.backoff(A, B, attempt))
        assert peer.state == "down" and peer.attempts == attempt + 1
        now = peer.next_dial
    assert alerts == [Alert("connection failure", B, "connection refused")]  # once
    assert delays[0] < delays[1]  # grows ...
    assert all(d < 1.25 * T.backoff_max for d in delays)  # ... up to the cap, +-25 % jitter


def test_backoff_doubles_then_caps_with_a_fixed_jitter() -> None:
    for k in range(40):
        base = min(T.backoff_max, T.backoff_min * 2**k)
        assert 0.75 * base <= T.backoff(A, B, k) < 1.25 * base
        assert T.backoff(A, B, k) == T.backoff(A, B, k)  # the same on every run
    assert T.backoff(A, B, 0) < T.backoff(A, B, 1) < T.backoff(A, B, 2)


def test_silent_handshake_times_out() -> None:
    a, b = node(0), node(1)
    a.start(0.0)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    a.link_opened(1, 0.0, peer=B, outbound=True)
    assert b.tick(T.handshake_timeout) == []
    expected = [("send", 2, "goodbye", "timeout"), ("close", 2), ("alert", "connection dropped", A)]
    assert shape(b.tick(T.handshake_timeout + 0.1)) == expected
    out = a.tick(T.handshake_timeout + 0.1)
    assert shape(out) == [
        ("send", 1, "goodbye", "timeout"),
        ("close", 1),
        ("alert", "connection dropped", B),
    ]
    assert a.peers[B].next_dial > T.handshake_timeout + 0.1


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("up", [("alert", "connection dropped", B)]),
        ("hello-sent", [("alert", "connection failure", B)]),
    ],
)
def test_transport_loses_a_link(setup: str, expected: list[tuple[Any, ...]]) -> None:
    if setup == "up":
        a, _ = pair()
    else:
        a = node(0)
        a.start(0.0)
        a.link_opened(1, 0.0, peer=B, outbound=True)
    assert shape(a.link_closed(1, 1.0, "reset by peer")) == expected
    assert a.links == {} and a.peers[B].state == "down"


def test_transport_loses_an_inbound_handshake_quietly() -> None:
    b = node(1)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    assert b.link_closed(2, 0.5, "reset") == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("shutdown", [("close", 1), ("note",)]),
        ("removed", [("close", 1), ("note",)]),
        ("duplicate", [("close", 1), ("note",)]),
        ("disconnected", [("close", 1), ("note",)]),
    ],
)
def test_goodbye_on_an_up_link(code: str, expected: list[tuple[Any, ...]]) -> None:
    a, _ = pair()
    out = a.received(1, Goodbye(code=code, reason="because"), 1.0)
    assert shape(out) == expected
    assert out[0] == Close(1, "m1.example.com closed the link: because")
    assert a.links == {}
    assert a.peers[B].state == ("disconnected" if code == "disconnected" else "down")


def test_goodbye_during_inbound_handshake_is_a_note() -> None:
    b = node(1)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    out = b.received(2, Goodbye(code="shutdown", reason="bye"), 0.1)
    assert out == [
        Close(2, "refused by m0.example.com: bye"),
        Note("refused by m0.example.com: bye"),
    ]


def test_dialing_a_disconnected_member_backs_off() -> None:
    a, b = node(0), node(1)
    a.start(0.0)
    b.start(0.0)
    b.disconnect(0.0)
    assert b.link_opened(2, 0.1, peer=A, outbound=False) == []  # it reads the hello first
    [hello] = sends(a.link_opened(1, 0.1, peer=B, outbound=True))
    goodbye, close = b.received(2, hello, 0.1)
    assert shape([goodbye, close]) == [("send", 2, "goodbye", "disconnected"), ("close", 2)]
    assert shape(a.received(1, goodbye.msg, 0.1)) == [("close", 1), ("note",)]
    assert a.tick(0.2) == []  # it dials us when it reconnects
    assert a.peers[B].state == "disconnected"


def test_a_hello_carries_the_receivers_flag_and_a_newer_reconnect_is_news() -> None:
    """b is disconnected (its flag, written by b at hlc 5); a has seen a RECONNECT of b
    written later (hlc 9, by c): a's hello says so, and b acts on it.  An older RECONNECT
    (hlc 3) is no news: b refuses as usual."""
    b_log = TinyLog()
    b_log.flags[hostname(1)] = Flag(5, B, True)
    for seen, news in [(Flag(9, C, False), True), (Flag(3, C, False), False),
                       (Flag(9, C, True), False), (None, False)]:  # fmt: skip
        a_log = TinyLog()
        if seen is not None:
            a_log.flags[hostname(1)] = seen
        a, b = node(0, log=a_log), node(1, log=b_log)
        a.start(0.0)
        b.start(0.0)
        b.disconnect(0.0)
        b.link_opened(2, 0.1, peer=A, outbound=False)
        [hello] = sends(a.link_opened(1, 0.1, peer=B, outbound=True))
        assert hello.flag == (None if seen is None else FlagStamp(
            hlc=seen.hlc, origin=seen.origin, disconnected=seen.disconnected))  # fmt: skip
        out = b.received(2, hello, 0.1)
        expected = [("send", 2, "goodbye", "disconnected"), ("close", 2)]
        assert shape(out) == expected
        assert (Reconnect(A) in out) is news, (seen, out)


def test_reconnect_dials_every_member_whatever_its_flag() -> None:
    """Both members of a pair were disconnected; the first to reconnect dials the other
    even though its flag here still says disconnected (it may have reconnected too)."""
    a = node(0, 3)
    for dial in a.start(0.0):
        assert isinstance(dial, Dial)
        a.dial_failed(dial.peer, 0.0, "connection failure", "nobody there yet")
    a.set_members([Machine(A, hostname(0)), Machine(B, hostname(1), disconnected=True),
                   Machine(C, hostname(2))], 0.0)  # fmt: skip
    a.disconnect(0.0)
    assert a.peers[B].admin_off
    assert set(a.reconnect(1.0)) == {Dial(B), Dial(C)}


def test_stop_says_goodbye_on_every_link() -> None:
    a, b = pair()
    out = a.stop(1.0)
    assert shape(out) == [("send", 1, "goodbye", "shutdown"), ("close", 1), ("note",)]
    assert not a.started and a.tick(50.0) == []
    assert shape(b.received(2, sends(out)[0], 1.0)) == [("close", 2), ("note",)]  # (no alert)


def test_rejected_commit_drops_the_sender() -> None:
    a, _ = pair()
    out = a.rejected(B, 1.0, "settz: unknown zone")
    assert shape(out) == [
        ("send", 1, "goodbye", "bad-commit"),
        ("close", 1),
        ("alert", "bad commit", B),
    ]
    assert a.rejected(B, 1.1, "again") == [Alert("bad commit", B, "again")]


# -- duplicate links -----------------------------------------------------------------------


def test_simultaneous_dials_keep_the_link_dialled_by_the_smaller_serial() -> None:
    a, b = node(0), node(1)
    assert a.start(0.0) == [Dial(B)]
    assert b.start(0.0) == []
    assert b.tick(1.25) == [Dial(A)]  # a's dial has not completed yet
    # a's dial: a link 1 <-> b link 2;  b's dial: b link 3 <-> a link 4
    assert b.link_opened(2, 1.3, peer=A, outbound=False) == []
    [a_hello] = sends(a.link_opened(1, 1.3, peer=B, outbound=True))
    assert a.link_opened(4, 1.3, peer=B, outbound=False) == []
    [b_hello] = sends(b.link_opened(3, 1.3, peer=A, outbound=True))

    assert shape(b.received(2, a_hello, 1.4)) == [("send", 2, "hello"), ("note",)]
    assert shape(a.received(4, b_hello, 1.4)) == [("send", 4, "hello"), ("note",)]
    assert shape(a.received(1, b_hello, 1.5)) == [("send", 4, "goodbye", "duplicate"), ("close", 4)]
    assert shape(b.received(3, a_hello, 1.5)) == [("send", 3, "goodbye", "duplicate"), ("close", 3)]
    # each goodbye reaches a link its receiver already closed
    assert a.received(4, Goodbye(code="duplicate", reason="x"), 1.6) == []
    assert b.received(3, Goodbye(code="duplicate", reason="x"), 1.6) == []
    assert a.link_closed(4, 1.6, "closed") == [] and b.link_closed(3, 1.6, "closed") == []
    assert (list(a.links), list(b.links)) == ([1], [2])
    assert (a.peers[B].link, b.peers[A].link) == (1, 2)
    assert a.peers[B].state == b.peers[A].state == "up"


# -- disconnect / reconnect ----------------------------------------------------------------


def test_disconnect_says_so_closes_everything_and_stops_dialling() -> None:
    a, b, c = node(0, 3), node(1, 3), node(2, 3)
    a.start(0.0)
    b.start(0.0)
    c.start(0.0)
    handshake(a, 1, b, 2)
    handshake(a, 3, c, 4)
    out = a.disconnect(1.0)
    assert shape(out) == [
        ("send", 1, "membership"),
        ("send", 3, "membership"),
        ("send", 1, "goodbye", "disconnected"),
        ("close", 1),
        ("note",),
        ("send", 3, "goodbye", "disconnected"),
        ("close", 3),
        ("note",),
    ]
    assert sends(out)[0] == MembershipChange(node=A, disconnected=True)
    assert b.received(2, sends(out)[0], 1.0) == []
    assert b.peers[A].admin_off
    assert shape(b.received(2, sends(out)[2], 1.0)) == [("close", 2), ("note",)]
    assert b.peers[A].state == "disconnected"
    assert a.link_closed(1, 1.0, "closed") == [] and a.link_closed(3, 1.0, "closed") == []
    assert {p.state for p in a.peers.values()} == {"disconnected"}

    for now in (2.0, 10.0, 100.0):
        assert a.tick(now) == []
        assert Dial(A) not in b.tick(now)
    assert a.committed(commit(A, 1), 100.0) == []
    assert a.link_opened(9, 100.0, peer=B, outbound=False) == []  # the hello is read
    inbound = a.received(9, hello_from(1), 100.0)
    assert shape(inbound) == [("send", 9, "goodbye", "disconnected"), ("close", 9)]
    assert a.link_closed(9, 100.0, "closed") == []

    assert a.reconnect(101.0) == [Dial(B), Dial(C)]
    assert a.tick(101.5) == []  # dials in progress


def test_a_dial_completing_while_disconnected_is_closed_quietly() -> None:
    a = node(0)
    assert a.start(0.0) == [Dial(B)]
    a.disconnect(0.1)
    out = a.link_opened(1, 0.2, peer=B, outbound=True)
    assert shape(out) == [("send", 1, "goodbye", "disconnected"), ("close", 1)]
    assert a.reconnect(1.0) == []  # that link is still closing
    a.link_closed(1, 1.0, "closed")
    assert a.tick(1.0) == [Dial(B)]


# -- membership changes --------------------------------------------------------------------


def test_set_members_adds_removes_and_disconnects() -> None:
    a, _ = pair()
    two = [Machine(A, hostname(0)), Machine(B, hostname(1))]
    added = [*two, Machine(C, hostname(2))]
    assert a.set_members(added, 1.0) == [Dial(C)]
    assert a.peers[C].state == "down"

    flagged = [Machine(A, hostname(0)), Machine(B, "renamed", disconnected=True)]
    assert a.set_members(flagged, 2.0) == []  # B's live link is fresher news than the flag
    assert C not in a.peers and a.peers[B].state == "up"
    assert a.peers[B].hostname == "renamed"
    out = a.received(1, Goodbye(code="disconnected", reason="administratively"), 2.1)
    assert shape(out) == [("close", 1), ("note",)]  # B closes its own links
    assert a.peers[B].state == "disconnected"
    assert a.tick(10.0) == []  # disconnected members are not dialled
    assert a.set_members(flagged, 10.5) == [] and a.tick(20.0) == []

    assert a.set_members(two, 11.0) == [Dial(B)]
    assert a.peers[B].state == "down"

    a2, _ = pair()
    out = a2.set_members([Machine(A, hostname(0))], 1.0)
    assert shape(out) == [("send", 1, "goodbye", "removed"), ("close", 1), ("note",)]
    assert a2.peers == {} and a2.link_closed(1, 1.0, "closed") == []


def test_a_stale_disconnect_flag_never_closes_a_reconnected_members_link() -> None:
    """Regression (CI): B reconnected and linked, its RECONNECT commit not yet applied
    here; another commit made us re-read membership with B still flagged.  Closing the
    link then told B "disconnected", B took it as news about us, and neither side ever
    dialled again."""
    a, _ = pair()
    stale = [Machine(A, hostname(0)), Machine(B, hostname(1), disconnected=True)]
    assert a.set_members(stale, 1.0) == []
    assert a.peers[B].state == "up" and a.peers[B].link == 1
    # Without a link the flag stops our dials, and B's own dial is still welcome.
    a.link_closed(1, 2.0, "connection reset")
    a.set_members(stale, 2.1)
    assert a.peers[B].state == "disconnected" and a.tick(30.0) == []
    assert a.link_opened(7, 30.5, peer=B, outbound=False) == []
    out = a.received(7, hello_from(1), 30.6)
    assert ("send", 7, "hello") in [x[:3] for x in shape(out)]
    assert a.peers[B].state == "up"


def test_an_inbound_link_before_start_is_turned_away_quietly() -> None:
    b = node(1)
    out = b.link_opened(2, 0.0, peer=A, outbound=False)
    assert shape(out) == [("send", 2, "goodbye", "starting"), ("close", 2)]


# -- several members, with a delivery loop -------------------------------------------------

CLOSED = object()


class Net:
    """Synchronous delivery between nodes: FIFO per link end (a random end each step when
    ``rng`` is given), dials carried out at once, a blocked pair loses frames and dials."""

    def __init__(self, nodes: list[Node], rng: random.Random | None = None) -> None:
        self.nodes = {n.me.serial: n for n in nodes}
        self.rng = rng
        self.other: dict[tuple[str, int], tuple[str, int]] = {}
        self.inbox: dict[tuple[str, int], deque[tuple[int, Any]]] = {}
        self.dials: list[tuple[str, str]] = []
        self.blocked: set[frozenset[str]] = set()
        self.done: dict[str, list[Action]] = {s: [] for s in self.nodes}
        self.ids = itertools.count(1)
        self.seq = itertools.count()
        self.now = 0.0

    def do(self, me: str, actions: list[Action]) -> None:
        self.done[me] += actions
        n = self.nodes[me]
        for action in actions:
            match action:
                case Send(link, msg):
                    to = self.other.get((me, link))
                    if to is not None and frozenset((me, to[0])) not in self.blocked:
                        self.inbox[to].append((next(self.seq), msg))
                case Close(link):
                    self.inbox[(me, link)].append((next(self.seq), CLOSED))
                    to = self.other.pop((me, link), None)
                    if to is not None:
                        del self.other[to]
                        self.inbox[to].append((next(self.seq), CLOSED))
                case Dial(peer):
                    self.dials.append((me, peer))
                case Apply(commits):
                    n.log.add(*commits)
                case Ask(peer, qid, kind):
                    self.do(me, n.answer(peer, qid, True, f"{kind} of {me}", self.now))
                case ReadLog(link, vv, limit):
                    self.do(me, n.log_read(link, page(n.log, vv, limit), self.now))  # type: ignore[arg-type]

    def dial(self, src: str, dst: str) -> None:
        if frozenset((src, dst)) in self.blocked:
            self.do(src, self.nodes[src].dial_failed(dst, self.now, "connection failure", "no"))
            return
        x, y = next(self.ids), next(self.ids)
        self.other[(src, x)], self.other[(dst, y)] = (dst, y), (src, x)
        self.inbox[(src, x)], self.inbox[(dst, y)] = deque(), deque()
        self.do(dst, self.nodes[dst].link_opened(y, self.now, peer=src, outbound=False))
        self.do(src, self.nodes[src].link_opened(x, self.now, peer=dst, outbound=True))

    def run(self) -> None:
        for _ in range(100_000):
            if self.dials:
                self.dial(*self.dials.pop(0))
                continue
            ready = [end for end, q in self.inbox.items() if q]
            if not ready:
                return
            if self.rng is not None:
                end = self.rng.choice(sorted(ready))
            else:
                end = min(ready, key=lambda e: self.inbox[e][0][0])
            _, item = self.inbox[end].popleft()
            me, link = end
            n = self.nodes[me]
            if link not in n.links:
                continue
            if item is CLOSED:
                self.do(me, n.link_closed(link, self.now, "closed by the other end"))
            else:
                self.do(me, n.received(link, item, self.now))
        raise AssertionError("the delivery loop did not settle")

    def start(self) -> None:
        for s, n in self.nodes.items():
            self.do(s, n.start(self.now))
        self.run()

    def tick(self, now: float) -> None:
        self.now = now
        for s, n in self.nodes.items():
            self.do(s, n.tick(now))
        self.run()

    def alerts(self) -> list[Alert]:
        return [a for done in self.done.values() for a in done if isinstance(a, Alert)]


@pytest.mark.parametrize("seed", range(40))
def test_simultaneous_dials_settle_on_one_link_in_any_order(seed: int) -> None:
    a, b = node(0), node(1)
    net = Net([a, b], random.Random(seed))
    net.do(A, a.start(0.0))
    net.do(B, b.start(0.0))
    net.do(B, b.tick(1.25))
    assert net.dials == [(A, B), (B, A)]
    net.now = 1.25
    net.run()
    la, lb = a.peers[B].link, b.peers[A].link
    assert la is not None and lb is not None
    assert net.other[(A, la)] == (B, lb)  # the same connection on both sides
    assert a.links[la].outbound and not b.links[lb].outbound  # the one S000 dialled
    assert list(a.links) == [la] and list(b.links) == [lb]
    assert a.peers[B].state == b.peers[A].state == "up"
    assert net.alerts() == []


def four(blocked: tuple[str, str] | None = None) -> tuple[Net, list[Node]]:
    nodes = [node(i, 4) for i in range(4)]
    net = Net(nodes)
    if blocked:
        net.blocked.add(frozenset(blocked))
    net.start()
    net.tick(1.0)  # pings carry each member's live links
    return net, nodes


def test_four_members_a_commit_reaches_everyone() -> None:
    net, nodes = four()
    assert all(p.state == "up" for n in nodes for p in n.peers.values())
    c1 = commit(C, 1)
    nodes[2].log.add(c1)
    net.do(C, nodes[2].committed(c1, 1.5))
    net.run()
    for s in (A, B, D):
        assert Apply((c1,), C) in net.done[s]
        assert net.nodes[s].log.version_vector() == {C: 1}
    assert net.alerts() == []


def test_four_members_blocked_pair_relays_and_answers() -> None:
    net, nodes = four(blocked=(A, D))
    assert nodes[0].peers[D].state == "down" and nodes[3].peers[A].state == "down"
    assert nodes[0].route(D) is nodes[0].links[nodes[0].peers[B].link]
    c1 = commit(A, 1)
    nodes[0].log.add(c1)
    out = nodes[0].committed(c1, 1.5)
    assert shape(out) == [("send", 1, "commit"), ("send", 3, "commit"), ("send", 1, "relay")]
    net.do(A, out)
    net.run()
    assert Apply((c1,), A) in net.done[D]
    assert all(n.log.version_vector() == {A: 1} for n in nodes)

    qid, out = nodes[0].query(D, "digest", {}, 2.0)
    net.do(A, out)
    net.run()
    assert Answered(D, qid, True, "digest of S003") in net.done[A]
    assert {a.kind for a in net.alerts()} == {"connection failure"}  # only the blocked dials


def test_four_members_catch_up_by_ping_after_a_lost_commit() -> None:
    net, nodes = four()
    c1 = commit(B, 1)
    nodes[1].log.add(c1)
    net.blocked.add(frozenset((B, D)))
    net.do(B, nodes[1].committed(c1, 1.5))
    net.run()
    assert nodes[3].log.version_vector() == {}
    net.blocked.clear()
    net.tick(2.0)
    assert nodes[3].log.version_vector() == {B: 1}


def test_a_late_second_dial_does_not_hide_a_live_link() -> None:
    """Both dial; ours completes after the peer's link is up: the peer stays "up"."""
    from clusterd.mesh.peers import Identity, Machine, Timing
    from clusterd.mesh.protocol import Node
    from tests.replica import Replica
    from tests.sim import SimHost, genesis

    def node(serial: str, host: str) -> Node:
        h = SimHost(Replica(serial, host, lambda: 1))
        h.apply([genesis(2)])
        me = Identity(serial, host, "sim", "1.0")
        members = [Machine("S000", "m0.example.com"), Machine("S001", "m1.example.com")]
        return Node(me, h, members, Timing.for_interval(1.0))

    a, b = node("S000", "m0.example.com"), node("S001", "m1.example.com")
    a.start(0.0)
    b.start(0.0)
    b.tick(10.0)  # the larger serial dials too
    hello_a = a.link_opened(1, 10.0, peer="S001", outbound=True)[0].msg  # type: ignore[union-attr]
    b.link_opened(2, 10.0, peer="S000", outbound=False)
    reply = b.received(2, hello_a, 10.0)[0].msg  # type: ignore[union-attr]
    a.received(1, reply, 10.0)
    assert b.peers["S000"].state == "up"
    b.link_opened(3, 10.1, peer="S000", outbound=True)  # b's own dial lands late
    assert b.peers["S000"].state == "up" and b.peers["S000"].link == 2
