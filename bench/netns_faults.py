"""Fault campaign on real daemons in network namespaces: partitions, loss, delay, kill -9.

    .venv/bin/python bench/netns_faults.py [--seed S] [--commits 1000] [--members 5]
        [--ping 1.0] [--rate 12] [--round 4] [--json] [--keep]

Needs root, ``ip`` and ``nft``.  The network exists only inside namespaces this run
creates (named ``cdf<pid>-...``): a "hub" namespace holding a bridge, and one namespace
per member with its own ``lo`` up and a veth to the bridge carrying its address in
10.213.7.0/24 (nothing is added to the root namespace).  Every member is a
``clusterd.dev.testbed`` machine (``clusterd init``, membership seeded into every store),
its daemon started with ``ip netns exec NS python -m clusterd run`` listening on its
namespace address, port 2200; the harness talks to the control sockets (Unix files)
from the root namespace.  Namespaces and daemons are removed at the end whatever
happens (an error, Ctrl-C, SIGTERM).

The run, all choices drawn from ``random.Random(seed)`` and logged on stderr:

* Commits: ``--commits`` edits, each setting its own row ``cNNNNN@x.example`` of the
  cluster-wide ``unsubscribe`` table on a random member that is up, paced at ``--rate``
  per second; every 25th commit is followed by concurrent edits of one shared row
  ``hotN@x.example`` on 2 or 3 members at once (conflicts, resolved by the protocol).
* Faults, chosen at the start of every round of ``--round`` seconds' worth of commits
  (the first rounds force one of each kind; a seed gives the same schedule, which fault
  at which commit, whatever the timing; only which of the members up takes a commit
  may differ): partitions (two random sides, ``drop`` for the other side's
  addresses in the input and output chains of every member's own nft table); random
  loss (``numgen random mod 100 < P drop`` on a member's eth0, both ways, P 5-30 %);
  kill -9 of a member, restarted one or two rounds later; link delay
  (``link_delay_ms`` / ``link_jitter_ms`` in the member's ``clusterd.toml``, applied
  when the daemon starts: one member from the start, then re-drawn at each restart;
  this kernel has no netem, so the transport holds the frames).
* Heal: nft rules flushed, killed members restarted (link delays stay as they are: a
  property of the members, not of the network).  Time to converge: from the heal
  until every member reports the same version vector and digest (nothing waiting).

Checks (any failure is a violation: exit status 1): digests and version vectors equal
everywhere; every acknowledged commit's row present on every member with the value
written (rows lost = 0); shared rows equal everywhere and one of the values written;
no inconsistency recorded for a row written once, and the same record on every member;
every member has an open link to every other after the heal (a peer reporting another
state than "up" on an open link is printed as a MESH ANOMALY, not counted);
``PRAGMA integrity_check`` = ok on every store, read-only, after each kill -9 and after
the final stop; every daemon exits cleanly on SIGTERM at the end.  The report goes to
stdout (``--json``: JSON), progress to stderr; the reproducing command is printed with
the figures, with the alerts every daemon logged (by kind).

Findings: known defects of clusterd that this campaign shows, reported apart from the
violations (``--strict`` counts them as violations):

* "mesh anomaly": a member reports a peer "down" although their link is open and
  working.  ``Node.dial_failed`` and ``Node._lost`` (an outbound link lost during its
  handshake) call ``_retry_later``, which sets ``state = "down"`` even when the peer
  already has another live link (``peer.link``); the state stays wrong while that link
  lives, and ``live_peers`` (what pings advertise, what relays route by) leaves it out.
* "relay loop": a relay sent back to its source.  ``Node.route`` picks any neighbour
  whose last advertised links include the destination; two members that lost the
  destination at once (a partition) route to each other, and the source receives its
  own message: "relayed message from non-member <itself>", a protocol error that closes
  a healthy link.
* "loss attribution": the ``by`` of a recorded loss depends on arrival order when
  three or more members write one row concurrently (``merge`` records the version that
  beat the loser at that moment), so members record the same losses with different
  ``by``; the (row, lost version) pairs are the same everywhere (that is checked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clusterd.core.errors import ClusterdError
from clusterd.dev.testbed import Machine, Testbed, seed_membership
from clusterd.node import config as daemon_config

SUBNET = "10.213.7"  # a private /24 that exists only inside our namespaces
PORT = 2200
TABLE = "clusterd_faults"  # each member namespace's own nft table
FEATURE = "unsubscribe"
DEFINE = {"do": "define", "feature": FEATURE, "mode": "cluster", "start": "empty"}
HOT_EVERY = 25
FAULTS = ("partition", "loss", "delay", "kill")  # the kinds of fault (other events: heals)


@dataclass
class Options:
    seed: int
    commits: int = 1000
    members: int = 5
    ping: float = 1.0
    rate: float = 12.0  # commits per second (at most)
    round_s: float = 4.0  # fault decisions every this many seconds
    converge_timeout: float = 300.0
    strict: bool = False  # findings (known defects) count as violations


def requirements() -> str | None:
    """Why this cannot run here (not root, ``ip`` or ``nft`` missing), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (apt-get install {'iproute2' if tool == 'ip' else 'nftables'})"
    return None


