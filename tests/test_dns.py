"""clusterd.trust.dns against a real DNS server (dnsmasq on a loopback address)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import clusterd.trust.dns as cdns
from clusterd.trust.dns import Lookup, Resolver
from tests.dnsserver import Blackhole, DnsServer, dnsmasq_path

NOT_INSTALLED = "dnsmasq is not installed (.ci/run installs it)"

RECORDS = {
    "newyork.example.test": "127.0.0.31",
    "london.example.test": "127.0.0.32",
    "tokyo.example.test": "::1",
}
# A name that exists in DNS but has no address record.
TEXT_ONLY = "notes.example.test"


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    if dnsmasq_path() is None:
        pytest.skip(NOT_INSTALLED)
    tmp = tmp_path_factory.mktemp("dnsmasq")
    with DnsServer(tmp, RECORDS, extra_options=[f"--txt-record={TEXT_ONLY},hello"]) as server:
        yield server


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    with Blackhole() as hole:
        yield hole


def _resolver(
    server: DnsServer | Blackhole,
    *,
    hosts_file: Path | None = None,
    timeout: float = 2.0,
) -> Resolver:
    settings = server.resolver_settings()
    return Resolver(
        servers=settings["dns_servers"],
        port=settings["dns_port"],
        timeout=timeout,
        hosts_file=hosts_file,
    )


def _asked(server: DnsServer | Blackhole) -> str:
    return f"{server.address}:{server.port}"


def _no_hosts(server: DnsServer | Blackhole, timeout: float = 2.0) -> Resolver:
    return _resolver(server, hosts_file=None, timeout=timeout)


# -- forward -----------------------------------------------------------------------------


async def test_forward_success(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).forward("newyork.example.test")
    assert found == Lookup("newyork.example.test", True, ("127.0.0.31",), "dns", "")
    assert found.describe() == "newyork.example.test -> 127.0.0.31 (dns)"


async def test_forward_is_case_insensitive_and_takes_a_final_dot(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).forward("London.Example.Test.")
    assert found.ok
    assert found.answers == ("127.0.0.32",)
    assert found.source == "dns"


async def test_forward_ipv6_only_name(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).forward("tokyo.example.test")
    assert found.ok
    assert found.answers == ("::1",)
    assert found.source == "dns"


async def test_forward_nxdomain(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).forward("nowhere.example.test")
    assert not found.ok
    assert found.answers == ()
    assert found.source == "dns"
    assert found.reason == (
        f"no such name: nowhere.example.test (NXDOMAIN from {_asked(dns_server)})"
    )
    assert found.describe().startswith("nowhere.example.test: no such name")


async def test_forward_name_without_address_records(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).forward(TEXT_ONLY)
    assert not found.ok
    assert found.answers == ()
    assert found.source == "dns"
    assert f"{TEXT_ONLY} has no A/AAAA record" in found.reason
    assert _asked(dns_server) in found.reason
    assert "NXDOMAIN" not in found.reason


async def test_forward_refused_is_a_failure_with_the_message(dns_server: DnsServer) -> None:
    # dnsmasq has no upstream servers: a name outside the test domain is REFUSED.
    found = await _no_hosts(dns_server).forward("elsewhere.invalid")
    assert not found.ok
    assert found.source == "dns"
    assert found.reason.startswith("DNS lookup of elsewhere.invalid failed")
    assert "REFUSED" in found.reason
    assert _asked(dns_server) in found.reason


async def test_forward_timeout(blackhole: Blackhole) -> None:
    started = time.monotonic()
    found = await _no_hosts(blackhole, timeout=0.5).forward("newyork.example.test")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert not found.ok
    assert found.answers == ()
    assert found.source == "dns"
    assert found.reason == (
        f"DNS lookup of newyork.example.test timed out after 0.5 s (asked {_asked(blackhole)})"
    )


async def test_forward_ip_literal_asks_nobody(blackhole: Blackhole) -> None:
    resolver = _no_hosts(blackhole, timeout=5.0)
    started = time.monotonic()
    v4 = await resolver.forward("127.0.0.31")
    v6 = await resolver.forward("::1")
    assert time.monotonic() - started < 0.5
    assert v4 == Lookup("127.0.0.31", True, ("127.0.0.31",), "literal", "")
    assert v6 == Lookup("::1", True, ("::1",), "literal", "")
    assert v4.describe() == "127.0.0.31 -> 127.0.0.31 (literal)"


@pytest.mark.parametrize("name", ["", "  ", "a..b", "x" * 64 + ".example.test"])
async def test_forward_invalid_name(blackhole: Blackhole, name: str) -> None:
    found = await _no_hosts(blackhole, timeout=5.0).forward(name)
    assert not found.ok
    assert found.answers == ()
    assert "host name" in found.reason


# -- reverse -----------------------------------------------------------------------------


async def test_reverse_success(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).reverse("127.0.0.31")
    assert found == Lookup("127.0.0.31", True, ("newyork.example.test",), "dns", "")
    assert found.describe() == "127.0.0.31 -> newyork.example.test (dns)"


async def test_reverse_nxdomain(dns_server: DnsServer) -> None:
    found = await _no_hosts(dns_server).reverse("127.0.0.77")
    assert not found.ok
    assert found.answers == ()
    assert found.source == "dns"
    assert found.reason == f"no PTR record for 127.0.0.77 (NXDOMAIN from {_asked(dns_server)})"


async def test_reverse_timeout(blackhole: Blackhole) -> None:
    started = time.monotonic()
    found = await _no_hosts(blackhole, timeout=0.5).reverse("127.0.0.31")
    assert time.monotonic() - started < 2.0
    assert not found.ok
    assert found.source == "dns"
    assert "127.0.0.31" in found.reason
    assert "timed out after 0.5 s" in found.reason
    assert _asked(blackhole) in found.reason


@pytest.mark.parametrize("address", ["newyork.example.test", "127.0.0.300", "", "::g"])
async def test_reverse_invalid_address(blackhole: Blackhole, address: str) -> None:
    found = await _no_hosts(blackhole, timeout=5.0).reverse(address)
    assert not found.ok
    assert found.answers == ()
    assert found.reason == f"not an IP address: {address!r}"


# -- hosts file --------------------------------------------------------------------------

HOSTS = """\
# a comment line
127.0.0.41\tParis.example.test paris   # trailing comment

