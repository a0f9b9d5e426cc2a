"""CLUSTERSET delete, and commitdetail's origin host names and recorded inconsistencies.

In-process shells with scripted answers on newyork.example.com (``Main_Group``) of
cluster americas, where losangeles.example.com is in ``Paris`` (see tests/conftest.py).
A delete removes a feature's settings at the mode chosen (a group, a machine, every
group, the cluster): the mode inherits again once the change is committed.  The
commitdetail tests make a real recorded loss: losangeles' store (a replica of newyork's
here) and newyork commit the same units without seeing each other, then newyork applies
losangeles' commit.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from clusterd.cli.commitdetail import commit_ref
from clusterd.cli.console import BatchConsole
from clusterd.cli.shell import Shell
from clusterd.core import layers
from clusterd.core.modes import Mode
from clusterd.core.versions import CommitId
from clusterd.node.daemon import Daemon
from clusterd.store.session import Session
from clusterd.store.store import Store
from clusterd.trust import clusterops
from tests.shellhelp import (
    ADMIN,
    COMMITTED,
    LA,
    NY,
    SEALED,
    STAMP,
    Term,
    la_sealer,
    start_answers,
)

PARIS, MAIN = Mode.group("Paris"), Mode.group("Main_Group")
UNSUB = "unsubscribe"


async def in_cluster_mode(t: Term) -> None:
    await t.ok("clustermode cluster", "")
    assert t.shell.mode == Mode.cluster()


async def at(t: Term, mode: Mode) -> None:
    """Switch ``t`` to ``mode`` (cluster mode asks to confirm)."""
    if mode == Mode.cluster():
        await in_cluster_mode(t)
    else:
        await t.ok(f"clustermode {mode.level.value} {mode.name}")


async def define_tz(t: Term, mode: Mode, zone: str) -> None:
    """Set settz at ``mode`` (starting from the factory defaults if asked)."""
    await at(t, mode)
    line = f"settz set timezone={zone}"
    await t.ok(line, *start_answers(t, line))


async def setup(t: Term, zones: dict[Mode, str]) -> None:
    for mode, zone in zones.items():
        await define_tz(t, mode, zone)
    assert COMMITTED.fullmatch(await t.ok("commit setup"))


def tz(t: Term, machine: str) -> tuple[str, str]:
    """The committed effective time zone of ``machine`` and where it comes from."""
    store = t.shell.store
    r = layers.effective(store.state, store.catalogue, machine)["settz"]
    return r.value["timezone"], r.source


def marks(t: Term) -> dict[str, bool]:
    view, feature = t.shell.session.view, t.shell.store.catalogue["settz"]
    return {str(mode): defined for mode, defined in layers.defined_at(view, feature)}


# -- CLUSTERSET delete: each kind of target ---------------------------------------------


async def test_delete_at_a_group_makes_it_inherit_from_the_cluster(ny: Term) -> None:
    await setup(ny, {Mode.cluster(): "Asia/Tokyo", PARIS: "Europe/Paris"})
    assert tz(ny, LA) == ("Europe/Paris", "Group Paris")
    out = await ny.ok("settz clusterset delete group Paris", "y")
    assert out.splitlines() == [
        f"Time Zone at Group Paris: {LA} will use the settings of Cluster.",
        "Delete Time Zone at Group Paris? [N]>y",
        "Time Zone deleted at Group Paris: pending until commit.",
    ]
    assert ny.pending == 1 and not marks(ny)["Group Paris"]
    assert tz(ny, LA) == ("Europe/Paris", "Group Paris")  # pending until commit
    await ny.ok("commit delete Paris")
    assert tz(ny, LA) == ("Asia/Tokyo", "Cluster")
    assert tz(ny, NY) == ("Asia/Tokyo", "Cluster")


async def test_delete_at_a_machine_makes_it_inherit_from_its_group(ny: Term) -> None:
    zones = {Mode.cluster(): "Asia/Tokyo", PARIS: "Europe/Paris"}
    await setup(ny, {**zones, Mode.machine(LA): "America/Los_Angeles"})
    await ny.ok("clustermode group Paris")  # the target need not be the current mode
    out = await ny.ok(f"settz clusterset delete machine {LA}", "y")
    assert out.splitlines() == [
        f"Time Zone at Machine {LA}: {LA} will use the settings of Group Paris.",
        f"Delete Time Zone at Machine {LA}? [N]>y",
        f"Time Zone deleted at Machine {LA}: pending until commit.",
    ]
    assert ny.shell.mode == PARIS and marks(ny)["Group Paris"]  # the current mode keeps its own
    await ny.ok("commit c")
    assert tz(ny, LA) == ("Europe/Paris", "Group Paris")


async def test_delete_at_all_groups(ny: Term) -> None:
    await setup(ny, {Mode.cluster(): "Asia/Tokyo", PARIS: "Europe/Paris", MAIN: "US/Eastern"})
    out = await ny.ok("settz clusterset delete allgroups", "y")
    assert out.splitlines() == [
        f"Time Zone at Group Main_Group: {NY} will use the settings of Cluster.",
        f"Time Zone at Group Paris: {LA} will use the settings of Cluster.",
        "Delete Time Zone at every group that defines it? [N]>y",
        "Time Zone deleted at Group Main_Group: pending until commit.",
        "Time Zone deleted at Group Paris: pending until commit.",
    ]
    assert ny.pending == 2
    await ny.ok("commit all groups")
    assert tz(ny, NY) == tz(ny, LA) == ("Asia/Tokyo", "Cluster")
    assert [m for m, d in marks(ny).items() if d] == ["Cluster"]


async def test_delete_at_all_groups_skips_groups_that_do_not_define_it(ny: Term) -> None:
    await setup(ny, {PARIS: "Europe/Paris"})
    out = await ny.ok("settz clusterset delete allgroups", "y")
    assert out.splitlines() == [
        f"Time Zone at Group Paris: {LA} will use the factory defaults.",
        "Delete Time Zone at Group Paris? [N]>y",
        "Time Zone deleted at Group Paris: pending until commit.",
    ]


async def test_delete_at_the_cluster_falls_back_to_the_factory_defaults(ny: Term) -> None:
    await setup(ny, {Mode.cluster(): "Asia/Tokyo", PARIS: "Europe/Paris"})
    out = await ny.ok("settz clusterset delete cluster", "y")
    assert out.splitlines()[0] == (
        f"Time Zone at Cluster: {NY} will use the factory defaults."  # Paris overrides it
    )
    await ny.ok("commit delete cluster tz")
    assert tz(ny, NY) == ("UTC", "factory default")
    assert tz(ny, LA) == ("Europe/Paris", "Group Paris")


async def test_delete_where_no_machine_uses_the_settings_says_so(ny: Term) -> None:
    await setup(ny, {PARIS: "Europe/Paris", Mode.machine(LA): "America/Los_Angeles"})
    status, out = await ny.run("settz clusterset delete group Paris", "")  # default: no
    assert status == 1 and out.splitlines() == [
        "Time Zone at Group Paris: no machine uses these settings.",
        "Delete Time Zone at Group Paris? [N]>",
        "Nothing deleted.",
    ]
    assert ny.pending == 0 and marks(ny)["Group Paris"]


async def test_deleting_a_definition_still_pending_drops_it(ny: Term) -> None:
    await at(ny, PARIS)
    await ny.ok("settz set timezone=Europe/Paris")
    assert marks(ny)["Group Paris"]
    await ny.ok("settz clusterset delete group Paris", "y")
    assert not marks(ny)["Group Paris"]
    await ny.ok("commit c")
    assert tz(ny, LA) == ("UTC", "factory default")


async def test_delete_names_references_that_become_unavailable(ny: Term) -> None:
    # A cluster-wide listener binds to interface Data1, which only newyork defines.
    line = f"interfaceconfig new Data1 address=10.0.0.1 prefix=24 hostname={NY}"
    await ny.ok(line)  # beside the Management interface clusterd init recorded
    await in_cluster_mode(ny)
    await ny.ok("listenerconfig new Out interface=Data1 type=private")
    await ny.ok("commit c")
    line = f"interfaceconfig clusterset delete machine {NY}"
    out = await ny.ok(line, "y", "", "y")  # switch to machine mode (newyork), then delete
    unavailable = [w for w in out.splitlines() if w.startswith("- Unavailable on Machine")]
    assert unavailable == [
        f"- Unavailable on Machine {LA}: listenerconfig row 'Out' (from Cluster) field "
        f"'interface' names interfaceconfig 'Data1', which is unavailable on Machine {LA}",
        f"- Unavailable on Machine {NY}: listenerconfig row 'Out' (from Cluster) field "
        f"'interface' names interfaceconfig 'Data1', which is unavailable on Machine {NY}",
    ]


# -- menu, batch, help ------------------------------------------------------------------


async def test_delete_from_the_menu(ny: Term) -> None:
    await setup(ny, {Mode.cluster(): "Asia/Tokyo", PARIS: "Europe/Paris"})
    out = await ny.ok("settz", "4", "3", "group Paris", "y")  # CLUSTERSET, delete
    lines = out.splitlines()
    start = lines.index("Copy or move these settings, or delete a mode's settings?")
    assert lines[start:] == [
        "Copy or move these settings, or delete a mode's settings?",
        "1. copy",
        "2. move",
        "3. delete",
        "[1]>3",
        "Delete the settings at:",  # (the modes that define them, and every group)
        "1. cluster",
        "2. group Paris",
        "3. allgroups",
        "[]>group Paris",
        f"Time Zone at Group Paris: {LA} will use the settings of Cluster.",
        "Delete Time Zone at Group Paris? [N]>y",
        "Time Zone deleted at Group Paris: pending until commit.",
    ]
    await ny.ok("commit c")
    assert tz(ny, LA) == ("Asia/Tokyo", "Cluster")
    # copy still works from the menu, and asks "Copy to:" (every other mode, by name)
    await in_cluster_mode(ny)
    out = await ny.ok("settz", "4", "1", "group Paris")
    assert block_after(out, "Copy to:") == [
        "1. group Main_Group",
        "2. group Paris",
        f"3. machine {LA}",
        f"4. machine {NY}",
        "5. allgroups",
        "[]>group Paris",
    ]
    assert "Time Zone copy from Cluster to Group Paris: pending until commit." in out


def block_after(out: str, first: str) -> list[str]:
    """The lines after ``first`` up to its prompt line (a ``[...]>`` line)."""
    lines = out.splitlines()
    start = lines.index(first) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("["))
    return lines[start : end + 1]


async def test_delete_in_batch_form_does_not_ask(americas: Daemon, ny: Term) -> None:
    await setup(ny, {Mode.cluster(): "Asia/Tokyo", PARIS: "Europe/Paris"})
    batch = BatchConsole()
    shell = Shell(americas.api, ADMIN, batch)
    assert await shell.run_line("settz clusterset delete group Paris") == 0
    assert await shell.run_line("commit by batch") == 0
    assert batch.lines[:2] == [
        f"Time Zone at Group Paris: {LA} will use the settings of Cluster.",
        "Time Zone deleted at Group Paris: pending until commit.",
    ]
    assert tz(ny, LA) == ("Asia/Tokyo", "Cluster")


async def test_help_names_clusterset_delete(ny: Term) -> None:
    out = await ny.ok("help settz")
    assert "clusterset copy|move|delete cluster|group NAME|machine NAME|" in out
    status, out = await ny.run("settz clusterset delete")
    assert status == 2 and out.splitlines() == [
        "Usage: settz clusterset copy|move cluster|group NAME|machine NAME|allgroups",
        "  or: settz clusterset delete cluster|group NAME|machine NAME|allgroups",
    ]


# -- refusals: nothing changes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "text"),
    [
        ("settz clusterset delete", 2, "Usage: settz clusterset copy|move"),
        ("settz clusterset remove group Paris", 2, "Usage: settz clusterset copy|move"),
        ("settz clusterset delete group Rome", 1, "Error: unknown mode 'Group Rome'"),
        ("settz clusterset delete machine sf.example.com", 1, "Error: unknown mode"),
        ("settz clusterset delete planet Mars", 1, "Error: unknown mode 'planet Mars'"),
        (
            "settz clusterset delete group Paris",
            1,
            "Error: settz is not defined at Group Paris: nothing to delete",
        ),
        (
            f"settz clusterset delete machine {LA}",
            1,
            f"Error: settz is not defined at Machine {LA}: nothing to delete",
        ),
        (
            "settz clusterset delete allgroups",
            1,
            "Error: settz is not defined at any group: nothing to delete",
        ),
        (
            "userconfig clusterset delete cluster",
            1,
            "Error: userconfig can only be defined at cluster level: deleting it there would "
            "leave every machine with the factory defaults; change its settings instead",
        ),
        (
            "sshconfig clusterset delete cluster",
            1,
            "Error: sshconfig can only be defined at cluster level:",
        ),
        (
            "userconfig clusterset delete group Paris",
            1,
            "Error: userconfig cannot be defined at group level (only at cluster)",
        ),
        (
            "userconfig undefine",
            1,
            "Error: userconfig can only be defined at cluster level: undefining it there "
            "would leave every machine with the factory defaults; change its settings instead",
        ),
        ("sshconfig undefine", 1, "Error: sshconfig can only be defined at cluster level:"),
    ],
)
async def test_delete_refusals_change_nothing(ny: Term, line: str, status: int, text: str) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")  # one pending change to keep
    before = marks(ny)
    got, out = await ny.run(line, spare=True)
    assert got == status and out.startswith(text), out
    assert ny.pending == 1 and marks(ny) == before


async def test_delete_of_a_machine_only_feature_at_a_group_is_refused(ny: Term) -> None:
    await ny.ok(f"interfaceconfig new Data1 address=10.0.0.1 prefix=24 hostname={NY}")
    for line, level in [
        ("interfaceconfig clusterset delete allgroups", "group"),
        ("interfaceconfig clusterset delete cluster", "cluster"),
    ]:
        status, out = await ny.run(line)
        assert (status, out) == (
            1,
            f"Error: interfaceconfig cannot be defined at {level} level (only at machine)",
        )
    assert ny.pending == 1  # the row (the machine defined interfaceconfig at init)


async def test_declining_or_no_answer_restores_pending_changes(ny: Term) -> None:
    await setup(ny, {PARIS: "Europe/Paris"})
    await at(ny, Mode.machine(NY))
    await ny.ok("settz set timezone=Asia/Tokyo")  # machine newyork, pending
    status, out = await ny.run("settz clusterset delete group Paris", "n")
    assert status == 1 and out.endswith("Nothing deleted.")
    status, out = await ny.run("settz clusterset delete group Paris", *["maybe"] * 5)
    assert status == 1 and "Error: no clear answer" in out
    assert ny.pending == 1 and marks(ny)["Group Paris"]


async def test_delete_on_a_standalone_machine_points_to_undefine(term: Term) -> None:
    await term.ok("settz set timezone=Europe/Paris")
    status, out = await term.run(f"settz clusterset delete machine {NY}")
    assert (status, out) == (
        1,
        "Error: this machine is not in a cluster: 'settz undefine' deletes its own settings",
    )
    assert term.pending == 1


# -- commitdetail: origin host names, recorded inconsistencies -----------------------------


async def test_commitdetail_names_the_origin_machine(ny: Term) -> None:
    await setup(ny, {Mode.cluster(): "Asia/Tokyo"})
    lines = (await ny.ok("commitdetail 1")).splitlines()
    assert re.fullmatch(rf"SER-NY:\d+  {STAMP}  {NY}  admin  'setup'{SEALED}", lines[0]), lines
    assert lines[1:] == ["    settz at Cluster"]
    [row] = json.loads(await ny.ok("commitdetail 1 --json"))
    assert (row["origin"], row["origin_serial"]) == (NY, "SER-NY")
    assert (row["inconsistent"], row["lost"], row["superseded"]) == (False, [], [])


async def test_commitdetail_on_a_standalone_machine_names_it(term: Term) -> None:
    await term.ok("settz set timezone=Europe/Paris")
    await term.ok("commit alone")
    [row] = json.loads(await term.ok("commitdetail 1 -j"))
    assert (row["origin"], row["origin_serial"]) == (NY, "SER-NY")


def losangeles_replica(daemon: Daemon, tmp_path: Path) -> Store:
    """losangeles' store with everything newyork has committed so far (its clock a minute
    behind, so that newyork's later commit is the newer one however fast the test runs)."""
    la = Store(
        tmp_path / "la.db",
        origin="SER-LA",
        hostname=LA,
        wall_ms=lambda: time.time_ns() // 1_000_000 - 60_000,
        sealer=la_sealer(tmp_path),
    )
    la.replace_state(daemon.store.export_state())
    return la


