"""Membership operations on a store: groups, the cluster's name, machines, PREPJOIN.

Every operation writes exactly one commit; every refusal raises ``LifecycleError`` (or
``InvalidSetting`` for session edits) and leaves the store exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from clusterd.core import layers
from clusterd.core.digest import state_digest
from clusterd.core.edits import Start
from clusterd.core.errors import InvalidSetting, LifecycleError
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending
from clusterd.core.state import definition
from clusterd.core.versions import MARKER, Commit, Unit
from clusterd.store.session import Session
from clusterd.store.store import Store
from clusterd.trust import clusterops, lifecycle
from clusterd.trust.lifecycle import MAIN_GROUP

ME = "a.example.com"
B = "b.example.com"
C = "c.example.com"
D = "d.example.com"
PARIS = "Paris"
LYON = "Lyon"
USER = "admin"
CLUSTER_KEY = Mode.cluster().key

ROW_B = {"serial": "SER-2", "group": PARIS, "address": "10.0.0.2", "ssh_port": 2222}
ROW_C = {
    "serial": "SER-3",
    "group": PARIS,
    "address": "10.0.0.3",
    "ccs_port": 2400,
    "transport": "ccs",
}
ROW_D = {"serial": "SER-4", "group": MAIN_GROUP}


# -- helpers ------------------------------------------------------------------------------


def new_store(tmp_path: Path, name: str = "x.db") -> Store:
    return Store(str(tmp_path / name), origin="SER-1", hostname=ME)


def clustered(tmp_path: Path) -> Store:
    """Cluster ``americas``: a (this machine) in Main_Group; b and c in group Paris."""
    store = new_store(tmp_path)
    lifecycle.create_cluster(store, "americas")
    clusterops.add_group(store, PARIS, user=USER)
    clusterops.admit(store, B, dict(ROW_B), user=USER)
    clusterops.admit(store, C, dict(ROW_C), user=USER)
    return store


def public_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()


def fingerprint(store: Store) -> tuple[dict[str, int], int, str]:
    """Everything a commit would change: version vector, log length, replicated state."""
    return dict(store.state.vv), len(store.commit_log()), state_digest(store.state)


@contextmanager
def unchanged(store: Store) -> Iterator[None]:
    before = fingerprint(store)
    yield
    assert fingerprint(store) == before


def refused(store: Store, match: str, op: Any, *args: Any, **kwargs: Any) -> None:
    with unchanged(store), pytest.raises(LifecycleError, match=match):
        op(store, *args, **kwargs)


def one_commit(store: Store, commit: Commit) -> None:
    """``commit`` is the store's newest commit and the only one the operation made."""
    assert commit is not None
    assert store.commit_log(limit=1)[0].id == commit.id
    assert commit.user == USER


def defined(store: Store, command: str, mode: Mode) -> Any:
    feature = store.catalogue[command]
    return definition(store.state.entries(command, mode.key), feature.is_table)


def group_definitions(store: Store, group: str) -> dict[str, Any]:
    found = {}
    for feature in store.catalogue:
        value = defined(store, feature.command, Mode.group(group))
        if value is not None:
            found[feature.command] = value
    return found


def configure_paris(store: Store) -> None:
    """Settings at cluster, group Paris (a record and a table) and machine b."""
    s = Session(store, USER)
    s.set_record("settz", Mode.cluster(), {"timezone": "UTC"})
    s.set_record("settz", Mode.group(PARIS), {"timezone": "Europe/Paris"})
    s.define("smtproutes", Mode.group(PARIS), Start.EMPTY)
    s.set_row(
        "smtproutes", Mode.group(PARIS), "example.fr", {"destinations": [{"host": "mx.example.fr"}]}
    )
    s.set_row(
        "smtproutes", Mode.group(PARIS), "ALL", {"destinations": [{"host": "relay.example.fr"}]}
    )
    s.define("bounceconfig", Mode.group(PARIS), Start.DEFAULTS)
    s.set_record("dnsconfig", Mode.machine(B), {"mode": "internet-root", "timeout_seconds": 9})
    assert s.commit("paris settings") is not None


def effective(store: Store, machine: str) -> dict[str, Any]:
    return layers.effective_values(store.state, store.catalogue, machine)


# -- the fixture itself -------------------------------------------------------------------


