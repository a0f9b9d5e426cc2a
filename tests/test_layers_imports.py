"""The import rules that keep the layers apart (docs/architecture.md), read from the
source with ``ast``: a rule broken by a new import fails here, whatever runs.

* The core (clock, versions, state, merge, layers, edits, pending, references, modes,
  membership) is pure: no I/O, no event loop, no database, no SSH, nothing of the node.
* The mesh protocol (messages, peers, protocol) decides and never does: no I/O either.
* ``clusterd/`` never imports the front end (``cli/``); only ``__main__``, which puts the
  program together, hands the daemon its shell factory.
* The front ends reach the node only through ``clusterd.api``: never the daemon, the
  admin operations' module, the store, the links or the transports (a type named in
  an annotation only is allowed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["clock", "versions", "state", "merge", "layers", "edits", "pending", "references",
        "modes", "membership"]  # fmt: skip
MESH = ["messages", "peers", "protocol"]
NO_IO = {"asyncio", "asyncssh", "sqlalchemy", "socket", "subprocess", "os", "threading",
         "prompt_toolkit", "smtplib", "dns"}  # fmt: skip
NODE = {"store", "daemon", "api", "admin", "control", "logins", "transport", "publish",
        "alertmail", "lifecycle", "clusterops", "session", "config", "identity", "dns"}  # fmt: skip
FRONT_END_MAY_NOT = {"daemon", "admin", "transport", "protocol", "peers", "store"}


def imports(path: Path, *, typing_too: bool = True) -> set[str]:
    """Every module ``path`` imports (``clusterd.cli.x`` spelt ``cli.x``); imports under
    ``if TYPE_CHECKING:`` count only with ``typing_too``."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if not typing_too:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for b in node.body for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "clusterd":
                found |= {f"clusterd.{alias.name}" for alias in node.names}
    return {name.replace("clusterd.cli", "cli", 1) for name in found}


def top(name: str) -> str:
    return name.split(".")[0]


def ours(name: str) -> str | None:
    """``clusterd.store`` -> ``store``; ``clusterd.transport.ssh`` -> ``transport``."""
    parts = name.split(".")
    return parts[1] if parts[0] == "clusterd" and len(parts) > 1 else None


@pytest.mark.parametrize("module", CORE + MESH)
def test_the_core_and_the_protocol_do_no_io_and_know_no_node(module: str) -> None:
    found = imports(ROOT / "clusterd" / f"{module}.py")
    assert not {top(n) for n in found} & NO_IO, found
    assert not {ours(n) for n in found} & NODE, found
    assert not any(top(n) == "cli" for n in found), found


def test_the_node_never_imports_the_front_end() -> None:
    offenders = {}
    for path in sorted((ROOT / "clusterd").rglob("*.py")):
        relative = path.relative_to(ROOT / "clusterd")
        if relative.parts[0] in ("cli", "schema") or path.name == "__main__.py":
            continue  # (the symlinked packages; __main__ is where the shell is given)
        found = {n for n in imports(path) if top(n) == "cli"}
        if found:
            offenders[str(relative)] = found
    assert offenders == {}


def test_the_front_end_reaches_the_node_only_through_the_api() -> None:
    offenders = {}
    for path in sorted((ROOT / "cli").glob("*.py")):
        found = {n for n in imports(path, typing_too=False) if ours(n) in FRONT_END_MAY_NOT}
        if found:
            offenders[path.name] = found
    assert offenders == {}


def test_the_rules_see_what_they_forbid(tmp_path: Path) -> None:
    """The reader finds the imports the rules look for, in every spelling."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nimport asyncio\nfrom clusterd import daemon\n"
        "from clusterd.cli.shell import Shell\nif TYPE_CHECKING:\n"
        "    from clusterd.store import Store\n"
    )
    assert imports(probe) >= {"asyncio", "clusterd.daemon", "cli.shell", "clusterd.store"}
    assert "clusterd.store" not in imports(probe, typing_too=False)
