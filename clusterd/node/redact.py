"""Command lines as they may be logged or shown to other admins: secrets hidden.

Command lines are never logged raw.  ``redact`` is what ``who``, ``last`` and the log
show of a line; ``split_commands`` cuts a one-command call at its ``;`` the way the
shell runs it.
"""

from __future__ import annotations

import re
import shlex

from clusterd.node.control import REDACTED, SECRET_NAME
from clusterd.schema.restrictions import COMMANDS

JOIN_FLAGS = ("--ccs", "--key")  # cli.clusterconfig: the join batch forms
JOIN_OPTIONS = ("--port", "--fingerprint")
COMMAND_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SHOWN_COMMANDS = 10  # of one call, in a log line or in who / last


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
    hidden after its first word.  Past ``SHOWN_COMMANDS`` commands, only their number
    is shown (a log line stays short, and a long call costs no more to log).
    """
    shown: list[str] = []
    parts = split_commands(command)
    if len(parts) > SHOWN_COMMANDS:
        more = len(parts) - SHOWN_COMMANDS
        return redact(";".join(parts[:SHOWN_COMMANDS])) + f"; ... ({more:,} more commands)"
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
    if head and head[0] not in COMMANDS:
        word = words[0] if COMMAND_WORD.fullmatch(words[0]) else "unknown-command"
        return [word, REDACTED] if len(words) > 1 else [word], len(words) > 1
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
