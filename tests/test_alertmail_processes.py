"""Alerts delivered by mail, received by a real SMTP server (aiosmtpd) on loopback.

The daemons are real processes; the recipients are ``alertconfig`` rows committed like
any setting; the relay is ``alert_relay`` in ``clusterd.toml``.  A killed member gives
each survivor one mail per alert kind, not a storm; a burst of alerts comes as one
digest; a dead relay changes nothing for the links and shows in ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiosmtpd.controller import Controller

from clusterd.dev.testbed import Machine, Testbed, free_port
from clusterd.node import identity
from clusterd.node.alertmail import AlertMail, recipients
from clusterd.node.config import ConfigError, parse

RECIPIENT = "ops@example.com"


class Sink:
    """aiosmtpd's handler: every message received, with its envelope."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def by_sender(self, sender: str) -> list[Message]:
        return [m for _, m in self.mails if m["From"] == sender]


@pytest.fixture
def sink() -> Any:
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def subscribe(m: Machine, classes: list[str], severities: list[str]) -> None:
    row = {"classes": classes, "severities": severities}
    m.edit({"do": "define", "feature": "alertconfig", "mode": "cluster", "start": "empty"},
           {"do": "set_row", "feature": "alertconfig", "mode": "cluster", "row": RECIPIENT,
            "value": row})  # fmt: skip


@contextlib.contextmanager
def member_killed(root: Path, relay: str, gather: float) -> Iterator[Testbed]:
    """Three linked members mailing alerts through ``relay``, the third killed -9."""
    with Testbed(root, 3, ping=0.5, alert_relay=relay, alert_gather=gather) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        subscribe(bed[0], ["clustering"], ["critical", "warning"])
        bed.wait(bed.converged, what="converged")
        bed[2].kill()
        yield bed


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def kinds_in(mail: Message) -> list[str]:
    """The "kind: member" of each alert a message reports (one per alert line)."""
    body = mail.get_payload(decode=True).decode()
    found = []
    for line in body.splitlines():
        if "] " in line and line[:4].isdigit():
            kind, peer, _ = line.split("] ", 1)[1].split(": ", 2)
            found.append(f"{kind}: {peer}")
    return found


