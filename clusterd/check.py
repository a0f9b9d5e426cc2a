"""clustercheck's facts: what each member holds for every (feature, mode), in digests.

Every member answers ``summary`` (a digest per defined feature and mode, with who last
changed it, when and on which machine); the asking member compares them and, only
where digests differ, asks for the definition itself (``definition``) to force one
version on the whole cluster as an ordinary new commit.  Membership features are
compared like the rest but never forced from here (cluster operations own them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from clusterd import layers
from clusterd.clock import wall_ms
from clusterd.errors import ClusterdError
from clusterd.modes import Mode
from clusterd.state import ModeEntries, definition
from clusterd.store import Store


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def last_change(store: Store, entries: ModeEntries) -> dict[str, Any] | None:
    """Who last changed a (feature, mode) -- its newest version, deletions included --
    when, in which commit, on which machine; None if it was never written."""
    versions = [v for v in [entries.marker, *entries.rows.values()] if v is not None]
    if not versions:
        return None
    newest = max(versions, key=lambda v: (v.hlc, v.origin))
    origin = layers.hostnames(store.state).get(newest.origin, newest.origin)
    change = {"commit": str(newest.commit), "origin": origin}
    try:
        commit = store.get_commit(newest.commit)
    except ClusterdError:  # the log was truncated: the clock says when
        return {**change, "user": "?", "at": wall_ms(newest.hlc) / 1000, "comment": ""}
    return {**change, "user": commit.user, "at": commit.at, "comment": commit.comment}


def summary(store: Store) -> dict[str, dict[str, Any]]:
    """``"feature|mode"`` -> digest of the definition and its newest change."""
    state, found = store.state, {}
    for feature in store.catalogue:
        for mode in layers.all_modes(state):
            entries = state.entries(feature.command, mode.key)
            change = last_change(store, entries)
            if change is None:
                continue
            value = definition(entries, feature.is_table)
            found[f"{feature.command}|{mode.key}"] = {
                "digest": _digest(value),
                "defined": value is not None,
                "user": change["user"],
                "at": change["at"],
                "origin": change["origin"],
            }
    return found


@dataclass(frozen=True, slots=True)
class Inconsistency:
    feature: str
    mode: Mode
    versions: dict[str, dict[str, Any] | None]  # member -> its summary entry (None: absent)

    @property
    def choices(self) -> list[str]:
        """One member per distinct version, in member order."""
        seen: dict[str | None, str] = {}
        for host, entry in self.versions.items():
            seen.setdefault(None if entry is None else entry["digest"], host)
        return list(seen.values())


def _present(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return entry if entry is not None and entry["defined"] else None


def compare(summaries: dict[str, dict[str, dict[str, Any]]]) -> list[Inconsistency]:
    """Where the members' summaries disagree, key by key."""
    keys = sorted({k for s in summaries.values() for k in s})
    found = []
    for key in keys:
        entries = {host: _present(s.get(key)) for host, s in summaries.items()}
        if len({None if e is None else e["digest"] for e in entries.values()}) > 1:
            feature, mode = key.split("|", 1)
            found.append(Inconsistency(feature, Mode.from_key(mode), entries))
    return found