async def concurrent_edits(americas: Daemon, tmp_path: Path) -> tuple[Term, str, str]:
    """bob on losangeles and alice on newyork change the cluster's time zone and row
    a@x.example of its unsubscribe list without seeing each other; newyork then applies
    bob's commit.  Returns alice's login and the two commit ids (alice's, bob's)."""
    alice = Term(americas, user="alice")
    await in_cluster_mode(alice)
    await alice.ok(f"{UNSUB} new a@x.example comment=v0")
    await alice.ok("commit shared list")
    la = losangeles_replica(americas, tmp_path)
    try:
        bob = Session(la, "bob")
        bob.set_record("settz", Mode.cluster(), {"timezone": "Europe/Paris"})
        bob.set_row(UNSUB, Mode.cluster(), "a@x.example", {"comment": "bob"})
        made = bob.commit("bob edits")
        assert made is not None
        await alice.ok("settz set timezone=Asia/Tokyo")
        await alice.ok(f"{UNSUB} edit a@x.example comment=alice")
        await alice.ok("commit alice edits")
        missing = la.commits_missing_from(americas.store.version_vector) or []
        americas.store.apply_remote(missing)
    finally:
        la.close()
    assert americas.store.version_vector.get("SER-LA") == 1
    newest = americas.store.commit_log(1)[0]
    return alice, str(newest.id), str(made.id)


