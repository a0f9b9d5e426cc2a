"""Digests that tell whether two members hold the same settings.

``mode_digests`` covers every version of every unit, hidden rows and tombstones
included, so equal digests mean equal replicated state (the convergence check).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from clusterd.core.state import State


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def mode_digests(state: State) -> dict[tuple[str, str], str]:
    """One digest per (feature, mode) over its marker and rows, with their stamps."""
    digests = {}
    for feature, mode in state.feature_modes():
        entries = state.entries(feature, mode)
        h = hashlib.sha256()
        items = [("", entries.marker)] if entries.marker is not None else []
        items += sorted(entries.rows.items())
        for key, v in items:
            if v is None:
                continue
            h.update(_canonical([key, v.hlc, v.origin, v.seq, v.value, v.with_reset]))
        digests[(feature, mode)] = h.hexdigest()
    return digests


def state_digest(state: State) -> str:
    h = hashlib.sha256()
    for (feature, mode), digest in sorted(mode_digests(state).items()):
        h.update(f"{feature}\0{mode}\0{digest}\n".encode())
    return h.hexdigest()
