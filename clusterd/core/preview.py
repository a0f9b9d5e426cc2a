"""What pending changes would do: per machine, the features whose effective value
changes, and the changes a machine does not see because a more specific mode of its
own overrides them (the shell's ``preview``, the web's pending page)."""

from __future__ import annotations

from typing import Any

from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending
from clusterd.schema.feature import Catalogue

_DEPTH = {"cluster": 0, "group": 1, "machine": 2}


def below(a: Mode, b: Mode) -> bool:
    """``a`` is a more specific level than ``b``."""
    return _DEPTH[a.key.split(":")[0]] > _DEPTH[b.key.split(":")[0]]


def effect(
    state: layers.Reader, view: layers.Reader, catalogue: Catalogue, pending: Pending,
    machines: list[str],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per machine: ``changes`` (feature -> [before, after], secrets shown as "set") and
    ``shielded`` (the pending (feature, mode) pairs its own more specific setting hides)."""
    touched = sorted({(u.feature, u.mode) for u, _ in pending.items()})
    report: dict[str, dict[str, Any]] = {}
    for machine in machines:
        before = layers.effective_values(state, catalogue, machine)
        after = layers.effective_values(view, catalogue, machine)
        changes = {f: [catalogue[f].shown(before.get(f)), catalogue[f].shown(after[f])]
                   for f in after if before.get(f) != after[f]}  # fmt: skip
        chain = layers.chain(view, machine)
        shielded = []
        for f, m in touched:
            if f not in after or f in changes or m not in {c.key for c in chain}:
                continue
            own = layers.resolve(view, catalogue[f], chain).mode
            if own is not None and below(own, Mode.from_key(m)):
                shielded.append({"feature": f, "at": str(Mode.from_key(m)), "by": str(own)})
        report[machine] = {"changes": changes, "shielded": shielded}
    return report
