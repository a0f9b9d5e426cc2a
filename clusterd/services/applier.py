"""Targets applied: debounce, render, validate, swap, reload, probe, revert
(``docs/services.md``).

One task per target, on the daemon's loop, that only awaits: rendering and the files'
work run in a thread, commands and probes are child processes and connections with a
time-out.  A target that fails or hangs delays nothing but itself: not the links, not
the commits, not the other targets.  Every failure is caught, shown in ``status`` and
raised as an alert; the daemon never stops because of a target.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import random
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterd.services import commands
from clusterd.services.generations import Generations, SwapError, digest
from clusterd.services.render import Rendered, RenderError, renderers
from clusterd.services.render.template import render_templates
from clusterd.services.targetconfig import GENERATIONS, Target

log = logging.getLogger("clusterd.targets")
PROBE_LIMIT = 3.5  # s of probing after ``settle``: reverted within 5 s (docs/services.md)
DRIFT_EVERY = 5.0  # s between checks of the live files against what was applied
CANARY_POLL = 0.25  # s between questions to a canary that is not there yet

Alert = Callable[[str, str, str], None]  # kind, target, text


@dataclass
class Verdict:
    """What the canary of a target says of the commits this machine holds: ``self``
    (this machine is the canary), ``ready`` (it applied and probed them, healthy),
    ``waiting`` (not yet) or ``failed`` (``text``: why)."""

    kind: str
    who: str
    text: str = ""


Canary = Callable[[str, dict[str, int]], Awaitable[Verdict]]  # target, vector


@dataclass
class Failure:
    stage: str  # render, guard, validate, swap, reload, probe
    text: str
    commit: str | None
    at: float = field(default_factory=time.time)


@dataclass
class Sources:
    """What the publisher knows of each feature: its journal version and commit."""

    versions: dict[str, int] = field(default_factory=dict)
    commits: dict[str, str | None] = field(default_factory=dict)

    def newest(self, features: frozenset[str]) -> str | None:
        """The commit of the newest change to any of ``features`` (None: defaults only)."""
        known = [f for f in features if f in self.versions]
        if not known:
            return None
        return self.commits.get(max(known, key=lambda f: self.versions[f]))


class Applier:
    """One target's state and task."""

    def __init__(self, target: Target, owner: Targets) -> None:
        self.target = target
        self.owner = owner
        self.generations = (
            Generations(generations_of(target.path), target.path, GENERATIONS)
            if target.path
            else None
        )
        self.state = "starting"
        self.reads = target.reads  # (worked out once: every publication asks)
        self.changed: set[str] = set(self.reads)  # everything, at start
        self.first_change: float | None = time.monotonic()
        self.last_change = time.monotonic()
        self.wake = asyncio.Event()  # set by the first publication (Targets.ready)
        self.lock = asyncio.Lock()  # an apply or a rollback at a time
        self.desired: str | None = None
        self.rendered: str | None = None
        self.applied: str | None = None
        self.applied_at: float | None = None
        self.live_hash: str | None = None
        self.drift = False
        self.failure: Failure | None = None
        self.reloads = 0
        self.forced = False
        self.last_run: dict[str, Any] | None = None  # the last reload command's run
        # the publication's version vector when the last apply read the values: every
        # commit it holds is in what that apply rendered (``Targets.finished`` tells it)
        self.including: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    # -- events -------------------------------------------------------------------------

    def touch(self, features: set[str]) -> None:
        now = time.monotonic()
        self.changed |= features
        self.first_change = self.first_change or now
        self.last_change = now
        self.wake.set()

    async def run(self) -> None:
        low, high = self.target.waits
        while True:
            await self.wake.wait()
            while True:  # debounce: MIN of quiet, at most MAX after the first change
                now = time.monotonic()
                quiet = self.last_change + low - now
                limit = (self.first_change or now) + high - now
                if quiet <= 0 or limit <= 0:
                    break
                await asyncio.sleep(min(quiet, limit))
            self.wake.clear()
            features, self.changed, self.first_change = self.changed, set(), None
            try:
                async with self.lock:
                    await self.apply(features)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never the daemon's end: said, and tried next time
                log.exception("target %s failed", self.target.name)
                self.fail("internal", f"{type(exc).__name__}: {exc}")
            self.owner.finished(self)

    # -- applying -----------------------------------------------------------------------

    async def apply(self, features: set[str]) -> None:
        t = self.target
        self.desired = self.owner.sources.newest(self.reads)
        self.including = dict(self.owner.vector)
        if t.canary and not self.forced and self.owner.canary and not await self._follow_canary():
            return
        self.desired = self.owner.sources.newest(self.reads)  # (newer, after waiting)
        self.including = dict(self.owner.vector)  # (the values are never older than it)
        values = self.owner.values()
        if self.generations is None:  # a command only (the old publish hook)
            if await self._reload(sorted(features)):
                self._applied()
            return
        self.state = "applying"
        try:
            rendered = await asyncio.to_thread(self.render, values)
        except RenderError as exc:
            return self.fail("render", str(exc))
        live = await asyncio.to_thread(self.generations.live)
        refused = self._guard(rendered, await asyncio.to_thread(Generations.meta, live))
        if refused:
            return self.fail("guard", refused)
        meta = {"commit": self.desired, "maps": rendered.maps}
        try:
            staging = await asyncio.to_thread(self.generations.stage, rendered, t.mode, meta)
        except OSError as exc:
            return self.fail("render", f"cannot write the files: {exc}")
        if live is not None and await asyncio.to_thread(_same, staging, live):
            await asyncio.to_thread(self.generations.discard, staging)
            self.rendered = self.desired
            self.live_hash = await asyncio.to_thread(digest, live)
            return self._applied("unchanged")  # the same files: nothing to reload
        places = {"staging": str(staging), "live": str(t.path)}
        if t.validate_command:
            ran = await commands.run(t.validate_command, places, t.timeout, self._env())
            if not ran.ok:
                await asyncio.to_thread(self.generations.discard, staging)
                return self.fail("validate", ran.text)
        self.rendered = self.desired
        try:
            generation = await asyncio.to_thread(self.generations.commit, staging)
            await asyncio.to_thread(self.generations.swap, generation)
        except (OSError, SwapError) as exc:
            await asyncio.to_thread(self.generations.discard, staging)
            return self.fail("swap", str(exc))
        self.forced = False
        if not await self._reload(sorted(features)) or not await self._probe():
            await self._revert(live)
            return
        self.live_hash = await asyncio.to_thread(digest, generation)
        await asyncio.to_thread(self.generations.prune)
        self._applied(f"{generation.name} live")

    async def _follow_canary(self) -> bool:
        """Wait until this machine may apply: it is its group's canary, or the canary
        applied and probed every commit this machine holds and is healthy (then a random
        delay, so that the group does not reload at once).  False: the canary failed;
        held back, and shown as failed, until the next change."""
        assert self.owner.canary is not None
        delayed = False
        while True:
            vector = dict(self.owner.vector)
            verdict = await self.owner.canary(self.target.name, vector)
            if verdict.kind == "self" or (verdict.kind == "ready" and delayed):
                return True
            if verdict.kind == "failed":
                self.fail("canary", f"held back: the canary {verdict.who} failed: {verdict.text}")
                return False
            if verdict.kind == "ready" and self.owner.vector == vector:
                delayed = True
                self.state = f"following the canary {verdict.who}"
                await asyncio.sleep(random.uniform(0, self.target.canary_delay))
                continue
            self.state = f"waiting for the canary {verdict.who}"
            await asyncio.sleep(CANARY_POLL)

    @property
    def busy(self) -> bool:
        """Changes wait for this target, or it is applying them."""
        return self.lock.locked() or bool(self.changed) or self.wake.is_set()

    def render(self, values: Mapping[str, Any]) -> Rendered:
        """This target's files for ``values`` (a thread's work: templates, renderers)."""
        t = self.target
        hostname = self.owner.hostname()
        if t.renderer:
            render = renderers()[t.renderer][0]
            return render(values, hostname, t.options)
        return render_templates(t.templates, values, hostname, t.options)

    def _guard(self, rendered: Rendered, live: Mapping[str, Any]) -> str | None:
        """A map emptied, or shrunk past ``max_shrink``, is refused unless forced."""
        if self.forced:
            return None
        before = live.get("maps") or {}
        for name, count in rendered.maps.items():
            had = int(before.get(name, 0))
            if had and (count == 0 or (had - count) / had > self.target.max_shrink):
                return (f"map {name} would go from {had} to {count} entries (more than "
                        f"max_shrink {self.target.max_shrink:g}); if that is meant, run "
                        f"'target force {self.target.name}'")  # fmt: skip
        return None

    async def _reload(self, features: list[str]) -> bool:
        t = self.target
        if not t.reload:
            return True
        command = t.reload
        started = time.time()
        extra = " ".join(shlex.quote(f) for f in features)
        if t.changed_arguments and extra:
            command = f"{command} {extra}"
        ran = await commands.run(command, {"live": str(t.path or "")}, t.timeout, self._env())
        self.reloads += 1
        self.last_run = {"at": started, "features": features, "returncode": ran.returncode,
                         "error": None if ran.ok else ran.text,
                         "took": round(time.time() - started, 3)}  # fmt: skip
        if not ran.ok:
            self.fail("reload", ran.text)
        return ran.ok

    async def _probe(self) -> bool:
        t = self.target
        if not t.probe:
            return True
        places = {"live": str(t.path or "")}
        await asyncio.sleep(t.settle)
        deadline = time.monotonic() + PROBE_LIMIT
        while True:  # a service may take a moment to listen again after its reload
            ran = await commands.probe(t.probe, places, min(t.timeout, 1.0))
            if ran.ok or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        if not ran.ok:
            self.fail("probe", ran.text)
        return ran.ok

    async def _revert(self, previous: Path | None) -> None:
        """The last good files back, reloaded (the failure stays shown)."""
        assert self.generations is not None
        if previous is None:
            log.error("target %s: nothing to go back to", self.target.name)
            return
        failure = self.failure
        try:
            await asyncio.to_thread(self.generations.swap, previous)
        except (OSError, SwapError) as exc:
            self.failure = Failure("revert", str(exc), self.desired)
            return
        if failure is not None:
            failure.text += f"; reverted to {previous.name}"
        await self._reload([])
        self.failure = failure  # (what made it revert, not the reload's own outcome)
        self.owner.alert("target reverted", self.target.name, f"back to {previous.name}")
        self.live_hash = await asyncio.to_thread(digest, previous)

    def _applied(self, how: str = "run") -> None:
        log.info("target %s: commit %s applied (%s)", self.target.name, self.desired, how)
        self.state, self.failure = "applied", None
        self.applied, self.applied_at = self.desired, time.time()
        self.drift = False

    def fail(self, stage: str, text: str) -> None:
        self.state = "failed"
        self.failure = Failure(stage, text, self.desired)
        commit = f" (commit {self.desired})" if self.desired else ""
        log.error("target %s: %s failed%s: %s", self.target.name, stage, commit, text)
        self.owner.alert("target failed", self.target.name, f"{stage}{commit}: {text}")

    def _env(self) -> dict[str, str]:
        return {"CLUSTERD_EFFECTIVE": str(self.owner.effective_path),
                "CLUSTERD_TARGET": self.target.name,
                "CLUSTERD_COMMIT": self.desired or ""}  # fmt: skip

    # -- by hand ------------------------------------------------------------------------

    async def rollback(self, back: int) -> dict[str, Any]:
        """The generation ``back`` steps before the live one, live again and reloaded."""
        if self.generations is None:
            raise SwapError(f"target {self.target.name} has no files")
        async with self.lock:
            kept = await asyncio.to_thread(self.generations.list)
            live = await asyncio.to_thread(self.generations.live)
            if live not in kept:
                raise SwapError(f"target {self.target.name} has no live generation")
            index = kept.index(live) - back
            if back < 1 or index < 0:
                raise SwapError(f"target {self.target.name} keeps {len(kept)} generation(s); "
                                f"the live one is {live.name}: no {back} back")  # fmt: skip
            chosen = kept[index]
            await asyncio.to_thread(self.generations.swap, chosen)
            ok = await self._reload([])
            self.live_hash = await asyncio.to_thread(digest, chosen)
            meta = await asyncio.to_thread(Generations.meta, chosen)
            self.applied = meta.get("commit")
            self.state = "applied (rolled back)" if ok else "failed"
            return {"target": self.target.name, "generation": chosen.name, "reloaded": ok,
                    "commit": self.applied}  # fmt: skip

    async def check_drift(self) -> None:
        if self.generations is None or self.live_hash is None:
            return
        generations = self.generations
        now = await asyncio.to_thread(lambda: digest(generations.live()))
        self.drift = now != self.live_hash

    def status(self) -> dict[str, Any]:
        t = self.target
        f = self.failure
        return {
            "state": self.state,
            "reads": sorted(self.reads),
            "path": None if t.path is None else str(t.path),
            "desired": self.desired,
            "rendered": self.rendered,
            "applied": self.applied,
            "applied_at": self.applied_at,
            "live_hash": self.live_hash,
            "drift": self.drift,
            "reloads": self.reloads,
            "error": None
            if f is None
            else {"stage": f.stage, "text": f.text, "commit": f.commit, "at": f.at},
            "last_run": self.last_run,
        }


