"""Real daemons as separate processes on 127.0.0.1, talking SSH to each other."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from clusterd.dev.testbed import Machine, Testbed, running
from clusterd.node import identity

PING = 0.2
ROW = "unsubscribe"


def define(mode: str = "cluster") -> dict[str, Any]:
    return {"do": "define", "feature": ROW, "mode": mode, "start": "empty"}


def row(name: str, comment: str = "", mode: str = "cluster") -> dict[str, Any]:
    return {
        "do": "set_row",
        "feature": ROW,
        "mode": mode,
        "row": name,
        "value": {"comment": comment},
    }


def rows(m: Machine) -> dict[str, Any]:
    return m.ask({"op": "get", "feature": ROW, "mode": "cluster"})["value"] or {}


def alerts(m: Machine, kind: str) -> list[str]:
    return [a["text"] for a in m.status()["alerts"] if a["kind"] == kind]


def test_three_members_link_once_per_pair_and_replicate(tmp_path: Path) -> None:
    with running(tmp_path, 3, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        for m in bed.machines:
            s = m.status()
            assert s["links"] == 2, s
            assert all(p["route"] == "direct" for p in s["peers"])
        bed[1].edit(define(), row("a@x.example", "from m1"))
        bed.wait(lambda: all("a@x.example" in rows(m) for m in bed.machines), what="commit")
        assert bed.converged()
        cli = subprocess.run(
            [sys.executable, "-m", "clusterd", "status", "--json", "--data-dir", str(bed[0].dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        status = json.loads(cli.stdout)
        assert {p["hostname"] for p in status["peers"]} == {"m1.example.com", "m2.example.com"}
        assert status["vv"]["SER-001"] == 1


def test_disconnected_members_edit_alone_and_catch_up_on_reconnect(tmp_path: Path) -> None:
    with running(tmp_path, 3, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        bed[0].edit(define(), row("shared@x.example", "base"))
        bed.wait(bed.converged, what="base commit")
        for m in (bed[1], bed[2]):
            assert m.ask({"op": "disconnect"})["ok"]
        bed.wait(lambda: bed[1].status()["links"] == 0 and bed[2].status()["links"] == 0)
        assert bed[0].status()["peers"][0]["state"] == "disconnected"
        # Concurrent edits: the same row on both, and one row each.
        bed[1].edit(row("shared@x.example", "m1 version"), row("only1@x.example"))
        time.sleep(0.01)
        bed[2].edit(row("shared@x.example", "m2 version"), row("only2@x.example"))
        bed[0].edit(row("from0@x.example"))
        time.sleep(3 * PING)
        assert "from0@x.example" not in rows(bed[1])  # nothing was exchanged
        assert "only1@x.example" not in rows(bed[0])
        for m in (bed[1], bed[2]):
            assert m.ask({"op": "reconnect"})["ok"]
        bed.wait(bed.linked, what="links after reconnect")
        bed.wait(bed.converged, what="catch-up")
        final = rows(bed[0])
        assert {"only1@x.example", "only2@x.example", "from0@x.example"} <= set(final)
        assert final["shared@x.example"]["comment"] == "m2 version"  # the later write wins
        lost = bed[0].status()["inconsistencies"]
        assert [x["unit"] for x in lost] == ["unsubscribe@cluster[shared@x.example]"]
        assert lost[0]["lost"].startswith("SER-001:")
        assert bed[2].status()["inconsistencies"] == lost  # recorded the same everywhere


def test_a_member_behind_a_truncated_log_takes_a_state_transfer(tmp_path: Path) -> None:
    """b misses commits that a's log then drops: on reconnecting it takes a's whole
    state.  The state holds what the cluster's creators wrote while standalone (their
    users at machine level, hidden by the reset that creating the cluster wrote): that is
    history, and the transfer is taken, not refused over it."""
    with running(tmp_path, 2, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        a, b = bed.machines
        assert b.ask({"op": "disconnect"})["ok"]
        a.edit(define(), row("after@x.example", "while b was away"))
        assert a.ask({"op": "truncate", "keep": 0})["ok"]
        assert b.ask({"op": "reconnect"})["ok"]
        bed.wait(bed.converged, what="b caught up by a state transfer")
        assert "after@x.example" in rows(b)
        text = (b.dir / "clusterd.log").read_text()
        assert "state transfer from" in text and "ALERT" not in text, text[-2000:]


def test_a_member_killed_during_a_stream_of_commits_catches_up(tmp_path: Path) -> None:
    with running(tmp_path, 3, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        bed[0].edit(define())
        stop = threading.Event()
        made: list[str] = []

        def stream() -> None:
            i = 0
            while not stop.is_set():
                made.append(bed[0].edit(row(f"r{i}@x.example"))["commit"])
                i += 1

        writer = threading.Thread(target=stream)
        writer.start()
        try:
            time.sleep(0.5)
            bed[2].kill()
            time.sleep(0.5)
            bed[2].start()
            time.sleep(0.5)
        finally:
            stop.set()
            writer.join()
        assert len(made) > 20
        last = int(made[-1].split(":")[1])
        bed.wait(lambda: bed[2].status()["vv"].get("SER-000") == last, what="catch-up")
        bed.wait(bed.converged, what="convergence")  # member 1 may still be applying
        assert len(rows(bed[2])) == len(made)


def test_relays_through_a_member_when_a_direct_link_is_blocked(tmp_path: Path) -> None:
    bed = Testbed(tmp_path, 3, ping=PING)
    _block(bed[0], bed[2].serial)  # a firewall between m0 and m2, both ways
    _block(bed[2], bed[0].serial)
    with bed:
        bed.start()
        pair = [bed[0], bed[1]], [bed[1], bed[2]]
        bed.wait(lambda: all(bed.linked(p) for p in pair), what="links")
        for a, b in ((bed[0], bed[2]), (bed[2], bed[0])):  # each learns m1's links by ping
            bed.wait(lambda a=a, b=b: _route(a, b.hostname) == "via m1.example.com", what="route")
        started = time.monotonic()
        bed[0].edit(define(), row("relayed@x.example"))
        bed.wait(lambda: "relayed@x.example" in rows(bed[2]), what="relayed commit")
        assert time.monotonic() - started < 5 * PING
        answer = bed[0].ask({"op": "query", "peer": bed[2].serial, "kind": "digest"})
        assert answer["ok"] and answer["body"]["digest"] == bed[2].status()["digest"]


def _block(m: Machine, serial: str) -> None:
    path = m.dir / "clusterd.toml"
    path.write_text(path.read_text() + f'blocked_peers = ["{serial}"]\n')


def _route(m: Machine, hostname: str) -> str | None:
    return next(p["route"] for p in m.status()["peers"] if p["hostname"] == hostname)


def test_different_software_versions_are_refused_with_the_reason(tmp_path: Path) -> None:
    bed = Testbed(tmp_path, 2, ping=PING)
    with bed:
        bed[0].start()
        bed[1].start("--software-version", "9.9.9")
        reason = "software versions differ"
        bed.wait(lambda: any(reason in t for t in alerts(bed[0], "version mismatch")))
        bed.wait(lambda: any(reason in t for t in alerts(bed[1], "version mismatch")))
        for m in bed.machines:
            peer = m.status()["peers"][0]
            assert peer["state"] == "refused" and "9.9.9" in peer["reason"], peer
        assert bed[0].status()["links"] == 0


def test_a_peer_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    """A stranger in m1's place (neither of its keys is in membership) gets no link."""
    bed = Testbed(tmp_path, 2, ping=PING)
    with bed:
        for key in (bed[1].config.machine_key, bed[1].config.host_key):
            key.unlink()
            key.with_suffix(".pub").unlink()
            asyncssh.generate_private_key("ssh-ed25519").write_private_key(key)
        bed.start()
        refused = "refused our machine key"
        bed.wait(lambda: any(refused in t for t in alerts(bed[1], "authentication error")))
        stranger = "not a member's machine key"
        bed.wait(lambda: any(stranger in t for t in alerts(bed[0], "authentication error")))
        bed.wait(
            lambda: any(
                "not the one membership records" in t
                for t in alerts(bed[0], "authentication error")
            ),
            what="m0's dial refusing the stranger's host key",
        )
        time.sleep(3 * PING)  # both keep trying; neither ever links
        assert bed[0].status()["links"] == 0 and bed[1].status()["links"] == 0


