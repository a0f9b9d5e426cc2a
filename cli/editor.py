"""One editor for every feature of the catalogue, driven by its schema.

``FEATURE`` alone shows where the values come from and offers a menu; every operation
also has a one-line form::

    FEATURE print | clustershow | define empty|defaults|inherited | undefine
    FEATURE set FIELD=VALUE ...                 (a record)
    FEATURE new ROW FIELD=VALUE ... | edit ROW FIELD=VALUE ... | delete ROW   (a table)
    FEATURE clusterset copy|move cluster | group NAME | machine NAME | allgroups
    FEATURE clusterset delete cluster | group NAME | machine NAME | allgroups

A VALUE is read in its field's words (``schema.words``): ``servers=10.0.0.53,10.0.0.54``,
``enabled=no``, or JSON; ``FIELD+=VALUE`` and ``FIELD-=VALUE`` add elements to a list or
remove them.  ``help FEATURE`` and the menu show each field's shape with an example.

Edits are pending changes of the shell's session at its current mode.  Editing where
the mode does not define the feature offers to start from the defaults or from a copy
of the inherited settings; after an edit, the modes that override it and the
references that become unavailable on some machine are named.

CLUSTERSET copies or moves the current mode's settings to another mode, or deletes
the settings of a chosen mode (it inherits again: from its group, the cluster, or the
factory defaults).  A delete names the machines whose settings change and, in an
interactive shell, asks first.  The cluster-level settings of a feature that only the
cluster may hold (users, SSH settings) cannot be deleted: nothing could stand in for
them but the factory defaults, which would lock every admin out; nor can UNDEFINE
take them away.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from clusterd.cli.console import choose, confirm, pick
from clusterd.cli.passphrase import new_passphrase
from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers, references
from clusterd.core.edits import Start
from clusterd.core.errors import ClusterdError, InvalidSetting, LevelNotAllowed, NotDefined
from clusterd.core.modes import Mode
from clusterd.schema.access import hash_passphrase
from clusterd.schema.feature import Feature, Level
from clusterd.schema.shapes import fields as fields_of
from clusterd.schema.shapes import help_lines
from clusterd.schema.words import Op, edited, missing

OPS_TABLE = ["NEW", "EDIT", "DELETE", "PRINT", "CLUSTERSHOW", "CLUSTERSET", "UNDEFINE"]
OPS_RECORD = ["SET", "PRINT", "CLUSTERSHOW", "CLUSTERSET", "UNDEFINE"]
CLUSTERSET_OPS = ["copy", "move", "delete"]
CLUSTERSET_USAGE = (
    "FEATURE clusterset copy|move cluster|group NAME|machine NAME|allgroups\n"
    "  or: FEATURE clusterset delete cluster|group NAME|machine NAME|allgroups"
)


def parse_fields(words: list[str]) -> list[tuple[str, Op, str]]:
    """``a=1 b+=x c-=y``: each field's name, how it changes (``=``, ``+=`` to add to a
    list, ``-=`` to remove from it) and its words, which ``schema.words`` reads."""
    found: list[tuple[str, Op, str]] = []
    for word in words:
        name, eq, text = word.partition("=")
        op: Op = "="
        if name.endswith("+") or name.endswith("-"):
            name, op = name[:-1], "+=" if name.endswith("+") else "-="
        if not eq or not name:
            raise Usage(f"FIELD=VALUE expected, not {word!r}")
        found.append((name, op, text))
    return found


def _relative(given: list[tuple[str, Op, str]]) -> bool:
    return any(op != "=" for _, op, _ in given)


def show(feature: Feature, value: Any) -> str:
    """A value as the shell prints it: JSON, secrets shown as "set" (to everybody)."""
    return json.dumps(feature.shown(value), indent=1, sort_keys=True)


async def edit_feature(shell: Shell, args: list[str]) -> int:
    feature = shell.store.catalogue[args[0]]
    words = args[1:]
    if not words:
        _where(shell, feature)
        ops = OPS_TABLE if feature.is_table else OPS_RECORD
        chosen = await choose(shell.console, "Choose the operation you want to perform:",
                            [*ops, "(done)"], len(ops) + 1)  # fmt: skip
        if chosen > len(ops):
            return 0
        words = [ops[chosen - 1].lower()]
        if words[0] in ("new", "edit", "delete"):
            words.append((await shell.console.ask("Enter the row name.")).strip())
        if words[0] in ("new", "edit", "set"):
            for line in help_lines(feature):  # each field's shape, with an example
                shell.write(f"  {line}")
            hint = ", ".join(fields_of(feature))
            line = await shell.console.ask(f"Enter FIELD=VALUE pairs ({hint}).", "")
            try:  # (the same words as the one-line form: quotes keep spaces together)
                words.extend(shlex.split(line))
            except ValueError as exc:
                raise Usage(f"FIELD=VALUE pairs: {exc} (close the quote)") from None
        if words[0] == "clusterset":
            question = "Copy or move these settings, or delete a mode's settings?"
            how = CLUSTERSET_OPS[await choose(shell.console, question, CLUSTERSET_OPS) - 1]
            where = "Delete the settings at:" if how == "delete" else f"{how.capitalize()} to:"
            target = await pick(shell.console, where, _clusterset_targets(shell, feature, how))
            words.extend([how, *target.split(" ", 1)])
    return await _run(shell, feature, words[0].lower(), words[1:], shown=not args[1:])


def _clusterset_targets(shell: Shell, feature: Feature, how: str) -> list[str]:
    """The modes CLUSTERSET ``how`` can name from the current mode, as its words are
    typed (``group Paris``): the other modes the feature may be defined at, or, for a
    delete, the modes that define it; ``allgroups`` where it applies."""
    view, here = shell.session.view, shell.mode
    modes = [Mode.cluster()] if Level.CLUSTER in feature.levels else []
    if Level.GROUP in feature.levels:
        modes += [Mode.group(g) for g in layers.groups(view)]
    if Level.MACHINE in feature.levels:
        modes += [Mode.machine(m) for m in sorted(layers.machines(view))]
    if how == "delete":
        modes = [m for m in modes if view.is_defined(feature.command, m.key)]
    else:
        modes = [m for m in modes if m != here]
    words = [m.level.value if m == Mode.cluster() else f"{m.level.value} {m.name}" for m in modes]
    if how != "move" and Level.GROUP in feature.levels and layers.groups(view):
        words.append("allgroups")
    return words


def _where(shell: Shell, feature: Feature) -> None:
    view, mode = shell.session.view, shell.mode
    if layers.is_defined(view, feature, mode):
        shell.write(f"{feature.title}: defined at {mode}.")
        return
    if shell.cluster is None:
        shell.write(f"{feature.title}: not set on this machine; the factory defaults apply.")
        return
    inherited = shell.session.edit.inherited(feature, mode)
    source = _source(shell, feature, mode)
    shell.write(f"{feature.title}: not defined at {mode}; the values shown come from {source}.")
    shell.write(show(feature, inherited))


def _source(shell: Shell, feature: Feature, mode: Mode) -> str:
    found = shell.session.edit.inherited_from(feature, mode).mode
    return "the factory defaults" if found is None else str(found)


async def _ensure_defined(shell: Shell, feature: Feature, *, shown: bool = False) -> None:
    view, mode = shell.session.view, shell.mode
    if layers.is_defined(view, feature, mode):
        return
    if shell.cluster is None or shell.session.edit.inherited_from(feature, mode).mode is None:
        # (nothing inherited: both starts would be the factory defaults, so nothing is asked)
        shell.session.define(feature.command, mode, Start.DEFAULTS)
        return
    if not shown:
        _where(shell, feature)
    starts = ["the factory defaults", "a copy of the inherited settings"]
    question = f"{feature.command} is not defined at {mode}. Start from:"
    chosen = await choose(shell.console, question, starts, 2)
    start = Start.DEFAULTS if chosen == 1 else Start.INHERITED
    shell.session.define(feature.command, mode, start)


async def _run(
    shell: Shell, feature: Feature, op: str, args: list[str], *, shown: bool = False
) -> int:
    s, mode, cmd = shell.session, shell.mode, feature.command
    if op not in ("print", "clustershow"):
        shell.require_admin(cmd)
    match op:
        case "print":
            return _print(shell, feature)
        case "clustershow":
            return _clustershow(shell, feature)
        case "define":
            if args and args[0] not in {s.value for s in Start}:
                raise Usage(f"{cmd} define empty|defaults|inherited")
            start = Start(args[0] if args else "inherited")
            s.define(cmd, mode, start)
        case "undefine":
            _keep_cluster_only(feature, mode, "undefining")
            s.undefine(cmd, mode)
        case "set" if not feature.is_table:
            given = parse_fields(args)
            fields = edited(feature, given, _base(shell, feature, None))
            _check_first(shell, feature, None, fields)
            await _ensure_defined(shell, feature, shown=shown)
            current = s.edit.current(feature, mode) or {}
            if _relative(given):  # += and -= change what the edit did start from
                fields = edited(feature, given, current)
            s.set_record(cmd, mode, {**current, **fields})
        case "new" | "edit" if feature.is_table:
            if not args:
                raise Usage(f"{cmd} {op} ROW FIELD=VALUE ...")
            given = parse_fields(args[1:])
            fields = edited(feature, given, _base(shell, feature, args[0]), row=args[0])
            asked = op == "new" and cmd == "userconfig" and "passphrase_hash" not in fields
            if asked:  # (checked with a stand-in first: questions come after the checks)
                fields["passphrase_hash"] = hash_passphrase("stand-in passphrase", n=2)
            _check_first(shell, feature, args[0], fields)
            await _ensure_defined(shell, feature, shown=shown)
            if asked:  # a new user's passphrase is typed twice, as passwd asks it
                fields["passphrase_hash"] = await new_passphrase(shell)
            row = shell.session.view.row(cmd, mode.key, args[0])
            if op == "new" and row is not None:
                raise Usage(f"{cmd} already has a row {args[0]!r}: use edit")
            if op == "edit" and row is None:
                raise Usage(f"{cmd} has no row {args[0]!r} at {mode}: use new")
            if _relative(given):  # += and -= change what the edit did start from
                fields = {**fields, **edited(feature, given, row, row=args[0])}
            s.set_row(cmd, mode, args[0], {**(row or {}), **fields})
        case "delete" if feature.is_table:
            if not args:
                raise Usage(f"{cmd} delete ROW")
            await _ensure_defined(shell, feature, shown=shown)
            s.delete_row(cmd, mode, args[0])
        case "clusterset":
            return await _clusterset(shell, feature, args)
        case _:
            raise Usage(f"no {op!r} for {cmd}; see 'help {cmd}'")
    if op in ("new", "edit", "delete", "set"):  # one row (or the record) changed
        _after_edit(shell, feature, mode, one=True, row=args[0] if feature.is_table else None)
    else:
        _after_edit(shell, feature, mode)
    return 0


def _check_first(shell: Shell, feature: Feature, row: str | None, fields: dict[str, Any]) -> None:
    """A value that cannot be right is refused before any question is asked: checked
    against what this mode holds now, or else inherits (what the edit would start
    from), so "Start from" is never asked of an edit that then fails."""
    data = {**_base(shell, feature, row), **fields}
    if row is None or feature.row_name.fullmatch(row):  # (a bad name is said first)
        lacking = missing(feature, data, row=row)
        if lacking:
            raise InvalidSetting(lacking)
    if row is None:
        feature.validate_record(data)
    else:
        feature.validate_row(row, data)


def _base(shell: Shell, feature: Feature, row: str | None) -> dict[str, Any]:
    """What an edit of the record (or of ``row``) starts from: what this mode holds
    now, or else inherits."""
    mode, view = shell.mode, shell.session.view
    if row is not None and layers.is_defined(view, feature, mode):  # (one row, not all)
        return dict(view.row(feature.command, mode.key, row) or {})
    base = shell.session.edit.current(feature, mode)
    if base is None:
        base = shell.session.edit.inherited(feature, mode)
    if row is not None:
        base = base.get(row) if isinstance(base, dict) else None
    return dict(base or {})


def _print(shell: Shell, feature: Feature) -> int:
    """The settings in use at the mode (its own, or what it inherits), then each row
    (or the record) some machine using them cannot use: a reference it cannot resolve."""
    view, mode = shell.session.view, shell.mode
    source: Mode | None = mode
    if layers.is_defined(view, feature, mode):
        shell.write(show(feature, shell.session.edit.current(feature, mode)))
    else:
        _where(shell, feature)
        source = shell.session.edit.inherited_from(feature, mode).mode
    catalogue, me = shell.store.catalogue, shell.hostname
    for p in references.unresolved_from(view, catalogue, me, feature.command, source):
        what = "These settings are" if p.row is None else f"Row {p.row!r} is"
        shell.write(f"{what} unavailable on Machine {p.machine}: field {p.field!r} names "
                    f"{p.target} {p.name!r}, which is not available there.")  # fmt: skip
    return 0


def _clustershow(shell: Shell, feature: Feature) -> int:
    if shell.cluster is None:
        shell.write("This machine is not in a cluster.")
        return 0
    shell.write("Configured at mode:")
    for mode, defined in layers.defined_at(shell.session.view, feature):
        shell.write(f"    {mode}: {'Yes' if defined else 'No'}")
    return 0


async def _clusterset(shell: Shell, feature: Feature, args: list[str]) -> int:
    if len(args) < 2 or args[0] not in CLUSTERSET_OPS:
        raise Usage(CLUSTERSET_USAGE.replace("FEATURE", feature.command))
    if args[0] == "delete":
        return await _clusterset_delete(shell, feature, args[1:])
    s, src = shell.session, shell.mode
    if args[1] == "allgroups":
        if args[0] == "move":
            raise Usage("moving to all groups is not possible: copy, then undefine here")
        targets = s.copy_to_all_groups(feature.command, src)
    else:
        dst = Mode.parse(" ".join(args[1:]))
        users = _users(shell, feature, src)
        (s.copy if args[0] == "copy" else s.move)(feature.command, src, dst)
        targets = [dst]
        if args[0] == "move" and not await _move_losses(shell, feature, users, dst):
            return 1  # (the shell takes the pending move back)
    for dst in targets:
        shell.write(f"{feature.title} {args[0]} from {src} to {dst}: pending until commit.")
        _after_edit(shell, feature, dst)
    return 0


async def _clusterset_delete(shell: Shell, feature: Feature, where: list[str]) -> int:
    """Delete the feature's settings at a mode (or at every group that defines it): the
    mode inherits again.  Pending until commit, like copy and move."""
    cmd = feature.command
    if shell.cluster is None:
        raise ClusterdError(
            f"this machine is not in a cluster: '{cmd} undefine' deletes its own settings"
        )
    targets = _delete_targets(shell, feature, where)
    for target in targets:
        shell.write(_delete_effect(shell, feature, target))
    if shell.console.interactive:
        what = str(targets[0]) if len(targets) == 1 else "every group that defines it"
        if not await confirm(shell.console, f"Delete {feature.title} at {what}?", False):
            shell.write("Nothing deleted.")
            return 1
    for target in targets:
        shell.session.undefine(cmd, target)
        shell.write(f"{feature.title} deleted at {target}: pending until commit.")
    _unavailable(shell, feature)
    return 0


def _delete_targets(shell: Shell, feature: Feature, where: list[str]) -> list[Mode]:
    """The modes a delete acts on; each must exist, allow and define the feature.  A
    feature only the cluster may hold keeps its cluster-level settings."""
    view, edit, cmd = shell.session.view, shell.session.edit, feature.command
    if where == ["allgroups"]:
        if Level.GROUP not in feature.levels:
            allowed = " or ".join(lv.value for lv in Level if lv in feature.levels)
            raise LevelNotAllowed(cmd, Level.GROUP.value, allowed)
        groups = [Mode.group(g) for g in layers.groups(view)]
        targets = [g for g in groups if view.is_defined(cmd, g.key)]
        if not targets:
            raise NotDefined([f"{cmd} is not defined at any group: nothing to delete"])
        return targets
    target = Mode.parse(" ".join(where))
    edit.check_mode(feature, target)
    _keep_cluster_only(feature, target, "deleting")
    if not view.is_defined(cmd, target.key):
        raise NotDefined([f"{cmd} is not defined at {target}: nothing to delete"])
    return [target]


def _keep_cluster_only(feature: Feature, target: Mode, doing: str) -> None:
    """Refuse to take away the cluster's settings of a feature only the cluster holds."""
    if target == Mode.cluster() and feature.levels == frozenset({Level.CLUSTER}):
        raise ClusterdError(
            f"{feature.command} can only be defined at cluster level: {doing} it there "
            "would leave every machine with the factory defaults; change its settings "
            "instead"
        )


