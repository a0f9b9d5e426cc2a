"""Shell benchmark on a real daemon: one-command calls and an interactive prompt.

    .venv/bin/python bench/shell.py [--runs 20]

One standalone daemon on 127.0.0.1 (a cluster of one).  Figures, wall-clock:

* ``ssh version``: the OpenSSH client run as ``ssh admin@host version`` with the local
  admin key, from process start to exit (handshake, key login, the command, close);
* ``prompt``: an asyncssh client with a PTY, from connecting until the shell's prompt
  has arrived (handshake, login, prompt_toolkit start);
* ``round trip``: in that open shell, from sending ``version`` + Enter until its output
  and the next prompt have arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

from clusterd import identity
from clusterd.testbed import Machine, Testbed


def _figure(name: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[max(0, int(len(values) * 0.9) - 1)]
    return (f"  {name:<12} median {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms   "
            f"(n={len(values)})")  # fmt: skip


async def _interactive(m: Machine, runs: int) -> tuple[list[float], list[float]]:
    key = asyncssh.read_private_key(m.config.admin_key)
    prompts, trips = [], []
    for _ in range(runs):
        started = time.perf_counter()
        async with asyncssh.connect(
            m.config.listen, m.config.ssh_port, username="admin", client_keys=[key],
            known_hosts=None, config=None, agent_path=None,
        ) as conn:  # fmt: skip
            process = await conn.create_process(term_type="xterm", term_size=(120, 40))
            prompt = f"{m.hostname}>"
            seen = ""
            while prompt not in seen:
                seen += await process.stdout.read(4096)
            prompts.append((time.perf_counter() - started) * 1000)
            sent = time.perf_counter()
            process.stdin.write("version\r")
            seen = ""
            while (
                f"on {m.hostname}" not in seen or prompt not in seen.split(f"on {m.hostname}")[-1]
            ):
                seen += await process.stdout.read(4096)
            trips.append((time.perf_counter() - sent) * 1000)
            process.stdin.write("quit\r")
            process.close()
    return prompts, trips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Testbed(Path(tmp), 1, seed=False) as bed:
        bed.start()
        (m,) = bed.machines
        argv_ssh = identity.local_ssh(m.config, "version")
        calls = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(argv_ssh, capture_output=True, check=True, stdin=subprocess.DEVNULL)
            calls.append((time.perf_counter() - started) * 1000)
        prompts, trips = asyncio.run(_interactive(m, args.runs))
    print("shell on one daemon, 127.0.0.1:")
    print(_figure("ssh version", calls))
    print(_figure("prompt", prompts))
    print(_figure("round trip", trips))
    return 0


if __name__ == "__main__":
    sys.exit(main())
