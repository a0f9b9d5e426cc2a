"""Cross-feature references are checked per machine on its effective configuration."""

from __future__ import annotations

from pathlib import Path

from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from clusterd.core.references import unresolved, unresolved_everywhere
from tests.storehelp import ME, americas, session

LA, CHI = "losangeles.example.com", "chicago.example.com"
LISTENER = {
    "interface": "Data",
    "port": 25,
    "type": "public",
    "disclaimer_below": "footer",
    "rat": [{"recipient": "example.com", "action": "ACCEPT"}],
}


def test_a_cluster_listener_naming_a_machine_only_footer_is_unavailable_elsewhere(
    tmp_path: Path,
) -> None:
    store = americas(tmp_path)
    s = session(store)
    s.define("listenerconfig", Mode.cluster(), Start.EMPTY)
    s.set_row("listenerconfig", Mode.cluster(), "InboundMail", LISTENER)
    chicago = Mode.machine(CHI)
    s.define("textconfig", chicago, Start.EMPTY)
    s.set_row(
        "textconfig",
        chicago,
        "footer",
        {"type": "disclaimer", "encoding": "utf-8", "text": "Sent from Chicago"},
    )
    for machine in (CHI, LA):
        s.define("interfaceconfig", Mode.machine(machine), Start.EMPTY)
        s.set_row(
            "interfaceconfig",
            Mode.machine(machine),
            "Data",
            {"address": "127.0.0.3", "prefix": 8, "hostname": machine},
        )
    s.commit("listener")

    assert unresolved(store.state, store.catalogue, CHI) == []
    [la_problem] = unresolved(store.state, store.catalogue, LA)
    assert (la_problem.target, la_problem.name, la_problem.field) == (
        "textconfig",
        "footer",
        "disclaimer_below",
    )
    assert str(la_problem) == (
        "listenerconfig row 'InboundMail' (from Cluster) field 'disclaimer_below' names "
        "textconfig 'footer', which is unavailable on Machine losangeles.example.com"
    )
    ny = {(p.target, p.name) for p in unresolved(store.state, store.catalogue, ME)}
    assert ny == {("textconfig", "footer"), ("interfaceconfig", "Data")}  # no Data interface
    everywhere = unresolved_everywhere(store.state, store.catalogue, ME)
    assert sorted({p.machine for p in everywhere}) == [LA, ME]

    # The cure: move the footer up to the cluster; only the interface remains on newyork.
    s.move("textconfig", chicago, Mode.cluster())
    s.commit("footer for everyone")
    everywhere = unresolved_everywhere(store.state, store.catalogue, ME)
    assert [(p.machine, p.target) for p in everywhere] == [(ME, "interfaceconfig")]


def test_a_disclaimer_reference_needs_a_disclaimer_not_any_text(tmp_path: Path) -> None:
    store = americas(tmp_path)
    s = session(store)
    s.define("textconfig", Mode.cluster(), Start.EMPTY)
    s.set_row(
        "textconfig",
        Mode.cluster(),
        "footer",
        {"type": "notification", "encoding": "utf-8", "text": "not a disclaimer"},
    )
    s.define("listenerconfig", Mode.cluster(), Start.EMPTY)
    s.set_row("listenerconfig", Mode.cluster(), "InboundMail", LISTENER)
    s.commit("wrong kind of text")
    names = {(p.target, p.name) for p in unresolved(store.state, store.catalogue, CHI)}
    assert ("textconfig", "footer") in names
