"""The import rules that keep the layers apart (docs/architecture.md), read from the
source with ``ast``: a rule broken by a new import fails here, whatever runs.

* ``clusterd/core/`` is pure: no I/O, no event loop, no database, no SSH, nothing of
  another package but the schema.
* The mesh protocol (messages, peers, protocol, members) decides and never does: no
  I/O either, and nothing but the core.
* ``clusterd/store/`` imports only the core; so do ``clusterd/services/`` (targets,
  renderers, the journal): the node hands them effective values.
* The product never imports the front end (``cli/``) or the test bed
  (``clusterd/dev/``); only the entry points, which put the program together:
  ``__main__`` (the daemon and its shell factory, the demo), ``shellworker`` (the
  shell worker processes) and ``webworker`` (the web worker process).
* The front ends (``cli/``, the web application ``clusterd/web/``) reach the node only
  through ``clusterd.node.api`` or the calls of their worker process: never the
  daemon, the admin operations' module, the store, the links or the transports (a type
  named in an annotation only is allowed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clusterd"
PROTOCOL = ["messages", "peers", "protocol", "members"]  # clusterd/mesh/, not transport/
NO_IO = {"asyncio", "asyncssh", "sqlalchemy", "socket", "subprocess", "os", "threading",
         "prompt_toolkit", "smtplib", "dns"}  # fmt: skip
# What each package may import of clusterd (besides itself and the schema).
MAY_IMPORT = {
    "core": set(),
    "store": {"core"},
    "services": {"core"},
}
ENTRY_POINTS = ("__main__.py", "shellworker.py", "webworker.py")
FRONT_END_MAY_NOT = {
    "clusterd.node.daemon",
    "clusterd.node.admin",
    "clusterd.mesh.transport",
    "clusterd.mesh.protocol",
    "clusterd.mesh.peers",
    "clusterd.store.store",
}


def imports(path: Path, *, typing_too: bool = True) -> set[str]:
    """Every module ``path`` imports (``clusterd.cli.x`` spelt ``cli.x``; ``from
    clusterd.node import api`` gives ``clusterd.node`` and ``clusterd.node.api``); imports
    under ``if TYPE_CHECKING:`` count only with ``typing_too``."""
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
            if top(node.module) == "clusterd":
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name.replace("clusterd.cli", "cli", 1) for name in found}


def top(name: str) -> str:
    return name.split(".")[0]


def ours(name: str) -> str | None:
    """The package of one of our modules: ``clusterd.mesh.transport.ssh`` -> ``mesh``."""
    parts = name.split(".")
    return parts[1] if parts[0] == "clusterd" and len(parts) > 1 else None


def modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


@pytest.mark.parametrize(
    "path",
    [*modules("core"), *(PACKAGE / "mesh" / f"{m}.py" for m in PROTOCOL)],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_core_and_the_protocol_do_no_io(path: Path) -> None:
    found = imports(path)
    assert not {top(n) for n in found} & NO_IO, found
    allowed = {"core", "schema", "mesh" if path.parent.name == "mesh" else "core"}
    assert {ours(n) for n in found if top(n) == "clusterd"} - {None} <= allowed, found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_the_lower_layers_import_only_what_is_below_them(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package, "schema", None}
    offenders = {}
    for path in modules(package):
        found = {n for n in imports(path) if top(n) == "clusterd" and ours(n) not in allowed}
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert offenders == {}


def test_the_product_never_imports_the_front_end_or_the_test_bed() -> None:
    """Only the entry points, which put the program together: ``__main__`` (the
    daemon, the demo) and ``shellworker`` (the shell worker processes)."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("cli", "schema", "dev") or path.name in ENTRY_POINTS:
            continue  # (the symlinked packages, the test bed itself, the entry points)
        found = {n for n in imports(path) if top(n) == "cli" or ours(n) == "dev"}
        if found:
            offenders[str(relative)] = found
    assert offenders == {}


def test_the_front_end_reaches_the_node_only_through_the_api() -> None:
    offenders = {}
    for path in sorted([*(ROOT / "cli").glob("*.py"), *(PACKAGE / "web").glob("*.py")]):
        found = {
            n
            for n in imports(path, typing_too=False)
            if any(n == m or n.startswith(m + ".") for m in FRONT_END_MAY_NOT)
        }
        if found:
            offenders[path.name] = found
    assert offenders == {}


def test_the_rules_see_what_they_forbid(tmp_path: Path) -> None:
    """The reader finds the imports the rules look for, in every spelling."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nimport asyncio\nfrom clusterd.node import daemon\n"
        "from clusterd.cli.shell import Shell\nif TYPE_CHECKING:\n"
        "    from clusterd.store.store import Store\n"
    )
    found = imports(probe)
    assert found >= {"asyncio", "clusterd.node.daemon", "cli.shell", "clusterd.store.store"}
    assert "clusterd.store.store" not in imports(probe, typing_too=False)
    assert ours("clusterd.mesh.transport.ssh") == "mesh" and ours("asyncio") is None
