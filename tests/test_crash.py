"""Crash safety: a commit killed at any moment leaves the store exactly before or after it.

A worker process (``tests/crashworker.py``) builds one big commit (3,000 rows of the
``unsubscribe`` table, all commented ``round-N``, with deletions of the rows of the
round before that this round leaves out, or a reset) and is sent SIGKILL after a
random delay counted from the moment the commit is built.  The delays spread from 0
to a bit beyond the commit time measured at the start, so kills land before, during
and after the commit's database transaction (the worker's progress lines tell which).
After every kill the store is opened again and must hold exactly the rounds committed
so far: all of the last round's rows or none of them, never a mix.

``CLUSTERD_CRASH_ROUNDS`` sets the number of rounds of the bounded test (default 40),
``CLUSTERD_CRASH_SEED`` the seed of the delays; the soak test (1,000 rounds) runs only
when selected with ``-m slow``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import select
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from clusterd.core.digest import state_digest
from clusterd.core.modes import Mode
from clusterd.core.state import definition
from clusterd.store import tables as t
from clusterd.store.store import Store

ROOT = Path(__file__).resolve().parent.parent
WORKER_PATH = Path(__file__).resolve().with_name("crashworker.py")
DEFAULT_ROUNDS = 40
SOAK_ROUNDS = 1000
WARMUP_ROUNDS = 3  # committed without a kill; they also time the commit
SPREAD = 1.5  # kills are spread over [0, SPREAD x the typical commit time]
READY_TIMEOUT = 120.0
# Workers are started this many rounds ahead: their imports (~0.6 s) run while the
# rounds before them are committed, killed and checked.
AHEAD = 2


def _load_worker() -> ModuleType:
    # By path: works whether or not tests/ is a package.
    spec = importlib.util.spec_from_file_location("clusterd_crashworker", WORKER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()
MODE = Mode.machine(worker.HOSTNAME)


@dataclass
class Image:
    """What the store holds after reopening."""

    commits: int  # entries in the commit log
    rows: dict[str, Any]  # visible rows of the unsubscribe table
    digest: str
    last_comment: str | None


# Where the worker was when it was killed, from the lines it had printed after READY.
PHASES = {
    "building": "merging in memory",  # READY only
    "BEGIN": "inside the write transaction",
    "COMMIT": "committing",
    "DONE": "done",
}


def phase(lines: list[str]) -> str:
    for mark in ("DONE", "COMMIT", "BEGIN"):
        if mark in lines:
            return mark
    return "building"


@dataclass
class Tally:
    before: int = 0  # the store was unchanged: the kill landed before the commit
    after: int = 0  # the commit is in the store: the kill landed after it
    # outcome -> phase of the worker when killed -> how many
    phases: dict[str, dict[str, int]] = field(default_factory=lambda: {"before": {}, "after": {}})
    delays: dict[str, list[float]] = field(default_factory=lambda: {"before": [], "after": []})

    def add(self, outcome: str, where: str, delay: float) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.phases[outcome][where] = self.phases[outcome].get(where, 0) + 1
        self.delays[outcome].append(delay)

    def describe(self, outcome: str) -> str:
        counts = self.phases[outcome]
        return ", ".join(f"{counts[p]} {PHASES[p]}" for p in PHASES if p in counts) or "none"


class Worker:
    """One run of the worker process, started ahead of time (``--wait``): it does its
    imports, then waits for ``go`` before it touches the store.  ``close`` kills it
    if it still runs, reaps it and closes its pipes."""

    def __init__(self, store: Path, round_no: int, log: Path) -> None:
        self.round_no = round_no
        self.log = log
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_PATH), str(store), str(round_no), "--wait"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._stderr.close()
        if self.log.exists() and self.log.stat().st_size == 0:
            self.log.unlink()  # keep only the logs that say something

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def _why(self) -> str:
        self._stderr.flush()
        return self.log.read_text()[-4000:]

    def wait_ready(self) -> float:
        """Block until the worker printed READY; the moment it was read."""
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], READY_TIMEOUT)
        if not ready:
            pytest.fail(f"the worker printed nothing in {READY_TIMEOUT:.0f} s:\n{self._why()}")
        line = stdout.readline()
        if line.strip() != "READY":
            self.proc.wait(timeout=30)
            pytest.fail(f"the worker said {line!r}, not READY:\n{self._why()}")
        return time.perf_counter()

    def finish(self) -> float:
        """Let the worker commit; the time from READY to DONE."""
        start = self.wait_ready()
        assert self.proc.stdout is not None
        lines = []
        while (line := self.proc.stdout.readline()) and line.strip() != "DONE":
            lines.append(line.strip())
        elapsed = time.perf_counter() - start
        code = self.proc.wait(timeout=60)
        if line.strip() != "DONE" or code != 0 or "COMMIT" not in lines:
            pytest.fail(f"the worker failed (exit {code}, said {lines}):\n{self._why()}")
        return elapsed

    def kill_after(self, delay: float) -> str:
        """SIGKILL ``delay`` seconds after READY; the phase the worker had reached."""
        start = self.wait_ready()
        remaining = delay - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        self.proc.kill()  # a no-op if it already exited
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        return phase(self.proc.stdout.read().split())


def integrity(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()]


def reopen(path: Path) -> Image:
    store = Store(path, origin=worker.ORIGIN, hostname=worker.HOSTNAME)
    try:
        count = store.version_vector.get(worker.ORIGIN, 0)
        # (b) the log holds exactly the commits the version vector counts, 1..count.
        # Counted in SQL: commit_log() would parse every commit's 3,000 writes.
        seq = t.commits.c.seq
        with store.engine.connect() as conn:
            logged, low, high = conn.execute(
                sa.select(sa.func.count(), sa.func.min(seq), sa.func.max(seq))
            ).one()
            newest = conn.execute(
                sa.select(t.commits.c.comment).order_by(t.commits.c.hlc.desc()).limit(1)
            ).scalar()
        assert logged == count, f"{logged} commits in the log, the version vector says {count}"
        assert count == 0 or (low, high) == (1, count)
        rows = definition(store.state.entries(worker.FEATURE, MODE.key), is_table=True) or {}
        return Image(count, rows, state_digest(store.state), newest)
    finally:
        store.close()


def check(path: Path) -> Image:
    """Checks (a), (c) and (d) on the store as a crash left it; (b) is in ``reopen``."""
    # (c) the file is sound (run first, on the file exactly as the crash left it)
    assert integrity(path) == ["ok"]
    image = reopen(path)
    # (a) every visible row carries one round's comment
    comments = {row["comment"] for row in image.rows.values()}
    assert len(comments) <= 1, f"rows of several rounds are visible: {sorted(comments)}"
    # (d) the image is stable: reopening again gives the same digest
    again = reopen(path)
    assert again.digest == image.digest
    assert again.commits == image.commits
    return image


def run_rounds(tmp_path: Path, rounds: int, seed: int) -> Tally:
    path = tmp_path / "store.db"
    rng = random.Random(seed)
    tally = Tally()
    times: list[float] = []
    typical = 0.0
    last_round, last = 0, None
    total = WARMUP_ROUNDS + rounds
    workers: list[Worker] = []  # every worker started, each closed in the end

    def start(round_no: int) -> Worker:
        workers.append(Worker(path, round_no, tmp_path / f"worker-{round_no}.err"))
        return workers[-1]

    try:
        ahead = {n: start(n) for n in range(1, min(total, AHEAD) + 1)}
        for round_no in range(1, total + 1):
            w = ahead.pop(round_no)
            w.go()
            if round_no <= WARMUP_ROUNDS:
                # Warm-up: commits that are not killed, each timed from READY to DONE.
                times.append(w.finish())
                where, delay = "DONE", None
            else:
                if not typical:
                    # the slowest warm-up commit: the median undershoots under load
                    typical = max(times)
                delay = rng.uniform(0.0, SPREAD * typical)
                where = w.kill_after(delay)
            w.close()
            if round_no + AHEAD <= total:
                ahead[round_no + AHEAD] = start(round_no + AHEAD)
            image = check(path)
            if last is not None and image.commits == last.commits:
                # exactly before: nothing of this round, everything as it was
                assert delay is not None, "a warm-up commit is missing"
                assert where != "DONE", "the worker printed DONE but its commit is not in the store"
                assert image.digest == last.digest
                assert image.rows == worker.expected_rows(last_round)
                assert image.last_comment == last.last_comment
                tally.add("before", where, delay)
            else:
                # exactly after: all of this round, one more commit
                assert image.commits == (last.commits if last else 0) + 1
                assert image.rows == worker.expected_rows(round_no)
                assert image.last_comment == f"round {round_no}"
                # the commit can only be there if the database was told to commit
                assert where in ("COMMIT", "DONE"), f"committed, yet the worker was at {where}"
                if delay is not None:
                    tally.add("after", where, delay)
                last_round = round_no
            last = image
    finally:
        for w in workers:
            w.close()
    print(
        f"\ncrash test: {rounds} kills (seed {seed}), commit takes ~{typical * 1000:.0f} ms, "
        f"delays 0-{SPREAD * typical * 1000:.0f} ms after READY:\n"
        f"  {tally.before} before (store unchanged; killed {tally.describe('before')}),\n"
        f"  {tally.after} after (commit complete; killed {tally.describe('after')});\n"
        f"  latest 'before' kill at {max(tally.delays['before'], default=0) * 1000:.0f} ms, "
        f"earliest 'after' kill at {min(tally.delays['after'], default=0) * 1000:.0f} ms"
    )
    return tally


def _seed() -> int:
    return int(os.environ.get("CLUSTERD_CRASH_SEED", "20240601"))


def _assert_both_outcomes(tally: Tally) -> None:
    assert tally.before >= 1, "no kill landed before the commit: the test proved nothing"
    assert tally.after >= 1, "no kill landed after the commit: the test proved nothing"


def test_kill_mid_commit_leaves_before_or_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rounds = int(os.environ.get("CLUSTERD_CRASH_ROUNDS", DEFAULT_ROUNDS))
    with capsys.disabled():
        tally = run_rounds(tmp_path, rounds, _seed())
    _assert_both_outcomes(tally)


@pytest.mark.slow
def test_kill_mid_commit_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        tally = run_rounds(tmp_path, SOAK_ROUNDS, _seed())
    _assert_both_outcomes(tally)
