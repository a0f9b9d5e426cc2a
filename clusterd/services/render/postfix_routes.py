"""Where Postfix sends mail: the ``transport``, ``tls_policy`` and ``sasl_passwd`` maps
and the per-domain delivery limits, from ``smtproutes``, ``destconfig`` and the
"outgoing" ``smtpauthconfig`` profiles.

A routed domain leaves through ``smtp:[host]:port``, and Postfix then looks its TLS
policy (``smtp_tls_policy_maps``) and its SASL credentials (``smtp_sasl_password_maps``)
up by that next hop, verbatim with its brackets and port, never by the domain.  So a
domain's TLS setting is also written under each next hop of the route that carries it
(the strictest policy wins when domains share a host), and credentials are keyed by
next hop.  Postfix sets delivery concurrency per transport, not per domain: each
distinct pair of ``destconfig`` limits is an ``smtp`` transport of its own
(``dest_c10_m50``), which the domain's transport entry names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from clusterd.services.render import RenderError

TLS = {"none": "none", "preferred": "may", "required": "encrypt"}
STRICTNESS = ("none", "may", "encrypt")  # weakest first
LIMITS = ("max_concurrent_connections", "max_messages_per_connection")
LIMIT_DEFAULTS = (500, 50)  # DestinationControl's own

Limits = tuple[int, int]


def hops(name: str, route: Mapping[str, Any]) -> list[str]:
    """A route's next hops, ``[host]:port``, lowest priority first (Postfix 3.5 and later
    try the list in order; equal priorities keep the order given)."""
    ordered = sorted(route["destinations"], key=lambda d: d.get("priority", 0))
    if not ordered:
        raise RenderError(f"smtproutes {name}: no destination")
    return [f"[{_host(d['host'])}]:{d.get('port', 25)}" for d in ordered]


def route_for(domain: str, routes: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The route (name, row) that Postfix's transport lookup picks for mail to
    ``domain``: the domain's own, else the nearest ``.parent``, else ``ALL``."""
    by_key = {name.lower(): name for name in routes}
    labels = domain.lower().split(".")
    for key in [".".join(labels), *("." + ".".join(labels[i:]) for i in range(1, len(labels)))]:
        if key in by_key:
            return by_key[key], routes[by_key[key]]
    return ("ALL", routes["ALL"]) if "ALL" in routes else None


def limited(dest: Mapping[str, Any]) -> dict[str, Limits]:
    """The ``destconfig`` domains whose limits differ from the ``Default`` row's, with
    their limits (a row equal to the default needs no transport of its own)."""
    default = _limits(dest["Default"]) if "Default" in dest else None
    return {domain: _limits(row) for domain, row in sorted(dest.items())
            if domain != "Default" and _limits(row) != default}  # fmt: skip


def transport_name(limits: Limits) -> str:
    return f"dest_c{limits[0]}_m{limits[1]}"


def transport_rows(routes: Mapping[str, Any], dest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``transport`` map: each route through ``smtp``; a domain with limits of its
    own through its limits' transport, to its route's next hops (none: the domain's MX)."""
    rows = {name: "smtp:" + ", ".join(hops(name, route)) for name, route in routes.items()}
    for domain, limits in limited(dest).items():
        found = route_for(domain, routes)
        via = ", ".join(hops(*found)) if found else ""
        key = found[0] if found and found[0].lower() == domain.lower() else domain
        rows[key] = f"{transport_name(limits)}:{via}"
    return [("*" if name == "ALL" else name, value) for name, value in sorted(rows.items())]


def tls_rows(routes: Mapping[str, Any], dest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``tls_policy`` map: each ``destconfig`` domain (what Postfix looks up when the
    domain is not routed), then each next hop of a route carrying such a domain, with
    the strictest policy of the domains it carries."""
    domains = {domain: TLS[row.get("tls", "none")]
               for domain, row in sorted(dest.items()) if domain != "Default"}  # fmt: skip
    by_hop: dict[str, str] = {}
    for domain, policy in domains.items():
        found = route_for(domain, routes)
        for hop in hops(*found) if found else []:
            key = hop.lower()  # (postmap folds keys to lower case)
            by_hop[key] = max(by_hop.get(key, "none"), policy, key=STRICTNESS.index)
    return [*domains.items(), *sorted(by_hop.items())]


def sasl_rows(routes: Mapping[str, Any], profiles: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``sasl_passwd`` map: ``[host]:port user:password`` for each next hop of a route
    that names an "outgoing" profile.  Postfix finds credentials by next hop, so two
    routes sharing one must agree on them."""
    found: dict[str, tuple[str, str]] = {}  # hop -> (route, user:password)
    for name, route in sorted(routes.items()):
        wanted = route.get("smtp_auth_profile")
        if not wanted:
            continue
        profile = profiles.get(wanted) or {}
        if profile.get("type") != "outgoing":
            raise RenderError(f"smtproutes {name}: smtp_auth_profile {wanted!r} is not an "
                              "'outgoing' smtpauthconfig profile here")  # fmt: skip
        credentials = f"{profile['username']}:{profile['password']}"
        for hop in hops(name, route):
            other, known = found.setdefault(hop.lower(), (name, credentials))
            if known != credentials:
                raise RenderError(f"smtproutes {name}: {hop} is also a destination of "
                                  f"{other} with other credentials (Postfix finds them by "
                                  "destination)")  # fmt: skip
    return [(hop, credentials) for hop, (_, credentials) in sorted(found.items())]


def _limits(row: Mapping[str, Any]) -> Limits:
    return (int(row.get(LIMITS[0], LIMIT_DEFAULTS[0])), int(row.get(LIMITS[1], LIMIT_DEFAULTS[1])))


def _host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"ipv6:{address}" if address.version == 6 else str(address)
