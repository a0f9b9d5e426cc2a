"""clustercheck at the console: the comparison itself, the facts members must agree on,
unreachable members and progress.

``check.compare`` is tested on tables of summaries.  The console tests run newyork
in-process (``ny``: losangeles is admitted but never answers), or ``mesh``: a seeded
``Testbed`` whose first machine runs in this process (a ``Term`` on it answers from a
script) and whose others run as their own processes, all linked over SSH on loopback.
A digest difference that the mesh cannot repair by itself is made the one way it
arises: a store that lost a commit's effect (written while its daemon is stopped);
clustercheck finds it, and forcing a version is an ordinary commit everyone applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clusterd.cli.console import BatchConsole
from clusterd.cli.shell import Shell
from clusterd.core import layers, membership
from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit, Snapshot, Unit
from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import check
from clusterd.node.checkrun import when as _when
from clusterd.node.daemon import Daemon
from clusterd.store.session import Session
from clusterd.store.store import Store
from tests.shellhelp import ADMIN, LA, NY, Term

CLUSTER = Mode.cluster()
SWITCH = 'Would you like to switch to "cluster" mode? [Y]>y'
ROUTE_A = {"destinations": [{"host": "mx-a.example.com", "port": 25, "priority": 0}]}
ROUTE_B = {"destinations": [{"host": "mx-b.example.com", "port": 2525, "priority": 5}]}
ROW = Unit("smtproutes", CLUSTER.key, "example.com")
LISTENER = {
    "interface": "Data1",
    "port": 25,
    "type": "public",
    "rat": [{"recipient": "example.com", "action": "ACCEPT"}],
}


# -- check.compare, table-driven --------------------------------------------------------


def entry(digest: str, user: str = "admin", defined: bool = True) -> dict[str, Any]:
    return {"digest": digest, "defined": defined, "user": user, "at": 1.0, "origin": "x"}


K = "settz|cluster"
G = "smtproutes|group:Paris"
COMPARE_CASES = [
    # (what, summaries, expected [(key, choices)])
    ("all equal", {"a": {K: entry("1")}, "b": {K: entry("1")}}, []),
    ("nothing defined anywhere", {"a": {}, "b": {}}, []),
    ("one differs", {"a": {K: entry("1")}, "b": {K: entry("2")}}, [(K, ["a", "b"])]),
    ("absent on one", {"a": {K: entry("1")}, "b": {}}, [(K, ["a", "b"])]),
    (
        "undefined on one",
        {"a": {K: entry("1")}, "b": {K: entry("0", defined=False)}},
        [(K, ["a", "b"])],
    ),
    (
        "undefined and never written are the same version",
        {"a": {K: entry("0", defined=False)}, "b": {}},
        [],
    ),
    (
        "three members, two versions: one choice per version, in member order",
        {"a": {K: entry("1")}, "b": {K: entry("2")}, "c": {K: entry("1", "bob")}},
        [(K, ["a", "b"])],
    ),
    (
        "same definition, other writer: consistent (digests are of the definition)",
        {"a": {K: entry("1", "alice")}, "b": {K: entry("1", "bob")}},
        [],
    ),
    (
        "several keys, sorted; group modes parsed",
        {"a": {K: entry("1"), G: entry("3")}, "b": {K: entry("2"), G: entry("4")}},
        [(K, ["a", "b"]), (G, ["a", "b"])],
    ),
]


@pytest.mark.parametrize(
    ("summaries", "expected"),
    [(s, e) for _, s, e in COMPARE_CASES],
    ids=[what for what, _, _ in COMPARE_CASES],
)
def test_compare(summaries: dict[str, Any], expected: list[tuple[str, list[str]]]) -> None:
    found = check.compare(summaries)
    assert [(f"{x.feature}|{x.mode.key}", x.choices) for x in found] == expected
    for x in found:
        key = f"{x.feature}|{x.mode.key}"
        assert x.versions == {host: s.get(key) for host, s in summaries.items()}
        assert [x.defines(h) for h in x.choices] == [
            bool(summaries[h].get(key, {}).get("defined")) for h in x.choices
        ]
    if any(key == G for key, _ in expected):
        assert found[1].mode == Mode.group("Paris")


def test_software_versions_from_a_refusal() -> None:
    reason = (
        "refused by m1.example.com: software versions differ: m0.example.com runs 0.1.0, "
        "m1.example.com runs 9.9.9; members must run the same version"
    )
    versions = check.software_in(reason)
    assert versions == {"m0.example.com": "0.1.0", "m1.example.com": "9.9.9"}
    assert check.software_in("connection refused") == {}
    assert check.software_fact({"a": "1.0", "b": "1.0"}) is None
    fact = check.software_fact(versions)
    assert fact is not None and fact.kind == "software"
    assert fact.message.startswith(
        "Software versions differ: m0.example.com runs 0.1.0, m1.example.com runs 9.9.9."
    )


# -- in-process newyork: unreachable losangeles, facts, progress -------------------------


def to_cluster(t: Term) -> None:
    t.shell.mode = CLUSTER


async def test_unreachable_member_is_named_and_fails(ny: Term) -> None:
    status, out = await ny.run("clustercheck", "y")
    assert status == 1, out
    lines = out.splitlines()
    assert lines[0].endswith(SWITCH)
    assert lines[1:3] == [f"Checking {LA}...", f"Checking {NY}..."]  # progress, per member
    assert f"{LA} could not be checked: no link to it (down)" in lines
    assert "No inconsistencies found." not in out
    assert lines[-1] == (
        f"Not every member was checked ({LA}): run clustercheck again once they are reachable."
    )
    for flag in ("--json", "-j"):
        status, out = await ny.run(f"clustercheck {flag}")
        assert status == 1, out
        found = json.loads(out)  # no progress lines: the document is the whole output
        assert found["unreachable"] == {LA: "no link to it (down)"}
        assert found["checked"] == [NY]
        assert found["inconsistencies"] == found["lost"] == found["facts"] == []


async def test_disconnected_member_and_disconnected_self(ny: Term) -> None:
    to_cluster(ny)
    d = ny.daemon
    s = Session(d.store, "admin")
    membership.set_flag(s.view, d.store.catalogue, LA, True)
    s.commit("losangeles disconnected itself")
    status, out = await ny.run("clustercheck")
    assert status == 1
    assert f"{LA} could not be checked: it is disconnected from the cluster" in out
    await d.admin.set_disconnected(NY, True, "admin")
    status, out = await ny.run("clustercheck -j")
    assert status == 1
    assert json.loads(out)["unreachable"][LA].startswith(f"{NY} is disconnected")


async def test_bad_arguments(ny: Term) -> None:
    to_cluster(ny)
    status, out = await ny.run("clustercheck --verbose")
    assert status == 2 and out == "Usage: clustercheck [--json | -j]"


def _listener_setup(d: Daemon, footer: bool = False) -> None:
    """A cluster listener on interface Data1, which only losangeles has."""
    s = Session(d.store, "admin")
    s.define("listenerconfig", CLUSTER, Start.EMPTY)
    listener = {**LISTENER, "disclaimer_below": "footer"} if footer else LISTENER
    s.set_row("listenerconfig", CLUSTER, "InboundMail", listener)
    la = Mode.machine(LA)
    s.define("interfaceconfig", la, Start.EMPTY)
    s.set_row("interfaceconfig", la, "Data1", {"address": "127.0.0.2", "prefix": 8, "hostname": LA})
    if footer:
        s.define("textconfig", la, Start.EMPTY)
        text = {"type": "disclaimer", "encoding": "utf-8", "text": "Sent from LA"}
        s.set_row("textconfig", la, "footer", text)
    s.commit("listener")


INTERFACE_FACT = (
    f"Listener 'InboundMail' (defined at Cluster) listens on interface 'Data1', which "
    f"Machine {NY} does not have: the listener is disabled there."
)


async def test_listener_interface_missing_on_a_machine(ny: Term) -> None:
    to_cluster(ny)
    _listener_setup(ny.daemon)
    status, out = await ny.run("clustercheck")
    assert status == 1
    [line] = [x for x in out.splitlines() if x.startswith("Listener ")]
    assert line.startswith(INTERFACE_FACT)  # the listener, the interface, the machine
    assert LA not in line  # losangeles has Data1
    for flag in ("--json", "-j"):
        status, out = await ny.run(f"clustercheck {flag}")
        assert status == 1
        [fact] = json.loads(out)["facts"]
        assert fact["message"].startswith(INTERFACE_FACT)
        expected = {"kind": "interface", "machine": NY, "row": "InboundMail"}
        assert {k: fact[k] for k in expected} == expected
        assert (fact["interface"], fact["feature"], fact["defined_at"]) == (
            "Data1",
            "listenerconfig",
            "Cluster",
        )


async def test_reference_unresolved_on_a_machine(ny: Term) -> None:
    to_cluster(ny)
    _listener_setup(ny.daemon, footer=True)
    status, out = await ny.run("clustercheck")
    assert status == 1
    problem = (
        "Reference problem: listenerconfig row 'InboundMail' (from Cluster) field "
        f"'disclaimer_below' names textconfig 'footer', which is unavailable on Machine {NY}."
    )
    assert problem in out
    assert sum(x.startswith("Reference problem:") for x in out.splitlines()) == 1
    for flag in ("--json", "-j"):
        facts = json.loads((await ny.run(f"clustercheck {flag}"))[1])["facts"]
        assert sorted(f["kind"] for f in facts) == ["interface", "reference"]
        [ref] = [f for f in facts if f["kind"] == "reference"]
        assert ref["message"].startswith(problem)
        assert (ref["machine"], ref["target"], ref["name"]) == (NY, "textconfig", "footer")


async def test_a_single_member_cluster_is_consistent(daemon: Daemon) -> None:
    await daemon.admin.create("solo", "admin")
    t = Term(daemon)
    to_cluster(t)
    assert await t.ok("clustercheck") == f"Checking {NY}...\nNo inconsistencies found."
    found = json.loads(await t.ok("clustercheck -j"))
    [head] = daemon.store.commit_log(limit=1)
    assert head.seal is not None
    assert found == {
        "checked": [NY],
        "unreachable": {},
        "software": {NY: daemon.config.software},
        "inconsistencies": [],
        "lost": [],
        "facts": [],
        "chains": {NY: {"origins": {daemon.config.serial: {
            "head": head.id.seq, "hash": head.seal.hash, "commits": head.id.seq,
            "legacy": 0, "truncated": 0, "unverifiable": 0, "broken": None}}}},
    }  # fmt: skip


# -- real links: newyork's role played by m0 in this process, the others as processes -----

PING = 0.5


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(Exception):
            if await condition():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Mesh:
    def __init__(self, bed: Testbed, here: Daemon) -> None:
        self.bed, self.here = bed, here
        self.others = bed.machines[1:]

    async def status(self, m: Machine) -> dict[str, Any]:
        return await asyncio.to_thread(m.status)

    async def linked(self) -> bool:
        if any(p["state"] != "up" for p in (await self.here.status())["peers"]):
            return False
        for m in self.others:
            if any(p["state"] != "up" for p in (await self.status(m))["peers"]):
                return False
        return True

    async def digests(self) -> set[str]:
        found = {(await self.here.status())["digest"]}
        for m in self.others:
            found.add((await self.status(m))["digest"])
        return found

    async def converged(self) -> bool:
        return len(await self.digests()) == 1

    async def effective(self, feature: str) -> list[Any]:
        """The effective value of ``feature`` on every member, m0 first."""
        store = self.here.store
        values = [layers.effective_values(store.state, store.catalogue, self.bed[0].hostname)]
        for m in self.others:
            values.append((await asyncio.to_thread(m.op, "effective"))["values"])
        return [v[feature] for v in values]

    async def op(self, m: Machine, op: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(m.op, op, **args)

    async def edit(self, m: Machine, *edits: dict[str, Any], user: str, comment: str) -> None:
        answer = await asyncio.to_thread(
            m.ask, {"op": "edit", "edits": list(edits), "user": user, "comment": comment}
        )
        assert answer.get("ok"), answer


@contextlib.asynccontextmanager
async def mesh(
    tmp_path: Path,
    n: int,
    prepare: Callable[[Testbed], None] | None = None,
    flags: dict[int, list[str]] | None = None,
    wait_linked: bool = True,
) -> AsyncIterator[Mesh]:
    """A seeded cluster of ``n``; ``prepare`` changes the stores before anything starts."""
    with Testbed(tmp_path, n, ping=PING) as bed:
        if prepare is not None:
            prepare(bed)
        here = Daemon(bed[0].config)
        serving = asyncio.create_task(here.serve())
        try:
            for i, m in enumerate(bed.machines[1:], 1):
                m.start(*(flags or {}).get(i, []), wait=False)
            for m in bed.machines[1:]:
                await asyncio.to_thread(m.wait_ready)
            found = Mesh(bed, here)
            if wait_linked:
                await until(found.linked, "every member linked")
            yield found
        finally:
            here.stop()
            await asyncio.wait_for(serving, 10)


def _open(m: Machine) -> Store:
    return m.store()


def lost_effect(bed: Testbed) -> tuple[Commit, Commit]:
    """m1 (as alice) defines an SMTP route for example.com; every member applies it; m0 (as
    admin) changes the route; every member applies that too, but m1's store lost the
    change's effect on the row (its log has the commit, its state the older row)."""
    m0, m1, *rest = bed.machines
    first, second = _open(m1), _open(m0)
    try:
        s = Session(first, "alice")
        s.define("smtproutes", CLUSTER, Start.EMPTY)
        s.set_row("smtproutes", CLUSTER, "example.com", ROUTE_B)
        c1 = s.commit("b's route")
        second.replace_state(first.export_state())
        s = Session(second, "admin")
        s.set_row("smtproutes", CLUSTER, "example.com", ROUTE_A)
        c2 = s.commit("a's route")
        assert c1 is not None and c2 is not None
        full = second.export_state()
        [old] = [w for w in c1.writes if w.unit == ROW]
        entries = tuple((u, c1.version(old) if u == ROW else v) for u, v in full.entries)
        first.replace_state(Snapshot(full.commits, entries, full.losses))
    finally:
        first.close()
        second.close()
    for m in rest:
        other = _open(m)
        other.replace_state(full)
        other.close()
    return c1, c2


