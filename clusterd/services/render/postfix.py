"""Postfix: ``main.cf``, ``master.cf``, the maps and the LDAP tables, from the mail
features.

Every map is a ``hash:`` table under ``$config_directory``, so a staging directory is
checked with its own maps (``postfix -c STAGING check``; ``postmap`` builds them).  The
mapping, setting by setting, is the table in ``docs/services.md``.  What Postfix cannot
say is said there too: destinations of equal priority are tried in the order given (no
random choice among them), and sender groups match addresses and networks only.  Where
mail goes (transport, TLS policy, credentials, limits) is ``postfix_routes``; the LDAP
tables are ``postfix_ldap``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from clusterd.services.render import Rendered, RenderError, postfix_ldap, postfix_routes

FEATURES = (
    "sethostname",  # (the machine's name, which follows it, is myhostname)
    "smtproutes",
    "listenerconfig",
    "interfaceconfig",
    "bounceconfig",
    "destconfig",
    "unsubscribe",
    "smtpauthconfig",
    "ldapconfig",
)
# and one rat_LISTENER per listener
MAPS = ("transport", "unsubscribe", "tls_policy", "sasl_passwd")
HEADER = (
    "# Written by clusterd from the effective configuration of {host}; edits here are\n"
    "# replaced at the next change (docs/services.md).\n"
)
LOOPBACK = ["127.0.0.0/8", "[::1]/128"]
# When a route names an "outgoing" profile.  Plaintext mechanisms (PLAIN, LOGIN) inside
# TLS only: a password never crosses the network in clear (docs/services.md).
SASL = {
    "smtp_sasl_auth_enable": "yes",
    "smtp_sasl_password_maps": "hash:$config_directory/sasl_passwd",
    "smtp_sasl_security_options": "noanonymous, noplaintext",
    "smtp_sasl_tls_security_options": "noanonymous",
}

# The services every Postfix needs (master.cf of Postfix 3.7, without the SMTP server,
# which each listener adds).
MASTER_BASE = """\
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


def render(values: Mapping[str, Any], hostname: str, options: Mapping[str, Any]) -> Rendered:
    host = hostname  # (a committed sethostname renames the machine: this follows it)
    header = HEADER.format(host=host)
    routes = values.get("smtproutes") or {}
    listeners = values.get("listenerconfig") or {}
    interfaces = values.get("interfaceconfig") or {}
    dest = values.get("destconfig") or {}
    ldap = values.get("ldapconfig") or {}
    files: dict[str, str] = {}
    maps: dict[str, int] = {}
    private = {"sasl_passwd"}

    def table(name: str, rows: list[tuple[str, str]]) -> None:
        files[name] = header + "".join(f"{k} {v}\n" for k, v in rows)
        maps[name] = len(rows)

    table("transport", postfix_routes.transport_rows(routes, dest))
    table("unsubscribe", [(address, "REJECT this address asked for no mail")
                          for address in sorted(values.get("unsubscribe") or {})])  # fmt: skip
    table("tls_policy", postfix_routes.tls_rows(routes, dest))
    sasl = postfix_routes.sasl_rows(routes, values.get("smtpauthconfig") or {})
    table("sasl_passwd", sasl)  # (always there, like every map: the guard counts it)
    limits = sorted(set(postfix_routes.limited(dest).values()))
    services = [f"{postfix_routes.transport_name(pair)} unix - - n - - smtp\n" for pair in limits]
    relay_from, queries = list(LOOPBACK), set()
    for name, listener in sorted(listeners.items()):
        address = _listen_address(name, listener, interfaces)
        rat = f"rat_{name}"
        table(rat, _rat_rows(listener.get("rat") or []))
        final = _rat_default(listener.get("rat") or [])
        restrictions = (f"check_recipient_access hash:$config_directory/unsubscribe,"
                        f"check_recipient_access hash:$config_directory/{rat},"
                        f"permit_mynetworks,{final}")  # fmt: skip
        used = postfix_ldap.uses(name, listener, ldap)
        queries |= set(used.values())
        services.append(
            f"{address}:{listener.get('port', 25)} inet n - n - - smtpd\n"
            f"  -o syslog_name=postfix/{name}\n"
            f"  -o {{ smtpd_recipient_restrictions = {restrictions} }}\n"
            + postfix_ldap.smtpd_options(name, used)
            + postfix_ldap.cleanup_service(name, used)
        )
        relay_from += _relay_senders(listener.get("hat") or [])
    for name, (text, secret) in postfix_ldap.tables(queries, ldap, header).items():
        files[name] = text
        if secret:
            private.add(name)
    main = _main_cf(host, routes, values, sorted(set(relay_from), key=relay_from.index))
    for pair in limits:  # (as the Default row's limits are said, per transport)
        transport = postfix_routes.transport_name(pair)
        main[f"{transport}_destination_concurrency_limit"] = str(pair[0])
        main[f"{transport}_destination_recipient_limit"] = str(pair[1])
    if sasl:
        main.update(SASL)
    for key, value in (options.get("main_cf") or {}).items():  # the machine's own (local)
        main[str(key)] = str(value)
    files["main.cf"] = header + "".join(f"{k} = {v}\n" for k, v in main.items())
    files["master.cf"] = header + MASTER_BASE + "".join(services)
    return Rendered(files, maps, private=private)


