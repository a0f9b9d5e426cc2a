"""Propagation benchmarks on real daemons: latency, catch-up, idle cost, etcd comparison.

    .venv/bin/python bench/propagation.py [--quick] [--json] [--sizes 3,10,20]
        [--commits 500] [--catchup 10000] [--idle 10] [--no-etcd]

Every cluster is a ``clusterd.dev.testbed`` of real daemons (one process each, SSH links on
127.0.0.1) in a temporary directory, ping interval 1.0 s, stopped at the end whatever
happens.  Sections:

1. Propagation latency: commits on member 0 through its control socket, one at a
   time; each sets one row of the cluster-wide ``unsubscribe`` table.  Every daemon
   runs with ``trace_file`` set: it appends a line with the machine-wide monotonic
   clock when a commit became durable in its store.  The figure runs from just before
   the edit request is sent until the last other member's trace line for that commit
   (and, second figure, from the origin's own trace line).  The daemons are not polled
   while a commit travels; the benchmark reads the trace files.
2. Catch-up: 3 members, member 2 stopped, N commits on member 0, member 2 started
   again; from member 2's trace: process start, its first link up, its first and last
   missed commit durable (or a state transfer installed).  With etcd present, the same
   test on an etcd follower (stopped, N puts, started; until a local serializable read
   shows the last put) and the ratio of the two, process start to caught up.
3. Idle cost: RSS and CPU of every daemon of the smallest and the largest cluster
   (and the memory of each member's processes: the daemon and its shell zygote),
   idle for ``--idle`` seconds after section 1.
4. etcd: if ``etcd`` is on PATH, a 3-member etcd cluster (fsync on, its default) on
   127.0.0.1, put on member 0 through the v3 JSON gateway, watch on all 3 members;
   same number of puts; ours/etcd ratios of p50 and p99.

Before measuring, every member must report every other one "up".  A peer entry stuck
in another state although its link is open (seen with 20 members: the outbound dial
that loses the duplicate-link race leaves the peer "connecting") is accepted after
10 s and printed as a MESH ANOMALY.  A size that fails is reported and the run goes on
(exit status 1).  A progress log goes to stderr; the report to stdout (``--json`` adds
it as JSON).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from clusterd.core.errors import ClusterdError
from clusterd.dev.testbed import Machine, Testbed, free_port, running

PING = 1.0  # the daemons' ping interval, seconds, for every run
TRACE = "trace.log"  # every daemon's trace_file, in its data directory
TRACE_SLEEP = 0.0002  # between reads of the trace files
MESH_GRACE = 10.0  # seconds every pair holds a link before odd peer states are accepted
WARMUP = 5  # uncounted commits (puts) before the measured ones
FEATURE = "unsubscribe"
DEFINE = {"do": "define", "feature": FEATURE, "mode": "cluster", "start": "empty"}
STATUS = b'{"op": "status"}\n'
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A measurement that could not be made (time-out, daemon gone): says why."""


def log(text: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


def set_row(i: int, tag: str = "u") -> dict[str, Any]:
    return {
        "do": "set_row",
        "feature": FEATURE,
        "mode": "cluster",
        "row": f"{tag}{i}@bench.example",
        "value": {},
    }


def edit_request(i: int, tag: str = "u") -> bytes:
    message = {"op": "edit", "edits": [set_row(i, tag)], "comment": f"bench {tag}{i}"}
    return json.dumps(message).encode() + b"\n"


def parse_commit(answer: dict[str, Any], who: str) -> tuple[str, int]:
    if not answer.get("ok"):
        raise BenchError(f"{who}: edit refused: {answer.get('error')}")
    commit = answer.get("commit")
    if not commit:
        raise BenchError(f"{who}: edit made no commit: {answer}")
    origin, _, seq = str(commit).rpartition(":")
    return origin, int(seq)


class Control:
    """A persistent control-socket connection: one JSON line out, one JSON line back."""

    def __init__(self, machine: Machine, timeout: float) -> None:
        self.name = machine.hostname
        self.timeout = timeout
        path = machine.dir / "control.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise BenchError(f"{self.name}: no daemon answers on {path}: {exc}") from None
        self.reader = self.sock.makefile("rb")

    def __enter__(self) -> Control:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, line: bytes) -> None:
        try:
            self.sock.sendall(line)
        except OSError as exc:
            raise BenchError(f"{self.name}: control socket: {exc}") from None

    def recv(self) -> dict[str, Any]:
        try:
            line = self.reader.readline()
        except TimeoutError:
            raise BenchError(f"{self.name}: no answer within {self.timeout} s") from None
        except OSError as exc:
            raise BenchError(f"{self.name}: control socket: {exc}") from None
        if not line:
            raise BenchError(f"{self.name}: the daemon closed the control connection")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, message: dict[str, Any] | bytes) -> dict[str, Any]:
        line = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.send(line)
        return self.recv()

    def status(self) -> dict[str, Any]:
        answer = self.ask(STATUS)
        if not answer.get("ok"):
            raise BenchError(f"{self.name}: status refused: {answer.get('error')}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()


# -- small helpers ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values_s: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean of durations in seconds, as milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3),
        "mean": round(statistics.fmean(ms), 3),
    }


