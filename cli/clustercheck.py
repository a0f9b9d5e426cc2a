"""``clustercheck``: is every member's configuration the same, and if not, which wins.

Whole-state digests first; where they differ, per-(feature, mode) summaries; for each
inconsistency every member's version with when, by whom and on which machine, and the
choice "Force entire cluster to use X version." or "Ignore." -- forcing is an ordinary
commit of X's definition at that mode.  Then the facts members must agree on: the
software version, and references that resolve on every machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from cli.console import choose
from cli.shell import READ_ONLY_ROLES, Shell
from clusterd import check, layers, references
from clusterd.edits import write_definition
from clusterd.errors import ClusterdError
from clusterd.modes import Mode
from clusterd.session import Session
from clusterd.state import definition
from clusterd.versions import MARKER, CommitId, Loss, Unit


def _when(at: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime(at))


async def _ask(shell: Shell, serial: str, kind: str, args: dict[str, Any]) -> Any:
    answered = await shell.daemon.ask(serial, kind, args, shell.daemon.timeout * 2)
    if not answered.ok:
        raise ClusterdError(str(answered.body))
    return answered.body


async def clustercheck(shell: Shell, args: list[str]) -> int:
    d = shell.daemon
    if shell.cluster is None:
        raise ClusterdError("this machine is not in a cluster")
    as_json = "--json" in args or "-j" in args
    me = d.config.hostname
    mine = d.status()
    digests = {me: mine["digest"]}
    software = {me: mine["software"]}
    unreachable: dict[str, str] = {}
    peers = {e.hostname: e.serial for e in d.peers.values() if e.serial != d.config.serial}
    for host, serial in sorted(peers.items()):
        if not as_json:
            shell.write(f"Checking {host}...")
        try:
            digests[host] = (await _ask(shell, serial, "digest", {}))["digest"]
            software[host] = (await _ask(shell, serial, "status", {}))["software"]
        except ClusterdError as exc:
            unreachable[host] = str(exc)
    found: list[check.Inconsistency] = []
    if len(set(digests.values())) > 1:
        summaries = {me: check.summary(shell.store)}
        for host in digests:
            if host != me:
                summaries[host] = await _ask(shell, peers[host], "summary", {})
        found = check.compare(summaries)
    losses = shell.store.inconsistencies()
    facts = _facts(shell, software)
    if as_json:
        shell.write(json.dumps({
            "unreachable": unreachable,
            "inconsistencies": [{"feature": x.feature, "mode": x.mode.key,
                                 "versions": x.versions} for x in found],
            "lost": [{"unit": str(x.unit), "lost": str(x.loser.commit), "to": str(x.by)}
                     for x in losses],
            "facts": facts,
        }, indent=1))  # fmt: skip
        return 1 if found or losses or facts else 0
    for host, why in unreachable.items():
        shell.write(f"{host} could not be checked: {why}")
    for x in found:
        await _resolve(shell, x, peers)
    for loss in losses:
        await _resolve_loss(shell, loss)
    for fact in facts:
        shell.write(fact)
    if not found and not losses and not facts:
        shell.write("No inconsistencies found.")
    return 0


def _facts(shell: Shell, software: dict[str, str]) -> list[str]:
    facts = []
    if len(set(software.values())) > 1:
        runs = ", ".join(f"{h} runs {v}" for h, v in sorted(software.items()))
        facts.append(f"Software versions differ: {runs}.")
    view = shell.store.state
    for p in references.unresolved_everywhere(view, shell.store.catalogue, shell.hostname):
        facts.append(f"Reference problem: {p}")
    return facts


async def _resolve(shell: Shell, x: check.Inconsistency, peers: dict[str, str]) -> None:
    feature = shell.store.catalogue[x.feature]
    shell.write("Inconsistency found!")
    shell.write(f"{feature.title} at {x.mode}:")
    for host, entry in x.versions.items():
        if entry is None:
            shell.write(f"{host} does not define it")
        else:
            shell.write(f"{host} was updated {_when(entry['at'])} by '{entry['user']}' "
                        f"on {entry['origin']}")  # fmt: skip
    if feature.internal:
        shell.write("(membership: it converges by itself once the members are linked)")
        return
    pick = await _offer(shell, x.choices)
    if pick is None:
        return
    host = x.choices[pick]
    if host == shell.hostname:
        entries = shell.store.state.entries(feature.command, x.mode.key)
        value = definition(entries, feature.is_table)
    else:
        value = (await _ask(shell, peers[host], "definition",
                            {"feature": feature.command, "mode": x.mode.key}))["value"]  # fmt: skip

    def write(session: Session) -> None:
        if value is None:
            session.view.write(Unit(feature.command, x.mode.key, MARKER), None)
        else:
            write_definition(session.view.write, feature, x.mode, value)

    _force(shell, host, f"{feature.command} at {x.mode}", write)


async def _offer(shell: Shell, hosts: list[str]) -> int | None:
    """Offer "Force entire cluster to use X version." per host, or "Ignore.": the index
    of the host chosen, or None."""
    if shell.role in READ_ONLY_ROLES:
        return None
    options = [f"Force entire cluster to use {h} version." for h in hosts] + ["Ignore."]
    pick = await choose(shell.console, "How do you want to resolve this inconsistency?",
                        options, 1)  # fmt: skip
    return pick - 1 if pick <= len(hosts) else None


def _force(shell: Shell, host: str, what: str, write: Callable[[Session], None]) -> None:
    """Forcing a version is an ordinary commit (of its own, not the shell's pending)."""
    session = Session(shell.store, shell.user)
    write(session)
    made = session.commit(f"clustercheck: {host} version of {what}", on_conflict="keep")
    shell.daemon.committed(made)
    shell.write(f"The whole cluster now uses the {host} version.")


def _updated(shell: Shell, cid: CommitId) -> str:
    origin = layers.hostnames(shell.store.state).get(cid.origin, cid.origin)
    try:
        commit = shell.store.get_commit(cid)
    except ClusterdError:
        return f"{origin} version (commit {cid}, details truncated from the log)"
    return f"{origin} version was updated {_when(commit.at)} by '{commit.user}' on {origin}"


async def _resolve_loss(shell: Shell, loss: Loss) -> None:
    """A change overwritten by someone who had not seen it (e.g. while disconnected)."""
    unit = loss.unit
    feature = shell.store.catalogue[unit.feature]
    row = "" if unit.key == MARKER else f", row {unit.key!r}"
    shell.write("Inconsistency found!")
    shell.write(f"{feature.title} at {Mode.from_key(unit.mode)}{row}:")
    shell.write(f"{_updated(shell, loss.by)} (in use)")
    shell.write(f"{_updated(shell, loss.loser.commit)} (overwritten: made without seeing "
                "the other)")  # fmt: skip
    hosts = layers.hostnames(shell.store.state)
    names = [hosts.get(c.origin, c.origin) for c in (loss.by, loss.loser.commit)]
    pick = await _offer(shell, names)
    if pick is None:
        return
    current = shell.store.state.entries(unit.feature, unit.mode)
    version = current.marker if unit.key == MARKER else current.rows.get(unit.key)
    kept = version.value if version is not None else None
    value = kept if pick == 0 else loss.loser.value
    _force(shell, names[pick], str(unit), lambda session: session.view.write(unit, value))
