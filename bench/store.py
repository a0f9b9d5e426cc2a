"""Store benchmarks: commit throughput, remote apply, effective configuration, big tables,
the commit chain's cost (hashes and Ed25519 signatures).

    .venv/bin/python bench/store.py [--quick] [--json] [--only remote] [--profile]

Stores are SQLite files in a temporary directory, removed at the end.  ``--profile``
runs cProfile over the timed regions only (the figures are then slower).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import hashlib
import io
import json
import os
import platform
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy

from clusterd.core import chain, layers, membership
from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit
from clusterd.node.seal import MachineSealer
from clusterd.schema.catalogue import CATALOGUE
from clusterd.schema.feature import Level
from clusterd.store.sealing import Chains
from clusterd.store.session import Session
from clusterd.store.store import Store
from clusterd.trust import lifecycle

CLUSTER = Mode.cluster()
ROUTE = {"destinations": [{"host": "mx.example.com", "port": 25}]}
FULL = dict(single=2000, multi=50, remote=10_000, machines=100, big=100_000, chain=2000)
QUICK = dict(single=200, multi=5, remote=1000, machines=20, big=10_000, chain=200)


class Bench:
    """Prints figures as they come, keeps them for --json, profiles the timed parts."""

    def __init__(self, tmp: Path, profile: bool) -> None:
        self.tmp = tmp
        self.figures: list[dict[str, Any]] = []
        self.profiler = cProfile.Profile() if profile else None
        self.key = ""

    def section(self, title: str) -> None:
        print(f"\n{list(SECTIONS).index(self.key) + 1}. {title}")

    def store(self, name: str, origin: str = "SER-A", host: str = "a.example.com",
              sealer: MachineSealer | None = None) -> Store:  # fmt: skip
        return Store(self.tmp / f"{name}.db", origin=origin, hostname=host, sealer=sealer)

    def figure(self, name: str, value: float, unit: str) -> None:
        self.figures.append(dict(section=self.key, name=name, value=round(value, 4), unit=unit))
        print(f"  {name:<56} {value:>12,.3f} {unit}")

    @contextmanager
    def timer(self) -> Iterator[list[float]]:
        """Yields a list that holds the elapsed seconds once the block is done."""
        box: list[float] = []
        if self.profiler:
            self.profiler.enable()
        start = time.perf_counter()
        yield box
        box.append(time.perf_counter() - start)
        if self.profiler:
            self.profiler.disable()

    def print_profile(self, title: str, top: int = 25) -> None:
        if self.profiler is None:
            return
        for order in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(self.profiler, stream=out).sort_stats(order).print_stats(top)
            print(f"\n--- profile of {title}, by {order} ---\n{out.getvalue()}", file=sys.stderr)
        self.profiler = cProfile.Profile()


def cluster_store(bench: Bench) -> Store:
    """A store in cluster ``bench`` with smtproutes and unsubscribe defined (empty)."""
    store = bench.store(bench.key)
    lifecycle.create_cluster(store, "bench")
    session = Session(store, "admin")
    for command in ("smtproutes", "unsubscribe"):
        session.define(command, CLUSTER, Start.EMPTY)
    session.commit("define the tables")
    return store


def write_rows(session: Session, command: str, mode: Mode, rows: dict[str, Any]) -> None:
    """Rows as an admin writes them: ``set_row``, validated, into the session's pending."""
    for name, data in rows.items():
        session.set_row(command, mode, name, data)


def unsubscribe_rows(start: int, count: int, tag: str = "u") -> dict[str, Any]:
    return {f"{tag}{i}@example.com": {"comment": f"row {i}"} for i in range(start, start + count)}


def bench_commits(bench: Bench, commits: int, rows: int) -> None:
    """1-entry commits through set_row (smtproutes, 100 rows), or commits of new rows."""
    what = "set_row on smtproutes" if rows == 1 else "new unsubscribe rows"
    bench.section(f"{commits:,} commits of {rows:,} entr{'y' if rows == 1 else 'ies'} ({what})")
    store = cluster_store(bench)
    session = Session(store, "admin")
    build = commit = 0.0
    for i in range(commits):
        with bench.timer() as t1:
            if rows == 1:
                session.set_row("smtproutes", CLUSTER, f"d{i % 100}.example.com", ROUTE)
            else:
                write_rows(session, "unsubscribe", CLUSTER, unsubscribe_rows(i * rows, rows))
        with bench.timer() as t2:
            session.commit(f"commit {i}")
        build, commit = build + t1[0], commit + t2[0]
    bench.figure(
        "commits per second (build pending + commit)", commits / (build + commit), "commits/s"
    )
    bench.figure("commits per second (store.commit alone)", commits / commit, "commits/s")
    bench.figure("entries per second (store.commit alone)", commits * rows / commit, "entries/s")
    bench.figure("mean store.commit latency", commit / commits * 1000, "ms")
    store.close()


