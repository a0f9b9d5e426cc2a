"""The console every shell command talks to: write, ask, confirm, choose.

The same command runs under prompt_toolkit over SSH or in a local terminal
(``PromptConsole``), as one ``ssh host COMMAND`` call (``BatchConsole``: questions take
their defaults where they have one, else the command fails and says to use its batch
form) and in tests (``ScriptedConsole``: answers given up front, output collected).
Commands never print: everything goes through the console.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
    def note(self, text: str) -> None:
        """A word on how the command ran (a default taken, a mode switched), not its
        output: a one-command call writes it to the standard error, where a script
        reading the output (``--json``) does not trip on it."""

    async def ask(
        self,
        question: str,
        default: str | None = None,
        *,
        secret: bool = False,
        choices: Sequence[str] = (),
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


async def choose(
    console: Console, question: str, options: list[str], default: int | None = 1
) -> int:
    """A numbered menu; returns the 1-based number of the option chosen.  The answer is
    its number or its text in any case (``clusterset`` for ``CLUSTERSET``), which an
    interactive shell completes; ``default`` None: an empty answer chooses nothing."""
    for _ in range(5):
        console.write(question)
        for i, option in enumerate(options, 1):
            console.write(f"{i}. {option}")
        shown = None if default is None else str(default)
        answer = (await console.ask("", shown, choices=options)).strip()
        number = _numbered(answer, options)
        if number:
            if not console.interactive:  # (the default, taken without asking: say which)
                console.note(f"→ {number} ({options[number - 1]})")
            return number
        console.write(f"Please enter a number from 1 to {len(options)}, or a name shown.")
    raise NoAnswer(f"no choice made for: {question}")


async def pick(console: Console, question: str, names: list[str], default: str = "") -> str:
    """One of ``names`` (machines, groups, modes), chosen from a numbered list by number
    or by name; ``default`` is taken by an empty answer (and by a one-command call)."""
    if not names:
        raise NoAnswer(f"nothing to choose from for: {question}")
    first = names.index(default) + 1 if default in names else None
    if first is None and not console.interactive:
        raise NoAnswer(
            f"this needs an answer ({question}): one of {', '.join(names)}; "
            "give it on the command line (see help)"
        )
    return names[await choose(console, question, names, first) - 1]


def _numbered(answer: str, options: list[str]) -> int:
    """The option ``answer`` names (by number or text, any case); 0 for none."""
    if answer.isdigit():
        return int(answer) if 1 <= int(answer) <= len(options) else 0
    folded = [option.lower() for option in options]
    return folded.index(answer.lower()) + 1 if answer.lower() in folded else 0


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

    def note(self, text: str) -> None:
        self.write(text)

    async def ask(
        self,
        question: str,
        default: str | None = None,
        *,
        secret: bool = False,
        choices: Sequence[str] = (),
    ) -> str:
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
        err: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self._read = stdin
        self._out = out  # each line also goes out at once (a long command shows progress)
        self._err = err

    def write(self, text: str = "") -> None:
        if self._out is None:
            super().write(text)
        else:  # not kept as well: a 16 MiB saveconfig --stdout stays 16 MiB
            self._out(printable(text, keep_newlines=True) + "\n")

    def note(self, text: str) -> None:
        if self._err is None:
            self.write(text)
        else:
            self._err(printable(text, keep_newlines=True) + "\n")

    async def read_stdin(self) -> bytes:
        if self._read is None:
            raise ClusterdError(NO_STDIN)
        return await self._read()

    async def ask(
        self,
        question: str,
        default: str | None = None,
        *,
        secret: bool = False,
        choices: Sequence[str] = (),
    ) -> str:
        if default is None:
            raise NoAnswer(
                f"this needs an answer ({question or 'a choice'}): run the command "
                "interactively, or use its batch form (see help)"
            )
        return default
