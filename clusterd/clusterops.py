"""Cluster operations on membership: groups, names, machines, PREPJOIN.

Each function checks what it is asked, writes one commit and returns it (the caller
hands it to the mesh); a refused operation raises ``LifecycleError`` with the reason
and changes nothing.  Membership operations take effect at once; only PREPJOIN entries
are ordinary pending changes (``Session.prepjoin_new``), committed like any edit.

Settings follow the groups they belong to: renaming a group moves every feature it
defines to the new name, deleting one drops them (its machines move to the group
named).  Removing a machine deletes its membership row only: the machine flattens its
own settings when it learns of it, and a later re-admission clears what is left of
its old machine-level definitions.
"""

from __future__ import annotations

from typing import Any

from clusterd import layers
from clusterd.errors import InvalidSetting, LifecycleError
from clusterd.lifecycle import _write_definition
from clusterd.modes import Mode
from clusterd.pending import Pending
from clusterd.state import definition
from clusterd.store import Store
from clusterd.versions import MARKER, Commit, Unit

CLUSTER = Mode.cluster().key


def _cluster(store: Store) -> str:
    name = layers.cluster_name(store.state)
    if name is None:
        raise LifecycleError("this machine is not a member of a cluster")
    return name


def _group_exists(store: Store, group: str) -> None:
    if group not in layers.groups(store.state):
        known = ", ".join(layers.groups(store.state))
        raise LifecycleError(f"no group {group!r} (groups: {known})")


def _machine_row(store: Store, machine: str) -> dict[str, Any]:
    row = layers.machines(store.state).get(machine)
    if row is None:
        known = ", ".join(layers.machines(store.state))
        raise LifecycleError(f"no machine {machine!r} in the cluster (machines: {known})")
    return dict(row)


def _row(store: Store, feature: str, name: str, value: dict[str, Any]) -> Any:
    try:
        return store.catalogue[feature].validate_row(name, value)
    except InvalidSetting as exc:
        raise LifecycleError("; ".join(exc.problems)) from None


def _commit(store: Store, pending: Pending, user: str, comment: str) -> Commit:
    commit = store.commit(pending, user=user, comment=comment)
    assert commit is not None, "a membership operation always changes something"
    return commit


def _members_of(store: Store, group: str) -> list[str]:
    return [m for m, row in layers.machines(store.state).items() if row["group"] == group]


def _move_definitions(store: Store, pending: Pending, src: Mode, dst: Mode | None) -> None:
    """Every feature ``src`` defines moves to ``dst`` (or is dropped when None)."""
    for feature in store.catalogue:
        value = definition(store.state.entries(feature.command, src.key), feature.is_table)
        if value is None:
            continue
        if dst is not None:
            _write_definition(pending, store, feature, dst, value)
        pending.write(store.state, Unit(feature.command, src.key, MARKER), None)


# -- groups --------------------------------------------------------------------------


def add_group(store: Store, group: str, *, user: str) -> Commit:
    _cluster(store)
    if group in layers.groups(store.state):
        raise LifecycleError(f"group {group!r} already exists")
    pending = Pending()
    pending.write(store.state, Unit("groups", CLUSTER, group), _row(store, "groups", group, {}))
    _move_definitions(store, pending, Mode.group(group), None)  # a former group's leftovers
    return _commit(store, pending, user, f"add group {group}")


def rename_group(store: Store, old: str, new: str, *, user: str) -> Commit:
    _cluster(store)
    _group_exists(store, old)
    if new in layers.groups(store.state):
        raise LifecycleError(f"group {new!r} already exists")
    pending = Pending()
    pending.write(store.state, Unit("groups", CLUSTER, new), _row(store, "groups", new, {}))
    pending.write(store.state, Unit("groups", CLUSTER, old), None)
    _move_definitions(store, pending, Mode.group(new), None)  # a former group's leftovers
    for machine in _members_of(store, old):
        row = {**_machine_row(store, machine), "group": new}
        pending.write(store.state, Unit("machines", CLUSTER, machine), row)
    _move_definitions(store, pending, Mode.group(old), Mode.group(new))
    return _commit(store, pending, user, f"rename group {old} to {new}")


