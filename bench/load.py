"""Load: many concurrent admin shells (SSH) committing on a 3-member cluster.

    .venv/bin/python bench/load.py [--sessions 100] [--rounds 5] [--json]

Starts 3 real daemons on 127.0.0.1 (``clusterd.dev.testbed``), defines the ``unsubscribe``
table at cluster level once (as an admin would before handing out the work), then
opens ``--sessions`` interactive shells at once (asyncssh, a PTY, the admin key),
round-robin over the members (100 -> 34/33/33).  Each shell switches to cluster mode
(``clustermode cluster``, answering "y") and, ``--rounds`` times, types:

* ``unsubscribe new sSSSrRR@load.example.com comment=...``: a row unique to (session,
  round);
* ``commit``, answering the comment question;
* a read, ``unsubscribe clustershow`` by default (``--read``; it must run in cluster
  mode).

Every command is timed from sending its line until the shell's next prompt is drawn
(questions answered at once, so ``commit`` counts two round trips and the commit).
Meanwhile a thread asks every member for its ``status`` over the control socket each
``--monitor`` seconds: the daemon answers it on the event loop that also runs the shells
and the links, so its latency is how long anything waits there; the probes also say
whether every link is up.  Once every shell has quit, the members must converge (equal
digests and version vectors, nothing waiting), and every row whose commit was confirmed
must be in the effective configuration (control socket ``effective``) of every member.

Reports sessions, rounds, commits made and lost, recorded inconsistencies, wall time of
the rounds, commits/s, latency per kind (login = connect until the first prompt):
p50/p90/p99/max, the daemons' CPU time, link alerts raised during the load and the
machine's load average (other work on the machine shows there).  Progress goes to
stderr.  Exits 1 when a commit is lost, a session fails, a daemon dies, the members do
not converge or record an inconsistency.  The daemons are stopped whatever happens
(Ctrl-C included).

``--ping`` is the members' ping interval, 60 s by default as in production; links are
dropped after 2.5 intervals without a frame, so ``--ping 1`` (the tests' kind of
setting) shows what a long wait on the event loop does to the mesh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shell import ShellClient, ShellError  # bench/shell.py

from clusterd.core.errors import ClusterdError
from clusterd.dev.testbed import Machine, Testbed, running

FEATURE = "unsubscribe"
KINDS = ("login", "clustermode", "edit", "commit", "read")
ERROR = re.compile(r"^(Error|Usage):", re.MULTILINE)


def row_name(session: int, rnd: int) -> str:
    return f"s{session:03d}r{rnd:02d}@load.example.com"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def answers(comment: str, define: bool) -> Callable[[str], str | None]:
    """What a person types at each question these commands ask (None: not expected)."""

    def reply(text: str) -> str | None:
        if "Please enter some comments describing your changes:" in text:
            return comment
        if "Changes made in cluster mode affect every machine. Continue?" in text:
            return "y"
        if define and f"{FEATURE} is not defined at Cluster. Start from:" in text:
            return "1"  # the factory defaults: an empty table
        if "Overwrite their changes with yours?" in text:
            return "n"  # someone else defined it meanwhile: keep theirs
        return None

    return reply


class Run:
    """Shared tallies of one load run."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {k: [] for k in KINDS}
        self.confirmed: set[str] = set()  # rows whose commit printed "Changes committed"
        self.failures: list[dict[str, Any]] = []
        self.logged_in = 0
        self.finished = 0
        self.last_answer = 0.0  # time.monotonic() of the last round's last prompt


class Monitor(threading.Thread):
    """Every ``every`` seconds, each member's ``status`` over its control socket: how long
    the daemon takes to answer (it is served by the same event loop as the shells and
    the links) and how many of its links are up."""

    def __init__(self, bed: Testbed, every: float) -> None:
        super().__init__(daemon=True)
        self.bed = bed
        self.every = every
        self.done = threading.Event()
        self.latency: list[float] = []
        self.samples = 0
        self.all_up = 0  # samples in which the member had a live link to every other one
        self.unanswered = 0
        self.loop_p99: list[float] = []  # each probe's "timers late, last minute, p99"
        self.loop_max = 0.0  # the latest any member's loop ran a timer during the load

    def run(self) -> None:
        others = len(self.bed.machines) - 1
        while not self.done.wait(self.every):
            for m in self.bed.machines:
                started = time.perf_counter()
                try:
                    status = m.ask({"op": "status"}, timeout=30.0)
                except (ClusterdError, OSError, ValueError):
                    self.unanswered += 1
                    continue
                self.latency.append((time.perf_counter() - started) * 1000)
                lag = status["loop"]["last_minute"]
                if lag:
                    self.loop_p99.append(lag["p99_ms"])
                    self.loop_max = max(self.loop_max, lag["max_ms"])
                up = {p["hostname"] for p in status["peers"] if p["state"] == "up"}
                self.samples += 1
                self.all_up += len(up - {m.hostname}) >= others

    def stop(self) -> None:
        self.done.set()
        self.join()


