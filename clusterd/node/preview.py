"""The install preview: what a pending commit would do to each member's service files
(``docs/web.md``).

The pending writes travel as ``[feature, mode, key, value]`` lists: to this machine's
targets, and as the ``preview`` mesh query to every linked member, which renders its
own targets with the effective values those writes would give it, in a thread, and
answers unified diffs against its live files.  Targets are local settings, so each
member answers for its own; nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.pending import Pending
from clusterd.core.versions import Unit, Write
from clusterd.store.commitcheck import check_write

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

MAX_WRITES = 10_000
TIMEOUT = 10.0  # s for a member's answer


def checked(d: Daemon, writes: Any) -> list[Write]:
    """In a worker thread (up to 10,000 validations: never on the links' loop): the
    writes, checked as a peer's commit is (they come from a worker or a member)."""
    if not isinstance(writes, list) or len(writes) > MAX_WRITES:
        raise ValueError(f"writes: a list of at most {MAX_WRITES} [feature, mode, key, value]")
    found = []
    for write in writes:
        if not isinstance(write, list) or len(write) != 4:
            raise ValueError("each write is [feature, mode, key, value]")
        feature, mode, key, value = write
        if not all(isinstance(x, str) for x in (feature, mode, key)):
            raise ValueError("feature, mode and key are strings")
        found.append(check_write(d.store.catalogue, Write(Unit(feature, mode, key), value)))
    return found


async def here(d: Daemon, args: Any) -> dict[str, Any]:
    """This machine's targets' diffs for the writes of ``args`` (the ``preview`` query)."""
    if not isinstance(args, dict):
        raise ValueError("a preview query is an object with writes")
    writes = await asyncio.to_thread(checked, d, args.get("writes"))
    pending = Pending()
    view = d.store.view(pending)
    for w in writes:  # (on the loop, where the state is: cheap, the values are checked)
        view.write(w.unit, w.value, checked=True)
    values = layers.effective_values(view, d.store.catalogue, d.config.hostname)
    return await asyncio.to_thread(d.targets.preview, values)


async def everywhere(d: Daemon, writes: list[Any]) -> dict[str, Any]:
    """Per member (this one and each linked one): ``{"targets": its targets' diffs}``,
    or ``{"error": why not}``."""
    found: dict[str, Any] = {}

    async def member(serial: str, hostname: str) -> None:
        answer = await d.ask(serial, "preview", {"writes": writes}, TIMEOUT)
        found[hostname] = {"targets": answer.body} if answer.ok else {"error": str(answer.body)}

    names = {s: p.hostname for s, p in d.node.peers.items()}
    found[d.config.hostname] = {"targets": await here(d, {"writes": writes})}
    await asyncio.gather(*(member(s, names[s]) for s in d.node.live_peers()))
    return dict(sorted(found.items()))
