"""Membership operations as random actions of the simulation, and their invariants.

Every operation of ``clusterconfig`` that changes membership is drawn here:
ADDGROUP, RENAMEGROUP, DELETEGROUP, SETGROUP, REMOVEMACHINE, and DISCONNECT and
RECONNECT of any machine.  Each is made by a random member on its own view, through the
same writes the daemon makes (``clusterd.core.membership``), while partitions, crashes and
lost frames happen.  The invariants (``problems``), checked on every seed once the
network has healed:

* every member lists the same machines in the same existing groups;
* no machine is in a group that does not exist;
* every membership change is applied everywhere or recorded as lost (the general
  "nothing silently lost" check of ``tests.sim`` covers it: membership units are units).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable
from typing import Any

from clusterd.core import layers, membership
from clusterd.core.errors import LifecycleError
from clusterd.core.state import State
from clusterd.schema.catalogue import CATALOGUE

NAMES = ["G1", "G2", "G3", "West", "East", "Lab"]
Change = Callable[[Any], None]  # applied to an Editor (its view)


def random_change(rng: random.Random, state: State, me: str, removals_left: int) -> Change | None:
    """One membership operation a member ``me`` could make on what it sees, or None."""
    machines = sorted(layers.machines(state))
    groups = layers.groups(state)
    if not machines or not groups:
        return None
    dice = rng.random()
    target = rng.choice(machines)
    if dice < 0.25:  # DISCONNECT / RECONNECT, of itself or of another machine
        host = me if rng.random() < 0.5 else target
        flag = not layers.machines(state).get(host, {}).get("disconnected", False)
        return lambda ed: membership.set_flag(ed.view, CATALOGUE, host, flag)
    if dice < 0.5:
        group = rng.choice(groups)
        return lambda ed: membership.set_group(ed.view, CATALOGUE, target, group)
    if dice < 0.62:
        name = rng.choice(NAMES)
        return lambda ed: membership.add_group(ed.view, CATALOGUE, name)
    if dice < 0.77:
        old, new = rng.choice(groups), rng.choice(NAMES)
        return lambda ed: membership.rename_group(ed.view, CATALOGUE, old, new)
    if dice < 0.92 and len(groups) > 1:
        gone = rng.choice(groups)
        to = rng.choice([g for g in groups if g != gone])
        return lambda ed: membership.delete_group(ed.view, CATALOGUE, gone, to)
    if removals_left > 0 and target != me and len(machines) > 3:
        return lambda ed: membership.remove(ed.view, CATALOGUE, target, by="admin", at=0.0)
    return None


def attempt(change: Change) -> Change:
    """The change as a member runs it: refused (an error to its admin), nothing written."""

    def run(ed: Any) -> None:
        with contextlib.suppress(LifecycleError):
            change(ed)

    return run


def removed(states: Iterable[State]) -> set[str]:
    """Every machine any member has recorded as removed."""
    found: set[str] = set()
    for state in states:
        found |= {h for h, v in state.entries("removed", layers.CLUSTER).rows.items() if v.value}
    return found


def problems(states: dict[str, State]) -> list[str]:
    """The membership invariants over the surviving members' states."""
    found = []
    views = {}
    for serial, state in states.items():
        listed = layers.machines(state)
        groups = set(layers.groups(state))
        views[serial] = {host: row["group"] for host, row in listed.items()}
        for host, row in listed.items():
            if row["group"] is None or row["group"] not in groups:
                found.append(f"{serial}: {host} is in group {row['group']!r}, which does not exist")
    if len({tuple(sorted(v.items())) for v in views.values()}) > 1:
        found.append(f"members list different machines or groups: {views}")
    return found
