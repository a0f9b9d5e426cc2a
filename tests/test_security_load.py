"""What a user or a stranger can make a daemon hold, through the real channels.

A paste into an interactive shell (the real OpenSSH client with a PTY), one command
with thousands of edits, idle connections by the thousand, sessions by the hundred:
none of it may drop a member link or keep the daemon from answering.  ``Probe``
watches a daemon from outside while it happens: ``status`` over the control socket
every 20 ms, its round trip, and every peer's link.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.core.errors import ClusterdError
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity


class Probe:
    """Polls ``status`` of ``m`` in a thread: the slowest answer, links seen down."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.slowest = 0.0
        self.answers = 0
        self.down: list[str] = []
        self.dropped_alerts: list[str] = []
        self.failed = ""  # why status stopped answering
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                status = self.m.status()
            except (OSError, ValueError, ClusterdError) as exc:  # counted as never answered
                self.slowest, self.failed = float("inf"), f"{type(exc).__name__}: {exc}"
                return
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.answers += 1
            self.down += [p["hostname"] for p in status["peers"] if p["state"] != "up"]
            self.dropped_alerts = [a["text"] for a in status["alerts"]
                                   if a["kind"] == "connection dropped"]  # fmt: skip
            time.sleep(0.02)


@pytest.fixture
def pinging(tmp_path: Path) -> Iterator[Testbed]:
    """Two members pinging each other every second."""
    with Testbed(tmp_path, 2, ping=1.0) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        yield bed


def _paste(m: Machine, data: bytes, seconds: float) -> str:
    """``data`` into an interactive shell over ``ssh -tt`` (a real PTY on the server),
    the output read as it comes; after ``seconds`` more, the session is ended.  The
    output, as text."""
    argv = identity.local_ssh(m.config)
    argv[argv.index("-t")] = "-tt"  # stdin is a pipe here: force the PTY
    out = bytearray()
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as ssh:  # fmt: skip
        reader = threading.Thread(target=_read_all, args=(ssh, out), daemon=True)
        reader.start()
        writer = threading.Thread(target=_write_all, args=(ssh, data), daemon=True)
        writer.start()
        time.sleep(seconds)
        ssh.kill()
        ssh.wait(10)
        reader.join(10)
        writer.join(10)
    return out.decode("utf-8", errors="replace")


def _read_all(ssh: subprocess.Popen[bytes], out: bytearray) -> None:
    assert ssh.stdout is not None
    while chunk := ssh.stdout.read1(65536):
        out += chunk


def _write_all(ssh: subprocess.Popen[bytes], data: bytes) -> None:
    assert ssh.stdin is not None
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        ssh.stdin.write(data)  # the session may end first: what is left is not read
        ssh.stdin.flush()


def test_a_one_megabyte_line_is_discarded_and_the_daemon_keeps_answering(
    pinging: Testbed,
) -> None:
    a, _ = pinging.machines
    data = b"x" * (1 << 20) + b"\rversion\r"
    with Probe(a) as probe:
        out = _paste(a, data, seconds=8.0)
    assert "a line longer than 4096 characters was discarded; nothing of it was run" in out
    assert f"on {a.hostname}" in out.split("discarded")[-1]  # the next line ran
    assert probe.answers > 100 and probe.slowest < 0.25, (
        probe.answers,
        probe.slowest,
        probe.failed,
    )
    assert probe.down == [] and probe.dropped_alerts == []
    assert pinging.linked()