def _ssh_args(m: Machine, key: Path, port: int) -> list[str]:
    return [
        "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=5",
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_ccs_serves_the_cluster_only(tmp_path: Path) -> None:
    with running(tmp_path, 2, ping=PING, ccs=True) as bed:
        bed.wait(bed.linked, what="links over CCS")
        port = bed[0].config.ccs_port
        key = bed[1].config.machine_key  # a real member's key: only the service is refused
        args = _ssh_args(bed[0], key, port)
        target = "clusterd@127.0.0.1"

        def ssh(
            *extra: str, tool: str = "ssh", stdin: str = ""
        ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [tool, *args, *extra], input=stdin, capture_output=True, text=True, timeout=30
            )

        shell = ssh("-tt", target, stdin="id\nexit\n")
        assert shell.returncode != 0 and "uid=" not in shell.stdout
        exec_ = ssh(target, "id")
        assert exec_.returncode != 0 and "uid=" not in exec_.stdout
        forward = ssh("-W", "127.0.0.1:22", target)
        assert forward.returncode != 0
        sftp_args = [a if a != "-p" else "-P" for a in args]
        sftp = subprocess.run(
            ["sftp", *sftp_args, "-b", "-", target], input="ls\n", capture_output=True, text=True
        )
        assert sftp.returncode != 0
        assert bed.linked()  # the cluster links are untouched
        log = (bed[0].dir / "clusterd.log").read_text()
        assert "refused a shell on the CCS port" in log
        assert "refused exec 'id' on the CCS port" in log
        assert "refused subsystem 'sftp' on the CCS port" in log


def test_a_large_state_transfer_is_taken_through_the_big_frame_path(tmp_path: Path) -> None:
    """8,000 rows: the transfer's frame is over 1 MiB, so the member that takes it
    decodes it in a thread (``mesh.member.BIG_FRAME``) and those that give it build and
    encode it in one.  Both a and c truncated their logs, so both offer b their state:
    b takes one, and the other once the first has brought everything is dropped."""
    with running(tmp_path, 3, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        a, b, c = bed.machines
        many = [row(f"u{i}@x.example") for i in range(8000)]
        a.edit(define(), *many)
        bed.wait(bed.converged, timeout=60, what="the rows everywhere")
        assert b.ask({"op": "disconnect"})["ok"]
        a.edit(row("after@x.example", "while b was away"))
        for m in (a, c):
            bed.wait(lambda m=m: "after@x.example" in rows(m), what="the row on a and c")
            assert m.ask({"op": "truncate", "keep": 0})["ok"]
        before = b.status()["traffic"]["bytes_in"]
        assert b.ask({"op": "reconnect"})["ok"]
        bed.wait(bed.converged, timeout=60, what="b caught up by a state transfer")
        assert len(rows(b)) == 8001 and "after@x.example" in rows(b)
        assert b.status()["traffic"]["bytes_in"] - before > 1024 * 1024
        text = (b.dir / "clusterd.log").read_text()
        assert len(re.findall(r"state transfer from \S+: \d+ commits", text)) == 1, text[-3000:]
        assert not re.search(r"ALERT (fork|bad commit|protocol error|divergence)", text), text


@pytest.mark.parametrize("size", [5, 2 * 1024 * 1024], ids=["small", "big"])
def test_garbage_on_a_link_drops_it_and_the_daemon_carries_on(tmp_path: Path, size: int) -> None:
    """A frame that is no message, small (decoded on the loop) or over 1 MiB (decoded
    in a thread): the link is dropped, with an alert, and replication goes on."""
    body = b"hello" if size == 5 else json.dumps({"type": "ping", "x": "A" * size}).encode()
    with running(tmp_path, 2, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        m0, m1 = bed[0], bed[1]

        async def send_garbage() -> None:
            key = asyncssh.read_private_key(m1.config.machine_key)
            async with asyncssh.connect(
                "127.0.0.1", m0.config.ssh_port, username="clusterd", client_keys=[key],
                known_hosts=None, agent_path=None, config=None,
            ) as conn:  # fmt: skip
                chan, _ = await conn.create_session(
                    asyncssh.SSHClientSession, subsystem="clusterd", encoding=None
                )
                chan.write(len(body).to_bytes(4, "big") + body)
                await asyncio.sleep(0.5)

        asyncio.run(send_garbage())
        bed.wait(lambda: alerts(m0, "protocol error"), what="protocol alert")
        said = alerts(m0, "protocol error")[0]
        assert ("malformed" in said or "JSON" in said) if size == 5 else "bad ping message" in said
        m0.edit(define(), row("after@x.example"))
        bed.wait(lambda: "after@x.example" in rows(m1), what="replication after the bad frame")
        assert m0.proc is not None and m0.proc.poll() is None


def test_sigterm_shuts_down_cleanly_and_peers_notice(tmp_path: Path) -> None:
    with running(tmp_path, 2, ping=PING) as bed:
        bed.wait(bed.linked, what="links")
        assert bed[1].stop() == 0
        bed.wait(lambda: bed[0].status()["peers"][0]["state"] == "down", what="peer down")
        # An orderly stop is logged, not raised: no "connection dropped" alert.
        assert "closed the link: the member is shutting down" in bed[0].tail(50)
        assert alerts(bed[0], "connection dropped") == []
        bed.wait(lambda: alerts(bed[0], "connection failure"), what="reconnect attempts")


def test_init_refuses_an_existing_machine_and_bad_settings(tmp_path: Path) -> None:
    identity.init(tmp_path / "a", "a.example.com", "SER-A", {})
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "clusterd",
            "init",
            "--data-dir",
            str(tmp_path / "a"),
            "--hostname",
            "a.example.com",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "already holds a machine" in bad.stderr
    worse = subprocess.run(
        [sys.executable, "-m", "clusterd", "init", "--data-dir", str(tmp_path / "b"),
         "--hostname", "b.example.com", "--ping-interval", "0.01"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert worse.returncode == 2 and "ping_interval" in worse.stderr
    assert not (tmp_path / "b").exists()


def test_trace_file_records_when_each_commit_became_durable(tmp_path: Path) -> None:
    """The benchmarks' probe: monotonic times of commit, apply and notes, per daemon."""
    with running(tmp_path, 2, ping=PING, trace_file="trace.log") as bed:
        bed.wait(bed.linked, what="links")
        before = time.monotonic_ns()
        origin, _, seq = bed[0].edit(define(), row("traced@x.example"))["commit"].rpartition(":")
        bed.wait(lambda: f"apply {origin} {seq}" in (bed[1].dir / "trace.log").read_text())
        lines = {m.index: (m.dir / "trace.log").read_text().splitlines() for m in bed.machines}
    [mine] = [x for x in lines[0] if x.endswith(f"commit {origin} {seq}")]
    [theirs] = [x for x in lines[1] if x.endswith(f"apply {origin} {seq}")]
    assert before < int(mine.split()[0]) <= int(theirs.split()[0]) < time.monotonic_ns()
    assert any(" note link to " in x for x in lines[1])
