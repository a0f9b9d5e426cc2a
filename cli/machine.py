"""Commands about the machine logged in to: who, last, tail, ping, nslookup."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from clusterd.cli.shell import Shell, Usage
from clusterd.core.errors import ClusterdError


def _when(at: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Z", time.localtime(at))


async def who(shell: Shell, args: list[str]) -> int:
    for s in shell.api.sessions():
        what = "shell" if s["command"] is None else f"command {s['command']!r}"
        shell.write(f"{s['user']:<12} {s['source']:<22} since {_when(s['since'])}  {what}")
    return 0


def _count(args: list[str], usage: str) -> int:
    if not args:
        return 20
    if not args[0].isdigit() or len(args) > 1:
        raise Usage(usage)
    return int(args[0])


def last_lines(path: Path, count: int, block: int = 64 * 1024) -> list[str]:
    """The last ``count`` whole lines of a file, reading back from its end."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    return data.decode("utf-8", errors="replace").splitlines()[-count:] if count else []


async def last(shell: Shell, args: list[str]) -> int:
    count = _count(args, "last [N]")
    for login in list(shell.api.logins)[-count:][::-1]:
        if login["ok"]:
            shell.write(f"{login['user']:<12} {login['source']:<22} {_when(login['at'])}")
        else:
            shell.write(f"{'(refused)':<12} {login['source']:<22} {_when(login['at'])}  "
                        f"{login['why']}")  # fmt: skip
    return 0


async def tail(shell: Shell, args: list[str]) -> int:
    """The end of this machine's daemon log (``tail [N]``, 20 lines)."""
    count = _count(args, "tail [N]")
    path = shell.api.config.log_file
    try:
        lines = await asyncio.to_thread(last_lines, path, count)  # off the event loop
    except OSError as exc:
        raise ClusterdError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in lines:
        shell.write(line)
    return 0


async def ping(shell: Shell, args: list[str]) -> int:
    """A query's round trip to a member, over the mesh (routed if need be).

    Exit 1 with the reason when the machine is standalone, the name is no member (host
    names match case-insensitively, a final dot allowed), it is this machine, or the
    member gives no answer."""
    if len(args) != 1:
        raise Usage("ping MEMBER")
    if shell.cluster is None:
        raise ClusterdError("this machine is not in a cluster: there is no member to ping")
    me = shell.api.config.serial
    by_name = {e.hostname.lower(): e for e in shell.api.members().values()}
    peer = by_name.get(args[0].lower().rstrip("."))
    if peer is None:
        others = ", ".join(sorted(e.hostname for e in by_name.values() if e.serial != me))
        raise ClusterdError(f"{args[0]!r} is not a member of cluster {shell.cluster} "
                            f"(other members: {others or 'none'})")  # fmt: skip
    if peer.serial == me:
        raise ClusterdError(f"{peer.hostname} is this machine: ping another member")
    for _ in range(3):
        started = time.perf_counter()
        answered = await shell.api.ask(peer.serial, "digest", {}, 5.0)
        took = (time.perf_counter() - started) * 1000
        if not answered.ok:
            why = str(answered.body)  # "no route to X", "no answer within 5.0 s", ...
            shell.write(f"{peer.hostname}: " + (why if why.startswith("no answer")
                                                else f"no answer ({why})"))  # fmt: skip
            return 1
        shell.write(f"{peer.hostname}: answered in {took:.1f} ms")
    return 0


async def nslookup(shell: Shell, args: list[str]) -> int:
    """Forward (a name) or reverse (an address) lookup with the daemon's resolver."""
    if not args:
        raise Usage("nslookup NAME | ADDRESS")
    import ipaddress

    try:
        ipaddress.ip_address(args[0])
        found = await shell.api.lookup(args[0], reverse=True)
    except ValueError:
        found = await shell.api.lookup(args[0], reverse=False)
    shell.write(found.describe())
    return 0 if found.ok else 1
