"""The node's targets: read from the machine's local files, fed by the publisher.

``targets.d/*.toml`` beside ``clusterd.toml`` declares them (``targets_dir``); the old
``publish_hook`` of ``clusterd.toml`` is one more, a command only, that reads every
feature and gets the changed ones as arguments.  Their generations live under
``DATA_DIR/targets/`` (``docs/services.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clusterd.node.config import DaemonConfig
from clusterd.node.publish import Publisher
from clusterd.schema.catalogue import CATALOGUE
from clusterd.services import targetconfig
from clusterd.services.applier import Alert, Targets
from clusterd.services.targetconfig import Target

HOOK = "publish_hook"


def hook_target(config: DaemonConfig) -> Target | None:
    if config.publish_hook is None:
        return None
    every = [f.command for f in CATALOGUE if not f.internal]
    return Target(name=HOOK, validate=None, reload=config.publish_hook,
                  timeout=config.publish_hook_timeout,
                  wait="0", features=every, changed_arguments=True)  # fmt: skip


def build(
    config: DaemonConfig, publisher: Publisher, hostname: Callable[[], str], alert: Alert
) -> Targets:
    """The targets of this machine (``ConfigError`` names a bad file and key)."""
    declared = targetconfig.load(config.data_dir / config.targets_dir, hook_target(config))
    values: Callable[[], Mapping[str, Any]] = lambda: dict(publisher.values)  # noqa: E731
    targets = Targets(declared, values=values, hostname=hostname,
                      alert=alert, effective_path=publisher.path)  # fmt: skip
    publisher.targets = targets
    return targets


def summary(targets: Targets) -> dict[str, dict[str, Any]]:
    """What clustercheck compares of this machine's targets (the ``checks`` answer)."""
    keep = ("state", "desired", "applied", "drift", "error")
    return {name: {k: t[k] for k in keep} for name, t in targets.status().items()}


def status(publisher: Publisher, targets: Targets) -> dict[str, Any]:
    """``status``'s ``publish`` (with the old hook's last run, as before) and ``targets``."""
    hook = targets.appliers.get(HOOK)
    return {
        "publish": {
            **publisher.status(),
            "hook": hook is not None,
            "last_hook": None if hook is None else hook.last_run,
        },
        "targets": targets.status(),
    }
