"""``clustercheck``: is every member's configuration the same, and if not, which wins.

Whole-state digests first; where they differ, per-(feature, mode) summaries; for each
inconsistency every member's version with when, by whom and on which machine, and the
choice "Force entire cluster to use X version." or "Ignore." -- forcing is an ordinary
commit of X's definition at that mode.  Then the facts members must agree on: the
software version, the interfaces listeners use, and references that resolve on every
machine.

Exit status: 0 when every member was checked and nothing is left inconsistent; 1 when
a member could not be checked, or an inconsistency or a fact remains (ignored, or
reported without asking: ``--json`` and one-shot ``ssh host clustercheck`` never
force anything); 2 for bad arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from clusterd.cli.console import choose
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.versions import MARKER, CommitId, Loss
from clusterd.node import check, checkrun
from clusterd.store.session import Session
from clusterd.trust.logins import READ_ONLY_ROLES

USAGE = "clustercheck [--json | -j]"
JSON_FLAGS = ("--json", "-j")


async def _ask(shell: Shell, serial: str, kind: str, args: dict[str, Any]) -> Any:
    return await checkrun.ask(shell.api, serial, kind, args)


def _why(shell: Shell, serial: str, error: str) -> str:
    return checkrun.why(shell.api, shell.hostname, serial, error)


async def clustercheck(shell: Shell, args: list[str]) -> int:
    api = shell.api
    if shell.cluster is None:
        raise ClusterdError("this machine is not in a cluster")
    if any(a not in JSON_FLAGS for a in args):
        raise Usage(USAGE)
    as_json = any(a in JSON_FLAGS for a in args)

    def progress(text: str) -> None:
        if not as_json:  # the JSON document is the whole output
            shell.write(text)

    report = await checkrun.gather(api, shell.store, progress)
    unreachable = report.unreachable
    found, losses, facts = report.found, report.losses, report.facts
    if as_json:
        shell.write(json.dumps(checkrun.to_json(report, shell.store), indent=1))
        return 1 if unreachable or found or losses or facts else 0
    for host, why in unreachable.items():
        shell.write(f"{host} could not be checked: {why}")
    left = 0  # inconsistencies not resolved here
    for x in found:
        left += not await _resolve(shell, x, report)
    for loss in losses:
        left += not await _resolve_loss(shell, loss)
    for loss in report.twice:
        _written_twice(shell, loss)
    for fact in facts:
        shell.write(fact.message)
    if unreachable:
        names = ", ".join(unreachable)
        shell.write(f"Not every member was checked ({names}): run clustercheck again "
                    "once they are reachable.")  # fmt: skip
    elif not found and not losses and not facts:
        shell.write("No inconsistencies found.")
        if report.twice:
            shell.write("(The same value written twice is no inconsistency.)")
    return 1 if unreachable or left or facts else 0


def _version_line(host: str, entry: dict[str, Any] | None) -> str:
    if entry is None:
        return f"{host} does not define it"
    when = f"{checkrun.when(entry['at'])} by '{entry['user']}' on {entry['origin']}"
    if not entry["defined"]:
        return f"{host} does not define it (undefined {when})"
    return f"{host} was updated {when}"


async def _resolve(shell: Shell, x: check.Inconsistency, report: checkrun.Report) -> bool:
    """Show one (feature, mode) inconsistency and offer to force a version: True when
    one was forced."""
    feature = shell.store.catalogue[x.feature]
    shell.write("Inconsistency found!")
    shell.write(f"{feature.title} at {x.mode}:")
    for host, entry in x.versions.items():
        shell.write(_version_line(host, entry))
    if feature.internal:
        shell.write("(membership: it converges by itself once the members are linked)")
        return False
    pick = await _offer(shell, x.choices)
    if pick is None:
        return False
    host = x.choices[pick]
    try:
        value = await checkrun.definition_of(shell.api, shell.store, report, x, host)
    except ClusterdError as exc:
        shell.write(f"Nothing forced: {exc}.")
        return False
    write = checkrun.version_writer(feature, x.mode, value)
    await _force(shell, host, f"{feature.command} at {x.mode}", write)
    return True


async def _offer(shell: Shell, hosts: list[str]) -> int | None:
    """Offer "Force entire cluster to use X version." per host, or "Ignore.": the index
    of the host chosen, or None.  Nothing is offered to a read-only user or in a
    one-shot command (its default would force a version nobody chose)."""
    if shell.role in READ_ONLY_ROLES:
        return None
    if not shell.console.interactive:
        shell.write("(run clustercheck in an interactive shell to force a version)")
        return None
    options = [f"Force entire cluster to use {h} version." for h in hosts] + ["Ignore."]
    pick = await choose(shell.console, "How do you want to resolve this inconsistency?",
                        options, 1)  # fmt: skip
    return pick - 1 if pick <= len(hosts) else None


async def _force(shell: Shell, host: str, what: str, write: Callable[[Session], None]) -> None:
    """Forcing a version is an ordinary commit (of its own, not the shell's pending)."""
    session = shell.api.session(shell.user)
    write(session)
    await shell.commit(session, f"clustercheck: {host} version of {what}")
    shell.write(f"The whole cluster now uses the {host} version.")


def _updated(shell: Shell, cid: CommitId) -> str:
    f = checkrun.commit_facts(shell.store, cid)
    if f["user"] is None:
        return f"{f['machine']} version (commit {cid}, details truncated from the log)"
    return f"{f['machine']} version was updated {f['time']} by '{f['user']}' on {f['machine']}"


def _show_loss(shell: Shell, loss: Loss, heading: str, loser: str) -> None:
    """A recorded loss: the unit, the version in use, and the one it overwrote."""
    unit = loss.unit
    feature = shell.store.catalogue[unit.feature]
    row = "" if unit.key == MARKER else f", row {unit.key!r}"
    shell.write(heading)
    shell.write(f"{feature.title} at {Mode.from_key(unit.mode)}{row}:")
    shell.write(f"{_updated(shell, loss.by)} (in use)")
    shell.write(f"{_updated(shell, loss.loser.commit)} ({loser})")


def _written_twice(shell: Shell, loss: Loss) -> None:
    """A loss of the very value in use: said, nothing to resolve."""
    _show_loss(shell, loss, "The same value, written twice (nothing lost):",
               "the same value, written without seeing the other")  # fmt: skip


async def _resolve_loss(shell: Shell, loss: Loss) -> bool:
    """A change overwritten by someone who had not seen it (e.g. while disconnected):
    True when a version was forced."""
    unit = loss.unit
    _show_loss(shell, loss, "Inconsistency found!",
               "overwritten: made without seeing the other")  # fmt: skip
    hosts = layers.hostnames(shell.store.state)
    names = [hosts.get(c.origin, c.origin) for c in (loss.by, loss.loser.commit)]
    pick = await _offer(shell, names)
    if pick is None:
        return False
    value = checkrun.loss_value(shell.store, loss, overwritten=pick == 1)
    await _force(shell, names[pick], str(unit), lambda session: session.view.write(unit, value))
    return True
