"""Real daemons resolving each other through a real DNS server (dnsmasq on loopback).

Each daemon is its own process listening on its own 127.0.0.x address.  Membership
rows carry no address (``advertise_address = false``) where the test is about forward
lookups, so a member is dialled by its host name; every daemon reads an empty hosts
file, so only DNS answers.  ``reverse_dns`` is exercised on the receiving side of a
link: the connecting member's source address is reverse-resolved.

Daemons bind their outgoing links to their ``listen`` address, so the receiver sees
(and reverse-resolves) the dialler's own address: the zones give those addresses PTR
records where a test needs them, and none where it must not.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity
from tests.dnsserver import Blackhole, DnsServer, dnsmasq_path

pytestmark = pytest.mark.skipif(
    dnsmasq_path() is None, reason="dnsmasq is not installed (.ci/run installs it)"
)

PING = 0.5
DOMAIN = "example.com"  # the testbed's machines are m0.example.com, m1.example.com
M0, M1 = "127.0.0.21", "127.0.0.22"
CLUSTER = "dnscluster"


# -- helpers -----------------------------------------------------------------------------


def empty_hosts(tmp: Path) -> str:
    path = tmp / "hosts"
    path.write_text("# empty: only DNS answers\n", encoding="utf-8")
    return str(path)


@contextlib.contextmanager
def machines(
    root: Path,
    listens: list[str],
    per_machine: dict[int, dict[str, Any]] | None = None,
    **common: Any,
) -> Iterator[Testbed]:
    """Standalone machines m0, m1, ... each listening on its own address; all stopped
    on exit whatever happens."""
    bed = Testbed(root, 0, ping=PING, seed=False)
    try:
        for index, listen in enumerate(listens):
            extra = {**common, "listen": listen, **(per_machine or {}).get(index, {})}
            bed.machines.append(Machine(root, index, PING, extra))
        bed.start()
        yield bed
    finally:
        bed.stop()


def form_cluster(bed: Testbed) -> None:
    """Create the cluster on m0 and join the others to it (joins dial by address)."""
    bed[0].op("create", name=CLUSTER)
    for m in bed.machines[1:]:
        m.join(bed[0])


def peer(m: Machine, other: Machine) -> dict[str, Any]:
    return next(p for p in m.status()["peers"] if p["hostname"] == other.hostname)


def alerts(m: Machine, kind: str) -> list[str]:
    return [a["text"] for a in m.status()["alerts"] if a["kind"] == kind]


def connstatus(m: Machine, limit: float) -> tuple[dict[str, dict[str, Any]], float]:
    """CONNSTATUS by member host name, and how long it took (at most ``limit`` s)."""
    started = time.monotonic()
    answer = m.op("connstatus")
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"connstatus took {elapsed:.1f} s"
    return {e["hostname"]: e for e in answer["members"]}, elapsed


def received(m: Machine) -> list[str]:
    """Authentication alerts of the receiving side: the logins it refused."""
    return [t for t in alerts(m, "authentication error") if t.startswith("login from")]


def _bed(
    tmp_path: Path, settings: dict[str, Any], policy: str, *, advertise: bool
) -> contextlib.AbstractContextManager[Testbed]:
    """m0 and m1 on their own addresses, an empty hosts file, DNS as ``settings`` say."""
    return machines(
        tmp_path,
        [M0, M1],
        advertise_address=advertise,
        hosts_file=empty_hosts(tmp_path),
        reverse_dns=policy,
        dns_timeout=1.0,
        **settings,
    )


def shell(m: Machine, command: str, status: int = 0) -> str:
    """A one-command shell over the real ssh client: its output."""
    done = subprocess.run(identity.local_ssh(m.config, command), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == status, done.stdout + done.stderr
    return done.stdout


def membership_addresses(m: Machine) -> dict[str, Any]:
    rows = m.ask({"op": "get", "feature": "machines", "mode": "cluster"})["value"]
    return {host: row.get("address") for host, row in rows.items()}


# -- forward lookups -----------------------------------------------------------------------


def test_members_found_by_name_link_up_and_connstatus_confirms(tmp_path: Path) -> None:
    """Rows carry no address: both sides dial by name through DNS, and the receivers
    accept under reverse_dns = require because the connecting address has a PTR."""
    records = {f"m0.{DOMAIN}": M0, f"m1.{DOMAIN}": M1}
    with (
        DnsServer(tmp_path / "dns", records, domain=DOMAIN) as server,
        _bed(tmp_path, server.resolver_settings(), "require", advertise=False) as bed,
    ):
        form_cluster(bed)
        m0, m1 = bed.machines
        assert membership_addresses(m0) == {m0.hostname: None, m1.hostname: None}
        bed.wait(bed.linked, timeout=20, what="links between members found by name")

        inbound_seen = []
        for me, other, address in ((m0, m1, M1), (m1, m0, M0)):
            found, _ = connstatus(me, limit=5.0)
            entry = found[other.hostname]
            assert entry["state"] == "up", entry
            assert entry["address"] == address
            assert entry["forward_ok"] is True, entry
            assert entry["forward"] == f"{other.hostname} -> {address} (dns)"
            assert entry["reverse_ok"] is True, entry
            assert entry["reverse"] == f"{address} -> {other.hostname} (dns)"
            if entry["inbound_reverse"] is not None:
                inbound_seen.append(entry["inbound_reverse"])
            assert not alerts(me, "authentication error")
            assert not alerts(me, "DNS")
        # The link came in on at least one side, and its reverse check succeeded.
        assert inbound_seen
        assert all("->" in text and "(dns)" in text for text in inbound_seen), inbound_seen
        log = server.output()
        assert f"query[A] {m0.hostname}" in log
        assert f"query[A] {m1.hostname}" in log


def test_member_not_in_dns_stays_down_with_nxdomain(tmp_path: Path) -> None:
    """m1's name is not in DNS: m0 cannot dial it and says why.  m1 does not dial m0
    (blocked_peers), so no link can come in the other way."""
    with (
        DnsServer(tmp_path / "dns", {f"m0.{DOMAIN}": M0}, domain=DOMAIN) as server,
        machines(
            tmp_path,
            [M0, M1],
            per_machine={1: {"blocked_peers": ["SER-000"]}},
            advertise_address=False,
            hosts_file=empty_hosts(tmp_path),
            reverse_dns="off",
            dns_timeout=1.0,
            **server.resolver_settings(),
        ) as bed,
    ):
        form_cluster(bed)
        m0, m1 = bed.machines
        bed.wait(
            lambda: "NXDOMAIN" in peer(m0, m1)["reason"],
            timeout=10,
            what="m0's failed dial of m1",
        )
        seen = peer(m0, m1)
        assert seen["state"] != "up", seen
        assert "DNS" in seen["reason"]
        assert f"no such name: {m1.hostname}" in seen["reason"]

        found, _ = connstatus(m0, limit=3.0)
        entry = found[m1.hostname]
        assert entry["forward_ok"] is False, entry
        assert "NXDOMAIN" in entry["forward"]
        assert f"no such name: {m1.hostname}" in entry["forward"]
        assert entry["address"] is None
        assert entry["reverse"] is None and entry["reverse_ok"] is None
        assert entry["state"] != "up"
        assert "NXDOMAIN" in entry["reason"]

        # The other way round the name resolves; only the firewall keeps m1 from m0.
        found, _ = connstatus(m1, limit=3.0)
        entry = found[m0.hostname]
        assert entry["forward_ok"] is True, entry
        assert entry["address"] == M0
        assert entry["reverse_ok"] is True, entry
        bed.wait(lambda: "blocked" in peer(m1, m0)["reason"], timeout=10, what="m1's firewall")
        assert peer(m0, m1)["state"] != "up"
        assert "NXDOMAIN" in peer(m0, m1)["reason"]
        assert not bed.linked()


def test_forward_timeout_is_reported_and_bounded(tmp_path: Path) -> None:
    """A name server that never answers: dials fail with "timed out" after dns_timeout,
    and CONNSTATUS answers within a few seconds."""
    with (
        Blackhole() as hole,
        _bed(tmp_path, hole.resolver_settings(), "off", advertise=False) as bed,
    ):
        form_cluster(bed)
        m0, m1 = bed.machines
        for me, other in ((m0, m1), (m1, m0)):
            bed.wait(
                lambda me=me, other=other: "timed out" in peer(me, other)["reason"],
                timeout=10,
                what=f"{me.hostname}'s timed-out lookup of {other.hostname}",
            )
            seen = peer(me, other)
            assert seen["state"] != "up", seen
            assert seen["reason"].startswith("DNS: "), seen
            assert f"DNS lookup of {other.hostname} timed out after 1.0 s" in seen["reason"]
            assert f"{hole.address}:{hole.port}" in seen["reason"]

            started = time.monotonic()
            me.status()
            assert time.monotonic() - started < 1.0, "status waits for lookups"

        found, elapsed = connstatus(m0, limit=5.0)
        entry = found[m1.hostname]
        assert elapsed >= 0.9  # it did ask, and waited for the time-out
        assert entry["forward_ok"] is False, entry
        assert "timed out after 1.0 s" in entry["forward"]
        assert entry["address"] is None
        assert entry["reverse_ok"] is None
        assert "timed out" in entry["reason"]
        assert not bed.linked()


# -- reverse lookups of connecting members -------------------------------------------------


def _reverse_bed(
    tmp_path: Path, settings: dict[str, Any], policy: str
) -> contextlib.AbstractContextManager[Testbed]:
    """Members with addresses in their rows (no forward lookups needed to dial)."""
    return _bed(tmp_path, settings, policy, advertise=True)


def test_reverse_require_refuses_a_member_without_ptr(tmp_path: Path) -> None:
    # No records at all: every reverse lookup under 127.in-addr.arpa is NXDOMAIN.
    with (
        DnsServer(tmp_path / "dns", {}, domain=DOMAIN) as server,
        _reverse_bed(tmp_path, server.resolver_settings(), "require") as bed,
    ):
        form_cluster(bed)
        m0, m1 = bed.machines
        assert membership_addresses(m0) == {m0.hostname: M0, m1.hostname: M1}

        def refused_twice(m: Machine, other: Machine) -> bool:
            texts = [t for t in received(m) if "reverse lookup" in t]
            return len(texts) >= 2 and all(other.hostname in t for t in texts)

        # Two refusals each way: the dials were retried and refused again.
        bed.wait(lambda: refused_twice(m0, m1), timeout=15, what="m0 refusing m1")
        bed.wait(lambda: refused_twice(m1, m0), timeout=15, what="m1 refusing m0")
        for me, other in ((m0, m1), (m1, m0)):
            text = next(t for t in received(me) if "reverse" in t)
            assert "NXDOMAIN" in text
            assert "no PTR record for" in text
            assert "(reverse_dns = require)" in text
            assert f"({other.hostname})" in text
            assert peer(me, other)["state"] != "up"
            assert not alerts(me, "DNS")  # refused, not merely warned about
            # The dialling side is told the receiver's reason (an SSH banner).
            dialled = [t for t in alerts(other, "authentication error") if "refused our" in t]
            assert any("reverse lookup" in t and "NXDOMAIN" in t for t in dialled)
        found, _ = connstatus(m0, limit=5.0)
        entry = found[m1.hostname]
        assert entry["inbound_reverse"] is not None
        assert "NXDOMAIN" in entry["inbound_reverse"]
        assert not bed.linked()


def test_reverse_warn_accepts_a_member_without_ptr_with_an_alert(tmp_path: Path) -> None:
    with (
        DnsServer(tmp_path / "dns", {}, domain=DOMAIN) as server,
        _reverse_bed(tmp_path, server.resolver_settings(), "warn") as bed,
    ):
        form_cluster(bed)
        m0, m1 = bed.machines
        bed.wait(bed.linked, timeout=20, what="links despite missing PTR records")
        warned = [(m, t) for m in bed.machines for t in alerts(m, "DNS") if "reverse lookup" in t]
        assert warned, bed.describe()  # whichever side took the link in warned
        for m, text in warned:
            other = m1 if m is m0 else m0
            assert f"({other.hostname})" in text
            assert "NXDOMAIN" in text
            assert "(reverse_dns = warn: accepted)" in text
            assert not [t for t in alerts(m, "authentication error") if "reverse" in t]
        found, _ = connstatus(m0, limit=5.0)
        entry = found[m1.hostname]
        assert entry["state"] == "up"
        assert entry["reverse_ok"] is False  # nor does CONNSTATUS find one for M1
        assert "NXDOMAIN" in entry["reverse"]
        # Loud where an admin looks: CONNSTATUS on the side that let it in, clustercheck
        # on any member (it asks every member what it accepted).
        m, _ = warned[0]
        other = m1 if m is m0 else m0
        shown = shell(m, "clusterconfig connstatus")
        assert (f"WARNING: {other.hostname} was accepted although the reverse lookup of its "
                "address failed (reverse_dns = warn)") in shown, shown  # fmt: skip
        for asker in (m0, m1):
            checked = shell(asker, "clustermode cluster; clustercheck --json", status=1)
            facts = [f for f in json.loads(checked)["facts"] if f["kind"] == "dns"]
            assert {(f["seen_by"], f["member"]) for f in facts} >= {(m.hostname, other.hostname)}
            assert all("reference would refuse it" in f["message"] for f in facts)


def test_reverse_timeout_under_require_refuses_without_hanging(tmp_path: Path) -> None:
    with (
        Blackhole() as hole,
        _reverse_bed(tmp_path, hole.resolver_settings(), "require") as bed,
    ):
        form_cluster(bed)
        m0, m1 = bed.machines

        def refused(m: Machine) -> list[str]:
            return [t for t in received(m) if "reverse lookup" in t and "timed out" in t]

        bed.wait(lambda: refused(m0) and refused(m1), timeout=15, what="time-out refusals")
        for me, other in ((m0, m1), (m1, m0)):
            text = refused(me)[0]
            assert f"({other.hostname})" in text
            assert "timed out after 1.0 s" in text
            assert f"{hole.address}:{hole.port}" in text
            assert "(reverse_dns = require)" in text
            assert peer(me, other)["state"] != "up"
            for _ in range(3):  # answered while reverse lookups are in flight
                started = time.monotonic()
                me.status()
                assert time.monotonic() - started < 1.0, "status waits for lookups"
        found, _ = connstatus(m0, limit=6.0)
        entry = found[m1.hostname]
        assert entry["address"] == M1  # from the row: no lookup needed to dial
        assert entry["forward_ok"] is False and "timed out" in entry["forward"]
        assert entry["reverse_ok"] is False and "timed out" in entry["reverse"]
        assert not bed.linked()
