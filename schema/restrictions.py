"""The restricted-command table: in which mode each command may be run.

In a cluster some commands only make sense in one mode: users and SSH settings are
kept at cluster level, interfaces and routes at machine level.  Run elsewhere, the CLI
offers to switch (``switch_prompt``).  A few commands only act on the machine the
operator is logged in to and ignore the mode altogether.

Feature commands are derived from the catalogue (a feature defined only at cluster
level is cluster-only, ...); the other commands are listed here.  Internal features
(membership) are not commands: cluster operations edit them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from clusterd.schema.catalogue import CATALOGUE
from clusterd.schema.feature import CLUSTER_ONLY, MACHINE_ONLY, Feature
from clusterd.schema.validation import InvalidSetting


class Restriction(enum.Enum):
    UNRESTRICTED = "unrestricted"
    CLUSTER_ONLY = "cluster-only"
    MACHINE_ONLY = "machine-only"
    LOGIN_HOST_ONLY = "login-host-only"

    @property
    def mode_word(self) -> str | None:
        """The mode the command is restricted to, as the CLI says it; None if none."""
        if self is Restriction.CLUSTER_ONLY:
            return "cluster"
        if self is Restriction.MACHINE_ONLY:
            return "machine"
        return None


@dataclass(frozen=True)
class CommandInfo:
    name: str
    restriction: Restriction
    summary: str


class UnknownCommand(InvalidSetting):
    """Raised when a name is not a command of the CLI."""

    def __init__(self, command: str) -> None:
        super().__init__([f"unknown command {command!r}"])
        self.command = command


_OTHER_COMMANDS: dict[Restriction, dict[str, str]] = {
    Restriction.CLUSTER_ONLY: {
        "clusterconfig": "Create, join or manage the cluster and its groups and machines",
        "clustercheck": "Check that every machine of the cluster has the same configuration",
        "passwd": "Change a user's passphrase",
    },
    Restriction.UNRESTRICTED: {
        "clustermode": "Show or change the mode (cluster, group or machine) being edited",
        "commit": "Commit the pending changes",
        "confirm": "Confirm the pending confirmed commits (no rollback)",
        "clearchanges": "Discard the pending changes",
        "clear": "Discard the pending changes (same as clearchanges)",
        "commitdetail": "Show what a past commit changed",
        "rollback": "Undo a past commit with a new one, after a preview",
        "preview": "Show the pending changes before committing them",
        "explain": "Show which mode each setting comes from",
        "saveconfig": "Save the configuration to a file",
        "loadconfig": "Load a configuration from a file",
        "help": "List the commands, or show help on one",
        "quit": "Leave the command line",
        "exit": "Leave the command line (same as quit)",
    },
    Restriction.MACHINE_ONLY: {
        "status": "Show the status of the machine",
        "version": "Show the software version of the machine",
        "nslookup": "Look up a name or address as the daemon does (not with dnsconfig)",
    },
    Restriction.LOGIN_HOST_ONLY: {
        "last": "Show recent logins to this machine",
        "ping": "Time a query's round trip from this machine to a member",
        "tail": "Show the end of this machine's daemon log",
        "who": "Show who is logged in to this machine",
        "resetconfig": "Restore this machine's factory configuration",
        "upgrade": "Where the upgrade routine stands on this machine, and what is next",
        "watch": "Stream this machine's effective configuration changes (JSON lines)",
        "target": "Show, roll back or force this machine's service targets",
    },
}


def feature_restriction(feature: Feature) -> Restriction:
    """A feature command's restriction, from the levels the feature may be defined at."""
    if feature.levels == CLUSTER_ONLY:
        return Restriction.CLUSTER_ONLY
    if feature.levels == MACHINE_ONLY:
        return Restriction.MACHINE_ONLY
    return Restriction.UNRESTRICTED


def _commands() -> dict[str, CommandInfo]:
    commands = {
        f.command: CommandInfo(f.command, feature_restriction(f), f.title)
        for f in CATALOGUE
        if not f.internal
    }
    for restriction, names in _OTHER_COMMANDS.items():
        for name, summary in names.items():
            if name in commands:
                raise ValueError(f"command {name!r} is listed twice")
            commands[name] = CommandInfo(name, restriction, summary)
    return commands


COMMANDS: Mapping[str, CommandInfo] = MappingProxyType(_commands())


def restriction_of(command: str) -> Restriction:
    """The restriction of ``command``; raises UnknownCommand if it is not a command."""
    try:
        return COMMANDS[command].restriction
    except KeyError:
        raise UnknownCommand(command) from None


def switch_prompt(restriction: Restriction) -> str:
    """What the CLI asks when a restricted command is run in another mode."""
    mode = restriction.mode_word
    if mode is None:
        raise ValueError(f"{restriction.name} commands are not restricted to a mode")
    return (
        f'This command is restricted to "{mode}" mode. '
        f'Would you like to switch to "{mode}" mode? [Y]>'
    )
