"""Another party's words reach admins escaped, on every path: log, tail, last, output.

A join request's host name, a member's goodbye reason, a refused user name: each may
carry terminal escapes (retitle the window, clear the screen) or a line break followed
by a forged log line.  They are refused or escaped before any line is written; what a
shell prints is escaped again, whoever wrote it.  Command lines are never logged raw.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from clusterd.dev.testbed import PASSPHRASE, Machine, Testbed
from clusterd.mesh.messages import Goodbye, encode
from clusterd.node import identity
from tests.rawssh import Key, Password, connect

EVIL = "\x1b]0;pwned\x07\x1b[2J\n2026-01-01 00:00:00 ALERT forged line"
FORGED = "\n2026-01-01 00:00:00 ALERT forged line"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 2) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        yield bed


def ssh(m: Machine, command: str) -> str:
    done = subprocess.run(identity.local_ssh(m.config, command), capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    return done.stdout.decode("utf-8", errors="replace")


def clean(text: str) -> None:
    """No escape character, and the forged line never starts a line."""
    assert "\x1b" not in text and "\x07" not in text
    assert FORGED not in text


def test_a_join_request_with_escapes_in_its_host_name_is_refused_unlogged(
    pair: Testbed,
) -> None:
    a, _ = pair.machines
    request = {"check": True, "hostname": f"evil{EVIL}.example.com", "serial": "SER-9",
               "software": "1", "group": "Main_Group", "machine": {}}  # fmt: skip

    async def go() -> dict[str, object]:
        conn = await connect(a.config.listen, a.config.ssh_port, [Password("admin", PASSPHRASE)])
        async with conn:
            process = await conn.create_process(subsystem="clusterd-join", encoding=None)
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.write_eof()
            answer: dict[str, object] = json.loads(await process.stdout.read())
            return answer

    answer = asyncio.run(go())
    assert answer["ok"] is False and str(answer["error"]).startswith("malformed join request")
    log = (a.dir / "clusterd.log").read_text()
    assert "join of ? refused: malformed join request" in log
    clean(log)
    clean(ssh(a, "tail 50"))


def test_a_goodbye_with_escapes_is_logged_and_shown_escaped(pair: Testbed) -> None:
    """A member's key on a second link says goodbye with a hostile reason."""
    a, b = pair.machines

    async def go() -> None:
        key = asyncssh.read_private_key(b.config.machine_key)
        conn = await connect(a.config.listen, a.config.ssh_port, [Key("clusterd", key)])
        async with conn:
            process = await conn.create_process(subsystem="clusterd", encoding=None)
            process.stdin.write(encode(Goodbye(code="protocol", reason=EVIL)))
            await asyncio.wait_for(process.stdout.read(), 10)

    asyncio.run(go())
    pair.wait(lambda: "pwned" in (a.dir / "clusterd.log").read_text(), what="logged")
    log = (a.dir / "clusterd.log").read_text()
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x0a2026-01-01 00:00:00 ALERT forged line" in log
    clean(log)
    for command in ("tail 50", "status", "last", "status --json"):
        clean(ssh(a, command))


def test_a_mistyped_command_is_not_logged_with_its_passphrase(pair: Testbed) -> None:
    a, _ = pair.machines
    out = ssh(a, "clusterconfg join 10.0.0.1 admin 'hunter2 is my secret'")
    assert "Unknown command: clusterconfg" in out
    log = (a.dir / "clusterd.log").read_text()
    assert "hunter2" not in log
    assert "admin runs 'clusterconfg ***'" in log
