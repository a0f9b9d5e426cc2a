"""More shell commands, in-process with scripted answers: passwd and the roles, preview,
explain, who/last/tail/nslookup, saveconfig and loadconfig.

The machines are those of ``tests.shellhelp``: newyork.example.com (in ``Main_Group``)
and, in the ``americas`` cluster, losangeles.example.com admitted into ``Paris``
(unreachable; its name and address come from the hosts file, DNS goes to a port
nobody answers on).  Each test reads the exit status (0 ok, 1 refused, 2 usage) and
the text the console got.  Regression tests pin the product bugs found
while writing this file: they start failing (XPASS) once the bug is fixed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusterd import __version__
from clusterd.cli.loadconfig import USAGE as LOADCONFIG_USAGE
from clusterd.cli.shell import Quit
from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.node.daemon import Daemon
from clusterd.schema.access import hash_passphrase
from clusterd.store.session import Session
from clusterd.trust.logins import AdminLogin
from tests.shellhelp import (
    ADMIN,
    COMMITTED,
    LA,
    NY,
    PASSPHRASE,
    SEALED,
    STAMP,
    Term,
    new_daemon,
    public_key,
    start_answers,
)

CLUSTER_SWITCH = (
    'This command is restricted to "cluster" mode. Would you like to switch to "cluster" mode?'
)
NEW = "a new passphrase 1"
GUEST_REFUSED = "Error: gina is a guest: only exit, help, passwd, quit, version are open."
INTERNAL = {"cluster", "groups", "machines", "prepjoin"}
NOWHERE = "nowhere.example.com"
BAD_NAME = "Usage: a file name in the configs directory: letters, digits, '.', '_', '-'"


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A second standalone machine (its own data directory)."""
    (tmp_path / "other").mkdir()
    d = new_daemon(tmp_path / "other")
    try:
        yield d
    finally:
        d.store.close()


async def in_cluster_mode(t: Term) -> None:
    await t.ok("clustermode cluster", "")
    assert t.shell.mode == Mode.cluster()


async def committed(t: Term, *lines: str, comment: str = "setup") -> None:
    """Run edits (each answering 'the factory defaults' if asked) and commit them."""
    for line in lines:
        await t.ok(line, *start_answers(t, line))
    assert COMMITTED.fullmatch(await t.ok(f"commit {comment}"))


def add_user(daemon: Daemon, name: str, role: str, passphrase: str) -> None:
    """A userconfig row committed at cluster level, as an admin would add it."""
    session = Session(daemon.store, "admin")
    row = {"role": role, "passphrase_hash": hash_passphrase(passphrase)}
    session.set_row("userconfig", Mode.cluster(), name, row)
    session.commit(f"add {name}")


def hash_of(daemon: Daemon, user: str) -> str:
    return str(daemon.users()[user]["passphrase_hash"])


def newest_commit(daemon: Daemon) -> str:
    return str(daemon.store.commit_log(1)[0].id)


