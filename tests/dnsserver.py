"""A real DNS server for tests: Debian's ``dnsmasq`` on a loopback address.

:class:`DnsServer` runs ``dnsmasq`` in the foreground on ``127.0.0.x`` and a free UDP
port, with no upstream servers, no ``/etc/hosts`` and no configuration file.  It
serves an A record and the matching PTR record for each given machine
(``--host-record``) and answers NXDOMAIN, as the authority, for any other name in the
test domain and any other address under ``127.in-addr.arpa`` (``--local``).  Anything
else is REFUSED: nothing ever leaves the loopback interface.

:class:`Blackhole` is a UDP socket that reads queries and never answers, to provoke
time-outs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.reversename

START_TIMEOUT = 5.0
DNSMASQ = "/usr/sbin/dnsmasq"


def dnsmasq_path() -> str | None:
    """The dnsmasq binary, or None when it is not installed."""
    found = shutil.which("dnsmasq")
    if found:
        return found
    return DNSMASQ if os.access(DNSMASQ, os.X_OK) else None


def free_udp_port(address: str) -> int:
    """A UDP port that is free on ``address`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def reverse_zone(address: str) -> str:
    """The /8 reverse zone holding ``address`` (``127.in-addr.arpa`` for 127.0.0.x)."""
    return f"{address.split('.')[0]}.in-addr.arpa"


class DnsServer:
    """dnsmasq serving ``records`` (host name -> address) on ``address``.

    ``extra_options`` are passed to dnsmasq as they are (``--txt-record=...`` and so on).
    """

    def __init__(
        self,
        tmp: Path,
        records: dict[str, str],
        *,
        address: str = "127.0.0.53",
        domain: str = "example.test",
        extra_options: Sequence[str] = (),
    ) -> None:
        if not address.startswith("127."):
            raise ValueError(f"tests only use loopback addresses, not {address}")
        self.tmp = Path(tmp)
        self.records = dict(records)
        self.address = address
        self.domain = domain
        self.extra_options = list(extra_options)
        self.port = 0
        self.log_file = self.tmp / "dnsmasq.log"
        self.stderr_file = self.tmp / "dnsmasq.stderr"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        binary = dnsmasq_path()
        if binary is None:
            raise RuntimeError("dnsmasq is not installed")
        cmd = [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={self.address}",
            f"--port={self.port}",
            f"--pid-file={self.tmp / 'dnsmasq.pid'}",
            "--user=root",
            "--log-queries",
            f"--log-facility={self.log_file}",
            f"--local=/{self.domain}/",
            f"--local=/{reverse_zone(self.address)}/",
        ]
        cmd += [f"--host-record={name},{addr}" for name, addr in self.records.items()]
        cmd += self.extra_options
        return cmd

    def __enter__(self) -> DnsServer:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port(self.address)
        with open(self.stderr_file, "wb") as stderr:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def resolver_settings(self) -> dict[str, Any]:
        return {"dns_servers": [self.address], "dns_port": self.port}

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def output(self) -> str:
        parts = []
        for path in (self.stderr_file, self.log_file):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts).strip()

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        probe = dns.message.make_query(dns.reversename.from_address(self.address), "PTR")
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"dnsmasq exited with status {self._process.returncode}: {self.output()}"
                )
            try:
                reply = dns.query.udp(probe, self.address, port=self.port, timeout=0.2)
            except (dns.exception.DNSException, OSError) as exc:
                last_error = str(exc) or type(exc).__name__
                time.sleep(0.05)
                continue
            if reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return
            last_error = f"answered {dns.rcode.to_text(reply.rcode())}"
            time.sleep(0.05)
        raise RuntimeError(
            f"dnsmasq on {self.address}:{self.port} did not answer within {START_TIMEOUT} s "
            f"({last_error}): {self.output()}"
        )


class Blackhole:
    """A UDP socket on ``address`` that never answers.

    The socket is bound, so the kernel queues the queries (no ICMP port-unreachable that
    would fail the lookup fast) and nobody replies: every query runs into its time-out.
    """

    def __init__(self, address: str = "127.0.0.54") -> None:
        if not address.startswith("127."):
            raise ValueError(f"tests only use loopback addresses, not {address}")
        self.address = address
        self.port = 0
        self._sock: socket.socket | None = None

    def __enter__(self) -> Blackhole:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.address, 0))
        self.port = int(self._sock.getsockname()[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def resolver_settings(self) -> dict[str, Any]:
        return {"dns_servers": [self.address], "dns_port": self.port}
