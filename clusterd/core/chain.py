"""The commit chain: each origin's commits linked by hashes, each signed by its origin.

Theory of operation.  A commit's **seal** (``versions.Seal``) is ``(prev, hash, sig)``::

    hash = sha256( b"clusterd-commit-1\\n"
                   + J([origin, seq, hlc, user, at, comment, sorted(context.items()), prev])
                   + b"\\n" + WRITES )
    prev = the hash of the origin's commit seq-1; None for seq 1, or after a legacy commit
    sig  = Ed25519 signature by the origin's machine key over the 32 bytes of ``hash``

``J`` is ``canonical_json`` (sorted keys, no spaces, ASCII), the store's encoder, and
``WRITES`` is the text of the log's ``writes`` column exactly: ``J`` of
``[[feature, mode, key, value, with_reset], ...]`` in the commit's order.  So the bytes
hashed are the bytes stored, and anyone holding a row recomputes its hash.  Golden
vectors pin them (``tests/test_chain.py``).

A commit **verifies** when (in this order, the first failure naming it):

* ``hash``: its row gives its hash again (a truncated row has no writes: its content
  cannot be checked, only its links and signature);
* ``prev``: it names the hash of the origin's previous commit as this member holds it;
* ``signature``: its origin's machine key (from membership) signed its hash.  No key
  for the origin (unknown, removed, not Ed25519), or nobody to check with (a store
  without a ``Sealer``): the signature is *unverifiable*, which is not broken.

A **legacy** commit (written by schema 1) has no seal; one is accepted only by a member
that holds legacy commits itself (``legacy``: its store was migrated from schema 1, or
took a state holding them), and only where the origin's previous commit is legacy too
(or at seq 1): an origin's first sealed commit has ``prev`` None, and no unsealed commit
follows a sealed one.  In a cluster made with sealed commits, an unsealed one is broken.

Worked example: origin A's commits 1..3, then someone edits commit 2's comment on disk.
Commit 2's row no longer gives its hash: ``walk`` names ``A:2 hash``.  Had they also
written the new hash into the row, commit 2 would fail its signature (``A:2
signature``); without A's key to check with, commit 3's ``prev`` would no longer name
commit 2's hash (``A:3 prev``).

Signing needs a private key and verifying a parser of keys: the node gives them as a
``Sealer`` (``clusterd.node.seal``); this module only hashes and decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from clusterd.core import layers

MAGIC = b"clusterd-commit-1\n"
canonical_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
WHAT = ("hash", "prev", "signature")  # the parts of a link that can fail, in check order


class Sealer(Protocol):
    """Signatures for the store: held by the node (the store imports no cryptography).
    Both calls are CPU only (tens of microseconds) and safe from the writer thread."""

    def sign(self, digest: bytes) -> str | None:
        """This machine's signature of a commit's hash (hex); None: it holds no key."""

    def verify(self, key: str, digest: bytes, sig: str) -> bool | None:
        """Whether ``sig`` is ``key``'s signature of ``digest``; None when ``key`` (an
        OpenSSH public key line) is no key it can check with."""


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()  # the previous commit's hash is not known here: ``prev`` unchecked
Expected = str | None | _Unknown  # what ``prev`` must be


def commit_hash(
    origin: str,
    seq: int,
    hlc: int,
    user: str,
    at: float,
    comment: str,
    context: Mapping[str, int],
    prev: str | None,
    writes: str,
) -> str:
    """The hash of a commit whose ``writes`` column holds ``writes`` (hex).

    >>> commit_hash("SER-A", 1, 7, "admin", 1.5, "first", {}, None, "[]")[:16]
    '601eb7fe1dc64e68'
    """
    header = [origin, seq, hlc, user, at, comment, sorted(context.items()), prev]
    return hashlib.sha256(preimage(header, writes)).hexdigest()


def preimage(header: list[Any], writes: str) -> bytes:
    """The bytes hashed: ``header`` is ``[origin, seq, hlc, user, at, comment,
    sorted(context.items()), prev]``.

    >>> preimage(["SER-A", 1, 7, "admin", 1.5, "first", [], None], "[]")
    b'clusterd-commit-1\\n["SER-A",1,7,"admin",1.5,"first",[],null]\\n[]'
    """
    return MAGIC + canonical_json(header).encode() + b"\n" + writes.encode()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one commit's row says about its seal."""

    broken: str | None = None  # the first part that fails: "hash", "prev" or "signature"
    why: str = ""
    sealed: bool = True  # False: a legacy commit (no seal)
    content: bool = True  # False: truncated, its hash could not be recomputed
    signed: bool | None = None  # True: verified; None: no key (or no sealer) to check

    @property
    def ok(self) -> bool:
        return self.broken is None

    def label(self) -> str:
        """In a few words, for a list of commits (commitdetail, the web history)."""
        if self.broken is not None:
            return {"hash": "ALTERED on this member", "prev": "CHAIN BROKEN here",
                    "signature": "BAD SIGNATURE"}[self.broken]  # fmt: skip
        if not self.sealed:
            return "unsealed (legacy)"
        word = "verified" if self.signed else "chained, signature not checked"
        return word if self.content else f"{word}, content truncated"

    def to_json(self, hash_: str | None) -> dict[str, Any]:
        """What commitdetail --json and the web API say of a commit's seal."""
        return {"hash": hash_, "ok": self.ok, "broken": self.broken, "label": self.label(),
                "text": self.words()}  # fmt: skip

    def words(self) -> str:
        """In full, for people (commitdetail, the web history)."""
        if self.broken == "hash":
            return "ALTERED on this member: " + self.why
        if self.broken is not None:
            return f"BROKEN ({self.broken}): {self.why}"
        if not self.sealed:
            return "not sealed (written before the commit chain)"
        parts = ["verified" if self.signed else "chained"]
        if not self.content:
            parts.append("content truncated")
        if self.signed is None:
            parts.append("signature unverifiable (no key for its origin)")
        return ", ".join(parts)


