"""Divergence found on its own, on real daemons (``docs/history.md``, section 3).

A member is stopped, a byte of one stored value flipped in its SQLite file (the
``entries`` table, its log left as it was), and started again.  Its hello carries its
state root: the members with the same commits narrow the difference with ``tree``
queries and name the unit, within two ping intervals of the link coming up.  The
flipped member finds its entry differs from its verified log: alert "corruption",
``status`` lists it, and it serves no sync (a member that must catch up takes the
commits from another).  The others find theirs intact: alert "divergence", and the
flipped member's sync state is Diverged.  clustercheck names it and exits 1.

A peer that answers the ``tree`` queries with garbage stops the narrowing with a log
line: nothing changes, no alert, the daemon serves on.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from clusterd.core.unitdigest import root_text
from clusterd.dev.testbed import Machine, Testbed
from clusterd.mesh.messages import (
    Answer,
    FrameReader,
    Goodbye,
    Hello,
    Message,
    Ping,
    Pong,
    Query,
    decode_body,
    encode,
)
from tests.peerplay import hello_as, link_as
from tests.test_shell_ssh import ssh

PING = 0.5
TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}


def flip(m: Machine) -> str:
    """'Tokyo' becomes 'Tokyu' in the stored value of settz at cluster mode: the unit."""
    with sqlite3.connect(m.config.database_url) as conn:
        [(key,)] = conn.execute(
            "SELECT key FROM entries WHERE feature = 'settz' AND mode = 'cluster'"
        ).fetchall()
        changed = conn.execute(
            "UPDATE entries SET value = replace(value, 'Tokyo', 'Tokyu') "
            "WHERE feature = 'settz' AND mode = 'cluster'"
        ).rowcount
    assert changed == 1
    return "settz@cluster" + (f"[{key}]" if key else "")


def alerts(m: Machine, kind: str) -> list[dict[str, Any]]:
    return [a for a in m.status()["alerts"] if a["kind"] == kind]


def link_up_at(m: Machine, other: Machine) -> float:
    """When ``m``'s live link to ``other`` came up (wall clock, as alerts are stamped)."""
    now = time.time()
    [peer] = [p for p in m.status()["peers"] if p["hostname"] == other.hostname]
    assert peer["state"] == "up"
    return float(now - peer["since_s"])


def vv(m: Machine) -> dict[str, int]:
    return dict(m.status()["vv"])


def test_a_byte_flipped_on_disk_is_named_within_two_pings(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, ping=PING) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="Tokyo")
        bed.wait(bed.converged, what="converged")
        time.sleep(4 * PING)  # rounds of pings with roots: equal everywhere, nothing said
        for m in bed.machines:
            s = m.status()
            assert s["corruption"] == [], s["corruption"]
            assert not [x for x in s["alerts"] if x["kind"] in ("corruption", "divergence")]
            assert {p["sync"]["state"] for p in s["peers"]} == {"in_sync"}

        c.stop()
        unit = flip(c)
        c.start()
        bed.wait(bed.linked, what="linked again")
        bed.wait(lambda: alerts(c, "corruption") and alerts(a, "divergence"), timeout=10.0,
                 what="the unit named")  # fmt: skip

        # c: corrupt there, within two pings of its link to a coming up
        [found] = [x for x in alerts(c, "corruption") if x["peer"] == a.hostname]
        assert unit in found["text"] and "differs from its verified log" in found["text"]
        took = found["at"] - link_up_at(c, a)
        print(f"corruption named {took * 1000:.0f} ms after the link came up (ping {PING} s)")
        assert 0 <= took <= 2 * PING, took
        corrupt = c.status()["corruption"]
        assert {(x["unit"], x["verdict"]) for x in corrupt} == {(unit, "differs")}
        assert {x["with"] for x in corrupt} <= {a.hostname, b.hostname}

        # a (and b): theirs is intact; c is Diverged
        [said] = [x for x in alerts(a, "divergence") if x["peer"] == c.hostname]
        assert unit in said["text"]
        assert said["at"] - link_up_at(a, c) <= 2 * PING
        bed.wait(lambda: alerts(b, "divergence"), what="b names it too")
        for m in (a, b):
            assert m.status()["corruption"] == []
            syncs = {p["hostname"]: p["sync"] for p in m.status()["peers"]}
            assert syncs[c.hostname]["state"] == "diverged"
            assert syncs[c.hostname]["text"] == f"Diverged ({unit})"
            assert "rejoin" in syncs[c.hostname]["action"]
            other = b if m is a else a
            assert syncs[other.hostname]["state"] == "in_sync"

        # what people read: status (text and --json), clustercheck
        shown = ssh(c, "status --json")
        assert json.loads(shown.stdout)["corruption"][0]["unit"] == unit
        text = ssh(c, "status").stdout
        assert f"Corruption: {unit} (differs;" in text and "serves no sync" in text
        assert "Diverged" in ssh(a, "status").stdout
        check = ssh(a, "clustercheck --json")
        assert check.returncode == 1, check.stdout
        facts = [f for f in json.loads(check.stdout)["facts"] if f["kind"] == "corruption"]
        assert {(f["member"], f["unit"], f["verdict"]) for f in facts} == {
            (c.hostname, unit, "differs")
        }
        assert f"Corruption on {c.hostname}" in ssh(a, "clustercheck").stdout

        # c serves no sync: b, behind and linked to c alone, gets nothing until a is back
        b.stop()
        a.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="Paris")
        bed.wait(lambda: vv(c) == vv(a), what="c has a's new commit")
        a.stop()
        b.start()
        bed.wait(lambda: bed.linked([b, c]), what="b and c linked")
        time.sleep(4 * PING)
        assert vv(b) != vv(c)  # asked c, which did not answer
        assert "not served: an entry here is corrupt" in c.tail(200)
        a.start()
        bed.wait(lambda: vv(b) == vv(a), what="b caught up from a")


