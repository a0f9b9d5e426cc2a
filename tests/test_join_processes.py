"""Create, join, PREPJOIN, CCS, refusals, groups and removal: real daemons on loopback.

Each test starts its own standalone machines (``Testbed(seed=False)``) and builds the
cluster only through the daemon's operations; the OpenSSH tools check what a person
would check (``ssh-keyscan`` + ``ssh-keygen -l`` for the host key fingerprint, ``ssh``
against the CCS port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from clusterd.dev.testbed import PASSPHRASE, Machine, Testbed
from clusterd.mesh.transport.ssh import PEER_USER

TZ = {"do": "set_record", "feature": "settz", "value": {"timezone": "Europe/Paris"}}
IFACE = {
    "do": "set_row",
    "feature": "interfaceconfig",
    "row": "Management",
    "value": {"address": "127.0.0.1", "prefix": 8, "hostname": "mgmt.example.com"},
}


def at(edit: dict[str, Any], mode: str) -> dict[str, Any]:
    return {**edit, "mode": mode}


def define(feature: str, mode: str, start: str = "defaults") -> dict[str, Any]:
    return {"do": "define", "feature": feature, "mode": mode, "start": start}


def keyscan_fingerprint(m: Machine, port: int | None = None) -> str:
    """The member's fingerprint as OpenSSH shows it: ssh-keyscan piped to ssh-keygen -l."""
    port = port or m.config.ssh_port
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", "-"],
        input=scan.stdout,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return listed.stdout.split()[1]


CLUSTERD = [sys.executable, "-m", "clusterd"]


def join_cli(m: Machine, member: Machine, *args: str, answers: str = "") -> Any:
    env = {**os.environ, "CLUSTERD_PASSPHRASE": PASSPHRASE}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "clusterd",
            "join",
            "--data-dir",
            str(m.dir),
            "127.0.0.1",
            "--port",
            str(member.config.ssh_port),
            *args,
        ],
        input=answers,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


def snapshot(*machines: Machine) -> list[tuple[Any, ...]]:
    """What must not change when an operation is refused."""
    found = []
    for m in machines:
        s = m.status()
        found.append((m.hostname, s["cluster"], s["vv"], s["digest"]))
    return found


def effective(m: Machine) -> dict[str, Any]:
    values: dict[str, Any] = m.op("effective")["values"]
    return values


def cluster_of(m: Machine) -> str | None:
    return m.status()["cluster"]  # type: ignore[no-any-return]


def americas(bed: Testbed) -> list[Machine]:
    """Machine 0 creates cluster americas, the others join it over SSH; all linked."""
    first, *others = bed.machines
    first.op("create", name="americas")
    for m in others:
        m.join(first)
    bed.wait(bed.linked, what="linked")
    return bed.machines


@pytest.fixture
def three(tmp_path: Path) -> Any:
    with Testbed(tmp_path, 3, seed=False) as bed:
        bed.start()
        yield bed


def test_create_promotes_settings_and_keeps_network_at_machine(three: Testbed) -> None:
    a = three[0]
    me = f"machine:{a.hostname}"
    a.edit(define("settz", me), at(TZ, me), define("interfaceconfig", me, "empty"), at(IFACE, me))
    before = effective(a)
    a.op("create", name="americas")
    assert cluster_of(a) == "americas"
    assert a.op("get", feature="settz", mode="cluster")["value"] == {"timezone": "Europe/Paris"}
    assert a.op("get", feature="settz", mode=me)["value"] is None
    assert a.op("get", feature="interfaceconfig", mode="cluster")["value"] is None
    assert "Management" in a.op("get", feature="interfaceconfig", mode=me)["value"]
    assert a.op("list")["text"] == (
        f"cluster = americas\nGroup Main_Group:\nMachine {a.hostname} (Serial #: {a.serial})"
    )
    assert effective(a) == before  # effective at once, same behaviour
    assert "already a member" in a.refused("create", name="again")


