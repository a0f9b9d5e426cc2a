"""Every command and menu path of the admin shell, in-process with scripted answers.

Machine newyork.example.com is built in a temporary directory and never listens; in
the ``americas`` cluster it is in ``Main_Group`` and losangeles.example.com (admitted
straight into membership, unreachable) is in ``Paris``.  Each test reads the exit
status (0 ok, 1 refused, 2 unknown or usage) and the exact text the console got.

Regression tests pin the product bugs found while writing this file (help text,
override notice, conflicts, reconnect offer, read-only create, refused first edits).
"""

from __future__ import annotations

import json
import re

import pytest

from clusterd import __version__
from clusterd.cli.commands import HANDLERS
from clusterd.cli.console import BatchConsole
from clusterd.cli.shell import Quit, Shell
from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.node import identity
from clusterd.node.daemon import Daemon
from clusterd.schema.restrictions import COMMANDS, Restriction, switch_prompt
from clusterd.trust.dns import Lookup
from tests.shellhelp import (
    ADMIN,
    COMMITTED,
    LA,
    LA_ADDRESS,
    NY,
    PASSPHRASE,
    SEALED,
    STAMP,
    Term,
    asks_start,
    free_port,
    menu_join_lines,
    public_key,
    start_answers,
)

CLUSTER_SWITCH = (
    'This command is restricted to "cluster" mode. Would you like to switch to "cluster" mode?'
)
MACHINE_SWITCH = (
    'This command is restricted to "machine" mode. Would you like to switch to "machine" mode?'
)
CONFIRM_CLUSTER = "Changes made in cluster mode affect every machine. Continue?"
NOTE = "Note: Changes to these settings will not affect the following groups and machines"
SUFFIX = {
    Restriction.UNRESTRICTED: "",
    Restriction.CLUSTER_ONLY: " (cluster mode only)",
    Restriction.MACHINE_ONLY: " (machine mode only)",
    Restriction.LOGIN_HOST_ONLY: " (login host only)",
}
STANDALONE_MENU = [
    "Do you want to join or create a cluster?",
    "",
    "1. No, configure as standalone.",
    "2. Create a new cluster.",
    "3. Join an existing cluster over SSH.",
    "4. Join an existing cluster over CCS.",
]
CLUSTER_OPS = [
    "ADDGROUP",
    "SETGROUP",
    "RENAMEGROUP",
    "DELETEGROUP",
    "REMOVEMACHINE",
    "SETNAME",
    "LIST",
    "LISTDETAIL",
    "DISCONNECT",
    "RECONNECT",
    "PREPJOIN",
    "CONNSTATUS",
]
START_MENU = ["1. the factory defaults", "2. a copy of the inherited settings"]
JOIN_USAGE = "Usage: clusterconfig join [--port P] [--fingerprint FP] ADDRESS ADMIN [PASSPHRASE"


# -- fixtures ------------------------------------------------------------------------------


async def in_cluster_mode(t: Term) -> None:
    await t.ok("clustermode cluster", "")
    assert t.shell.mode == Mode.cluster()


async def committed(t: Term, *lines: str) -> None:
    """Run edits (each answering 'the factory defaults' if asked) and commit them."""
    for line in lines:
        await t.ok(line, *start_answers(t, line))
    assert COMMITTED.search(await t.ok("commit setup"))


def block(out: str, first: str) -> list[str]:
    """The lines of ``out`` from the one equal to ``first`` on."""
    lines = out.splitlines()
    return lines[lines.index(first) :]


# -- help and unknown commands ---------------------------------------------------------


async def test_help_lists_exactly_the_commands_the_shell_runs(term: Term) -> None:
    out = await term.ok("help")
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == sorted(listed)
    features = {f.command for f in term.shell.store.catalogue if not f.internal}
    assert set(HANDLERS) | features <= set(listed)
    for line in out.splitlines():
        info = COMMANDS[line.split()[0]]
        assert re.fullmatch(
            rf"{info.name} +{re.escape(info.summary + SUFFIX[info.restriction])}", line
        )
    # Spot checks of the restriction notes.
    by_name = {line.split()[0]: line for line in out.splitlines()}
    assert by_name["userconfig"].endswith("Users (cluster mode only)")
    assert by_name["clusterconfig"].endswith("(cluster mode only)")
    assert by_name["interfaceconfig"].endswith("Network Interfaces (machine mode only)")
    assert by_name["version"].endswith("(machine mode only)")
    assert by_name["settz"].endswith("Time Zone")
    # What is in the command table but not run here is neither listed nor runnable.
    for name in sorted(set(COMMANDS) - set(listed)):
        status, said = await term.run(name)
        assert status == 2 and said.startswith(f"Unknown command: {name}."), said
        assert (await term.run(f"help {name}"))[0] == 2
    # Internal features (membership) are not commands.
    for name in ("cluster", "groups", "machines", "prepjoin"):
        assert (await term.run(f"{name} print"))[0] == 2


@pytest.mark.parametrize(
    ("line", "first", "rest"),
    [
        (
            "help settz",
            "settz: Time Zone",
            "settz [print | clustershow | define defaults|inherited",
        ),
        ("help smtproutes", None, "smtproutes [print | clustershow | define empty|defaults|"),
        (
            "help clusterconfig",
            f"clusterconfig: {COMMANDS['clusterconfig'].summary} (cluster mode only)",
            "clusterconfig [create NAME | list | listdetail | connstatus |",
        ),
        (
            "HELP ClusterMode",
            f"clustermode: {COMMANDS['clustermode'].summary}",
            "clustermode [cluster | group NAME | machine FQDN]",
        ),
        (
            "help interfaceconfig",
            "interfaceconfig: Network Interfaces (machine mode only)",
            "interfaceconfig [print | clustershow |",
        ),
        ("help commitdetail", None, "commitdetail [N] [--json]   the N most recent commits (10)"),
    ],
)
async def test_help_on_one_command(term: Term, line: str, first: str | None, rest: str) -> None:
    lines = (await term.ok(line)).splitlines()
    if first is not None:
        assert lines[0] == first
    assert lines[1].startswith(rest)


async def test_help_says_a_record_has_fields_a_table_rows_and_what_clusterset_is(
    term: Term,
) -> None:
    record = await term.ok("help sethostname")
    assert "set FIELD=VALUE" in record and "new ROW" not in record and "delete ROW" not in record
    table = await term.ok("help unsubscribe")
    assert "new ROW FIELD=VALUE" in table and "set FIELD=VALUE" not in table
    for name in ("clusterset", "clustershow"):
        said = (await term.ok(f"help {name}")).splitlines()
        assert said[0] == f"{name}: an operation of every feature (help lists them)"
        assert said[1].startswith(f"FEATURE {name}")
    nslookup = await term.ok("help nslookup")
    assert "not with dnsconfig" in nslookup and "hosts file" in nslookup


async def test_help_on_an_unknown_command_is_a_usage_error(term: Term) -> None:
    assert await term.run("help nope") == (2, "Usage: help [COMMAND]; no command 'nope'")


@pytest.mark.parametrize("name", ["version", "quit", "clear", "help"])
async def test_help_on_a_shell_command_does_not_describe_the_feature_editor(
    term: Term, name: str
) -> None:
    out = await term.ok(f"help {name}")
    assert "clustershow" not in out and "FIELD=VALUE" not in out, out


async def test_unknown_command_empty_line_and_case(term: Term) -> None:
    assert await term.run("bogus --x") == (
        2,
        "Unknown command: bogus. Type 'help' for the list of commands.",
    )
    assert await term.run("   ") == (0, "")
    assert await term.ok("VERSION") == f"clusterd {__version__} on {NY}"


async def test_malformed_quotes_are_a_usage_error_and_change_nothing(ny: Term) -> None:
    await in_cluster_mode(ny)
    assert await ny.run('settz set "timezone=Europe/Paris') == (2, "Error: No closing quotation")
    assert await ny.run("settz set 'timezone=Europe/Paris") == (2, "Error: No closing quotation")
    assert ny.pending == 0


# -- clustermode and prompts -------------------------------------------------------------


async def test_standalone_has_only_its_own_mode(term: Term) -> None:
    assert term.prompt == f"{NY}> "
    assert await term.ok("clustermode") == f"Current mode: Machine {NY}"
    for line in (
        "clustermode cluster",
        "clustermode group Main_Group",
        f"clustermode machine {NY}",
    ):
        status, out = await term.run(line)
        assert status == 1
        assert out == "Error: this machine is not in a cluster: it has only its own mode"
    assert term.prompt == f"{NY}> "


