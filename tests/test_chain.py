"""The commit chain's canonical bytes, hash and signature (golden vectors), and the one
rule that checks a link (``clusterd/core/chain.py``), table-driven.

If a golden vector fails, the bytes a commit is sealed over changed: every sealed log
would read as altered.  Do not update the vector; keep the old bytes (or version them:
``MAGIC`` names version 1).
"""

from __future__ import annotations

import doctest
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clusterd.core import chain
from clusterd.core.versions import Commit, CommitId, Unit, Write
from clusterd.node.seal import MachineSealer
from clusterd.store.records import JsonCache, commit_row

COMMIT = Commit(
    CommitId("SER-NY", 2),
    117738346983915520,
    "alice",
    1796544601.195405,
    "a comment, été ✓",
    {"SER-NY": 1, "SER-LA": 3},
    (
        Write(Unit("unsubscribe", "cluster", ""), {}, False),
        Write(Unit("unsubscribe", "cluster", "a@x.example"), {"comment": "é"}, True),
        Write(Unit("settz", "machine:la.example.com", ""), None, False),
    ),
)
PREV = "00" * 32
WRITES = (
    '[["unsubscribe","cluster","",{},false],'
    '["unsubscribe","cluster","a@x.example",{"comment":"\\u00e9"},true],'
    '["settz","machine:la.example.com","",null,false]]'
)
PREIMAGE = (
    b'clusterd-commit-1\n["SER-NY",2,117738346983915520,"alice",1796544601.195405,'
    b'"a comment, \\u00e9t\\u00e9 \\u2713",[["SER-LA",3],["SER-NY",1]],"'
    + PREV.encode()
    + b'"]\n'
    + WRITES.encode()
)
HASH = "e932bb4db9e3d244c3916cd0adc0aad5d00f007e5cf45478534abba6887776cd"
SEED = bytes(range(32))  # the signing key of the vectors
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
SIG = (
    "0208c2d245a7cb7f1475a8c2b26c7c4c6c47d1426d69aa5df0cd4cd6554f62b7"
    "85a460333468801d9dac9f76a5663d020a6f2a8ebc703ecfc76082b707988504"
)


def key_file(tmp: Path, seed: bytes = SEED) -> Path:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    path = tmp / "machine_key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))  # fmt: skip
    return path


def test_the_bytes_hashed_are_the_bytes_stored() -> None:
    row = commit_row(COMMIT, JsonCache())
    assert (
        row[7]
        == WRITES
        == chain.canonical_json([[*w.unit, w.value, w.with_reset] for w in COMMIT.writes])
    )
    header = [*row[:6], sorted(COMMIT.context.items()), PREV]
    assert chain.preimage(header, row[7]) == PREIMAGE
    assert chain.commit_hash(*row[:6], COMMIT.context, PREV, row[7]) == HASH


def test_golden_signature(tmp_path: Path) -> None:
    sealer = MachineSealer(key_file(tmp_path))
    assert sealer.sign(bytes.fromhex(HASH)) == SIG  # Ed25519 is deterministic
    assert MachineSealer().verify(PUBLIC, bytes.fromhex(HASH), SIG) is True
    assert MachineSealer().sign(bytes.fromhex(HASH)) is None  # verifies only


def test_the_doctests_hold() -> None:
    assert doctest.testmod(chain).failed == 0


def test_every_header_field_is_sealed() -> None:
    row = commit_row(COMMIT, JsonCache())
    args = [*row[:6], COMMIT.context, PREV, row[7]]
    for i, other in enumerate(["SER-LA", 3, 1, "bob", 1.5, "another", {"SER-NY": 1}, None, "[]"]):
        changed = list(args)
        changed[i] = other
        assert chain.commit_hash(*changed) != HASH, i


# -- one link, checked ---------------------------------------------------------------------


class Sealer:
    """A stand-in: key "good" signed a hash when the signature is the hash twice; key
    "bad" signed nothing; "rsa" is no key it can check with."""

    def sign(self, digest: bytes) -> str | None:
        return digest.hex() * 2

    def verify(self, key: str, digest: bytes, sig: str) -> bool | None:
        return None if key == "rsa" else key == "good" and sig == digest.hex() * 2