127.0.0.99 newyork.example.test
::1 localhost6 ip6-localhost
not-an-address broken.example.test
127.0.0.42
"""


async def test_hosts_file_forward_and_reverse(blackhole: Blackhole, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS, encoding="utf-8")
    # Every answer comes from the file: the name server never answers.
    resolver = _resolver(blackhole, hosts_file=hosts, timeout=5.0)

    for name in ("paris.example.test", "PARIS", "paris", "Paris.example.test."):
        found = await resolver.forward(name)
        assert found == Lookup(name, True, ("127.0.0.41",), "hosts file", "")
    assert (await resolver.forward("ip6-localhost")).answers == ("::1",)

    found = await resolver.reverse("127.0.0.41")
    assert found == Lookup("127.0.0.41", True, ("Paris.example.test", "paris"), "hosts file", "")
    found = await resolver.reverse("0:0::1")
    assert found.answers == ("localhost6", "ip6-localhost")
    assert found.source == "hosts file"


async def test_hosts_file_wins_over_dns(dns_server: DnsServer, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS, encoding="utf-8")
    resolver = _resolver(dns_server, hosts_file=hosts)
    found = await resolver.forward("newyork.example.test")
    assert (found.answers, found.source) == (("127.0.0.99",), "hosts file")
    # Not in the file: DNS answers.
    found = await resolver.forward("london.example.test")
    assert (found.answers, found.source) == (("127.0.0.32",), "dns")
    found = await resolver.reverse("127.0.0.31")
    assert (found.answers, found.source) == (("newyork.example.test",), "dns")


async def test_hosts_file_is_reloaded_when_its_mtime_changes(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.41 paris.example.test\n", encoding="utf-8")
    os.utime(hosts, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    resolver = _resolver(dns_server, hosts_file=hosts)
    assert (await resolver.forward("paris.example.test")).answers == ("127.0.0.41",)

    hosts.write_text("127.0.0.43 paris.example.test\n", encoding="utf-8")
    os.utime(hosts, ns=(1_000_000_001_000_000_000, 1_000_000_001_000_000_000))
    assert (await resolver.forward("paris.example.test")).answers == ("127.0.0.43",)
    assert (await resolver.reverse("127.0.0.43")).answers == ("paris.example.test",)
    assert (await resolver.reverse("127.0.0.41")).source == "dns"

    hosts.unlink()
    found = await resolver.forward("paris.example.test")
    assert (found.ok, found.source) == (False, "dns")
    assert "NXDOMAIN" in found.reason

    hosts.write_text("127.0.0.44 paris.example.test\n", encoding="utf-8")
    assert (await resolver.forward("paris.example.test")).answers == ("127.0.0.44",)


async def test_missing_or_unreadable_hosts_file_counts_as_empty(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    for hosts in (tmp_path / "missing", tmp_path):  # a directory cannot be read as a file
        resolver = _resolver(dns_server, hosts_file=hosts)
        found = await resolver.forward("newyork.example.test")
        assert (found.answers, found.source) == (("127.0.0.31",), "dns")
        found = await resolver.reverse("127.0.0.31")
        assert (found.answers, found.source) == (("newyork.example.test",), "dns")


# -- the system configuration ------------------------------------------------------------


async def test_unreadable_system_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cdns, "RESOLV_CONF", str(tmp_path / "no-resolv.conf"))
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS, encoding="utf-8")
    for servers in (None, []):
        resolver = Resolver(servers=servers, hosts_file=hosts)
        # Guard: this test must never reach the host's real name servers.
        assert resolver._resolver is None

        found = await resolver.forward("newyork.example.test")
        assert found.source == "hosts file"
        found = await resolver.forward("london.example.test")
        assert not found.ok
        assert found.source == "dns"
        assert "london.example.test" in found.reason
        assert "system configuration" in found.reason
        found = await resolver.reverse("127.0.0.77")
        assert not found.ok
        assert "127.0.0.77" in found.reason
        assert "system configuration" in found.reason
        assert (await resolver.reverse("127.0.0.41")).answers == ("Paris.example.test", "paris")


def test_system_configuration_without_nameservers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("# no nameserver lines\nsearch example.test\n", encoding="utf-8")
    monkeypatch.setattr(cdns, "RESOLV_CONF", str(resolv_conf))
    resolver = Resolver(hosts_file=None)
    assert resolver._resolver is None


def _system_resolver(server: DnsServer, timeout: float = 2.0) -> Resolver:
    """No servers given: the resolver configuration names them, ``dns_port`` their port
    (resolv.conf has no port: the test server listens on a free one)."""
    return Resolver(servers=None, port=server.port, timeout=timeout, hosts_file=None)


async def test_lookups_through_the_system_configuration(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text(
        f"# written by a test\nsearch example.test\nnameserver {dns_server.address}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(cdns, "RESOLV_CONF", str(resolv_conf))
    resolver = _system_resolver(dns_server)
    found = await resolver.forward("newyork.example.test")
    assert found == Lookup("newyork.example.test", True, ("127.0.0.31",), "dns", "")
    found = await resolver.reverse("127.0.0.32")
    assert found == Lookup("127.0.0.32", True, ("london.example.test",), "dns", "")
    # Names are fully qualified: the search list is not applied (with it, dnspython
    # would have found newyork.example.test; the server refuses a bare "newyork.").
    found = await resolver.forward("newyork")
    assert not found.ok
    assert found.reason.startswith(f"DNS lookup of newyork failed (asked {_asked(dns_server)})")
    assert "REFUSED" in found.reason


async def test_system_configuration_is_reread_when_it_changes(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    monkeypatch.setattr(cdns, "RESOLV_CONF", str(resolv_conf))
    stamp = 1_000_000_000_000_000_000

    def rewrite(text: str) -> None:
        nonlocal stamp
        resolv_conf.write_text(text, encoding="utf-8")
        stamp += 1_000_000_000
        os.utime(resolv_conf, ns=(stamp, stamp))

    # At start the file names no server: DNS lookups fail and say why.
    rewrite("# no nameserver yet\n")
    resolver = _system_resolver(dns_server, timeout=0.5)
    found = await resolver.forward("newyork.example.test")
    assert not found.ok
    assert f"the system configuration {resolv_conf}" in found.reason

    # The file now names the test server: the next lookup uses it.
    rewrite(f"nameserver {dns_server.address}\n")
    assert (await resolver.forward("newyork.example.test")).answers == ("127.0.0.31",)
    assert (await resolver.reverse("127.0.0.31")).answers == ("newyork.example.test",)

    # Another server (silent, on the same port): asked from the next lookup on.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.54", dns_server.port))
        rewrite("nameserver 127.0.0.54\n")
        found = await resolver.forward("newyork.example.test")
        assert not found.ok
        assert found.reason == (
            f"DNS lookup of newyork.example.test timed out after 0.5 s "
            f"(asked 127.0.0.54:{dns_server.port})"
        )

    # Gone: DNS fails with the reason; back: it answers again.
    resolv_conf.unlink()
    found = await resolver.reverse("127.0.0.31")
    assert not found.ok
    assert "cannot look up 127.0.0.31 in DNS" in found.reason
    assert str(resolv_conf) in found.reason
    rewrite(f"nameserver {dns_server.address}\n")
    assert (await resolver.reverse("127.0.0.31")).answers == ("newyork.example.test",)


async def test_unchanged_system_configuration_is_not_reread(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text(f"nameserver {dns_server.address}\n", encoding="utf-8")
    monkeypatch.setattr(cdns, "RESOLV_CONF", str(resolv_conf))
    resolver = _system_resolver(dns_server)
    first = resolver._resolver
    assert (await resolver.forward("london.example.test")).ok
    assert (await resolver.reverse("127.0.0.32")).ok
    assert resolver._resolver is first  # one stat per lookup, no re-parse


async def test_given_servers_ignore_the_system_configuration(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.54\n", encoding="utf-8")
    monkeypatch.setattr(cdns, "RESOLV_CONF", str(resolv_conf))
    resolver = _no_hosts(dns_server)
    resolv_conf.write_text("nameserver 127.0.0.55\n", encoding="utf-8")
    found = await resolver.forward("newyork.example.test")
    assert found.answers == ("127.0.0.31",)
