"""clustercheck's facts: what each member holds for every (feature, mode), in digests.

Every member answers ``summary`` (a digest per defined feature and mode, with who last
changed it, when and on which machine); the asking member compares them and, only
where digests differ, asks for the definition itself (``definition``) to force one
version on the whole cluster as an ordinary new commit.  Membership features are
compared like the rest but never forced from here (cluster operations own them).

The facts members must agree on besides their settings (``facts``): the software
version each runs, the interfaces listeners bind to, and every other cross-feature
reference, each resolved on every machine's effective configuration.  And the commit
log's chains (``chain_facts``): each member walks its own log and names the first
broken link of each origin's chain (``docs/history.md``, section 1).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from clusterd.core import layers, references
from clusterd.core.clock import newer, wall_ms
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.state import ModeEntries, State, definition
from clusterd.schema.feature import Catalogue
from clusterd.store.store import Store


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def last_change(
    store: Store, entries: ModeEntries, state: State | None = None
) -> dict[str, Any] | None:
    """Who last changed a (feature, mode) -- its newest version, deletions included --
    when, in which commit, on which machine; None if it was never written.  ``state``:
    the one ``entries`` are of (None: the store's)."""
    versions = [v for v in [entries.marker, *entries.rows.values()] if v is not None]
    if not versions:
        return None
    newest = max(versions, key=lambda v: (v.hlc, v.origin))
    origin = layers.hostnames(state or store.state).get(newest.origin, newest.origin)
    change = {"commit": str(newest.commit), "origin": origin}
    try:
        commit = store.get_commit(newest.commit)
    except ClusterdError:  # the log was truncated: the clock says when
        return {**change, "user": "?", "at": wall_ms(newest.hlc) / 1000, "comment": ""}
    return {**change, "user": commit.user, "at": commit.at, "comment": commit.comment}


def summary(store: Store, state: State | None = None) -> dict[str, dict[str, Any]]:
    """``"feature|mode"`` -> digest of the definition and its newest change, of
    ``state`` (None: the store's).  The daemon gives a copy of memory and calls it from
    a thread: it walks every feature at every mode, and reads the log."""
    state, found = state or store.state, {}
    for feature in store.catalogue:
        for mode in layers.all_modes(state):
            entries = state.entries(feature.command, mode.key)
            change = last_change(store, entries, state)
            if change is None:
                continue
            value = definition(entries, feature.is_table)
            found[f"{feature.command}|{mode.key}"] = {
                "digest": _digest(value),
                "defined": value is not None,
                "user": change["user"],
                "at": change["at"],
                "origin": change["origin"],
            }
    return found


def _version_of(entry: dict[str, Any] | None) -> str | None:
    """What is compared: the digest of a definition, None when the mode does not define
    the feature (never written, or undefined)."""
    return entry["digest"] if entry is not None and entry["defined"] else None


@dataclass(frozen=True, slots=True)
class Inconsistency:
    feature: str
    mode: Mode
    # member -> its summary entry ("defined": False: undefined there; None: never written)
    versions: dict[str, dict[str, Any] | None]

    @property
    def choices(self) -> list[str]:
        """One member per distinct version, in member order."""
        seen: dict[str | None, str] = {}
        for host, entry in self.versions.items():
            seen.setdefault(_version_of(entry), host)
        return list(seen.values())

    def defines(self, host: str) -> bool:
        return _version_of(self.versions[host]) is not None


def compare(summaries: dict[str, dict[str, dict[str, Any]]]) -> list[Inconsistency]:
    """Where the members' summaries disagree, key by key (members in the order given)."""
    keys = sorted({k for s in summaries.values() for k in s})
    found = []
    for key in keys:
        entries = {host: s.get(key) for host, s in summaries.items()}
        if len({_version_of(e) for e in entries.values()}) > 1:
            feature, mode = key.split("|", 1)
            found.append(Inconsistency(feature, Mode.from_key(mode), entries))
    return found


# -- facts members must agree on -------------------------------------------------------

_RUNS = re.compile(r"([A-Za-z0-9][A-Za-z0-9.-]*) runs (?:clusterd )?([^\s,;]+)")


def software_in(reason: str) -> dict[str, str]:
    """Who runs which version, from a link refusal's reason ("software versions differ:
    a runs 1.0, b runs 1.1; ...")."""
    if "software versions differ" not in reason:
        return {}
    return dict(_RUNS.findall(reason))


@dataclass(frozen=True, slots=True)
class Fact:
    """Something members disagree on besides a (feature, mode): a message and its parts."""

    kind: str  # software | membership | interface | reference | node | target | chain | corruption
    message: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.details}