def sealed(prev: str | None = PREV, signed: bool = True) -> chain.Row:
    row = chain.Row(*commit_row(COMMIT, JsonCache()))
    digest = chain.commit_hash(*row[:6], COMMIT.context, prev, str(row.writes))
    return row._replace(prev=prev, hash=digest, sig=digest * 2 if signed else None)


GOOD = sealed()
CASES = [
    # (row, expected prev, key, sealer) -> (broken, signed, content, sealed)
    ("verified", GOOD, PREV, "good", Sealer(), (None, True, True, True)),
    ("no key", GOOD, PREV, None, Sealer(), (None, None, True, True)),
    ("a key of no usable kind", GOOD, PREV, "rsa", Sealer(), (None, None, True, True)),
    ("no sealer", GOOD, PREV, "good", None, (None, None, True, True)),
    ("prev not held here", GOOD, chain.UNKNOWN, "good", Sealer(), (None, True, True, True)),
    ("comment edited", GOOD._replace(comment="x"), PREV, "good", Sealer(),
     ("hash", None, True, True)),
    ("a value edited", GOOD._replace(writes=WRITES.replace("u00e9", "u00e8")), PREV, None, None,
     ("hash", None, True, True)),
    ("another prev", GOOD, "11" * 32, "good", Sealer(), ("prev", None, True, True)),
    ("prev where none is", GOOD, None, "good", Sealer(), ("prev", None, True, True)),
    ("forged signature", GOOD, PREV, "bad", Sealer(), ("signature", None, True, True)),
    ("unsigned with a key", sealed(signed=False), PREV, "good", Sealer(),
     ("signature", None, True, True)),
    ("unsigned, no key", sealed(signed=False), PREV, None, Sealer(), (None, None, True, True)),
    ("truncated", GOOD._replace(writes=None), PREV, "good", Sealer(), (None, True, False, True)),
    ("truncated, header edited", GOOD._replace(writes=None, comment="x"), PREV, "good",
     Sealer(), (None, True, False, True)),  # (its header cannot be checked without writes)
    ("truncated, not a hash", GOOD._replace(writes=None, hash="zz"), PREV, "good", Sealer(),
     ("hash", None, False, True)),
]  # fmt: skip