def test_join_over_ssh_confirming_the_fingerprint(three: Testbed) -> None:
    a, b, _ = three.machines
    a.op("create", name="americas")
    a.edit(at(TZ, "cluster"))
    mb = f"machine:{b.hostname}"
    b.edit(define("interfaceconfig", mb, "empty"), at(IFACE, mb))
    shown = keyscan_fingerprint(a)
    # Declining the key changes nothing.
    declined = join_cli(b, a, answers="no\n")
    assert declined.returncode == 1, declined.stderr
    assert shown in declined.stdout and "not confirmed" in declined.stdout
    assert cluster_of(b) is None
    # Confirming the key, then declining at the dry-run report, changes nothing either.
    cancelled = join_cli(b, a, answers="yes\nno\n")
    assert cancelled.returncode == 1, cancelled.stderr
    assert "userconfig" in cancelled.stdout and "Join cancelled" in cancelled.stdout
    assert cluster_of(b) is None and not list(b.dir.glob("standalone-*.json"))
    done = join_cli(b, a, answers="yes\nyes\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"The host key fingerprint of 127.0.0.1 port {a.config.ssh_port} is\n  {shown}" in (
        done.stdout
    )
    assert "Is this a valid key for this host?" in done.stdout
    saved = list(b.dir.glob("standalone-*.json"))
    assert len(saved) == 1 and "interfaceconfig" in saved[0].read_text()
    three.wait(lambda: three.linked([a, b]), what="a and b linked")
    three.wait(lambda: three.converged([a, b]), what="a and b converged")
    assert cluster_of(b) == "americas"
    assert effective(b)["settz"] == {"timezone": "Europe/Paris"}  # inherited
    kept = b.op("get", feature="interfaceconfig", mode=mb)["value"]
    assert "Management" in kept  # network settings stay the machine's
    groups = a.op("list")["groups"]
    assert set(groups["Main_Group"]) == {a.hostname, b.hostname}
    pinned = groups["Main_Group"][b.hostname]["host_key"]
    assert pinned.split()[1] in b.config.host_key.with_suffix(".pub").read_text()


