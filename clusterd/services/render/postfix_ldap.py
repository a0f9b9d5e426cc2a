"""LDAP lookup tables (Postfix's ldap_table(5) files) from the ``ldapconfig`` queries the
listeners use, and how each listener uses them.

Postfix reads an ``ldap:`` table's settings from a ``.cf`` file beside ``main.cf``;
``postmap`` builds nothing for it (the directory is asked at each lookup).  A listener's
"accept" query is its ``relay_recipient_maps`` (the SMTP server refuses a recipient of a
routed domain that the directory lacks, whatever the RAT said); "routing" and
"masquerade" rewrite addresses, which Postfix's cleanup service does, so a listener
using them hands its mail to a cleanup service of its own
(``-o cleanup_service_name``) that rewrites recipients with ``virtual_alias_maps`` and
senders with ``sender_canonical_maps``.  "group" queries have no Postfix form.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from clusterd.schema.fields import NAME_RE
from clusterd.services.render import RenderError

KINDS = ("accept", "routing", "masquerade")  # what a listener's query can be used for here
PLACEHOLDERS = {"a": "%s", "u": "%u", "d": "%d"}  # query_string's, as Postfix says them
PLACEHOLDER = re.compile(r"\{([A-Za-z])\}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def table(query: str) -> str:
    return f"ldap_{query}.cf"


def uses(name: str, listener: Mapping[str, Any], ldap: Mapping[str, Any]) -> dict[str, str]:
    """The queries a listener uses, by kind (those Postfix has a form for)."""
    found = {}
    for use in listener.get("ldap_queries") or []:
        if use["kind"] not in KINDS:
            continue
        query = ldap.get(use["query"]) or {}
        if query.get("kind") != "query":
            raise RenderError(f"listener {name}: no LDAP query {use['query']!r} here")
        if query["query_type"] != use["kind"]:
            raise RenderError(f"listener {name}: LDAP query {use['query']} is a "
                              f"{query['query_type']!r} query, not {use['kind']!r}")  # fmt: skip
        _named(use["query"], "LDAP query")
        found[use["kind"]] = use["query"]
    return found


def tables(queries: set[str], ldap: Mapping[str, Any], header: str) -> dict[str, tuple[str, bool]]:
    """Each query's table file: its text, and whether it holds a password."""
    return {table(name): _table(name, ldap[name], ldap, header) for name in sorted(queries)}


def smtpd_options(listener: str, used: Mapping[str, str]) -> str:
    """The ``-o`` lines of the listener's SMTP server for the queries it uses."""
    lines = ""
    if "accept" in used:
        lines += f"  -o relay_recipient_maps=ldap:$config_directory/{table(used['accept'])}\n"
    if "routing" in used or "masquerade" in used:
        lines += f"  -o cleanup_service_name={cleanup(listener)}\n"
    return lines


def cleanup_service(listener: str, used: Mapping[str, str]) -> str:
    """The listener's own cleanup service, if its queries rewrite addresses."""
    rewrites = [(parameter, used[kind]) for kind, parameter in
                (("routing", "virtual_alias_maps"), ("masquerade", "sender_canonical_maps"))
                if kind in used]  # fmt: skip
    if not rewrites:
        return ""
    options = [f"  -o {parameter}=ldap:$config_directory/{table(query)}\n"
               for parameter, query in rewrites]  # fmt: skip
    return f"{cleanup(listener)} unix n - n - 0 cleanup\n" + "".join(options)


def cleanup(listener: str) -> str:
    return f"cleanup_{_named(listener, 'listener')}"


def _table(name: str, query: Mapping[str, Any], ldap: Mapping[str, Any],
           header: str) -> tuple[str, bool]:  # fmt: skip
    profile = ldap.get(query["profile"]) or {}
    if profile.get("kind") != "profile":
        raise RenderError(f"ldapconfig {name}: no LDAP profile {query['profile']!r} here")
    security = profile.get("connection_security", "none")
    scheme = "ldaps" if security == "ssl" else "ldap"
    port = profile.get("port", 389)
    settings = {
        "server_host": " ".join(f"{scheme}://{_url_host(h)}:{port}" for h in profile["hostnames"]),
        "version": "3",
        "search_base": profile["base_dn"].replace("%", "%%"),
        "query_filter": _filter(name, query["query_string"]),
        "result_attribute": query.get("result_attribute") or "mail",
    }
    if security == "starttls":
        settings["start_tls"] = "yes"
    if security != "none":
        settings["tls_require_cert"] = "yes"
    secret = profile.get("auth") == "password"
    if secret:
        settings.update(bind="yes", bind_dn=profile["bind_dn"], bind_pw=profile["bind_password"])
    else:
        settings["bind"] = "no"
    for key, value in settings.items():
        if CONTROL.search(value):
            raise RenderError(f"ldapconfig {name}: {key} would hold a control character")
    return header + "".join(f"{k} = {v}\n" for k, v in settings.items()), secret


def _filter(name: str, text: str) -> str:
    """``query_string`` as a Postfix ``query_filter``: ``{a}``, ``{u}``, ``{d}`` become
    ``%s``, ``%u``, ``%d``; a literal ``%`` is ``%%`` (Postfix would expand it)."""

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) not in PLACEHOLDERS:
            raise RenderError(f"ldapconfig {name}: query_string has {match.group(0)}; "
                              "Postfix can say {a}, {u} and {d} only")  # fmt: skip
        return PLACEHOLDERS[match.group(1)]

    converted = PLACEHOLDER.sub(placeholder, text.replace("%", "%%"))
    if converted == text.replace("%", "%%"):
        raise RenderError(f"ldapconfig {name}: query_string names no part of the address "
                          "({a}, {u} or {d}): every address would get the same answer")  # fmt: skip
    return converted


def _named(name: str, what: str) -> str:
    """A row name that becomes a file or service name: letters, digits, '_', '.', '-'."""
    if not NAME_RE.fullmatch(name):
        raise RenderError(f"{what} {name}: Postfix needs a name of letters, digits, "
                          "'_', '.' and '-' here")  # fmt: skip
    return name


def _url_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{address}]" if address.version == 6 else str(address)
