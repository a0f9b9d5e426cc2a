"""The feature catalogue: factory values, references, row names and readable errors."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from clusterd.schema import CATALOGUE, Feature, InvalidSetting, Kind, Level, Reference
from clusterd.schema.access import hash_passphrase
from clusterd.schema.feature import ALL_LEVELS, CLUSTER_ONLY, MACHINE_ONLY

TABLES = [f for f in CATALOGUE if f.kind is Kind.TABLE]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx4mpl3 admin@example.com"

# One valid value per feature: (row name, value) for a table, (None, value) for a record.
VALID: dict[str, tuple[str | None, dict[str, Any]]] = {
    "cluster": (None, {"name": "mail-cluster"}),
    "groups": ("Europe", {"name": "Europe"}),
    "machines": ("mx1.example.com", {"serial": "C100V-0001", "address": "192.0.2.10"}),
    "placement": ("mx1.example.com", {"group": "Europe"}),
    "detached": ("mx1.example.com", {"disconnected": True}),
    "removed": ("mx3.example.com", {"serial": "C100V-0003", "machine_key": KEY}),
    "prepjoin": ("mx2.example.com", {"serial": "C100V-0002", "machine_key": KEY}),
    "confirm": (
        "C100V-0002:7",
        {"deadline": 1.0, "minutes": 10, "user": "admin", "hlc": 1, "writes": [], "before": []},
    ),
    "dnsconfig": (None, {"mode": "local", "servers": [{"address": "10.0.0.53", "priority": 1}]}),
    "smtproutes": (".example.com", {"destinations": [{"host": "mail.example.com"}]}),
    "listenerconfig": (
        "InboundMail",
        {
            "interface": "Data1",
            "bounce_profile": "Default",
            "disclaimer_below": "legal",
            "ldap_queries": [{"kind": "accept", "query": "accept-q"}],
            "hat": [{"name": "RELAYLIST", "senders": ["10.0.0.0/8"], "policy": "RELAY"}],
            "rat": [{"recipient": "example.com", "action": "ACCEPT"}],
        },
    ),
    "destconfig": ("example.com", {"max_concurrent_connections": 20, "tls": "required"}),
    "bounceconfig": ("Slow", {"initial_retry_seconds": 600, "max_retry_seconds": 7200}),
    "textconfig": ("legal", {"type": "disclaimer", "text": "Confidential."}),
    "ldapconfig": (
        "corp",
        {"kind": "profile", "hostnames": ["ldap.example.com"], "base_dn": "dc=example,dc=com"},
    ),
    "smtpauthconfig": ("fwd", {"type": "forward", "forward_servers": [{"host": "10.0.0.25"}]}),
    "ntpconfig": (None, {"servers": ["ntp1.example.com", "10.0.0.123"]}),
    "settz": (None, {"timezone": "Europe/Paris"}),
    "alertconfig": ("ops@example.com", {"classes": ["all"], "severities": ["critical"]}),
    "unsubscribe": ("@.example.com", {"comment": "asked by legal"}),
    "userconfig": ("alice", {"role": "operator", "passphrase_hash": hash_passphrase("x" * 8, n=4)}),
    "sshconfig": (None, {"admin_keys": [{"user": "alice", "key": KEY}]}),
    "interfaceconfig": (
        "Data1",
        {"address": "192.0.2.10", "prefix": 24, "hostname": "mx1.example.com"},
    ),
    "sethostname": (None, {"hostname": "mx1.example.com"}),
    "setgateway": (None, {"ipv4": "192.0.2.1"}),
    "routeconfig": ("lab", {"destination": "198.51.100.0/24", "gateway": "192.0.2.254"}),
}


def validate(command: str, row: str | None, value: dict[str, Any]) -> dict[str, Any]:
    feature = CATALOGUE[command]
    if row is None:
        return feature.validate_record(value)
    return feature.validate_row(row, value)


def row_models(model: Any) -> list[type[BaseModel]]:
    """The row models of a feature's model (several for a discriminated union)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [model]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(model):
        found.extend(row_models(arg))
    return found


