"""chrony's configuration from ``ntpconfig``: one ``server`` line per server (``iburst``),
the source address from the interface named, if any."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusterd.services.render import Rendered, RenderError

FEATURES = ("ntpconfig", "interfaceconfig")


def render(values: Mapping[str, Any], hostname: str, options: Mapping[str, Any]) -> Rendered:
    ntp = values.get("ntpconfig") or {}
    lines = [f"# Written by clusterd from the effective configuration of {hostname}.\n"]
    lines += [f"server {server} iburst\n" for server in ntp.get("servers") or []]
    source = ntp.get("source_interface")
    if source:
        interface = (values.get("interfaceconfig") or {}).get(source)
        if interface is None:
            raise RenderError(f"ntpconfig: no interface {source!r} here")
        lines.append(f"bindacqaddress {interface['address']}\n")
    lines.append(f"driftfile {options.get('driftfile', '/var/lib/chrony/chrony.drift')}\n")
    lines.append("makestep 1.0 3\nrtcsync\n")
    return Rendered({"chrony.conf": "".join(lines)})
