"""Membership as the mesh needs it, read from the replicated ``machines`` feature.

Membership is ordinary cluster state (features ``cluster``, ``groups``, ``machines``):
it replicates like any setting, so every member learns of a new machine, a changed
address or key, or a DISCONNECT flag through the same commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clusterd.core import layers
from clusterd.core.state import State
from clusterd.mesh.peers import Action, Flag, Machine

if TYPE_CHECKING:
    from clusterd.mesh.protocol import Node

MEMBERSHIP = frozenset({"cluster", "groups", "machines", "placement", "detached", "removed"})
# What a commit may touch to change which machine this is or the chain of its modes
# (a rename arrives as a new sethostname).
WHO_WE_ARE = MEMBERSHIP | {"sethostname"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach a member, and the keys that prove who it is."""

    hostname: str
    serial: str
    group: str
    address: str | None  # None: reached by its host name, resolved when dialled
    port: int
    transport: str  # "ssh" (admin port) or "ccs"
    host_key: str | None
    machine_key: str | None
    disconnected: bool

    @property
    def member(self) -> Machine:
        return Machine(self.serial, self.hostname, self.disconnected)


def endpoints(state: State) -> dict[str, Endpoint]:
    """Every machine of the cluster by serial (empty for a standalone machine)."""
    found = {}
    for hostname, row in sorted(layers.machines(state).items()):
        ccs = row.get("transport") == "ccs"
        found[row["serial"]] = Endpoint(
            hostname=hostname,
            serial=row["serial"],
            group=row["group"],
            address=row.get("address"),
            port=int(row["ccs_port"] if ccs else row.get("ssh_port", 22)),
            transport="ccs" if ccs else "ssh",
            host_key=row.get("host_key"),
            machine_key=row.get("machine_key"),
            disconnected=bool(row.get("disconnected", False)),
        )
    return found


def members_of(state: State) -> list[Machine]:
    """Every machine of the cluster as the links know it, in host-name order."""
    return [
        Machine(str(row["serial"]), hostname, bool(row.get("disconnected", False)))
        for hostname, row in sorted(layers.machines(state).items())
    ]


def follow(node: Node, state: State, hostname: str, now: float) -> list[Action]:
    """What a member's links do once membership may have changed (a commit, a state
    transfer): they follow the machines of ``state``, and the member obeys its own
    DISCONNECT flag.  The daemon (``node.follower``) and the simulation (``tests/sim.py``)
    both call this."""
    actions = node.set_members(members_of(state), now)
    step = own_flag_step(state, hostname, node.disconnected)
    if step is not None:
        actions += (node.disconnect if step == "disconnect" else node.reconnect)(now)
    return actions


def key_text(openssh_public_key: str) -> str:
    """A public key without its comment: ``ssh-ed25519 AAAA...``."""
    return " ".join(openssh_public_key.split()[:2])


def flag_of(state: State, hostname: str) -> Flag | None:
    """The winning write of ``hostname``'s DISCONNECT flag (what hellos carry)."""
    version = state.entries("detached", layers.CLUSTER).rows.get(hostname)
    if version is None or version.value is None:
        return None
    return Flag(version.hlc, version.origin, bool(version.value.get("disconnected", False)))


def own_flag_step(state: State, hostname: str, node_disconnected: bool) -> str | None:
    """What this machine does when its DISCONNECT flag differs from its links:
    ``"disconnect"`` or ``"reconnect"``.  The flag is a unit of its own (``detached``),
    written by DISCONNECT or RECONNECT of this machine wherever they ran, so the newest
    write is always the one to obey (``docs/membership.md``)."""
    row = layers.machines(state).get(hostname)
    if row is None:
        return None
    flag = bool(row["disconnected"])
    if flag == node_disconnected:
        return None
    return "disconnect" if flag else "reconnect"
