"""Rolling back a confirmed commit nobody confirmed in time (docs/history.md, 5).

On the daemon's ticks, ``tick`` looks at the pending rows of ``confirm`` (in memory)
and, once this member's turn has come (``clusterd.core.confirm.acts_at``), or at once
when a probe failed here, undoes every pending row in one commit by user ``clusterd``:

* ``--probe links``: a row lost a link this member had when the row arrived
  (``applied``, a store listener, notes them) within 3 ping intervals;
* ``--probe targets``: a service target of this member that reads a feature the
  commit wrote failed its first apply holding that commit (``target_done``, a listener
  of the targets: told when each apply ends; the targets run in their own tasks, whose
  commands are child processes and whose files are a thread's, never on the links'
  time).  A good apply holding it ends that target's watch for the row.

The undo is computed from the rows and the state in memory (no log read), so it never
blocks the links' loop; the write is the store writer's, as for every commit.  Must not
block: ``tick`` only starts a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from clusterd.core import confirm as confirms
from clusterd.core.errors import ClusterdError, StoreError
from clusterd.core.merge import Outcome
from clusterd.trust.lifecycle import SYSTEM_USER
from clusterd.trust.logins import ADMIN_ONLY_FEATURES

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon
    from clusterd.services.applier import Applier

log = logging.getLogger("clusterd.confirms")


class Confirms:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._task: asyncio.Task[None] | None = None
        self._failed: set[str] = set()  # rows whose rollback failed: not tried again
        self._parsed: dict[tuple[str, int, str], confirms.Pending] = {}  # by row version
        # --probe links: per row, the links up when this member first saw it, and until when
        # (wall seconds) losing one of them rolls the row back at once
        self._watched: dict[str, tuple[frozenset[str], float]] = {}
        # --probe targets: per row, the targets whose apply of it went well (watched no
        # more), and why it is rolled back at once (a target's failure), if it is
        self._targets_ok: dict[str, set[str]] = {}
        self._targets_failed: dict[str, str] = {}

    def pending(self) -> list[confirms.Pending]:
        """``confirm.pending``, each row parsed once (a row holds up to 10,000 units,
        and ticks come several times a second)."""
        rows = self._daemon.store.state.entries(confirms.FEATURE, confirms.MODE).rows
        parsed = {}
        for key, v in rows.items():
            if v.value is not None:
                stamp = (key, v.hlc, v.origin)
                parsed[stamp] = self._parsed.get(stamp) or confirms.parse(key, v.value)
        self._parsed = parsed
        return sorted(parsed.values(), key=lambda p: (p.commit.hlc, p.commit.id.origin))

    def status(self) -> list[dict[str, Any]]:
        """The pending confirmed commits: id, user, deadline, minutes, and when this
        member acts on each."""
        d = self._daemon
        members = [*d.peers, d.config.serial]
        return [{"commit": p.key, "user": p.user, "deadline": p.deadline, "minutes": p.minutes,
                 "probe": p.probe,
                 "acts_at": confirms.acts_at(p, d.config.serial, members, d.config.ping_interval)}
                for p in self.pending()]  # fmt: skip

    def applied(self, outcomes: list[Outcome]) -> None:
        """A batch made durable here: a new ``--probe links`` row starts its watch now,
        with the links up as it arrives (a store listener)."""
        if any(feature == confirms.FEATURE for o in outcomes for feature, _ in o.touched):
            self._links_cut(self.pending(), time.time())

    def tick(self) -> None:
        """Start the rollback if a deadline has passed and it is this member's turn."""
        if self._task is not None and not self._task.done():
            return
        d = self._daemon
        rows = [p for p in self.pending() if p.key not in self._failed]
        if not rows:
            return
        members, now = [*d.peers, d.config.serial], time.time()
        ping = d.config.ping_interval
        cut = self._links_cut(rows, now) or self._target_failed(rows)
        if cut or min(confirms.acts_at(p, d.config.serial, members, ping) for p in rows) <= now:
            self._task = asyncio.get_running_loop().create_task(self._roll_back(rows, cut))

    def _links_cut(self, rows: list[confirms.Pending], now: float) -> str | None:
        """Why a row of ``--probe links`` is rolled back at once (a link it had when this
        member first saw it went down within 3 ping intervals), or None."""
        live = frozenset(self._daemon.node.live_peers())
        keys = {p.key for p in rows}
        self._watched = {k: v for k, v in self._watched.items() if k in keys}
        for p in rows:
            if "links" not in confirms.probes(p.probe):
                continue
            had, until = self._watched.setdefault(
                p.key, (live, now + 3 * self._daemon.config.ping_interval)
            )
            lost = sorted(had - live)
            if lost and now <= until:
                return f"links lost after it ({', '.join(lost)})"
        return None

    def target_done(self, applier: Applier) -> None:
        """An apply of a target ended here (a listener of the targets): it decides each
        ``--probe targets`` row it holds (``including``: the commit is in what it
        rendered) that wrote a feature the target reads, and that no earlier apply of it
        decided: a failure rolls back at once (the next tick), success ends the watch."""
        name = applier.target.name
        for p in self.pending():
            cid = p.commit.id
            if ("targets" not in confirms.probes(p.probe) or p.key in self._targets_failed
                    or name in self._targets_ok.get(p.key, ())
                    or not p.features & applier.reads
                    or applier.including.get(cid.origin, 0) < cid.seq):  # fmt: skip
                continue
            failure = applier.failure
            if applier.state == "failed" and failure is not None:
                text = failure.text if len(failure.text) <= 200 else failure.text[:200] + "..."
                self._targets_failed[p.key] = (f"target {name} failed on "
                                               f"{self._daemon.config.hostname} "
                                               f"({failure.stage}: {text})")  # fmt: skip
                log.warning("commit %s: %s", p.key, self._targets_failed[p.key])
            else:
                self._targets_ok.setdefault(p.key, set()).add(name)

    def _target_failed(self, rows: list[confirms.Pending]) -> str | None:
        """Why a row of ``--probe targets`` is rolled back at once (``target_done``), or
        None; forgets the rows no longer pending."""
        keys = {p.key for p in rows}
        self._targets_ok = {k: v for k, v in self._targets_ok.items() if k in keys}
        self._targets_failed = {k: v for k, v in self._targets_failed.items() if k in keys}
        return next((self._targets_failed[p.key] for p in rows if p.key in self._targets_failed),
                    None)  # fmt: skip

    async def _roll_back(self, rows: list[confirms.Pending], cut: str | None) -> None:
        d = self._daemon
        undo = confirms.undo(d.store.state, d.store.catalogue, rows, ADMIN_ONLY_FEATURES)
        for c in undo.changed:
            log.info("rollback of an unconfirmed commit leaves %s alone: changed since by %s",
                     c.unit, c.now.commit)  # fmt: skip
        comment = confirms.comment(rows, cut)
        session = d.api.session(SYSTEM_USER, bounded=False)
        for w in undo.writes:
            session.view.write(w.unit, w.value, checked=w.unit.feature == confirms.FEATURE)
        try:
            made = session.commit(comment, on_conflict="keep")
            await d.store.durable(made)
        except StoreError as exc:  # (the store is down: tried again on a later tick)
            log.warning("the %s waits for the store: %s", comment, exc)
            return
        except (ClusterdError, ValueError) as exc:  # (a value no longer valid ...)
            self._failed.update(p.key for p in rows)
            d.alert("commit confirmed", d.config.hostname, f"the {comment} failed: {exc}")
            return
        log.info("%s (commit %s)", comment, None if made is None else made.id)
        d.alert("commit confirmed", d.config.hostname,
                f"{comment}" + ("" if made is None else f" (commit {made.id})"))  # fmt: skip
