"""Witnessing chain heads on real daemons (``docs/history.md``, section 2).

* A member is stopped, the last commits of another origin deleted from its SQLite log,
  and started again: the first member it links to raises "history went back" naming
  it, the origin and both seqs, within 2 pings of the link coming up; it then takes the
  commits back from them (what they wrote, which it still holds, is no loss).
* A member is restored from an older copy of its store and makes a commit of its own
  there: its seq N now has another hash than the one the others hold.  Started again,
  the others raise "fork" naming it, its origin and N, within 2 pings of the link
  coming up; ``status --json`` lists it and clustercheck exits 1 with the fact.
* A peer at the same vector with other heads that answers the ``heads`` query with
  garbage changes nothing on the member narrowing it (a log line, no alert), and a
  malformed ``heads`` query gets a clear error.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from clusterd.core.modes import Mode
from clusterd.dev.testbed import Machine, Testbed
from clusterd.mesh.messages import (
    Answer,
    FrameReader,
    Hello,
    Message,
    Query,
    decode_body,
    encode,
)
from tests.peerplay import hello_as, link_as
from tests.storehelp import session
from tests.test_shell_ssh import ssh

PING = 0.5
ZONES = ["Europe/Paris", "Asia/Tokyo", "America/Lima", "Africa/Cairo"]


def tz_at(m: Machine, zone: str) -> dict[str, Any]:
    """A write of one machine's own time zone (a unit no other commit here writes)."""
    mode = Mode.machine(m.hostname).key
    return {"do": "set_record", "feature": "settz", "mode": mode, "value": {"timezone": zone}}


def found(m: Machine, kind: str, peer: str) -> tuple[dict[str, Any], float] | None:
    """``m``'s alert ``kind`` about ``peer``, and when its link to ``peer`` came up (wall
    time, from the link's age in the same status)."""
    asked = time.time()
    s = m.status()
    alert = next((a for a in s["alerts"] if a["kind"] == kind and a["peer"] == peer), None)
    link = next(p for p in s["peers"] if p["hostname"] == peer)
    if alert is None or link["state"] != "up":
        return None
    return alert, asked - link["since_s"]