@pytest.mark.parametrize(("row", "expected", "key", "sealer", "want"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_one_link(row: chain.Row, expected: chain.Expected, key: str | None,
                  sealer: chain.Sealer | None, want: tuple[object, ...]) -> None:  # fmt: skip
    v = chain.verify(row, COMMIT.context, expected, key, sealer)
    assert (v.broken, v.signed, v.content, v.sealed) == want, v.why


def test_unsealed_commits_only_where_legacy_ones_are() -> None:
    """A member that holds commits older than the chain takes an unsealed one at seq 1 or
    after an unsealed one, never after a sealed one; any other member never."""
    bare = GOOD._replace(prev=None, hash=None, sig=None)

    def check(expected: chain.Expected, legacy: bool) -> tuple[str | None, bool]:
        v = chain.verify(bare, COMMIT.context, expected, "good", Sealer(), legacy)
        return v.broken, v.sealed

    assert check(None, legacy=True) == (None, False)  # seq 1, or after a legacy one
    assert check(chain.UNKNOWN, legacy=True) == (None, False)
    assert check(PREV, legacy=True) == ("hash", False)  # after a sealed one
    assert check(None, legacy=False) == ("hash", False)  # a cluster born sealed
    why = chain.verify(bare, COMMIT.context, None, "good", Sealer()).why
    assert why == "no seal, and this member holds no commit older than the chain"


def test_words_for_people() -> None:
    v = chain.verify(GOOD._replace(comment="x"), COMMIT.context, PREV, "good", Sealer())
    assert v.words().startswith("ALTERED on this member: its row no longer gives its hash")
    assert chain.verify(GOOD, COMMIT.context, PREV, "good", Sealer()).words() == "verified"
    unverified = chain.verify(GOOD, COMMIT.context, PREV, None, Sealer()).words()
    assert unverified == "chained, signature unverifiable (no key for its origin)"


def rows_of(origin: str, n: int, sealer: Sealer | None = None) -> list[chain.Row]:
    """``n`` commits of ``origin``, chained."""
    rows, prev = [], None
    for seq in range(1, n + 1):
        c = replace(COMMIT, id=CommitId(origin, seq), context={origin: seq - 1})
        row = chain.Row(*commit_row(c, JsonCache()))
        digest = chain.commit_hash(*row[:6], c.context, prev, str(row.writes))
        rows.append(row._replace(prev=prev, hash=digest, sig=digest * 2))
        prev = digest
    return rows


def test_walk_names_the_first_broken_link_of_each_origin() -> None:
    a, b = rows_of("A", 4), rows_of("B", 3)
    a[1] = a[1]._replace(comment="edited")  # A:2 altered
    a[3] = a[3]._replace(sig="cd" * 64)  # A:4's signature forged too: A:2 is the first
    b[2] = b[2]._replace(writes=None)  # B:3 truncated
    found = {c.origin: c for c in chain.walk([*a, *b], {"A": "good", "B": "good"}, Sealer())}
    assert found["A"].broken == {"seq": 2, "what": "hash", "why": found["A"].broken["why"]}
    assert found["B"].broken is None and found["B"].truncated == 1
    assert (found["A"].head, found["A"].hash, found["A"].commits) == (4, a[3].hash, 4)


def test_walk_rehashed_row_breaks_its_signature_or_the_next_link() -> None:
    a = rows_of("A", 3)
    forged = a[1]._replace(comment="edited")
    forged = forged._replace(hash=chain.commit_hash(*forged[:6], {"A": 1}, forged.prev,
                                                    str(forged.writes)))  # fmt: skip
    a[1] = forged
    [signed] = chain.walk(a, {"A": "good"}, Sealer())
    assert signed.broken is not None and (signed.broken["seq"], signed.broken["what"]) == (
        2, "signature")  # fmt: skip
    [unsigned] = chain.walk(a, {}, Sealer())  # no key: the next link shows it
    assert unsigned.broken is not None
    assert (unsigned.broken["seq"], unsigned.broken["what"]) == (3, "prev")
    assert unsigned.unverifiable == 2  # (A:1 and A:2, before the break)


def test_a_missing_commit_leaves_the_next_link_unchecked() -> None:
    a = rows_of("A", 3)
    [found] = chain.walk([a[0], a[2]], {"A": "good"}, Sealer())
    assert found.broken is None and found.commits == 2


def test_legacy_then_sealed() -> None:
    legacy = [r._replace(prev=None, hash=None, sig=None) for r in rows_of("A", 2)]
    first = rows_of("A", 3)[2]._replace(prev=None)
    digest = chain.commit_hash(*first[:6], {"A": 2}, None, str(first.writes))
    first = first._replace(hash=digest, sig=digest * 2)
    [found] = chain.walk([*legacy, first], {"A": "good"}, Sealer(), legacy=True)
    assert found.broken is None and (found.legacy, found.commits) == (2, 3)
    [strict] = chain.walk([*legacy, first], {"A": "good"}, Sealer())
    assert strict.broken is not None and (strict.broken["seq"], strict.broken["what"]) == (
        1, "hash")  # fmt: skip


def test_sealer_keys(tmp_path: Path) -> None:
    sealer = MachineSealer()
    digest = bytes.fromhex(HASH)
    assert sealer.verify(PUBLIC, digest, SIG.replace("02", "03", 1)) is False
    assert sealer.verify(PUBLIC, digest, "not hex") is False
    assert sealer.verify("not a key", digest, SIG) is None
    rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDYh1ZP4gR3Q6Ij8HV3Q4vgq1pLG0Hpv8m5QkJuD8D9"
    assert sealer.verify(rsa, digest, SIG) is None
    other = MachineSealer(key_file(tmp_path, bytes(32)))
    assert sealer.verify(PUBLIC, digest, str(other.sign(digest))) is False
