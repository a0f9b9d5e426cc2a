"""Authentication sequences an attacker sends on ONE SSH connection, on real daemons.

A public-key *query* (no signature) that the server answers "OK" must give nothing: the
connection is what the attempt that completes makes it.  Each case runs a raw sequence
(``tests.rawssh``) against a member's admin port and CCS port, then asks for everything
a connection can ask for: the ``clusterd`` subsystem (a member's link), the
``clusterd-join`` subsystem, one command, a shell.  What opens must be exactly what the
completed login allows.  A real member key opening the link subsystem is the control
that shows the probe can see an opening.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.schema.access import hash_passphrase
from clusterd.trust.join import JoinAnswer, JoinRequest
from tests.rawssh import Key, Password, Query, Step, connect

GUEST, GUEST_PASSPHRASE = "visitor", "just looking around"
OPERATOR, OPERATOR_PASSPHRASE = "opal", "operator passphrase"
NEWHOST, NEWSERIAL = "newhost.example.com", "SER-NEW"
NOT_ADMIN = "is not a cluster admin"
PROBE = JoinRequest(check=True, hostname=NEWHOST, serial=NEWSERIAL, software="0",
                    group="Main_Group", machine={})  # fmt: skip


@dataclass
class Keys:
    member: asyncssh.SSHKey  # the other member's machine key (private: the control case)
    prepjoin: asyncssh.SSHKey  # registered with PREPJOIN for NEWHOST
    local_admin: asyncssh.SSHKey  # the data directory's admin key of the machine attacked
    operator: asyncssh.SSHKey  # in sshconfig admin_keys for the operator
    stranger: asyncssh.SSHKey


@dataclass
class Cluster:
    bed: Testbed
    target: Machine
    keys: Keys


def _public(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key().decode().split()[:2])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("auth")
    with Testbed(root, 2, ccs=True) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        keys = Keys(
            member=asyncssh.read_private_key(b.config.machine_key),
            prepjoin=asyncssh.generate_private_key("ssh-ed25519"),
            local_admin=asyncssh.read_private_key(a.config.admin_key),
            operator=asyncssh.generate_private_key("ssh-ed25519"),
            stranger=asyncssh.generate_private_key("ssh-ed25519"),
        )
        user = {"do": "set_row", "feature": "userconfig", "mode": "cluster"}
        ssh_keys = a.op("effective")["values"]["sshconfig"]
        ssh_keys["admin_keys"] = [{"user": OPERATOR, "key": _public(keys.operator)}]
        a.edit(
            {**user, "row": GUEST, "value": {"role": "guest",
             "passphrase_hash": hash_passphrase(GUEST_PASSPHRASE)}},
            {**user, "row": OPERATOR, "value": {"role": "operator",
             "passphrase_hash": hash_passphrase(OPERATOR_PASSPHRASE)}},
            {"do": "set_record", "feature": "sshconfig", "mode": "cluster", "value": ssh_keys},
            {"do": "prepjoin_new", "hostname": NEWHOST, "serial": NEWSERIAL,
             "machine_key": _public(keys.prepjoin)},
            comment="a guest, an operator with a key, a prepared machine",
        )  # fmt: skip
        yield Cluster(bed, a, keys)


async def _opens(conn: asyncssh.SSHClientConnection) -> dict[str, str]:
    """What the connection may open: each probe's outcome.  A join session that answers
    every request with "not a cluster admin" without reading it counts as refused."""
    found: dict[str, str] = {}
    try:
        chan, _ = await conn.create_session(
            asyncssh.SSHClientSession, subsystem="clusterd", encoding=None
        )
        chan.close()
        found["clusterd"] = "opened"
    except asyncssh.ChannelOpenError:
        found["clusterd"] = "refused"
    try:
        process = await conn.create_process(subsystem="clusterd-join", encoding=None)
        process.stdin.write(PROBE.model_dump_json().encode() + b"\n")
        process.stdin.write_eof()
        answer = JoinAnswer.model_validate_json(await process.stdout.read())
        found["clusterd-join"] = "refused" if NOT_ADMIN in answer.error else "opened"
    except asyncssh.ChannelOpenError:
        found["clusterd-join"] = "refused"
    try:
        done = await asyncio.wait_for(conn.run("status", check=False), 20)
        found["exec"] = f"exit {done.exit_status}: {str(done.stdout).strip()[:60]}"
    except asyncssh.ChannelOpenError:
        found["exec"] = "refused"
    return found


def attempt(c: Cluster, port: str, steps: list[Step]) -> dict[str, str] | str:
    """Run ``steps`` on one connection to the target's ``port`` ("admin" or "ccs")."""
    number = c.target.config.ssh_port if port == "admin" else c.target.config.ccs_port

    async def go() -> dict[str, str] | str:
        try:
            conn = await connect(c.target.config.listen, number, steps)
        except asyncssh.PermissionDenied:
            return "denied"
        except asyncssh.ConnectionLost:
            return "closed"
        async with conn:
            return await _opens(conn)

    return asyncio.run(go())


