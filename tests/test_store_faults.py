"""The store failing under a running member: PostgreSQL stopped, a full disk, kill -9.

Rule (``clusterd/store/store.py``): a batch whose transaction fails is undone in memory
(a peers' batch, written by the store's writer thread, after its merge).  A
write that fails changes nothing (state, version vector, pending changes); the user is
told "the store is unavailable: ...; nothing was committed"; commits from peers that
could not be written are not applied, so the version vector asks for them again once
the store is back.  After each fault: convergence, and every commit that was
acknowledged present everywhere.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.pghelp import PgServer

TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}
UNSUB = {"do": "set_row", "feature": "unsubscribe", "mode": "cluster"}
UNAVAILABLE = "the store is unavailable"


def zone(m: Machine) -> str:
    return str(m.op("effective")["values"]["settz"]["timezone"])


def ssh(m: Machine, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(identity.local_ssh(m.config, command), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def lines(m: Machine) -> int:
    return len((m.dir / "clusterd.log").read_text(errors="replace").splitlines())


@pytest.fixture
def on_postgres(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[Testbed, PgServer]]:
    """m0 keeps its store on PostgreSQL, m1 on SQLite; linked, settz defined."""
    with Testbed(tmp_path, 2, ping=0.5, each={0: {"database": pg_server.url}}) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, _ = bed.machines
        define = {"do": "define", "mode": "cluster"}
        a.edit({**define, "feature": "settz", "start": "defaults"},
               {**define, "feature": "unsubscribe", "start": "empty"})  # fmt: skip
        bed.wait(bed.converged, what="converged")
        yield bed, pg_server


@pytest.mark.postgres
def test_postgres_stopped_around_local_and_remote_commits(
    on_postgres: tuple[Testbed, PgServer],
) -> None:
    bed, pg = on_postgres
    a, b = bed.machines
    pg.stop()
    refused = a.refused("edit", edits=[{**TZ, "value": {"timezone": "Asia/Tokyo"}}])
    assert UNAVAILABLE in refused and "nothing was committed" in refused, refused
    done = ssh(a, "clustermode cluster; settz set timezone=Asia/Tokyo; commit from the shell")
    assert done.returncode == 1 and UNAVAILABLE in done.stdout, done.stdout
    assert "internal error" not in done.stdout
    assert zone(a) == "UTC"  # memory did not move ahead of the database
    b.edit({**TZ, "value": {"timezone": "Europe/Paris"}}, comment="while a's store is down")
    before = lines(a)
    time.sleep(3)
    assert lines(a) - before < 10, "the log churns while the store is down"
    status = a.status()
    assert status["store"]["ok"] is False and status["vv"] != b.status()["vv"]
    assert [x["kind"] for x in status["alerts"]].count("store unavailable") == 1
    pg.start()
    bed.wait(bed.converged, timeout=30, what="converged once the store is back")
    assert zone(a) == zone(b) == "Europe/Paris"
    # (memory converges when a merges b's commit; the store's writer then writes it)
    bed.wait(lambda: a.status()["store"]["ok"] is True, what="a's store available again")
    a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="after")  # a's next commit
    bed.wait(lambda: zone(b) == "Asia/Tokyo", what="a's next commit at b")


@pytest.mark.postgres
def test_killed_during_the_outage_it_converges_after(
    on_postgres: tuple[Testbed, PgServer],
) -> None:
    bed, pg = on_postgres
    a, b = bed.machines
    acknowledged = [b.edit({**UNSUB, "row": f"u{i}@example.com", "value": {}}) for i in range(3)]
    bed.wait(bed.converged, what="converged")
    pg.stop()
    a.refused("edit", edits=[{**UNSUB, "row": "lost@example.com", "value": {}}])
    acknowledged += [b.edit({**UNSUB, "row": f"v{i}@example.com", "value": {}}) for i in range(3)]
    a.kill()
    pg.start()
    a.start()
    bed.wait(bed.converged, timeout=30, what="converged after the restart")
    rows = set(a.op("effective")["values"]["unsubscribe"])
    assert rows == {f"{x}{i}@example.com" for x in "uv" for i in range(3)}
    assert len(acknowledged) == 6 and all(c["commit"] for c in acknowledged)
    a.edit({**UNSUB, "row": "after@example.com", "value": {}})
    bed.wait(lambda: "after@example.com" in b.op("effective")["values"]["unsubscribe"],
             what="a's commits accepted at b")  # fmt: skip


def test_a_full_disk_refuses_the_commit_and_changes_nothing(tmp_path: Path) -> None:
    """SQLite with a file size limit (RLIMIT_FSIZE): a commit too big for what is left
    fails, changes nothing; with room again, the next commit goes through."""
    with Testbed(tmp_path, 2, ping=0.5) as bed:
        a, b = bed.machines
        a.prefix = ["prlimit", "--fsize=2000000:unlimited"]  # (soft: it can be raised)
        bed.start()
        bed.wait(bed.linked, what="linked")
        big = [{**UNSUB, "row": f"user{i:05d}@example.com", "value": {"comment": "x" * 200}}
               for i in range(20000)]  # fmt: skip
        define: dict[str, Any] = {"do": "define", "feature": "unsubscribe", "mode": "cluster",
                                  "start": "empty"}  # fmt: skip
        before = a.status()["vv"]
        answer = a.ask({"op": "edit", "edits": [define, *big]}, timeout=120)
        assert answer["ok"] is False and UNAVAILABLE in answer["error"], answer
        assert a.status()["vv"] == before
        assert a.op("get", feature="unsubscribe", mode="cluster")["value"] is None
        assert a.proc is not None
        subprocess.run(["prlimit", "--pid", str(a.proc.pid), "--fsize=unlimited"], check=True)
        a.edit({**TZ, "value": {"timezone": "Asia/Tokyo"}}, comment="room again")
        bed.wait(bed.converged, what="converged")
        assert zone(b) == "Asia/Tokyo"
