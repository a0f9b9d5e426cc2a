"""``preview`` and ``explain`` write values whole (issue 17): the pending changes
themselves first, then per machine a field-by-field diff; long values are never cut, a
text's line breaks become continuation lines, secrets read "set".

In-process shells on the machines of ``tests.shellhelp`` (newyork.example.com in
``Main_Group``; losangeles.example.com in ``Paris``, in the ``americas`` cluster).
"""

from __future__ import annotations

import json

from clusterd.cli.difftext import diff
from clusterd.core.modes import Mode
from clusterd.schema.access import hash_passphrase
from tests.shellhelp import LA, NY, Term
from tests.test_shell_more import by_machine, committed, in_cluster_mode

SERVERS = [f"ntp{i:02}.time.example.com" for i in range(40)]  # 1000+ characters of JSON
SECRET = "    (a secret value changes: secrets are not shown)"


def pending_part(out: str) -> list[str]:
    """preview's text before its first machine."""
    lines = out.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("Machine "))]


async def test_a_pending_clusterset_copy_is_listed_even_without_effect(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok(f"clustermode machine {LA}")
    await committed(ny, "settz set timezone=Europe/Paris")
    await in_cluster_mode(ny)
    await ny.ok("settz clusterset copy group Paris")
    out = await ny.ok("preview")
    assert pending_part(out) == [
        "Pending changes:",
        "  settz at Group Paris: define",
        '  + timezone: "Asia/Tokyo"',
    ]
    assert by_machine(out) == {
        LA: [
            "  no effective change",
            f"  not affected by settz at Group Paris: its own setting at Machine {LA} overrides it",
        ],
        NY: ["  no effective change"],  # not in Paris
    }
    report = json.loads(await ny.ok("preview --json"))
    assert report["pending"] == [
        {
            "feature": "settz",
            "mode": "Group Paris",
            "what": "define",
            "row": None,
            "before": None,
            "after": {"timezone": "Asia/Tokyo"},
            "changed": True,
        }
    ]
    assert set(report) == {"pending", NY, LA}  # each machine's report as before
    assert report[LA]["shielded"] == [
        {"feature": "settz", "at": "Group Paris", "by": f"Machine {LA}"}
    ]


async def test_a_copy_onto_equal_settings_and_a_move_are_listed(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await ny.ok("clustermode group Paris")
    await committed(ny, "settz set timezone=Asia/Tokyo")
    await in_cluster_mode(ny)
    await ny.ok("settz clusterset copy group Paris")
    assert pending_part(await ny.ok("preview")) == [
        "Pending changes:",
        "  settz at Group Paris: set record",
        "    (the same as committed)",
    ]
    await ny.ok("clearchanges", "y")
    await ny.ok("clustermode group Paris")
    await ny.ok("settz clusterset move cluster")
    assert pending_part(await ny.ok("preview")) == [
        "Pending changes:",
        "  settz at Cluster: set record",
        "    (the same as committed)",
        "  settz at Group Paris: undefine",
        '  - timezone: "Asia/Tokyo"',
    ]


async def test_long_values_are_written_whole_in_preview_and_explain(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok(f"ntpconfig set servers='{json.dumps(SERVERS)}'")
    out = await ny.ok("preview")
    assert "..." not in out
    listed = [f'  +   - "{s}"' for s in SERVERS]
    assert pending_part(out) == [
        "Pending changes:",
        "  ntpconfig at Cluster: define",
        "  + servers:",
        *listed,
        "  + source_interface: null",
    ]
    changed = [
        "  ntpconfig:",
        "    servers:",
        '  -   - "pool.ntp.org"',
        *(f'  +   - "{s}"' for s in SERVERS),
    ]
    assert by_machine(out) == {NY: changed, LA: changed}
    await ny.ok("commit many servers")
    out = await ny.ok("explain ntpconfig")
    assert "..." not in out
    assert out.splitlines()[:3] == [
        f"NTP on {NY} (comes from Cluster):",
        "  servers:",
        f'    - "{SERVERS[0]}"',
    ]
    assert [f'      - "{s}"' for s in SERVERS] == [
        line for line in out.splitlines() if line.startswith("      - ")
    ]


async def test_a_table_row_edit_and_a_text_with_line_breaks(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(ny, "textconfig new footer type=disclaimer text=hello")
    await ny.ok("""textconfig edit footer type=disclaimer text='"Sent by us.\\nRead this."'""")
    await ny.ok("textconfig new header type=notification text=hi")
    out = await ny.ok("preview")
    assert pending_part(out) == [
        "Pending changes:",
        "  textconfig at Cluster: edit row footer",
        "    text:",
        '  -   "hello"',
        "  +   |",
        "  +     Sent by us.",
        "  +     Read this.",
        "  textconfig at Cluster: new row header",
        '  + type: "notification"',
        '  + encoding: "utf-8"',
        '  + text: "hi"',
    ]
    assert by_machine(out)[NY] == [
        "  textconfig:",
        "    footer:",
        "      text:",
        '  -     "hello"',
        "  +     |",
        "  +       Sent by us.",
        "  +       Read this.",
        "  + header:",
        '  +   type: "notification"',
        '  +   encoding: "utf-8"',
        '  +   text: "hi"',
    ]
    report = json.loads(await ny.ok("preview --json"))
    assert report["pending"][0]["after"]["text"] == "Sent by us.\nRead this."
    await ny.ok("commit texts")
    lines = (await ny.ok("explain textconfig")).splitlines()
    assert lines[:9] == [
        f"Text Resources on {NY} (comes from Cluster):",
        "  footer:",
        '    type: "disclaimer"',
        '    encoding: "utf-8"',
        "    text: |",
        "      Sent by us.",
        "      Read this.",
        "  header:",
        '    type: "notification"',
    ]


async def test_a_table_redefinition_lists_the_rows_it_drops(ny: Term) -> None:
    await in_cluster_mode(ny)
    await committed(
        ny, "textconfig new a type=disclaimer text=A", "textconfig new b type=disclaimer text=B"
    )
    await ny.ok("textconfig define empty")
    await ny.ok("textconfig new a type=disclaimer text=A")
    assert pending_part(await ny.ok("preview")) == [
        "Pending changes:",
        "  textconfig at Cluster: redefine",
        "  textconfig at Cluster: delete row b",
        '  - type: "disclaimer"',
        '  - encoding: "utf-8"',
        '  - text: "B"',
    ]


async def test_secrets_stay_masked(ny: Term) -> None:
    session = ny.shell.session
    hashed = hash_passphrase("bob's passphrase", n=2)
    session.set_row(
        "userconfig", Mode.cluster(), "bob", {"role": "admin", "passphrase_hash": hashed}
    )
    out = await ny.ok("preview")
    assert hashed not in out and "scrypt$" not in out
    assert pending_part(out)[1:] == [
        "  userconfig at Cluster: new row bob",
        '  + full_name: ""',
        '  + role: "admin"',
        '  + passphrase_hash: "set"',
    ]
    assert "scrypt$" not in await ny.ok("preview --json")
    await ny.ok("commit bob")
    session.set_row(
        "userconfig",
        Mode.cluster(),
        "bob",
        {"role": "admin", "passphrase_hash": hash_passphrase("another one", n=2)},
    )
    out = await ny.ok("preview")
    assert "scrypt$" not in out
    assert pending_part(out)[1:] == ["  userconfig at Cluster: edit row bob", SECRET]
    assert by_machine(out)[NY] == ["  userconfig:", SECRET]


def test_a_long_changed_value_goes_old_then_new_on_lines_of_its_own() -> None:
    old, new = "x" * 80, "y" * 80
    assert diff({"key": old, "n": 1}, {"key": new, "n": 2}) == [
        "    key:",
        f'  -   "{old}"',
        f'  +   "{new}"',
        "    n: 1 → 2",
    ]
    assert diff({"a": {"b": [1]}}, {"a": {"b": [1], "c": {}}}) == ["    a:", "  +   c: {}"]
    assert diff(None, "one\ntwo") == ["  + |", "  +   one", "  +   two"]