async def test_digest_difference_shown_ignored_then_forced(tmp_path: Path) -> None:
    made: list[Commit] = []

    def prepare(bed: Testbed) -> None:
        made.extend(lost_effect(bed))

    async with mesh(tmp_path, 3, prepare) as cluster:
        m0, m1, m2 = (m.hostname for m in cluster.bed.machines)
        c1, c2 = made
        await asyncio.sleep(3 * PING)  # pings exchanged: nothing repairs the lost effect
        assert len(await cluster.digests()) == 2
        assert await cluster.effective("smtproutes") == [
            {"example.com": ROUTE_A},
            {"example.com": ROUTE_B},
            {"example.com": ROUTE_A},
        ]
        t = Term(cluster.here)
        versions = [
            f"{m0} was updated {_when(c2.at)} by 'admin' on {m0}",
            f"{m1} was updated {_when(c1.at)} by 'alice' on {m1}",
            f"{m2} was updated {_when(c2.at)} by 'admin' on {m0}",
        ]
        menu = [
            "How do you want to resolve this inconsistency?",
            f"1. Force entire cluster to use {m0} version.",
            f"2. Force entire cluster to use {m1} version.",
            "3. Ignore.",
        ]

        # --json and -j: the versions, nothing asked, nothing changed.
        for flag in ("--json", "-j"):
            status, out = await t.run(f"clustercheck {flag}", "y")
            assert status == 1
            found = json.loads(out.split("\n", 1)[1])  # after the mode switch question
            [x] = found["inconsistencies"]
            assert (x["feature"], x["mode"], x["choices"]) == ("smtproutes", "cluster", [m0, m1])
            who = {h: (v["user"], v["origin"], v["at"]) for h, v in x["versions"].items()}
            assert who == {m0: ("admin", m0, c2.at), m1: ("alice", m1, c1.at),
                           m2: ("admin", m0, c2.at)}  # fmt: skip
            assert found["unreachable"] == {} and found["checked"] == [m0, m1, m2]
            t.shell.mode = Mode.machine(m0)

        # Ignore: changes nothing.
        before = (await cluster.digests(), dict(cluster.here.store.state.vv))
        status, out = await t.run("clustercheck", "y", "3")
        assert status == 1, out
        lines = out.splitlines()
        assert lines[1:4] == [f"Checking {m}..." for m in (m0, m1, m2)]
        assert lines[4:6] == [
            f"Comparing every feature at every mode with {m}..." for m in (m1, m2)
        ]
        assert lines[6:15] == ["Inconsistency found!", "SMTP Routes at Cluster:", *versions, *menu]
        assert lines[15:] == ["[1]>3"]
        await asyncio.sleep(2 * PING)
        assert (await cluster.digests(), dict(cluster.here.store.state.vv)) == before

        # A one-shot command reports and never forces (the menu's default would).
        batch = Shell(cluster.here.api, ADMIN, BatchConsole())
        batch.mode = CLUSTER
        assert await batch.run_line("clustercheck") == 1
        assert "(run clustercheck in an interactive shell to force a version)" in "\n".join(
            batch.console.lines  # type: ignore[attr-defined]
        )
        assert dict(cluster.here.store.state.vv) == before[1]

        # Force m1's version: an ordinary commit made here, applied everywhere.
        status, out = await t.run("clustercheck", "2")
        assert status == 0, out
        assert out.splitlines()[-1] == f"The whole cluster now uses the {m1} version."
        [forced] = cluster.here.store.commit_log(limit=1)
        assert forced.id.origin == cluster.bed[0].serial and forced.user == "admin"
        assert forced.comment == f"clustercheck: {m1} version of smtproutes at Cluster"
        await until(cluster.converged, "every member applied the forced version")
        assert await cluster.effective("smtproutes") == [{"example.com": ROUTE_B}] * 3
        assert await t.ok("clustercheck") == "\n".join(
            [*(f"Checking {m}..." for m in (m0, m1, m2)), "No inconsistencies found."]
        )
        # the commit is in every member's log, as any other
        log = await cluster.op(cluster.bed[2], "status")
        assert log["vv"][cluster.bed[0].serial] == forced.id.seq


