"""What each membership operation writes: only the units it changes.

Pure: every function writes into a ``View`` (a state with pending changes over it), so
the daemon's operations (``clusterd.trust.clusterops``, ``clusterd.trust.lifecycle``) and the
simulation's replicas make exactly the same writes.  A refused operation raises
``LifecycleError`` before writing anything.  The units and the rules that read them
are in ``docs/membership.md``; the reading side is ``clusterd.core.layers``.
"""

from __future__ import annotations

from typing import Any

from clusterd.core import layers
from clusterd.core.edits import write_definition
from clusterd.core.errors import InvalidSetting, LifecycleError
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending, View
from clusterd.core.state import definition
from clusterd.core.versions import JSON, MARKER, Unit
from clusterd.schema.feature import Catalogue, Level
from clusterd.schema.fields import DOMAIN_RE, NAME_RE, host_key

CLUSTER = Mode.cluster().key
TABLES = ("groups", "machines", "placement", "detached", "removed", "prepjoin")


def _write(view: View, catalogue: Catalogue, feature: str, key: str, value: Any) -> None:
    """One membership row (None: deleted), validated."""
    if value is not None:
        try:
            value = catalogue[feature].validate_row(key, value)
        except InvalidSetting as exc:
            raise LifecycleError("; ".join(exc.problems)) from None
    view.write(Unit(feature, CLUSTER, key), value)


def _move_settings(view: View, catalogue: Catalogue, src: Mode, dst: Mode | None) -> None:
    """Every feature ``src`` defines moves to ``dst`` (or is dropped when None)."""
    for feature in catalogue:
        value = definition(view.entries(feature.command, src.key), feature.is_table)
        if value is None:
            continue
        if dst is not None:
            write_definition(view.write, feature, dst, value)
        view.write(Unit(feature.command, src.key, MARKER), None)


def _group(view: View, name: str) -> str:
    gid = layers.group_id(view, name)
    if gid is None:
        raise LifecycleError(f"no group {name!r} (groups: {', '.join(layers.groups(view))})")
    return gid


def _machine(view: View, machine: str) -> JSON:
    row = view.row("machines", CLUSTER, host_key(machine))
    if row is None:
        known = ", ".join(layers.machines(view))
        raise LifecycleError(f"no machine {machine!r} in the cluster (machines: {known})")
    return dict(row)


def new_group_id(view: View, name: str) -> str:
    """The id a new group called ``name`` gets: the name, unless a group (live or gone)
    had that id; then the name with the first free suffix ``.2``, ``.3``, ..."""
    taken = set(view.entries("groups", CLUSTER).rows)
    if name not in taken:
        return name
    n = 2
    while f"{name}.{n}" in taken:
        n += 1
    return f"{name}.{n}"


def define_tables(view: View, catalogue: Catalogue) -> None:
    """The empty membership tables of a new cluster (a table is visible once defined)."""
    for feature in TABLES:
        view.write(Unit(feature, CLUSTER, MARKER), {})


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise LifecycleError(
            f"not a group name: {name!r} (letters, digits, '_', '.', '-'; 64 at most)"
        )


def add_group(view: View, catalogue: Catalogue, name: str) -> str:
    _check_name(name)
    if name in layers.groups(view):
        raise LifecycleError(f"group {name!r} already exists")
    gid = new_group_id(view, name)
    _write(view, catalogue, "groups", gid, {"name": name})
    _move_settings(view, catalogue, Mode.group(name), None)  # a former group's leftovers
    return gid


def rename_group(view: View, catalogue: Catalogue, old: str, new: str) -> None:
    """The group keeps its id (its machines stay in it); its settings move."""
    gid = _group(view, old)
    _check_name(new)
    if new in layers.groups(view):
        raise LifecycleError(f"group {new!r} already exists")
    _write(view, catalogue, "groups", gid, {"name": new})
    _move_settings(view, catalogue, Mode.group(new), None)  # a former group's leftovers
    _move_settings(view, catalogue, Mode.group(old), Mode.group(new))


def delete_group(view: View, catalogue: Catalogue, name: str, move_to: str | None) -> list[str]:
    """Delete a group; its machines move to ``move_to``.  Returns the machines moved."""
    gid = _group(view, name)
    members = [m for m, row in layers.machines(view).items() if row["group_id"] == gid]
    if gid == layers.FIRST_GROUP:
        raise LifecycleError(
            f"group {name!r} is the cluster's first group: it takes in every machine whose "
            "group is deleted elsewhere meanwhile, so it stays (rename it if need be)"
        )
    if members and move_to is None:
        raise LifecycleError(
            f"group {name!r} holds {', '.join(members)}: name the group that receives them"
        )
    target = None
    if move_to is not None:
        target = _group(view, move_to)
        if target == gid:
            raise LifecycleError(f"the machines of {name!r} cannot move to {name!r} itself")
    _write(view, catalogue, "groups", gid, None)
    for machine in members:
        _write(view, catalogue, "placement", machine, {"group": target})
    _move_settings(view, catalogue, Mode.group(name), None)
    return members


def set_group(view: View, catalogue: Catalogue, machine: str, group: str) -> None:
    machine = host_key(machine)
    _machine(view, machine)
    gid = _group(view, group)
    now = layers.machines(view)[machine]
    if now["group_id"] == gid and not now["fallback"]:  # a fallback is placed for real
        raise LifecycleError(f"{machine} is already in group {group!r}")
    _write(view, catalogue, "placement", machine, {"group": gid})


