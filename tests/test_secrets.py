"""No passphrase reaches a log or any file of a data directory.

Command lines (``ssh host 'COMMAND'``) are logged, listed by ``who`` and kept for
``last`` only through ``clusterd.node.redact.redact``; a control request is logged (on an internal
error) only through ``clusterd.node.control.for_log``.  The last test runs the forms that
carry a passphrase against real daemons through the real OpenSSH client and greps
every file of every data directory for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clusterd.dev.testbed import PASSPHRASE, Machine, Testbed
from clusterd.node import control, identity
from clusterd.node.redact import redact, split_commands

FP = "SHA256:1ERBj+5ghdmwU57jyVWxlogRZmVBPUX+ccH825yL588"


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        (f"clusterconfig join 127.0.0.1 2222 {FP} Main_Group 'my secret words'",
         f"clusterconfig join 127.0.0.1 2222 {FP} ***"),
        (f"clusterconfig join --ccs h 22 {FP}", f"clusterconfig join --ccs h 22 {FP}"),
        (f"CLUSTERCONFIG Join h 22 {FP} G secret", f"CLUSTERCONFIG Join h 22 {FP} ***"),
        ("clusterconfig join --port 2222 --fingerprint=SHA256:x h admin 'my secret' G",
         "clusterconfig join --port 2222 --fingerprint=SHA256:x h ***"),
        ("clusterconfig join h 2222 12345678", "clusterconfig join h 2222 ***"),
        ("clusterconfig join h admin", "clusterconfig join h ***"),
        ("passwd 'my secret words'", "passwd ***"),
        ("passwd", "passwd"),
        ("userconfig new bob role=admin passphrase_hash='my secret words'; commit new bob",
         "userconfig new bob role=admin passphrase_hash=***; ***"),
        ("userconfig edit bob passphrase=secret", "userconfig edit bob passphrase=***"),
        ("userconfig edit bob 'passphrase_hash=my;secret words'; commit x",
         "userconfig edit bob passphrase_hash=***; ***"),
        ("userconfig edit bob passphrase_hash=my;secret; commit x",
         "userconfig edit bob passphrase_hash=***; ***"),
        ("ldapconfig set --password secret --other x",
         "ldapconfig set --password *** --other x"),
        ("ldapconfig set --password=secret", "ldapconfig set --password=***"),
        # a command the shell does not know shows none of its words
        ("clusterconfg join 10.0.0.1 admin 'my secret words'", "clusterconfg ***"),
        ("tool --password secret --other x", "tool ***"),
        ("\x1b[31mred x", "unknown-command ***"),
        ("settz set timezone=UTC; commit why", "settz set timezone=UTC; commit why"),
        ("ldapconfig set auth=password", "ldapconfig set auth=password"),
        ("version 'open quote secret", "version ***"),
    ],
)  # fmt: skip
def test_redact_hides_the_words_that_may_be_secrets(line: str, logged: str) -> None:
    assert redact(line) == logged


@pytest.mark.parametrize(
    ("line", "commands"),
    [
        ("settz set timezone=UTC; commit why", ["settz set timezone=UTC", " commit why"]),
        ("passwd 'a;b'; commit", ["passwd 'a;b'", " commit"]),
        ('passwd "a;\\";b"', ['passwd "a;\\";b"']),
        ("passwd a\\;b", ["passwd a\\;b"]),
        ("passwd 'open;quote", ["passwd 'open;quote"]),
        ("", [""]),
    ],
)
def test_a_line_is_cut_at_semicolons_outside_quotes(line: str, commands: list[str]) -> None:
    assert split_commands(line) == commands


def test_a_control_request_is_logged_without_its_secrets() -> None:
    request = {"op": "join", "passphrase": "my secret words", "edits": [
        {"do": "set_row", "feature": "userconfig", "value": {"passphrase_hash": "h", "role": "x"}}
    ]}  # fmt: skip
    shown = json.loads(control.for_log(json.dumps(request).encode()))
    assert shown["passphrase"] == "***" and shown["op"] == "join"
    assert shown["edits"][0]["value"] == {"passphrase_hash": "***", "role": "x"}
    assert "secret" not in control.for_log(b'{"passphrase": "my secret words"')


def test_an_internal_error_in_a_control_request_does_not_log_its_passphrase(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(daemon: Any, line: bytes) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(control, "_handle", broken)
    daemon = SimpleNamespace(config=SimpleNamespace(control_socket=tmp_path / "control.sock"))
    request = {"op": "join", "address": "127.0.0.1", "port": 22, "passphrase": "my secret words"}

    async def call() -> dict[str, Any]:
        server = await control.serve(daemon)  # type: ignore[arg-type]
        try:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control.sock"))
            writer.write(json.dumps(request).encode() + b"\n")
            answer: dict[str, Any] = json.loads(await reader.readline())
            writer.close()
            return answer
        finally:
            server.close()

    with caplog.at_level(logging.INFO, logger="clusterd.control"):
        assert asyncio.run(call())["error"].startswith("internal error")
    assert "control request failed" in caplog.text and '"op": "join"' in caplog.text
    assert "my secret words" not in caplog.text


def ssh(m: Machine, command: str) -> subprocess.CompletedProcess[str]:
    """One command through OpenSSH with the machine's local admin key."""
    argv = identity.local_ssh(m.config, command)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL
    )


