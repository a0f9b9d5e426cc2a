"""What strangers may hold open: connections before login, login attempts, channels.

Without limits, 1,100 idle unauthenticated connections used up the daemon's file
descriptors and one guest connection opened 400 sessions.  The ``Gate`` every SSH
server reports to enforces, each configurable in ``clusterd.toml``:

* ``max_startups``: unauthenticated connections from strangers, in total (64);
* ``max_startups_per_source``: ... from one stranger address (8);
* ``login_grace_time``: seconds a connection may take to authenticate (30; asyncssh's
  ``login_timeout`` closes it after);
* ``max_auth_tries``: authentication attempts on one connection (12), queries included;
* ``max_channels``: sessions open at once on one connection (8);
* ``max_sessions_per_user``: shells and commands of one user at once (16; enforced
  by the daemon when a shell opens).

*Strangers* are sources that are not known members: a member's recorded address, the
source of a link that authenticated as a member, and this machine's own address are
trusted and never limited, so members' links and the local admin key (``clusterd
shell`` comes from this machine) get in while strangers flood.  A refused connection is
aborted at once; each kind of refusal is logged once per minute with a count
(``Throttle``), never once per event.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("clusterd.limits")
THROTTLE_INTERVAL = 60.0


class LimitSettings(Protocol):
    @property
    def max_startups(self) -> int: ...
    @property
    def max_startups_per_source(self) -> int: ...
    @property
    def max_auth_tries(self) -> int: ...
    @property
    def max_channels(self) -> int: ...


@dataclass
class Throttle:
    """Logs the first event of each kind, then at most one line per ``interval`` that
    says how many more happened: a flood costs a few log lines, not one per event."""

    interval: float = THROTTLE_INTERVAL
    clock: Callable[[], float] = time.monotonic
    _since: dict[str, float] = field(default_factory=dict)  # kind -> last line logged at
    _more: Counter[str] = field(default_factory=Counter)  # kind -> events not logged

    def warn(self, kind: str, text: str, *, logger: logging.Logger = log) -> bool:
        """Log ``text`` unless a line of this kind was logged within the interval
        (then count it).  True when logged."""
        now = self.clock()
        last = self._since.get(kind)
        if last is not None and now - last < self.interval:
            self._more[kind] += 1
            return False
        more = self._more.pop(kind, 0)
        tail = f" ({more} more like this in the last {now - (last or now):.0f} s)" if more else ""
        self._since[kind] = now
        logger.warning("%s%s", text, tail)
        return True


class Gated(Protocol):
    """What the gate knows of a connection (``clusterd.mesh.transport.server.PeerServer``)."""

    host: str
    source: str
    channels: int
    name: str


class Gate:
    def __init__(self, settings: LimitSettings, trusted: Callable[[str], bool]) -> None:
        self.settings = settings
        self.trusted = trusted
        self.throttle = Throttle()
        self.strangers: dict[int, str] = {}  # id(server) -> host, unauthenticated
        self.per_source: Counter[str] = Counter()
        self.refused = Counter[str]()  # kind -> refusals since start (status)
        self.members: set[str] = set()  # sources of connections that logged in as members

    @property
    def max_auth_tries(self) -> int:
        return self.settings.max_auth_tries

    def opened(self, server: Gated) -> bool:
        """A new connection: False to abort it (a stranger over a limit)."""
        host = server.host
        if host in self.members or self.trusted(host):
            return True
        s = self.settings
        if len(self.strangers) >= s.max_startups:
            return self.refuse("startups", f"{len(self.strangers)} unauthenticated "
                                f"connections (max_startups): refused {server.source}")  # fmt: skip
        if self.per_source[host] >= s.max_startups_per_source:
            return self.refuse(f"source {host}", f"{host}: {self.per_source[host]} "
                                "unauthenticated connections (max_startups_per_source): "
                                "refused another")  # fmt: skip
        self.strangers[id(server)] = host
        self.per_source[host] += 1
        return True

    def authenticated(self, server: Gated, *, member: bool) -> None:
        if member:
            self.members.add(server.host)
        self._forget(server)

    def closed(self, server: Gated) -> None:
        self._forget(server)

    def _forget(self, server: Gated) -> None:
        host = self.strangers.pop(id(server), None)
        if host is not None:
            self.per_source[host] -= 1
            if self.per_source[host] <= 0:
                del self.per_source[host]

    def channel(self, server: Gated) -> bool:
        """A session channel asked for: False over ``max_channels`` on this connection."""
        if server.channels >= self.settings.max_channels:
            return self.refuse(f"channels {server.host}", f"{server.source}: "
                                f"{server.channels} channels open (max_channels): refused "
                                "another")  # fmt: skip
        server.channels += 1
        return True

    def too_many_attempts(self, server: Gated) -> None:
        self.refuse(f"attempts {server.host}", f"{server.source}: more than "
                     f"{self.max_auth_tries} authentication attempts (max_auth_tries): "
                     "connection closed")  # fmt: skip

    def refuse(self, kind: str, text: str) -> bool:
        """Count and (throttled) log a refusal of ``kind`` (its first word is what
        ``status`` counts); False, for the caller to return."""
        self.refused[kind.split()[0]] += 1
        self.throttle.warn(kind, text)
        return False

    def status(self) -> dict[str, Any]:
        return {"unauthenticated": len(self.strangers), "refused": dict(self.refused)}