async def test_prompt_shows_each_mode(ny: Term) -> None:
    assert ny.prompt == f"(Machine {NY})> "  # login host's machine mode after login
    out = await ny.ok("clustermode cluster", "")
    assert out == f"{CONFIRM_CLUSTER} [Y]>"
    assert ny.prompt == "(Cluster americas)> "
    assert await ny.ok("clustermode") == "Current mode: Cluster"
    assert await ny.ok("clustermode group Paris") == ""  # no question for a group
    assert ny.prompt == "(Group Paris)> "
    assert await ny.ok(f"clustermode machine {LA}") == ""
    assert ny.prompt == f"(Machine {LA})> "
    assert await ny.ok("clustermode") == f"Current mode: Machine {LA}"
    await ny.ok(f"clustermode machine {NY}")
    assert ny.prompt == f"(Machine {NY})> "


async def test_declining_cluster_mode_keeps_the_mode(ny: Term) -> None:
    status, out = await ny.run("clustermode cluster", "n")
    assert (status, out) == (1, f"{CONFIRM_CLUSTER} [Y]>n")
    assert ny.prompt == f"(Machine {NY})> "


async def test_batch_console_switches_to_cluster_mode_without_asking(americas: Daemon) -> None:
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line("clustermode cluster") == 0
    assert shell.prompt() == "(Cluster americas)> " and batch.output == ""


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("clustermode group Rome", "Error: no group 'Rome' (groups: Main_Group, Paris)"),
        ("clustermode machine sf.example.com", "Error: no machine 'sf.example.com' in the cluster"),
    ],
)
async def test_clustermode_refuses_unknown_group_or_machine(
    ny: Term, line: str, error: str
) -> None:
    assert await ny.run(line) == (1, error)
    assert ny.prompt == f"(Machine {NY})> "


@pytest.mark.parametrize("line", ["clustermode foo", "clustermode group", "clustermode cluster x"])
async def test_clustermode_malformed(ny: Term, line: str) -> None:
    status, out = await ny.run(line)
    assert status == 2  # bad arguments
    assert "clustermode [cluster | group NAME | machine FQDN]" in out
    assert ny.prompt == f"(Machine {NY})> "


async def test_a_mode_that_disappears_falls_back_to_the_login_machine(americas: Daemon) -> None:
    one, other = Term(americas), Term(americas)
    await one.ok("clustermode group Paris")
    await in_cluster_mode(other)
    await other.ok("clusterconfig deletegroup Paris Main_Group")
    assert one.prompt == f"(Machine {NY})> "
    assert one.shell.mode == Mode.machine(NY)


# -- restricted commands ------------------------------------------------------------------


async def test_cluster_only_command_in_machine_mode_offers_to_switch(ny: Term) -> None:
    assert switch_prompt(Restriction.CLUSTER_ONLY) == CLUSTER_SWITCH + " [Y]>"
    out = await ny.ok("userconfig print", "")
    lines = out.splitlines()
    assert lines[0] == f"{CLUSTER_SWITCH} [Y]>"  # Y is the default
    assert lines[0] == switch_prompt(Restriction.CLUSTER_ONLY)
    assert json.loads("\n".join(lines[1:]))["admin"]["role"] == "admin"
    assert ny.prompt == "(Cluster americas)> "
    assert await ny.ok("userconfig print") == "\n".join(lines[1:])  # no question any more


@pytest.mark.parametrize("answer", ["y", "Yes", "Y"])
async def test_switch_accepts_yes(ny: Term, answer: str) -> None:
    out = await ny.ok("sshconfig print", answer)
    assert out.splitlines()[0] == f"{CLUSTER_SWITCH} [Y]>{answer}"
    assert ny.shell.mode == Mode.cluster()


@pytest.mark.parametrize("answer", ["N", "no", "later"])
async def test_switch_refused_runs_nothing(ny: Term, answer: str) -> None:
    status, out = await ny.run("userconfig print", answer)
    assert status == 1
    assert out.splitlines() == [f"{CLUSTER_SWITCH} [Y]>{answer}", "Command not run: wrong mode."]
    assert ny.prompt == f"(Machine {NY})> "


async def test_machine_only_command_switches_to_the_login_machine(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await ny.ok("interfaceconfig print", "", "")  # yes; the login host (the default)
    assert out.splitlines()[:5] == [
        f"{MACHINE_SWITCH} [Y]>",
        "Choose the machine of Cluster to switch to:",
        f"1. {NY}",
        f"2. {LA}",
        "[1]>",
    ]
    assert ny.shell.mode == Mode.machine(NY)
    status, out = await ny.run("version")
    assert (status, out) == (0, f"clusterd {__version__} on {NY}")


async def test_machine_only_command_from_a_group_goes_to_its_machine(ny: Term) -> None:
    await ny.ok("clustermode group Paris")  # losangeles only, not the login host
    out = await ny.ok("interfaceconfig print", "")
    assert out.splitlines()[0] == f"{MACHINE_SWITCH} [Y]>"
    assert ny.shell.mode == Mode.machine(LA)


async def test_machine_only_command_refused_in_cluster_mode(ny: Term) -> None:
    await in_cluster_mode(ny)
    status, out = await ny.run("version", "n")
    assert status == 1 and out.splitlines()[-1] == "Command not run: wrong mode."
    assert ny.shell.mode == Mode.cluster()


async def test_machine_only_command_in_another_machines_mode_asks_nothing(ny: Term) -> None:
    await ny.ok(f"clustermode machine {LA}")
    out = await ny.ok("interfaceconfig print")
    assert out.startswith(f"Network Interfaces: not defined at Machine {LA};")


async def test_standalone_runs_restricted_commands_without_asking(term: Term) -> None:
    out = await term.ok("userconfig print")
    assert json.loads(out)["admin"]["role"] == "admin"
    # clusterd init recorded the interface it listens on (the shell's machine: 127.0.0.1)
    assert json.loads(await term.ok("interfaceconfig print"))["Management"]["prefix"] == 32


# -- the editor: records ------------------------------------------------------------------


async def test_record_inheriting_only_the_factory_defaults_starts_from_them_unasked(
    ny: Term,
) -> None:
    await in_cluster_mode(ny)
    shown = await ny.ok("settz print")
    assert shown.splitlines() == [
        "Time Zone: not defined at Cluster; the values shown come from the factory defaults.",
        "{",
        ' "timezone": "UTC"',
        "}",
    ]
    # Nothing above the cluster: both starts would be the factory defaults, so the first
    # edit asks nothing (and does not say where the values come from).
    assert await ny.ok("settz set timezone=Europe/Paris") == ""
    assert ny.pending == 1
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Europe/Paris"}
    assert await ny.ok("settz set timezone=Asia/Tokyo") == ""  # defined now: nothing asked
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Asia/Tokyo"}
    # The fields not given come from the factory defaults.
    factory = json.loads((await ny.ok("dnsconfig print")).split("\n", 1)[1])
    assert await ny.ok("dnsconfig set mode=internet-root") == ""
    assert json.loads(await ny.ok("dnsconfig print")) == {**factory, "mode": "internet-root"}


@pytest.mark.parametrize("level", ["group Paris", f"machine {LA}"])
async def test_nothing_inherited_below_the_cluster_asks_nothing_either(
    ny: Term, level: str
) -> None:
    await ny.ok(f"clustermode {level}")
    assert await ny.ok("settz set timezone=Europe/Paris") == ""
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Europe/Paris"}


@pytest.mark.parametrize(("pick", "timeout"), [("1", 60), ("2", 30), ("", 30)])
async def test_group_starts_from_defaults_or_from_the_cluster(
    ny: Term, pick: str, timeout: int
) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "dnsconfig set timeout_seconds=30")
    await ny.ok("clustermode group Paris")
    out = await ny.ok("dnsconfig set mode=internet-root", pick)
    lines = out.splitlines()
    assert lines[0] == "DNS: not defined at Group Paris; the values shown come from Cluster."
    assert lines[lines.index("dnsconfig is not defined at Group Paris. Start from:") + 1 :] == [
        *START_MENU,
        f"[2]>{pick}",
    ]
    assert json.loads(await ny.ok("dnsconfig print"))["timeout_seconds"] == timeout


@pytest.mark.parametrize(("pick", "timeout"), [("1", 60), ("2", 30)])
async def test_machine_starts_from_defaults_or_from_its_group(
    ny: Term, pick: str, timeout: int
) -> None:
    await ny.ok("clustermode group Paris")
    await committed(ny, "dnsconfig set timeout_seconds=30")  # (nothing above: not asked)
    await ny.ok(f"clustermode machine {LA}")
    out = await ny.ok("dnsconfig set mode=internet-root", pick)
    lines = out.splitlines()
    assert lines[0] == f"DNS: not defined at Machine {LA}; the values shown come from Group Paris."
    assert lines[lines.index(f"dnsconfig is not defined at Machine {LA}. Start from:") + 1 :] == [
        *START_MENU,
        f"[2]>{pick}",
    ]
    assert json.loads(await ny.ok("dnsconfig print"))["timeout_seconds"] == timeout
    # newyork's group (Main_Group) and the cluster define nothing: newyork is not asked.
    await ny.ok(f"clustermode machine {NY}")
    assert await ny.ok("dnsconfig set mode=internet-root") == ""
    assert json.loads(await ny.ok("dnsconfig print"))["timeout_seconds"] == 60


