"""Effective configuration: which mode's settings a machine uses, per feature.

Resolution is one rule, applied per whole feature: the machine's own mode if it
defines the feature, else its group's, else the cluster's, else the factory default.
"Defined and empty" is a definition like any other and stops the search.

Worked example — cluster ``americas``; group Paris holds lab3; group Main_Group holds
lab1 and lab2::

    ldapconfig at cluster         {a, b, c}
    ldapconfig at group Paris     {}            (defined, empty)
    ldapconfig at machine lab2    {z}

    effective(lab1) -> {a, b, c}  from Cluster
    effective(lab2) -> {z}        from Machine lab2
    effective(lab3) -> {}         from Group Paris: empty overrides the cluster

A standalone machine (no cluster record) resolves from its own machine mode only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from clusterd.core.clock import newer
from clusterd.core.modes import Mode
from clusterd.core.state import ModeEntries, definition
from clusterd.core.versions import JSON, CommitId, Version
from clusterd.schema.feature import Catalogue, Feature, Level

CLUSTER = Mode.cluster().key


class Reader(Protocol):
    def entries(self, feature: str, mode: str) -> ModeEntries: ...
    def is_defined(self, feature: str, mode: str) -> bool: ...
    def row(self, feature: str, mode: str, key: str) -> Any: ...


# -- membership (the internal features kept at cluster mode) -------------------------


def cluster_name(reader: Reader) -> str | None:
    record = definition(reader.entries("cluster", CLUSTER), is_table=False)
    return str(record["name"]) if record else None


def cluster_id(reader: Reader) -> str | None:
    """What links compare: fixed when the cluster is created (its name, for older ones)."""
    record = definition(reader.entries("cluster", CLUSTER), is_table=False)
    return str(record.get("id") or record["name"]) if record else None


def prepared(reader: Reader) -> dict[str, JSON]:
    """Machines registered with PREPJOIN, by host name."""
    rows = definition(reader.entries("prepjoin", CLUSTER), is_table=True) or {}
    return {name: row for name, row in sorted(rows.items())}


MAIN_GROUP = "Main_Group"
FIRST_GROUP = MAIN_GROUP  # the id of the group a new cluster starts with: never deleted


def _rows(reader: Reader, feature: str) -> dict[str, JSON]:
    return definition(reader.entries(feature, CLUSTER), is_table=True) or {}


def group_table(reader: Reader) -> dict[str, str]:
    """The live groups: id -> name (``docs/membership.md``)."""
    rows = sorted(_rows(reader, "groups").items())
    return {gid: str(row.get("name") or gid) for gid, row in rows}


def groups(reader: Reader) -> list[str]:
    """The names of the live groups, sorted (two groups of one name give one entry)."""
    return sorted(set(group_table(reader).values()))


def group_id(reader: Reader, name: str) -> str | None:
    """The id of the group called ``name`` (of two so named, the smaller id)."""
    return next((gid for gid, n in group_table(reader).items() if n == name), None)


def fallback_group(table: dict[str, str]) -> str | None:
    """Where a machine whose group is gone is: the cluster's first group (Main_Group,
    whatever it is called now; it cannot be deleted), the same on every member."""
    return FIRST_GROUP if FIRST_GROUP in table else next(iter(table), None)


def _machine_versions(reader: Reader) -> dict[str, tuple[str, Version]]:
    """The ``machines`` rows, one per serial (its host name and version): when members
    that were apart renamed one machine two ways, its newest name is its name on every
    member (``docs/membership.md``)."""
    newest: dict[str, tuple[str, Version]] = {}
    for host, version in reader.entries("machines", CLUSTER).visible_rows():
        serial = str((version.value or {}).get("serial"))
        if serial not in newest or (version.hlc, version.origin) > (
            newest[serial][1].hlc,
            newest[serial][1].origin,
        ):
            newest[serial] = (host, version)
    return newest


def _machine_rows(reader: Reader) -> dict[str, JSON]:
    return {host: v.value or {} for host, v in _machine_versions(reader).values()}


def row_commits(reader: Reader) -> dict[str, CommitId]:
    """By serial, the commit that wrote each member's ``machines`` row (the one that
    admitted it, or a later change of its address, keys or name)."""
    return {serial: v.commit for serial, (_, v) in _machine_versions(reader).items()}


def stale_names(reader: Reader) -> dict[str, str]:
    """Machine rows a concurrent rename left behind: old name -> the serial's name."""
    kept = _machine_rows(reader)
    names = {str(row["serial"]): host for host, row in kept.items()}
    return {
        host: names[str((version.value or {}).get("serial"))]
        for host, version in reader.entries("machines", CLUSTER).visible_rows()
        if host not in kept
    }


def machines(reader: Reader) -> dict[str, JSON]:
    """Every member by host name: its ``machines`` row, plus ``group`` (the name of the
    group it is in), ``group_id``, ``disconnected``, and ``fallback`` (True when its own
    group is gone and the fallback rule placed it)."""
    table = group_table(reader)
    placement, detached = _rows(reader, "placement"), _rows(reader, "detached")
    found = {}
    for host, row in sorted(_machine_rows(reader).items()):
        gid = placement.get(host, {}).get("group")
        fallback = gid not in table
        if fallback:
            gid = fallback_group(table)
        flag = bool(detached.get(host, {}).get("disconnected", False))
        found[host] = {**row, "group": table.get(gid) if gid else None, "group_id": gid,
                       "disconnected": flag, "fallback": fallback}  # fmt: skip
    return found


