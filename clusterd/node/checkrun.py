"""One run of clustercheck's questions, for the shell and the web alike: every member's
digest, software, DNS facts and cross-node checks, the per-(feature, mode) summaries
where digests differ, the recorded losses, each member's walk of its commit chains, and
the facts (``clusterd.node.check`` compares what this gathers).

``api`` is what a front end holds of the node (``clusterd.node.api.ClusterAPI``, or a
worker's image of it): ``config``, ``status()``, ``members()``, ``link(serial)``,
``disconnected``, ``timeout``, ``node_checks(asked)``, ``chain_check()`` and
``ask(serial, kind, args, timeout)``; ``store`` its image of the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.edits import write_definition
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.core.versions import MARKER, CommitId, Loss, Unit
from clusterd.node import check, nodechecks
from clusterd.schema.feature import Feature

if TYPE_CHECKING:
    from clusterd.store.session import Session


@dataclass
class Report:
    me: str
    serials: dict[str, str]  # host -> serial
    digests: dict[str, str] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> why
    found: list[check.Inconsistency] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    # losses of a version whose value is the one in use: the same value, written twice
    # (two members rolling back one confirmed commit at once): shown, nothing to resolve
    twice: list[Loss] = field(default_factory=list)
    facts: list[check.Fact] = field(default_factory=list)
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> its walk

    @property
    def checked(self) -> list[str]:
        return sorted(h for h in self.digests if h not in self.unreachable)

    @property
    def clean(self) -> bool:
        return not (self.unreachable or self.found or self.losses or self.facts)


def when(at: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime(at))


def versions_json(versions: dict[str, Any]) -> dict[str, Any]:
    """Each member's version as the text shows it: with the time written out."""
    return {
        host: None if entry is None else {**entry, "time": when(entry["at"])}
        for host, entry in versions.items()
    }


def commit_facts(store: Any, cid: CommitId) -> dict[str, Any]:
    """What clustercheck says of one version: its commit, machine, and (while the log
    holds it) when and by whom -- the same facts for the text and for JSON."""
    origin = layers.hostnames(store.state).get(cid.origin, cid.origin)
    facts: dict[str, Any] = {"commit": str(cid), "machine": origin, "at": None,
                             "time": None, "user": None}  # fmt: skip
    try:
        commit = store.get_commit(cid)
    except ClusterdError:
        return facts
    return {**facts, "at": commit.at, "time": when(commit.at), "user": commit.user}


def to_json(report: Report, store: Any) -> dict[str, Any]:
    """The report as ``clustercheck --json`` prints it (and the web API answers)."""
    return {
        "checked": report.checked,
        "unreachable": report.unreachable,
        "software": dict(sorted(report.software.items())),
        "inconsistencies": [{"feature": x.feature, "mode": x.mode.key,
                             "mode_name": str(x.mode),
                             "versions": versions_json(x.versions), "choices": x.choices}
                            for x in report.found],
        "lost": [{"unit": str(x.unit), "feature": x.unit.feature,
                  "mode": str(Mode.from_key(x.unit.mode)),
                  "row": None if x.unit.key == MARKER else x.unit.key,
                  "lost": str(x.loser.commit), "to": str(x.by),
                  "overwritten": commit_facts(store, x.loser.commit),
                  "in_use": commit_facts(store, x.by), "same_value": same}
                 for losses, same in ((report.losses, False), (report.twice, True))
                 for x in losses],
        "facts": [f.to_json() for f in report.facts],
        "chains": report.chains,
    }  # fmt: skip


CHAIN_TIMEOUT = 120.0  # s: a member walks its whole log (about 10 s per 100,000 commits)


async def ask(
    api: Any, serial: str, kind: str, args: dict[str, Any], timeout: float | None = None
) -> Any:
    answered = await api.ask(serial, kind, args, timeout or api.timeout * 2)
    if not answered.ok:
        raise ClusterdError(str(answered.body))
    return answered.body


def why(api: Any, me: str, serial: str, error: str) -> str:
    """Why a member did not answer: what the links know, else the query's error.  A
    refused link comes first: the member tried to link (so it is not disconnected, even
    if this machine still holds its old DISCONNECT flag) and the refusal says why."""
    if api.disconnected:
        return f"{me} is disconnected from the cluster (clusterconfig reconnect, then check again)"
    endpoint, peer = api.members().get(serial), api.link(serial)
    if peer is not None and peer.state == "refused":
        reason = peer.reason or "no reason recorded"
        return reason if reason.startswith("refused by ") else f"its link was refused: {reason}"
    if (endpoint is not None and endpoint.disconnected) or (peer is not None and peer.admin_off):
        return "it is disconnected from the cluster (clusterconfig reconnect on it)"
    if peer is not None and peer.state != "up":
        return f"no link to it ({peer.state}{': ' + peer.reason if peer.reason else ''})"
    return error


