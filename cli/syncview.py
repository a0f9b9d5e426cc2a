"""A member's sync state in lines of text (``status``, ``clusterconfig connstatus``).

The state itself is the node's (``clusterd.node.syncstate``); this only words it: the
features not in sync, and the recommended action unless the member is In Sync.
"""

from __future__ import annotations

from typing import Any


def detail_lines(sync: dict[str, Any] | None, indent: str) -> list[str]:
    """The features the commits ahead wrote, and what to do (nothing when In Sync)."""
    if sync is None or sync["state"] == "in_sync":
        return []
    lines = []
    named = [f"{feature} ({n['ahead']:,})" for feature, n in (sync["features"] or {}).items()]
    if sync["features_unknown"]:
        n = sync["features_unknown"]
        named.append(f"{n:,} commit{'' if n == 1 else 's'} of features not known here")
    if named:
        lines.append(f"{indent}ahead in: {', '.join(named)}")
    lines.append(f"{indent}action: {sync['action']}")
    return lines
