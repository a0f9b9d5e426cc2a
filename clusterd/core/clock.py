"""Hybrid logical clock and the one last-writer rule.

A stamp is ``(hlc, origin)``.  ``hlc`` packs wall-clock milliseconds (upper 48 bits) and
a logical counter (lower 16 bits) into one integer, so stamps sort as plain integers
and fit a 64-bit database column.  The clock never goes backwards: ``now()`` is
strictly greater than every stamp it issued or observed, so a writer that has seen a
version always writes a newer one, whatever the machines' wall clocks say.

``newer(a, b)`` is the only ordering rule of the project: the larger ``hlc`` wins, the
larger origin id breaks ties.  Two different versions never compare equal because one
origin never issues the same ``hlc`` twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
# Larger than any stamp a clock will issue: marks pending (uncommitted) writes.
PENDING_HLC = (1 << 63) - 1


class Stamp(NamedTuple):
    """``(hlc, origin)``: compares as a tuple, which is exactly last-writer order."""

    hlc: int
    origin: str

    def __str__(self) -> str:
        return f"{wall_ms(self.hlc)}.{self.hlc & LOGICAL_MASK}@{self.origin}"


def newer(a: Stamp, b: Stamp) -> bool:
    """True when ``a`` wins over ``b`` in last-writer order.

    >>> newer(Stamp(2, "a"), Stamp(1, "z")), newer(Stamp(1, "b"), Stamp(1, "a"))
    (True, True)
    """
    return a > b


def pack(wall_milliseconds: int, logical: int = 0) -> int:
    return (wall_milliseconds << LOGICAL_BITS) | logical


def wall_ms(hlc: int) -> int:
    return hlc >> LOGICAL_BITS


def _system_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """Issues monotonic hybrid-logical timestamps; ``observe`` folds in remote ones."""

    def __init__(self, wall: Callable[[], int] = _system_ms, last: int = 0) -> None:
        self._wall = wall
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        candidate = pack(self._wall())
        self._last = candidate if candidate > self._last else self._last + 1
        return self._last

    def restore(self, last: int) -> None:
        """Go back to ``last`` (what was observed before a batch that was not kept)."""
        self._last = last

    def observe(self, remote: int) -> None:
        """Never issue a stamp at or below one seen from a peer."""
        if remote > self._last:
            self._last = remote
