"""``saveconfig``: configuration files in ``DATA_DIR/configs`` (or on the standard output
of a one-command call, ``saveconfig --stdout``); reading them back is ``cli.loadconfig``.

Files hold passphrase hashes: only admins save them, into a directory of mode 0700,
never through a symbolic link.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from clusterd.cli.console import confirm
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.schema.configfile import ConfigFile, dump

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SKIP = "don't copy"


def _path(shell: Shell, name: str) -> Path:
    if not NAME_RE.match(name):
        raise Usage("a file name in the configs directory: letters, digits, '.', '_', '-'")
    folder = shell.api.config.data_dir / "configs"
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
    to_stdout = "--stdout" in args
    words = [a for a in args if a != "--stdout"]
    if len(words) > 1 or (to_stdout and words):
        raise Usage("saveconfig [NAME] | saveconfig --stdout")
    name = words[0] if words else f"{cluster or shell.hostname}-{stamp}.xml"
    if cluster is None:
        config = ConfigFile("standalone", shell.hostname)
        config.machines[shell.hostname] = _defined(shell, Mode.machine(shell.hostname))
    else:
        config = ConfigFile("cluster", cluster, cluster=_defined(shell, Mode.cluster()))
        config.groups = {g: _defined(shell, Mode.group(g)) for g in layers.groups(state)}
        config.machines = {m: _defined(shell, Mode.machine(m)) for m in layers.machines(state)}
    data = dump(config, f"{shell.user}@{shell.hostname}", stamp)
    if to_stdout:
        if shell.console.interactive:
            raise ClusterdError("saveconfig --stdout is for a one-command call: "
                                "ssh HOST 'saveconfig --stdout' > FILE")  # fmt: skip
        shell.write(data.decode("utf-8"))
        return 0
    path = _path(shell, name)
    if path.exists() and not await confirm(shell.console, f"{name} exists. Overwrite it?"):
        shell.write(f"Nothing was saved: {name} exists (answer Y to overwrite it, or give "
                    "another name).")  # fmt: skip
        return 1
    await asyncio.to_thread(_write_new, path, data)  # no file I/O on the event loop
    shell.write(f"The configuration has been saved to {path}")
    return 0


async def read_file(shell: Shell, source: str) -> bytes:
    """A configuration file: ``-`` is the standard input of a one-command call, else a
    file of the configs directory (read off the event loop)."""
    if source == "-":
        return await shell.console.read_stdin()
    path = _path(shell, source)
    try:
        return await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise ClusterdError(f"cannot read {path}: {exc.strerror or exc}") from None
