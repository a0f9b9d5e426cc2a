"""Security campaign on real daemons: every attempt below is refused and logged.

Wrong passphrases (the lockout holds, even for the right one), unknown keys, a member
whose host key changed, shells / exec / SFTP / port forwarding on the CCS port, a guest
trying anything but passwd, and a member removed while away trying to come back.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import asyncssh

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import config as cfg
from clusterd.node import identity
from clusterd.schema.access import hash_passphrase
from tests.test_join_processes import americas

GUEST = "visitor"
GUEST_PASSPHRASE = "just looking around"


def log_of(m: Machine) -> str:
    return (m.dir / "clusterd.log").read_text(errors="replace")


async def _login(m: Machine, user: str, **auth: Any) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        m.config.listen, m.config.ssh_port, username=user, known_hosts=None, config=None,
        agent_path=None, **auth,
    )  # fmt: skip


async def _run(m: Machine, user: str, command: str, **auth: Any) -> asyncssh.SSHCompletedProcess:
    async with await _login(m, user, **auth) as conn:
        return await conn.run(command, check=False)


def test_passphrase_lockout_holds_and_is_logged(tmp_path: Path) -> None:
    from clusterd.dev.testbed import PASSPHRASE

    async def attempts(m: Machine) -> list[str]:
        outcomes = []
        for password in ["guess one", "guess two", "guess three", PASSPHRASE]:
            try:
                done = await _run(m, "admin", "version", password=password, client_keys=None)
                outcomes.append(f"ok {done.exit_status}")
            except asyncssh.PermissionDenied:
                outcomes.append("denied")
        return outcomes

    with Testbed(tmp_path, 1, seed=False, login_failures=3, login_lockout=60.0) as bed:
        bed.start()
        (m,) = bed.machines
        assert asyncio.run(attempts(m)) == ["denied"] * 4  # the right one too, once locked
        text = log_of(m)
        assert text.count("wrong passphrase for user 'admin'") == 3
        assert "locked out for 60 s" in text
        assert "too many failed logins from 127.0.0.1" in text
        last = [x for x in m.status()["alerts"] if "login" in x["text"]]
        assert len(last) >= 4


def openssh_passphrase_login(
    m: Machine, key: Path, passphrase: str, where: Path
) -> subprocess.CompletedProcess[str]:
    """``ssh -i KEY admin@m version`` with the real OpenSSH client: KEY offered first,
    then ``passphrase``, given by an SSH_ASKPASS program (once: NumberOfPasswordPrompts)."""
    askpass = where / f"askpass-{len(list(where.glob('askpass-*')))}"
    askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{passphrase}'\n", encoding="utf-8")
    askpass.chmod(0o700)
    argv = identity.local_ssh(m.config, "version")
    argv[argv.index("-i") + 1] = str(key)
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=INFO"  # show the banners (the reasons)
    argv[-2:-2] = ["-o", "PreferredAuthentications=publickey,password",
                   "-o", "NumberOfPasswordPrompts=1"]  # fmt: skip
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env
    )


def test_keys_an_admin_client_offers_first_do_not_lock_out(tmp_path: Path) -> None:
    """OpenSSH offers ~/.ssh/id_* before it asks for the passphrase: a key the daemon
    does not know is refused (and logged) but is no failed login, so an admin with one
    such key who types the right passphrase logs in every time; wrong passphrases still
    lock the address out."""
    from clusterd.dev.testbed import PASSPHRASE

    where = tmp_path / "client"
    where.mkdir()
    key = where / "id_ed25519"  # registered nowhere
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(key)
    key.chmod(0o600)
    with Testbed(tmp_path, 1, seed=False, login_failures=3, login_lockout=60.0) as bed:
        bed.start()
        (m,) = bed.machines
        for _ in range(6):  # twice login_failures, well within login_window
            done = openssh_passphrase_login(m, key, PASSPHRASE, where)
            assert done.returncode == 0 and "clusterd" in done.stdout, done
        text = log_of(m)
        assert text.count("is not an admin key of user 'admin'") >= 6  # refused, logged
        assert "locked out" not in text
        for _ in range(3):
            done = openssh_passphrase_login(m, key, "a wrong guess", where)
            assert done.returncode == 255 and "wrong passphrase" in done.stderr, done
        done = openssh_passphrase_login(m, key, PASSPHRASE, where)
        assert done.returncode == 255 and "too many failed logins" in done.stderr, done
        text = log_of(m)
        assert text.count("wrong passphrase for user 'admin'") == 3
        assert "3 failed logins; locked out for 60 s" in text
        refused = [x for x in list(m.status()["alerts"]) if "wrong passphrase" in x["text"]]
        assert len(refused) == 3


def test_unknown_keys_are_refused_for_admins_and_peers(tmp_path: Path) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")

    async def attempts(m: Machine) -> list[str]:
        found = []
        for user in ("admin", "clusterd", "clusterd-join"):
            try:
                await _run(m, user, "version", client_keys=[stranger], password=None)
                found.append("accepted")
            except asyncssh.PermissionDenied:
                found.append("denied")
        return found

    with Testbed(tmp_path, 1, seed=False) as bed:
        bed.start()
        (m,) = bed.machines
        assert asyncio.run(attempts(m)) == ["denied"] * 3
        fp = stranger.get_fingerprint()
        text = log_of(m)
        assert f"key {fp} is not an admin key of user 'admin'" in text
        assert "not a member's machine key" in text and fp in text
        assert f"key {fp} is not registered with PREPJOIN here" in text


def test_a_member_whose_host_key_changed_is_not_trusted(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=0.5) as bed:  # seeded membership pins both host keys
        a, b = bed.machines
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(b.config.host_key)
        b.config.host_key.chmod(0o600)
        cfg.save(b.config, blocked_peers=[a.serial])  # only a dials: b's key is what it meets
        bed.start()
        bed.wait(
            lambda: "not the one membership records" in log_of(a),
            what="a refusing b's new host key",
        )
        peer = next(p for p in a.status()["peers"] if p["hostname"] == b.hostname)
        assert peer["state"] != "up" and "host key" in peer["reason"]


def test_ccs_port_serves_no_shell_exec_sftp_or_forwarding(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ccs=True) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked over CCS")
        a, b = bed.machines
        key = b.dir / "machine_ed25519_key"  # a member's key: it may open links, nothing else
        base = ["-p", str(a.config.ccs_port), "-i", str(key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]  # fmt: skip
        target = "clusterd@127.0.0.1"

        def run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)

        shell = run(["ssh", "-tt", *base, target], stdin="id\nexit\n")
        execd = run(["ssh", *base, target, "id"])
        sftp = run(["sftp", "-P", *base[1:], target], stdin="ls\n")
        forward = run(["ssh", *base, "-N", "-o", "ExitOnForwardFailure=yes",
                       "-R", "127.0.0.1:0:127.0.0.1:22", target])  # fmt: skip
        asyncio.run(_direct_tcpip(a, key))
        for done in (shell, execd, sftp, forward):
            assert done.returncode != 0 and "uid=" not in done.stdout, done
        text = log_of(a)
        assert "refused a shell on the CCS port" in text
        assert "refused exec 'id' on the CCS port" in text
        assert "refused subsystem 'sftp' on the CCS port" in text
        assert "refused remote forwarding on the CCS port" in text
        assert "refused port forwarding on the CCS port" in text
        assert bed.linked()  # the cluster itself is unaffected


async def _direct_tcpip(m: Machine, key: Path) -> None:
    """A local forward (direct-tcpip channel) asked of the CCS port: refused."""
    async with asyncssh.connect(
        m.config.listen, m.config.ccs_port, username="clusterd", known_hosts=None,
        config=None, agent_path=None, client_keys=[asyncssh.read_private_key(key)],
    ) as conn:  # fmt: skip
        try:
            await conn.open_connection("127.0.0.1", m.config.ssh_port)
        except asyncssh.ChannelOpenError:
            return
        raise AssertionError("the CCS port opened a forwarded connection")


def _add_guest(m: Machine) -> None:
    m.edit(
        {
            "do": "set_row",
            "feature": "userconfig",
            "mode": "cluster",
            "row": GUEST,
            "value": {"role": "guest", "passphrase_hash": hash_passphrase(GUEST_PASSPHRASE)},
        },
        comment="a guest",
    )


def test_a_guest_may_only_change_its_passphrase(tmp_path: Path) -> None:
    async def calls(m: Machine) -> dict[str, tuple[int | None, str]]:
        found = {}
        for command in ["settz print", "clusterconfig list", "commit", "status", "help"]:
            done = await _run(m, GUEST, command, password=GUEST_PASSPHRASE, client_keys=None)
            found[command] = (done.exit_status, str(done.stdout))
        return found

    with Testbed(tmp_path, 1, seed=False) as bed:
        bed.start()
        (m,) = bed.machines
        m.op("create", name="americas")
        _add_guest(m)
        found = asyncio.run(calls(m))
        for command in ["settz print", "clusterconfig list", "commit", "status"]:
            status, out = found[command]
            assert status == 1 and "is a guest: only" in out, (command, found[command])
        assert found["help"][0] == 0
        assert f"{GUEST} runs 'settz print'" in log_of(m)


def test_a_member_removed_while_away_cannot_come_back(tmp_path: Path) -> None:
    """c disconnects; a removes it (at once: a disconnected machine is not waited for);
    c's RECONNECT is refused by every member, which tells it who removed it and when (the
    SSH banner): RECONNECT says so and fails, c shows its peers refused (not down) and
    alerts once per member, not once per retry."""
    import time

    with Testbed(tmp_path, 3, seed=False) as bed:
        bed.start()
        a, b, c = americas(bed)
        c.op("disconnect")
        bed.wait(lambda: bed.linked([a, b]), what="a and b linked")
        started = time.monotonic()
        removed = a.op("removemachine", machine=c.hostname)
        assert time.monotonic() - started < 3 and removed["flattened"] is False
        assert "it is disconnected" in removed["warning"]
        bed.wait(lambda: c.hostname not in str(b.op("list")["groups"]), what="b forgets c")
        done = subprocess.run(identity.local_ssh(c.config, "clusterconfig reconnect"),
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        why = f"{c.hostname} was removed from the cluster by 'admin' on {a.hostname} at "
        assert done.returncode == 1, done.stdout
        assert why in done.stdout and "its settings are kept here" in done.stdout, done.stdout
        assert all(why in log_of(m) for m in (a, b))
        peers = c.status()["peers"]
        assert all(p["state"] == "refused" and why in p["reason"] for p in peers), peers
        time.sleep(3)  # retries go on; alerts do not
        alerts = [x for x in c.status()["alerts"] if why in x["text"]]
        assert len(alerts) == 2, alerts
        assert bed.linked([a, b])
