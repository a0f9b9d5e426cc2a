"""The shell's comforts where a person meets them: one-command calls through the real
OpenSSH client against a real daemon (notes on the standard error, resetconfig, a new
user's passphrase, a question a one-command call cannot answer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed
from tests.test_security_roles import add_users
from tests.test_shell_ssh import ssh


@pytest.fixture
def one(tmp_path: Path) -> Iterator[Machine]:
    with Testbed(tmp_path, 1, seed=False) as bed:
        bed.start()
        yield bed.machines[0]


def test_a_switch_is_said_on_the_standard_error(one: Machine) -> None:
    assert ssh(one, "clusterconfig create americas").returncode == 0
    listed = ssh(one, "clusterconfig list --json")
    assert listed.returncode == 0
    assert json.loads(listed.stdout)["cluster"] == "americas"  # the output stays JSON
    assert listed.stderr == "This command is restricted to cluster mode: now in Cluster mode.\n"


def test_resetconfig_over_ssh(one: Machine) -> None:
    done = ssh(one, "settz set timezone=Asia/Tokyo; commit tokyo")
    assert done.returncode == 0, done.stdout
    asked = ssh(one, "resetconfig")  # a one-command call cannot answer: nothing is reset
    assert asked.returncode == 1
    assert asked.stdout.splitlines()[-1] == "Nothing was reset: with --yes it asks nothing."
    assert one.op("get", feature="settz", mode=f"machine:{one.hostname}")["value"] is not None
    reset = ssh(one, "resetconfig --yes")
    assert reset.returncode == 0, reset.stdout
    assert "  settz (Time Zone)" in reset.stdout.splitlines()
    assert one.op("get", feature="settz", mode=f"machine:{one.hostname}")["value"] is None
    assert ssh(one, "version").returncode == 0  # still administrable: users and keys kept
    joined = ssh(one, "clusterconfig create americas; resetconfig --yes")
    assert joined.returncode == 1 and "this machine is in cluster americas" in joined.stdout


def test_resetconfig_is_refused_to_an_operator_over_ssh(one: Machine, tmp_path: Path) -> None:
    keys = add_users(one, tmp_path, {"opal": "operator"}, mode=f"machine:{one.hostname}")
    done = ssh(one, "settz set timezone=Asia/Tokyo; commit tokyo", keys["opal"], "opal")
    assert done.returncode == 0, done.stdout  # (an operator changes settings ...)
    for line in ("resetconfig", "resetconfig --yes"):
        refused = ssh(one, line, keys["opal"], "opal")  # (... but does not reset them)
        assert refused.returncode == 1, refused.stdout
        assert refused.stdout.strip() == (
            "Error: opal is operator: only an admin may reset the machine"
        ), refused.stdout
    tz = one.op("get", feature="settz", mode=f"machine:{one.hostname}")["value"]
    assert tz == {"timezone": "Asia/Tokyo"}  # nothing was reset
    assert "opal" in ssh(one, "userconfig print").stdout


def test_a_new_user_needs_an_interactive_shell_for_the_passphrase(one: Machine) -> None:
    made = ssh(one, "userconfig new rita role=read-only; commit rita")
    assert made.returncode == 1
    assert "this needs an answer (New passphrase:)" in made.stdout
    assert "rita" not in ssh(one, "userconfig print").stdout


def test_a_question_only_a_person_can_answer_is_refused_in_one_line(one: Machine) -> None:
    assert ssh(one, "clusterconfig create americas").returncode == 0
    moved = ssh(one, "clusterconfig setgroup")
    assert moved.returncode == 1
    assert moved.stdout.strip() == (
        f"Error: this needs an answer (Choose the machine to move:): one of {one.hostname}; "
        "give it on the command line (see help)"
    )
