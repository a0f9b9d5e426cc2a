"""The shell on an SSH channel: interactive (prompt_toolkit) or one command (exec).

The admin port carries links, joins and shells on one listener with byte channels, so
this module does for a channel what prompt_toolkit's ``PromptToolkitSSHSession`` does
for a text one: a pipe input fed from the channel, a VT100 output written to it, an
app session per login.  Many shells run at once on one daemon; each has its own
``Shell`` (mode, pending changes), history and console.  ``ssh host COMMAND`` runs
the command with a ``BatchConsole`` and exits with its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import time
from typing import TYPE_CHECKING, Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import create_app_session, get_app_session
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.data_structures import Size
from prompt_toolkit.document import Document
from prompt_toolkit.history import DummyHistory, InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from cli.console import BatchConsole, prompt_text
from cli.editor import CLUSTERSET_OPS
from cli.shell import Quit, Shell
from clusterd import layers
from clusterd.control import REDACTED, SECRET_NAME

if TYPE_CHECKING:
    from clusterd.daemon import Daemon

log = logging.getLogger("clusterd.shell")
CLUSTERCONFIG_OPS = ["addgroup", "setgroup", "renamegroup", "deletegroup", "removemachine",
                     "setname", "list", "listdetail", "disconnect", "reconnect", "prepjoin",
                     "connstatus", "create", "join"]  # fmt: skip
FEATURE_OPS = ["print", "clustershow", "clusterset", "define", "undefine", "set", "new", "edit",
               "delete"]  # fmt: skip
JOIN_FLAGS = ("--ccs", "--key")  # cli.clusterconfig: the join batch forms
JOIN_OPTIONS = ("--port", "--fingerprint")
COMMAND_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def split_commands(line: str) -> list[str]:
    """The commands of a one-command call (``'settz set timezone=UTC; commit why'``): the
    line cut at each ';' outside quotes, so a quoted passphrase may hold one."""
    parts: list[str] = []
    current: list[str] = []
    quote, escaped = "", False
    for ch in line:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def redact(command: str) -> str:
    """``command`` as it may be logged or shown to others (``who``, ``last``): every word
    that may be a secret replaced with ``***``.

    The line is cut into commands and words as ``ShellChannel._batch`` and
    ``Shell.run_line`` cut it.  Hidden: what follows ADDRESS PORT FINGERPRINT in
    ``clusterconfig join`` (GROUP, then the passphrase: one misplaced word must not
    leak), every argument of ``passwd``, the VALUE of FIELD=VALUE and the word after an
    option when FIELD / the option is named like a secret (``SECRET_NAME``: userconfig's
    passphrase_hash, any passphrase= / password=).  Once a command has a word hidden,
    the rest of the line goes too: a ';' inside a quoted passphrase cuts it in two and
    the tail would pass for a command of its own.  A command with an open quote is
    hidden after its first word.
    """
    shown: list[str] = []
    parts = split_commands(command)
    for i, part in enumerate(parts):
        try:
            words = shlex.split(part)
        except ValueError:  # an open quote: a secret may be anywhere in it
            first = part.split()[:1]
            shown.append(" ".join([w for w in first if COMMAND_WORD.fullmatch(w)] + [REDACTED]))
            break
        words, hidden = _redact_words(words)
        shown.append(" ".join(w if REDACTED in w else shlex.quote(w) for w in words))
        if hidden:
            if i + 1 < len(parts):
                shown.append(REDACTED)
            break
    return "; ".join(shown)


def _redact_words(words: list[str]) -> tuple[list[str], bool]:
    """One command's words with the secrets replaced, and whether any was."""
    head = [w.lower() for w in words[:2]]
    if head[:1] == ["passwd"] and len(words) > 1:
        return [words[0], REDACTED], True
    if head == ["clusterconfig", "join"]:
        return _redact_join(words)
    out: list[str] = []
    for word in words:
        field, eq, _ = word.partition("=")
        before = out[-1] if out else ""
        if before.startswith("-") and "=" not in before and SECRET_NAME.search(before):
            out.append(REDACTED)  # --passphrase VALUE
        elif eq and SECRET_NAME.search(field):
            out.append(f"{field}={REDACTED}")  # passphrase_hash=VALUE, --password=VALUE
        else:
            out.append(word)
    return out, out != words


