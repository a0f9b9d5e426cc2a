"""``clusterd postfix-check DIR``: the validation of a rendered Postfix directory.

``postfix check`` alone passes much that Postfix then refuses or ignores (it exits 0
on warnings), so this is stricter, and it is what a Postfix target's ``validate``
runs (``validate = "clusterd postfix-check {staging}"``):

1. every map the renderer wrote is built with ``postmap`` (its ``.db`` is part of the
   generation swapped in); an ``ldap:`` table is a settings file, asked at each lookup,
   and has nothing to build;
2. ``postconf -n`` and ``postfix check`` run on the directory;
3. ``master.cf`` names each service once (two listeners on one address and port would
   make Postfix's master fail at its reload);
4. every type of table named (``hash:``, ``ldap:``) is one this Postfix has (``postconf
   -m``): ``postfix check`` passes an ``ldap:`` table without the ``postfix-ldap``
   package, and the SMTP server then stops at its first connection;

and any warning or error of Postfix's fails the check, with Postfix's words.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from clusterd.services.generations import META

TIMEOUT = 60.0
TABLE = re.compile(r"\b([a-z][a-z0-9_]*):(?=[$/])")  # hash:/x, ldap:$config_directory/x


def problems(directory: Path) -> list[str]:
    try:
        maps = json.loads((directory / META).read_text(encoding="utf-8")).get("maps") or {}
    except (OSError, ValueError):
        maps = {}
    found = []
    config = ["-c", str(directory)]
    for name in sorted(maps):
        found += _run(["postmap", *config, f"hash:{directory / name}"])
    found += _run(["postconf", *config, "-n"], quiet=True)
    found += _run(["postfix", *config, "check"])
    services = _run_out(["postconf", *config, "-M"])
    seen: set[tuple[str, str]] = set()
    for line in services.splitlines():
        words = line.split()
        if len(words) >= 2:
            if (words[0], words[1]) in seen:
                found.append(f"master.cf: service {words[0]} ({words[1]}) is defined twice")
            seen.add((words[0], words[1]))
    named = _run_out(["postconf", *config, "-n"]) + _run_out(["postconf", *config, "-P"])
    known = set(_run_out(["postconf", *config, "-m"]).split())
    for kind in sorted(set(TABLE.findall(named)) - known):
        found.append(f"this Postfix has no {kind}: tables (postconf -m); install them "
                     f"(Debian: postfix-{kind})")  # fmt: skip
    return found


def _run(argv: list[str], quiet: bool = False) -> list[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"{argv[0]}: {exc}"]
    said = [line for line in done.stderr.splitlines() if "warning:" in line or "fatal:" in line]
    if done.returncode != 0 and not said:
        why = done.stderr.strip() or "no reason given here (Postfix logs it: are "
        why = why if done.stderr.strip() else why + "queue_directory and data_directory there?)"
        said = [f"{argv[0]} exited {done.returncode}: {why}"]
    return said


def _run_out(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def main(directory: Path) -> int:
    found = problems(directory)
    for problem in dict.fromkeys(found):  # (postfix check repeats itself)
        print(problem, file=sys.stderr)
    return 1 if found else 0