def tails(machines: list[Machine], lines: int = 8) -> str:
    return "\n".join(f"--- {m.hostname} stderr.log:\n{m.tail(lines)}" for m in machines)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float) -> float:
    """Poll ``condition`` until true; returns the seconds it took; BenchError on time-out."""
    start = time.perf_counter()
    while True:
        if condition():
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_mesh(bed: Testbed, timeout: float) -> tuple[float, list[str]]:
    """Wait until every member reports every other one "up"; returns (seconds, anomalies).

    A peer entry that stays in another state although it holds an open link (``link``
    set) for ``MESH_GRACE`` seconds while every pair has a link is accepted and returned
    as an anomaly: commits still flow over that link, so the measurement can go on."""
    start = time.perf_counter()
    linked_since: float | None = None
    while True:
        now = time.perf_counter()
        try:
            statuses = [m.status() for m in bed.machines]
        except (ClusterdError, OSError, ValueError):
            statuses = []
        if statuses:
            odd = [
                f"{s['hostname']} sees {p['hostname']} {p['state']!r} (link {p['link']}, "
                f"{p['direction']})"
                for s in statuses
                for p in s["peers"]
                if p["state"] != "up"
            ]
            if not odd:
                return now - start, []
            if all(p["link"] is not None for s in statuses for p in s["peers"]):
                linked_since = linked_since or now
                if now - linked_since >= MESH_GRACE:
                    return now - start, odd
            else:
                linked_since = None
        if now - start > timeout:
            raise BenchError(
                f"timed out after {timeout:.0f} s waiting for a full mesh of "
                f"{len(bed.machines)}:\n{bed.describe()}\n{tails(bed.machines)}"
            )
        time.sleep(0.1)