class LoadSession:
    """One admin shell: log in, cluster mode, then rounds of edit, commit, read."""

    def __init__(self, index: int, m: Machine, key: Any, args: argparse.Namespace, run: Run):
        self.index = index
        self.m = m
        self.key = key
        self.args = args
        self.run = run
        self.client: ShellClient | None = None
        self.phase = "login"

    def fail(self, exc: BaseException) -> None:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.run.failures.append(
            {"session": self.index, "member": self.m.hostname, "phase": self.phase,
             "error": what[:500]}
        )  # fmt: skip
        log(f"session {self.index} on {self.m.hostname} failed in {self.phase}: {what[:300]}")

    async def command(self, kind: str, line: str, comment: str = "") -> str:
        assert self.client is not None
        self.phase = f"{kind} {line!r}"
        ms, out = await self.client.run(line, answers(comment, self.args.no_define))
        if ERROR.search(out):
            raise ShellError(f"{line!r} failed: {out[-300:]!r}")
        self.run.latency[kind].append(ms)
        return out

    async def login(self) -> bool:
        try:
            self.client, ms = await ShellClient.open(self.m, self.args.timeout, self.key)
            self.run.latency["login"].append(ms)
            await self.command("clustermode", "clustermode cluster")
            if not self.client.prompt.startswith("(Cluster "):
                raise ShellError(f"not in cluster mode: prompt {self.client.prompt!r}")
            self.run.logged_in += 1
            return True
        except (ShellError, OSError, TimeoutError, asyncssh.Error) as exc:
            self.fail(exc)
            await self.close()
            return False

    async def rounds(self) -> None:
        try:
            for rnd in range(self.args.rounds):
                row = row_name(self.index, rnd)
                edit = f"{FEATURE} new {row} comment=session-{self.index}-round-{rnd}"
                await self.command("edit", edit)
                out = await self.command("commit", "commit", f"load {self.index}/{rnd}")
                if "Changes committed:" not in out:
                    raise ShellError(f"commit of {row} not confirmed: {out[-300:]!r}")
                self.run.confirmed.add(row)
                await self.command("read", self.args.read)
            self.run.finished += 1
            self.run.last_answer = max(self.run.last_answer, time.monotonic())
        except (ShellError, OSError, TimeoutError, asyncssh.Error) as exc:
            self.fail(exc)
        finally:
            self.phase = "quit"
            await self.close()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(Exception):
                await client.close()


async def _progress(run: Run, total: int, commits: int, started: float) -> None:
    while True:
        await asyncio.sleep(5)
        log(f"  {time.monotonic() - started:6.1f} s: {run.logged_in}/{total} logged in, "
            f"{len(run.confirmed)}/{commits} commits, {run.finished} sessions done, "
            f"{len(run.failures)} failed")  # fmt: skip


async def _load(bed: Testbed, args: argparse.Namespace, run: Run) -> dict[str, float]:
    keys = [asyncssh.read_private_key(m.config.admin_key) for m in bed.machines]
    n = len(bed.machines)
    sessions = [LoadSession(i, bed[i % n], keys[i % n], args, run) for i in range(args.sessions)]
    started = time.monotonic()
    ticker = asyncio.create_task(
        _progress(run, args.sessions, args.sessions * args.rounds, started)
    )
    try:
        log(f"opening {args.sessions} shells at once ...")
        ok = await asyncio.gather(*(s.login() for s in sessions))
        logged_in = time.monotonic()
        log(f"{sum(ok)} shells at the cluster prompt after {logged_in - started:.1f} s; "
            f"{args.rounds} rounds each ...")  # fmt: skip
        await asyncio.gather(*(s.rounds() for s, up in zip(sessions, ok, strict=True) if up))
        done = run.last_answer or time.monotonic()  # before the shells quit
    finally:
        ticker.cancel()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return {"login_phase_s": logged_in - started, "rounds_s": done - logged_in}


