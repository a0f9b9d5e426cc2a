"""The local control socket: ``clusterd status`` and the test and benchmark tools.

A Unix socket in the data directory (mode 0600, so only the machine's administrator
reaches it).  One JSON object per line each way.  Requests::

    {"op": "status"}
    {"op": "edit", "user": "admin", "comment": "...", "edits": [EDIT, ...]}
    {"op": "disconnect"} / {"op": "reconnect"}
    {"op": "query", "peer": SERIAL, "kind": "digest", "args": {...}}  (a member's query)
    {"op": "get", "feature": ..., "mode": ...}     what the mode defines (null: nothing)
    {"op": "effective"}                          this machine's effective configuration
    {"op": "truncate", "keep": N}
    {"op": "stop"}

Cluster operations (``clusterd.node.admin``)::

    {"op": "create", "name": ...}
    {"op": "probe", "address": ..., "port": N}          the member's host key fingerprint
    {"op": "join", "address": ..., "port": N, "fingerprint": "SHA256:...",
     "passphrase": ... | null (use this machine's PREPJOIN key), "user": "admin",
     "group": "Main_Group", "ccs": false, "enable_ccs": false, "dry_run": false}
    {"op": "prepjoin_print"}
    {"op": "list"} / {"op": "connstatus"}
    {"op": "addgroup", "group": G} / {"op": "renamegroup", "old": G, "new": H}
    {"op": "deletegroup", "group": G, "move_to": H} / {"op": "setgroup", "machine": M,
     "group": G} / {"op": "setname", "name": N}
    {"op": "removemachine", "machine": M}
    {"op": "ccs", "enabled": true | false}

An EDIT is ``{"do": "set_row" | "delete_row" | "set_record" | "define" | "undefine",
"feature": ..., "mode": "cluster" | "group:NAME" | "machine:FQDN", "row": ...,
"value": {...}, "start": "empty" | "defaults" | "inherited"}``, or PREPJOIN NEW /
DELETE: ``{"do": "prepjoin_new", "hostname": ..., "serial": ..., "machine_key": ...}``,
``{"do": "prepjoin_delete", "hostname": ...}`` (pending until the batch commits).  Answers are
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``; a bad request changes
nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.edits import Start
from clusterd.core.errors import ClusterdError, InvalidSetting
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.store.session import Session

if TYPE_CHECKING:
    from clusterd.node.api import ClusterAPI

LIMIT = 64 * 1024 * 1024
log = logging.getLogger("clusterd.control")
# Names whose values are never logged: passphrase, password, passwd, passphrase_hash...
# (``cli.serve.redact`` uses it for FIELD=VALUE words of command lines too).
SECRET_NAME = re.compile(r"pass|secret", re.IGNORECASE)
REDACTED = "***"


def redacted(value: Any) -> Any:
    """``value`` with what every key named like a secret holds replaced, at any depth."""
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_NAME.search(str(k)) else redacted(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def for_log(line: bytes) -> str:
    """A request line as it may be logged: secrets replaced (``redacted``); a line that
    is not JSON is not shown at all (nothing tells where a secret would be in it)."""
    try:
        return json.dumps(redacted(json.loads(line)))
    except (ValueError, RecursionError):
        return f"({len(line)} bytes, not JSON)"


async def serve(api: ClusterAPI) -> asyncio.AbstractServer:
    path = api.config.control_socket
    path.unlink(missing_ok=True)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await _handle(api, line)
                except Exception:  # a bug answers as an error; the daemon goes on
                    log.exception("control request failed: %.200s", for_log(line))
                    answer = {"ok": False, "error": "internal error (see the daemon log)"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, path, limit=LIMIT)
    finally:
        os.umask(old)
    return server


async def _handle(api: ClusterAPI, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        op = request.get("op")
        if op == "status":
            return {"ok": True, **await api.status()}
        if op == "edit":
            return await _edit(api, request)
        if op in ("disconnect", "reconnect"):
            return await _membership_flag(api, op == "disconnect")
        if op == "query":
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise ValueError("'args' of a query is a JSON object")
            answered = await api.ask(str(request["peer"]), str(request["kind"]), args, 10.0)
            if not answered.ok:
                return {"ok": False, "error": str(answered.body), "body": answered.body}
            return {"ok": True, "body": answered.body}
        if op == "get":
            feature = api.store.catalogue[str(request["feature"])]
            mode = Mode.from_key(str(request["mode"]))
            entries = api.store.state.entries(feature.command, mode.key)
            return {"ok": True, "value": definition(entries, feature.is_table)}
        if op == "effective":
            store = api.store
            values = layers.effective_values(store.state, store.catalogue, store.hostname)
            return {"ok": True, "values": values}
        if op == "truncate":
            keep = request.get("keep")
            if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
                raise ValueError("'keep' is how many of the newest commits keep their "
                                 "changes: a whole number, 0 or more")  # fmt: skip
            return {"ok": True, "truncated": await api.truncate_log(keep)}
        if op == "stop":
            api.stop()
            return {"ok": True}
        if op == "target":
            return {"ok": True, **await _target(api, request)}
        if op in CLUSTER_OPS:
            return {"ok": True, **await CLUSTER_OPS[op](api, request)}
        return {"ok": False, "error": f"unknown op {op!r}"}
    except InvalidSetting as exc:
        return {"ok": False, "error": "; ".join(exc.problems)}
    except ClusterdError as exc:
        return {"ok": False, "error": str(exc), **({"code": exc.code} if exc.code else {})}
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


async def _edit(api: ClusterAPI, request: dict[str, Any]) -> dict[str, Any]:
    session = api.session(str(request.get("user", "admin")), bounded=False)
    for edit in request["edits"]:
        _one_edit(session, edit)
    # The control socket is root's (mode 0600): what it asks, it asks as an admin.
    commit = await api.commit(session, str(request.get("comment", "")), role="admin")
    if commit is None:
        return {"ok": True, "commit": None}
    return {"ok": True, "commit": str(commit.id), "hlc": commit.hlc}


async def _target(api: ClusterAPI, request: dict[str, Any]) -> dict[str, Any]:
    action, name = request.get("action"), str(request.get("name"))
    if action == "status":
        return {"targets": api.targets()}
    if action == "rollback":
        back = request.get("back", 1)
        if not isinstance(back, int) or isinstance(back, bool):
            raise ValueError("'back' is a whole number of generations")
        return await api.target_rollback("admin", "admin", name, back)
    if action == "force":
        return api.target_force("admin", "admin", name)
    raise ValueError(f"unknown target action {action!r} (status, rollback, force)")


def _one_edit(session: Session, edit: dict[str, Any]) -> None:
    if edit["do"] == "prepjoin_new":
        session.prepjoin_new(str(edit["hostname"]), str(edit["serial"]), str(edit["machine_key"]))
        return
    if edit["do"] == "prepjoin_delete":
        session.prepjoin_delete(str(edit["hostname"]))
        return
    feature, mode = str(edit["feature"]), Mode.from_key(str(edit["mode"]))
    match edit["do"]:
        case "set_row":
            session.set_row(feature, mode, str(edit["row"]), edit["value"])
        case "delete_row":
            session.delete_row(feature, mode, str(edit["row"]))
        case "set_record":
            session.set_record(feature, mode, edit["value"])
        case "define":
            session.define(feature, mode, Start(edit.get("start", "defaults")))
        case "undefine":
            session.undefine(feature, mode)
        case other:
            raise ValueError(f"unknown edit {other!r}")


async def _membership_flag(api: ClusterAPI, disconnected: bool) -> dict[str, Any]:
    """DISCONNECT / RECONNECT this machine."""
    try:
        done = await api.admin.set_disconnected(api.config.hostname, disconnected, "admin")
    except ClusterdError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, **done}


Op = Callable[["ClusterAPI", dict[str, Any]], Awaitable[dict[str, Any]]]


def _user(r: dict[str, Any]) -> str:
    return str(r.get("user", "admin"))


async def _create(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return await d.admin.create(str(r["name"]), _user(r))


async def _probe(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return await d.admin.probe(str(r["address"]), int(r["port"]))


async def _join(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    passphrase = r.get("passphrase")
    return await d.admin.join(
        address=str(r["address"]),
        port=int(r["port"]),
        fingerprint_expected=str(r.get("fingerprint") or ""),
        passphrase=None if passphrase is None else str(passphrase),
        user=_user(r),
        group=str(r.get("group") or "Main_Group"),
        ccs=bool(r.get("ccs", False)),
        enable_ccs=bool(r.get("enable_ccs", False)),
        dry_run=bool(r.get("dry_run", False)),
    )


async def _prepjoin_print(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return d.admin.prepjoin_print()


async def _list(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return d.admin.listing()


async def _group_op(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return await d.admin.group_op(str(r["op"]), r, _user(r))


async def _remove(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return await d.admin.remove(str(r["machine"]), _user(r))


async def _connstatus(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    return await d.admin.connstatus()


async def _ccs(d: ClusterAPI, r: dict[str, Any]) -> dict[str, Any]:
    enabled = r["enabled"]
    if not isinstance(enabled, bool):
        raise ValueError("'enabled' is true or false")
    return await d.admin.set_ccs(enabled, _user(r))


CLUSTER_OPS: dict[str, Op] = {
    "create": _create,
    "probe": _probe,
    "join": _join,
    "prepjoin_print": _prepjoin_print,
    "list": _list,
    "addgroup": _group_op,
    "renamegroup": _group_op,
    "deletegroup": _group_op,
    "setgroup": _group_op,
    "setname": _group_op,
    "removemachine": _remove,
    "connstatus": _connstatus,
    "ccs": _ccs,
}


def request(data_dir: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the daemon of ``data_dir`` and return its answer (blocking)."""
    path = Path(data_dir) / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ClusterdError(f"no daemon answers on {path}: {exc.strerror or exc}") from None
        sock.sendall(json.dumps(message).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    return answer