def _main_cf(
    host: str, routes: Mapping[str, Any], values: Mapping[str, Any], relay_from: list[str]
) -> dict[str, str]:
    bounce = (values.get("bounceconfig") or {}).get("Default") or {}
    dest = (values.get("destconfig") or {}).get("Default") or {}
    main = {
        "compatibility_level": "3.6",
        "myhostname": host,
        "mydestination": "",
        "local_recipient_maps": "",
        "alias_maps": "",
        "alias_database": "",
        "relay_domains": ", ".join(d for d in sorted(routes) if d != "ALL"),
        "transport_maps": "hash:$config_directory/transport",
        "mynetworks": " ".join(relay_from),
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtp_tls_policy_maps": "hash:$config_directory/tls_policy",
    }
    if bounce:
        lifetime = f"{bounce['max_queue_lifetime_seconds']}s"
        main["maximal_queue_lifetime"] = main["bounce_queue_lifetime"] = lifetime
        main["minimal_backoff_time"] = f"{bounce['initial_retry_seconds']}s"
        main["maximal_backoff_time"] = f"{bounce['max_retry_seconds']}s"
    if dest:
        main["default_destination_concurrency_limit"] = str(dest["max_concurrent_connections"])
        main["default_destination_recipient_limit"] = str(dest["max_messages_per_connection"])
    return main


def _listen_address(name: str, listener: Mapping[str, Any], interfaces: Mapping[str, Any]) -> str:
    interface = interfaces.get(listener["interface"])
    if interface is None:
        raise RenderError(f"listener {name}: no interface {listener['interface']!r} here")
    address = ipaddress.ip_address(interface["address"])
    return f"[{address}]" if address.version == 6 else str(address)


def _rat_rows(rat: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """RAT entries as Postfix access keys: ``domain``, ``user@domain``, ``user@``
    (``@domain`` is the domain itself).  An entry whose key an earlier one already has
    is left out: the first match wins in a RAT, and ``postmap`` warns of a key twice
    (keys fold to lower case)."""
    rows: dict[str, tuple[str, str]] = {}
    for entry in rat:
        if entry["recipient"] != "ALL":
            key = entry["recipient"].removeprefix("@")
            rows.setdefault(key.lower(), (key, "OK" if entry["action"] == "ACCEPT" else "REJECT"))
    return list(rows.values())


def _rat_default(rat: list[Mapping[str, Any]]) -> str:
    """What a recipient no RAT entry names gets: an ``ALL`` entry's action, else the
    relay rule (mail for the routed domains only)."""
    for entry in rat:
        if entry["recipient"] == "ALL":
            return "permit" if entry["action"] == "ACCEPT" else "reject"
    return "reject_unauth_destination"


def _relay_senders(hat: list[Mapping[str, Any]]) -> list[str]:
    """Senders of RELAY groups that Postfix can name in ``mynetworks``: addresses and
    networks (host and domain patterns have no ``mynetworks`` form)."""
    found = []
    for group in hat:
        if group.get("policy") != "RELAY":
            continue
        for sender in group.get("senders") or []:
            try:
                network = ipaddress.ip_network(sender, strict=False)
            except ValueError:
                continue
            if network.version == 6:
                found.append(f"[{network.network_address}]/{network.prefixlen}")
            else:
                found.append(str(network))
    return found