def _users(shell: Shell, feature: Feature, mode: Mode) -> list[str]:
    """The machines whose settings of ``feature`` come from ``mode`` (pending included)."""
    view = shell.session.view
    return [
        m
        for m in layers.machines_under(view, mode)
        if layers.resolve(view, feature, layers.chain(view, m)).mode == mode
    ]


async def _move_losses(shell: Shell, feature: Feature, users: list[str], dst: Mode) -> bool:
    """After a pending move to ``dst``: name the machines that used the moved settings
    and no longer will (not under ``dst``, or overriding it), and what they use instead;
    in an interactive shell, ask first, as a delete does.  False: not confirmed."""
    view, lost = shell.session.view, []
    for machine in users:
        now = layers.resolve(view, feature, layers.chain(view, machine)).mode
        if now != dst:
            instead = "the factory defaults" if now is None else f"the settings of {now}"
            lost.append(f"{machine} will use {instead}")
    if not lost:
        return True
    shell.write(f"Warning: these machines lose the moved {feature.title} settings:")
    for line in lost:
        shell.write(f"  {line}")
    if shell.console.interactive and not await confirm(shell.console, "Move anyway?", False):
        shell.write("Nothing moved.")
        return False
    return True


def _delete_effect(shell: Shell, feature: Feature, target: Mode) -> str:
    """Which machines use the settings at ``target``, and what they will use instead."""
    users = _users(shell, feature, target)
    if not users:
        return f"{feature.title} at {target}: no machine uses these settings."
    after = shell.session.edit.inherited_from(feature, target).mode
    instead = "the factory defaults" if after is None else f"the settings of {after}"
    return f"{feature.title} at {target}: {', '.join(users)} will use {instead}."


