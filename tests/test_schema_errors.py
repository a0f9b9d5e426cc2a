"""Readable errors: exactly the lines a bad value, row name or feature name gives."""

from __future__ import annotations

from typing import Any

import pytest

from clusterd.schema import CATALOGUE, InvalidSetting
from clusterd.schema.feature import UnknownFeature

# One invalid value per feature and exactly the lines it must give.
INVALID: list[tuple[str, str | None, dict[str, Any], list[str]]] = [
    (
        "cluster",
        None,
        {"name": "-x"},
        ["cluster field 'name': not a name (letters, digits, '_', '.', '-'): '-x'"],
    ),
    (
        "groups",
        "g",
        {"colour": "red"},
        ["groups row 'g' field 'colour': Extra inputs are not permitted"],
    ),
    (
        "machines",
        "mx1.example.com",
        {"serial": "S1", "transport": "ccs"},
        ["machines row 'mx1.example.com': transport 'ccs' needs a ccs_port"],
    ),
    (
        "placement",
        "mx1.example.com",
        {"group": "-g"},
        [
            "placement row 'mx1.example.com' field 'group': not a name (letters, digits, '_', '.', "
            "'-'): '-g'"
        ],
    ),
    (
        "detached",
        "mx1.example.com",
        {"disconnected": "perhaps"},
        [
            "detached row 'mx1.example.com' field 'disconnected': Input should be a valid boolean, "
            "unable to interpret input"
        ],
    ),
    (
        "removed",
        "mx1.example.com",
        {"machine_key": "ssh-ed25519 AAAA"},
        ["removed row 'mx1.example.com' field 'serial': Field required"],
    ),
    (
        "prepjoin",
        "mx2.example.com",
        {"serial": "S2", "machine_key": "not a key"},
        [
            "prepjoin row 'mx2.example.com' field 'machine_key': not an OpenSSH public key "
            "line ('ssh-ed25519 AAAA... comment')"
        ],
    ),
    (
        "confirm",
        "SER-1:3",
        {"deadline": 1.0, "minutes": 0, "user": "admin", "hlc": 1, "writes": [], "before": []},
        ["confirm row 'SER-1:3' field 'minutes': Input should be greater than or equal to 1"],
    ),
    (
        "dnsconfig",
        None,
        {"mode": "local"},
        ["dnsconfig: mode 'local' needs at least one DNS server"],
    ),
    (
        "smtproutes",
        "ALL",
        {"destinations": []},
        [
            "smtproutes row 'ALL' field 'destinations': "
            "List should have at least 1 item after validation, not 0"
        ],
    ),
    (
        "listenerconfig",
        "In",
        {"interface": "Data1", "port": 70000, "rat": []},
        ["listenerconfig row 'In' field 'port': Input should be less than or equal to 65535"],
    ),
    (
        "destconfig",
        "Default",
        {"tls": "always"},
        ["destconfig row 'Default' field 'tls': Input should be 'none', 'preferred' or 'required'"],
    ),
    (
        "bounceconfig",
        "B",
        {"initial_retry_seconds": 7200, "max_retry_seconds": 3600},
        [
            "bounceconfig row 'B': "
            "initial_retry_seconds (7200) must not exceed max_retry_seconds (3600)"
        ],
    ),
    (
        "textconfig",
        "t",
        {"type": "bounce", "encoding": "us-ascii", "text": "déjà"},
        ["textconfig row 't': the text cannot be encoded as us-ascii"],
    ),
    (
        "ldapconfig",
        "q",
        {"kind": "query", "profile": "corp"},
        [
            "ldapconfig row 'q' field 'query_type': Field required",
            "ldapconfig row 'q' field 'query_string': Field required",
        ],
    ),
    (
        "smtpauthconfig",
        "a",
        {"type": "ldap"},
        ["smtpauthconfig row 'a': an 'ldap' profile needs an ldap_query"],
    ),
    (
        "ntpconfig",
        None,
        {"servers": ["ntp .example.com"]},
        ["ntpconfig field 'servers.0': not a host name or IP address: 'ntp .example.com'"],
    ),
    (
        "settz",
        None,
        {"timezone": "Mars/Olympus"},
        ["settz field 'timezone': unknown time zone 'Mars/Olympus'"],
    ),
    (
        "alertconfig",
        "ops@example.com",
        {"classes": ["all", "all"], "severities": ["critical"]},
        ["alertconfig row 'ops@example.com' field 'classes': 'all' is listed twice"],
    ),
    (
        "unsubscribe",
        "user@",
        {"comment": "x" * 201},
        ["unsubscribe row 'user@' field 'comment': String should have at most 200 characters"],
    ),
    (
        "userconfig",
        "bob",
        {"role": "admin", "passphrase_hash": "hunter22"},
        [
            "userconfig row 'bob' field 'passphrase_hash': "
            "passphrase must be stored as a hash; use passwd"
        ],
    ),
    (
        "sshconfig",
        None,
        {"mac_algorithms": []},
        [
            "sshconfig field 'mac_algorithms': "
            "List should have at least 1 item after validation, not 0"
        ],
    ),
    (
        "interfaceconfig",
        "Data1",
        {"address": "192.0.2.10", "prefix": 33, "hostname": "mx1.example.com"},
        ["interfaceconfig row 'Data1': prefix 33 is too long for 192.0.2.10 (at most 32)"],
    ),
    (
        "interfaceconfig",
        "Data1",
        {
            "address": "192.0.2.10",
            "prefix": 24,
            "hostname": "mx1.example.com",
            "ccs_enabled": True,
            "ccs_port": 2400,
        },
        [
            "interfaceconfig row 'Data1': the SSH and CCS ports are not interface settings: CCS "
            "is turned on or off with 'clusterconfig ccs on|off' on the machine (ccs_port and "
            "ssh_port in its clusterd.toml), and LISTDETAIL shows what members use"
        ],
    ),
    (
        "sethostname",
        None,
        {"hostname": "mx1"},
        ["sethostname field 'hostname': not a fully qualified host name: 'mx1'"],
    ),
    (
        "setgateway",
        None,
        {"ipv4": "2001:db8::1"},
        ["setgateway field 'ipv4': not an IPv4 address: '2001:db8::1'"],
    ),
    (
        "routeconfig",
        "r",
        {"destination": "10.0.0.0/8", "gateway": "2001:db8::1"},
        ["routeconfig row 'r': destination 10.0.0.0/8 is IPv4 but gateway 2001:db8::1 is IPv6"],
    ),
]


