"""Building small clustered stores for tests."""

from __future__ import annotations

from pathlib import Path

from clusterd.core import layers, membership
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending, View
from clusterd.schema.catalogue import CATALOGUE
from clusterd.store.session import Session
from clusterd.store.store import Store
from clusterd.trust import lifecycle

ME = "newyork.example.com"
CLUSTER = Mode.cluster().key


def standalone(tmp: Path, name: str = ME, origin: str = "SER-NY") -> Store:
    return Store(tmp / f"{name}.db", origin=origin, hostname=name)


def add_members(store: Store, members: dict[str, str]) -> None:
    """Add groups and machines to the store's cluster (as the join issue will)."""
    pending = Pending()
    view = View(store.state, pending)
    for group in sorted(set(members.values())):
        if group not in layers.groups(view):
            membership.add_group(view, CATALOGUE, group)
    for i, (name, group) in enumerate(members.items()):
        membership.admit(view, CATALOGUE, name, {"serial": f"SER-{i}"}, group)
    store.commit(pending, user="admin", comment="members")


def americas(tmp: Path) -> Store:
    """newyork created cluster ``americas``; losangeles in group West, chicago in Main_Group."""
    store = standalone(tmp)
    lifecycle.create_cluster(store, "americas")
    add_members(
        store,
        {"losangeles.example.com": "West", "chicago.example.com": "Main_Group"},
    )
    return store


def session(store: Store, user: str = "admin") -> Session:
    return Session(store, user)
