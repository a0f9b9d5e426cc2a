"""Writing this machine's effective configuration where a real service can read it.

After every commit applied here (made here or arriving from a member), the features
whose effective value changed are recomputed and ``effective.json`` in the data
directory is replaced atomically (write a temporary file, fsync, rename).  Then the
``publish_hook`` of ``clusterd.toml`` runs with the changed feature names as arguments
and ``CLUSTERD_EFFECTIVE`` set to the file's path.

Nothing here runs on the event loop's time but the recomputation (from memory): the
file is written in a worker thread, and the hook is a child process waited for
asynchronously, killed after ``publish_hook_timeout``.  Commits arriving meanwhile are
gathered and published together once the previous round is done, so a slow hook gets
one call for a burst of commits, never a queue of them.  A failing hook is logged and
shown in ``status``; it never undoes or blocks a commit.  The hook is a local setting:
nothing that arrives from another member names a command (SECURITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from clusterd.core import layers
from clusterd.core.merge import Outcome
from clusterd.core.text import printable
from clusterd.mesh.members import WHO_WE_ARE
from clusterd.store.store import Store

log = logging.getLogger("clusterd.publish")

HOOK_OUTPUT = 2000  # characters of a failing hook's stderr kept for status and the log


class Publisher:
    def __init__(
        self, store: Store, data_dir: Path, hook: str | None = None, hook_timeout: float = 60.0
    ) -> None:
        self.store = store
        self.path = Path(data_dir) / "effective.json"
        self.hook = hook
        self.hook_timeout = hook_timeout
        self.values: dict[str, Any] = {}
        self.written = 0  # documents written since start
        self.last_hook: dict[str, Any] | None = None  # how the last hook run went
        self._touched: set[str] | None = None  # features to recompute; None: all
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Publish everything now, and what changes after every commit applied."""
        self.store.listeners.append(self.on_commits)
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

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written, "hook": bool(self.hook),
                "last_hook": self.last_hook}  # fmt: skip

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            features, self._touched = self._touched, set()
            try:
                changed, document = self._recompute(features)
                if changed or features is None:
                    await asyncio.to_thread(self._write, document)
                    self.written += 1
                if changed and self.hook:
                    await self._run_hook(changed)
            except OSError as exc:
                log.error("could not publish %s: %s", self.path, exc)

    def _recompute(self, features: set[str] | None) -> tuple[list[str], dict[str, Any]]:
        """The features whose effective value changed, and the document to write."""
        store = self.store
        modes = layers.chain(store.state, store.hostname)
        changed = []
        for feature in store.catalogue:
            if feature.internal or (features is not None and feature.command not in features):
                continue
            value = layers.resolve(store.state, feature, modes).value
            if feature.command not in self.values or self.values[feature.command] != value:
                self.values[feature.command] = value
                changed.append(feature.command)
        document = {
            "machine": store.hostname,
            "cluster": layers.cluster_name(store.state),
            "version_vector": dict(store.version_vector),
            "features": dict(self.values),
        }
        return changed, document

    def _write(self, document: dict[str, Any]) -> None:
        """In a worker thread: the values are never changed in place, only replaced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".effective.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def _run_hook(self, changed: list[str]) -> None:
        assert self.hook is not None
        argv = [*shlex.split(self.hook), *changed]
        env = {**os.environ, "CLUSTERD_EFFECTIVE": str(self.path)}
        started = time.time()
        run: dict[str, Any] = {"at": started, "features": changed, "returncode": None,
                               "error": None}  # fmt: skip
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            run["error"] = f"cannot run {argv[0]}: {exc.strerror or exc}"
        else:
            try:
                _, err = await asyncio.wait_for(proc.communicate(), self.hook_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                run["error"] = f"timed out after {self.hook_timeout:g} s: killed"
            else:
                run["returncode"] = proc.returncode
                if proc.returncode != 0:
                    text = printable(err.decode(errors="replace").strip())[-HOOK_OUTPUT:]
                    run["error"] = f"exited {proc.returncode}: {text}"
        run["took"] = round(time.time() - started, 3)
        self.last_hook = run
        if run["error"]:
            log.error("publish hook %s %s", argv[0], run["error"])
