"""Name resolution for status output and peer checks: host names to addresses and back.

Policy
------
* **Literals first.**  A forward lookup of an IP literal (IPv4 or IPv6) answers at once
  with the address itself (source ``"literal"``); nothing is asked.
* **Then the hosts file** (``/etc/hosts`` unless told otherwise), like the system's
  ``files dns`` order.  Names match case-insensitively and aliases count; a reverse
  lookup gives the first name of each matching line, then its aliases.  The file is
  re-read whenever its modification time changes; a missing or unreadable file counts
  as empty.  A hit in the hosts file is final: DNS is not asked.
* **Then DNS**, with dnspython's asyncio resolver.  Forward lookups ask for A and
  AAAA records together and succeed if either gives addresses (IPv4 addresses first);
  reverse lookups ask for PTR records.  Names are taken as fully qualified (no search
  list) and nothing is cached, so an answer is always fresh.  The name servers are the
  ones given, or, when none are given, those of the host's resolver configuration
  (``/etc/resolv.conf``), re-read whenever its modification time changes (like the
  hosts file: a DHCP client or an administrator may rewrite it while the daemon runs);
  while it cannot be read or names no server, every DNS lookup fails with a reason
  saying so, and the hosts file still works.
* **Never raise, never hang.**  Each lookup is bounded by ``timeout`` seconds in total
  (the resolver's lifetime, guarded again by :func:`asyncio.wait_for`).  A failure is a
  :class:`Lookup` with ``ok=False`` and a one-sentence ``reason`` naming what was asked
  and which servers: NXDOMAIN, no record of the asked type, a time-out and any other
  DNS error read differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

__all__ = ["RESOLV_CONF", "Lookup", "Resolver"]

#: Where the host's resolver configuration is read from when no servers are given.
RESOLV_CONF = "/etc/resolv.conf"

LITERAL = "literal"
HOSTS_FILE = "hosts file"
DNS = "dns"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of one forward or reverse lookup."""

    query: str  # the name or address asked about
    ok: bool
    answers: tuple[str, ...]  # addresses (forward) or host names without trailing dot (reverse)
    source: str  # "literal", "hosts file" or "dns"
    reason: str  # "" when ok; otherwise a sentence saying what went wrong

    def describe(self) -> str:
        """One line for status output."""
        if self.ok:
            return f"{self.query} -> {', '.join(self.answers)} ({self.source})"
        return f"{self.query}: {self.reason}"


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _v4_first(addresses: Sequence[str]) -> tuple[str, ...]:
    """Deduplicated, IPv4 before IPv6, otherwise in the given order."""
    unique = list(dict.fromkeys(addresses))
    return tuple(sorted(unique, key=lambda a: 0 if ":" not in a else 1))


