"""Scale benchmark: 20, 50 and 100 members as separate processes on loopback.

    .venv/bin/python bench/scale.py [--sizes 20,50,100] [--commits 200] [--idle 10]
        [--ping 1.0] [--json]

Per size, a ``clusterd.dev.testbed`` of N real daemons (SSH full mesh on 127.0.0.1, ping
interval ``--ping``, every daemon with a trace file):

* start: every process started at once, until each answers on its control socket;
  mesh: until every member reports every other "up";
* idle, for ``--idle`` seconds: CPU and RSS per daemon, live links per member, and mesh
  frames and bytes per ping round (the daemons' own counters in ``status``: framing
  included, SSH's overhead not), per member and for the whole cluster;
* propagation: ``--commits`` commits on member 0, one at a time, each until durable on
  every member (the trace files, as in ``bench/propagation.py``): p50 / p99;
* join: a new standalone machine joins through member 0 with the admin passphrase;
  from the request until the join's answer, until the joiner has a link to every
  member, and until every member has a link to it (each then holds the same state:
  the join installs it).

A size that fails is reported and the run goes on (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from propagation import (
    TRACE,
    BenchError,
    bench_idle,
    bench_latency,
    log,
    machine_info,
    wait_for,
    wait_mesh,
)

from clusterd.core.errors import ClusterdError
from clusterd.dev.testbed import Machine, Testbed


def idle_cost(bed: Testbed, seconds: float, ping: float) -> dict[str, Any]:
    """``bench_idle`` (CPU, RSS, links, mesh traffic), with traffic per ping round."""
    idle = bench_idle(bed, seconds)
    frames = [f * ping for f in idle["frames_out_per_s"]]
    sent = [b * ping for b in idle["bytes_out_per_s"]]
    return {
        **idle,
        "frames_per_round_member": round(statistics.fmean(frames), 1),
        "bytes_per_round_member": round(statistics.fmean(sent), 0),
        "frames_per_round_total": round(sum(frames), 0),
        "bytes_per_round_total": round(sum(sent), 0),
    }


def join_one(root: Path, bed: Testbed, ping: float, timeout: float) -> dict[str, Any]:
    """A new standalone machine joins through member 0; how long until it is in."""
    n = len(bed.machines)
    new = Machine(root, n, ping, {"trace_file": TRACE})
    bed.machines.append(new)  # stopped with the others
    new.start()
    t0 = time.perf_counter()
    answer = new.join(bed[0])
    t_answer = time.perf_counter()
    if not answer.get("ok"):
        raise BenchError(f"join refused: {answer.get('error')}")

    def joiner_linked() -> bool:
        return bool(new.status()["links"] == n)

    wait_for(joiner_linked, timeout, "the joiner linked to every member", 0.02)
    t_linked = time.perf_counter()

    def all_see_it() -> bool:
        return all(
            any(p["serial"] == new.serial and p["state"] == "up" for p in m.status()["peers"])
            for m in bed.machines[:n]
        )

    wait_for(all_see_it, timeout, "every member linked to the joiner", 0.2)
    t_all = time.perf_counter()
    digests = {m.status()["digest"] for m in (bed[0], new)}
    return {
        "answer_s": round(t_answer - t0, 3),
        "joiner_linked_s": round(t_linked - t0, 3),
        "all_linked_s": round(t_all - t0, 3),
        "same_state": len(digests) == 1,
    }


def bench_size(root: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    log(f"{n} members: initialising")
    bed = Testbed(root, n, ping=args.ping, trace_file=TRACE)
    with bed:
        t0 = time.perf_counter()
        try:
            bed.start(timeout=30 + 3 * n)
        except ClusterdError as exc:
            raise BenchError(f"a daemon did not start: {exc}") from None
        started = time.perf_counter() - t0
        log(f"{n} members: started in {started:.1f} s; waiting for the full mesh")
        mesh, anomalies = wait_mesh(bed, 60 + 6 * n)
        log(f"{n} members: full mesh after {mesh:.1f} s more; idle {args.idle:g} s")
        result: dict[str, Any] = {
            "members": n,
            "start_s": round(started, 1),
            "mesh_s": round(mesh, 1),
            "mesh_anomalies": anomalies,
        }
        result["idle"] = idle_cost(bed, args.idle, args.ping)
        log(f"{n} members: {args.commits} commits")
        result.update(bench_latency(bed, args.commits, args.timeout))
        log(f"{n} members: a new machine joins")
        result["join"] = join_one(root, bed, args.ping, args.timeout + 2 * n)
    return result


def print_report(report: dict[str, Any]) -> None:
    print("clusterd scale benchmark")
    for key, value in report["machine"].items():
        print(f"  {key:<16} {value}")
    print(f"  {'wall time':<16} {report['wall_s']:.1f} s")
    for r in report["sizes"]:
        n = r["members"]
        print(f"\n{n} members")
        if "error" in r:
            print(f"   FAILED: {r['error']}")
            continue
        i, lat, j = r["idle"], r["latency_ms"], r["join"]
        print(
            f"   start {r['start_s']:.1f} s (all processes at once), full mesh {r['mesh_s']:.1f} s"
        )
        print(
            f"   propagation ({r['commits']} commits, request -> durable everywhere): "
            f"p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms, "
            f"max {lat['max']:.2f} ms"
        )
        print(
            f"   idle {i['seconds']:.0f} s: CPU per daemon mean {i['cpu_pct_mean']:.2f}% "
            f"(max {i['cpu_pct_max']:.2f}%, all {i['cpu_pct_total']:.1f}% of one core); RSS "
            f"mean {i['rss_mib_mean']:.1f} MiB (max {i['rss_mib_max']:.1f})"
        )
        print(
            f"   links: {i['links_per_member']:.0f} per member, {i['links_total']} in all; per "
            f"ping round: {i['frames_per_round_member']:.1f} frames and "
            f"{i['bytes_per_round_member']:.0f} bytes sent per member, "
            f"{i['frames_per_round_total']:.0f} frames and {i['bytes_per_round_total']:.0f} "
            "bytes in all"
        )
        print(
            f"   join of member {n + 1}: answer {j['answer_s']:.2f} s, joiner linked to all "
            f"{j['joiner_linked_s']:.2f} s, all linked to it {j['all_linked_s']:.2f} s, "
            f"same state: {j['same_state']}"
        )
        for text in r.get("mesh_anomalies", []):
            print(f"   MESH ANOMALY: {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="20,50,100", help="cluster sizes")
    parser.add_argument("--commits", type=int, default=200, help="commits per size")
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds")
    parser.add_argument("--ping", type=float, default=1.0, help="ping interval, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="per wait, seconds")
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 2:
        parser.error("--sizes: each of 2 members or more")
    report: dict[str, Any] = {"machine": machine_info(), "sizes": []}
    report["machine"]["ping_interval_s"] = args.ping
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clusterd-scale-") as tmp:
        for n in sizes:
            try:
                r = bench_size(Path(tmp) / f"n{n}", n, args)
            except (BenchError, ClusterdError, OSError) as exc:
                log(f"{n} members FAILED: {exc}")
                r = {"members": n, "error": str(exc)}
            report["sizes"].append(r)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print_report(report)
    if args.json:
        print(json.dumps(report, indent=1))
    return 1 if any("error" in r for r in report["sizes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
