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
