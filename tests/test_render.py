"""The built-in renderers: exact output for known configurations, and, for generated
ones, what the real Postfix says of the directory (``clusterd postfix-check``:
``postmap`` of every map, ``postconf -n``, ``postfix check``, no service twice)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from clusterd.services.generations import Generations
from clusterd.services.render import RenderError, chrony, postfix, postfix_routes, resolv, timezone
from clusterd.services.render.template import render_templates

HEADER = ("# Written by clusterd from the effective configuration of ny.example.com; edits "
          "here are\n# replaced at the next change (docs/services.md).\n")  # fmt: skip
ROUTE = {"destinations": [{"host": "127.0.0.1", "port": 2600, "priority": 0}]}
DATA = {"Data": {"address": "127.0.0.5", "prefix": 8, "hostname": "ny.example.com"}}
LISTENER = {"interface": "Data", "port": 2525, "type": "private", "hat": [], "rat": []}
needs_postfix = pytest.mark.skipif(
    shutil.which("postfix") is None, reason="Postfix is not installed (.ci/run installs it)"
)


def test_postfix_transport_lowest_priority_first_and_every_form() -> None:
    values = {"smtproutes": {
        "example.org": ROUTE,
        ".example.net": {"destinations": [
            {"host": "mx2.example.net", "port": 25, "priority": 5},
            {"host": "2001:db8::1", "port": 2525, "priority": 1}]},
        "ALL": {"destinations": [{"host": "relay.example.com", "port": 25, "priority": 0}]},
    }}  # fmt: skip
    out = postfix.render(values, "ny.example.com", {})
    assert out.files["transport"] == HEADER + (
        ".example.net smtp:[ipv6:2001:db8::1]:2525, [mx2.example.net]:25\n"
        "* smtp:[relay.example.com]:25\n"
        "example.org smtp:[127.0.0.1]:2600\n"
    )
    assert out.maps["transport"] == 3
    main = out.files["main.cf"]
    assert "relay_domains = .example.net, example.org\n" in main
    assert "transport_maps = hash:$config_directory/transport\n" in main


def test_postfix_main_cf_exactly() -> None:
    values = {
        "smtproutes": {"example.org": ROUTE},
        "listenerconfig": {"Incoming": {**LISTENER, "hat": [
            {"name": "Relay", "senders": ["10.0.0.0/8", "2001:db8::/32", ".example.com"],
             "policy": "RELAY"},
            {"name": "Block", "senders": ["192.0.2.0/24"], "policy": "REJECT"}]}},
        "interfaceconfig": DATA,
        "bounceconfig": {"Default": {"max_retries": 100, "max_queue_lifetime_seconds": 3600,
                                     "initial_retry_seconds": 60, "max_retry_seconds": 600}},
        "destconfig": {"Default": {"max_concurrent_connections": 20,
                                   "max_messages_per_connection": 10, "tls": "none"}},
    }  # fmt: skip
    out = postfix.render(values, "gw1.example.com", {"main_cf": {"queue_directory": "/q"}})
    header = HEADER.replace("ny.example.com", "gw1.example.com")
    assert out.files["main.cf"] == header + (
        "compatibility_level = 3.6\n"
        "myhostname = gw1.example.com\n"
        "mydestination = \n"
        "local_recipient_maps = \n"
        "alias_maps = \n"
        "alias_database = \n"
        "relay_domains = example.org\n"
        "transport_maps = hash:$config_directory/transport\n"
        "mynetworks = 127.0.0.0/8 [::1]/128 10.0.0.0/8 [2001:db8::]/32\n"
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
        "smtp_tls_policy_maps = hash:$config_directory/tls_policy\n"
        "maximal_queue_lifetime = 3600s\n"
        "bounce_queue_lifetime = 3600s\n"
        "minimal_backoff_time = 60s\n"
        "maximal_backoff_time = 600s\n"
        "default_destination_concurrency_limit = 20\n"
        "default_destination_recipient_limit = 10\n"
        "queue_directory = /q\n"
    )
    assert out.files["master.cf"].endswith(
        "127.0.0.5:2525 inet n - n - - smtpd\n"
        "  -o syslog_name=postfix/Incoming\n"
        "  -o { smtpd_recipient_restrictions = check_recipient_access hash:$config_directory/"
        "unsubscribe,check_recipient_access hash:$config_directory/rat_Incoming,"
        "permit_mynetworks,reject_unauth_destination }\n"
    )


def test_postfix_access_maps_from_rat_unsubscribe_and_tls_policy() -> None:
    values = {
        "listenerconfig": {"In": {**LISTENER, "type": "public", "rat": [
            {"recipient": "example.org", "action": "ACCEPT"},
            {"recipient": "@example.net", "action": "ACCEPT"},
            {"recipient": "boss@example.org", "action": "REJECT"},
            {"recipient": "example.net", "action": "REJECT"},  # (@example.net came first)
            {"recipient": "ALL", "action": "REJECT"}]}},
        "interfaceconfig": DATA,
        "unsubscribe": {"gone@example.org": {"comment": "x"}},
        "destconfig": {"secure.example": {"max_concurrent_connections": 5,
                                          "max_messages_per_connection": 5, "tls": "required"},
                       "maybe.example": {"max_concurrent_connections": 5,
                                         "max_messages_per_connection": 5, "tls": "preferred"}},
    }  # fmt: skip
    out = postfix.render(values, "ny.example.com", {})
    assert out.files["rat_In"] == HEADER + (
        "example.org OK\nexample.net OK\nboss@example.org REJECT\n"
    )
    assert out.files["master.cf"].endswith("permit_mynetworks,reject }\n")  # ALL: REJECT
    assert out.files["unsubscribe"] == HEADER + (
        "gone@example.org REJECT this address asked for no mail\n"
    )
    assert out.files["tls_policy"] == HEADER + "maybe.example may\nsecure.example encrypt\n"
    # (limits of their own, and no Default row: each domain is a transport entry)
    assert out.maps == {"transport": 2, "unsubscribe": 1, "tls_policy": 2, "sasl_passwd": 0,
                        "rat_In": 3}  # fmt: skip


def test_a_listener_on_an_interface_this_machine_lacks_is_an_error() -> None:
    with pytest.raises(RenderError, match="listener In: no interface 'Data' here"):
        postfix.render({"listenerconfig": {"In": LISTENER}}, "ny.example.com", {})


def test_resolv_chrony_and_timezone_exactly() -> None:
    dns = {"mode": "local", "timeout_seconds": 5, "alternate_domains": [],
           "servers": [{"address": "10.0.0.54", "priority": 2},
                       {"address": "10.0.0.53", "priority": 1}]}  # fmt: skip
    out = resolv.render({"dnsconfig": dns}, "ny.example.com", {})
    assert out.files == {"resolv.conf": "# Written by clusterd from the effective configuration "
                         "of ny.example.com.\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n"
                         "options timeout:5\n"}  # fmt: skip
    with pytest.raises(RenderError, match="root_resolver"):
        resolv.render({"dnsconfig": {**dns, "mode": "internet-root"}}, "ny.example.com", {})
    ntp = {"servers": ["0.pool.example", "10.0.0.1"], "source_interface": "Data"}
    out = chrony.render({"ntpconfig": ntp, "interfaceconfig": DATA}, "ny.example.com", {})
    assert out.files["chrony.conf"] == (
        "# Written by clusterd from the effective configuration of ny.example.com.\n"
        "server 0.pool.example iburst\nserver 10.0.0.1 iburst\nbindacqaddress 127.0.0.5\n"
        "driftfile /var/lib/chrony/chrony.drift\nmakestep 1.0 3\nrtcsync\n"
    )
    out = timezone.render({"settz": {"timezone": "Europe/Paris"}}, "ny.example.com", {})
    assert out.files == {"timezone": "Europe/Paris\n"}
    assert out.links == {"localtime": "/usr/share/zoneinfo/Europe/Paris"}


def test_templates_refuse_a_missing_key_and_stay_in_the_sandbox(tmp_path: Path) -> None:
    good = tmp_path / "good.j2"
    good.write_text("tz={{ values.settz.timezone }} on {{ hostname }}\n")
    out = render_templates({"tz.conf": good}, {"settz": {"timezone": "UTC"}}, "ny", {})
    assert out.files == {"tz.conf": "tz=UTC on ny\n"}
    missing = tmp_path / "missing.j2"
    missing.write_text("{{ values.settz.zone }}\n")
    with pytest.raises(RenderError, match=r"missing\.j2.*has no attribute 'zone'"):
        render_templates({"x": missing}, {"settz": {"timezone": "UTC"}}, "ny", {})
    escape = tmp_path / "escape.j2"
    escape.write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(RenderError, match="unsafe"):
        render_templates({"x": escape}, {}, "ny", {})


# -- the real Postfix --------------------------------------------------------------------

domains = st.from_regex(r"[a-z]{1,8}\.(example|test)", fullmatch=True)
hosts = st.one_of(st.from_regex(r"mx[0-9]\.[a-z]{1,6}\.example", fullmatch=True),
                  st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))  # fmt: skip
destinations = st.lists(
    st.fixed_dictionaries({"host": hosts, "port": st.integers(1, 65535),
                           "priority": st.integers(0, 100)}), min_size=1, max_size=3)  # fmt: skip
routes = st.dictionaries(
    st.one_of(domains, domains.map(lambda d: "." + d), st.just("ALL")),
    st.fixed_dictionaries({"destinations": destinations,
                           "smtp_auth_profile": st.sampled_from([None, "out"])}),
    max_size=6)  # fmt: skip
dest = st.dictionaries(domains, st.fixed_dictionaries({
    "max_concurrent_connections": st.sampled_from([10, 500]),
    "max_messages_per_connection": st.sampled_from([5, 50]),
    "tls": st.sampled_from(["none", "preferred", "required"])}), max_size=4)  # fmt: skip
DEFAULT_DEST = {"max_concurrent_connections": 500, "max_messages_per_connection": 50,
                "tls": "none"}  # fmt: skip
AUTH = {"out": {"type": "outgoing", "username": "gw@example.org", "password": "p a:ss #%$"}}
LDAP = {
    "corp": {"kind": "profile", "hostnames": ["ldap.example.com"], "port": 389,
             "base_dn": "dc=example,dc=com", "auth": "password", "bind_dn": "cn=gw",
             "bind_password": "100% $ecret", "connection_security": "starttls"},
    **{kind: {"kind": "query", "profile": "corp", "query_type": kind,
              "query_string": "(mail={a})", "result_attribute": "mail"}
       for kind in ("accept", "routing", "masquerade")},
}  # fmt: skip


def _map_types() -> set[str]:
    """The types of table this machine's Postfix has (``ldap`` with postfix-ldap)."""
    if shutil.which("postconf") is None:
        return set()
    with tempfile.TemporaryDirectory() as empty:
        (Path(empty) / "main.cf").touch()
        done = subprocess.run(["postconf", "-c", empty, "-m"], capture_output=True, text=True)
    return set(done.stdout.split())