class Row(NamedTuple):
    """A commit as the log stores it (``clusterd.store.records.COMMIT_COLS``)."""

    origin: str
    seq: int
    hlc: int
    user: str
    at: float
    comment: str
    context: str  # JSON
    writes: str | None  # None: truncated
    prev: str | None
    hash: str | None
    sig: str | None


def verify(
    row: Row,
    context: Mapping[str, int],
    expected: Expected,
    key: str | None,
    sealer: Sealer | None,
    legacy: bool = False,
) -> Verdict:
    """Check one commit's seal: ``expected`` is the hash of the origin's previous
    commit (None: there is none, or it is legacy; ``UNKNOWN``: not held here), ``key``
    its origin's machine key (None: unknown); ``legacy``: whether unsealed commits may
    be here at all."""
    if row.hash is None:
        if not legacy:
            return Verdict("hash", "no seal, and this member holds no commit older than the "
                           "chain", sealed=False)  # fmt: skip
        if isinstance(expected, str):
            return Verdict("hash", "no seal, after a sealed commit of its origin", sealed=False)
        return Verdict(sealed=False)
    content = row.writes is not None
    if row.writes is not None:
        found = commit_hash(row.origin, row.seq, row.hlc, row.user, row.at, row.comment,
                            context, row.prev, row.writes)  # fmt: skip
        if found != row.hash:
            return Verdict("hash", "its row no longer gives its hash "
                           f"({found[:12]}, sealed {row.hash[:12]})")  # fmt: skip
    if expected is not UNKNOWN and row.prev != expected:
        why = f"prev {_short(row.prev)} is not the hash of {row.origin}:{row.seq - 1}"
        return Verdict("prev", f"{why} ({_short(expected)})", content=content)
    if key is None or sealer is None:
        return Verdict(content=content)
    try:
        digest = bytes.fromhex(row.hash)
    except ValueError:
        return Verdict("hash", f"{row.hash[:16]!r} is not a hash", content=content)
    if row.sig is None:
        return Verdict("signature", "unsigned, though its origin has a key", content=content)
    good = sealer.verify(key, digest, row.sig)
    if good is False:
        return Verdict("signature", "not signed by its origin's machine key", content=content)
    return Verdict(content=content, signed=good)


def _short(text: object) -> str:
    return "none" if text is None else str(text)[:12]


def expected_prev(seq: int, before: Row | None) -> Expected:
    """What ``prev`` must be for commit ``seq``, its origin's commit ``seq - 1`` being
    ``before`` (None: not held here)."""
    if seq == 1:
        return None
    if before is None:
        return UNKNOWN
    return before.hash


@dataclass
class OriginChain:
    """One origin's chain as one member's log holds it."""

    origin: str
    head: int = 0  # the highest seq held
    hash: str | None = None  # its hash
    commits: int = 0
    legacy: int = 0  # no seal (schema 1)
    truncated: int = 0  # content gone: links and signature checked only
    unverifiable: int = 0  # sealed, but no key to check the signature with
    broken: dict[str, Any] | None = None  # the first broken link: seq, what, why

    def to_json(self) -> dict[str, Any]:
        return {"head": self.head, "hash": self.hash, "commits": self.commits,
                "legacy": self.legacy, "truncated": self.truncated,
                "unverifiable": self.unverifiable, "broken": self.broken}  # fmt: skip


def walk(
    rows: Iterable[Row], keys: Mapping[str, str], sealer: Sealer | None, legacy: bool = False
) -> list[OriginChain]:
    """Every origin's chain checked, from ``rows`` in (origin, seq) order: the whole
    log, read in one transaction.  CPU and a read: never on the links' loop."""
    found: dict[str, OriginChain] = {}
    before: Row | None = None
    for row in rows:
        chain = found.get(row.origin)
        if chain is None:
            chain = found[row.origin] = OriginChain(row.origin)
            before = None
        held = before if before is not None and before.seq == row.seq - 1 else None
        verdict = verify(row, json.loads(row.context), expected_prev(row.seq, held),
                         keys.get(row.origin), sealer, legacy)  # fmt: skip
        chain.commits += 1
        chain.head, chain.hash = row.seq, row.hash
        chain.legacy += not verdict.sealed
        chain.truncated += verdict.sealed and not verdict.content
        chain.unverifiable += verdict.sealed and verdict.ok and verdict.signed is None
        if not verdict.ok and chain.broken is None:
            chain.broken = {"seq": row.seq, "what": verdict.broken, "why": verdict.why}
        before = row
    return [found[origin] for origin in sorted(found)]


def keys(reader: layers.Reader) -> dict[str, str]:
    """The machine key of every member, by serial: what its commits are checked with
    (a removed machine's is gone: its commits are unverifiable, not broken)."""
    return {str(row["serial"]): str(row["machine_key"])
            for row in layers.machines(reader).values()
            if row.get("machine_key")}  # fmt: skip
