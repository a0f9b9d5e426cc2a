"""``rollback COMMIT`` and ``rollback N``: one new commit that puts back what an earlier
commit changed (``clusterd.core.rollback`` decides the writes; docs/history.md, 4).

``COMMIT`` is an id as ``commitdetail`` shows it, ``ORIGIN:SEQ`` (the origin's serial
or host name): ids are fixed, whatever was committed since.  ``N`` is the Nth commit
back that changed a setting at the shell's mode.  The command shows what the commit
did, the units changed since (left alone unless ``--all``), those whose value before
the log no longer holds, then the preview (the pending changes, then each machine's
diff), asks, and commits at once as ``rollback of ORIGIN:SEQ``: a session of its own,
so the shell's pending changes stay pending and the rollback is exactly what was
shown.  Units changed between the preview and the answer make the commit fail whole.

The log is read here: in a daemon, this runs in the session's shell worker, on its
own database connection, never on the node's links' loop.
"""

from __future__ import annotations

import contextlib
import time

from clusterd.cli.console import confirm
from clusterd.cli.inspect import write_preview
from clusterd.cli.shell import Shell, Usage
from clusterd.core import confirm as confirms
from clusterd.core import layers
from clusterd.core import rollback as undo
from clusterd.core.errors import ClusterdError, CommitConflict, StoreError
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit, CommitId, Unit, Write
from clusterd.schema.fields import host_key
from clusterd.store.commitcheck import check_write
from clusterd.trust.lifecycle import SYSTEM_USER
from clusterd.trust.logins import ADMIN_ONLY_FEATURES

USAGE = "rollback ORIGIN:SEQ | N [--all] [--yes]"
FLAGS = ("--all", "--yes")
SHOWN = 50  # changed-since units listed one by one; the rest are counted


async def rollback(shell: Shell, args: list[str]) -> int:
    words = [a for a in args if a not in FLAGS]
    if len(words) != 1 or words[0].startswith("-"):
        raise Usage(f"{USAGE}   (an id as commitdetail shows it, or N >= 1)")
    everything, yes = "--all" in args, "--yes" in args
    shell.require_write("roll back a commit")
    target = _find(shell, words[0])
    cid = target.id
    why = undo.refusal(shell.store.catalogue, target)
    if why is None and target.user == SYSTEM_USER and not confirms.at_deadline(target):
        why = (f"clusterd made it ({target.comment}): it set up this machine or changed "
               "membership, no admin's change to take back")  # fmt: skip
    if why is not None:
        raise ClusterdError(f"commit {cid} cannot be rolled back: {why}; nothing changed")
    inverse = _inverse(shell, target, everything)
    for feature in sorted({w.unit.feature for w in inverse.writes}):
        shell.require_admin(feature, doing=f"roll back {feature}")
    writes = _checked(shell, inverse.writes)
    _describe(shell, target, inverse, everything)
    if not writes:
        if inverse.changed or inverse.unknown or inverse.skipped:
            shell.write(f"Nothing to roll back: all that {cid} changed is left alone (above); "
                        "nothing was committed.")  # fmt: skip
            return 1
        shell.write(f"Nothing to roll back: all that {cid} changed is as it was before it.")
        return 0
    session = shell.api.session(shell.user, bounded=False)  # (as big as the commit undone)
    for w in writes:
        session.view.write(w.unit, w.value, checked=True)
    write_preview(shell, session)
    if shell.session.pending:
        shell.write(f"(The {len(shell.session.pending)} pending change(s) of this shell stay "
                    "pending: the rollback is a commit of its own.)")  # fmt: skip
    if not yes and not await confirm(shell.console, f"Commit this rollback of {cid}?", False):
        hint = "" if shell.console.interactive else ": a one-command call rolls back with --yes"
        shell.write(f"Nothing was rolled back{hint}.")
        return 1
    for feature in sorted({w.unit.feature for w in writes}):  # (the role as it is now)
        shell.require_admin(feature, doing=f"roll back {feature}")
    try:
        made = await shell.commit(session, f"rollback of {cid}", on_conflict="refuse")
    except CommitConflict as exc:
        raise ClusterdError(f"{exc}; nothing was rolled back: run rollback again") from None
    when = time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime())
    shell.write(f"Rolled back {cid}" + (f" in commit {made.id}" if made else "") + f": {when}")
    return 0


def _find(shell: Shell, word: str) -> Commit:
    """The commit ``word`` names: ``ORIGIN:SEQ``, or N (the Nth back at the mode)."""
    if word.isascii() and word.isdigit():
        n = int(word) if len(word) <= 18 else 1 << 62
        if n < 1:
            raise Usage(f"{USAGE}   (N counts from 1: the last commit at this mode)")
        return _nth(shell, n)
    origin, colon, seq = word.rpartition(":")
    if not (
        colon and 0 < len(origin) <= 255 and seq.isascii() and seq.isdigit() and len(seq) <= 18
    ):
        shown = word if len(word) <= 40 else word[:40] + "..."
        raise Usage(f"{USAGE}   ({shown!r} is neither an id such as SER-001:7 nor a number)")
    names = {host: serial for serial, host in layers.hostnames(shell.store.state).items()}
    names[shell.store.hostname] = shell.store.origin
    serial = names.get(host_key(origin), origin)  # a host name, else a serial
    cid = CommitId(serial, int(seq))
    try:
        return shell.store.get_commit(cid)
    except StoreError:
        raise
    except ClusterdError:
        raise ClusterdError(f"no commit {cid} in the log (commitdetail shows the ids)") from None


