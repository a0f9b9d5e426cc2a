"""The commit chain on real daemons.

* A member is stopped, one commit of its log edited in its SQLite file (a comment on
  one member, a written value on another), and started again: clustercheck, run on a
  third member through the real OpenSSH client, names the first broken link of each
  (member, origin, seq, "hash") and exits 1; commitdetail on the edited member says
  the commit was ALTERED there.
* A peer sends, over a real link, a commit whose signature is not its origin's, then
  one whose hash is not its content's: each is refused (goodbye "bad-commit", alert
  "bad commit" naming it), nothing is applied, the daemon serves on, and the real
  member links and converges afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import replace
from typing import Any

import asyncssh

from clusterd.core import chain
from clusterd.core.clock import pack
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit, CommitId, Seal, Unit, Write
from clusterd.dev.testbed import Machine, Testbed
from clusterd.mesh.messages import (
    CommitBody,
    CommitMsg,
    FrameReader,
    Goodbye,
    Hello,
    Message,
    decode_body,
    encode,
)
from clusterd.node.seal import MachineSealer
from clusterd.store.records import JsonCache, commit_row
from tests.peerplay import hello_as, link_as
from tests.test_shell_ssh import ssh

TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}


def edit_row(m: Machine, statement: str, *args: object) -> None:
    with sqlite3.connect(m.config.database_url) as conn:
        assert conn.execute(statement, args).rowcount == 1


def test_a_commit_edited_on_disk_is_named_by_clustercheck(tmp_path: Any) -> None:
    with Testbed(tmp_path, 3, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        paris = a.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="Paris")
        tokyo = a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="Tokyo")
        bed.wait(bed.converged, what="converged")
        clean = ssh(c, "clustercheck --json")
        assert clean.returncode == 0, clean.stdout
        chains = json.loads(clean.stdout)["chains"]
        assert set(chains) == {a.hostname, b.hostname, c.hostname}
        ours = [o for m in chains.values() for o in m["origins"].values()]
        assert all(o["broken"] is None and o["unverifiable"] == 0 for o in ours)
        first, second = (int(x["commit"].split(":")[1]) for x in (paris, tokyo))

        b.stop()  # its copy of a's Paris commit gets another comment
        edit_row(b, "UPDATE commits SET comment = 'not Paris' WHERE origin = ? AND seq = ?",
                 a.serial, first)  # fmt: skip
        c.stop()  # its copy of a's Tokyo commit another value
        edit_row(c, "UPDATE commits SET writes = replace(writes, 'Asia/Tokyo', 'Asia/Seoul') "
                 "WHERE origin = ? AND seq = ?", a.serial, second)  # fmt: skip
        b.start()
        c.start()
        bed.wait(bed.linked, what="linked again")

        found = ssh(a, "clustercheck --json")
        assert found.returncode == 1, found.stdout
        facts = [f for f in json.loads(found.stdout)["facts"] if f["kind"] == "chain"]
        assert [(f["member"], f["origin"], f["origin_serial"], f["seq"], f["what"])
                for f in facts] == [
            (b.hostname, a.hostname, a.serial, first, "hash"),
            (c.hostname, a.hostname, a.serial, second, "hash"),
        ]  # fmt: skip
        text = ssh(a, "clustercheck")
        assert text.returncode == 1
        assert (f"Commit chain broken on {b.hostname}: commit {a.serial}:{first} of "
                f"{a.hostname} fails its hash check") in text.stdout  # fmt: skip
        assert f"it was ALTERED on {c.hostname} since it was sealed" in text.stdout
        detail = ssh(b, "commitdetail 20")
        altered = [line for line in detail.stdout.splitlines() if "ALTERED" in line]
        assert altered[0].startswith(f"{a.serial}:{first} ") and "'not Paris'" in altered[0]
        assert "    Seal: ALTERED on this member: its row no longer gives its hash" in (
            detail.stdout
        )
        assert "ALTERED" not in ssh(a, "commitdetail 20").stdout  # a's own copy is intact


# -- a forged commit over the wire --------------------------------------------------------


async def _send(b: Machine, a: Machine, hello: Hello, commit: Commit) -> list[Message]:
    """Play ``b`` on a link to ``a`` (with ``b``'s machine key): hello, then ``commit``;
    what ``a`` sends until it says goodbye."""
    async with link_as(b, a) as process:
        process.stdin.write(encode(hello))
        reader, got, sent = FrameReader(), [], False
        while not any(isinstance(m, Goodbye) for m in got):
            data = await asyncio.wait_for(process.stdout.read(65536), 20)
            if not data:
                break
            got += [decode_body(body) for body in reader.feed(data)]
            if not sent and any(isinstance(m, Hello) for m in got):  # the link is up
                process.stdin.write(encode(CommitMsg(commit=CommitBody.of(commit))))
                sent = True
        return got


def forged(b: Machine, a: Machine, how: str) -> tuple[Hello, Commit]:
    """A hello as ``b`` and ``b``'s next commit, spoilt ``how`` ("signature": signed by
    another key; "hash": signed by b's key, but not over its content)."""
    store = b.store()
    try:
        vv = dict(a.status()["vv"])
        mine = [c for c in store.commit_log() if c.id.origin == b.serial]  # newest first
    finally:
        store.close()
    assert mine and mine[0].seal is not None
    seq, prev = mine[0].id.seq + 1, mine[0].seal.hash
    commit = Commit(CommitId(b.serial, seq), pack(time.time_ns() // 1_000_000 + 5), "mallory",
                    time.time(), "forged", vv,
                    (Write(Unit("settz", Mode.machine(b.hostname).key, ""),
                           {"timezone": "Asia/Pyongyang"}),))  # fmt: skip
    row = chain.Row(*commit_row(commit, JsonCache()))
    digest = chain.commit_hash(*row[:6], commit.context, prev, str(row.writes))
    if how == "signature":
        other = asyncssh.generate_private_key("ssh-ed25519")
        path = b.dir / "forger_key"
        other.write_private_key(path)
        seal = Seal(prev, digest, MachineSealer(path).sign(bytes.fromhex(digest)))
    else:
        wrong = chain.commit_hash(*row[:6], commit.context, prev, "[]")
        seal = Seal(prev, wrong, MachineSealer(b.config.machine_key).sign(bytes.fromhex(wrong)))
    return hello_as(b, a), replace(commit, seal=seal)


def test_a_forged_commit_over_the_wire_is_refused(tmp_path: Any) -> None:
    with Testbed(tmp_path, 2, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        b.edit({"do": "set_record", "feature": "settz", "mode": Mode.machine(b.hostname).key,
                "value": {"timezone": "Europe/Paris"}}, comment="b's own")  # fmt: skip
        bed.wait(bed.converged, what="converged")
        b.stop()
        digest = a.status()["digest"]
        for how in ("signature", "hash"):
            hello, commit = forged(b, a, how)
            got = asyncio.run(_send(b, a, hello, commit))
            [bye] = [m for m in got if isinstance(m, Goodbye)]
            assert bye.code == "bad-commit", bye
            assert f"commit {commit.id} does not verify: {how}:" in bye.reason
            status = a.status()  # (a serves on)
            assert status["vv"][b.serial] == commit.id.seq - 1 and status["digest"] == digest
            alerts = [x for x in status["alerts"] if x["kind"] == "bad commit"]
            assert alerts and f"commit {commit.id} does not verify: {how}:" in alerts[-1]["text"]
            assert alerts[-1]["peer"] == b.hostname
        b.start()
        bed.wait(bed.linked, what="linked again")
        b.edit({"do": "set_record", "feature": "settz", "mode": Mode.machine(b.hostname).key,
                "value": {"timezone": "Asia/Tokyo"}}, comment="b's real next")  # fmt: skip
        bed.wait(bed.converged, what="converged again")
        check = ssh(a, "clustercheck --json")
        assert check.returncode == 0, check.stdout