async def test_forcing_this_members_version(tmp_path: Path) -> None:
    """Forcing the version of the member the shell runs on works the same way."""

    def prepare(bed: Testbed) -> None:
        lost_effect(bed)

    async with mesh(tmp_path, 2, prepare) as cluster:
        m0, m1 = (m.hostname for m in cluster.bed.machines)
        t = Term(cluster.here)
        t.shell.mode = CLUSTER
        out = await t.ok("clustercheck", "1")
        assert f"1. Force entire cluster to use {m0} version." in out
        await until(cluster.converged, "converged on m0's version")
        assert await cluster.effective("smtproutes") == [{"example.com": ROUTE_A}] * 2
        assert await t.ok("clustercheck") == f"Checking {m0}...\nChecking {m1}...\n" + (
            "No inconsistencies found."
        )


async def test_software_version_difference(tmp_path: Path) -> None:
    async with mesh(
        tmp_path, 2, flags={1: ["--software-version", "9.9.9"]}, wait_linked=False
    ) as cluster:
        here, m1 = cluster.here, cluster.bed[1]
        mine = here.config.software

        async def refused() -> bool:
            return any(p["state"] == "refused" for p in (await here.status())["peers"])

        await until(refused, "m1 refused for its version")
        t = Term(here)
        t.shell.mode = CLUSTER
        status, out = await t.run("clustercheck")
        assert status == 1
        refusal = f"refused by {m1.hostname}: software versions differ: "
        assert f"{m1.hostname} could not be checked: {refusal}" in out
        runs = sorted([(cluster.bed[0].hostname, mine), (m1.hostname, "9.9.9")])
        text = ", ".join(f"{h} runs {v}" for h, v in runs)
        assert f"Software versions differ: {text}." in out
        for flag in ("--json", "-j"):
            status, out = await t.run(f"clustercheck {flag}")
            assert status == 1
            found = json.loads(out)
            [fact] = found["facts"]
            assert fact["kind"] == "software" and fact["versions"] == dict(runs)
            assert "software versions differ" in found["unreachable"][m1.hostname]
            assert found["software"] == dict(runs)


