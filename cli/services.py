"""Commands about this machine's services: ``watch`` (its effective changes, as JSON
lines) and ``target`` (the service targets: status, rollback, force).  See
``docs/services.md``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from clusterd.cli.shell import Shell, Usage
from clusterd.core.errors import ClusterdError
from clusterd.schema.catalogue import CATALOGUE
from clusterd.services import journal

WATCH_USAGE = "watch [--json] [--feature FEATURE] [--since VERSION]"
WATCHDOG = 0.2  # s between looks at whether the client reads


def _watch_args(args: list[str]) -> tuple[str | None, int | None]:
    feature, since, rest = None, None, list(args)
    while rest:
        word = rest.pop(0)
        if word in ("--json", "-j"):
            continue
        if word in ("--feature", "--since") and rest:
            value = rest.pop(0)
            if word == "--feature":
                if value not in CATALOGUE:
                    raise ClusterdError(f"no feature {value!r} ('help' lists them)")
                feature = value
            elif value.isdigit():
                since = int(value)
            else:
                raise Usage(WATCH_USAGE)
        else:
            raise Usage(WATCH_USAGE)
    return feature, since


async def watch(shell: Shell, args: list[str]) -> int:
    """This machine's effective changes, one JSON line each, until the connection
    closes.  A client that leaves them unread for ``watch_unread_drop`` seconds is
    dropped, told the version to resume from."""
    feature, since = _watch_args(args)
    if shell.console.interactive:
        raise ClusterdError("watch streams until the connection closes: run it as a command "
                            "(ssh HOST 'watch --json')")  # fmt: skip
    last = since
    can_write = shell.can_write or asyncio.Event()
    if shell.can_write is None:
        can_write.set()

    async def write(line: str) -> bool:
        nonlocal last
        await can_write.wait()  # (the watchdog below ends a wait that lasts)
        shell.write(line)
        last = json.loads(line)["version"]
        await asyncio.sleep(0)  # flow control's news comes in between lines
        return True

    path = shell.api.config.data_dir / journal.NAME
    streaming = asyncio.ensure_future(journal.stream(path, since, feature, write))
    slow, unread_since = shell.api.config.watch_unread_drop, None
    try:
        while not streaming.done():
            await asyncio.wait({streaming}, timeout=WATCHDOG)
            if can_write.is_set():
                unread_since = None
                continue
            unread_since = unread_since or time.monotonic()
            if time.monotonic() - unread_since >= slow:
                streaming.cancel()
                shell.write(json.dumps({"error": f"dropped: nothing read for {slow:g} s",
                                        "resume": f"watch --since {last}"}))  # fmt: skip
                return 1
        streaming.result()
    except journal.Compacted as exc:
        raise ClusterdError(str(exc)) from None
    finally:
        streaming.cancel()
    return 0


TARGET_USAGE = "target [status] [--json] | target rollback NAME [N] | target force NAME"


async def target(shell: Shell, args: list[str]) -> int:
    action = args[0] if args and not args[0].startswith("-") else "status"
    rest = args[1:] if args and not args[0].startswith("-") else args
    if action == "status":
        found = shell.api.targets()
        if "--json" in rest or "-j" in rest:
            shell.write(json.dumps(found, indent=1, default=str))
        else:
            _show(shell, found)
        return 0
    if action == "rollback" and len(rest) in (1, 2):
        if len(rest) == 2 and not rest[1].isdigit():
            raise Usage(TARGET_USAGE)
        back = int(rest[1]) if len(rest) == 2 else 1
        done = await shell.api.target_rollback(shell.user, shell.role, rest[0], back)
        failed = "" if done["reloaded"] else " (its reload failed: see target status)"
        shell.write(f"Target {done['target']}: {done['generation']} is live again{failed}.")
        return 0 if done["reloaded"] else 1
    if action == "force" and len(rest) == 1:
        shell.api.target_force(shell.user, shell.role, rest[0])
        shell.write(f"Target {rest[0]}: the next apply may empty or shrink its maps; "
                    "applying now.")  # fmt: skip
        return 0
    raise Usage(TARGET_USAGE)


def _show(shell: Shell, found: dict[str, Any]) -> None:
    if not found:
        shell.write("No targets on this machine (targets.d/ beside clusterd.toml declares "
                    "them; docs/services.md).")  # fmt: skip
    for name, t in found.items():
        shell.write(target_line(name, t))


def target_line(name: str, t: dict[str, Any]) -> str:
    """One target's state in a line (``status`` and ``target`` show it)."""
    when = time.strftime("%H:%M:%S %Z", time.localtime(t["applied_at"])) if t["applied_at"] else "-"
    text = f"  {name:<16} {t['state']:<10} applied {t['applied'] or '-'} at {when}"
    if t["desired"] != t["applied"]:
        text += f", wants {t['desired']}"
    if t["drift"]:
        text += ", live files edited by hand (drift)"
    if t["error"]:
        e = t["error"]
        text += f"\n    {e['stage']} failed (commit {e['commit'] or '-'}): {e['text']}"
    return text
