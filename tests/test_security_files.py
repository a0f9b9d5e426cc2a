"""Files on disk and the local command line: modes, links, argv, control requests.

``clusterd init`` makes the data directory 0700 and the store 0600 even in a directory
that existed; ``saveconfig`` never writes through a symbolic link; ``clusterd call -``
reads its request from stdin so a passphrase stays out of the process list; a control
request with a bad value is refused and changes nothing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed, free_port
from clusterd.node import identity


def clusterd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clusterd", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_into_an_existing_open_directory_closes_it(tmp_path: Path) -> None:
    data = tmp_path / "machine"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    done = clusterd("init", "--data-dir", str(data), "--hostname", "ny.example.com",
                    "--ssh-port", str(free_port()), "--admin-passphrase-file", "/dev/stdin",
                    stdin="a long enough passphrase\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert mode_of(data) == 0o700
    stores = list(data.glob("store.db*"))
    assert stores and all(mode_of(p) == 0o600 for p in stores), [
        (p, oct(mode_of(p))) for p in stores
    ]
    for key in data.glob("*_key"):
        assert mode_of(key) == 0o600


@pytest.fixture
def one(tmp_path: Path) -> Iterator[Machine]:
    with Testbed(tmp_path, 1, seed=False) as bed:
        bed.start()
        yield bed.machines[0]


def ssh(m: Machine, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(identity.local_ssh(m.config, command), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def test_saveconfig_never_writes_through_a_symbolic_link(one: Machine, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    configs = one.dir / "configs"
    configs.mkdir(mode=0o700)
    (configs / "planted.xml").symlink_to(outside / "written.xml")  # dangling: "new" name
    done = ssh(one, "saveconfig planted.xml")
    assert done.returncode == 0, done.stdout
    assert not (outside / "written.xml").exists()  # the link was replaced, not followed
    assert not (configs / "planted.xml").is_symlink()
    assert mode_of(configs / "planted.xml") == 0o600
    # A configs directory that is itself a link is refused.
    (configs / "planted.xml").unlink()
    configs.rmdir()
    configs.symlink_to(outside)
    done = ssh(one, "saveconfig again.xml")
    assert done.returncode == 1 and "is a symbolic link" in done.stdout, done.stdout
    assert list(outside.iterdir()) == []


def test_a_request_read_from_stdin_keeps_the_passphrase_out_of_argv(one: Machine) -> None:
    secret = "never in the process list"
    request = {"op": "join", "address": "127.0.0.1", "port": free_port(),
               "fingerprint": "SHA256:x", "passphrase": secret}  # fmt: skip
    argv = ["call", "--data-dir", str(one.dir), "-"]
    done = clusterd(*argv, stdin=json.dumps(request))
    assert done.returncode == 1 and '"ok": false' in done.stdout  # nobody listens there
    assert secret not in " ".join(argv)
    assert secret not in (one.dir / "clusterd.log").read_text()
    status = clusterd("call", "--data-dir", str(one.dir), "-", stdin='{"op": "status"}')
    assert status.returncode == 0 and json.loads(status.stdout)["ok"] is True


@pytest.mark.parametrize("keep", [-1, "3", True, 1.5, None])
def test_truncate_with_a_bad_keep_is_refused(one: Machine, keep: object) -> None:
    before = one.status()["vv"]
    request = {"op": "truncate"} if keep is None else {"op": "truncate", "keep": keep}
    done = clusterd("call", "--data-dir", str(one.dir), json.dumps(request))
    answer = json.loads(done.stdout)
    assert done.returncode == 1 and answer["ok"] is False
    assert "'keep' is how many of the newest commits" in answer["error"]
    assert one.status()["vv"] == before
    assert os.path.exists(one.dir / "store.db")
