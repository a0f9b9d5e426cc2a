"""Cross-node checks: facts of each machine that must agree before one takes over another.

The high-availability guides check, before a node takes over, that the mail owner's
user id and group ids are the same on every server, that configuration files and
directories exist, and that the service addresses are ones the node can hold.  These
are facts of the machines, not settings: they are declared in ``clusterd.toml`` (local
settings: nothing another member sends decides what this machine reads), evaluated on
every member, and compared by ``clustercheck``, which names the member that differs.

* ``check_users`` / ``check_groups``: names whose numeric id (uid / gid) must be equal
  everywhere, read from ``passwd_file`` / ``group_file`` (``/etc/passwd``,
  ``/etc/group``: the local accounts a takeover depends on);
* ``check_paths``: paths that must exist on every member (relative: to the data
  directory);
* ``check_addresses``: IP addresses that must be assigned to an interface of every
  member (a socket can bind to them).

A member asked (query ``checks``) answers for the lists it was sent and its own, so a
check declared on any one member is compared on all of them.  The answer is computed in
a worker thread: a slow disk or mount never delays the links.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KINDS = ("users", "groups", "paths", "addresses")
MAX_ITEMS = 64  # per kind
MAX_TEXT = 4096


def declared(config: Any) -> dict[str, list[str]]:
    """This machine's own checks, from its configuration."""
    return {
        "users": list(config.check_users),
        "groups": list(config.check_groups),
        "paths": list(config.check_paths),
        "addresses": list(config.check_addresses),
    }


def merged(asked: Mapping[str, Any], own: dict[str, list[str]]) -> dict[str, list[str]]:
    """The lists a query sent (checked: a peer's bad query raises ValueError) with ours."""
    found = {}
    for kind in KINDS:
        items = asked.get(kind, [])
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise ValueError(f"{kind}: a list of at most {MAX_ITEMS} names")
        if not all(isinstance(i, str) and 0 < len(i) <= MAX_TEXT for i in items):
            raise ValueError(f"{kind}: names of 1 to {MAX_TEXT} characters")
        found[kind] = sorted(set(items) | set(own[kind]))
    return found


def _ids(path: str) -> dict[str, int]:
    """name -> numeric id of a passwd- or group-format file (``name:x:ID:...``)."""
    ids: dict[str, int] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(":")
            if len(parts) >= 3 and parts[0] and not line.startswith("#") and parts[2].isdigit():
                ids.setdefault(parts[0], int(parts[2]))
    return ids


def _assigned(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(parsed), 0))
        except OSError:
            return False
    return True


def evaluate(checks: dict[str, list[str]], config: Any) -> dict[str, Any]:
    """What this machine holds for each check (blocking: run it in a worker thread).
    ``None`` for an id: no such user or group; an error reading a file says so."""
    result: dict[str, Any] = {"errors": []}
    for kind, path in (("users", config.passwd_file), ("groups", config.group_file)):
        try:
            ids = _ids(path) if checks[kind] else {}
        except OSError as exc:
            result["errors"].append(f"cannot read {path}: {exc.strerror or exc}")
            ids = {}
        result[kind] = {name: ids.get(name) for name in checks[kind]}
    base = Path(config.data_dir)
    result["paths"] = {p: os.path.exists(base / p) for p in checks["paths"]}
    result["addresses"] = {a: _assigned(a) for a in checks["addresses"]}
    return result
