"""Shell worker processes (``clusterd.node.workers``, ``clusterd.shellworker``), on real
daemons through OpenSSH: each session's shell runs in a process of its own, forked by
the zygote; the worker's image of the store follows commits from anywhere; a worker
that dies ends its session only; the zygote comes back; stopping the daemon ends them
all; and a worker's frames cannot make the node build anything but data."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.core.errors import ProtocolError
from clusterd.core.pending import PendingWrite
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node.workers import BIG_BATCH
from clusterd.node.workerwire import HEADER, Frames, frame
from tests.test_shell_ssh import ssh
from tests.tmuxbed import Tmux

TZ = {"do": "set_record", "feature": "settz", "mode": "cluster"}
TOKYO = {"timezone": "Asia/Tokyo"}
TMUX = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (.ci/run does)"
)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def zygote_of(m: Machine) -> int:
    """The daemon's one child (no hook runs in these tests): forked from the daemon at
    start, from ``python -m clusterd.shellworker`` after one died."""
    assert m.proc is not None
    found = children(m.proc.pid)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def one(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 2, seed=False) as bed:
        bed.start()
        bed.machines[0].op("create", name="americas")
        yield bed


@contextlib.contextmanager
def shell_in_tmux(m: Machine) -> Iterator[Tmux]:
    """An interactive shell on ``m`` through OpenSSH, in a tmux session, at its prompt."""
    with Tmux(f"{sys.executable} -m clusterd shell --data-dir {m.dir}") as term:
        term.wait_for(f"(Machine {m.hostname})>")
        yield term


@pytest.fixture
def tmux(one: Testbed) -> Iterator[Tmux]:
    with shell_in_tmux(one.machines[0]) as term:
        yield term


def shows_cluster_timezone(term: Tmux, zone: str) -> None:
    """In cluster mode, ``settz print`` shows ``zone``."""
    term.keys("clustermode cluster", "Enter")
    term.wait_for("Continue?")
    term.keys("Enter")
    term.keys("settz print", "Enter")
    term.wait_for(zone)


@TMUX
def test_an_interactive_shell_runs_in_a_worker_process_that_ends_with_it(
    one: Testbed, tmux: Tmux
) -> None:
    a = one.machines[0]
    zygote = zygote_of(a)
    workers = children(zygote)
    assert len(workers) == 1 and workers[0] != a.proc.pid  # type: ignore[union-attr]
    assert children(a.proc.pid) == [zygote]  # type: ignore[union-attr]  # no shell in the node
    tmux.keys("quit", "Enter")
    one.wait(lambda: not alive(workers[0]), what="the worker ends with its session")
    assert alive(zygote)


@TMUX
def test_a_worker_shell_sees_commits_made_elsewhere_and_its_own(one: Testbed, tmux: Tmux) -> None:
    a, _ = one.machines
    a.edit({**TZ, "value": TOKYO})  # after the shell read its image
    shows_cluster_timezone(tmux, "Asia/Tokyo")
    tmux.keys("settz set timezone=Europe/Paris", "Enter")
    tmux.keys("commit from the worker", "Enter")
    tmux.wait_for("Changes committed:")
    tmux.keys("commitdetail 1", "Enter")
    tmux.wait_for("from the worker")
    assert a.ask({"op": "effective"})["values"]["settz"]["timezone"] == "Europe/Paris"


@TMUX
def test_a_worker_that_dies_ends_its_session_and_nothing_else(one: Testbed, tmux: Tmux) -> None:
    a, _ = one.machines
    (worker,) = children(zygote_of(a))
    os.kill(worker, signal.SIGKILL)
    one.wait(lambda: not tmux.alive(), what="the ssh session ends")
    assert a.status()["ok"]
    done = ssh(a, "version")
    assert done.returncode == 0, done.stderr
    text = (a.dir / "clusterd.log").read_text()
    assert "shell worker ended without an exit status" in text and "Traceback" not in text


def test_the_zygote_comes_back_when_it_dies(one: Testbed) -> None:
    a, _ = one.machines
    zygote = zygote_of(a)
    os.kill(zygote, signal.SIGKILL)
    one.wait(lambda: not alive(zygote), what="the zygote is gone")
    done = ssh(a, "version")
    assert done.returncode == 0 and a.hostname in done.stdout, done.stderr
    assert zygote_of(a) != zygote


def test_stopping_the_daemon_ends_the_zygote_and_every_worker(one: Testbed) -> None:
    a, _ = one.machines
    zygote = zygote_of(a)
    argv = [*identity_ssh(a), "-tt"]
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        one.wait(lambda: len(children(zygote)) == 1, what="a worker for the session")
        (worker,) = children(zygote)
        a.stop()
        one.wait(lambda: not alive(zygote) and not alive(worker), what="zygote, worker gone")
    finally:
        client.kill()
        client.communicate()


def identity_ssh(m: Machine) -> list[str]:
    from clusterd.node import identity

    return identity.local_ssh(m.config, None)


def test_a_worker_frame_builds_plain_data_and_core_values_only() -> None:
    """The node reads its workers' frames with an unpickler that refuses every class
    outside ``clusterd.core`` and builtins' plain data: a subverted worker cannot have
    the node run ``os.system`` or open a store."""
    saved = {("settz", "cluster"): {"": PendingWrite({"timezone": "UTC"}, None, True)}}
    good = frame(("call", 1, "commit", (saved, "why", "keep", None), {}))
    assert Frames(from_worker=True).feed(good)[0][3][0] == saved

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("touch /tmp/clusterd-pwned",))

    for hostile in (
        pickle.dumps(("call", 1, "x", (Evil(),), {})),
        pickle.dumps(("call", 1, "x", (Path("/etc"),), {})),
        pickle.dumps(("log", 20, "x", "y", Machine)),  # a class of the product, not the core
        pickle.dumps("not a tuple"),
        b"\x80\x05garbage",
    ):
        with pytest.raises(ProtocolError):
            Frames(from_worker=True).feed(HEADER.pack(len(hostile)) + hostile)
    assert not Path("/tmp/clusterd-pwned").exists()
    with pytest.raises(ProtocolError):
        Frames(from_worker=True).feed(HEADER.pack(1 << 30))


@TMUX
def test_who_and_last_in_a_worker_list_the_sessions_the_node_counted(
    one: Testbed, tmux: Tmux
) -> None:
    a, _ = one.machines
    done = ssh(a, "who")
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stdout
    assert lines[0].endswith("  shell") and lines[1].endswith("  command 'who'")
    tmux.keys("last 5", "Enter")
    tmux.wait_for("admin        127.0.0.1")


@TMUX
def test_a_worker_shell_follows_a_state_transfer(tmp_path: Path) -> None:
    """The image of the store is read again when the node's store is replaced: b, with
    a shell open, misses commits that a's log then drops; on reconnecting it takes a's
    whole state, and the open shell shows it."""
    with Testbed(tmp_path, 2) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        with shell_in_tmux(b) as term:
            b.op("disconnect")
            a.edit({**TZ, "value": TOKYO})
            a.op("truncate", keep=0)
            b.op("reconnect")
            bed.wait(lambda: "state transfer from" in (b.dir / "clusterd.log").read_text(),
                     what="a state transfer to b")  # fmt: skip
            bed.wait(lambda: b.ask({"op": "effective"})["values"]["settz"] == TOKYO,
                     what="b has it")  # fmt: skip
            shows_cluster_timezone(term, "Asia/Tokyo")


@TMUX
def test_a_worker_shell_follows_a_catch_up_of_many_commits(tmp_path: Path) -> None:
    """A batch of more than ``BIG_BATCH`` commits (a page of a catch-up) reaches the
    workers as "read the store again", not as pickled outcomes: b, with a shell open,
    misses 120 commits and catches up; the shell shows the last one."""
    with Testbed(tmp_path, 2) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        with shell_in_tmux(b) as term:
            b.op("disconnect")
            for n in range(BIG_BATCH + 20):
                a.edit({**TZ, "value": {"timezone": "Europe/Paris" if n % 2 else "UTC"}})
            a.edit({**TZ, "value": TOKYO})
            b.op("reconnect")
            bed.wait(bed.converged, what="b caught up")
            shows_cluster_timezone(term, "Asia/Tokyo")
