"""``watch``: this machine's effective changes as JSON lines, on the machine
(``clusterd watch``) and over SSH (``ssh HOST 'watch --json'``), for a read-only user
too; ``--since`` resumes without a gap or a repeat, also across a restart; a version
the journal no longer holds is refused; a client that stops reading is dropped."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from clusterd.services.journal import Compacted, Journal, Reader
from tests.test_security_roles import add_users

UNSUB = {"do": "set_row", "feature": "unsubscribe", "mode": "cluster"}


def unsubscribe(m: Machine, *addresses: str) -> None:
    m.edit(*[{**UNSUB, "row": a, "value": {"comment": "w"}} for a in addresses])


class Lines:
    """A watcher's output, read as it comes (from the pipe itself: a buffered reader
    would hold lines that ``select`` no longer sees)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)  # fmt: skip
        self.buffer = b""

    def take(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < n:
            left = deadline - time.monotonic()
            assert left > 0, f"not {n} lines in time: {self.buffer!r}"
            if select.select([fd], [], [], left)[0]:
                data = os.read(fd, 65536)
                if not data:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"the watcher ended: {self.buffer!r} {err!r}")
                self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n", n)
        if len(lines) < n:  # (exactly n lines and nothing after them)
            lines, self.buffer = [*lines, self.buffer], b""
        return [json.loads(line) for line in lines[:n]]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def local(m: Machine, *args: str) -> list[str]:
    return [sys.executable, "-m", "clusterd", "watch", "--data-dir", str(m.dir), *args]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 2) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        bed.machines[0].edit({"do": "define", "feature": "unsubscribe", "mode": "cluster",
                              "start": "empty"})  # fmt: skip
        yield bed


def test_watch_streams_resumes_without_gaps_and_filters(pair: Testbed) -> None:
    a, b = pair.machines
    pair.wait(lambda: "unsubscribe" in json.loads((b.dir / "effective.json").read_text())
              ["sources"], what="b published")  # fmt: skip
    head = json.loads((b.dir / "effective.json").read_text())["version"]
    watcher = Lines(local(b, "--feature", "unsubscribe"))
    time.sleep(0.5)  # (from now on: it read the head)
    try:
        unsubscribe(a, "one@example.com")
        unsubscribe(a, "two@example.com")
        seen = watcher.take(1)
        while "two@example.com" not in seen[-1]["value"]:  # (a burst may be one entry)
            seen += watcher.take(1)
    finally:
        watcher.close()
    first, second = seen[0], seen[-1]
    assert all(e["feature"] == "unsubscribe" and e["mode"] == "cluster" for e in seen)
    assert second["commit"] == f"SER-000:{a.status()['vv']['SER-000']}"
    assert set(second["value"]) == {"one@example.com", "two@example.com"}
    assert head < first["version"] <= second["version"]
    # Everything after the head, every feature: versions one by one, ending at second's.
    resumed = Lines(local(b, "--since", str(head)))
    try:
        every = resumed.take(second["version"] - head)
    finally:
        resumed.close()
    assert [e["version"] for e in every] == list(range(head + 1, second["version"] + 1))
    # A restart of b repeats nothing: resuming after the last version sees the next only.
    b.stop()
    b.start()
    pair.wait(pair.linked, what="linked again")
    after = Lines(local(b, "--since", str(second["version"])))
    try:
        unsubscribe(a, "three@example.com")
        (third,) = after.take(1)
    finally:
        after.close()
    assert third["version"] == second["version"] + 1
    assert "three@example.com" in third["value"]


