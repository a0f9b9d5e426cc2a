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
import time
from typing import TYPE_CHECKING, Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import create_app_session, get_app_session
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.data_structures import Size
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from cli.console import BatchConsole, prompt_text
from cli.shell import Quit, Shell
from clusterd import layers

if TYPE_CHECKING:
    from clusterd.daemon import Daemon

log = logging.getLogger("clusterd.shell")
CLUSTERCONFIG_OPS = ["addgroup", "setgroup", "renamegroup", "deletegroup", "removemachine",
                     "setname", "list", "listdetail", "disconnect", "reconnect", "prepjoin",
                     "connstatus", "create", "join"]  # fmt: skip
FEATURE_OPS = ["print", "clustershow", "clusterset", "define", "undefine", "set", "new", "edit",
               "delete"]  # fmt: skip


class ShellCompleter(Completer):
    """Command names, then subcommands, group and machine names, feature row names."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document: Document, complete_event: Any) -> Any:
        from cli.commands import available

        words = document.text_before_cursor.split(" ")
        word = words[-1]
        state = self.shell.session.view
        if len(words) == 1:
            choices = available()
        elif words[0] == "clustermode" and len(words) == 2:
            choices = ["cluster", "group", "machine"]
        elif words[0] == "clustermode" and words[1] == "group":
            choices = layers.groups(state)
        elif words[0] == "clustermode" and words[1] == "machine":
            choices = list(layers.machines(state))
        elif words[0] == "clusterconfig" and len(words) == 2:
            choices = CLUSTERCONFIG_OPS
        elif words[0] == "clusterconfig":
            choices = layers.groups(state) + list(layers.machines(state))
        elif words[0] in self.shell.store.catalogue and len(words) == 2:
            choices = FEATURE_OPS
        elif words[0] in self.shell.store.catalogue and words[1] in ("edit", "delete"):
            feature = self.shell.store.catalogue[words[0]]
            value = self.shell.session.edit.current(feature, self.shell.mode) or {}
            choices = sorted(value) if feature.is_table else []
        else:
            choices = []
        for choice in choices:
            if choice.startswith(word):
                yield Completion(choice, start_position=-len(word))


class PromptConsole:
    """The console of an interactive shell: questions are prompt_toolkit prompts."""

    interactive = True

    def __init__(self) -> None:
        self.questions: PromptSession[str] = PromptSession()

    def write(self, text: str = "") -> None:
        # Straight to the session's output: print_formatted_text renders through a
        # renderer per call, a large share of a busy daemon's CPU (bench/load.py).
        out = get_app_session().output
        out.write(text + "\n")
        out.flush()

    async def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str:
        prompt = prompt_text(question, default)
        answer = await self.questions.prompt_async(prompt, is_password=secret)
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
        self.command = command
        self.input: PipeInput | None = None
        self.task: asyncio.Task[None] | None = None
        peer = chan.get_extra_info("peername") or ("?", 0)
        self.source = f"{peer[0]}:{peer[1]}"
        self.since = time.time()

    def start(self) -> None:
        body = self._interactive() if self.command is None else self._batch(self.command)
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
        log.info("%s runs %r", self.user, command)
        status = 0
        try:
            for part in command.split(";"):  # 'settz set timezone=UTC; commit why'
                status = await shell.run_line(part)
                if status:
                    break
        except Quit:
            pass
        except Exception:  # a bug must not leave the client waiting
            log.exception("%s: %r failed", self.user, command)
            console.write("Error: internal error (logged)")
            status = 3
        if shell.session.pending:
            console.write(f"Warning: {len(shell.session.pending)} uncommitted change(s) "
                          "discarded; end the command with '; commit COMMENT'")  # fmt: skip
        text = console.output
        log.info("%s: %r exits %d", self.user, command, status)
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