def _nth(shell: Shell, n: int) -> Commit:
    store, mode = shell.store, shell.mode
    held = store.log_length()
    if n > held:
        raise ClusterdError(f"the log holds {held} commit(s): there is no commit {n} back")
    catalogue, count = store.catalogue, 0
    with contextlib.closing(store.log_back()) as log:
        for commit in log:
            if commit.truncated:
                raise ClusterdError(
                    f"only {count} commit(s) that changed settings at {mode} are in the log "
                    "before the truncated ones (what those changed is gone)"
                )
            if any(w.unit.mode == mode.key and w.unit.feature in catalogue
                   and not catalogue[w.unit.feature].internal for w in commit.writes):  # fmt: skip
                count += 1
                if count == n:
                    return commit
    raise ClusterdError(f"only {count} commit(s) in the log changed settings at {mode}")


def _inverse(shell: Shell, target: Commit, everything: bool) -> undo.Inverse:
    store = shell.store
    units = undo.wanted(store.state, store.catalogue, target)
    before, rest = undo.known_before(store.state, target, units)
    if rest:
        with contextlib.closing(store.log_back(target)) as log:
            found, _unknown = undo.versions_before(log, rest)
        before.update(found)
    return undo.inverse(store.state, store.catalogue, target, before, everything=everything,
                        keep=ADMIN_ONLY_FEATURES)  # fmt: skip


def _checked(shell: Shell, writes: tuple[Write, ...]) -> list[Write]:
    """The writes validated as the commit will be (a value from before an upgrade, a
    level no longer allowed): refused here, before the question."""
    own = Mode.machine(shell.hostname).key if shell.cluster is None else None
    return [check_write(shell.store.catalogue, w, own) for w in writes]


def _describe(shell: Shell, target: Commit, inverse: undo.Inverse, everything: bool) -> None:
    names = {**layers.hostnames(shell.store.state), shell.store.origin: shell.store.hostname}
    shell.write(f"Rollback of {_by(shell, target, names)} {target.comment!r}:")
    reasons: dict[str, list[str]] = {}
    for unit, why in inverse.skipped:
        text = _where(Unit(unit.feature, unit.mode, "")) if why == undo.MEMBERSHIP else _where(unit)
        reasons.setdefault(why, [])
        if text not in reasons[why]:
            reasons[why].append(text)
    for why, where in reasons.items():
        shell.write(f"Skipped: {', '.join(where)} ({why}).")
    if inverse.changed:
        left = (
            "put back all the same (--all)" if everything else "left alone (--all puts them back)"
        )
        shell.write(f"Changed since, {left}:")
        headers: dict[CommitId, Commit | None] = {}
        for c in inverse.changed[:SHOWN]:
            how = _how(c, shell.store.catalogue[c.unit.feature].is_table)
            held = "" if c.holds is None else f": so {_where(c.holds)} is left as it is"
            shell.write(f"  {_where(c.unit)}: {how} by {_by(shell, c.now.commit, names, headers)}"
                        f"{held}")  # fmt: skip
        if len(inverse.changed) > SHOWN:
            shell.write(f"  and {len(inverse.changed) - SHOWN} more")
    if inverse.unknown:
        shell.write(
            f"Unknown, left alone (the log no longer holds their value before {target.id}):"
        )
        for unit in inverse.unknown[:SHOWN]:
            shell.write(f"  {_where(unit)}")
        if len(inverse.unknown) > SHOWN:
            shell.write(f"  and {len(inverse.unknown) - SHOWN} more")


def _how(change: undo.Changed, is_table: bool) -> str:
    gone = change.now.value is None
    if not change.unit.is_marker:
        return "deleted" if gone else "changed"
    return "undefined" if gone else "redefined" if is_table else "changed"


def _where(unit: Unit) -> str:
    row = "" if unit.is_marker else f" row {unit.key!r}"
    return f"{unit.feature} at {Mode.from_key(unit.mode)}{row}"


def _by(shell: Shell, commit: Commit | CommitId, names: dict[str, str],
        headers: dict[CommitId, Commit | None] | None = None) -> str:  # fmt: skip
    """``ORIGIN:SEQ by USER on HOST at TIME``, as far as the log still says."""
    cid = commit if isinstance(commit, CommitId) else commit.id
    found: Commit | None = commit if isinstance(commit, Commit) else None
    if found is None:
        headers = {} if headers is None else headers
        if cid not in headers:
            try:
                headers[cid] = shell.store.get_commit(cid)
            except ClusterdError:  # (no longer in the log)
                headers[cid] = None
        found = headers[cid]
    host = names.get(cid.origin, cid.origin)
    if found is None:
        return f"commit {cid} on {host}"
    at = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(found.at))
    return f"commit {cid} by {found.user} on {host} at {at}"
