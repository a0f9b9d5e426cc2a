"""Cluster lifecycle on the store side: create, join, leave.

* **create**: the standalone machine's settings are promoted to cluster level, except
  network settings (and anything only a machine may hold), which stay at machine
  level; the cluster record, group ``Main_Group`` and this machine's membership row
  are written in the same commit.
* **join**: ``join_report`` says, before anything changes, which settings the join
  will discard; ``save_standalone`` keeps a copy; ``join`` takes the cluster's state
  (a state transfer) and re-commits this machine's network settings at its machine
  mode, so they survive.
* **leave**: ``flatten`` turns every value the machine inherited into its own
  standalone setting, so it keeps behaving as it did, and forgets the cluster.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterd.core import layers, membership
from clusterd.core.edits import write_definition
from clusterd.core.errors import LifecycleError
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending, View
from clusterd.core.state import definition
from clusterd.core.versions import MARKER, Commit, Snapshot, Unit
from clusterd.schema.feature import Feature, Level
from clusterd.store.store import Store

MAIN_GROUP = layers.MAIN_GROUP
SYSTEM_USER = "clusterd"


@dataclass(frozen=True, slots=True)
class Discarded:
    """One setting a join discards: a record (``rows`` None) or a table and its rows."""

    feature: str
    title: str
    value: Any
    rows: tuple[str, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        rows = None if self.rows is None else list(self.rows)
        return {"feature": self.feature, "title": self.title, "value": self.value, "rows": rows}


def discard_line(item: Mapping[str, Any]) -> str:
    """One line of a join report: ``userconfig  Users: admin, nyadmin`` (a table names
    what is lost, row by row), ``settz  Time Zone`` (a record)."""
    rows = item.get("rows")
    what = str(item["title"])
    if rows is not None:
        what += ": " + (", ".join(str(r) for r in rows) if rows else "(an empty table)")
    return f"{item['feature']:<20} {what}"


def _write_definition(
    pending: Pending, store: Store, feature: Feature, mode: Mode, value: Any
) -> None:
    write_definition(View(store.state, pending).write, feature, mode, value)


def _own_definitions(store: Store) -> dict[str, Any]:
    me = Mode.machine(store.hostname).key
    found = {}
    for feature in store.catalogue:
        value = definition(store.state.entries(feature.command, me), feature.is_table)
        if value is not None and not feature.internal:
            found[feature.command] = value
    return found


def _membership(
    pending: Pending, store: Store, cluster: str, group: str, row: dict[str, Any]
) -> None:
    cat = store.catalogue
    _write_definition(
        pending,
        store,
        cat["cluster"],
        Mode.cluster(),
        cat["cluster"].validate_record({"name": cluster, "id": secrets.token_hex(8)}),
    )
    view = View(store.state, pending)
    membership.define_tables(view, cat)
    membership.add_group(view, cat, group)
    membership.admit(view, cat, store.hostname, {"serial": store.origin, **row}, group)


def create_cluster(
    store: Store, name: str, *, user: str = SYSTEM_USER, machine: dict[str, Any] | None = None
) -> Commit:
    """Make this standalone machine the first member of a new cluster ``name``."""
    if layers.cluster_name(store.state) is not None:
        raise LifecycleError(f"already a member of cluster {layers.cluster_name(store.state)!r}")
    pending = Pending()
    _membership(pending, store, name, MAIN_GROUP, machine or {})
    me = Mode.machine(store.hostname)
    for command, value in _own_definitions(store).items():
        feature = store.catalogue[command]
        if feature.network or Level.CLUSTER not in feature.levels:
            continue
        _write_definition(pending, store, feature, Mode.cluster(), value)
        pending.write(store.state, Unit(command, me.key, MARKER), None)
    commit = store.commit(pending, user=user, comment=f"create cluster {name}")
    assert commit is not None
    return commit


def join_report(store: Store) -> list[Discarded]:
    """What joining a cluster will discard: every non-network setting of this machine."""
    if layers.cluster_name(store.state) is not None:
        raise LifecycleError(f"already a member of cluster {layers.cluster_name(store.state)!r}")
    found = []
    for command, value in _own_definitions(store).items():
        feature = store.catalogue[command]
        if feature.network:
            continue
        rows = tuple(value) if feature.is_table else None
        found.append(Discarded(command, feature.title, value, rows))
    return found


def save_standalone(store: Store, data_dir: Path) -> Path:
    """Keep a copy of this machine's own settings before a join replaces them."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = Path(data_dir) / f"standalone-{store.hostname}-{stamp}.json"
    n = 1
    while path.exists():  # never overwrite an earlier copy (two joins in one second)
        n += 1
        path = Path(data_dir) / f"standalone-{store.hostname}-{stamp}-{n}.json"
    document = {"machine": store.hostname, "saved_at": stamp, "settings": _own_definitions(store)}
    path.write_text(json.dumps(document, indent=1, sort_keys=True), encoding="utf-8")
    return path


def join(
    store: Store,
    cluster_state: Snapshot,
    *,
    group: str = MAIN_GROUP,
    user: str = SYSTEM_USER,
    machine: dict[str, Any] | None = None,
) -> Commit:
    """Take the cluster's state, keep this machine's network settings, become a member."""
    keep = {c: v for c, v in _own_definitions(store).items() if store.catalogue[c].network}
    store.replace_state(cluster_state)
    name = layers.cluster_name(store.state)
    if name is None:
        raise LifecycleError("the state received holds no cluster")
    if group not in layers.groups(store.state):
        raise LifecycleError(f"cluster {name!r} has no group {group!r}")
    pending = Pending()
    row = {"serial": store.origin, **(machine or {})}
    membership.admit(View(store.state, pending), store.catalogue, store.hostname, row, group)
    me = Mode.machine(store.hostname)
    for command, value in keep.items():
        _write_definition(pending, store, store.catalogue[command], me, value)
    commit = store.commit(pending, user=user, comment=f"{store.hostname} joins cluster {name}")
    assert commit is not None
    return commit


def flatten(
    store: Store,
    *,
    user: str = SYSTEM_USER,
    resolved: dict[str, layers.Resolved] | None = None,
) -> Commit | None:
    """Leave the cluster: inherited values become this machine's own settings.

    ``resolved`` is the effective configuration to keep, when it was taken before a
    change that already touched membership (a machine removing itself)."""
    if layers.cluster_name(store.state) is None:
        raise LifecycleError("not a member of a cluster")
    if resolved is None:
        resolved = layers.effective(store.state, store.catalogue, store.hostname)
    store.replace_state(Snapshot((), (), ()))
    pending = Pending()
    me = Mode.machine(store.hostname)
    for command, r in resolved.items():
        if r.mode is not None:
            _write_definition(pending, store, store.catalogue[command], me, r.value)
    return store.commit(pending, user=user, comment=f"{store.hostname} leaves the cluster")