def proc_cpu_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_pss_kib(pid: int) -> tuple[int, int]:
    """Proportional and private memory of a process (``smaps_rollup``), KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def member_memory(pid: int) -> dict[str, float]:
    """The daemon and its children (the shell zygote), PSS and private, MiB."""
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    pss = private = 0
    for p in [pid, *kids]:
        a, b = proc_pss_kib(p)
        pss, private = pss + a, private + b
    daemon_pss = proc_pss_kib(pid)[0]
    return {"pss": round(pss / 1024, 1), "private": round(private / 1024, 1),
            "daemon_pss": round(daemon_pss / 1024, 1), "processes": 1 + len(kids)}  # fmt: skip


def pid_of(m: Machine) -> int:
    if m.proc is None or m.proc.poll() is not None:
        raise BenchError(f"{m.hostname} is not running:\n{m.tail()}")
    return m.proc.pid


# -- 1. propagation latency ----------------------------------------------------------------


class Trace:
    """Follows one daemon's trace file (``trace_file``): when each commit became durable
    there, on the machine-wide monotonic clock, so figures need no polling of the daemon."""

    def __init__(self, machine: Machine) -> None:
        self.name = machine.hostname
        self.path = machine.dir / TRACE
        self.path.touch()
        self.file = self.path.open("rb")
        self.file.seek(0, os.SEEK_END)
        self.partial = b""
        self.seen: dict[tuple[str, int], int] = {}  # (origin, seq) -> ns
        self.notes: list[tuple[int, str]] = []

    def read(self) -> None:
        data = self.partial + self.file.read()
        *lines, self.partial = data.split(b"\n")
        for line in lines:
            at, kind, rest = line.decode().split(" ", 2)
            if kind == "note":
                self.notes.append((int(at), rest))
            elif kind == "install":
                self.notes.append((int(at), f"install {rest}"))
            else:
                origin, seq = rest.split()
                self.seen[(origin, int(seq))] = int(at)

    def when(self, origin: str, seq: int) -> int | None:
        return self.seen.get((origin, seq))

    def close(self) -> None:
        self.file.close()


def wait_traces(traces: list[Trace], origin: str, seq: int, timeout: float) -> list[int]:
    """Until every trace shows commit (origin, seq) durable; its ns on each."""
    deadline = time.monotonic() + timeout
    while True:
        for t in traces:
            t.read()
        found = [t.when(origin, seq) for t in traces]
        if all(ns is not None for ns in found):
            return [ns for ns in found if ns is not None]
        if time.monotonic() > deadline:
            names = ", ".join(t.name for t, ns in zip(traces, found, strict=True) if ns is None)
            raise BenchError(f"commit {origin}:{seq} not applied within {timeout} s by {names}")
        time.sleep(TRACE_SLEEP)


def propagate(
    writer: Control, traces: list[Trace], request: bytes, timeout: float
) -> tuple[float, float, float]:
    """One commit through writer's control socket; wait until every other member has it.

    Returns (from the request to durable everywhere, from durable at the origin to
    durable everywhere, the edit's control round trip), in seconds."""
    t0 = time.monotonic_ns()
    origin, seq = parse_commit(writer.ask(request), writer.name)
    t_edit = time.monotonic_ns() - t0
    mine, *others = traces
    [committed] = wait_traces([mine], origin, seq, timeout)
    last = max(wait_traces(others, origin, seq, timeout))
    return (last - t0) / 1e9, (last - committed) / 1e9, t_edit / 1e9


def bench_latency(bed: Testbed, commits: int, timeout: float) -> dict[str, Any]:
    n = len(bed.machines)
    traces = [Trace(m) for m in bed.machines]
    try:
        with Control(bed[0], timeout) as writer:
            define = json.dumps({"op": "edit", "edits": [DEFINE], "comment": "define"}).encode()
            propagate(writer, traces, define + b"\n", timeout)
            latencies, from_commit, edits = [], [], []
            for i in range(WARMUP + commits):
                try:
                    lat, since, edit = propagate(writer, traces, edit_request(i), timeout)
                except BenchError as exc:
                    raise BenchError(f"{exc}\n{bed.describe()}\n{tails(bed.machines)}") from None
                if i >= WARMUP:
                    latencies.append(lat)
                    from_commit.append(since)
                    edits.append(edit)
                if (i + 1) % 100 == 0:
                    log(f"  {n} members: {i + 1 - WARMUP}/{commits} commits")
    finally:
        for t in traces:
            t.close()
    return {
        "members": n,
        "commits": commits,
        "latency_ms": summary(latencies),
        "from_origin_durable_ms": summary(from_commit),
        "edit_round_trip_ms": summary(edits),
    }


# -- 3. idle cost ----------------------------------------------------------------------------


def bench_idle(bed: Testbed, seconds: float) -> dict[str, Any]:
    time.sleep(1.0)  # let the work of the last commits and polls settle
    pids = [pid_of(m) for m in bed.machines]
    sent_before = [m.status()["traffic"] for m in bed.machines]
    before = [proc_cpu_ticks(p) for p in pids]
    t0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    after = [proc_cpu_ticks(p) for p in pids]
    statuses = [m.status() for m in bed.machines]
    rss = [round(proc_rss_kib(pid) / 1024, 1) for pid in pids]
    memory = [member_memory(pid) for pid in pids]
    cpu = [(a - b) / CLK_TCK / wall * 100 for b, a in zip(before, after, strict=True)]
    pairs = list(zip(statuses, sent_before, strict=True))
    frames = [(s["traffic"]["frames_out"] - b["frames_out"]) / wall for s, b in pairs]
    sent = [(s["traffic"]["bytes_out"] - b["bytes_out"]) / wall for s, b in pairs]
    links = [s["links"] for s in statuses]
    return {
        "members": len(pids),
        "seconds": round(wall, 2),
        "links_per_member": round(statistics.fmean(links), 1),
        "links_total": sum(links) // 2,
        "frames_out_per_s": [round(f, 1) for f in frames],  # per member: the mesh's own
        "bytes_out_per_s": [round(b, 1) for b in sent],  # counters (SSH overhead not)
        "rss_mib_mean": round(statistics.fmean(rss), 1),
        "rss_mib_max": max(rss),
        "rss_mib_total": round(sum(rss), 1),
        "member_pss_mib_mean": round(statistics.fmean(m["pss"] for m in memory), 1),
        "member_private_mib_mean": round(statistics.fmean(m["private"] for m in memory), 1),
        "daemon_pss_mib_mean": round(statistics.fmean(m["daemon_pss"] for m in memory), 1),
        "processes_per_member": memory[0]["processes"],
        "cpu_pct_mean": round(statistics.fmean(cpu), 3),
        "cpu_pct_max": round(max(cpu), 3),
        "cpu_pct_total": round(sum(cpu), 3),
        "per_member": [
            {"member": m.hostname, "rss_mib": r, "cpu_pct": round(c, 3)}
            for m, r, c in zip(bed.machines, rss, cpu, strict=True)
        ],
    }


def bench_size(
    root: Path, n: int, commits: int, idle: float | None, timeout: float
) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    log(f"{n} members: initialising and starting the daemons")
    t0 = time.perf_counter()
    bed = Testbed(root, n, ping=PING, trace_file=TRACE)
    with bed:
        try:
            bed.start()
        except ClusterdError as exc:
            raise BenchError(f"{n} members: a daemon did not start: {exc}") from None
        started = time.perf_counter() - t0
        log(f"{n} members: started in {started:.1f} s; waiting for the full mesh")
        mesh, anomalies = wait_mesh(bed, 30 + 4 * n)
        for text in anomalies:
            log(f"{n} members: MESH ANOMALY: {text}")
        log(f"{n} members: full mesh after {mesh:.1f} s more; {commits} commits")
        result = bench_latency(bed, commits, timeout)
        result["start_s"] = round(started, 2)
        result["mesh_s"] = round(mesh, 2)
        result["mesh_anomalies"] = anomalies
        if idle:
            log(f"{n} members: idle for {idle:g} s")
            result["idle"] = bench_idle(bed, idle)
    return result


# -- 2. catch-up -----------------------------------------------------------------------------


def bench_catchup(root: Path, commits: int, timeout: float) -> dict[str, Any]:
    """Member 2 misses ``commits`` commits, then starts again; its trace file tells when
    its first link came up and when each missed commit (or a state transfer) landed."""
    root.mkdir(parents=True, exist_ok=True)
    log(f"catch-up: 3 members; member 2 stopped; {commits:,} commits on member 0")
    with running(root, 3, ping=PING, trace_file=TRACE) as bed:
        _, anomalies = wait_mesh(bed, 40)
        m0, m2 = bed[0], bed[2]
        with Control(m0, timeout) as c0:
            origin, seq = parse_commit(c0.ask({"op": "edit", "edits": [DEFINE]}), m0.hostname)
            with Control(m2, timeout) as c2:
                wait_for(lambda: c2.status()["vv"].get(origin, 0) >= seq, 30, "the define", 0.01)
            m2.stop()
            t0 = time.perf_counter()
            for i in range(commits):
                origin, seq = parse_commit(c0.ask(edit_request(i, "c")), m0.hostname)
                if (i + 1) % 2000 == 0:
                    log(f"  catch-up: {i + 1:,}/{commits:,} commits made")
            commit_s = time.perf_counter() - t0
        log(f"catch-up: {commits:,} commits in {commit_s:.1f} s; starting member 2 again")
        trace = Trace(m2)
        try:
            t_start = time.monotonic_ns()
            try:
                m2.start()
            except ClusterdError as exc:
                raise BenchError(f"member 2 did not restart: {exc}") from None
            t_ready = time.monotonic_ns()
            deadline = time.monotonic() + timeout
            installed: int | None = None
            while trace.when(origin, seq) is None and installed is None:
                if time.monotonic() > deadline:
                    raise BenchError(f"member 2 did not catch up within {timeout} s")
                time.sleep(TRACE_SLEEP)
                trace.read()
                for at, text in trace.notes:
                    if text.startswith("install ") and f'"{origin}":{seq}' in text:
                        installed = at
            t_done = trace.when(origin, seq) or installed or 0
            applied = [ns for (o, _), ns in trace.seen.items() if o == origin]
            t_link = next((at for at, text in trace.notes if "is up" in text), None)
        finally:
            trace.close()
        with Control(m2, timeout) as c2:
            after = c2.status()
            if after["vv"].get(origin, 0) < seq:
                raise BenchError("member 2's trace and its version vector disagree")
            loop_worst = after["loop"]["worst_ms"]  # since its start: the catch-up included
        logs = (m2.dir / "stderr.log").read_text(errors="replace")
        transfer = installed is not None or "state transfer" in logs
    first = min(applied) if applied else t_done
    return {
        "commits": commits,
        "commit_s": round(commit_s, 2),
        "commit_rate": round(commits / commit_s, 1),
        "startup_s": round((t_ready - t_start) / 1e9, 3),
        "start_to_link_s": None if t_link is None else round((t_link - t_start) / 1e9, 3),
        "link_to_first_apply_s": None if t_link is None else round((first - t_link) / 1e9, 3),
        "first_to_last_apply_s": round((t_done - first) / 1e9, 3),
        "catchup_s": round((t_done - (t_link or t_ready)) / 1e9, 3),
        "catchup_rate": round(commits / max(1e-9, (t_done - (t_link or t_ready)) / 1e9), 1),
        "with_startup_s": round((t_done - t_start) / 1e9, 3),
        "state_transfer": transfer,
        "loop_worst_ms": loop_worst,
        "mesh_anomalies": anomalies,
    }


# -- 4. etcd ---------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def http_json(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    payload = None if body is None else json.dumps(body)
    conn.request(method, path, payload, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise BenchError(f"etcd {path}: HTTP {resp.status}: {data[:200]!r}")
    answer: dict[str, Any] = json.loads(data)
    return answer


class Watcher(threading.Thread):
    """A /v3/watch stream on one etcd member: notes when each key's put arrives."""

    def __init__(
        self, index: int, port: int, seen: dict[str, dict[int, float]], cond: threading.Condition
    ) -> None:
        super().__init__(daemon=True, name=f"etcd-watch-{index}")
        self.index, self.port, self.seen, self.cond = index, port, seen, cond
        self.created = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port)
            create = {"create_request": {"key": b64("bench/"), "range_end": b64("bench0")}}
            conn.request("POST", "/v3/watch", json.dumps(create))
            resp = conn.getresponse()
            while line := resp.readline():
                now = time.perf_counter()
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if result.get("created"):
                    self.created.set()
                events = result.get("events", [])
                if events:
                    with self.cond:
                        for event in events:
                            key = base64.b64decode(event["kv"]["key"]).decode()
                            self.seen.setdefault(key, {})[self.index] = now
                        self.cond.notify_all()
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self.cond:
                self.cond.notify_all()


class EtcdCluster:
    """n etcd members on 127.0.0.1 (fsync on, its default); members stop and start again."""

    def __init__(self, exe: str, root: Path, n: int = 3) -> None:
        self.exe, self.root = exe, root
        self.members = [(f"e{i}", free_port(), free_port()) for i in range(n)]
        self.ports = [client for _, client, _ in self.members]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

    def start(self, i: int) -> None:
        name, client, peer = self.members[i]
        initial = ",".join(f"{m}=http://127.0.0.1:{p}" for m, _, p in self.members)
        url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        command = [
            self.exe, "--name", name, "--data-dir", str(self.root / name),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "clusterd-bench",
        ]  # fmt: skip
        with open(self.root / f"{name}.log", "ab") as out:
            self.procs[i] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, i: int) -> None:
        proc = self.procs[i]
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def healthy(self, indexes: list[int]) -> bool:
        for i in indexes:
            proc, (name, client, _) = self.procs[i], self.members[i]
            if proc is None or proc.poll() is not None:
                text = (self.root / f"{name}.log").read_text(errors="replace")
                raise BenchError(f"etcd {name} exited:\n{text[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", client, timeout=2)
                if http_json(conn, "GET", "/health").get("health") != "true":
                    return False
            except (OSError, BenchError, ValueError, http.client.HTTPException):
                return False
        return True