HAS_LDAP = "ldap" in _map_types()
queries = (st.sets(st.sampled_from(["accept", "routing", "masquerade"])).map(
    lambda kinds: [{"kind": k, "query": k} for k in sorted(kinds)])
    if HAS_LDAP else st.just([]))  # fmt: skip
listeners = st.dictionaries(
    st.from_regex(r"L[a-z]{1,5}", fullmatch=True),
    st.fixed_dictionaries({"interface": st.just("Data"), "port": st.integers(1025, 65535),
                           "type": st.just("private"), "hat": st.just([]),
                           "ldap_queries": queries,
                           "rat": st.lists(st.fixed_dictionaries({
                               "recipient": domains, "action": st.sampled_from(["ACCEPT",
                                                                                "REJECT"])}),
                               max_size=3)}), max_size=3)  # fmt: skip


def checked(directory: Path, rendered: Any) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for needed in ("queue", "data"):  # (postfix check wants them; it logs why to syslog)
        (directory.parent / needed).mkdir(exist_ok=True)
    staging = Generations(directory, directory / "live", 5).stage(
        rendered, 0o644, {"maps": rendered.maps}
    )
    return subprocess.run([sys.executable, "-m", "clusterd", "postfix-check", str(staging)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@needs_postfix
@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow,
                                 HealthCheck.function_scoped_fixture])  # fmt: skip
