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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusterd.core import layers, membership
from clusterd.core.digest import state_digest
from clusterd.core.edits import Editor, Start
from clusterd.core.merge import Inbox
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending
from clusterd.core.state import State, definition
from clusterd.core.versions import Commit, Snapshot, VersionVector
from clusterd.mesh.member import Member as MeshMember
from clusterd.mesh.members import flag_of, follow, members_of
from clusterd.mesh.messages import SnapshotBody
from clusterd.mesh.peers import Action, Flag, Identity, Machine, Timing
from clusterd.mesh.protocol import Node
from clusterd.mesh.transport.memory import Faults, Network
from clusterd.node.storehost import StoreHost
from clusterd.schema.catalogue import CATALOGUE
from clusterd.store.store import Store
from tests.replica import Replica, accounted, cluster_commit, merge_states
from tests.sim_membership import attempt, random_change, removed
from tests.sim_membership import problems as membership_problems
from tests.test_merge_properties import run_op


def effective_all(reader: layers.Reader, catalogue: Any) -> dict[str, dict[str, Any]]:
    """Effective values of every member, each (feature, mode) definition read once (what
    the simulation compares between members after every run)."""
    cache: dict[tuple[str, str], Any] = {}
    defaults: dict[str, Any] = {}
    result: dict[str, dict[str, Any]] = {}
    features = [f for f in catalogue if not f.internal]
    for machine in layers.machines(reader) or []:
        modes = layers.chain(reader, machine)
        values: dict[str, Any] = {}
        for feature in features:
            for mode in modes:
                key = (feature.command, mode.key)
                if key not in cache:
                    cache[key] = definition(reader.entries(*key), feature.is_table)
                if cache[key] is not None:
                    values[feature.command] = cache[key]
                    break
            else:
                if feature.command not in defaults:
                    defaults[feature.command] = feature.factory_value()
                values[feature.command] = defaults[feature.command]
        result[machine] = values
    return result


EPOCH_MS = 1_800_000_000_000
PING = 1.0


