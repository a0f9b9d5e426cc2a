"""Configuration files moved between two clusters over ssh, as their admins would.

newyork is cluster americas (groups Main_Group and Paris); london is cluster europe
(Main_Group and West), with users of its own.  Files go from one to the other with
``saveconfig --stdout`` and ``loadconfig -`` (scp is refused, root on both hosts is not
needed); what a file may not do (lock admins out, move one machine's network settings
onto another, pour two groups into one) it does not do.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import PASSPHRASE, Machine, Testbed
from clusterd.node import identity
from clusterd.schema.access import hash_passphrase

EUROPE_ADMIN = "eva"
EUROPE_PASSPHRASE = "europe's own passphrase"


def ssh(m: Machine, command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(identity.local_ssh(m.config, command), input=stdin,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Machine, Machine]]:
    with Testbed(tmp_path, 2, seed=False) as bed:
        bed.start()
        ny, london = bed.machines
        ny.op("create", name="americas")
        ny.op("addgroup", group="Paris")
        london.op("create", name="europe")
        london.op("addgroup", group="West")
        user = {"do": "set_row", "feature": "userconfig", "mode": "cluster"}
        london.edit({**user, "row": EUROPE_ADMIN, "value": {
            "role": "admin", "passphrase_hash": hash_passphrase(EUROPE_PASSPHRASE)}})  # fmt: skip
        ny.edit({"do": "define", "feature": "settz", "mode": "group:Paris", "start": "defaults"},
                {"do": "set_record", "feature": "settz", "mode": "group:Paris",
                 "value": {"timezone": "Europe/Paris"}})  # fmt: skip
        yield ny, london


def saved(m: Machine) -> str:
    done = ssh(m, "saveconfig --stdout")
    assert done.returncode == 0 and done.stdout.startswith("<?xml"), done.stdout[:300]
    return done.stdout


def test_a_file_moves_between_clusters_over_ssh(two: tuple[Machine, Machine]) -> None:
    ny, london = two
    file = saved(ny)
    done = ssh(london, "loadconfig - --group Paris=West --no-cluster --yes; commit from americas",
               stdin=file)  # fmt: skip
    assert done.returncode == 0, done.stdout
    value = london.op("get", feature="settz", mode="group:West")["value"]
    assert value == {"timezone": "Europe/Paris"}
    # The machine section named newyork matched no machine here: said, not silent.
    assert f"machine {ny.hostname} of the file: not loaded" in done.stdout
    assert "--machine" in done.stdout


def test_users_of_the_cluster_are_never_left_undefined(two: tuple[Machine, Machine]) -> None:
    """A file without users (a standalone machine's settings, say) keeps the cluster's:
    the editor refuses to undefine them, and so does loadconfig."""
    ny, london = two
    ny.edit({"do": "define", "feature": "settz", "mode": "cluster", "start": "defaults"})
    file = _without(saved(ny), "userconfig")  # a cluster section of other settings
    done = ssh(london, "loadconfig - --yes; commit without users", stdin=file)
    assert done.returncode == 0, done.stdout
    assert "userconfig: kept (the file has none; undefining it would leave every admin " \
           "locked out)" in done.stdout  # fmt: skip
    assert EUROPE_ADMIN in london.op("effective")["values"]["userconfig"]
    assert ssh(london, "version").returncode == 0  # the local key, and ...
    assert _passphrase_login(london, EUROPE_ADMIN, EUROPE_PASSPHRASE)  # ... eva still log in


def test_a_file_that_replaces_the_users_says_whose_and_asks(two: tuple[Machine, Machine]) -> None:
    ny, london = two
    file = saved(ny)
    done = ssh(london, "loadconfig -", stdin=file)
    assert done.returncode == 1, done.stdout
    assert "The file replaces the cluster's users with those of cluster americas: admin." \
        in done.stdout  # fmt: skip
    assert "Users that will no longer exist: eva." in done.stdout
    assert "Nothing was loaded: a one-command call loads with --yes." in done.stdout
    assert EUROPE_ADMIN in london.op("effective")["values"]["userconfig"]


def test_a_machine_section_keeps_its_network_settings_at_home(
    two: tuple[Machine, Machine],
) -> None:
    """newyork's section loaded onto london: its interfaces (newyork's addresses) stay
    behind unless --network; london keeps its own."""
    ny, london = two
    file = saved(ny)
    mapping = f"--machine {ny.hostname}={london.hostname} --no-cluster"
    done = ssh(london, f"loadconfig - {mapping} --yes; commit machine", stdin=file)
    assert done.returncode == 0, done.stdout
    assert f"interfaceconfig of machine {ny.hostname}: not loaded onto Machine " \
           f"{london.hostname} (network settings; --network loads them)" in done.stdout  # fmt: skip
    mine = london.op("get", feature="interfaceconfig", mode=f"machine:{london.hostname}")
    assert mine["value"]["Management"]["address"] == london.config.listen


def test_two_sections_into_one_group_are_refused(two: tuple[Machine, Machine]) -> None:
    ny, london = two
    file = saved(ny)
    done = ssh(london, "loadconfig - --group Paris=West --group Main_Group=West --yes",
               stdin=file)  # fmt: skip
    assert done.returncode == 1
    assert "group Main_Group and group Paris of the file both go to Group West" in done.stdout
    assert "--merge" in done.stdout
    assert london.op("get", feature="settz", mode="group:West")["value"] is None


def test_saveconfig_over_a_name_says_why_nothing_was_saved(two: tuple[Machine, Machine]) -> None:
    ny, _ = two
    assert ssh(ny, "saveconfig mine.xml").returncode == 0
    done = ssh(ny, "saveconfig mine.xml")
    assert done.returncode == 1
    assert "Nothing was saved: mine.xml exists (answer Y to overwrite it, or give another " \
           "name)." in done.stdout  # fmt: skip


def _without(xml: str, feature: str) -> str:
    """The file without one feature's element, wherever it is."""
    import re

    return re.sub(rf'\s*<feature name="{feature}">[^<]*</feature>', "", xml)


def _passphrase_login(m: Machine, user: str, passphrase: str) -> bool:
    import asyncio

    import asyncssh

    async def go() -> bool:
        try:
            async with asyncssh.connect(
                m.config.listen, m.config.ssh_port, username=user, password=passphrase,
                client_keys=None, known_hosts=None, config=None, agent_path=None,
            ) as conn:  # fmt: skip
                done = await conn.run("version", check=False)
                return done.exit_status == 0
        except asyncssh.PermissionDenied:
            return False

    return asyncio.run(go())


def test_admin_passphrase_still_works_after_loading_another_clusters_file(
    two: tuple[Machine, Machine],
) -> None:
    """Loading americas' users into europe with --yes is a choice the review spelled out:
    afterwards americas' admin passphrase works there, europe's eva's does not."""
    ny, london = two
    done = ssh(london, "loadconfig - --yes; commit users of americas", stdin=saved(ny))
    assert done.returncode == 0, done.stdout
    assert _passphrase_login(london, "admin", PASSPHRASE)
    assert not _passphrase_login(london, EUROPE_ADMIN, EUROPE_PASSPHRASE)
    listed = json.loads(ssh(london, "clusterconfig list --json").stdout)
    assert listed["cluster"] == "europe"  # membership is never loaded
