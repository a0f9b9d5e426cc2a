"""The scrub: a stored setting changed on disk under the running member.

Memory (and the sums of ``core.unitdigest``) were read at start, so a byte changed in
the database afterwards is seen by nobody until a restart.  Every max(ping interval,
20 x its last run) a thread reads every entry's leaf from the database (one read
transaction); on the loop, if nothing was written meanwhile, their sum is compared with
the root in memory, and only when they differ, leaf by leaf.  An entry that differs is
rewritten from memory (a writer job, after every batch before it), with an alert
"corruption" naming the unit.  ``docs/history.md``, section 3.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from clusterd.core.errors import ClusterdError
from clusterd.core.unitdigest import MASK
from clusterd.core.versions import Unit

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

log = logging.getLogger("clusterd.daemon")
SHOWN = 10  # units named in one alert


class Scrub:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.took = 0.0  # seconds its last read took
        self.runs = 0

    def period(self) -> float:
        return max(self.d.config.ping_interval, 20 * self.took)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period())
            await self.once()

    def _mark(self) -> tuple[object, ...] | None:
        """What must not change while the disk is read (None: a write is under way)."""
        store = self.d.store
        root = store.durable_root()
        if root is None:
            return None
        return id(store.digests), root, tuple(sorted(store.state.vv.items()))

    async def once(self) -> list[Unit]:
        """One pass: the units found changed on disk (and rewritten)."""
        store = self.d.store
        before = self._mark()
        if before is None or store.outage is not None:
            return []  # a write under way, or the store down (it says so itself)
        started = time.monotonic()
        try:
            disk = await asyncio.to_thread(store.disk_leaves)
        except ClusterdError as exc:  # (the store logs an outage once)
            log.debug("scrub: %s", exc)
            return []
        self.took = time.monotonic() - started
        self.runs += 1
        if self._mark() != before:
            return []  # written meanwhile: the next pass
        if sum(disk.values()) & MASK == store.digests.root and len(disk) == len(
            store.digests.leaves
        ):
            return []
        memory = store.digests.leaves
        changed = sorted(u for u in memory.keys() | disk.keys() if memory.get(u) != disk.get(u))
        if not changed:
            return []
        store.rewrite_entries(changed)
        shown = ", ".join(str(u) for u in changed[:SHOWN])
        more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
        self.d.alert("corruption", self.d.config.hostname,
                     f"{shown}{more}: the stored entry changed on disk under the running "
                     "member (not what it wrote); rewritten from memory. Check the disk and "
                     "who writes the database.")  # fmt: skip
        return changed
