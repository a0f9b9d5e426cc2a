"""Roles over the real channel: read at every command and at commit, on every member.

An operator logged in to one member is demoted or deleted on another; what its open
shell may do follows at once.  Operators do not manage users; nobody sees a passphrase
hash (``set`` stands for it); only an admin saves the configuration, hashes included.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.schema.access import hash_passphrase
from tests.test_clustercheck import diverge_time_zones

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@dataclass
class People:
    bed: Testbed
    keys: dict[str, Path]  # user -> private key file


def _public(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key().decode().split()[:2])


def add_users(
    m: Machine, where: Path, roles: dict[str, str], mode: str = "cluster"
) -> dict[str, Path]:
    """Users with these roles, each with a key of its own in sshconfig admin_keys (at
    ``mode``: a standalone machine's are at machine level)."""
    keys, rows, admin_keys = {}, [], []
    for user, role in roles.items():
        key = asyncssh.generate_private_key("ssh-ed25519")
        keys[user] = where / f"{user}_key"
        key.write_private_key(keys[user])
        keys[user].chmod(0o600)  # (as OpenSSH requires of a private key)
        admin_keys.append({"user": user, "key": _public(key)})
        value = {"role": role, "passphrase_hash": hash_passphrase(user * 3)}
        rows.append({"do": "set_row", "feature": "userconfig", "mode": mode, "row": user,
                     "value": value})  # fmt: skip
    settings = m.op("effective")["values"]["sshconfig"]
    settings["admin_keys"] = admin_keys
    m.edit(*rows, {"do": "set_record", "feature": "sshconfig", "mode": mode,
                   "value": settings}, comment="users")  # fmt: skip
    return keys


@pytest.fixture
def people(tmp_path: Path) -> Iterator[People]:
    with Testbed(tmp_path, 2) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, _ = bed.machines
        a.edit({"do": "define", "feature": "settz", "mode": "cluster", "start": "defaults"})
        keys = add_users(a, tmp_path, {"opal": "operator", "rita": "read-only"})
        bed.wait(bed.converged, what="users everywhere")
        yield People(bed, keys)


class Session:
    """An interactive shell over SSH with a PTY: type a line, read until some text."""

    def __init__(self, process: asyncssh.SSHClientProcess[str]) -> None:
        self.process = process
        self.screen = ""

    async def until(self, text: str, timeout: float = 20.0) -> str:
        while text not in ANSI.sub("", self.screen):
            chunk = await asyncio.wait_for(self.process.stdout.read(65536), timeout)
            if not chunk:
                raise AssertionError(f"the session ended before {text!r}:\n{self.text}")
            self.screen += chunk
        return self.text

    @property
    def text(self) -> str:
        return ANSI.sub("", self.screen)

    async def line(self, line: str, until: str) -> str:
        self.process.stdin.write(line + "\r")
        return await self.until(until)


async def login(m: Machine, user: str, key: Path) -> tuple[asyncssh.SSHClientConnection, Session]:
    conn = await asyncssh.connect(m.config.listen, m.config.ssh_port, username=user,
                                  client_keys=[asyncssh.read_private_key(key)],
                                  known_hosts=None, config=None, agent_path=None)  # fmt: skip
    process = await conn.create_process(term_type="xterm", term_size=(200, 50))
    session = Session(process)
    await session.until(f"(Machine {m.hostname})>")
    return conn, session


def _role(m: Machine, user: str, role: str | None) -> None:
    if role is None:
        edit = {"do": "delete_row", "feature": "userconfig", "mode": "cluster", "row": user}
    else:
        edit = {"do": "set_row", "feature": "userconfig", "mode": "cluster", "row": user,
                "value": {"role": role, "passphrase_hash": hash_passphrase(user * 3)}}  # fmt: skip
    m.edit(edit, comment=f"{user}: {role}")


def test_an_operator_demoted_on_another_member_cannot_commit(people: People) -> None:
    a, b = people.bed.machines

    async def go() -> tuple[str, str]:
        conn, opal = await login(a, "opal", people.keys["opal"])
        async with conn:
            await opal.line("clustermode cluster", "Continue?")
            await opal.line("y", "(Cluster testbed)>")
            await opal.line("settz set timezone=Asia/Tokyo", "(Cluster testbed)>")
            _role(b, "opal", "read-only")  # on the other member
            people.bed.wait(people.bed.converged, what="the demotion everywhere")
            refused = await opal.line("commit after my demotion", "may not commit")
            _role(b, "opal", None)  # and now deleted
            ended = await opal.until("Session closed")
            await asyncio.wait_for(opal.process.wait_closed(), 10)
            return refused, ended

    refused, ended = asyncio.run(go())
    assert "opal (read-only) may not commit changes" in refused
    assert "Session closed: user 'opal' was removed from the cluster's users" in ended
    assert a.op("effective")["values"]["settz"]["timezone"] != "Asia/Tokyo"  # nothing


def test_an_operator_demoted_while_clustercheck_asks_cannot_force(people: People) -> None:
    """Forcing a version is a commit: the role is read again when the answer comes."""
    bed = people.bed
    a, b = bed.machines
    diverge_time_zones(bed, a, b)

    async def go() -> str:
        conn, opal = await login(a, "opal", people.keys["opal"])
        async with conn:
            await opal.line("clustercheck", 'switch to "cluster" mode?')
            await opal.line("", "How do you want to resolve this inconsistency?")
            _role(b, "opal", "read-only")
            bed.wait(lambda: a.op("effective")["values"]["userconfig"]["opal"]["role"]
                     == "read-only", what="the demotion here")  # fmt: skip
            return await opal.line("2", "may not commit")

    screen = asyncio.run(go())
    assert "opal (read-only) may not commit changes" in screen
    assert "The whole cluster now uses" not in screen
    zones = {m.op("effective")["values"]["settz"]["timezone"] for m in (a, b)}
    assert zones == {"Asia/Tokyo"}  # the later change, still; nothing was forced


def _exec(m: Machine, user: str, key: Path, command: str) -> tuple[int | None, str]:
    async def go() -> tuple[int | None, str]:
        async with asyncssh.connect(
            m.config.listen, m.config.ssh_port, username=user, known_hosts=None, config=None,
            client_keys=[asyncssh.read_private_key(key)], agent_path=None,
        ) as conn:  # fmt: skip
            done = await conn.run(command, check=False)
            return done.exit_status, str(done.stdout)

    return asyncio.run(go())


def test_operators_do_not_manage_users_or_ssh_settings(people: People) -> None:
    a, _ = people.bed.machines
    key = people.keys["opal"]
    line = f"userconfig edit admin passphrase_hash={hash_passphrase('taken over!')}; commit x"
    status, out = _exec(a, "opal", key, f"clustermode cluster; {line}")
    assert status == 1 and "opal (operator) may not change userconfig" in out, out
    status, out = _exec(a, "opal", key, "clustermode cluster; sshconfig set kex_algorithms="
                                         "curve25519-sha256; commit x")  # fmt: skip
    assert status == 1 and "opal (operator) may not change sshconfig" in out, out
    status, out = _exec(a, "opal", key, "saveconfig mine.xml")
    assert status == 1 and "may not save the configuration" in out, out
    # ... but an operator changes other settings, and its own passphrase (passwd: not
    # a one-command call, it asks) stays its own business.
    status, out = _exec(a, "opal", key, "clustermode cluster; settz set timezone=UTC; commit")
    assert status == 0, out


def test_nobody_sees_a_passphrase_hash_but_saveconfig_keeps_them(people: People) -> None:
    a, _ = people.bed.machines
    hashed = a.op("effective")["values"]["userconfig"]["rita"]["passphrase_hash"]
    for user in ("rita", "opal"):
        key = people.keys[user]
        for command in ("clustermode cluster; userconfig print", "explain userconfig --json",
                        "explain userconfig", "userconfig"):  # fmt: skip
            _, out = _exec(a, user, key, command)
            assert "scrypt$" not in out and hashed not in out, (user, command, out)
        _, out = _exec(a, user, key, "explain userconfig --json")
        assert json.loads(out)["value"]["rita"]["passphrase_hash"] == "set"
    admin_key = a.config.admin_key
    _, out = _exec(a, "admin", admin_key, "clustermode cluster; userconfig print")
    assert '"passphrase_hash": "set"' in out and "scrypt$" not in out  # admins too
    status, out = _exec(a, "admin", admin_key, "saveconfig all.xml")
    assert status == 0, out
    assert hashed in (a.dir / "configs" / "all.xml").read_text()  # the file keeps them