REFUSED = {"clusterd": "refused", "clusterd-join": "refused", "exec": "refused"}
JOIN_ONLY = {"clusterd": "refused", "clusterd-join": "opened", "exec": "refused"}


def _guest(found: dict[str, str] | str) -> bool:
    """Exactly a guest: no link, no join, and commands refused as a guest's."""
    return (
        isinstance(found, dict)
        and found["clusterd"] == found["clusterd-join"] == "refused"
        and found["exec"].startswith(f"exit 1: Error: {GUEST} is a guest: only")
    )


def test_the_probe_sees_what_a_real_login_opens(cluster: Cluster) -> None:
    """The controls: a member's own key opens the link subsystem and nothing else; the
    PREPJOIN key opens the join subsystem; the operator's key runs commands."""
    k = cluster.keys
    for port in ("admin", "ccs"):
        found = attempt(cluster, port, [Key("clusterd", k.member)])
        assert found == {**REFUSED, "clusterd": "opened"}, (port, found)
        assert attempt(cluster, port, [Key("clusterd-join", k.prepjoin)]) == JOIN_ONLY, port
    found = attempt(cluster, "admin", [Key(OPERATOR, k.operator)])
    assert isinstance(found, dict) and found["exec"].startswith("exit 0: Machine ")
    assert found["clusterd"] == found["clusterd-join"] == "refused"


@pytest.mark.parametrize("user", ["clusterd", "clusterd-join", "admin"])
def test_a_query_then_a_guest_passphrase_is_only_the_guest(cluster: Cluster, user: str) -> None:
    k = cluster.keys
    queried = {"clusterd": k.member, "clusterd-join": k.prepjoin, "admin": k.local_admin}[user]
    steps: list[Step] = [Query(user, queried), Password(GUEST, GUEST_PASSPHRASE)]
    found = attempt(cluster, "admin", steps)
    assert _guest(found), found
    # The CCS port takes no passphrase at all: the query alone logs nobody in.
    assert attempt(cluster, "ccs", steps) == "denied"


@pytest.mark.parametrize("port", ["admin", "ccs"])
@pytest.mark.parametrize("user", ["clusterd", "admin"])
def test_a_query_then_a_prepjoin_key_is_only_a_join(cluster: Cluster, user: str, port: str) -> None:
    """The PREPJOIN key plus a query for ``admin`` (or a member) gives no exec, no link."""
    k = cluster.keys
    queried = k.member if user == "clusterd" else k.local_admin
    steps: list[Step] = [Query(user, queried), Key("clusterd-join", k.prepjoin)]
    assert attempt(cluster, port, steps) == JOIN_ONLY


@pytest.mark.parametrize("user", ["clusterd", "clusterd-join"])
def test_a_query_then_an_operator_key_is_only_the_operator(cluster: Cluster, user: str) -> None:
    k = cluster.keys
    queried = k.member if user == "clusterd" else k.prepjoin
    found = attempt(cluster, "admin", [Query(user, queried), Key(OPERATOR, k.operator)])
    assert isinstance(found, dict)
    assert found["clusterd"] == found["clusterd-join"] == "refused"  # no link, no join
    assert found["exec"].startswith("exit 0: Machine ")  # the operator's own right
    # The operator's key is no login on the CCS port.
    assert attempt(cluster, "ccs", [Query(user, queried), Key(OPERATOR, k.operator)]) == "denied"


