"""Cross-feature references, checked per machine on its effective configuration.

A listener defined at cluster level may name a disclaimer that exists only in one
machine's text resources, or an interface some machines lack.  Such a reference works
on some members and not on others; ``unresolved`` lists every machine where it does
not resolve, with where the referring setting is defined, so the admin can move the
referenced entry up or the referring setting down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterd.core import layers
from clusterd.core.layers import Reader, Resolved
from clusterd.core.modes import Mode
from clusterd.schema.feature import Catalogue, Feature, Reference


@dataclass(frozen=True, slots=True)
class Unresolved:
    machine: str
    feature: str
    source: str  # where the referring setting is defined
    row: str | None
    field: str
    target: str
    name: str

    def __str__(self) -> str:
        where = f"{self.feature} row {self.row!r}" if self.row is not None else self.feature
        return (
            f"{where} (from {self.source}) field {self.field!r} names {self.target} "
            f"{self.name!r}, which is unavailable on Machine {self.machine}"
        )


def _names(target: Feature, ref: Reference, row: Any) -> bool:
    """Whether ``row`` (a row of ``target``, or None) is one ``ref`` may name."""
    if row is None:
        return False
    return ref.where is None or row.get(ref.where[0]) == ref.where[1]


def _available(target: Resolved, ref: Reference) -> set[str]:
    rows: dict[str, Any] = target.value
    if ref.where is None:
        return set(rows)
    field, wanted = ref.where
    return {name for name, row in rows.items() if row.get(field) == wanted}


def unresolved(
    reader: Reader, catalogue: Catalogue, machine: str, only: frozenset[str] | None = None
) -> list[Unresolved]:
    """Every reference in ``machine``'s effective config that names a missing entry
    (``only``: of these referring features alone)."""
    modes = layers.chain(reader, machine)
    resolved: dict[str, Resolved] = {}

    def get(command: str) -> Resolved:
        if command not in resolved:
            resolved[command] = layers.resolve(reader, catalogue[command], modes)
        return resolved[command]

    found = []
    for feature in catalogue:
        if feature.internal or not feature.references:
            continue
        if only is not None and feature.command not in only:
            continue
        mine = get(feature.command)
        items = sorted(mine.value.items()) if feature.is_table else [(None, mine.value)]
        for ref in feature.references:
            available = _available(get(ref.target), ref)
            for row, value in items:
                for name in ref.names_in(value):
                    if name not in available:
                        found.append(
                            Unresolved(
                                machine,
                                feature.command,
                                mine.source,
                                row,
                                ref.path,
                                ref.target,
                                name,
                            )
                        )
    return found


def touching(catalogue: Catalogue, command: str) -> frozenset[str]:
    """The referring features whose references an edit of ``command`` can break or
    mend: itself, if it refers to anything, and every feature that refers to it."""
    return frozenset(
        f.command
        for f in catalogue
        if f.references
        and not f.internal
        and (f.command == command or any(r.target == command for r in f.references))
    )


def unresolved_row(
    reader: Reader, catalogue: Catalogue, me: str, command: str, key: str | None
) -> list[Unresolved]:
    """What an edit of one row (``key``; None for a record) can break or leave broken,
    on every member: that row's own references, and every reference naming that row.
    Reads only that row of each table it checks, plus the features that refer to
    ``command`` -- never the whole of a table the edit was a row of."""
    feature = catalogue[command]
    referrers = [
        (f, ref) for f in catalogue if not f.internal for ref in f.references
        if ref.target == command
    ]  # fmt: skip
    found = []
    for machine in list(layers.machines(reader)) or [me]:
        modes = layers.chain(reader, machine)
        if feature.references:
            if key is None:
                own = layers.resolve(reader, feature, modes)
                value, source = own.value, own.mode
            else:
                value, source = layers.effective_row(reader, feature, modes, key)
            for ref in feature.references if value is not None else ():
                target = catalogue[ref.target]
                for name in ref.names_in(value):
                    row, _ = layers.effective_row(reader, target, modes, name)
                    if not _names(target, ref, row):
                        found.append(Unresolved(machine, command, _where(source), key,
                                                ref.path, ref.target, name))  # fmt: skip
        if key is None or not referrers:
            continue
        row, _ = layers.effective_row(reader, feature, modes, key)
        for referrer, ref in referrers:
            if _names(feature, ref, row):
                continue
            resolved = layers.resolve(reader, referrer, modes)
            items = (
                sorted(resolved.value.items()) if referrer.is_table else [(None, resolved.value)]
            )
            for referring_row, value in items:
                if key in ref.names_in(value):
                    found.append(Unresolved(machine, referrer.command, resolved.source,
                                            referring_row, ref.path, command, key))  # fmt: skip
    return found


def _where(mode: Mode | None) -> str:
    return str(mode) if mode is not None else "factory default"


def unresolved_from(
    reader: Reader, catalogue: Catalogue, me: str, command: str, source: Mode | None
) -> list[Unresolved]:
    """The references of ``command`` as ``source`` defines it (None: the factory
    defaults) that some machine using that definition cannot resolve: what ``print``
    of the settings found at ``source`` marks, row by row."""
    where = _where(source)
    found = unresolved_everywhere(reader, catalogue, me, frozenset({command}))
    return [p for p in found if p.source == where]


def unresolved_everywhere(
    reader: Reader, catalogue: Catalogue, me: str, only: frozenset[str] | None = None
) -> list[Unresolved]:
    """``unresolved`` for every member (or for ``me`` alone when standalone)."""
    if only is not None and not only:
        return []
    members = list(layers.machines(reader)) or [me]
    return [p for machine in members for p in unresolved(reader, catalogue, machine, only)]