def test_a_killed_member_gives_one_mail_per_alert_kind(tmp_path: Path, sink: Any) -> None:
    handler, port = sink
    with member_killed(tmp_path, f"127.0.0.1:{port}", gather=1.0) as bed:
        a, b, c = bed.machines
        senders = [f"clusterd@{m.hostname}" for m in (a, b)]
        wait_for(lambda: all(handler.by_sender(s) for s in senders), 20, "a mail from a and b")
        time.sleep(8)  # 16 ping intervals: dial retries, pings, time-outs
        for sender in senders:
            mails = handler.by_sender(sender)
            kinds = [k for mail in mails for k in kinds_in(mail)]
            # (a member dialled before the others listened may have its own alert)
            kinds = [k for k in kinds if k.endswith(f": {c.hostname}")]
            assert kinds and len(kinds) == len(set(kinds)), (sender, kinds)  # once each
            assert {f"connection {x}: {c.hostname}" for x in ("dropped", "failure")} & set(kinds)
            assert len(mails) <= 3, [m["Subject"] for m in mails]
            assert all(m["Subject"].startswith("[clusterd m") for m in mails)
            assert any(c.hostname in m.get_payload(decode=True).decode() for m in mails)
        for to, _ in handler.mails:
            assert to == [RECIPIENT]
        # The shell's status shows the recent alerts and how delivery went.
        shown = subprocess.run(identity.local_ssh(a.config, "status"), capture_output=True,
                               text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        assert "Recent alerts" in shown.stdout and c.hostname in shown.stdout, shown.stdout
        assert f"Alert mail via 127.0.0.1:{port}:" in shown.stdout
        status = a.status()
        assert status["alert_mail"]["sent"] == len(handler.by_sender(senders[0]))
        assert status["alerts"] and status["alerts"][-1]["peer"] == c.hostname


async def _wrong_passphrase(host: str, port: int, source: str) -> None:
    try:
        conn = await asyncssh.connect(
            host, port, username="admin", password="not the passphrase", known_hosts=None,
            local_addr=(source, 0), client_keys=None, preferred_auth="password",
        )  # fmt: skip
        conn.close()
    except (asyncssh.Error, OSError):
        pass


def test_a_burst_comes_as_one_digest_and_the_severity_filter_holds(
    tmp_path: Path, sink: Any
) -> None:
    handler, port = sink
    with Testbed(tmp_path, 1, ping=0.5, alert_relay=f"127.0.0.1:{port}",
                 alert_gather=1.5) as bed:  # fmt: skip
        bed.start()
        (a,) = bed.machines
        subscribe(a, ["all"], ["warning"])

        async def burst() -> None:
            sources = [f"127.0.0.{i}" for i in range(20, 26)]
            await asyncio.gather(*(_wrong_passphrase("127.0.0.1", a.config.ssh_port, s)
                                   for s in sources))  # fmt: skip

        asyncio.run(burst())
        wait_for(lambda: handler.mails, 15, "the digest")
        time.sleep(2)
        assert len(handler.mails) == 1, [m["Subject"] for _, m in handler.mails]
        digest = handler.mails[0][1]
        assert "6 alerts" in digest["Subject"] and "authentication error" in digest["Subject"]
        body = digest.get_payload()
        assert all(f"127.0.0.{i}" in body for i in range(20, 26))
        assert "not the passphrase" not in body  # a secret never travels in an alert
        # An admin who wants only critical alerts gets none of these.
        subscribe(a, ["all"], ["critical"])
        asyncio.run(_wrong_passphrase("127.0.0.1", a.config.ssh_port, "127.0.0.30"))
        time.sleep(3)
        assert len(handler.mails) == 1


def test_a_dead_relay_keeps_the_links_and_says_why(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    with member_killed(tmp_path, f"127.0.0.1:{dead}", gather=0.2) as bed:
        a, b, _ = bed.machines
        wait_for(lambda: a.status()["alert_mail"]["last_error"], 15, "a failed delivery")
        mail = a.status()["alert_mail"]
        assert mail["queued"] >= 1 and mail["sent"] == 0
        assert "Connection refused" in mail["last_error"] or "Errno" in mail["last_error"]
        bed.wait(lambda: bed.linked([a, b]), what="a and b still linked")
        a.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        bed.wait(lambda: bed.converged([a, b]), what="commits still flow")


def test_a_bad_relay_setting_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"alert_relay: .*not a relay"):
        parse({"hostname": "a.example.com", "serial": "S1", "alert_relay": "host:99999"},
              tmp_path, "clusterd.toml")  # fmt: skip


def test_the_throttle_counts_repeats_and_caps_the_hour() -> None:
    """The policy alone, on a clock passed in (the processes above show the wiring)."""
    now = [0.0]
    rows = {RECIPIENT: {"classes": ["clustering"], "severities": ["warning"]}}
    mail = AlertMail(hostname=lambda: "a.example.com", rows=lambda: rows, relay="localhost",
                     sender=None, gather=0, repeat=600, max_per_hour=2,
                     clock=lambda: now[0])  # fmt: skip
    mail.post("connection dropped", "b.example.com", "gone")
    assert len(mail.flush()) == 1
    for _ in range(5):  # within alert_repeat: held and counted, not mailed
        mail.post("connection dropped", "b.example.com", "gone again")
    assert mail.flush() == []
    now[0] = 601.0
    (held,) = mail.flush()
    assert "and 5 more like it" in held.message.get_content()
    mail.counters.history.extend([now[0], now[0]])  # two sent this hour: the cap
    mail.post("connection failure", "c.example.com", "refused")
    assert mail.flush() == [] and mail.pending  # waits for the hour
    now[0] = 601.0 + 3601
    assert len(mail.flush()) == 1
    assert recipients(rows, "store unavailable") == []  # a system alert: not subscribed
