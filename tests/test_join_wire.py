"""The join exchange on the wire: the request line, SSH mismatch advice, fingerprints."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from clusterd.schema.catalogue import CATALOGUE
from clusterd.trust.join import (
    MAX_REQUEST,
    Algorithms,
    JoinAnswer,
    JoinLine,
    JoinRefused,
    JoinRequest,
    fingerprint,
    mismatch,
    probe,
)

MEMBER = "10.0.0.1:22"
REQUEST: dict[str, Any] = {
    "check": True,
    "hostname": "d.example.com",
    "serial": "SER-4",
    "software": "1.2.3",
    "group": "Main_Group",
    "machine": {"address": "10.0.0.4", "ssh_port": 22, "machine_key": "ssh-ed25519 AAAA"},
}


def line(**changes: Any) -> bytes:
    return json.dumps({**REQUEST, **changes}).encode() + b"\n"


def feed_all(*chunks: bytes) -> list[JoinRequest | str | None]:
    reader = JoinLine()
    return [reader.feed(chunk) for chunk in chunks]


def malformed(data: bytes) -> str:
    result = JoinLine().feed(data)
    assert isinstance(result, str), result
    assert result.startswith("malformed join request"), result
    return result


# -- JoinLine -----------------------------------------------------------------------------


def test_a_complete_line_is_a_request() -> None:
    result = JoinLine().feed(line())
    assert isinstance(result, JoinRequest)
    assert result.model_dump() == REQUEST
    # What the joining side sends is exactly what the member reads back.
    sent = JoinRequest.model_validate(REQUEST).model_dump_json().encode() + b"\n"
    assert JoinLine().feed(sent) == result


def test_a_line_split_across_feeds() -> None:
    data = line(check=False)
    cut = [0, 1, 17, len(data) // 2, len(data) - 1, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cut)]
    *before, last = feed_all(*chunks)
    assert before == [None] * (len(chunks) - 1)
    assert isinstance(last, JoinRequest) and last.check is False


def test_a_line_fed_byte_by_byte() -> None:
    data = line()
    results = feed_all(*(data[i : i + 1] for i in range(len(data))))
    assert results[:-1] == [None] * (len(data) - 1)
    assert isinstance(results[-1], JoinRequest)


def test_only_the_first_line_counts() -> None:
    result = JoinLine().feed(line() + b"garbage after the request\n")
    assert isinstance(result, JoinRequest)


def test_the_request_line_may_end_with_crlf() -> None:
    assert isinstance(JoinLine().feed(line()[:-1] + b"\r\n"), JoinRequest)


@pytest.mark.parametrize(
    "data",
    [
        b"{not json\n",
        b"\n",
        b"null\n",
        b"[1, 2]\n",
        b'"a string"\n',
        b"\xff\xfe\xfd\n",
        json.dumps(REQUEST).encode()[:-1] + b"\n",  # truncated
    ],
    ids=["bad-json", "empty", "null", "list", "string", "not-utf8", "truncated"],
)
def test_malformed_json(data: bytes) -> None:
    malformed(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"check": "yes"},
        {"check": 1},
        {"check": None},
        {"serial": 4},
        {"hostname": ["d.example.com"]},
        {"machine": "10.0.0.4"},
        {"machine": None},
        {"hostname": ""},
        {"serial": "x" * 65},
        {"group": ""},
    ],
    ids=lambda c: "-".join(f"{k}={v!r}"[:20] for k, v in c.items()),
)
def test_wrong_types_and_values(changes: dict[str, Any]) -> None:
    malformed(line(**changes))


def test_extra_fields() -> None:
    text = malformed(line(admin=True))
    assert "validation error" in text


@pytest.mark.parametrize("field", sorted(REQUEST))
def test_missing_fields(field: str) -> None:
    request = {k: v for k, v in REQUEST.items() if k != field}
    malformed(json.dumps(request).encode() + b"\n")


def test_a_line_without_newline_longer_than_max_request_is_refused() -> None:
    reader = JoinLine()
    assert reader.feed(b" " * MAX_REQUEST) is None  # exactly the limit: may still end
    assert reader.feed(b"{") == "join request too long"
    chunk = b"x" * 65536
    reader = JoinLine()
    results = [reader.feed(chunk) for _ in range(MAX_REQUEST // len(chunk) + 1)]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == "join request too long"


def test_a_request_ending_in_a_later_feed_after_a_long_padding() -> None:
    padding = b" " * (MAX_REQUEST - len(line()))  # JSON allows leading whitespace
    reader = JoinLine()
    assert reader.feed(padding) is None
    assert isinstance(reader.feed(line()), JoinRequest)


def test_answers_are_strict_too() -> None:
    JoinAnswer.model_validate_json(b'{"ok": true, "cluster": "americas"}')
    for bad in (b'{"ok": "true"}', b'{"ok": true, "extra": 1}', b"{}"):
        with pytest.raises(ValueError):
            JoinAnswer.model_validate_json(bad)


# -- mismatch -----------------------------------------------------------------------------

OURS = "curve25519-sha256,ext-info-c,kex-strict-c-v00@openssh.com"
THEIRS = "diffie-hellman-group14-sha256"


@pytest.mark.parametrize("kind", ["kex", "key exchange"])
def test_mismatch_names_both_sides_algorithms(kind: str) -> None:
    exc = asyncssh.KeyExchangeFailed(
        f"No matching {kind} algorithm found, sent {OURS} and received {THEIRS}"
    )
    text = mismatch(exc, MEMBER)
    assert f"no common {kind} algorithm" in text
    assert MEMBER in text
    assert "This machine offers: curve25519-sha256." in text
    assert f"{MEMBER} offers: diffie-hellman-group14-sha256." in text
    assert "ext-info" not in text and "kex-strict" not in text
    assert "sshconfig" in text


def test_mismatch_of_markers_only_and_of_other_algorithm_kinds() -> None:
    exc = asyncssh.KeyExchangeFailed(
        "No matching key exchange algorithm found, sent "
        "ext-info-c,kex-strict-c-v00@openssh.com and received "
        "sntrup761x25519-sha512@openssh.com,ext-info-s,kex-strict-s-v00@openssh.com"
    )
    text = mismatch(exc, MEMBER)
    assert "This machine offers: nothing." in text
    assert "offers: sntrup761x25519-sha512@openssh.com." in text
    exc = asyncssh.KeyExchangeFailed(
        "No matching MAC algorithm found, sent hmac-sha2-256,hmac-sha2-512 and received hmac-sha1"
    )
    text = mismatch(exc, MEMBER)
    assert "no common MAC algorithm" in text
    assert "This machine offers: hmac-sha2-256, hmac-sha2-512." in text
    assert f"{MEMBER} offers: hmac-sha1." in text


@pytest.mark.parametrize(
    "reason", ["Invalid kex init", "connection reset", "", "No matching host key found"]
)
def test_mismatch_passes_other_messages_through(reason: str) -> None:
    text = mismatch(asyncssh.KeyExchangeFailed(reason), MEMBER)
    assert text == f"SSH negotiation with {MEMBER} failed: {reason}"


async def test_a_real_kex_mismatch_comes_back_as_advice() -> None:
    """A member offering only group14 and a joiner offering only curve25519."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        kex_algs=["diffie-hellman-group14-sha256"],
        config=None,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        algs = Algorithms(kex=("curve25519-sha256",), host_key=("ssh-ed25519",))
        with pytest.raises(JoinRefused) as info:
            await probe("127.0.0.1", port, algs, timeout=10)
    finally:
        server.close()
        await server.wait_closed()
    text = str(info.value)
    where = f"127.0.0.1:{port}"
    assert text.startswith(f"SSH algorithm mismatch with {where}: no common key exchange")
    assert "This machine offers: curve25519-sha256." in text
    assert f"{where} offers: diffie-hellman-group14-sha256." in text
    assert "ext-info" not in text and "kex-strict" not in text


def test_algorithms_from_the_default_sshconfig() -> None:
    config = CATALOGUE["sshconfig"].factory_value()
    algs = Algorithms.from_sshconfig(config)
    assert algs.kex == tuple(config["kex_algorithms"])
    assert algs.host_key == tuple(config["host_key_algorithms"])
    assert algs.client_options()["server_host_key_algs"] == list(algs.host_key)
    assert "server_host_key_algs" not in algs.server_options()
    assert algs.server_options()["mac_algs"] == config["mac_algorithms"]


# -- fingerprint --------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
@pytest.mark.parametrize("alg", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"])
def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path, alg: str) -> None:
    key = asyncssh.generate_private_key(alg, comment="d.example.com")
    path = tmp_path / "key.pub"
    key.write_public_key(str(path))
    done = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    printed = done.stdout.split()[1]
    assert printed.startswith("SHA256:")
    assert fingerprint(key) == printed
    public = asyncssh.import_public_key(path.read_text())
    assert fingerprint(public) == printed


def test_deeply_nested_json_is_a_malformed_request() -> None:
    malformed(b"[" * 100_000 + b"\n")
