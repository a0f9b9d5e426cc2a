"""clusterd installed as a user installs it: ``pip install .`` into a venv of its own,
beside PyPI's ``schema`` package (whose top-level name our schema folder once took).

Both orders: ``schema`` first, then clusterd; clusterd first, then ``schema``.  Each time
clusterd's shell and daemon modules import, ``clusterd init`` runs, and PyPI's
``schema`` still is PyPI's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = (
    "import clusterd.cli.serve, clusterd.schema.catalogue, clusterd.node.daemon; "
    "import schema; assert schema.Schema(int).validate(3) == 3; "
    "import importlib.metadata as m; "
    "files = [str(f) for f in m.files('clusterd')]; "
    "assert not [f for f in files if f.split('/')[0] in ('cli', 'schema')], files"
)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("first", ["schema", "clusterd"])
def test_installed_beside_pypis_schema(tmp_path: Path, first: str) -> None:
    venv = tmp_path / "venv"
    done = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert done.returncode == 0, done.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    order = [["schema>=0.7"], [str(ROOT)]]
    for what in order if first == "schema" else order[::-1]:
        done = _run([*pip, *what], tmp_path)
        if done.returncode != 0 and "No matching distribution" in done.stderr:
            pytest.skip(f"no package index to install {what} from")
        assert done.returncode == 0, done.stderr[-2000:]
    done = _run([str(venv / "bin" / "python"), "-c", CHECK], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    init = [str(venv / "bin" / "clusterd"), "init", "--data-dir", str(tmp_path / "m"),
            "--hostname", "pkg.example.com", "--no-admin"]  # fmt: skip
    done = _run(init, tmp_path)
    assert done.returncode == 0 and '"hostname": "pkg.example.com"' in done.stdout, done.stderr
    # Without the [postgres] extra, a PostgreSQL store says what to install: no traceback,
    # nothing left behind, and the same init works once the URL is right.
    pg = [*init[:3], str(tmp_path / "pg"), *init[4:], "--database", "postgresql://x@h/db"]
    done = _run(pg, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "the database driver 'psycopg' is not installed (pip install " \
           "'clusterd[postgres]')" in done.stderr  # fmt: skip
    assert not (tmp_path / "pg").exists() and not list(tmp_path.glob(".pg.init-*"))
