"""Properties of layers: copy, move, delete, flatten, and empty versus absent."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterd.core import layers
from clusterd.core.edits import Start
from clusterd.core.errors import InvalidSetting
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.schema.catalogue import CATALOGUE
from clusterd.trust import lifecycle
from tests.replica import MACHINES, Replica, cluster_commit
from tests.storehelp import add_members, session, standalone

GROUP_OF = {**MACHINES}
MODES = [Mode.cluster(), Mode.group("G1"), Mode.group("G2")] + [Mode.machine(m) for m in MACHINES]
FEATURES = ["unsubscribe", "settz", "alertconfig"]
ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo"]
KEYS = ["a@x.example", "b@x.example"]

setting = st.tuples(
    st.sampled_from(FEATURES),
    st.sampled_from(MODES),
    st.one_of(st.none(), st.just("empty"), st.sampled_from(KEYS), st.sampled_from(ZONES)),
)


def value_for(feature: str, choice: str | None) -> Any:
    if feature == "settz":
        return {"timezone": choice if choice in ZONES else "UTC"}
    if feature == "alertconfig":
        rows = {"ops@x.example": {"classes": ["all"], "severities": ["critical"]}}
        return {} if choice == "empty" else rows
    return {} if choice == "empty" else {k: {"comment": k} for k in KEYS if k != choice}


def define_all(ed: Any, settings_list: list[tuple[str, Mode, str | None]]) -> None:
    """Define each listed (feature, mode) through an editor or session (None: leave it)."""
    for feature, mode, choice in settings_list:
        if choice is None:
            continue
        if CATALOGUE[feature].is_table:
            ed.define(feature, mode, Start.EMPTY)
            for key, row in value_for(feature, choice).items():
                ed.set_row(feature, mode, key, row)
        else:
            ed.set_record(feature, mode, value_for(feature, choice))


def build(settings_list: list[tuple[str, Mode, str | None]]) -> Replica:
    """A cluster where each listed (feature, mode) is defined (or left undefined: None)."""
    r = Replica("SER-1", "m0.example.com", lambda: 1000)
    r.receive([cluster_commit()])
    r.edit(lambda ed: define_all(ed, settings_list))
    return r


def effective_everywhere(r: Replica) -> dict[str, Any]:
    return {m: layers.effective_values(r.state, CATALOGUE, m) for m in MACHINES}


def definitions(r: Replica) -> dict[tuple[str, str], Any]:
    return {
        (f, m.key): definition(r.state.entries(f, m.key), CATALOGUE[f].is_table)
        for f in FEATURES
        for m in MODES
    }


def inherits_from(r: Replica, feature: str, lower: Mode, upper: Mode) -> bool:
    """True when every machine under ``lower`` currently takes ``feature`` from ``upper``."""
    under = layers.machines_under(r.state, lower)
    return bool(under) and all(
        layers.effective(r.state, CATALOGUE, m)[feature].mode == upper for m in under
    )


@settings(max_examples=120, deadline=None)
@given(
    st.lists(setting, max_size=8),
    st.sampled_from(FEATURES),
    st.sampled_from(MODES),
    st.sampled_from(MODES),
)
def test_copying_down_to_a_mode_that_inherits_changes_no_effective_config(
    settings_list: list[Any], feature: str, src: Mode, dst: Mode
) -> None:
    r = build(settings_list)
    if src == dst or not inherits_from(r, feature, dst, src):
        return
    before = effective_everywhere(r)
    r.edit(lambda ed: ed.copy(feature, src, dst))
    assert effective_everywhere(r) == before


@settings(max_examples=120, deadline=None)
@given(st.lists(setting, max_size=8), st.sampled_from(FEATURES), st.sampled_from(MODES[3:]))
def test_copy_up_then_delete_at_the_source_keeps_the_source_machines_as_they_were(
    settings_list: list[Any], feature: str, machine: Mode
) -> None:
    r = build(settings_list)
    if definition(r.state.entries(feature, machine.key), CATALOGUE[feature].is_table) is None:
        return
    group = Mode.group(GROUP_OF[machine.name])
    before = layers.effective_values(r.state, CATALOGUE, machine.name)
    uppers = [group]
    if definition(r.state.entries(feature, group.key), CATALOGUE[feature].is_table) is None:
        uppers.append(Mode.cluster())  # nothing in between would shadow the cluster copy
    for upper in uppers:
        r2 = build(settings_list)
        r2.edit(
            lambda ed, upper=upper: (
                ed.copy(feature, machine, upper),
                ed.undefine(feature, machine),
            )
        )
        assert layers.effective_values(r2.state, CATALOGUE, machine.name) == before


@settings(max_examples=120, deadline=None)
@given(
    st.lists(setting, max_size=8),
    st.sampled_from(FEATURES),
    st.sampled_from(MODES),
    st.sampled_from(MODES),
)
def test_move_equals_copy_then_delete(
    settings_list: list[Any], feature: str, src: Mode, dst: Mode
) -> None:
    moved, copied = build(settings_list), build(settings_list)
    try:
        moved.edit(lambda ed: ed.move(feature, src, dst))
    except InvalidSetting:
        return
    copied.edit(lambda ed: (ed.copy(feature, src, dst), ed.undefine(feature, src)))
    assert definitions(moved) == definitions(copied)
    assert effective_everywhere(moved) == effective_everywhere(copied)
    assert definition(moved.state.entries(feature, src.key), True) is None


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["define", "undefine", "row", "copy", "move"]),
            st.sampled_from(MODES),
            st.sampled_from(MODES),
            st.sampled_from(KEYS),
        ),
        max_size=12,
    )
)
def test_empty_is_not_absent_through_every_operation(ops: list[Any]) -> None:
    """A model keeps, per mode, None (absent) or the rows; the store must agree."""
    r = build([])
    model: dict[Mode, dict[str, Any] | None] = {m: None for m in MODES}
    for op, a, b, key in ops:
        try:
            if op == "define":
                r.edit(lambda ed, a=a: ed.define("unsubscribe", a, Start.EMPTY))
                model[a] = {}
            elif op == "undefine":
                r.edit(lambda ed, a=a: ed.undefine("unsubscribe", a))
                model[a] = None
            elif op == "row":
                r.edit(lambda ed, a=a, key=key: ed.set_row("unsubscribe", a, key, {"comment": ""}))
                model[a] = {**(model[a] or {}), key: {"comment": ""}}
            elif op in ("copy", "move"):
                r.edit(lambda ed, a=a, b=b, op=op: getattr(ed, op)("unsubscribe", a, b))
                model[b] = dict(model[a] or {})
                if op == "move":
                    model[a] = None
        except InvalidSetting:
            continue
        for mode in MODES:
            got = definition(r.state.entries("unsubscribe", mode.key), True)
            assert got == model[mode], (op, mode)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(setting, max_size=8))
def test_flatten_preserves_the_leaving_machines_effective_config(
    settings_list: list[Any],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = standalone(Path(tmp), "m0.example.com", "SER-1")
        lifecycle.create_cluster(store, "test")
        add_members(store, {"m1.example.com": "G1", "m2.example.com": "G2"})
        s = session(store)
        s.set_record("sethostname", Mode.machine("m0.example.com"), {"hostname": "m0.example.com"})
        define_all(s, settings_list)
        s.commit("settings")
        before = layers.effective_values(store.state, CATALOGUE, "m0.example.com")
        lifecycle.flatten(store)
        assert layers.cluster_name(store.state) is None
        assert layers.effective_values(store.state, CATALOGUE, "m0.example.com") == before
        store.close()