def test_watch_over_ssh_for_a_read_only_user(pair: Testbed, tmp_path: Path) -> None:
    a, b = pair.machines
    keys = add_users(a, tmp_path, {"rita": "read-only"})
    pair.wait(pair.converged, what="users everywhere")
    argv = identity.local_ssh(b.config, "watch --json --feature unsubscribe --since 0")
    argv[argv.index("-i") + 1] = str(keys["rita"])
    argv[-2] = argv[-2].replace("admin@", "rita@")
    watcher = Lines(argv)
    try:
        unsubscribe(a, "ssh@example.com")
        seen: list[dict[str, Any]] = []
        while not any("ssh@example.com" in (e["value"] or {}) for e in seen):
            seen += watcher.take(1)
    finally:
        watcher.close()
    versions = [e["version"] for e in seen]
    assert versions == sorted(set(versions)) and all(e["feature"] == "unsubscribe" for e in seen)
    # The users' passphrase hashes are not for a read-only user's eyes: "set".
    argv = identity.local_ssh(b.config, "watch --json --feature userconfig --since 0")
    argv[argv.index("-i") + 1] = str(keys["rita"])
    argv[-2] = argv[-2].replace("admin@", "rita@")
    watcher = Lines(argv)
    try:
        users = [watcher.take(1)[0]]
        while "rita" not in users[-1]["value"]:
            users += watcher.take(1)
    finally:
        watcher.close()
    hashes = {row["passphrase_hash"] for entry in users for row in entry["value"].values()}
    assert hashes == {"set"}, users
    stored = a.op("effective")["values"]["userconfig"]["rita"]["passphrase_hash"]
    assert stored.startswith("scrypt$") and stored not in json.dumps(users)
    bad = subprocess.run(identity.local_ssh(b.config, "watch --feature nosuch"),
                         capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)  # fmt: skip
    assert bad.returncode == 1 and "no feature 'nosuch'" in bad.stdout, bad.stdout
    hostile_lines = (
        "watch --since abc",
        "watch --feature",
        "watch --since -1",
        "watch --since 1 --bogus",
        "target rollback x y",
        "target explode",
    )
    for hostile in hostile_lines:
        refused = subprocess.run(identity.local_ssh(b.config, hostile), capture_output=True,
                                 text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        assert refused.returncode == 2 and "Usage:" in refused.stdout, (hostile, refused.stdout)
        assert "Traceback" not in refused.stdout + refused.stderr
    # A read-only user may read the targets, not roll them back or force them.
    for line, words in (("target rollback postfix", "may not roll a target back"),
                        ("target force postfix", "may not force a target")):  # fmt: skip
        as_rita = identity.local_ssh(b.config, line)
        as_rita[as_rita.index("-i") + 1] = str(keys["rita"])
        as_rita[-2] = as_rita[-2].replace("admin@", "rita@")
        done = subprocess.run(as_rita, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        assert done.returncode == 1 and f"rita (read-only) {words}" in done.stdout, done.stdout
    as_rita = identity.local_ssh(b.config, "target status --json")
    as_rita[as_rita.index("-i") + 1] = str(keys["rita"])
    as_rita[-2] = as_rita[-2].replace("admin@", "rita@")
    done = subprocess.run(as_rita, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout) == {}, done.stdout


def test_a_compacted_version_is_refused_and_the_journal_stays_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "effective.log", keep=10)
    for i in range(25):
        journal.append([{"feature": "settz", "value": i, "mode": "cluster", "commit": None}])
    assert journal.head == 25 and journal.lines <= 20
    with pytest.raises(Compacted, match="no longer in the journal"):
        Reader(tmp_path / "effective.log", 1).poll()
    reader = Reader(tmp_path / "effective.log", journal.head - 3)
    assert [e["version"] for e in reader.poll()] == [23, 24, 25]
    journal.append([{"feature": "settz", "value": 99, "mode": None, "commit": None}] * 8)
    assert [e["version"] for e in reader.poll()] == list(range(26, 34))  # across a rewrite
    journal.append([{"feature": "settz", "value": 9, "mode": None, "commit": None}] * 20)
    with pytest.raises(Compacted):  # fell behind by more than the journal keeps
        reader.poll()
    assert Journal(tmp_path / "effective.log").head == 53  # read back at start
    done = subprocess.run([sys.executable, "-m", "clusterd", "watch", "--data-dir",
                           str(tmp_path), "--since", "0"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "not a clusterd data directory" in done.stderr


async def test_a_watcher_that_stops_reading_is_dropped_and_told_where_to_resume(
    tmp_path: Path,
) -> None:
    """Over SSH, a client that reads nothing while more than its window waits: dropped
    after ``watch_unread_drop``, with the version to resume from; the node answers all
    along."""
    import asyncio

    import asyncssh

    with Testbed(tmp_path, 1, watch_unread_drop=1.0) as bed:
        bed.start()
        (m,) = bed.machines
        m.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        big = "x" * 180
        for round_ in range(6):  # each entry carries the whole table: a few MB in all
            m.edit(*[{**UNSUB, "row": f"r{round_}-{i}@example.com", "value": {"comment": big}}
                     for i in range(1500)])  # fmt: skip
        key = asyncssh.read_private_key(m.config.admin_key)
        async with asyncssh.connect("127.0.0.1", m.config.ssh_port, username="admin",
                                    client_keys=[key], known_hosts=None) as conn:  # fmt: skip
            process = await conn.create_process("watch --json --since 0", encoding=None)
            process.stdout.channel.pause_reading()  # a client that reads nothing
            started = time.monotonic()
            while time.monotonic() - started < 4:
                asked = time.monotonic()
                assert (await asyncio.to_thread(m.status))["ok"]
                assert time.monotonic() - asked < 1.0
                await asyncio.sleep(0.2)
            process.stdout.channel.resume_reading()
            out = await asyncio.wait_for(process.stdout.read(), 30)
            await asyncio.wait_for(process.wait(), 30)
        lines = out.decode().splitlines()
        last = json.loads(lines[-1])
        assert last["error"] == "dropped: nothing read for 1 s", last
        resumed_from = int(last["resume"].rsplit(" ", 1)[1])
        assert resumed_from == json.loads(lines[-2])["version"]
        assert process.exit_status == 1