def validate(command: str, row: str | None, value: dict[str, Any]) -> dict[str, Any]:
    feature = CATALOGUE[command]
    if row is None:
        return feature.validate_record(value)
    return feature.validate_row(row, value)


def problems(command: str, row: str | None, value: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidSetting) as caught:
        validate(command, row, value)
    return caught.value.problems


def test_every_feature_has_an_invalid_example() -> None:
    assert {command for command, *_ in INVALID} == set(CATALOGUE.commands())


@pytest.mark.parametrize(
    ("command", "row", "value", "expected"), INVALID, ids=[example[0] for example in INVALID]
)
def test_invalid_examples(
    command: str, row: str | None, value: dict[str, Any], expected: list[str]
) -> None:
    assert problems(command, row, value) == expected


def test_unknown_feature() -> None:
    with pytest.raises(UnknownFeature) as caught:
        CATALOGUE["mailconfig"]
    assert caught.value.problems == ["unknown feature 'mailconfig'"]
    assert isinstance(caught.value, InvalidSetting)


def test_record_and_table_confusion() -> None:
    assert problems("dnsconfig", "x", {}) == ["dnsconfig: is a single record, it has no rows"]
    with pytest.raises(InvalidSetting) as caught:
        CATALOGUE["smtproutes"].validate_record({})
    assert caught.value.problems == ["smtproutes: is a table; edit its rows by name"]


def test_wrong_types() -> None:
    assert problems("listenerconfig", "In", {"interface": "Data1", "port": "smtp", "rat": 5}) == [
        "listenerconfig row 'In' field 'port': "
        "Input should be a valid integer, unable to parse string as an integer",
        "listenerconfig row 'In' field 'rat': Input should be a valid list",
    ]
    assert problems("bounceconfig", "B", {"hard_bounce_messages": "maybe"}) == [
        "bounceconfig row 'B' field 'hard_bounce_messages': Input should be a valid boolean, "
        "unable to interpret input"
    ]
    assert problems("dnsconfig", None, {"servers": [{"address": 7}]}) == [
        "dnsconfig field 'servers.0.address': Input should be a valid string"
    ]


def test_not_an_object() -> None:
    with pytest.raises(InvalidSetting):
        CATALOGUE["groups"].validate_row("g", ["a", "b"])  # type: ignore[arg-type]