def undefined_on_m1(bed: Testbed) -> Commit:
    """Every member defines the cluster's SMTP routes (alice on m1), but m1's store lost
    the definition's marker: there the feature is not defined at cluster level."""
    m1 = bed[1]
    store = _open(m1)
    s = Session(store, "alice")
    s.define("smtproutes", CLUSTER, Start.EMPTY)
    s.set_row("smtproutes", CLUSTER, "example.com", ROUTE_B)
    made = s.commit("routes")
    assert made is not None
    full = store.export_state()
    marker = Unit("smtproutes", CLUSTER.key, "")
    entries = tuple((u, replace(v, value=None) if u == marker else v) for u, v in full.entries)
    store.replace_state(Snapshot(full.commits, entries, full.losses))
    store.close()
    for m in (bed[0], *bed.machines[2:]):
        other = _open(m)
        other.replace_state(full)
        other.close()
    return made


async def test_forcing_a_member_that_does_not_define_it(tmp_path: Path) -> None:
    """A member without the definition says so (with who undefined it); forcing its
    version undefines the feature at that mode everywhere."""
    made: list[Commit] = []
    async with mesh(tmp_path, 2, lambda bed: made.append(undefined_on_m1(bed))) as cluster:
        m0, m1 = (m.hostname for m in cluster.bed.machines)
        when = f"{_when(made[0].at)} by 'alice' on {m1}"
        t = Term(cluster.here)
        t.shell.mode = CLUSTER

        async def corrupt_on_m1() -> bool:  # (its entry is not what its log wrote)
            return bool((await cluster.status(cluster.bed[1]))["corruption"])

        await until(corrupt_on_m1, "m1 finds its own entry corrupt")
        status, out = await t.run("clustercheck", "2")
        assert status == 1, out  # the corruption stood when the check began
        lines = out.splitlines()
        assert lines[3:7] == [
            "Inconsistency found!",
            "SMTP Routes at Cluster:",
            f"{m0} was updated {when}",
            f"{m1} does not define it (undefined {when})",
        ]
        assert f"2. Force entire cluster to use {m1} version." in lines
        assert (f"Corruption on {m1}: its entry of smtproutes@cluster differs from its "
                "verified log") in out  # fmt: skip
        await until(cluster.converged, "converged on m1's version")
        assert await cluster.effective("smtproutes") == [{}] * 2  # the factory default
        here = cluster.here.store.state.entries("smtproutes", CLUSTER.key)
        assert here.marker is not None and here.marker.value is None

        async def cleared() -> bool:  # the forced commit overwrote the entry everywhere
            return not await corrupt_on_m1()

        await until(cleared, "the corruption cleared")
        assert (await t.ok("clustercheck")).endswith("No inconsistencies found.")
