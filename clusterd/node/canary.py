"""A target's canary: which member of this machine's group applies a change first, and
what it says (``docs/services.md``, "Canary rollout").

The canary of a group is its member with the lowest serial among those this machine has
a live link to, itself included; a member without that target (or without ``canary``
on it), or one that does not answer, is passed over.  The question travels as a mesh
query (``canary``): the target's name and the version vector this machine published;
the answer is the canary's ``Targets.canary_answer``.  Views of who is up may differ
for a moment, so two members may both act as canary then: at most one per side of a
partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.services.applier import Verdict

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

TIMEOUT = 2.0  # s for a canary's answer before it is passed over
VERDICTS = ("ready", "waiting", "failed")
MAX_TEXT = 2000  # characters of a canary's reason kept


class Canaries:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def __call__(self, target: str, vector: dict[str, int]) -> Verdict:
        d = self.daemon
        machines = layers.machines(d.store.state)
        me = d.config.hostname
        group = machines.get(me, {}).get("group")
        live = set(d.node.live_peers())
        candidates = sorted((str(row["serial"]), host) for host, row in machines.items()
                            if row["group"] == group and not row["disconnected"])  # fmt: skip
        for serial, host in candidates:
            if serial == d.config.serial:
                break
            if serial not in live:
                continue
            answer = await d.ask(serial, "canary", {"target": target, "vector": vector}, TIMEOUT)
            body = answer.body if answer.ok and isinstance(answer.body, dict) else {}
            if body.get("canary") is not True:
                continue
            kind = body.get("verdict")
            return Verdict(kind if kind in VERDICTS else "waiting", host,
                           str(body.get("text") or "")[:MAX_TEXT])  # fmt: skip
        return Verdict("self", me)


def answer(d: Daemon, args: Mapping[str, Any]) -> dict[str, Any]:
    """A member's ``canary`` query, checked (it comes from the network)."""
    target, vector = args.get("target"), args.get("vector")
    if not isinstance(target, str) or not isinstance(vector, dict) or len(vector) > 10_000:
        raise ValueError("target (a name) and vector (origin -> sequence) expected")
    if not all(isinstance(o, str) and type(n) is int for o, n in vector.items()):
        raise ValueError("vector: origin -> sequence")
    return d.targets.canary_answer(target, vector)