def _percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:  # nearest rank
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"n": len(ordered), "p50": rank(50), "p90": rank(90), "p99": rank(99),
            "max": round(ordered[-1], 1)}  # fmt: skip


def _settled(bed: Testbed) -> bool:
    states = [m.status() for m in bed.machines]
    return (
        len({s["digest"] for s in states}) == 1
        and len({json.dumps(s["vv"], sort_keys=True) for s in states}) == 1
        and not any(s["waiting_commits"] for s in states)
    )


def _alerts(statuses: list[dict[str, Any]], since: float) -> dict[str, dict[str, int]]:
    """Per member, how many alerts of each kind were raised since ``since``."""
    found: dict[str, dict[str, int]] = {}
    for s in statuses:
        kinds: dict[str, int] = {}
        for a in s["alerts"]:
            if a["at"] >= since:
                kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
        found[s["hostname"]] = kinds
    return found


def _cpu_seconds(m: Machine) -> float | None:
    """CPU time (user + system) the daemon's process has used so far (Linux)."""
    if m.proc is None:
        return None
    try:
        fields = Path(f"/proc/{m.proc.pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers_cpu_seconds(m: Machine) -> float | None:
    """CPU time of the daemon's shell workers that ended so far: the zygote (the
    daemon's child) reaps them, so their time is its children's time."""
    if m.proc is None:
        return None
    try:
        kids = Path(f"/proc/{m.proc.pid}/task/{m.proc.pid}/children").read_text().split()
        zygote = next(k for k in kids if Path(f"/proc/{k}/cmdline").exists())
        fields = Path(f"/proc/{zygote}/stat").read_text().rpartition(")")[2].split()
    except (OSError, StopIteration):
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _log_problems(m: Machine) -> list[str]:
    path = m.dir / "stderr.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    found = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|exception", re.IGNORECASE)
    return [line for line in text.splitlines() if found.search(line)]


TRACE = "trace.log"  # each daemon's trace_file: when every commit became durable there