@contextlib.contextmanager
def etcd_cluster(exe: str, root: Path, n: int = 3) -> Iterator[EtcdCluster]:
    """A healthy n-member etcd cluster; every member stopped on exit."""
    cluster = EtcdCluster(exe, root, n)
    try:
        for i in range(n):
            cluster.start(i)
        wait_for(lambda: cluster.healthy(list(range(n))), 60, "a healthy etcd cluster", 0.1)
        yield cluster
    finally:
        for i in range(n):
            cluster.stop(i)


def bench_etcd_catchup(exe: str, root: Path, puts: int, timeout: float) -> dict[str, Any]:
    """etcd's follower catch-up: member 2 stopped, ``puts`` puts, member 2 started again;
    from its process start until a local (serializable) read shows the last put."""
    root.mkdir(parents=True, exist_ok=True)
    log(f"etcd catch-up: member 2 stopped; {puts:,} puts on member 0")
    with etcd_cluster(exe, root) as cluster:
        cluster.stop(2)
        conn = http.client.HTTPConnection("127.0.0.1", cluster.ports[0], timeout=timeout)
        t0 = time.perf_counter()
        for i in range(puts):
            key = f"catchup/c{i}@bench.example"
            http_json(conn, "POST", "/v3/kv/put", {"key": b64(key), "value": b64("{}")})
            if (i + 1) % 2000 == 0:
                log(f"  etcd catch-up: {i + 1:,}/{puts:,} puts made")
        put_s = time.perf_counter() - t0
        conn.close()
        last = {"key": b64(f"catchup/c{puts - 1}@bench.example"), "serializable": True}
        t_start = time.perf_counter()
        cluster.start(2)
        t_answer: float | None = None
        deadline = t_start + timeout
        while True:
            now = time.perf_counter()
            if now > deadline:
                raise BenchError(f"etcd member 2 did not catch up within {timeout} s")
            try:
                c2 = http.client.HTTPConnection("127.0.0.1", cluster.ports[2], timeout=2)
                found = http_json(c2, "POST", "/v3/kv/range", last).get("kvs")
                t_answer = t_answer or now
                if found:
                    t_done = time.perf_counter()
                    break
            except (OSError, BenchError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.002)
    return {
        "puts": puts,
        "put_s": round(put_s, 2),
        "put_rate": round(puts / put_s, 1),
        "start_to_first_answer_s": round((t_answer or t_done) - t_start, 3),
        "with_startup_s": round(t_done - t_start, 3),
        "after_first_answer_s": round(t_done - (t_answer or t_done), 3),
    }