def remote_commits(bench: Bench, count: int) -> tuple[Store, list[Commit]]:
    """Store A, and ``count`` commits of 1-5 rows made on store B of the same cluster."""
    a = cluster_store(bench)
    b = bench.store("remote-b", "SER-B", "b.example.com")
    lifecycle.join(b, a.export_state())
    session = Session(b, "admin")
    for i in range(count):
        n = 1 + i % 5
        if i % 2:
            rows = {f"r{i}-{j}.example.com": ROUTE for j in range(n)}
            write_rows(session, "smtproutes", CLUSTER, rows)
        else:
            write_rows(session, "unsubscribe", CLUSTER, unsubscribe_rows(i * 5, n, "b"))
        session.commit(f"remote {i}")
    missing = b.commits_missing_from(a.version_vector) or []
    b.close()
    return a, missing


def bench_remote(bench: Bench, count: int, batch: int = 1000) -> None:
    bench.section(f"apply_remote of {count:,} commits (1-5 rows, batches of {batch:,})")
    a, missing = remote_commits(bench, count)
    entries = sum(len(c.writes) for c in missing)
    with bench.timer() as elapsed:
        for k in range(0, len(missing), batch):
            result = a.apply_remote(missing[k : k + batch])
    assert result.waiting == 0 and a.version_vector.get("SER-B") == missing[-1].id.seq
    print(f"  ({len(missing):,} commits fetched, {entries:,} entries)")
    bench.figure("apply_remote: commits per second", len(missing) / elapsed[0], "commits/s")
    bench.figure("apply_remote: entries/s (target >= 20,000)", entries / elapsed[0], "entries/s")
    bench.figure("apply_remote: total", elapsed[0], "s")
    a.close()


def add_members(session: Session, machines: int, groups: int) -> list[str]:
    """Groups G1..Gn and machines m000.example.com..., written as cluster operations
    write them (``clusterd.core.membership``)."""
    names = [f"m{i:03d}.example.com" for i in range(machines)]
    view = session.view
    for g in range(1, groups + 1):
        membership.add_group(view, CATALOGUE, f"G{g}")
    for i, name in enumerate(names):
        membership.admit(view, CATALOGUE, name, {"serial": f"SER-M{i}"}, f"G{1 + i % groups}")
    session.commit("membership")
    return names


def settings(session: Session, names: list[str], groups: int) -> None:
    """Defaults at cluster, tables and overrides at groups, a few machine overrides."""
    for feature in CATALOGUE:
        skip = feature.internal or feature.command in ("smtproutes", "unsubscribe")
        if not skip and Level.CLUSTER in feature.levels:
            session.define(feature.command, CLUSTER, Start.DEFAULTS)
    write_rows(session, "unsubscribe", CLUSTER, unsubscribe_rows(0, 1000))
    write_rows(session, "smtproutes", CLUSTER, {f"c{i}.example.com": ROUTE for i in range(100)})
    for g in range(1, groups + 1):
        group = Mode.group(f"G{g}")
        session.set_record("settz", group, {"timezone": "Europe/Paris"})
        session.define("smtproutes", group, Start.EMPTY)
        write_rows(session, "smtproutes", group, {f"g{i}.example.com": ROUTE for i in range(20)})
    for i, name in enumerate(names):
        machine = Mode.machine(name)
        session.set_record("sethostname", machine, {"hostname": name})
        if i % 10 == 0:
            session.set_record("dnsconfig", machine, {"timeout_seconds": 30})
            session.set_record("settz", machine, {"timezone": "America/New_York"})
    session.commit("settings")


