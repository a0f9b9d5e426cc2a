"""A running daemon checkpoints its store from a thread, not from the links' loop.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit appends to the WAL without
syncing it; the WAL and the database are synced at checkpoints.  SQLite would run a
checkpoint (sync the WAL, write the pages back, sync the database) inside whichever
commit finds the WAL past 1,000 pages, on the event loop.  The daemon turns that off
and checkpoints from a thread once a second after writes (``Store.checkpoint``).  One
sync stays with the writer: the first commit after a complete checkpoint starts the WAL
again and syncs its header (one small write per checkpoint, ``docs/architecture.md``).

Proven on running daemons with strace: while one member commits a few hundred changes
and the other applies them, neither daemon's main thread (its event loop) syncs the
database file, it syncs the WAL at most once per checkpoint made elsewhere, and another
of its threads syncs the store.
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
SYNC = re.compile(r"^(\d+)\s+(?:fsync|fdatasync)\(\d+<([^>]*)>")


def traced(m: Machine, out: Path) -> subprocess.Popen[bytes]:
    assert m.proc is not None
    return subprocess.Popen(
        ["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o", str(out), "-p",
         str(m.proc.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def syncs(out: Path) -> dict[str, int]:
    """Syncs by the main thread (the loop) and by others, by file: "db", "wal", "other"."""
    pid = int(out.name.split(".")[0])
    found = {f"{who} {what}": 0 for who in ("loop", "thread") for what in ("db", "wal", "other")}
    for line in out.read_text().splitlines():
        match = SYNC.match(line)
        if match is None:
            continue
        name = Path(match[2]).name
        what = {"store.db": "db", "store.db-wal": "wal"}.get(name, "other")
        found[f"{'loop' if int(match[1]) == pid else 'thread'} {what}"] += 1
    return found


def test_no_fsync_on_the_event_loop_of_a_committing_or_applying_member(tmp_path: Path) -> None:
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
    counts = [syncs(out) for out in outs]
    for who, found in zip(("committing", "applying"), counts, strict=True):
        assert found["thread db"] > 0, f"the {who} member never checkpointed: {counts}"
        assert found["loop db"] == 0, f"the {who} member's loop checkpointed: {counts}"
        assert found["loop other"] == 0, f"the {who} member's loop synced a file: {counts}"
        assert found["loop wal"] <= found["thread db"], f"{who}: WAL syncs on the loop: {counts}"
    assert all(size < 64 << 20 for size in wal), wal  # checkpoints keep the WAL bounded
