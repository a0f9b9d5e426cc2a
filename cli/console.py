"""The console every shell command talks to: write, ask, confirm, choose.

The same command runs under prompt_toolkit over SSH or in a local terminal
(``PromptConsole``), as one ``ssh host COMMAND`` call (``BatchConsole``: questions take
their defaults where they have one, else the command fails and says to use its batch
form) and in tests (``ScriptedConsole``: answers given up front, output collected).
Commands never print: everything goes through the console.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from clusterd.core.errors import ClusterdError
from clusterd.core.text import printable


class NoAnswer(ClusterdError):
    """Raised when a command needs an answer that nobody can give (batch, scripts)."""


NO_STDIN = (
    "this reads a file from the standard input of a one-command call: ssh HOST 'COMMAND -' < FILE"
)


class Console(Protocol):
    interactive: bool

    def write(self, text: str = "") -> None: ...
    async def ask(
        self, question: str, default: str | None = None, *, secret: bool = False
    ) -> str: ...
    async def read_stdin(self) -> bytes: ...


def prompt_text(question: str, default: str | None) -> str:
    """A yes/no question ends its line with ``[Y]>``; a menu's prompt has a line of its own
    (as the reference prints them)."""
    shown = f"[{default if default is not None else ''}]> "
    if question.endswith("?") and "\n" not in question:
        return f"{question} {shown}"
    return f"{question}\n{shown}" if question else shown


async def confirm(console: Console, question: str, default: bool = False) -> bool:
    """Y/N question; the answer must be one of y, yes, n, no (asked again otherwise)."""
    for _ in range(5):
        answer = (await console.ask(question, "Y" if default else "N")).strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
        console.write("Please answer Y or N.")
    raise NoAnswer(f"no clear answer to: {question}")


async def choose(console: Console, question: str, options: list[str], default: int = 1) -> int:
    """A numbered menu; returns the 1-based number of the option chosen."""
    for _ in range(5):
        console.write(question)
        for i, option in enumerate(options, 1):
            console.write(f"{i}. {option}")
        answer = (await console.ask("", str(default))).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            if not console.interactive:  # (the default, taken without asking: say which)
                console.write(f"→ {answer} ({options[int(answer) - 1]})")
            return int(answer)
        console.write(f"Please enter a number from 1 to {len(options)}.")
    raise NoAnswer(f"no choice made for: {question}")


class ScriptedConsole:
    """Answers given in advance (an empty answer takes the default); output collected;
    ``stdin``: what a one-command call would read from its standard input."""

    interactive = True

    def __init__(self, answers: Iterable[str] = (), stdin: bytes | None = None) -> None:
        self.answers: deque[str] = deque(answers)
        self.lines: list[str] = []
        self.stdin = stdin

    async def read_stdin(self) -> bytes:
        if self.stdin is None:
            raise ClusterdError(NO_STDIN)
        return self.stdin

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def write(self, text: str = "") -> None:
        self.lines.extend(printable(text, keep_newlines=True).split("\n"))

    async def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str:
        self.lines.extend(prompt_text(question, default).rstrip().split("\n"))
        if not self.answers:
            raise NoAnswer(f"the script has no answer for: {question or 'the menu'}")
        answer = self.answers.popleft()
        self.lines[-1] += "" if secret else answer
        return answer if answer or default is None else default


class BatchConsole(ScriptedConsole):
    """One command from ``ssh host COMMAND``: defaults are taken, nothing else is asked;
    ``stdin`` reads the call's standard input to its end (``ShellChannel``)."""

    interactive = False

    def __init__(
        self,
        stdin: Callable[[], Awaitable[bytes]] | None = None,
        out: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self._read = stdin
        self._out = out  # each line also goes out at once (a long command shows progress)

    def write(self, text: str = "") -> None:
        if self._out is None:
            super().write(text)
        else:  # not kept as well: a 16 MiB saveconfig --stdout stays 16 MiB
            self._out(printable(text, keep_newlines=True) + "\n")

    async def read_stdin(self) -> bytes:
        if self._read is None:
            raise ClusterdError(NO_STDIN)
        return await self._read()

    async def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str:
        if default is None:
            raise NoAnswer(
                f"this needs an answer ({question or 'a choice'}): run the command "
                "interactively, or use its batch form (see help)"
            )
        return default
