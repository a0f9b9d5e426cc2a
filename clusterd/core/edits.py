"""Editing settings at a mode: define, set, delete, copy, move — all as pending changes.

Every operation validates first and writes only when everything is valid, so a bad
value, an unknown mode or a level the feature does not allow leaves the session's
pending changes as they were.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from clusterd.core import layers
from clusterd.core.errors import InvalidSetting, LevelNotAllowed, NotDefined, UnknownMode
from clusterd.core.modes import Mode
from clusterd.core.pending import View
from clusterd.core.state import definition
from clusterd.core.versions import JSON, MARKER, Unit
from clusterd.schema.feature import Catalogue, Feature, Level
from clusterd.schema.fields import host_key


def write_definition(
    write: Callable[[Unit, JSON | None], None], feature: Feature, mode: Mode, value: Any
) -> None:
    """Write ``value`` as the whole definition of ``feature`` at ``mode`` (a reset)."""
    if feature.is_table:
        write(Unit(feature.command, mode.key, MARKER), {})
        for name, row in value.items():
            write(Unit(feature.command, mode.key, name), row)
    else:
        write(Unit(feature.command, mode.key, MARKER), value)


CLUSTER = Mode.cluster().key


class Start(enum.Enum):
    """What a newly defined mode starts from."""

    EMPTY = "empty"
    DEFAULTS = "defaults"
    INHERITED = "inherited"


class Editor:
    """Edits made by one session on this machine (``me``), laid over the committed state."""

    def __init__(self, view: View, catalogue: Catalogue, me: str) -> None:
        self.view = view
        self.catalogue = catalogue
        self.me = me

    # -- checks ------------------------------------------------------------------------

    def feature(self, command: str, *, internal: bool = False) -> Feature:
        feature = self.catalogue[command]
        if feature.internal and not internal:
            raise InvalidSetting([f"{command} is changed by cluster operations, not edited"])
        return feature

    def check_mode(self, feature: Feature, mode: Mode) -> None:
        if layers.cluster_name(self.view) is None:
            if mode != Mode.machine(self.me):
                raise UnknownMode(str(mode), "this machine is not in a cluster")
            return
        if mode.level is Level.GROUP and self.view.row("groups", CLUSTER, mode.name) is None:
            raise UnknownMode(str(mode), "no such group")
        if mode.level is Level.MACHINE and self.view.row("machines", CLUSTER, mode.name) is None:
            raise UnknownMode(str(mode), "no such machine in the cluster")
        if mode.level not in feature.levels:
            allowed = " or ".join(lv.value for lv in Level if lv in feature.levels)
            raise LevelNotAllowed(feature.command, mode.level.value, allowed)

    def current(self, feature: Feature, mode: Mode) -> Any:
        return definition(self.view.entries(feature.command, mode.key), feature.is_table)

    def _require_defined(self, feature: Feature, mode: Mode) -> None:
        if not self.view.is_defined(feature.command, mode.key):
            raise NotDefined(
                [
                    f"{feature.command} is not defined at {mode}; define it first "
                    "(empty, from the defaults, or from the inherited settings)"
                ]
            )

    def _definition(self, feature: Feature, mode: Mode) -> Any:
        self._require_defined(feature, mode)
        return self.current(feature, mode)

    def inherited(self, feature: Feature, mode: Mode) -> Any:
        """What ``mode`` would use if it did not define the feature."""
        return self.inherited_from(feature, mode).value

    def inherited_from(self, feature: Feature, mode: Mode) -> layers.Resolved:
        """The value ``mode`` would inherit, and the mode it would come from."""
        above: list[Mode] = []
        if mode.level is Level.MACHINE and layers.cluster_name(self.view) is not None:
            above = layers.chain(self.view, mode.name)[1:]
        elif mode.level is Level.GROUP:
            above = [Mode.cluster()]
        return layers.resolve(self.view, feature, above)

    # -- writes ------------------------------------------------------------------------

    def _write(self, unit: Unit, value: JSON | None) -> None:
        # Values reach here validated, modes and levels checked: the store need not redo it.
        self.view.write(unit, value, checked=True)

    def _replace(self, feature: Feature, mode: Mode, value: Any) -> None:
        write_definition(self._write, feature, mode, value)

    def define(self, command: str, mode: Mode, start: Start) -> Any:
        feature = self.feature(command)
        self.check_mode(feature, mode)
        if start is Start.INHERITED:
            value = self.inherited(feature, mode)
        elif start is Start.DEFAULTS or not feature.is_table:
            value = feature.factory_value()
        else:
            value = {}
        self._replace(feature, mode, value)
        return value

    def set_record(self, command: str, mode: Mode, data: Mapping[str, Any]) -> JSON:
        feature = self.feature(command)
        self.check_mode(feature, mode)
        value = feature.validate_record(data)
        self._write(Unit(command, mode.key, MARKER), value)
        return value

    def set_row(self, command: str, mode: Mode, name: str, data: Mapping[str, Any]) -> JSON:
        feature = self.feature(command)
        self.check_mode(feature, mode)
        value = feature.validate_row(name, data)
        self._require_defined(feature, mode)
        self._write(Unit(command, mode.key, name), value)
        return value

    def delete_row(self, command: str, mode: Mode, name: str) -> None:
        feature = self.feature(command)
        self.check_mode(feature, mode)
        if not feature.is_table:
            raise InvalidSetting([f"{command} is a single record, it has no rows"])
        self._require_defined(feature, mode)
        if self.view.row(command, mode.key, name) is None:
            raise NotDefined([f"{command} has no row {name!r} at {mode}"])
        self._write(Unit(command, mode.key, name), None)

    def undefine(self, command: str, mode: Mode) -> None:
        """Delete the mode's settings: it inherits again."""
        feature = self.feature(command)
        self.check_mode(feature, mode)
        self._require_defined(feature, mode)
        self._write(Unit(command, mode.key, MARKER), None)

    def copy(self, command: str, src: Mode, dst: Mode) -> None:
        feature = self.feature(command)
        self.check_mode(feature, src)
        self.check_mode(feature, dst)
        if src == dst:
            raise InvalidSetting([f"{command}: cannot copy {src} onto itself"])
        self._replace(feature, dst, self._definition(feature, src))

    def move(self, command: str, src: Mode, dst: Mode) -> None:
        self.copy(command, src, dst)
        self._write(Unit(command, src.key, MARKER), None)

    def prepare(self, hostname: str, serial: str, machine_key: str) -> JSON:
        """PREPJOIN NEW: let ``hostname`` join with its machine key (needs a commit)."""
        hostname = host_key(hostname)
        feature = self.feature("prepjoin", internal=True)
        if layers.cluster_name(self.view) is None:
            raise UnknownMode("cluster", "this machine is not in a cluster")
        if self.view.row("machines", CLUSTER, hostname) is not None:
            raise InvalidSetting([f"{hostname} is already a member of the cluster"])
        key = " ".join(machine_key.split()[:2])
        value = feature.validate_row(hostname, {"serial": serial, "machine_key": key})
        if not self.view.is_defined("prepjoin", CLUSTER):
            self._write(Unit("prepjoin", CLUSTER, MARKER), {})
        self._write(Unit("prepjoin", CLUSTER, hostname), value)
        return value

    def unprepare(self, hostname: str) -> None:
        """PREPJOIN DELETE."""
        hostname = host_key(hostname)
        self.feature("prepjoin", internal=True)
        if self.view.row("prepjoin", CLUSTER, hostname) is None:
            raise NotDefined([f"no PREPJOIN entry for {hostname!r}"])
        self._write(Unit("prepjoin", CLUSTER, hostname), None)

    def copy_to_all_groups(self, command: str, src: Mode) -> list[Mode]:
        feature = self.feature(command)
        targets = [Mode.group(g) for g in layers.groups(self.view) if Mode.group(g) != src]
        for dst in targets:
            self.check_mode(feature, dst)
        value = self._definition(feature, src)
        for dst in targets:
            self._replace(feature, dst, value)
        return targets
