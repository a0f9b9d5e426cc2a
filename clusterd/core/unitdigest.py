"""Per-unit digests of the durable state, and the tree that narrows a difference.

A unit's **leaf** is blake2b-64 over its feature, mode, key, version (hlc, origin, seq,
with_reset) and the value's stored JSON text (``null`` for none).  ``UnitDigests``
keeps every leaf and their sums mod 2^64 per feature, per (feature, mode), per
(feature, mode, bucket: the first byte of the key's hash) and over everything (the
**root**): an update costs four additions.  Sums commute, so members holding the same
units have the same root whatever order their batches came in.

Two members whose roots differ at the same version vector narrow the difference with
``tree`` queries, each answered from memory (``UnitDigests.tree``): the features and
their sums, then the modes of one feature, then its buckets, then the units of one
bucket with their leaves.  ``step`` compares one level's answers and says what to ask
next, and which units it names.  ``docs/history.md``, section 3.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterd.core.versions import Unit

MASK = (1 << 64) - 1
BUCKETS = 256
MAX_CHILDREN = 100_000  # entries in one answer from a peer; more is garbage
_HEX = re.compile(r"^[0-9a-f]{16}$")
_ROOT = re.compile(r"^[A-Za-z0-9_-]{11}$")


def leaf(unit: Unit, hlc: int, origin: str, seq: int, with_reset: bool, text: str | None) -> int:
    """The leaf of a unit whose entry holds this version and this stored JSON text."""
    h = hashlib.blake2b(digest_size=8)
    feature, mode, key = unit
    head = f"{feature}\0{mode}\0{key}\0{hlc}\0{origin}\0{seq}\0{int(bool(with_reset))}\0"
    h.update(head.encode())
    h.update(b"null" if text is None else text.encode())
    return int.from_bytes(h.digest(), "big")


def bucket(key: str) -> int:
    return hashlib.blake2b(key.encode(), digest_size=1).digest()[0]


def root_text(root: int) -> str:
    """The root as pings carry it: 8 bytes, base64url without padding (11 characters)."""
    return base64.urlsafe_b64encode(root.to_bytes(8, "big")).rstrip(b"=").decode()


def root_of(text: str) -> int:
    if not isinstance(text, str) or not _ROOT.match(text):
        raise ValueError(f"a state root is 11 base64url characters, not {text!r}")
    return int.from_bytes(base64.urlsafe_b64decode(text + "="), "big")


def _hex(n: int) -> str:
    return f"{n:016x}"


@dataclass(slots=True)
class UnitDigests:
    leaves: dict[Unit, int] = field(default_factory=dict)
    features: dict[str, int] = field(default_factory=dict)
    modes: dict[tuple[str, str], int] = field(default_factory=dict)
    buckets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    root: int = 0
    # the keys of each bucket: a bucket's answer reads only its own units
    members: dict[tuple[str, str, int], set[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<UnitDigests {len(self.leaves)} units root={root_text(self.root)}>"

    def put(self, unit: Unit, value: int) -> None:
        """Set one unit's leaf (new, or replacing the one it had)."""
        old = self.leaves.get(unit)
        self.leaves[unit] = value
        delta = (value - (old or 0)) & MASK
        if not delta and old is not None:
            return
        feature, mode, key = unit
        b = (feature, mode, bucket(key))
        if old is None:
            self.members.setdefault(b, set()).add(key)
        self.features[feature] = (self.features.get(feature, 0) + delta) & MASK
        self.modes[(feature, mode)] = (self.modes.get((feature, mode), 0) + delta) & MASK
        self.buckets[b] = (self.buckets.get(b, 0) + delta) & MASK
        self.root = (self.root + delta) & MASK

    def update(self, leaves: Iterable[tuple[Unit, int]]) -> None:
        for unit, value in leaves:
            self.put(unit, value)

    def tree(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to a ``tree`` query (ValueError for a malformed one): the children
        of the node ``args`` names, with their sums (units: their leaves), and the root
        they belong to (a narrowing stops when it moved)."""
        feature, mode, b = args.get("feature"), args.get("mode"), args.get("bucket")
        unknown = set(args) - {"feature", "mode", "bucket"}
        if unknown:
            raise ValueError(f"unknown arguments {sorted(unknown)}")
        children: dict[str, int]
        if feature is None:
            if mode is not None or b is not None:
                raise ValueError("a mode or bucket needs a feature")
            children = dict(self.features)
        elif not isinstance(feature, str):
            raise ValueError("feature must be a string")
        elif mode is None:
            if b is not None:
                raise ValueError("a bucket needs a mode")
            children = {m: s for (f, m), s in self.modes.items() if f == feature}
        elif not isinstance(mode, str):
            raise ValueError("mode must be a string")
        elif b is None:
            children = {str(k): s for (f, m, k), s in self.buckets.items()
                        if f == feature and m == mode}  # fmt: skip
        elif type(b) is not int or not 0 <= b < BUCKETS:
            raise ValueError(f"bucket must be an integer 0-{BUCKETS - 1}")
        else:
            keys = self.members.get((feature, mode, b), ())
            children = {k: self.leaves[Unit(feature, mode, k)] for k in keys}
        return {
            "root": root_text(self.root),
            "children": {k: _hex(v) for k, v in children.items() if v},
        }


def parse_answer(body: Any) -> tuple[str, dict[str, int]]:
    """A peer's ``tree`` answer, checked: (its root, children and sums); ValueError
    saying what is wrong with it."""
    if not isinstance(body, dict) or set(body) != {"root", "children"}:
        raise ValueError("a tree answer is an object with root and children")
    root_of(body["root"])
    children = body["children"]
    if not isinstance(children, dict) or len(children) > MAX_CHILDREN:
        raise ValueError(f"children must be an object of at most {MAX_CHILDREN} entries")
    found = {}
    for name, value in children.items():
        if not isinstance(value, str) or not _HEX.match(value):
            raise ValueError(f"the sum of {name!r} is not 16 hex digits")
        found[name] = int(value, 16)
    return body["root"], found


def differing(ours: Mapping[str, int], theirs: Mapping[str, int]) -> list[str]:
    """The children whose sums differ (one missing on a side: a sum of 0 there)."""
    return sorted(k for k in set(ours) | set(theirs) if ours.get(k, 0) != theirs.get(k, 0))


def step(
    args: Mapping[str, Any], ours: Mapping[str, int], theirs: Mapping[str, int]
) -> tuple[list[dict[str, Any]], list[Unit]]:
    """One level compared: the queries for the next level down, and the units named
    (at the bucket level)."""
    names = differing(ours, theirs)
    if "bucket" in args:
        return [], [Unit(args["feature"], args["mode"], key) for key in names]
    if "mode" in args:
        return [{**args, "bucket": int(n)} for n in names], []
    if "feature" in args:
        return [{**args, "mode": n} for n in names], []
    return [{"feature": n} for n in names], []