def sh(*argv: str, stdin: str | None = None) -> None:
    found = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if found.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: {found.stderr.strip() or found.returncode}")


class Net:
    """The namespaces: a hub with bridge ``br0``, members with ``eth0`` on it."""

    def __init__(self, n: int, tag: str | None = None) -> None:
        self.n = n
        self.tag = tag or f"cdf{os.getpid()}"
        self.hub = f"{self.tag}-hub"
        self.created: list[str] = []  # namespaces to delete, in creation order

    def ns(self, i: int) -> str:
        return f"{self.tag}-m{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{10 + i}"

    def up(self) -> None:
        self._add(self.hub)
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i in range(self.n):
            ns = self.ns(i)
            self._add(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.hub, "link", "add", f"v{i}", "type", "veth",
               "peer", "name", "eth0", "netns", ns)  # fmt: skip
            sh("ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.nft(i, [])

    def _add(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self.created.append(ns)

    def nft(self, i: int, rules: list[tuple[str, str]]) -> None:
        """Replace member i's rules (atomically) by ``(chain, rule)`` pairs."""
        text = [
            f"table inet {TABLE} {{",
            "  chain input { type filter hook input priority 0; policy accept; }",
            "  chain output { type filter hook output priority 0; policy accept; }",
            "}",
            f"flush chain inet {TABLE} input",
            f"flush chain inet {TABLE} output",
            *(f"add rule inet {TABLE} {chain} {rule}" for chain, rule in rules),
        ]
        sh("ip", "netns", "exec", self.ns(i), "nft", "-f", "-", stdin="\n".join(text) + "\n")

    def down(self) -> list[str]:
        """Delete every namespace we created; what could not be deleted (never raises)."""
        left = []
        for ns in reversed(self.created):
            try:
                sh("ip", "netns", "del", ns)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                left.append(f"{ns}: {exc}")
        self.created.clear()
        return left


class NsTestbed(Testbed):
    """A ``Testbed`` whose machines live in the members' namespaces."""

    def __init__(self, root: Path, net: Net, ping: float) -> None:
        self.machines = []
        for i in range(net.n):
            extra = {"listen": net.address(i), "ssh_port": PORT, "reverse_dns": "off"}
            m = Machine(root, i, ping, extra)
            m.prefix = ["ip", "netns", "exec", net.ns(i)]
            self.machines.append(m)
        seed_membership(self.machines)


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a store, opened read-only: "ok" or the problems."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return "; ".join(str(r[0]) for r in db.execute("PRAGMA integrity_check"))
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"cannot check: {exc}"


def set_row(name: str, comment: str) -> dict[str, Any]:
    return {"do": "set_row", "feature": FEATURE, "mode": "cluster", "row": name,
            "value": {"comment": comment}}  # fmt: skip


class Campaign:
    def __init__(self, opts: Options, root: Path, progress: Callable[[str], None]) -> None:
        self.opts = opts
        self.root = root
        self.say = progress
        self.rng = random.Random(opts.seed)  # the fault schedule: the same for a seed
        self.pick = random.Random(opts.seed ^ 0x5EED)  # who takes each commit (of those up)
        self.net = Net(opts.members)
        self.bed: NsTestbed | None = None
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.faults: Counter[str] = Counter()
        self.violations: list[str] = []
        self.down: dict[int, int] = {}  # killed member -> the round it comes back
        self.starting: set[int] = set()  # restarted, control socket not answering yet
        self.sides: tuple[list[int], list[int]] | None = None  # the current partition
        self.loss: dict[int, int] = {}  # member -> loss percentage
        self.delay: dict[int, tuple[float, float]] = {}  # member -> (delay, jitter) ms
        self.acked: dict[str, str] = {}  # row -> the comment written (acknowledged)
        self.hot: dict[str, list[str]] = {}  # shared row -> acknowledged comments
        self.unacked: list[dict[str, str]] = []
        self.kill_checks: list[dict[str, Any]] = []
        self.k = 0  # commits made so far
        # Known defects, reported apart (violations with --strict): module docstring.
        self.findings: dict[str, list[str]] = {}

    # -- helpers ------------------------------------------------------------------------

    @property
    def machines(self) -> list[Machine]:
        assert self.bed is not None
        return self.bed.machines

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def event(self, kind: str, **details: Any) -> None:
        self.faults[kind] += 1
        entry = {"t": self.now(), "at_commit": self.k, "kind": kind, **details}
        self.events.append(entry)
        self.say(f"[{entry['t']:7.1f}s] #{self.k} {kind} "
                 + " ".join(f"{k}={v}" for k, v in details.items()))  # fmt: skip

    def up(self) -> list[Machine]:
        return [
            m for m in self.machines if m.index not in self.down and m.index not in self.starting
        ]

    def name(self, i: int) -> str:
        return f"m{i}"

    def apply_rules(self) -> None:
        for i in range(self.opts.members):
            rules: list[tuple[str, str]] = []
            if self.sides is not None:
                a, b = self.sides
                other = b if i in a else a
                addrs = ", ".join(self.net.address(j) for j in other)
                rules += [("input", f"ip saddr {{ {addrs} }} drop"),
                          ("output", f"ip daddr {{ {addrs} }} drop")]  # fmt: skip
            if i in self.loss:
                lose = f"numgen random mod 100 < {self.loss[i]} drop"
                rules += [("input", f'iifname "eth0" {lose}'), ("output", f'oifname "eth0" {lose}')]
            self.net.nft(i, rules)

    def set_delay(self, m: Machine, delay: float, jitter: float) -> None:
        m.config = daemon_config.save(m.config, link_delay_ms=delay, link_jitter_ms=jitter)
        if delay or jitter:
            self.delay[m.index] = (delay, jitter)
            self.event("delay", member=self.name(m.index), delay_ms=delay, jitter_ms=jitter)
        else:
            self.delay.pop(m.index, None)

    # -- phases -------------------------------------------------------------------------

    def setup(self) -> None:
        self.say(f"namespaces {self.net.tag}-*: {self.opts.members} members on {SUBNET}.0/24")
        self.net.up()
        self.bed = NsTestbed(self.root, self.net, self.opts.ping)
        first = self.rng.randrange(self.opts.members)
        self.set_delay(self.machines[first], self.rng.choice([50.0, 100.0, 150.0]), 50.0)
        for m in self.machines:
            m.start(wait=False)
        for m in self.machines:
            m.wait_ready(60.0)
        self.bed.wait(self.meshed, timeout=90.0, what="a full mesh")
        self.machines[0].edit(DEFINE)
        self.bed.wait(self.bed.converged, timeout=60.0, what="the table definition")
        self.say(f"[{self.now():7.1f}s] linked and defined; {self.opts.commits} commits follow")

    def round(self, r: int) -> None:
        rng, n = self.rng, self.opts.members
        for i, due in sorted(self.down.items()):
            if r >= due:
                self.restart(i)
        forced = {0: "partition", 1: "loss", 2: "kill"}.get(r)
        if forced == "partition" or (self.sides is None and rng.random() < 0.35):
            order = rng.sample(range(n), n)
            cut = rng.randint(1, n // 2)
            self.sides = (sorted(order[:cut]), sorted(order[cut:]))
            self.apply_rules()
            self.event("partition", sides=f"{self.sides[0]}|{self.sides[1]}")
        elif self.sides is not None and rng.random() < 0.5:
            self.sides = None
            self.apply_rules()
            self.event("partition-healed")
        if forced == "loss" or rng.random() < 0.3:
            for i in rng.sample(range(n), rng.randint(1, 2)):
                self.loss[i] = rng.randint(5, 30)
                self.event("loss", member=self.name(i), percent=self.loss[i])
            self.apply_rules()
        elif self.loss and rng.random() < 0.4:
            i = rng.choice(sorted(self.loss))
            del self.loss[i]
            self.apply_rules()
            self.event("loss-cleared", member=self.name(i))
        victims = [m for m in self.machines if m.index not in self.down]  # starting or not
        room = len(self.down) < 2 and len(victims) > 1
        if room and (forced == "kill" or rng.random() < 0.25):
            self.kill(rng.choice(victims), r + rng.randint(1, 2))

    def kill(self, m: Machine, back: int) -> None:
        m.kill()
        self.starting.discard(m.index)
        self.down[m.index] = back
        self.event("kill", member=self.name(m.index), signal="SIGKILL", restart_round=back)
        result = integrity(m.config.data_dir / "store.db")
        self.kill_checks.append({"member": self.name(m.index), "t": self.now(), "result": result})
        if result != "ok":
            self.violations.append(f"{m.hostname}: integrity after kill -9: {result}")

    def restart(self, i: int) -> None:
        m = self.machines[i]
        if self.rng.random() < 0.5:
            self.set_delay(m, float(self.rng.randint(20, 250)), float(self.rng.randint(0, 100)))
        else:
            self.set_delay(m, 0.0, 0.0)
        del self.down[i]
        m.start(wait=False)
        self.starting.add(i)
        self.event("restart", member=self.name(i), delay_ms=self.delay.get(i, (0.0, 0.0)))

    def check_starting(self) -> None:
        for i in sorted(self.starting):
            m = self.machines[i]
            if m.proc is not None and m.proc.poll() is not None:
                raise ClusterdError(f"{m.hostname} exited after a restart: {m.tail()}")
            with contextlib.suppress(ClusterdError, OSError, ValueError):
                if m.ask({"op": "status"}, timeout=5.0).get("ok"):
                    self.starting.discard(i)

    def commit(self, k: int) -> None:
        m = self.pick.choice(self.up())
        name, comment = f"c{k:05d}@x.example", f"{k} by {m.hostname}"
        try:
            m.edit(set_row(name, comment), comment=f"commit {k}")
            self.acked[name] = comment
        except (ClusterdError, OSError, ValueError) as exc:
            self.unacked.append({"row": name, "member": m.hostname, "error": str(exc)[:200]})
            self.say(f"[{self.now():7.1f}s] edit {name} on {m.hostname} failed: {exc}")

    def hot_edits(self, j: int) -> None:
        up = self.up()
        if len(up) < 2:
            return
        writers = self.pick.sample(up, min(len(up), self.pick.randint(2, 3)))
        name = f"hot{j:03d}@x.example"
        self.hot[name] = []
        lock = threading.Lock()

        def write(m: Machine) -> None:
            comment = f"{name} by {m.hostname}"
            try:
                m.edit(set_row(name, comment), comment="concurrent")
                with lock:
                    self.hot[name].append(comment)
            except (ClusterdError, OSError, ValueError) as exc:
                with lock:
                    self.unacked.append({"row": name, "member": m.hostname, "error": str(exc)})

        threads = [threading.Thread(target=write, args=(m,)) for m in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.faults["concurrent-edits"] += 1

    def load(self) -> float:
        """The commits, with a round of faults every ``round_s`` seconds (every
        ``round_s`` x ``rate`` commits, so that a seed replays the same schedule); at
        least 3 rounds (after the last commit, by the clock).  Seconds taken."""
        start = time.monotonic()
        per_round = max(1, round(self.opts.round_s * self.opts.rate))
        next_round, r, k = start, 0, 0
        next_check = start
        while k < self.opts.commits or r < 3:
            now = time.monotonic()
            if k >= r * per_round if k < self.opts.commits else now >= next_round:
                self.say(f"[{self.now():7.1f}s] round {r}: {k}/{self.opts.commits} commits, "
                         f"up {[m.index for m in self.up()]}, down {sorted(self.down)}, "
                         f"starting {sorted(self.starting)}")  # fmt: skip
                self.round(r)
                r += 1
                next_round = now + self.opts.round_s
            if self.starting and now >= next_check:
                self.check_starting()
                next_check = now + 0.3
            if k >= self.opts.commits:
                time.sleep(0.1)
                continue
            wait = start + k / self.opts.rate - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.3))
                continue
            self.commit(k)
            k = self.k = k + 1
            if k % HOT_EVERY == 0:
                self.hot_edits(k // HOT_EVERY)
        return time.monotonic() - start

    def heal(self) -> dict[str, Any]:
        """Flush the rules, restart the killed; time until everyone agrees."""
        assert self.bed is not None
        t = time.monotonic()
        self.sides, self.loss = None, {}
        self.apply_rules()
        for i in sorted(self.down):
            self.restart(i)
        self.event("heal", delays={self.name(i): d for i, d in sorted(self.delay.items())})
        for i in sorted(self.starting):
            self.machines[i].wait_ready(60.0)
        self.starting.clear()
        converged = None
        deadline = t + self.opts.converge_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterdError, OSError, ValueError):
                s = [m.status() for m in self.machines]
                if (
                    len({json.dumps(x["vv"], sort_keys=True) for x in s}) == 1
                    and len({x["digest"] for x in s}) == 1
                    and not any(x["waiting_commits"] or x["disconnected"] for x in s)
                ):
                    converged = time.monotonic() - t
                    break
            time.sleep(0.25)
        if converged is None:
            self.violations.append(
                f"no convergence within {self.opts.converge_timeout:.0f} s of the heal:\n"
                + self.bed.describe()
            )
        self.say(f"[{self.now():7.1f}s] converged: {converged}")
        linked = None
        with contextlib.suppress(AssertionError):
            self.bed.wait(self.meshed, timeout=90.0, what="a full mesh after the heal")
            linked = time.monotonic() - t
        if linked is None:
            self.violations.append("a pair without a link 90 s after the heal:\n"
                                   + self.bed.describe())  # fmt: skip
        self.findings["mesh anomaly"] = [
            f"{m.hostname} -> {p['hostname']}: state {p['state']!r} on an open link "
            f"(reason {p['reason']!r})"
            for m in self.machines
            for p in m.status()["peers"]
            if p["link"] is not None and p["state"] != "up"
        ]
        return {"converge_s": converged, "full_mesh_s": linked}

    def meshed(self) -> bool:
        """Every member has an open link to every other (whatever state it reports)."""
        for m in self.machines:
            open_ = {p["hostname"] for p in m.status()["peers"] if p["link"] is not None}
            if len(open_ - {m.hostname}) < len(self.machines) - 1:
                return False
        return True

    def alerts(self) -> dict[str, int]:
        """Alerts raised over the whole run, by kind, from every daemon's log; links a
        member closed on receiving its own relayed message back go to the findings."""
        found: Counter[str] = Counter()
        pattern = re.compile(r" ALERT (.+?): ")
        loop = re.compile(r"closing link \d+: protocol error from (\S+): relayed message "
                          r"from non-member (\S+)")  # fmt: skip
        loops = []
        for m in self.machines:
            with contextlib.suppress(OSError):
                for line in (m.dir / "stderr.log").read_text(errors="replace").splitlines():
                    hit = pattern.search(line)
                    if hit:
                        found[hit.group(1)] += 1
                    hit = loop.search(line)
                    if hit and hit.group(2) == m.serial:
                        loops.append(f"{line[:23]} {m.hostname} closed its link to {hit.group(1)}")
        self.findings["relay loop"] = loops
        return dict(sorted(found.items()))

    def check(self) -> dict[str, Any]:
        statuses = [m.status() for m in self.machines]
        digests = {s["digest"] for s in statuses}
        vvs = {json.dumps(s["vv"], sort_keys=True) for s in statuses}
        if len(digests) != 1:
            self.violations.append(f"digests differ: {sorted(digests)}")
        if len(vvs) != 1:
            self.violations.append(f"version vectors differ: {sorted(vvs)}")
        lost: list[str] = []
        wrong: list[str] = []
        hot_bad: list[str] = []
        tables = []
        for m in self.machines:
            rows = m.ask({"op": "get", "feature": FEATURE, "mode": "cluster"})["value"] or {}
            tables.append(json.dumps(rows, sort_keys=True))
            for name, comment in self.acked.items():
                if name not in rows:
                    lost.append(f"{m.hostname}:{name}")
                elif rows[name].get("comment") != comment:
                    wrong.append(f"{m.hostname}:{name}={rows[name]}")
            for name, written in self.hot.items():
                got = rows.get(name, {}).get("comment")
                if written and got not in written:
                    hot_bad.append(f"{m.hostname}:{name}={got!r} not in {written}")
        records = [
            {(x["unit"], x["lost"]): x["by"] for x in s["inconsistencies"]} for s in statuses
        ]
        units = [x["unit"] for x in statuses[0]["inconsistencies"]]
        attribution = []
        for key in records[0]:
            by = sorted({str(r.get(key)) for r in records})
            if len(by) > 1:
                attribution.append(f"{key[0]} lost {key[1]}: by {' / '.join(by)}")
        self.findings["loss attribution"] = sorted(attribution)
        unexpected = [u for u in units if "[hot" not in u]
        if lost:
            self.violations.append(f"{len(lost)} acknowledged rows missing: {lost[:10]}")
        if wrong:
            self.violations.append(f"{len(wrong)} rows with another value: {wrong[:10]}")
        if hot_bad:
            self.violations.append(f"shared rows with a value never written: {hot_bad[:10]}")
        if len(set(tables)) != 1:
            self.violations.append("the table differs between members")
        if any(set(r) != set(records[0]) for r in records):
            self.violations.append("members recorded different inconsistencies (unit, lost)")
        if unexpected:
            self.violations.append(f"inconsistencies on rows written once: {unexpected[:10]}")
        unacked = {u["row"] for u in self.unacked}
        present = [r for r in unacked if r in (json.loads(tables[0]) if tables else {})]
        return {
            "digests_equal": len(digests) == 1,
            "vv_equal": len(vvs) == 1,
            "digest": sorted(digests)[0] if len(digests) == 1 else None,
            "vv": statuses[0]["vv"],
            "rows_acknowledged": len(self.acked),
            "rows_lost": len(lost),
            "rows_wrong": len(wrong),
            "shared_rows": len(self.hot),
            "shared_edits_acknowledged": sum(len(v) for v in self.hot.values()),
            "inconsistencies_recorded": len(units),
            "inconsistencies_unexpected": len(unexpected),
            "edits_failed": len(self.unacked),
            "edits_failed_present_anyway": len(present),
        }

    def stop_all(self) -> dict[str, str]:
        """SIGTERM every daemon, then check every store; member -> integrity result."""
        for m in self.machines:
            code = m.stop(signal.SIGTERM, timeout=30.0)
            if code != 0:
                self.violations.append(f"{m.hostname} exited with {code} on SIGTERM")
        found = {}
        for m in self.machines:
            found[m.hostname] = integrity(m.config.data_dir / "store.db")
            if found[m.hostname] != "ok":
                self.violations.append(f"{m.hostname}: integrity_check: {found[m.hostname]}")
        return found

    def cleanup(self) -> list[str]:
        """Stop whatever still runs, delete the namespaces; what was left behind."""
        if self.bed is not None:
            for m in self.bed.machines:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    m.stop(signal.SIGKILL)
        return self.net.down()


def command(opts: Options) -> str:
    return (f".venv/bin/python bench/netns_faults.py --seed {opts.seed} --commits {opts.commits} "
            f"--members {opts.members} --ping {opts.ping:g} --rate {opts.rate:g} "
            f"--round {opts.round_s:g}")  # fmt: skip


def run(opts: Options, root: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One campaign in ``root``; the report (``violations`` empty when all checks hold)."""
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    campaign = Campaign(opts, root, say)
    report: dict[str, Any] = {"command": command(opts), **asdict(opts)}
    try:
        campaign.setup()
        report["load_s"] = round(campaign.load(), 1)
        report.update({k: None if v is None else round(v, 2)
                       for k, v in campaign.heal().items()})  # fmt: skip
        report.update(campaign.check())
        report["integrity"] = campaign.stop_all()
    except (ClusterdError, AssertionError, RuntimeError, OSError) as exc:
        campaign.violations.append(f"run aborted: {type(exc).__name__}: {exc}")
    finally:
        left = campaign.cleanup()
        if left:
            campaign.violations.append(f"namespaces left behind: {left}")
    report["integrity_after_kill"] = campaign.kill_checks
    if campaign.bed is not None:
        report["alerts"] = campaign.alerts()
    report["findings"] = {k: v for k, v in sorted(campaign.findings.items()) if v}
    if opts.strict:
        campaign.violations += [f"{k}: {x}" for k, v in report["findings"].items() for x in v]
    report["faults"] = dict(sorted(campaign.faults.items()))
    report["kills"] = campaign.faults["kill"]
    report["events"] = campaign.events
    report["edits_failed_detail"] = campaign.unacked[:20]
    report["violations"] = campaign.violations
    report["ok"] = not campaign.violations
    return report


def text(report: dict[str, Any]) -> str:
    integrity_ = report.get("integrity") or {}
    after_kill = report["integrity_after_kill"]
    lines = [
        "netns fault campaign: "
        f"{report['members']} members, seed {report['seed']}, ping {report['ping']:g} s",
        f"  command:              {report['command']}",
        f"  commits acknowledged: {report.get('rows_acknowledged')} distinct rows "
        f"(+ {report.get('shared_edits_acknowledged')} concurrent edits of "
        f"{report.get('shared_rows')} shared rows); failed edits: {report.get('edits_failed')}",
        f"  load phase:           {report.get('load_s')} s",
        "  faults injected:      " + ", ".join(f"{k} {report['faults'].get(k, 0)}" for k in FAULTS),
        "  other events:         "
        + ", ".join(f"{k} {v}" for k, v in report["faults"].items() if k not in FAULTS),
        f"  kills (kill -9):      {report['kills']}",
        f"  time to converge:     {report.get('converge_s')} s after the heal "
        f"(full mesh after {report.get('full_mesh_s')} s)",
        f"  digests equal:        {'yes' if report.get('digests_equal') else 'NO'}; "
        f"version vectors equal: {'yes' if report.get('vv_equal') else 'NO'}",
        f"  rows lost:            {report.get('rows_lost')}; with another value: "
        f"{report.get('rows_wrong')}",
        f"  inconsistencies:      {report.get('inconsistencies_recorded')} recorded "
        f"(shared rows; on rows written once: {report.get('inconsistencies_unexpected')})",
        "  integrity_check:      "
        + (", ".join(f"{h.split('.')[0]} {r}" for h, r in integrity_.items()) or "not run"),
        f"  after each kill -9:   {sum(1 for x in after_kill if x['result'] == 'ok')}"
        f"/{len(after_kill)} ok",
        "  alerts (all logs):    "
        + (", ".join(f"{k} {v}" for k, v in report.get("alerts", {}).items()) or "none"),
        f"  result:               {'OK' if report['ok'] else 'VIOLATIONS'}",
    ]
    for kind, found in report["findings"].items():
        lines.append(f"  finding: {kind} x {len(found)} (known defect, see --help)")
        lines += [f"    {x}" for x in found[:5]] + (["    ..."] if len(found) > 5 else [])
    lines += [f"  ! {v}" for v in report["violations"]]
    return "\n".join(lines)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the namespaces and daemons are removed."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--ping", type=float, default=1.0, help="ping interval, s (>= 0.2)")
    parser.add_argument("--rate", type=float, default=12.0, help="commits per second, at most")
    parser.add_argument("--round", type=float, default=4.0, dest="round_s",
                        help="seconds between fault decisions")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--strict", action="store_true", help="findings are violations too")
    args = parser.parse_args(argv)
    why = requirements()
    if why:
        print(f"netns_faults: {why}", file=sys.stderr)
        return 2
    if args.members < 2 or args.members > 200:
        parser.error("--members: 2 to 200")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    opts = Options(seed, args.commits, args.members, args.ping, args.rate, args.round_s)
    opts.strict = args.strict
    root = Path(tempfile.mkdtemp(prefix="clusterd-netns-"))
    with _terminate_as_interrupt():
        try:
            report = run(opts, root)
        except KeyboardInterrupt:
            print("netns_faults: interrupted (namespaces and daemons removed)", file=sys.stderr)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
            return 130
    if args.keep or not report["ok"]:
        print(f"netns_faults: data (logs, stores) kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else text(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
