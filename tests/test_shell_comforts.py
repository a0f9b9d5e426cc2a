"""What a new user tripped over in the shell (issue 17): menus that loop and offer
numbered lists, operation names in feature menus, the mode after create, a new user's
passphrase asked twice, a machine-only command from group mode, a move that takes
settings away from machines, and resetconfig.

In-process shells with scripted answers on newyork.example.com (``Main_Group``) of
cluster americas, where losangeles.example.com is in ``Paris`` (tests/conftest.py); the
one-command forms run through the real OpenSSH client in tests/test_shell_ssh.py.
"""

from __future__ import annotations

import re

from clusterd import __version__
from clusterd.cli.console import BatchConsole
from clusterd.cli.shell import Shell
from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.node.daemon import Daemon
from clusterd.schema.access import verify_passphrase
from tests.shellhelp import ADMIN, COMMITTED, LA, NY, Term

PARIS = Mode.group("Paris")


async def at_cluster(t: Term) -> None:
    await t.ok("clustermode cluster", "")


def groups_of(t: Term) -> dict[str, list[str]]:
    return {g: list(ms) for g, ms in t.daemon.admin.listing()["groups"].items()}


# -- the clusterconfig menu ------------------------------------------------------------


async def test_cluster_menu_comes_back_after_each_operation(ny: Term) -> None:
    await at_cluster(ny)
    out = await ny.ok("clusterconfig", "addgroup", "Rome", "addgroup", "Rome", "list", "")
    lines = out.splitlines()
    assert lines.count("Choose the operation you want to perform:") == 4  # 3 runs, then Enter
    assert len([line for line in lines if line.startswith("Error: ")]) == 1  # the 2nd addgroup
    assert lines[-1] == "[]>"  # an empty answer leaves the menu
    assert "Rome" in groups_of(ny)
    assert f"Machine {NY} (Serial #: SER-NY)" in out  # the list ran after the failure


async def test_setgroup_from_the_menu_offers_numbered_machines_and_groups(ny: Term) -> None:
    await at_cluster(ny)
    machines, groups = sorted([NY, LA]), ["Main_Group", "Paris"]
    # By number, by name in another case, and an answer that is neither (asked again).
    by_number = str(machines.index(NY) + 1)
    out = await ny.ok("clusterconfig", "setgroup", "nowhere.example.com", by_number, "PARIS", "")
    lines = out.splitlines()
    at = lines.index("Choose the machine to move:")
    assert lines[at + 1 : at + 3] == [f"1. {machines[0]}", f"2. {machines[1]}"]
    assert lines[at + 3] == "[]>nowhere.example.com"  # no default: Enter chooses nothing
    assert "Please enter a number from 1 to 2, or a name shown." in lines
    assert "Choose its new group:" in lines
    assert [f"{i}. {g}" for i, g in enumerate(groups, 1)] == lines[
        lines.index("Choose its new group:") + 1 : lines.index("Choose its new group:") + 3
    ]
    assert NY in groups_of(ny)["Paris"]


async def test_a_one_command_setgroup_without_its_words_says_what_it_needs(
    americas: Daemon,
) -> None:
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line("clusterconfig setgroup") == 1
    assert batch.lines[-1] == (
        f"Error: this needs an answer (Choose the machine to move:): one of {LA}, {NY}; "
        "give it on the command line (see help)"
    )


async def test_create_leaves_the_shell_in_cluster_mode(term: Term) -> None:
    out = await term.ok("clusterconfig create americas")
    assert out.splitlines()[-1] == "Now in cluster mode: the prompt is (Cluster americas)>"
    assert term.prompt == "(Cluster americas)> "


# -- feature menus -----------------------------------------------------------------------


async def test_feature_menu_takes_operation_names(ny: Term) -> None:
    out = await ny.ok("settz", "clustershow")
    assert "[6]>clustershow" in out  # (6: done, the default)
    assert out.splitlines()[-6:] == [
        "Configured at mode:",
        "    Cluster: No",
        "    Group Main_Group: No",
        "    Group Paris: No",
        f"    Machine {LA}: No",
        f"    Machine {NY}: No",
    ]