def set_flag(view: View, catalogue: Catalogue, machine: str, disconnected: bool) -> None:
    """DISCONNECT (True) or RECONNECT (False) ``machine``: its flag, nothing else."""
    machine = host_key(machine)
    _machine(view, machine)
    _write(view, catalogue, "detached", machine, {"disconnected": disconnected})


def set_reachability(view: View, catalogue: Catalogue, machine: str, row: JSON) -> None:
    """How ``machine`` is reached (address, ports, transport), its keys kept."""
    machine = host_key(machine)
    current = _machine(view, machine)
    _write(view, catalogue, "machines", machine, {**current, **row})


def admit(view: View, catalogue: Catalogue, hostname: str, row: JSON, group: str) -> None:
    """A joining machine: its row, its group, connected; its PREPJOIN entry used up."""
    hostname = host_key(hostname)
    gid = _group(view, group)
    _write(view, catalogue, "machines", hostname, row)
    _write(view, catalogue, "placement", hostname, {"group": gid})
    _write(view, catalogue, "detached", hostname, {"disconnected": False})
    if view.row("removed", CLUSTER, hostname) is not None:
        _write(view, catalogue, "removed", hostname, None)
    if view.row("prepjoin", CLUSTER, hostname) is not None:
        _write(view, catalogue, "prepjoin", hostname, None)


def clear_machine(view: View, catalogue: Catalogue, hostname: str) -> None:
    """What a former membership of ``hostname`` left at its machine mode: cleared when
    a member admits it again (a re-admitted host starts clean)."""
    _move_settings(view, catalogue, Mode.machine(hostname), None)


def rename_machine(
    view: View, catalogue: Catalogue, old: str, new: str, *, by: str, at: float
) -> None:
    """A committed ``sethostname`` naming machine ``old`` anew (``docs/membership.md``):
    its serial, group and flag go with it, and so does every setting of its machine
    mode (interfaces named after the old name take the new one); ``removed`` keeps the
    old name with ``renamed_to`` (what clustercheck reads to explain a late change made
    at the old name).  Standalone, only the settings move.  Links know members by
    serial, so none of them drops."""
    old, new = host_key(old), host_key(new)
    if not DOMAIN_RE.fullmatch(new):
        raise LifecycleError(f"not a fully qualified host name: {new!r}")
    clustered = layers.cluster_name(view) is not None
    if clustered:
        row = _machine(view, old)
        if view.row("machines", CLUSTER, new) is not None:
            raise LifecycleError(f"a machine named {new} is already a member of the cluster")
        if view.row("prepjoin", CLUSTER, new) is not None:
            raise LifecycleError(
                f"{new} is registered with PREPJOIN for a machine about to join: "
                f"delete that entry first (clusterconfig prepjoin delete {new})"
            )
        for feature in ("placement", "detached"):
            _write(view, catalogue, feature, new, view.row(feature, CLUSTER, old))
            _write(view, catalogue, feature, old, None)
        _write(view, catalogue, "machines", new, row)
        _write(view, catalogue, "machines", old, None)
        if view.row("removed", CLUSTER, new) is not None:
            _write(view, catalogue, "removed", new, None)
        left = {"serial": row["serial"], "machine_key": row.get("machine_key"), "by": by,
                "at": at, "renamed_to": new}  # fmt: skip
        _write(view, catalogue, "removed", old, left)
    _move_settings(view, catalogue, Mode.machine(new), None)  # a former member's leftovers
    _move_settings(view, catalogue, Mode.machine(old), Mode.machine(new))
    dst = Mode.machine(new).key
    interfaces = view.entries("interfaceconfig", dst)
    for name, version in interfaces.visible_rows():
        row = version.value or {}
        if row.get("hostname") == old:
            view.write(Unit("interfaceconfig", dst, name), {**row, "hostname": new})
    view.write(Unit("sethostname", dst, MARKER), {"hostname": new})


def drop_stale_name(view: View, catalogue: Catalogue, stale: str, name: str, *, at: float) -> None:
    """The row of a name that lost to a concurrent rename (``layers.stale_names``) goes,
    as a rename's old name does, with the settings that rename moved there (the winning
    rename moved the same ones to the name that stays)."""
    row = dict(view.row("machines", CLUSTER, stale) or {})
    _move_settings(view, catalogue, Mode.machine(stale), None)
    for feature in ("machines", "placement", "detached"):
        _write(view, catalogue, feature, stale, None)
    left = {"serial": row["serial"], "machine_key": row.get("machine_key"), "by": "clusterd",
            "at": at, "renamed_to": name}  # fmt: skip
    _write(view, catalogue, "removed", stale, left)


def renamed_in(pending: Pending) -> list[tuple[str, str]]:
    """The (old, new) names of the ``sethostname`` edits among ``pending`` that name a
    machine other than the one whose mode they are at."""
    found = []
    for unit, pw in pending.items():
        if unit.feature != "sethostname" or not unit.is_marker or pw.value is None:
            continue
        mode = Mode.from_key(unit.mode)
        new = host_key(str(pw.value.get("hostname", "")))
        if mode.level is Level.MACHINE and new != mode.name:
            found.append((mode.name, new))
    return found


def remove(view: View, catalogue: Catalogue, machine: str, *, by: str, at: float) -> None:
    """REMOVEMACHINE: the row goes; ``removed`` keeps what members need to tell the
    machine so if it comes back (who removed it, when)."""
    machine = host_key(machine)
    row = _machine(view, machine)
    _write(view, catalogue, "machines", machine, None)
    _write(view, catalogue, "placement", machine, None)
    _write(view, catalogue, "detached", machine, None)
    kept = {"serial": row["serial"], "machine_key": row.get("machine_key"), "by": by, "at": at}
    _write(view, catalogue, "removed", machine, kept)