def generations_of(link: Path) -> Path:
    """Where a target's generations live: beside its link (``/etc/.postfix-clusterd.
    generations`` for ``/etc/postfix-clusterd``), so the service reads them with the
    permissions of that directory, never through the data directory (root's only)."""
    return link.parent / f".{link.name}.generations"


def _same(staging: Path, live: Path) -> bool:
    return digest(staging) == digest(live)


class Targets:
    """Every target of this machine."""

    def __init__(
        self,
        targets: list[Target],
        *,
        values: Callable[[], Mapping[str, Any]],
        hostname: Callable[[], str],
        alert: Alert,
        effective_path: Path,
    ) -> None:
        self.values = values
        self.hostname = hostname
        self.alert = alert
        self.effective_path = effective_path
        self.sources = Sources()
        self.vector: dict[str, int] = {}  # the commits of the last publication told here
        self.canary: Canary | None = None  # asks a target's canary (the node's)
        # told when an apply ends, ok or failed (``Applier.state``, ``failure``,
        # ``including``): ``commit confirmed --probe targets`` (clusterd.node.confirms)
        self.listeners: list[Callable[[Applier], None]] = []
        self.appliers = {t.name: Applier(t, self) for t in targets}
        self._drift: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for applier in self.appliers.values():
            applier.task = loop.create_task(applier.run())
        if self.appliers:
            self._drift = loop.create_task(self._check_drift())

    def stop(self) -> None:
        for applier in self.appliers.values():
            if applier.task is not None:
                applier.task.cancel()
        if self._drift is not None:
            self._drift.cancel()

    def ready(self) -> None:
        """The publisher's first round is done: every target applies what it reads."""
        for applier in self.appliers.values():
            applier.touch(set())

    def finished(self, applier: Applier) -> None:
        """An apply of ``applier`` ended (applied, unchanged, held back or failed)."""
        for listener in self.listeners:
            try:
                listener(applier)
            except Exception:  # (a listener's mistake stops no target)
                log.exception("a listener of target %s failed", applier.target.name)

    def published(self, entries: list[dict[str, Any]]) -> None:
        """Entries just journaled: the targets that read them start their wait."""
        for e in entries:
            self.sources.versions[e["feature"]] = e["version"]
            self.sources.commits[e["feature"]] = e["commit"]
        changed = {e["feature"] for e in entries}
        for applier in self.appliers.values():
            touched = changed & applier.reads
            if touched:
                applier.touch(touched)

    def seen(self, vector: Mapping[str, int]) -> None:
        """A publication round is done (its entries, if any, told first): the targets
        know every change of these commits."""
        self.vector = dict(vector)

    def canary_answer(self, name: str, vector: Mapping[str, int]) -> dict[str, Any]:
        """What this machine says, as a canary, to a member holding ``vector``."""
        applier = self.appliers.get(name)
        if applier is None or not applier.target.canary:
            return {"canary": False}
        if any(self.vector.get(origin, 0) < seq for origin, seq in vector.items()):
            return {"canary": True, "verdict": "waiting", "text": "not at these commits yet"}
        if applier.busy or applier.state == "starting":  # (a failure shown may be old)
            return {"canary": True, "verdict": "waiting", "text": applier.state}
        failure = applier.failure
        if failure is not None:
            text = f"{failure.stage} (commit {failure.commit}): {failure.text}"
            return {"canary": True, "verdict": "failed", "text": text}
        return {"canary": True, "verdict": "ready"}

    def get(self, name: str) -> Applier:
        if name not in self.appliers:
            known = ", ".join(self.appliers) or "none"
            raise SwapError(f"no target {name!r} here (targets: {known})")
        return self.appliers[name]

    def force(self, name: str) -> dict[str, Any]:
        """The next apply of ``name`` passes the map guards, once, and starts now."""
        applier = self.get(name)
        applier.forced = True
        applier.touch(set())
        return {"target": name, "forced": True}

    def status(self) -> dict[str, Any]:
        return {name: a.status() for name, a in self.appliers.items()}

    def preview(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """In a worker thread: what each target's files would become with ``values``
        (the effective values a pending commit would give this machine), as unified
        diffs against its live files; the error of a render that would fail."""
        found: dict[str, Any] = {}
        for name, applier in self.appliers.items():
            if applier.generations is None:
                continue
            try:
                rendered = applier.render(values)
            except RenderError as exc:
                found[name] = {"error": str(exc), "files": {}}
                continue
            live = applier.generations.live()
            diffs = {}
            for file, text in sorted(rendered.files.items()):
                before = ""
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    before = (live / file).read_text(encoding="utf-8") if live else ""
                if before != text:
                    shown = "(a secret: not shown)" if file in rendered.private else "".join(
                        difflib.unified_diff(before.splitlines(True), text.splitlines(True),
                                             f"live/{file}", f"pending/{file}"))  # fmt: skip
                    diffs[file] = shown
            found[name] = {"error": None, "files": diffs}
        return found

    async def _check_drift(self) -> None:
        while True:
            await asyncio.sleep(DRIFT_EVERY)
            for applier in self.appliers.values():
                with contextlib.suppress(OSError):
                    await applier.check_drift()
