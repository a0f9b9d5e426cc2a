"""The journal of this machine's effective configuration: what ``watch`` streams.

Every change of one feature's effective value here (a commit made here or by a member,
a machine moved to another group, a mode's definition deleted) is one entry, numbered
by this machine's **version**, which only grows:

    {"version": 42, "feature": "smtproutes", "value": {...}, "mode": "group:Paris",
     "commit": "SER-NY:17"}

``mode`` is where the value comes from (``null``: the factory default) and ``commit``
the newest commit visible there.  The journal is ``effective.log`` in the data
directory, JSON lines appended by the publisher (``clusterd.node.publish``, in a
thread, after ``effective.json``, which carries the same version).  A reader follows
the file; the node never waits for one, so a slow watcher cannot slow it.

The file keeps the newest ``KEEP`` entries at least: past twice that, it is rewritten
with the newest ``KEEP`` (atomically).  A reader asking for versions older than the
file holds is told so (``Compacted``), as etcd does: it reads ``effective.json`` and
watches on from the version that document carries.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterd.core.errors import ClusterdError
from clusterd.services import files

KEEP = 10_000
NAME = "effective.log"


class Compacted(ClusterdError):
    """The versions asked for are older than the journal holds."""


@dataclass
class Journal:
    """The writer's side: one instance, in the daemon's publisher."""

    path: Path
    keep: int = KEEP

    def __post_init__(self) -> None:
        self.head, self.lines = _last_version(self.path)

    def append(self, entries: list[dict[str, Any]]) -> int:
        """Number the entries (``version``) and write them, in a thread; the new head.
        A failed write leaves the file as it was, and the versions unused."""
        if not entries:
            return self.head
        numbered = [{**e, "version": self.head + i} for i, e in enumerate(entries, 1)]
        data = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
                       for e in numbered)  # fmt: skip
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data.encode())
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # never a cut line that a later entry would run into
                raise
        finally:
            os.close(fd)
        self.head += len(numbered)
        self.lines += len(numbered)
        if self.lines > 2 * self.keep:
            self._compact()
        return self.head

    def _compact(self) -> None:
        kept = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[-self.keep :]
        files.replace(self.path, "".join(kept))
        self.lines = len(kept)


def _last_version(path: Path) -> tuple[int, int]:
    """The newest version in the file (0: none) and how many lines it has."""
    if not path.exists():
        return 0, 0
    head, count = 0, 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            count += 1
            entry = _parse(line)
            if entry is not None:
                head = max(head, int(entry["version"]))
    return head, count


def _parse(line: str) -> dict[str, Any] | None:
    """One entry, or None for a line cut short by a crash (never appended to again)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("version"), int):
        return None
    return entry


class Reader:
    """The watcher's side: the entries after ``since``, then each new one as it comes
    (``poll``), in order, none twice, none skipped."""

    def __init__(self, path: Path, since: int, feature: str | None = None) -> None:
        self.path = path
        self.last = since  # the newest version read (given out, or left out by the filter)
        self.feature = feature
        self._fh: Any = None
        self._inode: int | None = None
        self._partial = ""
        self._opened = False  # the file was (re)opened: its first entry is checked

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def poll(self) -> list[dict[str, Any]]:
        """What is new since the last call (the backlog, the first time).  ``Compacted``
        when the file no longer holds the version after the last one read."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return []
        if inode != self._inode:  # first time, or rewritten (compacted): read it again
            self.close()
            self._fh = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
            self._inode, self._partial, self._opened = inode, "", True
        out = []
        for line in self._lines():
            entry = _parse(line)
            if entry is None:
                continue
            version = int(entry["version"])
            if self._opened:
                self._opened = False
                if version > self.last + 1:
                    self.close()
                    raise Compacted(
                        f"version {self.last + 1} is no longer in the journal (it starts at "
                        f"{version}): read effective.json and watch on from its version"
                    )
            if version <= self.last:
                continue
            self.last = version
            if self.feature is None or entry.get("feature") == self.feature:
                out.append(entry)
        return out

    def _lines(self) -> Iterator[str]:
        assert self._fh is not None
        data = self._partial + self._fh.read()
        lines = data.split("\n")
        self._partial = lines.pop()  # an unfinished line waits for the rest
        return iter(lines)


POLL = 0.05  # s between looks at the journal (a stat of one file)


async def stream(
    path: Path,
    since: int | None,
    feature: str | None,
    write: Callable[[str], Awaitable[bool]],
) -> None:
    """Write each entry after ``since`` (None: from now on) as a JSON line, until ``write``
    says the reader is gone (False).  ``Compacted`` if ``since`` is too old."""
    if since is None:
        since = await asyncio.to_thread(lambda: _last_version(path)[0])
    reader = Reader(path, since, feature)
    try:
        while True:
            for entry in await asyncio.to_thread(reader.poll):
                if not await write(json.dumps(entry, sort_keys=True)):
                    return
            await asyncio.sleep(POLL)
    finally:
        reader.close()