def test_admitted_rows_carry_what_they_were_given(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    machines = layers.machines(store.state)
    assert list(machines) == [ME, B, C]
    assert machines[B]["address"] == "10.0.0.2" and machines[B]["ssh_port"] == 2222
    assert machines[C]["transport"] == "ccs" and machines[C]["ccs_port"] == 2400
    assert machines[ME]["group"] == MAIN_GROUP
    assert layers.groups(store.state) == [MAIN_GROUP, PARIS]


# -- add_group ----------------------------------------------------------------------------


def test_add_group_lists_the_new_group_in_one_commit(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    vv = dict(store.state.vv)
    commit = clusterops.add_group(store, LYON, user=USER)
    one_commit(store, commit)
    assert store.state.vv["SER-1"] == vv["SER-1"] + 1
    assert layers.groups(store.state) == [LYON, MAIN_GROUP, PARIS]
    assert list(clusterops.listing(store)["groups"]) == [LYON, MAIN_GROUP, PARIS]
    assert clusterops.listing(store)["groups"][LYON] == {}


def test_add_group_refuses_a_duplicate_or_an_invalid_name(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    refused(store, "already exists", clusterops.add_group, PARIS, user=USER)
    refused(store, "already exists", clusterops.add_group, MAIN_GROUP, user=USER)
    refused(store, "not a group name", clusterops.add_group, "not a name", user=USER)


def test_add_group_needs_a_cluster(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    refused(store, "not a member of a cluster", clusterops.add_group, PARIS, user=USER)


# -- rename_group -------------------------------------------------------------------------


def test_rename_group_moves_machines_and_every_group_definition(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    configure_paris(store)
    before_defs = group_definitions(store, PARIS)
    assert set(before_defs) == {"settz", "smtproutes", "bounceconfig"}
    before = {m: effective(store, m) for m in (ME, B, C)}
    rows_before = layers.machines(store.state)

    commit = clusterops.rename_group(store, PARIS, LYON, user=USER)

    one_commit(store, commit)
    assert layers.groups(store.state) == [LYON, MAIN_GROUP]
    machines = layers.machines(store.state)
    assert machines[B]["group"] == LYON and machines[C]["group"] == LYON
    assert machines[ME]["group"] == MAIN_GROUP
    # Only the group changed in each row: address, ports, transport are kept.
    for m in (B, C):
        assert {**rows_before[m], "group": LYON} == machines[m]
    assert group_definitions(store, LYON) == before_defs
    assert group_definitions(store, PARIS) == {}
    for command in before_defs:
        assert not layers.is_defined(store.state, store.catalogue[command], Mode.group(PARIS))
    # Nobody behaves differently, and b's and c's settings now come from group Lyon.
    assert {m: effective(store, m) for m in (ME, B, C)} == before
    resolved = layers.effective(store.state, store.catalogue, C)
    assert resolved["settz"].mode == Mode.group(LYON)
    assert resolved["smtproutes"].mode == Mode.group(LYON)
    assert layers.effective(store.state, store.catalogue, B)["dnsconfig"].mode == Mode.machine(B)


def test_rename_group_then_back_restores_the_same_behaviour(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    configure_paris(store)
    before = {m: effective(store, m) for m in (ME, B, C)}
    defs = group_definitions(store, PARIS)
    clusterops.rename_group(store, PARIS, LYON, user=USER)
    clusterops.rename_group(store, LYON, PARIS, user=USER)
    assert group_definitions(store, PARIS) == defs
    assert group_definitions(store, LYON) == {}
    assert {m: effective(store, m) for m in (ME, B, C)} == before


def test_rename_an_empty_group_without_settings(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    clusterops.add_group(store, LYON, user=USER)
    one_commit(store, clusterops.rename_group(store, LYON, "Berlin", user=USER))
    assert layers.groups(store.state) == ["Berlin", MAIN_GROUP, PARIS]


def test_rename_group_refusals_change_nothing(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    configure_paris(store)
    clusterops.add_group(store, LYON, user=USER)
    refused(store, "already exists", clusterops.rename_group, PARIS, LYON, user=USER)
    refused(store, "already exists", clusterops.rename_group, PARIS, PARIS, user=USER)
    refused(store, "no group 'Berlin'", clusterops.rename_group, "Berlin", "Rome", user=USER)
    refused(store, "not a group name", clusterops.rename_group, PARIS, "bad name", user=USER)
    assert layers.machines(store.state)[B]["group"] == PARIS


# -- delete_group -------------------------------------------------------------------------


def test_delete_group_with_machines_needs_a_receiving_group(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    with unchanged(store), pytest.raises(LifecycleError) as info:
        clusterops.delete_group(store, PARIS, move_to=None, user=USER)
    assert B in str(info.value) and C in str(info.value)
    assert PARIS in layers.groups(store.state)


def test_delete_group_moves_machines_and_drops_group_settings(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    configure_paris(store)
    rows_before = layers.machines(store.state)
    commit = clusterops.delete_group(store, PARIS, move_to=MAIN_GROUP, user=USER)
    one_commit(store, commit)
    assert layers.groups(store.state) == [MAIN_GROUP]
    machines = layers.machines(store.state)
    for m in (B, C):
        assert machines[m] == {**rows_before[m], "group": MAIN_GROUP, "group_id": MAIN_GROUP}
    assert group_definitions(store, PARIS) == {}
    resolved = layers.effective(store.state, store.catalogue, C)
    assert resolved["settz"].mode == Mode.cluster()
    assert resolved["settz"].value == {"timezone": "UTC"}
    assert resolved["smtproutes"].mode is None  # back to the factory default
    # b's own machine-level setting is not a group setting: it stays.
    assert layers.effective(store.state, store.catalogue, B)["dnsconfig"].mode == Mode.machine(B)
    assert list(clusterops.listing(store)["groups"][MAIN_GROUP]) == [ME, B, C]


def test_delete_an_empty_group_without_move_to(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    clusterops.add_group(store, LYON, user=USER)
    s = Session(store, USER)
    s.set_record("settz", Mode.group(LYON), {"timezone": "Europe/Paris"})
    s.commit("lyon tz")
    one_commit(store, clusterops.delete_group(store, LYON, move_to=None, user=USER))
    assert layers.groups(store.state) == [MAIN_GROUP, PARIS]
    assert group_definitions(store, LYON) == {}


def test_delete_group_refusals_change_nothing(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    refused(
        store,
        "cannot move to 'Paris' itself",
        clusterops.delete_group,
        PARIS,
        move_to=PARIS,
        user=USER,
    )
    refused(
        store, "no group 'Nowhere'", clusterops.delete_group, PARIS, move_to="Nowhere", user=USER
    )
    refused(
        store, "no group 'Nowhere'", clusterops.delete_group, "Nowhere", move_to=None, user=USER
    )
    # Empty Lyon: an unknown receiving group is still refused.
    clusterops.add_group(store, LYON, user=USER)
    refused(
        store, "no group 'Nowhere'", clusterops.delete_group, LYON, move_to="Nowhere", user=USER
    )


def test_the_first_group_cannot_be_deleted(tmp_path: Path) -> None:
    """Main_Group takes in machines whose group was deleted concurrently: it stays, even
    renamed and with other groups beside it."""
    store = new_store(tmp_path)
    lifecycle.create_cluster(store, "americas")
    refused(store, "first group", clusterops.delete_group, MAIN_GROUP, move_to=None, user=USER)
    clusterops.add_group(store, LYON, user=USER)
    refused(store, "first group", clusterops.delete_group, MAIN_GROUP, move_to=LYON, user=USER)
    clusterops.rename_group(store, MAIN_GROUP, "Headquarters", user=USER)
    refused(store, "first group", clusterops.delete_group, "Headquarters", move_to=LYON,
            user=USER)  # fmt: skip
    assert layers.groups(store.state) == ["Headquarters", LYON]


# -- set_group ----------------------------------------------------------------------------


def test_set_group_moves_one_machine(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    configure_paris(store)
    row = layers.machines(store.state)[C]
    one_commit(store, clusterops.set_group(store, C, MAIN_GROUP, user=USER))
    machines = layers.machines(store.state)
    assert machines[C] == {**row, "group": MAIN_GROUP, "group_id": MAIN_GROUP}
    assert machines[B]["group"] == PARIS
    assert layers.effective(store.state, store.catalogue, C)["settz"].mode == Mode.cluster()
    assert group_definitions(store, PARIS) != {}  # the group keeps its settings


def test_set_group_refusals_change_nothing(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    refused(store, "already in group 'Paris'", clusterops.set_group, B, PARIS, user=USER)
    refused(
        store, "no machine 'x.example.com'", clusterops.set_group, "x.example.com", PARIS, user=USER
    )
    refused(store, "no group 'Nowhere'", clusterops.set_group, B, "Nowhere", user=USER)


# -- set_name -----------------------------------------------------------------------------


def test_set_name_renames_but_keeps_the_cluster_id(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    cid = layers.cluster_id(store.state)
    assert cid is not None and cid != "americas"
    one_commit(store, clusterops.set_name(store, "emea", user=USER))
    assert layers.cluster_name(store.state) == "emea"
    assert layers.cluster_id(store.state) == cid
    assert clusterops.listing(store)["cluster"] == "emea"


def test_set_name_refusals_change_nothing(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    refused(store, "already named 'americas'", clusterops.set_name, "americas", user=USER)
    refused(store, "not a name", clusterops.set_name, "not a name", user=USER)
    refused(store, "not a name", clusterops.set_name, "", user=USER)
    assert layers.cluster_name(store.state) == "americas"
    refused(new_store(tmp_path, "other.db"), "not a member", clusterops.set_name, "x", user=USER)


# -- admit / remove_machine ---------------------------------------------------------------


def test_admit_adds_the_row_and_consumes_its_prepjoin_entry(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    s = Session(store, USER)
    s.prepjoin_new(D, "SER-4", public_key())
    s.prepjoin_new("e.example.com", "SER-5", public_key())
    s.commit("prepare d and e")
    assert set(layers.prepared(store.state)) == {D, "e.example.com"}
    commit = clusterops.admit(store, D, dict(ROW_D), user=USER)
    one_commit(store, commit)
    assert layers.machines(store.state)[D]["serial"] == "SER-4"
    assert layers.machines(store.state)[D]["group"] == MAIN_GROUP
    assert set(layers.prepared(store.state)) == {"e.example.com"}


def test_remove_machine_deletes_the_row_only_and_readmission_clears_old_settings(
    tmp_path: Path,
) -> None:
    store = clustered(tmp_path)
    configure_paris(store)
    s = Session(store, USER)
    s.define("unsubscribe", Mode.machine(B), Start.EMPTY)
    s.set_row("unsubscribe", Mode.machine(B), "x@example.com", {"comment": "b"})
    s.commit("b's own list")
    assert defined(store, "dnsconfig", Mode.machine(B)) is not None

    one_commit(store, clusterops.remove_machine(store, B, user=USER))
    assert B not in layers.machines(store.state)
    assert list(layers.machines(store.state)) == [ME, C]
    # The row only: b flattens its own settings itself when it learns of the removal.
    assert defined(store, "dnsconfig", Mode.machine(B)) is not None
    assert defined(store, "unsubscribe", Mode.machine(B)) == {"x@example.com": {"comment": "b"}}
    assert group_definitions(store, PARIS) != {}

    one_commit(store, clusterops.admit(store, B, dict(ROW_B), user=USER))
    assert layers.machines(store.state)[B]["group"] == PARIS
    for feature in store.catalogue:
        assert defined(store, feature.command, Mode.machine(B)) is None, feature.command
    # b now behaves as its group says, not as its former self.
    resolved = layers.effective(store.state, store.catalogue, B)
    assert resolved["dnsconfig"].mode is None
    assert resolved["unsubscribe"].mode is None
    assert resolved["settz"].mode == Mode.group(PARIS)


def test_remove_machine_refuses_an_unknown_machine(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    refused(
        store, "no machine 'x.example.com'", clusterops.remove_machine, "x.example.com", user=USER
    )


def test_admit_refuses_an_invalid_row_and_needs_a_cluster(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    refused(
        store, "serial", clusterops.admit, D, {"serial": "bad serial!", "group": PARIS}, user=USER
    )
    refused(store, "bad row name", clusterops.admit, "not a host", dict(ROW_D), user=USER)
    refused(
        store,
        "ccs_port",
        clusterops.admit,
        D,
        {"serial": "SER-4", "group": PARIS, "transport": "ccs"},
        user=USER,
    )
    refused(
        new_store(tmp_path, "other.db"), "not a member", clusterops.admit, D, dict(ROW_D), user=USER
    )


# -- listing ------------------------------------------------------------------------------


def test_list_text_has_the_reference_shape(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    clusterops.add_group(store, "Athens", user=USER)
    clusterops.admit(store, D, dict(ROW_D), user=USER)
    s = Session(store, USER)
    s.prepjoin_new("e.example.com", "SER-5", public_key())
    s.commit("prepare e")
    listed = clusterops.listing(store)
    assert listed["cluster"] == "americas"
    assert list(listed["groups"]) == ["Athens", MAIN_GROUP, PARIS]
    assert listed["groups"][PARIS][C]["ccs_port"] == 2400
    assert listed["prepared"]["e.example.com"]["serial"] == "SER-5"
    assert clusterops.list_text(listed) == (
        "cluster = americas\n"
        "Group Athens:\n"
        "Group Main_Group:\n"
        "Machine a.example.com (Serial #: SER-1)\n"
        "Machine d.example.com (Serial #: SER-4)\n"
        "Group Paris:\n"
        "Machine b.example.com (Serial #: SER-2)\n"
        "Machine c.example.com (Serial #: SER-3)"
    )


def test_listing_a_fresh_cluster_and_a_standalone_store(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with pytest.raises(LifecycleError, match="not a member"):
        clusterops.listing(store)
    lifecycle.create_cluster(store, "solo")
    assert clusterops.list_text(clusterops.listing(store)) == (
        "cluster = solo\nGroup Main_Group:\nMachine a.example.com (Serial #: SER-1)"
    )


# -- PREPJOIN through a session -----------------------------------------------------------


def test_prepjoin_new_is_pending_until_commit(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    key = public_key()
    s = Session(store, USER)
    with unchanged(store):
        value = s.prepjoin_new(D, "SER-4", key)
        assert layers.prepared(store.state) == {}
        assert D in layers.prepared(s.view)  # the session sees its own change
        other = Session(store, "bob")
        assert layers.prepared(other.view) == {}
    assert value["machine_key"] == " ".join(key.split()[:2])  # comment dropped
    commit = s.commit("prepare d")
    assert commit is not None
    assert layers.prepared(store.state) == {
        D: {"serial": "SER-4", "machine_key": value["machine_key"]}
    }
    assert clusterops.listing(store)["prepared"][D]["serial"] == "SER-4"
    assert D not in layers.machines(store.state)  # registered, not a member


def test_prepjoin_delete_is_pending_until_commit(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    s = Session(store, USER)
    s.prepjoin_new(D, "SER-4", public_key())
    s.prepjoin_new("e.example.com", "SER-5", public_key())
    s.commit("prepare")
    with unchanged(store):
        s.prepjoin_delete(D)
        assert D in layers.prepared(store.state)
        assert D not in layers.prepared(s.view)
    s.commit("unprepare d")
    assert list(layers.prepared(store.state)) == ["e.example.com"]
    with unchanged(store), pytest.raises(InvalidSetting, match="no PREPJOIN entry"):
        s.prepjoin_delete(D)
    assert not s.pending


def test_prepjoin_refusals_leave_the_session_and_store_unchanged(tmp_path: Path) -> None:
    store = clustered(tmp_path)
    s = Session(store, USER)
    with unchanged(store):
        with pytest.raises(InvalidSetting, match="already a member"):
            s.prepjoin_new(B, "SER-9", public_key())
        with pytest.raises(InvalidSetting, match="already a member"):
            s.prepjoin_new(ME, "SER-9", public_key())
        for bad_key in ("not a key", "ssh-ed25519", "ssh-dss AAAAB3NzaC1kc3M=", ""):
            with pytest.raises(InvalidSetting):
                s.prepjoin_new(D, "SER-4", bad_key)
        with pytest.raises(InvalidSetting):
            s.prepjoin_new(D, "bad serial!", public_key())
        with pytest.raises(InvalidSetting):
            s.prepjoin_new("not a host", "SER-4", public_key())
    assert not s.pending
    assert s.commit("nothing") is None


def test_prepjoin_on_a_standalone_store_is_refused(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    s = Session(store, USER)
    with unchanged(store):
        with pytest.raises(InvalidSetting, match="not in a cluster"):
            s.prepjoin_new(D, "SER-4", public_key())
        with pytest.raises(InvalidSetting):
            s.prepjoin_delete(D)
    assert not s.pending


# -- regressions ---------------------------------------------------------------------


def test_rename_group_onto_a_name_with_leftover_settings_keeps_behaviour(
    tmp_path: Path,
) -> None:
    store = clustered(tmp_path)
    clusterops.add_group(store, LYON, user=USER)
    late = Session(store, "bob")
    late.set_record("ntpconfig", Mode.group(LYON), {"servers": ["ntp.lyon.example"]})
    clusterops.delete_group(store, LYON, move_to=None, user=USER)
    late.commit("bob's edit, read before the group was deleted")
    before = effective(store, B)
    clusterops.rename_group(store, PARIS, LYON, user=USER)
    assert effective(store, B) == before


def test_set_name_keeps_the_id_of_a_cluster_created_before_ids(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    lifecycle.create_cluster(store, "americas")
    pending = Pending()
    pending.write(store.state, Unit("cluster", CLUSTER_KEY, MARKER), {"name": "americas"})
    store.commit(pending, user=USER, comment="a cluster record as older versions wrote it")
    assert layers.cluster_id(store.state) == "americas"
    clusterops.set_name(store, "emea", user=USER)
    assert layers.cluster_name(store.state) == "emea"
    assert layers.cluster_id(store.state) == "americas"