class Answers:
    """What both kinds of simulated host do alike, through their ``replica``."""

    replica: Any
    net: Network | None
    record: Callable[[Commit, Network], None]

    def reconnect(self, by: str) -> None:
        """As the daemon does when a hello shows a RECONNECT of this member it missed."""
        commit = _reconnect_self(self) if self.net is not None else None
        if commit is not None and self.net is not None:
            self.record(commit, self.net)

    def answer(self, kind: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
        if kind == "digest":
            return True, state_digest(self.replica.state)
        return False, f"unknown query {kind!r}"


class SimHost(Answers):
    """A replica with a commit log: the persistent part of a simulated member (the
    shipped ``Member`` runs over it: ``clusterd.mesh.transport.memory``)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.commits: dict[tuple[str, int], Commit] = {}
        self.log = self
        self.member: MeshMember | None = None  # set by the network at each start
        self.net: Network | None = None  # set when membership changes are simulated
        self.membership: list[Machine] = []
        self.every: list[Commit] = []  # every commit of the run (shared by the hosts)

    def follow_membership(self, force: bool = False) -> None:
        """Like the daemon: when membership changed, the member's links follow (after
        the batch of actions under way, or now when none is)."""
        members = members_of(self.replica.state)
        if self.net is None or self.member is None or (members == self.membership and not force):
            return
        self.membership = members
        self.member.membership_changed = True
        if force:  # (a member just started: no batch under way)
            self.member.execute([])

    def follow(self, node: Node, now: float) -> list[Action]:
        return follow(node, self.replica.state, self.replica.hostname, now)

    def record(self, commit: Commit, net: Network) -> None:
        """A commit made here: keep it, count it, and send it (membership follows)."""
        self.commits[(commit.id.origin, commit.id.seq)] = commit
        self.every.append(commit)
        self.follow_membership()
        net.members[self.replica.origin].member.committed([commit])

    def version_vector(self) -> VersionVector:
        return self.replica.state.vv

    def flag(self, hostname: str) -> Flag | None:
        return flag_of(self.replica.state, hostname)

    def missing_from(self, vv: VersionVector, limit: int) -> list[Commit] | None:
        found = [c for (o, s), c in self.commits.items() if s > vv.get(o, 0)]
        page = sorted(found, key=lambda c: (c.hlc, c.id.origin))[:limit]
        return None if any(c.truncated for c in page) else page

    def snapshot(self) -> Snapshot:
        state = self.replica.state
        return Snapshot(tuple(self.commits.values()), tuple(state.units()), tuple(state.losses()))

    def apply(self, commits: Sequence[Commit], peer: str = "") -> None:
        for c in self.replica.receive(commits):  # these, and what waited for them
            self.commits.setdefault((c.id.origin, c.id.seq), c)
        self.follow_membership()

    def install(self, body: SnapshotBody, peer: str) -> None:
        snapshot = body.snapshot()
        self.replica.state = merge_states(self.replica.state, State.from_snapshot(snapshot))
        for c in snapshot.commits:
            have = self.commits.get((c.id.origin, c.id.seq))
            if have is None or have.truncated:
                self.commits[(c.id.origin, c.id.seq)] = c
            self.replica.clock.observe(c.hlc)
        for c in self.replica.receive([]):  # what waited in the inbox may be ready now
            self.commits.setdefault((c.id.origin, c.id.seq), c)
        self.follow_membership()

    def truncate(self, keep: int) -> None:
        ordered = sorted(self.commits.values(), key=lambda c: (c.hlc, c.id.origin))
        for c in ordered[:-keep] if keep else ordered:
            self.commits[(c.id.origin, c.id.seq)] = Commit(
                c.id, c.hlc, c.user, c.at, c.comment, c.context, (), truncated=True
            )


class StoreReplica:
    """The replica side of a store-backed member: edits through the store's commit."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.origin, self.hostname = store.origin, store.hostname

    @property
    def state(self) -> State:
        return self.store.state

    @property
    def inbox(self) -> Inbox:
        return self.store.inbox

    def edit(self, change: Callable[[Editor], object], comment: str = "") -> Commit | None:
        pending = Pending()
        change(Editor(self.store.view(pending), CATALOGUE, self.hostname))
        return self.store.commit(pending, user="admin", comment=comment) if pending else None

    loss_ids = Replica.loss_ids


class SimWriter:
    """The store's writer in virtual time (as the daemon's thread, ``ThreadWriter``):
    peers' batches are merged at once and written a little later, in order."""

    def __init__(self, net: Network, serial: str) -> None:
        self.net, self.serial = net, serial
        self.jobs: deque[tuple[Callable[[], None], Callable[[], None]]] = deque()

    def submit(self, job: Callable[[], None], done: Callable[[], None]) -> None:
        self.jobs.append((job, done))
        self.net.at(WRITE_DELAY, self._next)

    def _next(self) -> None:
        if not self.jobs:
            return  # (taken by wait)
        job, done = self.jobs.popleft()
        job()
        done()
        m = self.net.members[self.serial]
        if m.alive:
            m.member.execute([])  # membership follows, as the daemon does after a write

    def wait(self) -> None:
        while self.jobs:
            job, _ = self.jobs.popleft()
            job()  # (the store's flush takes the outcomes)


WRITE_DELAY = 0.002  # virtual seconds between a batch merged and written