def test_a_one_megabyte_paste_of_commands_gets_backpressure_not_a_stall(
    pinging: Testbed,
) -> None:
    a, _ = pinging.machines
    data = b"version\r" * (1 << 17)  # 1 MiB: 131,072 commands
    with Probe(a) as probe:
        out = _paste(a, data, seconds=8.0)
    ran = out.count(f" on {a.hostname}")
    assert ran > 50, out[-2000:]  # commands ran all along ...
    assert probe.answers > 100 and probe.slowest < 0.25, (
        probe.answers,
        probe.slowest,
        probe.failed,
    )
    assert probe.down == [] and probe.dropped_alerts == []
    assert pinging.linked()
    # ... and the session's end let go of everything: a new login works at once.
    done = subprocess.run(identity.local_ssh(a.config, "version"), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0 and a.hostname in done.stdout


def _viewer(m: Machine, tmp: Path, role: str = "read-only") -> Path:
    """User ``viewer`` with ``role`` and a key of its own (sshconfig admin_keys): the
    key's file."""
    import asyncssh

    from clusterd.schema.access import hash_passphrase

    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp / "viewer_key"
    key.write_private_key(path)
    path.chmod(0o600)
    ssh_settings = m.op("effective")["values"]["sshconfig"]
    public = " ".join(key.export_public_key().decode().split()[:2])
    ssh_settings["admin_keys"] = [{"user": "viewer", "key": public}]
    m.edit(
        {"do": "set_row", "feature": "userconfig", "mode": "cluster", "row": "viewer",
         "value": {"role": role, "passphrase_hash": hash_passphrase("viewer passphrase")}},
        {"do": "set_record", "feature": "sshconfig", "mode": "cluster", "value": ssh_settings},
    )  # fmt: skip
    return path


def _exec(m: Machine, key: Path, user: str, command: str) -> tuple[int | None, str]:
    """One command over SSH (asyncssh: a command this long is more than OpenSSH's
    command line may hold)."""
    import asyncio

    import asyncssh

    async def go() -> tuple[int | None, str]:
        async with asyncssh.connect(
            m.config.listen, m.config.ssh_port, username=user, known_hosts=None,
            client_keys=[asyncssh.read_private_key(key)], agent_path=None, config=None,
        ) as conn:  # fmt: skip
            done = await conn.run(command, check=False)
            return done.exit_status, str(done.stdout)

    return asyncio.run(go())


def test_five_thousand_edits_in_one_command_leave_links_up(
    pinging: Testbed, tmp_path: Path
) -> None:
    """A read-only user (who can never commit them) sends 5,000 edits of a table other
    features refer to in one command: the edits are checked one row at a time, and the
    daemon goes on answering between them."""
    a, _ = pinging.machines
    key = _viewer(a, tmp_path)
    edits = "; ".join(f"textconfig new t{i} type=disclaimer text=x" for i in range(5000))
    command = f"clustermode cluster; textconfig define empty; {edits}; commit all"
    with Probe(a) as probe:
        started = time.monotonic()
        status, out = _exec(a, key, "viewer", command)
        took = time.monotonic() - started
    assert status == 1 and "viewer (read-only) may not commit changes" in out, out[-300:]
    assert took < 30, took
    assert probe.slowest < 0.5, (probe.slowest, probe.failed)  # it yields between lines
    assert probe.down == [] and probe.dropped_alerts == []
    assert a.op("get", feature="textconfig", mode="cluster")["value"] is None  # nothing


def test_a_session_holds_so_many_pending_changes_and_says_so(tmp_path: Path) -> None:
    with Testbed(tmp_path, 1, max_pending_changes=50) as bed:
        bed.start()
        (a,) = bed.machines
        key = _viewer(a, tmp_path, role="admin")
        edits = "; ".join(f"unsubscribe new u{i}.example.com" for i in range(60))
        status, out = _exec(a, key, "viewer", f"clustermode cluster; unsubscribe define "
                                              f"empty; {edits}; commit all")  # fmt: skip
        assert status == 1
        assert "Error: a session may hold 50 pending changes at most: commit or clear them " \
               "before more edits" in out  # fmt: skip
        assert "49 uncommitted change(s) discarded" not in out  # (the 50 it held)
        assert "50 uncommitted change(s) discarded" in out
        assert a.op("get", feature="unsubscribe", mode="cluster")["value"] is None


def _flood(port: int, count: int, sources: int = 11) -> list[socket.socket]:
    """``count`` idle TCP connections to ``port`` from 127.0.0.2 .. (strangers): each
    says nothing, as an attacker holding slots open would."""
    held = []
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.bind((f"127.0.0.{2 + i % sources}", 0))
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        held.append(s)
    return held


@contextlib.contextmanager
def _flooded(
    tmp_path: Path, nofile: int, **limits: Any
) -> Iterator[tuple[Testbed, list[socket.socket]]]:
    """Two linked members, the first allowed ``nofile`` open files, held by 1,100 idle
    strangers' connections (closed when the block ends, or before by the caller)."""
    with Testbed(tmp_path, 2, ping=1.0, **limits) as bed:
        bed.machines[0].prefix = ["prlimit", f"--nofile={nofile}:{nofile}"]
        bed.start()
        bed.wait(bed.linked, what="linked")
        held = _flood(bed.machines[0].config.ssh_port, 1100)
        try:
            yield bed, held
        finally:
            for s in held:
                s.close()


def test_strangers_holding_connections_lock_out_neither_members_nor_the_admin(
    tmp_path: Path,
) -> None:
    """1,100 idle connections from strangers against a daemon allowed 512 open files:
    refused beyond the limits and logged a few times, while a member restarts and
    links again and the local admin key logs in."""
    with _flooded(tmp_path, 512, login_grace_time=5.0) as (bed, _), Probe(bed[0]) as probe:
        a, b = bed.machines

        def refused_enough() -> bool:  # the daemon accepts the backlog at its own pace
            refused = a.status()["gate"]["refused"]
            return refused.get("startups", 0) + refused.get("source", 0) > 100

        bed.wait(refused_enough, timeout=30, what="strangers refused beyond the limits")
        gate = a.status()["gate"]  # what the strangers hold: the limits
        assert gate["unauthenticated"] <= 64, gate
        b.stop()
        b.start()
        bed.wait(bed.linked, timeout=20, what="b linked again during the flood")
        argv = identity.local_ssh(a.config, "version")
        done = subprocess.run(argv, timeout=30, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        assert done.returncode == 0 and a.hostname in done.stdout, done
    assert probe.slowest < 0.5, (probe.slowest, probe.failed)
    text = (a.dir / "clusterd.log").read_text()
    assert 0 < text.count("(max_startups") + text.count("(max_startups_per_source") < 40
    assert "Traceback" not in text and "Too many open files" not in text
    assert len(text) < 200_000


def test_a_connection_holds_so_many_channels_and_a_user_so_many_shells(
    tmp_path: Path,
) -> None:
    import asyncio

    import asyncssh

    with Testbed(tmp_path, 1, max_channels=4, max_sessions_per_user=6) as bed:
        bed.start()
        (a,) = bed.machines
        key = asyncssh.read_private_key(a.config.admin_key)

        async def connection() -> asyncssh.SSHClientConnection:
            return await asyncssh.connect(a.config.listen, a.config.ssh_port, username="admin",
                                          client_keys=[key], known_hosts=None, config=None,
                                          agent_path=None)  # fmt: skip

        async def shells(conn: asyncssh.SSHClientConnection, n: int) -> list[str]:
            """Open ``n`` shells and keep them: what each said first, or "refused"."""
            found = []
            for _ in range(n):
                try:
                    process = await conn.create_process(term_type="xterm")
                except asyncssh.ChannelOpenError:
                    found.append("refused")
                    continue
                said = ""
                while ">" not in said and "sessions open" not in said:
                    chunk = await asyncio.wait_for(process.stdout.read(4096), 10)
                    if not chunk:
                        break
                    said += chunk
                found.append(said)
            return found

        async def go() -> tuple[list[str], list[str]]:
            one, two = await connection(), await connection()
            first = await shells(one, 10)  # one connection: 4 channels at most
            second = await shells(two, 4)  # a second: the user's 6 shells at most
            one.close()
            two.close()
            return first, second

        first, second = asyncio.run(go())
        assert [x == "refused" for x in first] == [False] * 4 + [True] * 6, first
        assert sum("Type 'help'" in x for x in second) == 2, second
        assert sum("already has 6 sessions open" in x for x in second) == 2, second
        text = (a.dir / "clusterd.log").read_text()
        assert text.count("(max_channels)") == 1  # once a minute, with a count later
        assert text.count("(max_sessions_per_user)") == 1


def test_a_stranger_that_never_logs_in_is_closed_after_the_grace_time(tmp_path: Path) -> None:
    with Testbed(tmp_path, 1, seed=False, login_grace_time=1.0) as bed:
        bed.start()
        (a,) = bed.machines
        stranger = socket.socket()
        stranger.bind(("127.0.0.7", 0))  # not this machine's address: a stranger
        stranger.settimeout(10)
        with stranger as s:
            s.connect(("127.0.0.1", a.config.ssh_port))
            started = time.monotonic()
            received = b""
            while chunk := s.recv(4096):
                received += chunk
            assert received.startswith(b"SSH-2.0-")
            assert 0.8 < time.monotonic() - started < 5


def test_running_out_of_file_descriptors_is_logged_once_and_survived(tmp_path: Path) -> None:
    """Limits set too high for the descriptors allowed (128): accept() fails with
    EMFILE, so nobody new gets in (the control socket neither) until some close.  One
    line says so, no traceback; the link already up stays up (the other member watches
    it), and once the flood ends the daemon answers at once."""
    limits = {"max_startups": 1000, "max_startups_per_source": 1000}
    with _flooded(tmp_path, 128, **limits) as (bed, held):
        a, b = bed.machines
        with Probe(b) as probe:
            time.sleep(4.0)
        assert probe.answers > 50 and probe.down == [], (probe.down, probe.failed)
        for s in held:
            s.close()
        bed.wait(lambda: a.status()["ok"], what="a answering again")
        bed.wait(bed.linked, what="linked after the flood")
    text = (a.dir / "clusterd.log").read_text()
    assert 1 <= text.count("Too many open files") <= 3
    assert "Traceback" not in text


LOTS = 8 * 1024 * 1024  # more than SSH's receive window (2 MiB) and our 64 KiB


def _rss_kib(m: Machine) -> int:
    assert m.proc is not None
    for line in Path(f"/proc/{m.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_does_not_read_gets_backpressure_not_our_memory(
    pinging: Testbed,
) -> None:
    """A shell whose client types 'help' over and over and never reads the answers: the
    daemon stops reading once the output waits, so its memory stays put."""
    import asyncio

    import asyncssh

    a, _ = pinging.machines

    async def go() -> int:
        async with asyncssh.connect(
            a.config.listen, a.config.ssh_port, username="admin", known_hosts=None,
            client_keys=[asyncssh.read_private_key(a.config.admin_key)], agent_path=None,
            config=None,
        ) as conn:  # fmt: skip
            process = await conn.create_process(term_type="xterm")
            await process.stdout.readuntil(">")
            sent, chunk = 0, "help\r" * 2000  # 10,000 bytes, 2,000 screens of help
            while sent < LOTS:
                process.stdin.write(chunk)
                sent += len(chunk)
                try:
                    await asyncio.wait_for(process.stdin.drain(), 1.0)
                except TimeoutError:
                    break  # the daemon stopped reading: backpressure reached us
            await asyncio.sleep(3)
            return sent

    before = _rss_kib(a)
    with Probe(a) as probe:
        sent = asyncio.run(go())
    grew = _rss_kib(a) - before
    assert sent < LOTS, "the daemon read everything a non-reading client sent"
    assert grew < 30_000, f"the daemon grew by {grew} KiB"
    assert probe.slowest < 0.25 and probe.down == [], (probe.slowest, probe.down)


def test_the_log_rotates(tmp_path: Path) -> None:
    """Two log lines per one-command call, about 100 bytes each: 60 calls fill the 4 KiB
    file three times over; one old file is kept."""
    with Testbed(tmp_path, 1, seed=False, log_max_bytes=4096, log_backups=1) as bed:
        bed.start()
        (a,) = bed.machines
        for _ in range(60):
            subprocess.run(identity.local_ssh(a.config, "version"), capture_output=True,
                           timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
        logs = sorted(p.name for p in a.dir.glob("clusterd.log*"))
        assert logs == ["clusterd.log", "clusterd.log.1"], logs
        assert all((a.dir / name).stat().st_size <= 4096 for name in logs)


ACCEPT_RETRY_SCRIPT = """
import asyncio, logging, resource, socket
from clusterd.mesh.transport.limits import Throttle
from clusterd.node.logsetup import quiet_loop_errors
logging.basicConfig(level=logging.DEBUG)
async def main():
    quiet_loop_errors(asyncio.get_running_loop(), Throttle())
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    held = []
    for _ in range(60):
        try:
            s = socket.socket()
            s.setblocking(False)
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            break
        held.append(s)
        await asyncio.sleep(0.01)
    for s in held[:10]:
        s.close()
    server.close()
    await asyncio.sleep(1.5)
asyncio.run(main())
"""


def test_an_accept_retry_after_the_server_closed_is_not_a_traceback() -> None:
    """Out of descriptors, asyncio retries accept a second later; a daemon stopping in
    that second leaves the retry a closed socket.  That is logged as nothing wrong."""
    done = subprocess.run([sys.executable, "-c", ACCEPT_RETRY_SCRIPT], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "accept retry after its listening socket closed" in done.stderr
    assert "Traceback" not in done.stderr and "Exception in callback" not in done.stderr
