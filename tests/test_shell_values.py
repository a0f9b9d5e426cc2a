"""Typing structured values in the shell (issue 17): comma lists, ``host[:port]``
shorthands, ``FIELD+=VALUE`` / ``FIELD-=VALUE``, JSON as before; help showing each
field's shape with an example; errors in the admin's words that change nothing.

In-process shells on the standalone newyork.example.com (``term``) or on newyork of
cluster americas (``ny``, see tests/conftest.py); one test goes through the real
OpenSSH client to a real daemon.  The words themselves are read by ``schema.words``
from the shapes ``schema.shapes`` derives from the models.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterd.dev.testbed import Machine, Testbed
from clusterd.schema import CATALOGUE, InvalidSetting
from clusterd.schema.shapes import example, fields, kind_field
from clusterd.schema.words import edited, value
from tests.shellhelp import Term
from tests.test_shell_ssh import ssh

PYDANTIC_WORDS = ("Input should", "valid dictionary", "instance of", "valid list", "Field required")


async def printed(t: Term, feature: str) -> Any:
    return json.loads(await t.ok(f"{feature} print"))


async def servers(t: Term) -> list[str]:
    return [s["address"] for s in (await printed(t, "dnsconfig"))["servers"]]


# -- the natural forms ------------------------------------------------------------------


async def test_a_comma_list_sets_a_list_of_models_by_their_obvious_key(term: Term) -> None:
    assert await term.ok("dnsconfig set servers=10.0.0.53,10.0.0.54") == ""
    assert (await printed(term, "dnsconfig"))["servers"] == [
        {"address": "10.0.0.53", "priority": 0},
        {"address": "10.0.0.54", "priority": 0},
    ]
    await term.ok("ntpconfig set servers=ntp1.example.com,10.0.0.123")  # a list of strings
    assert (await printed(term, "ntpconfig"))["servers"] == ["ntp1.example.com", "10.0.0.123"]


async def test_json_is_read_as_before_and_strings_in_it_through_the_shorthand(term: Term) -> None:
    await term.ok("""dnsconfig set 'servers=[{"address":"10.0.0.53","priority":5}]'""")
    assert (await printed(term, "dnsconfig"))["servers"] == [
        {"address": "10.0.0.53", "priority": 5}
    ]
    await term.ok("""dnsconfig set 'servers=["10.0.0.54", {"address":"10.0.0.55"}]'""")
    assert await servers(term) == ["10.0.0.54", "10.0.0.55"]
    await term.ok("dnsconfig set timeout_seconds=30")
    assert (await printed(term, "dnsconfig"))["timeout_seconds"] == 30


async def test_host_port_shorthand_with_ipv6_in_brackets(term: Term) -> None:
    line = "smtproutes new example.com destinations=mx1.example.com:2525,mx2.example.com,[::1]:53"
    await term.ok(line)
    row = (await printed(term, "smtproutes"))["example.com"]
    assert row["destinations"] == [
        {"host": "mx1.example.com", "port": 2525, "priority": 0},
        {"host": "mx2.example.com", "port": 25, "priority": 0},
        {"host": "::1", "port": 53, "priority": 0},
    ]
    await term.ok("smtproutes edit example.com destinations=2001:db8::25")  # bare: no port
    assert (await printed(term, "smtproutes"))["example.com"]["destinations"] == [
        {"host": "2001:db8::25", "port": 25, "priority": 0}
    ]
    await term.ok("dnsconfig set servers=[2001:db8::53]")  # no port field: the brackets go
    assert await servers(term) == ["2001:db8::53"]


def test_the_shorthand_as_the_issue_gives_it() -> None:
    routes = CATALOGUE["smtproutes"]
    given = [("destinations", "=", "mx1.example.com:25,mx2.example.com")]
    assert edited(routes, given, None, row="ALL") == {
        "destinations": [{"host": "mx1.example.com", "port": 25}, {"host": "mx2.example.com"}]
    }
    dns = edited(CATALOGUE["dnsconfig"], [("servers", "=", "10.0.0.53")], None)
    assert dns == {"servers": [{"address": "10.0.0.53"}]}


async def test_yes_no_choices_in_any_case_and_null(term: Term) -> None:
    await term.ok("bounceconfig new Fast hard_bounce_messages=no send_delay_warnings=YES")
    fast = (await printed(term, "bounceconfig"))["Fast"]
    assert (fast["hard_bounce_messages"], fast["send_delay_warnings"]) == (False, True)
    await term.ok("destconfig edit Default tls=Preferred max_recipients_per_hour=100")
    await term.ok("destconfig edit Default max_recipients_per_hour=null")
    default = (await printed(term, "destconfig"))["Default"]
    assert (default["tls"], default["max_recipients_per_hour"]) == ("preferred", None)


# -- += and -= --------------------------------------------------------------------------


async def test_add_to_and_remove_from_a_list(term: Term) -> None:
    await term.ok("dnsconfig set servers=10.0.0.53")
    await term.ok("dnsconfig set servers+=10.0.0.54,10.0.0.55")
    assert await servers(term) == ["10.0.0.53", "10.0.0.54", "10.0.0.55"]
    await term.ok("dnsconfig set servers-=10.0.0.53 servers-=10.0.0.55")
    assert await servers(term) == ["10.0.0.54"]
    await term.ok("ntpconfig set servers+=time.example.com")  # to the factory default
    assert (await printed(term, "ntpconfig"))["servers"] == ["pool.ntp.org", "time.example.com"]
    await term.ok("smtproutes new example.com destinations=mx1.example.com")
    await term.ok("smtproutes edit example.com destinations+=mx2.example.com:587")
    await term.ok("smtproutes edit example.com destinations-=mx1.example.com")
    hosts = (await printed(term, "smtproutes"))["example.com"]["destinations"]
    assert hosts == [{"host": "mx2.example.com", "port": 587, "priority": 0}]


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            "dnsconfig set servers+=10.0.0.53",
            "dnsconfig field 'servers': '10.0.0.53' is already there",
        ),
        (
            "dnsconfig set servers-=10.0.0.99",
            "dnsconfig field 'servers': '10.0.0.99' is not there (it holds '10.0.0.53', "
            "'10.0.0.54')",
        ),
        (
            "dnsconfig set servers-=",
            "dnsconfig field 'servers': nothing to remove; e.g. servers-=10.0.0.53",
        ),
        (
            "dnsconfig set timeout_seconds+=5",
            "dnsconfig field 'timeout_seconds': += adds to or removes from a list, and "
            "timeout_seconds is a number 1-600; e.g. timeout_seconds=60",
        ),
        (
            "smtproutes edit example.com destinations-=mx1.example.com",
            "smtproutes row 'example.com' field 'destinations': needs at least 1 item; "
            "expected a list of route destinations, "
            "e.g. destinations=mx1.example.com:25,mx2.example.com",
        ),
    ],
)
async def test_a_refused_add_or_remove_says_why_and_changes_nothing(
    term: Term, line: str, said: str
) -> None:
    await term.ok("dnsconfig set servers=10.0.0.53,10.0.0.54")
    await term.ok("smtproutes new example.com destinations=mx1.example.com")
    before = term.shell.session.pending.saved()
    assert await term.run(line) == (1, f"Error: {said}")
    assert term.shell.session.pending.saved() == before
    assert await servers(term) == ["10.0.0.53", "10.0.0.54"]


# -- help and the menu -------------------------------------------------------------------


async def test_help_shows_each_fields_shape_with_an_example(term: Term) -> None:
    dns = (await term.ok("help dnsconfig")).splitlines()
    assert dns[dns.index("Fields:") + 1 :][:3] == [
        "  mode: internet-root|local, e.g. mode=internet-root",
        "  servers: list of DNS servers, e.g. servers=10.0.0.53,10.0.0.54",
        "  timeout_seconds: number 1-600, e.g. timeout_seconds=60",
    ]
    routes = await term.ok("help smtproutes")
    assert (
        "  destinations: list of route destinations, "
        "e.g. destinations=mx1.example.com:25,mx2.example.com"
    ) in routes.splitlines()
    assert "smtp_auth_profile: name of a smtpauthconfig row with type outgoing, or null" in routes
    bounces = await term.ok("help bounceconfig")
    assert "  hard_bounce_messages: yes|no, e.g. hard_bounce_messages=yes" in bounces.splitlines()
    ldap = (await term.ok("help ldapconfig")).splitlines()
    assert "  kind: profile|query, e.g. kind=profile" in ldap and "  with kind=query:" in ldap


async def test_the_menu_shows_the_shapes_before_asking(term: Term) -> None:
    out = await term.ok("dnsconfig", "1", "servers=10.0.0.53,10.0.0.54")  # 1: SET
    lines = out.splitlines()
    ask = lines.index(
        "Enter FIELD=VALUE pairs (mode, servers, timeout_seconds, alternate_domains)."
    )
    assert "  servers: list of DNS servers, e.g. servers=10.0.0.53,10.0.0.54" in lines[:ask]
    assert await servers(term) == ["10.0.0.53", "10.0.0.54"]


def every_field() -> Iterator[tuple[str, dict[str, str] | None, str]]:
    for feature in CATALOGUE:
        if feature.internal:
            continue
        tag = kind_field(feature)
        kinds = [None] if tag is None else [{tag: k} for k in fields(feature)[tag].choices]
        for data in kinds:
            for name in fields(feature, data):
                if name not in feature.secrets:  # (a hash: set by passwd)
                    yield feature.command, data, name


@pytest.mark.parametrize(("command", "data", "name"), list(every_field()))
def test_every_example_help_gives_is_accepted(
    command: str, data: dict[str, str] | None, name: str
) -> None:
    feature = CATALOGUE[command]
    word = shlex.split(example(name, fields(feature, data)[name]))[0]  # as the shell splits
    typed, _, text = word.partition("=")
    assert typed == name
    edited(feature, [(name, "=", text)], data)


# -- errors ------------------------------------------------------------------------------


async def test_a_bad_value_is_said_in_the_admins_words(ny: Term) -> None:
    await ny.ok("clustermode cluster", "")
    status, out = await ny.run("dnsconfig set servers=foo")  # no "Start from" asked first
    assert (status, out) == (
        1,
        "Error: dnsconfig field 'servers': not an IP address: 'foo' (item 1); "
        "expected a list of DNS servers, e.g. servers=10.0.0.53,10.0.0.54",
    )
    assert ny.pending == 0


@pytest.mark.parametrize(
    ("line", "start"),
    [
        ("dnsconfig set servers=foo", "dnsconfig field 'servers': not an IP address: 'foo'"),
        ("dnsconfig set servers=[1]", "dnsconfig field 'servers': 1 is not a DNS server (item 1)"),
        (
            'dnsconfig set \'servers=[{"adress":"10.0.0.53"}]\'',
            "dnsconfig field 'servers': field 'address' is missing (item 1)",
        ),
        ("dnsconfig set timeout_seconds=abc", "dnsconfig field 'timeout_seconds': 'abc' is not"),
        ("dnsconfig set timeout_seconds=0", "dnsconfig field 'timeout_seconds': 0 is not a number"),
        ("dnsconfig set mode=bogus", "dnsconfig field 'mode': 'bogus' is not one of"),
        ("dnsconfig set sever=1", "dnsconfig field 'sever': no such field; the fields: mode,"),
        ("bounceconfig new B hard_bounce_messages=maybe", "bounceconfig row 'B' field"),
        ("smtproutes new example.com destinations=mx1:x", "smtproutes row 'example.com' field"),
        (
            "smtproutes new example.com",
            "smtproutes row 'example.com': field 'destinations' is "
            "required: list of route destinations, e.g. destinations=mx1",
        ),
        (
            "ntpconfig set servers=a.example.com,a.example.com",
            "ntpconfig field 'servers': 'a.example.com' is listed twice",
        ),
    ],
)
async def test_errors_name_the_field_say_what_was_expected_and_change_nothing(
    ny: Term, line: str, start: str
) -> None:
    await ny.ok("clustermode cluster", "")
    status, out = await ny.run(line)  # nothing asked: no answers scripted
    assert status == 1 and out.startswith(f"Error: {start}"), out
    assert ("e.g. " in out or "no such field" in out) and not any(w in out for w in PYDANTIC_WORDS)
    assert ny.pending == 0


# -- the words, as properties ---------------------------------------------------------------

LIST_OF_TEXT = [
    (feature.command, name)
    for feature in CATALOGUE
    if not feature.internal and kind_field(feature) is None
    for name, shape in fields(feature).items()
    if shape.kind == "list" and shape.item is not None and shape.item.kind == "text"
]
# An element as a list field holds one: no comma, no space at either end, not empty, not
# JSON's opening bracket (a whole value starting with '[' is read as JSON).
ELEMENT = st.text(min_size=1).filter(
    lambda s: "," not in s and s == s.strip() and not s.startswith("[")
)


@pytest.mark.parametrize(("command", "name"), LIST_OF_TEXT)
@given(elements=st.lists(ELEMENT))
def test_a_list_of_strings_written_with_commas_reads_back_the_same(
    command: str, name: str, elements: list[str]
) -> None:
    assert LIST_OF_TEXT  # (ntpconfig servers, sshconfig algorithms ...)
    shape = fields(CATALOGUE[command])[name]
    assert value(shape, ",".join(elements)) == elements


HOST = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){1,2}", fullmatch=True)


@given(hosts=st.lists(HOST, min_size=1, unique=True))
def test_valid_host_lists_pass_the_check_unchanged(hosts: list[str]) -> None:
    typed = edited(CATALOGUE["ntpconfig"], [("servers", "=", ",".join(hosts))], None)
    assert typed == {"servers": hosts}


def test_a_bad_element_in_a_list_is_refused_with_its_place() -> None:
    with pytest.raises(InvalidSetting) as caught:
        edited(CATALOGUE["ntpconfig"], [("servers", "=", "a.example.com,b c")], None)
    assert caught.value.problems == [
        "ntpconfig field 'servers': not a host name or IP address: 'b c' (item 2); expected a "
        "list of host names or IP addresses, e.g. servers=mx1.example.com,mx2.example.com"
    ]


# -- through the real OpenSSH client -------------------------------------------------------


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    with Testbed(tmp_path, 1, seed=False) as bed:
        bed.start()
        yield bed.machines[0]


def test_a_comma_list_over_openssh(machine: Machine) -> None:
    done = ssh(machine, "dnsconfig set servers=10.0.0.53,10.0.0.54; commit dns servers")
    assert done.returncode == 0 and "Changes committed:" in done.stdout, done.stdout
    shown = json.loads(ssh(machine, "dnsconfig print").stdout)
    assert [s["address"] for s in shown["servers"]] == ["10.0.0.53", "10.0.0.54"]
    added = ssh(machine, "dnsconfig set servers+=10.0.0.55 'servers-=10.0.0.53'; commit more")
    assert added.returncode == 0, added.stdout
    refused = ssh(machine, "dnsconfig set servers=foo")
    assert refused.returncode == 1
    assert "Error: dnsconfig field 'servers': not an IP address: 'foo'" in refused.stdout
    shown = json.loads(ssh(machine, "dnsconfig print").stdout)
    assert [s["address"] for s in shown["servers"]] == ["10.0.0.54", "10.0.0.55"]
