"""What a member says of itself: ``status`` (control socket, shell, web) and its parts.

Reads only: the daemon's node, store, gate, alerts, mail and publisher as they are now.
The digest and the recorded losses walk the whole state (half a second at 100,000
rows), so they are computed in a thread, on a copy of memory, and kept on the daemon
(``summary_cache``) until a commit changes the state; ``vv`` is the vector they
describe.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.digest import state_digest
from clusterd.core.merge import inconsistencies
from clusterd.core.state import State
from clusterd.mesh.protocol import catch_up, commits_behind
from clusterd.node import targets
from clusterd.node.syncstate import sync_state

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon


async def report(d: Daemon) -> dict[str, Any]:
    made = await summary(d)
    node, ours = d.node, d.store.state.vv
    members = peers(d, features=True)
    return {
        "hostname": d.config.hostname,
        "serial": d.config.serial,
        "cluster": layers.cluster_name(d.store.state),
        "software": d.config.software,
        "disconnected": node.disconnected,
        "uptime_s": round(time.time() - d.started_at, 1),
        "ping_interval": d.config.ping_interval,
        "links": len(node.live_peers()),
        "peers": members,
        "routes": {p["hostname"]: p["route"] for p in members},
        **made,
        "waiting_commits": len(d.store.inbox),
        "catch_up": catch_up(ours, members),
        "traffic": dict(d.member.traffic),
        "loop": d.lag.report(),
        "store": {"ok": d.store.outage is None, **(d.store.outage or {})},
        "gate": d.gate.status(),
        "alerts": list(d.alerts),
        "witness": witness(d),
        "confirms": d.confirms.status(),
        "corruption": d.divergence.status(),  # entries found to differ (node.divergence)
        "alert_mail": d.mail.status(),
        **targets.status(d.publisher, d.targets),
        "web": None if d.web is None else d.web.status(),
        "reverse_dns": {"policy": d.config.reverse_dns, "members": reverse_facts(d)},
    }


def witness(d: Daemon) -> list[dict[str, Any]]:
    """What witnessing found standing against members' logs (``clusterd.mesh.witness``):
    each until that member's chain heads agree with ours again, or this daemon restarts."""
    names = layers.hostnames(d.store.state)
    found = sorted(d.node.witness.findings.values(), key=lambda f: (f.member, f.kind, f.origin))
    return [f.to_json(names) for f in found]


async def summary(d: Daemon) -> dict[str, Any]:
    """Digest, recorded losses and the vector they describe.  The state is a function
    of the commits applied (merge is deterministic), so the vector names it: kept for as
    long as it stays the same, and computed once per vector however many ask."""
    key = tuple(sorted(d.store.state.vv.items()))
    if d.summary_cache is not None and d.summary_cache[0] == key:
        return d.summary_cache[1]
    if d.summary_task is None or d.summary_task[0] != key:
        image = d.store.state.copy()  # (dicts only: milliseconds at 100,000 rows)
        d.summary_task = (key, asyncio.ensure_future(asyncio.to_thread(_summarize, image)))
    made = await asyncio.shield(d.summary_task[1])
    d.summary_cache = (key, made)
    return made


def _summarize(state: State) -> dict[str, Any]:
    """CPU only, on a copy: from a thread."""
    return {
        "vv": dict(state.vv),
        "digest": state_digest(state),
        "inconsistencies": [
            {"unit": str(x.unit), "lost": str(x.loser.commit), "by": str(x.by)}
            for x in inconsistencies(state)
        ],
    }


def peers(d: Daemon, *, features: bool = False) -> list[dict[str, Any]]:
    """Each member as this machine sees it: its link, route, how far behind it we are
    and its sync state (``node.syncstate``).  Cheap, for whoever polls it often (e.g.
    cli.progress, the web page's events): no digest, and the features of the commits
    ahead are counted only when asked (``status``, ``connstatus``)."""
    node, now = d.node, d.now()
    ours = d.store.state.vv
    rows = layers.row_commits(d.store.state)
    found = []
    for serial, p in node.peers.items():
        route = node.route(serial)
        if route is None:
            via = None
        else:
            via = "direct" if route.peer == serial else f"via {node.peers[route.peer].hostname}"
        sync = sync_state(p, ours, here_disconnected=node.disconnected,
                          admitted=rows.get(serial), route=via,
                          recent=d.recent if features else None,
                          diverged=d.divergence.diverged_with(serial))  # fmt: skip
        found.append({
            "serial": serial,
            "hostname": p.hostname,
            "state": p.state,
            "link": p.link,
            "direction": None if p.link is None else (
                "out" if node.links[p.link].outbound else "in"),
            "since_s": round(now - p.since, 3) if p.since else None,
            "rtt_ms": None if p.rtt is None else round(p.rtt * 1000, 3),
            "reason": p.reason,
            "route": via,
            "vv": p.vv,
            "admin_off": p.admin_off,  # that member is disconnected on purpose
            "links": sorted(p.links),  # the members it says it has live links to
            "behind": commits_behind(ours, p.vv),
            "syncing": p.syncing_since is not None,
            "sync": sync.to_json(),
        })  # fmt: skip
    return found


def reverse_facts(d: Daemon) -> list[dict[str, Any]]:
    """What the reverse lookups of connecting members found, per member: ``accepted``
    when one failed and ``reverse_dns = warn`` let the member in anyway (the reference
    refuses it); ``mismatch`` when the names found do not include the member's name (as
    after a rename, before DNS follows)."""
    found = []
    for serial, seen in sorted(d.reverse_seen.items()):
        name = d.peers[serial].hostname if serial in d.peers else None
        if name is None:
            continue
        names = {n.lower().rstrip(".") for n in seen.answers}
        found.append({
            "hostname": name,
            "address": seen.query,
            "ok": seen.ok,
            "found": seen.describe(),
            "accepted": not seen.ok and d.config.reverse_dns == "warn",
            "mismatch": seen.ok and name not in names,
        })  # fmt: skip
    return found