def software_fact(software: dict[str, str]) -> Fact | None:
    if len(set(software.values())) < 2:
        return None
    runs = ", ".join(f"{h} runs {v}" for h, v in sorted(software.items()))
    return Fact(
        "software",
        f"Software versions differ: {runs}. Members must run the same version: they "
        "cannot link until they do.",
        {"versions": dict(sorted(software.items()))},
    )


def dns_facts(reverse: dict[str, dict[str, Any]]) -> list[Fact]:
    """Members let in although their reverse lookup failed (``reverse_dns = warn``):
    ``reverse`` is each member's ``status()["reverse_dns"]``, by the member that saw it.
    (A PTR naming another host is only a note of CONNSTATUS: a mail gateway's address
    often carries its interface's name, not the machine's.)"""
    found = []
    for seen_by, facts in sorted(reverse.items()):
        for f in facts.get("members", []):
            if f["accepted"]:
                found.append(Fact(
                    "dns",
                    f"DNS: {seen_by} accepted {f['hostname']} although the reverse lookup of "
                    f"its address failed ({f['found']}); reverse_dns = warn lets it in, the "
                    "reference would refuse it. Add a PTR record, or set reverse_dns = off "
                    f"on {seen_by} to stop checking.",
                    {"seen_by": seen_by, "member": f["hostname"], "address": f["address"]},
                ))  # fmt: skip
    return found


def node_facts(held: dict[str, dict[str, Any]]) -> list[Fact]:
    """The cross-node checks (``clusterd.node.nodechecks``) compared: ``held`` is what each
    member answered.  Ids must be equal (and exist) everywhere; paths must exist and
    addresses be assigned on every member.  Each fact names the members that differ."""
    found = []
    for host, answer in sorted(held.items()):
        for error in answer.get("errors", []):
            found.append(Fact("node", f"Check on {host}: {error}.", {"member": host}))
    for kind, what in (("users", "User"), ("groups", "Group")):
        names = sorted({n for a in held.values() for n in a.get(kind, {})})
        for name in names:
            ids: dict[str, list[str]] = {}
            for host, answer in sorted(held.items()):
                got = answer.get(kind, {}).get(name, "?")
                ids.setdefault("none" if got is None else str(got), []).append(host)
            if len(ids) > 1 or "none" in ids:
                text = "; ".join(
                    f"{'no such ' + what.lower() if i == 'none' else 'id ' + i} on "
                    f"{', '.join(hosts)}"
                    for i, hosts in sorted(ids.items())
                )
                found.append(Fact(
                    "node",
                    f"{what} {name} differs between members ({text}): a member taking over "
                    "another would own its files under another id. Give it the same id "
                    "everywhere.",
                    {"check": kind, "name": name, "ids": ids},
                ))  # fmt: skip
    found += target_facts(held)
    for kind, word in (("paths", "is missing"), ("addresses", "is not assigned")):
        items = sorted({n for a in held.values() for n in a.get(kind, {})})
        for item in items:
            bad = [h for h, a in sorted(held.items()) if a.get(kind, {}).get(item) is False]
            if bad:
                label = "Path" if kind == "paths" else "Address"
                found.append(Fact(
                    "node",
                    f"{label} {item} {word} on {', '.join(bad)} (every member needs it to "
                    "take over).",
                    {"check": kind, "name": item, "members": bad},
                ))  # fmt: skip
    return found


def target_facts(held: dict[str, dict[str, Any]]) -> list[Fact]:
    """Service targets (``docs/services.md``) that failed, that have not applied what
    they read, or whose live files were edited by hand, member by member."""
    found = []
    for host, answer in sorted(held.items()):
        for name, t in sorted((answer.get("targets") or {}).items()):
            where = {"member": host, "target": name}
            error = t.get("error")
            if error:
                found.append(Fact("target", f"Target {name} on {host} failed at "
                                  f"{error['stage']} (commit {error['commit'] or '-'}): "
                                  f"{error['text']}.", where))  # fmt: skip
            elif t.get("applied") != t.get("desired") and t.get("state") != "applying":
                found.append(Fact("target", f"Target {name} on {host} applied "
                                  f"{t.get('applied') or 'nothing'}, not {t.get('desired')} "
                                  "(what its features are at now).", where))  # fmt: skip
            if t.get("drift"):
                found.append(Fact("target", f"Target {name} on {host}: its live files were "
                                  "edited by hand (drift); the next change replaces them.",
                                  where))  # fmt: skip
    return found


