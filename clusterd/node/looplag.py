"""How late the links' loop runs its timers: the measure of "the link loop never waits".

A probe sleeps ``EVERY`` seconds on the daemon's event loop, again and again, and
records how much later than asked it wakes: the time the loop spent on something else
(a batch merged into the store, a page encoded, a callback that blocked).  ``status``
reports the last minute (p50, p99, max) and the worst since start, so benchmarks and
admins see what links and pings waited.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

EVERY = 0.05  # s between wake-ups: a stall of this length or more is always seen
WINDOW = int(60 / EVERY)  # one minute of samples


class LoopLag:
    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=WINDOW)  # lateness, seconds
        self.worst = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + EVERY
            await asyncio.sleep(EVERY)
            late = max(0.0, loop.time() - asked)
            self.samples.append(late)
            self.worst = max(self.worst, late)

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.samples)

        def ms(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

        last = {"p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0)} if ordered else {}
        return {"every_ms": EVERY * 1000, "last_minute": last,
                "worst_ms": round(self.worst * 1000, 2)}  # fmt: skip