@given(routes=routes, listeners=listeners, dest=dest)
def test_every_rendered_postfix_directory_passes_postfix(
    tmp_path: Path, routes: dict[str, Any], listeners: dict[str, Any], dest: dict[str, Any]
) -> None:
    ports = [listener["port"] for listener in listeners.values()]
    values = {"smtproutes": routes, "listenerconfig": listeners, "interfaceconfig": DATA,
              "destconfig": {"Default": DEFAULT_DEST, **dest}, "smtpauthconfig": AUTH,
              "ldapconfig": LDAP}  # fmt: skip
    rendered = postfix.render(
        values,
        "ny.example.com",
        {
            "main_cf": {
                "queue_directory": str(tmp_path / "queue"),
                "data_directory": str(tmp_path / "data"),
            }
        },
    )
    done = checked(tmp_path / "pf", rendered)
    if len(set(ports)) < len(ports):  # two listeners on one address and port
        assert done.returncode == 1 and "defined twice" in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    staging = next((tmp_path / "pf").glob("staging-*"))
    for name in rendered.maps:
        assert (staging / f"{name}.db").exists()
    assert (staging / "sasl_passwd.db").stat().st_mode & 0o777 == 0o600
    asked = ["postconf", "-c", str(staging), "-h", "relay_domains", "transport_maps"]
    conf = subprocess.run(asked, capture_output=True, text=True, check=True)
    assert conf.stdout.splitlines() == [
        ", ".join(d for d in sorted(routes) if d != "ALL"),
        "hash:$config_directory/transport",
    ]
    own = postfix_routes.limited({"Default": DEFAULT_DEST, **dest})
    for domain, route in routes.items():
        key = "*" if domain == "ALL" else domain
        found = _lookup(staging, "transport", key)
        first = min(route["destinations"], key=lambda d: d["priority"])
        transport = postfix_routes.transport_name(own[key]) if key in own else "smtp"
        assert found.startswith(f"{transport}:["), (key, found)
        assert f":{first['port']}" in found.split(",")[0]
        for hop in postfix_routes.hops(domain, route) if route["smtp_auth_profile"] else []:
            assert _lookup(staging, "sasl_passwd", hop) == "gw@example.org:p a:ss #%$"
    strictness = postfix_routes.STRICTNESS
    for domain, row in dest.items():  # a routed domain's policy is its next hops'
        found = postfix_routes.route_for(domain, routes)
        for hop in postfix_routes.hops(*found) if found else []:
            policy = _lookup(staging, "tls_policy", hop)
            assert strictness.index(policy) >= strictness.index(postfix_routes.TLS[row["tls"]])


def _lookup(staging: Path, table: str, key: str) -> str:
    query = ["postmap", "-c", str(staging), "-q", key, f"hash:{staging}/{table}"]
    return subprocess.run(query, capture_output=True, text=True).stdout.strip()


@needs_postfix
def test_postfix_check_names_what_postfix_refuses(tmp_path: Path) -> None:
    rendered = postfix.render({"smtproutes": {"example.org": ROUTE}}, "ny.example.com", {
        "main_cf": {"queue_directory": str(tmp_path / "queue"),
                    "data_directory": str(tmp_path / "data")}})  # fmt: skip
    rendered.files["main.cf"] += "smtpd_banner_typo = $myhostname ESMTP\n"
    done = checked(tmp_path / "pf", rendered)
    assert done.returncode == 1
    assert "unused parameter: smtpd_banner_typo" in done.stderr, done.stderr
    rendered.files["transport"] += "a-key-without-a-value\n"
    done = checked(tmp_path / "pf", rendered)
    assert "expected format: key whitespace value" in done.stderr, done.stderr