def bench_effective(bench: Bench, machines: int, groups: int = 5) -> None:
    bench.section(f"effective config: {machines} machines in {groups} groups")
    store = cluster_store(bench)
    session = Session(store, "admin")
    names = add_members(session, machines, groups)
    settings(session, names, groups)
    features = sum(1 for f in CATALOGUE if not f.internal)
    with bench.timer() as each:
        for name in names:
            resolved = layers.effective(store.state, CATALOGUE, name)
            assert len(resolved) == features
    print(f"  ({features} features; 1,000 unsubscribe + 100 smtproutes rows at cluster)")
    bench.figure("layers.effective: per machine", each[0] / machines * 1000, "ms")
    bench.figure(f"layers.effective: all {machines} machines, one by one", each[0] * 1000, "ms")
    store.close()


def bench_big(bench: Bench, rows: int) -> None:
    bench.section(f"one commit of a {rows:,}-row unsubscribe table (target <= 3 s)")
    store = cluster_store(bench)
    session = Session(store, "admin")
    table = unsubscribe_rows(0, rows)
    with bench.timer() as build:
        write_rows(session, "unsubscribe", CLUSTER, table)
    with bench.timer() as commit:
        session.commit("import the unsubscribe list")
    bench.figure(f"build pending ({rows:,} set_row calls)", build[0], "s")
    bench.figure("commit (store.commit)", commit[0], "s")
    bench.figure("build + commit (target <= 3 s)", build[0] + commit[0], "s")
    with bench.timer() as one:
        session.set_row("unsubscribe", CLUSTER, "one.more@example.com", {"comment": "x"})
    bench.figure(f"one set_row on the committed {rows:,}-row table", one[0] * 1000, "ms")
    session.clear()
    store.close()
    with bench.timer() as load:
        store = bench.store(bench.key)
    bench.figure("reopen the store (load)", load[0], "s")
    store.close()


class NoChain(Chains):
    """The store as before the chain: rows written without a seal, nothing checked."""

    def seal(self, conn: Any, commits: list[Commit], rows: list[Any], local: bool,
             keys: Any) -> tuple[list[Any], list[Commit], dict[str, Any]]:  # fmt: skip
        return rows, commits, {}


CHAIN_MODES = {  # how the store seals: none, hashes only, hashes and signatures
    "no chain": lambda bench, name: NoChain(None),
    "chain, unsigned": lambda bench, name: Chains(None),
    "chain, signed": lambda bench, name: Chains(sealer_of(bench, name)),
}


def sealer_of(bench: Bench, name: str) -> MachineSealer:
    import asyncssh  # (the daemon's key format)

    path = bench.tmp / f"{name}.key"
    if not path.exists():
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(path)
    return MachineSealer(path)


def public_of(bench: Bench, name: str) -> str:
    import asyncssh

    key = asyncssh.read_private_key(bench.tmp / f"{name}.key")
    return " ".join(key.export_public_key().decode().split()[:2])


def chained(bench: Bench, mode: str, tag: str) -> Store:
    """A new cluster's store sealing as ``mode`` says, its machine key in membership."""
    store = bench.store(f"chain-{mode}-{tag}")
    store.chains = CHAIN_MODES[mode](bench, "a")
    key = public_of(bench, "a") if mode == "chain, signed" else None
    lifecycle.create_cluster(store, "bench", machine={"machine_key": key} if key else {})
    return store