async def gather(api: Any, store: Any, progress: Callable[[str], None]) -> Report:
    me = api.config.hostname
    serials = {e.hostname: e.serial for e in api.members().values()}
    serials.setdefault(me, api.config.serial)
    report = Report(me, serials)
    reverse: dict[str, dict[str, Any]] = {}
    witnessed: dict[str, list[dict[str, Any]]] = {}  # what each member's witnessing found
    held: dict[str, dict[str, Any]] = {}  # the cross-node checks, as each member holds them
    corrupt: dict[str, list[dict[str, Any]]] = {}  # entries each found corrupt (divergence)
    ours = nodechecks.declared(api.config)
    for host in sorted(serials):
        progress(f"Checking {host}...")
        if host == me:
            mine = await api.status()
            report.digests[me], report.software[me] = mine["digest"], mine["software"]
            reverse[me] = mine["reverse_dns"]
            corrupt[me] = mine.get("corruption", [])
            witnessed[me] = mine.get("witness", [])
            held[me] = await api.node_checks({})
            continue
        try:
            report.digests[host] = (await ask(api, serials[host], "digest", {}))["digest"]
            theirs = await ask(api, serials[host], "status", {})
            report.software[host] = theirs["software"]
            reverse[host] = theirs.get("reverse_dns", {})
            corrupt[host] = theirs.get("corruption", [])
            witnessed[host] = theirs.get("witness", [])
            held[host] = await ask(api, serials[host], "checks", ours)
        except ClusterdError as exc:
            report.digests.pop(host, None)
            report.unreachable[host] = why(api, me, serials[host], str(exc))
            peer = api.link(serials[host])
            if peer is not None:  # a version refusal says who runs what
                report.software.update(check.software_in(peer.reason))
    if len(set(report.digests.values())) > 1:
        summaries: dict[str, dict[str, dict[str, Any]]] = {}
        for host in report.digests:
            if host == me:
                summaries[me] = check.summary(store)
                continue
            progress(f"Comparing every feature at every mode with {host}...")
            try:
                summaries[host] = await ask(api, serials[host], "summary", {})
            except ClusterdError as exc:
                report.unreachable[host] = why(api, me, serials[host], str(exc))
        report.found = check.compare(summaries)
    for loss in store.inconsistencies():
        (report.twice if same_value(store, loss) else report.losses).append(loss)
    await _every_check_everywhere(api, me, held, serials, report.unreachable)
    report.chains = await _chains(api, me, serials, report)
    report.facts = check.facts(store.state, store.catalogue, me, report.software, reverse, held)
    report.facts += check.chain_facts(report.chains, layers.hostnames(store.state))
    report.facts += check.corruption_facts(corrupt)
    report.facts += check.witness_facts(witnessed)
    return report


async def _chains(api: Any, me: str, serials: dict[str, str], report: Report) -> dict[str, Any]:
    """Every member reachable walks its own log's chains (in a thread there), at once."""
    hosts = [h for h in sorted(serials) if h not in report.unreachable]

    async def one(host: str) -> Any:
        if host == me:
            return await api.chain_check()
        return await ask(api, serials[host], "chain", {}, max(CHAIN_TIMEOUT, api.timeout * 2))

    found: dict[str, Any] = {}
    answers = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
    for host, answer in zip(hosts, answers, strict=True):
        if isinstance(answer, ClusterdError):
            report.unreachable[host] = why(api, me, serials[host], str(answer))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            found[host] = answer
    return found


async def _every_check_everywhere(
    api: Any,
    me: str,
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
            if host == me:
                held[host] = await api.node_checks(wanted)
            else:
                held[host] = await ask(api, serials[host], "checks", wanted)
        except ClusterdError as exc:
            held.pop(host)
            unreachable[host] = why(api, me, serials[host], str(exc))


# -- forcing a version (an ordinary commit of it) ------------------------------------------


async def definition_of(api: Any, store: Any, report: Report, x: check.Inconsistency,
                        host: str) -> Any:  # fmt: skip
    """What ``host`` defines for ``x``'s feature at its mode (None: it does not), from
    this machine's store or asked of ``host`` (``ClusterdError`` says why not)."""
    feature = store.catalogue[x.feature]
    if not x.defines(host):
        return None
    if host == report.me:
        return definition(store.state.entries(feature.command, x.mode.key), feature.is_table)
    where = {"feature": feature.command, "mode": x.mode.key}
    try:
        return (await ask(api, report.serials[host], "definition", where))["value"]
    except ClusterdError as exc:
        reason = why(api, report.me, report.serials[host], str(exc))
        raise ClusterdError(f"{host}'s version could not be fetched ({reason})") from None


def version_writer(feature: Feature, mode: Mode, value: Any) -> Callable[[Session], None]:
    """What forcing ``value`` (None: undefined) for ``feature`` at ``mode`` writes."""

    def write(session: Session) -> None:
        if value is None:
            session.view.write(Unit(feature.command, mode.key, MARKER), None)
        else:
            write_definition(session.view.write, feature, mode, value)

    return write


def same_value(store: Any, loss: Loss) -> bool:
    """Whether the version in use holds the very value ``loss`` overwrote (another commit
    wrote it too, e.g. two members rolled back one confirmed commit at once, or two
    admins made the same change while apart): nothing was lost."""
    unit = loss.unit
    entries = store.state.entries(unit.feature, unit.mode)
    now = entries.marker if unit.key == MARKER else entries.rows.get(unit.key)
    if now is None or now.commit == loss.loser.commit:
        return False  # (a row hidden by a reset is its own loser)
    if unit.key != MARKER and entries.hides(now):
        return False
    return (now.value, now.with_reset) == (loss.loser.value, loss.loser.with_reset)


def loss_value(store: Any, loss: Loss, overwritten: bool) -> Any:
    """The value forcing a loss writes: the one in use, or the one it overwrote."""
    unit = loss.unit
    current = store.state.entries(unit.feature, unit.mode)
    version = current.marker if unit.key == MARKER else current.rows.get(unit.key)
    kept = version.value if version is not None else None
    return loss.loser.value if overwritten else kept
