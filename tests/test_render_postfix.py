"""The Postfix renderer's outgoing authentication, TLS policy of routed domains,
per-domain limits and LDAP tables: exact output, and what the real Postfix makes of
the directory (``clusterd postfix-check``, ``postmap -q``, ``postconf``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from clusterd.services.render import RenderError, postfix
from tests.test_render import DATA, HAS_LDAP, HEADER, LISTENER, checked, needs_postfix

DEFAULT = {"max_concurrent_connections": 500, "max_messages_per_connection": 50, "tls": "none"}
AUTH = {
    "out": {"type": "outgoing", "username": "gw@example.org", "password": "s3cret #$x:y %z"},
    "in": {"type": "forward", "forward_servers": [{"host": "10.0.0.25", "port": 25}]},
}
ROUTES = {
    "example.org": {"destinations": [{"host": "relay.example.net", "port": 587, "priority": 0},
                                     {"host": "2001:db8::1", "port": 25, "priority": 1}],
                    "smtp_auth_profile": "out"},
    "example.net": {"destinations": [{"host": "relay.example.net", "port": 587}]},
    ".example.com": {"destinations": [{"host": "mx.example.com", "port": 25}]},
    "ALL": {"destinations": [{"host": "10.0.0.1", "port": 25}]},
}  # fmt: skip
DEST = {
    "Default": DEFAULT,
    "example.org": {**DEFAULT, "max_concurrent_connections": 10, "tls": "required"},
    "example.net": {**DEFAULT, "tls": "preferred"},  # the Default's limits: no transport
    "a.example.com": {**DEFAULT, "max_messages_per_connection": 5, "tls": "none"},
    "gmail.com": {**DEFAULT, "max_concurrent_connections": 10, "tls": "preferred"},
}
LDAP = {
    "corp": {"kind": "profile", "hostnames": ["ldap1.example.com", "2001:db8::5"], "port": 636,
             "base_dn": "ou=100%,dc=example,dc=com", "auth": "password",
             "bind_dn": "cn=postfix,dc=example,dc=com", "bind_password": "p%w $x #y",
             "connection_security": "ssl"},
    "open": {"kind": "profile", "hostnames": ["ldap.example.com"], "port": 389,
             "base_dn": "dc=example,dc=com", "auth": "anonymous", "bind_dn": None,
             "bind_password": None, "connection_security": "starttls"},
    "valid": {"kind": "query", "profile": "open", "query_type": "accept",
              "query_string": "(|(mail={a})(&(uid={u})(domain={d})))"},  # (result: mail)
    "route": {"kind": "query", "profile": "corp", "query_type": "routing",
              "query_string": "(mailLocalAddress={a})", "result_attribute": "mailRoutingAddress"},
    "masq": {"kind": "query", "profile": "corp", "query_type": "masquerade",
             "query_string": "(&(uid={u})(share=100%))", "result_attribute": "mail"},
    "groups": {"kind": "query", "profile": "corp", "query_type": "group",
               "query_string": "(member={a})", "result_attribute": "mail"},
}  # fmt: skip
USES = [{"kind": "accept", "query": "valid"}, {"kind": "routing", "query": "route"},
        {"kind": "masquerade", "query": "masq"}, {"kind": "group", "query": "groups"}]  # fmt: skip
ALL_OF_IT = {
    "smtproutes": ROUTES, "destconfig": DEST, "smtpauthconfig": AUTH, "ldapconfig": LDAP,
    "interfaceconfig": DATA, "listenerconfig": {"In": {**LISTENER, "ldap_queries": USES}},
}  # fmt: skip
needs_ldap = pytest.mark.skipif(not HAS_LDAP, reason="Postfix has no ldap: tables "
                                "(.ci/run installs postfix-ldap)")  # fmt: skip


def render(values: dict[str, Any], options: dict[str, Any] | None = None) -> Any:
    return postfix.render(values, "ny.example.com", options or {})


def test_outgoing_authentication_is_a_private_map_by_next_hop() -> None:
    out = render({"smtproutes": ROUTES, "smtpauthconfig": AUTH})
    assert out.files["sasl_passwd"] == HEADER + (
        "[ipv6:2001:db8::1]:25 gw@example.org:s3cret #$x:y %z\n"
        "[relay.example.net]:587 gw@example.org:s3cret #$x:y %z\n"
    )
    assert out.maps["sasl_passwd"] == 2 and out.private == {"sasl_passwd"}
    assert out.files["main.cf"].endswith(
        "smtp_tls_policy_maps = hash:$config_directory/tls_policy\n"
        "smtp_sasl_auth_enable = yes\n"
        "smtp_sasl_password_maps = hash:$config_directory/sasl_passwd\n"
        "smtp_sasl_security_options = noanonymous, noplaintext\n"
        "smtp_sasl_tls_security_options = noanonymous\n"
    )
    plain = render({"smtproutes": {"example.net": ROUTES["example.net"]}, "smtpauthconfig": AUTH})
    assert plain.files["sasl_passwd"] == HEADER and plain.maps["sasl_passwd"] == 0
    assert "smtp_sasl" not in plain.files["main.cf"]


@pytest.mark.parametrize(
    ("routes", "error"),
    [
        ({"example.org": {**ROUTES["example.net"], "smtp_auth_profile": "in"}},
         "smtproutes example.org: smtp_auth_profile 'in' is not an 'outgoing' smtpauthconfig "
         "profile here"),
        ({"example.org": {**ROUTES["example.net"], "smtp_auth_profile": "gone"}},
         "smtproutes example.org: smtp_auth_profile 'gone' is not an 'outgoing'"),
        ({"a.example": {**ROUTES["example.net"], "smtp_auth_profile": "out"},
          "b.example": {**ROUTES["example.net"], "smtp_auth_profile": "other"}},
         r"smtproutes b.example: \[relay.example.net\]:587 is also a destination of "
         "a.example with other credentials"),
    ],
)  # fmt: skip
def test_credentials_postfix_cannot_use_are_errors(routes: dict[str, Any], error: str) -> None:
    auth = {**AUTH, "other": {**AUTH["out"], "username": "someone-else"}}
    with pytest.raises(RenderError, match=error) as caught:
        render({"smtproutes": routes, "smtpauthconfig": auth})
    assert "s3cret" not in str(caught.value)


def test_tls_policy_of_a_routed_domain_is_its_next_hops_strictest_wins() -> None:
    out = render({"smtproutes": ROUTES, "destconfig": DEST, "smtpauthconfig": AUTH})
    assert out.files["tls_policy"] == HEADER + (
        "a.example.com none\n"
        "example.net may\n"
        "example.org encrypt\n"
        "gmail.com may\n"
        "[10.0.0.1]:25 may\n"  # gmail.com, through ALL
        "[ipv6:2001:db8::1]:25 encrypt\n"
        "[mx.example.com]:25 none\n"  # a.example.com, through .example.com
        "[relay.example.net]:587 encrypt\n"  # example.org (encrypt) beats example.net (may)
    )


def test_per_domain_limits_are_transports_of_their_own() -> None:
    unrouted = {**DEFAULT, "max_concurrent_connections": 10}
    out = render({"smtproutes": ROUTES, "smtpauthconfig": AUTH,
                  "destconfig": {**DEST, "unrouted.example": unrouted}})  # fmt: skip
    assert out.files["transport"] == HEADER + (
        ".example.com smtp:[mx.example.com]:25\n"
        "* smtp:[10.0.0.1]:25\n"
        "a.example.com dest_c500_m5:[mx.example.com]:25\n"
        "example.net smtp:[relay.example.net]:587\n"
        "example.org dest_c10_m50:[relay.example.net]:587, [ipv6:2001:db8::1]:25\n"
        "gmail.com dest_c10_m50:[10.0.0.1]:25\n"
        "unrouted.example dest_c10_m50:[10.0.0.1]:25\n"
    )
    assert out.files["master.cf"].endswith(
        "postlogd\ndest_c10_m50 unix - - n - - smtp\ndest_c500_m5 unix - - n - - smtp\n"
    )
    assert (
        "default_destination_concurrency_limit = 500\n"
        "default_destination_recipient_limit = 50\n"
        "dest_c10_m50_destination_concurrency_limit = 10\n"
        "dest_c10_m50_destination_recipient_limit = 50\n"
        "dest_c500_m5_destination_concurrency_limit = 500\n"
        "dest_c500_m5_destination_recipient_limit = 5\n"
    ) in out.files["main.cf"]
    alone = render({"destconfig": {"Default": DEFAULT, "x.example": DEST["example.org"]}})
    assert alone.files["transport"] == HEADER + "x.example dest_c10_m50:\n"  # to its MX


def test_ldap_tables_and_how_a_listener_uses_them() -> None:
    out = render(ALL_OF_IT)
    assert out.files["ldap_valid.cf"] == HEADER + (
        "server_host = ldap://ldap.example.com:389\n"
        "version = 3\n"
        "search_base = dc=example,dc=com\n"
        "query_filter = (|(mail=%s)(&(uid=%u)(domain=%d)))\n"
        "result_attribute = mail\n"
        "start_tls = yes\n"
        "tls_require_cert = yes\n"
        "bind = no\n"
    )
    assert out.files["ldap_masq.cf"] == HEADER + (
        "server_host = ldaps://ldap1.example.com:636 ldaps://[2001:db8::5]:636\n"
        "version = 3\n"
        "search_base = ou=100%%,dc=example,dc=com\n"
        "query_filter = (&(uid=%u)(share=100%%))\n"
        "result_attribute = mail\n"
        "tls_require_cert = yes\n"
        "bind = yes\n"
        "bind_dn = cn=postfix,dc=example,dc=com\n"
        "bind_pw = p%w $x #y\n"
    )
    assert "result_attribute = mailRoutingAddress\n" in out.files["ldap_route.cf"]
    assert "ldap_groups.cf" not in out.files  # a group query has no Postfix form
    assert out.private == {"sasl_passwd", "ldap_masq.cf", "ldap_route.cf"}  # bind passwords
    assert not any(name.startswith("ldap_") for name in out.maps)  # nothing for postmap
    assert out.files["master.cf"].endswith(
        "permit_mynetworks,reject_unauth_destination }\n"
        "  -o relay_recipient_maps=ldap:$config_directory/ldap_valid.cf\n"
        "  -o cleanup_service_name=cleanup_In\n"
        "cleanup_In unix n - n - 0 cleanup\n"
        "  -o virtual_alias_maps=ldap:$config_directory/ldap_route.cf\n"
        "  -o sender_canonical_maps=ldap:$config_directory/ldap_masq.cf\n"
    )
    accept_only = render({**ALL_OF_IT, "listenerconfig": {"In": {**LISTENER, "ldap_queries": [
        {"kind": "accept", "query": "valid"}]}}})  # fmt: skip
    assert accept_only.files["master.cf"].endswith(
        "  -o relay_recipient_maps=ldap:$config_directory/ldap_valid.cf\n"
    )
    assert accept_only.private == {"sasl_passwd"}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"masq": {**LDAP["masq"], "query_string": "(uid={g})"}},
         r"ldapconfig masq: query_string has \{g\}; Postfix can say \{a\}, \{u\} and \{d\} only"),
        ({"masq": {**LDAP["masq"], "query_string": "(uid=admin)"}},
         "ldapconfig masq: query_string names no part of the address"),
        ({"masq": {**LDAP["masq"], "query_type": "routing"}},
         "listener In: LDAP query masq is a 'routing' query, not 'masquerade'"),
        ({"masq": None}, "listener In: no LDAP query 'masq' here"),
        ({"corp": None}, "ldapconfig masq: no LDAP profile 'corp' here"),
        ({"corp": {**LDAP["corp"], "base_dn": "dc=x\nbind_dn = cn=evil"}},
         "ldapconfig masq: search_base would hold a control character"),
    ],
)  # fmt: skip
def test_ldap_settings_postfix_cannot_say_are_errors(change: dict[str, Any], error: str) -> None:
    ldap = {k: v for k, v in {**LDAP, **change}.items() if v is not None}
    with pytest.raises(RenderError, match=error):
        render({**ALL_OF_IT, "ldapconfig": ldap})


def test_a_listener_name_postfix_cannot_take_as_a_service_is_an_error() -> None:
    listeners = {"In/1": {**LISTENER, "ldap_queries": [{"kind": "routing", "query": "route"}]}}
    with pytest.raises(RenderError, match="listener In/1: Postfix needs a name"):
        render({**ALL_OF_IT, "listenerconfig": listeners})


# -- the real Postfix --------------------------------------------------------------------


def options(tmp_path: Path) -> dict[str, Any]:
    return {"main_cf": {"queue_directory": str(tmp_path / "queue"),
                        "data_directory": str(tmp_path / "data")}}  # fmt: skip


def postfix_says(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip()


@needs_postfix
@needs_ldap
def test_real_postfix_takes_credentials_tls_limits_and_ldap(tmp_path: Path) -> None:
    rendered = render(ALL_OF_IT, options(tmp_path))
    done = checked(tmp_path / "pf", rendered)
    assert done.returncode == 0, done.stderr
    staging = next((tmp_path / "pf").glob("staging-*"))
    c = ["-c", str(staging)]
    for hop in ("[relay.example.net]:587", "[IPV6:2001:DB8::1]:25"):  # (keys fold case)
        got = postfix_says("postmap", *c, "-q", hop, f"hash:{staging}/sasl_passwd")
        assert got == "gw@example.org:s3cret #$x:y %z"
    assert postfix_says("postmap", *c, "-q", "[relay.example.net]:587",
                        f"hash:{staging}/tls_policy") == "encrypt"  # fmt: skip
    # Postfix gives the built map the mode of its source: 0600 stays 0600 (umask 022).
    assert (staging / "sasl_passwd.db").stat().st_mode & 0o777 == 0o600
    assert (staging / "transport.db").stat().st_mode & 0o777 == 0o644
    limits = ("dest_c10_m50_destination_concurrency_limit",
              "dest_c500_m5_destination_recipient_limit")  # fmt: skip
    assert postfix_says("postconf", *c, "-h", *limits).split() == ["10", "5"]
    services = postfix_says("postconf", *c, "-P")
    assert "127.0.0.5:2525/inet/relay_recipient_maps = ldap:$config_directory/ldap_valid.cf" in (
        services
    )
    assert "cleanup_In/unix/virtual_alias_maps = ldap:$config_directory/ldap_route.cf" in services


@needs_postfix
@needs_ldap
def test_real_postfix_reads_the_ldap_table_as_written(tmp_path: Path) -> None:
    """No LDAP server: Postfix reads the settings, says them (``-v``), and fails to
    connect (fast: nothing listens on port 1)."""
    rendered = render(ALL_OF_IT, options(tmp_path))
    servers = "ldaps://ldap1.example.com:636 ldaps://[2001:db8::5]:636"
    rendered.files["ldap_masq.cf"] = rendered.files["ldap_masq.cf"].replace(
        servers, "ldap://127.0.0.1:1"
    )
    assert checked(tmp_path / "pf", rendered).returncode == 0
    staging = next((tmp_path / "pf").glob("staging-*"))
    done = subprocess.run(["postmap", "-v", "-c", str(staging), "-q", "bob@example.org",
                           f"ldap:{staging}/ldap_masq.cf"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    read = dict(line.split(": ", 3)[-1].split(" = ", 1) for line in done.stderr.splitlines()
                if ": cfg_get_" in line and " = " in line)  # fmt: skip
    assert read["search_base"] == "ou=100%%,dc=example,dc=com"  # %% is Postfix's literal %
    assert read["query_filter"] == "(&(uid=%u)(share=100%%))"
    assert read["bind_pw"] == "p%w $x #y"  # never expanded
    assert read["result_attribute"] == "mail"
    assert done.returncode != 0 and "Can't contact LDAP server" in done.stderr


@needs_postfix
def test_postfix_check_refuses_a_table_type_postfix_lacks(tmp_path: Path) -> None:
    rendered = render({**ALL_OF_IT, "listenerconfig": {"In": {**LISTENER, "ldap_queries": [
        {"kind": "accept", "query": "valid"}]}}}, options(tmp_path))  # fmt: skip
    rendered.files["master.cf"] = rendered.files["master.cf"].replace("=ldap:", "=nosuch:")
    done = checked(tmp_path / "pf", rendered)
    assert done.returncode == 1
    assert "this Postfix has no nosuch: tables (postconf -m)" in done.stderr, done.stderr
