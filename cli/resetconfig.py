"""``resetconfig``: a standalone machine back to its factory configuration.

Every feature this machine defines goes back to the factory defaults in one commit,
except what keeps it reachable and administrable over SSH: its network settings
(interfaces, host name, gateway, routes) and its users and SSH settings.  The
reference resets those too, at the console; over SSH that would cut the very session
that asked.  A member of a cluster is refused: its settings are the cluster's, and
are changed at cluster, group or machine mode, or it leaves the cluster first.
"""

from __future__ import annotations

import time

from clusterd.cli.console import confirm
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode

KEPT = ("userconfig", "sshconfig")  # (network features are kept by their ``network`` flag)
USAGE = "resetconfig [--yes]   (a standalone machine; --yes: a one-command call, no question)"


async def resetconfig(shell: Shell, args: list[str]) -> int:
    if args not in ([], ["--yes"]):
        raise Usage(USAGE)
    if shell.role != "admin":
        raise ClusterdError(f"{shell.user} is {shell.role}: only an admin may reset the machine")
    if shell.cluster is not None:
        raise ClusterdError(
            f"this machine is in cluster {shell.cluster}: its settings are the cluster's. "
            "Remove it from the cluster first (clusterconfig removemachine), or change the "
            "settings at the mode that defines them (explain FEATURE)"
        )
    if shell.session.pending:
        raise ClusterdError("this shell has pending changes: commit or clear them first")
    mode, view = Mode.machine(shell.hostname), shell.store.state
    reset = [
        f
        for f in shell.store.catalogue
        if not (f.internal or f.network or f.command in KEPT) and layers.is_defined(view, f, mode)
    ]
    if not reset:
        shell.write("Every setting is at its factory default already: nothing to reset.")
        return 0
    shell.write("These settings go back to the factory defaults:")
    for feature in reset:
        shell.write(f"  {feature.command} ({feature.title})")
    shell.write("Kept: network settings, users and SSH settings.")
    if args != ["--yes"]:
        question = "Are you sure you want to reset all configuration values?"
        if not await confirm(shell.console, question, False):
            hint = "" if shell.console.interactive else ": with --yes it asks nothing"
            shell.write(f"Nothing was reset{hint}.")
            return 1
    shell.require_write("reset the machine")  # (the role as it is after the question)
    if shell.role != "admin":
        raise ClusterdError(f"{shell.user} is {shell.role}: only an admin may reset the machine")
    session = shell.api.session(shell.user)  # one commit of its own
    for feature in reset:
        session.undefine(feature.command, mode)
    await shell.commit(session, "resetconfig")
    when = time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime())
    shell.write(f"Factory configuration restored ({len(reset)} feature(s)): {when}")
    return 0
