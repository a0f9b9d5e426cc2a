"""Progress of a catch-up, shown after the commands that start one (join, RECONNECT).

The daemon's status says, per linked member, how many of its commits this machine
still lacks (``catch_up``: counted once over all members).  This follows the same
figures (without the state digest, which a catch-up would make status recompute at
every poll): first until every member that may link has (or ``settle`` seconds), then
while commits are missing, a line at most every ``every`` seconds, and a last line
saying where it ended.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from clusterd.cli.shell import Shell

POLL = 0.1


def _applied(status: dict[str, Any]) -> int:
    return sum(status["vv"].values())


def _unlinked(status: dict[str, Any]) -> list[str]:
    """Members a link may still come up to: not refused, not disconnected on purpose."""
    return [
        p["hostname"]
        for p in status["peers"]
        if p["state"] not in ("up", "refused") and not p["admin_off"]
    ]


def applied_now(shell: Shell) -> int:
    """How many commits this machine holds: what a catch-up counts from."""
    return sum(shell.api.store.state.vv.values())


async def follow_catch_up(
    shell: Shell,
    *,
    base: int | None = None,
    settle: float | None = None,
    timeout: float = 120.0,
    every: float = 0.5,
) -> bool:
    """Show the catch-up until nothing is missing; False when ``timeout`` ran out first.

    ``base``: the commits held when the command started (``applied_now``), so what
    arrives before this is called counts too; ``settle`` defaults to the handshake
    time-out: within it a dial has linked or failed.
    """
    api = shell.api

    def status() -> dict[str, Any]:
        return api.progress()

    settle = api.handshake_timeout if settle is None else settle
    start = time.monotonic()
    s = status()
    base = _applied(s) if base is None else base
    told = False
    while _unlinked(s) and time.monotonic() - start < settle:
        if not told and time.monotonic() - start >= every:
            shell.write(f"Waiting for links to {', '.join(_unlinked(s))}...")
            told = True
        await asyncio.sleep(POLL)
        s = status()
    shown, last = -1, 0.0
    while s["catch_up"]["missing"]:
        now = time.monotonic()
        if now - start > timeout:
            left = s["catch_up"]["missing"]
            shell.write(f"Still catching up: {left:,} commits to go (see status).")
            return False
        got = _applied(s) - base
        if got != shown and now - last >= every:
            total = got + s["catch_up"]["missing"]
            source = ", ".join(s["catch_up"]["from"])
            shell.write(f"Catching up from {source}: {got:,} of {total:,} commits received")
            shown, last = got, now
        await asyncio.sleep(POLL)
        s = status()
    up = [p for p in s["peers"] if p["state"] == "up"]
    got = _applied(s) - base
    caught = f"{got:,} commits received; " if got else ""
    if len(up) == len(s["peers"]):
        shell.write(f"Catch-up done: {caught}up to date with all members ({len(up)}).")
        return True
    return _not_linked(shell, s, up, caught)


def _not_linked(shell: Shell, s: dict[str, Any], up: list[dict[str, Any]], caught: str) -> bool:
    """Never a success while members are out of reach: say which, and why; a machine the
    cluster removed while it was away is told so.  True only when the members left out
    are disconnected on purpose."""
    missing = [p for p in s["peers"] if p["state"] != "up"]
    removed = [p["reason"] for p in missing if "was removed from the cluster" in p["reason"]]
    if removed and not up:
        why = removed[0].split(": user 'clusterd': ")[-1]
        shell.write(f"{why}.")
        shell.write("Its members refuse it; its settings are kept here as they were. Run "
                    f"'clusterconfig removemachine {shell.hostname}' here to leave the "
                    "cluster for good, or join it again.")  # fmt: skip
        return False
    total = len(s["peers"])
    shell.write(f"Linked to {len(up)} of {total} members; {caught}not linked to:")
    for p in missing:
        why = "disconnected on purpose" if p["admin_off"] else (p["reason"] or p["state"])
        shell.write(f"  {p['hostname']}: {why}")
    return all(p["admin_off"] for p in missing)
