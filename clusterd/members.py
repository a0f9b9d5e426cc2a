"""Membership as the mesh needs it, read from the replicated ``machines`` feature.

Membership is ordinary cluster state (features ``cluster``, ``groups``, ``machines``):
it replicates like any setting, so every member learns of a new machine, a changed
address or key, or a DISCONNECT flag through the same commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterd import layers
from clusterd.peers import Member
from clusterd.state import State

MEMBERSHIP = frozenset({"cluster", "groups", "machines"})


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
    def member(self) -> Member:
        return Member(self.serial, self.hostname, self.disconnected)


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


def key_text(openssh_public_key: str) -> str:
    """A public key without its comment: ``ssh-ed25519 AAAA...``."""
    return " ".join(openssh_public_key.split()[:2])


def own_flag_step(
    state: State, hostname: str, serial: str, node_disconnected: bool, *, starting: bool
) -> str | None:
    """What this machine does when its own row's DISCONNECT flag differs from its links.

    Only a machine flips its own flag (DISCONNECT and RECONNECT act where they run), so a
    row whose winning write came from this machine is obeyed: ``"disconnect"`` or
    ``"reconnect"``.  A row another member wrote (SETGROUP, SETNAME while this machine
    was away) carries that member's possibly stale copy of the flag: ``"repair"`` means
    re-commit the row with the flag this machine really has.  A machine starting up has no
    other record than its row and obeys it whoever wrote it (``starting``).
    """
    row = state.entries("machines", layers.CLUSTER).visible_row(hostname)
    if row is None or row.value is None:
        return None
    flag = bool(row.value.get("disconnected", False))
    if flag == node_disconnected:
        return None
    if starting or row.origin == serial:
        return "disconnect" if flag else "reconnect"
    return "repair"
