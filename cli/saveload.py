"""``saveconfig`` and ``loadconfig``: configuration files in ``DATA_DIR/configs``.

Loading maps the file's cluster, groups and machines onto this cluster's modes (or
"don't copy"), shows a review of what would change, and on confirmation makes the
changes pending in the shell's session: ``commit`` applies them.  A standalone file
is refused for a cluster; a malformed or hostile file is refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from cli.console import choose, confirm
from cli.shell import Shell, Usage
from clusterd import layers
from clusterd.edits import write_definition
from clusterd.errors import ClusterdError
from clusterd.modes import Mode
from clusterd.state import definition
from clusterd.versions import MARKER, Unit
from schema.configfile import ConfigFile, dump, load

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SKIP = "don't copy"


def _path(shell: Shell, name: str) -> Path:
    if not NAME_RE.match(name):
        raise Usage("a file name in the configs directory: letters, digits, '.', '_', '-'")
    folder = shell.daemon.config.data_dir / "configs"
    if folder.is_symlink():
        raise ClusterdError(f"{folder} is a symbolic link: configurations are only written "
                            "into a real directory of the data directory")  # fmt: skip
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)  # the files hold passphrase hashes
    return folder / name


def _write_new(path: Path, data: bytes) -> None:
    """Write ``path`` through a new file of its own (never through a symbolic link that
    someone left under that name), then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # replaces a link itself, never what it points to
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _defined(shell: Shell, mode: Mode) -> dict[str, Any]:
    state, found = shell.store.state, {}
    for feature in shell.store.catalogue:
        if feature.internal:
            continue
        value = definition(state.entries(feature.command, mode.key), feature.is_table)
        if value is not None:
            found[feature.command] = value
    return found


async def saveconfig(shell: Shell, args: list[str]) -> int:
    shell.require_admin("userconfig", doing="save the configuration (it holds passphrase hashes)")
    state, cluster = shell.store.state, shell.cluster
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = args[0] if args else f"{cluster or shell.hostname}-{stamp}.xml"
    if cluster is None:
        config = ConfigFile("standalone", shell.hostname)
        config.machines[shell.hostname] = _defined(shell, Mode.machine(shell.hostname))
    else:
        config = ConfigFile("cluster", cluster, cluster=_defined(shell, Mode.cluster()))
        config.groups = {g: _defined(shell, Mode.group(g)) for g in layers.groups(state)}
        config.machines = {m: _defined(shell, Mode.machine(m)) for m in layers.machines(state)}
    path = _path(shell, name)
    if path.exists() and not await confirm(shell.console, f"{name} exists. Overwrite it?"):
        shell.write("Nothing was saved.")
        return 1
    data = dump(config, f"{shell.user}@{shell.hostname}", stamp)
    await asyncio.to_thread(_write_new, path, data)  # no file I/O on the event loop
    shell.write(f"The configuration has been saved to {path}")
    return 0


async def _target(shell: Shell, what: str, name: str, choices: list[str]) -> str | None:
    options = [*choices, SKIP]
    default = choices.index(name) + 1 if name in choices else len(options)
    pick = await choose(shell.console, f"Copy the settings of {what} {name} to:", options, default)
    return None if pick == len(options) else options[pick - 1]


async def _plan(shell: Shell, config: ConfigFile) -> list[tuple[Mode, dict[str, Any]]]:
    state = shell.store.state
    if shell.cluster is None:
        if config.kind != "standalone":
            raise ClusterdError("a cluster file loads into a cluster; this machine is standalone")
        (features,) = config.machines.values()
        return [(Mode.machine(shell.hostname), features)]
    if config.kind == "standalone":
        raise ClusterdError("a standalone machine's file cannot be loaded into a cluster")
    plan = []
    if config.cluster and await confirm(shell.console, "Load the cluster settings?", True):
        plan.append((Mode.cluster(), config.cluster))
    for group, features in config.groups.items():
        target = await _target(shell, "group", group, layers.groups(state))
        if target is not None:
            plan.append((Mode.group(target), features))
    for machine, features in config.machines.items():
        target = await _target(shell, "machine", machine, list(layers.machines(state)))
        if target is not None:
            plan.append((Mode.machine(target), features))
    return plan


async def loadconfig(shell: Shell, args: list[str]) -> int:
    words = [a for a in args if a != "--yes"]
    if len(words) != 1:
        raise Usage("loadconfig FILE [--yes]   (a file of the configs directory)")
    path = _path(shell, words[0])
    try:
        data = await asyncio.to_thread(path.read_bytes)  # off the event loop
    except OSError as exc:
        raise ClusterdError(f"cannot read {path}: {exc.strerror or exc}") from None
    config = load(data)
    plan = await _plan(shell, config)
    changes = []
    standalone = shell.cluster is None  # a standalone machine's mode holds every feature
    for mode, features in plan:
        for feature in shell.store.catalogue:
            if feature.internal or (mode.level not in feature.levels and not standalone):
                if feature.command in features:
                    levels = "/".join(sorted(lv.value for lv in feature.levels))
                    shell.write(f"  {feature.command}: not kept at {mode} ({levels} only)")
                continue
            value = features.get(feature.command)
            entries = shell.session.view.entries(feature.command, mode.key)
            now = definition(entries, feature.is_table)
            if now != value:
                changes.append((feature, mode, value, now))
    if not changes:
        shell.write("Loading this file changes nothing.")
        return 0
    shell.write("Review: loading this file would change")
    for feature, mode, value, now in changes:
        what = "undefine" if value is None else ("define" if now is None else "replace")
        shell.write(f"  {feature.command} at {mode}: {what}")
    if "--yes" not in args and not await confirm(shell.console, "Load these settings?", False):
        shell.write("Nothing was loaded.")
        return 1
    for feature, mode, value, _ in changes:
        if value is None:
            shell.session.view.write(Unit(feature.command, mode.key, MARKER), None)
        else:
            write_definition(shell.session.view.write, feature, mode, value)
    shell.write(f"{len(changes)} change(s) pending: review with preview, apply with commit.")
    return 0
