"""Shell benchmark on a real daemon: one-command calls and an interactive prompt.

    .venv/bin/python bench/shell.py [--runs 20]

One standalone daemon on 127.0.0.1 (a cluster of one).  Figures, wall-clock:

* ``ssh version``: the OpenSSH client run as ``ssh admin@host version`` with the local
  admin key, from process start to exit (handshake, key login, the command, close);
* ``prompt``: an asyncssh client with a PTY, from connecting until the shell's prompt
  has arrived (handshake, login, prompt_toolkit start);
* ``round trip``: in that open shell, from sending ``version`` + Enter until its output
  and the next prompt have arrived.

``ShellClient`` (one interactive shell driven line by line, answering questions) is
shared with ``bench/load.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import identity

# prompt_toolkit turns bracketed paste on when a prompt (the shell's or a question's)
# starts, off when its line is accepted, and shows the cursor when a render is complete.
# Redraws while typing repeat the prompt's text, so the text alone does not say that a
# command has finished: these three markers do.
PROMPT_START = "\x1b[?2004h"
LINE_ACCEPTED = "\x1b[?2004l"
RENDERED = "\x1b[?25h"
_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x08\x07]")
SHELL_PROMPT = re.compile(r"(\((Cluster|Group|Machine) [^)\n]*\)( \[Disconnected\])?|\S+)>\Z")
QUESTION_PROMPT = re.compile(r"\[[^\]\n]*\]>\Z")


def plain(text: str) -> str:
    """Terminal output without escape sequences, as lines without trailing blanks."""
    lines = _ESCAPE.sub("", text).replace("\r", "").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


class ShellError(Exception):
    """The shell did not answer in time, ended, or asked something nobody expected."""


class ShellClient:
    """One interactive admin shell over SSH (asyncssh, a PTY), driven line by line.

    ``open`` logs in with the machine's local admin key and waits for the first prompt;
    ``run`` sends a line, answers the questions it asks with ``answer`` (question text
    -> the line to type, or None: not expected) and returns once the shell's prompt is
    back.  Every wait is bounded by ``timeout`` seconds.
    """

    def __init__(self, conn: Any, process: Any, timeout: float) -> None:
        self.conn = conn
        self.process = process
        self.timeout = timeout
        self.prompt = ""  # the last prompt shown (plain text)

    @classmethod
    async def open(
        cls, m: Machine, timeout: float = 60.0, key: Any = None
    ) -> tuple[ShellClient, float]:
        """Log in and wait for the prompt; returns the client and the milliseconds from
        connecting until the prompt is drawn."""
        key = key or asyncssh.read_private_key(m.config.admin_key)
        started = time.perf_counter()
        conn = await asyncio.wait_for(
            asyncssh.connect(m.config.listen, m.config.ssh_port, username="admin",
                             client_keys=[key], known_hosts=None, config=None,
                             agent_path=None),
            timeout,
        )  # fmt: skip
        try:
            process = await asyncio.wait_for(
                conn.create_process(term_type="xterm", term_size=(120, 40)), timeout
            )
            client = cls(conn, process, timeout)
            await client._next_prompt(accepted=True)
        except BaseException:
            conn.close()
            raise
        return client, (time.perf_counter() - started) * 1000

    async def _next_prompt(self, *, accepted: bool = False) -> str:
        """Read until the line just sent is accepted and the next prompt is drawn; returns
        what was written in between, then the prompt (plain text)."""
        seen = ""
        deadline = time.monotonic() + self.timeout
        while True:
            end = seen.find(LINE_ACCEPTED)
            if accepted or end >= 0:
                after = 0 if accepted else end + len(LINE_ACCEPTED)
                start = seen.find(PROMPT_START, after)
                done = -1 if start < 0 else seen.find(RENDERED, start)
                if done >= 0:
                    self.prompt = plain(seen[start:done]).split("\n")[-1]
                    return plain(seen[after:done])
            left = deadline - time.monotonic()
            if left <= 0:
                raise ShellError(f"no prompt within {self.timeout:.0f} s; last output: "
                                 f"{plain(seen)[-300:]!r}")  # fmt: skip
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(65536), left)
            except TimeoutError:
                continue
            if not chunk:
                raise ShellError(f"the shell ended; last output: {plain(seen)[-300:]!r}")
            seen += chunk

    async def run(
        self, line: str, answer: Callable[[str], str | None] | None = None
    ) -> tuple[float, str]:
        """Send ``line``, answer its questions; (milliseconds until the shell's prompt is
        back, everything written including the questions)."""
        started = time.perf_counter()
        self.process.stdin.write(line + "\r")
        written = []
        while True:
            text = await self._next_prompt()
            written.append(text)
            if SHELL_PROMPT.search(self.prompt) and not QUESTION_PROMPT.search(self.prompt):
                return (time.perf_counter() - started) * 1000, "\n".join(written)
            reply = None if answer is None else answer(text)
            if reply is None:
                raise ShellError(f"{line!r} asked what nobody expected: {text[-300:]!r}")
            self.process.stdin.write(reply + "\r")

    async def close(self) -> None:
        """``quit``, then close the connection whatever happens."""
        try:
            self.process.stdin.write("quit\r")
            await asyncio.wait_for(self.process.wait_closed(), self.timeout)
        except (OSError, TimeoutError, asyncssh.Error):
            pass
        finally:
            self.conn.close()
            await self.conn.wait_closed()


def _figure(name: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[max(0, int(len(values) * 0.9) - 1)]
    return (f"  {name:<12} median {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms   "
            f"(n={len(values)})")  # fmt: skip


async def _interactive(m: Machine, runs: int) -> tuple[list[float], list[float]]:
    prompts, trips = [], []
    for _ in range(runs):
        client, ms = await ShellClient.open(m)
        prompts.append(ms)
        ms, out = await client.run("version")
        assert f"on {m.hostname}" in out, out
        trips.append(ms)
        await client.close()
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