def removed_serials(reader: Reader) -> set[str]:
    """Serials of machines removed from the cluster (and not members again)."""
    members = {str(row["serial"]) for row in _machine_rows(reader).values()}
    return {str(row["serial"]) for row in _rows(reader, "removed").values()} - members


def hostnames(reader: Reader) -> dict[str, str]:
    """Member host names by serial (commits name their origin by serial)."""
    return {str(row["serial"]): host for host, row in _machine_rows(reader).items()}


def group_of(reader: Reader, machine: str) -> str | None:
    """The name of the group ``machine`` is in (by the fallback rule if its own is gone)."""
    if machine not in _machine_rows(reader):
        return None
    placed = reader.row("placement", CLUSTER, machine)
    gid = placed.get("group") if placed else None
    group = reader.row("groups", CLUSTER, gid) if gid else None
    if group is None:
        table = group_table(reader)
        gid = fallback_group(table)
        return table[gid] if gid else None
    return str(group.get("name") or gid)


def chain(reader: Reader, machine: str) -> list[Mode]:
    """The modes a machine inherits from, most specific first."""
    if cluster_name(reader) is None:
        return [Mode.machine(machine)]
    group = group_of(reader, machine)
    modes = [Mode.machine(machine)]
    if group is not None:
        modes.append(Mode.group(group))
    modes.append(Mode.cluster())
    return modes


# -- resolution ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    """A machine's effective value of one feature and where it comes from."""

    feature: str
    value: Any
    mode: Mode | None  # None: the factory default
    defined_by: Version | None  # the marker: who defined the feature there, and when
    last_change: Version | None  # the newest version at that mode (a deletion too)

    @property
    def source(self) -> str:
        return str(self.mode) if self.mode is not None else "factory default"


def resolve(reader: Reader, feature: Feature, modes: Iterable[Mode]) -> Resolved:
    for mode in modes:
        entries = reader.entries(feature.command, mode.key)
        marker = entries.marker
        if marker is None or marker.value is None:
            continue
        if not feature.is_table:
            return Resolved(feature.command, marker.value, mode, marker, marker)
        rows, newest = {}, marker
        for name, row in entries.rows.items():
            if newer(marker.stamp, row.stamp):
                continue  # (before the mode's reset: hidden)
            if row.value is not None:
                rows[name] = row.value
            if row.hlc > newest.hlc:  # a row deleted since is a change too
                newest = row
        return Resolved(feature.command, rows, mode, marker, newest)
    return Resolved(feature.command, feature.factory_value(), None, None, None)


def defining_mode(reader: Reader, feature: Feature, modes: Iterable[Mode]) -> Mode | None:
    """The first of ``modes`` that defines ``feature`` (None: the factory default)."""
    return next((m for m in modes if reader.is_defined(feature.command, m.key)), None)


def effective_row(
    reader: Reader, feature: Feature, modes: Iterable[Mode], key: str
) -> tuple[Any, Mode | None]:
    """One row of a table as the machine of ``modes`` has it (None: no such row), and
    the mode it comes from; reads that row only, never the whole table."""
    mode = defining_mode(reader, feature, modes)
    if mode is None:
        defaults = feature.factory_value() or {}
        return defaults.get(key), None
    return reader.row(feature.command, mode.key, key), mode


def effective(reader: Reader, catalogue: Catalogue, machine: str) -> dict[str, Resolved]:
    """Every user-visible feature of one machine, resolved."""
    modes = chain(reader, machine)
    return {f.command: resolve(reader, f, modes) for f in catalogue if not f.internal}


def effective_values(reader: Reader, catalogue: Catalogue, machine: str) -> dict[str, Any]:
    return {name: r.value for name, r in effective(reader, catalogue, machine).items()}


# -- where is a feature defined -------------------------------------------------------


def all_modes(reader: Reader) -> list[Mode]:
    """Cluster, every group, every machine (grouped as LIST shows them)."""
    members = machines(reader)
    return (
        [Mode.cluster()]
        + [Mode.group(g) for g in groups(reader)]
        + [Mode.machine(m) for m in members]
    )


def is_defined(reader: Reader, feature: Feature, mode: Mode) -> bool:
    """Whether ``mode`` defines ``feature`` (its marker alone says so: no row is read)."""
    return reader.is_defined(feature.command, mode.key)


def defined_at(reader: Reader, feature: Feature) -> list[tuple[Mode, bool]]:
    """CLUSTERSHOW: for every mode of the cluster, whether it defines the feature."""
    return [(mode, is_defined(reader, feature, mode)) for mode in all_modes(reader)]


def overriding(reader: Reader, feature: Feature, mode: Mode) -> list[Mode]:
    """Lower modes that define the feature themselves, so edits at ``mode`` miss them."""
    members = machines(reader)
    if mode.level is Level.CLUSTER:
        lower = [Mode.group(g) for g in groups(reader)] + [Mode.machine(m) for m in members]
    elif mode.level is Level.GROUP:
        lower = [Mode.machine(m) for m, row in members.items() if row["group"] == mode.name]
    else:
        lower = []
    return [m for m in lower if is_defined(reader, feature, m)]


def machines_under(reader: Reader, mode: Mode) -> list[str]:
    """The members whose effective config can depend on ``mode``."""
    members = machines(reader)
    if mode.level is Level.CLUSTER:
        return list(members)
    if mode.level is Level.GROUP:
        return [m for m, row in members.items() if row["group"] == mode.name]
    return [mode.name] if mode.name in members else []
