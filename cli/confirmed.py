"""``commit confirmed [--probe PROBES] [MINUTES [COMMENT]]`` and ``confirm``
(docs/history.md, 5).

A confirmed commit is an ordinary commit that carries a deadline: unless someone
confirms it in MINUTES (``confirm``, or any ``commit``), the cluster rolls it back by
itself (``clusterd.node.confirms``).  ``commit confirmed`` again confirms nothing: it
moves every pending deadline to its own.  The deadline shows in the prompt.
``--probe links``, ``--probe targets`` or both (``--probe links,targets``): rolled back
at once, before the deadline, if a member loses a link or a service target fails to
apply it.
"""

from __future__ import annotations

import time

from clusterd.cli.shell import Shell, Usage
from clusterd.core import confirm as confirms

USAGE = (
    "commit confirmed [--probe links|targets|links,targets] [MINUTES [COMMENT]]   "
    "(MINUTES 1..65535, default 10)"
)
DEFAULT_MINUTES = 10


def parse(args: list[str]) -> tuple[int | None, str | None, list[str]]:
    """``(MINUTES, probe, the comment's words)`` of ``commit confirmed ...``; MINUTES
    None: a plain commit."""
    if not args or args[0] != "confirmed":
        return None, None, args
    probe = None
    if len(args) > 1 and args[1] == "--probe":
        probe = confirms.probe_word(args[2]) if len(args) > 2 else None
        if probe is None:
            raise Usage(f"{USAGE}; --probe takes {', '.join(confirms.PROBES)} or both, "
                        "separated by a comma")  # fmt: skip
        args = args[:1] + args[3:]
    if len(args) == 1:
        return DEFAULT_MINUTES, probe, []
    word = args[1]
    if not (word.isascii() and word.isdigit() and len(word) <= 5 and 1 <= int(word) <= 65535):
        shown = word if len(word) <= 20 else word[:20] + "..."
        raise Usage(f"{USAGE}; not minutes: {shown!r}")
    return int(word), probe, args[2:]


async def without_changes(
    shell: Shell, minutes: int | None, probe: str | None, comment: str
) -> int:
    """``commit`` or ``commit confirmed`` with nothing pending: confirm, or extend."""
    if confirms.deadline(shell.store.state) is None:
        shell.write("There are no changes to commit.")
        return 0
    session = shell.api.session(shell.user)
    await shell.commit(session, comment or ("confirm" if minutes is None else "extend"),
                       confirm=minutes, confirming=True, probe=probe)  # fmt: skip
    said(shell, minutes)
    return 0


def said(shell: Shell, minutes: int | None) -> None:
    """What a commit did to the pending confirmed commits."""
    if minutes is None:
        shell.write("Commit confirmed: no rollback is pending.")
        return
    deadline = time.time() + minutes * shell.api.config.confirm_minute
    shell.write(f"Rolled back at {time.strftime('%H:%M:%S', time.localtime(deadline))} "
                f"({minutes} min) unless confirmed: confirm, or commit.")  # fmt: skip


async def confirm(shell: Shell, args: list[str]) -> int:
    """``confirm``: the pending confirmed commits stay (no rollback)."""
    if args:
        raise Usage("confirm")
    shell.require_write("confirm commits")
    if confirms.deadline(shell.store.state) is None:
        shell.write("No confirmed commit is waiting.")
        return 0
    await shell.commit(shell.api.session(shell.user), "confirm", confirming=True)
    said(shell, None)
    return 0
