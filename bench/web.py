"""The web interface: how fast its pages load, and whether it slows the member's links.

    .venv/bin/python bench/web.py [--sessions 20] [--seconds 30] [--json]

Three members of a ``clusterd.dev.testbed``; m0 serves the web interface.  Each phase,
m1 commits a change every 100 ms (through its control socket); every daemon traces
when each commit became durable there, so the propagation m1 -> m0 is read from the
trace files afterwards, and m0's ``status`` gives its loop lag and its alerts.

* **light**: one browser session (Debian's chromium through Playwright) loads the pages
  one after the other: page load times (navigation to the load event) p50 / p99;
* **idle**: no browser: the propagation and loop lag without the web;
* **load**: ``--sessions`` browser sessions, each logged in, click through the pages
  (status, two settings pages, pending, history, cluster management) as fast as they
  load: the same figures, and the page loads they made.

Needs chromium; says so and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterd.dev.testbed import PASSPHRASE, Testbed, free_port

TRACE = "trace.log"
PAGES = ["/", "/settings/settz?mode=cluster", "/settings/unsubscribe?mode=cluster",
         "/pending", "/history", "/cluster"]  # fmt: skip


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)


def propagation_ms(bed: Testbed, since_ns: int, origin: str, to: int) -> list[float]:
    made = {}
    for line in (bed.machines[1].dir / TRACE).read_text().splitlines():
        at, kind, *rest = line.split()
        if kind == "commit" and int(at) >= since_ns and rest[0] == origin:
            made[rest[1]] = int(at)
    found = []
    for line in (bed.machines[to].dir / TRACE).read_text().splitlines():
        at, kind, *rest = line.split()
        if kind == "apply" and len(rest) == 2 and rest[0] == origin and rest[1] in made:
            found.append((int(at) - made[rest[1]]) / 1e6)
    return found


class Committer:
    """m1 commits a change every 100 ms until stopped."""

    def __init__(self, bed: Testbed) -> None:
        self.bed, self.done, self.count = bed, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        m1 = self.bed.machines[1]
        while not self.done.is_set():
            m1.edit({"do": "set_row", "feature": "unsubscribe", "mode": "cluster",
                     "row": f"u{self.count % 50}@example.com",
                     "value": {"comment": str(self.count)}})  # fmt: skip
            self.count += 1
            self.done.wait(0.1)

    def __enter__(self) -> Committer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join(10)


async def clicker(browser: Any, url: str, until: float, loads: list[float]) -> None:
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    await page.goto(url + "/login")
    await page.fill("input[name=user]", "admin")
    await page.fill("input[name=passphrase]", PASSPHRASE)
    await page.click("button[type=submit]")
    await page.wait_for_url(url + "/")
    i = 0
    while time.monotonic() < until:
        started = time.monotonic()
        await page.goto(url + PAGES[i % len(PAGES)], wait_until="load")
        loads.append((time.monotonic() - started) * 1000)
        i += 1
    await context.close()


async def browse(url: str, sessions: int, seconds: float, wrapper: Path) -> list[float]:
    from playwright.async_api import async_playwright

    loads: list[float] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(wrapper), args=["--no-sandbox"])
        until = time.monotonic() + seconds
        await asyncio.gather(*(clicker(browser, url, until, loads) for _ in range(sessions)))
        await browser.close()
    return loads


def nice_chromium(root: Path) -> Path:
    """chromium in the idle scheduling class: the browsers stand for admins' own
    machines, so on this one they take only the CPU the members leave (2 cores: they
    would otherwise compete with the daemons, which no real browser does).  Not
    ``nice``: chromium sets its processes' niceness itself."""
    wrapper = root / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec chrt --idle 0 {shutil.which("chromium")} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def phase(bed: Testbed, url: str, sessions: int, seconds: float, wrapper: Path
          ) -> dict[str, Any]:  # fmt: skip
    m0 = bed.machines[0]
    alerts_before = len(m0.status()["alerts"])
    since = time.monotonic_ns()
    with Committer(bed) as committer:
        if sessions:
            loads = asyncio.run(browse(url, sessions, seconds, wrapper))
        else:
            time.sleep(seconds)
            loads = []
    time.sleep(1.0)
    status = m0.status()
    moved = propagation_ms(bed, since, bed.machines[1].serial, 0)
    dropped = [a for a in status["alerts"][alerts_before:] if a["kind"] == "connection dropped"]
    spread = {"p50": pct(moved, 50), "p99": pct(moved, 99), "max": pct(moved, 100)}
    return {
        "sessions": sessions,
        "page_loads": len(loads),
        "page_load_ms": {"p50": pct(loads, 50), "p99": pct(loads, 99)} if loads else None,
        "commits": committer.count,
        "propagation_m1_to_m0_ms": spread if moved else None,
        "m0_loop_lag_ms": status["loop"]["last_minute"],
        "links_up": status["links"],
        "connection_dropped_alerts": len(dropped),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        print("needs chromium; nothing measured")
        return 2
    root = Path(tempfile.mkdtemp(prefix="clusterd-web-bench-"))
    port = free_port()
    runs = []
    try:
        hosts = root / "hosts"  # (the members' names resolve here: connstatus asks no DNS)
        hosts.write_text("127.0.0.1 " + " ".join(f"m{i}.example.com" for i in range(3)) + "\n")
        with Testbed(root, 3, ping=1.0, trace_file=TRACE, hosts_file=str(hosts),
                     each={0: {"web_listen": f"127.0.0.1:{port}"}}) as bed:  # fmt: skip
            bed.start()
            bed.wait(bed.linked, what="linked")
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # (the clients: this
            # process, its committer thread and the browsers' driver, not the members)
            bed.machines[0].edit({"do": "define", "feature": "unsubscribe", "mode": "cluster",
                                  "start": "empty"})  # fmt: skip
            url, wrapper = f"https://127.0.0.1:{port}", nice_chromium(root)
            runs.append({"phase": "light", **phase(bed, url, 1, args.seconds / 2, wrapper)})
            runs.append({"phase": "idle", **phase(bed, url, 0, args.seconds, wrapper)})
            runs.append({"phase": "load", **phase(bed, url, args.sessions, args.seconds,
                                                  wrapper)})  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    found = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "runs": runs,
    }
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    for r in runs:
        loads = r["page_load_ms"] or {}
        moved = r["propagation_m1_to_m0_ms"] or {}
        print(f"{r['phase']:5} sessions {r['sessions']:2}: page loads {r['page_loads']:5} "
              f"p50 {loads.get('p50', '-')} p99 {loads.get('p99', '-')} ms; propagation "
              f"m1->m0 p50 {moved.get('p50')} p99 {moved.get('p99')} max {moved.get('max')} "
              f"ms over {r['commits']} commits; m0 loop lag {r['m0_loop_lag_ms']}; "
              f"links up {r['links_up']}, dropped {r['connection_dropped_alerts']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
