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
import time
from collections.abc import Callable
from typing import Any

from clusterd.cli.console import choose
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.edits import write_definition
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.core.versions import MARKER, CommitId, Loss, Unit
from clusterd.node import check, nodechecks
from clusterd.store.session import Session
from clusterd.trust.logins import READ_ONLY_ROLES

USAGE = "clustercheck [--json | -j]"
JSON_FLAGS = ("--json", "-j")


def _when(at: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime(at))


async def _ask(shell: Shell, serial: str, kind: str, args: dict[str, Any]) -> Any:
    answered = await shell.api.ask(serial, kind, args, shell.api.timeout * 2)
    if not answered.ok:
        raise ClusterdError(str(answered.body))
    return answered.body


def _why(shell: Shell, serial: str, error: str) -> str:
    """Why a member did not answer: what the links know, else the query's error."""
    api = shell.api
    if api.disconnected:
        return (
            f"{shell.hostname} is disconnected from the cluster "
            "(clusterconfig reconnect, then check again)"
        )
    endpoint, peer = api.members().get(serial), api.link(serial)
    if (endpoint is not None and endpoint.disconnected) or (peer is not None and peer.admin_off):
        return "it is disconnected from the cluster (clusterconfig reconnect on it)"
    if peer is not None and peer.state != "up":
        return f"no link to it ({peer.state}{': ' + peer.reason if peer.reason else ''})"
    return error


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

    me = api.config.hostname
    serials = {e.hostname: e.serial for e in api.members().values()}
    serials.setdefault(me, api.config.serial)
    digests: dict[str, str] = {}
    software: dict[str, str] = {}
    reverse: dict[str, dict[str, Any]] = {}
    held: dict[str, dict[str, Any]] = {}  # the cross-node checks, as each member holds them
    ours = nodechecks.declared(api.config)
    unreachable: dict[str, str] = {}
    for host in sorted(serials):
        progress(f"Checking {host}...")
        if host == me:
            mine = api.status()
            digests[me], software[me] = mine["digest"], mine["software"]
            reverse[me] = mine["reverse_dns"]
            held[me] = await api.node_checks({})
            continue
        try:
            digests[host] = (await _ask(shell, serials[host], "digest", {}))["digest"]
            theirs = await _ask(shell, serials[host], "status", {})
            software[host], reverse[host] = theirs["software"], theirs.get("reverse_dns", {})
            held[host] = await _ask(shell, serials[host], "checks", ours)
        except ClusterdError as exc:
            digests.pop(host, None)
            unreachable[host] = _why(shell, serials[host], str(exc))
            peer = api.link(serials[host])
            if peer is not None:  # a version refusal says who runs what
                software.update(check.software_in(peer.reason))
    found: list[check.Inconsistency] = []
    if len(set(digests.values())) > 1:
        summaries: dict[str, dict[str, dict[str, Any]]] = {}
        for host in digests:
            if host == me:
                summaries[me] = check.summary(shell.store)
                continue
            progress(f"Comparing every feature at every mode with {host}...")
            try:
                summaries[host] = await _ask(shell, serials[host], "summary", {})
            except ClusterdError as exc:
                unreachable[host] = _why(shell, serials[host], str(exc))
        found = check.compare(summaries)
    losses = shell.store.inconsistencies()
    await _every_check_everywhere(shell, held, serials, unreachable)
    facts = check.facts(shell.store.state, shell.store.catalogue, me, software, reverse, held)
    if as_json:
        shell.write(json.dumps({
            "checked": sorted(h for h in digests if h not in unreachable),
            "unreachable": unreachable,
            "software": dict(sorted(software.items())),
            "inconsistencies": [{"feature": x.feature, "mode": x.mode.key,
                                 "mode_name": str(x.mode),
                                 "versions": _versions_json(x.versions), "choices": x.choices}
                                for x in found],
            "lost": [{"unit": str(x.unit), "feature": x.unit.feature,
                      "mode": str(Mode.from_key(x.unit.mode)),
                      "row": None if x.unit.key == MARKER else x.unit.key,
                      "lost": str(x.loser.commit), "to": str(x.by),
                      "overwritten": _commit_facts(shell, x.loser.commit),
                      "in_use": _commit_facts(shell, x.by)}
                     for x in losses],
            "facts": [f.to_json() for f in facts],
        }, indent=1))  # fmt: skip
        return 1 if unreachable or found or losses or facts else 0
    for host, why in unreachable.items():
        shell.write(f"{host} could not be checked: {why}")
    left = 0  # inconsistencies not resolved here
    for x in found:
        left += not await _resolve(shell, x, serials)
    for loss in losses:
        left += not await _resolve_loss(shell, loss)
    for fact in facts:
        shell.write(fact.message)
    if unreachable:
        names = ", ".join(unreachable)
        shell.write(f"Not every member was checked ({names}): run clustercheck again "
                    "once they are reachable.")  # fmt: skip
    elif not found and not losses and not facts:
        shell.write("No inconsistencies found.")
    return 1 if unreachable or left or facts else 0