async def test_commitdetail_shows_what_was_lost_and_to_what(
    americas: Daemon, tmp_path: Path
) -> None:
    alice, mine, bobs = await concurrent_edits(americas, tmp_path)
    assert tz(alice, NY)[0] == "Asia/Tokyo"  # the newer change wins everywhere
    text = (await alice.ok("commitdetail 3")).splitlines()
    by_alice = rf"{mine} by alice on {re.escape(NY)} at {STAMP}"
    by_bob = rf"{bobs} by bob on {re.escape(LA)} at {STAMP}"
    expected = [
        rf"{mine}  {STAMP}  {re.escape(NY)}  alice  'alice edits'{SEALED}",
        r"    settz at Cluster",
        r"    unsubscribe at Cluster",
        rf"    Superseded without seeing it: settz at Cluster of {by_bob}",
        rf"    Superseded without seeing it: unsubscribe at Cluster row 'a@x\.example' of "
        rf"{by_bob}",
        rf"{bobs}  {STAMP}  {re.escape(LA)}  bob  'bob edits'{SEALED}  \(lost to a concurrent "
        r"change: see clustercheck\)",
        r"    settz at Cluster",
        r"    unsubscribe at Cluster",
        rf"    Lost: settz at Cluster, to {by_alice}",
        rf"    Lost: unsubscribe at Cluster row 'a@x\.example', to {by_alice}",
        rf"SER-NY:\d+  {STAMP}  {re.escape(NY)}  alice  'shared list'{SEALED}",
        r"    unsubscribe at Cluster",
    ]
    assert len(text) == len(expected), text
    for line, pattern in zip(text, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)

    rows = {r["id"]: r for r in json.loads(await alice.ok("commitdetail 3 --json"))}
    ref_alice = ref(mine, "alice", NY, "SER-NY")
    ref_bob = ref(bobs, "bob", LA, "SER-LA")
    assert same(rows[bobs]) == {
        **ref_bob,
        "comment": "bob edits",
        "changed": ["settz at Cluster", "unsubscribe at Cluster"],
        "inconsistent": True,
        "lost": [
            {"feature": "settz", "mode": "Cluster", "row": None, "to": ref_alice},
            {"feature": UNSUB, "mode": "Cluster", "row": "a@x.example", "to": ref_alice},
        ],
        "superseded": [],
        "seal": {"hash": rows[bobs]["seal"]["hash"], "ok": True, "broken": None,
                 "label": "verified", "text": "verified"},  # losangeles' key signed it
    }  # fmt: skip
    assert same(rows[mine])["superseded"] == [
        {"feature": "settz", "mode": "Cluster", "row": None, "of": ref_bob},
        {"feature": UNSUB, "mode": "Cluster", "row": "a@x.example", "of": ref_bob},
    ]
    assert rows[mine]["inconsistent"] is False and rows[mine]["lost"] == []