def bench_chain(bench: Bench, commits: int, rounds: int = 5) -> None:
    """What sealing costs: commits made here, commits applied from a peer, each with no
    chain (the store before it), hashes only, and hashes and signatures (the ways
    taken in turn, ``rounds`` times: the median is printed); the parts alone; and
    clustercheck's walk of the log."""
    bench.section(f"the commit chain: {commits:,} one-entry commits made and applied, "
                  f"3 ways, median of {rounds} rounds")  # fmt: skip
    sealer_of(bench, "a")
    sealer_of(bench, "b")
    found: dict[str, list[float]] = {}
    for r in range(rounds):
        for mode in CHAIN_MODES:
            for name, value in chain_round(bench, mode, commits, f"{r}").items():
                found.setdefault(name, []).append(value)
    for name, values in found.items():
        unit = "µs" if "per commit" in name else "s" if "walk" in name else "commits/s"
        bench.figure(name, sorted(values)[len(values) // 2], unit)
    parts(bench)


def chain_round(bench: Bench, mode: str, commits: int, tag: str) -> dict[str, float]:
    store = chained(bench, mode, tag)
    session = Session(store, "admin")
    session.define("smtproutes", CLUSTER, Start.EMPTY)
    session.commit("define")
    spent = 0.0
    for i in range(commits):
        session.set_row("smtproutes", CLUSTER, f"d{i % 100}.example.com", ROUTE)
        with bench.timer() as t:
            session.commit(f"commit {i}")
        spent += t[0]
    out = {f"store.commit, {mode}: commits/s": commits / spent,
           f"store.commit, {mode}: per commit": spent / commits * 1e6}  # fmt: skip
    b = bench.store(f"chain-{mode}-{tag}-b", "SER-B", "b.example.com")
    b.chains = CHAIN_MODES[mode](bench, "b")
    key = public_of(bench, "b") if mode == "chain, signed" else None
    lifecycle.join(b, store.export_state(), machine={"machine_key": key} if key else {})
    sb = Session(b, "admin")
    for i in range(commits):
        sb.set_row("smtproutes", CLUSTER, f"b{i % 100}.example.com", ROUTE)
        sb.commit(f"remote {i}")
    missing = b.commits_missing_from(store.version_vector) or []
    b.close()
    with bench.timer() as applied:
        for k in range(0, len(missing), 1000):
            store.apply_remote(missing[k : k + 1000])
    assert store.version_vector["SER-B"] == missing[-1].id.seq
    out[f"apply_remote, {mode}: commits/s"] = len(missing) / applied[0]
    out[f"apply_remote, {mode}: per commit"] = applied[0] / len(missing) * 1e6
    if mode == "chain, signed":
        with bench.timer() as walked:
            checked = store.check_chains(store.keys())
        assert all(c.broken is None and c.unverifiable == 0 for c in checked)
        total = sum(c.commits for c in checked)
        out[f"clustercheck's walk of {total:,} commits (check_chains)"] = walked[0]
        out["clustercheck's walk: per commit"] = walked[0] / total * 1e6
    store.close()
    return out


def parts(bench: Bench, n: int = 2000) -> None:
    """The pieces alone: a small commit's hash, an Ed25519 signature and its check."""
    sealer = sealer_of(bench, "a")
    public = public_of(bench, "a")
    header = ["SER-A", 12, 1 << 60, "admin", 1.5, "a comment", [["SER-B", 3]], "00" * 32]
    writes = '[["smtproutes","cluster","d1.example.com",{"destinations":[]},false]]'
    digest = hashlib.sha256(chain.preimage(header, writes)).digest()
    sig = str(sealer.sign(digest))
    for name, work in (
        ("sha256 of a one-entry commit (preimage + hash)",
         lambda: hashlib.sha256(chain.preimage(header, writes)).digest()),
        ("Ed25519 sign", lambda: sealer.sign(digest)),
        ("Ed25519 verify", lambda: sealer.verify(public, digest, sig)),
    ):  # fmt: skip
        start = time.perf_counter()
        for _ in range(n):
            work()
        bench.figure(name, (time.perf_counter() - start) / n * 1e6, "µs")


def machine_info() -> dict[str, Any]:
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "nproc": len(affinity(0)) if affinity else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


SECTIONS: dict[str, Callable[[Bench, dict[str, int]], None]] = {
    "single": lambda b, s: bench_commits(b, s["single"], 1),
    "multi": lambda b, s: bench_commits(b, s["multi"], 1000),
    "remote": lambda b, s: bench_remote(b, s["remote"]),
    "effective": lambda b, s: bench_effective(b, s["machines"]),
    "big": lambda b, s: bench_big(b, s["big"]),
    "chain": lambda b, s: bench_chain(b, s["chain"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run these sections")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed parts")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    info = machine_info()
    print("clusterd store benchmark" + (" (quick)" if args.quick else ""))
    for key, value in info.items():
        print(f"  {key:<12} {value}")
    with tempfile.TemporaryDirectory(prefix="clusterd-bench-") as tmp:
        bench = Bench(Path(tmp), args.profile)
        for name in args.only or list(SECTIONS):
            bench.key = name
            SECTIONS[name](bench, sizes)
            bench.print_profile(name)
    if args.json:
        report = {"machine": info, "quick": args.quick, "figures": bench.figures}
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