def configs(daemon: Daemon) -> Path:
    folder = daemon.config.data_dir / "configs"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def by_machine(out: str) -> dict[str, list[str]]:
    """preview's text, machine by machine."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("Machine ") and line.endswith(":"):
            current = found.setdefault(line.removeprefix("Machine ").removesuffix(":"), [])
        else:
            current.append(line)
    return found


def block(lines: list[str], first: str) -> list[str]:
    """The lines from the one equal to ``first`` on."""
    return lines[lines.index(first) :]


def mapping_menu(what: str, name: str, options: list[str], answer: str) -> list[str]:
    default = options.index(name) + 1 if name in options else len(options) + 1
    return [
        f"Copy the settings of {what} {name} to:",
        *(f"{i}. {o}" for i, o in enumerate([*options, "don't copy"], 1)),
        f"[{default}]>{answer}",
    ]


# -- passwd ------------------------------------------------------------------------------


async def test_passwd_own_passphrase_takes_effect_at_once(ny: Term) -> None:
    daemon = ny.daemon
    out = await ny.ok("passwd", "y", PASSPHRASE, NEW, NEW)
    assert out.splitlines() == [
        f"{CLUSTER_SWITCH} [Y]>y",
        "Old passphrase:",
        "[]>",
        "New passphrase:",
        "[]>",
        "Retype new passphrase:",
        "[]>",
        "Passphrase of admin changed.",
    ]
    assert PASSPHRASE not in ny.console.output and NEW not in ny.console.output
    assert await daemon.auth.check_passphrase("admin", NEW) == ("admin", "")
    assert await daemon.auth.check_passphrase("admin", PASSPHRASE) == (
        None,
        "wrong passphrase for user 'admin'",
    )
    assert ny.pending == 0  # committed at once, not left among the shell's changes
    detail = (await ny.ok("commitdetail 1")).splitlines()
    assert re.search(rf"  admin  'passwd admin'{SEALED}$", detail[0])
    assert detail[1:] == ["    userconfig at Cluster"]


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        (("not the passphrase",), "Error: the old passphrase is wrong; nothing changed"),
        ((PASSPHRASE, NEW, NEW + "x"), "Error: the two passphrases differ; nothing changed"),
        ((PASSPHRASE, "short", "short"), "Error: a passphrase needs 8 characters or more"),
    ],
    ids=["wrong-old", "mismatch", "too-short"],
)
async def test_passwd_refusals_change_nothing(
    ny: Term, answers: tuple[str, ...], error: str
) -> None:
    daemon = ny.daemon
    await in_cluster_mode(ny)
    before, head = hash_of(daemon, "admin"), newest_commit(daemon)
    status, out = await ny.run("passwd", *answers)
    assert status == 1
    assert out.splitlines()[0] == "Old passphrase:" and out.splitlines()[-1] == error
    assert (hash_of(daemon, "admin"), newest_commit(daemon)) == (before, head)
    assert await daemon.auth.check_passphrase("admin", PASSPHRASE) == ("admin", "")
    for answer in answers:
        assert answer not in ny.console.output


async def test_admin_changes_another_users_passphrase_without_the_old_one(ny: Term) -> None:
    daemon = ny.daemon
    add_user(daemon, "bob", "operator", "bob's first one")
    await in_cluster_mode(ny)
    out = await ny.ok("passwd bob", NEW, NEW)
    assert out.splitlines() == [
        "New passphrase:",
        "[]>",
        "Retype new passphrase:",
        "[]>",
        "Passphrase of bob changed.",
    ]
    assert NEW not in out
    assert await daemon.auth.check_passphrase("bob", NEW) == ("operator", "")
    assert (await daemon.auth.check_passphrase("bob", "bob's first one"))[0] is None
    assert await daemon.auth.check_passphrase("admin", PASSPHRASE) == (
        "admin",
        "",
    )  # the admin's own is kept
    assert await ny.run("passwd nobody") == (1, "Error: no user 'nobody'")


@pytest.mark.parametrize("role", ["operator", "read-only", "guest"])
async def test_only_an_admin_changes_another_users_passphrase(americas: Daemon, role: str) -> None:
    add_user(americas, "bob", role, "bob's first one")
    bob = Term(americas, user="bob", role=role)
    bob.shell.mode = Mode.cluster()
    before, head = hash_of(americas, "admin"), newest_commit(americas)
    status, out = await bob.run("passwd admin")
    assert (status, out) == (1, "Error: only an admin may change another user's passphrase")
    assert (hash_of(americas, "admin"), newest_commit(americas)) == (before, head)


@pytest.mark.parametrize(
    "mode",
    [Mode.machine(NY), Mode.machine(LA), Mode.group("Paris"), Mode.cluster()],
    ids=str,
)
async def test_guest_runs_passwd_in_any_mode_without_switching(
    americas: Daemon, mode: Mode
) -> None:
    add_user(americas, "gina", "guest", "gina's first one")
    gina = Term(americas, user="gina", role="guest")
    gina.shell.mode = mode
    out = await gina.ok("passwd", "gina's first one", NEW, NEW)
    assert out.splitlines() == [
        "Old passphrase:",
        "[]>",
        "New passphrase:",
        "[]>",
        "Retype new passphrase:",
        "[]>",
        "Passphrase of gina changed.",
    ]
    assert gina.shell.mode == mode
    assert await americas.auth.check_passphrase("gina", NEW) == ("guest", "")
    assert (await americas.auth.check_passphrase("gina", "gina's first one"))[0] is None
    made = americas.store.commit_log(1)[0]
    assert (made.user, made.comment) == ("gina", "passwd gina")
    assert {(w.unit.feature, w.unit.mode) for w in made.writes} == {
        ("userconfig", Mode.cluster().key)
    }


@pytest.mark.parametrize(
    "line",
    [
        "settz print",
        "settz set timezone=Asia/Tokyo",
        "clustermode cluster",
        "commit",
        "commitdetail",
        "explain settz",
        "preview",
        "saveconfig guest.xml",
        "who",
        "status",
        "clusterconfig list",
    ],
)
async def test_guest_may_run_nothing_but_passwd_help_version_quit(
    americas: Daemon, line: str
) -> None:
    gina = Term(americas, user="gina", role="guest")
    assert await gina.run(line) == (1, GUEST_REFUSED)
    assert gina.pending == 0 and gina.shell.mode == Mode.machine(NY)
    assert not (americas.config.data_dir / "configs" / "guest.xml").exists()


async def test_guest_help_version_and_quit(americas: Daemon) -> None:
    gina = Term(americas, user="gina", role="guest")
    assert "passwd" in [line.split()[0] for line in (await gina.ok("help")).splitlines()]
    assert (await gina.ok("help passwd")).startswith("passwd: ")
    assert await gina.ok("version") == f"clusterd {__version__} on {NY}"
    with pytest.raises(Quit):
        await gina.run("exit")
    with pytest.raises(Quit):
        await gina.run("quit")


# -- the read-only role -----------------------------------------------------------------------


async def test_read_only_may_look_and_edit_but_not_commit_or_change_the_cluster(
    americas: Daemon,
) -> None:
    rita = Term(americas, user="rita", role="read-only")
    await in_cluster_mode(rita)
    await rita.ok("settz set timezone=Asia/Tokyo")
    head = newest_commit(americas)
    assert await rita.run("commit tokyo") == (1, "Error: rita (read-only) may not commit changes")
    assert rita.pending == 1  # the refused commit leaves the pending change as it was
    status, out = await rita.run("clusterconfig addgroup Rome")
    assert (status, out) == (1, "Error: rita (read-only) may not change the cluster (addgroup)")
    assert layers.groups(americas.store.state) == ["Main_Group", "Paris"]
    assert newest_commit(americas) == head
    listing = await rita.ok("clusterconfig list")
    assert "Group Paris:" in listing.splitlines()
    assert f"Machine {LA} (Serial #: SER-LA) [disconnected]" in listing.splitlines()
    admin = Term(americas)
    await in_cluster_mode(admin)
    assert (await admin.ok("settz print")).startswith("Time Zone: not defined at Cluster;")


# -- preview -------------------------------------------------------------------------------


async def test_preview_without_pending_changes(ny: Term) -> None:
    assert await ny.ok("preview") == "There are no pending changes."
    assert await ny.ok("preview --json") == "There are no pending changes."


async def test_preview_shows_changes_and_machines_their_own_setting_shields(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok(f"clustermode machine {LA}")
    await committed(ny, "settz set timezone=Europe/Paris")
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Europe/Berlin")
    assert ny.pending == 1
    out = await ny.ok("preview")
    assert out.splitlines()[:3] == [
        "Pending changes:",
        "  settz at Cluster: set record",
        '    timezone: "Asia/Tokyo" → "Europe/Berlin"',
    ]
    assert by_machine(out) == {
        NY: ["  settz:", '    timezone: "Asia/Tokyo" → "Europe/Berlin"'],
        LA: [
            "  no effective change",
            f"  not affected by settz at Cluster: its own setting at Machine {LA} overrides it",
        ],
    }
    report = json.loads(await ny.ok("preview --json"))
    assert report == {
        "pending": [
            {
                "feature": "settz",
                "mode": "Cluster",
                "what": "set record",
                "row": None,
                "before": {"timezone": "Asia/Tokyo"},
                "after": {"timezone": "Europe/Berlin"},
                "changed": True,
            }
        ],
        NY: {
            "changes": {"settz": [{"timezone": "Asia/Tokyo"}, {"timezone": "Europe/Berlin"}]},
            "shielded": [],
        },
        LA: {
            "changes": {},
            "shielded": [{"feature": "settz", "at": "Cluster", "by": f"Machine {LA}"}],
        },
    }
    assert json.loads(await ny.ok("preview -j")) == report
    assert ny.pending == 1  # preview changes nothing


async def test_preview_standalone(term: Term) -> None:
    await term.ok("settz set timezone=Europe/Paris")
    assert (await term.ok("preview")).splitlines() == [
        "Pending changes:",
        f"  settz at Machine {NY}: define",
        '  + timezone: "Europe/Paris"',
        f"Machine {NY}:",
        "  settz:",
        '    timezone: "UTC" → "Europe/Paris"',
    ]


# -- explain -------------------------------------------------------------------------------


async def explained_setup(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo", comment="tz cluster")
    await ny.ok(f"clustermode machine {LA}")
    await committed(ny, "settz set timezone=Europe/Paris", comment="tz la")


async def test_explain_names_every_level_and_where_the_value_comes_from(ny: Term) -> None:
    await explained_setup(ny)
    lines = (await ny.ok(f"explain settz {LA}")).splitlines()
    assert lines[:3] == [
        f"Time Zone on {LA} (comes from Machine {LA}):",
        '  timezone: "Europe/Paris"',
        "Level by level:",
    ]
    by = rf"by 'admin' on {re.escape(NY)} at {STAMP}"
    assert re.fullmatch(rf"  Machine {re.escape(LA)} \(commit SER-NY:\d+ {by} 'tz la'\):", lines[3])
    assert lines[4:6] == ['    timezone: "Europe/Paris"', "  Group Paris: not defined"]
    assert re.fullmatch(rf"  Cluster \(commit SER-NY:\d+ {by} 'tz cluster'\):", lines[6])
    assert lines[7:] == ['    timezone: "Asia/Tokyo"']
    lines = (await ny.ok("explain settz")).splitlines()  # this machine by default
    assert lines[:5] == [
        f"Time Zone on {NY} (comes from Cluster):",
        '  timezone: "Asia/Tokyo"',
        "Level by level:",
        f"  Machine {NY}: not defined",
        "  Group Main_Group: not defined",
    ]
    lines = (await ny.ok("explain ntpconfig")).splitlines()
    assert lines[0] == f"NTP on {NY} (comes from the factory defaults):"
    assert lines[1:] == [
        "  servers:",
        '    - "pool.ntp.org"',
        "  source_interface: null",
        "Level by level:",
        f"  Machine {NY}: not defined",
        "  Group Main_Group: not defined",
        "  Cluster: not defined",
    ]


async def test_explain_json(ny: Term) -> None:
    await explained_setup(ny)
    found = json.loads(await ny.ok(f"explain settz {LA} --json"))
    assert set(found) == {"feature", "machine", "value", "from", "levels"}
    assert (found["feature"], found["machine"], found["value"], found["from"]) == (
        "settz",
        LA,
        {"timezone": "Europe/Paris"},
        f"Machine {LA}",
    )
    mine, group, cluster = found["levels"]
    assert set(mine) == {"mode", "defined", "value", "commit", "origin", "user", "at", "comment"}
    assert (mine["mode"], mine["defined"], mine["value"]) == (
        f"Machine {LA}",
        True,
        {"timezone": "Europe/Paris"},
    )
    assert (mine["user"], mine["origin"], mine["comment"]) == ("admin", NY, "tz la")
    assert group == {"mode": "Group Paris", "defined": False}
    assert (cluster["mode"], cluster["comment"]) == ("Cluster", "tz cluster")
    commits = {c["comment"]: c["id"] for c in json.loads(await ny.ok("commitdetail --json"))}
    assert (mine["commit"], cluster["commit"]) == (commits["tz la"], commits["tz cluster"])
    assert json.loads(await ny.ok(f"explain -j settz {LA}")) == found


@pytest.mark.parametrize(
    ("line", "status", "text"),
    [
        ("explain settz nowhere.example.com", 1, f"Error: no machine {NOWHERE!r} in the cluster"),
        ("explain", 2, "Usage: explain FEATURE [MACHINE] [--json]"),
        ("explain --json", 2, "Usage: explain FEATURE [MACHINE] [--json]"),
        ("explain nosuch", 1, "Error: unknown feature 'nosuch'"),
    ],
)  # fmt: skip
async def test_explain_refusals(ny: Term, line: str, status: int, text: str) -> None:
    assert await ny.run(line) == (status, text)


# -- who, last, tail, nslookup ---------------------------------------------------------------


@dataclass(eq=False)
class FakeShell:
    """What ``who`` reads of an open shell (cli.serve.ShellChannel)."""

    user: str
    source: str
    command: str | None = None
    since: float = field(default_factory=time.time)
    login: AdminLogin = ADMIN


async def test_who(ny: Term) -> None:
    assert await ny.run("who") == (0, "")
    daemon = ny.daemon
    daemon.shells.add(FakeShell("admin", "192.0.2.7:50022", since=time.time() - 60))
    daemon.shells.add(FakeShell("bob", "192.0.2.8:50023", command="status"))
    lines = (await ny.ok("who")).splitlines()
    when = r"since \w{3} \w{3} \d\d \d\d:\d\d:\d\d \S+"
    assert re.fullmatch(rf"admin +192\.0\.2\.7:50022 +{when}  shell", lines[0]), lines
    assert re.fullmatch(rf"bob +192\.0\.2\.8:50023 +{when}  command 'status'", lines[1]), lines
    assert len(lines) == 2


async def test_last_shows_accepted_and_refused_logins_newest_first(ny: Term) -> None:
    daemon = ny.daemon
    assert await ny.run("last") == (0, "")
    daemon.auth.failed("192.0.2.9:4022", "wrong passphrase for user 'admin'", counts=True)
    daemon.auth.failed("192.0.2.9:4023", "not counted")  # an alert only, not a login
    daemon.logins.append(
        {"at": time.time(), "source": "192.0.2.7:50022", "ok": True, "user": "admin",
         "command": None}
    )  # fmt: skip
    lines = (await ny.ok("last")).splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"admin +192\.0\.2\.7:50022 +\w{3} \w{3} \d\d \d\d:\d\d:\d\d \S+", lines[0])
    assert lines[1].startswith("(refused)    192.0.2.9:4022 ")
    assert lines[1].endswith("  wrong passphrase for user 'admin'")
    assert (await ny.ok("last 1")).splitlines() == lines[:1]


async def test_tail_prints_the_end_of_the_daemon_log(ny: Term) -> None:
    log = ny.daemon.config.log_file
    log.write_text("".join(f"line {i}\n" for i in range(30)), encoding="utf-8")
    assert (await ny.ok("tail")).splitlines() == [f"line {i}" for i in range(10, 30)]
    assert (await ny.ok("tail 3")).splitlines() == ["line 27", "line 28", "line 29"]
    await ny.ok(f"clustermode machine {LA}")  # login host only: not another machine's log
    status, out = await ny.run("tail 3")
    assert (status, out) == (
        1,
        f"This command acts on the machine you are logged in to ({NY}), not {LA}.",
    )


async def test_tail_without_a_log_file(ny: Term) -> None:
    path = ny.daemon.config.log_file
    assert not path.exists()
    assert await ny.run("tail") == (1, f"Error: cannot read {path}: No such file or directory")


async def test_tail_of_long_lines_gives_whole_lines(ny: Term) -> None:
    lines = [f"line {i} " + "x" * 300 for i in range(5)]
    ny.daemon.config.log_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (await ny.ok("tail 2")).splitlines() == lines[-2:]


async def test_nslookup_from_the_hosts_file(ny: Term) -> None:
    assert await ny.run(f"nslookup {LA}") == (0, f"{LA} -> 127.0.0.2 (hosts file)")
    assert await ny.run("nslookup 127.0.0.2") == (0, f"127.0.0.2 -> {LA} (hosts file)")
    assert await ny.run("nslookup") == (2, "Usage: nslookup NAME | ADDRESS")


async def test_nslookup_of_what_only_dns_could_answer_fails(ny: Term) -> None:
    """DNS goes to a local port nobody answers on, with a 0.2 s time-out."""
    status, out = await ny.run("nslookup nowhere.example.com")
    assert status == 1 and out.startswith("nowhere.example.com: ")
    assert "nowhere.example.com" in out.removeprefix("nowhere.example.com: ")
    status, out = await ny.run("nslookup 192.0.2.1")
    assert status == 1 and out.startswith("192.0.2.1: ")


# -- saveconfig ----------------------------------------------------------------------------


async def test_saved_cluster_file_shape(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok(f"clusterconfig prepjoin new new.example.com SER-NEW {public_key()}")
    await ny.ok("commit prepared")
    assert layers.prepared(ny.shell.store.state)  # internal features are defined
    await ny.ok("clustermode group Paris")
    await committed(ny, "dnsconfig set timeout_seconds=20")
    await ny.ok(f"clustermode machine {LA}")
    await committed(ny, "settz set timezone=Europe/Paris")
    path = configs(ny.daemon) / "snap.xml"
    assert await ny.ok("saveconfig snap.xml") == f"The configuration has been saved to {path}"
    root = ET.fromstring(path.read_bytes())
    assert root.tag == "clusterconfig"
    assert {k: v for k, v in root.attrib.items() if k != "saved-at"} == {
        "format": "1",
        "kind": "cluster",
        "name": "americas",
        "saved-by": f"admin@{NY}",
    }
    assert re.fullmatch(r"\d{8}T\d{6}", root.attrib["saved-at"])
    assert [(e.tag, e.get("name")) for e in root] == [
        ("cluster", None),
        ("group", "Main_Group"),
        ("group", "Paris"),
        ("machine", LA),
        ("machine", NY),
    ]
    sections = {e.get("name") or e.tag: {f.get("name"): json.loads(f.text or "") for f in e}
                for e in root}  # fmt: skip
    assert sections["cluster"]["settz"] == {"timezone": "Asia/Tokyo"}
    assert set(sections["cluster"]["userconfig"]) == {"admin"}
    assert sections["Main_Group"] == {}
    assert set(sections[NY]) == {"interfaceconfig"}  # the interface clusterd init recorded
    assert sections["Paris"]["dnsconfig"]["timeout_seconds"] == 20
    assert sections[LA] == {"settz": {"timezone": "Europe/Paris"}}
    assert all(e.tag == "feature" for section in root for e in section)
    assert not {f.get("name") for f in root.iter("feature")} & INTERNAL


async def test_saveconfig_default_name_and_bad_names(ny: Term) -> None:
    out = await ny.ok("saveconfig")
    match = re.fullmatch(r"The configuration has been saved to (.*)", out)
    assert match is not None
    assert re.fullmatch(r"americas-\d{8}T\d{6}\.xml", Path(match[1]).name)
    assert Path(match[1]).parent == configs(ny.daemon)
    for name in ("../x", "/etc/x", ".hidden", "a/b"):
        assert await ny.run(f"saveconfig {name}") == (2, BAD_NAME)
    assert not (ny.daemon.config.data_dir / "x").exists()


async def test_saved_standalone_file_shape(term: Term) -> None:
    await committed(term, "settz set timezone=Asia/Tokyo")
    await term.ok("saveconfig alone.xml")
    root = ET.fromstring((configs(term.daemon) / "alone.xml").read_bytes())
    assert (root.get("kind"), root.get("name"), root.get("format")) == ("standalone", NY, "1")
    assert [(e.tag, e.get("name")) for e in root] == [("machine", NY)]
    features = {f.get("name"): json.loads(f.text or "") for f in root[0]}
    assert features["settz"] == {"timezone": "Asia/Tokyo"}
    assert not set(features) & INTERNAL


# -- loadconfig ----------------------------------------------------------------------------


async def test_load_back_a_saved_file_restores_the_saved_value(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok("saveconfig snap.xml")
    await committed(ny, "settz set timezone=UTC")
    out = await ny.ok("loadconfig snap.xml", "y", "", "", "", "", "y")
    groups, machines = ["Main_Group", "Paris"], [LA, NY]
    assert out.splitlines() == [
        "Load the cluster settings? [Y]>y",
        *mapping_menu("group", "Main_Group", groups, ""),
        *mapping_menu("group", "Paris", groups, ""),
        *mapping_menu("machine", LA, machines, ""),
        *mapping_menu("machine", NY, machines, ""),
        "Review: loading this file would change",
        "  settz at Cluster: replace",
        "Load these settings? [N]>y",
        "1 change(s) pending: review with preview, apply with commit.",
    ]
    assert ny.pending == 1
    change = ["  settz:", '    timezone: "UTC" → "Asia/Tokyo"']
    assert by_machine(await ny.ok("preview")) == {NY: change, LA: change}
    assert COMMITTED.fullmatch(await ny.ok("commit restored"))
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Asia/Tokyo"}


async def test_load_declined_or_without_differences_leaves_nothing_pending(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok("saveconfig snap.xml")
    status, out = await ny.run("loadconfig snap.xml", "", "", "", "", "")
    assert status == 0 and out.splitlines()[-1] == "Loading this file changes nothing."
    await committed(ny, "settz set timezone=UTC")
    status, out = await ny.run("loadconfig snap.xml", "", "", "", "", "", "n")
    assert status == 1
    assert out.splitlines()[-2:] == ["Load these settings? [N]>n", "Nothing was loaded."]
    assert ny.pending == 0
    out = await ny.ok("loadconfig snap.xml", "n", "", "", "", "")  # not the cluster settings
    assert out.splitlines()[-1] == "Loading this file changes nothing."
    assert ny.pending == 0


async def test_load_maps_a_file_group_to_another_group(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("clustermode group Main_Group")
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok("clustermode group Paris")
    await committed(ny, "dnsconfig set timeout_seconds=20")
    await ny.ok("saveconfig snap.xml")
    await ny.ok("clustermode group Main_Group")
    await committed(ny, "settz set timezone=UTC")
    # Main_Group's settings: don't copy; Paris's: to Main_Group.
    out = await ny.ok("loadconfig snap.xml", "n", "3", "1", "", "", "y")
    lines = out.splitlines()
    groups = ["Main_Group", "Paris"]
    assert mapping_menu("group", "Main_Group", groups, "3") == lines[1:6]
    assert mapping_menu("group", "Paris", groups, "1") == lines[6:11]
    # Main_Group gets exactly what Paris had in the file: its own settz goes.
    assert block(lines, "Review: loading this file would change") == [
        "Review: loading this file would change",
        "  dnsconfig at Group Main_Group: define",
        "  settz at Group Main_Group: undefine",
        "Load these settings? [N]>y",
        "2 change(s) pending: review with preview, apply with commit.",
    ]
    report = json.loads(await ny.ok("preview --json"))
    assert "dnsconfig" in report[NY]["changes"]  # newyork is in Main_Group
    before, after = report[NY]["changes"]["dnsconfig"]
    assert (before["timeout_seconds"], after["timeout_seconds"]) == (60, 20)
    assert report[LA]["changes"] == {}
    await ny.ok("commit mapped")
    assert (await ny.ok("settz print")).startswith("Time Zone: not defined at Group Main_Group")
    assert json.loads(await ny.ok("dnsconfig print"))["timeout_seconds"] == 20


@pytest.mark.parametrize("line", ["loadconfig snap.xml --yes", "loadconfig --yes snap.xml"])
async def test_load_with_yes_asks_no_confirmation(ny: Term, line: str) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok("saveconfig snap.xml")
    await committed(ny, "settz set timezone=UTC")
    out = await ny.ok(line, "", "", "", "", "")
    assert "Load these settings?" not in out
    assert out.splitlines()[-3:] == [
        "Review: loading this file would change",
        "  settz at Cluster: replace",
        "1 change(s) pending: review with preview, apply with commit.",
    ]
    assert ny.pending == 1


async def test_standalone_file_refused_in_a_cluster(daemon: Daemon) -> None:
    alone = Term(daemon)
    await committed(alone, "settz set timezone=Asia/Tokyo")
    await alone.ok("saveconfig alone.xml")
    await daemon.admin.create("americas", "admin")
    t = Term(daemon)
    status, out = await t.run("loadconfig alone.xml", spare=True)
    assert (status, out) == (
        1,
        "Error: a standalone machine's file cannot be loaded into a cluster",
    )
    assert t.pending == 0


async def test_cluster_file_refused_on_a_standalone_machine(ny: Term, other: Daemon) -> None:
    await ny.ok("saveconfig cluster.xml")
    shutil.copy(configs(ny.daemon) / "cluster.xml", configs(other) / "cluster.xml")
    t = Term(other)
    status, out = await t.run("loadconfig cluster.xml", spare=True)
    assert (status, out) == (
        1,
        "Error: a cluster file loads into a cluster; this machine is standalone",
    )
    assert t.pending == 0


async def test_standalone_file_loads_into_another_standalone_machine(
    term: Term, other: Daemon
) -> None:
    await committed(term, "settz set timezone=Asia/Tokyo")
    await term.ok("saveconfig alone.xml")
    shutil.copy(configs(term.daemon) / "alone.xml", configs(other) / "alone.xml")
    t = Term(other)
    out = await t.ok("loadconfig alone.xml --yes")
    assert "  settz at Machine newyork.example.com: define" in out.splitlines()
    assert t.pending >= 1  # and whatever else makes the machine what the file says
    assert json.loads(await t.ok("settz print")) == {"timezone": "Asia/Tokyo"}


async def test_standalone_sshconfig_saved_is_loaded_back(term: Term) -> None:
    await committed(term, """sshconfig set 'kex_algorithms=["curve25519-sha256"]'""")
    await term.ok("saveconfig alone.xml")
    await committed(term, """sshconfig set 'kex_algorithms=["ecdh-sha2-nistp256"]'""")
    out = await term.ok("loadconfig alone.xml --yes")
    assert "not kept" not in out
    assert json.loads(await term.ok("sshconfig print"))["kex_algorithms"] == ["curve25519-sha256"]


CLUSTER_FILE = '<clusterconfig format="1" kind="cluster" name="americas">{}</clusterconfig>'


def in_cluster(feature: str, text: str) -> str:
    return CLUSTER_FILE.format(f'<cluster><feature name="{feature}">{text}</feature></cluster>')


ENTITIES = "".join(f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10)).replace(
    "&lol0;", "&lol;"
)
LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + ENTITIES
    + "]>\n"
    + in_cluster("settz", '{"timezone": "&lol9;"}')
)
HOSTILE = {
    "billion-laughs": (LAUGHS, "Error: refused: the file uses forbidden XML"),
    "external-entity": (
        '<?xml version="1.0"?>\n<!DOCTYPE clusterconfig [\n'
        ' <!ENTITY xxe SYSTEM "file:///etc/passwd">\n]>\n' + in_cluster("settz", "&xxe;"),
        "Error: refused: the file uses forbidden XML",
    ),
    "dtd-only": (
        "<!DOCTYPE clusterconfig [<!ELEMENT clusterconfig ANY>]>\n" + CLUSTER_FILE.format(""),
        "Error: refused: the file uses forbidden XML",
    ),
    "external-dtd": (
        '<!DOCTYPE clusterconfig SYSTEM "http://example.com/x.dtd">\n' + CLUSTER_FILE.format(""),
        "Error: refused: the file uses forbidden XML",
    ),
    "not-well-formed": (
        '<clusterconfig format="1" kind="cluster" name="americas"><cluster>',
        "Error: not well-formed XML: ",
    ),
    "empty": ("", "Error: not well-formed XML: "),
    "wrong-root": (
        '<config format="1" kind="cluster" name="americas"><cluster/></config>',
        "Error: not a clusterd configuration file (format 1)",
    ),
    "wrong-format": (
        '<clusterconfig format="2" kind="cluster" name="americas"/>',
        "Error: not a clusterd configuration file (format 1)",
    ),
    "wrong-kind": (
        '<clusterconfig format="1" kind="other" name="americas"/>',
        "Error: unknown kind 'other'",
    ),
    "unexpected-element": (
        CLUSTER_FILE.format("<script/>"),
        "Error: unexpected <script> in a cluster file",
    ),
    "unknown-feature": (in_cluster("nosuch", "{}"), "Error: cluster: unknown feature 'nosuch'"),
    "internal-feature": (in_cluster("groups", "{}"), "Error: cluster: unknown feature 'groups'"),
    "invalid-value": (
        in_cluster("settz", '{"timezone": "Mars/Olympus"}'),
        "Error: cluster: settz field 'timezone': unknown time zone 'Mars/Olympus'",
    ),
    "table-as-list": (
        in_cluster("bounceconfig", "[]"),
        "Error: cluster: feature bounceconfig: expected a JSON object",
    ),
    "not-json": (in_cluster("settz", "{timezone"), "Error: cluster: feature settz: not JSON ("),
    "standalone-with-two-machines": (
        '<clusterconfig format="1" kind="standalone" name="a"><machine name="a"/>'
        '<machine name="b"/></clusterconfig>',
        "Error: a standalone file holds exactly one machine",
    ),
    "group-in-standalone": (
        '<clusterconfig format="1" kind="standalone" name="a"><group name="g"/></clusterconfig>',
        "Error: unexpected <group> in a standalone file",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_or_malformed_files_are_refused(ny: Term, name: str) -> None:
    text, error = HOSTILE[name]
    (configs(ny.daemon) / name).write_text(text, encoding="utf-8")
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")  # a change pending before
    status, out = await ny.run(f"loadconfig {name}", spare=True)
    assert status == 1, out
    assert out.startswith(error) and len(out.splitlines()) == 1, out
    assert "root:" not in out and "lollollol" not in out
    assert ny.pending == 1  # the change pending before, and nothing more
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Asia/Tokyo"}


async def test_elements_inside_a_feature_are_refused(ny: Term) -> None:
    text = in_cluster("settz", '{"timezone": "Asia/Tokyo"}<evil/>trailing')
    (configs(ny.daemon) / "nested.xml").write_text(text, encoding="utf-8")
    status, _ = await ny.run("loadconfig nested.xml --yes", "y", "", "", "", "", spare=True)
    assert status == 1 and ny.pending == 0


@pytest.mark.parametrize(
    ("line", "status", "text"),
    [
        ("loadconfig ../x", 2, BAD_NAME),
        ("loadconfig /etc/passwd", 2, BAD_NAME),
        ("loadconfig", 2, f"Usage: {LOADCONFIG_USAGE}"),
        ("loadconfig a b", 2, f"Usage: {LOADCONFIG_USAGE}"),
        ("loadconfig a --group Paris", 2, "Usage: --group FILE=HERE, not 'Paris'"),
        ("loadconfig a --bogus", 2, f"Usage: {LOADCONFIG_USAGE}"),
    ],
)  # fmt: skip
async def test_loadconfig_usage(ny: Term, line: str, status: int, text: str) -> None:
    assert await ny.run(line) == (status, text)
    assert ny.pending == 0


async def test_loadconfig_of_a_missing_file(ny: Term) -> None:
    path = configs(ny.daemon) / "missing.xml"
    assert await ny.run("loadconfig missing.xml") == (
        1,
        f"Error: cannot read {path}: No such file or directory",
    )
