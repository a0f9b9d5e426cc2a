"""Witnessing chain heads on pings: what members remember of each other's logs.

A hash chain cannot show that its newest commits were deleted.  So each member sends,
with its pings, pongs and hello, ``hd``: 8 bytes of sha256 over ``origin\\0seq\\0hash\\n``
for every **durable** chain head (each origin's highest contiguous seq and its hash),
sorted by origin, base64url without padding (11 characters).  The receiver remembers,
per peer and in memory, the vector it last sent with one (``docs/history.md``,
section 2):

* **history went back**: an origin it advertised at seq 17 is now at 14 (a truncated
  or rewritten log, a restored backup, a power loss);
* **fork**: our durable vector equals the peer's and the digests differ: the host
  narrows it down (``clusterd.node.witnessing``) with the ``heads`` query: heads per
  origin, then the hashes at up to ``CHECKPOINTS`` seqs of a range per answer, until it
  names the first seq whose hashes differ.

Pure: no I/O, no clock.  The node (``clusterd.mesh.protocol``) calls ``attach`` to send
and ``Witnesses.heard`` to receive; the host parses answers with ``parse_heads`` and
``parse_hashes`` (a peer's answer is untrusted: ``ValueError`` says what is wrong).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Head = tuple[int, str | None]  # an origin's highest contiguous durable seq, and its hash
CHECKPOINTS = 16  # hashes asked per answer while narrowing: 17x narrower each time
_HASH = re.compile(r"^[0-9a-f]{64}$")
MAX_SEQ = 1 << 62


@dataclass(frozen=True, slots=True)
class Summary:
    """What a log says of its durable chains: the digest and the vector it describes."""

    hd: str
    vv: Mapping[str, int]


def digest(heads: Mapping[str, Head]) -> str:
    """``hd`` of ``heads`` (a legacy head, without a hash, counts as the empty string)."""
    h = hashlib.sha256()
    for origin in sorted(heads):
        seq, hash_ = heads[origin]
        h.update(f"{origin}\0{seq}\0{hash_ or ''}\n".encode())
    return base64.urlsafe_b64encode(h.digest()[:8]).rstrip(b"=").decode()


def summary(heads: Mapping[str, Head], vv: Mapping[str, int]) -> Summary | None:
    """The summary of ``heads`` if they are those of ``vv`` (the vector the member
    advertises), else None: writes are under way, and the receiver must compare like
    with like (the next round sends it)."""
    if len(heads) != len(vv) or any(heads.get(o, (-1, None))[0] != s for o, s in vv.items()):
        return None
    return Summary(digest(heads), dict(vv))


def attach(
    sent: str | None,
    ours: Summary | None,
    vv: Mapping[str, int],
    vv_: dict[str, int] | None,
    *,
    full: bool,
) -> tuple[str | None, dict[str, int] | None, str | None]:
    """What a ping or pong carries of the heads: ``(hd, vv, sent)``.  ``sent`` is the
    last ``hd`` sent on the link, ``vv_`` the vector ``_changes`` chose to send (None:
    unchanged since the last one sent on this link).  ``hd`` goes only when ours
    describes ``vv`` (the advertised vector), when it changed since the last one sent on
    the link or on a full round.  It describes the vector of its frame, or, when that
    frame carries none, the last one sent on the same link: the receiver holds it
    (``Link.heard_vv``), so the vector is never sent again for it."""
    if ours is None or dict(ours.vv) != dict(vv):
        return None, vv_, sent
    if ours.hd == sent and not full:
        return None, vv_, sent
    return ours.hd, vv_, ours.hd


@dataclass(frozen=True, slots=True)
class Finding:
    """Something witnessing found about a member: ``kind`` is "history went back" or
    "fork"; ``seq`` the seq it is at now (went back) or the first that differs (fork);
    ``was`` the seq it had advertised before (went back)."""

    kind: str
    member: str  # the peer's serial
    origin: str
    seq: int
    was: int | None
    since: float
    text: str

    def to_json(self, names: Mapping[str, str]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "member": names.get(self.member, self.member),
            "member_serial": self.member,
            "origin": names.get(self.origin, self.origin),
            "origin_serial": self.origin,
            "seq": self.seq,
            "was": self.was,
            "since": self.since,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Heard:
    went_back: list[tuple[str, int, int]]  # (origin, advertised before, now)
    diverged: bool  # same vector as ours, another digest: narrow it down
    agreed: bool  # same vector, same digest


NOTHING = Heard([], False, False)


@dataclass
class Witnesses:
    """Per peer, the vector it last sent with an ``hd``; and what stands against it.
    In memory only: a restart forgets it."""

    last: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)  # the newest ping seq heard on a link
    heard_on: dict[str, tuple[int, float]] = field(default_factory=dict)  # (link, when)

    def heard(
        self,
        peer: str,
        vv: Mapping[str, int],
        hd: str | None,
        ours: Summary | None,
        *,
        link: tuple[int, float] = (0, 0.0),
        now: float = 0.0,
        order: int | None = None,
    ) -> Heard:
        """What ``peer``'s ``hd`` at ``vv`` says, on ``link`` (its id, and when it
        opened).  ``order``: the ping's or pong's seq; None for a hello.  Left out: a
        frame older than one heard already (a frame held back), and a hello, made when
        its link opened, that another link's frames overtook since (both links dialled
        at once): its link's first ping or pong carries ``hd`` again."""
        if order is None:  # a new link: its pings may number from 1 again (a restart)
            self.order.pop(peer, None)
        if hd is None:
            return NOTHING
        if order is None:
            on = self.heard_on.get(peer)
            if on is not None and on[0] != link[0] and on[1] >= link[1]:
                return NOTHING
        elif order <= self.order.get(peer, -1):
            return NOTHING
        else:
            self.order[peer] = order
        self.heard_on[peer] = (link[0], now)
        before = self.last.get(peer, {})
        back = [(o, s, vv.get(o, 0)) for o, s in sorted(before.items()) if vv.get(o, 0) < s]
        self.last[peer] = dict(vv)
        same = ours is not None and dict(ours.vv) == dict(vv)
        agreed = same and ours is not None and ours.hd == hd
        if agreed:  # its log and ours agree again: what stood against it is over
            for key in [k for k in self.findings if k[0] == peer]:
                del self.findings[key]
        return Heard(back, same and not agreed, agreed)

    def found(self, finding: Finding) -> bool:
        """Record ``finding``; False when the same one already stands (no new alert)."""
        key = (finding.member, finding.kind, finding.origin)
        old = self.findings.get(key)
        if old is not None and (old.seq, old.was) == (finding.seq, finding.was):
            return False
        self.findings[key] = finding
        return True

    def forget(self, peer: str) -> None:
        """``peer`` is no longer a member."""
        self.last.pop(peer, None)
        self.order.pop(peer, None)
        self.heard_on.pop(peer, None)
        for key in [k for k in self.findings if k[0] == peer]:
            del self.findings[key]