def _file_stamp(path: str | Path) -> tuple[int, int, int] | None:
    """What tells a changed file (modification time, size, inode); None: unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(slots=True)
class _HostsFile:
    """The hosts file, parsed, re-read when its modification time changes."""

    path: Path | None
    _stamp: tuple[int, int, int] | None = None
    _by_name: dict[str, list[str]] = field(default_factory=dict)
    _by_address: dict[str, list[str]] = field(default_factory=dict)

    def _refresh(self) -> None:
        if self.path is None:
            return
        stamp = _file_stamp(self.path)
        if stamp is not None and stamp == self._stamp:
            return
        by_name: dict[str, list[str]] = {}
        by_address: dict[str, list[str]] = {}
        text = ""
        if stamp is not None:
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                stamp = None
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            address = _parse_address(fields[0])
            if address is None:
                continue
            canonical = str(address)
            names = [n.rstrip(".") for n in fields[1:] if n.rstrip(".")]
            for name in names:
                known = by_name.setdefault(name.lower(), [])
                if canonical not in known:
                    known.append(canonical)
            known_names = by_address.setdefault(canonical, [])
            known_names.extend(n for n in names if n not in known_names)
        self._stamp = stamp
        self._by_name = by_name
        self._by_address = by_address

    def addresses(self, name: str) -> tuple[str, ...]:
        self._refresh()
        return _v4_first(self._by_name.get(name.lower(), []))

    def names(self, address: str) -> tuple[str, ...]:
        self._refresh()
        return tuple(self._by_address.get(address, []))


class _Failure:
    """A DNS query that gave no answer, sorted by how it failed."""

    NXDOMAIN = 0
    TIMEOUT = 1
    ERROR = 2
    NO_ANSWER = 3

    __slots__ = ("kind", "message")

    def __init__(self, kind: int, message: str = "") -> None:
        self.kind = kind
        self.message = message


class Resolver:
    """Forward and reverse lookups: literal, then hosts file, then DNS (see the module)."""

    def __init__(
        self,
        servers: list[str] | None = None,
        port: int = 53,
        timeout: float = 2.0,
        hosts_file: str | Path | None = "/etc/hosts",
    ) -> None:
        self.timeout = float(timeout)
        self._hosts = _HostsFile(Path(hosts_file) if hosts_file is not None else None)
        self._servers = list(servers or [])
        self._port = port
        self._config_error = ""
        self._resolver: dns.asyncresolver.Resolver | None = None
        # The system configuration's path and (mtime, size, inode) when last read.
        self._system: tuple[str, tuple[int, int, int] | None] | None = None
        self._configure()

    def _configure(self) -> None:
        """(Re)build the DNS resolver: from the servers given, or from the system
        configuration when it is new or changed since it was last read."""
        if not self._servers:
            path = RESOLV_CONF  # looked up each time: tests point it elsewhere
            stamp = _file_stamp(path)
            if self._system == (path, stamp):
                return
            self._system = (path, stamp)
        self._config_error = ""
        self._resolver = None
        try:
            if self._servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = list(self._servers)
            else:
                resolver = dns.asyncresolver.Resolver(filename=RESOLV_CONF)
            resolver.port = self._port
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            where = (
                f"servers {self._servers}"
                if self._servers
                else f"the system configuration {RESOLV_CONF}"
            )
            self._config_error = f"no usable DNS name servers in {where}: {exc}"
            return
        resolver.timeout = self.timeout
        resolver.lifetime = self.timeout
        resolver.cache = None
        self._resolver = resolver

    # -- public -------------------------------------------------------------------------

    async def forward(self, name: str) -> Lookup:
        """Host name to addresses."""
        query = name
        literal = _parse_address(name)
        if literal is not None:
            return Lookup(query, True, (str(literal),), LITERAL, "")
        name = name.strip().rstrip(".")
        if not name:
            return Lookup(query, False, (), LITERAL, f"not a host name: {query!r}")
        from_hosts = self._hosts.addresses(name)
        if from_hosts:
            return Lookup(query, True, from_hosts, HOSTS_FILE, "")
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            return Lookup(query, False, (), LITERAL, f"not a valid host name: {query!r} ({exc})")
        self._configure()
        resolver = self._resolver  # this lookup's, whatever a re-read does meanwhile
        if resolver is None:
            return self._unconfigured(query, name)
        outcomes = await asyncio.gather(
            self._ask(resolver, qname, dns.rdatatype.A),
            self._ask(resolver, qname, dns.rdatatype.AAAA),
        )
        addresses = [a for outcome in outcomes if isinstance(outcome, list) for a in outcome]
        if addresses:
            return Lookup(query, True, _v4_first(addresses), DNS, "")
        failure = min((o for o in outcomes if isinstance(o, _Failure)), key=lambda f: f.kind)
        asked = self._asked(resolver)
        if failure.kind == _Failure.NXDOMAIN:
            reason = f"no such name: {name} (NXDOMAIN from {asked})"
        elif failure.kind == _Failure.TIMEOUT:
            reason = f"DNS lookup of {name} timed out after {self.timeout} s (asked {asked})"
        elif failure.kind == _Failure.ERROR:
            reason = f"DNS lookup of {name} failed (asked {asked}): {failure.message}"
        else:
            reason = f"{name} has no A/AAAA record (asked {asked})"
        return Lookup(query, False, (), DNS, reason)

    async def reverse(self, address: str) -> Lookup:
        """Address to host names (PTR)."""
        query = address
        parsed = _parse_address(address)
        if parsed is None:
            return Lookup(query, False, (), LITERAL, f"not an IP address: {address!r}")
        canonical = str(parsed)
        from_hosts = self._hosts.names(canonical)
        if from_hosts:
            return Lookup(query, True, from_hosts, HOSTS_FILE, "")
        self._configure()
        resolver = self._resolver
        if resolver is None:
            return self._unconfigured(query, canonical)
        ptr = dns.reversename.from_address(canonical)
        outcome = await self._ask(resolver, ptr, dns.rdatatype.PTR)
        if isinstance(outcome, list) and outcome:
            return Lookup(query, True, tuple(dict.fromkeys(outcome)), DNS, "")
        asked = self._asked(resolver)
        if not isinstance(outcome, _Failure) or outcome.kind == _Failure.NO_ANSWER:
            reason = f"{canonical} has no PTR record (asked {asked})"
        elif outcome.kind == _Failure.NXDOMAIN:
            reason = f"no PTR record for {canonical} (NXDOMAIN from {asked})"
        elif outcome.kind == _Failure.TIMEOUT:
            reason = (
                f"DNS reverse lookup of {canonical} timed out after {self.timeout} s "
                f"(asked {asked})"
            )
        else:
            reason = f"DNS reverse lookup of {canonical} failed (asked {asked}): {outcome.message}"
        return Lookup(query, False, (), DNS, reason)

    # -- internals ----------------------------------------------------------------------

    def _unconfigured(self, query: str, what: str) -> Lookup:
        return Lookup(query, False, (), DNS, f"cannot look up {what} in DNS: {self._config_error}")

    @staticmethod
    def _asked(resolver: dns.asyncresolver.Resolver) -> str:
        """The name servers, as ``address:port``, for reasons."""
        parts: list[str] = []
        for ns in resolver.nameservers:
            if isinstance(ns, dns.nameserver.AddressAndPortNameserver):
                host, port = ns.address, ns.port
            elif isinstance(ns, str) and _parse_address(ns) is not None:
                host, port = ns, resolver.nameserver_ports.get(ns, resolver.port)
            else:
                parts.append(str(ns))
                continue
            parts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return ", ".join(parts) or "no name servers"

    async def _ask(
        self,
        resolver: dns.asyncresolver.Resolver,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
    ) -> list[str] | _Failure:
        """One query: the answers as text, or how it failed.  Never raises, never hangs."""
        pending: Awaitable[dns.resolver.Answer] = resolver.resolve(
            qname, rdtype, search=False, raise_on_no_answer=True
        )
        try:
            answer = await asyncio.wait_for(pending, self.timeout)
        except dns.resolver.NXDOMAIN:
            return _Failure(_Failure.NXDOMAIN)
        except dns.resolver.NoAnswer:
            return _Failure(_Failure.NO_ANSWER)
        except (TimeoutError, dns.exception.Timeout):
            return _Failure(_Failure.TIMEOUT)
        except Exception as exc:  # any other DNS or socket error is a failed lookup
            return _Failure(_Failure.ERROR, str(exc) or type(exc).__name__)
        texts: list[str] = []
        for rdata in answer:
            if rdtype == dns.rdatatype.PTR:
                texts.append(rdata.target.to_text(omit_final_dot=True))
            else:
                texts.append(str(rdata.address))
        return texts