def wait_for(
    machines: list[Machine], kind: str, peer: str, timeout: float = 20.0
) -> tuple[Machine, dict[str, Any], float]:
    """The first of ``machines`` to raise ``kind`` about ``peer``, its alert and when its
    link came up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in machines:
            got = found(m, kind, peer)
            if got is not None:
                return m, *got
        time.sleep(0.05)
    raise AssertionError(f"no {kind} alert about {peer}: {machines[0].status()['alerts']}")


def copy_store(m: Machine, to: Path) -> None:
    to.mkdir()
    for suffix in ("", "-wal", "-shm"):
        src = Path(m.config.database_url + suffix)
        if src.exists():
            shutil.copy(src, to / src.name)


def restore_store(m: Machine, backup: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(m.config.database_url + suffix).unlink(missing_ok=True)
    for f in backup.iterdir():
        shutil.copy(f, Path(m.config.database_url).parent / f.name)


def test_a_truncated_log_is_reported_as_history_going_back(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, ping=PING) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        for m, zone in zip(bed.machines, ZONES, strict=False):
            a.edit(tz_at(m, zone), comment=f"{m.hostname} to {zone}")
        bed.wait(bed.converged, what="converged")
        head = a.status()["vv"][a.serial]
        time.sleep(3 * PING)  # b's pongs and pings have carried its heads at a:head

        b.stop()  # b's log loses a's last two commits (what they wrote stays)
        with sqlite3.connect(b.config.database_url) as conn:
            gone = conn.execute("DELETE FROM commits WHERE origin = ? AND seq > ?",
                                (a.serial, head - 2)).rowcount  # fmt: skip
            assert gone == 2
        b.start()

        # The first member it links to says so (and b takes the commits back from it at
        # once, so the next one may find b whole again).
        seen_by, alert, link_up = wait_for([a, c], "history went back", b.hostname)
        assert alert["text"] == (
            f"{b.hostname} advertised {a.hostname}'s commits up to {a.serial}:{head} and "
            f"now only up to {a.serial}:{head - 2}: its log lost commits (truncated or "
            "rewritten, a restored backup, or a power loss)"
        )
        took = alert["at"] - link_up
        print(f"history went back: reported by {seen_by.hostname} {took:.3f} s after the link")
        assert took <= 2 * PING, f"{seen_by.hostname} took {took:.3f} s"
        bed.wait(bed.converged, what="converged again")  # it took them back from the others
        assert b.status()["vv"][a.serial] == head
        assert b.status()["inconsistencies"] == []  # (what it held again is no loss)
        bed.wait(lambda: seen_by.status()["witness"] == [], what="heads agreeing again")
        again = [x for x in seen_by.status()["alerts"] if x["kind"] == "history went back"]
        assert again == [alert]  # once


def test_a_rewritten_tail_is_reported_as_a_fork(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, ping=PING) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        a.edit(tz_at(a, ZONES[0]), comment="one")
        b.edit(tz_at(c, ZONES[3]), comment="before the copy")
        bed.wait(bed.converged, what="converged")
        b.stop()
        copy_store(b, tmp_path / "backup")  # an older copy of b's store
        b.start()
        b.edit(tz_at(b, ZONES[1]), comment="the commit the others keep")
        bed.wait(bed.converged, what="converged")
        seq = b.status()["vv"][b.serial]
        time.sleep(3 * PING)

        b.stop()  # restored from the older copy, it makes another commit numbered seq
        restore_store(b, tmp_path / "backup")
        store = b.store()
        try:
            assert store.state.vv[b.serial] == seq - 1
            s = session(store)
            s.set_record("settz", Mode.machine(b.hostname), {"timezone": ZONES[2]})
            assert s.commit("made after the restore") is not None
            assert store.state.vv[b.serial] == seq
        finally:
            store.close()
        b.start()

        for seen_by in (a, c):
            _, alert, link_up = wait_for([seen_by], "fork", b.hostname)
            assert alert["text"].startswith(
                f"{b.hostname} holds another history of {b.hostname}: commit {b.serial}:{seq} "
                "has hash "
            ), alert["text"]
            took = alert["at"] - link_up
            print(f"fork: reported by {seen_by.hostname} {took:.3f} s after the link came up")
            assert took <= 2 * PING, f"{seen_by.hostname} took {took:.3f} s"
        [finding] = a.status()["witness"]
        assert (finding["kind"], finding["member"], finding["origin"], finding["seq"]) == (
            "fork", b.hostname, b.hostname, seq)  # fmt: skip
        checked = ssh(c, "clustercheck --json")
        assert checked.returncode == 1, checked.stdout
        facts = [f for f in json.loads(checked.stdout)["facts"] if f.get("seen_by")]
        assert {(f["seen_by"], f["member"], f["origin_serial"], f["seq"], f["what"])
                for f in facts} == {
            (a.hostname, b.hostname, b.serial, seq, "fork"),
            (c.hostname, b.hostname, b.serial, seq, "fork"),
            (b.hostname, a.hostname, b.serial, seq, "fork"),  # (b sees theirs differ too)
            (b.hostname, c.hostname, b.serial, seq, "fork"),
        }  # fmt: skip
        text = ssh(a, "status")
        assert f"Witnessed fork: {b.hostname} holds another history" in text.stdout


# -- a peer that answers garbage ------------------------------------------------------------


async def _play(b: Machine, a: Machine, hello: Hello, spoil: Any) -> list[Message]:
    """Play ``b`` on a link to ``a``: hello; ask ``a`` a malformed ``heads`` query, and
    answer its ``heads`` query with ``spoil``; what ``a`` sent until then."""
    async with link_as(b, a) as process:
        process.stdin.write(encode(hello))
        reader, got = FrameReader(), []
        ours = Query(qid=1, kind="heads", args={"origin": a.serial, "seqs": ["x"]})
        while not any(isinstance(m, Answer) for m in got) or not any(
            isinstance(m, Query) for m in got
        ):
            data = await asyncio.wait_for(process.stdout.read(65536), 20)
            assert data, got
            for m in (decode_body(body) for body in reader.feed(data)):
                got.append(m)
                if isinstance(m, Hello):
                    process.stdin.write(encode(ours))
                if isinstance(m, Query) and m.kind == "heads":
                    process.stdin.write(encode(Answer(qid=m.qid, ok=True, body=spoil)))
        await asyncio.sleep(2 * PING)  # (a reads the answer)
        return got


def test_a_peer_answering_garbage_changes_nothing(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=PING) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        a.edit(tz_at(a, ZONES[0]), comment="one")
        bed.wait(bed.converged, what="converged")
        b.stop()
        before = a.status()
        hello = hello_as(b, a, hd="AAAAAAAAAAA")  # the same vector, other heads
        for spoil in ({"heads": {a.serial: ["x", None]}}, ["garbage"]):
            got = asyncio.run(_play(b, a, hello, spoil))
            [answer] = [m for m in got if isinstance(m, Answer)]
            assert not answer.ok and str(answer.body).startswith("bad heads query: seqs:")
            status = a.status()  # a serves on, nothing changed, no fork
            assert (status["vv"], status["digest"]) == (before["vv"], before["digest"])
            assert not [x for x in status["alerts"] if x["kind"] == "fork"]
            assert status["witness"] == []
        log = (a.dir / "stderr.log").read_text()
        assert f"witnessing: {b.hostname} gave a bad heads answer (head of " in log
        assert f"witnessing: {b.hostname} gave a bad heads answer (no heads in it)" in log
