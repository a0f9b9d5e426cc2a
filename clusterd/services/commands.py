"""A target's commands and probes: child processes and connections with a time-out,
never on the links' time (they are awaited by the target's own task).

A command line is split as a shell would split it (``shlex``), without a shell; the
words ``{staging}`` and ``{live}`` (or words containing them) name the directories.
A command that outlives the target's ``timeout`` is killed, with its children (it runs
in a session of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from clusterd.core.text import printable

OUTPUT = 2000  # characters of a failing command's output kept for status and the log


@dataclass(frozen=True)
class Ran:
    ok: bool
    text: str  # why not, or what it said
    returncode: int | None = None  # None: it did not run, or was killed


def argv(command: str, places: Mapping[str, str]) -> list[str]:
    words = shlex.split(command)
    for key, value in places.items():
        words = [w.replace("{" + key + "}", value) for w in words]
    return words


async def run(
    command: str, places: Mapping[str, str], timeout: float, env: Mapping[str, str] | None = None
) -> Ran:
    words = argv(command, places)
    try:
        proc = await asyncio.create_subprocess_exec(
            *words, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, umask=0o022,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    except OSError as exc:
        return Ran(False, f"cannot run {words[0]}: {exc.strerror or exc}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        _kill(proc.pid)
        await proc.wait()
        return Ran(False, f"{words[0]} timed out after {timeout:g} s: killed")
    except asyncio.CancelledError:  # the daemon stops: nothing of ours outlives it
        _kill(proc.pid)
        raise
    text = printable(out.decode(errors="replace").strip())[-OUTPUT:]
    if proc.returncode != 0:
        return Ran(False, f"{words[0]} exited {proc.returncode}: {text}", proc.returncode)
    return Ran(True, text, 0)


def _kill(pid: int) -> None:
    """The command and whatever it started (its own session, so its own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def probe(spec: str, places: Mapping[str, str], timeout: float) -> Ran:
    """``smtp HOST:PORT ...``: each answers with an SMTP greeting (220) in time; any other
    spec is a command that must succeed."""
    words = shlex.split(spec)
    if words[0] != "smtp":
        return await run(spec, places, timeout)
    for where in words[1:]:
        host, _, port = where.rpartition(":")
        found = await _smtp_banner(host.strip("[]"), int(port), timeout)
        if not found.ok:
            return Ran(False, f"{where}: {found.text}")
    return Ran(True, "every listener greets")


async def _smtp_banner(host: str, port: int, timeout: float) -> Ran:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return Ran(False, f"no connection: {exc}")
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return Ran(False, "no greeting")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    text = printable(line.decode(errors="replace").strip())
    return Ran(text.startswith("220"), text or "no greeting")
