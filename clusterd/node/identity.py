"""A machine's identity: data directory, host key, machine key, configuration file."""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from clusterd.core.edits import Start
from clusterd.core.errors import ConfigError
from clusterd.core.modes import Mode
from clusterd.node.config import CONFIG_NAME, DaemonConfig, dump_toml, parse
from clusterd.node.seal import MachineSealer
from clusterd.schema.access import MIN_PASSPHRASE_LENGTH, hash_passphrase
from clusterd.store.session import Session
from clusterd.store.store import Store


def _new_key(path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    # Created 0600, never readable by others, not even between a write and a chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    key.write_public_key(path.with_suffix(".pub"))


def init(
    data_dir: Path,
    hostname: str,
    serial: str,
    overrides: dict[str, Any],
    admin_passphrase: str | Callable[[], str] | None = None,
) -> DaemonConfig:
    """Create the machine: refuses a directory that already holds one.

    With ``admin_passphrase``, user ``admin`` (role admin) is created with its hash: the
    passphrase a cluster's members check when this machine's settings become the
    cluster's (create) and another machine joins with it.  A callable is asked only
    once the directory and the settings are known to be good.

    Atomic: everything is made in a scratch directory beside ``data_dir`` and renamed
    into place at the end, so a failed init (a bad database URL, a passphrase refused,
    Ctrl-C) leaves nothing behind and can simply be run again.  ``data_dir`` may exist
    if it is empty (systemd's StateDirectory makes it so)."""
    data_dir = data_dir.resolve()
    if (data_dir / CONFIG_NAME).exists():
        raise ConfigError(f"{data_dir} already holds a machine ({CONFIG_NAME} exists)")
    if data_dir.exists() and any(data_dir.iterdir()):
        found = ", ".join(sorted(p.name for p in data_dir.iterdir())[:6])
        raise ConfigError(f"{data_dir} is not empty ({found}): give an empty or new directory")
    settings = {"hostname": hostname, "serial": serial}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    config = parse(settings, data_dir, "command line")
    if callable(admin_passphrase):
        admin_passphrase = admin_passphrase()
    if admin_passphrase is not None and len(admin_passphrase) < MIN_PASSPHRASE_LENGTH:
        raise ConfigError(f"the admin passphrase needs {MIN_PASSPHRASE_LENGTH} characters or more")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.init-", dir=data_dir.parent))
    try:
        _make(config.model_copy(update={"data_dir": scratch}), admin_passphrase)
        if data_dir.exists():
            data_dir.rmdir()  # empty, checked above: the finished one takes its place
        scratch.rename(data_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    data_dir.chmod(0o700)  # it holds keys and the store
    return config


def _make(config: DaemonConfig, admin_passphrase: str | None) -> None:
    """Keys, store and configuration file of a new machine, in ``config.data_dir``."""
    data_dir = config.data_dir
    data_dir.chmod(0o700)
    _new_key(config.host_key)
    _new_key(config.machine_key)
    _new_key(config.admin_key)
    old_umask = os.umask(0o077)  # the store and its journal files: 0600
    store = Store(config.database_url, origin=config.serial, hostname=config.hostname,
                  sealer=MachineSealer(config.machine_key))  # fmt: skip
    try:
        session = Session(store, "clusterd")
        me = Mode.machine(config.hostname)
        if admin_passphrase is not None:
            session.define("userconfig", me, Start.EMPTY)
            row = {"role": "admin", "passphrase_hash": hash_passphrase(admin_passphrase)}
            session.set_row("userconfig", me, "admin", row)
        interface = _listening_interface(config)
        if interface is not None:
            session.define("interfaceconfig", me, Start.EMPTY)
            session.set_row("interfaceconfig", me, "Management", interface)
        session.commit("clusterd init")
    finally:
        store.close()
        os.umask(old_umask)
    (data_dir / CONFIG_NAME).write_text(dump_toml(config.file_settings()), encoding="utf-8")


def _listening_interface(config: DaemonConfig) -> dict[str, Any] | None:
    """The interface clusterd listens on, as ``interfaceconfig`` keeps it (its prefix is
    the host's own until the admin sets the real one); None when it listens on every
    address (no one interface to name)."""
    try:
        address = ipaddress.ip_address(config.listen)
    except ValueError:
        return None
    if address.is_unspecified:
        return None
    return {"address": str(address), "prefix": address.max_prefixlen, "hostname": config.hostname}


def public_key(path: Path) -> str:
    return path.with_suffix(".pub").read_text(encoding="utf-8").strip()


def describe(config: DaemonConfig) -> dict[str, Any]:
    """What another member needs to know about this machine."""
    return {
        "hostname": config.hostname,
        "serial": config.serial,
        "address": config.listen,
        "ssh_port": config.ssh_port,
        "ccs_port": config.ccs_port if config.ccs_enabled else None,
        "host_key": public_key(config.host_key),
        "machine_key": public_key(config.machine_key),
        "data_dir": str(config.data_dir),
    }


def local_ssh(config: DaemonConfig, command: str | None = None) -> list[str]:
    """The OpenSSH command line that opens this machine's shell with the local admin key.

    The daemon's host key is pinned in ``known_hosts`` of the data directory (written
    here), so the first login asks nothing and a changed key is refused."""
    host = "127.0.0.1" if config.listen in ("0.0.0.0", "::", "") else config.listen
    known = config.data_dir / "known_hosts"
    where = host if config.ssh_port == 22 else f"[{host}]:{config.ssh_port}"
    known.write_text(f"{where} {public_key(config.host_key)}\n", encoding="utf-8")
    argv = ["ssh", "-p", str(config.ssh_port), "-i", str(config.admin_key),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"]  # fmt: skip
    if command is None:
        argv.append("-t")
    argv.append(f"admin@{host}")
    return argv if command is None else [*argv, command]
