"""Failed logins and joins, counted per source address, with a lockout.

A source that fails ``limit`` times within ``window`` seconds is refused, without its
attempt being checked at all, for ``lockout`` seconds.  Peer links (machine keys) do
not count: a key cannot be guessed, and members behind one address must not lock each
other out.  Nor do keys refused for an admin user (SSH clients offer every key they
hold before asking for the passphrase): what counts is a wrong passphrase and a join
key PREPJOIN does not know (``clusterd.mesh.transport.ssh``).

A successful login does not clear the failures of its source.  The count is per
address, not per user: a reset would let anyone who knows some passphrase (a guest's)
wipe the count an attacker at the same address has built up against the admin's.  A
right login costs nothing, so an admin's own mistyped passphrases just age out of the
window.  Time is passed in, so the policy is tested without waiting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_SOURCES = 1024  # beyond this many sources seen, forget the ones that went quiet


@dataclass
class Limiter:
    limit: int = 5
    window: float = 60.0
    lockout: float = 60.0
    failures: dict[str, deque[float]] = field(default_factory=dict)
    locked: dict[str, float] = field(default_factory=dict)  # source -> locked until

    def blocked(self, source: str, now: float) -> float:
        """Seconds of lockout left for ``source`` (0: it may try)."""
        until = self.locked.get(source)
        if until is None:
            return 0.0
        if now >= until:
            del self.locked[source]
            self.failures.pop(source, None)
            return 0.0
        return until - now

    def failed(self, source: str, now: float) -> bool:
        """Count a failure; True when it starts a lockout."""
        if len(self.failures) > MAX_SOURCES:
            self._forget(now)
        seen = self.failures.setdefault(source, deque())
        seen.append(now)
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= self.limit and source not in self.locked:
            self.locked[source] = now + self.lockout
            return True
        return False

    def _forget(self, now: float) -> None:
        """Drop sources with no failure inside the window and no lockout running."""
        for source in [s for s, seen in self.failures.items() if seen[-1] <= now - self.window]:
            if source not in self.locked:
                del self.failures[source]