def bench_etcd(exe: str, root: Path, puts: int, timeout: float) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    log(f"etcd: 3 members; {puts} puts")
    with etcd_cluster(exe, root) as cluster:
        ports = cluster.ports
        seen: dict[str, dict[int, float]] = {}
        cond = threading.Condition()
        watchers = [Watcher(i, port, seen, cond) for i, port in enumerate(ports)]
        for w in watchers:
            w.start()
        for w in watchers:
            if not w.created.wait(10):
                raise BenchError(f"etcd watch on member {w.index} not created: {w.error}")
        conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=timeout)
        status = http_json(conn, "POST", "/v3/maintenance/status", {})
        is_leader = str(status.get("header", {}).get("member_id")) == str(status.get("leader"))
        latencies, put_times = [], []
        for i in range(WARMUP + puts):
            key = f"bench/u{i}@bench.example"
            t0 = time.perf_counter()
            http_json(conn, "POST", "/v3/kv/put", {"key": b64(key), "value": b64("{}")})
            t_put = time.perf_counter() - t0
            with cond:

                def arrived(key: str = key) -> bool:
                    everywhere = len(seen.get(key, {})) == len(ports)
                    return everywhere or any(w.error for w in watchers)

                done = cond.wait_for(arrived, timeout)
                errors = [w.error for w in watchers if w.error]
                if errors or not done:
                    raise BenchError(f"etcd put {key} not seen by every watch: {errors}")
                latency = max(seen[key].values()) - t0
            if i >= WARMUP:
                latencies.append(latency)
                put_times.append(t_put)
        conn.close()
    return {
        "members": 3,
        "puts": puts,
        "version": version.splitlines()[0] if version else "?",
        "member0_is_leader": is_leader,
        "latency_ms": summary(latencies),
        "put_round_trip_ms": summary(put_times),
    }