def _propagation_ms(bed: Testbed, since_ns: int) -> list[float]:
    """For every commit made during the load: from durable at its origin to durable on
    the last other member, read from the daemons' trace files (the machine-wide
    monotonic clock), so nobody polls the daemons while commits travel."""
    made: dict[tuple[str, str], int] = {}
    durable: dict[tuple[str, str], list[int]] = {}
    for m in bed.machines:
        for line in (m.dir / TRACE).read_text().splitlines():
            at, kind, *rest = line.split()
            if kind not in ("commit", "apply") or int(at) < since_ns or len(rest) != 2:
                continue
            key = (rest[0], rest[1])
            if kind == "commit":
                made[key] = int(at)
            else:
                durable.setdefault(key, []).append(int(at))
    others = len(bed.machines) - 1
    return [
        (max(durable[key]) - at) / 1e6
        for key, at in made.items()
        if len(durable.get(key, ())) == others
    ]


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    run = Run()
    report: dict[str, Any] = {}
    # Every session logs in as admin: allow them all (the default is 16 per user).
    limit = max(16, args.sessions)
    with running(root, args.members, ping=args.ping, max_sessions_per_user=limit,
                 trace_file=TRACE) as bed:  # fmt: skip
        bed.wait(bed.linked, timeout=30, what="every member linked")
        if not args.no_define:
            bed[0].edit({"do": "define", "feature": FEATURE, "mode": "cluster",
                         "start": "empty"}, comment="load: the table")  # fmt: skip
        bed.wait(lambda: _settled(bed), timeout=30, what="convergence before the load")
        before = sum(bed[0].status()["vv"].values())
        load_started, load_started_ns = time.time(), time.monotonic_ns()
        cpu_before = [_cpu_seconds(m) for m in bed.machines]
        workers_before = [_workers_cpu_seconds(m) for m in bed.machines]
        monitor = Monitor(bed, args.monitor)
        monitor.start()
        try:
            times = asyncio.run(_load(bed, args, run))
        finally:
            monitor.stop()
            cpu = [
                None if a is None or b is None else round(b - a, 1)
                for a, b in zip(cpu_before, map(_cpu_seconds, bed.machines), strict=True)
            ]
            time.sleep(1.0)  # the last workers end once the node has read them
            workers_cpu = [
                None if a is None or b is None else round(b - a, 1)
                for a, b in zip(workers_before, map(_workers_cpu_seconds, bed.machines),
                                strict=True)
            ]  # fmt: skip
            report["daemons_alive_after_load"] = [
                m.proc is not None and m.proc.poll() is None for m in bed.machines
            ]
        log("every shell closed; waiting for the members to converge ...")
        waited = time.monotonic()
        try:
            bed.wait(lambda: _settled(bed), timeout=args.timeout * 2, what="convergence")
            converged = True
        except AssertionError as exc:
            log(str(exc))
            converged = False
        times["converge_s"] = time.monotonic() - waited
        statuses = [m.status() for m in bed.machines]
        missing: dict[str, list[str]] = {}
        present: set[str] = set()
        for m in bed.machines:
            rows = m.op("effective")["values"].get(FEATURE) or {}
            present |= {name for name in rows if name.endswith("@load.example.com")}
            missing[m.hostname] = sorted(run.confirmed - set(rows))
        lost = sorted(set().union(*missing.values()))
        inconsistencies = {s["hostname"]: s["inconsistencies"] for s in statuses}
        report.update(
            converged=converged,
            commits_in_vv=[sum(s["vv"].values()) - before for s in statuses],
            lost_rows=lost,
            missing_by_member={h: len(v) for h, v in missing.items()},
            unconfirmed_rows_present=sorted(present - run.confirmed),
            inconsistencies={h: len(v) for h, v in inconsistencies.items()},
            inconsistency_examples=[x for v in inconsistencies.values() for x in v][:10],
            daemon_log_problems={m.hostname: _log_problems(m)[:20] for m in bed.machines},
            alerts_during_load=_alerts(statuses, load_started),
            daemon_cpu_s=cpu,
            workers_cpu_s=workers_cpu,
            control_status_ms=_percentiles(monitor.latency),
            loop_late_ms={
                "p99_highest": max(monitor.loop_p99, default=None),
                "p99_median": _percentiles(monitor.loop_p99).get("p50"),
                "max": monitor.loop_max,
            },
            control_unanswered=monitor.unanswered,
            propagation_ms=_percentiles(_propagation_ms(bed, load_started_ns)),
            links_all_up_fraction=(
                round(monitor.all_up / monitor.samples, 3) if monitor.samples else None
            ),
            data_dir=str(root),
        )
    per_member = [len(range(i, args.sessions, args.members)) for i in range(args.members)]
    made = len(run.confirmed)
    report = {
        "command": args.command,
        "sessions": args.sessions,
        "rounds": args.rounds,
        "members": args.members,
        "sessions_per_member": per_member,
        "read_command": args.read,
        "table_defined_first": not args.no_define,
        "commits_expected": args.sessions * args.rounds,
        "commits_made": made,
        "commits_lost": len(report["lost_rows"]),
        "sessions_failed": len({f["session"] for f in run.failures}),
        "failures": run.failures[:20],
        "wall_s": round(times.get("rounds_s", 0.0), 2),
        "commits_per_s": round(made / times["rounds_s"], 1) if times.get("rounds_s") else None,
        "login_phase_s": round(times.get("login_phase_s", 0.0), 2),
        "converge_s": round(times["converge_s"], 2),
        "latency_ms": {kind: _percentiles(run.latency[kind]) for kind in KINDS},
        **report,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": args.loadavg,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    return report


def failed(report: dict[str, Any]) -> list[str]:
    why = []
    if report["commits_lost"]:
        why.append(f"{report['commits_lost']} commit(s) lost")
    if report["sessions_failed"]:
        why.append(f"{report['sessions_failed']} session(s) failed")
    if not report["converged"]:
        why.append("the members did not converge")
    if any(report["inconsistencies"].values()):
        why.append("inconsistencies recorded")
    if not all(report["daemons_alive_after_load"]):
        why.append("a daemon died")
    return why


def _cells(f: dict[str, Any]) -> str:
    return " ".join(f"{'-' if f[p] is None else f[p]:>8}" for p in ("p50", "p90", "p99", "max"))


def render(report: dict[str, Any]) -> Iterator[str]:
    r = report
    per = "/".join(map(str, r["sessions_per_member"]))
    yield (
        f"load: {r['sessions']} concurrent admin shells (SSH, PTY) x {r['rounds']} rounds "
        f"on {r['members']} members ({per}), 127.0.0.1"
    )
    yield f"command: {r['command']}"
    yield f"  commits made         {r['commits_made']} / {r['commits_expected']}"
    yield f"  commits lost         {r['commits_lost']}"
    yield f"  missing per member   {r['missing_by_member']}"
    yield f"  inconsistencies      {r['inconsistencies']}"
    yield f"  sessions failed      {r['sessions_failed']}"
    yield f"  converged            {r['converged']}, {r['converge_s']} s after the last shell quit"
    yield (
        f"  wall time (rounds)   {r['wall_s']} s, {r['commits_per_s']} commits/s "
        f"(login phase before it: {r['login_phase_s']} s)"
    )
    yield f"  commits in the version vectors, per member: {r['commits_in_vv']}"
    yield f"  rows present without a confirmed commit: {len(r['unconfirmed_rows_present'])}"
    yield f"  links all up in {r['links_all_up_fraction']} of the status probes during the load"
    yield f"  alerts raised during the load: {r['alerts_during_load']}"
    late = r["loop_late_ms"]
    yield (
        f"  links' loop, timers late (each member's last minute, per probe): p99 median "
        f"{late['p99_median']} ms, highest {late['p99_highest']} ms; latest {late['max']} ms"
    )
    commands = sum(f["n"] for f in r["latency_ms"].values())
    if None not in r["daemon_cpu_s"] and commands:
        per = sum(r["daemon_cpu_s"]) * 1000 / commands
        yield (
            f"  daemon CPU during the load: {r['daemon_cpu_s']} s, {per:.0f} ms per shell "
            f"command ({commands} commands, logins included)"
        )
    workers = r.get("workers_cpu_s") or [None]
    if None not in workers and commands:
        per = sum(workers) * 1000 / commands
        yield f"  shell workers' CPU during the load: {workers} s, {per:.0f} ms per shell command"
    yield f"  latency, ms               {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
    names = {
        "login": "login -> prompt",
        "clustermode": "clustermode",
        "edit": "edit (new row)",
        "commit": "commit + comment",
        "read": r["read_command"],
    }
    for kind, f in r["latency_ms"].items():
        yield f"    {names[kind]:<24}{f['n']:>5} {_cells(f)}"
    f = r["control_status_ms"]
    yield f"    {'control status':<24}{f['n']:>5} {_cells(f)}"
    f = r["propagation_ms"]
    yield f"    {'propagation':<24}{f['n']:>5} {_cells(f)}  (durable at the origin -> on all)"
    yield f"  control status probes unanswered: {r['control_unanswered']}"
    m = r["machine"]
    yield (
        f"  machine: {m['cores']} cores, Python {m['python']}; load average "
        f"{m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end"
    )
    for f in r["failures"]:
        yield f"  failure: session {f['session']} ({f['member']}) in {f['phase']}: {f['error']}"
    for host, lines in r["daemon_log_problems"].items():
        for line in lines:
            yield f"  {host} log: {line}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument(
        "--read",
        default=f"{FEATURE} clustershow",
        help="the read command of each round (it must run in cluster mode)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a shell may take to answer"
    )
    parser.add_argument(
        "--ping",
        type=float,
        default=60.0,
        help="the members' ping interval (60: the daemon's default; links are dropped "
        "after 2.5 intervals without a frame)",
    )
    parser.add_argument(
        "--no-define",
        action="store_true",
        help="do not define the table first: the first edit of each shell answers the "
        "'Start from' menu (concurrent definitions reset each other)",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the daemons' directories (logs) here")
    parser.add_argument(
        "--monitor", type=float, default=1.0, help="seconds between control status probes"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.command = shlex.join([".venv/bin/python", "bench/load.py", *given])
    args.loadavg = [round(x, 2) for x in os.getloadavg()]
    if args.sessions < 1 or args.rounds < 1 or args.members < 1:
        parser.error("--sessions, --rounds and --members must be at least 1")
    try:
        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            report = measure(args, args.data_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="clusterd-load-") as tmp:
                report = measure(args, Path(tmp))
    except KeyboardInterrupt:
        log("interrupted: the daemons are stopped")
        return 130
    why = failed(report)
    report["ok"] = not why
    report["why_failed"] = why
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(render(report)))
    if why:
        log("FAILED: " + "; ".join(why))
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