# --- the catalogue -----------------------------------------------------------------


def test_every_feature_has_examples() -> None:
    assert set(VALID) == set(CATALOGUE.commands())


def test_catalogue_order_and_levels() -> None:
    commands = CATALOGUE.commands()
    assert commands[:8] == [
        "cluster", "groups", "machines", "placement", "detached", "removed", "prepjoin",
        "confirm",
    ]  # fmt: skip
    assert commands[8:10] == ["dnsconfig", "smtproutes"]
    assert commands[-4:] == ["interfaceconfig", "sethostname", "setgateway", "routeconfig"]
    for feature in CATALOGUE:
        if feature.internal:
            assert feature.levels == CLUSTER_ONLY
        elif feature.network:
            assert feature.levels == MACHINE_ONLY
    assert {f.command for f in CATALOGUE.select(lambda f: f.levels == ALL_LEVELS)} >= {
        "dnsconfig",
        "unsubscribe",
    }
    assert Level.GROUP in CATALOGUE["listenerconfig"].levels


@pytest.mark.parametrize(
    "feature", [f for f in CATALOGUE if f.command != "cluster"], ids=lambda f: f.command
)
def test_factory_value_validates(feature: Feature) -> None:
    value = feature.factory_value()
    assert isinstance(value, dict)
    if feature.is_table:
        for name in value:
            assert feature.row_name.fullmatch(name), name


def test_cluster_has_no_factory_value() -> None:
    assert CATALOGUE["cluster"].default is None
    with pytest.raises(InvalidSetting, match="name"):
        CATALOGUE["cluster"].factory_value()


def test_bounce_and_destination_defaults() -> None:
    assert set(CATALOGUE["bounceconfig"].factory_value()) == {"Default"}
    assert set(CATALOGUE["destconfig"].factory_value()) == {"Default"}
    assert CATALOGUE["settz"].factory_value() == {"timezone": "UTC"}
    assert CATALOGUE["userconfig"].factory_value() == {}


@pytest.mark.parametrize("command", list(VALID))
def test_valid_examples(command: str) -> None:
    row, value = VALID[command]
    canonical = validate(command, row, value)
    # Canonical JSON is a fixed point.
    assert validate(command, row, canonical) == canonical


# --- references --------------------------------------------------------------------


def _field_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _field_models(arg)]


def _path_exists(models: list[type[BaseModel]], steps: list[str]) -> bool:
    for model in models:
        field = model.model_fields.get(steps[0])
        if field is None:
            continue
        if len(steps) == 1 or _path_exists(_field_models(field.annotation), steps[1:]):
            return True
    return False


REFERENCES = [(f, ref) for f in CATALOGUE for ref in f.references]


@pytest.mark.parametrize(("feature", "ref"), REFERENCES, ids=lambda x: getattr(x, "path", ""))
def test_reference_is_sound(feature: Feature, ref: Reference) -> None:
    assert _path_exists(row_models(feature.model), ref.path.split("."))
    assert ref.target in CATALOGUE
    target = CATALOGUE[ref.target]
    assert target.kind is Kind.TABLE
    if ref.where is not None:
        field, value = ref.where
        for model in row_models(target.model):
            assert field in model.model_fields, (model, field)
        assert any(value in str(m.model_fields[field].annotation) for m in row_models(target.model))


def test_declared_references() -> None:
    declared = {(f.command, r.path, r.target, r.where) for f, r in REFERENCES}
    assert declared == {
        ("listenerconfig", "interface", "interfaceconfig", None),
        ("listenerconfig", "bounce_profile", "bounceconfig", None),
        ("listenerconfig", "disclaimer_above", "textconfig", ("type", "disclaimer")),
        ("listenerconfig", "disclaimer_below", "textconfig", ("type", "disclaimer")),
        ("listenerconfig", "smtp_auth_profile", "smtpauthconfig", None),
        ("listenerconfig", "ldap_queries.query", "ldapconfig", ("kind", "query")),
        ("smtproutes", "smtp_auth_profile", "smtpauthconfig", ("type", "outgoing")),
        ("destconfig", "bounce_profile", "bounceconfig", None),
        ("ldapconfig", "profile", "ldapconfig", ("kind", "profile")),
        ("smtpauthconfig", "ldap_query", "ldapconfig", ("kind", "query")),
        ("ntpconfig", "source_interface", "interfaceconfig", None),
        ("placement", "group", "groups", None),
    }


