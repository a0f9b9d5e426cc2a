"""How commits, entries and losses become database rows, and back.

Rows are plain tuples in the column order below: the store writes them with the
driver's ``executemany`` (clusterd/store/bulk.py).
"""

from __future__ import annotations

import json
from typing import Any

from clusterd.core.chain import canonical_json as _dumps
from clusterd.core.versions import Commit, CommitId, Loss, Seal, Unit, Version, writes_from_json

ENTRY_COLS = ("feature", "mode", "key", "hlc", "origin", "seq", "value", "with_reset")
# The order of ``clusterd.core.chain.Row``; the last three are the seal (NULL: none).
COMMIT_COLS = ("origin", "seq", "hlc", "user", "at", "comment", "context", "writes", "prev",
               "hash", "sig")  # fmt: skip
LOSS_COLS = (
    "feature",
    "mode",
    "key",
    "loser_origin",
    "loser_seq",
    "loser_hlc",
    "loser_value",
    "loser_with_reset",
    "by_origin",
    "by_seq",
)


class JsonCache:
    """Encodes each value object once: a commit's log record and its entries share them."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[object, str]] = {}

    def __call__(self, value: Any) -> str | None:
        if value is None:
            return None
        hit = self._done.get(id(value))
        if hit is None:
            hit = self._done[id(value)] = (value, _dumps(value))  # keeps value alive
        return hit[1]


def commit_row(c: Commit, encoded: JsonCache, seal: Seal | None = None) -> tuple[Any, ...]:
    """The log record; ``writes`` is the canonical JSON of its writes, built from
    pieces (the text its hash is computed over); the seal is ``seal``, else the
    commit's own."""
    names: dict[str, str] = {}  # a commit names few features and modes, many keys

    def name(text: str) -> str:
        found = names.get(text)
        if found is None:
            found = names[text] = _dumps(text)
        return found

    parts = [
        f"[{name(w.unit.feature)},{name(w.unit.mode)},{_dumps(w.unit.key)},"
        f"{encoded(w.value) or 'null'},{'true' if w.with_reset else 'false'}]"
        for w in c.writes
    ]
    seal = seal or c.seal
    return (
        c.id.origin,
        c.id.seq,
        c.hlc,
        c.user,
        c.at,
        c.comment,
        _dumps(dict(c.context)),
        None if c.truncated else "[" + ",".join(parts) + "]",
        *((None, None, None) if seal is None else (seal.prev, seal.hash, seal.sig)),
    )


def commit_from_row(row: Any) -> Commit:
    return Commit(
        id=CommitId(row.origin, row.seq),
        hlc=row.hlc,
        user=row.user,
        at=row.at,
        comment=row.comment,
        context=json.loads(row.context),
        writes=writes_from_json(json.loads(row.writes)) if row.writes is not None else (),
        truncated=row.writes is None,
        seal=None if row.hash is None else Seal(row.prev, row.hash, row.sig),
    )


def entry_row(unit: Unit, v: Version) -> tuple[Any, ...]:
    value = None if v.value is None else _dumps(v.value)
    return (*unit, v.hlc, v.origin, v.seq, value, v.with_reset)


def loss_row(loss: Loss) -> tuple[Any, ...]:
    v = loss.loser
    value = None if v.value is None else _dumps(v.value)
    return (*loss.unit, v.origin, v.seq, v.hlc, value, v.with_reset, loss.by.origin, loss.by.seq)
