"""``status`` and ``version``: this machine's figures, as the login host has them."""

from __future__ import annotations

import json
import time
from typing import Any

from clusterd.cli.services import target_line
from clusterd.cli.shell import Shell
from clusterd.cli.syncview import detail_lines
from clusterd.core.modes import Mode


def _about_login_host(shell: Shell, what: str) -> str | None:
    """When the shell's mode is not the login host's machine mode (another machine's,
    or a group's or the cluster's, as a guest runs these), the line that says whose
    figures ``what`` shows: always the login host's."""
    if shell.cluster is None or shell.mode == Mode.machine(shell.hostname):
        return None
    level = shell.mode.level.value
    where = "cluster mode" if not shell.mode.name else f"{level} mode of {shell.mode.name}"
    return f"({what} of the login host {shell.hostname}; you are in {where})"


async def status(shell: Shell, args: list[str]) -> int:
    s = await shell.api.status()
    about = _about_login_host(shell, "status")
    if "--json" in args or "-j" in args:  # "hostname" names whose figures these are
        s = {**s, "shell_mode": str(shell.mode)}
        shell.write(json.dumps(s, indent=1, default=str))
        return 0
    if about is not None:
        shell.write(about)
    shell.write(f"Machine {s['hostname']} (Serial #: {s['serial']}), clusterd {s['software']}")
    shell.write(f"Cluster: {s['cluster'] or '(standalone)'}, up {s['uptime_s']:.0f} s")
    lag = s["loop"]["last_minute"]
    if lag:
        worst = s["loop"]["worst_ms"]
        shell.write(f"Links' loop: timers late by {lag['p99_ms']} ms at p99, {lag['max_ms']} "
                    f"ms at most in the last minute ({worst} ms since start)")  # fmt: skip
    if s["catch_up"]["missing"]:
        source = ", ".join(s["catch_up"]["from"])
        shell.write(f"Catching up: {s['catch_up']['missing']:,} commits to receive from {source}")
    for p in s["peers"]:  # the link, then the sync state (its reason, if any, in it)
        rtt = f", rtt {p['rtt_ms']} ms" if p["rtt_ms"] is not None else ""
        shell.write(f"  {p['hostname']:<30} {p['state']:<12} {p['sync']['text']}{rtt}")
        for line in detail_lines(p["sync"], "      "):
            shell.write(line)
    for c in s.get("corruption", []):
        shell.write(f"Corruption: {c['unit']} ({c['verdict']}; differs from {c['with']}): "
                    f"{c['why']}")  # fmt: skip
    if any(c["verdict"] == "differs" for c in s.get("corruption", [])):
        shell.write("  This member serves no sync while so: rejoin it (removemachine, join).")
    for c in s.get("confirms", []):
        at = time.strftime("%H:%M:%S", time.localtime(c["deadline"]))
        shell.write(f"Confirm by {at}: commit {c['commit']} by {c['user']} ({c['minutes']} min), "
                    "else rolled back")  # fmt: skip
    for name, t in s["targets"].items():
        shell.write(target_line(name, t))
    for f in s.get("witness", []):  # (docs/history.md, section 2)
        shell.write(f"Witnessed {f['kind']}: {f['text']}")
    _recent_alerts(shell, s["alerts"], s["alert_mail"])
    return 0


RECENT_ALERTS = 10


def _recent_alerts(shell: Shell, alerts: list[dict[str, Any]], mail: dict[str, Any]) -> None:
    if not alerts:
        shell.write("No alerts since clusterd started.")
        return
    shown = alerts[-RECENT_ALERTS:]
    more = f" (the last {len(shown)} of {len(alerts)}; status --json has them all)"
    shell.write(f"Recent alerts{more if len(shown) < len(alerts) else ''}:")
    for a in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(a["at"]))
        shell.write(f"  {when} {a['kind']}: {a['peer']}: {a['text']}")
    delivery = f"Alert mail via {mail['relay']}: {mail['sent']} sent"
    if mail["queued"]:
        delivery += f", {mail['queued']} waiting"
    if mail["last_error"]:
        delivery += f"; last delivery failed: {mail['last_error']}"
    shell.write(delivery)


async def version(shell: Shell, args: list[str]) -> int:
    about = _about_login_host(shell, "version")
    if about is not None:
        shell.write(about)
    shell.write(f"clusterd {shell.api.config.software} on {shell.hostname}")
    return 0