BROKEN = {
    "hash": "its row no longer gives the hash it was sealed with: it was ALTERED on {member} "
            "since it was sealed",
    "prev": "it does not name the hash of the commit before it as {member} holds that one: "
            "the log was rewritten there, or its origin sealed two histories",
    "signature": "its signature is not its origin's: forged, or rewritten with a new hash",
}  # fmt: skip


def corruption_facts(held: dict[str, list[dict[str, Any]]]) -> list[Fact]:
    """Entries members found to differ from a peer's at the same commits (``held``:
    member -> its status's ``corruption``), as facts."""
    found = []
    for member, rows in sorted(held.items()):
        for c in rows:
            if c.get("verdict") == "differs":
                text = (f"Corruption on {member}: its entry of {c['unit']} differs from its "
                        f"verified log ({c['why']}) and from {c['with']}'s. It serves no sync "
                        f"while so: rejoin {member} (remove it, then join it again).")  # fmt: skip
            else:
                text = (f"Entry {c['unit']} differs between {member} and {c['with']}, and "
                        f"{member} cannot check its own ({c['why']}).")  # fmt: skip
            details = {"member": member, "unit": c["unit"], "with": c["with"],
                       "verdict": c["verdict"]}  # fmt: skip
            found.append(Fact("corruption", text, details))
    return found


def chain_facts(chains: dict[str, dict[str, Any]], names: dict[str, str]) -> list[Fact]:
    """Each member's walk of its log (``chains``: member -> the ``chain`` answer), as
    facts: the first broken link of every origin on every member, and commits that two
    members hold with different hashes (compared where both hold the same head).
    ``names``: host names by serial (a removed origin is named by its serial)."""
    found = []
    for member, answer in sorted(chains.items()):
        for serial, c in sorted(answer.get("origins", {}).items()):
            broken = c.get("broken")
            if not broken:
                continue
            origin = names.get(serial, serial)
            what = str(broken["what"])
            found.append(Fact(
                "chain",
                f"Commit chain broken on {member}: commit {serial}:{broken['seq']} of {origin} "
                f"fails its {what} check ({broken['why']}): "
                f"{BROKEN.get(what, what).format(member=member)}. The log of {member} cannot "
                f"be trusted from there on: restore {member} from a member whose chain holds "
                "(remove it from the cluster and join it again).",
                {"member": member, "origin": origin, "origin_serial": serial,
                 "seq": broken["seq"], "what": what, "why": broken["why"]},
            ))  # fmt: skip
    found += _forks(chains, names)
    return found


def witness_facts(found: dict[str, list[dict[str, Any]]]) -> list[Fact]:
    """What each member's witnessing of the others' chain heads found standing
    (``status``'s ``witness``, by the member that found it)."""
    return [
        Fact("chain", f"{seen_by}: {f['kind']}: {f['text']}.",
             {"seen_by": seen_by, "member": f["member"], "origin": f["origin"],
              "origin_serial": f["origin_serial"], "seq": f["seq"], "was": f["was"],
              "what": f["kind"]})
        for seen_by, findings in sorted(found.items())
        for f in findings
    ]  # fmt: skip


def _forks(chains: dict[str, dict[str, Any]], names: dict[str, str]) -> list[Fact]:
    heads: dict[tuple[str, int], dict[str, list[str]]] = {}
    for member, answer in sorted(chains.items()):
        for serial, c in answer.get("origins", {}).items():
            if c.get("hash"):
                heads.setdefault((serial, c["head"]), {}).setdefault(c["hash"], []).append(member)
    found = []
    for (serial, seq), by_hash in sorted(heads.items()):
        if len(by_hash) < 2:
            continue
        held = "; ".join(f"{h[:12]} on {', '.join(m)}" for h, m in sorted(by_hash.items()))
        found.append(Fact(
            "chain",
            f"Members hold two histories of {names.get(serial, serial)}: commit {serial}:{seq} "
            f"has hash {held}. One of those logs was rewritten, or its origin sealed two "
            "histories: compare them with commitdetail on each member.",
            {"origin": names.get(serial, serial), "origin_serial": serial, "seq": seq,
             "what": "fork", "hashes": by_hash},
        ))  # fmt: skip
    return found


