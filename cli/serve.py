"""The shell on an SSH channel: interactive (prompt_toolkit) or one command (exec).

The admin port carries links, joins and shells on one listener with byte channels, so
this module does for a channel what prompt_toolkit's ``PromptToolkitSSHSession`` does
for a text one: an input fed from the channel (``cli.channelinput``: in memory and
bounded), a VT100 output written to it, an app session per login.  Many shells run at
once on one daemon; each has its own ``Shell`` (mode, pending changes), history and
console.  ``ssh host COMMAND`` runs the command with a ``BatchConsole`` and exits with
its status.

Output waits for a slow reader: the next command line is not read while the channel's
write buffer is over its high-water mark (asyncssh's ``pause_writing``), so a client
that does not read gets backpressure, not a daemon holding its output in memory.
A user may have ``max_sessions_per_user`` shells and commands open at once; a user
deleted (or whose key is removed) on any member is logged out of every shell here with
a message when the commit arrives (``Daemon._end_gone_sessions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import create_app_session, get_app_session
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.data_structures import Size
from prompt_toolkit.history import DummyHistory, InMemoryHistory
from prompt_toolkit.output.vt100 import Vt100_Output

from clusterd.cli.channelinput import MAX_LINE, ChannelInput
from clusterd.cli.completer import ShellCompleter
from clusterd.cli.console import NO_STDIN, BatchConsole, prompt_text
from clusterd.cli.shell import Quit, Shell
from clusterd.core.errors import ClusterdError
from clusterd.core.text import printable
from clusterd.node.redact import redact, split_commands
from clusterd.trust.logins import AdminLogin

if TYPE_CHECKING:
    from clusterd.node.api import ClusterAPI

log = logging.getLogger("clusterd.shell")
MAX_STDIN = 16 * 1024 * 1024  # bytes a one-command call may send (loadconfig -)


REDRAW_EVERY = 0.05  # s: at most 20 screen updates a second per shell, however fast keys come


def prompt_session(**options: Any) -> PromptSession[str]:
    """A prompt of a shell on a channel: redraws are rate-limited, so a paste costs the
    event loop key handling, not one screen update per slice of keys."""
    session: PromptSession[str] = PromptSession(**options)
    session.app.min_redraw_interval = REDRAW_EVERY
    return session


class PromptConsole:
    """The console of an interactive shell: questions are prompt_toolkit prompts."""

    interactive = True

    def __init__(self) -> None:
        # Made at the first question (most logins ask none). Secret answers get a
        # session that remembers nothing: Up at a later question must not bring back a
        # passphrase.
        self._questions: PromptSession[str] | None = None
        self._secrets: PromptSession[str] | None = None

    def write(self, text: str = "") -> None:
        # Straight to the session's output: print_formatted_text renders through a
        # renderer per call, a large share of a busy daemon's CPU (bench/load.py).
        out = get_app_session().output
        out.write(printable(text, keep_newlines=True) + "\n")
        out.flush()

    def note(self, text: str) -> None:
        self.write(text)

    async def read_stdin(self) -> bytes:
        raise ClusterdError(NO_STDIN)

    async def ask(
        self,
        question: str,
        default: str | None = None,
        *,
        secret: bool = False,
        choices: Sequence[str] = (),
    ) -> str:
        prompt = printable(prompt_text(question, default), keep_newlines=True)
        if secret:
            session = self._secrets = self._secrets or prompt_session(history=DummyHistory())
        else:
            session = self._questions = self._questions or prompt_session()
        # Tab completes the names a menu offers (the numbers need none).
        completer = WordCompleter(list(choices), ignore_case=True) if choices else None
        answer = await session.prompt_async(prompt, is_password=secret, completer=completer)
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
        self, cluster: ClusterAPI, login: AdminLogin, chan: Any, command: str | None
    ) -> None:
        self.api = cluster
        self.login = login
        self.user = login.user
        self.chan = chan
        self._command = command  # run as given; only ``command`` (redacted) is ever shown
        self.command = None if command is None else redact(command)  # logs, who, last
        self.input = ChannelInput(self._pause_reading)
        self._stdin = bytearray()  # what a one-command call is sent, up to MAX_STDIN
        self._stdin_ended = asyncio.Event()
        self._stdin_over = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.task: asyncio.Task[None] | None = None
        peer = chan.get_extra_info("peername") or ("?", 0)
        self.source = f"{peer[0]}:{peer[1]}"
        self.since = time.time()

    def __repr__(self) -> str:
        return f"<ShellChannel {self.user}@{self.source} {self.command or 'shell'}>"

    def start(self) -> None:
        refusal = self.api.admit(self)
        if refusal is not None:
            self._end(refusal, 1)
            return
        body = self._interactive() if self._command is None else self._batch(self._command)
        self.task = asyncio.get_running_loop().create_task(body)
        self.task.add_done_callback(lambda _: self.api.leave(self))

    def feed(self, data: bytes) -> None:
        if self._command is None:
            self.input.feed(data)
        elif len(self._stdin) + len(data) <= MAX_STDIN:
            self._stdin += data
        else:
            self._stdin_over = True  # refused when read; nothing more is kept

    def eof(self) -> None:
        """The client closed its side: a one-command call's standard input is complete."""
        self._stdin_ended.set()

    async def _read_stdin(self) -> bytes:
        await self._stdin_ended.wait()
        if self._stdin_over:
            raise ClusterdError(f"the standard input is larger than {MAX_STDIN:,} bytes")
        return bytes(self._stdin)

    def stop(self) -> None:
        self.input.close()
        if self.task is not None:
            self.task.cancel()

    def writable(self, yes: bool) -> None:
        """asyncssh's flow control: the client reads our output again, or stopped."""
        (self._can_write.set if yes else self._can_write.clear)()

    def logout(self, why: str) -> None:
        """End this shell with a message (its user was deleted meanwhile)."""
        log.info("%s: shell closed: %s", self.user, why)
        self.stop()
        self._end(f"\nSession closed: {why}", 1)

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.chan.write(text.encode())

    def _write_stderr(self, text: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.chan.write_stderr(text.encode())

    def _end(self, text: str, status: int) -> None:
        """Write ``text`` (if any) and end the channel with ``status``."""
        with contextlib.suppress(OSError, RuntimeError):
            if text:
                self.chan.write((printable(text, keep_newlines=True) + "\n").encode())
            self.chan.exit(status)

    def _pause_reading(self, pause: bool) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            (self.chan.pause_reading if pause else self.chan.resume_reading)()

    def _size(self) -> Size:
        width, height = self.chan.get_terminal_size()[:2]
        return Size(rows=height or 24, columns=width or 80)

    async def _batch(self, command: str) -> None:
        console = BatchConsole(self._read_stdin, self._write, self._write_stderr)
        shell = Shell(self.api, self.login, console)
        shell.can_write = self._can_write
        log.info("%s runs %r", self.user, self.command)
        status = 0
        try:
            for part in split_commands(command):
                status = await shell.run_line(part)
                if status:
                    break
                await asyncio.sleep(0)  # other work between the commands of one call
        except Quit:
            pass
        except Exception:  # a bug must not leave the client waiting
            log.exception("%s: %r failed", self.user, self.command)
            console.write("Error: internal error (logged)")
            status = 3
        if shell.session.pending:  # nothing changed: a script must notice (exit 1)
            console.write(f"Error: {len(shell.session.pending)} uncommitted change(s) "
                          "discarded; end the command with '; commit COMMENT'")  # fmt: skip
            status = status or 1
        log.info("%s: %r exits %d", self.user, self.command, status)
        self._end("", status)

    async def _interactive(self) -> None:
        term = self.chan.get_terminal_type() or "xterm"
        stdout = cast(TextIO, ChannelText(self.chan))
        output = Vt100_Output(stdout, self._size, term=term, enable_cpr=False)
        log.info("%s opened a shell", self.user)
        try:
            with create_app_session(self.input, output):
                await self._lines()
        finally:
            log.info("%s closed a shell", self.user)
            self._end("", 0)

    async def _lines(self) -> None:
        shell = Shell(self.api, self.login, PromptConsole())
        lines = prompt_session(history=InMemoryHistory(), completer=ShellCompleter(shell))
        shell.write(f"clusterd {self.api.config.software} on {shell.hostname}. "
                    "Type 'help' for the commands.")  # fmt: skip
        dropped = 0
        while True:
            await self._can_write.wait()  # a client that does not read gets no more
            try:
                line = await lines.prompt_async(shell.prompt())
                await shell.run_line(line)
            except KeyboardInterrupt:
                pass
            except (EOFError, Quit):
                break
            finally:
                if self.input.discarded > dropped:
                    dropped = self.input.discarded
                    shell.write(f"Error: a line longer than {MAX_LINE} characters was "
                                "discarded; nothing of it was run.")  # fmt: skip
