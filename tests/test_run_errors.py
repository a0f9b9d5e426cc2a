"""``clusterd run`` that cannot listen where it is told: one line that names the port
and says what to do, exit status 2, no traceback, nothing left running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clusterd.dev.testbed import Testbed, free_port


@pytest.mark.parametrize("setting", ["ssh_port", "ccs_port", "web_listen"])
def test_a_port_in_use_stops_the_daemon_with_one_line(tmp_path: Path, setting: str) -> None:
    taken = socket.socket()
    port = free_port()
    taken.bind(("127.0.0.1", port))
    taken.listen(1)
    extra = {"web_listen": f"127.0.0.1:{port}"} if setting == "web_listen" else {setting: port}
    if setting == "ccs_port":
        extra["ccs_enabled"] = True
    try:
        with Testbed(tmp_path, 1, each={0: extra}) as bed:
            m = bed.machines[0]
            if setting != "web_listen":  # (the test bed picks its own ports)
                text = (m.dir / "clusterd.toml").read_text()
                (m.dir / "clusterd.toml").write_text(
                    "\n".join(f"{setting} = {port}" if line.startswith(f"{setting} =")
                              else line for line in text.splitlines()) + "\n")  # fmt: skip
            argv = [sys.executable, "-m", "clusterd", "run", "--data-dir", str(m.dir)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    flag = "--" + setting.replace("_", "-")
    if setting == "web_listen":
        assert last == (f"clusterd: web_listen 127.0.0.1:{port}: Address already in use; "
                        "choose another port, or stop what holds it")  # fmt: skip
    else:
        assert last == (f"clusterd: {setting} {port}: 127.0.0.1:{port} is already in use; "
                        f"choose another port ({flag}, or {setting} in clusterd.toml) on "
                        "every machine, or stop what holds it")  # fmt: skip
