"""Alerts by mail: to the ``alertconfig`` recipients, through a relay or the local MTA.

Every alert the daemon raises (a link dropped, a failed connection, an authentication
error, a version mismatch, a DNS failure, the store going down ...) is also kept in the
status (``status`` in the shell) and logged; this module mails it.

* **Who**: the rows of this machine's effective ``alertconfig``; a recipient gets an
  alert when its class (``clustering`` for links and members, ``system`` for this
  machine's own store and listeners) and its severity are among the row's.
* **How**: SMTP to ``alert_relay`` (``host`` or ``host:port``; the default is the local
  MTA, ``localhost:25``), from ``alert_from`` (default ``clusterd@HOSTNAME``), in a
  worker thread: a slow or dead relay never delays the event loop.
* **How often**: the first alert of a quiet spell waits ``alert_gather`` seconds for
  others to come with it; then up to ``DIGEST_AFTER`` alerts go as one message each, more
  as one digest.  The same (kind, member) is mailed at most once per ``alert_repeat``
  seconds (repeats are counted in the next message about it), and at most
  ``alert_max_per_hour`` messages leave per hour (the rest wait for the next digest).
  Undelivered messages are retried with back-off; at most ``MAX_OUTBOX`` wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from clusterd.core.text import printable

log = logging.getLogger("clusterd.alertmail")

DIGEST_AFTER = 3  # more alerts than this at once: one digest
MAX_OUTBOX = 100  # messages waiting for the relay; the oldest are dropped beyond
MAX_LISTED = 50  # alerts listed in one digest
SMTP_TIMEOUT = 20.0
RETRY_FIRST, RETRY_MAX = 15.0, 900.0

# Severity of each alert kind (anything else: warning).
SEVERITY = {
    "version mismatch": "critical",
    "store unavailable": "critical",
    "configuration": "critical",
    "bad commit": "critical",
    "fork": "critical",
    "history went back": "critical",
    "corruption": "critical",
    "store available": "information",
}
# The reference's classes: this machine's own health is "system", the rest "clustering".
SYSTEM_KINDS = {"store unavailable", "store available", "configuration", "corruption"}


def severity(kind: str) -> str:
    return SEVERITY.get(kind, "warning")


def alert_class(kind: str) -> str:
    return "system" if kind in SYSTEM_KINDS else "clustering"


def recipients(rows: dict[str, Any], kind: str) -> list[str]:
    """The ``alertconfig`` rows (address -> classes, severities) that want ``kind``."""
    cls, sev = alert_class(kind), severity(kind)
    return sorted(
        address
        for address, row in rows.items()
        if (cls in row["classes"] or "all" in row["classes"]) and sev in row["severities"]
    )


def parse_relay(relay: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` -> (host, port); port 25 by default."""
    host, port = relay, "25"
    if relay.startswith("["):
        host, _, rest = relay[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "25" if not rest else ""
    elif relay.count(":") == 1:
        host, _, port = relay.partition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a relay: {relay!r} (host, host:port or [v6 address]:port)")
    return host, int(port)


@dataclass
class Pending:
    at: float
    kind: str
    peer: str
    text: str
    repeats: int = 0  # the same (kind, peer) held back since it was last mailed


@dataclass
class Outgoing:
    to: list[str]
    message: EmailMessage
    tries: int = 0
    next_try: float = 0.0


@dataclass
class Counters:
    sent: int = 0
    failed: int = 0  # delivery attempts that failed
    dropped: int = 0  # messages given up (outbox full)
    last_error: str | None = None
    last_sent_at: float | None = None
    history: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


class AlertMail:
    """Queue alerts, gather, throttle and send them; ``status`` says how it went.

    ``rows`` gives the effective ``alertconfig`` (read when a message is made, so an
    edit applies to the next one); ``clock`` is ``time.monotonic`` but for tests of the
    policy itself."""

    def __init__(
        self,
        *,
        hostname: Callable[[], str],
        rows: Callable[[], dict[str, Any]],
        relay: str,
        sender: str | None,
        gather: float,
        repeat: float,
        max_per_hour: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hostname = hostname
        self.rows = rows
        self.relay = parse_relay(relay)
        self.sender = sender
        self.gather = gather
        self.repeat = repeat
        self.max_per_hour = max_per_hour
        self.clock = clock
        self.pending: list[Pending] = []
        self.held: dict[tuple[str, str], Pending] = {}  # repeats within alert_repeat
        self.mailed: dict[tuple[str, str], float] = {}  # (kind, peer) -> when last mailed
        self.outbox: deque[Outgoing] = deque()
        self.counters = Counters()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the daemon's side -------------------------------------------------------------

    def post(self, kind: str, peer: str, text: str) -> None:
        """One alert (never blocks, never raises)."""
        now = self.clock()
        key = (kind, peer)
        last = self.mailed.get(key)
        if last is not None and now - last < self.repeat:
            held = self.held.get(key)
            if held is None:
                self.held[key] = Pending(time.time(), kind, peer, text, repeats=1)
            else:
                held.repeats += 1
                held.text = text
            return
        for p in self.pending:
            if (p.kind, p.peer) == key:  # the same alert twice in one gather: one line
                p.repeats += 1
                p.text = text
                return
        self.pending.append(Pending(time.time(), kind, peer, text))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "relay": f"{self.relay[0]}:{self.relay[1]}",
            "sent": c.sent,
            "failed_attempts": c.failed,
            "dropped": c.dropped,
            "queued": len(self.outbox),
            "waiting_alerts": len(self.pending) + len(self.held),
            "last_error": c.last_error,
            "last_sent_at": c.last_sent_at,
        }

    # -- the policy --------------------------------------------------------------------

    def _due_held(self, now: float) -> list[Pending]:
        """Repeats whose ``alert_repeat`` is over: they go with the next message."""
        due = [k for k in self.held if now - self.mailed.get(k, -1e18) >= self.repeat]
        return [self.held.pop(k) for k in due]

    def _sent_last_hour(self, now: float) -> int:
        history = self.counters.history
        while history and history[0] <= now - 3600:
            history.popleft()
        return len(history)

    def flush(self) -> list[Outgoing]:
        """What the gathered alerts become: messages (none if nobody wants them)."""
        now = self.clock()
        alerts = self.pending + self._due_held(now)
        self.pending = []
        if not alerts:
            return []
        room = self.max_per_hour - self._sent_last_hour(now) - len(self.outbox)
        if room <= 0:
            self.pending = alerts  # the hour is spent: they wait for the next digest
            return []
        for a in alerts:
            self.mailed[(a.kind, a.peer)] = now
        rows = self.rows()
        wanted = [(a, recipients(rows, a.kind)) for a in alerts]
        wanted = [(a, to) for a, to in wanted if to]
        if not wanted:
            return []
        if len(wanted) <= DIGEST_AFTER and len(wanted) <= room:
            return [Outgoing(to, self._single(a)) for a, to in wanted]
        to = sorted({r for _, rs in wanted for r in rs})
        return [Outgoing(to, self._digest([a for a, _ in wanted]))]

    def _message(self, subject: str, body: str) -> EmailMessage:
        host = self.hostname()
        msg = EmailMessage()
        msg["From"] = self.sender or f"clusterd@{host}"
        msg["Subject"] = printable(subject)[:200]
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=host)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(printable(body, keep_newlines=True))
        return msg

    def _line(self, a: Pending) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(a.at))
        more = f" (and {a.repeats} more like it)" if a.repeats else ""
        return f"{when} [{severity(a.kind)}] {a.kind}: {a.peer}: {a.text}{more}"

    def _single(self, a: Pending) -> EmailMessage:
        host = self.hostname()
        subject = f"[clusterd {host}] {severity(a.kind).capitalize()}: {a.kind}: {a.peer}"
        body = (
            f"clusterd on {host} raised an alert ({alert_class(a.kind)}).\n\n"
            f"{self._line(a)}\n\n"
            "The recent alerts: `status` in the clusterd shell.\n"
        )
        return self._message(subject, body)

    def _digest(self, alerts: list[Pending]) -> EmailMessage:
        host = self.hostname()
        worst = min((severity(a.kind) for a in alerts), key=list(("critical", "warning",
                    "information")).index)  # fmt: skip
        kinds = sorted({a.kind for a in alerts})
        subject = f"[clusterd {host}] {len(alerts)} alerts ({worst}): {', '.join(kinds)}"
        lines = [self._line(a) for a in alerts[:MAX_LISTED]]
        if len(alerts) > MAX_LISTED:
            lines.append(f"... and {len(alerts) - MAX_LISTED} more (status in the shell)")
        body = f"clusterd on {host} raised {len(alerts)} alerts at once.\n\n" + "\n".join(lines)
        return self._message(subject, body + "\n")

    # -- delivery ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_timeout())
            self._wake.clear()
            if self.pending:
                await asyncio.sleep(self.gather)
            try:
                self._queue(self.flush())
                await self._deliver()
            except Exception:
                log.exception("alert mail")

    def _next_timeout(self) -> float:
        """Wake for a retry, for held repeats that became due, or for a spent hour."""
        now = self.clock()
        times = [o.next_try - now for o in self.outbox]
        times += [self.mailed.get(k, now) + self.repeat - now for k in self.held]
        if self.pending:
            times.append(60.0)
        return max(0.5, min(times, default=3600.0))

    def _queue(self, messages: list[Outgoing]) -> None:
        for m in messages:
            if len(self.outbox) >= MAX_OUTBOX:
                self.outbox.popleft()
                self.counters.dropped += 1
            self.outbox.append(m)

    async def _deliver(self) -> None:
        now = self.clock()
        for item in [o for o in self.outbox if o.next_try <= now]:
            try:
                await asyncio.to_thread(self._send, item)
            except (OSError, smtplib.SMTPException) as exc:
                item.tries += 1
                item.next_try = self.clock() + min(RETRY_MAX, RETRY_FIRST * 2 ** (item.tries - 1))
                self.counters.failed += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != self.counters.last_error:
                    log.warning("alert mail to %s not delivered: %s", ", ".join(item.to), error)
                self.counters.last_error = error
                continue
            self.outbox.remove(item)
            self.counters.sent += 1
            self.counters.last_sent_at = time.time()
            self.counters.last_error = None
            self.counters.history.append(self.clock())

    def _send(self, item: Outgoing) -> None:
        """In a worker thread: one message through the relay."""
        host, port = self.relay
        helo = self.hostname()  # not socket.getfqdn(): no DNS lookup to wait for
        with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT, local_hostname=helo) as smtp:
            smtp.send_message(item.message, to_addrs=item.to)