@pytest.mark.parametrize("port", ["admin", "ccs"])
def test_queries_alone_or_with_a_stranger_key_log_nobody_in(cluster: Cluster, port: str) -> None:
    k = cluster.keys
    queries: list[Step] = [Query("clusterd", k.member), Query("clusterd-join", k.prepjoin),
                           Query("admin", k.local_admin)]  # fmt: skip
    assert attempt(cluster, port, queries) == "denied"
    assert attempt(cluster, port, [*queries, Key("clusterd", k.stranger)]) == "denied"


def test_a_passphrase_join_needs_an_admin_now(cluster: Cluster) -> None:
    """A guest's or an operator's join request is not read: the answer names the role
    and nothing of the cluster (members, serials, groups); an admin's request is read."""
    from clusterd.dev.testbed import PASSPHRASE

    target = cluster.target
    request = JoinRequest(check=True, hostname=target.hostname, serial="SER-X",
                          software="0", group="Nowhere", machine={})  # fmt: skip

    async def ask(user: str, passphrase: str) -> JoinAnswer:
        conn = await connect(target.config.listen, target.config.ssh_port,
                             [Password(user, passphrase)])  # fmt: skip
        async with conn:
            process = await conn.create_process(subsystem="clusterd-join", encoding=None)
            process.stdin.write(request.model_dump_json().encode() + b"\n")
            process.stdin.write_eof()
            return JoinAnswer.model_validate_json(await process.stdout.read())

    for user, passphrase, role in [(GUEST, GUEST_PASSPHRASE, "guest"),
                                   (OPERATOR, OPERATOR_PASSPHRASE, "operator")]:  # fmt: skip
        answer = asyncio.run(ask(user, passphrase))
        assert answer.error == (f"user {user!r} is not a cluster admin (role {role}): only an "
                                "admin may add a machine")  # fmt: skip
        assert answer.member == answer.cluster == "" and answer.snapshot is None
    answer = asyncio.run(ask("admin", PASSPHRASE))  # read: this one says what is wrong
    assert not answer.ok and "software versions differ" in answer.error
    log = (target.dir / "clusterd.log").read_text()
    assert f"refused a join by user '{GUEST}' (role guest) on the admin port" in log
    assert f"refused a join by user '{OPERATOR}' (role operator) on the admin port" in log


def test_too_many_attempts_close_the_connection(cluster: Cluster, tmp_path: Path) -> None:
    """Queries cost the attacker nothing but each counts as an attempt: after
    ``max_auth_tries`` the connection is closed (logged once, not per attempt)."""
    k = cluster.keys
    many: list[Step] = [Query("clusterd-join", asyncssh.generate_private_key("ssh-ed25519"))
                        for _ in range(14)]  # fmt: skip
    assert attempt(cluster, "admin", [*many, Key("clusterd-join", k.prepjoin)]) == "closed"
    log = (cluster.target.dir / "clusterd.log").read_text()
    assert "authentication attempts (max_auth_tries): connection closed" in log


def test_a_second_link_with_a_refused_hello_leaves_the_live_link_up(cluster: Cluster) -> None:
    """A member's key (say, a member misconfigured, or a copy of its key) opens a second
    link while the first is up and says hello for another cluster: that link is closed,
    the live one and the peer's state stay as they were."""
    from clusterd.mesh.messages import FrameReader, Goodbye, Hello, decode_body, encode

    a, b = cluster.bed.machines
    k = cluster.keys

    async def second_link() -> list[object]:
        conn = await connect(a.config.listen, a.config.ssh_port, [Key("clusterd", k.member)])
        async with conn:
            process = await conn.create_process(subsystem="clusterd", encoding=None)
            hello = Hello(node=b.serial, hostname=b.hostname, cluster="another", proto_min=2,
                          proto_max=2, software=a.status()["software"], vv={})  # fmt: skip
            process.stdin.write(encode(hello))
            reader, got = FrameReader(), []
            while not any(isinstance(m, Goodbye) for m in got):
                data = await asyncio.wait_for(process.stdout.read(65536), 10)
                if not data:
                    break
                got += [decode_body(body) for body in reader.feed(data)]
            return got

    got = asyncio.run(second_link())
    assert any(isinstance(m, Goodbye) and m.code == "cluster" for m in got), got
    peer = next(p for p in a.status()["peers"] if p["hostname"] == b.hostname)
    assert peer["state"] == "up" and peer["reason"] == "", peer
    cluster.bed.wait(cluster.bed.linked, timeout=5, what="still linked")