def _reference_fact(catalogue: Catalogue, p: references.Unresolved) -> Fact:
    details = {
        "machine": p.machine,
        "feature": p.feature,
        "defined_at": p.source,
        "row": p.row,
        "field": p.field,
        "target": p.target,
        "name": p.name,
    }
    if p.target == "interfaceconfig":
        if p.feature == "listenerconfig" and p.row is not None:
            what = f"Listener {p.row!r} (defined at {p.source}) listens on"
            effect = "the listener is disabled there"
        else:
            row = f" row {p.row!r}" if p.row is not None else ""
            what = f"{catalogue[p.feature].title}{row} (defined at {p.source}) uses"
            effect = f"its {p.field!r} does not work there"
        message = (
            f"{what} interface {p.name!r}, which Machine {p.machine} does not have: "
            f"{effect}. Add an interface {p.name!r} on {p.machine}, or define "
            f"{p.feature} at Machine {p.machine} with one of its interfaces."
        )
        return Fact("interface", message, {**details, "interface": p.name})
    return Fact(
        "reference",
        f"Reference problem: {p}. Move the {p.target} entry up (or the referring setting "
        "down) so that every machine that uses it has it.",
        details,
    )


def membership_facts(reader: State, catalogue: Catalogue) -> list[Fact]:
    """What concurrent membership operations can leave (``docs/membership.md``): a
    machine whose group was deleted (it is in the fallback group), two groups of one
    name, settings at a group mode that is no group's any more, or at a machine's name
    from before a rename."""
    found = []
    for host, row in layers.machines(reader).items():
        if row["fallback"]:
            found.append(Fact(
                "membership",
                f"Machine {host}'s group was deleted while it was being moved or placed: it "
                f"is in group {row['group']} by the fallback rule. Run 'clusterconfig "
                f"setgroup {host} GROUP' to place it.",
                {"machine": host, "group": row["group"]},
            ))  # fmt: skip
    table = layers.group_table(reader)
    for name in sorted(set(table.values())):
        ids = [gid for gid, n in table.items() if n == name]
        if len(ids) > 1:
            found.append(Fact(
                "membership",
                f"Two groups are named {name} (ids {', '.join(ids)}), renamed or added on "
                f"members that were apart; they share the settings of Group {name}. "
                "Rename one ('clusterconfig renamegroup').",
                {"group": name, "ids": ids},
            ))  # fmt: skip
    names = set(table.values())
    for feature in catalogue:
        for key in _group_modes(reader, feature.command):
            mode = Mode.from_key(key)
            if mode.name not in names and reader.is_defined(feature.command, key):
                found.append(Fact(
                    "membership",
                    f"{feature.title} is defined at {mode}, which is no group any more (a "
                    "change made there by a member that had not seen the group renamed or "
                    f"deleted): it applies to no machine. Run '{feature.command} clusterset "
                    f"delete group {mode.name}' from cluster mode, or add the group back.",
                    {"feature": feature.command, "mode": str(mode)},
                ))  # fmt: skip
    found += _left_at_old_names(reader, catalogue)
    return found


def _left_at_old_names(reader: State, catalogue: Catalogue) -> list[Fact]:
    """Settings at the machine mode of a name its machine left by a rename, written by a
    member that had not seen the rename (or left by a rename that lost to another)."""
    found = []
    for old, version in reader.entries("removed", layers.CLUSTER).visible_rows():
        new = (version.value or {}).get("renamed_to")
        if not new:
            continue
        key = Mode.machine(old).key
        for feature in catalogue:
            entries = reader.entries(feature.command, key)
            late = [v for v in entries.rows.values() if v.value is not None
                    and newer(v.stamp, version.stamp)]  # fmt: skip
            if reader.is_defined(feature.command, key) or late:
                found.append(Fact(
                    "membership",
                    f"{feature.title} was changed at Machine {old} after {old} was renamed "
                    f"{new} (by a member that had not seen the rename): it applies to no "
                    f"machine. Make the change again at Machine {new}.",
                    {"feature": feature.command, "mode": f"Machine {old}", "renamed_to": new},
                ))  # fmt: skip
    return found


def _group_modes(reader: State, command: str) -> list[str]:
    """The group modes the store holds anything of ``command`` at."""
    return [m for f, m in reader.feature_modes() if f == command and m.startswith("group:")]


def facts(
    reader: State,
    catalogue: Catalogue,
    me: str,
    software: dict[str, str],
    reverse: dict[str, dict[str, Any]],
    held: dict[str, dict[str, Any]],
) -> list[Fact]:
    """Software versions (member -> version, as far as known), membership left strange by
    concurrent operations, members accepted without reverse DNS, the cross-node checks,
    then every reference that does not resolve on some machine's effective
    configuration."""
    found = [f for f in [software_fact(software)] if f is not None]
    found += membership_facts(reader, catalogue)
    found += dns_facts(reverse)
    found += node_facts(held)
    for p in references.unresolved_everywhere(reader, catalogue, me):
        found.append(_reference_fact(catalogue, p))
    return found