async def test_feature_menu_clusterset_offers_the_modes(ny: Term) -> None:
    await at_cluster(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")  # nothing to inherit: nothing asked
    out = await ny.ok("settz", "CLUSTERSET", "copy", "group paris")
    lines = out.splitlines()
    at = lines.index("Copy to:")
    offered = lines[at + 1 : lines.index("[]>group paris")]
    assert offered == [
        "1. group Main_Group",
        "2. group Paris",
        f"3. machine {LA}",
        f"4. machine {NY}",
        "5. allgroups",
    ]
    assert "Time Zone copy from Cluster to Group Paris: pending until commit." in lines
    assert layers.is_defined(ny.shell.session.view, ny.shell.store.catalogue["settz"], PARIS)


# -- userconfig new: the passphrase is asked, twice ------------------------------------------


async def test_userconfig_new_asks_the_passphrase_twice(ny: Term) -> None:
    secret = "a long enough passphrase"
    out = await ny.ok("userconfig new rita role=read-only", "", secret, secret)
    assert "New passphrase:" in out and "Retype new passphrase:" in out
    assert secret not in out
    assert COMMITTED.fullmatch(await ny.ok("commit rita"))
    row = ny.daemon.users()["rita"]
    assert row["role"] == "read-only" and verify_passphrase(secret, row["passphrase_hash"])


async def test_userconfig_new_refuses_two_different_passphrases(ny: Term) -> None:
    status, out = await ny.run("userconfig new rita role=read-only", "", "one passphrase",
                               "another passphrase")  # fmt: skip
    assert status == 1 and out.splitlines()[-1] == (
        "Error: the two passphrases differ; nothing changed"
    )
    assert ny.pending == 0
    # A bad value is refused before any passphrase is asked.
    status, out = await ny.run("userconfig new rita role=king")
    assert status == 1 and "New passphrase:" not in out and ny.pending == 0


async def test_userconfig_new_in_a_one_command_call_says_to_run_it_interactively(
    americas: Daemon,
) -> None:
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    await shell.run_line("clustermode cluster")
    assert await shell.run_line("userconfig new rita role=guest") == 1
    assert "this needs an answer (New passphrase:)" in batch.output
    assert "rita" not in americas.users()


# -- restricted commands ------------------------------------------------------------------


async def test_machine_only_command_from_group_mode_offers_the_groups_machines(
    ny: Term,
) -> None:
    await ny.ok("clustermode group Paris")
    out = await ny.ok("version", "")  # Paris holds losangeles only: no list to choose from
    assert ny.shell.mode == Mode.machine(LA)
    assert "Choose the machine" not in out
    await at_cluster(ny)
    out = await ny.ok("version", "", "2")
    lines = out.splitlines()
    at = lines.index("Choose the machine of Cluster to switch to:")
    assert lines[at + 1 : at + 4] == [f"1. {NY}", f"2. {LA}", "[1]>2"]  # the login host first
    assert ny.shell.mode == Mode.machine(LA)


async def test_one_command_switch_is_said(americas: Daemon) -> None:
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line("sshconfig print") == 0
    assert batch.lines[0] == "This command is restricted to cluster mode: now in Cluster mode."
    assert shell.mode == Mode.cluster()
    batch.lines.clear()
    assert await shell.run_line("version") == 0
    assert batch.lines[-3:] == [
        f"→ 1 ({NY})",  # the login host, the default of the machines to choose from
        f"This command is restricted to machine mode: now in Machine {NY} mode.",
        f"clusterd {__version__} on {NY}",  # (then the command's own output)
    ]


# -- clusterset move warns of the machines that lose the settings ----------------------------


async def test_move_off_the_cluster_names_the_machines_that_lose_the_settings(ny: Term) -> None:
    await at_cluster(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit tokyo")
    status, out = await ny.run("settz clusterset move group Paris", "n")
    assert status == 1 and ny.pending == 0
    assert out.splitlines() == [
        "Warning: these machines lose the moved Time Zone settings:",
        f"  {NY} will use the factory defaults",
        "Move anyway? [N]>n",
        "Nothing moved.",
    ]
    out = await ny.ok("settz clusterset move group Paris", "y")
    assert "Time Zone move from Cluster to Group Paris: pending until commit." in out
    assert ny.pending > 0


async def test_a_move_nobody_loses_by_asks_nothing(ny: Term) -> None:
    await ny.ok("clustermode group Paris")
    await ny.ok("settz set timezone=Europe/Paris")
    await ny.ok("commit paris")
    out = await ny.ok("settz clusterset move cluster")
    assert "Warning" not in out and "Move anyway" not in out


# -- resetconfig -------------------------------------------------------------------------------


async def test_resetconfig_restores_the_factory_settings_of_a_standalone_machine(
    term: Term,
) -> None:
    await term.ok("settz set timezone=Asia/Tokyo")
    await term.ok("commit tokyo")
    users = dict(term.daemon.users())
    status, out = await term.run("resetconfig", "n")
    assert status == 1 and out.splitlines()[-1] == "Nothing was reset."
    out = await term.ok("resetconfig", "y")
    assert "  settz (Time Zone)" in out.splitlines()
    assert "Kept: network settings, users and SSH settings." in out
    assert re.search(r"Factory configuration restored \(1 feature\(s\)\)", out)
    settz = term.daemon.store.catalogue["settz"]
    assert not layers.is_defined(term.daemon.store.state, settz, Mode.machine(NY))
    assert term.daemon.users() == users  # nobody is locked out
    assert await term.ok("resetconfig") == (
        "Every setting is at its factory default already: nothing to reset."
    )


async def test_resetconfig_refusals(ny: Term, daemon: Daemon) -> None:
    status, out = await ny.run("resetconfig")
    assert status == 1 and out.startswith("Error: this machine is in cluster americas")
    assert await ny.run("resetconfig now") == (
        2,
        "Usage: resetconfig [--yes]   (a standalone machine; --yes: a one-command call, "
        "no question)",
    )
    operator = Term(daemon, "olga", "operator")
    status, out = await operator.run("resetconfig")
    assert status == 1 and "only an admin may reset the machine" in out
