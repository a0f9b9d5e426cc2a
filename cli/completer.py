"""Tab completion for the shell: command names, then each command's arguments."""

from __future__ import annotations

from typing import Any

from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document

from clusterd.cli.editor import CLUSTERSET_OPS
from clusterd.cli.shell import Shell
from clusterd.core import layers
from clusterd.core.errors import ClusterdError

CLUSTERCONFIG_OPS = ["addgroup", "setgroup", "renamegroup", "deletegroup", "removemachine",
                     "setname", "list", "listdetail", "disconnect", "reconnect", "prepjoin",
                     "connstatus", "ccs", "create", "join"]  # fmt: skip
FEATURE_OPS = ["print", "clustershow", "clusterset", "define", "undefine", "set", "new", "edit",
               "delete"]  # fmt: skip


class ShellCompleter(Completer):
    """Command names, then each command's arguments: subcommands, group and machine
    names, members, features, feature row names, clusterset targets.

    Words are matched case-insensitively (the shell lowers command names and
    operations); what is offered is only what the command would accept here: the
    clusterconfig operations of a standalone machine or of a member, a feature's own
    operations (``set`` for a record, ``new``/``edit``/``delete`` for a table), the row
    names of the mode the edit would run at, the levels the feature exists at, the
    newest commit ids for rollback."""

    STANDALONE_OPS = ("create", "join", "prepjoin", "ccs")
    ROW_OPS = ("edit", "delete")
    TABLE_ONLY = ("new", "edit", "delete")
    FLAGS = ("--json",)
    JSON_COMMANDS = ("status", "commitdetail", "preview", "clustercheck")
    LISTINGS = ("list", "listdetail", "connstatus")
    PREPJOIN_OPS = ("print", "new", "delete", "list")
    STARTS = ("empty", "defaults", "inherited")
    RECENT = 10  # commit ids rollback offers (the newest)
    LONGEST = 256  # characters before the cursor past which nothing is offered

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document: Document, complete_event: Any) -> Any:
        text = document.text_before_cursor
        if len(text) > self.LONGEST:
            return  # no command line this long wants completing (and pastes stay cheap)
        words = text.split()
        if not words or text[-1].isspace():
            words.append("")  # a new word starts at the cursor
        word = words[-1]
        for choice in self.choices(words[:-1]):
            if choice.lower().startswith(word.lower()):
                yield Completion(choice, start_position=-len(word))

    def choices(self, before: list[str]) -> list[str]:
        """What the next word may be, after the words ``before`` it."""
        from clusterd.cli.commands import available
        from clusterd.cli.shell import GUEST_COMMANDS

        commands = available()
        if self.shell.role == "guest":
            commands = [c for c in commands if c in GUEST_COMMANDS]
        if not before:
            return commands
        command, args = before[0].lower(), before[1:]
        if command not in commands:
            return []
        state = self.shell.session.view
        in_cluster = layers.cluster_name(state) is not None
        groups = layers.groups(state)
        machines = list(layers.machines(state))
        if command == "help":
            return commands if not args else []
        if command == "clustermode":
            if not in_cluster:
                return []
            if not args:
                return ["cluster", "group", "machine"]
            if len(args) == 1:
                return {"group": groups, "machine": machines}.get(args[0].lower(), [])
            return []
        if command == "clusterconfig":
            return self._clusterconfig(args, in_cluster, groups, machines)
        if command == "ping":
            hostname = self.shell.hostname
            return [m for m in machines if m != hostname] if not args else []
        if command == "nslookup":
            return machines if not args else []
        if command == "explain":
            words = [a for a in args if not a.startswith("-")]
            if len(words) == 0:
                return [c for c in commands if c in self.shell.store.catalogue]
            if len(words) == 1:
                return [*(machines or [self.shell.hostname]), *self.FLAGS]
            return list(self.FLAGS)
        if command == "passwd":
            admin = self.shell.role == "admin"
            return sorted(self.shell.api.users()) if admin and not args else []
        if command in self.JSON_COMMANDS:
            return list(self.FLAGS)
        if command == "rollback":
            flags = [f for f in ("--all", "--yes") if f not in args]
            if any(not a.startswith("-") for a in args):
                return flags
            try:
                recent = self.shell.store.recent_ids(self.RECENT)
            except ClusterdError:  # (the database is down: no ids to offer)
                recent = []
            return [str(cid) for cid in recent] + flags
        if command in self.shell.store.catalogue:
            return self._feature(command, args, in_cluster, groups, machines)
        return []

    def _clusterconfig(
        self, args: list[str], in_cluster: bool, groups: list[str], machines: list[str]
    ) -> list[str]:
        if not in_cluster:
            if not args:
                return [op for op in CLUSTERCONFIG_OPS if op in self.STANDALONE_OPS]
            return ["print"] if args == ["prepjoin"] else []
        if not args:
            return [op for op in CLUSTERCONFIG_OPS if op not in ("create", "join")]
        op, n = args[0].lower(), len(args)
        if op in self.LISTINGS:
            return list(self.FLAGS)
        by_position: dict[str, list[list[str]]] = {
            "setgroup": [machines, groups],
            "renamegroup": [groups],
            "deletegroup": [groups],
            "removemachine": [machines],
            "disconnect": [machines],
            "reconnect": [machines],
            "prepjoin": [list(self.PREPJOIN_OPS)],
            "ccs": [["on", "off"]],
        }
        if op == "deletegroup" and n == 2:
            return [g for g in groups if g != args[1]]  # the group to move machines to
        if op == "prepjoin" and n == 2 and args[1].lower() == "delete":
            return list(layers.prepared(self.shell.session.view))
        found = by_position.get(op, [])
        return found[n - 1] if n - 1 < len(found) else []

    def _feature(
        self,
        command: str,
        args: list[str],
        in_cluster: bool,
        groups: list[str],
        machines: list[str],
    ) -> list[str]:
        feature = self.shell.store.catalogue[command]
        if not args:
            own = self.TABLE_ONLY if feature.is_table else ("set",)
            ops = [op for op in FEATURE_OPS if op in own or op not in (*self.TABLE_ONLY, "set")]
            return ops if in_cluster else [op for op in ops if op != "clusterset"]
        op, n = args[0].lower(), len(args)
        if op in self.ROW_OPS and n == 1 and feature.is_table:
            return self._rows(feature)
        if op == "define" and n == 1:
            return list(self.STARTS)
        if op == "clusterset" and in_cluster:
            levels = {level.value for level in feature.levels}
            if n == 1:
                return list(CLUSTERSET_OPS)
            if n == 2:
                targets: list[str] = [t for t in ("cluster", "group", "machine") if t in levels]
                if "group" in levels and args[1].lower() in ("copy", "delete"):
                    targets.append("allgroups")
                return targets
            if n == 3:
                return {"group": groups, "machine": machines}.get(args[2].lower(), [])
        return []

    def _rows(self, feature: Any) -> list[str]:
        """The rows an edit at the mode the command would run at can name: the mode's
        own, or (not defined there yet) the inherited ones a copy would start from."""
        from clusterd.core.modes import Mode
        from clusterd.schema.feature import Level
        from clusterd.schema.restrictions import COMMANDS, Restriction

        shell, mode = self.shell, self.shell.mode
        info = COMMANDS.get(feature.command)
        if shell.cluster is not None and info is not None:
            if info.restriction is Restriction.CLUSTER_ONLY:
                mode = Mode.cluster()
            elif info.restriction is Restriction.MACHINE_ONLY and mode.level is not Level.MACHINE:
                mode = Mode.machine(shell.hostname)
        edit = shell.session.edit
        if layers.is_defined(shell.session.view, feature, mode):
            value = edit.current(feature, mode)
        else:
            value = edit.inherited(feature, mode)
        return sorted(value or {})