# -- narrowing a fork (the host asks; these read the answers) ----------------------------


def differing(ours: Mapping[str, Head], theirs: Mapping[str, Head]) -> list[str]:
    """The origins whose heads are at the same seq with different hashes, sorted."""
    return sorted(
        o for o, (seq, h) in theirs.items() if o in ours and ours[o][0] == seq and ours[o][1] != h
    )


def checkpoints(lo: int, hi: int, n: int = CHECKPOINTS) -> list[int]:
    """Up to ``n`` seqs strictly between ``lo`` (hashes agree there, or 0) and ``hi``
    (they differ), evenly spaced: all of them when there are at most ``n``."""
    inside = hi - lo - 1
    if inside <= 0:
        return []
    if inside <= n:
        return list(range(lo + 1, hi))
    return sorted({lo + (inside * i) // (n + 1) + 1 for i in range(1, n + 1)})


def narrow(
    lo: int,
    hi: int,
    seqs: Sequence[int],
    ours: Mapping[int, str | None],
    theirs: Mapping[int, str | None],
) -> tuple[int, int]:
    """The new (lo, hi) once the hashes at ``seqs`` are known on both sides (a seq
    missing on one side differs): the first seq that differs is in (lo, hi]."""
    missing = object()
    for seq in seqs:
        if ours.get(seq, missing) != theirs.get(seq, missing):
            return lo, seq
        lo = seq
    return lo, hi


def _hash(value: Any, where: str) -> str | None:
    if value is not None and not (isinstance(value, str) and _HASH.match(value)):
        raise ValueError(f"{where}: not a sha256 in hex or null")
    return value


def parse_heads(body: Any) -> dict[str, Head]:
    """A ``heads`` answer: ``{"heads": {origin: [seq, hash]}}``; ValueError if not."""
    heads = body.get("heads") if isinstance(body, dict) else None
    if not isinstance(heads, dict) or len(heads) > 4096:
        raise ValueError("no heads in it")
    found: dict[str, Head] = {}
    for origin, head in heads.items():
        if not isinstance(head, list) or len(head) != 2:
            raise ValueError(f"head of {origin!r}: not [seq, hash]")
        seq = head[0]
        if type(seq) is not int or not 0 <= seq < MAX_SEQ:
            raise ValueError(f"head of {origin!r}: bad seq")
        found[str(origin)] = (seq, _hash(head[1], f"head of {origin!r}"))
    return found


def parse_hashes(body: Any, seqs: Sequence[int]) -> dict[int, str | None]:
    """A ``heads`` answer for ``seqs``: ``{"hashes": {"seq": hash}}`` (a seq it does not
    hold is left out); ValueError if not, or if it names a seq not asked."""
    hashes = body.get("hashes") if isinstance(body, dict) else None
    if not isinstance(hashes, dict):
        raise ValueError("no hashes in it")
    asked = {str(s): s for s in seqs}
    found: dict[int, str | None] = {}
    for key, value in hashes.items():
        if key not in asked:
            raise ValueError(f"hash of seq {key!r}, which was not asked")
        found[asked[key]] = _hash(value, f"seq {key}")
    return found


def parse_query(args: Mapping[str, Any]) -> tuple[str, list[int]] | None:
    """A ``heads`` query's arguments: None (the heads) or (origin, seqs); ValueError."""
    if not args:
        return None
    origin, seqs = args.get("origin"), args.get("seqs")
    if set(args) != {"origin", "seqs"} or not isinstance(origin, str):
        raise ValueError("give origin and seqs, or nothing")
    if (
        not isinstance(seqs, list)
        or not 0 < len(seqs) <= 2 * CHECKPOINTS
        or any(type(s) is not int or not 0 < s < MAX_SEQ for s in seqs)
    ):
        raise ValueError(f"seqs: 1 to {2 * CHECKPOINTS} commit numbers")
    return origin, seqs