# -- the report ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    affinity = getattr(os, "sched_getaffinity", None)
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "command": shlex.join(sys.orig_argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ping_interval_s": PING,
    }


def print_report(report: dict[str, Any]) -> None:
    print("clusterd propagation benchmark" + (" (quick)" if report["quick"] else ""))
    for key, value in report["machine"].items():
        print(f"  {key:<16} {value}")
    print(f"  {'wall time':<16} {report['wall_s']:.1f} s")

    print("\n1. Propagation latency: commit on member 0 -> durable on every member (ms)")
    print(f"   one row set per commit, one commit at a time, after {WARMUP} uncounted.  Each")
    print("   daemon appends to its trace file when a commit became durable in its store (the")
    print("   machine-wide monotonic clock); 'latency' runs from just before the edit request")
    print("   is sent to the last other member's trace line, 'from origin' from the origin's own")
    print("   trace line.  The daemons are never polled while a commit travels.")
    head = (
        f"   {'members':>7} {'commits':>7} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} "
        f"{'mean':>8} {'orig p50':>9} {'orig p99':>9} {'edit p50':>9} {'start s':>8} "
        f"{'mesh s':>7}"
    )
    print(head)
    for r in report["latency"]:
        if "error" in r:
            print(f"   {r['members']:>7} FAILED: {r['error'].splitlines()[0]}")
            continue
        lat, orig = r["latency_ms"], r["from_origin_durable_ms"]
        print(
            f"   {r['members']:>7} {r['commits']:>7} {lat['p50']:>8.2f} {lat['p90']:>8.2f} "
            f"{lat['p99']:>8.2f} {lat['max']:>8.2f} {lat['mean']:>8.2f} "
            f"{orig['p50']:>9.2f} {orig['p99']:>9.2f} "
            f"{r['edit_round_trip_ms']['p50']:>9.2f} {r['start_s']:>8.1f} {r['mesh_s']:>7.1f}"
        )
    print("   orig: from durable at the origin; edit: the edit request's control round trip")
    for r in report["latency"]:
        if r.get("mesh_anomalies"):
            print(
                f"   {r['members']} members: MESH ANOMALY, peer entries not 'up' although their "
                "link is open (commits still flow over it):"
            )
            for text in r["mesh_anomalies"]:
                print(f"     {text}")
    print("\n2. Catch-up of a restarted member (3 members)")
    c = report["catchup"]
    if c is None:
        print("   not run")
    elif "error" in c:
        print(f"   FAILED: {c['error']}")
    else:
        print(
            f"   {c['commits']:,} one-row commits made on member 0 while member 2 was stopped: "
            f"{c['commit_s']:.1f} s ({c['commit_rate']:,.0f} commits/s over the control socket)"
        )
        print(
            f"   member 2 (from its trace): process start -> ready {c['startup_s']:.2f} s, "
            f"-> first link up {c['start_to_link_s']} s"
        )
        print(
            f"   first link up -> first missed commit durable: {c['link_to_first_apply_s']} s; "
            f"first -> last: {c['first_to_last_apply_s']:.3f} s"
        )
        print(
            f"   catch-up (first link up -> caught up): {c['catchup_s']:.3f} s "
            f"= {c['catchup_rate']:,.0f} commits/s; process start -> caught up: "
            f"{c['with_startup_s']:.2f} s; state transfer: {c['state_transfer']}"
        )
        print(
            f"   member 2's links' loop, latest timer since its start (the catch-up "
            f"included): {c.get('loop_worst_ms')} ms"
        )
        for text in c.get("mesh_anomalies", []):
            print(f"   MESH ANOMALY before the test: {text}")
    ec = report.get("etcd_catchup")
    if isinstance(ec, dict) and "error" not in ec:
        print(
            f"   etcd follower, same test ({ec['puts']:,} puts at {ec['put_rate']:,.0f}/s): process"
            f" start -> first answer {ec['start_to_first_answer_s']:.2f} s, -> caught up "
            f"{ec['with_startup_s']:.2f} s (first answer -> caught up "
            f"{ec['after_first_answer_s']:.3f} s)"
        )
        if c and "error" not in c:
            print(
                f"   ours/etcd, process start -> caught up: "
                f"{c['with_startup_s'] / ec['with_startup_s']:.2f}x"
            )
    elif ec is not None:
        print(f"   etcd follower: {ec if isinstance(ec, str) else 'FAILED: ' + ec['error']}")

    print(f"\n3. Idle cost per daemon (ping interval {PING:g} s, after section 1)")
    idles = [r for r in report["latency"] if "idle" in r]
    if not idles:
        print("   not measured")
    for r in idles:
        i = r["idle"]
        print(
            f"   {i['members']} members, {i['seconds']:.1f} s idle: "
            f"RSS mean {i['rss_mib_mean']:.1f} MiB (max {i['rss_mib_max']:.1f}, "
            f"total {i['rss_mib_total']:.0f}); CPU mean {i['cpu_pct_mean']:.2f}% "
            f"(max {i['cpu_pct_max']:.2f}%, total {i['cpu_pct_total']:.2f}%)"
        )
        print(
            f"     per member ({i['processes_per_member']} processes: the daemon and its "
            f"shell zygote): PSS {i['member_pss_mib_mean']:.1f} MiB (the daemon "
            f"{i['daemon_pss_mib_mean']:.1f}), private {i['member_private_mib_mean']:.1f} MiB"
        )
        cells = [
            f"m{k}: {m['rss_mib']:.0f} MiB {m['cpu_pct']:.2f}%"
            for k, m in enumerate(i["per_member"])
        ]
        for k in range(0, len(cells), 5):
            print(f"     {', '.join(cells[k : k + 5])}")

    print("\n4. etcd comparison (3 members, put on member 0 -> seen by the watch of all 3)")
    e = report["etcd"]
    if isinstance(e, str):
        print(f"   {e}")
    elif "error" in e:
        print(f"   FAILED: {e['error']}")
    else:
        lat = e["latency_ms"]
        print(
            f"   {e['version']}, fsync on (its default); member 0 is the leader: "
            f"{e['member0_is_leader']}; {e['puts']} puts after {WARMUP} uncounted"
        )
        print(
            f"   etcd ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
            f"max {lat['max']:.2f}  mean {lat['mean']:.2f}  (put round trip p50 "
            f"{e['put_round_trip_ms']['p50']:.2f})"
        )
        ratio = report.get("ratio")
        if ratio:
            print(
                f"   ours/etcd ({ratio['members']} members): p50 {ratio['p50']:.2f}x, "
                f"p99 {ratio['p99']:.2f}x"
            )
            print("   (etcd fsyncs its WAL on every put; clusterd's SQLite, in WAL mode with")
            print("   synchronous=NORMAL, does not; etcd's figure includes its watch stream)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 3,5; 100 commits")
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    parser.add_argument("--sizes", help="cluster sizes for section 1 (default 3,10,20)")
    parser.add_argument("--commits", type=int, help="commits per size (default 500)")
    parser.add_argument("--catchup", type=int, help="commits to catch up (default 10000)")
    parser.add_argument("--idle", type=float, help="idle seconds (default 10; quick 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per wait, seconds")
    parser.add_argument("--no-etcd", action="store_true", help="skip the etcd comparison")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    else:
        sizes = [3, 5] if args.quick else [3, 10, 20]
    if not sizes or min(sizes) < 2:
        parser.error("--sizes: at least one size, each of 2 members or more")
    commits = args.commits or (100 if args.quick else 500)
    catchup = args.catchup if args.catchup is not None else (1000 if args.quick else 10_000)
    idle = args.idle if args.idle is not None else (3.0 if args.quick else 10.0)
    idle_sizes = {min(sizes), max(sizes)}
    report: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    log(f"command: {report['machine']['command']}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clusterd-prop-") as tmp:
        root = Path(tmp)
        report["latency"] = []
        for n in sizes:
            try:
                r = bench_size(
                    root / f"n{n}", n, commits, idle if n in idle_sizes else None, args.timeout
                )
            except (BenchError, ClusterdError, OSError) as exc:
                log(f"{n} members FAILED: {exc}")
                r = {"members": n, "error": str(exc)}
            report["latency"].append(r)
        report["catchup"] = None
        if catchup > 0:
            try:
                report["catchup"] = bench_catchup(root / "catchup", catchup, max(args.timeout, 300))
            except (BenchError, ClusterdError, OSError) as exc:
                log(f"catch-up FAILED: {exc}")
                report["catchup"] = {"error": str(exc)}
        exe = shutil.which("etcd")
        if args.no_etcd:
            report["etcd"] = "etcd: skipped (--no-etcd)"
        elif exe is None:
            report["etcd"] = (
                "etcd: not installed (apt-get install etcd-server) — ratio not measured"
            )
        else:
            try:
                report["etcd"] = bench_etcd(exe, root / "etcd", commits, args.timeout)
            except (BenchError, OSError, ValueError, http.client.HTTPException) as exc:
                log(f"etcd FAILED: {exc}")
                report["etcd"] = {"error": str(exc)}
            if catchup > 0:
                try:
                    report["etcd_catchup"] = bench_etcd_catchup(
                        exe, root / "etcd-catchup", catchup, max(args.timeout, 300)
                    )
                except (BenchError, OSError, ValueError, http.client.HTTPException) as exc:
                    log(f"etcd catch-up FAILED: {exc}")
                    report["etcd_catchup"] = {"error": str(exc)}
        ours = [r for r in report["latency"] if "error" not in r]
        if ours and isinstance(report["etcd"], dict) and "error" not in report["etcd"]:
            mine = min(ours, key=lambda r: abs(r["members"] - 3))
            theirs = report["etcd"]["latency_ms"]
            report["ratio"] = {
                "members": mine["members"],
                "p50": round(mine["latency_ms"]["p50"] / theirs["p50"], 3),
                "p99": round(mine["latency_ms"]["p99"] / theirs["p99"], 3),
            }
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print_report(report)
    if args.json:
        print(json.dumps(report, indent=1))
    failed = [r for r in report["latency"] if "error" in r]
    return (
        1 if failed or (isinstance(report["catchup"], dict) and "error" in report["catchup"]) else 0
    )


if __name__ == "__main__":
    sys.exit(main())