def test_names_in_nested_lists() -> None:
    listener = CATALOGUE["listenerconfig"]
    row, value = VALID["listenerconfig"]
    assert row is not None
    value = dict(
        value,
        ldap_queries=[
            {"kind": "accept", "query": "accept-q"},
            {"kind": "routing", "query": "route-q"},
        ],
    )
    canonical = listener.validate_row(row, value)
    by_path = {ref.path: list(ref.names_in(canonical)) for ref in listener.references}
    assert by_path == {
        "interface": ["Data1"],
        "bounce_profile": ["Default"],
        "disclaimer_above": [],
        "disclaimer_below": ["legal"],
        "smtp_auth_profile": [],
        "ldap_queries.query": ["accept-q", "route-q"],
    }


# --- row names ---------------------------------------------------------------------


@pytest.mark.parametrize("feature", TABLES, ids=lambda f: f.command)
@pytest.mark.parametrize("name", ["", "#", "#x", "a b", " a", "a\n", "\n"])
def test_bad_row_names(feature: Feature, name: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        feature.validate_row(name, VALID[feature.command][1])
    assert caught.value.problems == [
        f"{feature.command} row {name!r}: bad row name, expected {feature.row_name_hint}"
    ]


@pytest.mark.parametrize("feature", TABLES, ids=lambda f: f.command)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(data=st.data())
def test_row_name_patterns_are_safe(feature: Feature, data: st.DataObject) -> None:
    # Names the pattern accepts (from the pattern itself), and near misses.
    name = data.draw(
        st.one_of(
            st.from_regex(feature.row_name, fullmatch=True),
            st.text(alphabet="aZ09_.-@# \n\t\u00e9", max_size=12),
        )
    )
    assume(feature.row_name.fullmatch(name))
    assert name and not name.startswith("#")
    assert not any(ch.isspace() for ch in name)
    feature.validate_row(name, VALID[feature.command][1])


@pytest.mark.parametrize(
    ("command", "good", "bad"),
    [
        ("smtproutes", ["ALL", "example.com", ".example.com"], ["all", "..example.com", "x"]),
        ("destconfig", ["Default", "example.com"], ["default", ".example.com"]),
        ("alertconfig", ["ops@example.com"], ["ops", "@example.com", "ops@example"]),
        (
            "unsubscribe",
            ["user@example.com", "user@", "@example.com", "@.example.com", "example.com"],
            ["@", "user", "user@@example.com", "@example", "a@b@c.com", "x" * 250 + ".com"],
        ),
        ("userconfig", ["alice", "_svc", "a.b-c"], ["Alice", "1abc", "a" * 33]),
        ("interfaceconfig", ["Data1", "eth0.100"], ["1eth", "a" * 33]),
        ("groups", ["Europe", "dc-1"], ["-x", "a" * 65]),
        ("machines", ["mx1.example.com"], ["mx1", "mx_1.example.com"]),
    ],
)
def test_row_name_patterns(command: str, good: list[str], bad: list[str]) -> None:
    feature = CATALOGUE[command]
    for name in good:
        assert feature.row_name.fullmatch(name), name
    for name in bad:
        assert not feature.row_name.fullmatch(name), name


# --- features as values ------------------------------------------------------------


def test_features_are_hashable() -> None:
    assert len(set(CATALOGUE)) == len(CATALOGUE)
    assert CATALOGUE["dnsconfig"] == CATALOGUE["dnsconfig"]