class StoreSimHost(Answers, StoreHost):
    """A member over a real ``Store`` (SQLite in memory) and the daemon's own glue for
    it (``clusterd.node.storehost``): peers' commits and state transfers are checked
    and made durable, and local commits replicated, exactly as the daemon does."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.replica = StoreReplica(store)
        self.net: Network | None = None
        self.membership: list[Machine] = []
        self.every: list[Commit] = []

    def record(self, commit: Commit, net: Network) -> None:
        """A commit made here (the store's listener has sent it): count it."""
        self.every.append(commit)

    def follow_membership(self, force: bool = False) -> None:
        if force and self.member is not None:  # (a member just started: no batch under way)
            self.member.membership_changed = True
            self.member.execute([])

    def follow(self, node: Node, now: float) -> list[Action]:
        if self.net is None:
            return []
        return follow(node, self.store.state, self.store.hostname, now)

    def truncate(self, keep: int) -> None:
        self.store.truncate_log(keep)


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


def survivors(hosts: Mapping[str, SimHost]) -> dict[str, SimHost]:
    """The members nobody removed (a removed machine is refused by the others for good:
    it keeps its own state, as its admin left it)."""
    gone = removed(h.replica.state for h in hosts.values())
    return {s: h for s, h in hosts.items() if h.replica.hostname not in gone}


def _settled(hosts: Mapping[str, SimHost]) -> bool:
    """Same state and same commits everywhere, nothing waiting, nobody disconnected."""
    replicas = [h.replica for h in survivors(hosts).values()]
    return (
        len({state_digest(r.state) for r in replicas}) == 1
        and len({tuple(sorted(r.state.vv.items())) for r in replicas}) == 1
        and not any(r.inbox for r in replicas)
        and not any(
            layers.machines(r.state).get(r.hostname, {}).get("disconnected") for r in replicas
        )
    )


def _reconnect_self(host: Any) -> Commit | None:
    """A machine whose own row says DISCONNECT reconnects itself (as an admin would)."""
    me = host.replica.hostname
    row = layers.machines(host.replica.state).get(me)
    if row is None or not row.get("disconnected"):
        return None
    return host.replica.edit(lambda ed: membership.set_flag(ed.view, CATALOGUE, me, False))


def run(
    seed: int,
    n: int = 50,
    edits: int = 40,
    fault_time: float = 8.0,
    membership: bool = True,
    store: bool = False,
) -> Outcome:
    """One seeded run; ``store``: members over real stores (``StoreSimHost``), else over
    pure replicas (``SimHost``: faster, for thousands of seeds)."""
    rng = random.Random(seed)
    net = Network(seed, Faults(drop=0.02, duplicate=0.02, reorder=0.05))
    base = genesis(n)
    members = [Machine(serial(i), hostname(i)) for i in range(n)]
    timing = Timing.for_interval(PING)
    hosts: dict[str, Any] = {}  # SimHost or StoreSimHost
    for i in range(n):
        skew_ms = rng.randint(-300_000, 300_000)
        wall = lambda s=skew_ms: EPOCH_MS + int(net.now * 1000) + s  # noqa: E731
        if store:
            db = Store("sqlite://", origin=serial(i), hostname=hostname(i), wall_ms=wall)
            host = hosts[serial(i)] = StoreSimHost(db)
            db.writer = SimWriter(net, serial(i))
        else:
            host = hosts[serial(i)] = SimHost(Replica(serial(i), hostname(i), wall))
        host.apply([base], "")
        me = Identity(serial(i), hostname(i), "sim", "1.0")
        net.add(serial(i), host, lambda me=me, host=host: Node(me, host.log, members, timing))
    every: list[Commit] = [base]
    for s in hosts:
        net.start(s, PING / 4)
        hosts[s].every = every
        if membership:
            hosts[s].net = net
            hosts[s].membership = members_of(hosts[s].replica.state)

    crashed: set[str] = set()
    removals_left = max(1, n // 8)  # REMOVEMACHINE: for good, so a few per run
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
            hosts[back].follow_membership(force=True)
        elif dice < 0.18:
            net.partition(rng.sample(sorted(hosts), rng.randint(1, n // 2)))
        elif dice < 0.21:
            net.heal()
        elif dice < 0.24:
            hosts[who].truncate(rng.randint(0, 5))
        elif dice < 0.30 and membership and who not in crashed:
            state = hosts[who].replica.state
            change = random_change(rng, state, hosts[who].replica.hostname, removals_left)
            if change is not None:
                before = len(removed([state]))
                commit = hosts[who].replica.edit(attempt(change))
                if commit is not None:
                    removals_left -= len(removed([hosts[who].replica.state])) - before
                    hosts[who].record(commit, net)
        elif who not in crashed:
            ops = [random_op(rng) for _ in range(rng.randint(1, 3))]
            commit = hosts[who].replica.edit(lambda ed, ops=ops: [run_op(ed, o) for o in ops])
            if commit is not None:
                hosts[who].record(commit, net)

    net.heal()
    net.faults = Faults()
    for s in sorted(crashed):
        net.restart(s, PING / 4)
        hosts[s].follow_membership(force=True)
    deadline = fault_time + 60 * PING
    while net.now < deadline:
        for host in survivors(hosts).values():
            commit = _reconnect_self(host)
            if commit is not None:
                host.record(commit, net)
        net.run_until(net.now + PING)
        if _settled(hosts):
            break
    alive = survivors(hosts)
    digests = {state_digest(h.replica.state) for h in alive.values()}
    problems: list[str] = []
    probe = next(iter(alive.values())).replica
    gone = {h.replica.origin for s, h in hosts.items() if s not in alive}
    for commit in every:
        if commit.id.origin in gone and commit.id.seq > probe.state.vv.get(commit.id.origin, 0):
            continue  # made by a removed machine, never taken by the others: by design
        problems += accounted(commit, every, probe)
    problems += _effective_differences(alive)
    problems += membership_problems({s: h.replica.state for s, h in alive.items()})
    if not _settled(hosts):
        problems.append("did not settle: version vectors differ or a member is disconnected")
    # Witnessing chain heads never cries wolf: no member's history goes back, no fork.
    problems += [f"{m.serial}: {a.kind}: {a.text}" for m in net.members.values()
                 for a in m.alerts if a.kind in ("history went back", "fork")]  # fmt: skip
    problems += [line for line in net.log if "chain heads of" in line]
    alerts = sum(len(m.alerts) for m in net.members.values())
    transfers = sum("state transfer" in line for line in net.log)
    settled = net.now - fault_time
    if problems and DEBUG:
        _describe(net, hosts)
    return Outcome(seed, digests, problems, len(every), net.frames, alerts, transfers, settled)


DEBUG: list[bool] = []  # set by ``main --seed N``: print each member's view on failure


def _describe(net: Network, hosts: Mapping[str, SimHost]) -> None:
    for serial_, host in hosts.items():
        node, state = net.members[serial_].node, host.replica.state
        own = layers.machines(state).get(host.replica.hostname)
        peers = {p.hostname[:3]: p.state for p in node.peers.values()}
        print(f"  {serial_} alive={net.members[serial_].alive} node_off={node.disconnected} "
              f"own={'gone' if own is None else own['disconnected']} vv={dict(state.vv)} "
              f"inbox={len(host.replica.inbox)} peers={peers}")  # fmt: skip
    print("\n".join(net.log[-40:]))


def _effective_differences(hosts: Mapping[str, SimHost]) -> list[str]:
    """Invariant: identical inputs give identical effective configurations, member by
    member, whichever replica computes them (and so the state fully decides them)."""
    seen: dict[str, dict[str, dict[str, Any]]] = {}
    for serial_, host in hosts.items():
        state = host.replica.state
        seen[serial_] = effective_all(state, CATALOGUE)
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
    parser.add_argument("--store", action="store_true", help="members over real stores")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    if args.seed is not None:
        DEBUG.append(True)
    failed = 0
    for seed in seeds:
        outcome = run(seed, n=args.members, store=args.store)
        ok = len(outcome.digests) == 1 and not outcome.problems
        failed += not ok
        if not (ok and args.quiet):
            print(("ok   " if ok else "FAIL ") + str(outcome), *outcome.problems[:5], sep="\n  ")
    print(f"{len(seeds) - failed}/{len(seeds)} seeds converged with nothing lost unrecorded")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
