"""A target's files on disk: generations, and the link that is swapped between them.

A directory beside the target's ``path`` (``/etc/.postfix-clusterd.generations`` for
``/etc/postfix-clusterd``) holds the generation directories ``g000001``, ..., and
``path`` is a symbolic link to one of them.  Generations are readable by everyone
(0755, files as the target's ``file_mode``): the service's own user reads them.
A change is rendered into a new staging directory, validated there, renamed to the next
generation and swapped in with one ``rename`` of a new link over ``path``: readers see
the old set of files or the new one, never a mixture.  The newest ``GENERATIONS`` are
kept for rollback.  Every function here does blocking I/O: the applier calls them in a
thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from clusterd.core.errors import ClusterdError
from clusterd.services.render import Rendered

META = ".clusterd.json"  # in each generation: its commit and map sizes
# Rendered files are dated this many seconds back: Postfix's tools will not read a
# file changed within the last second (it may be half-written), and wait 300 ms at a
# time until it is older, which made each validation take seconds.  Ours are complete
# before anything reads them.
SETTLED = 2.0


class SwapError(ClusterdError):
    """The target's path is not ours to swap (a real file or directory is there)."""


class Generations:
    def __init__(self, root: Path, link: Path, keep: int) -> None:
        self.root = root  # DATA_DIR/targets/NAME
        self.link = link
        self.keep = keep

    def list(self) -> list[Path]:
        """The generations, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("g")
                      and p.name[1:].isdigit())  # fmt: skip

    def live(self) -> Path | None:
        """The generation ``path`` points at (None: none of ours)."""
        try:
            target = Path(os.readlink(self.link))
        except OSError:
            return None
        return target if target.parent == self.root else None

    def check_link(self) -> None:
        if self.link.is_symlink() or not self.link.exists():
            return
        raise SwapError(f"{self.link} exists and is not a link that clusterd made; move it "
                        "away (its files can be a template's start) and try again")  # fmt: skip

    def stage(self, rendered: Rendered, mode: int, meta: dict[str, Any]) -> Path:
        """A new staging directory holding ``rendered`` (and the metadata)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        staging = self.root / f"staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        os.chmod(staging, 0o755)  # (the daemon's umask is 077; the service reads these)
        settled = time.time() - SETTLED
        for name, text in rendered.files.items():
            path = staging / name
            path.write_text(text, encoding="utf-8")  # (0600 from the start: umask 077)
            os.chmod(path, 0o600 if name in rendered.private else mode)  # (before postmap:
            # the compiled map takes its source's mode)
            os.utime(path, (settled, settled))
        for name, points_to in rendered.links.items():
            os.symlink(points_to, staging / name)
        (staging / META).write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        return staging

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def commit(self, staging: Path) -> Path:
        """The staging directory becomes the next generation (not yet live)."""
        existing = self.list()
        number = int(existing[-1].name[1:]) + 1 if existing else 1
        generation = self.root / f"g{number:06d}"
        os.replace(staging, generation)
        _sync_dir(self.root)
        return generation

    def swap(self, generation: Path) -> None:
        """Point ``path`` at ``generation``, atomically (a new link renamed over it)."""
        self.check_link()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(f".{self.link.name}.clusterd-new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(generation, tmp)
        os.replace(tmp, self.link)
        _sync_dir(self.link.parent)

    def prune(self) -> None:
        """Keep the newest ``keep`` generations, and the live one whatever its age."""
        live = self.live()
        for old in self.list()[: -self.keep]:
            if old != live:
                shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def meta(generation: Path | None) -> dict[str, Any]:
        if generation is None:
            return {}
        try:
            found = json.loads((generation / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}


def digest(directory: Path | None) -> str | None:
    """The hash of a directory's files (names, contents, link targets): a hand edit of
    the live files changes it.  Compiled maps (``.db``, ``.lmdb``) and the metadata are
    left out."""
    if directory is None or not directory.is_dir():
        return None
    h = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.name == META or path.suffix in (".db", ".lmdb", ".cdb"):
            continue
        h.update(path.name.encode() + b"\0")
        if path.is_symlink():
            h.update(b"link\0" + os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
