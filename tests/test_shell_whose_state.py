"""What the shell says of state that is not everywhere the same (issue 17, item 10):
LIST flags the machines this one has no live link to; clustercheck names a refused
link's reason; ``print`` marks the rows some machine cannot use; ``status`` and
``version`` say they are the login host's when the mode is another's.

In process: newyork's losangeles never links, so its link is ``down`` unless a test
sets what the links know (``node.peers``) as a refusal or a DISCONNECT would.
"""

from __future__ import annotations

import json

from clusterd import __version__
from clusterd.core.modes import Mode
from clusterd.node import checkrun
from tests.shellhelp import LA, NY, Term


async def in_cluster_mode(t: Term) -> None:
    await t.ok("clustermode cluster", "")
    assert t.shell.mode == Mode.cluster()


VERSIONS = (
    f"software versions differ: {LA} runs 2.0, {NY} runs 1.0; members must run the same version"
)


def la_link(t: Term, state: str, reason: str = "", *, admin_off: bool = False) -> None:
    peer = t.daemon.node.peers["SER-LA"]
    peer.state, peer.reason, peer.admin_off = state, reason, admin_off


# -- LIST ----------------------------------------------------------------------------------


async def test_list_flags_a_machine_without_a_link_never_the_login_host(ny: Term) -> None:
    await in_cluster_mode(ny)
    listed = (await ny.ok("clusterconfig list")).splitlines()
    assert listed == [
        "cluster = americas",
        "Group Main_Group:",
        f"Machine {NY} (Serial #: SER-NY)",
        "Group Paris:",
        f"Machine {LA} (Serial #: SER-LA) [disconnected]",
    ]
    found = json.loads(await ny.ok("clusterconfig list --json"))
    assert "link" not in found["groups"]["Main_Group"][NY]
    assert found["groups"]["Paris"][LA]["link"]["state"] == "down"


async def test_list_shows_a_linked_machine_as_before(ny: Term) -> None:
    await in_cluster_mode(ny)
    la_link(ny, "up")
    last = (await ny.ok("clusterconfig list")).splitlines()[-1]
    assert last == f"Machine {LA} (Serial #: SER-LA)"  # linked: as the reference shows it


async def test_list_tells_a_refused_link_and_a_disconnect_on_purpose(ny: Term) -> None:
    await in_cluster_mode(ny)
    la_link(ny, "refused", VERSIONS)
    last = (await ny.ok("clusterconfig list")).splitlines()[-1]
    assert last == f"Machine {LA} (Serial #: SER-LA) [disconnected: link refused]"
    la_link(ny, "disconnected", admin_off=True)
    last = (await ny.ok("clusterconfig list")).splitlines()[-1]
    assert last == f"Machine {LA} (Serial #: SER-LA) [disconnected on purpose]"


async def test_list_of_a_disconnected_login_host_flags_the_others_only(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("clusterconfig disconnect", "y")
    listed = (await ny.ok("clusterconfig list")).splitlines()
    assert f"Machine {NY} (Serial #: SER-NY)" in listed
    assert f"Machine {LA} (Serial #: SER-LA) [disconnected]" in listed


# -- clustercheck's reason for an unchecked member -------------------------------------------


async def test_a_refused_member_is_not_called_disconnected(ny: Term) -> None:
    # losangeles still holds its DISCONNECT flag here, but it tried to link (on 2.0):
    # the refusal is the news.
    await in_cluster_mode(ny)
    await ny.ok(f"clusterconfig disconnect {LA}", "y")
    la_link(ny, "refused", VERSIONS, admin_off=True)
    why = checkrun.why(ny.daemon.api, NY, "SER-LA", "no answer")
    assert why == f"its link was refused: {VERSIONS}"
    # The side that was refused records who refused it.
    la_link(ny, "refused", f"refused by {LA}: {VERSIONS}")
    assert checkrun.why(ny.daemon.api, NY, "SER-LA", "no answer") == f"refused by {LA}: {VERSIONS}"
    la_link(ny, "disconnected", admin_off=True)
    assert "it is disconnected" in checkrun.why(ny.daemon.api, NY, "SER-LA", "no answer")


# -- print marks what some machine cannot use ------------------------------------------------


async def interface_on_newyork_only(t: Term) -> None:
    """Public on both machines, Data1 on newyork only; a cluster listener on each."""
    await t.ok(f"interfaceconfig new Data1 address=10.0.0.1 prefix=24 hostname={NY}")
    await t.ok(f"interfaceconfig new Public address=10.0.1.1 prefix=24 hostname={NY}")
    await t.ok(f"clustermode machine {LA}")
    await t.ok(f"interfaceconfig new Public address=10.0.1.2 prefix=24 hostname={LA}")
    await in_cluster_mode(t)
    await t.ok("listenerconfig new Out interface=Data1 type=private")
    await t.ok("listenerconfig new In interface=Public type=private")


MARK = (
    f"Row 'Out' is unavailable on Machine {LA}: field 'interface' names interfaceconfig "
    "'Data1', which is not available there."
)


async def test_print_marks_a_row_unavailable_on_a_machine(ny: Term) -> None:
    await interface_on_newyork_only(ny)
    out = (await ny.ok("listenerconfig print")).splitlines()
    assert out[-1] == MARK  # after the settings; 'In' works everywhere: not marked
    assert sorted(json.loads("\n".join(out[:-1]))) == ["In", "Out"]
    # Where the mode inherits them, the same rows are marked under the inherited value.
    await ny.ok("clustermode group Paris")
    assert (await ny.ok("listenerconfig print")).splitlines()[-1] == MARK
    # Moved down to newyork, where Data1 exists, nothing is marked.
    await ny.ok(f"clustermode machine {NY}")
    await ny.ok("listenerconfig define inherited")
    await in_cluster_mode(ny)
    await ny.ok("listenerconfig delete Out")
    await ny.ok(f"clustermode machine {NY}")
    assert "unavailable" not in await ny.ok("listenerconfig print")


async def test_print_marks_a_record_unavailable_on_a_machine(ny: Term) -> None:
    await interface_on_newyork_only(ny)
    await ny.ok("ntpconfig set source_interface=Data1")
    out = (await ny.ok("ntpconfig print")).splitlines()
    assert out[-1] == (
        f"These settings are unavailable on Machine {LA}: field 'source_interface' names "
        "interfaceconfig 'Data1', which is not available there."
    )
    assert json.loads("\n".join(out[:-1]))["source_interface"] == "Data1"
    await ny.ok("ntpconfig set source_interface=Public")
    assert "unavailable" not in await ny.ok("ntpconfig print")


# -- status and version at another machine's mode --------------------------------------------


async def test_status_and_version_say_they_are_the_login_hosts(ny: Term) -> None:
    note = f"(status of the login host {NY}; you are in machine mode of {LA})"
    await ny.ok(f"clustermode machine {LA}")
    lines = (await ny.ok("status")).splitlines()
    assert lines[:2] == [note, f"Machine {NY} (Serial #: SER-NY), clusterd {__version__}"]
    assert (await ny.ok("version")).splitlines() == [
        note.replace("status", "version"),
        f"clusterd {__version__} on {NY}",
    ]
    found = json.loads(await ny.ok("status --json"))
    assert (found["hostname"], found["shell_mode"]) == (NY, f"Machine {LA}")
    # At the login host's own mode: as before.
    await ny.ok(f"clustermode machine {NY}")
    assert await ny.ok("version") == f"clusterd {__version__} on {NY}"
    assert (await ny.ok("status")).splitlines()[0].startswith(f"Machine {NY} ")
