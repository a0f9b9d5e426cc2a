"""Cross-node checks before a takeover, compared by clustercheck on real daemons.

Each member reads its own account files (``passwd_file`` / ``group_file``), data
directory and interfaces; the checks are declared in one member's ``clusterd.toml`` or
another's, and clustercheck, run over the real ``ssh`` client on a member that declares
none, names the member that differs.  The address check runs in network namespaces made
for it (each member holds its own address only).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import netns_faults
from clusterd.core.errors import ConfigError
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import config as cfg
from clusterd.node import identity


def accounts(root: Path, name: str, uid: int, groups: dict[str, int]) -> dict[str, str]:
    passwd, group = root / f"{name}.passwd", root / f"{name}.group"
    passwd.write_text(f"root:x:0:0:root:/root:/bin/sh\npostfix:x:{uid}:{uid}::/:/bin/false\n")
    group.write_text("".join(f"{g}:x:{i}:\n" for g, i in groups.items()))
    return {"passwd_file": str(passwd), "group_file": str(group)}


def clustercheck(m: Machine, prefix: list[str] | None = None) -> dict[str, Any]:
    done = subprocess.run([*(prefix or []), *identity.local_ssh(m.config, "clustercheck --json")],
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def node_facts(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{f['check']} {f['name']}": f for f in found["facts"] if f["kind"] == "node"}


def test_clustercheck_names_the_member_that_differs(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    each = {
        0: {**accounts(files, "m0", 107, {"postdrop": 110}),
            "check_users": ["postfix"], "check_groups": ["postdrop"]},
        1: accounts(files, "m1", 107, {"other": 110}),
        2: {**accounts(files, "m2", 108, {"postdrop": 110}), "check_paths": ["spool"]},
    }  # fmt: skip
    with Testbed(tmp_path / "bed", 3, ping=0.5, each=each) as bed:
        a, b, c = bed.machines
        for m in (a, b):
            (m.dir / "spool").mkdir()
        bed.start()
        bed.wait(bed.linked, what="linked")
        found = clustercheck(b)  # b declares nothing: the checks come from a and c
        facts = node_facts(found)
        assert set(facts) == {"users postfix", "groups postdrop", "paths spool"}, facts
        assert facts["users postfix"]["ids"] == {"107": [a.hostname, b.hostname],
                                                 "108": [c.hostname]}  # fmt: skip
        assert f"id 108 on {c.hostname}" in facts["users postfix"]["message"]
        assert facts["groups postdrop"]["ids"]["none"] == [b.hostname]
        assert facts["paths spool"]["members"] == [c.hostname]
        text = subprocess.run(identity.local_ssh(a.config, "clustercheck"), capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        assert text.returncode == 1
        assert f"Path spool is missing on {c.hostname}" in text.stdout
        # Fixed on the machines themselves: read again at the next check.
        accounts(files, "m2", 107, {"postdrop": 110})
        accounts(files, "m1", 107, {"postdrop": 110})
        (c.dir / "spool").mkdir()
        found = clustercheck(b)
        assert node_facts(found) == {} and found["facts"] == []


def test_unreadable_account_file_is_said_not_hidden(tmp_path: Path) -> None:
    each = {0: {"check_users": ["postfix"], "passwd_file": str(tmp_path / "missing")}}
    with Testbed(tmp_path / "bed", 2, ping=0.5, each=each) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        b = bed[1]
        facts = [f for f in clustercheck(b)["facts"] if f["kind"] == "node"]
        assert any(f"cannot read {tmp_path / 'missing'}" in f["message"] for f in facts)


def test_a_check_that_is_not_an_address_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"check_addresses: .*'mail\.example\.com' is not an IP"):
        cfg.parse({"hostname": "a.example.com", "serial": "S1",
                   "check_addresses": ["mail.example.com"]}, tmp_path, "clusterd.toml")  # fmt: skip
    with pytest.raises(ConfigError, match="check_paths"):
        cfg.parse({"hostname": "a.example.com", "serial": "S1",
                   "check_paths": ["x"] * 65}, tmp_path, "clusterd.toml")  # fmt: skip


def test_an_address_assigned_on_one_member_only(tmp_path: Path) -> None:
    why = netns_faults.requirements()
    if why:
        pytest.skip(f"network namespaces: {why}")
    net = netns_faults.Net(2, tag=f"cdc{tmp_path.name[-6:]}")
    try:
        net.up()
        bed = netns_faults.NsTestbed(tmp_path, net, ping=0.5)
        a, b = bed.machines
        a.config = cfg.save(a.config, check_addresses=[net.address(0), "127.0.0.1"])
        try:
            bed.start(timeout=60)
            bed.wait(bed.linked, timeout=60, what="linked")
            found = clustercheck(b, ["ip", "netns", "exec", net.ns(1)])
            facts = node_facts(found)
            assert set(facts) == {f"addresses {net.address(0)}"}, facts  # 127.0.0.1: both
            assert facts[f"addresses {net.address(0)}"]["members"] == [b.hostname]
        finally:
            bed.stop()
    finally:
        net.down()


def test_a_members_bad_checks_query_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Through the mesh, as a member would ask: malformed or oversized lists are refused
    with the reason, and the asked member goes on."""
    with Testbed(tmp_path, 2, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines

        def ask(args: Any) -> dict[str, Any]:
            return a.ask({"op": "query", "peer": b.serial, "kind": "checks", "args": args})

        assert "paths: a list of at most 64 names" in ask({"paths": ["x"] * 65})["error"]
        assert "users: a list" in ask({"users": "root"})["error"]
        assert "1 to 4096 characters" in ask({"groups": ["g" * 5000]})["error"]
        good = ask({"users": ["root"], "paths": ["/"], "addresses": ["127.0.0.1", "nope"]})
        assert good["ok"], good
        assert good["body"]["users"] == {"root": 0}
        assert good["body"]["paths"] == {"/": True}
        assert good["body"]["addresses"] == {"127.0.0.1": True, "nope": False}
        assert bed.linked()
