"""The protocol's side of witnessing chain heads (``docs/history.md``, section 2): what
hello, ping and pong carry (``hd`` only when durable, changed or on a full round; null
fields left out), and what a node finds in a peer's ``hd``: "history went back" and a
divergence to narrow down (``HeadsDiffer``), then "fork" once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import pytest

from clusterd.core.errors import ProtocolError
from clusterd.core.versions import Commit
from clusterd.mesh import witness
from clusterd.mesh.messages import Hello, Ping, Pong, decode_body, encode
from clusterd.mesh.peers import Alert, HeadsDiffer
from clusterd.mesh.protocol import FULL_EVERY, Node
from tests.test_protocol import (
    A,
    B,
    T,
    TinyLog,
    commit,
    handshake,
    hello_from,
    hostname,
    node,
    sends,
)


class WitnessedLog(TinyLog):
    """A ``TinyLog`` whose commits have hashes (``forge`` gives one another), and whose
    writes may be under way (``writing``: no summary)."""

    def __init__(self, commits: Iterable[Commit] = ()) -> None:
        self.forged: set[tuple[str, int]] = set()
        self.writing = False
        super().__init__(commits)

    def hash(self, origin: str, seq: int) -> str:
        mark = "forged" if (origin, seq) in self.forged else ""
        return hashlib.sha256(f"{origin}:{seq}{mark}".encode()).hexdigest()

    def heads_digest(self) -> witness.Summary | None:
        if self.writing:
            return None
        vv = self.version_vector()
        return witness.summary({o: (s, self.hash(o, s)) for o, s in vv.items()}, vv)


def log_of(*seqs: tuple[str, int]) -> WitnessedLog:
    return WitnessedLog(commit(o, s) for o, n in seqs for s in range(1, n + 1))


def up(a_log: WitnessedLog, b_log: WitnessedLog, now: float = 0.0) -> tuple[Node, Node, list]:
    """A (link 1) and B (link 2) linked: B's actions on A's hello, A's on B's hello."""
    a, b = node(0, log=a_log), node(1, log=b_log)
    a.start(now)
    b.start(now)
    _at_b, at_a = handshake(a, 1, b, 2, now)
    return a, b, at_a


def rounds(
    a: Node, b: Node, start: float, n: int, links: tuple[int, int] = (1, 2)
) -> list[tuple[Ping, Pong, list]]:
    """``n`` ping rounds from A (the smaller serial) on ``links`` (A's end, B's end):
    each ping, its pong and what A did with the pong."""
    out = []
    for i in range(n):
        [ping] = [m for m in sends(a.tick(start + i * T.ping_interval)) if isinstance(m, Ping)]
        [pong] = [m for m in sends(b.received(links[1], ping, start + i)) if isinstance(m, Pong)]
        out.append((ping, pong, a.received(links[0], pong, start + i)))
    return out


def test_an_idle_ping_encodes_no_null_field() -> None:
    ping = Ping(seq=7, vv=None, links=None)
    assert encode(ping)[4:] == b'{"type":"ping","seq":7}'
    assert decode_body(encode(ping)[4:]) == ping
    full = Pong(seq=7, vv={"A": 1}, links=("B",), hd="abcdefghij_")
    assert json.loads(encode(full)[4:]) == {"type": "pong", "seq": 7, "vv": {"A": 1},
                                            "links": ["B"], "hd": "abcdefghij_"}  # fmt: skip
    assert decode_body(encode(full)[4:]) == full


def test_hello_ping_and_pong_carry_hd_only_when_it_changed_or_on_a_full_round() -> None:
    a_log, b_log = log_of((A, 3)), log_of((A, 3))
    a, b = node(0, log=a_log), node(1, log=b_log)
    a.start(0.0)
    b.start(0.0)
    b.link_opened(2, 0.0, peer=A, outbound=False)
    [hello] = sends(a.link_opened(1, 0.0, peer=B, outbound=True))
    assert isinstance(hello, Hello)
    summary = a_log.heads_digest()
    assert summary is not None and hello.hd == summary.hd and hello.vv == {A: 3}
    [reply] = [m for m in sends(b.received(2, hello, 0.0)) if isinstance(m, Hello)]
    assert reply.hd is not None
    a.received(1, reply, 0.0)
    played = rounds(a, b, 1.0, FULL_EVERY + 2)
    pings = {p.seq: p for p, _, _ in played}
    # The first round (a new link) carries it, then nothing until the full round.
    assert pings[1].hd == summary.hd and pings[1].vv == {A: 3}
    assert [s for s, p in pings.items() if p.hd is not None] == [1, FULL_EVERY]
    assert [p.seq for _, p, _ in played if p.hd is not None] == [1, FULL_EVERY]
    # A change goes at the next round, with the vector it describes.
    a_log.add(commit(A, 4))
    [(ping, _, _)] = rounds(a, b, 13.0, 1)
    assert ping.hd == witness.digest({A: (4, a_log.hash(A, 4))}) and ping.vv == {A: 4}


def test_no_hd_while_writes_are_under_way_and_none_from_a_log_without_heads() -> None:
    a_log = log_of((A, 2))
    a_log.writing = True
    a, b, _ = up(a_log, log_of((A, 2)))
    assert all(p.hd is None for p, _, _ in rounds(a, b, 1.0, FULL_EVERY + 1))
    a_log.writing = False
    [(ping, _, _)] = rounds(a, b, 12.0, 1)
    # (no vector: the one b heard last on this link, the hello's, is the one it describes)
    assert ping.hd is not None and ping.vv is None
    plain_a, plain_b = node(0, log=TinyLog([commit(A, 1)])), node(1, log=TinyLog())
    plain_a.start(0.0)
    plain_b.start(0.0)
    handshake(plain_a, 1, plain_b, 2)
    assert all(p.hd is None and q.hd is None for p, q, _ in rounds(plain_a, plain_b, 1.0, 11))


def test_history_went_back_is_raised_once_naming_the_member_the_origin_and_both_seqs() -> None:
    a, b, _ = up(log_of((A, 2), (B, 17)), log_of((A, 2), (B, 17)))
    rounds(a, b, 1.0, 2)
    # B restarts with a log that lost B:15..17 (a new node: its links are new).
    a.link_closed(1, 5.0, "reset")
    b = node(1, log=log_of((A, 2), (B, 14)))
    b.start(6.0)
    a.tick(7.0)
    at_b, at_a = handshake(a, 3, b, 4, 7.0)
    alerts = [x for x in at_b + at_a if isinstance(x, Alert) and x.kind == "history went back"]
    # (A is the dialer: B's hello reaches it in ``at_a``.)
    assert alerts == [
        Alert("history went back", B,
              f"{hostname(1)} advertised {hostname(1)}'s commits up to {B}:17 and now only up "
              f"to {B}:14: its log lost commits (truncated or rewritten, a restored backup, "
              "or a power loss)"),
    ]  # fmt: skip
    [finding] = a.witness.findings.values()
    assert (finding.kind, finding.member, finding.origin, finding.seq, finding.was) == (
        "history went back", B, B, 14, 17)  # fmt: skip
    later = [x for _, _, acts in rounds(a, b, 8.0, FULL_EVERY + 1, (3, 4)) for x in acts]
    assert not [x for x in later if isinstance(x, Alert)]  # once per occurrence


def test_a_vector_that_goes_back_without_hd_is_no_alarm() -> None:
    a, _b, _ = up(log_of((B, 5)), log_of((B, 5)))
    pong = Pong(seq=1, vv={B: 7}, links=())  # (no hd: a write that may yet fail)
    a.received(1, pong, 1.0)
    assert a.received(1, Pong(seq=2, vv={B: 5}, links=(), hd=None), 2.0) == []
    assert not a.witness.findings


def test_equal_vectors_other_heads_diverge_then_fork_is_raised_once() -> None:
    a_log, b_log = log_of((A, 3), (B, 4)), log_of((A, 3), (B, 4))
    b_log.forged.add((B, 4))
    a, b, at_a = up(a_log, b_log)
    assert HeadsDiffer(B) in at_a  # B's hello: same vector, other heads
    [(_, _, acts)] = rounds(a, b, 1.0, 1)
    assert HeadsDiffer(B) in acts  # (the driver runs one narrowing at a time)
    text = "m1 holds another history"
    assert a.forked(B, B, 4, text, 2.0) == [Alert("fork", B, text)]
    assert a.forked(B, B, 4, text, 3.0) == []  # the same fork stands: no second alert
    assert [f.kind for f in a.witness.findings.values()] == ["fork"]
    b_log.forged.clear()  # repaired: heads agree again, what stood against it is over
    acts = [x for _, _, xs in rounds(a, b, 2.0, FULL_EVERY) for x in xs]
    assert HeadsDiffer(B) not in acts and not a.witness.findings


def test_a_lagging_peer_is_not_a_fork() -> None:
    a_log, b_log = log_of((A, 3)), log_of((A, 2))
    a, _b, at_a = up(a_log, b_log)
    assert not [x for x in at_a if isinstance(x, HeadsDiffer | Alert)]
    assert a.witness.last == {B: {A: 2}}


def test_a_removed_member_is_forgotten() -> None:
    a, _b, _ = up(log_of((B, 5)), log_of((B, 5)))
    assert B in a.witness.last
    a.set_members([], 1.0)
    assert B not in a.witness.last


def test_a_hello_overtaken_by_another_links_frames_is_not_witnessed() -> None:
    """Both dial at once: B's hello on the second link was made when that link opened,
    before the pong B sent since on the first: it must not read as B going back."""
    a_log, b_log = log_of((B, 3)), log_of((B, 3))
    a, b, _ = up(a_log, b_log)  # link 1 (A) / 2 (B)
    b_log.add(commit(B, 4))
    a.link_opened(5, 1.0, peer=B, outbound=False)  # B dials a second link: its hello...
    b.peers[A].dialing = True
    [stale] = sends(b.link_opened(6, 1.0, peer=A, outbound=True))
    assert isinstance(stale, Hello) and stale.vv == {B: 4}
    b_log.add(commit(B, 5))
    [(_, pong, _)] = rounds(a, b, 1.5, 1)  # ...is overtaken by a pong on link 1
    assert pong.vv == {B: 5} and a.witness.last[B] == {B: 5}
    a.link_closed(1, 1.6, "reset")  # link 1 goes; the stale hello arrives on link 5
    out = a.received(5, stale, 1.7)
    assert not [x for x in out if isinstance(x, Alert)] and a.witness.last[B] == {B: 5}


def test_a_malformed_hd_or_an_unknown_field_is_refused() -> None:
    for body in (b'{"type":"ping","seq":1,"hd":"short"}', b'{"type":"pong","seq":1,"hd":7}',
                 b'{"type":"ping","seq":1,"hd":"abcdefghij="}',
                 b'{"type":"ping","seq":1,"sd2":"abcdefghijk"}'):  # fmt: skip
        with pytest.raises(ProtocolError):
            decode_body(body)
    hello = encode(hello_from(1))[4:].replace(b'"hd":null', b'"hd":"!!!!!!!!!!!"')
    with pytest.raises(ProtocolError):  # (the hello ignores unknown fields, not bad ones)
        decode_body(hello)
    assert decode_body(hello.replace(b'"hd":', b'"hx":')) == hello_from(1)
