"""What pending changes would do: the changes themselves, mode by mode (``pending_changes``);
per machine, the features whose effective value changes, and the changes a machine
does not see because a more specific mode of its own overrides them (``effect``).  The
shell's ``preview`` and the web's pending page show them."""

from __future__ import annotations

from typing import Any

from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending
from clusterd.core.state import definition
from clusterd.core.versions import MARKER
from clusterd.schema.feature import Catalogue, Feature

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


def pending_changes(
    state: layers.Reader, view: layers.Reader, catalogue: Catalogue, pending: Pending
) -> list[dict[str, Any]]:
    """The pending changes, mode by mode in the order they were made: each names its
    ``feature``, ``mode``, ``what`` (define, redefine, set record, undefine; new row, edit
    row, delete row with its ``row``), the committed value ``before`` and the pending
    one ``after`` (secrets shown as "set"), and whether they differ (``changed``).

    A table's (re)definition replaces every row: the committed rows it drops are listed
    as deleted.  A ``clusterset copy`` is a (re)definition of the target mode."""
    found: list[dict[str, Any]] = []
    for feature, mode in dict.fromkeys((u.feature, u.mode) for u, _ in pending.items()):
        mine = pending.of_mode(feature, mode)
        f = catalogue[feature]
        before = definition(state.entries(feature, mode), f.is_table)
        after = definition(view.entries(feature, mode), f.is_table)
        place = {"feature": feature, "mode": str(Mode.from_key(mode))}
        if MARKER in mine:
            what = ("undefine" if after is None else "define" if before is None
                    else "redefine" if f.is_table else "set record")  # fmt: skip
            rows = f.is_table and after is not None  # then listed one by one below
            shown = _values(f, None, None) if rows else _values(f, before, after)
            found.append({**place, "what": what, "row": None, **shown,
                          "changed": before != after})  # fmt: skip
        if not f.is_table or after is None:
            continue
        reset = MARKER in mine
        rows_before: dict[str, Any] = before if isinstance(before, dict) else {}
        rows_after: dict[str, Any] = after if isinstance(after, dict) else {}
        names = [k for k in mine if k != MARKER]
        if reset:
            names += [n for n in rows_before if n not in mine]  # dropped by the reset
        for name in names:
            old, new = rows_before.get(name), rows_after.get(name)
            if old == new and (reset or old is None):
                continue  # rewritten as it was by a (re)definition, or never there
            what = "new row" if old is None else "delete row" if new is None else "edit row"
            found.append({**place, "what": what, "row": name,
                          **_values(f, old, new, name)})  # fmt: skip
    return found


def _values(feature: Feature, old: Any, new: Any, row: str | None = None) -> dict[str, Any]:
    """``before`` and ``after`` as they may be shown (a row masked as its table's)."""

    def shown(value: Any) -> Any:
        if value is None or row is None:
            return feature.shown(value)
        return feature.shown({row: value})[row]

    return {"before": shown(old), "after": shown(new), "changed": old != new}