def test_join_non_interactive_with_fingerprint(three: Testbed) -> None:
    a, b, c = three.machines
    a.op("create", name="americas")
    fp = keyscan_fingerprint(a)
    done = join_cli(b, a, "--fingerprint", fp, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Do you want to join" not in done.stdout and "valid key" not in done.stdout
    # Joining through a member that is not the creator works the same way.
    done = join_cli(c, b, "--fingerprint", keyscan_fingerprint(b), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    three.wait(three.linked, what="three linked")
    three.wait(three.converged, what="three converged")


def test_join_into_a_named_group_inherits_its_settings(three: Testbed) -> None:
    a, b, _ = three.machines
    a.op("create", name="americas")
    a.op("addgroup", group="Paris")
    a.edit(define("settz", "group:Paris"), at(TZ, "group:Paris"))
    fp = keyscan_fingerprint(a)
    done = join_cli(b, a, "--fingerprint", fp, "--group", "Paris", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"through {a.hostname}, group Paris." in done.stdout
    assert f"  {'userconfig':<20} Users: admin\n" in done.stdout  # what is lost, by name
    three.wait(lambda: three.linked([a, b]), what="a and b linked")
    three.wait(lambda: three.converged([a, b]), what="a and b converged")
    assert a.op("list")["groups"]["Paris"].keys() == {b.hostname}
    assert effective(b)["settz"] == {"timezone": "Europe/Paris"}  # the group's
    assert effective(a)["settz"] == {"timezone": "UTC"}  # Main_Group keeps the default


ONLY_ADMIN = "only an admin may add a machine"


def test_join_as_a_non_admin_or_with_a_taken_serial_is_refused(
    three: Testbed, tmp_path: Path
) -> None:
    from clusterd.schema.access import hash_passphrase

    a, b, c = three.machines
    a.op("create", name="americas")
    b.join(a)
    three.wait(lambda: three.linked([a, b]), what="a and b linked")
    oper = {"full_name": "Oper", "role": "operator", "passphrase_hash": hash_passphrase("op" * 5)}
    a.edit({"do": "set_row", "feature": "userconfig", "mode": "cluster", "row": "oper",
            "value": oper})  # fmt: skip
    three.wait(lambda: three.converged([a, b]), what="user oper replicated")
    twin = Machine(tmp_path / "twin", 1, 0.5, {}, hostname="twin.example.com")  # b's serial
    twin.start()
    try:
        addr = {"address": "127.0.0.1", "port": a.config.ssh_port, "fingerprint": a.fingerprint()}
        before = snapshot(a, b, c, twin)
        text = c.refused("join", **addr, user="oper", passphrase="op" * 5)
        assert text == f"user 'oper' is not a cluster admin (role operator): {ONLY_ADMIN}"
        assert snapshot(a, b, c, twin) == before
        text = twin.refused("join", **addr, passphrase=PASSPHRASE)
        assert text == f"serial {b.serial} already belongs to member {b.hostname}"
        assert snapshot(a, b, c, twin) == before
        assert not [*c.dir.glob("standalone-*.json"), *twin.dir.glob("standalone-*.json")]
        # The dry run refuses both the same way.
        assert "not a cluster admin" in c.refused("join", **addr, user="oper",
                                                   passphrase="op" * 5, dry_run=True)  # fmt: skip
        assert "already belongs" in twin.refused("join", **addr, passphrase=PASSPHRASE,
                                                 dry_run=True)  # fmt: skip
        assert snapshot(a, b, c, twin) == before
    finally:
        twin.stop()


def test_join_with_prepjoin_key_needs_no_passphrase(three: Testbed) -> None:
    a, b, _ = three.machines
    a.op("create", name="americas")
    printed = subprocess.run(
        [sys.executable, "-m", "clusterd", "prepjoin", "--data-dir", str(b.dir), "print"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert b.hostname in printed.stdout and b.serial in printed.stdout
    info = b.op("prepjoin_print")
    assert info["machine_key"].startswith("ssh-ed25519 ")
    args = {"address": "127.0.0.1", "port": a.config.ssh_port, "fingerprint": a.fingerprint()}
    # Not registered yet: refused, nothing changes.
    before = snapshot(a, b)
    assert "PREPJOIN" in b.refused("join", **args)
    assert snapshot(a, b) == before
    entry = {"hostname": b.hostname, "serial": b.serial, "machine_key": info["machine_key"]}
    a.edit({"do": "prepjoin_new", **entry}, comment="prepare b")
    assert b.hostname in a.op("list")["prepared"]
    a.edit({"do": "prepjoin_delete", "hostname": b.hostname})
    assert a.op("list")["prepared"] == {}
    assert "PREPJOIN" in b.refused("join", **args)
    a.edit({"do": "prepjoin_new", **entry})
    b.op("join", **args)
    three.wait(lambda: three.linked([a, b]), what="a and b linked")
    assert a.op("list")["prepared"] == {}  # a prepared key is good for one join
    assert cluster_of(b) == "americas"


def test_join_over_ccs_then_turn_ccs_off(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, seed=False, ccs_enabled=True) as bed:
        bed.start()
        a, b = bed.machines
        b.op("ccs", enabled=False)  # b starts without CCS: the join turns it on
        assert b.status()["cluster"] is None
        a.op("create", name="americas")
        info = b.op("prepjoin_print")
        a.edit({"do": "prepjoin_new", **{k: info[k] for k in ("hostname", "serial")},
                "machine_key": info["machine_key"]})  # fmt: skip
        ccs = {"address": "127.0.0.1", "port": a.config.ccs_port, "ccs": True}
        fp = keyscan_fingerprint(a, a.config.ccs_port)
        assert "not a passphrase" in b.refused("join", **ccs, fingerprint=fp, passphrase=PASSPHRASE)
        b.op("join", **ccs, fingerprint=fp, enable_ccs=True)
        bed.wait(bed.linked, what="linked over CCS")
        row = a.op("list")["groups"]["Main_Group"][b.hostname]
        assert row["transport"] == "ccs" and row["ccs_port"] == b.config.ccs_port
        # The CCS port serves the cluster only: a real ssh client gets no shell.
        key = b.dir / "machine_ed25519_key"
        refused = subprocess.run(
            ["ssh", "-p", str(b.config.ccs_port), "-i", str(key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "IdentitiesOnly=yes", "clusterd@127.0.0.1", "id"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode != 0 and "uid=" not in refused.stdout
        # Turn CCS off on b: members reach it over SSH, nothing is rebuilt.
        b.op("ccs", enabled=False)
        bed.wait(
            lambda: a.op("list")["groups"]["Main_Group"][b.hostname]["transport"] == "ssh",
            what="row back to ssh",
        )
        with pytest.raises(OSError):
            import socket

            socket.create_connection(("127.0.0.1", b.config.ccs_port), timeout=2).close()
        a.stop()
        a.start()
        bed.wait(bed.linked, what="relinked over SSH")
        assert "ccs_enabled = false" in (b.dir / "clusterd.toml").read_text()


def test_every_refusal_says_why_and_changes_nothing(tmp_path: Path) -> None:
    with Testbed(tmp_path / "bed", 3, seed=False) as bed:
        bed.start()
        a, b, c = bed.machines
        a.op("create", name="americas")
        b.join(a)
        bed.wait(lambda: bed.linked([a, b]), what="a and b linked")
        twin = Machine(tmp_path / "twin", 1, 0.5, {})  # host name of b, another serial
        other = Machine(tmp_path / "other", 7, 0.5, {"software_version": "0.0.1-other"})
        twin.start()
        other.start()
        try:
            addr = {"address": "127.0.0.1", "port": a.config.ssh_port}
            fp = a.fingerprint()
            before = snapshot(a, b, c, twin, other)

            text = c.refused("join", **addr, fingerprint=fp, passphrase="not the passphrase")
            assert "wrong passphrase for user 'admin'" in text
            text = c.refused("join", **addr, fingerprint=fp)  # no passphrase: key, unregistered
            assert "not registered with PREPJOIN" in text
            wrong = "SHA256:" + "A" * 43
            text = c.refused("join", **addr, fingerprint=wrong, passphrase=PASSPHRASE)
            assert "fingerprint mismatch" in text and fp in text and wrong in text
            text = other.refused("join", **addr, fingerprint=fp, passphrase=PASSPHRASE)
            assert "software versions differ" in text and "0.0.1-other" in text
            text = twin.refused("join", **addr, fingerprint=fp, passphrase=PASSPHRASE)
            assert f"a machine named {b.hostname} is already a member" in text
            text = c.refused("join", **addr, fingerprint=fp, passphrase=PASSPHRASE, group="Nope")
            assert "no group 'Nope'" in text
            assert snapshot(a, b, c, twin, other) == before
            assert not list(c.dir.glob("standalone-*.json"))

            # SSH algorithm mismatch: the cluster accepts one key exchange, c offers another.
            a.edit({"do": "set_record", "feature": "sshconfig", "mode": "cluster",
                    "value": {"kex_algorithms": ["curve25519-sha256"]}})  # fmt: skip
            mc = f"machine:{c.hostname}"
            dh14 = {"kex_algorithms": ["diffie-hellman-group14-sha256"]}
            kex = {"do": "set_record", "feature": "sshconfig", "mode": mc, "value": dh14}
            c.edit(define("sshconfig", mc), kex)
            bed.wait(lambda: bed.converged([a, b]), what="sshconfig replicated")
            before = snapshot(a, b, c)
            refusals: list[str] = []

            def mismatch_refused() -> bool:  # a's listener restarts with the new algorithms
                refusals.append(c.refused("join", **addr, fingerprint=fp, passphrase=PASSPHRASE))
                return "SSH algorithm mismatch" in refusals[-1]

            bed.wait(mismatch_refused, timeout=10, what="the key exchange mismatch")
            text = refusals[-1]
            assert "This machine offers: diffie-hellman-group14-sha256." in text
            assert "offers: curve25519-sha256" in text
            assert snapshot(a, b, c) == before
            assert bed.linked([a, b])  # links already up keep working
        finally:
            twin.stop()
            other.stop()


def test_failed_passphrases_lock_the_source_out(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, seed=False, login_failures=3, login_lockout=30.0) as bed:
        bed.start()
        a, b = bed.machines
        a.op("create", name="americas")
        addr = {"address": "127.0.0.1", "port": a.config.ssh_port, "fingerprint": a.fingerprint()}
        for _ in range(3):
            assert "wrong passphrase" in b.refused("join", **addr, passphrase="guess guess")
        text = b.refused("join", **addr, passphrase=PASSPHRASE)  # right, but locked out
        assert "too many failed logins from 127.0.0.1" in text
        assert cluster_of(b) is None
        log = (a.dir / "clusterd.log").read_text()
        assert log.count("wrong passphrase for user 'admin'") >= 3
        assert "locked out" in log
        # The lockout is raised as an alert too.
        kinds = [x["text"] for x in a.status()["alerts"]]
        assert any("too many failed logins" in t for t in kinds)


def test_groups_and_names_replicate_at_once(three: Testbed) -> None:
    a, b, c = americas(three)
    a.op("addgroup", group="Paris")
    b.op("setgroup", machine=c.hostname, group="Paris")
    c.edit(define("settz", "group:Paris"), at(TZ, "group:Paris"))
    three.wait(three.converged, what="converged")
    assert effective(c)["settz"] == {"timezone": "Europe/Paris"}
    c.op("renamegroup", old="Paris", new="Lyon")
    three.wait(three.converged, what="converged after rename")
    assert effective(c)["settz"] == {"timezone": "Europe/Paris"}  # settings follow
    assert "holds" in a.refused("deletegroup", group="Lyon")
    a.op("deletegroup", group="Lyon", move_to="Main_Group")
    a.op("setname", name="emea")
    three.wait(three.converged, what="converged after delete and rename")
    for m in three.machines:
        assert m.op("list")["text"] == (
            "cluster = emea\nGroup Main_Group:\n"
            + "".join(f"Machine {x.hostname} (Serial #: {x.serial})\n" for x in three.machines)
        ).rstrip("\n")
        assert m.status()["cluster"] == "emea"
    assert effective(c)["settz"] == {"timezone": "UTC"}  # the group's settings went with it
    three.wait(three.linked, what="still linked after SETNAME")
    for bad in [
        ("addgroup", {"group": "Main_Group"}),
        ("setgroup", {"machine": "x.y", "group": "Main_Group"}),
    ]:
        before = snapshot(a, b, c)
        a.refused(bad[0], **bad[1])
        assert snapshot(a, b, c) == before


def test_remove_flattens_and_last_member_deletes_the_cluster(three: Testbed) -> None:
    a, b, c = americas(three)
    a.op("addgroup", group="Paris")
    a.op("setgroup", machine=b.hostname, group="Paris")
    a.edit(define("settz", "group:Paris"), at(TZ, "group:Paris"))
    three.wait(three.converged, what="converged")
    before_b = effective(b)
    assert before_b["settz"] == {"timezone": "Europe/Paris"}
    done = c.op("removemachine", machine=b.hostname)
    assert done["flattened"]
    three.wait(lambda: cluster_of(b) is None, what="b standalone")
    assert effective(b) == before_b  # it keeps behaving as before
    assert b.op("get", feature="settz", mode=f"machine:{b.hostname}")["value"] == {
        "timezone": "Europe/Paris"
    }
    three.wait(lambda: b.hostname not in str(a.op("list")["groups"]), what="a forgets b")
    three.wait(lambda: three.converged([a, c]), what="a and c converged")
    assert b.hostname not in str(c.op("list")["groups"])
    # c removes itself; then a, the last member, removes itself: no cluster left.
    before_c = effective(c)
    c.op("removemachine", machine=c.hostname)
    assert cluster_of(c) is None and effective(c) == before_c
    three.wait(lambda: c.hostname not in str(a.op("list")["groups"]), what="a forgets c")
    before_a = effective(a)
    done = a.op("removemachine", machine=a.hostname)
    assert done["cluster_deleted"] == "americas"
    assert cluster_of(a) is None and effective(a) == before_a
    assert "not a member" in a.refused("list")


def test_four_members_built_by_operations_then_one_removed_and_rejoined(tmp_path: Path) -> None:
    with Testbed(tmp_path, 4, seed=False) as bed:
        bed.start()
        a, b, c, d = bed.machines
        a.op("create", name="americas")
        a.op("ccs", enabled=True)  # a serves CCS for d's join
        b.join(a)  # over SSH with the passphrase
        for m in (c, d):  # c: PREPJOIN key over SSH; d: over CCS
            info = m.op("prepjoin_print")
            b.edit({"do": "prepjoin_new", **info})
        bed.wait(lambda: len(a.op("list")["prepared"]) == 2, what="prepjoin replicated")
        c.op("join", address="127.0.0.1", port=b.config.ssh_port, fingerprint=b.fingerprint())
        d.op("join", address="127.0.0.1", port=a.config.ccs_port, ccs=True,
             fingerprint=keyscan_fingerprint(a, a.config.ccs_port))  # fmt: skip
        bed.wait(bed.linked, what="four linked")
        d.edit(at(TZ, "cluster"), comment="from d")
        bed.wait(bed.converged, what="four converged")
        assert all(effective(m)["settz"] == {"timezone": "Europe/Paris"} for m in bed.machines)

        a.op("removemachine", machine=c.hostname)
        bed.wait(lambda: cluster_of(c) is None, what="c standalone")
        bed.wait(lambda: bed.linked([a, b, d]), what="three linked")
        dry = c.join(a, dry_run=True)
        # Exactly what c holds since it flattened: what it inherited, users by name.
        assert [{k: x[k] for k in ("feature", "title", "rows")} for x in dry["discard"]] == [
            {"feature": "settz", "title": "Time Zone", "rows": None},
            {"feature": "userconfig", "title": "Users", "rows": ["admin"]},
        ]
        assert cluster_of(c) is None
        c.join(a)
        bed.wait(bed.linked, what="four linked again")
        bed.wait(bed.converged, what="four converged again")
        assert len(list(c.dir.glob("standalone-*.json"))) == 2  # one copy per join
        assert effective(c)["settz"] == {"timezone": "Europe/Paris"}


def test_removed_while_away_is_refused_and_can_leave(three: Testbed) -> None:
    a, _, c = americas(three)
    c.stop()
    done = a.op("removemachine", machine=c.hostname)
    assert not done["flattened"] and "could not be told" in done["warning"]
    c.start()
    three.wait(
        lambda: any("refused our machine key" in p["reason"] for p in c.status()["peers"]),
        what="c refused by its former peers",
    )
    before = effective(c)
    c.op("removemachine", machine=c.hostname)
    assert cluster_of(c) is None and effective(c) == before


async def _join_session(port: int, body: bytes, **auth: Any) -> tuple[bytes, int | None]:
    import asyncssh

    async with asyncssh.connect(
        "127.0.0.1", port, known_hosts=None, config=None, agent_path=None, **auth
    ) as conn:
        process = await conn.create_process(subsystem="clusterd-join", encoding=None)
        process.stdin.write(body)
        process.stdin.write_eof()
        out = await process.stdout.read()
        await process.wait_closed()
        return out, process.exit_status


async def test_malformed_join_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    import asyncssh

    with Testbed(tmp_path, 1, seed=False, ccs_enabled=True) as bed:
        bed.start()
        (a,) = bed.machines
        a.op("create", name="americas")
        before = snapshot(a)
        admin = {"username": "admin", "password": PASSPHRASE, "client_keys": None}
        for body in [b"not json\n", b"[" * 100_000 + b"\n", b'{"check": "yes"}\n', b"", b"{}"]:
            out, status = await _join_session(a.config.ssh_port, body, **admin)
            assert status == 1 and b'"ok":false' in out and b"join request" in out, out[:200]
        assert snapshot(a) == before
        # The CCS port takes no passphrases at all.
        with pytest.raises(asyncssh.PermissionDenied):
            await _join_session(a.config.ccs_port, b"{}\n", **admin)
        assert a.proc is not None and a.proc.poll() is None
        assert snapshot(a) == before


def test_members_dialing_a_joiner_too_early_raise_no_alert_but_strangers_do(
    three: Testbed, tmp_path: Path
) -> None:
    """The members learn of a joiner from its admission and dial it at once, often
    before it has taken the cluster's state and knows their keys: it refuses them, and
    alerted "authentication error" (now and then, in a join of 5 machines).
    Now such a refusal is judged once the join is over: a member's key is only logged,
    a stranger's is alerted as before.  Both dial c throughout c's join, over SSH."""
    a, b, c = three.machines
    a.op("create", name="americas")
    b.join(a)
    three.wait(lambda: three.linked([a, b]), what="a and b linked")
    stranger = tmp_path / "stranger_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(stranger)
    stop, tried = threading.Event(), {"member": 0, "stranger": 0}

    async def knock(key_file: Path, who: str) -> None:
        key = asyncssh.read_private_key(key_file)
        while not stop.is_set():
            with contextlib.suppress(asyncssh.Error, OSError):
                async with asyncssh.connect(c.config.listen, c.config.ssh_port, username=PEER_USER,
                                            client_keys=[key], known_hosts=None, agent_path=None,
                                            config=None):  # fmt: skip
                    pass
            tried[who] += 1
            await asyncio.sleep(0.005)

    async def knocking() -> None:
        await asyncio.gather(knock(b.config.machine_key, "member"), knock(stranger, "stranger"))

    before = {x["text"] for x in c.status()["alerts"]}
    c.ask({"op": "status"})
    joining = threading.Thread(target=lambda: (time.sleep(0.03), asyncio.run(knocking())))
    joining.start()
    try:
        c.join(a)
    finally:
        stop.set()
        joining.join(30)
    three.wait(lambda: three.linked([a, b, c]), what="all linked")
    assert tried["member"] > 3 and tried["stranger"] > 3, tried
    new = [x["text"] for x in c.status()["alerts"] if x["text"] not in before]
    member_fp = asyncssh.read_private_key(b.config.machine_key).get_fingerprint()
    stranger_fp = asyncssh.read_private_key(stranger).get_fingerprint()
    assert not [t for t in new if member_fp in t], new  # b's early dials: no alert
    assert [t for t in new if stranger_fp in t], new  # a stranger's: alerted
    log = (c.dir / "clusterd.log").read_text()
    assert "a member dialed before this machine had joined" in log
