"""``clusterconfig`` joins that reach a real member: the menu and the batch forms.

The member is a real daemon (``Testbed``, machine m0.example.com, cluster americas with
groups Main_Group and Paris, time zone Europe/Paris at group Paris); the joining
machine is newyork.example.com in-process (``tests.shellhelp``), with an interactive
scripted console or the one-command ``BatchConsole``.  Each test reads the exact
lines the console got and what changed on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.cli.console import BatchConsole
from clusterd.cli.shell import Shell
from clusterd.core import layers
from clusterd.dev.testbed import PASSPHRASE, Machine, Testbed
from clusterd.node.daemon import Daemon
from clusterd.trust.join import JoinAnswer, JoinRequest
from clusterd.trust.join import call as real_call
from tests.shellhelp import ADMIN, NY, Term, menu_join_lines, new_daemon

# newyork's own settings as init leaves them: what a join discards, row by row.
DISCARDED = [
    "These settings of this machine will be discarded:",
    f"  {'userconfig':<20} Users: admin",
    "Network settings are kept.",
]


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Machine]:
    with Testbed(tmp_path / "bed", 1, seed=False) as bed:
        bed.start()
        m = bed[0]
        m.op("create", name="americas")
        m.op("addgroup", group="Paris")
        m.edit(
            {"do": "define", "feature": "settz", "mode": "group:Paris", "start": "defaults"},
            {"do": "set_record", "feature": "settz", "mode": "group:Paris",
             "value": {"timezone": "Europe/Paris"}},
        )  # fmt: skip
        yield m


@pytest.fixture
async def joiner(tmp_path: Path) -> AsyncIterator[Daemon]:
    """newyork, standalone, in-process; its links (once joined) are closed at the end."""
    d = new_daemon(tmp_path)
    try:
        yield d
    finally:
        d.stopping.set()
        d.member.stop()
        for io in list(d.member.wires.values()):
            io.close()
        if d.ccs_server is not None:
            d.ccs_server.close()
        await asyncio.sleep(0.1)
        d.store.close()


def state_of(m: Machine) -> tuple[Any, ...]:
    s = m.status()
    return s["cluster"], s["vv"], s["digest"]


def groups(m: Machine) -> dict[str, list[str]]:
    return {g: sorted(rows) for g, rows in m.op("list")["groups"].items()}


def joined_lines(member: Machine, group: str, saved: list[Path], *, asked: bool) -> list[str]:
    """The stage lines of a join that succeeds (``asked``: the person said yes)."""
    assert len(saved) == 1
    return [
        "Checking the join with the member (nothing changes yet)...",
        f"Joining cluster americas through {member.hostname}, group {group}.",
        *DISCARDED,
        *(["Do you want to join? [N]>y"] if asked else []),
        "Joining: saving this machine's settings, receiving the cluster's...",
        f"Joined cluster americas. Standalone settings saved in {saved[0]}",
        # The catch-up (cli.progress): the in-process joiner runs no mesh, so it waits
        # one handshake time-out for its link to the member and says so.
        f"Waiting for links to {member.hostname}...",
        "Linked to 0 of 1 members; not linked to:",
        f"  {member.hostname}: down",
        "Now in cluster mode: the prompt is (Cluster americas)>",
    ]


async def test_menu_join_over_ssh_succeeds(member: Machine, joiner: Daemon) -> None:
    term = Term(joiner)
    port = member.config.ssh_port
    fp = member.fingerprint()
    answers = ["3", "", "127.0.0.1", str(port), "1", PASSPHRASE, "y", "", "y"]
    out = await term.ok("clusterconfig", *answers)
    saved = list(joiner.config.data_dir.glob("standalone-*.json"))
    assert out.splitlines()[7:] == [
        *menu_join_lines(port),
        f"The host key fingerprint of 127.0.0.1 port {port} is {fp}",
        "Is this a valid key for this host? [Y]>y",
        "Enter the group to join.",
        "[Main_Group]>",
        *joined_lines(member, "Main_Group", saved, asked=True),
    ]
    assert PASSPHRASE not in out
    assert term.cluster == "americas" and term.prompt == "(Cluster americas)> "
    assert groups(member)["Main_Group"] == sorted([member.hostname, NY])
    assert not joiner.config.ccs_enabled and joiner.ccs_server is None


async def test_batch_join_in_the_reference_form(member: Machine, joiner: Daemon) -> None:
    """``join ADDRESS ADMIN PASSPHRASE GROUP`` in one command: stage lines, no question."""
    batch = BatchConsole()
    shell = Shell(joiner.api, ADMIN, batch)
    port, fp = member.config.ssh_port, member.fingerprint()
    line = (
        f"clusterconfig join --port {port} --fingerprint {fp} 127.0.0.1 admin '{PASSPHRASE}' Paris"
    )
    assert await shell.run_line(line) == 0, batch.output
    saved = list(joiner.config.data_dir.glob("standalone-*.json"))
    assert batch.lines == [
        f"Connecting to 127.0.0.1 port {port}...",
        *joined_lines(member, "Paris", saved, asked=False),
    ]
    assert groups(member)["Paris"] == [NY]
    state = joiner.store.state
    assert layers.group_of(state, NY) == "Paris"
    assert joiner.effective("settz").value == {"timezone": "Europe/Paris"}  # the group's


async def test_batch_join_without_a_fingerprint_is_a_usage_error(
    member: Machine, joiner: Daemon
) -> None:
    batch = BatchConsole()
    shell = Shell(joiner.api, ADMIN, batch)
    before = state_of(member)
    line = f"clusterconfig join --port {member.config.ssh_port} 127.0.0.1 admin '{PASSPHRASE}'"
    assert await shell.run_line(line) == 2
    assert batch.output.startswith("Usage: a one-command join does not trust a host key")
    assert "--fingerprint SHA256:" in batch.output
    assert layers.cluster_name(joiner.store.state) is None and state_of(member) == before


async def test_interactive_batch_form_shows_the_key_and_asks(
    member: Machine, joiner: Daemon
) -> None:
    """Without --fingerprint an interactive shell probes and asks; the passphrase left
    out is asked as a secret; declining the key or the join changes nothing."""
    term = Term(joiner)
    port, fp = member.config.ssh_port, member.fingerprint()
    before = state_of(member)
    line = f"clusterconfig join --port {port} 127.0.0.1 admin"
    status, out = await term.run(line, PASSPHRASE, "n")
    assert status == 1 and out.splitlines() == [
        "Enter the passphrase of user admin in the cluster.",
        "[]>",
        f"Connecting to 127.0.0.1 port {port}...",
        f"The host key fingerprint of 127.0.0.1 port {port} is {fp}",
        "Is this a valid key for this host? [Y]>n",
        "Join cancelled. Nothing was changed.",
    ]
    assert PASSPHRASE not in out
    status, out = await term.run(f"{line} '{PASSPHRASE}'", "y", "n")
    assert status == 1
    assert out.splitlines()[-8:] == [
        "Is this a valid key for this host? [Y]>y",
        "Checking the join with the member (nothing changes yet)...",
        f"Joining cluster americas through {member.hostname}, group Main_Group.",
        *DISCARDED,
        "Do you want to join? [N]>n",
        "Join cancelled. Nothing was changed.",
    ]
    assert term.cluster is None and state_of(member) == before
    assert not list(joiner.config.data_dir.glob("standalone-*.json"))


async def test_batch_join_as_a_user_who_is_not_an_admin_is_refused(
    member: Machine, joiner: Daemon
) -> None:
    """ADMIN names the user the join logs in as: the member refuses a non-admin."""
    from clusterd.schema.access import hash_passphrase

    row = {
        "full_name": "Oper",
        "role": "operator",
        "passphrase_hash": hash_passphrase("operator pass"),
    }
    member.edit({"do": "set_row", "feature": "userconfig", "mode": "cluster", "row": "oper",
                 "value": row})  # fmt: skip
    before = state_of(member)
    batch = BatchConsole()
    shell = Shell(joiner.api, ADMIN, batch)
    port, fp = member.config.ssh_port, member.fingerprint()
    line = f"clusterconfig join --port={port} --fingerprint={fp} 127.0.0.1 oper 'operator pass'"
    assert await shell.run_line(line) == 1
    assert batch.lines == [
        f"Connecting to 127.0.0.1 port {port}...",
        "Checking the join with the member (nothing changes yet)...",
        "Error: user 'oper' is not a cluster admin (role operator): only an admin may add a "
        "machine",
    ]
    assert layers.cluster_name(joiner.store.state) is None and state_of(member) == before


async def test_refused_final_join_leaves_ccs_and_clusterd_toml_alone(
    member: Machine, joiner: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check passes, then group Paris is deleted on the member before the join
    itself: the member refuses it, and this machine is as it was (CCS not turned on,
    clusterd.toml untouched); only the standalone copy, a copy, was written."""

    async def call(*args: Any, request: JoinRequest, **kwargs: Any) -> JoinAnswer:
        if not request.check:
            member.op("deletegroup", group="Paris")
        return await real_call(*args, request=request, **kwargs)

    monkeypatch.setattr("clusterd.node.admin.call", call)
    toml = joiner.config.data_dir / "clusterd.toml"
    before = toml.read_bytes()
    term = Term(joiner)
    port = str(member.config.ssh_port)
    answers = ["3", "y", "127.0.0.1", port, "1", PASSPHRASE, "y", "Paris", "y"]
    status, out = await term.run("clusterconfig", *answers)
    assert status == 1, out
    assert out.splitlines()[-2:] == [
        "Joining: saving this machine's settings, receiving the cluster's...",
        "Error: cluster 'americas' has no group 'Paris' (Main_Group)",
    ]
    assert toml.read_bytes() == before and joiner.ccs_server is None
    assert not joiner.config.ccs_enabled
    assert term.cluster is None and groups(member) == {"Main_Group": [member.hostname]}
    assert len(list(joiner.config.data_dir.glob("standalone-*.json"))) == 1


async def test_menu_join_decline_at_the_report(member: Machine, joiner: Daemon) -> None:
    term = Term(joiner)
    answers = ["3", "", "127.0.0.1", str(member.config.ssh_port), "1", PASSPHRASE, "y", "Paris"]
    status, out = await term.run("clusterconfig", *answers, "n")
    assert status == 1
    assert out.splitlines()[-8:] == [
        "[Main_Group]>Paris",
        "Checking the join with the member (nothing changes yet)...",
        f"Joining cluster americas through {member.hostname}, group Paris.",
        *DISCARDED,
        "Do you want to join? [N]>n",
        "Join cancelled. Nothing was changed.",
    ]
    assert term.cluster is None and NY not in str(groups(member))
