"""``upgrade``: where the reference's upgrade routine stands, from this machine.

The routine (``docs/upgrade.md``): DISCONNECT every machine; upgrade each (install the
new version, restart it); once every machine runs the new version, RECONNECT them all.
Members of different versions never link.  This command installs nothing: it shows the
version of each member as far as this machine knows it (a live link means the same
version; a refused link names the other's), and says the next step.
"""

from __future__ import annotations

from typing import Any

from clusterd.cli.shell import Shell
from clusterd.node.check import software_in

ROUTINE = (
    "The upgrade routine: 1. disconnect every machine (clusterconfig disconnect MACHINE, "
    "from any member); 2. upgrade each and restart it; 3. once every machine runs the new "
    "version, reconnect them (clusterconfig reconnect on each, or MACHINE from one)."
)


def _version(p: dict[str, Any], mine: str) -> str | None:
    if p["state"] == "up":
        return mine
    return software_in(p["reason"]).get(p["hostname"])


async def upgrade(shell: Shell, args: list[str]) -> int:
    api = shell.api
    mine = api.config.software
    peers = api.peer_status()
    shell.write(ROUTINE)
    here = "disconnected" if api.disconnected else "connected"
    shell.write(f"This machine: {shell.hostname}, clusterd {mine}, {here}.")
    versions: dict[str, str | None] = {}
    for p in peers:
        versions[p["hostname"]] = v = _version(p, mine)
        state = "disconnected" if p["admin_off"] else p["state"]
        said = f"runs {v}" if v else "its version is unknown here (no link)"
        shell.write(f"  {p['hostname']}: {said} ({state})")
    shell.write(_next(shell, peers, versions, mine))
    return 0


def _next(shell: Shell, peers: list[dict[str, Any]], versions: dict[str, str | None],
          mine: str) -> str:  # fmt: skip
    older = sorted(h for h, v in versions.items() if v is not None and v != mine)
    if older:
        return (f"Next: upgrade {', '.join(older)} to {mine} (machines of different versions "
                "do not link), then reconnect them.")  # fmt: skip
    if shell.api.disconnected:
        return (f"Next: reconnect this machine (clusterconfig reconnect) once every machine "
                f"runs {mine}; until then it keeps its own changes to itself.")  # fmt: skip
    connected = sorted(p["hostname"] for p in peers if not p["admin_off"])
    if connected:
        return (
            "Next, to upgrade: disconnect every machine first ("
            + ", ".join(f"clusterconfig disconnect {h}" for h in connected)
            + f", and this one); members here run clusterd {mine}."
        )
    return (
        "Every other member is disconnected: upgrade them, then reconnect each "
        "(clusterconfig reconnect MACHINE)."
    )
