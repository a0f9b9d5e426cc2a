"""``preview`` (the pending changes, and what they would do machine by machine) and
``explain`` (where a machine's effective value of a feature comes from, level by level).
Values are written whole, indented (``clusterd.cli.difftext``), never cut."""

from __future__ import annotations

import json
import time
from typing import Any

from clusterd.cli.difftext import diff, lines
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.errors import ClusterdError
from clusterd.core.preview import effect as preview_effect
from clusterd.core.preview import pending_changes
from clusterd.core.state import definition
from clusterd.node.check import last_change
from clusterd.schema.fields import host_key
from clusterd.store.session import Session


def _machines(shell: Shell) -> list[str]:
    return list(layers.machines(shell.store.state)) or [shell.hostname]


SECRET = "(a secret value changes: secrets are not shown)"


async def preview(shell: Shell, args: list[str]) -> int:
    """The pending changes themselves, then per machine how its effective settings
    change, field by field (``clusterd.cli.difftext``); ``--json``: the same as data,
    machine by machine with the list under ``pending`` (machine names hold a dot)."""
    if not shell.session.pending:
        shell.write("There are no pending changes.")
        return 0
    if "--json" in args or "-j" in args:
        listed, report = _previewed(shell, shell.session)
        shell.write(json.dumps({"pending": listed, **report}, indent=1))
        return 0
    write_preview(shell, shell.session)
    return 0


def _previewed(shell: Shell, session: Session) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    state, view, catalogue = shell.store.state, session.view, shell.store.catalogue
    listed = pending_changes(state, view, catalogue, session.pending)
    return listed, preview_effect(state, view, catalogue, session.pending, _machines(shell))


def write_preview(shell: Shell, session: Session) -> None:
    """``session``'s pending changes, then what they do machine by machine (``preview``;
    ``rollback`` shows its own session's the same way)."""
    listed, report = _previewed(shell, session)
    shell.write("Pending changes:")
    for change in listed:
        row = f" {change['row']}" if change["row"] is not None else ""
        shell.write(f"  {change['feature']} at {change['mode']}: {change['what']}{row}")
        _write_diff(shell, change["before"], change["after"], change["changed"])
    for machine, found in report.items():
        shell.write(f"Machine {machine}:")
        if not found["changes"]:
            shell.write("  no effective change")
        for feature, (old, new) in found["changes"].items():
            shell.write(f"  {feature}:")
            _write_diff(shell, old, new, True)
        for s in found["shielded"]:
            shell.write(f"  not affected by {s['feature']} at {s['at']}: "
                        f"its own setting at {s['by']} overrides it")  # fmt: skip


def _write_diff(shell: Shell, old: Any, new: Any, changed: bool) -> None:
    found = diff(old, new, indent=2)
    if not found and changed and old is None and new is None:
        return  # a table's (re)definition: its rows follow one by one
    if not found:
        found = [f"    {SECRET if changed else '(the same as committed)'}"]
    for line in found:
        shell.write(line)


async def explain(shell: Shell, args: list[str]) -> int:
    as_json = "--json" in args or "-j" in args
    words = [a for a in args if a not in ("--json", "-j")]
    if not words:
        raise Usage("explain FEATURE [MACHINE] [--json]")
    feature = shell.store.catalogue[words[0]]
    machine = host_key(words[1]) if len(words) > 1 else shell.hostname
    if machine not in _machines(shell):
        raise ClusterdError(f"no machine {machine!r} in the cluster")
    state = shell.store.state
    chain = layers.chain(state, machine)
    resolved = layers.resolve(state, feature, chain)
    levels = []
    for mode in chain:
        entries = state.entries(feature.command, mode.key)
        value = definition(entries, feature.is_table)
        level: dict[str, Any] = {"mode": str(mode), "defined": value is not None}
        change = last_change(shell.store, entries)
        if value is not None and change is not None:
            level |= {"value": feature.shown(value), **change}
        levels.append(level)
    source = "the factory defaults" if resolved.mode is None else str(resolved.mode)
    result = {"feature": feature.command, "machine": machine,
              "value": feature.shown(resolved.value),
              "from": source, "levels": levels}  # fmt: skip
    if as_json:
        shell.write(json.dumps(result, indent=1))
        return 0
    shell.write(f"{feature.title} on {machine} (comes from {source}):")
    _write_lines(shell, result["value"], 2)
    shell.write("Level by level:")
    for level in levels:
        if not level["defined"]:
            shell.write(f"  {level['mode']}: not defined")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(level.get("at", 0)))
        shell.write(f"  {level['mode']} (commit {level['commit']} by '{level.get('user')}' on "
                    f"{level['origin']} at {when} {level.get('comment', '')!r}):")  # fmt: skip
        _write_lines(shell, level["value"], 4)
    return 0


def _write_lines(shell: Shell, value: Any, indent: int) -> None:
    for line in lines(value, indent):
        shell.write(line)