def _redact_join(words: list[str]) -> tuple[list[str], bool]:
    """``clusterconfig join``: ADDRESS, PORT, FINGERPRINT and the options naming them are
    shown, everything from the first other word on is hidden.  Both batch forms are
    covered: ``ADDRESS PORT FINGERPRINT [GROUP] [PASSPHRASE]`` and ``[--port P]
    [--fingerprint FP] ADDRESS ADMIN [PASSPHRASE [GROUP]]`` (ADMIN goes too)."""
    kept, positional, rest = words[:2], 0, iter(words[2:])
    for word in rest:
        name, eq, _ = word.partition("=")
        if word in JOIN_FLAGS or (name in JOIN_OPTIONS and eq):
            kept.append(word)
        elif word in JOIN_OPTIONS:
            kept.extend([word, next(rest, "")])
        elif (
            positional == 0  # ADDRESS
            or (positional == 1 and word.isdigit())  # PORT
            or (positional == 2 and word.startswith("SHA256:"))  # FINGERPRINT
        ):
            kept.append(word)
            positional += 1
        else:
            return [*kept, REDACTED], True
    return kept, False


class ShellCompleter(Completer):
    """Command names, then each command's arguments: subcommands, group and machine
    names, members, features, feature row names, clusterset targets.

    Words are matched case-insensitively (the shell lowers command names and
    operations); what is offered is only what the command would accept here: the
    clusterconfig operations of a standalone machine or of a member, a feature's own
    operations (``set`` for a record, ``new``/``edit``/``delete`` for a table), the row
    names of the mode the edit would run at, the levels the feature exists at."""

    STANDALONE_OPS = ("create", "join", "prepjoin")
    ROW_OPS = ("edit", "delete")
    TABLE_ONLY = ("new", "edit", "delete")
    FLAGS = ("--json",)
    JSON_COMMANDS = ("status", "commitdetail", "preview", "clustercheck")
    LISTINGS = ("list", "listdetail", "connstatus")
    PREPJOIN_OPS = ("print", "new", "delete", "list")
    STARTS = ("empty", "defaults", "inherited")

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document: Document, complete_event: Any) -> Any:
        text = document.text_before_cursor
        words = text.split()
        if not words or text[-1].isspace():
            words.append("")  # a new word starts at the cursor
        word = words[-1]
        for choice in self.choices(words[:-1]):
            if choice.lower().startswith(word.lower()):
                yield Completion(choice, start_position=-len(word))

    def choices(self, before: list[str]) -> list[str]:
        """What the next word may be, after the words ``before`` it."""
        from cli.commands import available
        from cli.shell import GUEST_COMMANDS

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
            return sorted(self.shell.daemon.users()) if admin and not args else []
        if command in self.JSON_COMMANDS:
            return list(self.FLAGS)
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
                targets = [t for t in ("cluster", "group", "machine") if t in levels]
                if "group" in levels and args[1].lower() in ("copy", "delete"):
                    targets.append("allgroups")
                return targets
            if n == 3:
                return {"group": groups, "machine": machines}.get(args[2].lower(), [])
        return []

    def _rows(self, feature: Any) -> list[str]:
        """The rows an edit at the mode the command would run at can name: the mode's
        own, or (not defined there yet) the inherited ones a copy would start from."""
        from clusterd.modes import Mode
        from schema.feature import Level
        from schema.restrictions import COMMANDS, Restriction

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


class PromptConsole:
    """The console of an interactive shell: questions are prompt_toolkit prompts."""

    interactive = True

    def __init__(self) -> None:
        self.questions: PromptSession[str] = PromptSession()
        # Secret answers get a session that remembers nothing: Up at a later question
        # must not bring back a passphrase.
        self.secrets: PromptSession[str] = PromptSession(history=DummyHistory())

    def write(self, text: str = "") -> None:
        # Straight to the session's output: print_formatted_text renders through a
        # renderer per call, a large share of a busy daemon's CPU (bench/load.py).
        out = get_app_session().output
        out.write(text + "\n")
        out.flush()

    async def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str:
        prompt = prompt_text(question, default)
        session = self.secrets if secret else self.questions
        answer = await session.prompt_async(prompt, is_password=secret)
        return answer if answer or default is None else default