# -- a peer's garbage -----------------------------------------------------------------------


async def _answer_trees(b: Machine, a: Machine, hello: Hello, body: Any) -> list[Message]:
    """Play ``b`` on a link to ``a``: hello, then every ``tree`` query answered with
    ``body``; what ``a`` sent until two ping intervals after the first answer."""
    async with link_as(b, a) as process:
        process.stdin.write(encode(hello))
        reader, got = FrameReader(), []
        deadline = time.monotonic() + 10
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(process.stdout.read(65536), left)
            except TimeoutError:
                break
            if not data:
                break
            for msg in [decode_body(frame) for frame in reader.feed(data)]:
                got.append(msg)
                if isinstance(msg, Query) and msg.kind == "tree":
                    process.stdin.write(encode(Answer(qid=msg.qid, ok=True, body=body)))
                    deadline = min(deadline, time.monotonic() + 2 * PING)
                elif isinstance(msg, Ping):  # stay linked: pong without news
                    pong = Pong(seq=msg.seq, vv=None, links=None)
                    process.stdin.write(encode(pong))
        return got


def test_a_peers_garbage_tree_answers_change_nothing(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=PING) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="Tokyo")
        bed.wait(bed.converged, what="converged")
        b.stop()
        before = a.status()
        hello = hello_as(b, a, sd=root_text(12345))  # the same commits, another root
        garbage = [
            {"root": "not a root", "children": {}},
            {"root": root_text(1), "children": {"settz": "zz"}},
            ["root", 1],
        ]
        for n, body in enumerate(garbage, 1):
            got = asyncio.run(_answer_trees(b, a, hello, body))
            asked = [m for m in got if isinstance(m, Query)]
            assert asked and asked[0].kind == "tree" and asked[0].args == {}, got
            assert not [m for m in got if isinstance(m, Goodbye)]  # the link stayed
            bed.wait(lambda n=n: a.tail(400).count("a malformed tree answer") >= n,
                     what="a says why it stopped")  # fmt: skip
            status = a.status()  # a serves on, and nothing changed
            assert status["corruption"] == [] and status["digest"] == before["digest"]
            assert not [x for x in status["alerts"] if x["kind"] in ("corruption", "divergence")]


# -- the scrub ------------------------------------------------------------------------------


def stored(m: Machine) -> str:
    with sqlite3.connect(m.config.database_url) as conn:
        [(value,)] = conn.execute(
            "SELECT value FROM entries WHERE feature = 'settz' AND mode = 'cluster'"
        ).fetchall()
    return str(value)


def test_a_byte_flipped_under_a_running_member_is_rewritten_from_memory(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=PING) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="Tokyo")
        bed.wait(bed.converged, what="converged")
        time.sleep(3 * PING)  # scrub passes over an intact store: nothing said
        assert not alerts(b, "corruption")
        flipped = time.time()
        unit = flip(b)  # under the running daemon (WAL: another connection may write)
        assert "Tokyu" in stored(b)
        bed.wait(lambda: alerts(b, "corruption"), timeout=10.0, what="the scrub names it")
        [found] = alerts(b, "corruption")
        assert unit in found["text"] and "changed on disk under the running member" in found["text"]
        print(f"scrub named it {(found['at'] - flipped) * 1000:.0f} ms after the flip")
        assert found["at"] - flipped <= 3 * PING + 1.0  # a pass every ping (a small store)
        bed.wait(lambda: "Tokyo" in stored(b), what="rewritten from memory")
        assert json.loads(stored(b)) == {"timezone": "Asia/Tokyo"}
        time.sleep(3 * PING)
        assert len(alerts(b, "corruption")) == 1  # fixed: not found again
        assert not alerts(a, "divergence") and b.status()["corruption"] == []
