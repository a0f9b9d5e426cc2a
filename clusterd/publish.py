"""Writing this machine's effective configuration where a real service can read it.

After every commit applied here (local or remote), the features whose effective value
changed are recomputed and ``effective.json`` in the data directory is replaced
atomically (write a temporary file, fsync, rename).  Then the configured hook command
runs with the changed feature names as arguments and ``CLUSTERD_EFFECTIVE`` set to the
file's path.  A failing hook is logged; it never undoes or blocks a commit.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from clusterd import layers
from clusterd.members import MEMBERSHIP
from clusterd.merge import Outcome
from clusterd.store import Store

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self, store: Store, data_dir: Path, hook: str | None = None, hook_timeout: float = 60.0
    ) -> None:
        self.store = store
        self.path = Path(data_dir) / "effective.json"
        self.hook = hook
        self.hook_timeout = hook_timeout
        self.values: dict[str, Any] = {}
        self.last_hook: subprocess.CompletedProcess[bytes] | None = None

    def attach(self) -> Publisher:
        """Publish now and after every commit the store applies."""
        self.publish(None)
        self.store.listeners.append(self.on_commits)
        return self

    def on_commits(self, outcomes: list[Outcome]) -> None:
        touched = {feature for out in outcomes for feature, _ in out.touched}
        self.publish(None if touched & MEMBERSHIP else touched)

    def publish(self, features: set[str] | None) -> list[str]:
        """Recompute ``features`` (all when None); write and run the hook if any changed."""
        store = self.store
        modes = layers.chain(store.state, store.hostname)
        changed = []
        for feature in store.catalogue:
            if feature.internal or (features is not None and feature.command not in features):
                continue
            value = layers.resolve(store.state, feature, modes).value
            if self.values.get(feature.command) != value or not self.path.exists():
                self.values[feature.command] = value
                changed.append(feature.command)
        if changed or features is None:
            self._write()
        if changed:
            self._run_hook(changed)
        return changed

    def _write(self) -> None:
        document = {
            "machine": self.store.hostname,
            "cluster": layers.cluster_name(self.store.state),
            "version_vector": self.store.version_vector,
            "features": self.values,
        }
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

    def _run_hook(self, changed: list[str]) -> None:
        if not self.hook:
            return
        argv = [*shlex.split(self.hook), *changed]
        env = {**os.environ, "CLUSTERD_EFFECTIVE": str(self.path)}
        try:
            self.last_hook = subprocess.run(
                argv, env=env, capture_output=True, timeout=self.hook_timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("config hook %s failed: %s", argv[0], exc)
            return
        if self.last_hook.returncode != 0:
            log.error(
                "config hook %s exited %d: %s",
                argv[0],
                self.last_hook.returncode,
                self.last_hook.stderr.decode(errors="replace").strip()[:500],
            )