def _after_edit(
    shell: Shell, feature: Feature, mode: Mode, *, one: bool = False, row: str | None = None
) -> None:
    """Name the modes that override the edit, and the references it breaks or leaves
    broken: of the whole feature, or (``one``) of the one row it changed (``row``; None
    for a record)."""
    view = shell.session.view
    shadows = layers.overriding(view, feature, mode)
    if shadows:
        shell.write("Note: Changes to these settings will not affect the following groups "
                    "and machines")  # fmt: skip
        level = "cluster" if not mode.name else f"{mode.level.value} {mode.name}"
        shell.write(f"because they are overriding the {level}-wide settings:")
        groups = [m.name for m in shadows if m.key.startswith("group:")]
        machines = [m.name for m in shadows if m.key.startswith("machine:")]
        for names in (groups, machines):
            if names:
                shell.write(", ".join(names))
    _unavailable(shell, feature, one=one, row=row)


def _unavailable(
    shell: Shell, feature: Feature, *, one: bool = False, row: str | None = None
) -> None:
    """Name the references to or from ``feature`` (``one``: only those of one row of it,
    or naming that row) that some machine cannot resolve: work in proportion to the edit."""
    view, catalogue, me = shell.session.view, shell.store.catalogue, shell.hostname
    if one:
        problems = references.unresolved_row(view, catalogue, me, feature.command, row)
    else:
        only = references.touching(catalogue, feature.command)
        problems = references.unresolved_everywhere(view, catalogue, me, only)
    for p in problems:
        if p.feature == feature.command or p.target == feature.command:
            shell.write(f"- Unavailable on Machine {p.machine}: {p}")
