"""Create, join and leave on the store side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterd.core import layers
from clusterd.core.digest import state_digest
from clusterd.core.edits import Start
from clusterd.core.errors import LifecycleError
from clusterd.core.modes import Mode
from clusterd.store.store import Store
from clusterd.trust import lifecycle
from tests.storehelp import ME, session, standalone

LA = "losangeles.example.com"
IFACE = {"address": "127.0.0.2", "prefix": 8, "hostname": LA}


def configured(store: Store, zone: str, user: str) -> None:
    me = Mode.machine(store.hostname)
    s = session(store)
    s.set_record("settz", me, {"timezone": zone})
    s.define("userconfig", me, Start.EMPTY)
    from clusterd.schema.access import hash_passphrase

    s.set_row(
        "userconfig",
        me,
        user,
        {"full_name": user, "role": "admin", "passphrase_hash": hash_passphrase("correct horse")},
    )
    s.define("interfaceconfig", me, Start.EMPTY)
    s.set_row(
        "interfaceconfig",
        me,
        "Management",
        {**IFACE, "hostname": store.hostname, "address": "127.0.0.9"},
    )
    s.commit("standalone settings")


def test_create_promotes_settings_but_keeps_network_settings_at_machine_level(
    tmp_path: Path,
) -> None:
    store = standalone(tmp_path)
    configured(store, "America/New_York", "nyadmin")
    before = layers.effective_values(store.state, store.catalogue, ME)
    lifecycle.create_cluster(store, "americas")
    assert layers.cluster_name(store.state) == "americas"
    assert layers.groups(store.state) == ["Main_Group"]
    assert layers.machines(store.state)[ME]["group"] == "Main_Group"
    resolved = layers.effective(store.state, store.catalogue, ME)
    assert resolved["settz"].mode == Mode.cluster()
    assert resolved["userconfig"].mode == Mode.cluster()
    assert resolved["interfaceconfig"].mode == Mode.machine(ME)
    assert {k: r.value for k, r in resolved.items()} == before  # behaves as before
    with pytest.raises(LifecycleError):
        lifecycle.create_cluster(store, "again")


def test_join_reports_what_it_discards_keeps_a_copy_and_keeps_network_settings(
    tmp_path: Path,
) -> None:
    ny = standalone(tmp_path)
    configured(ny, "America/New_York", "nyadmin")
    lifecycle.create_cluster(ny, "americas")
    la = Store(tmp_path / "la.db", origin="SER-LA", hostname=LA)
    configured(la, "America/Los_Angeles", "laadmin")
    discarded = lifecycle.join_report(la)
    report = {d.feature: d.value for d in discarded}
    assert set(report) == {"settz", "userconfig"}  # interfaceconfig survives: not listed
    assert "laadmin" in report["userconfig"]
    # What is lost is named: a table's rows (users first of all), a record's feature.
    assert [(d.feature, d.title, d.rows) for d in discarded] == [
        ("settz", "Time Zone", None),
        ("userconfig", "Users", ("laadmin",)),
    ]
    assert [lifecycle.discard_line(d.as_json()) for d in discarded] == [
        f"{'settz':<20} Time Zone",
        f"{'userconfig':<20} Users: laadmin",
    ]
    assert lifecycle.discard_line({"feature": "userconfig", "title": "Users", "rows": []}) == (
        f"{'userconfig':<20} Users: (an empty table)"
    )
    assert json.loads(json.dumps(discarded[1].as_json()))["rows"] == ["laadmin"]
    saved = lifecycle.save_standalone(la, tmp_path)
    assert json.loads(saved.read_text())["settings"]["settz"]["timezone"] == "America/Los_Angeles"
    again = lifecycle.save_standalone(la, tmp_path)  # same second: a second copy, not over it
    assert again != saved and saved.exists() and again.exists()
    lifecycle.join(la, ny.export_state())
    resolved = layers.effective(la.state, la.catalogue, LA)
    assert resolved["settz"].value == {"timezone": "America/New_York"}
    assert set(resolved["userconfig"].value) == {"nyadmin"}
    assert resolved["interfaceconfig"].mode == Mode.machine(LA)
    assert resolved["interfaceconfig"].value["Management"]["address"] == "127.0.0.9"
    ny.apply_remote(la.commits_missing_from(ny.version_vector) or [])
    assert state_digest(ny.state) == state_digest(la.state)
    assert set(layers.machines(ny.state)) == {ME, LA}


def test_join_into_an_unknown_group_is_refused_before_anything_is_committed(
    tmp_path: Path,
) -> None:
    ny = standalone(tmp_path)
    lifecycle.create_cluster(ny, "americas")
    la = Store(tmp_path / "la.db", origin="SER-LA", hostname=LA)
    with pytest.raises(LifecycleError, match="no group 'Paris'"):
        lifecycle.join(la, ny.export_state(), group="Paris")
    assert la.version_vector.get("SER-LA", 0) == 0


def test_leaving_flattens_and_the_last_member_leaving_ends_the_cluster(tmp_path: Path) -> None:
    ny = standalone(tmp_path)
    configured(ny, "America/New_York", "nyadmin")
    lifecycle.create_cluster(ny, "americas")
    before = layers.effective_values(ny.state, ny.catalogue, ME)
    lifecycle.flatten(ny)
    assert layers.cluster_name(ny.state) is None
    assert layers.effective_values(ny.state, ny.catalogue, ME) == before
    resolved = layers.effective(ny.state, ny.catalogue, ME)
    assert resolved["userconfig"].mode == Mode.machine(ME)  # now its own setting
    assert resolved["ntpconfig"].mode is None  # defaults stay defaults
    with pytest.raises(LifecycleError):
        lifecycle.flatten(ny)