def files_holding(root: Path, secret: str) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_socket() and secret.encode() in p.read_bytes()
    )


def test_no_passphrase_reaches_any_file_of_a_data_directory(tmp_path: Path) -> None:
    wrong_fp, typed, plain = "SHA256:" + "A" * 43, "passwd typed as argument", "a plain one here"
    secrets = [PASSPHRASE, typed, plain, "control request secret"]
    with Testbed(tmp_path, 3, seed=False) as bed:
        bed.start()
        a, b, c = bed.machines
        a.op("create", name="americas")
        where = f"127.0.0.1 {a.config.ssh_port}"
        # The batch join: refused (a fingerprint that is not a's), then done.
        refused = ssh(b, f"clusterconfig join {where} {wrong_fp} Main_Group '{PASSPHRASE}'")
        assert refused.returncode == 1 and "fingerprint mismatch" in refused.stdout, refused
        joined = ssh(b, f"clusterconfig join {where} {a.fingerprint()} Main_Group '{PASSPHRASE}'")
        assert joined.returncode == 0 and "Joined cluster americas" in joined.stdout, joined
        bed.wait(lambda: bed.linked([a, b]), what="a and b linked")
        # passwd with the passphrase where the user name goes; userconfig rows given one.
        assert ssh(b, f"passwd '{typed}'").returncode == 1
        for field in ("passphrase_hash", "passphrase"):
            edit = ssh(b, f"userconfig new bob role=admin {field}='{plain}'; commit bob")
            assert edit.returncode != 0, edit
        # A control request carrying a passphrase that fails.
        error = c.refused("join", address="127.0.0.1", port=a.config.ssh_port,
                          fingerprint=wrong_fp, passphrase="control request secret")  # fmt: skip
        assert "fingerprint mismatch" in error
        assert ssh(a, "who").returncode == 0 and ssh(b, "tail 200").returncode == 0
    for secret in secrets:
        assert files_holding(tmp_path, secret) == [], secret
    logged = (b.dir / "clusterd.log").read_text(errors="replace")  # yet they were logged
    assert f"admin runs 'clusterconfig join {where} {wrong_fp} ***'" in logged
    assert "admin runs 'passwd ***'" in logged
    assert "admin runs 'userconfig new bob role=admin passphrase_hash=***; ***'" in logged


def test_who_and_last_see_the_command_redacted() -> None:
    from clusterd.cli.serve import ShellChannel
    from tests.shellhelp import ADMIN

    chan = SimpleNamespace(get_extra_info=lambda name: ("127.0.0.1", 4242))
    line = f"clusterconfig join 127.0.0.1 22 {FP} Main_Group 'my secret words'"
    shell = ShellChannel(SimpleNamespace(), ADMIN, chan, line)  # type: ignore[arg-type]
    assert shell.command == f"clusterconfig join 127.0.0.1 22 {FP} ***"
    assert ShellChannel(SimpleNamespace(), ADMIN, chan, None).command is None  # type: ignore[arg-type]
