"""prompt_toolkit input fed from an SSH channel: in memory, bounded, parsed in slices.

prompt_toolkit's own pipe input writes into an OS pipe that the same event loop reads:
a paste larger than the pipe's buffer blocked the daemon for good.  ``ChannelInput``
keeps what arrived in memory instead, and bounds it three ways:

* **One command line is at most ``MAX_LINE`` characters.**  The rest of a longer line
  is dropped as it arrives, and when the line ends the shell gets Ctrl-C instead of
  Enter, so the truncated line is never run; the shell then says why
  (``discarded`` counts such lines).  Inside a bracketed paste, line ends do not end
  the line (the terminal delivers the paste as one piece of text).
* **At most ``HIGH_WATER`` bytes wait.**  Above it the channel stops reading
  (``pause(True)``): SSH flow control makes the client wait, nothing is lost and
  memory stays bounded; below ``LOW_WATER`` reading resumes.
* **At most ``SLICE`` bytes are parsed per turn of the event loop**, so a burst of
  typed-ahead input never holds the loop that also carries member links.

Plain characters that arrive together (a line sent at once, typed-ahead text) reach
prompt_toolkit as one piece of text, as a bracketed paste does, instead of one key
press each: every key press walks the layout to find its bindings, which made up
most of a busy daemon's CPU (bench/load.py).  A character right after a key that may
start a sequence (Escape, Ctrl-X, Ctrl-V ...) stays a key press of its own, so
Meta-b or a quoted insert mean what they did.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from prompt_toolkit.input import Input
from prompt_toolkit.input.vt100_parser import Vt100Parser
from prompt_toolkit.key_binding import KeyPress
from prompt_toolkit.keys import Keys

MAX_LINE = 4096  # characters of one command line
HIGH_WATER = 64 * 1024  # bytes waiting: stop reading the channel
LOW_WATER = 16 * 1024  # ... and read again below this
SLICE = 32  # bytes parsed per turn of the event loop (each key costs ~0.1 ms)
CTRL_C = b"\x03"
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
_TOKEN = re.compile(rb"\r\n?|\n|\x1b\[20[01]~")
# Keys after which a character is only a character (no binding waits for a second key).
PLAIN_KEYS = frozenset({Keys.ControlM, Keys.ControlJ, Keys.ControlI, Keys.ControlH,
                        Keys.Backspace, Keys.BracketedPaste, Keys.Left, Keys.Right,
                        Keys.Up, Keys.Down, Keys.Home, Keys.End})  # fmt: skip


def _text(chars: list[str]) -> KeyPress:
    if len(chars) == 1:
        return KeyPress(chars[0], chars[0])
    return KeyPress(Keys.BracketedPaste, "".join(chars))


class ChannelInput(Input):
    def __init__(self, pause: Callable[[bool], None]) -> None:
        self._pause = pause
        self._bytes = bytearray()  # accepted, not parsed yet
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._keys: list[KeyPress] = []
        self._parser = Vt100Parser(lambda key: self._keys.append(key))
        self._after_plain = True  # the last key given out was a plain one (or none yet)
        self._ready: list[Callable[[], None] | None] = []  # attached callbacks, innermost last
        self._scheduled = False
        self._closed = False
        self._paused = False
        self._line = 0  # characters of the current line accepted so far
        self._dropping = False  # over MAX_LINE: dropping until the line ends
        self._in_paste = False  # the client is sending a bracketed paste
        self._paste_passed = False  # ... and the parser was given its start
        self.discarded = 0  # lines dropped for being too long

    # -- fed by the channel -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client: accept what the bounds allow, then wake the reader."""
        start = 0
        for token in _TOKEN.finditer(data):
            self._text(data[start : token.start()])
            self._token(token.group())
            start = token.end()
        self._text(data[start:])
        if len(self._bytes) > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause(True)
        self._schedule()

    def _text(self, part: bytes) -> None:
        if self._dropping or not part:
            return
        room = MAX_LINE - self._line
        if len(part) > room:
            part, self._dropping = part[:room], True
        self._bytes += part
        self._line += len(part)

    def _token(self, token: bytes) -> None:
        if token == PASTE_START:
            self._in_paste = True
            if not self._dropping:
                self._bytes += token
                self._paste_passed = True
            return
        if token == PASTE_END:
            self._in_paste = False
            if self._paste_passed:  # the parser saw the start: it must see the end
                self._bytes += token
                self._paste_passed = False
            return
        if self._in_paste:
            self._text(token)  # a line end inside a paste is part of the text
            return
        if self._dropping:
            self._bytes += CTRL_C  # the line is abandoned, never run
            self._dropping = False
            self.discarded += 1
        else:
            self._bytes += token
        self._line = 0

    def close(self) -> None:
        self._closed = True
        self._schedule()

    # -- read by prompt_toolkit ---------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and self._ready and self._ready[-1] is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._scheduled = False
        if self._ready and self._ready[-1] is not None and (self._bytes or self._closed):
            self._ready[-1]()

    def read_keys(self) -> list[KeyPress]:
        piece = bytes(self._bytes[:SLICE])
        del self._bytes[:SLICE]
        self._parser.feed(self._decoder.decode(piece))
        keys, self._keys = self._joined(self._keys), []
        if self._paused and len(self._bytes) < LOW_WATER:
            self._paused = False
            self._pause(False)
        if self._bytes:
            self._schedule()  # the next slice on the next turn of the loop
        return keys

    def flush_keys(self) -> list[KeyPress]:
        self._parser.flush()
        keys, self._keys = self._joined(self._keys), []
        return keys

    def _joined(self, keys: list[KeyPress]) -> list[KeyPress]:
        """Runs of plain characters as one piece of text each (see the module)."""
        out: list[KeyPress] = []
        run: list[str] = []
        for key in keys:
            char = isinstance(key.key, str) and len(key.key) == 1 and key.key.isprintable()
            if char and self._after_plain:
                run.append(key.data)
                continue
            if run:
                out.append(_text(run))
                run = []
            out.append(key)
            self._after_plain = char or key.key in PLAIN_KEYS
        if run:
            out.append(_text(run))
        return out

    @property
    def closed(self) -> bool:
        return self._closed and not self._bytes

    def fileno(self) -> int:
        raise NotImplementedError("a channel input has no file descriptor")

    def typeahead_hash(self) -> str:
        return f"channel-input-{id(self)}"

    def raw_mode(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def cooked_mode(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def attach(self, input_ready_callback: Callable[[], None]) -> AbstractContextManager[None]:
        return self._attached(input_ready_callback)

    def detach(self) -> AbstractContextManager[None]:
        return self._attached(None)

    @contextlib.contextmanager
    def _attached(self, callback: Callable[[], None] | None) -> Iterator[None]:
        self._ready.append(callback)
        self._schedule()
        try:
            yield
        finally:
            self._ready.pop()
            self._schedule()
