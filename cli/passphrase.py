"""A new passphrase, asked twice and hashed on the node: for ``passwd`` and for
``userconfig new`` (nobody types a hash, and the passphrase itself is never a word of
a command line, which shells and logs keep)."""

from __future__ import annotations

from clusterd.cli.shell import Shell
from clusterd.core.errors import ClusterdError
from clusterd.schema.access import MIN_PASSPHRASE_LENGTH


async def new_passphrase(shell: Shell) -> str:
    """The hash of a passphrase typed twice; raises when the two differ or it is too
    short (nothing changes)."""
    new = await shell.console.ask("New passphrase:", secret=True)
    if new != await shell.console.ask("Retype new passphrase:", secret=True):
        raise ClusterdError("the two passphrases differ; nothing changed")
    if len(new) < MIN_PASSPHRASE_LENGTH:
        raise ClusterdError(f"a passphrase needs {MIN_PASSPHRASE_LENGTH} characters or more")
    return await shell.api.hash_passphrase(new)