async def test_machine_shows_where_its_values_come_from(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok("clustermode group Paris")
    await committed(ny, "settz set timezone=Europe/Paris")
    await ny.ok(f"clustermode machine {LA}")
    out = await ny.ok("settz print")
    assert out.splitlines()[0] == (
        f"Time Zone: not defined at Machine {LA}; the values shown come from Group Paris."
    )
    assert json.loads("\n".join(out.splitlines()[1:])) == {"timezone": "Europe/Paris"}
    await ny.ok(f"clustermode machine {NY}")
    assert (await ny.ok("settz print")).splitlines()[0] == (
        f"Time Zone: not defined at Machine {NY}; the values shown come from Cluster."
    )


async def test_standalone_edit_defines_without_asking(term: Term) -> None:
    assert await term.ok("settz print") == (
        "Time Zone: not set on this machine; the factory defaults apply."
    )
    assert await term.ok("settz set timezone=Europe/Paris") == ""
    assert json.loads(await term.ok("settz print")) == {"timezone": "Europe/Paris"}
    assert term.pending == 1


async def test_record_menu(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await ny.ok("settz", "")  # the menu's default is (done)
    assert block(out, "Choose the operation you want to perform:") == [
        "Choose the operation you want to perform:",
        "1. SET",
        "2. PRINT",
        "3. CLUSTERSHOW",
        "4. CLUSTERSET",
        "5. UNDEFINE",
        "6. (done)",
        "[6]>",
    ]
    out = await ny.ok("settz", "1", "timezone=Europe/Paris")  # (nothing inherited: not asked)
    assert "Enter FIELD=VALUE pairs (timezone)." in out.splitlines()
    assert "Start from" not in out
    assert (await ny.ok("settz", "2")).splitlines()[0] == "Time Zone: defined at Cluster."
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Europe/Paris"}
    out = await ny.ok("settz", "3")
    assert block(out, "Configured at mode:")[1] == "    Cluster: Yes"
    out = await ny.ok("settz", "4", "1", "group Paris")  # CLUSTERSET: copy, to group Paris
    assert "Time Zone copy from Cluster to Group Paris: pending until commit." in out
    await ny.ok("settz", "5")
    assert (await ny.ok("settz print")).startswith("Time Zone: not defined at Cluster;")
    status, out = await ny.run("settz", "9", "")
    assert status == 0 and "Please enter a number from 1 to 6, or a name shown." in out


# -- the editor: tables --------------------------------------------------------------------


async def test_table_new_edit_delete_print(ny: Term) -> None:
    await in_cluster_mode(ny)
    assert await ny.ok("bounceconfig new Fast max_retries=3") == ""  # nothing inherited
    rows = json.loads(await ny.ok("bounceconfig print"))
    assert set(rows) == {"Default", "Fast"}  # started from the factory defaults
    assert rows["Fast"] == {**rows["Default"], "max_retries": 3}
    status, out = await ny.run("bounceconfig new Fast max_retries=4")
    assert (status, out) == (2, "Usage: bounceconfig already has a row 'Fast': use edit")
    await ny.ok("bounceconfig edit Fast initial_retry_seconds=30")
    fast = json.loads(await ny.ok("bounceconfig print"))["Fast"]
    assert fast["max_retries"] == 3 and fast["initial_retry_seconds"] == 30  # merged
    status, out = await ny.run("bounceconfig edit Slow max_retries=5")
    assert (status, out) == (2, "Usage: bounceconfig has no row 'Slow' at Cluster: use new")
    await ny.ok("bounceconfig delete Fast")
    assert set(json.loads(await ny.ok("bounceconfig print"))) == {"Default"}
    for line, usage in [
        ("bounceconfig delete", "Usage: bounceconfig delete ROW"),
        ("bounceconfig new", "Usage: bounceconfig new ROW FIELD=VALUE ..."),
        ("bounceconfig frob", "Usage: no 'frob' for bounceconfig; see 'help bounceconfig'"),
        (
            "bounceconfig set max_retries=1",
            "Usage: no 'set' for bounceconfig; see 'help bounceconfig'",
        ),
        ("settz new X a=1", "Usage: no 'new' for settz; see 'help settz'"),
    ]:
        assert await ny.run(line) == (2, usage)


async def test_table_starting_from_a_copy_of_the_cluster(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "bounceconfig new Fast max_retries=3")
    await ny.ok("clustermode group Paris")
    await ny.ok("bounceconfig new Slow max_retries=500", "2")
    assert set(json.loads(await ny.ok("bounceconfig print"))) == {"Default", "Fast", "Slow"}


async def test_table_menu(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("bounceconfig define defaults")
    out = await ny.ok("bounceconfig", "1", "Fast", "max_retries=3")
    assert out.splitlines()[0] == "Bounce Profiles: defined at Cluster."
    assert block(out, "Choose the operation you want to perform:")[1:10] == [
        "1. NEW",
        "2. EDIT",
        "3. DELETE",
        "4. PRINT",
        "5. CLUSTERSHOW",
        "6. CLUSTERSET",
        "7. UNDEFINE",
        "8. (done)",
        "[8]>1",
    ]
    assert "Enter the row name." in out.splitlines()
    await ny.ok("bounceconfig", "2", "Fast", "max_retries=4")
    assert json.loads(await ny.ok("bounceconfig print"))["Fast"]["max_retries"] == 4
    await ny.ok("bounceconfig", "3", "Fast")
    assert "Fast" not in json.loads(await ny.ok("bounceconfig print"))
    await ny.ok("bounceconfig", "7")
    assert not layers.is_defined(
        ny.shell.session.view, ny.shell.store.catalogue["bounceconfig"], Mode.cluster()
    )


async def test_define_and_undefine(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("bounceconfig define empty")
    assert json.loads(await ny.ok("bounceconfig print")) == {}  # empty is not absent
    await ny.ok("bounceconfig undefine")
    assert (await ny.ok("bounceconfig print")).startswith(
        "Bounce Profiles: not defined at Cluster;"
    )
    await ny.ok("bounceconfig define defaults")
    assert set(json.loads(await ny.ok("bounceconfig print"))) == {"Default"}
    await ny.ok("bounceconfig new Fast max_retries=3")
    await ny.ok("commit", "")  # the comment is asked
    await ny.ok("clustermode group Paris")
    await ny.ok("bounceconfig define")  # inherited by default
    assert set(json.loads(await ny.ok("bounceconfig print"))) == {"Default", "Fast"}
    before = ny.pending
    status, out = await ny.run("bounceconfig define bogus")
    assert status == 2 and "define empty|defaults|inherited" in out
    assert ny.pending == before


# -- CLUSTERSHOW, CLUSTERSET, overrides, references ------------------------------------


async def test_clustershow_shape(americas: Daemon) -> None:
    t = Term(americas)
    await in_cluster_mode(t)
    await t.ok(f"clusterconfig setgroup {LA} Main_Group")  # LIST order = name order here
    await committed(t, "settz set timezone=Asia/Tokyo")
    await t.ok("clustermode group Paris")
    await t.ok("settz set timezone=Europe/Paris", "2")  # pending: shown to this shell
    assert await t.ok("settz clustershow") == (
        "Configured at mode:\n"
        "    Cluster: Yes\n"
        "    Group Main_Group: No\n"
        "    Group Paris: Yes\n"
        f"    Machine {LA}: No\n"
        f"    Machine {NY}: No"
    )
    other = Term(americas)
    assert "    Group Paris: No" in (await other.ok("settz clustershow")).splitlines()


async def test_clustershow_standalone(term: Term) -> None:
    assert await term.ok("settz clustershow") == "This machine is not in a cluster."


def shown(out: str) -> dict[str, bool]:
    lines = block(out, "Configured at mode:")[1:]
    return {line.strip().rpartition(": ")[0]: line.endswith("Yes") for line in lines}


async def test_clusterset_copy_and_move(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    out = await ny.ok("settz clusterset copy group Paris")
    assert out == "Time Zone copy from Cluster to Group Paris: pending until commit."
    marks = shown(await ny.ok("settz clustershow"))
    assert marks["Cluster"] and marks["Group Paris"]
    out = await ny.ok(f"settz clusterset move machine {LA}", "y")
    assert out.splitlines() == [
        "Warning: these machines lose the moved Time Zone settings:",
        f"  {NY} will use the factory defaults",
        "Move anyway? [N]>y",
        f"Time Zone move from Cluster to Machine {LA}: pending until commit.",
    ]
    marks = shown(await ny.ok("settz clustershow"))
    assert not marks["Cluster"] and marks[f"Machine {LA}"]  # move: no longer defined here
    assert (await ny.ok("settz print")).startswith("Time Zone: not defined at Cluster;")
    await ny.ok("commit moved")
    state = ny.shell.store.state
    tz = ny.shell.store.catalogue["settz"]
    assert not layers.is_defined(state, tz, Mode.cluster())
    assert layers.is_defined(state, tz, Mode.machine(LA))


async def test_clusterset_copy_to_all_groups(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    out = await ny.ok("settz clusterset copy allgroups")
    assert out.splitlines() == [
        "Time Zone copy from Cluster to Group Main_Group: pending until commit.",
        "Time Zone copy from Cluster to Group Paris: pending until commit.",
    ]
    marks = shown(await ny.ok("settz clustershow"))
    assert marks["Cluster"] and marks["Group Main_Group"] and marks["Group Paris"]
    status, out = await ny.run("settz clusterset move allgroups")
    assert status == 2
    assert out == "Usage: moving to all groups is not possible: copy, then undefine here"


@pytest.mark.parametrize(
    ("line", "status", "text"),
    [
        ("settz clusterset copy", 2, "Usage: settz clusterset copy|move cluster|group NAME|"),
        ("settz clusterset swap cluster", 2, "Usage: settz clusterset copy|move"),
        ("settz clusterset copy cluster", 1, "Error: settz: cannot copy Cluster onto itself"),
        ("settz clusterset copy group Rome", 1, "Error: unknown mode 'Group Rome'"),
        ("settz clusterset copy machine sf.example.com", 1, "Error: unknown mode"),
    ],
)
async def test_clusterset_refusals(ny: Term, line: str, status: int, text: str) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    got, out = await ny.run(line)
    assert got == status and out.startswith(text), out
    assert ny.pending == 1


async def test_override_notice_names_the_overriding_groups_and_machines(ny: Term) -> None:
    await ny.ok("settz set timezone=America/New_York")  # machine newyork
    await ny.ok("clustermode group Paris")
    await ny.ok("settz set timezone=Europe/Paris")
    await in_cluster_mode(ny)
    out = await ny.ok("settz set timezone=UTC")
    assert block(out, NOTE) == [
        NOTE,
        "because they are overriding the cluster-wide settings:",
        "Paris",
        NY,
    ]
    assert block(await ny.ok("settz set timezone=Asia/Tokyo"), NOTE)[2:] == ["Paris", NY]
    await ny.ok("clustermode group Main_Group")
    out = await ny.ok("settz define inherited")
    assert block(out, NOTE)[2:] == [NY]


async def test_no_override_notice_when_nothing_overrides(ny: Term) -> None:
    await in_cluster_mode(ny)
    assert NOTE not in await ny.ok("settz set timezone=UTC")


async def test_override_notice_keeps_the_group_name(ny: Term) -> None:
    await ny.ok(f"clustermode machine {LA}")
    await ny.ok("settz set timezone=America/Los_Angeles")
    await ny.ok("clustermode group Paris")
    out = await ny.ok("settz set timezone=Europe/Paris")
    because = block(out, NOTE)[1]
    assert because.startswith("because they are overriding the ") and "Paris" in because


async def test_reference_unavailable_on_a_machine_is_named(ny: Term) -> None:
    # Interface Data1 exists on newyork only; a cluster-wide listener binds to it.
    line = f"interfaceconfig new Data1 address=10.0.0.1 prefix=24 hostname={NY}"
    await ny.ok(line)  # beside the Management interface clusterd init recorded
    await in_cluster_mode(ny)
    out = await ny.ok("listenerconfig new Out interface=Data1 type=private")
    warnings = [w for w in out.splitlines() if w.startswith("- Unavailable on Machine")]
    assert warnings == [
        f"- Unavailable on Machine {LA}: listenerconfig row 'Out' (from Cluster) field "
        f"'interface' names interfaceconfig 'Data1', which is unavailable on Machine {LA}"
    ]
    # Moving the listener down to newyork cures it.
    out = await ny.ok(f"listenerconfig clusterset move machine {NY}", "y")
    assert f"  {LA} will use the factory defaults" in out.splitlines()  # (said, and asked)
    assert "- Unavailable" not in out


# -- pending changes, commit, clear, quit ----------------------------------------------------


async def test_pending_changes_belong_to_one_shell(americas: Daemon) -> None:
    mine, theirs = Term(americas), Term(americas)
    for t in (mine, theirs):
        await in_cluster_mode(t)
    await mine.ok("settz set timezone=Europe/Paris")
    assert json.loads(await mine.ok("settz print")) == {"timezone": "Europe/Paris"}
    assert (await theirs.ok("settz print")).startswith("Time Zone: not defined at Cluster;")
    assert theirs.pending == 0
    out = await mine.ok("commit", "paris time")
    lines = out.splitlines()
    assert lines[:2] == ["Please enter some comments describing your changes:", "[]>paris time"]
    assert COMMITTED.fullmatch(lines[2]) and len(lines) == 3
    assert mine.pending == 0
    assert json.loads(await theirs.ok("settz print")) == {"timezone": "Europe/Paris"}
    assert await mine.ok("commit") == "There are no changes to commit."
    detail = (await theirs.ok("commitdetail 1")).splitlines()
    assert re.search(rf"  admin  'paris time'{SEALED}$", detail[0])
    assert detail[1:] == ["    settz at Cluster"]


async def test_commit_commits_every_mode(ny: Term) -> None:
    await ny.ok("settz set timezone=America/New_York")
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=UTC")
    assert ny.pending == 2
    assert COMMITTED.fullmatch(await ny.ok("commit two modes"))  # comment given: not asked
    detail = (await ny.ok("commitdetail 1")).splitlines()
    assert detail[1:] == ["    settz at Cluster", f"    settz at Machine {NY}"]


async def test_clear_asks_then_discards(ny: Term) -> None:
    assert await ny.ok("clear") == "There are no pending changes."
    await ny.ok("settz set timezone=America/New_York")
    await ny.ok("clustermode group Paris")
    await ny.ok("settz set timezone=Europe/Paris")
    status, out = await ny.run("clear", "n")
    assert (status, out) == (1, "Discard all pending changes? [Y]>n")
    assert ny.pending == 2
    out = await ny.ok("clearchanges", "maybe", "")
    assert out.splitlines() == [
        "Discard all pending changes? [Y]>maybe",
        "Please answer Y or N.",
        "Discard all pending changes? [Y]>",
        "2 pending change(s) discarded.",
    ]
    assert ny.pending == 0
    assert (await ny.ok("settz print")).startswith("Time Zone: not defined at Group Paris;")


@pytest.mark.parametrize(("answer", "zone"), [("", "Europe/Paris"), ("y", "Asia/Tokyo")])
async def test_commit_over_a_change_made_meanwhile(
    americas: Daemon, answer: str, zone: str
) -> None:
    first, second = Term(americas), Term(americas, user="bob")
    for t in (first, second):
        await in_cluster_mode(t)
    await first.ok("settz set timezone=Europe/Paris")
    await second.ok("settz set timezone=Asia/Tokyo")
    await first.ok("commit first")
    out = await second.ok("commit second", answer)
    lines = out.splitlines()
    assert lines[0] == "These pending changes were committed by someone else since you read them:"
    assert lines[-2] == f"Overwrite their changes with yours? [N]>{answer}"
    if answer:
        assert COMMITTED.fullmatch(lines[-1])
    else:
        assert lines[-1] == "Nothing left to commit."
    assert json.loads(await first.ok("settz print")) == {"timezone": zone}
    assert second.pending == 0


async def test_conflict_is_described_readably(americas: Daemon) -> None:
    first, second = Term(americas), Term(americas, user="bob")
    for t in (first, second):
        await in_cluster_mode(t)
    await first.ok("settz set timezone=Europe/Paris")
    await second.ok("settz set timezone=Asia/Tokyo")
    await first.ok("commit first")
    out = await second.ok("commit second", "")
    assert "Conflict(" not in out and "Unit(" not in out, out


async def test_quit(ny: Term) -> None:
    with pytest.raises(Quit):
        await ny.run("quit")
    await ny.ok("settz set timezone=UTC")
    status, out = await ny.run("exit", "")
    assert status == 1
    assert out == "You have 1 uncommitted change(s). Leave anyway? [N]>"
    with pytest.raises(Quit):
        await ny.run("exit", "y")


# -- commitdetail, status, version --------------------------------------------------------


async def test_commitdetail_text_and_json(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit", "tz change")
    lines = (await ny.ok("commitdetail 2")).splitlines()
    stamp = STAMP
    assert re.fullmatch(rf"SER-NY:\d+  {stamp}  {NY}  admin  'tz change'{SEALED}", lines[0]), lines
    assert lines[1] == "    settz at Cluster"
    assert re.fullmatch(
        rf"SER-NY:\d+  {stamp}  {NY}  admin  '{LA} joins group Paris'{SEALED}", lines[2]
    )
    assert lines[3:] == [
        "    detached at Cluster", "    machines at Cluster", "    placement at Cluster"
    ]  # fmt: skip
    rows = json.loads(await ny.ok("commitdetail 2 --json"))
    assert [set(r) for r in rows] == [
        {
            "id",
            "time",
            "user",
            "origin",
            "origin_serial",
            "comment",
            "changed",
            "inconsistent",
            "lost",
            "superseded",
            "seal",
        }
    ] * 2
    newest = rows[0]
    assert newest["id"].startswith("SER-NY:") and newest["origin"] == NY
    assert newest["user"] == "admin" and newest["comment"] == "tz change"
    assert newest["changed"] == ["settz at Cluster"] and newest["inconsistent"] is False
    assert newest["seal"] == {"hash": newest["seal"]["hash"], "ok": True, "broken": None,
                              "label": "verified", "text": "verified"}  # fmt: skip
    assert re.fullmatch("[0-9a-f]{64}", newest["seal"]["hash"])
    assert re.fullmatch(stamp, newest["time"])
    assert int(newest["id"].split(":")[1]) == int(rows[1]["id"].split(":")[1]) + 1
    assert json.loads(await ny.ok("commitdetail -j")) == json.loads(
        await ny.ok("commitdetail 10 --json")
    )
    assert len(json.loads(await ny.ok("commitdetail 1 --json"))) == 1


async def test_status_and_version(ny: Term) -> None:
    assert await ny.ok("version") == f"clusterd {__version__} on {NY}"
    lines = (await ny.ok("status")).splitlines()
    assert lines[0] == f"Machine {NY} (Serial #: SER-NY), clusterd {__version__}"
    assert re.fullmatch(r"Cluster: americas, up \d+ s", lines[1])
    assert lines[2].split() == [LA, "down", "Awaiting", "Initial", "Sync"]
    assert lines[3].startswith(f"      action: Wait for its first link: {LA} links")
    found = json.loads(await ny.ok("status --json"))
    assert (found["hostname"], found["serial"], found["cluster"]) == (NY, "SER-NY", "americas")


async def test_status_standalone(term: Term) -> None:
    assert (await term.ok("status")).splitlines()[1].startswith("Cluster: (standalone), up ")


# -- clusterconfig on a standalone machine ----------------------------------------------------


async def test_standalone_menu_1_does_nothing(term: Term) -> None:
    out = await term.ok("clusterconfig", "1")
    assert out.splitlines() == [*STANDALONE_MENU, "[1]>1"]
    assert term.cluster is None and term.prompt == f"{NY}> "
    out = await term.ok("clusterconfig", "")  # the default is 1
    assert out.splitlines()[-1] == "[1]>"
    out = await term.ok("clusterconfig", "7", "1")
    assert "Please enter a number from 1 to 4, or a name shown." in out.splitlines()


async def test_standalone_menu_2_creates(term: Term) -> None:
    out = await term.ok("clusterconfig", "2", "americas")
    assert out.splitlines()[-5:-2] == ["[1]>2", "Enter the name of the new cluster.", "[]>americas"]
    assert re.fullmatch(DONE.format(said=r"Cluster americas created\."), out.splitlines()[-2])
    assert term.cluster == "americas"
    assert term.prompt == "(Cluster americas)> "  # as the reference's, after a create
    assert term.pending == 0  # membership operations take effect at once


# A cluster operation says what it did, when, and that it needs no commit.
DONE = (
    r"{said} \w{{3}} \w{{3}} \d\d \d\d:\d\d:\d\d \d{{4}} \S+: in effect now on every member; "
    r"no commit is needed\."
)


async def test_standalone_batch_create(term: Term) -> None:
    made = (await term.ok("clusterconfig create americas")).splitlines()
    assert re.fullmatch(DONE.format(said=r"Cluster americas created\."), made[0]), made
    assert made[1:] == ["Now in cluster mode: the prompt is (Cluster americas)>"]
    assert await term.ok("clusterconfig list") == (
        f"cluster = americas\nGroup Main_Group:\nMachine {NY} (Serial #: SER-NY)"
    )


async def test_one_line_cluster_operations_say_what_they_did(term: Term) -> None:
    await term.ok("clusterconfig create americas")
    await term.ok("clustermode cluster", "")
    for line, said in (("clusterconfig addgroup Paris", r"Group Paris added\."),
                       (f"clusterconfig setgroup {NY} Paris",
                        rf"Machine {re.escape(NY)} is in group Paris\."),
                       ("clusterconfig renamegroup Paris Lyon", r"Group Paris is now Lyon\."),
                       ("clusterconfig deletegroup Lyon Main_Group",
                        r"Group Lyon deleted; its machines are in Main_Group\.")):  # fmt: skip
        done = await term.ok(line)
        assert re.fullmatch(DONE.format(said=said), done), (line, done)
    assert term.pending == 0


@pytest.mark.parametrize(
    ("line", "status", "text"),
    [
        ("clusterconfig create", 2, "Usage: clusterconfig create NAME | join ..."),
        ("clusterconfig list", 2, "Usage: clusterconfig create NAME | join ..."),
        ('clusterconfig create "two words"', 1, "Error: cluster field 'name': not a name"),
        ("clusterconfig join 127.0.0.1", 2, JOIN_USAGE),
        ("clusterconfig join --key", 2, JOIN_USAGE),
        ("clusterconfig join --key 127.0.0.1 Paris extra", 2, JOIN_USAGE),
        ("clusterconfig join 127.0.0.1 admin pw Main_Group extra", 2, JOIN_USAGE),
        ("clusterconfig join --port 127.0.0.1 admin pw", 2, "Usage: a port is a number"),
        ("clusterconfig join --port 0 127.0.0.1 admin pw", 2, "Usage: a port is a number"),
        ("clusterconfig join --port", 2, JOIN_USAGE),
        ("clusterconfig join --port 22 --port 23 127.0.0.1 admin pw", 2, JOIN_USAGE),
        ("clusterconfig join --bogus 127.0.0.1 admin pw", 2, "Usage: unknown option --bogus"),
        ("clusterconfig join --port 22 127.0.0.1 22 SHA256:x", 2, JOIN_USAGE),  # mixed forms
        ("clusterconfig join --key 127.0.0.1 22 SHA256:x Main_Group pw", 2, "Usage: a join with"),
    ],
)
async def test_standalone_refusals(term: Term, line: str, status: int, text: str) -> None:
    got, out = await term.run(line)
    assert got == status and out.startswith(text), out
    assert term.cluster is None


async def test_standalone_prepjoin_print(term: Term) -> None:
    key = identity.public_key(term.daemon.config.machine_key).split()[:2]
    assert await term.ok("clusterconfig prepjoin print") == (
        f"Host: {NY}\nSerial #: SER-NY\nMachine key: {' '.join(key)}"
    )


async def test_standalone_menu_join_over_ssh_asks_then_fails_cleanly(term: Term) -> None:
    port = str(free_port())  # nobody listens there
    status, out = await term.run("clusterconfig", "3", "", "127.0.0.1", port, "1", PASSPHRASE)
    lines = out.splitlines()
    assert status == 1 and term.cluster is None
    # The passphrase is asked as a secret: what was typed is not shown.
    assert lines[len(STANDALONE_MENU) + 1 :] == [*menu_join_lines(port), lines[-1]]
    assert lines[-1].startswith(f"Error: cannot reach 127.0.0.1:{port}")
    assert PASSPHRASE not in out


async def test_standalone_menu_join_over_ccs_defaults(term: Term) -> None:
    port = str(free_port())
    status, out = await term.run("clusterconfig", "4", "", "127.0.0.1", port)
    lines = out.splitlines()
    assert status == 1 and term.cluster is None
    ccs = "Do you want to enable the Cluster Communication Service on this machine? [Y]>"
    assert ccs in lines  # CCS enabled by default when joining over CCS
    assert "[2222]>" + port in lines  # the CCS port is the default
    assert "Authenticate with:" not in lines


# -- clusterconfig in a cluster: the menu ------------------------------------------------------


async def test_cluster_menu(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await ny.ok("clusterconfig", "")
    lines = out.splitlines()
    assert lines[:3] == ["Cluster americas", "", "Choose the operation you want to perform:"]
    assert [line.split(" - ")[0] for line in lines[3:-1]] == [f"- {op}" for op in CLUSTER_OPS]
    assert lines[3] == "- ADDGROUP - Add a cluster group."
    assert lines[-1] == "[]>"


async def test_cluster_menu_by_typed_operation_name(ny: Term) -> None:
    await in_cluster_mode(ny)
    listed = await ny.ok("clusterconfig list")
    for answer in ("list", "LIST", " List "):
        out = await menu(ny, answer)
        assert out.splitlines()[-len(listed.splitlines()) :] == listed.splitlines()
    for op in ("listdetail", "connstatus"):
        batch = (await ny.ok(f"clusterconfig {op}")).splitlines()
        shown = (await menu(ny, op)).splitlines()
        assert shown[-len(batch) :] == batch and shown[-len(batch) - 1] == f"[]>{op}"
    out = await menu(ny, "frobnicate", status=2)
    assert out.splitlines()[-1] == (
        "Usage: unknown clusterconfig operation 'frobnicate'; see 'help clusterconfig'"
    )
    assert await ny.run("clusterconfig frobnicate") == (
        2,
        "Usage: unknown clusterconfig operation 'frobnicate'; see 'help clusterconfig'",
    )


async def menu(t: Term, *answers: str, status: int = 0) -> str:
    """The cluster menu run with ``answers``, then left with an empty answer when it comes
    back; the output before it came back (which is checked)."""
    got, out = await t.run("clusterconfig", *answers, "")
    assert got == status, out
    lines = out.splitlines()
    again = len(lines) - len(CLUSTER_OPS) - 4  # "Cluster NAME", "", the question, ops, "[]>"
    assert lines[again : again + 3] == [f"Cluster {t.cluster}", "", MENU_QUESTION], out
    assert lines[-1] == "[]>"
    return "\n".join(lines[:again])


MENU_QUESTION = "Choose the operation you want to perform:"


def groups_of(t: Term) -> dict[str, list[str]]:
    listed = t.daemon.admin.listing()
    return {g: list(machines) for g, machines in listed["groups"].items()}


async def test_group_operations_from_the_menu(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await menu(ny, "addgroup", "Rome")
    assert out.splitlines()[-3:-1] == ["Enter the name of the new group.", "[]>Rome"]
    assert re.fullmatch(DONE.format(said=r"Group Rome added\."), out.splitlines()[-1])
    assert "Rome" in groups_of(ny)
    out = await menu(ny, "setgroup", LA, "Rome")
    assert out.splitlines()[-10:-1] == [
        "Choose the machine to move:",
        f"1. {LA}",
        f"2. {NY}",
        f"[]>{LA}",
        "Choose its new group:",
        "1. Main_Group",
        "2. Paris",
        "3. Rome",
        "[]>Rome",
    ]
    assert groups_of(ny)["Rome"] == [LA]
    await menu(ny, "renamegroup", "Rome", "Roma")
    assert groups_of(ny) == {"Main_Group": [NY], "Paris": [], "Roma": [LA]}
    out = await menu(ny, "deletegroup", "Paris")  # empty: nothing more asked
    assert out.splitlines()[-6:-1] == [
        "Choose the group to remove:",
        "1. Main_Group",
        "2. Paris",
        "3. Roma",
        "[]>Paris",
    ]
    out = await menu(ny, "deletegroup", "Roma", "")
    assert out.splitlines()[-4:-1] == [
        "Group Roma has machines. Which group should receive them?",
        "1. Main_Group",
        "[1]>",
    ]
    assert groups_of(ny) == {"Main_Group": [LA, NY]}
    await menu(ny, "setname", "europe")
    assert ny.prompt == "(Cluster europe)> "
    assert ny.pending == 0


async def test_group_operations_batch(ny: Term) -> None:
    await in_cluster_mode(ny)
    assert re.fullmatch(DONE.format(said=r"Group Rome added\."), await ny.ok(
        "clusterconfig addgroup Rome"))  # fmt: skip
    await ny.ok(f"clusterconfig setgroup {LA} Rome")
    await ny.ok("clusterconfig renamegroup Paris Lyon")
    assert groups_of(ny) == {"Lyon": [], "Main_Group": [NY], "Rome": [LA]}
    await ny.ok("clusterconfig deletegroup Rome Lyon")  # receiving group named: not asked
    assert groups_of(ny) == {"Lyon": [LA], "Main_Group": [NY]}
    out = (await ny.ok("clusterconfig deletegroup Lyon", "Main_Group")).splitlines()
    assert out[:3] == [
        "Group Lyon has machines. Which group should receive them?",
        "1. Main_Group",
        "[1]>Main_Group",  # (by name; Enter takes Main_Group too)
    ]
    said = r"Group Lyon deleted; its machines are in Main_Group\."
    assert re.fullmatch(DONE.format(said=said), out[3]), out
    assert groups_of(ny) == {"Main_Group": [LA, NY]}
    await ny.ok("clusterconfig setname europe")
    assert ny.cluster == "europe" and ny.prompt == "(Cluster europe)> "


@pytest.mark.parametrize(
    ("line", "answers", "error"),
    [
        ("clusterconfig addgroup Paris", (), "Error: group 'Paris' already exists"),
        (
            "clusterconfig addgroup 'bad name'",
            (),
            "Error: not a group name: 'bad name' (letters, digits, '_', '.', '-'; 64 at most)",
        ),
        (f"clusterconfig setgroup {LA} Rome", (), "Error: no group 'Rome'"),
        (f"clusterconfig setgroup {LA} Paris", (), f"Error: {LA} is already in group 'Paris'"),
        ("clusterconfig renamegroup Rome Lyon", (), "Error: no group 'Rome'"),
        ("clusterconfig renamegroup Paris Main_Group", (), "Error: group 'Main_Group' already"),
        ("clusterconfig deletegroup Rome", (), "Error: no group 'Rome'"),
        ("clusterconfig deletegroup Paris Rome", (), "Error: no group 'Rome'"),
        ("clusterconfig deletegroup Paris Paris", (), "Error: the machines of 'Paris' cannot"),
        ("clusterconfig setname americas", (), "Error: the cluster is already named 'americas'"),
        ("clusterconfig setname 'two words'", (), "Error: cluster field 'name': not a name"),
        ("clusterconfig removemachine sf.example.com", ("y",), "Error: no machine 'sf.example"),
    ],
)
async def test_cluster_operation_refusals(
    ny: Term, line: str, answers: tuple[str, ...], error: str
) -> None:
    await in_cluster_mode(ny)
    before = (groups_of(ny), ny.cluster)
    status, out = await ny.run(line, *answers)
    assert status == 1 and out.splitlines()[-1].startswith(error), out
    assert (groups_of(ny), ny.cluster) == before


async def test_deletegroup_batch_console_takes_the_default_group(americas: Daemon) -> None:
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line("clustermode cluster") == 0
    assert await shell.run_line("clusterconfig deletegroup Paris") == 0
    assert layers.group_of(americas.store.state, LA) == "Main_Group"


async def test_list_shape(ny: Term) -> None:
    await in_cluster_mode(ny)
    assert await ny.ok("clusterconfig list") == (
        "cluster = americas\n"
        "Group Main_Group:\n"
        f"Machine {NY} (Serial #: SER-NY)\n"
        "Group Paris:\n"
        f"Machine {LA} (Serial #: SER-LA) [disconnected]"  # (in process: never linked)
    )


async def test_listdetail(ny: Term) -> None:
    await in_cluster_mode(ny)
    config = ny.daemon.config
    assert (await ny.ok("clusterconfig listdetail")).splitlines() == [
        "cluster = americas",
        "Group Main_Group:",
        f"Machine {NY} (Serial #: SER-NY)",
        f"    SSH {config.listen} port {config.ssh_port}",
        "Group Paris:",
        f"Machine {LA} (Serial #: SER-LA)",
        f"    SSH {LA_ADDRESS} port 22",
    ]


@pytest.mark.parametrize("line", ["list --json", "list -j", "listdetail --json"])
async def test_list_json(ny: Term, line: str) -> None:
    await in_cluster_mode(ny)
    found = json.loads(await ny.ok(f"clusterconfig {line}"))
    assert set(found) == {"cluster", "groups", "prepared"}
    assert found["cluster"] == "americas" and found["prepared"] == {}
    assert {g: list(m) for g, m in found["groups"].items()} == {
        "Main_Group": [NY],
        "Paris": [LA],
    }
    la = found["groups"]["Paris"][LA]
    assert (la["serial"], la["group"], la["address"]) == ("SER-LA", "Paris", LA_ADDRESS)


async def test_connstatus_from_the_hosts_file(ny: Term) -> None:
    await in_cluster_mode(ny)
    lines = (await ny.ok("clusterconfig connstatus")).splitlines()
    assert lines[0].startswith("Reverse DNS policy: ")
    assert lines[1:] == [
        f"{LA}: down",
        "  sync: Awaiting Initial Sync",  # admitted here, never linked (it never runs)
        f"  action: Wait for its first link: {LA} links to every member once its daemon runs "
        "after the join. If it does not, check that clusterd runs there and that the two "
        "reach each other (clusterconfig connstatus).",
        f"  forward: {LA} -> {LA_ADDRESS} (hosts file)",
        f"  reverse: {LA_ADDRESS} -> {LA} (hosts file)",
    ]
    found = json.loads(await ny.ok("clusterconfig connstatus --json"))
    member = found["members"][0]
    assert (member["hostname"], member["state"], member["forward_ok"]) == (LA, "down", True)
    assert member["sync"]["state"] == "awaiting_initial_sync"
    assert member["sync"] == ny.daemon.peer_status()[0]["sync"]  # status says the same


async def test_connstatus_shows_the_reverse_lookup_of_the_incoming_connection(ny: Term) -> None:
    await in_cluster_mode(ny)
    seen = Lookup("127.0.0.7", False, (), "dns", "no such name: 7.0.0.127.in-addr.arpa")
    ny.daemon.reverse_seen["SER-LA"] = seen
    lines = (await ny.ok("clusterconfig connstatus")).splitlines()
    assert lines[1:3] == [f"{LA}: down", "  sync: Awaiting Initial Sync"]
    assert lines[4:] == [
        f"  forward: {LA} -> {LA_ADDRESS} (hosts file)",
        f"  reverse: {LA_ADDRESS} -> {LA} (hosts file)",
        "  inbound reverse: 127.0.0.7: no such name: 7.0.0.127.in-addr.arpa",
        f"  WARNING: {LA} was accepted although the reverse lookup of its address failed "
        "(reverse_dns = warn); the reference would refuse it. Add a PTR record for it.",
    ]
    member = json.loads(await ny.ok("clusterconfig connstatus --json"))["members"][0]
    assert member["inbound_reverse"] == seen.describe()


def disconnected(t: Term, machine: str) -> bool:
    return bool(layers.machines(t.shell.store.state)[machine].get("disconnected"))


# After RECONNECT the shell follows the catch-up (cli.progress); the in-process
# losangeles never links, so it waits one handshake time-out and says so: that is no
# success (exit status 1), whatever the flag now says.
CATCH_UP_LINES = [
    f"Waiting for links to {LA}...",
    "Linked to 0 of 1 members; not linked to:",
    f"  {LA}: down",
]
CATCH_UP_ALONE = "\n".join(CATCH_UP_LINES)


async def test_disconnect_and_reconnect_this_machine(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await ny.ok("clusterconfig disconnect", "")
    assert out.splitlines() == [f"Disconnect {NY}? [Y]>", f"{NY} disconnected."]
    assert ny.prompt == "(Cluster americas) [Disconnected]> "
    await ny.ok(f"clustermode machine {NY}")
    assert ny.prompt == f"(Machine {NY}) [Disconnected]> "
    await in_cluster_mode(ny)
    assert await ny.run(f"clusterconfig disconnect {NY}", "") == (
        1,
        f"Disconnect {NY}? [Y]>\nError: this machine is already disconnected",
    )
    detail = (await ny.ok("clusterconfig listdetail")).splitlines()
    assert f"Machine {NY} (Serial #: SER-NY) [Disconnected]" in detail
    # The menu offers to reconnect first; declining shows the menu.
    out = await ny.ok("clusterconfig", "n", "")  # (Enter at the menu leaves it)
    assert out.splitlines()[:2] == [
        "This machine is disconnected. Reconnect it now? [Y]>n",
        "Cluster americas",
    ]
    assert await ny.run(f"clusterconfig reconnect {NY}", "y") == (
        1,
        f"Reconnect {NY}? [Y]>y\n{NY} reconnected.\n{CATCH_UP_ALONE}",
    )
    assert ny.prompt == "(Cluster americas)> " and not disconnected(ny, NY)
    assert await ny.run(f"clusterconfig reconnect {NY}", "") == (
        1,
        f"Reconnect {NY}? [Y]>\nError: this machine is already connected",
    )


async def test_disconnect_and_reconnect_from_the_menu(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await menu(ny, "disconnect", "n", status=1)
    assert out.splitlines()[-1] == f"Disconnect {NY}? [Y]>n"
    assert not disconnected(ny, NY)
    await menu(ny, "disconnect", "y")
    assert disconnected(ny, NY)
    # Accepting the offer reconnects (however many times it is confirmed: see below).
    status, out = await ny.run("clusterconfig", "", "", spare=True)
    assert status == 1 and out.splitlines()[-4:] == [f"{NY} reconnected.", *CATCH_UP_LINES]
    assert not disconnected(ny, NY) and ny.prompt == "(Cluster americas)> "


async def test_the_offer_to_reconnect_asks_once(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok(f"clusterconfig disconnect {NY}", "")
    status, out = await ny.run("clusterconfig", "", spare=True)
    assert status == 1 and out.splitlines() == [
        "This machine is disconnected. Reconnect it now? [Y]>",
        f"{NY} reconnected.",
        *CATCH_UP_LINES,
    ]


async def test_disconnect_and_reconnect_another_machine(ny: Term) -> None:
    """The reference detaches any machine chosen; its flag is all that changes."""
    await in_cluster_mode(ny)
    status, out = await ny.run(f"clusterconfig disconnect {LA}", "y")
    assert status == 0 and f"{LA} disconnected." in out, out
    assert disconnected(ny, LA) and not disconnected(ny, NY)
    status, out = await ny.run(f"clusterconfig reconnect {LA}", "y")
    assert status == 0 and f"{LA} reconnected." in out, out
    assert not disconnected(ny, LA) and not disconnected(ny, NY)
    assert await ny.run("clusterconfig disconnect sf.example.com", "y") == (
        1,
        "Disconnect sf.example.com? [Y]>y\nError: no machine 'sf.example.com' in the cluster",
    )


async def test_removemachine_another_member(ny: Term) -> None:
    await in_cluster_mode(ny)
    out = await menu(ny, "removemachine", LA, "", status=1)
    assert out.splitlines()[-1] == f"Remove {LA} from the cluster for good? [N]>"
    assert LA in layers.machines(ny.shell.store.state)
    lines = (await ny.ok(f"clusterconfig removemachine {LA}", "y")).splitlines()
    assert lines[:2] == [
        f"Remove {LA} from the cluster for good? [N]>y",
        f"{LA} removed from the cluster.",
    ]
    assert lines[2].startswith(f"Warning: {LA} could not be told")  # it is unreachable
    assert groups_of(ny) == {"Main_Group": [NY], "Paris": []}


@pytest.mark.parametrize(
    ("line", "question", "default"),
    [
        (f"clusterconfig removemachine {LA}", f"Remove {LA} from the cluster for good?", "N"),
        (f"clusterconfig disconnect {NY}", f"Disconnect {NY}?", "Y"),
        ("clusterconfig disconnect", f"Disconnect {NY}?", "Y"),
    ],
)
async def test_interactive_shell_confirms_even_with_the_machine_given(
    ny: Term, line: str, question: str, default: str
) -> None:
    await in_cluster_mode(ny)
    before = json.loads(await ny.ok("clusterconfig list --json"))
    assert await ny.run(line, "n") == (1, f"{question} [{default}]>n")
    assert json.loads(await ny.ok("clusterconfig list --json")) == before


async def test_reconnect_confirms_in_an_interactive_shell(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok(f"clusterconfig disconnect {NY}", "y")
    assert await ny.run(f"clusterconfig reconnect {NY}", "n") == (1, f"Reconnect {NY}? [Y]>n")
    assert disconnected(ny, NY)


async def test_one_command_calls_do_not_ask_to_confirm(americas: Daemon) -> None:
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line("clustermode cluster") == 0
    for line, said, status in [
        (f"clusterconfig disconnect {NY}", f"{NY} disconnected.", 0),
        (f"clusterconfig reconnect {NY}", f"{NY} reconnected.", 1),  # (LA is not linked)
        (f"clusterconfig removemachine {LA}", f"{LA} removed from the cluster.", 0),
    ]:
        batch.lines.clear()
        assert await shell.run_line(line) == status, batch.output
        assert batch.lines[0] == said and "?" not in batch.output
    assert LA not in layers.machines(americas.store.state)


@pytest.mark.parametrize("menu", [False, True])
async def test_removemachine_of_the_sole_member_deletes_the_cluster(ny: Term, menu: bool) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok(f"clusterconfig removemachine {LA}", "y")
    if menu:
        out = await ny.ok("clusterconfig", "removemachine", NY, "y")
    else:
        out = await ny.ok(f"clusterconfig removemachine {NY}", "yes")
    assert out.splitlines()[-1] == f"{NY} removed from the cluster."
    assert ny.cluster is None
    assert ny.prompt == f"{NY}> "
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Asia/Tokyo"}  # kept


async def test_removemachine_of_this_machine_while_others_stay(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    out = await ny.ok(f"clusterconfig removemachine {NY}", "y")
    assert out == f"Remove {NY} from the cluster for good? [N]>y\n{NY} removed from the cluster."
    assert ny.cluster is None and ny.prompt == f"{NY}> "
    assert json.loads(await ny.ok("settz print")) == {"timezone": "Asia/Tokyo"}  # flattened


# -- PREPJOIN ------------------------------------------------------------------------------------


async def test_prepjoin_new_is_pending_in_its_shell(americas: Daemon) -> None:
    mine, theirs = Term(americas), Term(americas)
    for t in (mine, theirs):
        await in_cluster_mode(t)
    key = public_key()
    out = await mine.ok(f"clusterconfig prepjoin new sf.example.com SER-SF {key}")
    assert out == "sf.example.com prepared: a pending change; commit to make it effective."
    assert mine.pending > 0
    listed = f"sf.example.com (Serial #: SER-SF) {key}"
    assert await mine.ok("clusterconfig prepjoin list") == listed
    assert await theirs.ok("clusterconfig prepjoin list") == "No machines are prepared to join."
    assert json.loads(await mine.ok("clusterconfig list --json"))["prepared"] == {}
    await mine.ok("commit", "")
    assert await theirs.ok("clusterconfig prepjoin list") == listed
    prepared = json.loads(await theirs.ok("clusterconfig list --json"))["prepared"]
    assert prepared == {"sf.example.com": {"serial": "SER-SF", "machine_key": key}}
    # DELETE is pending too.
    out = await theirs.ok("clusterconfig prepjoin delete sf.example.com")
    assert out == "sf.example.com removed from the list: a pending change; commit to apply."
    assert await theirs.ok("clusterconfig prepjoin list") == "No machines are prepared to join."
    assert await mine.ok("clusterconfig prepjoin list") == listed
    await theirs.ok("commit", "")
    assert await mine.ok("clusterconfig prepjoin list") == "No machines are prepared to join."


async def test_prepjoin_menu(ny: Term) -> None:
    await in_cluster_mode(ny)
    key = public_key()
    out = await menu(ny, "prepjoin", "new", "sd.example.com", "SER-SD", key)
    assert out.splitlines()[-9:] == [
        "Choose: NEW, DELETE, PRINT or LIST.",
        "[LIST]>new",
        "Enter the host name of the machine to add.",
        "[]>sd.example.com",
        "Enter its serial number.",
        "[]>SER-SD",
        "Enter its machine key (the line 'prepjoin print' shows there).",
        f"[]>{key}",
        "sd.example.com prepared: a pending change; commit to make it effective.",
    ]
    out = await ny.ok("clusterconfig prepjoin", "")  # LIST is the default
    assert out.splitlines()[-1] == f"sd.example.com (Serial #: SER-SD) {key}"
    out = await menu(ny, "prepjoin", "print")
    assert out.splitlines()[-3:-1] == [f"Host: {NY}", "Serial #: SER-NY"]
    await menu(ny, "prepjoin", "delete", "sd.example.com")
    assert await ny.ok("clusterconfig prepjoin list") == "No machines are prepared to join."


async def test_prepjoin_refusals(ny: Term) -> None:
    await in_cluster_mode(ny)
    status, out = await ny.run("clusterconfig prepjoin new bad.example.com SER-B notakey")
    assert status == 1 and "field 'machine_key': not an OpenSSH public key line" in out
    assert await ny.ok("clusterconfig prepjoin list") == "No machines are prepared to join."
    status, out = await ny.run("clusterconfig prepjoin delete nothere.example.com")
    assert (status, out) == (1, "Error: no PREPJOIN entry for 'nothere.example.com'")


async def test_prepjoin_print_in_a_cluster(ny: Term) -> None:
    await in_cluster_mode(ny)
    lines = (await ny.ok("clusterconfig prepjoin print")).splitlines()
    assert lines[:2] == [f"Host: {NY}", "Serial #: SER-NY"]
    assert lines[2].startswith("Machine key: ssh-ed25519 AAAA")


# -- roles ---------------------------------------------------------------------------------


async def test_read_only_user_reads_but_changes_nothing(americas: Daemon) -> None:
    viewer = Term(americas, "viewer", role="read-only")
    await in_cluster_mode(viewer)
    assert (await viewer.ok("settz print")).startswith("Time Zone: not defined at Cluster;")
    assert (await viewer.ok("clusterconfig list")).startswith("cluster = americas")
    assert await viewer.run("clusterconfig addgroup Rome") == (
        1,
        "Error: viewer (read-only) may not change the cluster (addgroup)",
    )
    await viewer.ok("settz set timezone=UTC")  # pending only
    assert await viewer.run("commit now") == (
        1,
        "Error: viewer (read-only) may not commit changes",
    )
    assert "Rome" not in layers.groups(americas.store.state)
    assert not layers.is_defined(
        americas.store.state, americas.store.catalogue["settz"], Mode.cluster()
    )


async def test_guest_runs_only_the_open_commands(americas: Daemon) -> None:
    guest = Term(americas, "visitor", role="guest")
    refused = "Error: visitor is a guest: only exit, help, passwd, quit, version are open."
    for line in ("settz print", "clusterconfig list", "clustermode cluster", "commitdetail"):
        assert await guest.run(line) == (1, refused)
    assert await guest.ok("version") == f"clusterd {__version__} on {NY}"
    assert (await guest.ok("help")).strip()
    assert (await guest.run("bogus"))[0] == 2


async def test_read_only_user_cannot_create_a_cluster(daemon: Daemon) -> None:
    viewer = Term(daemon, "viewer", role="read-only")
    status, _ = await viewer.run("clusterconfig create americas")
    assert status == 1 and viewer.cluster is None


# -- bad input ---------------------------------------------------------------------------------


async def test_validation_error_changes_nothing(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=UTC")
    assert await ny.run("settz set nope=1") == (
        1,
        "Error: settz field 'nope': no such field; the fields: timezone",
    )
    assert ny.pending == 0
    status, out = await ny.run("settz set timezone=Mars/Olympus")
    assert (status, out) == (
        1,
        "Error: settz field 'timezone': unknown time zone 'Mars/Olympus'; "
        "expected a time zone, e.g. timezone=Europe/Paris",
    )
    assert ny.pending == 0
    await ny.ok("bounceconfig define defaults")
    before = ny.pending
    status, out = await ny.run("bounceconfig new Fast max_retries=-1")
    assert status == 1 and out.startswith("Error: bounceconfig row 'Fast' field 'max_retries':")
    assert ny.pending == before


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("settz set junk", "Usage: FIELD=VALUE expected, not 'junk'"),
        ("settz set =x", "Usage: FIELD=VALUE expected, not '=x'"),
    ],
)
async def test_malformed_fields_are_usage_errors(ny: Term, line: str, text: str) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=UTC")
    assert await ny.run(line) == (2, text)
    assert ny.pending == 0


async def test_a_refused_first_edit_asks_nothing_and_leaves_nothing_pending(ny: Term) -> None:
    # Group Paris inherits both features from the cluster: a first edit there asks
    # "Start from", but one that cannot be right is refused before the question.
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo", "unsubscribe define empty")
    await ny.ok("clustermode group Paris")
    assert asks_start(ny, "settz set") and asks_start(ny, "unsubscribe new")
    status, out = await ny.run("settz set nope=1")  # (no "Start from" question first)
    assert status == 1 and out == "Error: settz field 'nope': no such field; the fields: timezone"
    status, out = await ny.run("unsubscribe new x@example.org comment=" + "x" * 300)
    assert status == 1 and "Start from" not in out and "comment" in out, out
    assert ny.pending == 0


async def test_the_menu_reads_field_values_as_the_one_line_form_does(ny: Term) -> None:
    """Quotes keep a value's spaces together in the menu too, and a bad value is
    refused before the "Start from" question."""
    await in_cluster_mode(ny)
    await ny.ok("unsubscribe define empty")
    assert COMMITTED.search(await ny.ok("commit setup"))
    await ny.ok("unsubscribe", "1", "a@example.org", 'comment="two words"')  # 1: NEW
    assert ny.pending == 1 and '"comment": "two words"' in (await ny.ok("unsubscribe print"))
    status, out = await ny.run("unsubscribe", "1", "b@example.org", 'comment="open')
    assert status == 2 and "close the quote" in out, out


async def test_refused_first_edit_standalone_leaves_nothing_pending(term: Term) -> None:
    assert (await term.run("settz set nope=1"))[0] == 1
    assert term.pending == 0