class ChannelText:
    """prompt_toolkit's stdout: text out to a byte channel, newlines as CR LF."""

    def __init__(self, chan: Any) -> None:
        self.chan = chan

    def write(self, data: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.chan.write(data.replace("\n", "\r\n").encode())

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    @property
    def encoding(self) -> str:
        return "utf-8"


class ShellChannel:
    """One shell on one SSH channel, started by the transport once the channel opens."""

    def __init__(
        self, daemon: Daemon, user: str, role: str, chan: Any, command: str | None
    ) -> None:
        self.daemon = daemon
        self.user = user
        self.role = role
        self.chan = chan
        self._command = command  # run as given; only ``command`` (redacted) is ever shown
        self.command = None if command is None else redact(command)  # logs, who, last
        self.input: PipeInput | None = None
        self.task: asyncio.Task[None] | None = None
        peer = chan.get_extra_info("peername") or ("?", 0)
        self.source = f"{peer[0]}:{peer[1]}"
        self.since = time.time()

    def start(self) -> None:
        body = self._interactive() if self._command is None else self._batch(self._command)
        self.daemon.shells.add(self)
        self.daemon.logins.append({"at": self.since, "source": self.source, "ok": True,
                                   "user": self.user, "command": self.command})  # fmt: skip
        self.task = asyncio.get_running_loop().create_task(body)
        self.task.add_done_callback(lambda _: self.daemon.shells.discard(self))

    def feed(self, data: bytes) -> None:
        if self.input is not None:
            self.input.send_text(data.decode("utf-8", errors="replace"))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _size(self) -> Size:
        width, height = self.chan.get_terminal_size()[:2]
        return Size(rows=height or 24, columns=width or 80)

    async def _batch(self, command: str) -> None:
        console = BatchConsole()
        shell = Shell(self.daemon, self.user, console, role=self.role)
        log.info("%s runs %r", self.user, self.command)
        status = 0
        try:
            for part in split_commands(command):
                status = await shell.run_line(part)
                if status:
                    break
        except Quit:
            pass
        except Exception:  # a bug must not leave the client waiting
            log.exception("%s: %r failed", self.user, self.command)
            console.write("Error: internal error (logged)")
            status = 3
        if shell.session.pending:
            console.write(f"Warning: {len(shell.session.pending)} uncommitted change(s) "
                          "discarded; end the command with '; commit COMMENT'")  # fmt: skip
        text = console.output
        log.info("%s: %r exits %d", self.user, self.command, status)
        with contextlib.suppress(OSError):  # the client went away
            self.chan.write((text + "\n" if text else "").encode())
            self.chan.exit(status)

    async def _interactive(self) -> None:
        term = self.chan.get_terminal_type() or "xterm"
        stdout = cast(TextIO, ChannelText(self.chan))
        output = Vt100_Output(stdout, self._size, term=term, enable_cpr=False)
        log.info("%s opened a shell", self.user)
        try:
            with create_pipe_input() as self.input, create_app_session(self.input, output):
                shell = Shell(self.daemon, self.user, PromptConsole(), role=self.role)
                lines: PromptSession[str] = PromptSession(
                    history=InMemoryHistory(),
                    completer=ShellCompleter(shell),
                )
                shell.write(f"clusterd {self.daemon.config.software} on {shell.hostname}. "
                            "Type 'help' for the commands.")  # fmt: skip
                while True:
                    try:
                        line = await lines.prompt_async(shell.prompt())
                    except KeyboardInterrupt:
                        continue
                    except EOFError:
                        break
                    try:
                        await shell.run_line(line)
                    except Quit:
                        break
        finally:
            log.info("%s closed a shell", self.user)
            self.chan.exit(0)
