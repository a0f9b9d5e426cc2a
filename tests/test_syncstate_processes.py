"""Sync states on real daemons, read through the real OpenSSH client: ``status --json``
and ``clusterconfig connstatus --json`` (and their text) say, per member, In Sync,
Disconnected, Refused, Changes Pending or Awaiting Initial Sync, with the action."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import config as cfg
from tests.test_shell_ssh import ssh

TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}
FIELDS = {"state", "text", "behind", "ahead", "reason", "action", "features", "features_unknown"}


def shown(m: Machine, command: str) -> Any:
    done = ssh(m, command)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in command else done.stdout


def syncs(m: Machine) -> dict[str, dict[str, Any]]:
    """Each member's sync state as ``m`` sees it (control socket: for waiting)."""
    return {p["hostname"]: p["sync"] for p in m.status()["peers"]}


def both(m: Machine) -> tuple[dict[str, Any], dict[str, Any]]:
    """``status --json`` and ``clusterconfig connstatus --json`` of ``m``, per member."""
    status = {p["hostname"]: p["sync"] for p in shown(m, "status --json")["peers"]}
    conn = shown(m, "clusterconfig connstatus --json")
    return status, {x["hostname"]: x["sync"] for x in conn["members"]}


def test_in_sync_then_one_disconnected_on_purpose(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        a.edit({**TZ, "value": {"timezone": "Europe/Paris"}})
        everywhere = lambda: all(  # noqa: E731
            s["state"] == "in_sync" for m in bed.machines for s in syncs(m).values()
        )
        bed.wait(everywhere, what="in sync everywhere")
        status, conn = both(a)
        assert status == conn  # the same fields, the same words
        for name in (b.hostname, c.hostname):
            assert set(status[name]) == FIELDS
            assert status[name] == {"state": "in_sync", "text": "In Sync", "behind": 0,
                                    "ahead": 0, "reason": None, "action": "None.",
                                    "features": {}, "features_unknown": 0}  # fmt: skip
        lines = shown(a, "status").splitlines()
        assert any(x.split()[:4] == [b.hostname, "up", "In", "Sync,"] for x in lines), lines

        assert ssh(c, "clusterconfig disconnect").returncode == 0
        bed.wait(lambda: syncs(a)[c.hostname]["state"] == "disconnected", what="a sees c go")
        # (b's ping confirms it has c's DISCONNECT commit too: until then, "1 ahead")
        bed.wait(lambda: syncs(a)[b.hostname]["state"] == "in_sync", what="b has it too")
        status, conn = both(a)
        assert status == conn
        gone = status[c.hostname]
        assert gone["text"] == "Disconnected (on purpose)"
        assert f"clusterconfig reconnect {c.hostname}" in gone["action"]
        assert (gone["behind"], gone["ahead"]) == (None, None)  # not known without a link
        assert status[b.hostname]["state"] == "in_sync"
        text = shown(a, "status")
        assert "Disconnected (on purpose)" in text and "action: Reconnect it" in text
        assert syncs(c)[a.hostname]["text"] == "Disconnected (this machine, on purpose)"

        assert ssh(c, "clusterconfig reconnect").returncode == 0
        bed.wait(everywhere, what="in sync again")


def test_another_software_version_is_refused_with_the_upgrade_action(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=0.5, software_version="1.0",
                 each={1: {"software_version": "2.0"}}) as bed:  # fmt: skip
        bed.start()
        a, b = bed.machines
        bed.wait(lambda: syncs(a)[b.hostname]["state"] == "refused", what="a refuses b")
        bed.wait(lambda: syncs(b)[a.hostname]["state"] == "refused", what="b is refused")
        for m, other in ((a, b), (b, a)):  # whichever dialled, each says why, once
            status, conn = both(m)  # (the reason's words follow the last dial: either way)
            assert conn[other.hostname]["state"] == "refused"
            assert set(conn[other.hostname]) == FIELDS
            refused = status[other.hostname]
            assert "software versions differ" in refused["reason"], refused
            why = refused["reason"].removeprefix(f"refused by {other.hostname}: ")
            assert refused["text"] == f"Refused ({why})"
            assert f"{a.hostname} runs 1.0" in why and f"{b.hostname} runs 2.0" in why
            assert "upgrade the older" in refused["action"] and "'upgrade'" in refused["action"]
            assert (refused["behind"], refused["ahead"]) == (None, None)
        assert "action: Make" in shown(b, "clusterconfig connstatus")


def test_a_stopped_member_has_changes_pending_until_it_runs_again(tmp_path: Path) -> None:
    """c stopped (SIGSTOP) while a commits: its link is still up (2.5 pings of 4 s
    before it counts as dropped), so a and b say what c lacks, by feature."""
    with Testbed(tmp_path, 3, ping=4.0) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        a.edit({**TZ, "value": {"timezone": "Europe/Paris"}})
        bed.wait(lambda: all(syncs(m)[c.hostname]["state"] == "in_sync" for m in (a, b)),
                 what="in sync")  # fmt: skip
        assert c.proc is not None
        c.proc.send_signal(signal.SIGSTOP)
        try:
            a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}})
            a.edit({"do": "define", "feature": "smtproutes", "mode": "cluster", "start": "empty"},
                   {"do": "set_row", "feature": "smtproutes", "mode": "cluster",
                    "row": "example.org", "value": {"destinations": [
                       {"host": "mx.example.org", "port": 25, "priority": 0}]}})  # fmt: skip
            bed.wait(lambda: syncs(b)[c.hostname]["ahead"] == 2, what="b has a's commits")
            status, conn = both(a)
            pending = status[c.hostname]
            assert pending["state"] == "changes_pending", pending
            assert (pending["text"], pending["behind"], pending["ahead"]) == (
                "Changes Pending (2 commits ahead)", 0, 2)  # fmt: skip
            assert pending["features"] == {"settz": {"ahead": 1}, "smtproutes": {"ahead": 1}}
            assert pending["features_unknown"] == 0
            assert f"{c.hostname} is fetching them from this machine" in pending["action"]
            assert conn[c.hostname]["state"] == "changes_pending"
            assert set(conn[c.hostname]) == FIELDS
            assert syncs(b)[c.hostname]["features"] == pending["features"]  # relayed commits
            text = shown(a, "status")
            assert "Changes Pending (2 commits ahead)" in text
            assert "ahead in: settz (1), smtproutes (1)" in text
        finally:
            c.proc.send_signal(signal.SIGCONT)
        bed.wait(lambda: all(syncs(m)[c.hostname]["state"] == "in_sync" for m in (a, b)),
                 what="in sync again")  # fmt: skip
        assert syncs(c)[a.hostname]["state"] == "in_sync"


