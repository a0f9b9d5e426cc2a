"""Cluster operations on membership: groups, names, machines, PREPJOIN.

Each function checks what it is asked, writes one commit and returns it (the caller
hands it to the mesh); a refused operation raises ``LifecycleError`` with the reason
and changes nothing.  Membership operations take effect at once; only PREPJOIN entries
are ordinary pending changes (``Session.prepjoin_new``), committed like any edit.

The writes themselves, the same for the simulation's replicas, are
``clusterd.core.membership``; this module checks the machine is in a cluster and commits.
Settings follow the groups they belong to: renaming a group moves every feature it
defines to the new name, deleting one drops them (its machines move to the group
named).  Removing a machine deletes its membership row: the machine flattens its own
settings when it learns of it, and a later re-admission clears what is left of its
old machine-level definitions.
"""

from __future__ import annotations

import time
from typing import Any

from clusterd.core import layers, membership
from clusterd.core.errors import InvalidSetting, LifecycleError
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending, View
from clusterd.core.state import definition
from clusterd.core.versions import MARKER, Commit, Unit
from clusterd.store.store import Store

CLUSTER = Mode.cluster().key


def _cluster(store: Store) -> str:
    name = layers.cluster_name(store.state)
    if name is None:
        raise LifecycleError("this machine is not a member of a cluster")
    return name


def _commit(store: Store, pending: Pending, user: str, comment: str) -> Commit:
    commit = store.commit(pending, user=user, comment=comment)
    assert commit is not None, "a membership operation always changes something"
    return commit


def _plan(store: Store) -> tuple[Pending, View]:
    _cluster(store)
    pending = Pending()
    return pending, View(store.state, pending)


# -- groups --------------------------------------------------------------------------


def add_group(store: Store, group: str, *, user: str) -> Commit:
    pending, view = _plan(store)
    membership.add_group(view, store.catalogue, group)
    return _commit(store, pending, user, f"add group {group}")


def rename_group(store: Store, old: str, new: str, *, user: str) -> Commit:
    pending, view = _plan(store)
    membership.rename_group(view, store.catalogue, old, new)
    return _commit(store, pending, user, f"rename group {old} to {new}")


def delete_group(store: Store, group: str, *, move_to: str | None, user: str) -> Commit:
    pending, view = _plan(store)
    moved = membership.delete_group(view, store.catalogue, group, move_to)
    where = f", machines to {move_to}" if moved else ""
    return _commit(store, pending, user, f"delete group {group}{where}")


def set_group(store: Store, machine: str, group: str, *, user: str) -> Commit:
    pending, view = _plan(store)
    membership.set_group(view, store.catalogue, machine, group)
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


def admit(
    store: Store, hostname: str, row: dict[str, Any], group: str | None = None, *, user: str
) -> Commit:
    """Add a joining machine (checked by the caller) to membership, in ``group`` (or the
    group its ``row`` names)."""
    pending, view = _plan(store)
    row = dict(row)
    group = group or str(row.pop("group", layers.MAIN_GROUP))
    membership.admit(view, store.catalogue, hostname, row, group)
    membership.clear_machine(view, store.catalogue, hostname)
    return _commit(store, pending, user, f"{hostname} joins group {group}")


def set_flag(store: Store, machine: str, disconnected: bool, *, user: str) -> Commit:
    pending, view = _plan(store)
    membership.set_flag(view, store.catalogue, machine, disconnected)
    word = "disconnect" if disconnected else "reconnect"
    return _commit(store, pending, user, f"{word} {machine}")


def set_reachability(
    store: Store, machine: str, row: dict[str, Any], ccs: bool, *, user: str
) -> Commit:
    """How members reach ``machine`` (CCS on or off, its ports and address)."""
    pending, view = _plan(store)
    membership.set_reachability(view, store.catalogue, machine, row)
    word = "enable" if ccs else "disable"
    return _commit(store, pending, user, f"{word} CCS on {machine}")


def remove_machine(store: Store, machine: str, *, user: str) -> Commit:
    """Delete a member's row: every member stops linking to it."""
    pending, view = _plan(store)
    membership.remove(view, store.catalogue, machine, by=user, at=time.time())
    return _commit(store, pending, user, f"remove machine {machine}")


def drop_stale_names(store: Store, stale: dict[str, str], *, user: str) -> Commit:
    """Rows of this machine's former names that a concurrent rename left (``stale``:
    old -> current name): the machine itself deletes them."""
    pending, view = _plan(store)
    for old, name in sorted(stale.items()):
        membership.drop_stale_name(view, store.catalogue, old, name, at=time.time())
    return _commit(store, pending, user, f"drop stale names {', '.join(sorted(stale))}")


def listing(store: Store) -> dict[str, Any]:
    """LIST / LISTDETAIL: every machine, by the group it is in (every member lists the
    same, whatever happened to the groups: ``docs/membership.md``)."""
    name = _cluster(store)
    machines = layers.machines(store.state)
    return {
        "cluster": name,
        "groups": {
            group: {m: dict(row) for m, row in machines.items() if row["group"] == group}
            for group in layers.groups(store.state)
        },
        "prepared": {h: dict(row) for h, row in layers.prepared(store.state).items()},
    }


def list_text(listed: dict[str, Any]) -> str:
    """The LIST shape of the reference, each machine without a live link from this one
    flagged (``link_flag``)."""
    lines = [f"cluster = {listed['cluster']}"]
    for group, machines in listed["groups"].items():
        lines.append(f"Group {group}:")
        for machine, row in machines.items():
            lines.append(f"Machine {machine} (Serial #: {row['serial']}){link_flag(row)}")
    return "\n".join(lines)


def link_flag(row: dict[str, Any]) -> str:
    """How LIST marks a machine by its ``link`` (``Admin.listing``): nothing when linked
    (or when the row has no link: the login host), else why there is no live link --
    its link refused (e.g. another software version), disconnected on purpose, reached
    through another member only, or no link at all.

    >>> link_flag({"serial": "S1", "link": {"state": "down", "route": None}})
    ' [disconnected]'
    >>> link_flag({"serial": "S1", "disconnected": True, "link": {"state": "disconnected"}})
    ' [disconnected on purpose]'
    """
    link = row.get("link")
    if link is None or link["state"] == "up":
        return ""
    if link["state"] == "refused":  # fresher than a flag it may still hold
        return " [disconnected: link refused]"
    if row.get("disconnected") or link.get("admin_off"):
        return " [disconnected on purpose]"
    if link.get("route") not in (None, "direct"):
        return f" [no direct link; {link['route']}]"
    return " [disconnected]"
