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

from clusterd import layers
from clusterd.layers import Reader, Resolved
from schema.feature import Catalogue, Reference


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


def _available(target: Resolved, ref: Reference) -> set[str]:
    rows: dict[str, Any] = target.value
    if ref.where is None:
        return set(rows)
    field, wanted = ref.where
    return {name for name, row in rows.items() if row.get(field) == wanted}


def unresolved(reader: Reader, catalogue: Catalogue, machine: str) -> list[Unresolved]:
    """Every reference in ``machine``'s effective config that names a missing entry."""
    resolved = layers.effective(reader, catalogue, machine)
    found = []
    for feature in catalogue:
        if feature.internal or not feature.references:
            continue
        mine = resolved[feature.command]
        items = sorted(mine.value.items()) if feature.is_table else [(None, mine.value)]
        for ref in feature.references:
            available = _available(resolved[ref.target], ref)
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


def unresolved_everywhere(reader: Reader, catalogue: Catalogue, me: str) -> list[Unresolved]:
    """``unresolved`` for every member (or for ``me`` alone when standalone)."""
    members = list(layers.machines(reader)) or [me]
    return [problem for machine in members for problem in unresolved(reader, catalogue, machine)]