def test_a_member_just_admitted_awaits_its_initial_sync(tmp_path: Path) -> None:
    """c joins through a, but no link can come up (``blocked_peers`` both ways): a and b
    know it is a member and have heard nothing from it.  Then c runs without the block,
    links and syncs."""
    blocked = {0: {"blocked_peers": ["SER-002"]}, 1: {"blocked_peers": ["SER-002"]},
               2: {"blocked_peers": ["SER-000", "SER-001"]}}  # fmt: skip
    with Testbed(tmp_path, 3, seed=False, ping=0.5, each=blocked) as bed:
        bed.start()
        a, b, c = bed.machines
        a.op("create", name="americas")
        b.join(a)
        bed.wait(lambda: bed.linked([a, b]), what="a and b linked")
        c.join(a)

        def settled(m: Machine, other: Machine) -> bool:  # (a's commits are pending on b
            seen = syncs(m)  # until a's next ping says it holds them)
            return c.hostname in seen and seen[other.hostname]["state"] == "in_sync"

        for m, other in ((a, b), (b, a)):
            bed.wait(lambda m=m, o=other: settled(m, o), what=f"{m.hostname} knows c")
        status, conn = both(b)
        assert status == conn
        waiting = status[c.hostname]
        assert waiting["state"] == "awaiting_initial_sync", waiting
        assert waiting["text"] == "Awaiting Initial Sync"
        assert "Wait for its first link" in waiting["action"]
        assert both(a)[0][c.hostname]["state"] == "awaiting_initial_sync"
        assert f"{c.hostname}" in shown(a, "status") and "Awaiting Initial Sync" in shown(
            a, "status"
        )
        assert syncs(c)[a.hostname]["state"] == "disconnected"  # c holds a's commits: joined

        c.stop()
        c.config = cfg.save(c.config, blocked_peers=[])
        c.start()  # it dials a and b (they still dial nobody: the links come in)
        bed.wait(lambda: all(syncs(m)[c.hostname]["state"] == "in_sync" for m in (a, b)),
                 what="c linked and in sync")  # fmt: skip
