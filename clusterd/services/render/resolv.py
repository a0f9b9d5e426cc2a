"""``resolv.conf`` from ``dnsconfig``.

``local`` mode: the servers, lowest priority first (the resolver takes at most 3);
``internet-root`` mode names no server, which the C resolver cannot express: the
renderer refuses it unless the target's option ``root_resolver`` names the local
recursive resolver that does (for example ``127.0.0.1`` for an unbound on the machine).
Alternate domains need a resolver that forwards per domain: the C library has none,
so they are refused with that reason (render them with a template for unbound or
dnsmasq instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusterd.services.render import Rendered, RenderError

FEATURES = ("dnsconfig",)
MAX_SERVERS = 3  # MAXNS of the C resolver


def render(values: Mapping[str, Any], hostname: str, options: Mapping[str, Any]) -> Rendered:
    dns = values.get("dnsconfig") or {}
    if dns.get("alternate_domains"):
        raise RenderError("dnsconfig: alternate domains cannot be said in resolv.conf")
    if dns.get("mode") == "local":
        servers = [s["address"] for s in sorted(dns["servers"], key=lambda s: s["priority"])]
    elif options.get("root_resolver"):
        servers = [str(options["root_resolver"])]
    else:
        raise RenderError("dnsconfig: internet-root mode needs the target option "
                          "root_resolver (the local resolver's address)")  # fmt: skip
    if len(servers) > MAX_SERVERS:
        raise RenderError(f"dnsconfig: {len(servers)} servers; resolv.conf takes {MAX_SERVERS}")
    timeout = min(int(dns.get("timeout_seconds", 60)), 30)  # the C resolver's limit
    text = (
        f"# Written by clusterd from the effective configuration of {hostname}.\n"
        + "".join(f"nameserver {s}\n" for s in servers)
        + f"options timeout:{timeout}\n"
    )
    return Rendered({"resolv.conf": text})
