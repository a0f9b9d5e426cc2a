"""Deterministic simulation of a cluster: N members, seeded faults, then healing.

``run(seed)`` builds a cluster of pure replicas (``tests.replica``) joined by the
in-memory network, plays random edits while faults happen (lost, duplicated and
reordered frames, partitions, crashes and restarts, clocks up to 5 minutes apart, logs
truncated so that state transfers happen, membership changes: machines moved between
groups and DISCONNECT flags set and cleared), heals everything (a disconnected machine
reconnects itself, as its admin would) and checks the invariants: identical digests and
version vectors everywhere, every commit present, knowingly overwritten, or recorded as
an inconsistency, and identical effective configurations.  A failing seed replays
exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusterd import layers
from clusterd.digest import state_digest
from clusterd.edits import Start
from clusterd.members import own_flag_step
from clusterd.merge import merge_states
from clusterd.modes import Mode
from clusterd.peers import Identity, Member, Timing
from clusterd.protocol import Node
from clusterd.state import State
from clusterd.transport.memory import Faults, Network
from clusterd.versions import Commit, Snapshot, Unit, VersionVector
from schema.catalogue import CATALOGUE
from tests.replica import Replica, accounted, cluster_commit
from tests.test_merge_properties import run_op

EPOCH_MS = 1_800_000_000_000
PING = 1.0


class SimHost:
    """A replica with a commit log: the persistent part of a simulated member."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.commits: dict[tuple[str, int], Commit] = {}
        self.log = self
        self.net: Network | None = None  # set when membership changes are simulated
        self.membership: list[Member] = []
        self.every: list[Commit] = []  # every commit of the run (shared by the hosts)
        self.starting = True  # the node was just (re)created: it obeys its own row

    def members(self) -> list[Member]:
        """Membership as the replica's state says (what a daemon reloads)."""
        return [
            Member(str(row["serial"]), host, bool(row.get("disconnected", False)))
            for host, row in sorted(layers.machines(self.replica.state).items())
        ]

    def follow_membership(self, force: bool = False) -> None:
        """Like the daemon: when membership changed, tell the node (after this event)."""
        members = self.members()
        if self.net is None or (members == self.membership and not force):
            return
        self.membership = members
        net, me = self.net, self.replica.origin

        def tell() -> None:
            if not net.members[me].alive:
                return

            def event(node: Node) -> list[Any]:
                actions = list(node.set_members(members, net.now))
                step = own_flag_step(
                    self.replica.state,
                    self.replica.hostname,
                    me,
                    node.disconnected,
                    starting=self.starting,
                )
                self.starting = False
                if step == "repair":  # as the daemon does: put our own flag back
                    net.at(0.0, lambda: self._repair_flag(node.disconnected))
                elif step is not None:
                    flip = node.disconnect if step == "disconnect" else node.reconnect
                    actions += flip(net.now)
                return actions

            net.call(me, event)

        net.at(0.0, tell)

    def _repair_flag(self, flag: bool) -> None:
        me, net = self.replica.hostname, self.net
        row = layers.machines(self.replica.state).get(me)
        if net is None or row is None or bool(row.get("disconnected")) == flag:
            return
        if not net.members[self.replica.origin].alive:
            return
        commit = self.replica.edit(lambda ed: _membership_change(ed, me, disconnect=True))
        if commit is not None:
            self.record(commit, net)
            self.follow_membership()

    def record(self, commit: Commit, net: Network) -> None:
        """A commit made here: keep it, count it, and send it."""
        self.commits[(commit.id.origin, commit.id.seq)] = commit
        self.every.append(commit)
        net.commit(self.replica.origin, commit)

    def version_vector(self) -> VersionVector:
        return self.replica.state.vv

    def missing_from(self, vv: VersionVector) -> list[Commit] | None:
        found = [c for (o, s), c in self.commits.items() if s > vv.get(o, 0)]
        if any(c.truncated for c in found):
            return None
        return sorted(found, key=lambda c: (c.hlc, c.id.origin))

    def snapshot(self) -> Snapshot:
        state = self.replica.state
        return Snapshot(tuple(self.commits.values()), tuple(state.units()), tuple(state.losses()))

    def apply(self, commits: Sequence[Commit]) -> None:
        before = dict(self.replica.state.vv)
        self.replica.receive(commits)
        vv = self.replica.state.vv
        for c in commits:
            if before.get(c.id.origin, 0) < c.id.seq <= vv.get(c.id.origin, 0):
                self.commits.setdefault((c.id.origin, c.id.seq), c)
        self.follow_membership()

    def install(self, snapshot: Snapshot) -> None:
        self.replica.state = merge_states(self.replica.state, State.from_snapshot(snapshot))
        for c in snapshot.commits:
            have = self.commits.get((c.id.origin, c.id.seq))
            if have is None or have.truncated:
                self.commits[(c.id.origin, c.id.seq)] = c
            self.replica.clock.observe(c.hlc)
        self.replica.receive([])  # what waited in the inbox may be ready now
        self.follow_membership()

    def truncate(self, keep: int) -> None:
        ordered = sorted(self.commits.values(), key=lambda c: (c.hlc, c.id.origin))
        for c in ordered[:-keep] if keep else ordered:
            self.commits[(c.id.origin, c.id.seq)] = Commit(
                c.id, c.hlc, c.user, c.at, c.comment, c.context, (), truncated=True
            )

    def answer(self, kind: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
        if kind == "digest":
            return True, state_digest(self.replica.state)
        return False, f"unknown query {kind!r}"


def hostname(i: int) -> str:
    return f"m{i}.example.com"


def serial(i: int) -> str:
    return f"S{i:03d}"


def genesis(n: int) -> Commit:
    """The commit every member starts from: cluster ``sim``, groups G1/G2, n machines."""
    machines = {hostname(i): (serial(i), "G1" if i % 2 else "G2") for i in range(n)}
    return cluster_commit("GENESIS", 1, name="sim", machines=machines)


MODES = [Mode.cluster(), Mode.group("G1"), Mode.group("G2"), Mode.machine(hostname(0))]
KEYS = ["a@x.example", "b@x.example", "c@x.example"]


def random_op(rng: random.Random) -> tuple[Any, ...]:
    mode = rng.choice(MODES)
    kind = rng.choice(["row", "row", "row", "delrow", "tz", "define", "undefine", "copy"])
    feature = rng.choice(["unsubscribe", "settz"])
    if kind == "row":
        return ("row", mode, rng.choice(KEYS), rng.choice(["", "x", "y", "z"]))
    if kind == "delrow":
        return ("delrow", mode, rng.choice(KEYS))
    if kind == "tz":
        return ("tz", mode, rng.choice(["UTC", "Europe/Paris", "Asia/Tokyo"]))
    if kind == "define":
        return ("define", feature, mode, rng.choice(list(Start)))
    if kind == "undefine":
        return ("undefine", feature, mode)
    return ("copy", feature, mode, rng.choice(MODES))


@dataclass
class Outcome:
    seed: int
    digests: set[str]
    problems: list[str]
    commits: int
    frames: int
    alerts: int
    transfers: int
    settled: float  # virtual seconds from healing to identical digests

    def __str__(self) -> str:
        return (
            f"seed {self.seed}: {len(self.digests)} digest(s), {self.commits} commits, "
            f"{self.frames} frames, {self.alerts} alerts, {self.transfers} state transfers, "
            f"settled in {self.settled:.1f} s"
        )


def _membership_change(ed: Any, host: str, disconnect: bool) -> None:
    """Move a machine to the other group, or flip its DISCONNECT flag."""
    row = dict(ed.view.row("machines", Mode.cluster().key, host))
    if disconnect:
        row["disconnected"] = not row.get("disconnected", False)
    else:
        row["group"] = "G1" if row["group"] == "G2" else "G2"
    ed.view.write(Unit("machines", Mode.cluster().key, host), row)


def _settled(hosts: Mapping[str, SimHost]) -> bool:
    """Same state and same commits everywhere, nothing waiting, nobody disconnected."""
    replicas = [h.replica for h in hosts.values()]
    return (
        len({state_digest(r.state) for r in replicas}) == 1
        and len({tuple(sorted(r.state.vv.items())) for r in replicas}) == 1
        and not any(r.inbox for r in replicas)
        and not any(
            layers.machines(r.state).get(r.hostname, {}).get("disconnected") for r in replicas
        )
    )


def _reconnect_self(host: SimHost) -> Commit | None:
    """A machine whose own row says DISCONNECT reconnects itself (as an admin would)."""
    me = host.replica.hostname
    row = layers.machines(host.replica.state).get(me)
    if row is None or not row.get("disconnected"):
        return None
    return host.replica.edit(lambda ed: _membership_change(ed, me, disconnect=True))


def run(
    seed: int,
    n: int = 50,
    edits: int = 40,
    fault_time: float = 8.0,
    wire: bool = True,
    membership: bool = True,
) -> Outcome:
    rng = random.Random(seed)
    net = Network(seed, Faults(drop=0.02, duplicate=0.02, reorder=0.05), wire=wire)
    base = genesis(n)
    members = [Member(serial(i), hostname(i)) for i in range(n)]
    timing = Timing.for_interval(PING)
    hosts: dict[str, SimHost] = {}
    for i in range(n):
        skew_ms = rng.randint(-300_000, 300_000)
        replica = Replica(
            serial(i), hostname(i), lambda s=skew_ms: EPOCH_MS + int(net.now * 1000) + s
        )
        host = hosts[serial(i)] = SimHost(replica)
        host.apply([base])
        me = Identity(serial(i), hostname(i), "sim", "1.0")
        net.add(serial(i), host, lambda me=me, host=host: Node(me, host, members, timing))
    every: list[Commit] = [base]
    for s in hosts:
        net.start(s, PING / 4)
        hosts[s].every = every
        if membership:
            hosts[s].net = net
            hosts[s].membership = hosts[s].members()

    crashed: set[str] = set()
    steps = sorted(rng.uniform(0, fault_time) for _ in range(edits + n // 5 + 8))
    for when in steps:
        net.run_until(when)
        who = rng.choice(sorted(hosts))
        dice = rng.random()
        if dice < 0.08 and who not in crashed:
            net.crash(who)
            crashed.add(who)
        elif dice < 0.14 and crashed:
            back = rng.choice(sorted(crashed))
            crashed.discard(back)
            net.restart(back, PING / 4)
            hosts[back].starting = True
            hosts[back].follow_membership(force=True)
        elif dice < 0.18:
            net.partition(rng.sample(sorted(hosts), rng.randint(1, n // 2)))
        elif dice < 0.21:
            net.heal()
        elif dice < 0.24:
            hosts[who].truncate(rng.randint(0, 5))
        elif dice < 0.28 and membership and who not in crashed:
            flip = rng.random() < 0.5  # DISCONNECT / RECONNECT: a machine does it itself
            target = hosts[who].replica.hostname if flip else hostname(rng.randrange(n))
            commit = hosts[who].replica.edit(
                lambda ed, t=target, f=flip: _membership_change(ed, t, disconnect=f)
            )
            if commit is not None:
                hosts[who].record(commit, net)
                hosts[who].follow_membership()
        elif who not in crashed:
            ops = [random_op(rng) for _ in range(rng.randint(1, 3))]
            commit = hosts[who].replica.edit(lambda ed, ops=ops: [run_op(ed, o) for o in ops])
            if commit is not None:
                hosts[who].record(commit, net)

    net.heal()
    net.faults = Faults()
    for s in sorted(crashed):
        net.restart(s, PING / 4)
        hosts[s].starting = True
        hosts[s].follow_membership(force=True)
    deadline = fault_time + 60 * PING
    while net.now < deadline:
        for host in hosts.values():
            commit = _reconnect_self(host)
            if commit is not None:
                host.record(commit, net)
                host.follow_membership()
        net.run_until(net.now + PING)
        if _settled(hosts):
            break
    digests = {state_digest(h.replica.state) for h in hosts.values()}
    problems: list[str] = []
    probe = next(iter(hosts.values())).replica
    for commit in every:
        problems += accounted(commit, every, probe)
    problems += _effective_differences(hosts)
    if not _settled(hosts):
        problems.append("did not settle: version vectors differ or a member is disconnected")
    alerts = sum(len(m.alerts) for m in net.members.values())
    transfers = sum("state transfer" in line for line in net.log)
    settled = net.now - fault_time
    return Outcome(seed, digests, problems, len(every), net.frames, alerts, transfers, settled)


def _effective_differences(hosts: Mapping[str, SimHost]) -> list[str]:
    """Invariant: identical inputs give identical effective configurations, member by
    member, whichever replica computes them (and so the state fully decides them)."""
    seen: dict[str, dict[str, dict[str, Any]]] = {}
    for serial_, host in hosts.items():
        state = host.replica.state
        seen[serial_] = layers.effective_all(state, CATALOGUE)
    first = next(iter(seen.values()))
    digests = {state_digest(h.replica.state) for h in hosts.values()}
    if len(digests) != 1:
        return []  # convergence is checked on its own
    return [f"{s}: effective configuration differs" for s, e in seen.items() if e != first]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, help="replay one seed and print its log")
    parser.add_argument("--seeds", type=int, default=100, help="run N seeds")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="print failures only")
    parser.add_argument("--members", type=int, default=50)
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    failed = 0
    for seed in seeds:
        outcome = run(seed, n=args.members)
        ok = len(outcome.digests) == 1 and not outcome.problems
        failed += not ok
        if not (ok and args.quiet):
            print(("ok   " if ok else "FAIL ") + str(outcome), *outcome.problems[:5], sep="\n  ")
    print(f"{len(seeds) - failed}/{len(seeds)} seeds converged with nothing lost unrecorded")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