def test_discriminated_union_locations() -> None:
    assert problems("ldapconfig", "p", {"kind": "profile", "hostnames": [], "base_dn": "x"}) == [
        "ldapconfig row 'p' field 'hostnames': List should have at least 1 item after "
        "validation, not 0"
    ]
    assert problems(
        "ldapconfig",
        "p",
        {"kind": "profile", "hostnames": ["ldap"], "base_dn": "dc=x", "auth": "password"},
    ) == ["ldapconfig row 'p': auth 'password' needs a bind_dn"]
    (line,) = problems("ldapconfig", "p", {"kind": "directory"})
    assert line.startswith("ldapconfig row 'p': Input tag 'directory'")


def test_outgoing_credentials_fit_a_postfix_table_and_are_secrets() -> None:
    def row(**fields: str) -> dict[str, Any]:
        return {"type": "outgoing", "username": "gw@example.org", "password": "x", **fields}

    assert problems("smtpauthconfig", "o", {"type": "outgoing", "username": "gw"}) == [
        "smtpauthconfig row 'o': an 'outgoing' profile needs a username and a password"
    ]
    bad_user = "smtpauthconfig row 'o' field 'username': a user name has no whitespace, ':' or "
    for user in ("g w", "g:w", "g\x07w", ""):
        (line,) = problems("smtpauthconfig", "o", row(username=user))
        assert line.startswith(bad_user) or "at least 1 character" in line, line
    assert problems("smtpauthconfig", "o", row(password="a\nb")) == [
        "smtpauthconfig row 'o' field 'password': a password has no newline or other control "
        "characters"
    ]
    for edge in (" x", "x "):
        assert problems("smtpauthconfig", "o", row(password=edge)) == [
            "smtpauthconfig row 'o' field 'password': a password does not start or end with "
            "whitespace"
        ]
    (line,) = problems("smtpauthconfig", "o", row(password="x" * 257))
    assert "at most 256 characters" in line
    kept = validate("smtpauthconfig", "o", row(password="pa ss:#%$é"))
    assert kept["password"] == "pa ss:#%$é"
    assert CATALOGUE["smtpauthconfig"].shown({"o": kept})["o"]["password"] == "set"
    profile = {"kind": "profile", "hostnames": ["ldap"], "base_dn": "dc=x", "auth": "password",
               "bind_dn": "cn=gw"}  # fmt: skip
    assert problems("ldapconfig", "p", profile) == [
        "ldapconfig row 'p': auth 'password' needs a bind_password"
    ]
    bound = validate("ldapconfig", "p", {**profile, "bind_password": "s3cret"})
    assert CATALOGUE["ldapconfig"].shown({"p": bound})["p"]["bind_password"] == "set"
    query = {"kind": "query", "profile": "p", "query_type": "routing", "query_string": "(a={a})"}
    assert "result_attribute" not in validate("ldapconfig", "q", query)  # (the renderer: mail)
    (line,) = problems("ldapconfig", "q", {**query, "result_attribute": "mail;x"})
    assert line.startswith("ldapconfig row 'q' field 'result_attribute': String should match")


def test_canonical_forms() -> None:
    route = validate("routeconfig", "r", {"destination": "10.1.2.3/8", "gateway": "10.0.0.1"})
    assert route == {"destination": "10.0.0.0/8", "gateway": "10.0.0.1"}
    dns = validate("dnsconfig", None, {"servers": [{"address": "2001:DB8:0::1"}]})
    assert dns["servers"] == [{"address": "2001:db8::1", "priority": 0}]


def test_listener_rules() -> None:
    listener: dict[str, Any] = {"interface": "Data1", "type": "public"}
    assert problems("listenerconfig", "In", listener) == [
        "listenerconfig row 'In': a public listener without RAT entries is an open relay; "
        "add at least one recipient to 'rat'"
    ]
    assert validate("listenerconfig", "Out", dict(listener, type="private"))["rat"] == []
    hat = [{"name": "A", "policy": "ACCEPT"}, {"name": "A", "policy": "REJECT"}]
    assert problems("listenerconfig", "Out", dict(listener, type="private", hat=hat)) == [
        "listenerconfig row 'Out': sender group 'A' is defined twice in 'hat'"
    ]


def test_settz() -> None:
    assert validate("settz", None, {"timezone": "Europe/Paris"}) == {"timezone": "Europe/Paris"}
    assert problems("settz", None, {"timezone": "Europe/Paris\n"}) == [
        "settz field 'timezone': unknown time zone 'Europe/Paris\\n'"
    ]


def test_text_size_is_in_bytes() -> None:
    text = "é" * (32 * 1024)
    assert validate("textconfig", "t", {"type": "bounce", "text": text})["encoding"] == "utf-8"
    assert problems("textconfig", "t", {"type": "bounce", "text": text + "é"}) == [
        "textconfig row 't': the text is 65538 bytes long; at most 65536 allowed"
    ]
