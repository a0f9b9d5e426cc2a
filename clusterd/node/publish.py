"""Writing this machine's effective configuration where a real service can read it.

After every commit applied here (made here or arriving from a member), the features
whose effective value changed are recomputed; each change is an entry of the journal
(``effective.log``, ``clusterd.services.journal``: what ``watch`` streams), numbered by
this machine's version, and ``effective.json`` in the data directory is replaced
atomically (write a temporary file, fsync, rename), carrying that version.  Then the
targets that read a changed feature start their wait (``clusterd.services.applier``):
the old ``publish_hook`` of ``clusterd.toml`` is one of them, run with the changed
feature names as arguments and ``CLUSTERD_EFFECTIVE`` set to the file's path
(``docs/services.md``).

Nothing here runs on the event loop's time but the recomputation (from memory): the
files are written in a worker thread.  Commits arriving meanwhile are gathered and
published together once the previous round is done.  Targets and hooks are local
settings: nothing that arrives from another member names a command (SECURITY.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from clusterd.core import layers
from clusterd.core.merge import Outcome
from clusterd.core.versions import CommitId
from clusterd.mesh.members import WHO_WE_ARE
from clusterd.services import files
from clusterd.services.applier import Targets
from clusterd.services.journal import NAME as JOURNAL
from clusterd.services.journal import Journal
from clusterd.store.store import Store

log = logging.getLogger("clusterd.publish")
RETRY = 1.0  # s before publishing again after a failed write


class Publisher:
    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.path = Path(data_dir) / "effective.json"
        self.journal = Journal(self.path.parent / JOURNAL)
        self.values, self.sources = self._published()
        self.targets: Targets | None = None  # told of every entry journaled
        self.written = 0  # documents written since start
        self._touched: set[str] | None = None  # features to recompute; None: all
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Publish everything now, and what changes after every commit applied."""
        self.store.listeners.append(self.on_commits)
        if self.targets is not None:
            self.targets.published([{"feature": f, **s} for f, s in self.sources.items()])
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def on_commits(self, outcomes: list[Outcome], local: bool) -> None:
        touched = {feature for out in outcomes for feature, _ in out.touched}
        if touched & WHO_WE_ARE or self._touched is None:
            self._touched = None
        else:
            self._touched |= touched
        self._wake.set()

    def _published(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """What the last run published (so a restart journals only real changes)."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, {}
        if not isinstance(document, dict) or document.get("version") != self.journal.head:
            return {}, {}  # (not the journal's: publish everything again)
        return dict(document.get("features") or {}), dict(document.get("sources") or {})

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written, "version": self.journal.head}

    async def _run(self) -> None:
        first = True
        while True:
            await self._wake.wait()
            self._wake.clear()
            features, self._touched = self._touched, set()
            entries, document = self._recompute(features)
            done = await self._publish(entries, document) if entries or features is None else True
            if done and self.targets is not None:
                self.targets.seen(document["version_vector"])
            if first and self.targets is not None:
                first = False
                self.targets.ready()  # every target applies once at start

    async def _publish(self, entries: list[dict[str, Any]], document: dict[str, Any]) -> bool:
        try:
            numbered = await asyncio.to_thread(self._write, entries, document)
        except OSError as exc:
            log.error("could not publish %s: %s (trying again)", self.path, exc)
            for e in entries:  # not published: found changed again next time
                self.values.pop(e["feature"], None)
                if self._touched is not None:
                    self._touched.add(e["feature"])
            asyncio.get_running_loop().call_later(RETRY, self._wake.set)
            return False
        self.written += 1
        for e in numbered:
            self.sources[e["feature"]] = {k: e[k] for k in ("mode", "commit", "version")}
        if self.targets is not None and numbered:
            self.targets.published(numbered)
        return True

    def _recompute(self, features: set[str] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The journal entries of the features whose effective value or source changed,
        and the document to write."""
        store = self.store
        modes = layers.chain(store.state, store.hostname)
        entries = []
        for feature in store.catalogue:
            command = feature.command
            if feature.internal or (features is not None and command not in features):
                continue
            resolved = layers.resolve(store.state, feature, modes)
            mode = None if resolved.mode is None else resolved.mode.key
            before = self.sources.get(command, {}).get("mode")
            if command in self.values and (self.values[command], before) == (resolved.value, mode):
                continue
            self.values[command] = resolved.value
            last = resolved.last_change
            commit = None if last is None else str(CommitId(last.origin, last.seq))
            entries.append({"feature": command, "value": resolved.value, "mode": mode,
                            "commit": commit})  # fmt: skip
        document = {
            "machine": store.hostname,
            "cluster": layers.cluster_name(store.state),
            "version_vector": dict(store.version_vector),
            "features": dict(self.values),
            "sources": {f: dict(s) for f, s in self.sources.items()},
        }
        return entries, document

    def _shown(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A journal entry as ``watch`` may show it to anyone, read-only users too: each
        secret field reads "set" (the targets and ``effective.json``, which only this
        machine's root reads, keep the values)."""
        feature = self.store.catalogue[entry["feature"]]
        return {**entry, "value": feature.shown(entry["value"])}

    def _write(
        self, entries: list[dict[str, Any]], document: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """In a worker thread: the journal first, then the document with its version
        (the values are never changed in place, only replaced); the entries numbered."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        head = self.journal.head
        document["version"] = self.journal.append([self._shown(e) for e in entries])
        numbered = [{**e, "version": head + i} for i, e in enumerate(entries, 1)]
        for e in numbered:
            document["sources"][e["feature"]] = {k: e[k] for k in ("mode", "commit", "version")}
        files.replace(self.path, json.dumps(document, indent=1, sort_keys=True))
        return numbered