def delete_group(store: Store, group: str, *, move_to: str | None, user: str) -> Commit:
    _cluster(store)
    _group_exists(store, group)
    members = _members_of(store, group)
    if len(layers.groups(store.state)) == 1:
        raise LifecycleError(f"group {group!r} is the cluster's only group")
    if members and move_to is None:
        raise LifecycleError(
            f"group {group!r} holds {', '.join(members)}: name the group that receives them"
        )
    if move_to is not None:
        _group_exists(store, move_to)
        if move_to == group:
            raise LifecycleError(f"the machines of {group!r} cannot move to {group!r} itself")
    pending = Pending()
    pending.write(store.state, Unit("groups", CLUSTER, group), None)
    for machine in members:
        row = {**_machine_row(store, machine), "group": move_to}
        pending.write(store.state, Unit("machines", CLUSTER, machine), row)
    _move_definitions(store, pending, Mode.group(group), None)
    where = f", machines to {move_to}" if members else ""
    return _commit(store, pending, user, f"delete group {group}{where}")


def set_group(store: Store, machine: str, group: str, *, user: str) -> Commit:
    _cluster(store)
    row = _machine_row(store, machine)
    _group_exists(store, group)
    if row["group"] == group:
        raise LifecycleError(f"{machine} is already in group {group!r}")
    pending = Pending()
    pending.write(store.state, Unit("machines", CLUSTER, machine), {**row, "group": group})
    return _commit(store, pending, user, f"move {machine} to group {group}")


def set_name(store: Store, name: str, *, user: str) -> Commit:
    old = _cluster(store)
    if name == old:
        raise LifecycleError(f"the cluster is already named {name!r}")
    record = definition(store.state.entries("cluster", CLUSTER), is_table=False)
    try:
        value = store.catalogue["cluster"].validate_record(
            {**(record or {}), "name": name, "id": layers.cluster_id(store.state)}
        )
    except InvalidSetting as exc:
        raise LifecycleError("; ".join(exc.problems)) from None
    pending = Pending()
    pending.write(store.state, Unit("cluster", CLUSTER, MARKER), value)
    return _commit(store, pending, user, f"rename cluster {old} to {name}")


# -- machines ------------------------------------------------------------------------


def admit(store: Store, hostname: str, row: dict[str, Any], *, user: str) -> Commit:
    """Add a joining machine (checked by the caller) to membership.

    Clears what a former membership of the same host left at its machine mode, and
    its PREPJOIN entry: a prepared key is good for one join."""
    _cluster(store)
    pending = Pending()
    value = _row(store, "machines", hostname, row)
    pending.write(store.state, Unit("machines", CLUSTER, hostname), value)
    _move_definitions(store, pending, Mode.machine(hostname), None)
    if hostname in layers.prepared(store.state):
        pending.write(store.state, Unit("prepjoin", CLUSTER, hostname), None)
    return _commit(store, pending, user, f"{hostname} joins group {row['group']}")


def remove_machine(store: Store, machine: str, *, user: str) -> Commit:
    """Delete a member's row: every member stops linking to it."""
    _cluster(store)
    _machine_row(store, machine)
    pending = Pending()
    pending.write(store.state, Unit("machines", CLUSTER, machine), None)
    return _commit(store, pending, user, f"remove machine {machine}")


def listing(store: Store) -> dict[str, Any]:
    """LIST / LISTDETAIL: machines by group, with what membership records of them."""
    name = _cluster(store)
    machines = layers.machines(store.state)
    return {
        "cluster": name,
        "groups": {
            group: {m: dict(machines[m]) for m in _members_of(store, group)}
            for group in layers.groups(store.state)
        },
        "prepared": {h: dict(row) for h, row in layers.prepared(store.state).items()},
    }


def list_text(listed: dict[str, Any]) -> str:
    """The LIST shape of the reference."""
    lines = [f"cluster = {listed['cluster']}"]
    for group, machines in listed["groups"].items():
        lines.append(f"Group {group}:")
        for machine, row in machines.items():
            lines.append(f"Machine {machine} (Serial #: {row['serial']})")
    return "\n".join(lines)
