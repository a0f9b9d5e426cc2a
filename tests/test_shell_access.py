"""Getting at the shell and finding one's way in it: completion, history, ping, the
short ``-j`` of the JSON forms, admin keys through the real OpenSSH client, the local
admin key's file mode.

Completion runs ``ShellCompleter`` on prompt_toolkit ``Document``s against the
in-process machines of ``tests.shellhelp`` (newyork.example.com, and in cluster
americas losangeles.example.com in group Paris, never reachable).  History runs the
interactive wiring of ``cli.serve.ShellChannel`` itself on a stand-in SSH channel:
keys in through its pipe input, the VT100 output read back.  Ping of a live member,
admin keys and ``clusterd shell`` need real daemons: a seeded Testbed pair.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from clusterd.cli.commands import available
from clusterd.cli.completer import ShellCompleter
from clusterd.cli.serve import ShellChannel
from clusterd.cli.shell import GUEST_COMMANDS
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from clusterd.node.daemon import Daemon
from clusterd.schema.access import SSHCONFIG, hash_passphrase
from tests.shellhelp import ADMIN, LA, NY, PASSPHRASE, Term, new_daemon

GROUPS = ["Main_Group", "Paris"]
MACHINES = [LA, NY]
CLUSTER_OPS = ["addgroup", "setgroup", "renamegroup", "deletegroup", "removemachine",
               "setname", "list", "listdetail", "disconnect", "reconnect", "prepjoin",
               "connstatus", "ccs"]  # fmt: skip
TABLE_OPS = ["print", "clustershow", "clusterset", "define", "undefine", "new", "edit", "delete"]
RECORD_OPS = ["print", "clustershow", "clusterset", "define", "undefine", "set"]
UP, ENTER, TAB = "\x1b[A", "\r", "\t"
NEW = "a new passphrase 42"
ROUTE = """'destinations=[{"host": "mx.example.com"}]'"""


# -- completion ----------------------------------------------------------------------------


def complete(t: Term, text: str) -> list[str]:
    """What Tab offers at the end of ``text``; each completion replaces the word typed."""
    completer = ShellCompleter(t.shell)
    found = list(
        completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
    )
    word = "" if not text or text[-1].isspace() else text.split()[-1]
    for c in found:
        assert c.start_position == -len(word), (text, c)
    return [c.text for c in found]


@pytest.fixture
async def alone(tmp_path: Path) -> AsyncIterator[Term]:
    """A login on a standalone machine (another one than ``ny``'s)."""
    (tmp_path / "alone").mkdir()
    d = new_daemon(tmp_path / "alone")
    try:
        yield Term(d)
    finally:
        d.store.close()


def feature_commands() -> list[str]:
    from clusterd.schema.catalogue import CATALOGUE

    return [c for c in available() if c in CATALOGUE]


async def test_command_names(ny: Term) -> None:
    assert complete(ny, "") == available()
    assert complete(ny, "   ") == available()
    assert complete(ny, "clusterm") == ["clustermode"]
    assert complete(ny, "CLUSTERM") == ["clustermode"]  # the shell lowers command names
    assert complete(ny, "clusterc") == ["clustercheck", "clusterconfig"]
    assert complete(ny, "nosuch") == []
    assert complete(ny, "nosuch ") == []


async def test_a_guest_is_offered_only_its_commands(americas: Daemon) -> None:
    guest = Term(americas, "gina", role="guest")
    assert complete(guest, "") == [c for c in available() if c in GUEST_COMMANDS]
    assert complete(guest, "settz ") == []


async def test_clustermode_groups_and_machines(ny: Term, alone: Term) -> None:
    assert complete(ny, "clustermode ") == ["cluster", "group", "machine"]
    assert complete(ny, "clustermode g") == ["group"]
    assert complete(ny, "clustermode group ") == GROUPS
    assert complete(ny, "clustermode group P") == ["Paris"]
    assert complete(ny, "clustermode  group  p") == ["Paris"]  # spaces, case
    assert complete(ny, "clustermode machine ") == MACHINES
    assert complete(ny, "clustermode machine los") == [LA]
    assert complete(ny, "clustermode cluster ") == []
    assert complete(ny, "clustermode group Paris ") == []
    assert complete(alone, "clustermode ") == []  # standalone: there is no other mode


async def test_clusterconfig_operations_and_their_arguments(ny: Term, alone: Term) -> None:
    assert complete(ny, "clusterconfig ") == CLUSTER_OPS  # no create / join in a cluster
    assert complete(ny, "clusterconfig l") == ["list", "listdetail"]
    assert complete(ny, "clusterconfig re") == ["renamegroup", "removemachine", "reconnect"]
    assert complete(alone, "clusterconfig ") == ["prepjoin", "ccs", "create", "join"]
    assert complete(ny, "clusterconfig ccs ") == ["on", "off"]
    assert complete(alone, "clusterconfig prepjoin ") == ["print"]
    assert complete(alone, "clusterconfig create ") == []

    assert complete(ny, "clusterconfig setgroup ") == MACHINES
    assert complete(ny, f"clusterconfig setgroup {LA} ") == GROUPS
    assert complete(ny, f"clusterconfig setgroup {LA} Paris ") == []
    assert complete(ny, "clusterconfig renamegroup P") == ["Paris"]
    assert complete(ny, "clusterconfig renamegroup Paris ") == []  # the new name
    assert complete(ny, "clusterconfig deletegroup ") == GROUPS
    assert complete(ny, "clusterconfig deletegroup Paris ") == ["Main_Group"]
    assert complete(ny, "clusterconfig removemachine ") == MACHINES
    assert complete(ny, "clusterconfig disconnect n") == [NY]
    assert complete(ny, "clusterconfig addgroup ") == []
    assert complete(ny, "clusterconfig setname ") == []
    for op in ("list", "listdetail", "connstatus"):
        assert complete(ny, f"clusterconfig {op} ") == ["--json"]
    assert complete(ny, "clusterconfig prepjoin ") == ["print", "new", "delete", "list"]
    assert complete(ny, "clusterconfig prepjoin delete ") == []
    key = identity.public_key(ny.daemon.config.machine_key)
    await ny.ok("clustermode cluster", "")
    await ny.ok(f"clusterconfig prepjoin new tokyo.example.com SER-TK {key}")
    assert complete(ny, "clusterconfig prepjoin delete t") == ["tokyo.example.com"]


async def test_feature_operations_by_kind(ny: Term, alone: Term) -> None:
    assert complete(ny, "smtproutes ") == TABLE_OPS
    assert complete(ny, "settz ") == RECORD_OPS
    assert complete(ny, "settz s") == ["set"]
    assert complete(ny, "SMTPROUTES D") == ["define", "delete"]
    assert complete(ny, "smtproutes define ") == ["empty", "defaults", "inherited"]
    assert complete(alone, "settz ") == [op for op in RECORD_OPS if op != "clusterset"]


async def test_feature_row_names(ny: Term) -> None:
    assert complete(ny, "smtproutes edit ") == []  # nothing defined anywhere yet
    await ny.ok(f"smtproutes new b.example.com {ROUTE}")
    await ny.ok(f"smtproutes new a.example.com {ROUTE}")
    assert complete(ny, "smtproutes edit ") == ["a.example.com", "b.example.com"]
    assert complete(ny, "smtproutes delete B") == ["b.example.com"]
    assert complete(ny, "smtproutes edit a.example.com ") == []  # FIELD=VALUE next
    assert complete(ny, "smtproutes new ") == []  # a new row has a new name
    assert complete(ny, "settz edit ") == []  # a record has no rows

    # Where the feature is not defined, the inherited rows (what a copy starts from).
    await ny.ok("clustermode cluster", "")
    await ny.ok(f"smtproutes new c.example.com {ROUTE}")
    await ny.ok("clustermode group Paris")
    assert complete(ny, "smtproutes edit ") == ["c.example.com"]
    # A cluster-only feature's rows are the cluster's, whatever the mode.
    await ny.ok(f"clustermode machine {NY}")
    await ny.ok("clustermode cluster", "")
    await ny.ok(f"userconfig new zoe role=read-only 'passphrase_hash={hash_passphrase(NEW)}'")
    await ny.ok(f"clustermode machine {NY}")
    assert "zoe" in complete(ny, "userconfig edit ")
    assert complete(ny, "userconfig delete z") == ["zoe"]


async def test_clusterset_targets(ny: Term, alone: Term) -> None:
    assert complete(ny, "settz clusterset ") == ["copy", "move", "delete"]
    assert complete(ny, "settz clusterset delete ") == [
        "cluster", "group", "machine", "allgroups",
    ]  # fmt: skip
    assert complete(ny, "settz clusterset copy ") == ["cluster", "group", "machine", "allgroups"]
    assert complete(ny, "settz clusterset move ") == ["cluster", "group", "machine"]
    assert complete(ny, "settz clusterset copy group ") == GROUPS
    assert complete(ny, "settz clusterset move machine l") == [LA]
    assert complete(ny, "settz clusterset copy allgroups ") == []
    # Only the levels the feature exists at.
    assert complete(ny, "userconfig clusterset copy ") == ["cluster"]
    assert complete(ny, "interfaceconfig clusterset copy ") == ["machine"]
    assert complete(alone, "settz clusterset ") == []  # standalone


async def test_help_explain_ping_and_the_json_flags(ny: Term, alone: Term) -> None:
    assert complete(ny, "help ") == available()
    assert complete(ny, "help clusterm") == ["clustermode"]
    assert complete(ny, "help clustermode ") == []
    assert complete(ny, "explain ") == feature_commands()
    assert complete(ny, "explain sett") == ["settz"]
    assert complete(ny, "explain settz ") == [*MACHINES, "--json"]
    assert complete(ny, "explain -j settz l") == [LA]
    assert complete(ny, f"explain settz {LA} ") == ["--json"]
    assert complete(alone, "explain settz ") == [NY, "--json"]
    assert complete(ny, "ping ") == [LA]  # another member, never this machine
    assert complete(ny, f"ping {LA} ") == []
    assert complete(alone, "ping ") == []
    assert complete(ny, "nslookup l") == [LA]
    for command in ("status", "commitdetail", "preview", "clustercheck"):
        assert complete(ny, f"{command} -") == ["--json"]
    assert complete(ny, "passwd ") == ["admin"]
    assert complete(Term(ny.daemon, "ro", role="read-only"), "passwd ") == []


# -- the interactive shell on a channel: completion wired, history ----------------------------


class Channel:
    """What ``ShellChannel`` uses of an asyncssh server channel."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.out = bytearray()
        self.status: int | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def get_terminal_type(self) -> str:
        return "xterm"

    def get_terminal_size(self) -> tuple[int, int, int, int]:
        return (120, 40, 0, 0)

    def write(self, data: bytes) -> None:
        self.out += data

    def exit(self, status: int) -> None:
        self.status = status

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", errors="replace")


class Login:
    """One interactive login through ``ShellChannel``: type keys, read the screen."""

    def __init__(self, daemon: Daemon, port: int) -> None:
        self.chan = Channel(port)
        self.shell = ShellChannel(daemon.api, ADMIN, self.chan, None)

    async def type(self, keys: str) -> None:
        self.shell.feed(keys.encode())
        await asyncio.sleep(0)

    async def wait_for(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.chan.text.count(text) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not shown {count} time(s):\n{self.chan.text!r}")
            await asyncio.sleep(0.02)
        return self.chan.text

    async def run(self, line: str, shows: str) -> None:
        before = self.chan.text.count(shows)
        await self.type(line + ENTER)
        await self.wait_for(shows, before + 1)


@pytest.fixture
async def logins(americas: Daemon) -> AsyncIterator[list[Login]]:
    made = [Login(americas, 40001), Login(americas, 40002)]
    for login in made:
        login.shell.start()
        await login.wait_for("Type 'help' for the commands.")
        await login.wait_for(f"(Machine {NY})>")
    try:
        yield made
    finally:
        for login in made:
            login.shell.stop()
            if login.shell.task is not None:
                with pytest.raises(asyncio.CancelledError):
                    await login.shell.task


LOOKED_UP = f"{LA} -> 127.0.0.2 (hosts file)"
VERSION = f"on {NY}\r\n"


async def test_tab_completes_through_the_channel(logins: list[Login]) -> None:
    one, _ = logins
    # Keys as a person types them: the menu comes while typing, Tab takes its entry.
    # (Tab in the same packet as the text races prompt_toolkit's completion of it.)
    await one.type("clusterm")
    await one.wait_for("clustermode")
    await one.type(TAB)
    await one.type(" group Pa")
    await one.wait_for("Paris")
    await one.type(TAB)
    await one.run("", "(Group Paris)>")


async def test_up_recalls_the_previous_command(logins: list[Login]) -> None:
    one, _ = logins
    await one.run(f"nslookup {LA}", LOOKED_UP)
    await one.run("version", VERSION)
    await one.run(UP + UP, LOOKED_UP)  # two back: nslookup again
    assert one.chan.text.count(LOOKED_UP) == 2
    await one.run(UP + UP, VERSION)  # the recalled line went to the end of the history
    assert one.chan.text.count(VERSION) == 2


async def test_history_is_per_login(logins: list[Login]) -> None:
    one, two = logins
    await one.run(f"nslookup {LA}", LOOKED_UP)
    await two.type(UP + UP + UP + ENTER)  # nothing to recall: an empty line
    await two.run("version", VERSION)
    assert LOOKED_UP not in two.chan.text and "nslookup" not in two.chan.text
    await two.run(UP, VERSION)  # its own command comes back
    assert two.chan.text.count(VERSION) == 2
    await one.run(UP, LOOKED_UP)
    assert VERSION not in one.chan.text.split("Type 'help'")[1]


async def test_a_passphrase_answer_is_not_recalled(logins: list[Login]) -> None:
    one, _ = logins
    new = NEW
    await one.type("passwd" + ENTER)
    await one.wait_for('switch to "cluster" mode?')
    await one.type(ENTER)
    await one.wait_for("Old passphrase:")
    await one.type(PASSPHRASE + ENTER)
    await one.wait_for("New passphrase:")
    await one.type(new + ENTER)
    await one.wait_for("Retype new passphrase:")
    await one.run(new, "Passphrase of admin changed.")
    assert new not in one.chan.text
    await one.type("clustermode cluster" + ENTER)
    await one.wait_for("Continue?")
    await one.type(UP)
    await asyncio.sleep(0.3)
    assert new not in one.chan.text


# -- ping --------------------------------------------------------------------------------------


async def test_ping_in_process(ny: Term, alone: Term) -> None:
    assert await ny.run("ping") == (2, "Usage: ping MEMBER")
    assert await ny.run(f"ping {LA} {NY}") == (2, "Usage: ping MEMBER")
    status, out = await ny.run("ping nowhere.example.com")
    assert (status, out) == (
        1,
        f"Error: 'nowhere.example.com' is not a member of cluster americas (other members: {LA})",
    )
    assert await ny.run(f"ping {NY}") == (1, f"Error: {NY} is this machine: ping another member")
    assert await ny.run(f"ping {NY.upper()}.") == (
        1,
        f"Error: {NY} is this machine: ping another member",
    )
    # losangeles is a member, but nothing links to it: no answer, at once.
    assert await ny.run(f"ping {LA}") == (1, f"{LA}: no answer (no route to {LA})")
    assert await alone.run(f"ping {LA}") == (
        1,
        "Error: this machine is not in a cluster: there is no member to ping",
    )


# -- real daemons --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Two members of cluster testbed, linked."""
    with Testbed(tmp_path_factory.mktemp("bed"), 2) as testbed:
        testbed.start()
        testbed.wait(testbed.linked, what="the pair linked")
        yield testbed


def ssh(
    m: Machine, command: str, key: Path | None = None, user: str = "admin"
) -> subprocess.CompletedProcess[str]:
    """The OpenSSH client, no configuration file, host key pinned, never asking."""
    identity.local_ssh(m.config)  # writes the pinned host key
    argv = ["ssh", "-F", "/dev/null", "-p", str(m.config.ssh_port),
            "-i", str(key or m.config.admin_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={m.dir / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            f"{user}@127.0.0.1", command]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_ping_members(bed: Testbed) -> None:
    a, b = bed.machines
    done = ssh(a, f"ping {b.hostname}")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{b.hostname}: answered in ") for line in lines), lines
    unknown = ssh(a, "ping nowhere.example.com")
    assert unknown.returncode == 1
    assert "'nowhere.example.com' is not a member of cluster testbed" in unknown.stdout
    own = ssh(a, f"ping {a.hostname}")
    assert (own.returncode, own.stdout.strip()) == (
        1,
        f"Error: {a.hostname} is this machine: ping another member",
    )
    b.stop()
    try:
        bed.wait(lambda: not bed.linked([a, b]), what="the link down")
        down = ssh(a, f"ping {b.hostname}")
        assert down.returncode == 1
        assert down.stdout.startswith(f"{b.hostname}: no answer"), down.stdout
    finally:
        b.start()
        bed.wait(bed.linked, what="the pair linked again")


# -- -j and --json -----------------------------------------------------------------------------


async def test_short_json_flag_in_process(ny: Term) -> None:
    status = json.loads(await ny.ok("status -j"))
    assert (status["hostname"], status["cluster"]) == (NY, "americas")
    assert status.keys() == json.loads(await ny.ok("status --json")).keys()
    await ny.ok("clustermode cluster", "")  # clusterconfig is cluster-only
    for line in ("clusterconfig listdetail", "clusterconfig connstatus"):
        short = json.loads(await ny.ok(f"{line} -j"))
        assert short == json.loads(await ny.ok(f"{line} --json"))
    listed = json.loads(await ny.ok("clusterconfig listdetail -j"))
    assert listed["cluster"] == "americas"
    assert set(listed["groups"]["Paris"]) == {LA}
    conn = json.loads(await ny.ok("clusterconfig connstatus -j"))
    assert [m["hostname"] for m in conn["members"]] == [LA]
    assert conn["members"][0]["forward"] == LOOKED_UP


def test_short_json_flag_over_ssh(bed: Testbed) -> None:
    a, b = bed.machines
    listed = json.loads(ssh(a, "clusterconfig listdetail -j").stdout)
    assert listed["cluster"] == "testbed"
    assert set(listed["groups"]["Main_Group"]) == {a.hostname, b.hostname}
    conn = json.loads(ssh(a, "clusterconfig connstatus -j").stdout)
    assert [(m["hostname"], m["state"]) for m in conn["members"]] == [(b.hostname, "up")]
    status = json.loads(ssh(a, "status -j").stdout)
    assert status["hostname"] == a.hostname
    assert [p["hostname"] for p in status["peers"]] == [b.hostname]


# -- admin keys -----------------------------------------------------------------------------------


def new_key(path: Path) -> str:
    """A private key file (0600, as OpenSSH wants) and its public line."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(path)
    path.chmod(0o600)
    return " ".join(key.export_public_key().decode().split()[:2])


def set_admin_keys(m: Machine, keys: list[dict[str, str]]) -> None:
    value = {**SSHCONFIG.default, "admin_keys": keys}
    m.edit({"do": "set_record", "feature": "sshconfig", "mode": "cluster", "value": value},
           comment="admin keys")  # fmt: skip


def test_admin_keys_of_sshconfig_through_openssh(bed: Testbed, tmp_path: Path) -> None:
    a, _ = bed.machines
    alice, stranger, bob = (tmp_path / name for name in ("alice", "stranger", "bob"))
    alice_key, bob_key = new_key(alice), new_key(bob)
    new_key(stranger)
    set_admin_keys(a, [{"user": "admin", "key": alice_key}, {"user": "bob", "key": bob_key}])
    try:
        done = ssh(a, "version", key=alice)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(f"on {a.hostname}")
        assert "admin " in ssh(a, "last 1", key=alice).stdout

        refused = ssh(a, "version", key=stranger)  # not listed
        assert refused.returncode == 255
        assert "Permission denied" in refused.stderr
        assert "is not an admin key of user 'admin'" in refused.stderr  # the banner
        refused = ssh(a, "version", key=bob)  # listed, for another user
        assert refused.returncode == 255 and "Permission denied" in refused.stderr
    finally:
        set_admin_keys(a, [])
    revoked = ssh(a, "version", key=alice)  # effective at once
    assert revoked.returncode == 255 and "Permission denied" in revoked.stderr
    assert ssh(a, "version").returncode == 0  # the local admin key still works


# -- the local admin key file ---------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_key_files_are_private(daemon: Daemon) -> None:
    config = daemon.config
    assert mode_of(config.data_dir) == 0o700
    for key in (config.admin_key, config.host_key, config.machine_key):
        assert mode_of(key) == 0o600, key
        assert key.stat().st_uid == os.getuid()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client is not installed")
def test_clusterd_shell_refuses_a_readable_admin_key(bed: Testbed) -> None:
    """clusterd checks nothing itself: ``clusterd shell`` runs OpenSSH, which refuses a
    private key others may read, and says why."""
    _, b = bed.machines
    command = [sys.executable, "-m", "clusterd", "shell", "--data-dir", str(b.dir), "version"]
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_ASKPASS", "DISPLAY")}

    def shell() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    done = shell()
    assert done.returncode == 0 and f"on {b.hostname}" in done.stdout, done.stderr
    b.config.admin_key.chmod(0o644)
    try:
        refused = shell()
        assert refused.returncode == 255
        assert "UNPROTECTED PRIVATE KEY FILE" in refused.stderr
        assert "Permission denied" in refused.stderr
        assert refused.stdout == ""
    finally:
        b.config.admin_key.chmod(0o600)
    assert shell().returncode == 0