def ref(cid: str, user: str, origin: str, serial: str) -> dict[str, Any]:
    return {"id": cid, "time": "T", "user": user, "origin": origin, "origin_serial": serial}


def same(found: Any) -> Any:
    """``found`` with every time stamp (checked for its shape) replaced by "T"."""
    if isinstance(found, dict):
        result = {}
        for key, value in found.items():
            if key == "time":
                assert re.fullmatch(STAMP, value), value
                value = "T"
            result[key] = same(value)
        return result
    if isinstance(found, list):
        return [same(x) for x in found]
    return found


async def test_commitdetail_falls_back_to_the_serial_of_a_former_member(
    americas: Daemon, tmp_path: Path
) -> None:
    alice, mine, bobs = await concurrent_edits(americas, tmp_path)
    clusterops.remove_machine(americas.store, LA, user="admin")
    americas.follower.replaced()
    rows = {r["id"]: r for r in json.loads(await alice.ok("commitdetail 4 -j"))}
    assert (rows[bobs]["origin"], rows[bobs]["origin_serial"]) == ("SER-LA", "SER-LA")
    assert rows[mine]["superseded"][0]["of"]["origin"] == "SER-LA"
    text = await alice.ok("commitdetail 4")
    assert re.search(rf"^{bobs}  {STAMP}  SER-LA  bob  ", text, re.M), text
    assert f"settz at Cluster of {bobs} by bob on SER-LA at " in text


async def test_a_commit_no_longer_in_the_log_is_named_by_its_id(ny: Term) -> None:
    names = {"SER-LA": LA}
    assert commit_ref(ny.shell, CommitId("SER-LA", 99), names) == {
        "id": "SER-LA:99",
        "time": None,
        "user": None,
        "origin": LA,
        "origin_serial": "SER-LA",
    }
