"""Where should admin shells run so that link work never waits? Same loop, threads or
processes, measured.

    .venv/bin/python bench/loop_isolation.py [--shells 10,33] [--seconds 5] [--json]

A stand-in for the node's link loop runs a timer every 10 ms on the main thread's event
loop and records how late each tick fires (a ping that waits is a tick that is late).
Meanwhile ``--shells`` busy shells each run prompt_toolkit prompts as fast as they can
on the shell's real input (``cli/channelinput.py``), a command line per prompt, the
way ``bench/load.py``'s shells type:

* ``loop``: every shell is a task on the link loop (the daemon today);
* ``threads``: every shell has a thread with its own event loop (the GIL is shared);
* ``processes``: every shell is a process of its own (the worker design of
  ``docs/architecture.md``); the link loop's process does nothing else.

Reported per layout: tick lateness p50 / p99 / max (ms) and the shells' lines per
second.  No clusterd state is involved: this isolates the scheduling question.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TICK = 0.010  # s between the link loop's timer ticks
LINE = b"unsubscribe new s001r01@load.example.com comment=x\r"


class _Out(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


async def _shell(stop: threading.Event | Any, counter: list[int]) -> None:
    """One busy shell: a prompt, a line, again, until ``stop``."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.application.current import create_app_session
    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.output.vt100 import Vt100_Output

    from clusterd.cli.channelinput import ChannelInput

    inp = ChannelInput(lambda _: None)
    out = Vt100_Output(_Out(), lambda: Size(50, 200), term="xterm", enable_cpr=False)
    with create_app_session(inp, out):
        session: PromptSession[str] = PromptSession(history=InMemoryHistory())
        session.app.min_redraw_interval = 0.05
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            loop.call_soon(inp.feed, LINE)
            await session.prompt_async("(Cluster testbed)> ")
            counter[0] += 1


def _shell_thread(stop: threading.Event, counter: list[int]) -> None:
    asyncio.run(_shell(stop, counter))


def _shell_process(stop: Any, lines: Any) -> None:
    counter = [0]
    try:
        asyncio.run(_shell(stop, counter))
    finally:
        with lines.get_lock():
            lines.value += counter[0]


async def _ticks(seconds: float) -> list[float]:
    """The link loop's timer: lateness of each tick, in ms."""
    late = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while loop.time() - start < seconds:
        n += 1
        due = start + n * TICK
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append((loop.time() - due) * 1000)
    return late


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)


def measure(layout: str, shells: int, seconds: float) -> dict[str, Any]:
    if layout == "loop":

        async def main() -> tuple[list[float], int]:
            stop, counter = threading.Event(), [0]
            tasks = [asyncio.create_task(_shell(stop, counter)) for _ in range(shells)]
            await asyncio.sleep(0.5)  # the shells are under way
            counter[0] = 0
            late = await _ticks(seconds)
            made = counter[0]
            stop.set()
            await asyncio.wait(tasks, timeout=5)
            return late, made

        late, made = asyncio.run(main())
    elif layout == "threads":
        stop, counter = threading.Event(), [0]
        threads = [threading.Thread(target=_shell_thread, args=(stop, counter), daemon=True)
                   for _ in range(shells)]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(0.5)
        counter[0] = 0
        late = asyncio.run(_ticks(seconds))
        made = counter[0]
        stop.set()
        for t in threads:
            t.join(5)
    else:
        ctx = multiprocessing.get_context("spawn")
        stop_p, lines = ctx.Event(), ctx.Value("q", 0)
        procs = [ctx.Process(target=_shell_process, args=(stop_p, lines)) for _ in range(shells)]
        for p in procs:
            p.start()
        # Spawned interpreters import prompt_toolkit first (about 0.3 s of CPU each).
        time.sleep(1.0 + 0.3 * shells / (os.cpu_count() or 1))
        with lines.get_lock():
            lines.value = 0
        late = asyncio.run(_ticks(seconds))
        stop_p.set()  # each process adds its count as it ends (a few lines more)
        for p in procs:
            p.join(10)
        with lines.get_lock():
            made = lines.value
    return {
        "layout": layout,
        "shells": shells,
        "ticks": len(late),
        "late_ms": {"p50": _percentile(late, 50), "p99": _percentile(late, 99),
                    "max": round(max(late), 2), "mean": round(statistics.mean(late), 2)},
        "lines_per_s": round(made / seconds, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shells", default="10,33", help="busy shells per run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for n in (int(x) for x in args.shells.split(",")):
        for layout in ("loop", "threads", "processes"):
            print(f"{layout}, {n} shells ...", file=sys.stderr)
            results.append(measure(layout, n, args.seconds))
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    print(f"link-loop timer every {TICK * 1000:.0f} ms; lateness in ms")
    print(f"{'layout':<10} {'shells':>6} {'p50':>8} {'p99':>8} {'max':>8} {'lines/s':>9}")
    for r in results:
        late = r["late_ms"]
        print(f"{r['layout']:<10} {r['shells']:>6} {late['p50']:>8} {late['p99']:>8} "
              f"{late['max']:>8} {r['lines_per_s']:>9}")  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
