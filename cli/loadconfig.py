"""``loadconfig``: a saved configuration into this cluster (or machine), reviewed first.

    loadconfig NAME | -  [--group FILE=HERE ...] [--machine FILE=HERE ...]
                         [--no-cluster] [--network] [--merge] [--yes]

The file's cluster, groups and machines map onto this cluster's modes: ``--group`` and
``--machine`` say where each goes; without them a section goes to the group or machine
of the same name here, or (interactive) the menu asks, or (one command) it is not
loaded and the review says which flag would load it.  The review lists every change;
on confirmation the changes are pending in the session: ``commit`` applies them.

What a file may not do, whatever it holds:

* lock the admins out: the cluster's users and SSH settings (features only the cluster
  holds) are never undefined, as the editor refuses; when the file *replaces* the
  users, the review says whose users they are and whose passphrases will work, and
  asks (``--yes`` answers in a one-command call);
* move a machine's network settings onto another machine: a machine's section loads
  its network settings (interfaces, host name, routes) only onto that machine, unless
  ``--network``;
* pour two sections into one mode: refused unless ``--merge`` (the later one wins).

``-`` reads the file from the standard input of a one-command call, so files move
between clusters over ``ssh`` (``saveconfig --stdout`` on one side).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterd.cli.console import choose, confirm
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.edits import write_definition
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.core.versions import MARKER, Unit
from clusterd.schema.configfile import ConfigFile, load
from clusterd.schema.feature import Feature, Level
from clusterd.schema.fields import host_key

SKIP = "don't copy"
USAGE = ("loadconfig NAME|- [--group FILE=HERE ...] [--machine FILE=HERE ...] "
         "[--no-cluster] [--network] [--merge] [--yes]")  # fmt: skip


@dataclass
class Options:
    source: str
    groups: dict[str, str] = field(default_factory=dict)
    machines: dict[str, str] = field(default_factory=dict)
    cluster: bool = True
    network: bool = False
    merge: bool = False
    yes: bool = False


def parse(args: list[str]) -> Options:
    words, found = list(args), None
    opts: dict[str, Any] = {"groups": {}, "machines": {}}
    flags = {"--no-cluster": ("cluster", False), "--network": ("network", True),
             "--merge": ("merge", True), "--yes": ("yes", True)}  # fmt: skip
    while words:
        word = words.pop(0)
        if word in flags:
            opts[flags[word][0]] = flags[word][1]
        elif word in ("--group", "--machine"):
            pair = words.pop(0) if words else ""
            src, eq, dst = pair.partition("=")
            if not (src and eq and dst):
                raise Usage(f"{word} FILE=HERE, not {pair!r}")
            table = opts["groups"] if word == "--group" else opts["machines"]
            if word == "--machine":
                src, dst = host_key(src), host_key(dst)
            table[src] = dst
        elif word.startswith("-") and word != "-":
            raise Usage(USAGE)
        elif found is None:
            found = word
        else:
            raise Usage(USAGE)
    if found is None:
        raise Usage(USAGE)
    return Options(found, **opts)


@dataclass(frozen=True)
class Section:
    """One part of the file and where it goes: (what, its name in the file, mode)."""

    what: str  # cluster | group | machine
    name: str
    mode: Mode
    features: dict[str, Any]


async def _where(shell: Shell, what: str, name: str, choices: list[str], given: str | None,
                 notes: list[str]) -> str | None:  # fmt: skip
    if given is not None:
        if given != SKIP and given not in choices:
            raise ClusterdError(f"--{what} {name}={given}: there is no {what} {given!r} here")
        return None if given == SKIP else given
    if not shell.console.interactive:
        if name in choices:
            return name
        notes.append(f"  {what} {name} of the file: not loaded (no {what} {name!r} here; "
                     f"load it with --{what} {name}=HERE)")  # fmt: skip
        return None
    options = [*choices, SKIP]
    default = choices.index(name) + 1 if name in choices else len(options)
    pick = await choose(shell.console, f"Copy the settings of {what} {name} to:", options, default)
    return None if pick == len(options) else options[pick - 1]


async def plan(shell: Shell, config: ConfigFile, opts: Options, notes: list[str]) -> list[Section]:
    """Where each section of the file goes here."""
    state = shell.store.state
    if shell.cluster is None:
        if config.kind != "standalone":
            raise ClusterdError("a cluster file loads into a cluster; this machine is standalone")
        ((name, features),) = config.machines.items()
        return [Section("machine", name, Mode.machine(shell.hostname), features)]
    if config.kind == "standalone":
        raise ClusterdError("a standalone machine's file cannot be loaded into a cluster")
    sections = []
    if config.cluster and opts.cluster and (
        not shell.console.interactive or await confirm(shell.console, "Load the cluster settings?",
                                                       True)):  # fmt: skip
        sections.append(Section("cluster", "", Mode.cluster(), config.cluster))
    for name, features in config.groups.items():
        target = await _where(shell, "group", name, layers.groups(state),
                              opts.groups.get(name), notes)  # fmt: skip
        if target is not None:
            sections.append(Section("group", name, Mode.group(target), features))
    machines = list(layers.machines(state))
    for name, features in config.machines.items():
        target = await _where(shell, "machine", name, machines, opts.machines.get(name), notes)
        if target is not None:
            sections.append(Section("machine", name, Mode.machine(target), features))
    _no_two_into_one(sections, opts)
    return sections


def _no_two_into_one(sections: list[Section], opts: Options) -> None:
    seen: dict[Mode, Section] = {}
    for s in sections:
        if s.mode in seen and not opts.merge:
            first = seen[s.mode]
            raise ClusterdError(
                f"{first.what} {first.name} and {s.what} {s.name} of the file both go to "
                f"{s.mode}: map one elsewhere, or give --merge (the later one wins)"
            )
        seen[s.mode] = s


def changes(
    shell: Shell, sections: list[Section], opts: Options, notes: list[str]
) -> list[tuple[Feature, Mode, Any, Any]]:
    """(feature, mode, value from the file or None, value now) for each difference, after
    the rules of the module docstring."""
    found = []
    standalone = shell.cluster is None  # a standalone machine's mode holds every feature
    for s in sections:
        own = s.what == "machine" and host_key(s.name) == s.mode.name
        for feature in shell.store.catalogue:
            value = s.features.get(feature.command)
            if feature.internal or (s.mode.level not in feature.levels and not standalone):
                if value is not None:
                    levels = "/".join(sorted(lv.value for lv in feature.levels))
                    notes.append(f"  {feature.command}: not kept at {s.mode} ({levels} only)")
                continue
            if feature.network and not own and not opts.network and not standalone:
                if value is not None:
                    notes.append(f"  {feature.command} of machine {s.name}: not loaded onto "
                                 f"{s.mode} (network settings; --network loads them)")  # fmt: skip
                continue
            now = definition(shell.session.view.entries(feature.command, s.mode.key),
                             feature.is_table)  # fmt: skip
            if value is None and s.mode == Mode.cluster() and feature.levels == {Level.CLUSTER}:
                if now is not None:
                    notes.append(f"  {feature.command}: kept (the file has none; undefining "
                                 "it would leave every admin locked out)")  # fmt: skip
                continue
            if now != value:
                found.append((feature, s.mode, value, now))
    return found


def users_change(shell: Shell, config: ConfigFile, found: list[Any]) -> str | None:
    """When the file replaces the cluster's users: who may log in after, in plain words."""
    change = next((c for c in found if c[0].command == "userconfig"), None)
    if change is None or change[2] is None:
        return None
    after, before = change[2], change[3] or {}
    admins = sorted(u for u, row in after.items() if row.get("role") == "admin")
    gone = sorted(set(before) - set(after))
    lines = [
        f"The file replaces the cluster's users with those of {config.kind} "
        f"{config.name or '(unnamed)'}: {', '.join(sorted(after)) or 'none'}.",
        "After the commit, only the passphrases set there work (and keys in sshconfig); "
        f"admins: {', '.join(admins) or 'NONE'}.",
    ]
    if gone:
        lines.append(f"Users that will no longer exist: {', '.join(gone)}.")
    if shell.user not in after:
        lines.append(f"You ({shell.user}) are not among them: this session will end.")
    elif after[shell.user].get("passphrase_hash") != before.get(shell.user, {}).get(
        "passphrase_hash"
    ):
        lines.append(f"Your own passphrase ({shell.user}) becomes the one set there.")
    return "\n".join(lines)


async def loadconfig(shell: Shell, args: list[str]) -> int:
    from clusterd.cli.saveload import read_file

    opts = parse(args)
    config = load(await read_file(shell, opts.source))
    notes: list[str] = []
    sections = await plan(shell, config, opts, notes)
    found = changes(shell, sections, opts, notes)
    for note in notes:
        shell.write(note)
    if not found:
        shell.write("Loading this file changes nothing.")
        return 0
    shell.write("Review: loading this file would change")
    for feature, mode, value, now in found:
        what = "undefine" if value is None else ("define" if now is None else "replace")
        shell.write(f"  {feature.command} at {mode}: {what}")
    warning = users_change(shell, config, found)
    if warning:
        shell.write(warning)
    if not opts.yes and not await confirm(shell.console, "Load these settings?", False):
        shell.write("Nothing was loaded" + ("" if shell.console.interactive else
                    ": a one-command call loads with --yes") + ".")  # fmt: skip
        return 1
    for feature, mode, value, _ in found:
        if value is None:
            shell.session.view.write(Unit(feature.command, mode.key, MARKER), None)
        else:
            write_definition(shell.session.view.write, feature, mode, value)
    shell.write(f"{len(found)} change(s) pending: review with preview, apply with commit.")
    return 0
