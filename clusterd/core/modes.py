"""Modes: one named member of a level (``cluster``, ``group Paris``, ``machine m.example``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from clusterd.schema.feature import Level
from clusterd.schema.fields import host_key
from clusterd.schema.validation import InvalidSetting


class UnknownMode(InvalidSetting):
    """Raised when a mode is malformed or names a group or machine the cluster lacks."""

    def __init__(self, text: str, why: str = "") -> None:
        super().__init__([f"unknown mode {text!r}" + (f": {why}" if why else "")])


@dataclass(frozen=True, slots=True, order=True)
class Mode:
    level: Level
    name: str = ""

    def __post_init__(self) -> None:
        if (self.level is Level.CLUSTER) != (self.name == ""):
            raise UnknownMode(self.key, "cluster mode has no name, the others need one")
        if self.level is Level.MACHINE:  # any spelling of a host name is the host
            object.__setattr__(self, "name", host_key(self.name))

    @staticmethod
    def cluster() -> Mode:
        return Mode(Level.CLUSTER)

    @staticmethod
    def group(name: str) -> Mode:
        return Mode(Level.GROUP, name)

    @staticmethod
    def machine(name: str) -> Mode:
        return Mode(Level.MACHINE, name)

    @property
    def key(self) -> str:
        """The storage form: ``cluster``, ``group:Paris``, ``machine:lab3.example.com``."""
        return (
            self.level.value if self.level is Level.CLUSTER else f"{self.level.value}:{self.name}"
        )

    @staticmethod
    def from_key(key: str) -> Mode:
        return _from_key(key)

    @staticmethod
    def parse(text: str) -> Mode:
        """The shell form: ``cluster``, ``group Paris``, ``machine lab3.example.com``."""
        words = text.split()
        if words == ["cluster"]:
            return Mode.cluster()
        if len(words) == 2 and words[0] in ("group", "machine"):
            return Mode(Level(words[0]), words[1])
        raise UnknownMode(text, "expected 'cluster', 'group NAME' or 'machine NAME'")

    def __str__(self) -> str:
        if self.level is Level.CLUSTER:
            return "Cluster"
        return f"{self.level.value.capitalize()} {self.name}"


@functools.lru_cache(maxsize=4096)
def _from_key(key: str) -> Mode:
    level, _, name = key.partition(":")
    try:
        return Mode(Level(level), name)
    except ValueError:
        raise UnknownMode(key) from None
