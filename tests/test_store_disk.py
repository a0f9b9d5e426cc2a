"""A running daemon writes and checkpoints its store from threads, never from the
links' loop.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit appends to the WAL without
syncing it; the WAL and the database are synced at checkpoints.  SQLite would run a
checkpoint (sync the WAL, write the pages back, sync the database) inside whichever
commit finds the WAL past 1,000 pages.  The daemon turns that off and checkpoints from
a thread once a second after writes (``Store.checkpoint``); every batch's transaction,
a commit made here as well as commits from peers, is the store's writer's, a thread of
its own (``docs/store-writer.md``).

Proven on running daemons with strace: while one member commits a few hundred changes
and the other applies them, neither daemon's main thread (its event loop) writes or
syncs a store file, and other threads of both do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace is not installed (.ci/run does)"
)
CALL = re.compile(r"^(\d+)\s+(fsync|fdatasync|pwrite64|write)\(\d+<([^>]*)>")


def traced(m: Machine, out: Path) -> subprocess.Popen[bytes]:
    assert m.proc is not None
    return subprocess.Popen(
        ["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,pwrite64,write", "-o",
         str(out), "-s", "0", "-p",
         str(m.proc.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def store_io(out: Path) -> dict[str, int]:
    """Syncs and writes by the main thread (the loop) and by others, by file: "db",
    "wal", "other" (writes: of the store's files only)."""
    pid = int(out.name.split(".")[0])
    found = {f"{who} {call} {what}": 0 for who in ("loop", "thread") for call in ("sync", "write")
             for what in ("db", "wal", "other")}  # fmt: skip
    for line in out.read_text().splitlines():
        match = CALL.match(line)
        if match is None:
            continue
        call = "sync" if match[2] in ("fsync", "fdatasync") else "write"
        what = {"store.db": "db", "store.db-wal": "wal"}.get(Path(match[3]).name, "other")
        if call == "write" and what == "other":
            continue  # sockets, pipes, logs: not the store
        found[f"{'loop' if int(match[1]) == pid else 'thread'} {call} {what}"] += 1
    return found


def test_no_store_io_on_the_event_loop_of_a_committing_or_applying_member(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        a.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        assert a.proc is not None and b.proc is not None
        outs = [tmp_path / f"{m.proc.pid}.strace" for m in (a, b)]  # type: ignore[union-attr]
        tracers = [traced(m, out) for m, out in zip((a, b), outs, strict=True)]
        time.sleep(1.0)  # attached
        comment = "x" * 200
        for i in range(150):  # well past the WAL's 1,000 pages (4 MiB) on each member
            a.edit(*[{"do": "set_row", "feature": "unsubscribe", "mode": "cluster",
                      "row": f"r{i}-{j}@disk.example", "value": {"comment": comment}}
                     for j in range(20)])  # fmt: skip
        bed.wait(bed.converged, what="converged")
        time.sleep(2.5)  # the next checkpoints
        for tracer in tracers:
            tracer.terminate()
            tracer.wait(10)
        wal = [(m.dir / "store.db-wal").stat().st_size for m in (a, b)]
    counts = [store_io(out) for out in outs]
    for who, found in zip(("committing", "applying"), counts, strict=True):
        assert found["thread sync db"] > 0, f"the {who} member never checkpointed: {counts}"
        assert found["thread write wal"] > 0, f"the {who} member's writer never wrote: {counts}"
        on_loop = {k: v for k, v in found.items() if k.startswith("loop") and v}
        assert not on_loop, f"the {who} member's loop wrote or synced the store: {counts}"
    assert all(size < 64 << 20 for size in wal), wal  # checkpoints keep the WAL bounded
