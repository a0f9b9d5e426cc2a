"""The restricted-command table."""

from __future__ import annotations

import pytest

from clusterd.schema import CATALOGUE, COMMANDS, InvalidSetting, Restriction, restriction_of
from clusterd.schema.restrictions import UnknownCommand, switch_prompt

CLUSTER = Restriction.CLUSTER_ONLY
MACHINE = Restriction.MACHINE_ONLY
LOGIN = Restriction.LOGIN_HOST_ONLY
FREE = Restriction.UNRESTRICTED


@pytest.mark.parametrize(
    ("command", "restriction"),
    [
        ("sshconfig", CLUSTER),
        ("userconfig", CLUSTER),
        ("interfaceconfig", MACHINE),
        ("routeconfig", MACHINE),
        ("setgateway", MACHINE),
        ("sethostname", MACHINE),
        ("dnsconfig", FREE),
        ("listenerconfig", FREE),
        ("unsubscribe", FREE),
        ("clusterconfig", CLUSTER),
        ("clustercheck", CLUSTER),
        ("passwd", CLUSTER),
        ("clustermode", FREE),
        ("commit", FREE),
        ("status", MACHINE),
        ("nslookup", MACHINE),
        ("last", LOGIN),
        ("resetconfig", LOGIN),
    ],
)
def test_restriction_of(command: str, restriction: Restriction) -> None:
    assert restriction_of(command) is restriction


def test_derived_restrictions_are_exactly_the_reference_ones() -> None:
    def features(restriction: Restriction) -> set[str]:
        return {
            c for c in CATALOGUE.commands() if c in COMMANDS and restriction_of(c) is restriction
        }

    assert features(CLUSTER) == {"sshconfig", "userconfig"}
    assert features(MACHINE) == {"interfaceconfig", "routeconfig", "setgateway", "sethostname"}
    assert features(LOGIN) == set()


def test_every_command() -> None:
    features = [f.command for f in CATALOGUE if not f.internal]
    others = [
        "clusterconfig", "clustercheck", "passwd",
        "clustermode", "commit", "confirm", "clearchanges", "clear", "commitdetail", "rollback",
        "preview",
        "explain",
        "saveconfig", "loadconfig", "help", "quit", "exit",
        "status", "version", "nslookup",
        "last", "ping", "tail", "who", "resetconfig", "upgrade", "watch", "target",
    ]  # fmt: skip
    assert list(COMMANDS) == features + others
    for name, info in COMMANDS.items():
        assert info.name == name
        assert info.summary and "\n" not in info.summary
    assert COMMANDS["dnsconfig"].summary == "DNS"


@pytest.mark.parametrize("command", ["cluster", "groups", "machines", "nosuch", ""])
def test_unknown_command(command: str) -> None:
    with pytest.raises(UnknownCommand) as caught:
        restriction_of(command)
    assert caught.value.problems == [f"unknown command {command!r}"]
    assert isinstance(caught.value, InvalidSetting)


def test_mode_words() -> None:
    assert CLUSTER.mode_word == "cluster"
    assert MACHINE.mode_word == "machine"
    assert LOGIN.mode_word is None
    assert FREE.mode_word is None


def test_switch_prompt() -> None:
    assert switch_prompt(CLUSTER) == (
        'This command is restricted to "cluster" mode. '
        'Would you like to switch to "cluster" mode? [Y]>'
    )
    assert switch_prompt(MACHINE) == (
        'This command is restricted to "machine" mode. '
        'Would you like to switch to "machine" mode? [Y]>'
    )
    for restriction in (LOGIN, FREE):
        with pytest.raises(ValueError, match="not restricted"):
            switch_prompt(restriction)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        COMMANDS["new"] = COMMANDS["commit"]  # type: ignore[index]