async def _every_check_everywhere(
    shell: Shell,
    held: dict[str, dict[str, Any]],
    serials: dict[str, str],
    unreachable: dict[str, str],
) -> None:
    """A check declared on one member only reached the members asked after it: ask the
    others again, with every check, so that each is compared on every member."""
    wanted = {k: sorted({n for a in held.values() for n in a.get(k, {})})
              for k in nodechecks.KINDS}  # fmt: skip
    for host, answer in list(held.items()):
        if all(set(wanted[k]) <= set(answer.get(k, {})) for k in nodechecks.KINDS):
            continue
        try:
            if host == shell.hostname:
                held[host] = await shell.api.node_checks(wanted)
            else:
                held[host] = await _ask(shell, serials[host], "checks", wanted)
        except ClusterdError as exc:
            held.pop(host)
            unreachable[host] = _why(shell, serials[host], str(exc))


def _versions_json(versions: dict[str, Any]) -> dict[str, Any]:
    """Each member's version as the text shows it: with the time written out."""
    return {
        host: None if entry is None else {**entry, "time": _when(entry["at"])}
        for host, entry in versions.items()
    }


def _version_line(host: str, entry: dict[str, Any] | None) -> str:
    if entry is None:
        return f"{host} does not define it"
    when = f"{_when(entry['at'])} by '{entry['user']}' on {entry['origin']}"
    if not entry["defined"]:
        return f"{host} does not define it (undefined {when})"
    return f"{host} was updated {when}"


async def _resolve(shell: Shell, x: check.Inconsistency, serials: dict[str, str]) -> bool:
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
    if not x.defines(host):
        value = None
    elif host == shell.hostname:
        entries = shell.store.state.entries(feature.command, x.mode.key)
        value = definition(entries, feature.is_table)
    else:
        try:
            where = {"feature": feature.command, "mode": x.mode.key}
            value = (await _ask(shell, serials[host], "definition", where))["value"]
        except ClusterdError as exc:
            shell.write(f"Nothing forced: {host}'s version could not be fetched "
                        f"({_why(shell, serials[host], str(exc))}).")  # fmt: skip
            return False

    def write(session: Session) -> None:
        if value is None:
            session.view.write(Unit(feature.command, x.mode.key, MARKER), None)
        else:
            write_definition(session.view.write, feature, x.mode, value)

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


def _commit_facts(shell: Shell, cid: CommitId) -> dict[str, Any]:
    """What clustercheck says of one version: its commit, machine, and (while the log
    holds it) when and by whom -- the same facts for the text and for ``--json``."""
    origin = layers.hostnames(shell.store.state).get(cid.origin, cid.origin)
    facts: dict[str, Any] = {"commit": str(cid), "machine": origin, "at": None,
                             "time": None, "user": None}  # fmt: skip
    try:
        commit = shell.store.get_commit(cid)
    except ClusterdError:
        return facts
    return {**facts, "at": commit.at, "time": _when(commit.at), "user": commit.user}


def _updated(shell: Shell, cid: CommitId) -> str:
    f = _commit_facts(shell, cid)
    if f["user"] is None:
        return f"{f['machine']} version (commit {cid}, details truncated from the log)"
    return f"{f['machine']} version was updated {f['time']} by '{f['user']}' on {f['machine']}"


async def _resolve_loss(shell: Shell, loss: Loss) -> bool:
    """A change overwritten by someone who had not seen it (e.g. while disconnected):
    True when a version was forced."""
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
        return False
    current = shell.store.state.entries(unit.feature, unit.mode)
    version = current.marker if unit.key == MARKER else current.rows.get(unit.key)
    kept = version.value if version is not None else None
    value = kept if pick == 0 else loss.loser.value
    await _force(shell, names[pick], str(unit), lambda session: session.view.write(unit, value))
    return True
