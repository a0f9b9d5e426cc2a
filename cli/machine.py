"""Commands about the machine logged in to: who, last, tail, ping, nslookup."""

from __future__ import annotations

import time
from pathlib import Path

from cli.shell import Shell, Usage
from clusterd.errors import ClusterdError


def _when(at: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(at))


async def who(shell: Shell, args: list[str]) -> int:
    for s in sorted(shell.daemon.shells, key=lambda s: s.since):
        what = "shell" if s.command is None else f"command {s.command!r}"
        shell.write(f"{s.user:<12} {s.source:<22} since {_when(s.since)}  {what}")
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
    for login in list(shell.daemon.logins)[-count:][::-1]:
        if login["ok"]:
            shell.write(f"{login['user']:<12} {login['source']:<22} {_when(login['at'])}")
        else:
            shell.write(f"{'(refused)':<12} {login['source']:<22} {_when(login['at'])}  "
                        f"{login['why']}")  # fmt: skip
    return 0


async def tail(shell: Shell, args: list[str]) -> int:
    """The end of this machine's daemon log (``tail [N]``, 20 lines)."""
    count = _count(args, "tail [N]")
    path = shell.daemon.config.log_file
    try:
        lines = last_lines(path, count)
    except OSError as exc:
        raise ClusterdError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in lines:
        shell.write(line)
    return 0


async def ping(shell: Shell, args: list[str]) -> int:
    """A query's round trip to a member, over the mesh (routed if need be)."""
    if not args:
        raise Usage("ping MEMBER")
    peers = {e.hostname: e.serial for e in shell.daemon.peers.values()}
    if args[0] not in peers or peers[args[0]] == shell.daemon.config.serial:
        raise ClusterdError(f"{args[0]!r} is not another member of the cluster")
    for _ in range(3):
        started = time.perf_counter()
        answered = await shell.daemon.ask(peers[args[0]], "digest", {}, 5.0)
        took = (time.perf_counter() - started) * 1000
        if not answered.ok:
            shell.write(f"{args[0]}: no answer ({answered.body})")
            return 1
        shell.write(f"{args[0]}: answered in {took:.1f} ms")
    return 0


async def nslookup(shell: Shell, args: list[str]) -> int:
    """Forward (a name) or reverse (an address) lookup with the daemon's resolver."""
    if not args:
        raise Usage("nslookup NAME | ADDRESS")
    import ipaddress

    try:
        ipaddress.ip_address(args[0])
        found = await shell.daemon.resolver.reverse(args[0])
    except ValueError:
        found = await shell.daemon.resolver.forward(args[0])
    shell.write(found.describe())
    return 0 if found.ok else 1
